/*
 * btree.h - B+tree algorithms over nodes fetched through the registry.
 *
 * Read side: a tree cursor (sop_tcur) walks one store at one snapshot with
 * a root-to-leaf path stack; nodes have no parent or sibling pointers.
 * Write side: sop_apply replays key-level operations onto the newest
 * (head) tree at commit time, copying each node it changes once into a
 * private buffer, splitting and merging as needed, then publishing every
 * changed node as a new version at the commit's LSN.
 *
 *   (B1) Every leaf is at the same depth; depth <= SOP_MAX_DEPTH.
 *   (B2) Items are strictly ordered by (key, seq) under the store's order;
 *        separators bound their subtrees: child i holds [sep(i-1), sep(i)).
 *   (B3) No node holds more than slot_length items (leaf) or children
 *        (branch); only the root may be empty; every branch has >= 2
 *        children (a one-child root collapses into its child's content;
 *        splits and redistributions leave two children on each side).
 *   (B4) The root keeps its lid for the life of the store (root splits
 *        move the old content to fresh lids) - concurrent first inserts
 *        into an empty store then merge instead of racing.
 *   (B5) Apply is a pure function of (head tree, operations, counters):
 *        no clock, randomness or hash-iteration order. Replaying a commit
 *        record during recovery rebuilds exactly the same nodes.
 *   (B6) The append finger is a shortcut, never a different answer: it is
 *        used only for an item above the last item of the tree's last leaf,
 *        which a descent would reach by the last child at every level, and
 *        inserts where that descent would; it is set only by an insert into
 *        that leaf that split nothing, and dropped by every other path.
 */
#ifndef SOP_BTREE_H
#define SOP_BTREE_H

#include "db.h"

#define SOP_OP_PUT 1
#define SOP_OP_DEL 2

typedef struct sop_tcur {
    sop_db *db;
    sop_store *store;
    uint64_t snap;
    int depth; /* levels on the path; 0 = not positioned */
    struct {
        const uint8_t *img; /* valid during one call only (cache.h L3) */
        sop_version *ver;   /* stays valid while the snapshot is registered */
        uint64_t lid;
        uint32_t idx;
    } path[SOP_MAX_DEPTH];
} sop_tcur;

void sop_tcur__init(sop_tcur *c, sop_db *db, sop_store *store, uint64_t snap);
/* Re-read the path's images at the start of a call (they may have been
 * evicted since the previous call: cache.h L3). */
int sop_tcur__refresh(sop_tcur *c);
/* Position at the first item >= (key, seq). SOP_NOTFOUND if none (then
 * the cursor is unpositioned). */
int sop_tcur__seek(sop_tcur *c, const sop_val *key, uint64_t seq);
/* Position at the last item < (key, seq). SOP_NOTFOUND if none. */
int sop_tcur__seek_lt(sop_tcur *c, const sop_val *key, uint64_t seq);
int sop_tcur__first(sop_tcur *c);
int sop_tcur__last(sop_tcur *c);
/* Step; SOP_NOTFOUND at either end leaves the cursor where it was. */
int sop_tcur__next(sop_tcur *c);
int sop_tcur__prev(sop_tcur *c);
static inline int sop_tcur__valid(const sop_tcur *c)
{
    return c->depth > 0;
}
void sop_tcur__item(const sop_tcur *c, sop_val *key, uint64_t *seq, sop_leafval *val);

/* Point lookup: first item with exactly (key, seq) (seq_any: any seq, the
 * first). SOP_NOTFOUND if absent. */
int sop_btree__get(sop_db *db, sop_store *store, uint64_t snap, const sop_val *key, uint64_t seq,
                   int seq_any, sop_val *key_out, uint64_t *seq_out, sop_leafval *val_out);

/* Walk store's tree at snap and fill *out (sop_store_stat). The caller
 * has announced a cache epoch (the images read stay valid meanwhile). */
int sop_btree__stat(sop_store_stat_info *out, sop_db *db, sop_store *store, uint64_t snap);

/* A root-to-leaf path of an apply: the lid at each level and the child
 * taken there. */
typedef struct sop_apath {
    int depth;
    int rightmost; /* every step took the last child */
    struct {
        uint64_t lid;
        uint32_t idx; /* child taken (branch levels) */
    } lv[SOP_MAX_DEPTH];
} sop_apath;

typedef struct sop_apply {
    sop_db *db;
    uint64_t lsn;
    sop_u64map priv; /* lid -> sop_node* (or SOP_APPLY_TOMB) */
    uint64_t *lids;  /* lids in priv, in first-touch order (B5) */
    size_t lid_count, lid_cap;
    sop_death *deaths; /* value blobs this commit made unreachable */
    size_t death_count, death_cap;
    int64_t delta;      /* item-count change of the store being applied */
    int touched_shared; /* a node it changed had a version newer than the txn snapshot */
    uint64_t snap;      /* the committing txn's snapshot (merge statistics) */
    int reserved;       /* sop_apply__reserve turned priv's nodes into versions */
    /* Append finger (B6): the path of the last operation when it inserted
     * into the tree's last leaf, already private, and split nothing. */
    const sop_store *fin_store; /* NULL: no finger */
    sop_apath fin;
    uint64_t fin_uses; /* operations it served, added to db->st_appends */
} sop_apply;

#define SOP_APPLY_TOMB ((void *)1)

void sop_apply__init(sop_apply *a, sop_db *db, uint64_t lsn, uint64_t snap);
void sop_apply__dispose(sop_apply *a);
/* Fresh empty root leaf for a new store. */
int sop_apply__create_root(sop_apply *a, sop_store *s);
/* Tombstone every node of the store (drop); its value blobs die. */
int sop_apply__drop_tree(sop_apply *a, sop_store *s);
/* One operation. PUT inserts or overwrites (*existed_out says which); DEL
 * removes the exact (key, seq) item (*existed_out 0 if it was absent). */
int sop_apply__op(sop_apply *a, sop_store *s, int kind, const sop_val *key, uint64_t seq,
                  const sop_leafval *val, int *existed_out);
/* Publish every private node as a version at a->lsn (commit_mu held).
 * Cannot fail after sop_apply__reserve succeeded. */
int sop_apply__reserve(sop_apply *a);
/* A blob made unreachable by this apply (dies at a->lsn). */
int sop_apply__add_death(sop_apply *a, const sop_loc *loc);
void sop_apply__publish(sop_apply *a);

#endif
