/*
 * check.c - the integrity checker (sop_db_check).
 *
 * It holds the checkpoint and commit locks for its whole run, so the head
 * state it inspects cannot move: readers go on, writers and checkpoints
 * wait. What it verifies (each failure is one finding, the run goes on):
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
#include "cache.h"
#include "txn.h"

#include <stdarg.h>
#include <stdio.h>

typedef struct chk {
    sop_db *db;
    sop_check_fn on_finding;
    sop_check_progress_fn progress;
    void *ctx;
    uint64_t findings;
    uint64_t done, total;
    sop_u64map reach; /* reachable lids */
    sop_u64map live;  /* segment id -> referenced bytes (as uintptr) */
    uint8_t *buf;
    size_t buf_cap;
    uint64_t snap;
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
    int r =
        s->cmp.fn ? s->cmp.fn(a, b, s->cmp.ctx) : sop_memcmp_keys(a->data, a->len, b->data, b->len);
    return r ? r : (as > bs) - (as < bs);
}

/* On-disk copy of a node: checksum, and same bytes as the image. */
static int check_node_blob(chk *c, uint64_t lid, const sop_version *v, const uint8_t *img)
{
    int rc = sop_wal__read_buf(&c->db->wal, &v->loc, SOP_REC_NODE, &c->buf, &c->buf_cap);
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
 * location's checksum and value_len bytes; counted as referenced. A
 * damaged one is a finding (what names it); SOP_OK unless the checker
 * itself failed. */
static int check_value_blob(chk *c, const char *what, const sop_loc *loc, uint32_t value_len)
{
    int rc = sop_txn__read_value(&c->db->wal, loc, value_len, &c->buf, &c->buf_cap);
    if (rc != SOP_OK) {
        if (!is_damage(rc))
            return env_failed(c, rc);
        finding(c, "%s: value blob at %" PRIu64 ":%" PRIu64 ": %s", what, loc->seg, loc->off,
                sop_errmsg());
    }
    return add_live(c, loc);
}

typedef struct frame {
    uint64_t lid;
    int depth;
    int has_lo, has_hi;
    sop_val lo, hi;
    uint64_t lo_seq, hi_seq;
} frame;

static int check_store(chk *c, sop_store *s)
{
    sop_db *db = c->db;
    frame *stack = NULL;
    size_t n = 0, cap = 0;
    int rc = SOP_OK, leaf_depth = -1;
    uint64_t items = 0;
    int dup = (s->flags & SOP_STORE_DUPLICATES) != 0;
    char what[300]; /* names the store in value-blob findings */
    snprintf(what, sizeof what, "store '%s'", s->name);
#define PUSH(...)                                                                                  \
    do {                                                                                           \
        if (n == cap) {                                                                            \
            cap = cap ? cap * 2 : 64;                                                              \
            frame *ns = sop_realloc(stack, cap * sizeof *stack);                                   \
            if (!ns) {                                                                             \
                rc = sop_err(SOP_NOMEM, "check stack");                                            \
                goto out;                                                                          \
            }                                                                                      \
            stack = ns;                                                                            \
        }                                                                                          \
        stack[n++] = (frame){__VA_ARGS__};                                                         \
    } while (0)
    PUSH(s->root_lid, 0, 0, 0, {NULL, 0}, {NULL, 0}, 0, 0);
    while (n) {
        frame f = stack[--n];
        tick(c);
        if (f.depth >= SOP_MAX_DEPTH) {
            finding(c, "store '%s': tree deeper than %d", s->name, SOP_MAX_DEPTH);
            continue;
        }
        sop_version *v = sop_registry__lookup(&db->reg, f.lid, c->snap);
        if (!v) {
            finding(c, "store '%s': node %" PRIu64 " has no registry entry", s->name, f.lid);
            continue;
        }
        /* Each node has one parent in one tree: a second visit means shared
         * subtrees or a cycle, and walking it again could take forever. */
        if (sop_u64map_get(NULL, &c->reach, f.lid) == SOP_OK) {
            finding(c, "store '%s': node %" PRIu64 " is reached more than once", s->name, f.lid);
            continue;
        }
        if (sop_u64map_put(NULL, &c->reach, f.lid, (void *)1) != SOP_OK) {
            rc = sop_err(SOP_NOMEM, "check");
            goto out;
        }
        const uint8_t *img;
        if ((rc = sop_db__node(&img, db, v, f.lid, &s->cmp)) != SOP_OK) {
            if (!is_damage(rc))
                goto out;
            rc = SOP_OK;
            finding(c, "store '%s': node %" PRIu64 ": %s", s->name, f.lid, sop_errmsg());
            continue;
        }
        if (sop_node__validate(img, sop_node__image_len(img), &s->cmp) != SOP_OK) {
            finding(c, "store '%s': node %" PRIu64 " invalid: %s", s->name, f.lid, sop_errmsg());
            continue;
        }
        if (v->loc.seg && (rc = check_node_blob(c, f.lid, v, img)) != SOP_OK)
            goto out;
        if (sop_node__lid(img) != f.lid) {
            /* Its children are another node's: do not walk them from here. */
            finding(c, "node %" PRIu64 " holds the image of node %" PRIu64, f.lid,
                    sop_node__lid(img));
            continue;
        }
        if (sop_node__is_dup(img) != dup)
            finding(c, "store '%s': node %" PRIu64 " duplicate flag differs from the store",
                    s->name, f.lid);
        uint32_t cnt = sop_node__count(img);
        int leaf = sop_node__is_leaf(img);
        if (leaf ? cnt > s->slot_length : cnt + 1 > s->slot_length)
            finding(c, "store '%s': node %" PRIu64 " holds %u %s, slot_length is %u", s->name,
                    f.lid, leaf ? cnt : cnt + 1, leaf ? "items" : "children", s->slot_length);
        if (f.depth > 0 && leaf && cnt == 0)
            finding(c, "store '%s': non-root leaf %" PRIu64 " is empty", s->name, f.lid);
        if (!leaf && cnt == 0)
            finding(c, "store '%s': branch %" PRIu64 " has a single child", s->name, f.lid);
        if (cnt > 0) {
            sop_val k;
            uint64_t q;
            sop_node__key(img, 0, &k, &q);
            if (f.has_lo && key_cmp(s, &k, q, &f.lo, f.lo_seq) < 0)
                finding(c, "store '%s': node %" PRIu64 " has a key below its separator", s->name,
                        f.lid);
            sop_node__key(img, cnt - 1, &k, &q);
            if (f.has_hi && key_cmp(s, &k, q, &f.hi, f.hi_seq) >= 0)
                finding(c, "store '%s': node %" PRIu64 " has a key at or above the next separator",
                        s->name, f.lid);
        }
        if (leaf) {
            if (leaf_depth < 0)
                leaf_depth = f.depth;
            else if (leaf_depth != f.depth)
                finding(c, "store '%s': leaf %" PRIu64 " at depth %d, others at %d", s->name, f.lid,
                        f.depth, leaf_depth);
            items += cnt;
            for (uint32_t i = 0; i < cnt; i++) {
                sop_leafval lv;
                sop_node__leaf_value(img, i, &lv);
                if (lv.is_blob && (rc = check_value_blob(c, what, &lv.loc, lv.value_len)) != SOP_OK)
                    goto out;
            }
            continue;
        }
        for (uint32_t i = 0; i <= cnt; i++) {
            frame ch = {sop_node__child(img, i),
                        f.depth + 1,
                        f.has_lo,
                        f.has_hi,
                        f.lo,
                        f.hi,
                        f.lo_seq,
                        f.hi_seq};
            if (i > 0) {
                ch.has_lo = 1;
                sop_node__key(img, i - 1, &ch.lo, &ch.lo_seq);
            }
            if (i < cnt) {
                ch.has_hi = 1;
                sop_node__key(img, i, &ch.hi, &ch.hi_seq);
            }
            PUSH(ch.lid, ch.depth, ch.has_lo, ch.has_hi, ch.lo, ch.hi, ch.lo_seq, ch.hi_seq);
        }
    }
    uint64_t counted = sop_store__count_at(s, c->snap);
    if (counted != items)
        finding(c, "store '%s': count is %" PRIu64 " but the tree holds %" PRIu64 " items", s->name,
                counted, items);
#undef PUSH
out:
    sop_free(stack);
    return rc ? env_failed(c, rc) : SOP_OK;
}

static int unreachable_lid(uint64_t lid, sop_version *head, void *ctx)
{
    chk *c = ctx;
    if (head->flags & SOP_VER_TOMBSTONE)
        return 0;
    if (sop_u64map_get(NULL, &c->reach, lid) != SOP_OK)
        finding(c, "node %" PRIu64 " is not reachable from any store (leaked)", lid);
    return 0;
}

struct prep_chk {
    chk *c;
    char what[64];
};

static void prepared_value(const sop_loc *loc, uint32_t value_len, void *ctx)
{
    struct prep_chk *p = ctx;
    if (!p->c->err)
        check_value_blob(p->c, p->what, loc, value_len);
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
    const sop_loc *rf = &l->c->db->replay_from;
    (void)payload;
    (void)len;
    if (type != SOP_REC_TXN)
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

static int check_log(chk *c)
{
    sop_db *db = c->db;
    sop_wal *w = &db->wal;
    struct log_chk l = {c, db->ckpt_lsn + 1, db->ckpt_seq != 0};
    int rc = SOP_OK;
    pthread_mutex_lock(&w->append_mu); /* no append while the tail is read */
    /* Every record of every segment kept, from its header on: records the
     * checkpoint covers are not needed by recovery, but sop.h promises
     * every checksum, and damage there is damage to the disk. */
    for (size_t i = 0; i < w->seg_count && rc == SOP_OK; i++) {
        sop_seg *s = w->segs[i];
        uint64_t end;
        int torn;
        rc = sop_wal__scan(w, s, 0, log_cb, &l, &end, &torn);
        if (is_damage(rc)) {
            finding(c, "log: segment %" PRIu64 ": %s", s->id, sop_errmsg());
            rc = SOP_OK;
        } else if (rc == SOP_OK && (torn || end != s->size)) {
            finding(c, "log: segment %" PRIu64 " holds an invalid record at offset %" PRIu64, s->id,
                    end);
        }
        tick(c);
    }
    pthread_mutex_unlock(&w->append_mu);
    if (rc == SOP_OK && l.started && l.next_lsn != db->applied_lsn + 1)
        finding(c, "log ends at lsn %" PRIu64 ", but the newest commit is %" PRIu64, l.next_lsn - 1,
                db->applied_lsn);
    return rc;
}

static void check_space(chk *c)
{
    sop_db *db = c->db;
    sop_wal *w = &db->wal;
    for (size_t i = 0; i < db->death_count; i++)
        add_live(c, &db->deaths[i].loc); /* dead at their lsn, counted at the next checkpoint */
    for (sop_prepared *p = db->prepared; p && !c->err; p = p->next) {
        struct prep_chk pc = {c, ""};
        snprintf(pc.what, sizeof pc.what, "prepared transaction %" PRIu64, p->id);
        if (sop_txn__body_values(p->body, p->body_len, prepared_value, &pc) != SOP_OK)
            finding(c, "%s: %s", pc.what, sop_errmsg());
    }
    if (c->err)
        return; /* totals incomplete: comparing them would invent findings */
    pthread_mutex_lock(&w->seg_mu);
    for (size_t i = 0; i < w->seg_count; i++) {
        sop_seg *s = w->segs[i];
        void *v = NULL;
        sop_u64map_get(&v, &c->live, s->id);
        uint64_t referenced = (uint64_t)(uintptr_t)v + s->inflight_bytes;
        uint64_t accounted = s->blob_bytes >= s->dead_bytes ? s->blob_bytes - s->dead_bytes : 0;
        if (s->dead_bytes > s->blob_bytes)
            finding(c,
                    "segment %" PRIu64 ": more dead bytes (%" PRIu64 ") than blob bytes (%" PRIu64
                    ")",
                    s->id, s->dead_bytes, s->blob_bytes);
        else if (referenced != accounted)
            finding(c,
                    "segment %" PRIu64 ": accounting says %" PRIu64 " live blob bytes, %" PRIu64
                    " are referenced (%s)",
                    s->id, accounted, referenced,
                    accounted < referenced ? "a checkpoint could delete it under live blobs"
                                           : "leaked space");
    }
    pthread_mutex_unlock(&w->seg_mu);
}

static int check_manifest(chk *c)
{
    sop_db *db = c->db;
    if (!db->ckpt_seq)
        return SOP_OK;
    char path[4200];
    sop_file *f;
    uint64_t size;
    size_t got;
    snprintf(path, sizeof path, "%s/MANIFEST-%016" PRIx64, db->path, db->ckpt_seq);
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
    sop_u64map_init(&c.reach);
    sop_u64map_init(&c.live);
    pthread_mutex_lock(&db->ckpt_mu);
    pthread_mutex_lock(&db->commit_mu);
    sop_cache__enter(db, &db->check_epoch);
    c.snap = db->applied_lsn;
    c.total = db->reg.live_lids + db->wal.seg_count;
    for (sop_store *s = atomic_load(&db->stores); s && rc == SOP_OK; s = s->next) {
        if (atomic_load(&s->created_lsn) > c.snap || atomic_load(&s->dropped_lsn) <= c.snap)
            continue;
        rc = check_store(&c, s);
    }
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
    sop_cache__leave(&db->check_epoch);
    pthread_mutex_unlock(&db->commit_mu);
    pthread_mutex_unlock(&db->ckpt_mu);
    if (progress)
        progress(c.total, c.total, ctx);
    sop_u64map_dispose(&c.reach);
    sop_u64map_dispose(&c.live);
    sop_free(c.buf);
    *findings_out = c.findings;
    return sop_done(rc);
}
