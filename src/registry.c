/*
 * registry.c - the in-memory registry: lid -> version chain. See registry.h
 * for the invariants (R1)-(R4). Storage: a three-level radix table of
 * 4096-entry pages, so a lookup is three dependent loads and no hashing.
 */
#include "registry.h"

void sop_registry__init(sop_registry *r)
{
    memset(r, 0, sizeof *r);
    for (unsigned i = 0; i < SOP_RADIX_FAN; i++)
        atomic_init(&r->top[i], NULL);
    r->next_lid = 1;
}

static _Atomic(sop_version *) *slot_of(const sop_registry *r, uint64_t lid, int create,
                                       sop_registry *rw)
{
    if (lid == 0 || lid > SOP_MAX_LID)
        return NULL;
    unsigned t = (unsigned)(lid >> (2 * SOP_RADIX_BITS));
    unsigned m = (unsigned)(lid >> SOP_RADIX_BITS) & (SOP_RADIX_FAN - 1);
    unsigned l = (unsigned)lid & (SOP_RADIX_FAN - 1);
    _Atomic(void *) *mid = atomic_load_explicit(&r->top[t], memory_order_acquire);
    if (!mid) {
        if (!create)
            return NULL;
        mid = sop_calloc(SOP_RADIX_FAN, sizeof *mid);
        if (!mid)
            return NULL;
        atomic_store_explicit(&rw->top[t], (void *)mid, memory_order_release);
    }
    _Atomic(sop_version *) *leaf = atomic_load_explicit(&mid[m], memory_order_acquire);
    if (!leaf) {
        if (!create)
            return NULL;
        leaf = sop_calloc(SOP_RADIX_FAN, sizeof *leaf);
        if (!leaf)
            return NULL;
        atomic_store_explicit(&mid[m], (void *)leaf, memory_order_release);
    }
    return &leaf[l];
}

sop_version *sop_registry__lookup(const sop_registry *r, uint64_t lid, uint64_t snap)
{
    _Atomic(sop_version *) *s = slot_of(r, lid, 0, NULL);
    if (!s)
        return NULL;
    sop_version *v = atomic_load_explicit(s, memory_order_acquire);
    while (v && v->lsn > snap)
        v = atomic_load_explicit(&v->older, memory_order_acquire);
    if (v && (v->flags & SOP_VER_TOMBSTONE))
        return NULL;
    return v;
}

sop_version *sop_registry__head(const sop_registry *r, uint64_t lid)
{
    _Atomic(sop_version *) *s = slot_of(r, lid, 0, NULL);
    return s ? atomic_load_explicit(s, memory_order_acquire) : NULL;
}

void sop_registry__share(sop_registry *r, const sop_mutex *writer)
{
    r->writer = writer;
}

/* (R1), (R3): the writing calls run under the writer lock once shared. */
static void assert_writer(const sop_registry *r)
{
    if (r->writer)
        sop_mutex_assert_held(r->writer);
}

int sop_registry__publish(sop_registry *r, uint64_t lid, sop_version *v)
{
    assert_writer(r);
    if (lid == 0 || lid > SOP_MAX_LID)
        return SOP_CORRUPT_BKPT("lid %" PRIu64 " out of range", lid);
    _Atomic(sop_version *) *s = slot_of(r, lid, 1, r);
    if (!s)
        return sop_err(SOP_NOMEM, "registry page for lid %" PRIu64, lid);
    sop_version *head = atomic_load_explicit(s, memory_order_relaxed);
    assert(!head || v->lsn >= head->lsn); /* newest first: lookup stops at the first <= snap */
    if (!head && !(v->flags & SOP_VER_TOMBSTONE))
        r->live_lids++;
    atomic_store_explicit(&v->older, head, memory_order_relaxed);
    /* Release: a reader that sees v sees its fields and image. */
    atomic_store_explicit(s, v, memory_order_release);
    return SOP_OK;
}

void sop_registry__unpublish(sop_registry *r, uint64_t lid, sop_version *v)
{
    assert_writer(r);
    _Atomic(sop_version *) *s = slot_of(r, lid, 0, NULL);
    /* Only the head may be undone (nobody has seen it yet): anything else
     * would unlink a version a reader may hold. */
    if (NEVER(!s || atomic_load_explicit(s, memory_order_relaxed) != v))
        return;
    sop_version *older = atomic_load_explicit(&v->older, memory_order_relaxed);
    if (!older && !(v->flags & SOP_VER_TOMBSTONE))
        r->live_lids--;
    atomic_store_explicit(s, older, memory_order_release);
}

size_t sop_registry__trim(sop_registry *r, uint64_t lid, uint64_t snap_min,
                          size_t *dirty_freed_out, void (*before_free)(sop_version *, void *),
                          void *ctx)
{
    assert_writer(r);
    _Atomic(sop_version *) *s = slot_of(r, lid, 0, NULL);
    size_t freed = 0;
    *dirty_freed_out = 0;
    if (!s)
        return 0;
    sop_version *head = atomic_load_explicit(s, memory_order_relaxed);
    sop_version *keep = head;
    while (keep && keep->lsn > snap_min)
        keep = atomic_load_explicit(&keep->older, memory_order_relaxed);
    if (!keep)
        return 0;
    sop_version *rest;
    if (keep == head && (keep->flags & SOP_VER_TOMBSTONE)) {
        /* Deleted and invisible to every snapshot: drop the whole chain. */
        atomic_store_explicit(s, NULL, memory_order_release);
        rest = keep;
    } else {
        rest = atomic_load_explicit(&keep->older, memory_order_relaxed);
        atomic_store_explicit(&keep->older, NULL, memory_order_release);
    }
    while (rest) {
        sop_version *next = atomic_load_explicit(&rest->older, memory_order_relaxed);
        if (atomic_load_explicit(&rest->img, memory_order_relaxed)) {
            size_t len = atomic_load_explicit(&rest->img_len, memory_order_relaxed);
            freed += len;
            if (rest->loc.seg == 0)
                *dirty_freed_out += len;
        }
        if (before_free)
            before_free(rest, ctx);
        sop_version__free(rest);
        rest = next;
    }
    return freed;
}

int sop_registry__for_each(const sop_registry *r, int (*fn)(uint64_t, sop_version *, void *),
                           void *ctx)
{
    for (unsigned t = 0; t < SOP_RADIX_FAN; t++) {
        _Atomic(void *) *mid = atomic_load_explicit(&r->top[t], memory_order_acquire);
        if (!mid)
            continue;
        for (unsigned m = 0; m < SOP_RADIX_FAN; m++) {
            _Atomic(sop_version *) *leaf = atomic_load_explicit(&mid[m], memory_order_acquire);
            if (!leaf)
                continue;
            for (unsigned l = 0; l < SOP_RADIX_FAN; l++) {
                sop_version *v = atomic_load_explicit(&leaf[l], memory_order_acquire);
                if (!v)
                    continue;
                uint64_t lid = ((uint64_t)t << (2 * SOP_RADIX_BITS)) |
                               ((uint64_t)m << SOP_RADIX_BITS) | l;
                int rc = fn(lid, v, ctx);
                if (rc)
                    return rc;
            }
        }
    }
    return 0;
}

void sop_registry__dispose(sop_registry *r)
{
    for (unsigned t = 0; t < SOP_RADIX_FAN; t++) {
        _Atomic(void *) *mid = atomic_load_explicit(&r->top[t], memory_order_relaxed);
        if (!mid)
            continue;
        for (unsigned m = 0; m < SOP_RADIX_FAN; m++) {
            _Atomic(sop_version *) *leaf = atomic_load_explicit(&mid[m], memory_order_relaxed);
            if (!leaf)
                continue;
            for (unsigned l = 0; l < SOP_RADIX_FAN; l++) {
                sop_version *v = atomic_load_explicit(&leaf[l], memory_order_relaxed);
                while (v) {
                    sop_version *next = atomic_load_explicit(&v->older, memory_order_relaxed);
                    sop_version__free(v);
                    v = next;
                }
            }
            sop_free((void *)leaf);
        }
        sop_free((void *)mid);
        atomic_store_explicit(&r->top[t], NULL, memory_order_relaxed);
    }
}

sop_version *sop_version__new(uint64_t lsn, uint8_t *img, size_t img_len, uint32_t flags)
{
    sop_version *v = sop_calloc(1, sizeof *v);
    if (!v)
        return NULL;
    v->lsn = lsn;
    atomic_init(&v->older, NULL);
    atomic_init(&v->img, img);
    atomic_init(&v->ref, 0);
    atomic_init(&v->img_len, img_len);
    v->flags = flags;
    return v;
}

void sop_version__free(sop_version *v)
{
    if (!v)
        return;
    sop_free(atomic_load_explicit(&v->img, memory_order_relaxed));
    sop_free(v);
}

int sop_registry__ensure(sop_registry *r, uint64_t lid)
{
    assert_writer(r);
    if (lid == 0 || lid > SOP_MAX_LID)
        return SOP_CORRUPT_BKPT("lid %" PRIu64 " out of range", lid);
    return slot_of(r, lid, 1, r) ? SOP_OK : sop_err(SOP_NOMEM, "registry page");
}
