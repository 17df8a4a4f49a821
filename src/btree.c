/*
 * btree.c - B+tree algorithms over registry nodes. Invariants (B1)-(B6) are
 * in btree.h.
 *
 * Sections: reading (tree cursor, point lookup); applying operations
 * (private copies, split, merge/redistribute, root collapse); publishing.
 */
#include "btree.h"
#include "cache.h"

#include <stdlib.h>

/* ======================================================================== */
/* Reading                                                                   */
/* ======================================================================== */

void sop_tcur__init(sop_tcur *c, sop_db *db, sop_store *store, uint64_t snap)
{
    c->db = db;
    c->store = store;
    c->snap = snap;
    c->depth = 0;
}

/* Put the image of lid at the cursor's snapshot at path level `level`. */
static int tcur_node(sop_tcur *c, uint64_t lid, int level)
{
    sop_version *v = sop_registry__lookup(&c->db->reg, lid, c->snap);
    if (!v)
        return SOP_CORRUPT_BKPT("store '%s': node %" PRIu64 " missing at lsn %" PRIu64,
                                c->store->name, lid, c->snap);
    const uint8_t *img;
    int rc = sop_cache__node(&img, c->db->cache, v, lid, &c->store->cmp);
    if (rc)
        return rc;
    if (sop_node__lid(img) != lid)
        return SOP_CORRUPT_BKPT("node %" PRIu64 " holds image of node %" PRIu64, lid,
                                sop_node__lid(img));
    c->path[level].img = img;
    c->path[level].ver = v;
    c->path[level].lid = lid;
    return SOP_OK;
}

int sop_tcur__refresh(sop_tcur *c)
{
    for (int i = 0; i < c->depth; i++) {
        const uint8_t *img = atomic_load_explicit(&c->path[i].ver->img, memory_order_acquire);
        if (!img) {
            int rc =
                sop_cache__node(&img, c->db->cache, c->path[i].ver, c->path[i].lid, &c->store->cmp);
            if (rc) {
                c->depth = 0;
                return rc;
            }
        }
        c->path[i].img = img;
    }
    return SOP_OK;
}

/* Descend from path level `level` (whose img is set and idx chosen) to a
 * leaf, always taking the first (leftmost=1) or last child. */
static int tcur_descend_edge(sop_tcur *c, int level, int leftmost)
{
    for (;;) {
        const uint8_t *img = c->path[level].img;
        if (sop_node__is_leaf(img)) {
            uint32_t n = sop_node__count(img);
            c->path[level].idx = leftmost ? 0 : (n ? n - 1 : 0);
            c->depth = level + 1;
            return SOP_OK;
        }
        uint32_t ci = leftmost ? 0 : sop_node__count(img);
        c->path[level].idx = ci;
        if (level + 1 >= SOP_MAX_DEPTH)
            return SOP_CORRUPT_BKPT("tree deeper than %d", SOP_MAX_DEPTH);
        int rc = tcur_node(c, sop_node__child(img, ci), level + 1);
        if (rc)
            return rc;
        level++;
    }
}

static int leaf_nonempty(const sop_tcur *c)
{
    return sop_node__count(c->path[c->depth - 1].img) > 0;
}

/* Move to the next leaf's first item (dir > 0) or the previous leaf's last
 * (dir < 0). SOP_NOTFOUND if there is none; the path is then unchanged. */
static int tcur_step_leaf(sop_tcur *c, int dir)
{
    int level = c->depth - 2;
    while (level >= 0) {
        const uint8_t *img = c->path[level].img;
        uint32_t idx = c->path[level].idx;
        if (dir > 0 ? idx < sop_node__count(img) : idx > 0)
            break;
        level--;
    }
    if (level < 0)
        return SOP_NOTFOUND;
    /* Commit to the move only now: the path above level is rebuilt. */
    const uint8_t *img = c->path[level].img;
    uint32_t idx = c->path[level].idx + (dir > 0 ? 1 : -1);
    c->path[level].idx = idx;
    int rc = tcur_node(c, sop_node__child(img, idx), level + 1);
    if (rc)
        return rc;
    return tcur_descend_edge(c, level + 1, dir > 0);
}

int sop_tcur__first(sop_tcur *c)
{
    int rc = tcur_node(c, c->store->root_lid, 0);
    if (rc)
        return rc;
    if ((rc = tcur_descend_edge(c, 0, 1)) != SOP_OK)
        return rc;
    while (!leaf_nonempty(c)) {
        if ((rc = tcur_step_leaf(c, 1)) != SOP_OK) {
            c->depth = 0;
            return rc;
        }
    }
    return SOP_OK;
}

int sop_tcur__last(sop_tcur *c)
{
    int rc = tcur_node(c, c->store->root_lid, 0);
    if (rc)
        return rc;
    if ((rc = tcur_descend_edge(c, 0, 0)) != SOP_OK)
        return rc;
    while (!leaf_nonempty(c)) {
        if ((rc = tcur_step_leaf(c, -1)) != SOP_OK) {
            c->depth = 0;
            return rc;
        }
    }
    return SOP_OK;
}

/* Descend by key; leaves path at the leaf with idx = lower_bound. */
static int tcur_descend_key(sop_tcur *c, const sop_val *key, uint64_t seq, int *exact)
{
    const sop_keycmp *cmp = &c->store->cmp;
    int rc = tcur_node(c, c->store->root_lid, 0);
    if (rc)
        return rc;
    for (int level = 0;; level++) {
        const uint8_t *img = c->path[level].img;
        if (sop_node__is_leaf(img)) {
            c->path[level].idx = sop_node__lower_bound(img, cmp, key, seq, exact);
            c->depth = level + 1;
            return SOP_OK;
        }
        uint32_t ci = sop_node__child_index(img, cmp, key, seq);
        c->path[level].idx = ci;
        if (level + 1 >= SOP_MAX_DEPTH)
            return SOP_CORRUPT_BKPT("tree deeper than %d", SOP_MAX_DEPTH);
        if ((rc = tcur_node(c, sop_node__child(img, ci), level + 1)) != SOP_OK)
            return rc;
    }
}

int sop_tcur__seek(sop_tcur *c, const sop_val *key, uint64_t seq)
{
    int exact;
    int rc = tcur_descend_key(c, key, seq, &exact);
    if (rc) {
        c->depth = 0;
        return rc;
    }
    const uint8_t *leaf = c->path[c->depth - 1].img;
    while (c->path[c->depth - 1].idx >= sop_node__count(leaf)) {
        /* Past this leaf's end: the answer is the next leaf's first item. */
        if ((rc = tcur_step_leaf(c, 1)) != SOP_OK) {
            c->depth = 0;
            return rc;
        }
        leaf = c->path[c->depth - 1].img;
    }
    return SOP_OK;
}

int sop_tcur__seek_lt(sop_tcur *c, const sop_val *key, uint64_t seq)
{
    int exact;
    int rc = tcur_descend_key(c, key, seq, &exact);
    if (rc) {
        c->depth = 0;
        return rc;
    }
    if (c->path[c->depth - 1].idx > 0) {
        c->path[c->depth - 1].idx--;
        return SOP_OK;
    }
    do {
        if ((rc = tcur_step_leaf(c, -1)) != SOP_OK) {
            c->depth = 0;
            return rc;
        }
    } while (!leaf_nonempty(c));
    return SOP_OK;
}

/* One step in dir (+1 next, -1 prev); SOP_NOTFOUND at an end leaves the
 * cursor where it was. */
static int tcur_step(sop_tcur *c, int dir)
{
    if (c->depth == 0)
        return SOP_NOTFOUND;
    int leaf = c->depth - 1;
    uint32_t idx = c->path[leaf].idx;
    if (dir > 0 ? idx + 1 < sop_node__count(c->path[leaf].img) : idx > 0) {
        c->path[leaf].idx = dir > 0 ? idx + 1 : idx - 1;
        return SOP_OK;
    }
    sop_tcur save = *c;
    int rc;
    do {
        if ((rc = tcur_step_leaf(c, dir)) != SOP_OK) {
            if (rc == SOP_NOTFOUND)
                *c = save;
            else
                c->depth = 0;
            return rc;
        }
    } while (!leaf_nonempty(c));
    return SOP_OK;
}

int sop_tcur__next(sop_tcur *c)
{
    return tcur_step(c, 1);
}

int sop_tcur__prev(sop_tcur *c)
{
    return tcur_step(c, -1);
}

void sop_tcur__item(const sop_tcur *c, sop_val *key, uint64_t *seq, sop_leafval *val)
{
    const uint8_t *img = c->path[c->depth - 1].img;
    uint32_t idx = c->path[c->depth - 1].idx;
    uint64_t s;
    sop_val k;
    sop_node__key(img, idx, &k, &s);
    if (key)
        *key = k;
    if (seq)
        *seq = s;
    if (val)
        sop_node__leaf_value(img, idx, val);
}

int sop_btree__get(sop_db *db, sop_store *store, uint64_t snap, const sop_val *key, uint64_t seq,
                   int seq_any, sop_val *key_out, uint64_t *seq_out, sop_leafval *val_out)
{
    sop_tcur c;
    sop_tcur__init(&c, db, store, snap);
    int rc = sop_tcur__seek(&c, key, seq_any ? 0 : seq);
    if (rc)
        return rc;
    sop_val k;
    uint64_t s;
    sop_tcur__item(&c, &k, &s, val_out);
    int cmp = sop_keycmp__keys(&store->cmp, &k, key);
    if (cmp != 0 || (!seq_any && s != seq))
        return SOP_NOTFOUND;
    if (key_out)
        *key_out = k;
    if (seq_out)
        *seq_out = s;
    return SOP_OK;
}

/* Count one node into *out; level 0 is the root. */
static void stat_node(sop_store_stat_info *out, const uint8_t *img, int level)
{
    uint32_t n = sop_node__count(img);
    out->node_bytes += sop_node__used_bytes(img);
    if ((uint32_t)level + 1 > out->depth)
        out->depth = (uint32_t)level + 1;
    if (!sop_node__is_leaf(img)) {
        out->branch_nodes++;
        out->branch_children += n + 1u;
        return;
    }
    out->leaf_nodes++;
    out->leaf_items += n;
    for (uint32_t i = 0; i < n; i++) {
        sop_val k;
        uint64_t seq;
        sop_leafval lv;
        sop_node__key(img, i, &k, &seq);
        sop_node__leaf_value(img, i, &lv);
        out->key_bytes += k.len;
        if (lv.is_blob) {
            out->value_blobs++;
            out->value_blob_bytes += lv.value_len;
        } else {
            out->inline_value_bytes += lv.inline_val.len;
        }
    }
}

/* Depth-first walk; the cursor's path doubles as the stack, next[level]
 * is the next child to visit at that level. */
int sop_btree__stat(sop_store_stat_info *out, sop_db *db, sop_store *store, uint64_t snap)
{
    sop_tcur c;
    uint32_t next[SOP_MAX_DEPTH];
    memset(out, 0, sizeof *out);
    out->slot_length = store->slot_length;
    sop_tcur__init(&c, db, store, snap);
    int rc = tcur_node(&c, store->root_lid, 0), level = 0;
    if (rc)
        return rc;
    stat_node(out, c.path[0].img, 0);
    next[0] = 0;
    while (level >= 0) {
        const uint8_t *img = c.path[level].img;
        if (sop_node__is_leaf(img) || next[level] > sop_node__count(img)) {
            level--;
            continue;
        }
        if (level + 1 >= SOP_MAX_DEPTH)
            return SOP_CORRUPT_BKPT("store '%s': tree deeper than %d", store->name, SOP_MAX_DEPTH);
        if ((rc = tcur_node(&c, sop_node__child(img, next[level]++), level + 1)) != SOP_OK)
            return rc;
        level++;
        next[level] = 0;
        stat_node(out, c.path[level].img, level);
    }
    out->leaf_capacity = out->leaf_nodes * store->slot_length;
    out->branch_capacity = out->branch_nodes * store->slot_length;
    return SOP_OK;
}

/* ======================================================================== */
/* Applying operations                                                       */
/* ======================================================================== */

typedef sop_apath apath;

void sop_apply__init(sop_apply *a, sop_db *db, uint64_t lsn, uint64_t snap)
{
    memset(a, 0, sizeof *a);
    a->db = db;
    a->lsn = lsn;
    a->snap = snap;
    sop_u64map_init(&a->priv);
}

static void free_priv(void *p)
{
    if (p && p != SOP_APPLY_TOMB) {
        sop_node__free(p);
        sop_free(p);
    }
}

void sop_apply__dispose(sop_apply *a)
{
    size_t pos = 0;
    void *p;
    if (a->fin_uses)
        atomic_fetch_add_explicit(&a->db->st_appends, a->fin_uses, memory_order_relaxed);
    /* After reserve the map holds versions (owning the images), not nodes. */
    while (sop_u64map_next(NULL, &p, &a->priv, &pos) == SOP_OK) {
        if (a->reserved)
            sop_version__free(p);
        else
            free_priv(p);
    }
    sop_u64map_dispose(&a->priv);
    sop_free(a->lids);
    sop_free(a->deaths);
    memset(a, 0, sizeof *a);
}

static int push_lid(sop_apply *a, uint64_t lid)
{
    if (a->lid_count == a->lid_cap) {
        size_t cap = a->lid_cap ? a->lid_cap * 2 : 64;
        uint64_t *n = sop_realloc(a->lids, cap * sizeof *n);
        if (!n)
            return sop_err(SOP_NOMEM, "apply lid list");
        a->lids = n;
        a->lid_cap = cap;
    }
    a->lids[a->lid_count++] = lid;
    return SOP_OK;
}

static int add_death(sop_apply *a, const sop_loc *loc)
{
    if (a->death_count == a->death_cap) {
        size_t cap = a->death_cap ? a->death_cap * 2 : 16;
        sop_death *n = sop_realloc(a->deaths, cap * sizeof *n);
        if (!n)
            return sop_err(SOP_NOMEM, "apply death list");
        a->deaths = n;
        a->death_cap = cap;
    }
    a->deaths[a->death_count].loc = *loc;
    a->deaths[a->death_count].lsn = a->lsn;
    a->death_count++;
    return SOP_OK;
}

int sop_apply__add_death(sop_apply *a, const sop_loc *loc)
{
    return add_death(a, loc);
}

/* A lid no node has had: next_lid is past every lid ever used (ckpt.c
 * checks the manifest's). Refused if that does not hold, as a defence: a
 * lid of a live node would replace another tree's node, and one this
 * apply already holds would be listed twice in a->lids (reserve would
 * then take a version for a node). */
static int lid_free(sop_apply *a, uint64_t lid)
{
    if (lid == 0 || lid > SOP_MAX_LID)
        return SOP_CORRUPT_BKPT("node id %" PRIu64 " out of range", lid);
    if (sop_registry__head(&a->db->reg, lid) || sop_u64map_get(NULL, &a->priv, lid) == SOP_OK)
        return SOP_CORRUPT_BKPT("node id %" PRIu64 " is already in use", lid);
    return SOP_OK;
}

static int alloc_lid(uint64_t *lid_out, sop_apply *a)
{
    uint64_t lid = a->db->reg.next_lid;
    int rc = lid_free(a, lid);
    if (rc)
        return rc;
    a->db->reg.next_lid = lid + 1;
    *lid_out = lid;
    return SOP_OK;
}

/* The newest image of lid: this commit's private copy, else the head. */
static int apply_img(const uint8_t **img, sop_apply *a, sop_store *s, uint64_t lid)
{
    void *p;
    if (sop_u64map_get(&p, &a->priv, lid) == SOP_OK) {
        if (p == SOP_APPLY_TOMB)
            return SOP_CORRUPT_BKPT("node %" PRIu64 " used after delete", lid);
        *img = ((sop_node *)p)->img;
        return SOP_OK;
    }
    sop_version *v = sop_registry__head(&a->db->reg, lid);
    if (!v || (v->flags & SOP_VER_TOMBSTONE))
        return SOP_CORRUPT_BKPT("store '%s': node %" PRIu64 " missing", s->name, lid);
    int rc = sop_cache__node(img, a->db->cache, v, lid, &s->cmp);
    if (rc == SOP_OK && sop_node__lid(*img) != lid)
        return SOP_CORRUPT_BKPT("node %" PRIu64 " holds image of node %" PRIu64, lid,
                                sop_node__lid(*img));
    return rc;
}

static int put_priv(sop_apply *a, uint64_t lid, sop_node *n)
{
    void *old = NULL;
    int had = sop_u64map_get(NULL, &a->priv, lid) == SOP_OK;
    int rc = sop_u64map_put(&old, &a->priv, lid, n);
    if (rc)
        return rc;
    if (!had && (rc = push_lid(a, lid)) != SOP_OK) {
        sop_u64map_del(NULL, &a->priv, lid);
        return rc;
    }
    if (old && old != n)
        free_priv(old);
    return SOP_OK;
}

/* This commit's private, mutable copy of lid. */
static int make_private(sop_node **out, sop_apply *a, sop_store *s, uint64_t lid)
{
    void *p;
    if (sop_u64map_get(&p, &a->priv, lid) == SOP_OK) {
        if (p == SOP_APPLY_TOMB)
            return SOP_CORRUPT_BKPT("node %" PRIu64 " used after delete", lid);
        *out = p;
        return SOP_OK;
    }
    const uint8_t *img;
    int rc = apply_img(&img, a, s, lid);
    if (rc)
        return rc;
    sop_version *head = sop_registry__head(&a->db->reg, lid);
    if (head && head->lsn > a->snap)
        a->touched_shared = 1;
    sop_node *n = sop_malloc(sizeof *n);
    if (!n)
        return sop_err(SOP_NOMEM, "node copy");
    if ((rc = sop_node__clone(n, img, lid)) != SOP_OK) {
        sop_free(n);
        return rc;
    }
    if ((rc = put_priv(a, lid, n)) != SOP_OK) {
        sop_node__free(n);
        sop_free(n);
        return rc;
    }
    *out = n;
    return SOP_OK;
}

static int new_private(sop_node **out, sop_apply *a, int kind, int dup, uint64_t lid)
{
    sop_node *n = sop_malloc(sizeof *n);
    if (!n)
        return sop_err(SOP_NOMEM, "new node");
    int rc = sop_node__new(n, kind, dup, lid);
    if (rc) {
        sop_free(n);
        return rc;
    }
    if ((rc = put_priv(a, lid, n)) != SOP_OK) {
        sop_node__free(n);
        sop_free(n);
        return rc;
    }
    *out = n;
    return SOP_OK;
}

static int tombstone(sop_apply *a, uint64_t lid)
{
    return put_priv(a, lid, SOP_APPLY_TOMB);
}

static int is_dup(const sop_store *s)
{
    return (s->flags & SOP_STORE_DUPLICATES) != 0;
}

static int apply_descend(sop_apply *a, sop_store *s, const sop_val *key, uint64_t seq, apath *p)
{
    uint64_t lid = s->root_lid;
    p->depth = 0;
    p->rightmost = 1;
    for (;;) {
        const uint8_t *img;
        int rc = apply_img(&img, a, s, lid);
        if (rc)
            return rc;
        if (p->depth >= SOP_MAX_DEPTH)
            return SOP_CORRUPT_BKPT("tree deeper than %d", SOP_MAX_DEPTH);
        p->lv[p->depth].lid = lid;
        if (sop_node__is_leaf(img)) {
            p->lv[p->depth].idx = 0;
            p->depth++;
            return SOP_OK;
        }
        uint32_t ci = sop_node__child_index(img, &s->cmp, key, seq);
        if (ci != sop_node__count(img))
            p->rightmost = 0;
        p->lv[p->depth].idx = ci;
        p->depth++;
        lid = sop_node__child(img, ci);
    }
}

static int overfull(const sop_store *s, const uint8_t *img)
{
    uint32_t n = sop_node__count(img);
    size_t bytes = sop_node__used_bytes(img);
    if (sop_node__is_leaf(img))
        return n > s->slot_length || (bytes > SOP_MAX_NODE_BYTES && n >= 2);
    return n + 1 > s->slot_length || (bytes > SOP_MAX_NODE_BYTES && n >= 3);
}

/* The right node of an append split holds one slot and, in a sequential
 * fill, takes the next ones until it is overfull in turn: give it room for
 * that many slots the size of the one it has, at once, instead of the ~8
 * copies of 1.5x growth (node.h N7) from 1 slot to slot_length (the
 * biggest cost of fillseq: BENCHMARKS.md). Publishing shrinks what is left
 * over when the fill stops early. */
static int reserve_append_room(const sop_store *s, sop_node *right)
{
    uint32_t count = sop_node__count(right->img);
    size_t per = sop_node__slot_bytes(right->img, count - 1);
    /* overfull(): a leaf splits at slot_length + 1 items, a branch at
     * slot_length separators, and either one past SOP_MAX_NODE_BYTES. */
    uint64_t max = sop_node__is_leaf(right->img) ? (uint64_t)s->slot_length + 1 : s->slot_length;
    uint64_t by_bytes = SOP_MAX_NODE_BYTES / per + 2; /* a little over: offsets */
    if (max > by_bytes)
        max = by_bytes;
    if (max <= count)
        return SOP_OK;
    return sop_node__reserve(right, (uint32_t)(max - count), (size_t)(max - count) * per);
}

/* Split overfull nodes from `level` upward. append: the insert that caused
 * it went to the very end of the tree (sequential fill: keep left full). */
static int split_up(sop_apply *a, sop_store *s, apath *p, int level, int append)
{
    uint8_t sep_buf[SOP_MAX_KEY_LEN];
    for (; level >= 0; level--) {
        sop_node *n;
        int rc = make_private(&n, a, s, p->lv[level].lid);
        if (rc)
            return rc;
        if (!overfull(s, n->img))
            return SOP_OK;
        int leaf = sop_node__is_leaf(n->img);
        uint32_t count = sop_node__count(n->img);
        /* Sequential fill keeps the left node full; a branch keeps two
         * children on the right (B3: non-root branches have >= 2). */
        uint32_t at = append ? (leaf ? count - 1 : count - 2) : sop_node__split_point(n->img);
        if (leaf && at == 0)
            at = 1;
        if (!leaf && at + 1 >= count)
            at = count - 2;
        uint64_t right_lid, left_lid;
        if ((rc = alloc_lid(&right_lid, a)) != SOP_OK)
            return rc;
        sop_node *right = sop_malloc(sizeof *right);
        if (!right)
            return sop_err(SOP_NOMEM, "split");
        sop_val sep;
        uint64_t sep_seq;
        rc = sop_node__split(n, right, at, right_lid, &sep, &sep_seq, sep_buf);
        if (rc) {
            sop_free(right);
            return rc;
        }
        if ((rc = put_priv(a, right_lid, right)) != SOP_OK) {
            sop_node__free(right);
            sop_free(right);
            return rc;
        }
        if (append && (rc = reserve_append_room(s, right)) != SOP_OK)
            return rc;
        if (level == 0) {
            /* Root split (B4): the root lid stays; its old content moves. */
            if ((rc = alloc_lid(&left_lid, a)) != SOP_OK)
                return rc;
            sop_node *root;
            sop_node__set_lid(n, left_lid);
            if ((rc = sop_u64map_put(NULL, &a->priv, left_lid, n)) != SOP_OK ||
                (rc = push_lid(a, left_lid)) != SOP_OK)
                return rc;
            /* priv[root] still points at n; replace without freeing n. */
            if ((rc = sop_u64map_put(NULL, &a->priv, s->root_lid, NULL)) != SOP_OK)
                return rc;
            if ((rc = new_private(&root, a, 2, is_dup(s), s->root_lid)) != SOP_OK)
                return rc;
            sop_node__set_child(root, 0, left_lid);
            return sop_node__branch_insert(root, 0, &sep, sep_seq, right_lid);
        }
        sop_node *parent;
        if ((rc = make_private(&parent, a, s, p->lv[level - 1].lid)) != SOP_OK)
            return rc;
        rc = sop_node__branch_insert(parent, p->lv[level - 1].idx, &sep, sep_seq, right_lid);
        if (rc)
            return rc;
    }
    return SOP_OK;
}

static int leaf_value_death(sop_apply *a, const uint8_t *img, uint32_t idx)
{
    sop_leafval old;
    sop_node__leaf_value(img, idx, &old);
    if (!old.is_blob)
        return SOP_OK;
    /* A damaged leaf may name bytes that hold no such blob (a length near
     * 4 GiB, another record's offset): counted dead, they would let a
     * checkpoint delete a segment whose blobs are live. Only a blob that
     * is there dies; a misnamed one stays counted live (leaked space,
     * which sop_db_check reports with the leaf). One header read. */
    int rc = sop_wal__check_header(a->db->wal, &old.loc, SOP_REC_VALUE);
    if (rc == SOP_CORRUPT)
        return SOP_OK;
    return rc ? rc : add_death(a, &old.loc);
}

static uint32_t min_fill(const sop_store *s)
{
    uint32_t m = s->slot_length / 4;
    return m ? m : 1;
}

/* After a delete: merge or redistribute underfull nodes, collapse the root. */
static int rebalance(sop_apply *a, sop_store *s, apath *p, int level)
{
    uint8_t sep_buf[SOP_MAX_KEY_LEN];
    int rc;
    for (; level > 0; level--) {
        sop_node *n;
        if ((rc = make_private(&n, a, s, p->lv[level].lid)) != SOP_OK)
            return rc;
        int leaf = sop_node__is_leaf(n->img);
        uint32_t cnt = sop_node__count(n->img);
        uint32_t units = leaf ? cnt : cnt + 1;
        uint32_t need = leaf ? min_fill(s) : (min_fill(s) > 2 ? min_fill(s) : 2);
        if (units >= need)
            break;
        sop_node *parent;
        if ((rc = make_private(&parent, a, s, p->lv[level - 1].lid)) != SOP_OK)
            return rc;
        uint32_t pidx = p->lv[level - 1].idx;
        uint32_t pcount = sop_node__count(parent->img);
        if (pcount == 0)
            continue; /* only child of a one-child root: collapsed below */
        uint32_t sep_idx = pidx > 0 ? pidx - 1 : 0;
        uint64_t left_lid = sop_node__child(parent->img, sep_idx);
        uint64_t right_lid = sop_node__child(parent->img, sep_idx + 1);
        sop_node *left;
        const uint8_t *right_img;
        if ((rc = make_private(&left, a, s, left_lid)) != SOP_OK ||
            (rc = apply_img(&right_img, a, s, right_lid)) != SOP_OK)
            return rc;
        sop_val sep;
        uint64_t sep_seq;
        sop_node__key(parent->img, sep_idx, &sep, &sep_seq);
        memcpy(sep_buf, sep.data, sep.len);
        sep.data = sep_buf;
        uint32_t lc = sop_node__count(left->img), rcnt = sop_node__count(right_img);
        uint32_t combined = leaf ? lc + rcnt : lc + rcnt + 2;
        size_t bytes = sop_node__used_bytes(left->img) + sop_node__used_bytes(right_img);
        if ((rc = sop_node__merge(left, right_img, &sep, sep_seq)) != SOP_OK)
            return rc;
        if (combined <= s->slot_length && bytes <= SOP_MAX_NODE_BYTES) {
            if ((rc = tombstone(a, right_lid)) != SOP_OK)
                return rc;
            sop_node__remove(parent, sep_idx);
            continue; /* the parent lost a child: check it too */
        }
        /* Too big to merge: redistribute (merge, then split in the middle,
         * the right half keeping right_lid). The parent's size is unchanged. */
        sop_node *right = sop_malloc(sizeof *right);
        if (!right)
            return sop_err(SOP_NOMEM, "redistribute");
        sop_val nsep;
        uint64_t nsep_seq;
        uint32_t at = sop_node__split_point(left->img);
        uint32_t lcount = sop_node__count(left->img);
        if (!leaf && at + 1 >= lcount)
            at = lcount - 2; /* both halves keep >= 2 children (B3) */
        if ((rc = sop_node__split(left, right, at, right_lid, &nsep, &nsep_seq, sep_buf)) !=
            SOP_OK) {
            sop_free(right);
            return rc;
        }
        if ((rc = put_priv(a, right_lid, right)) != SOP_OK) {
            sop_node__free(right);
            sop_free(right);
            return rc;
        }
        sop_node__remove(parent, sep_idx);
        return sop_node__branch_insert(parent, sep_idx, &nsep, nsep_seq, right_lid);
    }
    if (level > 0)
        return SOP_OK;
    /* Root collapse (B3), keeping the root lid (B4). */
    for (;;) {
        const uint8_t *rimg;
        if ((rc = apply_img(&rimg, a, s, s->root_lid)) != SOP_OK)
            return rc;
        if (sop_node__is_leaf(rimg) || sop_node__count(rimg) > 0)
            return SOP_OK;
        uint64_t child = sop_node__child(rimg, 0);
        const uint8_t *cimg;
        if ((rc = apply_img(&cimg, a, s, child)) != SOP_OK)
            return rc;
        sop_node *nroot = sop_malloc(sizeof *nroot);
        if (!nroot)
            return sop_err(SOP_NOMEM, "root collapse");
        if ((rc = sop_node__clone(nroot, cimg, s->root_lid)) != SOP_OK) {
            sop_free(nroot);
            return rc;
        }
        if ((rc = put_priv(a, s->root_lid, nroot)) != SOP_OK) {
            sop_node__free(nroot);
            sop_free(nroot);
            return rc;
        }
        if ((rc = tombstone(a, child)) != SOP_OK)
            return rc;
    }
}

/* (B6) An item above every item of the tree belongs at the end of its last
 * leaf, whatever the separators above it say. When the previous operation
 * inserted into that leaf (private, so nobody else changed it) and split
 * nothing, its path is still the path to the last leaf, and an operation on
 * an item above the leaf's last one needs no descent and no search: a
 * sequential fill then costs one compare per put instead of a root-to-leaf
 * walk. Returns the private last leaf, or NULL when the finger does not
 * apply (the caller descends). */
static sop_node *finger_leaf(sop_apply *a, const sop_store *s, const sop_val *key, uint64_t seq)
{
    if (a->fin_store != s)
        return NULL;
    void *n;
    uint64_t lid = a->fin.lv[a->fin.depth - 1].lid;
    if (sop_u64map_get(&n, &a->priv, lid) != SOP_OK || n == SOP_APPLY_TOMB)
        return NULL;
    const uint8_t *img = ((sop_node *)n)->img;
    uint32_t count = sop_node__count(img);
    if (count == 0)
        return NULL;
    sop_val last;
    uint64_t last_seq;
    sop_node__key(img, count - 1, &last, &last_seq);
    return sop_keycmp__items(&s->cmp, &last, last_seq, key, seq) < 0 ? n : NULL;
}

/* Insert at the end of the last leaf found by finger_leaf. */
static int finger_insert(sop_apply *a, sop_store *s, sop_node *leaf, const sop_val *key,
                         uint64_t seq, const sop_leafval *val)
{
    assert(a->fin.rightmost && a->fin.depth > 0);
    int rc = sop_node__leaf_insert(leaf, sop_node__count(leaf->img), key, seq, val);
    if (rc != SOP_OK)
        return rc;
    a->delta++;
    if (!overfull(s, leaf->img))
        return SOP_OK;
    apath p = a->fin;
    a->fin_store = NULL; /* the split changes the path */
    return split_up(a, s, &p, p.depth - 1, 1);
}

int sop_apply__op(sop_apply *a, sop_store *s, int kind, const sop_val *key, uint64_t seq,
                  const sop_leafval *val, int *existed_out)
{
    apath p;
    const uint8_t *img;
    int exact, rc;
    *existed_out = 0;
    sop_node *fin_leaf = finger_leaf(a, s, key, seq);
    if (fin_leaf) {
        a->fin_uses++;
        return kind == SOP_OP_DEL ? SOP_OK : finger_insert(a, s, fin_leaf, key, seq, val);
    }
    a->fin_store = NULL;
    if ((rc = apply_descend(a, s, key, seq, &p)) != SOP_OK)
        return rc;
    uint64_t leaf_lid = p.lv[p.depth - 1].lid;
    if ((rc = apply_img(&img, a, s, leaf_lid)) != SOP_OK)
        return rc;
    uint32_t idx = sop_node__lower_bound(img, &s->cmp, key, seq, &exact);
    if (kind == SOP_OP_DEL && !exact)
        return SOP_OK;
    sop_node *leaf;
    if ((rc = make_private(&leaf, a, s, leaf_lid)) != SOP_OK)
        return rc;
    if (exact) {
        *existed_out = 1;
        if ((rc = leaf_value_death(a, leaf->img, idx)) != SOP_OK)
            return rc;
        if (kind == SOP_OP_PUT)
            return sop_node__leaf_set_value(leaf, idx, val);
        sop_node__remove(leaf, idx);
        a->delta--;
        return rebalance(a, s, &p, p.depth - 1);
    }
    if ((rc = sop_node__leaf_insert(leaf, idx, key, seq, val)) != SOP_OK)
        return rc;
    a->delta++;
    int append = p.rightmost && idx + 1 == sop_node__count(leaf->img);
    if (!overfull(s, leaf->img)) {
        if (p.rightmost) { /* the last leaf, private now (B6) */
            a->fin = p;
            a->fin_store = s;
        }
        return SOP_OK;
    }
    return split_up(a, s, &p, p.depth - 1, append);
}

int sop_apply__create_root(sop_apply *a, sop_store *s)
{
    sop_node *n;
    a->fin_store = NULL;
    /* The root lid comes from the record (reserved when it was written):
     * it must still be unused, or the new store would take over a node. */
    int rc = lid_free(a, s->root_lid);
    return rc ? rc : new_private(&n, a, 1, is_dup(s), s->root_lid);
}

int sop_apply__drop_tree(sop_apply *a, sop_store *s)
{
    uint64_t *stack = NULL;
    size_t n = 0, cap = 0;
    int rc = SOP_OK;
    uint64_t lid = s->root_lid;
    a->fin_store = NULL;
    for (;;) {
        const uint8_t *img;
        SOP_TRY(apply_img(&img, a, s, lid));
        uint32_t cnt = sop_node__count(img);
        if (sop_node__is_leaf(img)) {
            for (uint32_t i = 0; i < cnt; i++)
                SOP_TRY(leaf_value_death(a, img, i));
        } else {
            if (n + cnt + 1 > cap) {
                size_t ncap = (n + cnt + 1) * 2;
                uint64_t *ns = sop_realloc(stack, ncap * sizeof *ns);
                if (!ns) {
                    rc = sop_err(SOP_NOMEM, "drop stack");
                    goto out;
                }
                stack = ns;
                cap = ncap;
            }
            for (uint32_t i = 0; i <= cnt; i++)
                stack[n++] = sop_node__child(img, i);
        }
        SOP_TRY(tombstone(a, lid));
        if (n == 0)
            break;
        lid = stack[--n];
    }
out:
    sop_free(stack);
    return rc;
}

/* ======================================================================== */
/* Publishing                                                                */
/* ======================================================================== */

static int grow_deaths(sop_db *db, size_t extra)
{
    if (db->death_count + extra <= db->death_cap)
        return SOP_OK;
    size_t cap = (db->death_count + extra) * 2;
    sop_death *n = sop_realloc(db->deaths, cap * sizeof *n);
    if (!n)
        return sop_err(SOP_NOMEM, "death list");
    db->deaths = n;
    db->death_cap = cap;
    return SOP_OK;
}

int sop_apply__reserve(sop_apply *a)
{
    sop_db *db = a->db;
    int rc;
    for (size_t i = 0; i < a->lid_count; i++)
        if ((rc = sop_registry__ensure(&db->reg, a->lids[i])) != SOP_OK)
            return rc;
    if ((rc = grow_deaths(db, a->death_count + a->lid_count)) != SOP_OK)
        return rc;
    if ((rc = sop_u64map_reserve(&db->dirty_lids,
                                 sop_u64map_count(&db->dirty_lids) + a->lid_count)) != SOP_OK ||
        (rc = sop_u64map_reserve(&db->trim_lids,
                                 sop_u64map_count(&db->trim_lids) + a->lid_count)) != SOP_OK)
        return rc;
    /* Pre-allocate the versions (all or none), then move every private
     * node into its version: publishing then cannot fail. */
    sop_version **vs = sop_calloc(a->lid_count ? a->lid_count : 1, sizeof *vs);
    if (!vs)
        return sop_err(SOP_NOMEM, "versions");
    for (size_t i = 0; i < a->lid_count; i++) {
        if (!(vs[i] = sop_version__new(a->lsn, NULL, 0, 0))) {
            for (size_t j = 0; j < i; j++)
                sop_version__free(vs[j]);
            sop_free(vs);
            return sop_err(SOP_NOMEM, "version");
        }
    }
    for (size_t i = 0; i < a->lid_count; i++) {
        void *p;
        sop_u64map_get(&p, &a->priv, a->lids[i]);
        sop_version *v = vs[i];
        if (p == NULL) {
            sop_version__free(v);
            continue;
        }
        if (p == SOP_APPLY_TOMB) {
            v->flags = SOP_VER_TOMBSTONE;
        } else {
            sop_node *n = p;
            sop_node__seal(n); /* search hints for readers (node.h N9) */
            sop_node__shrink(n);
            atomic_store_explicit(&v->img, n->img, memory_order_relaxed);
            atomic_store_explicit(&v->img_len, sop_node__image_len(n->img), memory_order_relaxed);
            n->img = NULL; /* owned by the version now */
            n->alloc_len = 0;
            sop_free(n);
        }
        sop_u64map_put(NULL, &a->priv, a->lids[i], v);
    }
    sop_free(vs);
    a->reserved = 1;
    return SOP_OK;
}

void sop_apply__publish(sop_apply *a)
{
    sop_db *db = a->db;
    uint64_t dirty = 0, bytes = 0;
    for (size_t i = 0; i < a->lid_count; i++) {
        uint64_t lid = a->lids[i];
        void *p;
        sop_u64map_get(&p, &a->priv, lid);
        if (!p)
            continue;
        sop_version *v = p;
        sop_version *prev = sop_registry__head(&db->reg, lid);
        if (!prev && (v->flags & SOP_VER_TOMBSTONE)) {
            sop_version__free(v); /* created and deleted in this commit */
            continue;
        }
        if (prev && prev->loc.seg) {
            db->deaths[db->death_count].loc = prev->loc;
            db->deaths[db->death_count].lsn = a->lsn;
            db->death_count++;
        }
        sop_registry__publish(&db->reg, lid, v); /* ensured: cannot fail */
        sop_u64map_put(NULL, &db->dirty_lids, lid, NULL);
        if (prev)
            sop_u64map_put(NULL, &db->trim_lids, lid, NULL);
        size_t len = atomic_load_explicit(&v->img_len, memory_order_relaxed);
        dirty += len;
        bytes += len;
    }
    for (size_t i = 0; i < a->death_count; i++)
        db->deaths[db->death_count++] = a->deaths[i];
    atomic_fetch_add_explicit(&db->dirty_bytes, dirty, memory_order_relaxed);
    sop_cache__charge(db->cache, bytes);
    if (a->touched_shared)
        atomic_fetch_add_explicit(&db->st_merges, 1, memory_order_relaxed);
    /* Everything moved into the registry. */
    sop_u64map_clear(&a->priv);
    a->lid_count = 0;
    a->death_count = 0;
}
