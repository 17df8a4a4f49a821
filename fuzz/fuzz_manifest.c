/*
 * fuzz_manifest.c - libFuzzer target for the manifest decoder, sop_ckpt__load
 * (src/ckpt.c; layout in the comment at its top and in docs/FORMAT.md):
 * header and counters, store entries, prepared transactions (through
 * sop_prepared__decode), segment accounting and the registry run (lid ->
 * node location), then everything that trusts what it loaded: recovery,
 * lazy node loads, reads, the checker, a commit, the next checkpoint
 * (compaction and segment reclamation from the loaded accounting) and the
 * reopen of what that checkpoint wrote.
 *
 * Why structure-aware: the manifest ends with a CRC-32C of everything
 * before it, so mutated bytes stop at the checksum. Here the harness writes
 * the manifest itself, with the right magic and a correct CRC (the format
 * has no other checksum: the registry run is covered by the file's CRC).
 *
 * Once per process a small database is built with the library: five stores
 * (default, 4-slot nodes, duplicates, a registered "reverse" comparator,
 * separate value blobs), two segments (two sessions), a prepared
 * transaction, a checkpoint, then a commit after it and a crash. Its files
 * are kept in memory; the manifest is parsed into fields (and re-encoded to
 * the same bytes, checked), and every record in its segments is listed.
 *
 * Input: byte 0 = mode
 *   bits 0-1  0, 1: structured - the rest is a list of edits to the real
 *                   manifest's fields (below), re-encoded with correct
 *                   counts and CRC;
 *             2:    raw - "SOPMANI1", version 1, then the rest of the input
 *                   as the body, then its CRC;
 *             3:    raw - "SOPMANI1", then the rest of the input (from the
 *                   version field on), then its CRC
 *   bits 2-3  file name: 0, 1 the real sequence number; 2 UINT64_MAX (the
 *             next checkpoint's number wraps to 0); 3 the next number, with
 *             the real manifest left beside it
 *   bits 4-5  3: the newest segment file is left out
 *   bits 6-7  3: the CRC is wrong (the rejection path)
 * Edits, each: op byte, index byte, arguments; a value argument is a kind
 * byte then: a signed delta to the old value, a small number, one of a
 * table of edge values (0, 1, UINT32_MAX, UINT64_MAX, 2^36, ...), or 8
 * raw bytes.
 *   0 header field (ckpt_lsn, replay/durable positions, next lid/store/txn)
 *   1 version or reserved word
 *   2 store field (id, root lid, count, next_seq, created lsn, flags,
 *     slot_length, max_inline)
 *   3 store name, comparator ("", "reverse", unknown, raw) or key spec
 *   4 store entry duplicated / removed / moved to the end
 *   5 prepared id or lsn
 *   6 prepared body: cut, flip a byte, replace, append
 *   7 prepared entry duplicated / removed / moved to the end
 *   8 segment accounting field
 *   9 segment entry duplicated / removed / added
 *   10 registry entry field (lid, segment, offset, length, crc)
 *   11 two registry entries swap locations (still valid CRCs: misdirected)
 *   12 registry entry duplicated (same lid twice) / removed / moved to the
 *      end (order broken)
 *   13 registry entry pointed at a real record of any type (node, value,
 *      transaction, segment header), with its true length and CRC
 *   14 registry entry added (lid from a value) pointing at a real record
 *   15 a section count overridden, bytes cut off the end, or bytes appended
 *
 * Then: sop_db_open; every store read forwards, backwards, by count and by
 * point lookups; the prepared list; sop_db_check; one prepared transaction
 * committed or rolled back; one write transaction (every store, and a new
 * one); close; reopen, read, check, close.
 *
 * Properties (abort() on violation, so libFuzzer reports it):
 *   - no crash, hang, leak, memory error or UB; every call returns SOP_OK
 *     or a SOP_* code;
 *   - the real manifest (no edit, CRC right, all segments) opens, holds
 *     every item and passes sop_db_check;
 *   - if the first open passed sop_db_check, resolving a prepared
 *     transaction leaves it passing; and if the close succeeded, the
 *     database reopens and passes sop_db_check again (what the engine
 *     accepted and rewrote, it can read back);
 *   - no engine allocation above BIG_ALLOC (a length from disk trusted
 *     before it was checked).
 * Nothing is excused: bugs 9-13 of docs/TESTING.md, which this target
 * found, are fixed and their reproducers are in fuzz/regressions/. Syncs go
 * through a VFS that skips them and the folder lives on /dev/shm when it
 * exists, as in fuzz_open.
 *
 * Build and run: fuzz/fuzz_engine.mk (make fuzz-manifest-smoke).
 */
#include "txn.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);
int fuzz_write_seeds(const char *dir);
int sop_db__crash_close(sop_db *db); /* src/db.c test hook: drop without sync */

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_manifest: %s:%d: CHECK(%s) failed [%s]\n", __FILE__, __LINE__,   \
                    #cond, sop_errmsg());                                                          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_CODE(expr)                                                                           \
    do {                                                                                           \
        int code_ = (expr);                                                                        \
        FUZZ_CHECK(code_ <= 0 && code_ >= SOP_PANIC);                                              \
    } while (0)

#define MAX_FILES  16
#define MAX_EDITS  48
#define MAX_RECS   512
#define MAX_MS     16
#define MAX_MP     8
#define MAX_MG     16
#define MAX_MR     1024
#define FIELD_MAX  300  /* name, comparator, key spec bytes */
#define BODY_MAX   2048 /* prepared body bytes */
#define TAIL_MAX   1024
#define MANI_MAGIC "SOPMANI1"

/* ---- small helpers ------------------------------------------------------------------ */

typedef struct fbuf {
    uint8_t *p;
    size_t len, cap;
} fbuf;

static void fb_put(fbuf *b, const void *d, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        FUZZ_CHECK(p != NULL);
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void fb_u16(fbuf *b, uint16_t v)
{
    uint8_t t[2];
    sop_put_le16(t, v);
    fb_put(b, t, 2);
}

static void fb_u32(fbuf *b, uint32_t v)
{
    uint8_t t[4];
    sop_put_le32(t, v);
    fb_put(b, t, 4);
}

static void fb_u64(fbuf *b, uint64_t v)
{
    uint8_t t[8];
    sop_put_le64(t, v);
    fb_put(b, t, 8);
}

typedef struct in {
    const uint8_t *p;
    size_t n;
} in;

static uint8_t in_u8(in *r)
{
    if (!r->n)
        return 0;
    r->n--;
    return *r->p++;
}

static uint64_t in_u64(in *r)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)in_u8(r) << (8 * i);
    return v;
}

static size_t in_take(in *r, size_t want, const uint8_t **out)
{
    size_t n = want < r->n ? want : r->n;
    *out = r->p;
    r->p += n;
    r->n -= n;
    return n;
}

/* A value argument (see the top comment). */
static uint64_t in_value(in *r, uint64_t old)
{
    static const uint64_t edge[] = {
        0,          1,          2,         UINT32_MAX, (uint64_t)UINT32_MAX + 1, (1ull << 36) - 1,
        1ull << 36, 1ull << 40, INT64_MAX, 1ull << 63, UINT64_MAX - 1,           UINT64_MAX};
    uint8_t k = in_u8(r);
    switch (k & 3) {
    case 0:
        return old + (uint64_t)(int64_t)(int8_t)in_u8(r);
    case 1:
        return in_u8(r);
    case 2:
        return edge[(k >> 2) % (sizeof edge / sizeof edge[0])];
    default:
        return in_u64(r);
    }
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void rm_rf(const char *path)
{
    nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static int nosync_file(sop_file *file, int data_only)
{
    (void)file;
    (void)data_only;
    return SOP_OK;
}

static int nosync_dir(const sop_vfs *vfs, const char *path)
{
    (void)vfs;
    (void)path;
    return SOP_OK;
}

static int rev_cmp(const sop_val *a, const sop_val *b, void *ctx)
{
    (void)ctx;
    int c = sop_memcmp_keys(a->data, a->len, b->data, b->len);
    return (c < 0) - (c > 0);
}

static void slurp(const char *path, uint8_t **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    FUZZ_CHECK(f != NULL);
    FUZZ_CHECK(fseek(f, 0, SEEK_END) == 0);
    long n = ftell(f);
    FUZZ_CHECK(n >= 0);
    rewind(f);
    *data = malloc((size_t)n + 1);
    FUZZ_CHECK(*data != NULL);
    FUZZ_CHECK(fread(*data, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    *len = (size_t)n;
}

static void spill(const char *path, const uint8_t *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    FUZZ_CHECK(f != NULL);
    if (len)
        FUZZ_CHECK(fwrite(data, 1, len, f) == len);
    FUZZ_CHECK(fclose(f) == 0);
}

static unsigned sink(const void *p, size_t len)
{
    const volatile uint8_t *b = p;
    unsigned s = 0;
    for (size_t i = 0; i < len; i++)
        s += b[i];
    return s;
}

/* ---- the manifest as fields ----------------------------------------------------------- */

typedef struct xstore {
    uint64_t id, root, count, next_seq, created;
    uint32_t flags, slot, max_inline;
    uint16_t name_len, cmp_len;
    uint32_t spec_len;
    uint8_t name[FIELD_MAX], cmp[FIELD_MAX], spec[FIELD_MAX];
} xstore;

typedef struct xprep {
    uint64_t id, lsn;
    uint32_t body_len;
    uint8_t body[BODY_MAX];
} xprep;

typedef struct xseg {
    uint64_t f[7]; /* id, blob, dead, death lsn, max lsn, size, in flight */
} xseg;

typedef struct xreg {
    uint64_t lid, seg, off;
    uint32_t len, crc;
} xreg;

typedef struct xmani {
    uint32_t version, reserved;
    uint64_t h[8]; /* ckpt_lsn, replay seg/off, durable seg/off, next lid/store/txn */
    size_t nst, npr, nsg, nrg;
    xstore st[MAX_MS];
    xprep pr[MAX_MP];
    xseg sg[MAX_MG];
    xreg rg[MAX_MR];
    int count_set[4]; /* stores, prepared, segments, lids: write count_val instead */
    uint64_t count_val[4];
    size_t cut;      /* bytes cut off the end of the body */
    size_t tail_len; /* bytes appended to the body */
    uint8_t tail[TAIL_MAX];
} xmani;

/* Parse a manifest into m; -1 if it is malformed or exceeds the harness's
 * limits (the engine's verdict may still differ: it also checks the CRC). */
static int parse_manifest(xmani *m, const uint8_t *data, size_t len)
{
#define NEED(cond)                                                                                 \
    do {                                                                                           \
        if (!(cond))                                                                               \
            return -1;                                                                             \
    } while (0)
    memset(m, 0, sizeof *m);
    NEED(len > 12 && memcmp(data, MANI_MAGIC, 8) == 0);
    sop_rd r = {data + 8, data + len - 4, 0};
    m->version = sop_rd_u32(&r);
    m->reserved = sop_rd_u32(&r);
    for (int i = 0; i < 8; i++)
        m->h[i] = sop_rd_u64(&r);
    m->nst = sop_rd_u32(&r);
    NEED(m->nst <= MAX_MS);
    for (size_t i = 0; i < m->nst; i++) {
        xstore *s = &m->st[i];
        s->id = sop_rd_u64(&r);
        s->root = sop_rd_u64(&r);
        s->count = sop_rd_u64(&r);
        s->next_seq = sop_rd_u64(&r);
        s->created = sop_rd_u64(&r);
        sop_val name = sop_rd_val16(&r);
        s->flags = sop_rd_u32(&r);
        s->slot = sop_rd_u32(&r);
        s->max_inline = sop_rd_u32(&r);
        sop_val cmp = sop_rd_val16(&r);
        s->spec_len = sop_rd_u32(&r);
        const uint8_t *spec = sop_rd_take(&r, s->spec_len);
        NEED(!r.bad && name.len <= FIELD_MAX && cmp.len <= FIELD_MAX && s->spec_len <= FIELD_MAX);
        s->name_len = (uint16_t)name.len;
        s->cmp_len = (uint16_t)cmp.len;
        memcpy(s->name, name.data, name.len);
        if (cmp.len)
            memcpy(s->cmp, cmp.data, cmp.len);
        if (s->spec_len)
            memcpy(s->spec, spec, s->spec_len);
    }
    m->npr = sop_rd_u32(&r);
    NEED(m->npr <= MAX_MP);
    for (size_t i = 0; i < m->npr; i++) {
        xprep *p = &m->pr[i];
        p->id = sop_rd_u64(&r);
        p->lsn = sop_rd_u64(&r);
        p->body_len = sop_rd_u32(&r);
        const uint8_t *body = sop_rd_take(&r, p->body_len);
        NEED(!r.bad && p->body_len <= BODY_MAX);
        memcpy(p->body, body, p->body_len);
    }
    m->nsg = sop_rd_u32(&r);
    NEED(m->nsg <= MAX_MG);
    for (size_t i = 0; i < m->nsg; i++)
        for (int k = 0; k < 7; k++)
            m->sg[i].f[k] = sop_rd_u64(&r);
    m->nrg = sop_rd_u64(&r);
    NEED(m->nrg <= MAX_MR);
    for (size_t i = 0; i < m->nrg; i++) {
        xreg *g = &m->rg[i];
        g->lid = sop_rd_u64(&r);
        g->seg = sop_rd_u64(&r);
        g->off = sop_rd_u64(&r);
        g->len = sop_rd_u32(&r);
        g->crc = sop_rd_u32(&r);
    }
    NEED(!r.bad && r.p == r.end);
    return 0;
#undef NEED
}

/* Encode m (magic, fields, CRC); bad_crc: make the CRC wrong. */
static void encode_manifest(fbuf *b, const xmani *m, int bad_crc)
{
    b->len = 0;
    fb_put(b, MANI_MAGIC, 8);
    fb_u32(b, m->version);
    fb_u32(b, m->reserved);
    for (int i = 0; i < 8; i++)
        fb_u64(b, m->h[i]);
    fb_u32(b, m->count_set[0] ? (uint32_t)m->count_val[0] : (uint32_t)m->nst);
    for (size_t i = 0; i < m->nst; i++) {
        const xstore *s = &m->st[i];
        fb_u64(b, s->id);
        fb_u64(b, s->root);
        fb_u64(b, s->count);
        fb_u64(b, s->next_seq);
        fb_u64(b, s->created);
        fb_u16(b, s->name_len);
        fb_put(b, s->name, s->name_len);
        fb_u32(b, s->flags);
        fb_u32(b, s->slot);
        fb_u32(b, s->max_inline);
        fb_u16(b, s->cmp_len);
        fb_put(b, s->cmp, s->cmp_len);
        fb_u32(b, s->spec_len);
        fb_put(b, s->spec, s->spec_len);
    }
    fb_u32(b, m->count_set[1] ? (uint32_t)m->count_val[1] : (uint32_t)m->npr);
    for (size_t i = 0; i < m->npr; i++) {
        fb_u64(b, m->pr[i].id);
        fb_u64(b, m->pr[i].lsn);
        fb_u32(b, m->pr[i].body_len);
        fb_put(b, m->pr[i].body, m->pr[i].body_len);
    }
    fb_u32(b, m->count_set[2] ? (uint32_t)m->count_val[2] : (uint32_t)m->nsg);
    for (size_t i = 0; i < m->nsg; i++)
        for (int k = 0; k < 7; k++)
            fb_u64(b, m->sg[i].f[k]);
    fb_u64(b, m->count_set[3] ? m->count_val[3] : (uint64_t)m->nrg);
    for (size_t i = 0; i < m->nrg; i++) {
        fb_u64(b, m->rg[i].lid);
        fb_u64(b, m->rg[i].seg);
        fb_u64(b, m->rg[i].off);
        fb_u32(b, m->rg[i].len);
        fb_u32(b, m->rg[i].crc);
    }
    b->len -= m->cut < b->len - 8 ? m->cut : b->len - 8;
    fb_put(b, m->tail, m->tail_len);
    fb_u32(b, sop_crc32c(0, b->p, b->len) ^ (bad_crc ? 1u : 0u));
}

/* ---- allocation cap ------------------------------------------------------------------ */

/*
 * Every engine allocation goes through this allocator. Nothing in these small
 * databases needs more than BIG_ALLOC; a larger request means a length read
 * from disk sized an allocation before it was checked (bug 11 in
 * docs/TESTING.md: a blob location's u32 length, up to 4 GiB): a failure.
 */
#define BIG_ALLOC ((size_t)64 << 20)

static int refuse(size_t n)
{
    if (n <= BIG_ALLOC)
        return 0;
    fprintf(stderr, "fuzz_manifest: engine allocation of %zu bytes\n", n);
    abort();
}

static void *cap_malloc(size_t n, void *ctx)
{
    (void)ctx;
    return refuse(n) ? NULL : malloc(n);
}

static void *cap_realloc(void *p, size_t n, void *ctx)
{
    (void)ctx;
    return refuse(n) ? NULL : realloc(p, n);
}

static void cap_free(void *p, void *ctx)
{
    (void)ctx;
    free(p);
}

static const sop_allocator capped = {cap_malloc, cap_realloc, cap_free, NULL};

/* ---- the pristine database -------------------------------------------------------------- */

typedef struct pstore {
    const char *name;
    uint32_t flags;
    uint32_t slot_length;
    const char *comparator;
    unsigned first, step, n; /* keys key-<first + step * i>, i < n */
} pstore;

static const pstore PSTORES[] = {
    {"alpha", 0, 0, NULL, 0, 1, 60},
    {"beta", 0, 4, NULL, 0, 2, 50},
    {"dups", SOP_STORE_DUPLICATES, 8, NULL, 10, 1, 20},
    {"rev", 0, 6, "reverse", 100, 3, 40},
    {"sep", SOP_STORE_VALUES_SEPARATE, 0, NULL, 0, 5, 20},
};
#define NPSTORES (sizeof PSTORES / sizeof PSTORES[0])
#define REMOVED  5 /* beta keys removed in the second session */
#define LATE     3 /* alpha keys added after the checkpoint */
#define ITEMS    (60 + 50 + 20 + 40 + 20 - REMOVED + LATE)

typedef struct pfile {
    char rel[300];
    uint64_t seg_id; /* 0: not a segment */
    uint8_t *data;
    size_t len;
} pfile;

typedef struct prec {
    xreg loc; /* as a registry entry would name it (lid unused) */
    int type;
} prec;

static struct {
    int ready;
    char root[512];
    char build[600];
    char work[600];
    pfile files[MAX_FILES];
    size_t file_count;
    const pfile *mani_file;
    uint64_t mani_seq;
    xmani mani; /* the real manifest, parsed */
    prec recs[MAX_RECS];
    size_t nrec;
    uint64_t last_seg;
    sop_vfs vfs;
    sop_comparator cmp;
} G;

static xmani X; /* the manifest of one input */

static sop_db_options options(void)
{
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.vfs = &G.vfs;
    o.segment_bytes = 1u << 20;
    o.comparators = &G.cmp;
    o.comparator_count = 1;
    return o;
}

static void key_name(char out[16], unsigned k)
{
    snprintf(out, 16, "key-%05u", k);
}

static void put_item(sop_txn *t, sop_store *s, unsigned idx, size_t vlen)
{
    char key[16];
    static uint8_t val[1500];
    for (size_t b = 0; b < vlen && b < sizeof val; b++)
        val[b] = (uint8_t)(idx * 7 + b);
    key_name(key, idx);
    sop_val kv = {key, strlen(key)}, vv = {val, vlen < sizeof val ? vlen : sizeof val};
    FUZZ_CHECK(sop_upsert(t, s, &kv, &vv) == SOP_OK);
}

static sop_store *store(sop_txn *t, const char *name)
{
    sop_store *s;
    FUZZ_CHECK(sop_store_open(&s, t, name, 0, NULL) == SOP_OK);
    return s;
}

static void build_pristine(void)
{
    sop_db *db;
    sop_txn *t;
    sop_db_options o = options();
    /* Session 1: the stores; a checkpoint; a clean close. */
    FUZZ_CHECK(sop_db_open(&db, G.build, &o) == SOP_OK);
    FUZZ_CHECK(sop_txn_begin(&t, db, 0) == SOP_OK);
    for (size_t i = 0; i < NPSTORES; i++) {
        const pstore *ps = &PSTORES[i];
        sop_store *s;
        sop_store_options so = SOP_STORE_OPTIONS_INIT;
        so.flags = ps->flags;
        so.slot_length = ps->slot_length;
        so.comparator = ps->comparator;
        FUZZ_CHECK(sop_store_open(&s, t, ps->name, SOP_STORE_CREATE, &so) == SOP_OK);
        for (unsigned k = 0; k < ps->n; k++) {
            unsigned idx = ps->first + ps->step * k;
            put_item(t, s, idx, idx % 10 == 3 ? 1500 : 12);
        }
    }
    FUZZ_CHECK(sop_txn_commit(t) == SOP_OK);
    FUZZ_CHECK(sop_db_checkpoint(db) == SOP_OK);
    FUZZ_CHECK(sop_db_close(db) == SOP_OK);
    /* Session 2 (a new segment): changes, a prepared txn, a checkpoint, a
     * commit after it, a crash. */
    FUZZ_CHECK(sop_db_open(&db, G.build, &o) == SOP_OK);
    FUZZ_CHECK(sop_txn_begin(&t, db, 0) == SOP_OK);
    sop_store *alpha = store(t, "alpha"), *beta = store(t, "beta");
    for (unsigned k = 0; k < 60; k += 4)
        put_item(t, alpha, k, k % 8 ? 1200 : 30); /* old values and blobs die */
    for (unsigned k = 0; k < REMOVED; k++) {
        char key[16];
        key_name(key, 20 + 2 * k);
        sop_val kv = {key, strlen(key)};
        FUZZ_CHECK(sop_remove(t, beta, &kv) == SOP_OK);
    }
    FUZZ_CHECK(sop_txn_commit(t) == SOP_OK);
    sop_txn *prep;
    FUZZ_CHECK(sop_txn_begin(&prep, db, 0) == SOP_OK);
    put_item(prep, store(prep, "rev"), 200, 1300);
    put_item(prep, store(prep, "dups"), 15, 8);
    sop_val xid = {"mani-xid", 8};
    FUZZ_CHECK(sop_txn_prepare(prep, &xid) == SOP_OK);
    FUZZ_CHECK(sop_db_checkpoint(db) == SOP_OK);
    FUZZ_CHECK(sop_txn_begin(&t, db, 0) == SOP_OK);
    alpha = store(t, "alpha");
    for (unsigned k = 0; k < LATE; k++)
        put_item(t, alpha, 240 + k, k == 1 ? 1100 : 16);
    FUZZ_CHECK(sop_txn_commit(t) == SOP_OK);
    FUZZ_CHECK(sop_db__crash_close(db) == SOP_OK); /* the prepared txn stays prepared */
}

static void collect(const char *sub)
{
    char dir[700];
    snprintf(dir, sizeof dir, "%s%s%s", G.build, *sub ? "/" : "", sub);
    DIR *d = opendir(dir);
    FUZZ_CHECK(d != NULL);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[1000];
        struct stat st;
        if (e->d_name[0] == '.' || strcmp(e->d_name, "LOCK") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        FUZZ_CHECK(G.file_count < MAX_FILES);
        pfile *pf = &G.files[G.file_count++];
        snprintf(pf->rel, sizeof pf->rel, "%s%s%s", sub, *sub ? "/" : "", e->d_name);
        pf->seg_id = *sub ? strtoull(e->d_name, NULL, 16) : 0;
        slurp(path, &pf->data, &pf->len);
    }
    closedir(d);
}

/* List the records of a segment; cut the file after the last one (the
 * newest segment may carry zeros past its tail). */
static void list_records(pfile *f)
{
    size_t off = 0;
    while (off + SOP_REC_HDR_LEN <= f->len) {
        const uint8_t *h = f->data + off;
        uint32_t plen = sop_get_le32(h + 8);
        if (sop_get_le32(h) != SOP_REC_MAGIC || h[5] != 1 || h[4] < 1 || h[4] > 4 ||
            sop_rec_len(plen) > f->len - off)
            break;
        size_t rlen = sop_rec_len(plen);
        uint8_t hdr[SOP_REC_HDR_LEN];
        memcpy(hdr, h, sizeof hdr);
        sop_put_le32(hdr + 12, 0);
        uint32_t crc = sop_crc32c(sop_crc32c(0, hdr, sizeof hdr), h + SOP_REC_HDR_LEN, plen);
        if (crc != sop_get_le32(h + 12))
            break;
        FUZZ_CHECK(G.nrec < MAX_RECS);
        G.recs[G.nrec++] = (prec){{0, f->seg_id, off, (uint32_t)rlen, crc}, h[4]};
        off += rlen;
    }
    for (size_t i = off; i < f->len; i++)
        FUZZ_CHECK(f->data[i] == 0);
    f->len = off;
}

static void setup(void)
{
    if (G.ready)
        return;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    snprintf(G.root, sizeof G.root, "%s/sop-fuzz-manifest-XXXXXX", base ? base : "/tmp");
    FUZZ_CHECK(mkdtemp(G.root) != NULL);
    snprintf(G.build, sizeof G.build, "%s/pristine", G.root);
    snprintf(G.work, sizeof G.work, "%s/work", G.root);
    sop_set_allocator(&capped);
    G.vfs = *sop_vfs_posix();
    G.vfs.name = "posix-nosync";
    G.vfs.sync = nosync_file;
    G.vfs.sync_dir = nosync_dir;
    G.cmp.name = "reverse";
    G.cmp.compare = rev_cmp;
    build_pristine();
    collect("");
    collect("seg");
    for (size_t i = 0; i < G.file_count; i++) {
        pfile *f = &G.files[i];
        if (f->seg_id) {
            list_records(f);
            if (f->seg_id > G.last_seg)
                G.last_seg = f->seg_id;
        } else if (strncmp(f->rel, "MANIFEST-", 9) == 0) {
            FUZZ_CHECK(G.mani_file == NULL);
            G.mani_file = f;
            G.mani_seq = strtoull(f->rel + 9, NULL, 16);
        }
    }
    FUZZ_CHECK(G.mani_file && G.last_seg >= 2);
    FUZZ_CHECK(parse_manifest(&G.mani, G.mani_file->data, G.mani_file->len) == 0);
    FUZZ_CHECK(G.mani.nst == NPSTORES && G.mani.npr == 1 && G.mani.nsg >= 2 && G.mani.nrg > 20);
    /* The parser and encoder agree with the engine to the byte. */
    fbuf b = {0};
    encode_manifest(&b, &G.mani, 0);
    FUZZ_CHECK(b.len == G.mani_file->len && memcmp(b.p, G.mani_file->data, b.len) == 0);
    free(b.p);
    G.ready = 1;
}

static void cleanup(void)
{
    if (G.ready)
        rm_rf(G.root);
    for (size_t i = 0; i < G.file_count; i++)
        free(G.files[i].data);
    memset(&G, 0, sizeof G);
}

/* ---- edits ---------------------------------------------------------------------------------- */

static size_t set_bytes(in *r, uint8_t *dst, uint16_t *len16, uint32_t *len32)
{
    const uint8_t *src;
    size_t n = in_take(r, in_u8(r), &src);
    if (n)
        memcpy(dst, src, n);
    if (len16)
        *len16 = (uint16_t)n;
    if (len32)
        *len32 = (uint32_t)n;
    return n;
}

static void store_field(in *r, xstore *s)
{
    uint8_t f = in_u8(r) % 8;
    uint64_t *u64s[] = {&s->id, &s->root, &s->count, &s->next_seq, &s->created};
    uint32_t *u32s[] = {&s->flags, &s->slot, &s->max_inline};
    if (f < 5)
        *u64s[f] = in_value(r, *u64s[f]);
    else
        *u32s[f - 5] = (uint32_t)in_value(r, *u32s[f - 5]);
}

static void store_bytes(in *r, xstore *s)
{
    static const char *cmps[] = {"", "reverse", "reversed", "bytewise"};
    uint8_t how = in_u8(r);
    switch (how % 3) {
    case 0:
        set_bytes(r, s->name, &s->name_len, NULL);
        break;
    case 1:
        if (how & 4) {
            set_bytes(r, s->cmp, &s->cmp_len, NULL);
        } else {
            const char *c = cmps[(how >> 3) % 4];
            s->cmp_len = (uint16_t)strlen(c);
            memcpy(s->cmp, c, s->cmp_len);
        }
        break;
    default:
        set_bytes(r, s->spec, NULL, &s->spec_len);
        break;
    }
}

static void prep_body(in *r, xprep *p)
{
    uint8_t how = in_u8(r);
    const uint8_t *src;
    size_t n;
    switch (how % 4) {
    case 0:
        p->body_len = (uint32_t)(in_u8(r) % (p->body_len + 1));
        break;
    case 1:
        if (p->body_len)
            p->body[in_u8(r) % p->body_len] ^= (uint8_t)(in_u8(r) | 1);
        break;
    case 2:
        set_bytes(r, p->body, NULL, &p->body_len);
        break;
    default:
        n = in_take(r, in_u8(r), &src);
        if (p->body_len + n > BODY_MAX)
            n = BODY_MAX - p->body_len;
        memcpy(p->body + p->body_len, src, n);
        p->body_len += (uint32_t)n;
        break;
    }
}

/* Duplicate (0), remove (1) or move to the end (2) element i of an array. */
static void reshape(void *arr, size_t *n, size_t max, size_t elem, size_t i, int how)
{
    uint8_t *a = arr;
    if (how == 0 && *n < max) {
        memmove(a + (i + 1) * elem, a + i * elem, (*n - i) * elem);
        (*n)++;
    } else if (how == 1) {
        memmove(a + i * elem, a + (i + 1) * elem, (*n - i - 1) * elem);
        (*n)--;
    } else if (how == 2 && *n > 1) {
        uint8_t tmp[sizeof(xstore) > sizeof(xprep) ? sizeof(xstore) : sizeof(xprep)];
        FUZZ_CHECK(elem <= sizeof tmp);
        memcpy(tmp, a + i * elem, elem);
        memmove(a + i * elem, a + (i + 1) * elem, (*n - i - 1) * elem);
        memcpy(a + (*n - 1) * elem, tmp, elem);
    }
}

static void point_at_record(in *r, xreg *g)
{
    const prec *p = &G.recs[in_u8(r) % G.nrec];
    g->seg = p->loc.seg;
    g->off = p->loc.off;
    g->len = p->loc.len;
    g->crc = p->loc.crc;
}

static void apply_edit(in *r)
{
    xmani *m = &X;
    uint8_t op = in_u8(r), idx = in_u8(r);
    switch (op % 16) {
    case 0:
        m->h[idx % 8] = in_value(r, m->h[idx % 8]);
        break;
    case 1:
        if (idx & 1)
            m->reserved = (uint32_t)in_value(r, m->reserved);
        else
            m->version = (uint32_t)in_value(r, m->version);
        break;
    case 2:
        if (m->nst)
            store_field(r, &m->st[idx % m->nst]);
        break;
    case 3:
        if (m->nst)
            store_bytes(r, &m->st[idx % m->nst]);
        break;
    case 4:
        if (m->nst)
            reshape(m->st, &m->nst, MAX_MS, sizeof m->st[0], idx % m->nst, in_u8(r) % 3);
        break;
    case 5:
        if (m->npr) {
            xprep *p = &m->pr[idx % m->npr];
            if (in_u8(r) & 1)
                p->lsn = in_value(r, p->lsn);
            else
                p->id = in_value(r, p->id);
        }
        break;
    case 6:
        if (m->npr)
            prep_body(r, &m->pr[idx % m->npr]);
        break;
    case 7:
        if (m->npr)
            reshape(m->pr, &m->npr, MAX_MP, sizeof m->pr[0], idx % m->npr, in_u8(r) % 3);
        break;
    case 8:
        if (m->nsg) {
            uint64_t *f = &m->sg[idx % m->nsg].f[in_u8(r) % 7];
            *f = in_value(r, *f);
        }
        break;
    case 9: {
        uint8_t how = in_u8(r) % 3;
        if (how == 2 && m->nsg < MAX_MG) {
            memset(&m->sg[m->nsg], 0, sizeof m->sg[0]);
            m->sg[m->nsg++].f[0] = in_value(r, G.last_seg);
        } else if (m->nsg) {
            reshape(m->sg, &m->nsg, MAX_MG, sizeof m->sg[0], idx % m->nsg, how);
        }
        break;
    }
    case 10:
        if (m->nrg) {
            xreg *g = &m->rg[idx % m->nrg];
            switch (in_u8(r) % 5) {
            case 0:
                g->lid = in_value(r, g->lid);
                break;
            case 1:
                g->seg = in_value(r, g->seg);
                break;
            case 2:
                g->off = in_value(r, g->off);
                break;
            case 3:
                g->len = (uint32_t)in_value(r, g->len);
                break;
            default:
                g->crc = (uint32_t)in_value(r, g->crc);
                break;
            }
        }
        break;
    case 11:
        if (m->nrg) {
            xreg *a = &m->rg[idx % m->nrg], *b = &m->rg[in_u8(r) % m->nrg];
            uint64_t lid = a->lid;
            xreg t = *a;
            *a = *b;
            a->lid = lid;
            lid = b->lid;
            *b = t;
            b->lid = lid;
        }
        break;
    case 12:
        if (m->nrg)
            reshape(m->rg, &m->nrg, MAX_MR, sizeof m->rg[0], idx % m->nrg, in_u8(r) % 3);
        break;
    case 13:
        if (m->nrg)
            point_at_record(r, &m->rg[idx % m->nrg]);
        break;
    case 14:
        if (m->nrg < MAX_MR) {
            /* inserted at idx, so ascending order may or may not hold */
            size_t at = idx % (m->nrg + 1);
            memmove(&m->rg[at + 1], &m->rg[at], (m->nrg - at) * sizeof m->rg[0]);
            m->nrg++;
            m->rg[at].lid = in_value(r, at ? m->rg[at - 1].lid + 1 : 1);
            point_at_record(r, &m->rg[at]);
        }
        break;
    default:
        switch (idx % 6) {
        case 4:
            m->cut = in_u8(r) % 64 + 1;
            break;
        case 5:
            m->tail_len = set_bytes(r, m->tail, NULL, NULL);
            break;
        default:
            m->count_set[idx % 6] = 1;
            m->count_val[idx % 6] = in_value(r, 0);
            break;
        }
        break;
    }
}

/* ---- the database run --------------------------------------------------------------------- */

static void on_finding(const char *finding, void *ctx)
{
    (void)ctx;
    if (getenv("FUZZ_MANIFEST_VERBOSE"))
        fprintf(stderr, "fuzz_manifest: finding: %s\n", finding);
}

/* Read everything; returns the items seen, *findings_out the findings of
 * sop_db_check (UINT64_MAX if it could not run). */
static uint64_t read_all(sop_db *db, uint64_t *findings_out)
{
    sop_txn *t;
    char **names = NULL;
    size_t name_count = 0;
    uint64_t items = 0;
    *findings_out = UINT64_MAX;
    int rc = sop_txn_begin(&t, db, SOP_TXN_READONLY);
    CHECK_CODE(rc);
    if (rc)
        return 0;
    rc = sop_store_list(&names, &name_count, t);
    CHECK_CODE(rc);
    for (size_t i = 0; rc == SOP_OK && i < name_count; i++) {
        sop_store *s;
        sop_cursor *c = NULL;
        sop_val k, v;
        uint64_t count = 0, fwd = 0, back = 0;
        int r = sop_store_open(&s, t, names[i], 0, NULL);
        CHECK_CODE(r);
        if (r)
            continue;
        r = sop_cursor_open(&c, t, s);
        CHECK_CODE(r);
        if (r == SOP_OK) {
            for (r = sop_cursor_get(&k, &v, c, SOP_FIRST, NULL); r == SOP_OK && fwd < 100000;
                 r = sop_cursor_get(&k, &v, c, SOP_NEXT, NULL)) {
                fwd++;
                sink(k.data, k.len);
                sink(v.data, v.len);
            }
            CHECK_CODE(r);
            for (r = sop_cursor_get(&k, &v, c, SOP_LAST, NULL); r == SOP_OK && back < 100000;
                 r = sop_cursor_get(&k, &v, c, SOP_PREV, NULL))
                back++;
            CHECK_CODE(r);
            sop_val probe = {"key-00050", 9};
            CHECK_CODE(sop_cursor_get(&k, &v, c, SOP_SEEK_GE, &probe));
            sop_cursor_close(c);
        }
        for (unsigned q = 0; q < 256; q += 5) {
            char key[16];
            key_name(key, q);
            sop_val kv = {key, strlen(key)}, got;
            CHECK_CODE(sop_get(&got, t, s, &kv));
        }
        CHECK_CODE(sop_count(&count, t, s));
        items += fwd;
    }
    sop_store_list_free(names, name_count);
    sop_txn_abort(t);
    sop_prepared_info info[4];
    size_t n = 0;
    CHECK_CODE(sop_db_prepared_list(info, 4, &n, db));
    uint64_t findings = 0, counted = 0;
    rc = sop_db_check(&findings, db, on_finding, NULL, &counted);
    CHECK_CODE(rc);
    if (rc == SOP_OK)
        *findings_out = findings;
    return items;
}

static int resolve_one(sop_db *db, int rollback)
{
    sop_prepared_info info[1];
    size_t n = 0;
    int rc = sop_db_prepared_list(info, 1, &n, db);
    CHECK_CODE(rc);
    if (rc != SOP_OK || n == 0)
        return 0;
    rc = rollback ? sop_db_prepared_rollback(db, info[0].id)
                  : sop_db_prepared_commit(db, info[0].id);
    CHECK_CODE(rc);
    return rc == SOP_OK;
}

/* Called after a prepared transaction was resolved in a database that
 * passed sop_db_check: it must still pass (the checker validates prepared
 * bodies, and commit refuses a body whose value blobs are damaged - bug 9 in
 * docs/TESTING.md). */
static uint64_t check_after_resolve(sop_db *db)
{
    uint64_t findings = 0, counted = 0;
    int rc = sop_db_check(&findings, db, on_finding, NULL, &counted);
    CHECK_CODE(rc);
    if (rc != SOP_OK)
        return UINT64_MAX;
    FUZZ_CHECK(findings == 0);
    return findings;
}

/* One transaction: an upsert, a blob upsert and a delete in every store. */
static void write_some(sop_db *db)
{
    sop_txn *t;
    char **names = NULL;
    size_t name_count = 0;
    static uint8_t big[1400];
    int rc = sop_txn_begin(&t, db, 0);
    CHECK_CODE(rc);
    if (rc)
        return;
    rc = sop_store_list(&names, &name_count, t);
    CHECK_CODE(rc);
    for (size_t i = 0; rc == SOP_OK && i < name_count && i < 16; i++) {
        sop_store *s;
        if (sop_store_open(&s, t, names[i], 0, NULL) != SOP_OK)
            continue;
        sop_val k = {"key-00007", 9}, v = {"fuzz-value", 10}, bv = {big, sizeof big};
        CHECK_CODE(sop_upsert(t, s, &k, &v));
        k.data = "key-00099";
        CHECK_CODE(sop_upsert(t, s, &k, &bv));
        k.data = "key-00010";
        CHECK_CODE(sop_remove(t, s, &k));
        uint64_t count;
        CHECK_CODE(sop_count(&count, t, s));
    }
    sop_store_list_free(names, name_count);
    sop_store *fresh;
    if (rc == SOP_OK && sop_store_open(&fresh, t, "fuzz-new", SOP_STORE_CREATE, NULL) == SOP_OK) {
        sop_val k = {"key-00001", 9}, v = {"v", 1};
        CHECK_CODE(sop_upsert(t, fresh, &k, &v));
    }
    rc = sop_txn_commit(t);
    CHECK_CODE(rc);
    if (rc == SOP_BUSY)
        sop_txn_abort(t); /* the only return that leaves the txn alive */
}

static void write_folder(const fbuf *mani, uint64_t seq, int keep_real, int drop_last_seg)
{
    char path[1000];
    rm_rf(G.work);
    FUZZ_CHECK(mkdir(G.work, 0777) == 0);
    snprintf(path, sizeof path, "%s/seg", G.work);
    FUZZ_CHECK(mkdir(path, 0777) == 0);
    for (size_t i = 0; i < G.file_count; i++) {
        const pfile *f = &G.files[i];
        if (f == G.mani_file && !keep_real)
            continue;
        if (f->seg_id && f->seg_id == G.last_seg && drop_last_seg)
            continue;
        snprintf(path, sizeof path, "%s/%s", G.work, f->rel);
        spill(path, f->data, f->len);
    }
    snprintf(path, sizeof path, "%s/MANIFEST-%016" PRIx64, G.work, seq);
    spill(path, mani->p, mani->len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    in r = {data, size};
    uint8_t mode = in_u8(&r);
    unsigned kind = mode & 3, naming = (mode >> 2) & 3;
    int drop_last_seg = ((mode >> 4) & 3) == 3, bad_crc = ((mode >> 6) & 3) == 3;
    size_t edits = 0;
    fbuf mani = {0};
    if (kind < 2) {
        memcpy(&X, &G.mani, sizeof X);
        while (r.n && edits < MAX_EDITS) {
            apply_edit(&r);
            edits++;
        }
        encode_manifest(&mani, &X, bad_crc);
    } else {
        fb_put(&mani, MANI_MAGIC, 8);
        if (kind == 2)
            fb_u32(&mani, 1);
        fb_put(&mani, r.p, r.n);
        fb_u32(&mani, sop_crc32c(0, mani.p, mani.len) ^ (bad_crc ? 1u : 0u));
    }
    uint64_t seq = naming < 2 ? G.mani_seq : naming == 2 ? UINT64_MAX : G.mani_seq + 1;
    write_folder(&mani, seq, naming == 3, drop_last_seg);
    free(mani.p);
    int untouched = kind < 2 && edits == 0 && !drop_last_seg && !bad_crc;

    sop_db_options o = options();
    sop_db *db = NULL;
    int rc = sop_db_open(&db, G.work, &o);
    CHECK_CODE(rc);
    if (getenv("FUZZ_MANIFEST_VERBOSE"))
        fprintf(stderr, "fuzz_manifest: mode %u, %zu edit(s): open %d %s\n", mode, edits, rc,
                rc ? sop_errmsg() : "");
    if (untouched)
        FUZZ_CHECK(rc == SOP_OK);
    if (rc != SOP_OK)
        return 0;
    uint64_t findings;
    uint64_t items = read_all(db, &findings);
    if (untouched)
        FUZZ_CHECK(findings == 0 && items == ITEMS);
    if (resolve_one(db, size & 1) && findings == 0)
        findings = check_after_resolve(db);
    write_some(db);
    rc = sop_db_close(db);
    CHECK_CODE(rc);
    if (rc != SOP_OK)
        return 0;
    /* What passed the checker and was closed cleanly must reopen clean. */
    rc = sop_db_open(&db, G.work, &o);
    CHECK_CODE(rc);
    if (findings == 0)
        FUZZ_CHECK(rc == SOP_OK);
    if (rc == SOP_OK) {
        uint64_t again;
        read_all(db, &again);
        if (findings == 0)
            FUZZ_CHECK(again == 0);
        CHECK_CODE(sop_db_close(db));
    }
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    setup();
    atexit(cleanup);
    return 0;
}

/* ---- seed corpus ---------------------------------------------------------------------------- */

static int write_seed(const char *dir, const char *name, const uint8_t *rec, size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int rc = fwrite(rec, 1, len, f) == len ? 0 : -1;
    return fclose(f) == 0 ? rc : -1;
}

int fuzz_write_seeds(const char *dir)
{
    int rc = 0;
    char name[64];
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return -1;
    setup(); /* the real manifest is a seed too */
    static const uint8_t modes[] = {0, 4, 8, 12, 48, 192};
    for (size_t i = 0; i < sizeof modes; i++) {
        snprintf(name, sizeof name, "real-mode%u", modes[i]);
        rc |= write_seed(dir, name, &modes[i], 1);
    }
    /* The real manifest as a raw body (mode 2) and from its version (mode 3). */
    const pfile *m = G.mani_file;
    uint8_t *raw = malloc(m->len);
    FUZZ_CHECK(raw != NULL);
    raw[0] = 2;
    memcpy(raw + 1, m->data + 12, m->len - 16);
    rc |= write_seed(dir, "raw-body", raw, m->len - 15);
    raw[0] = 3;
    memcpy(raw + 1, m->data + 8, m->len - 12);
    rc |= write_seed(dir, "raw-from-version", raw, m->len - 11);
    free(raw);
    /* One edit of every kind, at a few indexes, each value kind. */
    for (unsigned op = 0; op < 16; op++)
        for (unsigned idx = 0; idx < 3; idx++) {
            uint8_t e[16] = {0,
                             (uint8_t)op,
                             (uint8_t)(idx * 3),
                             (uint8_t)idx,
                             (uint8_t)(idx == 0   ? 0x02
                                       : idx == 1 ? 0x0e
                                                  : 0x00),
                             (uint8_t)(0x7f + idx),
                             9,
                             1,
                             2,
                             3,
                             4,
                             5,
                             6,
                             7,
                             8,
                             9};
            snprintf(name, sizeof name, "edit-op%02u-%u", op, idx);
            rc |= write_seed(dir, name, e, sizeof e);
        }
    cleanup();
    return rc ? -1 : 0;
}
