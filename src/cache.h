/*
 * cache.h - the L1 node cache: a byte budget over node images, enforced by
 * CLOCK eviction of clean images, with epoch-based reclamation so readers
 * that take no locks never touch freed memory.
 *
 * The cache's state (the clock list, the reclamation epoch, the retired
 * images, their locks, the count of image bytes) is private to cache.c:
 * struct sop_cache is opaque outside it except for its first member,
 * sop_cache_hot, which the inline fast paths below read (see there). The
 * db holds a sop_cache * from sop_cache__open.
 *
 * Which images are cached: every image of a version that has an on-disk
 * copy (loaded from disk, or written by a checkpoint). Dirty images (not
 * yet checkpointed) are never evicted; the checkpoint trigger bounds them.
 *
 *   (L1) An evicted image is unlinked from its version (v->img = NULL, a
 *        seq_cst exchange) and retired with the epoch that follows; it is
 *        freed only once every announced epoch is newer than that.
 *   (L2) Every thread that reads images announces the current epoch first
 *        (a seq_cst store into its slot: a transaction's, the checkpoint's,
 *        the checker's, recovery's, or that of phase 2 of a prepared
 *        transaction, which may run with no transaction at all:
 *        sop_db_prepared_commit). A transaction re-announces at the
 *        start of each call, so what a call returns stays valid until the
 *        next call on that transaction (sop.h's lifetime rule).
 *   (L3) State kept across calls (a cursor's path) holds versions, never
 *        images: it re-reads v->img (reloading if evicted) at each call.
 *   (L4) A version is removed from the clock list before it is freed.
 *   (L5) What an L2 (sop_l2_cache, sop_sys.h) returns is a hint: an image is used only
 *        if it matches the physical ID it was asked for - the record
 *        length and the crc32c of the record the node was written as - and
 *        then validates as a node; anything else counts as a reject and
 *        the node is read from disk. A wrong, stale or damaged L2 entry
 *        can cost a disk read, never a wrong answer.
 *
 * Locks (private to cache.c): the clock lock (level 6) guards the clock
 * list; the retire lock (level 7) the retired list. Neither is held across
 * I/O or while taking a lower level.
 */
#ifndef SOP_CACHE_H
#define SOP_CACHE_H

#include "db.h"
#include "sop_sys.h"

/*
 * The part of struct sop_cache the inline functions of this header read:
 * announcing an epoch happens at every call of a transaction and the byte
 * count changes at every load and every commit, so a call into cache.c for
 * each would add to every operation. It is the first member of struct
 * sop_cache (cache.c), so a sop_cache * points to it. Nothing outside this
 * header touches its fields.
 */
typedef struct sop_cache_hot {
    _Atomic uint64_t epoch; /* reclamation epoch, starts at 1 (L1, L2) */
    /* 64 bytes apart, so never on one cache line: node_bytes is written at
     * every load and commit, epoch read by every call of every thread.
     * (Padding, not _Alignas: the allocator promises no 64-byte alignment.) */
    char pad[64 - sizeof(uint64_t)];
    _Atomic uint64_t node_bytes; /* all node images in memory */
} sop_cache_hot;

static inline sop_cache_hot *sop_cache__hot(sop_cache *c)
{
    return (sop_cache_hot *)(void *)c;
}

/* A new cache for db with a budget of budget bytes of node images, or NULL
 * (out of memory). db is the handle the cache loads nodes through. */
sop_cache *sop_cache__open(sop_db *db, uint64_t budget);
/* Free the cache and every image still retired (close: no reader left).
 * The images installed in versions belong to the registry. NULL: no-op. */
void sop_cache__close(sop_cache *c);

/*
 * An epoch slot: where one reader announces the epoch it reads images
 * under (L2). The cache keeps every slot it ever handed out on a list it
 * walks for the oldest announced epoch (sop_cache__reclaim), so it needs
 * to know nothing about who reads: a transaction takes one at begin and
 * gives it back at its end; the db takes one each for the checkpoint, the
 * checker and recovery, and phase 2 of a prepared transaction at open.
 * Slots are reused, never freed before sop_cache__close; a slot is padded
 * so that two readers announcing never write the same cache line.
 */
typedef struct sop_cache_slot {
    _Atomic uint64_t epoch;      /* announced epoch; 0 = none */
    _Atomic int busy;            /* handed out (sop_cache__slot_get) */
    struct sop_cache_slot *next; /* the cache's list: set before it is linked */
    /* Node fetches served from memory by the readers that announced here
     * (sop_db_stat's node_hits is the sum over all slots). Written only by
     * the thread that announced last, so a load and a store, not an atomic
     * add: the line is the announcing thread's already. */
    _Atomic uint64_t hits;
    char pad[128 - 3 * sizeof(uint64_t) - sizeof(void *)];
} sop_cache_slot;

/*
 * The slot the calling thread announced in last (sop_cache__enter), or
 * NULL: where the inline hit path counts. Leaving does not clear it (a
 * checkpoint run inside a commit leaves its slot while the commit goes on
 * reading: its fetches are counted in the checkpoint's slot, and the sum
 * stays right). A thread-local because the hit
 * path is every level of every descent, and passing a slot to each would
 * change every reader's signature for one counter. Every fetch follows an
 * announcement of the same thread (L2), so the pointer is that reader's
 * slot; slots are not freed before sop_cache__close. Initial-exec: an
 * access is one %fs-relative load, not a call into the dynamic linker.
 */
extern _Thread_local sop_cache_slot *sop_cache__reader __attribute__((tls_model("initial-exec")));

/* A free slot (announcing nothing), or NULL (out of memory). Any thread;
 * lock-free unless the list must grow. */
sop_cache_slot *sop_cache__slot_get(sop_cache *c);
/* Give s back (its epoch is dropped). NULL: no-op. */
void sop_cache__slot_put(sop_cache_slot *s);

/* Announce the current epoch in s (L2). Inline: every call of a
 * transaction announces. */
static inline void sop_cache__enter(sop_cache *c, sop_cache_slot *s)
{
    atomic_store_explicit(&s->epoch,
                          atomic_load_explicit(&sop_cache__hot(c)->epoch, memory_order_seq_cst),
                          memory_order_seq_cst);
    sop_cache__reader = s;
}
static inline void sop_cache__leave(sop_cache_slot *s)
{
    atomic_store_explicit(&s->epoch, 0, memory_order_release);
}

/* Image bytes: n more (a new image installed in a version, or private
 * clones of a running commit counted early) or fewer (images freed). The
 * budget is enforced by sop_cache__evict against this count. */
static inline void sop_cache__charge(sop_cache *c, uint64_t n)
{
    atomic_fetch_add_explicit(&sop_cache__hot(c)->node_bytes, n, memory_order_relaxed);
}
static inline void sop_cache__discharge(sop_cache *c, uint64_t n)
{
    atomic_fetch_sub_explicit(&sop_cache__hot(c)->node_bytes, n, memory_order_relaxed);
}
static inline uint64_t sop_cache__bytes(sop_cache *c)
{
    return atomic_load_explicit(&sop_cache__hot(c)->node_bytes, memory_order_relaxed);
}

/* The image of version v of lid, loading it if needed (validated with
 * cmp); the caller has announced an epoch (L2), so the image stays
 * allocated until its next announcement. SOP_CORRUPT if v has neither an
 * image nor a location, or what is read there is not a valid node; I/O
 * errors of the read.
 *
 * The hit path (image present) is here, inline: it is the one operation of
 * every descent of every read, and a call into cache.c for it would cost
 * more than the work. It touches only the version (its CLOCK bit). */
int sop_cache__load(const uint8_t **img_out, sop_cache *c, sop_version *v, uint64_t lid,
                    const sop_keycmp *cmp);
static inline int sop_cache__node(const uint8_t **img_out, sop_cache *c, sop_version *v,
                                  uint64_t lid, const sop_keycmp *cmp)
{
    uint8_t *img = atomic_load_explicit(&v->img, memory_order_acquire);
    if (SOP_LIKELY(img != NULL)) {
        /* CLOCK reference bit: written only when it changes (shared line). */
        if (!atomic_load_explicit(&v->ref, memory_order_relaxed))
            atomic_store_explicit(&v->ref, 1, memory_order_relaxed);
        sop_cache_slot *r = sop_cache__reader;
        if (r)
            atomic_store_explicit(&r->hits,
                                  atomic_load_explicit(&r->hits, memory_order_relaxed) + 1,
                                  memory_order_relaxed);
        *img_out = img;
        return SOP_OK;
    }
    return sop_cache__load(img_out, c, v, lid, cmp);
}

/*
 * The L2 hook (sop_sys.h's sop_l2_cache, contract (H1)-(H5) there; L5
 * here): asked before a disk read, offered every image read from disk,
 * told when a version with a location is freed. Node records are never
 * rewritten in place, so the physical ID names the same bytes for ever.
 */
/* Use l2 (NULL: none) for the loads from now on; *l2 must stay valid until
 * the cache is closed or another is set. Called by open (sop_db_options.l2),
 * before any reader; tests may swap it while no other thread uses the
 * handle. */
void sop_cache__set_l2(sop_cache *c, const sop_l2_cache *l2);

/* Counters for sop_db_stat. */
typedef struct sop_cache_stat {
    uint64_t loads;      /* images read from disk */
    uint64_t hits;       /* fetches served from memory (sum over the slots) */
    uint64_t bytes;      /* sop_cache__bytes */
    uint64_t l2_hits;    /* images served by the L2 (verified, L5) */
    uint64_t l2_rejects; /* images the L2 returned that failed L5 */
} sop_cache_stat;
void sop_cache__stat(sop_cache *c, sop_cache_stat *out);

/* v (clean, image loaded) becomes an eviction candidate. */
void sop_cache__add(sop_cache *c, sop_version *v);
/* v is about to be freed (L4). */
void sop_cache__forget(sop_cache *c, sop_version *v);
/* Evict down to the budget if over it, then free what is safe to free. */
void sop_cache__evict(sop_cache *c);
/* Free retired images no announced epoch can still see. */
void sop_cache__reclaim(sop_cache *c);

#endif
