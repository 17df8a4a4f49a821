/*
 * fuzz_wal.c - libFuzzer target for the log record decoders: the segment
 * scan (src/wal.c sop_wal__scan: record header, CRC, SEGHDR), the
 * transaction record bodies (src/txn.c sop_txn__replay and apply_body,
 * sop_txn__body_blobs, sop_prepared__decode) and the recovery logic around
 * them (src/db.c recover: LSN order, torn tails, segment order, blob
 * accounting), driven end to end through sop_db_open.
 *
 * Why structure-aware: every record carries a CRC-32C, so mutated bytes
 * almost never get past sop_wal__scan (fuzz_open shows that). Here the input
 * is a small program that writes log records, and the harness frames each
 * one with the engine's own sop_rec__header: records arrive with valid
 * CRCs, consecutive LSNs, blob locations that name real VALUE records and,
 * for generated transactions, count deltas equal to what replay computes
 * (the harness keeps a model of every store's keys). Some chunks break one
 * thing on purpose, mostly with the CRC still right: raw bodies, an LSN
 * gap, a wrong delta, kind or version, a truncated body, a bad header field,
 * a foreign or missing segment header, raw bytes, a torn tail.
 *
 * Once per process a small database is built with the library (five stores:
 * default, 4-slot nodes, duplicates, a registered "reverse" comparator,
 * separate value blobs; a checkpoint; then a crash, so the log ends exactly
 * where the checkpoint made it durable). Its files are kept in memory.
 *
 * Input: byte 0 = mode
 *   bit 0  0: start from that database (FORMAT, MANIFEST, segments);
 *          1: fresh - FORMAT only, no manifest, the log is all ours (LSN 1)
 *   bit 1  0: append to the newest segment; 1: start the next segment
 *   bit 2  after the open: commit (0) or roll back (1) one prepared txn
 * then up to 64 chunks; chunk byte c: c & 15 = kind, (c & 0x30) == 0x30 = "tweak":
 *   0-3  COMMIT generated from the following bytes: catalog creates and
 *        drops, 1-3 store sections of 1-6 puts/deletes (keys key-00000 ..
 *        key-00255, inline values or a VALUE blob written earlier), a read
 *        set. The harness applies it to its model and writes the delta.
 *   4-5  PREPARE, generated the same way (no catalog ops)
 *   6/7  COMMIT_PREPARED / ABORT_PREPARED of a pending prepared txn
 *        (tweak on 0-7: then break one field of the payload, CRC kept)
 *   8-9  VALUE record (1025..3024 bytes) that later puts may reference
 *   10   TXN record with a raw body: kind, id, u16 length, bytes
 *   11   any record type 0..5 with a raw payload (tweak: patch the header's
 *        version, magic, length or reserved field, CRC recomputed)
 *   12   NODE record with a raw payload (a node image nothing references)
 *   13   next segment (tweak: id gap, foreign uuid, wrong id, no SEGHDR,
 *        empty file)
 *   14   raw bytes appended unframed
 *   15   torn tail (cut bytes off) or one flipped byte
 * Every TXN payload also goes straight to sop_txn__body_blobs and
 * sop_prepared__decode in an allocation of exactly its size (the scan
 * reads records into a 1 MiB buffer, where ASan would miss an overread).
 *
 * Then: sop_db_open; every store read forwards, backwards, by count and
 * (with the model) by point lookups; the prepared list; sop_db_check; one
 * prepared transaction resolved; one write per store; close; reopen, read,
 * check, close.
 *
 * Properties (abort() on violation, so libFuzzer reports it):
 *   - no crash, hang, leak, memory error or UB; every call returns SOP_OK
 *     or a SOP_* code; the direct decoders return SOP_OK, SOP_CORRUPT (or
 *     SOP_NOMEM);
 *   - "clean" inputs (only generated records, nothing broken): the open
 *     succeeds, every store holds exactly the model's items (count, both
 *     scans, point lookups), the prepared list matches, sop_db_check finds
 *     nothing, and the decoders accept every body with the right number of
 *     blobs and keys;
 *   - any input: if the first open passed sop_db_check, resolving a
 *     prepared transaction leaves it passing; and if the close succeeded,
 *     the database reopens and passes sop_db_check again (the engine can
 *     read what it wrote itself);
 *   - no engine allocation above BIG_ALLOC (a length from disk trusted
 *     before it was checked, docs/TESTING.md bug 11).
 * Nothing is excused: bugs 9 and 11 of docs/TESTING.md, which this target
 * found, are fixed and their reproducers are in fuzz/regressions/. Syncs go
 * through a VFS that skips them and the folder lives on /dev/shm when it
 * exists, as in fuzz_open.
 *
 * Build and run: fuzz/fuzz_engine.mk (make fuzz-wal-smoke).
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
            fprintf(stderr, "fuzz_wal: %s:%d: CHECK(%s) failed [%s]\n", __FILE__, __LINE__, #cond, \
                    sop_errmsg());                                                                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_CODE(expr)                                                                           \
    do {                                                                                           \
        int code_ = (expr);                                                                        \
        FUZZ_CHECK(code_ <= 0 && code_ >= SOP_PANIC);                                              \
    } while (0)

#define MAX_FILES   16
#define MAX_CHUNKS  64
#define MAX_SEGS    8
#define MAX_BLOBS   32
#define MAX_MSTORES 24
#define MAX_PREP    8
#define MAX_POPS    24
#define KEYS        256
#define DUP_SEQ     1000 /* generated duplicate items use seqs DUP_SEQ..DUP_SEQ+3 */

/* ---- small helpers ------------------------------------------------------------------ */

typedef struct fbuf {
    uint8_t *p;
    size_t len, cap;
} fbuf;

static void fb_need(fbuf *b, size_t n)
{
    if (b->len + n <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    FUZZ_CHECK(p != NULL);
    b->p = p;
    b->cap = cap;
}

static void fb_put(fbuf *b, const void *d, size_t n)
{
    fb_need(b, n);
    if (n)
        memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void fb_u8(fbuf *b, uint8_t v)
{
    fb_put(b, &v, 1);
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

static void fb_val16(fbuf *b, const void *d, size_t n)
{
    fb_u16(b, (uint16_t)n);
    fb_put(b, d, n);
}

/* The fuzz input, read front to back; 0 once it runs out. */
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

static uint16_t in_u16(in *r)
{
    uint16_t lo = in_u8(r);
    return (uint16_t)(lo | in_u8(r) << 8);
}

static uint32_t in_u32(in *r)
{
    uint32_t lo = in_u16(r);
    return lo | (uint32_t)in_u16(r) << 16;
}

static size_t in_take(in *r, size_t want, const uint8_t **out)
{
    size_t n = want < r->n ? want : r->n;
    *out = r->p;
    r->p += n;
    r->n -= n;
    return n;
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

static void key_name(char out[16], unsigned k)
{
    snprintf(out, 16, "key-%05u", k);
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
    fprintf(stderr, "fuzz_wal: engine allocation of %zu bytes\n", n);
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

typedef struct pfile {
    char rel[300];
    uint64_t seg_id; /* 0: not a segment */
    uint8_t *data;
    size_t len;
} pfile;

/* What the harness knows about a store (the model). */
typedef struct mstore {
    char name[32];
    uint64_t id, next_seq;
    uint32_t flags;
    int live;
    unsigned pending;      /* ops of prepared transactions on it */
    uint64_t base;         /* pristine items the generator never touches */
    uint8_t present[KEYS]; /* bit s: key k with seq slot s */
} mstore;

static struct {
    int ready;
    char root[512];
    char build[600];
    char work[600];
    pfile files[MAX_FILES];
    size_t file_count;
    uint8_t uuid[16];
    uint64_t ckpt_lsn, next_lid, next_store_id, next_txn_id;
    mstore stores[NPSTORES];
    size_t store_count;
    sop_vfs vfs;
    sop_comparator cmp;
} G;

static sop_db_options options(void)
{
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.vfs = &G.vfs;
    o.segment_bytes = 1u << 20;
    o.comparators = &G.cmp;
    o.comparator_count = 1;
    return o;
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

static int cmp_files(const void *a, const void *b)
{
    return strcmp(((const pfile *)a)->rel, ((const pfile *)b)->rel);
}

static const pfile *find_file(const char *prefix)
{
    for (size_t i = 0; i < G.file_count; i++)
        if (strncmp(G.files[i].rel, prefix, strlen(prefix)) == 0)
            return &G.files[i];
    return NULL;
}

static const pfile *last_segment(void)
{
    const pfile *last = NULL;
    for (size_t i = 0; i < G.file_count; i++)
        if (G.files[i].seg_id && (!last || G.files[i].seg_id > last->seg_id))
            last = &G.files[i];
    return last;
}

/* Read the manifest's counters and store entries (docs/FORMAT.md). */
static void parse_manifest(const pfile *m)
{
    sop_rd r = {m->data, m->data + m->len - 4, 0};
    FUZZ_CHECK(memcmp(sop_rd_take(&r, 8), "SOPMANI1", 8) == 0);
    sop_rd_u32(&r);
    sop_rd_u32(&r);
    G.ckpt_lsn = sop_rd_u64(&r);
    sop_rd_u64(&r); /* replay position */
    sop_rd_u64(&r);
    uint64_t durable_seg = sop_rd_u64(&r), durable_off = sop_rd_u64(&r);
    G.next_lid = sop_rd_u64(&r);
    G.next_store_id = sop_rd_u64(&r);
    G.next_txn_id = sop_rd_u64(&r);
    uint32_t n = sop_rd_u32(&r);
    FUZZ_CHECK(!r.bad && n == NPSTORES);
    for (uint32_t i = 0; i < n; i++) {
        mstore *s = &G.stores[G.store_count++];
        memset(s, 0, sizeof *s);
        s->id = sop_rd_u64(&r);
        sop_rd_u64(&r); /* root lid */
        uint64_t count = sop_rd_u64(&r);
        s->next_seq = sop_rd_u64(&r);
        sop_rd_u64(&r); /* created lsn */
        sop_val name = sop_rd_val16(&r);
        s->flags = sop_rd_u32(&r);
        sop_rd_u32(&r);
        sop_rd_u32(&r);
        sop_rd_val16(&r);
        sop_rd_take(&r, sop_rd_u32(&r));
        FUZZ_CHECK(!r.bad && name.len < sizeof s->name);
        memcpy(s->name, name.data, name.len);
        s->live = 1;
        const pstore *ps = NULL;
        for (size_t k = 0; k < NPSTORES; k++)
            if (strcmp(PSTORES[k].name, s->name) == 0)
                ps = &PSTORES[k];
        FUZZ_CHECK(ps != NULL && count == ps->n);
        if (s->flags & SOP_STORE_DUPLICATES) {
            s->base = count; /* the generator's seqs never meet these */
        } else {
            for (unsigned k = 0; k < ps->n; k++)
                s->present[ps->first + ps->step * k] = 1;
        }
    }
    /* The crash came right after the checkpoint: the log ends where it is
     * durable. Past that the file may hold zeros (segments are extended
     * ahead of their tail): not part of the log, so cut them off. */
    pfile *last = (pfile *)last_segment();
    FUZZ_CHECK(last && last->seg_id == durable_seg && last->len >= durable_off);
    for (size_t i = durable_off; i < last->len; i++)
        FUZZ_CHECK(last->data[i] == 0);
    last->len = durable_off;
}

static void build_pristine(void)
{
    sop_db *db;
    sop_txn *t;
    sop_db_options o = options();
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
            char key[16];
            static uint8_t val[1500];
            unsigned idx = ps->first + ps->step * k;
            size_t vlen = idx % 10 == 3 ? sizeof val : 12;
            for (size_t b = 0; b < vlen; b++)
                val[b] = (uint8_t)(idx * 7 + b);
            key_name(key, idx);
            sop_val kv = {key, strlen(key)}, vv = {val, vlen};
            FUZZ_CHECK(sop_upsert(t, s, &kv, &vv) == SOP_OK);
        }
    }
    FUZZ_CHECK(sop_txn_commit(t) == SOP_OK);
    FUZZ_CHECK(sop_db_checkpoint(db) == SOP_OK);
    FUZZ_CHECK(sop_db__crash_close(db) == SOP_OK);
    collect("");
    collect("seg");
    qsort(G.files, G.file_count, sizeof G.files[0], cmp_files);
    const pfile *fmt = find_file("FORMAT");
    FUZZ_CHECK(fmt && fmt->len == 48);
    memcpy(G.uuid, fmt->data + 16, 16);
    const pfile *mani = find_file("MANIFEST-");
    FUZZ_CHECK(mani != NULL);
    parse_manifest(mani);
}

static void setup(void)
{
    if (G.ready)
        return;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    snprintf(G.root, sizeof G.root, "%s/sop-fuzz-wal-XXXXXX", base ? base : "/tmp");
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
    G.ready = 1;
}

static void cleanup(void)
{
    if (G.ready)
        rm_rf(G.root);
    for (size_t i = 0; i < G.file_count; i++)
        free(G.files[i].data);
    G.file_count = 0;
    G.ready = 0;
}

/* ---- the log being written (one input) ---------------------------------------------------- */

typedef struct fseg {
    uint64_t id;
    fbuf b;
} fseg;

typedef struct blob {
    sop_loc loc;
    uint32_t value_len;
    int used;
    int bad; /* value_len is wrong (a tweaked VALUE chunk) */
} blob;

typedef struct mop {
    uint8_t store, op, key, slot;
} mop;

typedef struct mprep {
    uint64_t id;
    size_t n;
    mop ops[MAX_POPS];
} mprep;

/* What a generated body must decode to. */
typedef struct body_stats {
    size_t blob_puts;
    size_t keys;           /* catalog ops + operations + reads: sop_prepared__decode's keys */
    size_t first_delta_at; /* payload offset of the first store section's delta, or 0 */
} body_stats;

static struct {
    fseg segs[MAX_SEGS];
    size_t nseg;
    uint64_t next_lsn;
    blob blobs[MAX_BLOBS];
    size_t nblob;
    mstore st[MAX_MSTORES];
    size_t nst;
    mprep prep[MAX_PREP];
    size_t nprep;
    uint64_t next_store_id, next_txn_id, lid_base;
    unsigned created;
    int clean; /* nothing broken so far: the model is the truth */
} W;

static fseg *cur_seg(void)
{
    return &W.segs[W.nseg - 1];
}

static int is_dup_store(const mstore *m)
{
    return (m->flags & SOP_STORE_DUPLICATES) != 0;
}

static uint64_t model_count(const mstore *m)
{
    uint64_t n = m->base;
    for (unsigned k = 0; k < KEYS; k++)
        n += (uint64_t)__builtin_popcount(m->present[k]);
    return n;
}

/* Apply one operation to the model; returns its count delta. */
static int model_apply(mstore *m, int op, unsigned key, unsigned slot)
{
    uint8_t bit = (uint8_t)(1u << slot);
    int had = (m->present[key] & bit) != 0;
    if (op == SOP_OP_PUT) {
        m->present[key] |= bit;
        return had ? 0 : 1;
    }
    m->present[key] &= (uint8_t)~bit;
    return had ? -1 : 0;
}

/* Frame payload as one record at the end of the current segment. */
static sop_loc frame(int type, const uint8_t *payload, size_t len, uint64_t lsn)
{
    fseg *s = cur_seg();
    size_t rlen = sop_rec_len(len);
    fb_need(&s->b, rlen);
    uint8_t *rec = s->b.p + s->b.len;
    if (len)
        memcpy(rec + SOP_REC_HDR_LEN, payload, len);
    memset(rec + SOP_REC_HDR_LEN + len, 0, rlen - SOP_REC_HDR_LEN - len);
    uint32_t crc = sop_rec__header(rec, type, rec + SOP_REC_HDR_LEN, len, lsn);
    sop_loc loc = {s->id, s->b.len, (uint32_t)rlen, crc};
    s->b.len += rlen;
    return loc;
}

static void seghdr(fseg *s, const uint8_t *uuid, uint64_t id)
{
    uint8_t p[24];
    memcpy(p, uuid, 16);
    sop_put_le64(p + 16, id);
    size_t rlen = sop_rec_len(sizeof p);
    fb_need(&s->b, rlen);
    uint8_t *rec = s->b.p + s->b.len;
    memcpy(rec + SOP_REC_HDR_LEN, p, sizeof p);
    sop_rec__header(rec, SOP_REC_SEGHDR, rec + SOP_REC_HDR_LEN, sizeof p, 0);
    s->b.len += rlen;
}

/* ---- direct decoder calls ----------------------------------------------------------------- */

static void count_blob(const sop_loc *loc, void *ctx)
{
    (void)loc;
    (*(size_t *)ctx)++;
}

static unsigned sink(const void *p, size_t len)
{
    const volatile uint8_t *b = p;
    unsigned s = 0;
    for (size_t i = 0; i < len; i++)
        s += b[i];
    return s;
}

/* Decode a TXN payload's body with both pure decoders, in an exact-size copy. */
static void decode_direct(const uint8_t *payload, size_t len, const body_stats *expect)
{
    if (len < 24 || (payload[0] != SOP_REC_COMMIT && payload[0] != SOP_REC_PREPARE))
        return;
    size_t blen = len - 24, blobs = 0;
    sop_prepared *p = sop_calloc(1, sizeof *p);
    FUZZ_CHECK(p != NULL);
    sop_arena_init(&p->arena, 0);
    p->body = sop_malloc(blen); /* exactly blen bytes (1 when empty) */
    FUZZ_CHECK(p->body != NULL);
    if (blen)
        memcpy(p->body, payload + 24, blen);
    p->body_len = blen;
    int rc = sop_txn__body_blobs(p->body, blen, count_blob, &blobs);
    FUZZ_CHECK(rc == SOP_OK || rc == SOP_CORRUPT);
    if (expect)
        FUZZ_CHECK(rc == SOP_OK && blobs == expect->blob_puts);
    rc = sop_prepared__decode(p);
    FUZZ_CHECK(rc == SOP_OK || rc == SOP_CORRUPT || rc == SOP_NOMEM);
    if (expect)
        FUZZ_CHECK(rc == SOP_OK && p->key_count == expect->keys);
    if (rc == SOP_OK) {
        FUZZ_CHECK(p->info.xid_len <= SOP_MAX_XID_LEN);
        for (size_t i = 0; i < p->key_count; i++) {
            const sop_val *v[2] = {&p->keys[i].lo, &p->keys[i].hi};
            for (int j = 0; j < 2; j++) {
                if (!v[j]->len)
                    continue;
                const uint8_t *d = v[j]->data;
                FUZZ_CHECK(d >= p->body && d + v[j]->len <= p->body + blen);
                sink(d, v[j]->len);
            }
        }
    }
    sop_prepared__free(p);
}

/* ---- generated transaction records --------------------------------------------------------- */

/* Index of a live store (optionally: no prepared txn names it), chosen by pick. */
static int pick_store(uint8_t pick, int unpinned_only)
{
    int cand[MAX_MSTORES], n = 0;
    for (size_t i = 0; i < W.nst; i++)
        if (W.st[i].live && (!unpinned_only || W.st[i].pending == 0))
            cand[n++] = (int)i;
    return n ? cand[pick % n] : -1;
}

static void gen_catalog(in *r, fbuf *b, body_stats *bs)
{
    size_t at = b->len;
    uint32_t ncat = 0;
    uint8_t c = in_u8(r);
    unsigned want = c % 8 == 7 ? 2 : c % 8 >= 5 ? 1 : 0;
    fb_u32(b, 0);
    for (unsigned i = 0; i < want; i++) {
        uint8_t d = in_u8(r);
        if ((d & 3) != 3) {
            if (W.nst == MAX_MSTORES)
                continue;
            mstore *m = &W.st[W.nst++];
            memset(m, 0, sizeof *m);
            m->id = W.next_store_id++;
            m->flags = (d >> 2) & 3;
            m->next_seq = 1;
            m->live = 1;
            snprintf(m->name, sizeof m->name, "fz-%" PRIu64, m->id);
            uint32_t slot = 4 + in_u8(r) % 29;
            uint32_t max_inline = 64u << ((d >> 4) & 3);
            const char *cmp = (d & 0x40) ? "reverse" : "";
            /* Root lids far apart: replayed splits take lids from next_lid. */
            uint64_t root = W.lid_base + (uint64_t)++W.created * 1000000u;
            fb_u8(b, 1);
            fb_u64(b, m->id);
            fb_u64(b, root);
            fb_val16(b, m->name, strlen(m->name));
            fb_u32(b, m->flags);
            fb_u32(b, slot);
            fb_u32(b, max_inline);
            fb_val16(b, cmp, strlen(cmp));
            fb_u32(b, 0);
        } else {
            int k = pick_store(in_u8(r), 1);
            if (k < 0)
                continue;
            W.st[k].live = 0;
            fb_u8(b, 2);
            fb_u64(b, W.st[k].id);
        }
        ncat++;
        bs->keys++;
    }
    sop_put_le32(b->p + at, ncat);
}

static void gen_sections(in *r, fbuf *b, mprep *pp, body_stats *bs)
{
    size_t at = b->len;
    uint32_t nsec = 0;
    unsigned want = 1 + in_u8(r) % 3;
    fb_u32(b, 0);
    for (unsigned i = 0; i < want; i++) {
        int si = pick_store(in_u8(r), 0);
        if (si < 0)
            break;
        mstore *m = &W.st[si];
        int dup = is_dup_store(m);
        unsigned nops_want = 1 + in_u8(r) % 6;
        uint64_t next_seq = dup && m->next_seq < DUP_SEQ + 4 ? DUP_SEQ + 4 : m->next_seq;
        fb_u64(b, m->id);
        size_t delta_at = b->len;
        if (!bs->first_delta_at)
            bs->first_delta_at = delta_at;
        fb_u64(b, 0);
        fb_u64(b, next_seq);
        if (!pp)
            m->next_seq = next_seq;
        size_t nops_at = b->len;
        fb_u32(b, 0);
        uint32_t nops = 0;
        int64_t delta = 0;
        for (unsigned j = 0; j < nops_want; j++) {
            if (pp && pp->n == MAX_POPS)
                break;
            uint8_t o = in_u8(r), k = in_u8(r);
            int op = (o & 1) ? SOP_OP_DEL : SOP_OP_PUT;
            unsigned slot = dup ? (o >> 1) & 3 : 0;
            char key[16];
            key_name(key, k);
            blob *bl = NULL;
            if (op == SOP_OP_PUT && (o & 0x80) && W.nblob) {
                size_t start = in_u8(r) % W.nblob;
                for (size_t q = 0; q < W.nblob && !bl; q++)
                    if (!W.blobs[(start + q) % W.nblob].used)
                        bl = &W.blobs[(start + q) % W.nblob];
            }
            fb_u8(b, (uint8_t)op);
            fb_u8(b, bl ? 1 : 0);
            fb_val16(b, key, strlen(key));
            fb_u64(b, dup ? DUP_SEQ + slot : 0);
            if (op == SOP_OP_PUT) {
                if (bl) {
                    fb_u32(b, bl->value_len);
                    fb_u64(b, bl->loc.seg);
                    fb_u64(b, bl->loc.off);
                    fb_u32(b, bl->loc.len);
                    fb_u32(b, bl->loc.crc);
                    bl->used = 1;
                    bs->blob_puts++;
                } else {
                    uint8_t v[16];
                    size_t vlen = (o >> 3) & 15;
                    for (size_t q = 0; q < vlen; q++)
                        v[q] = (uint8_t)(k + q);
                    fb_u32(b, (uint32_t)vlen);
                    fb_put(b, v, vlen);
                }
            }
            nops++;
            bs->keys++;
            if (pp) {
                pp->ops[pp->n++] = (mop){(uint8_t)si, (uint8_t)op, k, (uint8_t)slot};
                m->pending++;
            } else {
                delta += model_apply(m, op, k, slot);
            }
        }
        sop_put_le64(b->p + delta_at, (uint64_t)delta);
        sop_put_le32(b->p + nops_at, nops);
        nsec++;
    }
    sop_put_le32(b->p + at, nsec);
}

static void gen_reads(in *r, fbuf *b, body_stats *bs)
{
    size_t at = b->len;
    uint32_t n = 0;
    unsigned want = in_u8(r) % 3;
    fb_u32(b, 0);
    for (unsigned i = 0; i < want; i++) {
        int si = pick_store(in_u8(r), 0);
        if (si < 0)
            break;
        uint8_t kind = in_u8(r);
        char lo[16], hi[16];
        key_name(lo, in_u8(r));
        fb_u64(b, W.st[si].id);
        if (kind & 1) {
            fb_u8(b, 1);
            fb_val16(b, lo, strlen(lo));
        } else {
            uint8_t fl = (kind >> 1) & 3;
            key_name(hi, in_u8(r));
            fb_u8(b, 2);
            fb_u8(b, fl);
            fb_val16(b, lo, (fl & 1) ? 0 : strlen(lo));
            fb_val16(b, hi, (fl & 2) ? 0 : strlen(hi));
        }
        n++;
        bs->keys++;
    }
    sop_put_le32(b->p + at, n);
}

/* Break one thing in a TXN payload (CRC stays right: framing comes after). */
static void tweak_payload(in *r, fbuf *b, uint64_t *lsn, const body_stats *bs)
{
    uint8_t t = in_u8(r);
    switch (t % 6) {
    case 0:
        *lsn += (uint64_t)(int64_t)(int8_t)in_u8(r);
        break;
    case 1:
        b->len -= (1 + in_u8(r)) % (b->len + 1);
        break;
    case 2:
        b->p[0] = in_u8(r);
        break;
    case 3:
        b->p[1] = in_u8(r);
        break;
    case 4:
        b->p[in_u16(r) % b->len] ^= (uint8_t)(in_u8(r) | 1);
        break;
    default:
        if (bs->first_delta_at)
            sop_put_le64(b->p + bs->first_delta_at, sop_get_le64(b->p + bs->first_delta_at) + 1);
        else
            *lsn += 1;
        break;
    }
}

static void gen_txn(in *r, int kind, int tweak)
{
    fbuf b = {0};
    body_stats bs = {0, 0, 0};
    mprep *pp = NULL;
    uint64_t id = 0;
    if (kind == SOP_REC_COMMIT_PREPARED || kind == SOP_REC_ABORT_PREPARED) {
        if (!W.nprep) {
            if (!tweak)
                return;
            id = in_u8(r); /* resolve something that was never prepared */
            W.clean = 0;
        } else {
            size_t i = in_u8(r) % W.nprep;
            mprep *p = &W.prep[i];
            id = p->id;
            for (size_t j = 0; j < p->n; j++) {
                mstore *m = &W.st[p->ops[j].store];
                m->pending--;
                if (kind == SOP_REC_COMMIT_PREPARED) {
                    model_apply(m, p->ops[j].op, p->ops[j].key, p->ops[j].slot);
                    if (is_dup_store(m) && m->next_seq < DUP_SEQ + 4)
                        m->next_seq = DUP_SEQ + 4;
                }
            }
            memmove(p, p + 1, (W.nprep - i - 1) * sizeof *p);
            W.nprep--;
        }
    } else if (kind == SOP_REC_PREPARE) {
        if (W.nprep == MAX_PREP)
            return;
        pp = &W.prep[W.nprep];
        memset(pp, 0, sizeof *pp);
        pp->id = id = W.next_txn_id;
    }
    fb_u8(&b, (uint8_t)kind);
    fb_u8(&b, 1);
    fb_u16(&b, 0);
    fb_u32(&b, 0);
    fb_u64(&b, id);
    fb_u64(&b, W.next_lsn - 1); /* snapshot */
    if (kind == SOP_REC_COMMIT || kind == SOP_REC_PREPARE) {
        char xid[32];
        int xl = pp ? snprintf(xid, sizeof xid, "xid-%" PRIu64, id) : 0;
        fb_val16(&b, xid, (size_t)xl);
        if (pp)
            fb_u32(&b, 0); /* no catalog changes in prepared bodies */
        else
            gen_catalog(r, &b, &bs);
        gen_sections(r, &b, pp, &bs);
        gen_reads(r, &b, &bs);
    }
    if (pp) {
        W.nprep++;
        W.next_txn_id++;
    }
    uint64_t lsn = W.next_lsn++;
    if (tweak) {
        tweak_payload(r, &b, &lsn, &bs);
        W.clean = 0;
    }
    decode_direct(b.p, b.len, tweak ? NULL : &bs);
    frame(SOP_REC_TXN, b.p, b.len, lsn);
    free(b.p);
}

/* ---- the other chunks ------------------------------------------------------------------- */

static void chunk_value(in *r, int tweak)
{
    uint16_t v = in_u16(r);
    uint8_t seed = in_u8(r);
    size_t vlen = 1025 + v % 2000;
    uint8_t *val = malloc(vlen);
    FUZZ_CHECK(val != NULL);
    for (size_t i = 0; i < vlen; i++)
        val[i] = (uint8_t)(seed + i * 7);
    sop_loc loc = frame(SOP_REC_VALUE, val, vlen, 0);
    free(val);
    if (W.nblob < MAX_BLOBS) {
        /* tweak: a put will claim one byte more than the blob holds */
        W.blobs[W.nblob++] = (blob){loc, (uint32_t)vlen + (tweak ? 1 : 0), 0, tweak};
        if (tweak)
            W.clean = 0;
    }
}

static void chunk_raw_txn(in *r, int tweak)
{
    fbuf b = {0};
    uint8_t kind = in_u8(r), id = in_u8(r);
    size_t want = in_u16(r) % 1024;
    const uint8_t *body;
    size_t n = in_take(r, want, &body);
    fb_u8(&b, kind);
    fb_u8(&b, 1);
    fb_u16(&b, 0);
    fb_u32(&b, 0);
    fb_u64(&b, id);
    fb_u64(&b, W.next_lsn - 1);
    fb_put(&b, body, n);
    uint64_t lsn = W.next_lsn++;
    if (tweak)
        lsn += (uint64_t)(int64_t)(int8_t)in_u8(r);
    decode_direct(b.p, b.len, NULL);
    frame(SOP_REC_TXN, b.p, b.len, lsn);
    free(b.p);
    W.clean = 0;
}

static void chunk_raw_record(in *r, int tweak)
{
    int type = in_u8(r) % 6;
    size_t want = in_u16(r) % 1024;
    const uint8_t *payload;
    size_t n = in_take(r, want, &payload);
    uint64_t lsn = type == SOP_REC_TXN ? W.next_lsn++ : in_u8(r);
    if (type == SOP_REC_TXN)
        decode_direct(payload, n, NULL);
    sop_loc loc = frame(type, payload, n, lsn);
    W.clean = 0;
    if (!tweak)
        return;
    uint8_t *hdr = cur_seg()->b.p + loc.off;
    switch (in_u8(r) % 4) {
    case 0:
        hdr[5] = in_u8(r); /* version */
        break;
    case 1:
        hdr[in_u8(r) % 4] ^= (uint8_t)(in_u8(r) | 1); /* magic */
        break;
    case 2:
        sop_put_le32(hdr + 8, in_u32(r)); /* payload length */
        break;
    default:
        sop_put_le16(hdr + 6, in_u16(r)); /* reserved */
        break;
    }
    /* The CRC as sop_rec__header computes it, over the patched header. */
    uint8_t h[SOP_REC_HDR_LEN];
    memcpy(h, hdr, sizeof h);
    sop_put_le32(h + 12, 0);
    uint32_t crc = sop_crc32c(0, h, sizeof h);
    sop_put_le32(hdr + 12, sop_crc32c(crc, hdr + SOP_REC_HDR_LEN, n));
}

static void chunk_node(in *r)
{
    const uint8_t *payload;
    size_t n = in_take(r, in_u16(r) % 2048, &payload);
    frame(SOP_REC_NODE, payload, n, 0); /* unreferenced: dead at recovery */
}

static void chunk_new_segment(in *r, int tweak)
{
    if (W.nseg == MAX_SEGS)
        return;
    uint8_t how = tweak ? in_u8(r) % 5 : 5;
    fseg *s = &W.segs[W.nseg];
    memset(s, 0, sizeof *s);
    s->id = W.segs[W.nseg - 1].id + 1 + (how == 0 ? 1 + in_u8(r) % 3 : 0);
    W.nseg++;
    if (how == 1) {
        uint8_t other[16];
        memcpy(other, G.uuid, 16);
        other[in_u8(r) % 16] ^= 0x5a;
        seghdr(s, other, s->id);
    } else if (how == 2) {
        seghdr(s, G.uuid, s->id + 1 + in_u8(r));
    } else if (how != 3 && how != 4) {
        seghdr(s, G.uuid, s->id);
    }
    if (how <= 4) /* an id gap too: a deleted segment (db.c recover) */
        W.clean = 0;
}

static void chunk_garbage(in *r)
{
    const uint8_t *bytes;
    size_t n = in_take(r, in_u8(r), &bytes);
    fb_put(&cur_seg()->b, bytes, n);
    W.clean = 0;
}

static void chunk_torn(in *r)
{
    fbuf *b = &cur_seg()->b;
    uint8_t how = in_u8(r);
    W.clean = 0;
    if (!b->len)
        return;
    if (how & 1) {
        size_t cut = 1 + (how >> 1);
        b->len -= cut < b->len ? cut : b->len;
    } else {
        b->p[b->len - 1 - in_u16(r) % b->len] ^= (uint8_t)(in_u8(r) | 1);
    }
}

/* ---- the database run --------------------------------------------------------------------- */

static const mstore *model_store(const char *name)
{
    for (size_t i = 0; i < W.nst; i++)
        if (W.st[i].live && strcmp(W.st[i].name, name) == 0)
            return &W.st[i];
    return NULL;
}

static void on_finding(const char *finding, void *ctx)
{
    (void)ctx;
    if (getenv("FUZZ_WAL_VERBOSE"))
        fprintf(stderr, "fuzz_wal: finding: %s\n", finding);
}

/* Check one store against the model (point lookups of every key). */
static void check_keys(sop_txn *t, sop_store *s, const mstore *m)
{
    for (unsigned k = 0; k < KEYS; k++) {
        char key[16];
        key_name(key, k);
        sop_val kv = {key, strlen(key)}, got;
        int rc = sop_get(&got, t, s, &kv);
        if (is_dup_store(m))
            FUZZ_CHECK(rc == SOP_OK || rc == SOP_NOTFOUND);
        else
            FUZZ_CHECK(rc == (m->present[k] ? SOP_OK : SOP_NOTFOUND));
    }
}

/* Read everything; with_model: compare with the model. Returns the findings
 * of sop_db_check (UINT64_MAX if it could not run). */
static uint64_t read_all(sop_db *db, int with_model)
{
    sop_txn *t;
    char **names = NULL;
    size_t name_count = 0;
    int rc = sop_txn_begin(&t, db, SOP_TXN_READONLY);
    CHECK_CODE(rc);
    if (rc)
        return UINT64_MAX;
    rc = sop_store_list(&names, &name_count, t);
    CHECK_CODE(rc);
    if (with_model) {
        size_t live = 0;
        for (size_t i = 0; i < W.nst; i++)
            live += W.st[i].live != 0;
        FUZZ_CHECK(rc == SOP_OK && name_count == live);
    }
    for (size_t i = 0; rc == SOP_OK && i < name_count; i++) {
        sop_store *s;
        sop_cursor *c = NULL;
        sop_val k, v;
        uint64_t count = 0, fwd = 0, back = 0;
        int r = sop_store_open(&s, t, names[i], 0, NULL);
        CHECK_CODE(r);
        if (with_model)
            FUZZ_CHECK(r == SOP_OK);
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
            if (with_model)
                FUZZ_CHECK(r == SOP_NOTFOUND);
            for (r = sop_cursor_get(&k, &v, c, SOP_LAST, NULL); r == SOP_OK && back < 100000;
                 r = sop_cursor_get(&k, &v, c, SOP_PREV, NULL))
                back++;
            CHECK_CODE(r);
            sop_val probe = {"key-00050", 9};
            CHECK_CODE(sop_cursor_get(&k, &v, c, SOP_SEEK_GE, &probe));
            sop_cursor_close(c);
        }
        r = sop_count(&count, t, s);
        CHECK_CODE(r);
        if (with_model) {
            const mstore *m = model_store(names[i]);
            FUZZ_CHECK(m != NULL);
            uint64_t want = model_count(m);
            FUZZ_CHECK(r == SOP_OK && count == want && fwd == want && back == want);
            check_keys(t, s, m);
        } else {
            for (unsigned q = 0; q < KEYS; q += 5) {
                char key[16];
                key_name(key, q);
                sop_val kv = {key, strlen(key)}, got;
                CHECK_CODE(sop_get(&got, t, s, &kv));
            }
        }
    }
    sop_store_list_free(names, name_count);
    sop_txn_abort(t);
    sop_prepared_info info[4];
    size_t n = 0;
    rc = sop_db_prepared_list(info, 4, &n, db);
    CHECK_CODE(rc);
    if (with_model)
        FUZZ_CHECK(rc == SOP_OK && n == W.nprep);
    uint64_t findings = 0, counted = 0;
    rc = sop_db_check(&findings, db, on_finding, NULL, &counted);
    CHECK_CODE(rc);
    return rc == SOP_OK ? findings : UINT64_MAX;
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

/* One transaction: an upsert, a blob upsert, a delete and a count in every
 * store, and a new store. */
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

static void write_folder(int fresh)
{
    char path[1000];
    rm_rf(G.work);
    FUZZ_CHECK(mkdir(G.work, 0777) == 0);
    snprintf(path, sizeof path, "%s/seg", G.work);
    FUZZ_CHECK(mkdir(path, 0777) == 0);
    for (size_t i = 0; i < G.file_count; i++) {
        const pfile *f = &G.files[i];
        if (fresh && strcmp(f->rel, "FORMAT") != 0)
            continue;
        if (f->seg_id && f->seg_id == W.segs[0].id)
            continue; /* the log we wrote continues it */
        snprintf(path, sizeof path, "%s/%s", G.work, f->rel);
        spill(path, f->data, f->len);
    }
    for (size_t i = 0; i < W.nseg; i++) {
        snprintf(path, sizeof path, "%s/seg/%016" PRIx64 ".seg", G.work, W.segs[i].id);
        spill(path, W.segs[i].b.p, W.segs[i].b.len);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    in r = {data, size};
    uint8_t mode = in_u8(&r);
    int fresh = mode & 1;
    memset(&W, 0, sizeof W);
    W.clean = 1;
    W.nseg = 1;
    if (fresh) {
        W.next_lsn = 1;
        W.next_store_id = W.next_txn_id = W.lid_base = 1;
        W.segs[0].id = 1;
        seghdr(&W.segs[0], G.uuid, 1);
    } else {
        const pfile *last = last_segment();
        W.next_lsn = G.ckpt_lsn + 1;
        W.next_store_id = G.next_store_id;
        W.next_txn_id = G.next_txn_id;
        W.lid_base = G.next_lid;
        memcpy(W.st, G.stores, sizeof G.stores);
        W.nst = G.store_count;
        if (mode & 2) {
            W.segs[0].id = last->seg_id + 1;
            seghdr(&W.segs[0], G.uuid, W.segs[0].id);
        } else {
            W.segs[0].id = last->seg_id;
            fb_put(&W.segs[0].b, last->data, last->len);
        }
    }
    for (int c = 0; c < MAX_CHUNKS && r.n; c++) {
        uint8_t op = in_u8(&r);
        int tweak = (op & 0x30) == 0x30;
        switch (op & 15) {
        case 0:
        case 1:
        case 2:
        case 3:
            gen_txn(&r, SOP_REC_COMMIT, tweak);
            break;
        case 4:
        case 5:
            gen_txn(&r, SOP_REC_PREPARE, tweak);
            break;
        case 6:
            gen_txn(&r, SOP_REC_COMMIT_PREPARED, tweak);
            break;
        case 7:
            gen_txn(&r, SOP_REC_ABORT_PREPARED, tweak);
            break;
        case 8:
        case 9:
            chunk_value(&r, tweak);
            break;
        case 10:
            chunk_raw_txn(&r, tweak);
            break;
        case 11:
            chunk_raw_record(&r, tweak);
            break;
        case 12:
            chunk_node(&r);
            break;
        case 13:
            chunk_new_segment(&r, tweak);
            break;
        case 14:
            chunk_garbage(&r);
            break;
        default:
            chunk_torn(&r);
            break;
        }
    }
    write_folder(fresh);
    for (size_t i = 0; i < W.nseg; i++)
        free(W.segs[i].b.p);

    sop_db_options o = options();
    sop_db *db = NULL;
    int rc = sop_db_open(&db, G.work, &o);
    CHECK_CODE(rc);
    if (getenv("FUZZ_WAL_VERBOSE"))
        fprintf(stderr, "fuzz_wal: mode %u, %zu segment(s), lsn %" PRIu64 ", %s: open %d %s\n",
                mode, W.nseg, W.next_lsn - 1, W.clean ? "clean" : "broken", rc,
                rc ? sop_errmsg() : "");
    if (W.clean)
        FUZZ_CHECK(rc == SOP_OK);
    if (rc != SOP_OK)
        return 0;
    uint64_t findings = read_all(db, W.clean);
    if (W.clean)
        FUZZ_CHECK(findings == 0);
    if (resolve_one(db, (mode & 4) != 0) && findings == 0)
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
        uint64_t again = read_all(db, 0);
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
    /* Hand-written programs (see the grammar at the top). */
    static const struct {
        const char *name;
        uint8_t len;
        uint8_t bytes[48];
    } progs[] = {
        {"pristine", 1, {0}},
        {"new-segment", 1, {2}},
        {"commit-puts", 13, {0, 0, 0, 0, 0, 4, 0, 3, 2, 40, 0, 201, 0}},
        {"commit-deletes", 12, {0, 1, 0, 0, 1, 3, 1, 5, 1, 7, 1, 9}},
        {"value-then-blob-put", 12, {0, 8, 0x10, 0x02, 9, 0, 0, 0, 0, 0, 0x80, 77}},
        {"create-and-fill", 14, {0, 0, 7, 0x40, 5, 0x12, 9, 5, 2, 0, 150, 0, 151, 0}},
        {"drop-a-store", 7, {0, 0, 5, 3, 1, 0, 0}},
        {"prepare-commit", 12, {0, 4, 0, 0, 2, 0, 9, 0, 10, 0, 6, 0}},
        {"prepare-abort", 10, {0, 4, 0, 1, 1, 0, 77, 0, 7, 0}},
        {"prepare-pending", 9, {4, 4, 0, 2, 1, 0, 11, 0, 0}},
        {"fresh-create", 16, {1, 0, 5, 0x00, 4, 0, 0, 2, 0, 1, 0, 2, 0, 3, 0, 0}},
        {"fresh-dups", 16, {1, 0, 5, 0x04, 9, 0, 0, 3, 0, 1, 2, 1, 4, 1, 6, 1}},
        {"dup-store-ops", 12, {0, 0, 0, 2, 2, 0, 1, 2, 1, 4, 1, 6}},
        {"two-segments", 14, {0, 0, 0, 0, 0, 1, 0, 13, 0, 0, 1, 0, 9, 0}},
        {"torn-tail", 9, {0, 0, 0, 0, 0, 1, 0, 15, 9}},
        {"flipped-byte", 10, {0, 0, 0, 0, 0, 1, 0, 15, 40, 0}},
        {"garbage", 12, {0, 14, 8, 'S', 'O', 'P', 'R', 4, 1, 0, 0, 0}},
        {"lsn-gap", 10, {0, 48, 0, 0, 0, 1, 0, 0, 0, 5}},
        {"wrong-delta", 10, {0, 48, 0, 0, 0, 1, 0, 0, 5, 0}},
        {"bad-kind", 10, {0, 48, 0, 0, 0, 1, 0, 0, 2, 9}},
        {"raw-txn", 16, {0, 10, 1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
        {"raw-record", 10, {0, 11, 4, 4, 0, 1, 2, 3, 4, 0}},
        {"raw-header-patch", 12, {0, 59, 3, 4, 0, 1, 2, 3, 4, 0, 2, 0xff}},
        {"node-record", 6, {0, 12, 4, 0, 1, 2}},
        {"foreign-segment", 4, {0, 61, 1, 3}},
        {"segment-gap", 8, {2, 61, 0, 1, 0, 0, 0, 0}},
        {"resolve-unknown", 3, {0, 54, 9}},
    };
    int rc = 0;
    char name[64];
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return -1;
    for (size_t i = 0; i < sizeof progs / sizeof progs[0]; i++)
        rc |= write_seed(dir, progs[i].name, progs[i].bytes, progs[i].len);
    /* Random programs: any bytes are a program, mostly of generated records. */
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (unsigned s = 0; s < 24; s++) {
        uint8_t buf[400];
        size_t len = 40 + s * 15;
        for (size_t i = 0; i < len; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf[i] = (uint8_t)x;
        }
        buf[0] &= s < 16 ? 6 : 7; /* two thirds start from the pristine database */
        snprintf(name, sizeof name, "random-%02u", s);
        rc |= write_seed(dir, name, buf, len);
    }
    return rc ? -1 : 0;
}
