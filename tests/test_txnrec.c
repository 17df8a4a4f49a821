/*
 * test_txnrec.c - the transaction record codec (src/txnrec.h) against its
 * documented layout (docs/FORMAT.md "TXN record"):
 *   - a golden payload, written byte by byte from FORMAT.md's table, decodes
 *     to exactly the fields it was written with;
 *   - the record a real commit writes to its segment is byte for byte the
 *     golden commit below (so the encoder follows the same table);
 *   - every truncation of a body is SOP_CORRUPT, and no damaged byte makes
 *     the decoder read outside the body (ASan in make asan) or loop.
 */
#include "harness.h"
#include "tutil.h"
#include "txn.h"
#include "txnrec.h"
#include "wal.h"

#include <dirent.h>

/* ---- the golden payload: FORMAT.md, field by field ------------------------ */

#define U16(v) (uint8_t)((v)&0xff), (uint8_t)(((v) >> 8) & 0xff)
#define U32(v) U16((v)&0xffff), U16(((v) >> 16) & 0xffff)
#define U64(v) U32((uint64_t)(v)&0xffffffffu), U32(((uint64_t)(v) >> 32) & 0xffffffffu)

static const uint8_t golden[] = {
    /* head: kind 1 COMMIT, version 1, u16 0, u32 0, txn_id 0, snapshot 7 */
    1,
    1,
    U16(0),
    U32(0),
    U64(0),
    U64(7),
    /* xid: none */
    U16(0),
    /* catalog: 2 entries */
    U32(2),
    /*   create store 5, root lid 9, name "a", flags 0, slot 64, max_inline 1024, no
     *   comparator, no key spec */
    1,
    U64(5),
    U64(9),
    U16(1),
    'a',
    U32(0),
    U32(64),
    U32(1024),
    U16(0),
    U32(0),
    /*   drop store 3 */
    2,
    U64(3),
    /* stores: 1 section: store 5, count delta +1, next_seq 2, 3 ops */
    U32(1),
    U64(5),
    U64(1),
    U64(2),
    U32(3),
    /*   put inline "k" seq 1 = "v1" */
    1,
    0,
    U16(1),
    'k',
    U64(1),
    U32(2),
    'v',
    '1',
    /*   put blob "b" seq 1, 4096 bytes at segment 2 offset 0x40, 0x1018 bytes, crc */
    1,
    1,
    U16(1),
    'b',
    U64(1),
    U32(4096),
    U64(2),
    U64(0x40),
    U32(0x1018),
    U32(0xdeadbeef),
    /*   del "x" seq 1 */
    2,
    0,
    U16(1),
    'x',
    U64(1),
    /* reads: 2: point "k" in store 5; range in store 5 from "a", no upper bound */
    U32(2),
    U64(5),
    1,
    U16(1),
    'k',
    U64(5),
    2,
    2,
    U16(1),
    'a',
    U16(0),
};

static int val_is(sop_val v, const char *s)
{
    return v.len == strlen(s) && memcmp(v.data, s, v.len) == 0;
}

TEST(test_txnrec__golden_payload_decodes_to_its_fields)
{
    sop_txnrec_head h;
    const uint8_t *body;
    size_t blen;
    CHECK_OK(sop_txnrec__get_head(&h, &body, &blen, golden, sizeof golden));
    CHECK_EQ_U64(h.kind, SOP_TXNREC_COMMIT);
    CHECK_EQ_U64(h.txn_id, 0);
    CHECK_EQ_U64(h.snapshot, 7);
    CHECK(body == golden + SOP_TXNREC_HEAD_LEN && blen == sizeof golden - SOP_TXNREC_HEAD_LEN);

    sop_txnrec_rd d;
    sop_val xid;
    sop_txnrec_cat e;
    sop_txnrec_store st;
    sop_txnrec_op o;
    sop_txnrec_read r;
    CHECK_OK(sop_txnrec__open(&d, &xid, body, blen, 255, 1024));
    CHECK_EQ_U64(xid.len, 0);
    CHECK_EQ_U64(sop_txnrec__next_cat(&d, &e), 1);
    CHECK(e.op == SOP_TXNREC_CREATE && e.store_id == 5 && e.root_lid == 9 && val_is(e.name, "a"));
    CHECK(e.flags == 0 && e.slot_length == 64 && e.max_inline == 1024);
    CHECK(e.comparator.len == 0 && e.key_spec.len == 0);
    CHECK_EQ_U64(sop_txnrec__next_cat(&d, &e), 1);
    CHECK(e.op == SOP_TXNREC_DROP && e.store_id == 3);
    CHECK_EQ_U64(sop_txnrec__next_cat(&d, &e), 0);

    CHECK_EQ_U64(sop_txnrec__next_store(&d, &st), 1);
    CHECK(st.store_id == 5 && st.count_delta == 1 && st.next_seq == 2 && st.op_count == 3);
    CHECK_EQ_U64(sop_get_le64(body + st.count_delta_off), 1); /* where commit patches it */
    CHECK_EQ_U64(sop_txnrec__next_op(&d, &o), 1);
    CHECK(o.kind == SOP_TXNREC_PUT && !o.is_blob && val_is(o.key, "k") && o.seq == 1);
    CHECK(o.value_len == 2 && val_is(o.value, "v1"));
    CHECK_EQ_U64(sop_txnrec__next_op(&d, &o), 1);
    CHECK(o.kind == SOP_TXNREC_PUT && o.is_blob && val_is(o.key, "b") && o.value_len == 4096);
    CHECK(o.loc.seg == 2 && o.loc.off == 0x40 && o.loc.len == 0x1018 && o.loc.crc == 0xdeadbeef);
    CHECK_EQ_U64(sop_txnrec__next_op(&d, &o), 1);
    CHECK(o.kind == SOP_TXNREC_DEL && val_is(o.key, "x") && o.seq == 1);
    CHECK_EQ_U64(sop_txnrec__next_op(&d, &o), 0);
    CHECK_EQ_U64(sop_txnrec__next_store(&d, &st), 0);

    CHECK_EQ_U64(sop_txnrec__next_read(&d, &r), 1);
    CHECK(r.store_id == 5 && r.kind == SOP_TXNREC_POINT && val_is(r.lo, "k"));
    CHECK_EQ_U64(sop_txnrec__next_read(&d, &r), 1);
    CHECK(r.store_id == 5 && r.kind == SOP_TXNREC_RANGE && r.flags == SOP_TXNREC_HI_OPEN);
    CHECK(val_is(r.lo, "a") && r.hi.len == 0);
    CHECK_EQ_U64(sop_txnrec__next_read(&d, &r), 0);
    CHECK_OK(sop_txnrec__finish(&d));

    /* asking for a later section skips the earlier ones */
    CHECK_OK(sop_txnrec__open(&d, &xid, body, blen, 255, 1024));
    CHECK_EQ_U64(sop_txnrec__next_read(&d, &r), 1);
    CHECK(r.kind == SOP_TXNREC_POINT && val_is(r.lo, "k"));
    CHECK_OK(sop_txnrec__finish(&d));
    CHECK_OK(sop_txnrec__open(&d, &xid, body, blen, 255, 1024));
    CHECK_OK(sop_txnrec__finish(&d));

    /* limits: a name or key above the caller's maximum is damage */
    CHECK_OK(sop_txnrec__open(&d, &xid, body, blen, 0, 1024));
    CHECK_RC(SOP_CORRUPT, sop_txnrec__next_cat(&d, &e));
    CHECK_RC(SOP_CORRUPT, sop_txnrec__next_store(&d, &st)); /* X3: the error stays */
    CHECK_RC(SOP_CORRUPT, sop_txnrec__finish(&d));

    /* a head alone: resolutions have no body; a body on one is damage */
    uint8_t res[SOP_TXNREC_HEAD_LEN + 1];
    sop_buf b = SOP_BUF_INIT;
    sop_txnrec__put_head(&b, &(sop_txnrec_head){SOP_TXNREC_ABORT_PREPARED, 42, 0});
    CHECK_OK(sop_buf_status(&b));
    CHECK_EQ_U64(b.len, SOP_TXNREC_HEAD_LEN);
    memcpy(res, b.data, b.len);
    sop_buf_dispose(&b);
    CHECK_OK(sop_txnrec__get_head(&h, &body, &blen, res, SOP_TXNREC_HEAD_LEN));
    CHECK(h.kind == SOP_TXNREC_ABORT_PREPARED && h.txn_id == 42 && blen == 0);
    res[SOP_TXNREC_HEAD_LEN] = 0;
    CHECK_RC(SOP_CORRUPT, sop_txnrec__get_head(&h, &body, &blen, res, sizeof res));
    CHECK_RC(SOP_CORRUPT, sop_txnrec__get_head(&h, &body, &blen, res, SOP_TXNREC_HEAD_LEN - 1));
    res[1] = 2; /* version */
    CHECK_RC(SOP_CORRUPT, sop_txnrec__get_head(&h, &body, &blen, res, SOP_TXNREC_HEAD_LEN));
    res[1] = 1;
    res[0] = 5; /* kind */
    CHECK_RC(SOP_CORRUPT, sop_txnrec__get_head(&h, &body, &blen, res, SOP_TXNREC_HEAD_LEN));
}

/* Decode everything; SOP_OK or the first error. */
static int decode_all(const uint8_t *body, size_t len)
{
    sop_txnrec_rd d;
    sop_val xid;
    sop_txnrec_cat e;
    sop_txnrec_store st;
    sop_txnrec_op o;
    sop_txnrec_read r;
    int rc = sop_txnrec__open(&d, &xid, body, len, 255, 1024);
    while (rc == 0 && (rc = sop_txnrec__next_cat(&d, &e)) == 1)
        rc = 0;
    while (rc == 0 && (rc = sop_txnrec__next_store(&d, &st)) == 1)
        while ((rc = sop_txnrec__next_op(&d, &o)) == 1)
            ;
    while (rc == 0 && (rc = sop_txnrec__next_read(&d, &r)) == 1)
        rc = 0;
    return rc ? rc : sop_txnrec__finish(&d);
}

TEST(test_txnrec__damaged_bodies_are_corrupt_never_overread)
{
    const uint8_t *gbody = golden + SOP_TXNREC_HEAD_LEN;
    size_t glen = sizeof golden - SOP_TXNREC_HEAD_LEN;
    CHECK_OK(decode_all(gbody, glen));
    /* every truncation, each in a block of exactly its size (ASan sees an
     * over-read), and one byte appended */
    for (size_t n = 0; n < glen; n++) {
        uint8_t *p = malloc(n ? n : 1);
        CHECK(p != NULL);
        memcpy(p, gbody, n);
        int rc = decode_all(p, n);
        free(p);
        if (rc != SOP_CORRUPT) {
            FAIL_AT("body cut to %zu of %zu bytes decoded with %d", n, glen, rc);
            return;
        }
    }
    uint8_t longer[sizeof golden + 1];
    memcpy(longer, gbody, glen);
    longer[glen] = 0;
    CHECK_RC(SOP_CORRUPT, decode_all(longer, glen + 1));
    /* every byte set to each of a few values: OK or CORRUPT, nothing else */
    static const uint8_t vals[] = {0x00, 0x01, 0x02, 0x03, 0x7f, 0x80, 0xff};
    unsigned corrupt = 0, ok = 0;
    for (size_t i = 0; i < glen; i++)
        for (size_t k = 0; k < sizeof vals; k++) {
            uint8_t *p = malloc(glen);
            CHECK(p != NULL);
            memcpy(p, gbody, glen);
            p[i] = vals[k];
            int rc = decode_all(p, glen);
            free(p);
            if (rc == SOP_CORRUPT)
                corrupt++;
            else if (rc == SOP_OK)
                ok++;
            else {
                FAIL_AT("byte %zu set to 0x%02x: decoder returned %d", i, vals[k], rc);
                return;
            }
        }
    printf("    %zu truncations corrupt; %u of %u byte changes corrupt, %u still well-formed\n",
           glen, corrupt, corrupt + ok, ok);
    CHECK(corrupt > 0 && ok > 0);
}

/* The payload of the n-th TXN record (1-based) in the folder's segments,
 * malloc'd; NULL if there is none. */
static uint8_t *nth_txn_payload(const char *dir, int n, size_t *len)
{
    char segdir[600], path[900];
    snprintf(segdir, sizeof segdir, "%s/seg", dir);
    DIR *dd = opendir(segdir);
    if (!dd)
        return NULL;
    struct dirent *de;
    uint8_t *found = NULL;
    while (!found && (de = readdir(dd)) != NULL) {
        if (!strstr(de->d_name, ".seg"))
            continue;
        snprintf(path, sizeof path, "%s/%s", segdir, de->d_name);
        size_t flen;
        uint8_t *f = tfile_read(path, &flen);
        for (size_t off = 0; f && off + SOP_REC_HDR_LEN <= flen;) {
            if (sop_get_le32(f + off) != SOP_REC_MAGIC)
                break;
            size_t plen = sop_get_le32(f + off + 8);
            if (f[off + 4] == SOP_REC_TXN && --n == 0) {
                found = malloc(plen);
                if (found) {
                    memcpy(found, f + off + SOP_REC_HDR_LEN, plen);
                    *len = plen;
                }
                break;
            }
            off += (SOP_REC_HDR_LEN + plen + 7) & ~(size_t)7;
        }
        free(f);
    }
    closedir(dd);
    return found;
}

/* The first commit of a fresh database, written by the engine: store "a"
 * created (id 1, root lid 1), "k" = "v1", and read back through the
 * table above. A change to the encoder that FORMAT.md does not describe
 * fails here. */
static const uint8_t golden_first_commit[] = {
    1,      1,   U16(0), U32(0),  U64(0),    U64(0), U16(0), U32(1), 1,      U64(1), U64(1),
    U16(1), 'a', U32(0), U32(64), U32(1024), U16(0), U32(0), U32(1), U64(1), U64(1), U64(1),
    U32(1), 1,   0,      U16(1),  'k',       U64(0), U32(2), 'v',    '1',    U32(0),
};

TEST(test_txnrec__engine_writes_the_documented_record)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.sync = SOP_SYNC_OFF;
    CHECK_OK(sop_db_open(&db, test_dir(), &o));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "a", SOP_STORE_CREATE, NULL));
    CHECK_OK(put_s(t, s, "k", "v1"));
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_db_close(db));
    size_t len = 0;
    uint8_t *p = nth_txn_payload(test_dir(), 1, &len);
    CHECK(p != NULL);
    if (len != sizeof golden_first_commit || memcmp(p, golden_first_commit, len) != 0) {
        fprintf(stderr, "record of %zu bytes:", len);
        for (size_t i = 0; i < len; i++)
            fprintf(stderr, " %02x", p[i]);
        fprintf(stderr, "\n");
        free(p);
        FAIL_AT("the first commit's record differs from the documented layout");
        return;
    }
    CHECK_OK(decode_all(p + SOP_TXNREC_HEAD_LEN, len - SOP_TXNREC_HEAD_LEN));
    free(p);
}

/* Replay checks each store section's count delta against what applying
 * its operations did: a record that says +5 for one insert is damage. */
TEST(test_txnrec__replay_checks_the_count_delta)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "a", SOP_STORE_CREATE, NULL)); /* store id 1 */
    CHECK_OK(sop_txn_commit(t));
    for (int delta = 5; delta >= 1; delta -= 4) {
        uint64_t lsn = db->applied_lsn + 1;
        const uint8_t rec[] = {
            1,
            1,
            U16(0),
            U32(0),
            U64(0),
            U64(lsn - 1),
            U16(0),
            U32(0),
            U32(1),
            U64(1),
            U64((uint64_t)delta),
            U64(1),
            U32(1),
            1,
            0,
            U16(1),
            'z',
            U64(0),
            U32(1),
            '1',
            U32(0),
        };
        /* Replay is recovery's, which runs alone; on an open handle the
         * committer's lock stands in for that (registry.h R1). */
        sop_mutex_lock(&db->commit_mu);
        int rc = sop_txn__replay(db, lsn, rec, sizeof rec);
        sop_mutex_unlock(&db->commit_mu);
        if (delta == 5) {
            CHECK_RC(SOP_CORRUPT, rc);
            CHECK(strstr(sop_errmsg(), "count delta 1 differs from the record's 5") != NULL);
        } else {
            CHECK_OK(rc);
        }
    }
    /* the well-formed record applied: a checkpoint keeps it (it is in no log) */
    CHECK_OK(sop_db_checkpoint(db));
    CHECK_OK(sop_db_close(db));
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(sop_store_open(&s, t, "a", 0, NULL));
    sop_val v;
    CHECK_OK(get_s(&v, t, s, "z"));
    CHECK(v.len == 1 && memcmp(v.data, "1", 1) == 0);
    uint64_t n;
    CHECK_OK(sop_count(&n, t, s));
    CHECK_EQ_U64(n, 1);
    CHECK_OK(sop_txn_abort(t));
    CHECK_OK(sop_db_close(db));
}

TEST_MAIN(T(test_txnrec__golden_payload_decodes_to_its_fields),
          T(test_txnrec__replay_checks_the_count_delta),
          T(test_txnrec__damaged_bodies_are_corrupt_never_overread),
          T(test_txnrec__engine_writes_the_documented_record))
