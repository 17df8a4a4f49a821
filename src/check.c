/*
 * check.c - the integrity checker (sop_db_check).
 *
 * It inspects one snapshot S, the newest commit when it starts, the way a
 * read-only transaction does: it registers S among the active snapshots
 * (so trimming keeps the versions it reads, R3, and no segment it may read
 * is reclaimed, C3) and walks without the commit lock, so writers commit
 * while it runs (their commits come after S and are not looked at). What
 * it needs of the head state at S -- the segment accounting, pending
 * deaths, prepared transactions, the log tail -- it copies in one short
 * hold of commit_mu at the start. It holds ckpt_mu throughout: a
 * checkpoint gives versions their locations and settles deaths, which
 * would move the accounting away from the copy it compares with; a
 * commit's checkpoint is a trylock (sop_ckpt__maybe) and is skipped, an
 * explicit one waits. Callbacks run with no other lock held (sop.h says
 * which calls they may make).
 *
 * Memory stays within the cache budget plus a small constant (issue 10,
 * defect 11): nodes are fetched through the cache like any reader's, and
 * the epoch is announced again before each node, so images evicted behind
 * the walk are freed (cache.h L1, L2); what the walk keeps across nodes
 * are private copies of the branch images on the current path (at most
 * SOP_MAX_DEPTH). The set of reached lids is a bitmap over [0, next_lid),
 * one bit per lid, against the registry's 8 bytes per lid of radix page.
 *
 * What it verifies (each failure is one finding, the run goes on):
 *
 *   trees     every node of every store: registry entry present, image
 *             valid (bounds, strict key order), its own lid, the store's
 *             dup flag, keys inside the separators above it, leaves at one
 *             depth, no empty non-root node, at most slot_length items or
 *             children; the store's count equals the traversal.
 *   blobs     every node with an on-disk copy: the record's checksum, and
 *             the bytes equal the in-memory image; every value blob, of the
 *             trees and of prepared transactions' bodies (which commit
 *             applies as they stand): the checksum and its length. A
 *             location is checked against its segment before it sizes the
 *             read buffer.
 *   walk      each node is visited once: a lid reached a second time (two
 *             parents, or a cycle through a misdirected registry entry) and
 *             a node holding another node's image are findings, and the
 *             walk does not descend into them (it terminates on any input).
 *   registry  every live lid is reachable from a store (none leaked).
 *   space     per segment, the accounting's live bytes equal the bytes of
 *             the blobs something references (trees, pending deaths not yet
 *             checkpointed, prepared transactions, running transactions).
 *   log       every record of every segment kept is valid (checksum,
 *             header), those before the checkpoint's replay position too;
 *             the records after it have consecutive LSNs up to the newest
 *             commit; the newest manifest's checksum.
 *
 * A finding is something wrong with the database (SOP_CORRUPT, a missing
 * file or blob). A failure of the checker itself -- out of memory, an I/O
 * error -- is not: it stops the run and sop_db_check returns that code, so
 * a caller never mistakes "could not look" for "found damage". The first
 * such failure is kept in chk.err (see env_failed).
 */
#include "blob.h"
#include "cache.h"
#include "txn.h"

#include <stdarg.h>
#include <stdio.h>

/* A segment's accounting at S (copied under commit_mu and seg_mu). */
typedef struct seg_acct {
    sop_seg *seg; /* stays allocated: segments are reclaimed only by checkpoints */
    uint64_t id, size, blob_bytes, dead_bytes, inflight_bytes;
} seg_acct;

/* A value blob of a prepared transaction at S. */
typedef struct prep_val {
    uint64_t txn_id;
    sop_loc loc;
    uint32_t value_len;
} prep_val;

/* A prepared body that does not decode. */
typedef struct bad_body {
    uint64_t txn_id;
    char msg[200];
} bad_body;

typedef struct chk {
    sop_db *db;
    sop_check_fn on_finding;
    sop_check_progress_fn progress;
    void *ctx;
    uint64_t findings;
    uint64_t done, total;
    uint8_t *reach; /* bitmap of reached lids, [0, reach_lids) */
    uint64_t reach_lids;
    sop_u64map live; /* segment id -> referenced bytes (as uintptr) */
    uint8_t *buf;
    size_t buf_cap;
    uint64_t snap; /* S */
    sop_txn *pin;  /* registers S as an active snapshot */
    /* head state at S */
    seg_acct *segs;
    size_t seg_count;
    prep_val *pvals;
    size_t pval_count, pval_cap;
    bad_body *bad_bodies; /* reported once commit_mu is released */
    size_t bad_body_count;
    uint64_t ckpt_lsn, ckpt_seq;
    sop_loc replay_from;
    int err; /* first failure of the checker itself (SOP_NOMEM, SOP_IOERR...) */
} chk;

/* Is rc a verdict on the data (a finding) rather than a failure to look? */
static int is_damage(int rc)
{
    return rc == SOP_CORRUPT || rc == SOP_NOTFOUND || rc == SOP_VERSION;
}

/* Record a failure of the checker itself; returns rc. */
static int env_failed(chk *c, int rc)
{
    if (!c->err)
        c->err = rc;
    return rc;
}

static void finding(chk *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void finding(chk *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->findings++;
    if (c->on_finding)
        c->on_finding(msg, c->ctx);
}

static void tick(chk *c)
{
    c->done++;
    if (c->progress && (c->done & 255) == 0)
        c->progress(c->done, c->total, c->ctx);
}

static int add_live(chk *c, const sop_loc *loc)
{
    void *v = NULL;
    sop_u64map_get(&v, &c->live, loc->seg);
    int rc = sop_u64map_put(NULL, &c->live, loc->seg, (void *)((uintptr_t)v + loc->len));
    return rc ? env_failed(c, rc) : SOP_OK;
}

static int ensure_buf(chk *c, size_t n)
{
    if (n <= c->buf_cap)
        return SOP_OK;
    uint8_t *b = sop_realloc(c->buf, n);
    if (!b)
        return sop_err(SOP_NOMEM, "check buffer");
    c->buf = b;
    c->buf_cap = n;
    return SOP_OK;
}

static int key_cmp(const sop_store *s, const sop_val *a, uint64_t as, const sop_val *b, uint64_t bs)
{
    return sop_keycmp__items(&s->cmp, a, as, b, bs);
}

/* On-disk copy of a node: checksum, and same bytes as the image. */
static int check_node_blob(chk *c, uint64_t lid, const sop_version *v, const uint8_t *img)
{
    int rc = sop_wal__read_buf(c->db->wal, &v->loc, SOP_REC_NODE, &c->buf, &c->buf_cap);
    if (rc != SOP_OK) {
        if (!is_damage(rc))
            return env_failed(c, rc);
        finding(c, "node %" PRIu64 ": blob at %" PRIu64 ":%" PRIu64 " unreadable: %s", lid,
                v->loc.seg, v->loc.off, sop_errmsg());
        return SOP_OK;
    }
    size_t len = sop_node__used_bytes(img), got;
    uint8_t *tmp = sop_malloc(len);
    if (!tmp)
        return sop_err(SOP_NOMEM, "check");
    if (sop_node__serialize(img, tmp, len, &got) != SOP_OK || got != sop_get_le32(c->buf + 8) ||
        memcmp(tmp, c->buf + SOP_REC_HDR_LEN, got) != 0)
        finding(c, "node %" PRIu64 ": blob at %" PRIu64 ":%" PRIu64 " differs from the node", lid,
                v->loc.seg, v->loc.off);
    sop_free(tmp);
    return add_live(c, &v->loc);
}

/* A value blob (of a leaf, or of a prepared body): a VALUE record with the
 * location's checksum and value_len bytes; counted as referenced if count
 * (a prepared body's were counted when the snapshot was taken). A damaged
 * one is a finding (what names it); SOP_OK unless the checker itself
 * failed. */
static int check_value_blob(chk *c, const char *what, const sop_loc *loc, uint32_t value_len,
                            int count)
{
    sop_val whole;
    int rc = sop_blob__read(&whole, c->db->wal, loc, value_len, 0, value_len, &c->buf, &c->buf_cap);
    if (rc != SOP_OK) {
        if (!is_damage(rc))
            return env_failed(c, rc);
        finding(c, "%s: value blob at %" PRIu64 ":%" PRIu64 ": %s", what, loc->seg, loc->off,
                sop_errmsg());
    }
    if (c->buf_cap > (1u << 20)) { /* one large value: do not keep its buffer */
        sop_free(c->buf);
        c->buf = NULL;
        c->buf_cap = 0;
    }
    return count ? add_live(c, loc) : SOP_OK;
}

/* Has the walk reached lid before? Marks it. -1: lid is past the
 * registry's allocation counter at S (no commit up to S made it). */
static int reached(chk *c, uint64_t lid)
{
    if (lid >= c->reach_lids)
        return -1;
    uint8_t bit = (uint8_t)(1u << (lid & 7));
    int was = (c->reach[lid >> 3] & bit) != 0;
    c->reach[lid >> 3] |= bit;
    return was;
}

/* One branch on the walk's path: a private copy of its image, so the
 * bounds of its children stay valid while the cache frees the original. */
typedef struct level {
    uint8_t *img;
    uint64_t lid;
    uint32_t next, cnt; /* next child to visit, children - 1 */
    int has_lo, has_hi;
    sop_val lo, hi; /* this node's bounds (point into the parent's copy) */
    uint64_t lo_seq, hi_seq;
} level;

typedef struct walk {
    sop_store *s;
    const char *what;
    level *path;
    size_t depth, cap;
    int leaf_depth;
    uint64_t items;
} walk;

/* Visit node lid at depth d with the given bounds: every per-node check;
 * a branch is pushed on the path for its children to be visited. */
static int visit(chk *c, walk *wk, uint64_t lid, int d, int has_lo, const sop_val *lo,
                 uint64_t lo_seq, int has_hi, const sop_val *hi, uint64_t hi_seq)
{
    sop_db *db = c->db;
    sop_store *s = wk->s;
    int dup = (s->flags & SOP_STORE_DUPLICATES) != 0;
    int rc;
    tick(c);
    /* Re-announce (cache.h L2): images this walk read before are not used
     * any more (branches are copied), so the cache may free them. */
    sop_cache__enter(db->cache, db->check_slot);
    if (d >= SOP_MAX_DEPTH) {
        finding(c, "store '%s': tree deeper than %d", s->name, SOP_MAX_DEPTH);
        return SOP_OK;
    }
    sop_version *v = sop_registry__lookup(&db->reg, lid, c->snap);
    if (!v) {
        finding(c, "store '%s': node %" PRIu64 " has no registry entry", s->name, lid);
        return SOP_OK;
    }
    /* Each node has one parent in one tree: a second visit means shared
     * subtrees or a cycle, and walking it again could take forever. */
    int was = reached(c, lid);
    if (was) {
        if (was > 0)
            finding(c, "store '%s': node %" PRIu64 " is reached more than once", s->name, lid);
        else
            finding(c, "store '%s': node %" PRIu64 " is past the lid counter", s->name, lid);
        return SOP_OK;
    }
    const uint8_t *img;
    if ((rc = sop_cache__node(&img, db->cache, v, lid, &s->cmp)) != SOP_OK) {
        if (!is_damage(rc))
            return rc;
        finding(c, "store '%s': node %" PRIu64 ": %s", s->name, lid, sop_errmsg());
        return SOP_OK;
    }
    if (sop_node__validate(img, sop_node__image_len(img), &s->cmp) != SOP_OK) {
        finding(c, "store '%s': node %" PRIu64 " invalid: %s", s->name, lid, sop_errmsg());
        return SOP_OK;
    }
    if (v->loc.seg && (rc = check_node_blob(c, lid, v, img)) != SOP_OK)
        return rc;
    if (sop_node__lid(img) != lid) {
        /* Its children are another node's: do not walk them from here. */
        finding(c, "node %" PRIu64 " holds the image of node %" PRIu64, lid, sop_node__lid(img));
        return SOP_OK;
    }
    if (sop_node__is_dup(img) != dup)
        finding(c, "store '%s': node %" PRIu64 " duplicate flag differs from the store", s->name,
                lid);
    uint32_t cnt = sop_node__count(img);
    int leaf = sop_node__is_leaf(img);
    if (leaf ? cnt > s->slot_length : cnt + 1 > s->slot_length)
        finding(c, "store '%s': node %" PRIu64 " holds %u %s, slot_length is %u", s->name, lid,
                leaf ? cnt : cnt + 1, leaf ? "items" : "children", s->slot_length);
    if (d > 0 && leaf && cnt == 0)
        finding(c, "store '%s': non-root leaf %" PRIu64 " is empty", s->name, lid);
    if (!leaf && cnt == 0)
        finding(c, "store '%s': branch %" PRIu64 " has a single child", s->name, lid);
    if (cnt > 0) {
        sop_val k;
        uint64_t q;
        sop_node__key(img, 0, &k, &q);
        if (has_lo && key_cmp(s, &k, q, lo, lo_seq) < 0)
            finding(c, "store '%s': node %" PRIu64 " has a key below its separator", s->name, lid);
        sop_node__key(img, cnt - 1, &k, &q);
        if (has_hi && key_cmp(s, &k, q, hi, hi_seq) >= 0)
            finding(c, "store '%s': node %" PRIu64 " has a key at or above the next separator",
                    s->name, lid);
    }
    if (leaf) {
        if (wk->leaf_depth < 0)
            wk->leaf_depth = d;
        else if (wk->leaf_depth != d)
            finding(c, "store '%s': leaf %" PRIu64 " at depth %d, others at %d", s->name, lid, d,
                    wk->leaf_depth);
        wk->items += cnt;
        for (uint32_t i = 0; i < cnt; i++) {
            sop_leafval lv;
            sop_node__leaf_value(img, i, &lv);
            if (lv.is_blob &&
                (rc = check_value_blob(c, wk->what, &lv.loc, lv.value_len, 1)) != SOP_OK)
                return rc;
        }
        return SOP_OK;
    }
    if (wk->depth == wk->cap) {
        size_t cap = wk->cap ? wk->cap * 2 : 8;
        level *n = sop_realloc(wk->path, cap * sizeof *n);
        if (!n)
            return sop_err(SOP_NOMEM, "check path");
        wk->path = n;
        wk->cap = cap;
    }
    size_t len = sop_node__image_len(img);
    uint8_t *copy = sop_malloc(len);
    if (!copy)
        return sop_err(SOP_NOMEM, "check path");
    memcpy(copy, img, len);
    level *L = &wk->path[wk->depth++];
    *L = (level){copy, lid, 0, cnt, has_lo, has_hi, {NULL, 0}, {NULL, 0}, lo_seq, hi_seq};
    if (has_lo)
        L->lo = *lo;
    if (has_hi)
        L->hi = *hi;
    return SOP_OK;
}

/* Depth first, children in key order; memory: the path's copies. */
static int check_store(chk *c, sop_store *s)
{
    char what[300]; /* names the store in value-blob findings */
    snprintf(what, sizeof what, "store '%s'", s->name);
    walk wk = {s, what, NULL, 0, 0, -1, 0};
    int rc = visit(c, &wk, s->root_lid, 0, 0, NULL, 0, 0, NULL, 0);
    while (rc == SOP_OK && wk.depth) {
        level *L = &wk.path[wk.depth - 1];
        if (L->next > L->cnt) {
            sop_free(L->img);
            wk.depth--;
            continue;
        }
        uint32_t i = L->next++;
        sop_val lo = L->lo, hi = L->hi;
        uint64_t lo_seq = L->lo_seq, hi_seq = L->hi_seq;
        int has_lo = L->has_lo, has_hi = L->has_hi;
        if (i > 0) {
            has_lo = 1;
            sop_node__key(L->img, i - 1, &lo, &lo_seq);
        }
        if (i < L->cnt) {
            has_hi = 1;
            sop_node__key(L->img, i, &hi, &hi_seq);
        }
        /* visit may move wk.path (realloc); the bounds point into copies,
         * which do not move. */
        rc = visit(c, &wk, sop_node__child(L->img, i), (int)wk.depth, has_lo, &lo, lo_seq, has_hi,
                   &hi, hi_seq);
    }
    if (rc == SOP_OK) {
        uint64_t counted = sop_store__count_at(s, c->snap);
        if (counted != wk.items)
            finding(c, "store '%s': count is %" PRIu64 " but the tree holds %" PRIu64 " items",
                    s->name, counted, wk.items);
    }
    while (wk.depth)
        sop_free(wk.path[--wk.depth].img);
    sop_free(wk.path);
    return rc ? env_failed(c, rc) : SOP_OK;
}

/* Registry: every lid live at S was reached. Versions at S are kept (the
 * pinned snapshot) and the radix table is read without locks (R4). */
static int unreachable_lid(uint64_t lid, sop_version *head, void *ctx)
{
    chk *c = ctx;
    sop_version *v = head;
    while (v && v->lsn > c->snap)
        v = atomic_load_explicit(&v->older, memory_order_acquire);
    if (!v || (v->flags & SOP_VER_TOMBSTONE))
        return 0;
    if (lid >= c->reach_lids || !(c->reach[lid >> 3] & (1u << (lid & 7))))
        finding(c, "node %" PRIu64 " is not reachable from any store (leaked)", lid);
    return 0;
}

/* Copy a prepared body's value blobs (commit_mu held: bodies go away when
 * the transaction is resolved; the blobs stay, as the tree's or dead at an
 * lsn after S, and their segments with them). */
struct prep_collect {
    chk *c;
    uint64_t id;
};

static void prepared_value(const sop_loc *loc, uint32_t value_len, void *ctx)
{
    struct prep_collect *p = ctx;
    chk *c = p->c;
    if (c->err)
        return;
    if (c->pval_count == c->pval_cap) {
        size_t cap = c->pval_cap ? c->pval_cap * 2 : 16;
        prep_val *n = sop_realloc(c->pvals, cap * sizeof *n);
        if (!n) {
            env_failed(c, sop_err(SOP_NOMEM, "check"));
            return;
        }
        c->pvals = n;
        c->pval_cap = cap;
    }
    c->pvals[c->pval_count++] = (prep_val){p->id, *loc, value_len};
    add_live(c, loc);
}

struct log_chk {
    chk *c;
    uint64_t next_lsn;
    int started;
};

static int log_cb(int type, uint64_t lsn, const uint8_t *payload, size_t len, const sop_loc *loc,
                  void *ctx)
{
    struct log_chk *l = ctx;
    const sop_loc *rf = &l->c->replay_from;
    (void)payload;
    (void)len;
    /* Records after S were appended while the check ran: not its business. */
    if (type != SOP_REC_TXN || lsn > l->c->snap)
        return SOP_OK;
    if (loc->seg < rf->seg || (loc->seg == rf->seg && loc->off < rf->off))
        return SOP_OK; /* covered by the checkpoint: its crc is all there is to check */
    if (l->started && lsn != l->next_lsn)
        finding(l->c,
                "log: record at %" PRIu64 ":%" PRIu64 " has lsn %" PRIu64 ", expected %" PRIu64,
                loc->seg, loc->off, lsn, l->next_lsn);
    l->started = 1;
    l->next_lsn = lsn + 1;
    return SOP_OK;
}

/* The segments as they were at S, each up to its size then: appends after
 * S only add records past it (the scan stops at the segment's tail, W7). */
static int check_log(chk *c)
{
    struct log_chk l = {c, c->ckpt_lsn + 1, c->ckpt_seq != 0};
    int rc = SOP_OK;
    /* Every record of every segment kept, from its header on: records the
     * checkpoint covers are not needed by recovery, but sop.h promises
     * every checksum, and damage there is damage to the disk. */
    for (size_t i = 0; i < c->seg_count && rc == SOP_OK; i++) {
        seg_acct *a = &c->segs[i];
        uint64_t end;
        int torn;
        rc = sop_wal__scan(c->db->wal, a->seg, 0, log_cb, &l, &end, &torn);
        if (is_damage(rc)) {
            finding(c, "log: segment %" PRIu64 ": %s", a->id, sop_errmsg());
            rc = SOP_OK;
        } else if (rc == SOP_OK && (torn || end < a->size)) {
            finding(c, "log: segment %" PRIu64 " holds an invalid record at offset %" PRIu64, a->id,
                    end);
        }
        tick(c);
    }
    if (rc == SOP_OK && l.started && l.next_lsn != c->snap + 1)
        finding(c, "log ends at lsn %" PRIu64 ", but the newest commit is %" PRIu64, l.next_lsn - 1,
                c->snap);
    return rc ? env_failed(c, rc) : SOP_OK;
}

/* Referenced bytes (walk, pending deaths, prepared bodies, running
 * transactions) against the accounting, both as of S. */
static void check_space(chk *c)
{
    for (size_t i = 0; i < c->pval_count && !c->err; i++) {
        char what[64];
        snprintf(what, sizeof what, "prepared transaction %" PRIu64, c->pvals[i].txn_id);
        check_value_blob(c, what, &c->pvals[i].loc, c->pvals[i].value_len, 0);
    }
    if (c->err)
        return; /* totals incomplete: comparing them would invent findings */
    for (size_t i = 0; i < c->seg_count; i++) {
        seg_acct *a = &c->segs[i];
        void *v = NULL;
        sop_u64map_get(&v, &c->live, a->id);
        uint64_t referenced = (uint64_t)(uintptr_t)v + a->inflight_bytes;
        uint64_t accounted = a->blob_bytes >= a->dead_bytes ? a->blob_bytes - a->dead_bytes : 0;
        if (a->dead_bytes > a->blob_bytes)
            finding(c,
                    "segment %" PRIu64 ": more dead bytes (%" PRIu64 ") than blob bytes (%" PRIu64
                    ")",
                    a->id, a->dead_bytes, a->blob_bytes);
        else if (referenced != accounted)
            finding(c,
                    "segment %" PRIu64 ": accounting says %" PRIu64 " live blob bytes, %" PRIu64
                    " are referenced (%s)",
                    a->id, accounted, referenced,
                    accounted < referenced ? "a checkpoint could delete it under live blobs"
                                           : "leaked space");
    }
}

static int check_manifest(chk *c)
{
    sop_db *db = c->db;
    if (!c->ckpt_seq)
        return SOP_OK;
    char path[4200];
    sop_file *f;
    uint64_t size;
    size_t got;
    snprintf(path, sizeof path, "%s/MANIFEST-%016" PRIx64, db->path, c->ckpt_seq);
    int rc = db->vfs->open(&f, db->vfs, path, SOP_VFS_READ);
    if (rc) {
        if (!is_damage(rc))
            return env_failed(c, rc);
        finding(c, "manifest %s: %s", path, sop_errmsg());
        return SOP_OK;
    }
    if ((rc = db->vfs->size(f, &size)) == SOP_OK && size >= 12 &&
        (rc = ensure_buf(c, size)) == SOP_OK &&
        (rc = db->vfs->pread(f, c->buf, size, 0, &got)) == SOP_OK) {
        if (got != size || memcmp(c->buf, "SOPMANI1", 8) != 0 ||
            sop_get_le32(c->buf + size - 4) != sop_crc32c(0, c->buf, size - 4))
            finding(c, "manifest %s: bad magic or checksum", path);
    } else if (rc == SOP_OK) {
        finding(c, "manifest %s: too short", path);
    }
    db->vfs->close(f);
    return rc ? env_failed(c, rc) : SOP_OK;
}

/* One segment into c->segs, sized at the first (sop_wal_seg_fn). */
static int snap_segment(const sop_wal_seginfo *g, void *ctx)
{
    chk *c = ctx;
    if (g->index == 0 && !(c->segs = sop_malloc(g->count * sizeof *c->segs)))
        return SOP_NOMEM;
    c->segs[c->seg_count++] =
        (seg_acct){g->seg, g->id, g->size, g->blob_bytes, g->dead_bytes, g->inflight_bytes};
    return 0;
}

/* The snapshot: S and the head state the checks compare with, in one
 * short hold of commit_mu (ckpt_mu held by the caller). */
static int take_snapshot(chk *c)
{
    sop_db *db = c->db;
    int rc;
    sop_mutex_lock(&db->commit_mu);
    if ((rc = sop_txn__begin(&c->pin, db, SOP_TXN_READONLY)) != SOP_OK)
        goto out;
    c->snap = db->applied_lsn;
    sop_mutex_lock(&db->snap_mu);
    /* S >= the visible_lsn begin registered: raising it keeps (D2). The
     * pin is internal: no time limit applies to it. */
    c->pin->snap = c->snap;
    c->pin->deadline_ns = UINT64_MAX;
    sop_mutex_unlock(&db->snap_mu);
    c->ckpt_lsn = db->ckpt_lsn;
    c->ckpt_seq = db->ckpt_seq;
    c->replay_from = db->replay_from;
    c->reach_lids = db->reg.next_lid;
    c->total = db->reg.live_lids;
    if (!(c->reach = sop_calloc(c->reach_lids / 8 + 1, 1))) {
        rc = sop_err(SOP_NOMEM, "check");
        goto out;
    }
    /* Pending deaths: dead at their lsn, counted at the next checkpoint. */
    for (size_t i = 0; i < db->death_count && rc == SOP_OK; i++)
        rc = add_live(c, &db->deaths[i].loc);
    for (sop_prepared *p = db->prepared; p && rc == SOP_OK && !c->err; p = p->next) {
        struct prep_collect pc = {c, p->id};
        if (sop_txn__body_values(p->body, p->body_len, prepared_value, &pc) == SOP_OK)
            continue;
        /* A finding calls back into the user: not under commit_mu. */
        bad_body *n = sop_realloc(c->bad_bodies, (c->bad_body_count + 1) * sizeof *n);
        if (!n) {
            rc = sop_err(SOP_NOMEM, "check");
            break;
        }
        c->bad_bodies = n;
        n[c->bad_body_count].txn_id = p->id;
        snprintf(n[c->bad_body_count].msg, sizeof n->msg, "%s", sop_errmsg());
        c->bad_body_count++;
    }
    if (rc == SOP_OK)
        rc = c->err;
    if (rc != SOP_OK)
        goto out;
    /* The wal walks its table under append_mu and seg_mu: every segment's
     * size and accounting at one instant (value blobs are appended without
     * commit_mu). */
    if (sop_wal__each_segment(db->wal, NULL, snap_segment, c) != 0 ||
        (!c->segs && !(c->segs = sop_malloc(sizeof *c->segs))))
        rc = sop_err(SOP_NOMEM, "check");
    c->total += c->seg_count;
out:
    sop_mutex_unlock(&db->commit_mu);
    for (size_t i = 0; i < c->bad_body_count; i++)
        finding(c, "prepared transaction %" PRIu64 ": %s", c->bad_bodies[i].txn_id,
                c->bad_bodies[i].msg);
    return rc ? env_failed(c, rc) : SOP_OK;
}

int sop_db_check(uint64_t *findings_out, sop_db *db, sop_check_fn on_finding,
                 sop_check_progress_fn progress, void *ctx)
{
    sop_err_clear();
    if (!findings_out || !db)
        return sop_err(SOP_INVAL, "NULL argument");
    *findings_out = 0;
    int rc = sop_db__check_panic(db);
    if (rc)
        return rc;
    chk c;
    memset(&c, 0, sizeof c);
    c.db = db;
    c.on_finding = on_finding;
    c.progress = progress;
    c.ctx = ctx;
    sop_u64map_init(&c.live);
    sop_mutex_lock(&db->ckpt_mu);
    rc = take_snapshot(&c);
    for (sop_store *s = atomic_load(&db->stores); s && rc == SOP_OK; s = s->next) {
        if (atomic_load(&s->created_lsn) > c.snap || atomic_load(&s->dropped_lsn) <= c.snap)
            continue;
        rc = check_store(&c, s);
    }
    /* The walk is over: no image is used any more. */
    sop_cache__leave(db->check_slot);
    if (rc == SOP_OK)
        sop_registry__for_each(&db->reg, unreachable_lid, &c);
    if (rc == SOP_OK)
        check_space(&c);
    if (rc == SOP_OK)
        rc = c.err;
    if (rc == SOP_OK)
        rc = check_log(&c);
    if (rc == SOP_OK)
        rc = check_manifest(&c);
    sop_txn__free(c.pin);
    sop_mutex_unlock(&db->ckpt_mu);
    if (progress)
        progress(c.total, c.total, ctx);
    sop_free(c.reach);
    sop_free(c.segs);
    sop_free(c.pvals);
    sop_free(c.bad_bodies);
    sop_u64map_dispose(&c.live);
    sop_free(c.buf);
    *findings_out = c.findings;
    return sop_done(rc);
}
