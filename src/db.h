/*
 * db.h - the database handle and the store catalog (internal).
 *
 * State model. The newest committed state ("head") is changed only by the
 * committer holding commit_mu. Readers use snapshots: a transaction begins
 * at visible_lsn and sees, for every lid, the newest version with
 * lsn <= its snapshot, and for every store the newest count with
 * lsn <= snapshot.
 *
 *   (D1) applied_lsn >= visible_lsn. With SOP_SYNC_FULL visible_lsn moves
 *        only after the records up to it are durable, so nobody ever reads
 *        a commit a crash could take back.
 *   (D2) Snapshots are registered under snap_mu together with reading
 *        visible_lsn, so S_min computed under snap_mu is <= every snapshot
 *        any transaction can use.
 *   (D3) The catalog (db->stores and its name and id indexes) changes only
 *        with commit_mu and cat_mu held; either lock makes it readable.
 *        A store object is freed while the db is open only when nothing
 *        can reach it: a dropped store once its drop is older than every
 *        snapshot (sop_db__reap_stores, from trim); a store whose create
 *        never committed when its creating transaction ends.
 */
#ifndef SOP_DB_H
#define SOP_DB_H

#include "sop_int.h"
#include "node.h"
#include "registry.h"
#include "util.h"
#include "lock.h"
#include "wal.h"

#include <pthread.h>
#include <stdatomic.h>

#define SOP_MAX_DEPTH       40
#define SOP_MAX_NODE_BYTES  (256u * 1024u)
#define SOP_NEVER           UINT64_MAX
#define SOP_FORMAT_VERSION  2 /* 2: node off[] entries carry search hints */

typedef struct sop_countver {
    uint64_t lsn;
    uint64_t count;
    _Atomic(struct sop_countver *) older;
} sop_countver;

struct sop_store {
    sop_db *db;
    struct sop_store *next, *prev;   /* db->stores (D3) */
    struct sop_store *name_next;     /* chain of db->cat_by_name */
    struct sop_store *id_next;       /* chain of db->cat_by_id */
    struct sop_store *dropped_next;  /* db->cat_dropped */
    struct sop_store *counts_next;   /* db->count_multi, if on_count_multi */
    int on_count_multi;
    uint64_t name_hash;
    int in_id_index;                 /* committed: findable by id */
    char *name;
    uint64_t id;                     /* 0 until its create commits */
    uint64_t root_lid;               /* stable for the store's life (no root moves) */
    uint32_t flags;                  /* SOP_STORE_* */
    uint32_t slot_length;
    uint32_t max_inline;
    char *comparator;                /* NULL = bytewise */
    void *key_spec;
    size_t key_spec_len;
    sop_keycmp cmp;
    _Atomic uint64_t created_lsn;    /* SOP_NEVER while pending or abandoned */
    _Atomic uint64_t dropped_lsn;    /* SOP_NEVER while live */
    _Atomic(sop_txn *) pending_owner; /* creator until its commit/abort */
    _Atomic(sop_countver *) counts;  /* newest first */
    uint64_t next_seq;               /* duplicate-item sequence (commit_mu) */
};

/* Death of a blob at lsn: applied to segment accounting by the checkpoint
 * that covers lsn. */
typedef struct sop_death {
    sop_loc loc;
    uint64_t lsn;
} sop_death;

/* Keys written by one committed transaction, kept while a read-write
 * transaction that began before it is active (validation history). */
typedef struct sop_hist {
    struct sop_hist *next;
    uint64_t lsn;
    size_t store_count;
    struct sop_hist_store {
        uint64_t store_id;
        int dropped;              /* the whole store was removed */
        size_t key_count;
        sop_val *keys;            /* sorted by the store's order, unique */
    } *stores;
    sop_arena arena;
} sop_hist;

typedef struct sop_prepared sop_prepared;

/* Freed transaction handles kept poisoned before their memory is reused
 * (builds with assertions; txn.h, the handle rule). */
#define SOP_TXN_QUARANTINE 32

/* The L1 node cache (cache.h); its state is private to cache.c. */
typedef struct sop_cache sop_cache;

struct sop_db {
    const sop_vfs *vfs;
    char *path;
    sop_db_options opts;
    sop_comparator *comparators;
    size_t comparator_count;
    sop_file *lock_file;
    uint8_t uuid[16];
    uint64_t txn_limit_ns;

    sop_wal *wal;
    sop_registry reg;

    sop_mutex ckpt_mu;   /* level 1 */
    sop_mutex commit_mu; /* level 2 */
    sop_mutex snap_mu;   /* level 4 */

    _Atomic uint64_t visible_lsn; /* D1 */
    uint64_t applied_lsn;         /* commit_mu */
    uint64_t commit_claims;       /* commit_mu: positions claimed (commit.h; a test hook) */
    _Atomic(sop_store *) stores;  /* D3: every store object */
    /* The catalog indexes (D3). Buckets are a power of two, chains
     * intrusive, so linking never allocates (a failed growth only leaves
     * chains longer). By name: every store object; by id: committed ones. */
    sop_mutex cat_mu;       /* level 8, a leaf: nothing is taken under it */
    sop_store **cat_by_name, **cat_by_id;
    size_t cat_buckets, cat_count;
    sop_store *cat_dropped;       /* dropped, not yet freed (commit_mu) */
    sop_store *count_multi;       /* stores with more than one count version (commit_mu) */
    uint64_t cat_probes;          /* entries examined by lookups (cat_mu; tests) */
    uint64_t next_store_id;       /* commit_mu */
    uint64_t next_txn_id;         /* commit_mu: prepared transaction ids */

    /* snap_mu */
    sop_txn *active;              /* doubly linked list of live transactions */
    size_t active_count;
    sop_txn *txn_quarantine[SOP_TXN_QUARANTINE]; /* recently freed handles (txn.h) */
    size_t txn_quarantine_next;
    uint64_t ckpt_snap;           /* snapshot pinned by a running checkpoint, or SOP_NEVER */

    /* commit_mu */
    sop_hist *hist_head, *hist_tail;
    sop_prepared *prepared;       /* oldest first */
    sop_prepared *prepared_last;  /* its newest entry: appends take O(1) (txn.c) */
    sop_u64map dirty_lids;        /* lids with versions not yet checkpointed */
    sop_u64map trim_lids;         /* lids with more than one version */
    sop_death *deaths;            /* pending blob deaths */
    size_t death_count, death_cap;
    _Atomic uint64_t dirty_bytes;
    _Atomic uint64_t log_since_ckpt; /* bytes appended since the last checkpoint */
    uint64_t ckpt_lsn;            /* newest durable checkpoint */
    uint64_t ckpt_seq;            /* manifest sequence number */
    sop_loc replay_from;          /* position after the checkpoint's last record */
    sop_loc durable_from;         /* the log up to here was synced by that checkpoint */
    int acct_at_cut;              /* recovery: the manifest's accounting is at its cut
                                   * (version 2): no value blob after replay_from in it */
    sop_buf rec_buf;              /* commit record encoding buffer, reused */

    sop_cache *cache;             /* the L1 (cache.h), from sop_cache__open */
    /* Epoch slots (cache.h L2) of the readers that are not transactions,
     * from sop_cache__slot_get at open, freed with the cache. */
    struct sop_cache_slot *ckpt_slot;    /* a running checkpoint (ckpt_mu) */
    struct sop_cache_slot *check_slot;   /* sop_db_check / recovery */
    struct sop_cache_slot *resolve_slot; /* phase 2 of a prepared txn (commit_mu) */

    _Atomic int panicked;
    int readonly;
    int arena_debug;   /* SOP_DEBUG_ARENA, read at open (util.h) */

    /* statistics */
    _Atomic uint64_t st_commits, st_conflicts, st_merges;
    _Atomic uint64_t st_appends; /* operations applied through the append finger (B6) */
};

/* Panic the handle (fsync failure etc.): every later call gets SOP_PANIC. */
int sop_db__panic(sop_db *db, int rc);
int sop_db__check_panic(sop_db *db);
/* Every counter of the current sop_db_stat_info version (api.c copies the
 * caller's version out of it). */
int sop_db__stat(sop_db_stat_info *out, sop_db *db);

/* Read the node record at loc (the cache's loads, cache.h): *payload_out
 * (sop_malloc'ed, the caller frees) gets its payload, checked against loc's
 * length and crc but not validated as a node. Errors of sop_wal__read. */
int sop_db__read_node(sop_db *db, const sop_loc *loc, uint8_t **payload_out, size_t *len_out);

/* Count of store at snapshot. */
uint64_t sop_store__count_at(const sop_store *s, uint64_t snap);
/* Is store visible to a transaction at snap (and owner for pending creates)? */
int sop_store__visible(const sop_store *s, uint64_t snap, const sop_txn *txn);
sop_store *sop_db__store_by_id(sop_db *db, uint64_t id);

/* What a store is made from: sop_store_open's options, a commit record's
 * catalog entry, a manifest's store entry. Lengths are checked by the
 * caller; the bytes are copied. */
typedef struct sop_store_def {
    uint64_t id, root_lid;              /* 0 for a create not yet committed */
    sop_val name, comparator, key_spec; /* comparator len 0: bytewise */
    uint32_t flags, slot_length, max_inline;
    uint64_t next_seq;
    uint64_t created_lsn;   /* SOP_NEVER until its create is published */
    sop_txn *pending_owner; /* the creating txn, or NULL */
} sop_store_def;

/* The one store constructor: a new unlinked store object (no count
 * versions yet). SOP_NOMEM; SOP_INVAL (message names the store) if its
 * comparator is not registered in this open. */
int sop_store__new(sop_store **out, sop_db *db, const sop_store_def *def);
/* The comparator registered under name (len bytes) in this open: 1 and
 * *out set, else 0. The one comparator resolver. */
int sop_db__comparator(sop_keycmp *out, const sop_db *db, const void *name, size_t len);
void sop_store__free(sop_store *s);

/* The catalog (D3). Callers hold commit_mu except where said. */
/* Add a store object to db->stores and the indexes (by id if committed). */
void sop_db__store_link(sop_db *db, sop_store *s);
/* s's create has just committed (created_lsn set): index it by id. */
void sop_db__store_published(sop_db *db, sop_store *s);
/* s's drop has just committed: free it once no snapshot sees it. */
void sop_db__store_dropped(sop_db *db, sop_store *s);
/* s has more than one count version now: trim will look at it. */
void sop_db__count_versions(sop_db *db, sop_store *s);
/* Free the count versions no snapshot >= snap_min needs (sop_db__trim). */
void sop_db__trim_counts(sop_db *db, uint64_t snap_min);
/* Free the dropped stores no snapshot >= snap_min can see. */
void sop_db__reap_stores(sop_db *db, uint64_t snap_min);
/* Free the stores t created whose create never committed (t is ending;
 * takes commit_mu itself, only when there are some). */
void sop_db__discard_pending(sop_db *db, sop_txn *t);
/* The store named name that txn sees (its own pending creates too, not the
 * stores it removed), or NULL. Any thread; takes cat_mu. */
sop_store *sop_db__store_for_txn(sop_db *db, const char *name, sop_txn *t);
/* The hash the name index uses. */
uint64_t sop_db__name_hash(const char *name, size_t len);
/* A committed, not dropped store of this name, or NULL. */
sop_store *sop_db__store_live_named(sop_db *db, const char *name, size_t len);

/* The committer's state - the registry, the validation history, the
 * catalog counters - changes only under commit_mu once open has shared the
 * db (registry.h R1; recovery runs alone before that). Checked in the
 * lock-checking builds; nothing in the others. */
static inline void sop_db__assert_committer(const sop_db *db)
{
    if (db->reg.writer)
        sop_mutex_assert_held(&db->commit_mu);
}

/* Oldest snapshot any live transaction or checkpoint uses (snap_mu taken). */
uint64_t sop_db__snap_min(sop_db *db, int rw_only);

/* Checkpoint (ckpt.c). */
int sop_ckpt__run(sop_db *db);
int sop_ckpt__close(sop_db *db); /* sop_db_close: the last checkpoint, cleaning harder */
int sop_ckpt__load(sop_db *db, int *found_out);
void sop_ckpt__maybe(sop_db *db);

#endif
