/*
 * txnrec.c - encoder of the transaction record's head, decoder of all of
 * its payload (txnrec.h). Every reader of a TXN record goes through here:
 * replay, recovery's blob accounting, prepared-lock decoding, the checker.
 */
#include "txnrec.h"

#include <string.h>

void sop_txnrec__put_head(sop_buf *b, const sop_txnrec_head *h)
{
    size_t start = b->len;
    sop_buf_append_u8(b, h->kind);
    sop_buf_append_u8(b, SOP_TXNREC_VERSION);
    sop_buf_append_le16(b, 0);
    sop_buf_append_le32(b, 0);
    sop_buf_append_le64(b, h->txn_id);
    sop_buf_append_le64(b, h->snapshot);
    assert(sop_buf_status(b) || b->len - start == SOP_TXNREC_HEAD_LEN);
    (void)start;
}

int sop_txnrec__get_head(sop_txnrec_head *h, const uint8_t **body, size_t *body_len,
                         const uint8_t *payload, size_t len)
{
    memset(h, 0, sizeof *h);
    *body = NULL;
    *body_len = 0;
    if (len < SOP_TXNREC_HEAD_LEN)
        return SOP_CORRUPT_BKPT("transaction record of %zu bytes, shorter than its head", len);
    sop_rd r = {payload, payload + SOP_TXNREC_HEAD_LEN, 0};
    h->kind = sop_rd_u8(&r);
    uint8_t version = sop_rd_u8(&r);
    sop_rd_u16(&r);
    sop_rd_u32(&r);
    h->txn_id = sop_rd_u64(&r);
    h->snapshot = sop_rd_u64(&r);
    assert(!r.bad && r.p == r.end);
    if (version != SOP_TXNREC_VERSION)
        return SOP_CORRUPT_BKPT("transaction record version %u", version);
    if (h->kind < SOP_TXNREC_COMMIT || h->kind > SOP_TXNREC_ABORT_PREPARED)
        return SOP_CORRUPT_BKPT("transaction record kind %u", h->kind);
    if (!sop_txnrec__has_body(h->kind) && len != SOP_TXNREC_HEAD_LEN)
        return SOP_CORRUPT_BKPT("transaction record kind %u with a body", h->kind);
    *body = payload + SOP_TXNREC_HEAD_LEN;
    *body_len = len - SOP_TXNREC_HEAD_LEN;
    return SOP_OK;
}

/* ---- body decoder ------------------------------------------------------- */

static int fail(sop_txnrec_rd *d, const char *what)
{
    if (d->rc == SOP_OK)
        d->rc = SOP_CORRUPT_BKPT("transaction record body: %s at byte %zu", what,
                                 (size_t)(d->r.p - d->base));
    d->section = 3;
    return d->rc;
}

/* A section's u32 count; more entries than bytes left is damage (every
 * entry takes at least one byte), which also bounds a caller's allocation. */
static int read_count(sop_txnrec_rd *d, const char *what)
{
    uint32_t n = sop_rd_u32(&d->r);
    if (d->r.bad || n > (size_t)(d->r.end - d->r.p))
        return fail(d, what);
    d->left = n;
    return SOP_OK;
}

int sop_txnrec__open(sop_txnrec_rd *d, sop_val *xid, const uint8_t *body, size_t len,
                     size_t max_name, size_t max_key)
{
    memset(d, 0, sizeof *d);
    d->r = (sop_rd){body, body + len, 0};
    d->base = body;
    d->max_name = max_name;
    d->max_key = max_key;
    *xid = sop_rd_val16(&d->r);
    if (d->r.bad)
        return fail(d, "xid");
    return read_count(d, "catalog count");
}

int sop_txnrec__next_cat(sop_txnrec_rd *d, sop_txnrec_cat *e)
{
    if (d->rc)
        return d->rc;
    if (d->section != 0 || d->left == 0)
        return 0;
    memset(e, 0, sizeof *e);
    sop_rd *r = &d->r;
    e->op = sop_rd_u8(r);
    e->store_id = sop_rd_u64(r);
    if (e->op == SOP_TXNREC_CREATE) {
        e->root_lid = sop_rd_u64(r);
        e->name = sop_rd_val16(r);
        e->flags = sop_rd_u32(r);
        e->slot_length = sop_rd_u32(r);
        e->max_inline = sop_rd_u32(r);
        e->comparator = sop_rd_val16(r);
        e->key_spec.len = sop_rd_u32(r);
        e->key_spec.data = sop_rd_take(r, e->key_spec.len);
        if (!r->bad && (e->name.len == 0 || e->name.len > d->max_name))
            return fail(d, "store name length");
    } else if (e->op != SOP_TXNREC_DROP) {
        return fail(d, "catalog op");
    }
    if (r->bad)
        return fail(d, "catalog entry");
    d->left--;
    return 1;
}

/* Move to section s, skipping what is left of the earlier ones. */
static int skip_to(sop_txnrec_rd *d, int s)
{
    sop_txnrec_cat e;
    sop_txnrec_store st;
    sop_txnrec_op op;
    int rc;
    while (d->section < s && d->rc == SOP_OK) {
        switch (d->section) {
        case 0:
            while ((rc = sop_txnrec__next_cat(d, &e)) == 1)
                ;
            if (rc == 0 && read_count(d, "store count") == SOP_OK)
                d->section = 1;
            break;
        case 1:
            while ((rc = sop_txnrec__next_op(d, &op)) == 1)
                ;
            if (rc == 0 && d->left == 0) {
                if (read_count(d, "read count") == SOP_OK)
                    d->section = 2;
            } else if (rc == 0) {
                rc = sop_txnrec__next_store(d, &st);
            }
            break;
        case 2:
            while ((rc = sop_txnrec__next_read(d, &(sop_txnrec_read){0})) == 1)
                ;
            if (rc == 0)
                d->section = 3;
            break;
        default:
            assert(0);
        }
    }
    return d->rc;
}

int sop_txnrec__next_store(sop_txnrec_rd *d, sop_txnrec_store *st)
{
    if (d->section < 1 && skip_to(d, 1))
        return d->rc;
    if (d->rc)
        return d->rc;
    if (d->section != 1)
        return 0;
    sop_txnrec_op op;
    int rc;
    while ((rc = sop_txnrec__next_op(d, &op)) == 1) /* the previous section's rest */
        ;
    if (rc < 0)
        return rc;
    if (d->left == 0)
        return 0;
    sop_rd *r = &d->r;
    st->store_id = sop_rd_u64(r);
    st->count_delta_off = (size_t)(r->p - d->base);
    st->count_delta = (int64_t)sop_rd_u64(r);
    st->next_seq = sop_rd_u64(r);
    st->op_count = sop_rd_u32(r);
    if (r->bad || st->op_count > (size_t)(r->end - r->p))
        return fail(d, "store section");
    d->left--;
    d->ops_left = st->op_count;
    return 1;
}

int sop_txnrec__next_op(sop_txnrec_rd *d, sop_txnrec_op *o)
{
    if (d->rc)
        return d->rc;
    if (d->section != 1 || d->ops_left == 0)
        return 0;
    memset(o, 0, sizeof *o);
    sop_rd *r = &d->r;
    o->kind = sop_rd_u8(r);
    uint8_t vkind = sop_rd_u8(r);
    o->key = sop_rd_val16(r);
    o->seq = sop_rd_u64(r);
    if (o->kind == SOP_TXNREC_PUT) {
        o->value_len = sop_rd_u32(r);
        if (vkind == 1) {
            o->is_blob = 1;
            o->loc.seg = sop_rd_u64(r);
            o->loc.off = sop_rd_u64(r);
            o->loc.len = sop_rd_u32(r);
            o->loc.crc = sop_rd_u32(r);
        } else if (vkind == 0) {
            o->value.len = o->value_len;
            o->value.data = sop_rd_take(r, o->value_len);
        } else {
            return fail(d, "value kind");
        }
    } else if (o->kind != SOP_TXNREC_DEL || vkind != 0) {
        return fail(d, "operation kind");
    }
    if (r->bad)
        return fail(d, "operation");
    if (o->key.len == 0 || o->key.len > d->max_key)
        return fail(d, "key length");
    d->ops_left--;
    return 1;
}

int sop_txnrec__next_read(sop_txnrec_rd *d, sop_txnrec_read *rd)
{
    if (d->section < 2 && skip_to(d, 2))
        return d->rc;
    if (d->rc)
        return d->rc;
    if (d->section != 2 || d->left == 0)
        return 0;
    memset(rd, 0, sizeof *rd);
    sop_rd *r = &d->r;
    rd->store_id = sop_rd_u64(r);
    rd->kind = sop_rd_u8(r);
    if (rd->kind == SOP_TXNREC_POINT) {
        rd->lo = sop_rd_val16(r);
    } else if (rd->kind == SOP_TXNREC_RANGE) {
        rd->flags = sop_rd_u8(r);
        rd->lo = sop_rd_val16(r);
        rd->hi = sop_rd_val16(r);
    } else if (!r->bad) {
        return fail(d, "read kind");
    }
    if (r->bad)
        return fail(d, "read");
    if (rd->lo.len > d->max_key || rd->hi.len > d->max_key)
        return fail(d, "read key length");
    d->left--;
    return 1;
}

int sop_txnrec__finish(sop_txnrec_rd *d)
{
    if (skip_to(d, 3))
        return d->rc;
    if (d->r.p != d->r.end)
        return fail(d, "bytes after the read set");
    return SOP_OK;
}
