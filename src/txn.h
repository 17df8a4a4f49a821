/*
 * txn.h - transactions: write set, read set, validation, commit records,
 * two-phase commit, and the merged (snapshot + own writes) cursor.
 *
 * State machine (sop_txn.state):
 *
 *   ACTIVE --prepare--> PREPARED --commit--> (freed)
 *     |                    |
 *     +--commit/abort--> (freed)      any error that may have left partial
 *     +--error--> FAILED --abort--> (freed)   effects moves ACTIVE to FAILED
 *
 *   (T1) Writes are buffered as key-level operations (the write set); no
 *        node is touched before commit, so an abort needs no undo.
 *   (T2) A read-write transaction records every key it read (found or not)
 *        and every key range its cursors covered. Commit fails with
 *        SOP_CONFLICT if any commit after its snapshot wrote such a key or a
 *        key it writes (first committer wins): serializable. A PREPARE
 *        counts as such a commit from its lsn on (its writes enter the
 *        history then, even if it is rolled back later), and so does its
 *        COMMIT_PREPARED: a transaction that began between the two and
 *        touches its keys gets SOP_BUSY, then SOP_CONFLICT.
 *   (T2a) SOP_CONFLICT returns only once the commit it lost to is visible
 *        (durable), so a retry begun afterwards cannot lose to it again.
 *   (T3) The commit record carries the snapshot, the catalog changes, the
 *        operations with final duplicate sequence numbers, the count deltas
 *        and the read set, so it can be validated and replayed without the
 *        writer (DESIGN D2, D6). Replay uses the same apply code (B5).
 *
 * Commit record payload (SOP_REC_TXN): txnrec.h, its one codec.
 */
#ifndef SOP_TXN_H
#define SOP_TXN_H

#include "btree.h"
#include "txnrec.h"

#define SOP_TXN_ACTIVE   1
#define SOP_TXN_PREPARED 2
#define SOP_TXN_FAILED   3

#define SOP_REC_COMMIT          SOP_TXNREC_COMMIT
#define SOP_REC_PREPARE         SOP_TXNREC_PREPARE
#define SOP_REC_COMMIT_PREPARED SOP_TXNREC_COMMIT_PREPARED
#define SOP_REC_ABORT_PREPARED  SOP_TXNREC_ABORT_PREPARED
_Static_assert(SOP_TXNREC_PUT == SOP_OP_PUT && SOP_TXNREC_DEL == SOP_OP_DEL,
               "the record's operation kinds are btree.h's");

#define SOP_WS_MAX_HEIGHT 20
#define SOP_WS_LIST_MAX   8 /* write sets searched in the list before ws_index */
#define SOP_PROVISIONAL_SEQ (1ull << 63)

typedef struct sop_ws_item {
    sop_val key;
    uint64_t seq;
    uint8_t op;       /* SOP_OP_PUT / SOP_OP_DEL */
    uint8_t height;
    sop_leafval val;  /* PUT: inline bytes in the txn arena, or a blob */
    struct sop_ws_item *prev;
    struct sop_ws_item *next[];
} sop_ws_item;

/* The write set of one store. */
typedef struct sop_ws {
    struct sop_ws *next;
    sop_store *store;
    sop_ws_item *head; /* sentinel with SOP_WS_MAX_HEIGHT links */
    sop_ws_item *last[SOP_WS_MAX_HEIGHT]; /* last item linked at each level */
    int height;        /* levels in use: searches start at height - 1 */
    size_t item_count;
    int created;       /* this txn created the store */
    int dropped;       /* this txn removed the store */
} sop_ws;

typedef struct sop_read {
    sop_store *store;
    int is_range;
    int lo_open, hi_open; /* range: unbounded below / above */
    sop_val lo, hi;       /* point: lo */
} sop_read;

struct sop_prepared {
    struct sop_prepared *next;
    uint64_t id;
    uint64_t lsn;
    uint8_t *body;   /* the PREPARE record's payload (owned) */
    size_t body_len;
    sop_arena arena; /* decoded keys below point into body */
    size_t key_count;
    struct sop_pkey {
        uint64_t store_id;
        int is_range, lo_open, hi_open, is_write;
        sop_val lo, hi;
        int cat_op; /* catalog entries: 1 create, 2 drop (else 0) */
    } *keys;
    sop_prepared_info info;
    /* Stores its body creates: the highest store id and root lid, 0 if
     * none. Prepare reserved them (next_store_id / next_lid are past them);
     * replaying the PREPARE record reserves them again (add_prepared), and a
     * manifest whose counters are not past them is refused (ckpt.c). */
    uint64_t create_max_id, create_max_lid;
};

struct sop_txn {
    sop_db *db;
    struct sop_txn *prev_active, *next_active; /* db->active (snap_mu) */
    uint32_t magic;       /* SOP_TXN_LIVE until freed, then SOP_TXN_DEAD */
    unsigned flags;
    int state;
    uint64_t snap;
    uint64_t deadline_ns;
    uint64_t id;          /* prepared id */
    sop_arena arena;
    sop_ws *ws;
    size_t ws_count;
    sop_u64map ws_index;  /* store -> its write set, once ws_count > SOP_WS_LIST_MAX */
    uint64_t ws_probes;   /* write sets examined by sop_txn__ws (tests) */
    sop_read *reads;
    size_t read_count, read_cap;
    uint64_t next_prov_seq;
    uint64_t rng;
    int blobs_released;   /* its value blobs were handed to a commit/prepare */
    struct sop_cache_slot *slot; /* its announced epoch (cache.h L2), from begin to free */
    struct sop_cursor *cursors; /* open cursors (invalidated at end) */
    uint8_t *value_buf;   /* separate-blob values read by sop_get */
    size_t value_buf_cap;
};

struct sop_cursor {
    sop_txn *txn;
    sop_store *store;
    struct sop_cursor *next_in_txn, *prev_in_txn;
    sop_tcur tc;       /* snapshot tree */
    sop_ws_item *wi;   /* write-set position (NULL = none) */
    int positioned;
    int dir;           /* +1 after forward moves, -1 after backward */
    /* the current merged item */
    sop_val key;
    uint64_t seq;
    sop_leafval val;
    uint8_t *keybuf;   /* copy of the current key (stable across calls: cache.h L3) */
    size_t keybuf_cap;
    void *ext;         /* read-set coverage state (cursor.c) */
    uint8_t *value_buf;
    size_t value_buf_cap;
    /* read-set range being covered */
    int range_open;
    int range_lo_open;
    sop_val range_lo;
    /* bounds (sop_cursor_set_range): keys point into bound_buf */
    int has_lo, has_hi, lo_excl, hi_excl;
    sop_val lo, hi;
    uint8_t *bound_buf;
};
/* Move t along the state machine above; the edges it does not have are
 * assertion failures: nothing returns to ACTIVE, only an ACTIVE
 * transaction is prepared, and FAILED is reachable from any state. */
static inline void sop_txn__set_state(sop_txn *t, int to)
{
    assert(to == SOP_TXN_PREPARED || to == SOP_TXN_FAILED);
    assert(to != SOP_TXN_PREPARED || t->state == SOP_TXN_ACTIVE);
    t->state = to;
}

/* Set the cursor's bounds (NULL = unbounded; flags SOP_RANGE_*) and
 * unposition it. Keys already checked. */
int sop_cursor__set_range(sop_cursor *c, const sop_val *lo, const sop_val *hi, unsigned flags);

/* Handle rule (sop.h): sop_txn_commit (whatever it returns) and
 * sop_txn_abort end the handle; the pointer is dangling afterwards. In
 * builds with assertions (no NDEBUG) every entry point checks the magic
 * word and a dead or foreign handle stops the program with a message
 * (sop_txn__misuse), instead of freeing twice or committing whatever
 * transaction reused the memory: sop_txn__free keeps the last
 * SOP_TXN_QUARANTINE freed handles, poisoned, before giving their memory
 * back (db->txn_quarantine), so a second commit or abort shortly after
 * the first is always caught. */
#define SOP_TXN_LIVE 0x4c495645u /* "LIVE" */
#define SOP_TXN_DEAD 0x44454144u /* "DEAD" */
_Noreturn void sop_txn__misuse(const sop_txn *txn, const char *fn);
#ifdef NDEBUG
#define SOP_TXN_CHECK(txn, fn) ((void)0)
#else
#define SOP_TXN_CHECK(txn, fn)                                                                     \
    (SOP_LIKELY((txn)->magic == SOP_TXN_LIVE) ? (void)0 : sop_txn__misuse((txn), (fn)))
#endif

/* Transaction internals used by api.c */
int sop_txn__begin(sop_txn **out, sop_db *db, unsigned flags);
void sop_txn__free(sop_txn *txn);
int sop_txn__commit(sop_txn *txn);
int sop_txn__prepare(sop_txn *txn, const sop_val *xid);
int sop_txn__check_usable(sop_txn *txn, int for_write);
int sop_txn__fail(sop_txn *txn, int rc);

sop_ws *sop_txn__ws(sop_txn *txn, sop_store *s, int create);
int sop_txn__ws_put(sop_txn *txn, sop_store *s, int op, const sop_val *key, uint64_t seq,
                    const sop_val *value);
sop_ws_item *sop_ws__find(sop_ws *ws, const sop_val *key, uint64_t seq, int *exact);
/* Empty the write set's list (a store created and removed in one txn). */
void sop_ws__clear(sop_ws *ws);
int sop_txn__read_point(sop_txn *txn, sop_store *s, const sop_val *key);
int sop_txn__read_range(sop_txn *txn, sop_store *s, int lo_open, const sop_val *lo, int hi_open,
                        const sop_val *hi);
int sop_txn__value(sop_val *out, sop_txn *txn, uint8_t **buf, size_t *cap,
                   const sop_leafval *v);

/* Merged cursor (cursor.c) */
int sop_cursor__move(sop_cursor *c, sop_cursor_op op, const sop_val *key);
void sop_cursor__invalidate(sop_cursor *c);
/* Read-set coverage state: allocate at open, free at close, and flush the
 * range covered so far into the txn's read set (reposition, close, commit). */
int sop_cursor__init_ext(sop_cursor *c);
void sop_cursor__free_ext(sop_cursor *c);
int sop_cursor__flush_reads(sop_cursor *c);

/* Replay and resolution (txn.c) */
int sop_txn__replay(sop_db *db, uint64_t lsn, const uint8_t *payload, size_t len);
int sop_txn__resolve_prepared(sop_db *db, uint64_t id, int commit);
void sop_prepared__free(sop_prepared *p);
/* Append p to db->prepared (newest last) in O(1) (commit_mu, or open). */
void sop_prepared__append(sop_db *db, sop_prepared *p);
int sop_prepared__decode(sop_prepared *p);
/* Raise next_store_id / next_lid past the stores p's body creates (ids
 * reserved when it was prepared). SOP_CORRUPT if they are out of range. */
int sop_prepared__reserve_ids(sop_db *db, const sop_prepared *p);
void sop_db__trim(sop_db *db);
/* Call fn for every value-blob location a COMMIT/PREPARE body (from the xid
 * field on) references. SOP_CORRUPT on malformed bytes. */
int sop_txn__body_blobs(const uint8_t *body, size_t len, void (*fn)(const sop_loc *, void *),
                        void *ctx);
/* The same walk, with the value length each blob put declares. */
int sop_txn__body_values(const uint8_t *body, size_t len,
                         void (*fn)(const sop_loc *, uint32_t value_len, void *), void *ctx);

#endif
