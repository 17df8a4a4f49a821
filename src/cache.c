/*
 * cache.c - L1 node cache: CLOCK eviction, epoch reclamation and the node
 * fetch. The rules (L1)-(L4) are in cache.h.
 */
#include "cache.h"

typedef struct sop_retired {
    uint8_t *img;
    size_t len;
    uint64_t epoch;
} sop_retired;

struct sop_cache {
    sop_cache_hot hot; /* first: cache.h's inline functions read it */
    sop_db *db;        /* loads go through sop_db__read_node */
    uint64_t budget;   /* bytes of node images */
    _Atomic uint64_t loads;
    const sop_l2_cache *l2; /* NULL: none (sop_cache__set_l2) */
    _Atomic uint64_t l2_hits, l2_rejects;

    sop_mutex clock_mu; /* level 60: the clock list */
    sop_version *clock_head, *clock_hand;
    size_t clock_count; /* versions on the clock list */

    /* Every slot handed out so far, newest first: pushed with a CAS, never
     * unlinked before close (sop_cache_slot). */
    _Atomic(sop_cache_slot *) slots;

    sop_mutex retire_mu; /* level 70: retired images */
    sop_retired *retired;
    size_t retired_count, retired_cap;
};

_Thread_local sop_cache_slot *sop_cache__reader __attribute__((tls_model("initial-exec")));

sop_cache *sop_cache__open(sop_db *db, uint64_t budget)
{
    sop_cache *c = sop_calloc(1, sizeof *c);
    if (!c)
        return NULL;
    atomic_init(&c->hot.epoch, 1);
    atomic_init(&c->hot.node_bytes, 0);
    atomic_init(&c->loads, 0);
    atomic_init(&c->l2_hits, 0);
    atomic_init(&c->l2_rejects, 0);
    atomic_init(&c->slots, NULL);
    c->db = db;
    c->budget = budget;
    sop_mutex_init(&c->clock_mu, 60, "cache");
    sop_mutex_init(&c->retire_mu, 70, "retire");
    return c;
}

void sop_cache__close(sop_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->retired_count; i++)
        sop_free(c->retired[i].img);
    sop_free(c->retired);
    sop_cache_slot *s = atomic_load_explicit(&c->slots, memory_order_acquire);
    while (s) {
        sop_cache_slot *n = s->next;
        sop_free(s);
        s = n;
    }
    sop_mutex_destroy(&c->clock_mu);
    sop_mutex_destroy(&c->retire_mu);
    sop_free(c);
}

sop_cache_slot *sop_cache__slot_get(sop_cache *c)
{
    for (sop_cache_slot *s = atomic_load_explicit(&c->slots, memory_order_acquire); s;
         s = s->next) {
        int expect = 0;
        if (!atomic_load_explicit(&s->busy, memory_order_relaxed) &&
            atomic_compare_exchange_strong_explicit(&s->busy, &expect, 1, memory_order_acquire,
                                                    memory_order_relaxed))
            return s;
    }
    sop_cache_slot *s = sop_calloc(1, sizeof *s);
    if (!s)
        return NULL;
    atomic_init(&s->epoch, 0);
    atomic_init(&s->busy, 1);
    atomic_init(&s->hits, 0);
    /* seq_cst: a reclaim that starts after the slot's first announcement
     * finds it on the list (the push precedes the announcement). */
    s->next = atomic_load_explicit(&c->slots, memory_order_seq_cst);
    while (!atomic_compare_exchange_weak_explicit(&c->slots, &s->next, s, memory_order_seq_cst,
                                                  memory_order_seq_cst))
        ;
    return s;
}

void sop_cache__slot_put(sop_cache_slot *s)
{
    if (!s)
        return;
    sop_cache__leave(s);
    atomic_store_explicit(&s->busy, 0, memory_order_release);
}

void sop_cache__stat(sop_cache *c, sop_cache_stat *out)
{
    out->loads = atomic_load_explicit(&c->loads, memory_order_relaxed);
    out->hits = 0;
    for (sop_cache_slot *s = atomic_load_explicit(&c->slots, memory_order_acquire); s; s = s->next)
        out->hits += atomic_load_explicit(&s->hits, memory_order_relaxed);
    out->bytes = sop_cache__bytes(c);
    out->l2_hits = atomic_load_explicit(&c->l2_hits, memory_order_relaxed);
    out->l2_rejects = atomic_load_explicit(&c->l2_rejects, memory_order_relaxed);
}

void sop_cache__set_l2(sop_cache *c, const sop_l2_cache *l2)
{
    c->l2 = l2;
}

void sop_cache__add(sop_cache *c, sop_version *v)
{
    sop_mutex_lock(&c->clock_mu);
    if (!v->in_cache && v->loc.seg != 0) {
        v->in_cache = 1;
        v->cprev = NULL;
        v->cnext = c->clock_head;
        if (c->clock_head)
            c->clock_head->cprev = v;
        c->clock_head = v;
        c->clock_count++;
    }
    sop_mutex_unlock(&c->clock_mu);
}

static void unlink_locked(sop_cache *c, sop_version *v)
{
    if (c->clock_hand == v)
        c->clock_hand = v->cnext;
    if (v->cprev)
        v->cprev->cnext = v->cnext;
    else
        c->clock_head = v->cnext;
    if (v->cnext)
        v->cnext->cprev = v->cprev;
    v->cprev = v->cnext = NULL;
    v->in_cache = 0;
    c->clock_count--;
}

/* The public form of a location (sop_sys.h): the same four fields. */
static sop_node_id node_id(const sop_loc *loc)
{
    sop_node_id id = {loc->seg, loc->off, loc->len, loc->crc};
    return id;
}

void sop_cache__forget(sop_cache *c, sop_version *v)
{
    sop_mutex_lock(&c->clock_mu);
    if (v->in_cache)
        unlink_locked(c, v);
    sop_mutex_unlock(&c->clock_mu);
    if (c->l2 && c->l2->invalidate && v->loc.seg != 0) {
        sop_node_id id = node_id(&v->loc);
        c->l2->invalidate(c->l2->ctx, &id);
    }
}

static void retire(sop_cache *c, uint8_t *img, size_t len, uint64_t epoch)
{
    sop_mutex_lock(&c->retire_mu);
    if (c->retired_count == c->retired_cap) {
        size_t cap = c->retired_cap ? c->retired_cap * 2 : 256;
        sop_retired *n = sop_realloc(c->retired, cap * sizeof *n);
        if (!n) {
            /* Cannot queue it: keep the memory rather than risk a reader. */
            sop_mutex_unlock(&c->retire_mu);
            return;
        }
        c->retired = n;
        c->retired_cap = cap;
    }
    c->retired[c->retired_count++] = (sop_retired){img, len, epoch};
    sop_mutex_unlock(&c->retire_mu);
}

void sop_cache__reclaim(sop_cache *c)
{
    /* The oldest announced epoch (L2). */
    uint64_t min = UINT64_MAX;
    for (sop_cache_slot *s = atomic_load_explicit(&c->slots, memory_order_seq_cst); s;
         s = s->next) {
        uint64_t e = atomic_load_explicit(&s->epoch, memory_order_seq_cst);
        if (e && e < min)
            min = e;
    }
    sop_mutex_lock(&c->retire_mu);
    size_t keep = 0;
    for (size_t i = 0; i < c->retired_count; i++) {
        if (c->retired[i].epoch < min)
            sop_free(c->retired[i].img);
        else
            c->retired[keep++] = c->retired[i];
    }
    c->retired_count = keep;
    sop_mutex_unlock(&c->retire_mu);
}

void sop_cache__evict(sop_cache *c)
{
    uint64_t budget = c->budget;
    if (sop_cache__bytes(c) <= budget)
        return;
    uint64_t target = budget - budget / 10;
    sop_mutex_lock(&c->clock_mu);
    /* Two sweeps at most: the first may only clear reference bits. */
    size_t steps = 0, limit = 2 * c->clock_count;
    while (steps++ < limit && sop_cache__bytes(c) > target) {
        sop_version *v = c->clock_hand ? c->clock_hand : c->clock_head;
        if (!v)
            break;
        c->clock_hand = v->cnext;
        if (atomic_exchange_explicit(&v->ref, 0, memory_order_relaxed))
            continue; /* recently used: second chance */
        uint8_t *img = atomic_exchange_explicit(&v->img, NULL, memory_order_seq_cst);
        unlink_locked(c, v);
        if (!img)
            continue;
        /* (L1) retire with the epoch after every reader that saw img. */
        uint64_t e = atomic_fetch_add_explicit(&c->hot.epoch, 1, memory_order_seq_cst);
        size_t len = sop_node__image_len(img); /* of this image, not a newer one */
        sop_cache__discharge(c, len);
        retire(c, img, len, e);
    }
    sop_mutex_unlock(&c->clock_mu);
    sop_cache__reclaim(c);
}

/* The image at id from the L2, checked against id (L5): 1 and *out (to
 * sop_free), *len_out set; 0 if the L2 has none or it failed the check. */
static int l2_get(sop_cache *c, const sop_loc *id, uint8_t **out, size_t *len_out)
{
    if (id->len < SOP_REC_HDR_LEN + 8 || (id->len & 7) != 0)
        return 0;
    size_t cap = id->len - SOP_REC_HDR_LEN; /* the payload's length, padding included */
    uint8_t *buf = sop_malloc(cap);
    if (!buf)
        return 0; /* the disk read reports the shortage, if it is one */
    sop_node_id nid = node_id(id);
    size_t len = c->l2->get(c->l2->ctx, &nid, buf, cap);
    uint8_t hdr[SOP_REC_HDR_LEN];
    if (len == 0 || len > cap) {
        sop_free(buf);
        return 0;
    }
    /* A node record's header is a function of its payload (no lsn, no
     * durable mark: wal.h), so the crc the parent holds checks the image. */
    if (sop_rec_len(len) != id->len || sop_rec__header(hdr, SOP_REC_NODE, buf, len, 0) != id->crc) {
        atomic_fetch_add_explicit(&c->l2_rejects, 1, memory_order_relaxed);
        sop_free(buf);
        return 0;
    }
    *out = buf;
    *len_out = len;
    return 1;
}

int sop_cache__load(const uint8_t **img_out, sop_cache *c, sop_version *v, uint64_t lid,
                    const sop_keycmp *cmp)
{
    if (v->loc.seg == 0)
        return SOP_CORRUPT_BKPT("node %" PRIu64 " has neither image nor location", lid);
    uint8_t *payload;
    size_t len;
    int rc;
    if (c->l2 && l2_get(c, &v->loc, &payload, &len)) {
        if (sop_node__validate(payload, len, cmp) == SOP_OK) {
            atomic_fetch_add_explicit(&c->l2_hits, 1, memory_order_relaxed);
            goto install;
        }
        atomic_fetch_add_explicit(&c->l2_rejects, 1, memory_order_relaxed);
        sop_free(payload);
    }
    if ((rc = sop_db__read_node(c->db, &v->loc, &payload, &len)) != SOP_OK)
        return rc;
    if ((rc = sop_node__validate(payload, len, cmp)) != SOP_OK) {
        sop_free(payload);
        return rc;
    }
    atomic_fetch_add_explicit(&c->loads, 1, memory_order_relaxed);
    if (c->l2 && c->l2->put) {
        sop_node_id id = node_id(&v->loc);
        c->l2->put(c->l2->ctx, &id, payload, len);
    }
install:;
    uint8_t *expected = NULL;
    if (!atomic_compare_exchange_strong_explicit(&v->img, &expected, payload, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        sop_free(payload); /* another thread loaded it first */
        *img_out = expected;
        return SOP_OK;
    }
    atomic_store_explicit(&v->img_len, len, memory_order_relaxed);
    sop_cache__charge(c, len);
    *img_out = payload;
    sop_cache__add(c, v);
    sop_cache__evict(c); /* never frees payload: the caller announced an epoch (L2) */
    return SOP_OK;
}
