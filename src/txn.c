/*
 * txn.c - transactions. The state machine and invariants (T1)-(T3) and the
 * commit record layout are in txn.h.
 *
 * Sections: begin/end; write set (a skiplist per store, in the txn arena);
 * read set; validation; record encoding; applying a record body (shared by
 * commit and recovery); commit and prepare; prepared transactions; replay;
 * trimming of history and old versions.
 */
#include "blob.h"
#include "cache.h"
#include "commit.h"
#include "txn.h"
#include "txnrec.h"

#include <stdio.h>
#include <stdlib.h>

/* ======================================================================== */
/* Begin / end                                                               */
/* ======================================================================== */

int sop_txn__begin(sop_txn **out, sop_db *db, unsigned flags)
{
    sop_txn *t = sop_calloc(1, sizeof *t);
    *out = NULL;
    if (!t)
        return sop_err(SOP_NOMEM, "transaction");
    t->db = db;
    t->magic = SOP_TXN_LIVE;
    t->flags = flags;
    t->state = SOP_TXN_ACTIVE;
    t->next_prov_seq = SOP_PROVISIONAL_SEQ;
    sop_arena_init_as(&t->arena, 0, db->arena_debug);
    uint64_t now = db->vfs->monotonic_ns(db->vfs);
    t->deadline_ns = db->txn_limit_ns == UINT64_MAX ? UINT64_MAX : now + db->txn_limit_ns;
    t->rng = now ^ (uint64_t)(uintptr_t)t;
    if (!(t->slot = sop_cache__slot_get(db->cache))) {
        sop_free(t);
        return sop_err(SOP_NOMEM, "transaction");
    }
    sop_mutex_lock(&db->snap_mu);
    t->snap = atomic_load_explicit(&db->visible_lsn, memory_order_acquire); /* (D2) */
    t->next_active = db->active;
    if (db->active)
        db->active->prev_active = t;
    db->active = t;
    db->active_count++;
    sop_mutex_unlock(&db->snap_mu);
    *out = t;
    return SOP_OK;
}

/* The value blobs this txn wrote stop being in flight: referenced now
 * (commit/prepare, dead = 0) or garbage (abort, dead = 1). */
static void release_ws_blobs(sop_txn *t, int dead)
{
    for (sop_ws *w = t->ws; w; w = w->next)
        for (sop_ws_item *x = w->head->next[0]; x; x = x->next[0])
            if (x->op == SOP_OP_PUT && x->val.is_blob) {
                if (dead)
                    sop_wal__blob_discard(t->db->wal, &x->val.loc);
                else
                    sop_wal__blob_inflight(t->db->wal, &x->val.loc, -1);
            }
}

void sop_txn__free(sop_txn *t)
{
    if (!t)
        return;
    sop_db *db = t->db;
    if (!t->blobs_released)
        release_ws_blobs(t, 1);
    for (sop_cursor *c = t->cursors; c; c = c->next_in_txn)
        sop_cursor__invalidate(c);
    /* Stores this txn created but never committed die with it. Before it
     * leaves the active list: from then on its snapshot no longer keeps a
     * store it touched from being freed (sop_db__reap_stores). */
    for (sop_ws *w = t->ws; w; w = w->next) {
        if (w->created && atomic_load(&w->store->pending_owner) == t)
            atomic_store(&w->store->pending_owner, NULL);
    }
    sop_db__discard_pending(db, t);
    sop_mutex_lock(&db->snap_mu);
    if (t->prev_active)
        t->prev_active->next_active = t->next_active;
    else
        db->active = t->next_active;
    if (t->next_active)
        t->next_active->prev_active = t->prev_active;
    db->active_count--;
    sop_mutex_unlock(&db->snap_mu);
    sop_cache__slot_put(t->slot);
    t->slot = NULL;
    sop_u64map_dispose(&t->ws_index);
    sop_arena_dispose(&t->arena);
    sop_free(t->reads);
    sop_free(t->value_buf);
    t->magic = SOP_TXN_DEAD;
#ifdef NDEBUG
    sop_free(t);
#else
    /* Quarantine (txn.h): the oldest quarantined handle is freed instead. */
    sop_mutex_lock(&db->snap_mu);
    sop_txn *old = db->txn_quarantine[db->txn_quarantine_next];
    db->txn_quarantine[db->txn_quarantine_next] = t;
    db->txn_quarantine_next = (db->txn_quarantine_next + 1) % SOP_TXN_QUARANTINE;
    sop_mutex_unlock(&db->snap_mu);
    sop_free(old);
#endif
}

void sop_txn__misuse(const sop_txn *t, const char *fn)
{
    fprintf(stderr,
            "libsop: %s(%p): not a live transaction (%s): a handle is ended by "
            "sop_txn_commit (whatever it returns) and by sop_txn_abort; do not use it again\n",
            fn, (const void *)t, t->magic == SOP_TXN_DEAD ? "already ended" : "bad magic word");
    abort();
}

int sop_txn__fail(sop_txn *t, int rc)
{
    if (rc != SOP_OK && rc != SOP_NOTFOUND && rc != SOP_KEYEXIST && rc != SOP_INVAL &&
        rc != SOP_READONLY && rc != SOP_BADSTATE && rc != SOP_BUSY)
        sop_txn__set_state(t, SOP_TXN_FAILED);
    return rc;
}

int sop_txn__check_usable(sop_txn *t, int for_write)
{
    SOP_TXN_CHECK(t, "sop_txn");
    if (t->state == SOP_TXN_FAILED)
        return sop_err(SOP_BADSTATE, "transaction has failed; only abort is allowed");
    if (t->state == SOP_TXN_PREPARED)
        return sop_err(SOP_BADSTATE, "transaction is prepared; only commit/abort are allowed");
    int rc = sop_db__check_panic(t->db);
    if (rc)
        return rc;
    sop_cache__enter(t->db->cache, t->slot); /* every call re-announces (cache.h L2) */
    if (for_write && (t->flags & SOP_TXN_READONLY))
        return sop_err(SOP_READONLY, "write in a read-only transaction");
    /* Every call reads the clock (a vDSO call, tens of nanoseconds): a
     * transaction past its limit gets no more reads, so the limit bounds
     * how long it can use its snapshot. */
    if (t->deadline_ns != UINT64_MAX && t->db->vfs->monotonic_ns(t->db->vfs) > t->deadline_ns) {
        sop_txn__set_state(t, SOP_TXN_FAILED);
        return sop_err(SOP_TIMEOUT, "transaction exceeded its time limit");
    }
    assert(t->state == SOP_TXN_ACTIVE);
    return SOP_OK;
}

/* ======================================================================== */
/* Write set                                                                 */
/* ======================================================================== */

static int key_cmp(const sop_store *s, const sop_val *a, uint64_t as, const sop_val *b, uint64_t bs)
{
    return sop_keycmp__items(&s->cmp, a, as, b, bs);
}

sop_ws *sop_txn__ws(sop_txn *t, sop_store *s, int create)
{
    /* A few write sets are searched in the list; more through ws_index, so
     * a transaction touching thousands of stores is not quadratic. */
    if (t->ws_count <= SOP_WS_LIST_MAX) {
        for (sop_ws *w = t->ws; w; w = w->next) {
            t->ws_probes++;
            if (w->store == s)
                return w;
        }
    } else {
        void *found;
        t->ws_probes++;
        if (sop_u64map_get(&found, &t->ws_index, (uintptr_t)s) == SOP_OK)
            return found;
    }
    if (!create)
        return NULL;
    sop_ws *w = sop_arena_alloc(&t->arena, sizeof *w, 8);
    if (!w)
        return NULL;
    memset(w, 0, sizeof *w);
    w->store = s;
    w->head = sop_arena_alloc(&t->arena,
                              sizeof(sop_ws_item) + SOP_WS_MAX_HEIGHT * sizeof(sop_ws_item *), 8);
    if (!w->head)
        return NULL;
    memset(w->head, 0, sizeof(sop_ws_item) + SOP_WS_MAX_HEIGHT * sizeof(sop_ws_item *));
    w->head->height = SOP_WS_MAX_HEIGHT;
    if (t->ws_count == SOP_WS_LIST_MAX) /* from now on through the index */
        for (sop_ws *o = t->ws; o; o = o->next)
            if (sop_u64map_put(NULL, &t->ws_index, (uintptr_t)o->store, o) != SOP_OK) {
                sop_u64map_dispose(&t->ws_index);
                return NULL;
            }
    if (t->ws_count >= SOP_WS_LIST_MAX &&
        sop_u64map_put(NULL, &t->ws_index, (uintptr_t)s, w) != SOP_OK)
        return NULL;
    w->next = t->ws;
    t->ws = w;
    t->ws_count++;
    return w;
}

/* First item >= (key, seq); *exact if equal. Fills update[] if given.
 * Keys arriving in ascending order (bulk loads, fillseq) take the fast
 * path: one compare against the last item, then link at the tail. */
static sop_ws_item *ws_search(sop_ws *w, const sop_val *key, uint64_t seq, int *exact,
                              sop_ws_item **update)
{
    sop_ws_item *x = w->head;
    sop_ws_item *tail = w->last[0];
    if (tail && key_cmp(w->store, &tail->key, tail->seq, key, seq) < 0) {
        if (update)
            for (int lv = 0; lv < SOP_WS_MAX_HEIGHT; lv++)
                update[lv] = w->last[lv] ? w->last[lv] : w->head;
        *exact = 0;
        return NULL;
    }
    if (update)
        for (int lv = SOP_WS_MAX_HEIGHT - 1; lv >= w->height; lv--)
            update[lv] = w->head;
    for (int lv = w->height - 1; lv >= 0; lv--) {
        while (x->next[lv] && key_cmp(w->store, &x->next[lv]->key, x->next[lv]->seq, key, seq) < 0)
            x = x->next[lv];
        if (update)
            update[lv] = x;
    }
    sop_ws_item *n = x->next[0];
    *exact = n && key_cmp(w->store, &n->key, n->seq, key, seq) == 0;
    return n;
}

sop_ws_item *sop_ws__find(sop_ws *w, const sop_val *key, uint64_t seq, int *exact)
{
    return ws_search(w, key, seq, exact, NULL);
}

void sop_ws__clear(sop_ws *w)
{
    w->item_count = 0;
    w->height = 0;
    for (int i = 0; i < SOP_WS_MAX_HEIGHT; i++) {
        w->head->next[i] = NULL;
        w->last[i] = NULL;
    }
}

int sop_txn__ws_put(sop_txn *t, sop_store *s, int op, const sop_val *key, uint64_t seq,
                    const sop_val *value)
{
    sop_ws *w = sop_txn__ws(t, s, 1);
    if (!w)
        return sop_err(SOP_NOMEM, "write set");
    sop_ws_item *update[SOP_WS_MAX_HEIGHT];
    int exact;
    sop_ws_item *x = ws_search(w, key, seq, &exact, update);
    sop_leafval v;
    memset(&v, 0, sizeof v);
    if (op == SOP_OP_PUT) {
        size_t threshold = (s->flags & SOP_STORE_VALUES_SEPARATE) ? 0 : s->max_inline;
        if (value->len > threshold &&
            !((s->flags & SOP_STORE_VALUES_SEPARATE) == 0 && value->len <= threshold)) {
            /* Its own blob, written now (before commit): bounded txn memory. */
            size_t rlen = sop_rec_len(value->len);
            uint8_t *rec = sop_malloc(rlen);
            if (!rec)
                return sop_err(SOP_NOMEM, "value blob of %zu bytes", value->len);
            memset(rec + SOP_REC_HDR_LEN + value->len, 0, rlen - SOP_REC_HDR_LEN - value->len);
            if (value->len)
                memcpy(rec + SOP_REC_HDR_LEN, value->data, value->len);
            uint32_t crc =
                sop_rec__header(rec, SOP_REC_VALUE, rec + SOP_REC_HDR_LEN, value->len, 0);
            uint64_t token;
            int rc = sop_wal__append_value(t->db->wal, rec, rlen, &v.loc, &token);
            sop_free(rec);
            if (rc)
                return rc;
            v.loc.crc = crc;
            v.is_blob = 1;
            v.value_len = (uint32_t)value->len;
        } else {
            void *copy = value->len ? sop_arena_memdup(&t->arena, value->data, value->len) : NULL;
            if (value->len && !copy)
                return sop_err(SOP_NOMEM, "value copy");
            v.inline_val.data = copy;
            v.inline_val.len = value->len;
            v.value_len = (uint32_t)value->len;
        }
    }
    if (exact) {
        /* A replaced blob written by this txn is garbage now. */
        if (x->op == SOP_OP_PUT && x->val.is_blob)
            sop_wal__blob_discard(t->db->wal, &x->val.loc);
        x->op = (uint8_t)op;
        x->val = v;
        return SOP_OK;
    }
    int h = 1;
    while (h < SOP_WS_MAX_HEIGHT && (sop_splitmix64(&t->rng) & 3) == 0)
        h++;
    /* The key's bytes right after the links: a search step that compares
     * against this item then touches one place, not two. */
    size_t links = sizeof *x + (size_t)h * sizeof(sop_ws_item *);
    x = sop_arena_alloc(&t->arena, links + key->len, 8);
    if (!x)
        return sop_err(SOP_NOMEM, "write set item");
    uint8_t *kcopy = (uint8_t *)x + links;
    memcpy(kcopy, key->data, key->len);
    x->key.data = kcopy;
    x->key.len = key->len;
    x->seq = seq;
    x->op = (uint8_t)op;
    x->height = (uint8_t)h;
    x->val = v;
    for (int lv = 0; lv < h; lv++) {
        x->next[lv] = update[lv]->next[lv];
        update[lv]->next[lv] = x;
        if (!x->next[lv])
            w->last[lv] = x;
    }
    if (h > w->height)
        w->height = h;
    x->prev = update[0] == w->head ? NULL : update[0];
    if (x->next[0])
        x->next[0]->prev = x;
    w->item_count++;
    return SOP_OK;
}

/* ======================================================================== */
/* Read set                                                                  */
/* ======================================================================== */

static sop_read *read_new(sop_txn *t)
{
    if (t->read_count == t->read_cap) {
        size_t cap = t->read_cap ? t->read_cap * 2 : 32;
        sop_read *n = sop_realloc(t->reads, cap * sizeof *n);
        if (!n)
            return NULL;
        t->reads = n;
        t->read_cap = cap;
    }
    sop_read *r = &t->reads[t->read_count++];
    memset(r, 0, sizeof *r);
    return r;
}

int sop_txn__read_point(sop_txn *t, sop_store *s, const sop_val *key)
{
    if (t->flags & SOP_TXN_READONLY)
        return SOP_OK;
    sop_read *r = read_new(t);
    void *k = sop_arena_memdup(&t->arena, key->data, key->len);
    if (!r || !k)
        return sop_err(SOP_NOMEM, "read set");
    r->store = s;
    r->lo.data = k;
    r->lo.len = key->len;
    return SOP_OK;
}

int sop_txn__read_range(sop_txn *t, sop_store *s, int lo_open, const sop_val *lo, int hi_open,
                        const sop_val *hi)
{
    if (t->flags & SOP_TXN_READONLY)
        return SOP_OK;
    sop_read *r = read_new(t);
    if (!r)
        return sop_err(SOP_NOMEM, "read set");
    r->store = s;
    r->is_range = 1;
    r->lo_open = lo_open;
    r->hi_open = hi_open;
    if (!lo_open) {
        void *k = sop_arena_memdup(&t->arena, lo->data, lo->len);
        if (!k)
            return sop_err(SOP_NOMEM, "read set");
        r->lo.data = k;
        r->lo.len = lo->len;
    }
    if (!hi_open) {
        void *k = sop_arena_memdup(&t->arena, hi->data, hi->len);
        if (!k)
            return sop_err(SOP_NOMEM, "read set");
        r->hi.data = k;
        r->hi.len = hi->len;
    }
    return SOP_OK;
}

int sop_txn__value(sop_val *out, sop_txn *t, uint8_t **buf, size_t *cap, const sop_leafval *v)
{
    if (!v->is_blob) {
        *out = v->inline_val;
        return SOP_OK;
    }
    return sop_blob__read(out, t->db->wal, &v->loc, v->value_len, 0, v->value_len, buf, cap);
}

/* ======================================================================== */
/* Validation                                                                */
/* ======================================================================== */

/* Does the sorted key array contain a key in [lo, hi] (open ends allowed)? */
static int keys_hit_range(const sop_store *s, const sop_val *keys, size_t n, int lo_open,
                          const sop_val *lo, int hi_open, const sop_val *hi)
{
    size_t a = 0, b = n;
    if (!lo_open) {
        while (a < b) {
            size_t m = (a + b) / 2;
            if (key_cmp(s, &keys[m], 0, lo, 0) < 0)
                a = m + 1;
            else
                b = m;
        }
    }
    if (a >= n)
        return 0;
    return hi_open || key_cmp(s, &keys[a], 0, hi, 0) <= 0;
}

static int txn_touches_store(sop_txn *t, sop_store *s)
{
    if (sop_txn__ws(t, s, 0))
        return 1;
    for (size_t i = 0; i < t->read_count; i++)
        if (t->reads[i].store == s)
            return 1;
    return 0;
}

/* Conflict of txn t with one set of written keys of store s. */
static int conflicts_with_keys(sop_txn *t, sop_store *s, const sop_val *keys, size_t n)
{
    sop_ws *w = sop_txn__ws(t, s, 0);
    if (w) {
        if (w->dropped && n)
            return 1;
        for (sop_ws_item *x = w->head->next[0]; x; x = x->next[0])
            if (keys_hit_range(s, keys, n, 0, &x->key, 0, &x->key))
                return 1;
    }
    for (size_t i = 0; i < t->read_count; i++) {
        sop_read *r = &t->reads[i];
        if (r->store != s)
            continue;
        if (r->is_range ? keys_hit_range(s, keys, n, r->lo_open, &r->lo, r->hi_open, &r->hi)
                        : keys_hit_range(s, keys, n, 0, &r->lo, 0, &r->lo))
            return 1;
    }
    return 0;
}

/* Does key k of store s fall into prepared key entry pk? */
static int pkey_hit(const sop_store *s, const struct sop_pkey *pk, const sop_val *k)
{
    if (!pk->is_range)
        return key_cmp(s, &pk->lo, 0, k, 0) == 0;
    if (!pk->lo_open && key_cmp(s, k, 0, &pk->lo, 0) < 0)
        return 0;
    if (!pk->hi_open && key_cmp(s, k, 0, &pk->hi, 0) > 0)
        return 0;
    return 1;
}

/* SOP_BUSY if a prepared txn (other than t) holds what t touches. */
static int check_prepared(sop_txn *t)
{
    for (sop_prepared *p = t->db->prepared; p; p = p->next) {
        if (p->id == t->id)
            continue;
        for (size_t i = 0; i < p->key_count; i++) {
            struct sop_pkey *pk = &p->keys[i];
            sop_store *s = sop_db__store_by_id(t->db, pk->store_id);
            if (!s)
                continue;
            sop_ws *w = sop_txn__ws(t, s, 0);
            if (w) {
                for (sop_ws_item *x = w->head->next[0]; x; x = x->next[0])
                    if (pkey_hit(s, pk, &x->key))
                        goto busy;
                if (w->dropped)
                    goto busy;
            }
            if (pk->is_write) {
                for (size_t j = 0; j < t->read_count; j++) {
                    sop_read *r = &t->reads[j];
                    if (r->store != s)
                        continue;
                    struct sop_pkey rk = {0, r->is_range, r->lo_open, r->hi_open,
                                          0, r->lo,       r->hi,      0};
                    if (r->is_range ? pkey_hit(s, &rk, &pk->lo) : pkey_hit(s, pk, &r->lo))
                        goto busy;
                }
            }
        }
        continue;
    busy:
        return sop_err(SOP_BUSY, "prepared transaction %" PRIu64 " holds a key this one touches",
                       p->id);
    }
    return SOP_OK;
}

/* Does prepared p's body create a store named name? */
static int prepared_creates(const sop_prepared *p, const char *name)
{
    sop_txnrec_rd d;
    sop_txnrec_cat e;
    sop_val xid;
    size_t nlen = strlen(name);
    if (sop_txnrec__open(&d, &xid, p->body, p->body_len, SOP_MAX_NAME_LEN, SOP_MAX_KEY_LEN))
        return 0; /* decoded when it was prepared: only damage in memory gets here */
    while (sop_txnrec__next_cat(&d, &e) == 1)
        if (e.op == SOP_TXNREC_CREATE && e.name.len == nlen && memcmp(e.name.data, name, nlen) == 0)
            return 1;
    return 0;
}

static int validate(sop_txn *t)
{
    sop_db *db = t->db;
    for (sop_hist *h = db->hist_head; h; h = h->next) {
        if (h->lsn <= t->snap)
            continue;
        for (size_t i = 0; i < h->store_count; i++) {
            struct sop_hist_store *hs = &h->stores[i];
            sop_store *s = sop_db__store_by_id(db, hs->store_id);
            if (!s)
                continue;
            if ((hs->dropped && txn_touches_store(t, s)) ||
                conflicts_with_keys(t, s, hs->keys, hs->key_count)) {
                atomic_fetch_add(&db->st_conflicts, 1);
                return sop_err(SOP_CONFLICT,
                               "store '%s': a key this transaction read or wrote was changed by "
                               "commit %" PRIu64,
                               s->name, h->lsn);
            }
        }
    }
    /* Catalog: creating a name that someone created meanwhile; touching a
     * store dropped meanwhile. */
    for (sop_ws *w = t->ws; w; w = w->next) {
        sop_store *s = w->store;
        if (w->created) {
            if (sop_db__store_live_named(db, s->name, strlen(s->name))) {
                atomic_fetch_add(&db->st_conflicts, 1);
                return sop_err(SOP_CONFLICT, "store '%s' was created by another transaction",
                               s->name);
            }
            /* A prepared transaction's new store holds its name until it is
             * resolved: its commit must not make a second live store of that
             * name (ckpt.c refuses a manifest with two). */
            for (sop_prepared *p = db->prepared; p; p = p->next)
                if (p->id != t->id && prepared_creates(p, s->name))
                    return sop_err(SOP_BUSY, "prepared transaction %" PRIu64 " creates store '%s'",
                                   p->id, s->name);
        } else if (atomic_load(&s->dropped_lsn) != SOP_NEVER) {
            atomic_fetch_add(&db->st_conflicts, 1);
            return sop_err(SOP_CONFLICT, "store '%s' was removed by another transaction", s->name);
        }
    }
    return check_prepared(t);
}

/* ======================================================================== */
/* Record encoding                                                           */
/* ======================================================================== */

static void buf_val16(sop_buf *b, const void *p, size_t len)
{
    sop_buf_append_le16(b, (uint16_t)len);
    sop_buf_append(b, p, len);
}

/* Encode kind + header + body for t into b (after 24 reserved header
 * bytes). Assigns store ids, root lids and final duplicate seqs (commit_mu). */
static int encode_txn(sop_buf *b, sop_txn *t, int kind, uint64_t txn_id, const sop_val *xid)
{
    sop_db *db = t->db;
    sop_buf_reset(b);
    sop_buf_extend(b, SOP_REC_HDR_LEN);
    sop_txnrec__put_head(b, &(sop_txnrec_head){(uint8_t)kind, txn_id, t->snap});
    buf_val16(b, xid ? xid->data : NULL, xid ? xid->len : 0);
    /* catalog */
    uint32_t ncat = 0;
    for (sop_ws *w = t->ws; w; w = w->next)
        ncat += (w->created != 0) + (w->dropped != 0);
    sop_buf_append_le32(b, ncat);
    for (sop_ws *w = t->ws; w; w = w->next) {
        sop_store *s = w->store;
        if (w->created) {
            if (s->id == 0) {
                /* UINT64_MAX is no store id (the next would wrap to 0): only
                 * a damaged next_store_id gets here. */
                if (db->next_store_id == UINT64_MAX)
                    return SOP_CORRUPT_BKPT("store ids exhausted (next_store_id %" PRIu64 ")",
                                            db->next_store_id);
                s->id = db->next_store_id++;
                s->root_lid = db->reg.next_lid++;
            }
            sop_buf_append_u8(b, 1);
            sop_buf_append_le64(b, s->id);
            sop_buf_append_le64(b, s->root_lid);
            buf_val16(b, s->name, strlen(s->name));
            sop_buf_append_le32(b, s->flags);
            sop_buf_append_le32(b, s->slot_length);
            sop_buf_append_le32(b, s->max_inline);
            buf_val16(b, s->comparator, s->comparator ? strlen(s->comparator) : 0);
            sop_buf_append_le32(b, (uint32_t)s->key_spec_len);
            sop_buf_append(b, s->key_spec, s->key_spec_len);
        }
        if (w->dropped) {
            sop_buf_append_u8(b, 2);
            sop_buf_append_le64(b, s->id);
        }
    }
    /* operations, per store */
    uint32_t nops_stores = 0;
    for (sop_ws *w = t->ws; w; w = w->next)
        nops_stores += !w->dropped && w->item_count > 0;
    sop_buf_append_le32(b, nops_stores);
    for (sop_ws *w = t->ws; w; w = w->next) {
        if (w->dropped || w->item_count == 0)
            continue;
        sop_store *s = w->store;
        sop_buf_append_le64(b, s->id);
        sop_buf_append_le64(b, 0); /* count delta, patched in place by apply_body */
        size_t seq_off = b->len;
        sop_buf_append_le64(b, 0); /* next_seq after, patched below */
        size_t nops_off = b->len;
        sop_buf_append_le32(b, 0);
        uint32_t nops = 0;
        uint64_t next_seq = s->next_seq;
        for (sop_ws_item *x = w->head->next[0]; x; x = x->next[0]) {
            uint64_t seq = x->seq;
            if (seq >= SOP_PROVISIONAL_SEQ) {
                if (x->op == SOP_OP_DEL)
                    continue; /* added and removed inside this txn */
                seq = next_seq++;
            }
            sop_buf_append_u8(b, x->op);
            sop_buf_append_u8(b, (uint8_t)(x->op == SOP_OP_PUT && x->val.is_blob));
            buf_val16(b, x->key.data, x->key.len);
            sop_buf_append_le64(b, seq);
            if (x->op == SOP_OP_PUT) {
                sop_buf_append_le32(b, x->val.value_len);
                if (x->val.is_blob) {
                    sop_buf_append_le64(b, x->val.loc.seg);
                    sop_buf_append_le64(b, x->val.loc.off);
                    sop_buf_append_le32(b, x->val.loc.len);
                    sop_buf_append_le32(b, x->val.loc.crc);
                } else {
                    sop_buf_append(b, x->val.inline_val.data, x->val.inline_val.len);
                }
            }
            nops++;
        }
        if (sop_buf_status(b))
            return SOP_NOMEM;
        sop_put_le64(b->data + seq_off, next_seq);
        sop_put_le32(b->data + nops_off, nops);
    }
    /* read set (D2) */
    sop_buf_append_le32(b, (uint32_t)t->read_count);
    for (size_t i = 0; i < t->read_count; i++) {
        sop_read *r = &t->reads[i];
        sop_buf_append_le64(b, r->store->id);
        sop_buf_append_u8(b, (uint8_t)(r->is_range ? 2 : 1));
        if (!r->is_range) {
            buf_val16(b, r->lo.data, r->lo.len);
        } else {
            sop_buf_append_u8(b, (uint8_t)((r->lo_open ? 1 : 0) | (r->hi_open ? 2 : 0)));
            buf_val16(b, r->lo.data, r->lo_open ? 0 : r->lo.len);
            buf_val16(b, r->hi.data, r->hi_open ? 0 : r->hi.len);
        }
    }
    return sop_buf_status(b) ? sop_err(SOP_NOMEM, "commit record") : SOP_OK;
}

/* ======================================================================== */
/* Decoding and applying a record body                                       */
/* ======================================================================== */

/* Catalog operations found while applying a body, made visible at publish. */
typedef struct cat_change {
    sop_store *store;
    int created; /* store object made by this apply (replay) or pending */
    int dropped;
    int64_t delta;
    uint64_t next_seq;
    int has_ops;
} cat_change;

/* The catalog changes of one body, indexed (a body may create or name
 * thousands of stores): id -> 1 + index in ch, and for creates name hash
 * -> 1 + index. */
typedef struct ch_index {
    sop_u64map ids, names;
} ch_index;

static size_t ch_by_id(const ch_index *x, uint64_t id)
{
    void *v;
    return id && sop_u64map_get(&v, &x->ids, id) == SOP_OK ? (size_t)(uintptr_t)v : 0;
}

/* Does a create in ch (indexed in x) already use this name? */
static int ch_name_taken(const cat_change *ch, size_t nch, const ch_index *x, const sop_val *name)
{
    void *v;
    uint64_t h = sop_db__name_hash(name->data, name->len) | 1; /* never key 0 */
    if (sop_u64map_get(&v, &x->names, h) != SOP_OK)
        return 0;
    for (size_t k = 0; k < nch; k++) /* a hash match: compare names (and on collisions) */
        if (ch[k].created && strlen(ch[k].store->name) == name->len &&
            memcmp(ch[k].store->name, name->data, name->len) == 0)
            return 1;
    return 0;
}

static int ch_add(ch_index *x, const cat_change *ch, size_t k)
{
    void *v = (void *)(uintptr_t)(k + 1);
    const char *name = ch[k].store->name;
    if (sop_u64map_put(NULL, &x->ids, ch[k].store->id, v) != SOP_OK ||
        (ch[k].created &&
         sop_u64map_put(NULL, &x->names, sop_db__name_hash(name, strlen(name)) | 1, v) != SOP_OK))
        return sop_err(SOP_NOMEM, "catalog changes");
    return SOP_OK;
}

/*
 * Memory of a live commit, between two of its operations (commit_mu held).
 * A random transaction on a tree bigger than the cache clones a leaf per
 * put and loads most of them first; without this, its clones were counted
 * against the budget only once published and every image evicted to load
 * the next leaf stayed allocated until the commit ended (cache.h L1): a
 * 1,000-put commit held ~2x its write set over the budget (docs/SCALE.md
 * §4). Here:
 *   - the private clones made since the last call are counted in
 *     node_bytes (*counted, subtracted when apply_body returns, before
 *     publishing counts them again), so eviction makes room for them;
 *   - the commit announces a new epoch: it holds no image between
 *     operations (an operation's path holds lids, its clones are its own,
 *     its keys and values point into the record), so what it evicted
 *     before can be freed (L2, as a new call of a transaction would).
 */
static void commit_between_ops(sop_apply *a, sop_txn *owner, size_t *seen, uint64_t *counted)
{
    sop_db *db = a->db;
    uint64_t add = 0;
    for (; *seen < a->lid_count; (*seen)++) {
        void *p;
        if (sop_u64map_get(&p, &a->priv, a->lids[*seen]) == SOP_OK && p != SOP_APPLY_TOMB)
            add += ((sop_node *)p)->alloc_len;
    }
    if (add) {
        sop_cache__charge(db->cache, add);
        *counted += add;
    }
    sop_cache__enter(db->cache, owner->slot);
    sop_cache__evict(db->cache);
}

/* One apply_body call: the record being read and the catalog changes it
 * makes so far (ch[0..nch), indexed by chx). */
typedef struct body_apply {
    sop_apply *a;
    sop_txn *owner; /* live commit; NULL in replay */
    uint8_t *patch; /* see apply_body */
    sop_txnrec_rd d;
    cat_change *ch;
    size_t nch;
    uint32_t cap; /* entries allocated in ch */
    ch_index chx;
    sop_ws *next_created; /* encode_txn wrote owner's creates in write-set order */
    size_t clones_seen;   /* commit_between_ops */
    uint64_t clones_counted;
} body_apply;

/* Phase 1, CREATE: the store object the entry makes. A live commit's is the
 * owner's pending handle (*created = 1); in replay, and for a prepared
 * body, a new object is built (*created = 2; the caller frees it on
 * failure) once its id and name are found free. */
static int create_target(body_apply *b, const sop_txnrec_cat *e, sop_store **out, int *created)
{
    sop_db *db = b->a->db;
    uint64_t id = e->store_id;
    const sop_val *name = &e->name;
    sop_store *s = NULL;
    while (b->next_created && !b->next_created->created)
        b->next_created = b->next_created->next;
    if (b->next_created && b->next_created->store->id == id) {
        s = b->next_created->store;
        b->next_created = b->next_created->next;
    }
    for (sop_ws *w = b->owner && !s ? b->owner->ws : NULL; w; w = w->next)
        if (w->created && w->store->id == id)
            s = w->store;
    if (s) {
        *out = s;
        *created = 1;
        return SOP_OK;
    }
    /* Replay (and commit of a prepared body): no other store may have this
     * id, nor, while live, this name (commit and prepare validation keep
     * both unique, and store ids are never reused), or two stores would
     * answer to one. */
    int clash = id == 0 || id == UINT64_MAX || sop_db__store_by_id(db, id) != NULL ||
                sop_db__store_live_named(db, name->data, name->len) != NULL ||
                ch_by_id(&b->chx, id) || ch_name_taken(b->ch, b->nch, &b->chx, name);
    if (clash)
        return SOP_CORRUPT_BKPT("commit record creates store %" PRIu64
                                " '%.*s', whose id or name is in use",
                                id, (int)name->len, (const char *)name->data);
    /* Replay: build the store object (published at the end). */
    sop_store_def def = {
        .id = id,
        .root_lid = e->root_lid,
        .name = *name,
        .comparator = e->comparator,
        .key_spec = e->key_spec,
        .flags = e->flags,
        .slot_length = e->slot_length,
        .max_inline = e->max_inline,
        .created_lsn = SOP_NEVER,
    };
    int rc = sop_store__new(out, db, &def);
    if (rc)
        return rc;
    *created = 2; /* replay-made object */
    return SOP_OK;
}

/* Phase 1, CREATE: the store joins the changes, the lid and store id
 * counters move past its root and id, and its empty root is applied. */
static int apply_create(body_apply *b, const sop_txnrec_cat *e)
{
    sop_db *db = b->a->db;
    sop_store *s = NULL;
    int created = 0;
    int rc = create_target(b, e, &s, &created);
    if (rc)
        return rc;
    cat_change *c = &b->ch[b->nch];
    c->created = created;
    c->store = s;
    c->next_seq = 1;
    if ((rc = ch_add(&b->chx, b->ch, b->nch)) != SOP_OK) {
        if (created == 2)
            sop_store__free(s);
        return rc;
    }
    b->nch++;
    if (db->reg.next_lid <= e->root_lid)
        db->reg.next_lid = e->root_lid + 1;
    if (db->next_store_id <= e->store_id)
        db->next_store_id = e->store_id + 1;
    return sop_apply__create_root(b->a, s);
}

/* Phase 1, DROP: the store - created earlier in this body, or committed -
 * is marked dropped in the changes and its tree's nodes die. */
static int apply_drop(body_apply *b, const sop_txnrec_cat *e)
{
    assert(e->op == SOP_TXNREC_DROP);
    uint64_t id = e->store_id;
    size_t k = ch_by_id(&b->chx, id); /* 1 + its index, or 0 */
    sop_store *s = k ? b->ch[k - 1].store : sop_db__store_by_id(b->a->db, id);
    if (!s)
        return SOP_CORRUPT_BKPT("commit record drops unknown store %" PRIu64, id);
    if (k) {
        k--;
    } else {
        k = b->nch;
        b->ch[k].store = s;
        b->ch[k].next_seq = s->next_seq;
        int rc = ch_add(&b->chx, b->ch, k);
        if (rc)
            return rc;
        b->nch++;
    }
    b->ch[k].dropped = 1;
    return sop_apply__drop_tree(b->a, s);
}

/* Between the phases: room in ch for one change per store section (nst,
 * bounded by the body's length) after the catalog's, zeroed. */
static int reserve_store_changes(body_apply *b, uint32_t nst)
{
    if (b->nch + nst <= b->cap)
        return SOP_OK;
    cat_change *n = sop_realloc(b->ch, (b->nch + nst) * sizeof *b->ch);
    if (!n)
        return sop_err(SOP_NOMEM, "catalog changes");
    b->ch = n;
    memset(b->ch + b->nch, 0, nst * sizeof *b->ch);
    return SOP_OK;
}

/* Phase 2: one store section. Its operations are applied in order, and its
 * count delta is written into the record (live commit: patch) or checked
 * against the record's (replay); the store's change accumulates it. */
static int apply_store(body_apply *b, const sop_txnrec_store *st)
{
    sop_apply *a = b->a;
    uint64_t id = st->store_id;
    size_t k = ch_by_id(&b->chx, id);
    int rc;
    if (k) {
        k--;
    } else {
        sop_store *s = sop_db__store_by_id(a->db, id);
        if (!s)
            return SOP_CORRUPT_BKPT("commit record names unknown store %" PRIu64, id);
        k = b->nch;
        b->ch[k].store = s;
        if ((rc = ch_add(&b->chx, b->ch, k)) != SOP_OK)
            return rc;
        b->nch++;
    }
    sop_store *s = b->ch[k].store;
    b->ch[k].has_ops = 1;
    b->ch[k].next_seq = st->next_seq;
    a->delta = 0;
    sop_txnrec_op o;
    while ((rc = sop_txnrec__next_op(&b->d, &o)) == 1) {
        sop_leafval v;
        memset(&v, 0, sizeof v);
        if (o.kind == SOP_TXNREC_PUT) {
            v.value_len = o.value_len;
            v.is_blob = o.is_blob;
            v.loc = o.loc;
            v.inline_val = o.value;
        }
        int existed;
        if ((rc = sop_apply__op(a, s, o.kind, &o.key, o.seq, &v, &existed)) != SOP_OK)
            return rc;
        if (b->owner)
            commit_between_ops(a, b->owner, &b->clones_seen, &b->clones_counted);
    }
    if (rc < 0)
        return rc;
    if (b->patch)
        sop_put_le64(b->patch + st->count_delta_off, (uint64_t)a->delta);
    else if (st->count_delta != a->delta)
        return SOP_CORRUPT_BKPT("store %" PRIu64 ": replay count delta %" PRId64
                                " differs from the record's %" PRId64,
                                id, a->delta, st->count_delta);
    b->ch[k].delta += a->delta;
    return SOP_OK;
}

/* Apply a COMMIT/PREPARE body (from the xid field on) at a->lsn. When
 * owner is not NULL (live commit), created stores are the owner's pending
 * handles; in replay new store objects are made. patch: the body itself,
 * writable, to have the count deltas written into it (a commit encodes
 * them as 0); NULL to check them against the record instead (replay, which
 * reads the log's bytes in place). Phase 1 applies the catalog entries
 * (creates, drops), phase 2 the store sections; on success the catalog
 * changes go to the caller to publish, on failure they are freed. */
static int apply_body(sop_apply *a, const uint8_t *body, size_t len, sop_txn *owner,
                      cat_change **ch_out, size_t *nch_out, uint8_t *patch)
{
    assert(!patch || patch == body);
    sop_db *db = a->db;
    sop_val xid;
    body_apply b = {.a = a, .owner = owner, .patch = patch};
    b.chx = (ch_index){SOP_U64MAP_INIT, SOP_U64MAP_INIT};
    int rc = sop_txnrec__open(&b.d, &xid, body, len, SOP_MAX_NAME_LEN, SOP_MAX_KEY_LEN);
    if (rc)
        return rc;
    b.cap = b.d.left + 64; /* catalog entries, bounded by len (txnrec.h) */
    b.next_created = owner ? owner->ws : NULL;
    b.ch = sop_calloc(b.cap, sizeof *b.ch);
    if (!b.ch)
        return sop_err(SOP_NOMEM, "catalog changes");
    sop_txnrec_cat e;
    while ((rc = sop_txnrec__next_cat(&b.d, &e)) == 1)
        if ((rc = e.op == SOP_TXNREC_CREATE ? apply_create(&b, &e) : apply_drop(&b, &e)) != SOP_OK)
            goto out;
    sop_txnrec_store st;
    if (rc < 0 || (rc = sop_txnrec__next_store(&b.d, &st)) < 0)
        goto out;
    int more = rc;
    if ((rc = reserve_store_changes(&b, b.d.left + (more == 1))) != SOP_OK)
        goto out;
    for (rc = more; rc == 1; rc = sop_txnrec__next_store(&b.d, &st))
        if ((rc = apply_store(&b, &st)) != SOP_OK)
            goto out;
    if (rc == 0)
        rc = sop_txnrec__finish(&b.d);
out:
    sop_cache__discharge(db->cache, b.clones_counted);
    sop_u64map_dispose(&b.chx.ids);
    sop_u64map_dispose(&b.chx.names);
    if (rc) {
        for (size_t k = 0; k < b.nch; k++)
            if (b.ch[k].created == 2)
                sop_store__free(b.ch[k].store);
        sop_free(b.ch);
        return rc;
    }
    *ch_out = b.ch;
    *nch_out = b.nch;
    return SOP_OK;
}

/* before + delta for a store count. Counts stay in [0, INT64_MAX]: the
 * manifest loader refuses larger ones (ckpt.c), and a count that the
 * delta would take outside (only a damaged count can: sop_db_check
 * reports it against the tree) is clamped, never overflowed. */
static uint64_t count_plus(uint64_t before, int64_t delta)
{
    if (before > INT64_MAX)
        before = INT64_MAX;
    if (delta < 0) {
        uint64_t d = (uint64_t)(-(delta + 1)) + 1; /* |delta|, even of INT64_MIN */
        return before > d ? before - d : 0;
    }
    return (uint64_t)delta > INT64_MAX - before ? INT64_MAX : before + (uint64_t)delta;
}

/* Make a body's catalog and count changes visible at lsn (commit_mu). */
static int publish_catalog(sop_db *db, cat_change *ch, size_t nch, uint64_t lsn)
{
    /* Allocate first so nothing below can fail half way. */
    sop_countver **cv = sop_calloc(nch ? nch : 1, sizeof *cv);
    if (!cv)
        return sop_err(SOP_NOMEM, "count versions");
    for (size_t i = 0; i < nch; i++) {
        cv[i] = sop_calloc(1, sizeof **cv);
        if (!cv[i]) {
            for (size_t j = 0; j < i; j++)
                sop_free(cv[j]);
            sop_free(cv);
            return sop_err(SOP_NOMEM, "count versions");
        }
    }
    for (size_t i = 0; i < nch; i++) {
        sop_store *s = ch[i].store;
        sop_countver *head = atomic_load(&s->counts);
        uint64_t before = head ? head->count : 0;
        cv[i]->lsn = lsn;
        cv[i]->count = count_plus(before, ch[i].delta);
        atomic_init(&cv[i]->older, head);
        atomic_store_explicit(&s->counts, cv[i], memory_order_release);
        if (head)
            sop_db__count_versions(db, s);
        if (ch[i].has_ops && ch[i].next_seq > s->next_seq)
            s->next_seq = ch[i].next_seq;
        if (ch[i].created) {
            if (s->next_seq == 0)
                s->next_seq = 1;
            atomic_store_explicit(&s->created_lsn, lsn, memory_order_release);
            if (ch[i].created == 2)
                sop_db__store_link(db, s);
            else
                sop_db__store_published(db, s);
            atomic_store(&s->pending_owner, NULL);
        }
        if (ch[i].dropped) {
            atomic_store_explicit(&s->dropped_lsn, lsn, memory_order_release);
            sop_db__store_dropped(db, s);
        }
    }
    sop_free(cv);
    return SOP_OK;
}

/* History entries (validation of later committers). An entry is built
 * before its record is appended, so that running out of memory fails the
 * commit instead of leaving a commit nobody validates against, and linked
 * once the record is in the log (hist_link). */
static sop_hist *hist_new(sop_db *db, uint64_t lsn, size_t store_count)
{
    sop_hist *h = sop_calloc(1, sizeof *h);
    if (!h)
        return NULL;
    sop_arena_init_as(&h->arena, 0, db->arena_debug);
    h->lsn = lsn;
    h->stores = sop_arena_alloc(&h->arena, (store_count ? store_count : 1) * sizeof *h->stores, 8);
    if (!h->stores) {
        sop_arena_dispose(&h->arena);
        sop_free(h);
        return NULL;
    }
    return h;
}

static void hist_free(sop_hist *h)
{
    if (!h)
        return;
    sop_arena_dispose(&h->arena);
    sop_free(h);
}

/* A new store section of h with room for cap keys. */
static struct sop_hist_store *hist_store(sop_hist *h, uint64_t store_id, int dropped, size_t cap)
{
    struct sop_hist_store *hs = &h->stores[h->store_count++];
    memset(hs, 0, sizeof *hs);
    hs->store_id = store_id;
    hs->dropped = dropped;
    hs->keys = sop_arena_alloc(&h->arena, (cap ? cap : 1) * sizeof(sop_val), 8);
    return hs->keys ? hs : NULL;
}

/* Append key (keys arrive in the store's order; equal neighbours, the
 * items of one key in a duplicate store, are kept once). */
static int hist_key(sop_hist *h, struct sop_hist_store *hs, const sop_store *s, const sop_val *key)
{
    if (hs->key_count && key_cmp(s, &hs->keys[hs->key_count - 1], 0, key, 0) == 0)
        return SOP_OK;
    void *k = sop_arena_memdup(&h->arena, key->data, key->len);
    if (!k)
        return SOP_NOMEM;
    hs->keys[hs->key_count].data = k;
    hs->keys[hs->key_count].len = key->len;
    hs->key_count++;
    return SOP_OK;
}

static void hist_link(sop_db *db, sop_hist *h)
{
    sop_db__assert_committer(db);
    if (db->hist_tail)
        db->hist_tail->next = h;
    else
        db->hist_head = h;
    db->hist_tail = h;
}

/* The entry for t's write set at lsn (a COMMIT or a PREPARE record). */
static sop_hist *hist_of_txn(sop_db *db, sop_txn *t, uint64_t lsn)
{
    size_t n = 0;
    for (sop_ws *w = t->ws; w; w = w->next)
        n++;
    sop_hist *h = hist_new(db, lsn, n);
    if (!h)
        return NULL;
    for (sop_ws *w = t->ws; w; w = w->next) {
        struct sop_hist_store *hs = hist_store(h, w->store->id, w->dropped, w->item_count);
        if (!hs)
            goto nomem;
        for (sop_ws_item *x = w->head->next[0]; x; x = x->next[0])
            if (hist_key(h, hs, w->store, &x->key) != SOP_OK)
                goto nomem;
    }
    return h;
nomem:
    hist_free(h);
    return NULL;
}

/* The end of the run of p->keys that starts at i: entries of one kind
 * (written or read, key or whole store) of one store. */
static size_t pkey_run_end(const sop_prepared *p, size_t i)
{
    const struct sop_pkey *pk = &p->keys[i];
    size_t j = i + 1;
    while (j < p->key_count && p->keys[j].store_id == pk->store_id &&
           p->keys[j].is_write == pk->is_write && p->keys[j].is_range == pk->is_range)
        j++;
    return j;
}

/* The entry for the writes of prepared p's body at lsn (its
 * COMMIT_PREPARED record): what a transaction that began after the PREPARE
 * must be validated against. p->keys lists the catalog entries first, then
 * each store's written keys in order (sop_prepared__decode). */
static sop_hist *hist_of_prepared(sop_db *db, const sop_prepared *p, uint64_t lsn)
{
    size_t runs = 0;
    for (size_t i = 0, j; i < p->key_count; i = j) {
        j = pkey_run_end(p, i);
        runs += p->keys[i].is_write != 0;
    }
    sop_hist *h = hist_new(db, lsn, runs);
    if (!h)
        return NULL;
    for (size_t i = 0, j; i < p->key_count; i = j) {
        const struct sop_pkey *pk = &p->keys[i];
        j = pkey_run_end(p, i);
        if (!pk->is_write)
            continue;
        /* Catalog entries (whole-store ranges): a drop conflicts with any
         * use of the store; a store it creates was visible to nobody. */
        int dropped = 0;
        for (size_t k = i; k < j; k++)
            dropped |= pk->is_range && p->keys[k].cat_op == 2;
        struct sop_hist_store *hs = hist_store(h, pk->store_id, dropped, j - i);
        const sop_store *s = sop_db__store_by_id(db, pk->store_id);
        if (!hs)
            goto nomem;
        for (size_t k = i; k < j && !pk->is_range && s; k++)
            if (hist_key(h, hs, s, &p->keys[k].lo) != SOP_OK)
                goto nomem;
    }
    return h;
nomem:
    hist_free(h);
    return NULL;
}

static void forget_version(sop_version *v, void *ctx)
{
    sop_cache__forget(ctx, v);
}

/* Drop history no live read-write snapshot needs; trim old versions. */
void sop_db__trim(sop_db *db)
{
    sop_db__assert_committer(db);
    uint64_t min_rw = sop_db__snap_min(db, 1);
    while (db->hist_head && db->hist_head->lsn <= min_rw) {
        sop_hist *h = db->hist_head;
        db->hist_head = h->next;
        if (!db->hist_head)
            db->hist_tail = NULL;
        sop_arena_dispose(&h->arena);
        sop_free(h);
    }
    uint64_t min_all = sop_db__snap_min(db, 0);
    sop_db__reap_stores(db, min_all);
    /* Old store counts (only stores with more than one: not every store at
     * every commit). */
    sop_db__trim_counts(db, min_all);
    size_t pos = 0;
    uint64_t lid;
    size_t freed = 0;
    /* Collect first: trimming while iterating the map is not allowed. */
    size_t n = sop_u64map_count(&db->trim_lids);
    if (n == 0)
        return;
    uint64_t *lids = sop_malloc(n * sizeof *lids);
    if (!lids)
        return; /* retry at the next trim */
    size_t k = 0;
    while (sop_u64map_next(&lid, NULL, &db->trim_lids, &pos) == SOP_OK)
        lids[k++] = lid;
    size_t dirty_freed = 0;
    for (size_t i = 0; i < k; i++) {
        size_t d;
        freed += sop_registry__trim(&db->reg, lids[i], min_all, &d, forget_version, db->cache);
        dirty_freed += d;
        sop_version *h = sop_registry__head(&db->reg, lids[i]);
        if (!h || !atomic_load_explicit(&h->older, memory_order_relaxed))
            sop_u64map_del(NULL, &db->trim_lids, lids[i]);
    }
    sop_free(lids);
    /* The map never shrinks and each trim walks its capacity: after a burst
     * (one commit that made thousands of stores) move the few lids left to
     * a small one. */
    if (db->trim_lids.slots_cap > 1024 &&
        sop_u64map_count(&db->trim_lids) * 16 < db->trim_lids.slots_cap) {
        sop_u64map small = SOP_U64MAP_INIT;
        void *v;
        int ok = 1;
        pos = 0;
        while (ok && sop_u64map_next(&lid, &v, &db->trim_lids, &pos) == SOP_OK)
            ok = sop_u64map_put(NULL, &small, lid, v) == SOP_OK;
        sop_u64map_dispose(ok ? &db->trim_lids : &small);
        if (ok)
            db->trim_lids = small;
    }
    sop_cache__discharge(db->cache, freed);
    atomic_fetch_sub(&db->dirty_bytes, dirty_freed);
}

/* ======================================================================== */
/* Commit, prepare                                                           */
/* ======================================================================== */

/* What validation found a conflict against must be visible before
 * SOP_CONFLICT returns (commit_mu held; released by this call). Every
 * record up to applied_lsn is published; one is made visible only once it
 * is durable (a SOP_SYNC_FULL commit, any PREPARE), so the commit this
 * transaction lost to may not be visible yet. Retried at once, the
 * transaction would then snapshot below that commit and lose to it again,
 * as long as its fdatasync takes (issue 10 defect 12: thousands of times
 * in a row). So wait for the log to be durable up to here - joining the
 * group commit, or leading it - and publish that position: every record
 * below it is applied and durable, which is all visible_lsn promises. */
static int conflict_settle(sop_db *db, int rc)
{
    uint64_t upto = db->applied_lsn;
    sop_mutex_unlock(&db->commit_mu);
    if (rc != SOP_CONFLICT || atomic_load(&db->visible_lsn) >= upto)
        return rc;
    (void)sop_commit__durable_upto(db, upto); /* a failure panics: every later call reports it */
    return rc;
}

/* Write rec (header filled by the commit point) at the claimed lsn; publish
 * a's changes. commit_mu held. */
static int append_and_publish(sop_db *db, sop_buf *rec, sop_apply *a, cat_change *ch, size_t nch,
                              uint64_t lsn, uint64_t *token_out)
{
    sop_mutex_assert_held(&db->commit_mu);
    int rc = sop_apply__reserve(a);
    if (rc)
        return rc;
    if ((rc = sop_commit__write(db, rec, lsn, token_out)) != SOP_OK)
        return rc;
    /* The record is in the log: from here on nothing may fail. */
    sop_apply__publish(a);
    if (publish_catalog(db, ch, nch, lsn) != SOP_OK)
        return sop_db__panic(db, sop_err(SOP_NOMEM, "catalog publish after append"));
    sop_commit__applied(db, lsn);
    return SOP_OK;
}

static void free_changes(cat_change *ch, size_t nch, int failed)
{
    if (failed)
        for (size_t k = 0; k < nch; k++)
            if (ch[k].created == 2)
                sop_store__free(ch[k].store);
    sop_free(ch);
}

/* Keep the record buffer for the next commit unless it grew huge. */
static void release_rec_buf(sop_buf *rec)
{
    if (rec->cap > (16u << 20))
        sop_buf_dispose(rec);
    else
        sop_buf_reset(rec);
}

int sop_txn__commit(sop_txn *t)
{
    sop_db *db = t->db;
    int rc;
    sop_buf *rec = &db->rec_buf; /* reused across commits (commit_mu) */
    sop_apply a;
    cat_change *ch = NULL;
    size_t nch = 0;
    uint64_t token = 0, lsn = 0;
    sop_hist *hist = NULL;
    int sync_full = db->opts.sync == SOP_SYNC_FULL;
    int has_work = 0;
    for (sop_ws *w = t->ws; w; w = w->next)
        has_work |= w->item_count > 0 || w->created || w->dropped;
    if (!has_work && t->state != SOP_TXN_PREPARED)
        return SOP_OK; /* nothing written: read-only in effect, snapshot reads are valid */
    sop_cache__enter(db->cache, t->slot);
    if (t->state == SOP_TXN_PREPARED)
        return sop_txn__resolve_prepared(db, t->id, 1);
    assert(t->state == SOP_TXN_ACTIVE && t->magic == SOP_TXN_LIVE);

    sop_mutex_lock(&db->commit_mu);
    uint64_t saved_lid = db->reg.next_lid, saved_store = db->next_store_id;
    if ((rc = validate(t)) != SOP_OK)
        return conflict_settle(db, rc);
    lsn = sop_commit__claim(db);
    sop_apply__init(&a, db, lsn, t->snap);
    if ((rc = encode_txn(rec, t, SOP_REC_COMMIT, 0, NULL)) != SOP_OK)
        goto fail;
    uint8_t *body = rec->data + SOP_REC_HDR_LEN + SOP_TXNREC_HEAD_LEN;
    if ((rc = apply_body(&a, body, rec->len - SOP_REC_HDR_LEN - SOP_TXNREC_HEAD_LEN, t, &ch, &nch,
                         body)) != SOP_OK)
        goto fail;
    if (!(hist = hist_of_txn(db, t, lsn))) {
        rc = sop_err(SOP_NOMEM, "history");
        goto fail;
    }
    if ((rc = append_and_publish(db, rec, &a, ch, nch, lsn, &token)) != SOP_OK)
        goto fail;
    hist_link(db, hist);
    release_ws_blobs(t, 0);
    t->blobs_released = 1;
    atomic_fetch_add(&db->st_commits, 1);
    if (!sync_full)
        sop_commit__visible(db, lsn);
    sop_db__trim(db);
    release_rec_buf(rec);
    sop_mutex_unlock(&db->commit_mu);
    free_changes(ch, nch, 0);
    sop_apply__dispose(&a);
    if (sync_full && (rc = sop_commit__durable(db, token, lsn)) != SOP_OK)
        return rc;
    /* The commit reads no more images: drop its epoch (L2) before a
     * checkpoint that may run long, or every image evicted meanwhile by
     * other threads would wait for it to be freed. */
    sop_cache__leave(t->slot);
    sop_ckpt__maybe(db);
    return SOP_OK;
fail:
    db->reg.next_lid = saved_lid;
    db->next_store_id = saved_store;
    for (sop_ws *w = t->ws; w; w = w->next)
        if (w->created && atomic_load(&w->store->created_lsn) == SOP_NEVER)
            w->store->id = 0, w->store->root_lid = 0;
    release_rec_buf(rec);
    sop_mutex_unlock(&db->commit_mu);
    hist_free(hist);
    free_changes(ch, nch, 1);
    sop_apply__dispose(&a);
    return rc;
}

/* ======================================================================== */
/* Prepared transactions                                                     */
/* ======================================================================== */

void sop_prepared__free(sop_prepared *p)
{
    if (!p)
        return;
    sop_arena_dispose(&p->arena);
    sop_free(p->body);
    sop_free(p->keys);
    sop_free(p);
}

/* Decode the keys a prepared body writes and reads (its locks). */
int sop_prepared__decode(sop_prepared *p)
{
    sop_txnrec_rd d;
    sop_val xid;
    int rc = sop_txnrec__open(&d, &xid, p->body, p->body_len, SOP_MAX_NAME_LEN, SOP_MAX_KEY_LEN);
    if (rc)
        return rc;
    if (xid.len > SOP_MAX_XID_LEN)
        return SOP_CORRUPT_BKPT("prepared record xid of %zu bytes", xid.len);
    p->info.xid_len = xid.len;
    if (xid.len)
        memcpy(p->info.xid, xid.data, xid.len);
    size_t cap = 16, n = 0;
    struct sop_pkey *keys = sop_malloc(cap * sizeof *keys);
    if (!keys)
        return sop_err(SOP_NOMEM, "prepared keys");
#define PUSH_KEY(...)                                                                              \
    do {                                                                                           \
        if (n == cap) {                                                                            \
            struct sop_pkey *nk = sop_realloc(keys, (cap *= 2) * sizeof *keys);                    \
            if (!nk) {                                                                             \
                sop_free(keys);                                                                    \
                return sop_err(SOP_NOMEM, "prepared keys");                                        \
            }                                                                                      \
            keys = nk;                                                                             \
        }                                                                                          \
        keys[n++] = (struct sop_pkey){__VA_ARGS__};                                                \
    } while (0)
    sop_txnrec_cat e;
    while ((rc = sop_txnrec__next_cat(&d, &e)) == 1) {
        if (e.op == SOP_TXNREC_CREATE) {
            if (e.store_id > p->create_max_id)
                p->create_max_id = e.store_id;
            if (e.root_lid > p->create_max_lid)
                p->create_max_lid = e.root_lid;
        }
        /* a whole-store lock */
        PUSH_KEY(e.store_id, 1, 1, 1, 1, {NULL, 0}, {NULL, 0}, e.op);
    }
    sop_txnrec_store st;
    sop_txnrec_op o;
    while (rc == 0 && (rc = sop_txnrec__next_store(&d, &st)) == 1)
        while ((rc = sop_txnrec__next_op(&d, &o)) == 1)
            PUSH_KEY(st.store_id, 0, 0, 0, 1, o.key, {NULL, 0}, 0);
    sop_txnrec_read r;
    while (rc == 0 && (rc = sop_txnrec__next_read(&d, &r)) == 1) {
        if (r.kind == SOP_TXNREC_POINT)
            PUSH_KEY(r.store_id, 0, 0, 0, 0, r.lo, {NULL, 0}, 0);
        else
            PUSH_KEY(r.store_id, 1, (r.flags & SOP_TXNREC_LO_OPEN) != 0,
                     (r.flags & SOP_TXNREC_HI_OPEN) != 0, 0, r.lo, r.hi, 0);
        rc = 0; /* entry taken: read the next */
    }
#undef PUSH_KEY
    if (rc == 0)
        rc = sop_txnrec__finish(&d);
    if (rc) {
        sop_free(keys);
        return rc;
    }
    p->keys = keys;
    p->key_count = n;
    return SOP_OK;
}

int sop_prepared__reserve_ids(sop_db *db, const sop_prepared *p)
{
    /* The store ids and root lids its creates use were reserved when it
     * was prepared; a replayed PREPARE or a loaded manifest must reserve
     * them again, or a later commit allocates the new store's root lid for
     * another tree and committing this one overwrites that node. */
    if (p->create_max_id == UINT64_MAX || p->create_max_lid > SOP_MAX_LID)
        return SOP_CORRUPT_BKPT("prepared transaction %" PRIu64
                                " creates a store with id or root lid out of range",
                                p->id);
    if (db->next_store_id <= p->create_max_id)
        db->next_store_id = p->create_max_id + 1;
    if (db->reg.next_lid <= p->create_max_lid)
        db->reg.next_lid = p->create_max_lid + 1;
    return SOP_OK;
}

void sop_prepared__append(sop_db *db, sop_prepared *p)
{
    /* Through db->prepared_last: a walk to the end made replaying or
     * loading n prepared transactions take n^2 / 2 steps. */
    p->next = NULL;
    if (db->prepared)
        db->prepared_last->next = p;
    else
        db->prepared = p;
    db->prepared_last = p;
}

/* Take p out of db->prepared (it stays allocated). */
static void prepared_unlink(sop_db *db, sop_prepared *p)
{
    sop_prepared *prev = NULL;
    for (sop_prepared *q = db->prepared; q; prev = q, q = q->next)
        if (q == p) {
            if (prev)
                prev->next = p->next;
            else
                db->prepared = p->next;
            if (db->prepared_last == p)
                db->prepared_last = prev;
            p->next = NULL;
            return;
        }
}

static int add_prepared(sop_db *db, uint64_t id, uint64_t lsn, const uint8_t *body, size_t len)
{
    if (id == 0 || id == UINT64_MAX) /* ids start at 1; UINT64_MAX: see sop_txn__prepare */
        return SOP_CORRUPT_BKPT("prepared transaction id %" PRIu64 " out of range", id);
    sop_prepared *p = sop_calloc(1, sizeof *p);
    if (!p)
        return sop_err(SOP_NOMEM, "prepared");
    sop_arena_init(&p->arena, 0);
    p->id = id;
    p->lsn = lsn;
    p->info.id = id;
    p->info.lsn = lsn;
    p->body = sop_memdup(body, len);
    p->body_len = len;
    int rc = p->body ? sop_prepared__decode(p) : sop_err(SOP_NOMEM, "prepared");
    if (rc) {
        sop_prepared__free(p);
        return rc;
    }
    if ((rc = sop_prepared__reserve_ids(db, p)) != SOP_OK) {
        sop_prepared__free(p);
        return rc;
    }
    sop_prepared__append(db, p);
    if (db->next_txn_id <= id)
        db->next_txn_id = id + 1;
    return SOP_OK;
}

int sop_txn__prepare(sop_txn *t, const sop_val *xid)
{
    sop_db *db = t->db;
    int rc;
    sop_buf rec = SOP_BUF_INIT;
    uint64_t token;
    sop_hist *hist = NULL;
    sop_mutex_lock(&db->commit_mu);
    if ((rc = validate(t)) != SOP_OK)
        return conflict_settle(db, rc);
    uint64_t lsn = sop_commit__claim(db);
    uint64_t id = db->next_txn_id;
    uint64_t saved_lid = db->reg.next_lid, saved_store = db->next_store_id;
    if (id == UINT64_MAX) { /* as for store ids in encode_txn */
        sop_mutex_unlock(&db->commit_mu);
        return SOP_CORRUPT_BKPT("transaction ids exhausted (next_txn_id %" PRIu64 ")", id);
    }
    /* Dup seqs and store ids are reserved now so they stay unique. */
    if ((rc = encode_txn(&rec, t, SOP_REC_PREPARE, id, xid)) != SOP_OK)
        goto fail;
    size_t plen = rec.len - SOP_REC_HDR_LEN;
    /* From the PREPARE on, its writes count in validation as a commit's
     * do: a transaction whose snapshot is older and that read or writes
     * one of these keys must fail, even after a rollback (conservative),
     * and one that began later is SOP_BUSY until phase 2, whose
     * COMMIT_PREPARED gets an entry of its own (resolve_locked). */
    if (!(hist = hist_of_txn(db, t, lsn))) {
        rc = sop_err(SOP_NOMEM, "history");
        goto fail;
    }
    if ((rc = add_prepared(db, id, lsn, rec.data + SOP_REC_HDR_LEN + SOP_TXNREC_HEAD_LEN,
                           plen - SOP_TXNREC_HEAD_LEN)) != SOP_OK)
        goto fail;
    if ((rc = sop_commit__write(db, &rec, lsn, &token)) != SOP_OK) {
        /* remove what add_prepared added (the last entry) */
        sop_prepared *last = db->prepared_last;
        prepared_unlink(db, last);
        sop_prepared__free(last);
        goto fail;
    }
    hist_link(db, hist);
    hist = NULL;
    db->next_txn_id = id + 1;
    /* advance seq counters for reserved dup seqs */
    for (sop_ws *w = t->ws; w; w = w->next)
        for (sop_ws_item *x = w->head->next[0]; x; x = x->next[0])
            if (x->seq >= SOP_PROVISIONAL_SEQ && x->op == SOP_OP_PUT)
                w->store->next_seq++;
    sop_commit__applied(db, lsn);
    t->id = id;
    sop_txn__set_state(t, SOP_TXN_PREPARED);
    release_ws_blobs(t, 0); /* the PREPARE record references them now */
    t->blobs_released = 1;
    sop_mutex_unlock(&db->commit_mu);
    sop_buf_dispose(&rec);
    /* Prepare is always durable, whatever the sync mode. */
    return sop_commit__durable(db, token, lsn);
fail:
    db->reg.next_lid = saved_lid;
    db->next_store_id = saved_store;
    sop_mutex_unlock(&db->commit_mu);
    hist_free(hist);
    sop_buf_dispose(&rec);
    return rc;
}

struct blobs_only {
    void (*fn)(const sop_loc *, void *);
    void *ctx;
};

static void blob_only(const sop_loc *loc, uint32_t value_len, void *ctx)
{
    struct blobs_only *b = ctx;
    (void)value_len;
    b->fn(loc, b->ctx);
}

int sop_txn__body_blobs(const uint8_t *body, size_t len, void (*fn)(const sop_loc *, void *),
                        void *ctx)
{
    struct blobs_only b = {fn, ctx};
    return sop_txn__body_values(body, len, blob_only, &b);
}

int sop_txn__body_values(const uint8_t *body, size_t len,
                         void (*fn)(const sop_loc *, uint32_t value_len, void *), void *ctx)
{
    sop_txnrec_rd d;
    sop_val xid;
    sop_txnrec_store st;
    sop_txnrec_op o;
    int rc = sop_txnrec__open(&d, &xid, body, len, SOP_MAX_NAME_LEN, SOP_MAX_KEY_LEN);
    while (rc == 0 && (rc = sop_txnrec__next_store(&d, &st)) == 1)
        while ((rc = sop_txnrec__next_op(&d, &o)) == 1)
            if (o.kind == SOP_TXNREC_PUT && o.is_blob)
                fn(&o.loc, o.value_len, ctx);
    return rc == 0 ? sop_txnrec__finish(&d) : rc;
}

struct death_ctx {
    sop_apply *a;
    int rc;
};

static void body_blob_death(const sop_loc *loc, void *ctx)
{
    struct death_ctx *d = ctx;
    if (d->rc != SOP_OK)
        return;
    /* A damaged body may name bytes that hold no such blob: counted dead,
     * they would let a checkpoint delete a segment whose blobs are live.
     * Only a blob that is there dies; a misnamed one stays counted live
     * (leaked space, which sop_db_check reports). */
    int rc = sop_wal__check_header(d->a->db->wal, loc, SOP_REC_VALUE);
    if (rc == SOP_OK)
        d->rc = sop_apply__add_death(d->a, loc);
    else if (rc != SOP_CORRUPT)
        d->rc = rc;
}

struct value_check {
    sop_db *db;
    uint8_t *buf;
    size_t cap;
    int rc;
    char msg[400]; /* the first failure's detail (the walk goes on) */
};

static void check_body_value(const sop_loc *loc, uint32_t value_len, void *ctx)
{
    struct value_check *vc = ctx;
    if (vc->rc != SOP_OK)
        return;
    sop_val whole;
    vc->rc = sop_blob__read(&whole, vc->db->wal, loc, value_len, 0, value_len, &vc->buf, &vc->cap);
    if (vc->rc != SOP_OK)
        snprintf(vc->msg, sizeof vc->msg, "%s", sop_errmsg());
}

/* A prepared body waits in the log or the manifest and is applied as it
 * stands: before committing it, every value blob it names must be there,
 * a VALUE record with the right checksum and exactly the length its put
 * declares. Otherwise the commit would publish values nobody can read. */
static int check_prepared_values(sop_db *db, const sop_prepared *p)
{
    struct value_check vc = {db, NULL, 0, SOP_OK, ""};
    int rc = sop_txn__body_values(p->body, p->body_len, check_body_value, &vc);
    sop_free(vc.buf);
    if (vc.rc == SOP_CORRUPT)
        return SOP_CORRUPT_BKPT("prepared transaction %" PRIu64 ": %s", p->id, vc.msg);
    if (vc.rc != SOP_OK)
        return sop_err(vc.rc, "prepared transaction %" PRIu64 ": %s", p->id, vc.msg);
    return rc;
}

/* COMMIT_PREPARED / ABORT_PREPARED of prepared p at lsn (commit_mu held).
 * rec == NULL in replay. */
static int resolve_locked(sop_db *db, sop_prepared *p, int commit, uint64_t lsn, uint64_t *token,
                          int replay)
{
    sop_apply a;
    cat_change *ch = NULL;
    size_t nch = 0;
    sop_buf rec = SOP_BUF_INIT;
    sop_hist *hist = NULL;
    int rc = SOP_OK;
    sop_apply__init(&a, db, lsn, 0);
    uint64_t saved_lid = db->reg.next_lid;
    if (!replay) {
        sop_buf_extend(&rec, SOP_REC_HDR_LEN);
        sop_txnrec__put_head(
            &rec, &(sop_txnrec_head){commit ? SOP_REC_COMMIT_PREPARED : SOP_REC_ABORT_PREPARED,
                                     p->id, 0});
        if ((rc = sop_buf_status(&rec)) != SOP_OK)
            goto out;
    }
    if (commit) {
        /* A failure leaves p prepared. Replay does not read the blobs again:
         * its COMMIT_PREPARED record was written after this check passed
         * (a damaged log is sop_db_check's to report, as for a COMMIT). */
        if (!replay)
            SOP_TRY(check_prepared_values(db, p));
        /* Live transactions that began after the PREPARE validate against
         * its writes at this lsn (in replay there are none). */
        if (!replay && !(hist = hist_of_prepared(db, p, lsn))) {
            rc = sop_err(SOP_NOMEM, "history");
            goto out;
        }
        SOP_TRY(apply_body(&a, p->body, p->body_len, NULL, &ch, &nch, p->body));
    } else {
        /* Its value blobs die with it. */
        struct death_ctx dc = {&a, SOP_OK};
        SOP_TRY(sop_txn__body_blobs(p->body, p->body_len, body_blob_death, &dc));
        SOP_TRY(dc.rc);
    }
    if (!replay) {
        SOP_TRY(append_and_publish(db, &rec, &a, ch, nch, lsn, token));
        if (hist)
            hist_link(db, hist);
        hist = NULL;
    } else {
        SOP_TRY(sop_apply__reserve(&a));
        sop_apply__publish(&a);
        SOP_TRY(publish_catalog(db, ch, nch, lsn));
        sop_commit__applied(db, lsn);
    }
    prepared_unlink(db, p);
    sop_prepared__free(p);
out:
    if (rc)
        db->reg.next_lid = saved_lid;
    hist_free(hist);
    free_changes(ch, nch, rc != SOP_OK);
    sop_apply__dispose(&a);
    sop_buf_dispose(&rec);
    return rc;
}

int sop_txn__resolve_prepared(sop_db *db, uint64_t id, int commit)
{
    uint64_t token = 0;
    sop_mutex_lock(&db->commit_mu);
    sop_prepared *p = db->prepared;
    while (p && p->id != id)
        p = p->next;
    if (!p) {
        sop_mutex_unlock(&db->commit_mu);
        return sop_err(SOP_NOTFOUND, "no prepared transaction %" PRIu64, id);
    }
    uint64_t lsn = sop_commit__claim(db);
    /* Applying the body reads and loads images, and loading evicts others:
     * the images it is merging into must stay allocated (cache.h L2). The
     * caller may hold no transaction (phase 2 by id after recovery). */
    sop_cache__enter(db->cache, db->resolve_slot);
    /* SOP_NOTFOUND means "no such prepared transaction" to the caller: a
     * file gone under the handle is an I/O error (sop_err_lost_file). */
    int rc = sop_err_lost_file(resolve_locked(db, p, commit, lsn, &token, 0));
    sop_cache__leave(db->resolve_slot);
    if (rc == SOP_OK && db->opts.sync != SOP_SYNC_FULL)
        sop_commit__visible(db, lsn);
    if (rc == SOP_OK)
        sop_db__trim(db);
    sop_mutex_unlock(&db->commit_mu);
    if (rc)
        return rc;
    if (db->opts.sync == SOP_SYNC_FULL)
        return sop_commit__durable(db, token, lsn);
    return SOP_OK;
}

/* ======================================================================== */
/* Replay (recovery)                                                         */
/* ======================================================================== */

int sop_txn__replay(sop_db *db, uint64_t lsn, const uint8_t *payload, size_t len)
{
    sop_txnrec_head h;
    const uint8_t *body;
    size_t blen;
    if (sop_txnrec__get_head(&h, &body, &blen, payload, len) != SOP_OK) {
        char why[200];
        snprintf(why, sizeof why, "%s", sop_errmsg());
        return SOP_CORRUPT_BKPT("at lsn %" PRIu64 ": %s", lsn, why);
    }
    uint8_t kind = h.kind;
    uint64_t id = h.txn_id;
    if (lsn != sop_commit__next(db))
        return SOP_CORRUPT_BKPT("log jumps from lsn %" PRIu64 " to %" PRIu64, db->applied_lsn, lsn);
    int rc = SOP_OK;
    if (kind == SOP_REC_COMMIT) {
        sop_apply a;
        cat_change *ch = NULL;
        size_t nch = 0;
        sop_apply__init(&a, db, lsn, 0);
        rc = apply_body(&a, body, blen, NULL, &ch, &nch, NULL);
        if (rc == SOP_OK && (rc = sop_apply__reserve(&a)) == SOP_OK) {
            sop_apply__publish(&a);
            rc = publish_catalog(db, ch, nch, lsn);
        }
        free_changes(ch, nch, rc != SOP_OK);
        sop_apply__dispose(&a);
        if (rc)
            return rc;
        sop_commit__applied(db, lsn);
    } else if (kind == SOP_REC_PREPARE) {
        if ((rc = add_prepared(db, id, lsn, body, blen)) != SOP_OK)
            return rc;
        /* reserved dup seqs */
        sop_commit__applied(db, lsn);
    } else if (kind == SOP_REC_COMMIT_PREPARED || kind == SOP_REC_ABORT_PREPARED) {
        sop_prepared *p = db->prepared;
        while (p && p->id != id)
            p = p->next;
        if (!p)
            return SOP_CORRUPT_BKPT("resolution of unknown prepared transaction %" PRIu64, id);
        uint64_t token;
        if ((rc = resolve_locked(db, p, kind == SOP_REC_COMMIT_PREPARED, lsn, &token, 1)) != SOP_OK)
            return rc;
    } else {
        return SOP_CORRUPT_BKPT("transaction record kind %u", kind);
    }
    return SOP_OK;
}
