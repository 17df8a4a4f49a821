/*
 * db.c - opening, recovering and closing a database folder; node loading;
 * snapshots; the store catalog helpers.
 *
 * Folder layout (details in docs/FORMAT.md):
 *   FORMAT             magic, format version, db uuid (written once)
 *   LOCK               OFD-locked while a handle has the folder open
 *   MANIFEST-<seq>     newest checkpoint (older ones are deleted, also at open)
 *   seg/<id>.seg       the segment log (wal.h)
 *
 * Open = lock, read or create FORMAT, load the newest manifest, register the
 * segment files, replay every valid transaction record after the manifest's
 * position (recovery), cut a torn tail off the newest segment, start a new
 * segment for appends. Recovery writes nothing but that cut, so running it
 * twice gives the same state (idempotent).
 */
#include "cache.h"
#include "commit.h"
#include "db.h"
#include "txn.h"

#include <stdio.h>
#include <stdlib.h>

#define FORMAT_MAGIC "SOPDB\0\0\1"
#define FORMAT_LEN   48

int sop_db__panic(sop_db *db, int rc)
{
    atomic_store(&db->panicked, 1);
    sop_wal__panic(db->wal, rc);
    /* Whatever the cause, the caller learns only that the outcome is now
     * recovery's to decide (a record may already be in the log). */
    return SOP_PANIC;
}

int sop_db__check_panic(sop_db *db)
{
    if (atomic_load_explicit(&db->panicked, memory_order_relaxed) ||
        sop_wal__panicked(db->wal))
        return sop_err(SOP_PANIC, "database handle is unusable after a fatal error; reopen it");
    return SOP_OK;
}

int sop_db__read_node(sop_db *db, const sop_loc *loc, uint8_t **payload_out, size_t *len_out)
{
    return sop_wal__read(db->wal, loc, SOP_REC_NODE, payload_out, len_out);
}

uint64_t sop_store__count_at(const sop_store *s, uint64_t snap)
{
    sop_countver *c = atomic_load_explicit(&((sop_store *)s)->counts, memory_order_acquire);
    while (c && c->lsn > snap)
        c = atomic_load_explicit(&c->older, memory_order_acquire);
    return c ? c->count : 0;
}

int sop_store__visible(const sop_store *s, uint64_t snap, const sop_txn *txn)
{
    sop_store *m = (sop_store *)s;
    uint64_t dropped = atomic_load_explicit(&m->dropped_lsn, memory_order_acquire);
    if (dropped <= snap)
        return 0;
    if (atomic_load_explicit(&m->pending_owner, memory_order_acquire) == txn && txn)
        return 1;
    return atomic_load_explicit(&m->created_lsn, memory_order_acquire) <= snap;
}

/* ---- the store catalog (D3) ------------------------------------------------ */

uint64_t sop_db__name_hash(const char *name, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a, then a final mix */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)name[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static size_t id_bucket(const sop_db *db, uint64_t id)
{
    id *= 0x9e3779b97f4a7c15ull;
    return (size_t)(id >> 32) & (db->cat_buckets - 1);
}

static size_t name_bucket(const sop_db *db, uint64_t hash)
{
    return (size_t)hash & (db->cat_buckets - 1);
}

static int name_is(const sop_store *s, uint64_t hash, const char *name, size_t len)
{
    return s->name_hash == hash && strlen(s->name) == len && memcmp(s->name, name, len) == 0;
}

static int catalog_init(sop_db *db)
{
    db->cat_buckets = 16;
    db->cat_by_name = sop_calloc(db->cat_buckets, sizeof *db->cat_by_name);
    db->cat_by_id = sop_calloc(db->cat_buckets, sizeof *db->cat_by_id);
    return db->cat_by_name && db->cat_by_id ? SOP_OK : sop_err(SOP_NOMEM, "store catalog");
}

/* Double the buckets when the chains average more than one store (cat_mu).
 * Without memory the chains just grow longer. */
static void catalog_grow(sop_db *db)
{
    if (db->cat_count <= db->cat_buckets)
        return;
    size_t n = db->cat_buckets * 2;
    sop_store **by_name = sop_calloc(n, sizeof *by_name), **by_id = sop_calloc(n, sizeof *by_id);
    if (!by_name || !by_id) {
        sop_free(by_name);
        sop_free(by_id);
        return;
    }
    sop_free(db->cat_by_name);
    sop_free(db->cat_by_id);
    db->cat_by_name = by_name;
    db->cat_by_id = by_id;
    db->cat_buckets = n;
    for (sop_store *s = atomic_load(&db->stores); s; s = s->next) {
        size_t b = name_bucket(db, s->name_hash);
        s->name_next = by_name[b];
        by_name[b] = s;
        if (s->in_id_index) {
            b = id_bucket(db, s->id);
            s->id_next = by_id[b];
            by_id[b] = s;
        }
    }
}

static void index_id_locked(sop_db *db, sop_store *s)
{
    if (s->in_id_index || s->id == 0 || atomic_load(&s->created_lsn) == SOP_NEVER)
        return;
    size_t b = id_bucket(db, s->id);
    s->id_next = db->cat_by_id[b];
    db->cat_by_id[b] = s;
    s->in_id_index = 1;
}

void sop_db__store_link(sop_db *db, sop_store *s)
{
    s->name_hash = sop_db__name_hash(s->name, strlen(s->name));
    sop_mutex_lock(&db->cat_mu);
    sop_store *head = atomic_load(&db->stores);
    s->prev = NULL;
    s->next = head;
    if (head)
        head->prev = s;
    atomic_store_explicit(&db->stores, s, memory_order_release);
    size_t b = name_bucket(db, s->name_hash);
    s->name_next = db->cat_by_name[b];
    db->cat_by_name[b] = s;
    index_id_locked(db, s);
    db->cat_count++;
    catalog_grow(db);
    sop_mutex_unlock(&db->cat_mu);
}

void sop_db__store_published(sop_db *db, sop_store *s)
{
    sop_mutex_lock(&db->cat_mu);
    index_id_locked(db, s);
    sop_mutex_unlock(&db->cat_mu);
}

/* Take s out of the list and the indexes and free it (commit_mu held). */
static void store_unlink_free(sop_db *db, sop_store *s)
{
    sop_mutex_assert_held(&db->commit_mu); /* (D3) */
    if (s->on_count_multi) {
        sop_store **pp = &db->count_multi;
        while (*pp != s)
            pp = &(*pp)->counts_next;
        *pp = s->counts_next;
    }
    sop_mutex_lock(&db->cat_mu);
    if (s->prev)
        s->prev->next = s->next;
    else
        atomic_store_explicit(&db->stores, s->next, memory_order_release);
    if (s->next)
        s->next->prev = s->prev;
    sop_store **pp = &db->cat_by_name[name_bucket(db, s->name_hash)];
    while (*pp != s)
        pp = &(*pp)->name_next;
    *pp = s->name_next;
    if (s->in_id_index) {
        pp = &db->cat_by_id[id_bucket(db, s->id)];
        while (*pp != s)
            pp = &(*pp)->id_next;
        *pp = s->id_next;
    }
    db->cat_count--;
    sop_mutex_unlock(&db->cat_mu);
    sop_store__free(s);
}

void sop_db__count_versions(sop_db *db, sop_store *s)
{
    if (s->on_count_multi)
        return;
    s->on_count_multi = 1;
    s->counts_next = db->count_multi;
    db->count_multi = s;
}

void sop_db__trim_counts(sop_db *db, uint64_t snap_min)
{
    sop_store **pp = &db->count_multi;
    while (*pp) {
        sop_store *s = *pp;
        /* Keep the newest version <= snap_min and the newer ones. */
        sop_countver *c = atomic_load(&s->counts);
        while (c && c->lsn > snap_min)
            c = atomic_load(&c->older);
        if (c) {
            sop_countver *rest = atomic_load(&c->older);
            atomic_store(&c->older, NULL);
            while (rest) {
                sop_countver *nx = atomic_load(&rest->older);
                sop_free(rest);
                rest = nx;
            }
        }
        sop_countver *head = atomic_load(&s->counts);
        if (head && !atomic_load(&head->older)) {
            *pp = s->counts_next; /* one version left */
            s->on_count_multi = 0;
        } else {
            pp = &s->counts_next;
        }
    }
}

void sop_db__store_dropped(sop_db *db, sop_store *s)
{
    s->dropped_next = db->cat_dropped;
    db->cat_dropped = s;
}

void sop_db__reap_stores(sop_db *db, uint64_t snap_min)
{
    sop_store **pp = &db->cat_dropped;
    while (*pp) {
        sop_store *s = *pp;
        /* Invisible to every snapshot >= snap_min (sop_store__visible), and
         * later ones start at visible_lsn >= snap_min. A checkpoint's cut C
         * is >= snap_min too (ckpt_snap), and its manifest holds only
         * stores live at C. */
        if (atomic_load(&s->dropped_lsn) <= snap_min) {
            *pp = s->dropped_next;
            store_unlink_free(db, s);
        } else {
            pp = &s->dropped_next;
        }
    }
}

void sop_db__discard_pending(sop_db *db, sop_txn *t)
{
    /* Stores in t's write sets that never committed are t's own creates
     * (nobody else can see a pending store, D3). Nothing else refers to
     * them now that t ends: its commit, if any, is over. */
    int any = 0;
    for (sop_ws *w = t->ws; w && !any; w = w->next)
        any = atomic_load(&w->store->created_lsn) == SOP_NEVER;
    if (!any)
        return;
    sop_mutex_lock(&db->commit_mu);
    for (sop_ws *w = t->ws; w; w = w->next)
        if (atomic_load(&w->store->created_lsn) == SOP_NEVER) {
            store_unlink_free(db, w->store);
            w->store = NULL;
        }
    sop_mutex_unlock(&db->commit_mu);
}

sop_store *sop_db__store_for_txn(sop_db *db, const char *name, sop_txn *t)
{
    size_t len = strlen(name);
    uint64_t h = sop_db__name_hash(name, len);
    sop_store *found = NULL;
    sop_mutex_lock(&db->cat_mu);
    for (sop_store *s = db->cat_by_name[name_bucket(db, h)]; s && !found; s = s->name_next) {
        db->cat_probes++;
        if (!name_is(s, h, name, len) || !sop_store__visible(s, t->snap, t))
            continue;
        sop_ws *w = sop_txn__ws(t, s, 0);
        if (!w || !w->dropped)
            found = s;
    }
    sop_mutex_unlock(&db->cat_mu);
    return found;
}

sop_store *sop_db__store_live_named(sop_db *db, const char *name, size_t len)
{
    uint64_t h = sop_db__name_hash(name, len);
    sop_store *found = NULL;
    sop_mutex_lock(&db->cat_mu);
    for (sop_store *s = db->cat_by_name[name_bucket(db, h)]; s && !found; s = s->name_next) {
        db->cat_probes++;
        if (name_is(s, h, name, len) && atomic_load(&s->created_lsn) != SOP_NEVER &&
            atomic_load(&s->dropped_lsn) == SOP_NEVER)
            found = s;
    }
    sop_mutex_unlock(&db->cat_mu);
    return found;
}

sop_store *sop_db__store_by_id(sop_db *db, uint64_t id)
{
    if (id == 0)
        return NULL;
    sop_store *found = NULL;
    sop_mutex_lock(&db->cat_mu);
    for (sop_store *s = db->cat_by_id[id_bucket(db, id)]; s && !found; s = s->id_next) {
        db->cat_probes++;
        if (s->id == id)
            found = s;
    }
    sop_mutex_unlock(&db->cat_mu);
    return found;
}

int sop_db__comparator(sop_keycmp *out, const sop_db *db, const void *name, size_t len)
{
    for (size_t k = 0; k < db->comparator_count; k++) {
        const char *n = db->comparators[k].name;
        if (strlen(n) == len && memcmp(n, name, len) == 0) {
            out->fn = db->comparators[k].compare;
            out->ctx = db->comparators[k].ctx;
            return 1;
        }
    }
    return 0;
}

static char *dup_cstr(sop_val v)
{
    char *c = sop_malloc(v.len + 1);
    if (c) {
        if (v.len)
            memcpy(c, v.data, v.len);
        c[v.len] = 0;
    }
    return c;
}

int sop_store__new(sop_store **out, sop_db *db, const sop_store_def *def)
{
    *out = NULL;
    sop_keycmp cmp = {NULL, NULL};
    if (def->comparator.len && !sop_db__comparator(&cmp, db, def->comparator.data, def->comparator.len))
        return sop_err(SOP_INVAL,
                       "store '%.*s' needs comparator '%.*s', which is not registered in "
                       "sop_db_options.comparators",
                       (int)def->name.len, (const char *)def->name.data, (int)def->comparator.len,
                       (const char *)def->comparator.data);
    sop_store *s = sop_calloc(1, sizeof *s);
    if (!s)
        return sop_err(SOP_NOMEM, "store");
    s->db = db;
    s->id = def->id;
    s->root_lid = def->root_lid;
    s->flags = def->flags;
    s->slot_length = def->slot_length;
    s->max_inline = def->max_inline;
    s->next_seq = def->next_seq;
    s->cmp = cmp;
    s->name = dup_cstr(def->name);
    s->comparator = def->comparator.len ? dup_cstr(def->comparator) : NULL;
    s->key_spec_len = def->key_spec.len;
    s->key_spec = def->key_spec.len ? sop_memdup(def->key_spec.data, def->key_spec.len) : NULL;
    atomic_init(&s->created_lsn, def->created_lsn);
    atomic_init(&s->dropped_lsn, SOP_NEVER);
    atomic_init(&s->pending_owner, def->pending_owner);
    atomic_init(&s->counts, NULL);
    if (!s->name || (def->comparator.len && !s->comparator) ||
        (def->key_spec.len && !s->key_spec)) {
        sop_store__free(s);
        return sop_err(SOP_NOMEM, "store");
    }
    *out = s;
    return SOP_OK;
}

void sop_store__free(sop_store *s)
{
    if (!s)
        return;
    sop_countver *c = atomic_load(&s->counts);
    while (c) {
        sop_countver *n = atomic_load(&c->older);
        sop_free(c);
        c = n;
    }
    sop_free(s->name);
    sop_free(s->comparator);
    sop_free(s->key_spec);
    sop_free(s);
}

uint64_t sop_db__snap_min(sop_db *db, int rw_only)
{
    sop_mutex_lock(&db->snap_mu);
    uint64_t m = atomic_load(&db->visible_lsn);
    for (sop_txn *t = db->active; t; t = t->next_active) {
        if (rw_only && (t->flags & SOP_TXN_READONLY))
            continue;
        if (t->snap < m)
            m = t->snap;
    }
    if (!rw_only && db->ckpt_snap < m)
        m = db->ckpt_snap;
    sop_mutex_unlock(&db->snap_mu);
    return m;
}

/* ---- FORMAT file --------------------------------------------------------- */

static int format_write(sop_db *db)
{
    char path[4096], tmp[4096];
    uint8_t buf[FORMAT_LEN];
    sop_file *f = NULL;
    int rc;
    memset(buf, 0, sizeof buf);
    memcpy(buf, FORMAT_MAGIC, 8);
    sop_put_le32(buf + 8, SOP_FORMAT_VERSION);
    if ((rc = db->vfs->random(db->vfs, db->uuid, 16)) != SOP_OK)
        return rc;
    memcpy(buf + 16, db->uuid, 16);
    sop_put_le32(buf + 44, sop_crc32c(0, buf, 44));
    snprintf(path, sizeof path, "%s/FORMAT", db->path);
    snprintf(tmp, sizeof tmp, "%s/FORMAT.tmp", db->path);
    SOP_TRY(db->vfs->open(&f, db->vfs, tmp, SOP_VFS_WRITE | SOP_VFS_CREATE));
    SOP_TRY(db->vfs->truncate(f, 0));
    SOP_TRY(db->vfs->pwrite(f, buf, sizeof buf, 0));
    if (db->opts.sync != SOP_SYNC_OFF) /* sop.h: SOP_SYNC_OFF syncs nothing */
        SOP_TRY(db->vfs->sync(f, 0));
    rc = db->vfs->close(f);
    f = NULL;
    SOP_TRY(rc);
    SOP_TRY(db->vfs->rename(db->vfs, tmp, path));
    if (db->opts.sync != SOP_SYNC_OFF)
        SOP_TRY(db->vfs->sync_dir(db->vfs, db->path));
out:
    if (f)
        db->vfs->close(f);
    return rc;
}

static int format_read(sop_db *db, const char *path)
{
    uint8_t buf[FORMAT_LEN];
    sop_file *f = NULL;
    size_t got = 0;
    int rc = db->vfs->open(&f, db->vfs, path, SOP_VFS_READ);
    if (rc)
        return rc;
    rc = db->vfs->pread(f, buf, sizeof buf, 0, &got);
    db->vfs->close(f);
    if (rc)
        return rc;
    if (got < 12 || memcmp(buf, FORMAT_MAGIC, 8) != 0)
        return sop_err(SOP_INVAL, "%s is not a libsop database (bad FORMAT file)", db->path);
    uint32_t ver = sop_get_le32(buf + 8);
    if (ver > SOP_FORMAT_VERSION)
        return sop_err(SOP_VERSION, "%s has format version %u; this library reads up to %u",
                       db->path, ver, SOP_FORMAT_VERSION);
    if (ver < SOP_FORMAT_VERSION) /* pre-release formats: no conversion */
        return sop_err(SOP_VERSION,
                       "%s has format version %u, from an older libsop; this one reads %u "
                       "(dump it with that version's `sop dump`, load it with this one's)",
                       db->path, ver, SOP_FORMAT_VERSION);
    if (got != FORMAT_LEN || sop_get_le32(buf + 44) != sop_crc32c(0, buf, 44))
        return SOP_CORRUPT_BKPT("%s: FORMAT checksum mismatch", db->path);
    memcpy(db->uuid, buf + 16, 16);
    return SOP_OK;
}

struct dir_scan {
    int foreign;       /* entries that are not ours */
    int has_format;
    char first_foreign[256];
};

static int scan_top(const char *name, void *ctx)
{
    struct dir_scan *d = ctx;
    if (strcmp(name, "FORMAT") == 0) {
        d->has_format = 1;
        return 0;
    }
    if (strcmp(name, "LOCK") == 0 || strcmp(name, "FORMAT.tmp") == 0 ||
        strcmp(name, "seg") == 0 || strncmp(name, "MANIFEST-", 9) == 0)
        return 0;
    if (!d->foreign)
        snprintf(d->first_foreign, sizeof d->first_foreign, "%s", name);
    d->foreign++;
    return 0;
}

/* ---- segment discovery and replay ---------------------------------------- */

struct seg_list {
    uint64_t *ids;
    size_t n, cap;
    int bad;
};

static int scan_seg(const char *name, void *ctx)
{
    struct seg_list *l = ctx;
    size_t len = strlen(name);
    if (len != 20 || strcmp(name + 16, ".seg") != 0)
        return 0; /* stray file: ignored */
    char *end;
    uint64_t id = strtoull(name, &end, 16);
    if (end != name + 16 || id == 0)
        return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        uint64_t *n = sop_realloc(l->ids, cap * sizeof *n);
        if (!n) {
            l->bad = 1;
            return sop_err(SOP_NOMEM, "segment list");
        }
        l->ids = n;
        l->cap = cap;
    }
    l->ids[l->n++] = id;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/*
 * Space accounting during recovery (docs/FORMAT.md, "Space accounting").
 * The manifest holds the accounting at its cut (ckpt.c C4); its node blobs
 * are counted up to each segment's acct_end. Value blobs after the cut, and
 * node blobs after acct_end, are counted here and kept in `unref` until a
 * replayed record references them; value blobs that were in flight at the
 * cut are claimed from inflight_bytes. Whatever is left unclaimed at the
 * end belonged to a transaction that never committed (or a checkpoint that
 * never finished): dead.
 */
struct replay_ctx {
    sop_db *db;
    sop_seg *seg;
    sop_u64map unref; /* (seg << 40 | off) -> record length */
    int rc;
};

static uint64_t blob_key(const sop_loc *loc)
{
    return (loc->seg << 40) | loc->off;
}

static void claim_blob(const sop_loc *loc, void *ctx)
{
    struct replay_ctx *r = ctx;
    if (sop_u64map_del(NULL, &r->unref, blob_key(loc)) == SOP_OK)
        return;
    sop_seg *s = sop_wal__segment(r->db->wal, loc->seg);
    if (s && loc->off < s->acct_end && s->inflight_bytes >= loc->len)
        s->inflight_bytes -= loc->len;
}

static int replay_cb(int type, uint64_t lsn, const uint8_t *payload, size_t len,
                     const sop_loc *loc, void *ctx)
{
    struct replay_ctx *r = ctx;
    if (type == SOP_REC_NODE || type == SOP_REC_VALUE) {
        /* Node blobs below acct_end are the manifest's checkpoint's own (or
         * older): counted in it. A version-2 manifest counts no value blob
         * after its cut (ckpt.c C4): every one replay finds is counted here. */
        if (loc->off >= r->seg->acct_end || (type == SOP_REC_VALUE && r->db->acct_at_cut)) {
            r->seg->blob_bytes += loc->len;
            if (sop_u64map_put(NULL, &r->unref, blob_key(loc), (void *)(uintptr_t)loc->len))
                return sop_err(SOP_NOMEM, "recovery accounting");
        }
        return SOP_OK;
    }
    if (type != SOP_REC_TXN)
        return SOP_OK;
    if (lsn > r->seg->max_lsn)
        r->seg->max_lsn = lsn;
    sop_txnrec_head h;
    const uint8_t *body;
    size_t blen;
    if (sop_txnrec__get_head(&h, &body, &blen, payload, len) != SOP_OK ||
        (sop_txnrec__has_body(h.kind) && sop_txn__body_blobs(body, blen, claim_blob, r) != SOP_OK))
        return SOP_CORRUPT_BKPT("transaction record at lsn %" PRIu64, lsn);
    int rc = sop_txn__replay(r->db, lsn, payload, len);
    if (rc == SOP_OK)
        r->db->log_since_ckpt += loc->len;
    return rc;
}

/*
 * The scan of segment s stopped at end (torn: bytes remain after it; end 0:
 * no valid header). Decide between a torn tail, which is cut off (or, for
 * a header-less segment, an interrupted creation, which is removed), and
 * damage (SOP_CORRUPT, nothing touched). Damage is certain when the bytes
 * at end were durable:
 *   - below the checkpoint's durable position (it synced them), even when
 *     the segment holding it simply ends early (truncated at a record
 *     boundary);
 *   - in a segment older than the newest (W5: it was synced when sealed);
 *   - below the durable mark of any valid record after end (W8): that
 *     record was appended after an fdatasync covered them. A power cut
 *     tears only bytes written after the last completed sync, so it cannot
 *     leave a valid record vouching for them.
 * Whatever no later byte vouches for - the end of the newest segment cut
 * at a record boundary, or the newest segment deleted - looks the same as
 * commits a crash never synced, and cannot be told apart.
 */
static int settle_segment(sop_db *db, sop_seg *s, uint64_t end, int torn, int newest)
{
    int rc = SOP_OK;
    int below_durable = (s->id < db->durable_from.seg && (torn || end == 0)) ||
                        (s->id == db->durable_from.seg && end < db->durable_from.off);
    if (below_durable)
        return SOP_CORRUPT_BKPT("segment %" PRIu64 " is damaged at offset %" PRIu64
                                ", below what the checkpoint made durable (%" PRIu64 ":%" PRIu64
                                ")",
                                s->id, end, db->durable_from.seg, db->durable_from.off);
    if (!torn && end > 0) {
        s->size = end;
        return SOP_OK;
    }
    if (!newest)
        return SOP_CORRUPT_BKPT("segment %" PRIu64 " is damaged at offset %" PRIu64
                                " but newer segments exist",
                                s->id, end);
    uint64_t vouched, by, lsn;
    if ((rc = sop_wal__vouched(db->wal, s, end, sop_commit__next(db), &vouched, &by, &lsn)) !=
        SOP_OK)
        return rc;
    if (vouched > end)
        return SOP_CORRUPT_BKPT("segment %" PRIu64 " is damaged at offset %" PRIu64
                                ": the valid record at offset %" PRIu64 " (lsn %" PRIu64
                                ") was written after the segment was durable up to %" PRIu64,
                                s->id, end, by, lsn, vouched);
    if (end == 0 && sop_wal__note_id(db->wal) == s->id)
        return SOP_CORRUPT_BKPT("segment %" PRIu64 " has a damaged header, though it was "
                                "durable (LOCK names the segment)",
                                s->id);
    if (end == 0 && !db->readonly) {
        /* No valid header, nothing after it: a creation a crash interrupted
         * (the header is synced before anything else is written). It holds
         * no record; remove it, and let the next segment take its id. */
        return sop_wal__drop_segment(db->wal, s);
    }
    /* (W9) the note may claim more of it (a zero extension): lower it first */
    if (!db->readonly && (rc = sop_wal__note_cut(db->wal, s->id, end)) == SOP_OK &&
        (rc = db->vfs->truncate(s->file, end)) == SOP_OK && db->opts.sync != SOP_SYNC_OFF)
        rc = db->vfs->sync(s->file, 1);
    if (rc == SOP_OK)
        s->size = end;
    return rc;
}

static int recover(sop_db *db)
{
    char dir[4096];
    struct seg_list l = {0};
    struct replay_ctx rctx = {db, NULL, SOP_U64MAP_INIT, SOP_OK};
    int rc, found = 0;
    snprintf(dir, sizeof dir, "%s/seg", db->path);
    SOP_TRY(db->vfs->list_dir(db->vfs, dir, scan_seg, &l));
    if (l.bad) {
        rc = sop_err(SOP_NOMEM, "segment list");
        goto out;
    }
    if (l.n)
        qsort(l.ids, l.n, sizeof *l.ids, cmp_u64);
    for (size_t i = 0; i < l.n; i++) {
        char path[4200];
        sop_file *f;
        uint64_t size;
        snprintf(path, sizeof path, "%s/%016" PRIx64 ".seg", dir, l.ids[i]);
        SOP_TRY(db->vfs->open(&f, db->vfs, path, db->readonly ? SOP_VFS_READ : SOP_VFS_WRITE));
        if ((rc = db->vfs->size(f, &size)) != SOP_OK ||
            (rc = sop_wal__add_segment(db->wal, l.ids[i], f, size)) != SOP_OK) {
            db->vfs->close(f);
            goto out;
        }
    }
    /* Recovery reads images without a transaction: hold an epoch (L2). */
    sop_cache__enter(db->cache, db->check_slot);
    SOP_TRY(sop_ckpt__load(db, &found));
    sop_loc from = db->replay_from;
    if (!found) {
        from.seg = l.n ? l.ids[0] : 0;
        from.off = 0;
    }
    /* From the replay position on, segment ids are consecutive: segments
     * are created one after the other (W1, W5), reclamation deletes only
     * segments before the replay position (C3), and an interrupted
     * creation recovery removes leaves its id to the next segment. A gap
     * is a deleted segment, whose records would otherwise vanish. */
    uint64_t noted, noted_min;
    SOP_TRY(sop_wal__noted_newest(db->vfs, db->lock_file, &noted, &noted_min));
    sop_wal__adopt_note(db->wal, noted, noted_min); /* a cut below it lowers it first */
    if (noted >= from.seg && noted > (l.n ? l.ids[l.n - 1] : 0)) {
        /* (W9) the log reached it, and a crash cannot undo that. */
        rc = SOP_CORRUPT_BKPT("segment %016" PRIx64 ".seg is missing: the log reached it "
                              "(LOCK), the newest segment file is %" PRIu64,
                              noted, l.n ? l.ids[l.n - 1] : 0);
        goto out;
    }
    {
        /* (W9) the log made that much of it durable (a zero extension, or
         * its header), and every lawful cut lowers the note first. */
        sop_seg *ns = noted ? sop_wal__segment(db->wal, noted) : NULL;
        if (ns && ns->size < noted_min) {
            rc = SOP_CORRUPT_BKPT("segment %016" PRIx64 ".seg is truncated: it has %" PRIu64
                                  " bytes, the log had made %" PRIu64 " bytes of it durable "
                                  "(LOCK)",
                                  noted, ns->size, noted_min);
            goto out;
        }
    }
    for (size_t i = 1; i < l.n; i++)
        if (l.ids[i - 1] >= from.seg && l.ids[i] != l.ids[i - 1] + 1) {
            rc = SOP_CORRUPT_BKPT("segment %016" PRIx64 ".seg is missing: the log after the "
                                  "checkpoint runs from segment %" PRIu64 " to %" PRIu64,
                                  l.ids[i - 1] + 1, from.seg, l.ids[l.n - 1]);
            goto out;
        }
    for (size_t i = 0; i < l.n; i++) {
        if (l.ids[i] < from.seg)
            continue;
        sop_seg *s = sop_wal__segment(db->wal, l.ids[i]);
        rctx.seg = s;
        uint64_t end;
        int torn;
        uint64_t off = l.ids[i] == from.seg ? from.off : 0;
        if (off > 0)
            SOP_TRY(sop_wal__check_seghdr(db->wal, s)); /* the scan starts past it */
        SOP_TRY(sop_wal__scan(db->wal, s, off, replay_cb, &rctx, &end, &torn));
        SOP_TRY(settle_segment(db, s, end, torn, i + 1 == l.n));
    }
    /* What we replayed may never have been synced (a process crash after
     * a SOP_SYNC_NORMAL commit, or between append and fdatasync). New
     * commits and checkpoints will build on it, so make it durable now,
     * before anything is appended after it (W5 across a process crash).
     * Older segments were synced when they were sealed. */
    if (l.n && !db->readonly && db->opts.sync != SOP_SYNC_OFF) {
        sop_seg *last = sop_wal__segment(db->wal, l.ids[l.n - 1]);
        if (last && (rc = db->vfs->sync(last->file, 1)) != SOP_OK)
            goto out;
    }
    {
        size_t pos = 0;
        uint64_t key;
        void *len;
        while (sop_u64map_next(&key, &len, &rctx.unref, &pos) == SOP_OK) {
            sop_loc dead = {key >> 40, key & ((1ull << 40) - 1), (uint32_t)(uintptr_t)len, 0};
            sop_wal__blob_dead(db->wal, &dead, db->applied_lsn);
        }
        sop_wal__settle(db->wal, db->applied_lsn); /* unclaimed in flight: never committed */
    }
    atomic_store(&db->visible_lsn, db->applied_lsn);
    /* Replayed drops: no snapshot yet. Nobody else has the handle, but the
     * catalog's rule (D3) is kept anyway, so store_unlink_free can check it. */
    sop_mutex_lock(&db->commit_mu);
    sop_db__reap_stores(db, db->applied_lsn);
    sop_mutex_unlock(&db->commit_mu);
    rc = SOP_OK;
out:
    sop_cache__leave(db->check_slot);
    sop_u64map_dispose(&rctx.unref);
    sop_free(l.ids);
    return rc;
}

/* ---- open / close -------------------------------------------------------- */

/* Bytes of sop_db_options that a caller of @p version has (sop.h
 * "Conventions"): a program built against an older sop.h passes a
 * shorter struct, so only that prefix may be read; the fields it lacks
 * keep their defaults (0). 0 for an unknown version. Version 1 is the
 * oldest; each new version adds its line here, ending at its last field. */
static size_t db_options_size(uint32_t version)
{
    _Static_assert(SOP_DB_OPTIONS_VERSION == 2, "a new version needs its size here");
    switch (version) {
    case 1:
        return offsetof(sop_db_options, vfs) + sizeof(const struct sop_vfs *);
    case 2:
        return offsetof(sop_db_options, l2) + sizeof(const struct sop_l2_cache *);
    default:
        return 0;
    }
}

int sop_db_options_init(sop_db_options *opts, uint32_t version)
{
    size_t n = db_options_size(version);
    if (!opts || n == 0)
        return sop_err(SOP_INVAL, "unknown sop_db_options version %u", version);
    memset(opts, 0, n);
    opts->version = version;
    return sop_done(SOP_OK);
}

static int copy_options(sop_db *db, const sop_db_options *in)
{
    sop_db_options o;
    memset(&o, 0, sizeof o);
    if (in) {
        size_t n = db_options_size(in->version);
        if (n == 0)
            return sop_err(SOP_INVAL, "unknown sop_db_options version %u", in->version);
        memcpy(&o, in, n);
    }
    if (o.flags & ~SOP_DB_NOCREATE)
        return sop_err(SOP_INVAL, "unknown sop_db_options flags 0x%x", o.flags);
    if ((unsigned)o.sync > SOP_SYNC_OFF)
        return sop_err(SOP_INVAL, "unknown sync mode %d", (int)o.sync);
    if (o.cache_bytes == 0)
        o.cache_bytes = 256ull << 20;
    if (o.cache_bytes < (1ull << 20))
        return sop_err(SOP_INVAL, "cache_bytes must be at least 1 MiB");
    if (o.segment_bytes == 0)
        o.segment_bytes = 64ull << 20;
    if (o.segment_bytes < (1ull << 20) || o.segment_bytes > (1ull << 40))
        return sop_err(SOP_INVAL, "segment_bytes must be between 1 MiB and 1 TiB");
    if (o.txn_time_limit_ms == 0)
        o.txn_time_limit_ms = 15ull * 60 * 1000;
    db->txn_limit_ns = o.txn_time_limit_ms >= UINT64_MAX / 1000000ull
                           ? UINT64_MAX
                           : o.txn_time_limit_ms * 1000000ull;
    if (o.comparator_count && !o.comparators)
        return sop_err(SOP_INVAL, "comparator_count without comparators");
    if (o.comparator_count) {
        db->comparators = sop_calloc(o.comparator_count, sizeof *db->comparators);
        if (!db->comparators)
            return sop_err(SOP_NOMEM, "comparators");
        for (size_t i = 0; i < o.comparator_count; i++) {
            const sop_comparator *c = &o.comparators[i];
            size_t nl = c->name ? strlen(c->name) : 0;
            if (nl == 0 || nl > 63 || !c->compare)
                return sop_err(SOP_INVAL, "comparator %zu needs a 1..63 byte name and a function",
                               i);
            /* A store records only the name: two functions under one name
             * would leave its order to the registration order. */
            for (size_t k = 0; k < i; k++)
                if (strcmp(db->comparators[k].name, c->name) == 0)
                    return sop_err(SOP_INVAL, "comparators %zu and %zu are both named '%s'",
                                   k, i, c->name);
            db->comparators[i] = *c;
            db->comparators[i].name = sop_strdup(c->name);
            db->comparator_count = i + 1;
            if (!db->comparators[i].name)
                return sop_err(SOP_NOMEM, "comparators");
        }
    }
    if (o.l2 && (o.l2->version != SOP_L2_CACHE_VERSION || !o.l2->get))
        return sop_err(SOP_INVAL, "l2: unknown sop_l2_cache version %u or no get method",
                       o.l2->version);
    o.comparators = NULL;
    db->opts = o;
    db->vfs = o.vfs ? o.vfs : sop_vfs_posix();
    return SOP_OK;
}

static void db_free(sop_db *db)
{
    if (!db)
        return;
    sop_store *s = atomic_load(&db->stores);
    while (s) {
        sop_store *n = s->next;
        sop_store__free(s);
        s = n;
    }
    while (db->hist_head) {
        sop_hist *h = db->hist_head;
        db->hist_head = h->next;
        sop_arena_dispose(&h->arena);
        sop_free(h);
    }
    while (db->prepared) {
        sop_prepared *p = db->prepared;
        db->prepared = p->next;
        sop_prepared__free(p);
    }
    db->prepared_last = NULL;
    for (size_t i = 0; i < SOP_TXN_QUARANTINE; i++)
        sop_free(db->txn_quarantine[i]);
    sop_registry__dispose(&db->reg);
    sop_cache__close(db->cache);
    sop_u64map_dispose(&db->dirty_lids);
    sop_u64map_dispose(&db->trim_lids);
    sop_free(db->deaths);
    sop_buf_dispose(&db->rec_buf);
    sop_wal__close(db->wal);
    if (db->lock_file)
        db->vfs->close(db->lock_file); /* drops the OFD lock */
    for (size_t i = 0; i < db->comparator_count; i++)
        sop_free((void *)db->comparators[i].name);
    sop_free(db->comparators);
    sop_mutex_destroy(&db->ckpt_mu);
    sop_mutex_destroy(&db->commit_mu);
    sop_mutex_destroy(&db->snap_mu);
    sop_mutex_destroy(&db->cat_mu);
    sop_free(db->cat_by_name);
    sop_free(db->cat_by_id);
    sop_free(db->path);
    sop_free(db);
}

int sop_db_open(sop_db **out, const char *path, const sop_db_options *opts)
{
    int rc, is_dir = 0;
    uint64_t size;
    char buf[4200];
    sop_err_clear();
    if (!out)
        return sop_err(SOP_INVAL, "db_out is NULL");
    *out = NULL;
    if (!path || !*path || strlen(path) > 3800)
        return sop_err(SOP_INVAL, "database path must be 1..3800 bytes");
    sop_db *db = sop_calloc(1, sizeof *db);
    if (!db)
        return sop_err(SOP_NOMEM, "database handle");
    sop_mutex_init(&db->ckpt_mu, 10, "ckpt");
    sop_mutex_init(&db->commit_mu, 20, "commit");
    sop_mutex_init(&db->snap_mu, 40, "snap");
    sop_mutex_init(&db->cat_mu, 80, "cat");
    sop_registry__init(&db->reg);
    sop_u64map_init(&db->dirty_lids);
    sop_u64map_init(&db->trim_lids);
    atomic_init(&db->stores, NULL);
    db->next_store_id = 1;
    db->next_txn_id = 1;
    db->ckpt_snap = SOP_NEVER;
    db->path = sop_strdup(path);
    if (!db->path) {
        rc = sop_err(SOP_NOMEM, "path");
        goto out;
    }
    SOP_TRY(copy_options(db, opts));
    if (!(db->cache = sop_cache__open(db, db->opts.cache_bytes)) ||
        !(db->ckpt_slot = sop_cache__slot_get(db->cache)) ||
        !(db->check_slot = sop_cache__slot_get(db->cache)) ||
        !(db->resolve_slot = sop_cache__slot_get(db->cache))) {
        rc = sop_err(SOP_NOMEM, "node cache");
        goto out;
    }
    sop_cache__set_l2(db->cache, db->opts.l2); /* before recovery: it reads nodes */
    SOP_TRY(catalog_init(db));

    rc = db->vfs->stat(db->vfs, path, &is_dir, &size);
    if (rc == SOP_NOTFOUND) {
        if (db->opts.flags & SOP_DB_NOCREATE) {
            rc = sop_err(SOP_NOTFOUND, "no database at %s", path);
            goto out;
        }
        rc = db->vfs->mkdir(db->vfs, path);
        if (rc == SOP_KEYEXIST)
            rc = SOP_OK;
        SOP_TRY(rc);
        /* The new folder's own entry must be durable too. */
        snprintf(buf, sizeof buf, "%s", path);
        char *slash = strrchr(buf, '/');
        while (slash && slash > buf && slash[1] == 0) { /* trailing slashes */
            *slash = 0;
            slash = strrchr(buf, '/');
        }
        if (!slash)
            snprintf(buf, sizeof buf, ".");
        else if (slash == buf)
            buf[1] = 0;
        else
            *slash = 0;
        if (db->opts.sync != SOP_SYNC_OFF)
            SOP_TRY(db->vfs->sync_dir(db->vfs, buf));
    } else if (rc) {
        goto out;
    } else if (!is_dir) {
        rc = sop_err(SOP_INVAL, "%s exists and is not a folder", path);
        goto out;
    }
    snprintf(buf, sizeof buf, "%s/LOCK", path);
    int lock_existed = db->vfs->stat(db->vfs, buf, &is_dir, &size) == SOP_OK;
    SOP_TRY(db->vfs->open(&db->lock_file, db->vfs, buf, SOP_VFS_WRITE | SOP_VFS_CREATE));
    rc = db->vfs->lock(db->lock_file, SOP_VFS_LOCK_EXCL);
    if (rc == SOP_BUSY) {
        rc = sop_err(SOP_BUSY, "%s is open in another process or handle", path);
        goto out;
    }
    SOP_TRY(rc);

    struct dir_scan ds = {0};
    SOP_TRY(db->vfs->list_dir(db->vfs, path, scan_top, &ds));
    snprintf(buf, sizeof buf, "%s/FORMAT", path);
    if (ds.has_format) {
        SOP_TRY(format_read(db, buf));
    } else {
        if (ds.foreign) {
            rc = sop_err(SOP_INVAL, "%s holds files that are not a libsop database (e.g. '%s')",
                         path, ds.first_foreign);
            goto out;
        }
        if (db->opts.flags & SOP_DB_NOCREATE) {
            if (!lock_existed) { /* leave the folder as we found it */
                snprintf(buf, sizeof buf, "%s/LOCK", path);
                db->vfs->unlink(db->vfs, buf);
            }
            rc = sop_err(SOP_NOTFOUND, "no database at %s", path);
            goto out;
        }
        snprintf(buf, sizeof buf, "%s/seg", path);
        rc = db->vfs->mkdir(db->vfs, buf);
        if (rc != SOP_OK && rc != SOP_KEYEXIST)
            goto out;
        if (db->opts.sync != SOP_SYNC_OFF)
            SOP_TRY(db->vfs->sync_dir(db->vfs, path));
        SOP_TRY(format_write(db));
    }
    snprintf(buf, sizeof buf, "%s/seg", path);
    rc = db->vfs->mkdir(db->vfs, buf);
    if (rc != SOP_OK && rc != SOP_KEYEXIST)
        goto out;
    SOP_TRY(sop_wal__open(&db->wal, db->vfs, path, db->uuid, db->opts.segment_bytes));
    /* (W9) the note goes to LOCK; (W7) zeros ahead of the tail pay off
     * only when commits fdatasync. */
    sop_wal__configure(db->wal, db->readonly ? NULL : db->lock_file,
                       db->opts.sync == SOP_SYNC_FULL && !db->readonly,
                       db->opts.sync == SOP_SYNC_OFF);
    db->arena_debug = sop_arena_debug_env();
    SOP_TRY(recover(db));
    /* Shared from here: every registry write holds commit_mu (R1, R3). */
    sop_registry__share(&db->reg, &db->commit_mu);
    SOP_TRY(sop_wal__start(db->wal));
    *out = db;
    return sop_done(SOP_OK);
out:
    db_free(db);
    return rc;
}

/* A session that wrote nothing leaves its fresh segment holding only the
 * header: remove it, so read-only uses (a monitoring loop of `sop stat`)
 * do not pile up files. Its id is not reused (the manifest remembers it). */
static void drop_empty_segment(sop_db *db)
{
    uint64_t keep = db->replay_from.seg > db->durable_from.seg ? db->replay_from.seg
                                                               : db->durable_from.seg;
    sop_wal__drop_empty_tail(db->wal, keep);
}

int sop_db_close(sop_db *db)
{
    int rc = SOP_OK;
    if (!db)
        return SOP_OK;
    sop_err_clear();
    sop_mutex_lock(&db->snap_mu);
    size_t live = 0;
    for (sop_txn *t = db->active; t; t = t->next_active)
        live += t->state != SOP_TXN_PREPARED;
    sop_mutex_unlock(&db->snap_mu);
    if (live)
        return sop_err(SOP_BADSTATE,
                       "%zu transaction(s) still open; end them before closing (prepared "
                       "ones may stay)",
                       live);
    /* Prepared handles are released as sop_txn_release does: their
     * transactions stay prepared (the checkpoint below writes them to the
     * manifest) for a coordinator to resolve by id after the next open. */
    for (;;) {
        sop_mutex_lock(&db->snap_mu);
        sop_txn *t = db->active;
        sop_mutex_unlock(&db->snap_mu);
        if (!t)
            break;
        sop_txn__free(t);
    }
    if (!atomic_load(&db->panicked) && !sop_wal__panicked(db->wal)) {
        rc = sop_ckpt__close(db);
        if (rc == SOP_OK && db->opts.sync != SOP_SYNC_OFF)
            rc = sop_wal__sync_all(db->wal);
        if (rc == SOP_OK)
            drop_empty_segment(db);
        if (rc == SOP_OK)
            rc = sop_wal__trim_tail(db->wal); /* (W7) */
    } else {
        rc = SOP_PANIC;
    }
    db_free(db);
    return sop_done(sop_err_lost_file(rc));
}

int sop_db_checkpoint(sop_db *db)
{
    sop_err_clear();
    if (!db)
        return sop_err(SOP_INVAL, "db is NULL");
    int rc = sop_db__check_panic(db);
    return rc ? rc : sop_done(sop_err_lost_file(sop_ckpt__run(db)));
}

int sop_db__stat(sop_db_stat_info *out, sop_db *db)
{
    sop_err_clear();
    if (!out || !db)
        return sop_err(SOP_INVAL, "NULL argument");
    memset(out, 0, sizeof *out);
    sop_mutex_lock(&db->commit_mu);
    out->last_lsn = db->applied_lsn;
    out->checkpoint_lsn = db->ckpt_lsn;
    for (sop_prepared *p = db->prepared; p; p = p->next)
        out->prepared++;
    sop_mutex_unlock(&db->commit_mu);
    out->commits = atomic_load(&db->st_commits);
    out->conflicts = atomic_load(&db->st_conflicts);
    out->merges = atomic_load(&db->st_merges);
    sop_cache_stat cs;
    sop_cache__stat(db->cache, &cs);
    out->node_loads = cs.loads;
    out->node_hits = cs.hits;
    out->cache_bytes = cs.bytes;
    out->dirty_bytes = atomic_load(&db->dirty_bytes);
    sop_wal_stats ws;
    sop_wal__stats(db->wal, &ws);
    out->syncs = ws.syncs;
    out->disk_bytes = ws.disk_bytes;
    out->live_bytes = ws.live_bytes;
    out->segments = ws.segments;
    return sop_done(SOP_OK);
}

/* Test hook (not in sop.h): drop the handle the way a crash would - no
 * checkpoint, no sync - abandoning live transactions. */
int sop_db__crash_close(sop_db *db);
int sop_db__crash_close(sop_db *db)
{
    while (db->active)
        sop_txn__free(db->active);
    db_free(db);
    return SOP_OK;
}
