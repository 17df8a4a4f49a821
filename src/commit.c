/*
 * commit.c - the commit point, standalone: positions are claimed under
 * commit_mu and records written with one log (commit.h).
 */
#include "commit.h"

uint64_t sop_commit__next(const sop_db *db)
{
    return db->applied_lsn + 1;
}

uint64_t sop_commit__claim(sop_db *db)
{
    sop_db__assert_committer(db); /* one claimer at a time: positions are dense */
    db->commit_claims++;
    return sop_commit__next(db);
}

int sop_commit__write(sop_db *db, sop_buf *rec, uint64_t lsn, uint64_t *token)
{
    sop_db__assert_committer(db);
    assert(lsn == sop_commit__next(db));
    assert(rec->len >= SOP_REC_HDR_LEN);
    size_t plen = rec->len - SOP_REC_HDR_LEN;
    size_t rlen = sop_rec_len(plen);
    if (!sop_buf_extend(rec, rlen - rec->len))
        return sop_err(SOP_NOMEM, "transaction record");
    memset(rec->data + SOP_REC_HDR_LEN + plen, 0, rlen - SOP_REC_HDR_LEN - plen);
    sop_rec__header(rec->data, SOP_REC_TXN, rec->data + SOP_REC_HDR_LEN, plen, lsn);
    sop_loc loc;
    int rc = sop_wal__append(db->wal, rec->data, rlen, lsn, 0, &loc, token);
    if (rc)
        return rc;
    db->log_since_ckpt += rlen;
    return SOP_OK;
}

void sop_commit__applied(sop_db *db, uint64_t lsn)
{
    sop_db__assert_committer(db);
    assert(lsn == sop_commit__next(db));
    db->applied_lsn = lsn;
}

void sop_commit__visible(sop_db *db, uint64_t lsn)
{
    sop_mutex_lock(&db->snap_mu);
    if (lsn > atomic_load(&db->visible_lsn))
        atomic_store_explicit(&db->visible_lsn, lsn, memory_order_release);
    sop_mutex_unlock(&db->snap_mu);
}

int sop_commit__durable(sop_db *db, uint64_t token, uint64_t lsn)
{
    int rc = sop_wal__sync_to(db->wal, token);
    if (rc != SOP_OK)
        return sop_db__panic(db, rc);
    sop_commit__visible(db, lsn);
    return SOP_OK;
}

int sop_commit__durable_upto(sop_db *db, uint64_t upto)
{
    int rc = sop_wal__sync_all(db->wal); /* covers every record <= upto, maybe more */
    if (rc != SOP_OK)
        return sop_db__panic(db, rc);
    sop_commit__visible(db, upto);
    return SOP_OK;
}
