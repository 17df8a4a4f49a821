/*
 * registry.h - logical node ID -> chain of immutable node versions (MVCC).
 *
 * Parents refer to children by logical ID (lid); a commit that changes a
 * node publishes a new version of that lid and leaves its parent alone.
 * Each version carries the LSN of the commit that made it; a reader at
 * snapshot S uses the newest version with lsn <= S.
 *
 *   (R1) Versions are published (prepended) only by the committer, under
 *        db->commit_mu, or by recovery before the db is shared.
 *   (R2) A published version's lsn, older link (except trimming, below),
 *        flags and image never change; its image may be loaded lazily once
 *        (CAS from NULL), and its loc is set once by a checkpoint.
 *   (R3) Trimming keeps, per lid, the newest version with lsn <= S_min (the
 *        oldest active snapshot) and everything newer. A reader at S >= S_min
 *        stops at or before that version, so it never touches freed memory.
 *        Trimming runs under commit_mu.
 *   (R4) The radix table never shrinks or moves while the db is open, so
 *        readers index it without locks.
 */
#ifndef SOP_REGISTRY_H
#define SOP_REGISTRY_H

#include "lock.h"
#include "sop_int.h"

#include <stdatomic.h>

#define SOP_VER_TOMBSTONE 0x1u /* the lid was deleted at this lsn */

typedef struct sop_version {
    uint64_t lsn;
    _Atomic(struct sop_version *) older;
    _Atomic(uint8_t *) img;  /* node image (sop_malloc'ed), NULL until loaded */
    _Atomic size_t img_len;  /* bytes of the image last installed (accounting) */
    sop_loc loc;             /* on-disk copy; seg == 0 while dirty */
    uint32_t flags;
    _Atomic uint8_t ref;     /* CLOCK reference bit (set on use) */
    uint8_t in_cache;        /* on the clock list (cache.c's clock_mu) */
    struct sop_version *cprev, *cnext; /* clock list (clock_mu) */
} sop_version;

#define SOP_RADIX_BITS 12
#define SOP_RADIX_FAN  (1u << SOP_RADIX_BITS)
#define SOP_MAX_LID    ((1ull << (3 * SOP_RADIX_BITS)) - 1)

typedef struct sop_registry {
    _Atomic(void *) top[SOP_RADIX_FAN]; /* -> mid[FAN] -> leaf[FAN] of _Atomic(sop_version *) */
    uint64_t next_lid;                  /* allocation counter (commit_mu) */
    uint64_t live_lids;                 /* chains present (commit_mu) */
    /* (R1)/(R3) made executable: once the db is shared, the lock that every
     * publish, unpublish, trim and radix growth must hold (checked in the
     * lock-checking builds); NULL while only recovery uses the registry. */
    const sop_mutex *writer;
} sop_registry;

void sop_registry__init(sop_registry *r);
/* The db is about to be shared: from now on the writing calls assert that
 * writer is held (R1, R3). */
void sop_registry__share(sop_registry *r, const sop_mutex *writer);
void sop_registry__dispose(sop_registry *r);

/* Newest version of lid with lsn <= snap, or NULL (no such lid at snap). */
sop_version *sop_registry__lookup(const sop_registry *r, uint64_t lid, uint64_t snap);
/* The newest version regardless of lsn (committer only). */
sop_version *sop_registry__head(const sop_registry *r, uint64_t lid);
/* Prepend v (v->lsn >= head's lsn). SOP_NOMEM, SOP_CORRUPT (lid too big). */
int sop_registry__publish(sop_registry *r, uint64_t lid, sop_version *v);
/* Undo the last publish of lid (only before anyone can have seen it: used
 * when a commit fails after publishing; v must be the head). */
void sop_registry__unpublish(sop_registry *r, uint64_t lid, sop_version *v);
/* Apply (R3) to one lid; returns bytes of images freed; *dirty_freed_out
 * gets the part that belonged to versions never written to disk. */
size_t sop_registry__trim(sop_registry *r, uint64_t lid, uint64_t snap_min,
                          size_t *dirty_freed_out, void (*before_free)(sop_version *, void *),
                          void *ctx);
/* Call fn for every lid that has a chain, in ascending lid order. */
int sop_registry__for_each(const sop_registry *r, int (*fn)(uint64_t lid, sop_version *head, void *ctx),
                           void *ctx);

sop_version *sop_version__new(uint64_t lsn, uint8_t *img, size_t img_len, uint32_t flags);
void sop_version__free(sop_version *v);

/* Make sure publishing lid cannot fail for lack of a radix page. */
int sop_registry__ensure(sop_registry *r, uint64_t lid);

#endif
