/*
 * ckpt.c - checkpoints: write dirty nodes as blobs, then an immutable
 * manifest naming the log position it covers; load the newest at open;
 * reclaim segments nothing needs.
 *
 *   (C1) A manifest is written to MANIFEST-<seq>.tmp, synced, renamed, and
 *        the folder synced; it becomes the recovery base exactly when the
 *        rename is durable. Older manifests are deleted only afterwards.
 *   (C2) Every node blob a manifest names is durable before the manifest
 *        is written (one fdatasync of the log covers blobs and records).
 *   (C3) A segment is deleted only when it holds no live blob, no record
 *        newer than the durable checkpoint, no blob any open snapshot may
 *        read (its last death <= the oldest snapshot) and is not the append
 *        target.
 *   (C4) The manifest's space accounting is the one at the cut C (plus the
 *        deaths at or before C and this checkpoint's node blobs): recovery
 *        counts what each record after C did when it replays it, so nothing
 *        after C may be in the manifest too (docs/FORMAT.md, "Space
 *        accounting").
 *
 * Manifest layout (little-endian), then u32 crc32c of everything before it:
 *   8 magic "SOPMANI1", u32 version 2 (1 is read: accounting up to size), u32 0,
 *   u64 ckpt_lsn, u64 replay_seg, u64 replay_off, u64 durable_seg, u64 durable_off
 *       (everything before it was synced by this checkpoint), u64 next_lid,
 *   u64 next_store_id, u64 next_txn_id,
 *   u32 store_count, each: u64 id, u64 root_lid, u64 count, u64 next_seq,
 *       u64 created_lsn, u16 name_len, name, u32 flags, u32 slot_length,
 *       u32 max_inline, u16 cmp_len, cmp, u32 spec_len, spec
 *   u32 prepared_count, each: u64 id, u64 lsn, u32 body_len, body
 *   u32 seg_count, each: u64 id, u64 blob_bytes, u64 dead_bytes,
 *       u64 death_lsn, u64 max_lsn, u64 size (node blobs below it are
 *       counted), u64 inflight_bytes (value blobs of transactions running
 *       at C) -- all at the cut (C4)
 *   u64 lid_count, each (ascending lid): u64 lid, u64 seg, u64 off,
 *       u32 len, u32 crc          -- the registry run (DESIGN D1)
 */
#include "cache.h"
#include "db.h"
#include "txn.h"

#include <stdio.h>
#include <stdlib.h>

#define MANI_MAGIC "SOPMANI1"

struct written {
    sop_version *v;
    uint64_t lid;
    sop_loc loc;
};

struct reg_collect {
    sop_buf *b;
    uint64_t snap;
    uint64_t count;
    int bad;
};

static int collect_lid(uint64_t lid, sop_version *head, void *ctx)
{
    struct reg_collect *c = ctx;
    sop_version *v = head;
    while (v && v->lsn > c->snap)
        v = atomic_load(&v->older);
    if (!v || (v->flags & SOP_VER_TOMBSTONE))
        return 0;
    if (v->loc.seg == 0) {
        c->bad = 1; /* cannot happen: every node visible at C was written */
        return 1;
    }
    sop_buf_append_le64(c->b, lid);
    sop_buf_append_le64(c->b, v->loc.seg);
    sop_buf_append_le64(c->b, v->loc.off);
    sop_buf_append_le32(c->b, v->loc.len);
    sop_buf_append_le32(c->b, v->loc.crc);
    c->count++;
    return 0;
}

struct mani_scan {
    uint64_t best;
    int found;
    uint64_t *old; /* every MANIFEST-<seq> and MANIFEST-<seq>.tmp: tmp bit 63 */
    size_t old_n, old_cap;
};

#define MANI_TMP (1ull << 63)

static int scan_mani(const char *name, void *ctx)
{
    struct mani_scan *m = ctx;
    size_t len = strlen(name);
    int tmp = len == 29 && strcmp(name + 25, ".tmp") == 0;
    if (strncmp(name, "MANIFEST-", 9) != 0 || (len != 25 && !tmp))
        return 0;
    char *end;
    uint64_t seq = strtoull(name + 9, &end, 16);
    if (end != name + 25 || (seq & MANI_TMP))
        return 0;
    if (m->old_n == m->old_cap) {
        size_t cap = m->old_cap ? m->old_cap * 2 : 8;
        uint64_t *n = sop_realloc(m->old, cap * sizeof *n);
        if (!n)
            return sop_err(SOP_NOMEM, "manifest list");
        m->old = n;
        m->old_cap = cap;
    }
    m->old[m->old_n++] = seq | (tmp ? MANI_TMP : 0);
    if (tmp)
        return 0; /* a manifest a crash interrupted before its rename */
    if (!m->found || seq > m->best)
        m->best = seq;
    m->found = 1;
    return 0;
}

static int write_file_durably(sop_db *db, const char *path, const uint8_t *data, size_t len)
{
    int do_sync = db->opts.sync != SOP_SYNC_OFF;
    char tmp[4300];
    sop_file *f = NULL;
    int rc;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    SOP_TRY(db->vfs->open(&f, db->vfs, tmp, SOP_VFS_WRITE | SOP_VFS_CREATE));
    SOP_TRY(db->vfs->truncate(f, 0));
    SOP_TRY(db->vfs->pwrite(f, data, len, 0));
    if (do_sync)
        SOP_TRY(db->vfs->sync(f, 0));
    rc = db->vfs->close(f);
    f = NULL;
    SOP_TRY(rc);
    SOP_TRY(db->vfs->rename(db->vfs, tmp, path));
    if (do_sync)
        SOP_TRY(db->vfs->sync_dir(db->vfs, db->path));
out:
    if (f)
        db->vfs->close(f);
    return rc;
}

/* ---- compaction ------------------------------------------------------------ */

/* Dead bytes worth a rotation or a cleaning for their records alone:
 * min(segment / 16, 1 MiB). Below it a segment is not worth the copies, and
 * a tiny database opened by one command at a time would rewrite all its
 * nodes at every close. */
static uint64_t clean_floor(const sop_db *db)
{
    return db->opts.segment_bytes / 16 < (1u << 20) ? db->opts.segment_bytes / 16 : (1u << 20);
}

/* How hard a checkpoint cleans. During a session (CLEAN_SESSION) a victim
 * is under 2/3 live (DESIGN §2: the files stay within about 1.5x of the
 * live bytes) and the copies keep up with churn (relocation_budget). At
 * close (CLEAN_CLOSE, sop_ckpt__close) the folder is what stays on disk
 * until the next open: a victim is under 7/8 live, and the copies may use
 * whatever room the cache budget has left. */
typedef struct clean_policy {
    uint64_t live_num, live_den; /* a victim is under live_num / live_den live */
    int at_close;
} clean_policy;

static const clean_policy CLEAN_SESSION = {2, 3, 0};
static const clean_policy CLEAN_CLOSE = {7, 8, 1};

/* A sealed segment compaction should empty (C3, and the policy's fraction
 * of live bytes). Live is
 * measured against the blobs, and also against the whole file once at
 * least clean_floor bytes of it are dead: before the replay position its
 * transaction records are dead too, and a segment that is mostly records
 * (a small, hot database's log) held its few live nodes, and all its
 * bytes, for ever. */
static int seg_is_victim(const sop_wal_seginfo *s, uint64_t replay_seg, uint64_t floor,
                         const clean_policy *pol)
{
    if (s->current || s->id >= replay_seg || s->blob_bytes == 0 || s->dead_bytes >= s->blob_bytes)
        return 0;
    uint64_t live = s->blob_bytes - s->dead_bytes, num = pol->live_num, den = pol->live_den;
    return live * den < s->blob_bytes * num ||
           (live * den < s->size * num && s->size - live >= floor);
}

/* The append target is never cleaned (C3), and a small database may never
 * fill it: 200k upserts over 10k keys left 26 MB of dead records and node
 * images in one 64 MiB segment, 10x the live data, also after close and
 * reopen (issue 12). So a checkpoint first seals the current segment when
 * at least half of it will be dead once the checkpoint is done (everything
 * but its live blobs: the records before the cut are covered by the
 * checkpoint), and at least min(segment_bytes / 16, 1 MiB) is dead; it is
 * then a victim of this very checkpoint. The floor keeps a lightly used
 * database from making a segment file per checkpoint. Returns 1 if it
 * rotated, 0 if not, or a failure code. */
static int rotate_for_cleaning(sop_db *db)
{
    uint64_t floor = clean_floor(db);
    int want = 0;
    sop_wal_seginfo cur;
    if (sop_wal__current(db->wal, &cur)) {
        uint64_t live = cur.dead_bytes < cur.blob_bytes ? cur.blob_bytes - cur.dead_bytes : 0;
        uint64_t dead = cur.size > live ? cur.size - live : 0;
        want = dead >= floor && dead >= live;
    }
    if (!want)
        return 0;
    int rc = sop_wal__rotate(db->wal);
    return rc == SOP_OK ? 1 : rc;
}

struct pending_ctx {
    uint64_t replay_seg, floor;
    const clean_policy *pol;
};

static int seg_work_pending(const sop_wal_seginfo *s, void *ctx)
{
    const struct pending_ctx *p = ctx;
    return seg_is_victim(s, p->replay_seg, p->floor, p->pol) ||
           (!s->current && s->id < p->replay_seg && s->dead_bytes >= s->blob_bytes);
}

/* Would a checkpoint with no new commits still move or free space? */
static int space_work_pending(sop_db *db, const clean_policy *pol)
{
    struct pending_ctx p = {db->replay_from.seg, clean_floor(db), pol};
    return sop_wal__each_segment(db->wal, NULL, seg_work_pending, &p);
}

struct reloc {
    sop_db *db;
    uint64_t lsn;
    uint64_t *victims;
    size_t victim_count;
    uint64_t budget; /* node bytes this checkpoint may still copy */
    uint64_t moved;  /* node bytes it copied */
};

/* Node bytes one checkpoint relocates at most. Each relocated node is a
 * dirty copy (not evictable) until the checkpoint writes it; unbounded, a
 * checkpoint after heavy churn copied every live node of the sparse
 * segments at once (the readwhilewriting RSS overshoot, BENCHMARKS.md).
 * The bound keeps up with churn: the dirty bytes this checkpoint writes
 * are about the space its commits made dead, and relocating L bytes out
 * of segments under 2/3 live frees at least 1.5 L. Victims left over are
 * taken by the next checkpoints. */
static uint64_t relocation_budget(const sop_db *db, const clean_policy *pol)
{
    uint64_t dirty = atomic_load(&db->dirty_bytes), cache = db->opts.cache_bytes;
    uint64_t b = dirty;
    if (pol->at_close) {
        /* No churn to keep up with: as much as the budget has room for now
         * (the clean images already held are only evicted after the cut,
         * so the copies come on top of them until then), at least cache / 8;
         * sop_ckpt__close takes the rest in further rounds. */
        uint64_t held = sop_cache__bytes(db->cache);
        b = held < cache ? cache - held : 0;
    }
    if (b < cache / 8)
        b = cache / 8;
    if (b < (4u << 20))
        b = 4u << 20;
    /* The copies are memory on top of the dirty nodes until written: keep
     * both within the cache budget (docs/SCALE.md §4), at least cache / 8
     * so cleaning always makes progress. */
    uint64_t room = dirty < cache - cache / 8 ? cache - dirty : cache / 8;
    return b < room ? b : room;
}

static int is_victim(const struct reloc *r, uint64_t seg)
{
    for (size_t i = 0; i < r->victim_count; i++)
        if (r->victims[i] == seg)
            return 1;
    return 0;
}

static int relocate_lid(uint64_t lid, sop_version *head, void *ctx)
{
    struct reloc *r = ctx;
    sop_db *db = r->db;
    if ((head->flags & SOP_VER_TOMBSTONE) || head->loc.seg == 0 || !is_victim(r, head->loc.seg))
        return 0;
    /* A new, content-identical, dirty version at lsn: this checkpoint
     * writes it into the current segment; the old blob dies at lsn. Readers
     * of older snapshots keep the old version (and its segment, C3). */
    const uint8_t *img = atomic_load_explicit(&head->img, memory_order_acquire);
    uint8_t *copy = NULL;
    size_t len;
    if (img) { /* cached: copy it compact */
        len = sop_node__used_bytes(img);
        if ((copy = sop_malloc(len)) != NULL &&
            sop_node__serialize(img, copy, len, &len) != SOP_OK) {
            sop_free(copy);
            copy = NULL;
        }
    } else { /* on disk only: its blob (compact already) becomes the copy,
              * without passing through the cache */
        if (sop_wal__read(db->wal, &head->loc, SOP_REC_NODE, &copy, &len) != SOP_OK)
            return 0; /* unreadable: leave it where it is; sop_check reports it */
        if (sop_node__validate(copy, len, NULL) != SOP_OK || sop_node__lid(copy) != lid) {
            sop_free(copy);
            return 0;
        }
    }
    sop_version *v = copy ? sop_version__new(r->lsn, NULL, 0, 0) : NULL;
    if (!v || sop_registry__ensure(&db->reg, lid) != SOP_OK ||
        sop_u64map_reserve(&db->dirty_lids, sop_u64map_count(&db->dirty_lids) + 1) != SOP_OK ||
        sop_u64map_reserve(&db->trim_lids, sop_u64map_count(&db->trim_lids) + 1) != SOP_OK ||
        db->death_count == db->death_cap) {
        sop_free(copy);
        sop_version__free(v);
        return 0; /* best effort: try again at the next checkpoint */
    }
    atomic_store_explicit(&v->img, copy, memory_order_relaxed);
    atomic_store_explicit(&v->img_len, len, memory_order_relaxed);
    db->deaths[db->death_count].loc = head->loc;
    db->deaths[db->death_count].lsn = r->lsn;
    db->death_count++;
    sop_registry__publish(&db->reg, lid, v);
    sop_u64map_put(NULL, &db->dirty_lids, lid, NULL);
    sop_u64map_put(NULL, &db->trim_lids, lid, NULL);
    atomic_fetch_add(&db->dirty_bytes, len);
    sop_cache__charge(db->cache, len);
    r->moved += len;
    if (r->budget <= len)
        return 1; /* enough for this checkpoint */
    r->budget -= len;
    return 0;
}

struct victim {
    uint64_t id, live, size;
};

/* Emptiest first (LFS's greedy policy): relocating a byte out of a segment
 * that is 10% live frees 9 bytes, out of one 60% live only 0.7. */
static int cmp_victim(const void *a, const void *b)
{
    const struct victim *x = a, *y = b;
    double fx = (double)x->live / (double)x->size, fy = (double)y->live / (double)y->size;
    return (fx > fy) - (fx < fy);
}

/*
 * Compaction (commit_mu held, at the cut C): pick sealed segments before the
 * replay position whose live blobs are less than 2/3 of their bytes, and
 * give every node still living there a fresh dirty version, so this
 * checkpoint rewrites it and the segment can be deleted once nothing older
 * needs it. Value blobs are not moved yet (their leaves would change).
 * Only the emptiest victims whose live bytes fit the relocation budget are
 * taken (at least one): spread over every victim, the budget moved a little
 * out of each and emptied none, so it was written without freeing a
 * segment.
 */
struct victims {
    struct victim *vs;
    size_t nv, cap;
    uint64_t replay_seg, floor;
    const clean_policy *pol;
};

/* Collect the victims (a failed allocation stops the collection). */
static int collect_victim(const sop_wal_seginfo *s, void *ctx)
{
    struct victims *v = ctx;
    if (!seg_is_victim(s, v->replay_seg, v->floor, v->pol))
        return 0;
    if (v->nv == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        struct victim *n = sop_realloc(v->vs, cap * sizeof *n);
        if (!n)
            return 1;
        v->vs = n;
        v->cap = cap;
    }
    v->vs[v->nv++] = (struct victim){s->id, s->blob_bytes - s->dead_bytes, s->size};
    return 0;
}

/* Returns the node bytes copied. */
static uint64_t relocate_from_sparse_segments(sop_db *db, uint64_t C, uint64_t replay_seg,
                                              const clean_policy *pol)
{
    struct reloc r = {db, C, NULL, 0, relocation_budget(db, pol), 0};
    struct victims vc = {NULL, 0, 0, replay_seg, clean_floor(db), pol};
    (void)sop_wal__each_segment(db->wal, NULL, collect_victim, &vc);
    struct victim *vs = vc.vs;
    size_t nv = vc.nv;
    if (nv && (r.victims = sop_malloc(nv * sizeof *r.victims)) != NULL) {
        qsort(vs, nv, sizeof *vs, cmp_victim);
        uint64_t planned = 0;
        for (size_t i = 0; i < nv && (i == 0 || planned + vs[i].live <= r.budget); i++) {
            planned += vs[i].live;
            r.victims[r.victim_count++] = vs[i].id;
        }
    }
    sop_free(vs);
    if (r.victim_count) {
        /* Deaths are recorded in place: make room for every live lid once. */
        size_t need = db->death_count + db->reg.live_lids + 1;
        if (need > db->death_cap) {
            sop_death *n = sop_realloc(db->deaths, need * sizeof *n);
            if (n) {
                db->deaths = n;
                db->death_cap = need;
            }
        }
        sop_registry__for_each(&db->reg, relocate_lid, &r);
    }
    sop_free(r.victims);
    return r.moved;
}

/*
 * The manifest's space accounting (C4). Recovery replays the records after
 * the cut C, and replaying re-counts what they did: the deaths they cause,
 * the value blobs they claim. So the manifest must hold the accounting as
 * it was at C, not as it is when the manifest is written: a commit after C
 * that superseded a node this checkpoint wrote, or claimed a value blob,
 * is then counted once by the live handle and once by recovery, never
 * twice (issue 10, defect 1). The snapshot is taken at the cut; the pending
 * deaths (all at or before C then) and this checkpoint's own node blobs
 * (named by the manifest's registry, so live at C) are added to it.
 */
struct acct {
    uint64_t id, blob, dead, death_lsn, max_lsn, inflight;
};

struct acct_snap {
    struct acct *a;
    size_t n, cap;
};

static struct acct *acct_find(struct acct_snap *as, uint64_t id)
{
    size_t lo = 0, hi = as->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (as->a[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < as->n && as->a[lo].id == id ? &as->a[lo] : NULL;
}

/* One segment's counters into the snapshot, sized at the first (the wal
 * holds append_mu and seg_mu over the walk: nothing is appended meanwhile). */
static int acct_take_one(const sop_wal_seginfo *s, void *ctx)
{
    struct acct_snap *as = ctx;
    if (s->index == 0) {
        if (!(as->a = sop_malloc(s->count * sizeof *as->a)))
            return SOP_NOMEM;
        as->cap = s->count;
    }
    assert(as->n < as->cap);
    as->a[as->n++] = (struct acct){s->id,        s->blob_bytes, s->dead_bytes,
                                   s->death_lsn, s->max_lsn,    s->inflight_bytes};
    return 0;
}

/* (C4) The tail and every segment's counters at one instant. */
static int acct_take(struct acct_snap *as, sop_wal *w, sop_loc *tail_out)
{
    as->a = NULL;
    as->n = as->cap = 0;
    if (sop_wal__each_segment(w, tail_out, acct_take_one, as) != 0)
        return sop_err(SOP_NOMEM, "checkpoint accounting");
    if (!as->a && !(as->a = sop_malloc(sizeof *as->a)))
        return sop_err(SOP_NOMEM, "checkpoint accounting");
    return SOP_OK;
}

/* This checkpoint's node blobs: an entry for each segment they went to
 * (segments created after the cut get one; ids grow, so it stays sorted). */
static int acct_add_written(struct acct_snap *as, const struct written *w, size_t wn)
{
    for (size_t j = 0; j < wn; j++) {
        struct acct *e = acct_find(as, w[j].loc.seg);
        if (!e) {
            if (as->n == as->cap) {
                size_t cap = as->cap ? as->cap * 2 : 4;
                struct acct *na = sop_realloc(as->a, cap * sizeof *na);
                if (!na)
                    return sop_err(SOP_NOMEM, "checkpoint accounting");
                as->a = na;
                as->cap = cap;
            }
            assert(as->n == 0 || as->a[as->n - 1].id < w[j].loc.seg);
            e = &as->a[as->n++];
            *e = (struct acct){w[j].loc.seg, 0, 0, 0, 0, 0};
        }
        e->blob += w[j].loc.len;
    }
    return SOP_OK;
}

static void acct_dead(struct acct_snap *as, const sop_loc *loc, uint64_t lsn)
{
    struct acct *e = acct_find(as, loc->seg);
    if (e) {
        e->dead += loc->len;
        if (lsn > e->death_lsn)
            e->death_lsn = lsn;
    }
}

/* Bytes of node records the checkpoint appends at once. The batch is memory
 * on top of the cache budget (docs/SCALE.md §4), so it scales with the
 * budget: cache / 16, at least 256 KiB, at most 4 MiB (bigger batches
 * gained nothing measurable), and well below the segment size, so
 * segments (the unit of reclamation) stay near their nominal size. A power
 * of two: the buffer doubles up to it and not past it. */
static size_t batch_limit(const sop_db *db)
{
    uint64_t want = db->opts.cache_bytes / 16;
    if (want < (256u << 10))
        want = 256u << 10;
    if (want > (4u << 20))
        want = 4u << 20;
    if (want > db->opts.segment_bytes / 4)
        want = db->opts.segment_bytes / 4;
    size_t p = 4096;
    while (p * 2 <= want)
        p *= 2;
    return p;
}

/* Append the batch and turn the batch-relative locations of its n records
 * (w) into segment locations; the batch is empty after. */
static int flush_batch(sop_db *db, sop_buf *batch, struct written *w, size_t n)
{
    sop_loc base;
    uint64_t token;
    int rc = sop_wal__append(db->wal, batch->data, batch->len, 0, batch->len, &base, &token);
    if (rc != SOP_OK)
        return rc;
    for (size_t j = 0; j < n; j++) {
        assert(w[j].loc.seg == 0 && w[j].loc.off < batch->len);
        w[j].loc.seg = base.seg;
        w[j].loc.off += base.off;
    }
    sop_buf_reset(batch);
    return SOP_OK;
}

/* (C3) A sealed segment before the replay position whose blobs are all
 * dead, the deaths and the records older than the checkpoint and than every
 * snapshot: nothing can read it any more. */
struct reclaim_ctx {
    uint64_t replay_seg, C, smin;
};

static int seg_reclaimable(const sop_wal_seginfo *s, void *ctx)
{
    const struct reclaim_ctx *r = ctx;
    return s->id < r->replay_seg && s->dead_bytes >= s->blob_bytes && s->death_lsn <= r->C &&
           s->death_lsn <= r->smin && s->max_lsn <= r->C;
}

/* One checkpoint run: its cut and what it has written so far. */
typedef struct ckpt_run {
    sop_db *db;
    uint64_t C;     /* the cut: every record <= C is in this checkpoint */
    sop_loc replay; /* where replay starts after it */
    sop_loc durable;
    uint64_t *lids; /* the dirty lids at the cut */
    size_t nlids;
    struct written *w; /* node blobs appended, in lids order */
    size_t wn, wcap;
    struct acct_snap as;
    sop_buf batch, mani;
    int placed; /* the written blobs have been given to their versions */
    const clean_policy *pol;
    uint64_t moved; /* node bytes relocated out of victims at the cut */
} ckpt_run;

/* Phase 1, under commit_mu: the cut. C and the replay position are taken,
 * the accounting at C snapshotted (C4), the versions at C pinned
 * (ckpt_snap), sparse segments' live nodes relocated into the dirty set,
 * and the dirty lids copied. *nothing_new: C is the last checkpoint's and
 * nothing else is to do; then nothing was taken. */
static int ckpt_cut(ckpt_run *r, int rotated, int *nothing_new)
{
    sop_db *db = r->db;
    int rc = SOP_OK;
    sop_mutex_lock(&db->commit_mu);
    uint64_t C = r->C = db->applied_lsn;
    if (C == db->ckpt_lsn && db->ckpt_seq != 0 && db->log_since_ckpt == 0 && !rotated &&
        !space_work_pending(db, r->pol)) {
        sop_mutex_unlock(&db->commit_mu);
        *nothing_new = 1;
        return SOP_OK;
    }
    if ((rc = acct_take(&r->as, db->wal, &r->replay)) != SOP_OK) /* (C4) at the cut */
        goto out;
    sop_mutex_lock(&db->snap_mu);
    db->ckpt_snap = C;
    sop_mutex_unlock(&db->snap_mu);
    r->moved = relocate_from_sparse_segments(db, C, r->replay.seg, r->pol);
    r->nlids = sop_u64map_count(&db->dirty_lids);
    r->lids = sop_malloc((r->nlids ? r->nlids : 1) * sizeof *r->lids);
    if (!r->lids) {
        rc = sop_err(SOP_NOMEM, "checkpoint");
        goto out;
    }
    size_t pos = 0, k = 0;
    uint64_t lid;
    while (sop_u64map_next(&lid, NULL, &db->dirty_lids, &pos) == SOP_OK)
        r->lids[k++] = lid;
out:
    sop_mutex_unlock(&db->commit_mu);
    return rc;
}

/* Phase 2: the image of v (lid's version at C) becomes a node record at the
 * end of the batch, and an entry of w whose location is relative to the
 * batch until the batch is appended. */
static int ckpt_batch_node(ckpt_run *r, sop_version *v, uint64_t lid, size_t *wflushed,
                           size_t batch_max)
{
    const uint8_t *img = atomic_load(&v->img);
    size_t clen = sop_node__used_bytes(img);
    size_t rlen = sop_rec_len(clen);
    int rc;
    if (r->batch.len && r->batch.len + rlen > batch_max) {
        /* Appended before it would pass batch_max: the buffer never grows
         * past it (one record bigger than it goes alone). */
        if ((rc = flush_batch(r->db, &r->batch, r->w + *wflushed, r->wn - *wflushed)) != SOP_OK)
            return rc;
        *wflushed = r->wn;
    }
    size_t at = r->batch.len;
    uint8_t *rec = sop_buf_extend(&r->batch, rlen);
    if (!rec)
        return sop_err(SOP_NOMEM, "checkpoint batch");
    size_t got;
    if ((rc = sop_node__serialize(img, rec + SOP_REC_HDR_LEN, clen, &got)) != SOP_OK)
        return rc;
    memset(rec + SOP_REC_HDR_LEN + clen, 0, rlen - SOP_REC_HDR_LEN - clen);
    uint32_t crc = sop_rec__header(rec, SOP_REC_NODE, rec + SOP_REC_HDR_LEN, clen, 0);
    if (r->wn == r->wcap) {
        r->wcap = r->wcap ? r->wcap * 2 : 256;
        struct written *nw = sop_realloc(r->w, r->wcap * sizeof *r->w);
        if (!nw)
            return sop_err(SOP_NOMEM, "checkpoint");
        r->w = nw;
    }
    struct written *e = &r->w[r->wn++];
    e->v = v;
    e->lid = lid;
    e->loc.off = at; /* relative to the batch until appended */
    e->loc.len = (uint32_t)rlen;
    e->loc.crc = crc;
    e->loc.seg = 0;
    return SOP_OK;
}

/* Phase 2: every node visible at C that has no blob yet is appended to the
 * log (in batches), and counted in the accounting at C. */
static int ckpt_write_nodes(ckpt_run *r)
{
    sop_db *db = r->db;
    size_t batch_max = batch_limit(db), wflushed = 0;
    int rc;
    for (size_t i = 0; i < r->nlids; i++) {
        sop_version *v = sop_registry__lookup(&db->reg, r->lids[i], r->C);
        if (!v || v->loc.seg != 0)
            continue;
        if ((rc = ckpt_batch_node(r, v, r->lids[i], &wflushed, batch_max)) != SOP_OK)
            return rc;
    }
    if (r->batch.len &&
        (rc = flush_batch(db, &r->batch, r->w + wflushed, r->wn - wflushed)) != SOP_OK)
        return rc;
    return acct_add_written(&r->as, r->w, r->wn);
}

/* Phase 3, (C2): the blobs and every record <= C are durable (not in
 * SOP_SYNC_OFF, which gives up power-loss safety for speed: see sop.h),
 * and r->durable says up to where. A sync failure panics the handle. */
static int ckpt_sync(ckpt_run *r)
{
    sop_db *db = r->db;
    /* What the sync below puts on stable storage: recovery must find valid
     * records up to here, so damage below it is corruption, never a torn
     * tail. Read before the sync, under append_mu: read after it, the tail
     * could include a concurrent commit's bytes that no sync covered, and a
     * power cut would then look like damage below the durable position. */
    r->durable = r->replay;
    if (db->opts.sync == SOP_SYNC_OFF)
        return SOP_OK;
    r->durable = sop_wal__tail(db->wal);
    /* The sync covers everything appended before it starts, so all of the
     * above. */
    int rc = sop_wal__sync_all(db->wal);
    return rc != SOP_OK ? sop_db__panic(db, rc) : SOP_OK;
}

/* Phase 4a, under commit_mu: the versions get their blobs' locations (and
 * become evictable), a blob superseded after C dies as of its successor,
 * the deaths <= C are settled into the WAL and the accounting, and the
 * dirty set keeps only lids whose newest version has no blob yet. */
static void ckpt_place(ckpt_run *r)
{
    sop_db *db = r->db;
    uint64_t written_bytes = 0;
    r->placed = 1;
    for (size_t j = 0; j < r->wn; j++) {
        sop_version *v = r->w[j].v;
        v->loc = r->w[j].loc;
        written_bytes += atomic_load_explicit(&v->img_len, memory_order_relaxed);
        sop_cache__add(db->cache, v); /* clean now: evictable */
        sop_version *h = sop_registry__head(&db->reg, r->w[j].lid);
        if (h != v) {
            /* Superseded after C: this blob is dead as of the newer version.
             * Not in the manifest's accounting (C4): replaying that version
             * counts this death again from the manifest's registry. */
            sop_version *n = h;
            while (n && atomic_load(&n->older) != v)
                n = atomic_load(&n->older);
            sop_wal__blob_dead(db->wal, &v->loc, n ? n->lsn : h->lsn);
        }
    }
    atomic_fetch_sub(&db->dirty_bytes, written_bytes);
    size_t keep = 0;
    for (size_t i = 0; i < db->death_count; i++) {
        if (db->deaths[i].lsn <= r->C) {
            sop_wal__blob_dead(db->wal, &db->deaths[i].loc, db->deaths[i].lsn);
            acct_dead(&r->as, &db->deaths[i].loc, db->deaths[i].lsn);
        } else
            db->deaths[keep++] = db->deaths[i];
    }
    db->death_count = keep;
    for (size_t i = 0; i < r->nlids; i++) {
        sop_version *h = sop_registry__head(&db->reg, r->lids[i]);
        if (!h || h->loc.seg != 0 || (h->flags & SOP_VER_TOMBSTONE))
            sop_u64map_del(NULL, &db->dirty_lids, r->lids[i]);
    }
}

/* Phase 4b, under commit_mu: the manifest's head, its stores and its
 * prepared transactions at C (docs/FORMAT.md), their counts patched in. */
static void ckpt_encode_catalog(ckpt_run *r)
{
    sop_db *db = r->db;
    sop_buf *mani = &r->mani;
    uint64_t C = r->C;
    sop_buf_append(mani, MANI_MAGIC, 8);
    sop_buf_append_le32(mani, 2);
    sop_buf_append_le32(mani, 0);
    sop_buf_append_le64(mani, C);
    sop_buf_append_le64(mani, r->replay.seg);
    sop_buf_append_le64(mani, r->replay.off);
    sop_buf_append_le64(mani, r->durable.seg);
    sop_buf_append_le64(mani, r->durable.off);
    sop_buf_append_le64(mani, db->reg.next_lid);
    sop_buf_append_le64(mani, db->next_store_id);
    sop_buf_append_le64(mani, db->next_txn_id);
    uint32_t nst = 0;
    size_t nst_off = mani->len;
    sop_buf_append_le32(mani, 0);
    for (sop_store *s = atomic_load(&db->stores); s; s = s->next) {
        uint64_t cl = atomic_load(&s->created_lsn);
        if (cl > C || atomic_load(&s->dropped_lsn) <= C)
            continue;
        sop_buf_append_le64(mani, s->id);
        sop_buf_append_le64(mani, s->root_lid);
        sop_buf_append_le64(mani, sop_store__count_at(s, C));
        sop_buf_append_le64(mani, s->next_seq);
        sop_buf_append_le64(mani, cl);
        sop_buf_append_le16(mani, (uint16_t)strlen(s->name));
        sop_buf_append(mani, s->name, strlen(s->name));
        sop_buf_append_le32(mani, s->flags);
        sop_buf_append_le32(mani, s->slot_length);
        sop_buf_append_le32(mani, s->max_inline);
        size_t cl2 = s->comparator ? strlen(s->comparator) : 0;
        sop_buf_append_le16(mani, (uint16_t)cl2);
        sop_buf_append(mani, s->comparator, cl2);
        sop_buf_append_le32(mani, (uint32_t)s->key_spec_len);
        sop_buf_append(mani, s->key_spec, s->key_spec_len);
        nst++;
    }
    uint32_t npr = 0;
    size_t npr_off = mani->len;
    sop_buf_append_le32(mani, 0);
    for (sop_prepared *p = db->prepared; p; p = p->next) {
        if (p->lsn > C)
            continue;
        sop_buf_append_le64(mani, p->id);
        sop_buf_append_le64(mani, p->lsn);
        sop_buf_append_le32(mani, (uint32_t)p->body_len);
        sop_buf_append(mani, p->body, p->body_len);
        npr++;
    }
    if (sop_buf_status(mani) == SOP_OK) { /* else the caller reports it */
        sop_put_le32(mani->data + nst_off, nst);
        sop_put_le32(mani->data + npr_off, npr);
    }
}

/* Phase 4c, under commit_mu: the accounting at C (C4) and the registry's
 * versions at C. Its end is each segment's size now: the node blobs below
 * it are this checkpoint's (counted above) or older. The lid count goes at
 * *nl_off, patched by the caller (rcx->count) once the buffer is known
 * good; rcx->bad if a node at C has no blob. */
static void ckpt_encode_space(ckpt_run *r, struct reg_collect *rcx, size_t *nl_off)
{
    sop_db *db = r->db;
    sop_buf *mani = &r->mani;
    sop_buf_append_le32(mani, (uint32_t)r->as.n);
    for (size_t i = 0; i < r->as.n; i++) {
        const struct acct *e = &r->as.a[i];
        sop_buf_append_le64(mani, e->id);
        sop_buf_append_le64(mani, e->blob);
        sop_buf_append_le64(mani, e->dead);
        sop_buf_append_le64(mani, e->death_lsn);
        sop_buf_append_le64(mani, e->max_lsn);
        sop_buf_append_le64(mani, sop_wal__seg_size(db->wal, e->id)); /* 0 if gone */
        sop_buf_append_le64(mani, e->inflight);
    }
    *nl_off = mani->len;
    sop_buf_append_le64(mani, 0);
    *rcx = (struct reg_collect){mani, r->C, 0, 0};
    sop_registry__for_each(&db->reg, collect_lid, rcx);
}

/* Phase 5, (C1): the manifest is written durably as the next one; the
 * handle's checkpoint position moves to C and the older manifest goes. */
static int ckpt_publish(ckpt_run *r)
{
    sop_db *db = r->db;
    char path[4200];
    uint64_t seq = db->ckpt_seq + 1;
    snprintf(path, sizeof path, "%s/MANIFEST-%016" PRIx64, db->path, seq);
    int rc = write_file_durably(db, path, r->mani.data, r->mani.len);
    if (rc)
        return rc;
    uint64_t old_seq = db->ckpt_seq;
    db->ckpt_seq = seq;
    sop_mutex_lock(&db->commit_mu);
    db->ckpt_lsn = r->C;
    db->replay_from = r->replay;
    db->log_since_ckpt = 0;
    sop_mutex_unlock(&db->commit_mu);
    if (old_seq) {
        snprintf(path, sizeof path, "%s/MANIFEST-%016" PRIx64, db->path, old_seq);
        db->vfs->unlink(db->vfs, path); /* a leftover only costs space; open picks the newest */
    }
    return SOP_OK;
}

/* One checkpoint cleaning by pol; *moved: the node bytes it relocated. */
static int ckpt_run_policy(sop_db *db, const clean_policy *pol, uint64_t *moved)
{
    int rc = SOP_OK;
    ckpt_run r = {.db = db, .batch = SOP_BUF_INIT, .mani = SOP_BUF_INIT, .pol = pol};
    r.as = (struct acct_snap){NULL, 0, 0};
    *moved = 0;

    sop_mutex_lock(&db->ckpt_mu);
    /* 0. Seal a mostly dead append target, so this checkpoint cleans it. */
    int rotated = rotate_for_cleaning(db);
    if (rotated < 0) {
        sop_mutex_unlock(&db->ckpt_mu);
        return rotated == SOP_PANIC ? sop_db__panic(db, rotated) : rotated;
    }
    sop_cache__enter(db->cache, db->ckpt_slot); /* it reads images (cache.h L2) */
    int nothing_new = 0;
    rc = ckpt_cut(&r, rotated, &nothing_new);
    if (nothing_new) {
        sop_cache__leave(db->ckpt_slot);
        sop_mutex_unlock(&db->ckpt_mu);
        return SOP_OK;
    }
    if (rc)
        goto out;
    /* From here on the checkpoint reads only dirty images, which are never
     * evicted, and the versions at C, which ckpt_snap keeps: it needs no
     * epoch. Holding it through the writes kept every image evicted
     * meanwhile unfreeable (L1): readers loading nodes during a long
     * checkpoint grew memory far past the budget. */
    sop_cache__leave(db->ckpt_slot);
    /* The relocated copies are dirty node bytes now: evict clean images to
     * make room for them before the writes, not after (with no epoch held,
     * what is evicted here is freed at once unless a reader still sees it). */
    sop_cache__evict(db->cache);
    if ((rc = ckpt_write_nodes(&r)) != SOP_OK || (rc = ckpt_sync(&r)) != SOP_OK)
        goto out;
    /* 4. Under commit_mu: give the versions their locations, settle deaths,
     *    and encode the manifest. */
    struct reg_collect rcx;
    size_t nl_off;
    sop_mutex_lock(&db->commit_mu);
    ckpt_place(&r);
    ckpt_encode_catalog(&r);
    ckpt_encode_space(&r, &rcx, &nl_off);
    sop_mutex_unlock(&db->commit_mu);
    if (rcx.bad) {
        rc = SOP_CORRUPT_BKPT("checkpoint found a node without a blob");
        goto out;
    }
    if ((rc = sop_buf_status(&r.mani)) != SOP_OK)
        goto out;
    sop_put_le64(r.mani.data + nl_off, rcx.count);
    sop_buf_append_le32(&r.mani, sop_crc32c(0, r.mani.data, r.mani.len));
    if ((rc = sop_buf_status(&r.mani)) != SOP_OK || (rc = ckpt_publish(&r)) != SOP_OK)
        goto out;
    /* 6. (C3) reclaim segments. */
    sop_mutex_lock(&db->snap_mu);
    db->ckpt_snap = SOP_NEVER;
    sop_mutex_unlock(&db->snap_mu);
    struct reclaim_ctx rcl = {r.replay.seg, r.C, sop_db__snap_min(db, 0)};
    (void)sop_wal__reclaim(db->wal, seg_reclaimable, &rcl);
out:
    if (!r.placed) {
        /* Failed before the versions got them: nothing will reference the
         * node blobs already appended. */
        for (size_t j = 0; j < r.wn; j++)
            if (r.w[j].loc.seg != 0)
                sop_wal__blob_dead(db->wal, &r.w[j].loc, 0);
    }
    sop_free(r.as.a);
    sop_mutex_lock(&db->snap_mu);
    db->ckpt_snap = SOP_NEVER;
    sop_mutex_unlock(&db->snap_mu);
    sop_cache__leave(db->ckpt_slot);
    sop_mutex_unlock(&db->ckpt_mu);
    sop_cache__evict(db->cache);
    sop_free(r.w);
    sop_free(r.lids);
    sop_buf_dispose(&r.batch);
    sop_buf_dispose(&r.mani);
    sop_alloc_release_free_memory();
    *moved = r.moved;
    return rc;
}

int sop_ckpt__run(sop_db *db)
{
    uint64_t moved;
    return ckpt_run_policy(db, &CLEAN_SESSION, &moved);
}

struct space_sum {
    uint64_t size, live;
};

static int sum_space(const sop_wal_seginfo *s, void *ctx)
{
    struct space_sum *t = ctx;
    t->size += s->size;
    t->live += s->dead_bytes < s->blob_bytes ? s->blob_bytes - s->dead_bytes : 0;
    return 0;
}

/* Cleaning rounds at close, at most (each moves at least cache / 8 or one
 * victim, emptiest first): a bound on the time close takes. */
#define CLOSE_ROUNDS 32

/* Is the folder over 5/4 of its live blob bytes, with a segment the close
 * policy would clean (or free)? */
static int close_cleaning_left(sop_db *db)
{
    struct space_sum t = {0, 0};
    (void)sop_wal__each_segment(db->wal, NULL, sum_space, &t);
    if (t.size * 4 <= t.live * 5)
        return 0;
    sop_mutex_lock(&db->commit_mu);
    int pending = space_work_pending(db, &CLEAN_CLOSE);
    sop_mutex_unlock(&db->commit_mu);
    return pending;
}

/*
 * The last checkpoint of a session (sop_db_close), then cleaning rounds
 * while the folder is over 5/4 of its live bytes (issue 12: bytes on disk
 * after close <= 1.5x the live data). The last checkpoint's own node blobs
 * kill most of what older segments held (an overwrite of every key leaves
 * them a few percent live), but its victims were chosen at its cut, before
 * those deaths: a second round at the same cut relocates what is left in
 * them and deletes them. Each round is a whole checkpoint, so the copies
 * take the checkpoint's path (C2: durable before the manifest naming them,
 * C1/C3: the old segments deleted only after it). Rounds stop when one
 * moves nothing (what is left cannot be copied) or after CLOSE_ROUNDS.
 */
int sop_ckpt__close(sop_db *db)
{
    uint64_t moved;
    int rc = ckpt_run_policy(db, &CLEAN_SESSION, &moved);
    for (int round = 1; rc == SOP_OK && round < CLOSE_ROUNDS && close_cleaning_left(db); round++)
        if ((rc = ckpt_run_policy(db, &CLEAN_CLOSE, &moved)) == SOP_OK && moved == 0)
            break;
    return rc;
}

void sop_ckpt__maybe(sop_db *db)
{
    uint64_t dirty = atomic_load_explicit(&db->dirty_bytes, memory_order_relaxed);
    if (dirty < db->opts.cache_bytes / 2 && db->log_since_ckpt < (1ull << 30))
        return;
    if (sop_mutex_trylock(&db->ckpt_mu) != 0)
        return; /* one is running */
    sop_mutex_unlock(&db->ckpt_mu);
    sop_ckpt__run(db); /* a failure leaves the log authoritative; retried later */
}

/* ---- loading ------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * The loaded manifest against itself. Its CRC says only that these are the
 * bytes some writer wrote; the engine trusts the counters and positions
 * below for the rest of the session, so a contradiction is SOP_CORRUPT here
 * rather than damage spread by later commits:
 *   - next_lid is past every lid in use (registry run, store roots): lids
 *     are never reused, and a reused one makes a commit replace another
 *     tree's node (or list one node twice in an apply);
 *   - next_store_id is past every store id, next_txn_id past every prepared
 *     id (new ones would repeat them);
 *   - stores have distinct ids, names and root lids (else two stores share a
 *     tree or one name), were created at or before ckpt_lsn (the checkpoint
 *     holds only stores live at it) and count at most INT64_MAX items (a
 *     count moves by signed deltas);
 *   - prepared transactions have distinct ids and lsn <= ckpt_lsn (the next
 *     checkpoint keeps only those: a later one would be lost).
 * The store ids and root lids a prepared body creates were reserved when it
 * was prepared: next_store_id / next_lid are raised past them, as replaying
 * its PREPARE record does (txn.c add_prepared).
 */
static int check_loaded(sop_db *db, const char *path, uint64_t C, uint64_t max_lid)
{
    size_t n = 0, k = 0;
    int rc = SOP_OK;
    for (sop_store *s = atomic_load(&db->stores); s; s = s->next)
        n++;
    uint64_t *ids = sop_malloc((n ? n : 1) * sizeof *ids);
    uint64_t *roots = sop_malloc((n ? n : 1) * sizeof *roots);
    char **names = sop_malloc((n ? n : 1) * sizeof *names);
    if (!ids || !roots || !names) {
        rc = sop_err(SOP_NOMEM, "manifest check");
        goto out;
    }
    for (sop_store *s = atomic_load(&db->stores); s; s = s->next, k++) {
        uint64_t created = atomic_load(&s->created_lsn);
        uint64_t count = atomic_load(&s->counts)->count;
        if (s->id == 0 || s->id >= db->next_store_id) {
            rc = SOP_CORRUPT_BKPT("%s: store '%s' has id %" PRIu64 ", next_store_id is %" PRIu64,
                                  path, s->name, s->id, db->next_store_id);
            goto out;
        }
        if (s->root_lid == 0 || s->root_lid >= db->reg.next_lid) {
            rc = SOP_CORRUPT_BKPT("%s: store '%s' has root lid %" PRIu64 ", next_lid is %" PRIu64,
                                  path, s->name, s->root_lid, db->reg.next_lid);
            goto out;
        }
        if (created > C) {
            rc = SOP_CORRUPT_BKPT("%s: store '%s' created at lsn %" PRIu64
                                  ", after the checkpoint lsn %" PRIu64,
                                  path, s->name, created, C);
            goto out;
        }
        if (count > INT64_MAX) {
            rc = SOP_CORRUPT_BKPT("%s: store '%s' count %" PRIu64 " is above INT64_MAX", path,
                                  s->name, count);
            goto out;
        }
        ids[k] = s->id;
        roots[k] = s->root_lid;
        names[k] = s->name;
    }
    qsort(ids, n, sizeof *ids, cmp_u64);
    qsort(roots, n, sizeof *roots, cmp_u64);
    qsort(names, n, sizeof *names, cmp_name);
    for (k = 1; k < n; k++) {
        if (ids[k] == ids[k - 1] || roots[k] == roots[k - 1] ||
            strcmp(names[k], names[k - 1]) == 0) {
            rc = SOP_CORRUPT_BKPT("%s: two stores share an id, a root lid or a name", path);
            goto out;
        }
    }
    if (db->reg.next_lid > SOP_MAX_LID + 1) {
        rc = SOP_CORRUPT_BKPT("%s: next_lid %" PRIu64 " is past the largest node id", path,
                              db->reg.next_lid);
        goto out;
    }
    if (max_lid >= db->reg.next_lid) {
        rc = SOP_CORRUPT_BKPT("%s: next_lid %" PRIu64 " is not past node %" PRIu64, path,
                              db->reg.next_lid, max_lid);
        goto out;
    }
    size_t np = 0;
    for (sop_prepared *p = db->prepared; p; p = p->next)
        np++;
    sop_free(ids);
    if (!(ids = sop_malloc((np ? np : 1) * sizeof *ids))) {
        rc = sop_err(SOP_NOMEM, "manifest check");
        goto out;
    }
    k = 0;
    for (sop_prepared *p = db->prepared; p; p = p->next) {
        ids[k++] = p->id;
        if (p->lsn > C) {
            rc = SOP_CORRUPT_BKPT("%s: prepared transaction %" PRIu64 " has lsn %" PRIu64
                                  ", after the checkpoint lsn %" PRIu64,
                                  path, p->id, p->lsn, C);
            goto out;
        }
        if (p->id == 0 || p->id >= db->next_txn_id) {
            rc =
                SOP_CORRUPT_BKPT("%s: prepared transaction id %" PRIu64 ", next_txn_id is %" PRIu64,
                                 path, p->id, db->next_txn_id);
            goto out;
        }
        if ((rc = sop_prepared__reserve_ids(db, p)) != SOP_OK)
            goto out;
    }
    qsort(ids, np, sizeof *ids, cmp_u64);
    for (k = 1; k < np; k++)
        if (ids[k] == ids[k - 1]) {
            rc = SOP_CORRUPT_BKPT("%s: two prepared transactions have id %" PRIu64, path, ids[k]);
            goto out;
        }
out:
    sop_free(ids);
    sop_free(roots);
    sop_free(names);
    return rc;
}

/*
 * (C1) At open, every manifest but the newest is obsolete: a crash between a
 * checkpoint's rename and its unlink of the previous one leaves it, and so
 * does a crash inside write_file_durably (a .tmp). Remove them, but first
 * sync the folder: the newest one's rename must be durable before the one
 * it replaced goes, or a power cut could leave no manifest at all. Best
 * effort: a leftover only costs space (open picks the newest).
 */
static void remove_obsolete_manifests(sop_db *db, const struct mani_scan *ms)
{
    char path[4200];
    int synced = db->opts.sync == SOP_SYNC_OFF;
    for (size_t i = 0; i < ms->old_n; i++) {
        uint64_t seq = ms->old[i] & ~MANI_TMP;
        int tmp = (ms->old[i] & MANI_TMP) != 0;
        if (!tmp && ms->found && seq == ms->best)
            continue;
        if (!synced) {
            if (db->vfs->sync_dir(db->vfs, db->path) != SOP_OK)
                return;
            synced = 1;
        }
        snprintf(path, sizeof path, "%s/MANIFEST-%016" PRIx64 "%s", db->path, seq,
                 tmp ? ".tmp" : "");
        db->vfs->unlink(db->vfs, path);
    }
}

/* The manifest at path, whole, into *data_out (*size_out bytes), its magic
 * and checksum verified: a manifest is written whole and renamed into place
 * (C1), so anything else is damage. */
static int mani_read(sop_db *db, const char *path, uint8_t **data_out, uint64_t *size_out)
{
    sop_file *f = NULL;
    uint8_t *data = NULL;
    uint64_t size;
    size_t got;
    int rc;
    SOP_TRY(db->vfs->open(&f, db->vfs, path, SOP_VFS_READ));
    SOP_TRY(db->vfs->size(f, &size));
    if (size < 20 || size > (1ull << 34)) {
        rc = SOP_CORRUPT_BKPT("%s: bad size %" PRIu64, path, size);
        goto out;
    }
    data = sop_malloc(size);
    if (!data) {
        rc = sop_err(SOP_NOMEM, "manifest of %" PRIu64 " bytes", size);
        goto out;
    }
    SOP_TRY(db->vfs->pread(f, data, size, 0, &got));
    if (got != size || memcmp(data, MANI_MAGIC, 8) != 0 ||
        sop_get_le32(data + size - 4) != sop_crc32c(0, data, size - 4)) {
        rc = SOP_CORRUPT_BKPT("%s: bad magic or checksum", path);
        goto out;
    }
    *data_out = data;
    *size_out = size;
    data = NULL;
out:
    if (f)
        db->vfs->close(f);
    sop_free(data);
    return rc;
}

/* The head: version, the cut *C, the replay and durable positions (checked
 * against the log) and the id counters. */
static int mani_load_head(sop_db *db, sop_rd *r, const char *path, uint64_t *C)
{
    uint32_t version = sop_rd_u32(r);
    if (version != 1 && version != 2)
        return sop_err(SOP_VERSION, "%s: unknown manifest version", path);
    /* Version 1 accounted the log up to the manifest's writing, value blobs
     * included; version 2 at its cut (C4). */
    db->acct_at_cut = version == 2;
    sop_rd_u32(r);
    *C = sop_rd_u64(r);
    db->replay_from.seg = sop_rd_u64(r);
    db->replay_from.off = sop_rd_u64(r);
    db->durable_from.seg = sop_rd_u64(r);
    db->durable_from.off = sop_rd_u64(r);
    /* Recovery replays from replay_from, and the log up to durable_from was
     * synced by the checkpoint: replay <= durable, both in segments that
     * exist (a checkpoint's own segment is deleted only by a later one, and
     * never by a session that wrote nothing), the replay offset inside its
     * segment. A position past the log would replay nothing: the commits
     * after the checkpoint would vanish, and an id of UINT64_MAX would wrap
     * the next segment's id to 0. */
    sop_seg *rs = sop_wal__segment(db->wal, db->replay_from.seg);
    if (r->bad)
        return SOP_CORRUPT_BKPT("%s: truncated", path);
    if (!rs || !sop_wal__segment(db->wal, db->durable_from.seg) ||
        db->replay_from.seg > db->durable_from.seg ||
        (db->replay_from.seg == db->durable_from.seg &&
         db->replay_from.off > db->durable_from.off) ||
        db->replay_from.off > rs->size)
        return SOP_CORRUPT_BKPT("%s: replay position %" PRIu64 ":%" PRIu64
                                " / durable position %" PRIu64 ":%" PRIu64
                                " out of order or outside the log",
                                path, db->replay_from.seg, db->replay_from.off,
                                db->durable_from.seg, db->durable_from.off);
    /* Segment ids are never reused (W1), even of segments deleted since. */
    sop_wal__reserve_ids(db->wal, db->durable_from.seg);
    sop_wal__reserve_ids(db->wal, db->replay_from.seg);
    db->reg.next_lid = sop_rd_u64(r);
    db->next_store_id = sop_rd_u64(r);
    db->next_txn_id = sop_rd_u64(r);
    return SOP_OK;
}

/* The store catalog: each entry becomes a linked store with its count at
 * the cut. A truncated run stops the loop; the caller reports it. */
static int mani_load_stores(sop_db *db, sop_rd *r, const char *path)
{
    uint32_t nst = sop_rd_u32(r);
    for (uint32_t i = 0; i < nst && !r->bad; i++) {
        sop_store_def def = {.created_lsn = 0};
        def.id = sop_rd_u64(r);
        def.root_lid = sop_rd_u64(r);
        uint64_t count = sop_rd_u64(r);
        def.next_seq = sop_rd_u64(r);
        def.created_lsn = sop_rd_u64(r);
        def.name = sop_rd_val16(r);
        def.flags = sop_rd_u32(r);
        def.slot_length = sop_rd_u32(r);
        def.max_inline = sop_rd_u32(r);
        def.comparator = sop_rd_val16(r);
        def.key_spec.len = sop_rd_u32(r);
        def.key_spec.data = sop_rd_take(r, def.key_spec.len);
        if (r->bad) /* before the lengths size allocations: they are from disk */
            return SOP_CORRUPT_BKPT("%s: store entry", path);
        sop_store *s;
        int rc = sop_store__new(&s, db, &def);
        if (rc != SOP_OK)
            return rc;
        sop_countver *cv = sop_calloc(1, sizeof *cv);
        if (!cv) {
            sop_store__free(s);
            return sop_err(SOP_NOMEM, "store");
        }
        cv->lsn = 0;
        cv->count = count;
        atomic_init(&cv->older, NULL);
        atomic_init(&s->counts, cv);
        sop_db__store_link(db, s);
    }
    return SOP_OK;
}

/* The prepared transactions at the cut, decoded and listed. */
static int mani_load_prepared(sop_db *db, sop_rd *r, const char *path)
{
    uint32_t npr = sop_rd_u32(r);
    for (uint32_t i = 0; i < npr && !r->bad; i++) {
        sop_prepared *p = sop_calloc(1, sizeof *p);
        if (!p)
            return sop_err(SOP_NOMEM, "prepared");
        sop_arena_init(&p->arena, 0);
        p->id = p->info.id = sop_rd_u64(r);
        p->lsn = p->info.lsn = sop_rd_u64(r);
        p->body_len = sop_rd_u32(r);
        const uint8_t *body = sop_rd_take(r, p->body_len);
        p->body = body ? sop_memdup(body, p->body_len) : NULL;
        int rc = SOP_OK;
        if (!p->body || (rc = sop_prepared__decode(p)) != SOP_OK) {
            if (!body)
                rc = SOP_CORRUPT_BKPT("%s: prepared entry", path);
            else if (!p->body)
                rc = sop_err(SOP_NOMEM, "prepared");
            sop_prepared__free(p);
            return rc;
        }
        sop_prepared__append(db, p);
    }
    return SOP_OK;
}

/* The space accounting at the cut (C4) into the segments that still exist
 * (one deleted since holds nothing recovery needs). */
static void mani_load_space(sop_db *db, sop_rd *r)
{
    uint32_t nseg = sop_rd_u32(r);
    for (uint32_t i = 0; i < nseg && !r->bad; i++) {
        uint64_t id = sop_rd_u64(r);
        uint64_t blob = sop_rd_u64(r), dead = sop_rd_u64(r), dl = sop_rd_u64(r), ml = sop_rd_u64(r);
        uint64_t acct_end = sop_rd_u64(r), inflight = sop_rd_u64(r);
        sop_seg *s = sop_wal__segment(db->wal, id);
        if (s) {
            s->blob_bytes = blob;
            s->dead_bytes = dead;
            s->death_lsn = dl;
            s->max_lsn = ml;
            s->acct_end = acct_end;
            /* blobs of transactions running at the checkpoint: recovery
             * claims those a replayed record references; the rest died */
            s->inflight_bytes = inflight;
        }
    }
}

/* The registry run (DESIGN D1): every node's blob location, published as
 * its clean version at lsn 0; *max_lid is the largest lid named. */
static int mani_load_registry(sop_db *db, sop_rd *r, uint64_t *max_lid)
{
    uint64_t nl = sop_rd_u64(r);
    *max_lid = 0;
    for (uint64_t i = 0; i < nl && !r->bad; i++) {
        uint64_t lid = sop_rd_u64(r);
        if (lid > *max_lid)
            *max_lid = lid;
        sop_loc loc;
        loc.seg = sop_rd_u64(r);
        loc.off = sop_rd_u64(r);
        loc.len = sop_rd_u32(r);
        loc.crc = sop_rd_u32(r);
        if (r->bad)
            break;
        if (!sop_wal__segment(db->wal, loc.seg))
            return SOP_CORRUPT_BKPT("node %" PRIu64 " lives in missing segment %" PRIu64, lid,
                                    loc.seg);
        sop_version *v = sop_version__new(0, NULL, 0, 0);
        if (!v)
            return sop_err(SOP_NOMEM, "registry");
        v->loc = loc;
        int rc = sop_registry__publish(&db->reg, lid, v);
        if (rc != SOP_OK) {
            sop_version__free(v);
            return rc;
        }
    }
    return SOP_OK;
}

/* The manifest's body after its magic, in file order (docs/FORMAT.md),
 * then its consistency (check_loaded); *C is its cut. */
static int mani_load_body(sop_db *db, const char *path, const uint8_t *data, uint64_t size,
                          uint64_t *C)
{
    sop_rd r = {data + 8, data + size - 4, 0};
    uint64_t max_lid;
    int rc;
    if ((rc = mani_load_head(db, &r, path, C)) != SOP_OK ||
        (rc = mani_load_stores(db, &r, path)) != SOP_OK ||
        (rc = mani_load_prepared(db, &r, path)) != SOP_OK)
        return rc;
    mani_load_space(db, &r);
    if ((rc = mani_load_registry(db, &r, &max_lid)) != SOP_OK)
        return rc;
    if (r.bad || r.p != r.end)
        return SOP_CORRUPT_BKPT("%s: truncated or trailing bytes", path);
    return check_loaded(db, path, *C, max_lid);
}

int sop_ckpt__load(sop_db *db, int *found_out)
{
    struct mani_scan ms = {0};
    uint8_t *data = NULL;
    uint64_t size = 0, C = 0;
    char path[4200];
    int rc;
    *found_out = 0;
    if ((rc = db->vfs->list_dir(db->vfs, db->path, scan_mani, &ms)) != SOP_OK)
        goto out; /* the VFS or the callback said why */
    if (!ms.found) {
        if (!db->readonly)
            remove_obsolete_manifests(db, &ms);
        goto out;
    }
    /* The newest manifest is the recovery base (C1): an older one may name
     * segments a later checkpoint deleted, so there is no falling back. */
    snprintf(path, sizeof path, "%s/MANIFEST-%016" PRIx64, db->path, ms.best);
    SOP_TRY(mani_read(db, path, &data, &size));
    SOP_TRY(mani_load_body(db, path, data, size, &C));
    db->applied_lsn = C;
    db->ckpt_lsn = C;
    db->ckpt_seq = ms.best;
    *found_out = 1;
    if (!db->readonly)
        remove_obsolete_manifests(db, &ms);
out:
    sop_free(data);
    sop_free(ms.old);
    return rc;
}
