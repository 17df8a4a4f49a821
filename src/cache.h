/*
 * cache.h - the L1 node cache: a byte budget over node images, enforced by
 * CLOCK eviction of clean images, with epoch-based reclamation so readers
 * that take no locks never touch freed memory.
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
 *
 * Locks: cache_mu (level 6) guards the clock list; retire_mu (level 7) the
 * retired list. Neither is held across I/O or while taking a lower level.
 */
#ifndef SOP_CACHE_H
#define SOP_CACHE_H

#include "db.h"

/* Announce the current epoch in *slot (L2). */
static inline void sop_cache__enter(sop_db *db, _Atomic uint64_t *slot)
{
    atomic_store_explicit(slot, atomic_load_explicit(&db->epoch, memory_order_seq_cst),
                          memory_order_seq_cst);
}
static inline void sop_cache__leave(_Atomic uint64_t *slot)
{
    atomic_store_explicit(slot, 0, memory_order_release);
}

/* v (clean, image loaded) becomes an eviction candidate. */
void sop_cache__add(sop_db *db, sop_version *v);
/* v is about to be freed (L4). */
void sop_cache__forget(sop_db *db, sop_version *v);
/* Evict down to the budget if over it, then free what is safe to free. */
void sop_cache__evict(sop_db *db);
/* Free retired images no announced epoch can still see. */
void sop_cache__reclaim(sop_db *db);
/* Free everything retired (close: no reader left). */
void sop_cache__dispose(sop_db *db);

#endif
