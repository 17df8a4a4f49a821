/*
 * cursor.c - the cursor a user sees: the transaction's snapshot tree merged
 * with its own uncommitted writes.
 *
 *   (M1) With no write set for the store (every read-only txn), a cursor is
 *        a plain tree cursor: steps are O(1) within a leaf, no allocation.
 *   (M2) Otherwise every move re-seeks both sources relative to the
 *        current (key, seq): the position is fully described by the item,
 *        so writes made through the txn between moves are always seen, and
 *        a move that finds nothing leaves the cursor where it was.
 *   (M3) In a read-write txn the key range a cursor has covered (from where
 *        it was positioned to where it is, both ends inclusive, open-ended
 *        when it ran off an end) joins the read set when the cursor is
 *        repositioned, closed, or its txn commits (phantom protection).
 *   (M4) Keys and values handed out point into immutable node images or
 *        the txn arena; both outlive the next move.
 */
#include "txn.h"

static int kcmp(const sop_store *s, const sop_val *a, uint64_t as, const sop_val *b, uint64_t bs)
{
    return sop_keycmp__items(&s->cmp, a, as, b, bs);
}

/* ---- read-set coverage (M3) ------------------------------------------------ */

typedef struct rs_state {
    int active;
    int lo_open, hi_open;
    int lo_has, hi_has; /* a closed bound not yet known takes the first key seen */
    uint8_t *lo, *hi;
    size_t lo_len, hi_len, lo_cap, hi_cap;
} rs_state;

static int buf_set(uint8_t **b, size_t *cap, size_t *len, const sop_val *v)
{
    if (*cap < v->len) {
        uint8_t *n = sop_realloc(*b, v->len);
        if (!n)
            return sop_err(SOP_NOMEM, "cursor range");
        *b = n;
        *cap = v->len;
    }
    memcpy(*b, v->data, v->len);
    *len = v->len;
    return SOP_OK;
}

static rs_state *rs_of(sop_cursor *c)
{
    return (rs_state *)c->ext;
}

static int rs_tracking(const sop_cursor *c)
{
    return !(c->txn->flags & SOP_TXN_READONLY);
}

static int rs_flush(sop_cursor *c)
{
    rs_state *r = rs_of(c);
    if (!r || !r->active)
        return SOP_OK;
    r->active = 0;
    if ((!r->lo_open && !r->lo_has) || (!r->hi_open && !r->hi_has))
        return SOP_OK; /* nothing observed */
    sop_val lo = {r->lo, r->lo_len}, hi = {r->hi, r->hi_len};
    return sop_txn__read_range(c->txn, c->store, r->lo_open, &lo, r->hi_open, &hi);
}

/* Start coverage at a bound (lo_open: from -inf). */
static int rs_start(sop_cursor *c, int lo_open, const sop_val *lo, int hi_open, const sop_val *hi)
{
    if (!rs_tracking(c))
        return SOP_OK;
    int rc = rs_flush(c);
    if (rc)
        return rc;
    rs_state *r = rs_of(c);
    r->lo_open = lo_open;
    r->hi_open = hi_open;
    r->lo_len = r->hi_len = 0;
    r->lo_has = r->hi_has = 0;
    if (!lo_open && lo) {
        if ((rc = buf_set(&r->lo, &r->lo_cap, &r->lo_len, lo)) != SOP_OK)
            return rc;
        r->lo_has = 1;
    }
    if (!hi_open && hi) {
        if ((rc = buf_set(&r->hi, &r->hi_cap, &r->hi_len, hi)) != SOP_OK)
            return rc;
        r->hi_has = 1;
    }
    r->active = 1;
    return SOP_OK;
}

/* Widen coverage to include key (or an open end: dir -1 / +1 with key NULL). */
static int rs_extend(sop_cursor *c, const sop_val *key, int open_dir)
{
    if (!rs_tracking(c))
        return SOP_OK;
    rs_state *r = rs_of(c);
    if (!r->active)
        return SOP_OK;
    if (!key) {
        if (open_dir < 0)
            r->lo_open = 1;
        else
            r->hi_open = 1;
        return SOP_OK;
    }
    sop_val lo = {r->lo, r->lo_len}, hi = {r->hi, r->hi_len};
    int rc;
    if (!r->lo_open && (!r->lo_has || kcmp(c->store, key, 0, &lo, 0) < 0)) {
        if ((rc = buf_set(&r->lo, &r->lo_cap, &r->lo_len, key)) != SOP_OK)
            return rc;
        r->lo_has = 1;
    }
    if (!r->hi_open && (!r->hi_has || kcmp(c->store, key, 0, &hi, 0) > 0)) {
        if ((rc = buf_set(&r->hi, &r->hi_cap, &r->hi_len, key)) != SOP_OK)
            return rc;
        r->hi_has = 1;
    }
    return SOP_OK;
}

void sop_cursor__invalidate(sop_cursor *c)
{
    c->positioned = 0;
    c->txn = NULL;
}

int sop_cursor__flush_reads(sop_cursor *c)
{
    return c->txn ? rs_flush(c) : SOP_OK;
}

void sop_cursor__free_ext(sop_cursor *c)
{
    rs_state *r = rs_of(c);
    if (r) {
        sop_free(r->lo);
        sop_free(r->hi);
        sop_free(r);
    }
    c->ext = NULL;
    sop_free(c->keybuf);
    c->keybuf = NULL;
    c->keybuf_cap = 0;
    sop_free(c->bound_buf);
    c->bound_buf = NULL;
    c->has_lo = c->has_hi = 0;
}

int sop_cursor__init_ext(sop_cursor *c)
{
    rs_state *r = sop_calloc(1, sizeof *r);
    if (!r)
        return sop_err(SOP_NOMEM, "cursor");
    c->ext = r;
    return SOP_OK;
}

/* ---- merged positioning (M2) ----------------------------------------------- */

static sop_ws_item *ws_first(sop_ws *w)
{
    return w->head->next[0];
}

static sop_ws_item *ws_last(sop_ws *w)
{
    return w->last[0];
}

/*
 * Pick the merged item from the tree position (t_ok) and ws position wi,
 * moving in dir, skipping deletions and tree items the ws overrides.
 */
static int merged_pick(sop_cursor *c, int t_ok, sop_ws_item *wi, int dir)
{
    sop_store *s = c->store;
    for (;;) {
        sop_val tk = {NULL, 0};
        uint64_t ts = 0;
        sop_leafval tv;
        if (t_ok)
            sop_tcur__item(&c->tc, &tk, &ts, &tv);
        if (!t_ok && !wi)
            return SOP_NOTFOUND;
        int cmp;
        if (!t_ok)
            cmp = 1; /* ws only */
        else if (!wi)
            cmp = -1; /* tree only */
        else
            cmp = dir * kcmp(s, &tk, ts, &wi->key, wi->seq);
        if (cmp < 0) { /* tree item comes first */
            c->key = tk;
            c->seq = ts;
            c->val = tv;
            c->wi = NULL;
            return SOP_OK;
        }
        if (cmp == 0 && t_ok) {
            /* ws overrides the tree item: consume the tree side too. */
            int rc = dir > 0 ? sop_tcur__next(&c->tc) : sop_tcur__prev(&c->tc);
            if (rc == SOP_NOTFOUND)
                t_ok = 0;
            else if (rc)
                return rc;
        }
        if (wi->op == SOP_OP_DEL) {
            wi = dir > 0 ? wi->next[0] : wi->prev;
            continue;
        }
        c->key = wi->key;
        c->seq = wi->seq;
        c->val = wi->val;
        c->wi = wi;
        return SOP_OK;
    }
}

/* Is the tree cursor's item exactly (k, s)? */
static int tree_at(sop_cursor *c, const sop_val *k, uint64_t s)
{
    sop_val tk;
    uint64_t ts;
    sop_tcur__item(&c->tc, &tk, &ts, NULL);
    return kcmp(c->store, &tk, ts, k, s) == 0;
}

/* Position at the first item >= (k,s) (dir>0, incl) / > (excl), or the last
 * item <= / < (dir<0). Non-duplicate nodes ignore seq, so "strictly after"
 * is done by stepping over an exact match, never by seeking (k, s+1). */
static int merged_seek(sop_cursor *c, sop_ws *w, int dir, const sop_val *k, uint64_t s, int incl)
{
    int rc, exact;
    sop_ws_item *wi;
    sop_tcur__init(&c->tc, c->txn->db, c->store, c->txn->snap);
    int created_here = atomic_load(&c->store->created_lsn) > c->txn->snap;
    if (created_here) {
        rc = SOP_NOTFOUND;
    } else if (dir > 0) {
        rc = sop_tcur__seek(&c->tc, k, s);
        if (rc == SOP_OK && !incl && tree_at(c, k, s))
            rc = sop_tcur__next(&c->tc);
    } else {
        rc = SOP_NOTFOUND;
        if (incl) {
            rc = sop_tcur__seek(&c->tc, k, s);
            if (rc == SOP_OK && !tree_at(c, k, s))
                rc = SOP_NOTFOUND;
        }
        if (rc == SOP_NOTFOUND)
            rc = sop_tcur__seek_lt(&c->tc, k, s);
    }
    if (rc != SOP_OK && rc != SOP_NOTFOUND)
        return rc;
    wi = sop_ws__find(w, k, s, &exact);
    if (dir > 0) {
        if (exact && !incl)
            wi = wi->next[0];
    } else if (!(exact && incl)) {
        wi = wi ? wi->prev : ws_last(w);
    }
    return merged_pick(c, rc == SOP_OK, wi, dir);
}

static int merged_edge(sop_cursor *c, sop_ws *w, int dir)
{
    sop_tcur__init(&c->tc, c->txn->db, c->store, c->txn->snap);
    int created_here = atomic_load(&c->store->created_lsn) > c->txn->snap;
    int rc =
        created_here ? SOP_NOTFOUND : (dir > 0 ? sop_tcur__first(&c->tc) : sop_tcur__last(&c->tc));
    if (rc != SOP_OK && rc != SOP_NOTFOUND)
        return rc;
    return merged_pick(c, rc == SOP_OK, dir > 0 ? ws_first(w) : ws_last(w), dir);
}

/* ---- moves ------------------------------------------------------------------ */

static int same_key(const sop_cursor *c, const sop_val *a, const sop_val *b)
{
    return kcmp(c->store, a, 0, b, 0) == 0;
}

/* Bounds of sop_cursor_set_range (none: both 0). */
static int below_lo(const sop_cursor *c, const sop_val *k)
{
    if (!c->has_lo)
        return 0;
    int cmp = kcmp(c->store, k, 0, &c->lo, 0);
    return cmp < 0 || (cmp == 0 && c->lo_excl);
}

static int above_hi(const sop_cursor *c, const sop_val *k)
{
    if (!c->has_hi)
        return 0;
    int cmp = kcmp(c->store, k, 0, &c->hi, 0);
    return cmp > 0 || (cmp == 0 && c->hi_excl);
}

static int plain_set_current(sop_cursor *c)
{
    sop_tcur__item(&c->tc, &c->key, &c->seq, &c->val);
    return SOP_OK;
}

static int move_inner(sop_cursor *c, sop_cursor_op op, const sop_val *key)
{
    sop_txn *t = c->txn;
    sop_ws *w = sop_txn__ws(t, c->store, 0);
    int rc = SOP_OK;
    int dir = 1;
    sop_val prev_key = c->key;
    uint64_t prev_seq = c->seq;
    int was = c->positioned;
    int plain = (w == NULL || w->item_count == 0) && atomic_load(&c->store->created_lsn) <= t->snap;

    if ((op == SOP_CURRENT || op == SOP_NEXT_DUP || op == SOP_PREV_DUP) && !was)
        return sop_err(SOP_INVAL, "cursor is not positioned");
    if (op == SOP_NEXT && !was)
        op = SOP_FIRST;
    if (op == SOP_PREV && !was)
        op = SOP_LAST;

    switch (op) {
    case SOP_CURRENT: {
        /* Re-read: the item's bytes may have been evicted since (L3). */
        if (plain) {
            sop_tcur__init(&c->tc, t->db, c->store, t->snap);
            rc = sop_tcur__seek(&c->tc, &prev_key, prev_seq);
            if (rc == SOP_OK)
                plain_set_current(c);
        } else {
            rc = merged_seek(c, w, 1, &prev_key, prev_seq, 1);
        }
        if (rc == SOP_OK && kcmp(c->store, &c->key, c->seq, &prev_key, prev_seq) != 0)
            rc = SOP_NOTFOUND; /* removed through this txn */
        if (rc != SOP_OK) {
            c->key = prev_key;
            c->seq = prev_seq;
            return rc;
        }
        return SOP_OK;
    }
    case SOP_FIRST:
    case SOP_LAST:
        dir = op == SOP_FIRST ? 1 : -1;
        if ((rc = rs_start(c, dir > 0, NULL, dir < 0, NULL)) != SOP_OK)
            return rc;
        if (plain) {
            sop_tcur__init(&c->tc, t->db, c->store, t->snap);
            rc = dir > 0 ? sop_tcur__first(&c->tc) : sop_tcur__last(&c->tc);
            if (rc == SOP_OK)
                plain_set_current(c);
        } else {
            rc = merged_edge(c, w, dir);
        }
        if (rc == SOP_NOTFOUND) {
            c->positioned = 0;
            rs_extend(c, NULL, -dir); /* saw the whole (empty) store */
            rs_extend(c, NULL, dir);
            return rc;
        }
        if (rc) {
            c->positioned = 0;
            return rc;
        }
        break;
    case SOP_SEEK:
    case SOP_SEEK_GE: {
        if ((rc = rs_start(c, 0, key, 0, key)) != SOP_OK)
            return rc;
        if (plain) {
            sop_tcur__init(&c->tc, t->db, c->store, t->snap);
            rc = sop_tcur__seek(&c->tc, key, 0);
            if (rc == SOP_OK)
                plain_set_current(c);
        } else {
            rc = merged_seek(c, w, 1, key, 0, 1);
        }
        if (rc == SOP_NOTFOUND) {
            c->positioned = 0;
            rs_extend(c, NULL, 1);
            return rc;
        }
        if (rc) {
            c->positioned = 0;
            return rc;
        }
        if ((rc = rs_extend(c, &c->key, 1)) != SOP_OK)
            return rc;
        if (op == SOP_SEEK && !same_key(c, &c->key, key)) {
            c->positioned = 0;
            return SOP_NOTFOUND;
        }
        c->positioned = 1;
        return SOP_OK;
    }
    case SOP_NEXT:
    case SOP_NEXT_DUP:
    case SOP_PREV:
    case SOP_PREV_DUP:
        dir = (op == SOP_NEXT || op == SOP_NEXT_DUP) ? 1 : -1;
        if (plain && c->tc.depth > 0 && c->tc.store == c->store &&
            (rc = sop_tcur__refresh(&c->tc)) == SOP_OK) {
            rc = dir > 0 ? sop_tcur__next(&c->tc) : sop_tcur__prev(&c->tc);
            if (rc == SOP_OK)
                plain_set_current(c);
        } else {
            rc = merged_seek(c, w ? w : sop_txn__ws(t, c->store, 1), dir, &prev_key, prev_seq, 0);
        }
        /* Past a bound (sop_cursor_set_range) is as past the end, except
         * that what was seen ends at the item beyond the bound, not at the
         * end of the store. (DUP moves stay on one key, inside them.) */
        int past = rc == SOP_OK && (op == SOP_NEXT || op == SOP_PREV) &&
                   (dir > 0 ? above_hi(c, &c->key) : below_lo(c, &c->key));
        if (past) {
            if ((rc = rs_extend(c, &c->key, dir)) != SOP_OK) {
                c->positioned = 0;
                return rc;
            }
            rc = SOP_NOTFOUND;
        }
        if (rc == SOP_NOTFOUND) {
            c->key = prev_key;
            c->seq = prev_seq;
            if ((op == SOP_NEXT || op == SOP_PREV) && !past)
                rs_extend(c, NULL, dir);
            /* re-establish the tree position on the current item */
            if (plain) {
                sop_tcur__init(&c->tc, t->db, c->store, t->snap);
                if (sop_tcur__seek(&c->tc, &prev_key, prev_seq) == SOP_OK)
                    plain_set_current(c);
            } else {
                merged_seek(c, w, 1, &prev_key, prev_seq, 1);
            }
            return SOP_NOTFOUND;
        }
        if (rc) {
            c->positioned = 0;
            return rc;
        }
        if ((op == SOP_NEXT_DUP || op == SOP_PREV_DUP) && !same_key(c, &c->key, &prev_key)) {
            /* Different key: stay on the item we were on. */
            if (plain) {
                sop_tcur__init(&c->tc, t->db, c->store, t->snap);
                rc = sop_tcur__seek(&c->tc, &prev_key, prev_seq);
                if (rc == SOP_OK)
                    plain_set_current(c);
            } else {
                rc = merged_seek(c, w, 1, &prev_key, prev_seq, 1);
            }
            return rc == SOP_OK ? SOP_NOTFOUND : rc;
        }
        break;
    default:
        return sop_err(SOP_INVAL, "unknown cursor op %d", (int)op);
    }
    c->positioned = 1;
    c->dir = dir;
    return rs_extend(c, &c->key, dir);
}

/* Keep a copy of the current key: the next call seeks from it, and the
 * image it pointed into may be evicted in between (cache.h L3). */
static int keep_key(sop_cursor *c)
{
    if (!c->positioned || c->key.data == c->keybuf)
        return SOP_OK;
    if (c->keybuf_cap < c->key.len) {
        size_t cap = c->key.len < 64 ? 64 : c->key.len;
        uint8_t *n = sop_malloc(cap);
        if (!n)
            return sop_err(SOP_NOMEM, "cursor key");
        sop_free(c->keybuf);
        c->keybuf = n;
        c->keybuf_cap = cap;
    }
    memmove(c->keybuf, c->key.data, c->key.len);
    c->key.data = c->keybuf;
    return SOP_OK;
}

static int step(sop_cursor *c, sop_cursor_op op, const sop_val *key)
{
    int rc = move_inner(c, op, key);
    int krc = keep_key(c);
    return rc == SOP_OK ? krc : rc;
}

/* ---- bounds (sop_cursor_set_range) ------------------------------------------ */

int sop_cursor__set_range(sop_cursor *c, const sop_val *lo, const sop_val *hi, unsigned flags)
{
    size_t n = (lo ? lo->len : 0) + (hi ? hi->len : 0);
    uint8_t *b = n ? sop_malloc(n) : NULL;
    if (n && !b)
        return sop_err(SOP_NOMEM, "cursor bounds");
    sop_free(c->bound_buf);
    c->bound_buf = b;
    c->has_lo = lo != NULL;
    c->has_hi = hi != NULL;
    c->lo_excl = (flags & SOP_RANGE_LO_EXCLUSIVE) != 0;
    c->hi_excl = (flags & SOP_RANGE_HI_EXCLUSIVE) != 0;
    c->lo = c->hi = (sop_val){NULL, 0};
    if (lo) {
        memcpy(b, lo->data, lo->len);
        c->lo = (sop_val){b, lo->len};
    }
    if (hi) {
        memcpy(b + c->lo.len, hi->data, hi->len);
        c->hi = (sop_val){b + c->lo.len, hi->len};
    }
    c->positioned = 0;
    return SOP_OK;
}

/* rc, unpositioning the cursor unless it is SOP_OK (FIRST/LAST/SEEK rule). */
static int settle(sop_cursor *c, int rc)
{
    if (rc != SOP_OK)
        c->positioned = 0;
    return rc;
}

/* The first item inside the bounds. */
static int bounded_first(sop_cursor *c)
{
    int rc;
    if (!c->has_lo)
        rc = step(c, SOP_FIRST, NULL);
    else {
        rc = step(c, SOP_SEEK_GE, &c->lo);
        while (rc == SOP_OK && below_lo(c, &c->key)) /* exclusive: skip every item at lo */
            rc = step(c, SOP_NEXT, NULL);
    }
    if (rc == SOP_OK && above_hi(c, &c->key))
        rc = SOP_NOTFOUND;
    return settle(c, rc);
}

/* The last item inside the bounds: the last one not above hi. */
static int bounded_last(sop_cursor *c)
{
    int rc;
    if (!c->has_hi) {
        rc = step(c, SOP_LAST, NULL);
    } else {
        rc = step(c, SOP_SEEK_GE, &c->hi);
        if (rc == SOP_NOTFOUND) {
            rc = step(c, SOP_LAST, NULL); /* every item is below hi */
        } else if (rc == SOP_OK && above_hi(c, &c->key)) {
            rc = step(c, SOP_PREV, NULL);
        } else if (rc == SOP_OK) { /* at hi, inclusive: its last duplicate */
            while ((rc = step(c, SOP_NEXT_DUP, NULL)) == SOP_OK)
                ;
            if (rc == SOP_NOTFOUND)
                rc = SOP_OK;
        }
    }
    if (rc == SOP_OK && below_lo(c, &c->key))
        rc = SOP_NOTFOUND;
    return settle(c, rc);
}

/* Outside the bounds there is nothing: FIRST/LAST/SEEK_GE start at a bound,
 * NEXT/PREV stop at one (SOP_NOTFOUND, staying on the item as at an end). */
static int bounded_move(sop_cursor *c, sop_cursor_op op, const sop_val *key)
{
    int rc;
    switch (op) {
    case SOP_FIRST:
        return bounded_first(c);
    case SOP_LAST:
        return bounded_last(c);
    case SOP_SEEK:
        if (below_lo(c, key) || above_hi(c, key))
            return settle(c, SOP_NOTFOUND);
        return step(c, op, key);
    case SOP_SEEK_GE:
        if (below_lo(c, key))
            return bounded_first(c);
        rc = step(c, op, key);
        return settle(c, rc == SOP_OK && above_hi(c, &c->key) ? SOP_NOTFOUND : rc);
    case SOP_NEXT:
    case SOP_PREV:
        if (!c->positioned)
            return op == SOP_NEXT ? bounded_first(c) : bounded_last(c);
        return step(c, op, NULL); /* stops at a bound itself (move_inner) */
    default:                      /* CURRENT and the DUP moves stay on one key, inside the bounds */
        return step(c, op, key);
    }
}

int sop_cursor__move(sop_cursor *c, sop_cursor_op op, const sop_val *key)
{
    if (c->has_lo || c->has_hi)
        return bounded_move(c, op, key);
    return step(c, op, key);
}
