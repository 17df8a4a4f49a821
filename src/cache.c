/*
 * cache.c - L1 node cache: CLOCK eviction and epoch reclamation. The rules
 * (L1)-(L4) are in cache.h.
 */
#include "cache.h"
#include "txn.h"

void sop_cache__add(sop_db *db, sop_version *v)
{
    sop_mutex_lock(&db->cache_mu);
    if (!v->in_cache && v->loc.seg != 0) {
        v->in_cache = 1;
        v->cprev = NULL;
        v->cnext = db->clock_head;
        if (db->clock_head)
            db->clock_head->cprev = v;
        db->clock_head = v;
        db->clock_count++;
    }
    sop_mutex_unlock(&db->cache_mu);
}

static void unlink_locked(sop_db *db, sop_version *v)
{
    if (db->clock_hand == v)
        db->clock_hand = v->cnext;
    if (v->cprev)
        v->cprev->cnext = v->cnext;
    else
        db->clock_head = v->cnext;
    if (v->cnext)
        v->cnext->cprev = v->cprev;
    v->cprev = v->cnext = NULL;
    v->in_cache = 0;
    db->clock_count--;
}

void sop_cache__forget(sop_db *db, sop_version *v)
{
    sop_mutex_lock(&db->cache_mu);
    if (v->in_cache)
        unlink_locked(db, v);
    sop_mutex_unlock(&db->cache_mu);
}

static void retire(sop_db *db, uint8_t *img, size_t len, uint64_t epoch)
{
    sop_mutex_lock(&db->retire_mu);
    if (db->retired_count == db->retired_cap) {
        size_t cap = db->retired_cap ? db->retired_cap * 2 : 256;
        sop_retired *n = sop_realloc(db->retired, cap * sizeof *n);
        if (!n) {
            /* Cannot queue it: keep the memory rather than risk a reader. */
            sop_mutex_unlock(&db->retire_mu);
            return;
        }
        db->retired = n;
        db->retired_cap = cap;
    }
    db->retired[db->retired_count++] = (sop_retired){img, len, epoch};
    sop_mutex_unlock(&db->retire_mu);
}

void sop_cache__reclaim(sop_db *db)
{
    /* The oldest announced epoch (L2). */
    uint64_t min = UINT64_MAX;
    sop_mutex_lock(&db->snap_mu);
    for (sop_txn *t = db->active; t; t = t->next_active) {
        uint64_t e = atomic_load_explicit(&t->epoch, memory_order_seq_cst);
        if (e && e < min)
            min = e;
    }
    uint64_t ce = atomic_load_explicit(&db->ckpt_epoch, memory_order_seq_cst);
    uint64_t ke = atomic_load_explicit(&db->check_epoch, memory_order_seq_cst);
    uint64_t re = atomic_load_explicit(&db->resolve_epoch, memory_order_seq_cst);
    if (ce && ce < min)
        min = ce;
    if (ke && ke < min)
        min = ke;
    if (re && re < min)
        min = re;
    sop_mutex_unlock(&db->snap_mu);
    sop_mutex_lock(&db->retire_mu);
    size_t keep = 0;
    for (size_t i = 0; i < db->retired_count; i++) {
        if (db->retired[i].epoch < min)
            sop_free(db->retired[i].img);
        else
            db->retired[keep++] = db->retired[i];
    }
    db->retired_count = keep;
    sop_mutex_unlock(&db->retire_mu);
}

void sop_cache__evict(sop_db *db)
{
    uint64_t budget = db->opts.cache_bytes;
    if (atomic_load_explicit(&db->node_bytes, memory_order_relaxed) <= budget)
        return;
    uint64_t target = budget - budget / 10;
    sop_mutex_lock(&db->cache_mu);
    /* Two sweeps at most: the first may only clear reference bits. */
    size_t steps = 0, limit = 2 * db->clock_count;
    while (steps++ < limit &&
           atomic_load_explicit(&db->node_bytes, memory_order_relaxed) > target) {
        sop_version *v = db->clock_hand ? db->clock_hand : db->clock_head;
        if (!v)
            break;
        db->clock_hand = v->cnext;
        if (atomic_exchange_explicit(&v->ref, 0, memory_order_relaxed))
            continue; /* recently used: second chance */
        uint8_t *img = atomic_exchange_explicit(&v->img, NULL, memory_order_seq_cst);
        unlink_locked(db, v);
        if (!img)
            continue;
        /* (L1) retire with the epoch after every reader that saw img. */
        uint64_t e = atomic_fetch_add_explicit(&db->epoch, 1, memory_order_seq_cst);
        size_t len = sop_node__image_len(img); /* of this image, not a newer one */
        atomic_fetch_sub_explicit(&db->node_bytes, len, memory_order_relaxed);
        retire(db, img, len, e);
    }
    sop_mutex_unlock(&db->cache_mu);
    sop_cache__reclaim(db);
}

void sop_cache__dispose(sop_db *db)
{
    for (size_t i = 0; i < db->retired_count; i++)
        sop_free(db->retired[i].img);
    sop_free(db->retired);
    db->retired = NULL;
    db->retired_count = db->retired_cap = 0;
}
