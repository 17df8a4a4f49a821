/*
 * fuzz_open.c - libFuzzer target: open a database whose files were randomly
 * corrupted, read everything, write, close.
 *
 * Once per process a small valid database is built with the library itself
 * (two stores, one with tiny nodes so the tree has branches, inline and
 * separate-blob values, a checkpoint, commits after it left in the log for
 * recovery to replay, a prepared transaction, an abandoned handle) and its
 * files are kept in memory. Each input is a list of 7-byte corruptions:
 *
 *   byte 0  op: bits 0-1  0 xor the byte with b (b|1), 1 set it to b,
 *                         2 truncate the file at off, 3 bit 2 ? delete the
 *                           file : append b bytes of value b
 *   byte 1  file: index into the database's files (FORMAT, MANIFEST-*,
 *           the seg/ files, ...), modulo their number
 *   2..5    off: u32 little-endian, modulo the file's size (+1 to truncate)
 *   byte 6  b
 *
 * The files are written to a fresh folder with the corruptions applied;
 * then sop_db_open, every store read forwards, backwards and by point
 * lookups, counts, the prepared list, sop_db_check, one write transaction,
 * sop_db_close, and a second open + close (recovery after the write).
 *
 * Properties (abort() on violation, so libFuzzer reports it):
 *   - no crash, no hang (libFuzzer -timeout), no memory error (ASan), no UB;
 *   - every call returns SOP_OK or one of the SOP_* codes (-1..-15);
 *   - with no corruption: the open succeeds, every item reads back, and
 *     sop_db_check finds nothing.
 * Syncs go through a VFS that skips them (nothing here is about
 * durability), and the folder lives on /dev/shm when it exists: fast.
 *
 * Build and run: fuzz/fuzz_engine.mk (make fuzz-open-smoke).
 */
#include "sop.h"
#include "sop_sys.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int fuzz_write_seeds(const char *dir);
int sop_db__crash_close(sop_db *db); /* src/db.c test hook: drop without sync */

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_open: %s:%d: CHECK(%s) failed [%s]\n", __FILE__, __LINE__,       \
                    #cond, sop_errmsg());                                                          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_CODE(expr)                                                                           \
    do {                                                                                           \
        int code_ = (expr);                                                                        \
        FUZZ_CHECK(code_ <= 0 && code_ >= SOP_PANIC);                                              \
    } while (0)

#define MAX_FILES 32
#define ITEMS     120

typedef struct pristine_file {
    char rel[300]; /* path inside the folder */
    uint8_t *data;
    size_t len;
} pristine_file;

static struct {
    int ready;
    char root[512];  /* our temp folder */
    char build[600]; /* where the pristine database was made */
    char work[600];  /* where each input is played */
    pristine_file files[MAX_FILES];
    size_t file_count;
    sop_vfs vfs; /* POSIX without syncs */
} G;

/* ---- helpers ---------------------------------------------------------------------- */

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

static void read_file(const char *path, uint8_t **data, size_t *len)
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
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        FUZZ_CHECK(G.file_count < MAX_FILES);
        pristine_file *pf = &G.files[G.file_count++];
        snprintf(pf->rel, sizeof pf->rel, "%s%s%s", sub, *sub ? "/" : "", e->d_name);
        read_file(path, &pf->data, &pf->len);
    }
    closedir(d);
}

static int cmp_files(const void *a, const void *b)
{
    return strcmp(((const pristine_file *)a)->rel, ((const pristine_file *)b)->rel);
}

static sop_db_options options(void)
{
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.vfs = &G.vfs;
    o.segment_bytes = 1u << 20;
    return o;
}

/* ---- the pristine database ---------------------------------------------------------- */

static void put_item(sop_txn *t, sop_store *s, unsigned i, size_t vlen)
{
    char key[32];
    static uint8_t val[6000];
    snprintf(key, sizeof key, "key-%05u", i);
    for (size_t k = 0; k < vlen && k < sizeof val; k++)
        val[k] = (uint8_t)(i * 31 + k);
    sop_val kv = {key, strlen(key)}, vv = {val, vlen};
    FUZZ_CHECK(sop_upsert(t, s, &kv, &vv) == SOP_OK);
}

static void build_pristine(void)
{
    sop_db *db;
    sop_txn *t;
    sop_store *a, *b;
    sop_db_options o = options();
    sop_store_options small = SOP_STORE_OPTIONS_INIT;
    small.slot_length = 4;
    FUZZ_CHECK(sop_db_open(&db, G.build, &o) == SOP_OK);
    FUZZ_CHECK(sop_txn_begin(&t, db, 0) == SOP_OK);
    FUZZ_CHECK(sop_store_open(&a, t, "alpha", SOP_STORE_CREATE, NULL) == SOP_OK);
    FUZZ_CHECK(sop_store_open(&b, t, "beta", SOP_STORE_CREATE, &small) == SOP_OK);
    for (unsigned i = 0; i < ITEMS; i++) {
        put_item(t, a, i, i % 10 == 0 ? 3000 : 20);
        put_item(t, b, i, 8);
    }
    FUZZ_CHECK(sop_txn_commit(t) == SOP_OK);
    FUZZ_CHECK(sop_db_checkpoint(db) == SOP_OK);
    /* After the checkpoint: records recovery replays. */
    FUZZ_CHECK(sop_txn_begin(&t, db, 0) == SOP_OK);
    FUZZ_CHECK(sop_store_open(&a, t, "alpha", 0, NULL) == SOP_OK);
    for (unsigned i = ITEMS; i < ITEMS + 20; i++)
        put_item(t, a, i, i % 7 == 0 ? 2500 : 40);
    sop_val gone = {"key-00003", 9};
    FUZZ_CHECK(sop_remove(t, a, &gone) == SOP_OK);
    FUZZ_CHECK(sop_txn_commit(t) == SOP_OK);
    FUZZ_CHECK(sop_txn_begin(&t, db, 0) == SOP_OK);
    FUZZ_CHECK(sop_store_open(&b, t, "beta", 0, NULL) == SOP_OK);
    put_item(t, b, 9999, 12);
    sop_val xid = {"xid-1", 5};
    FUZZ_CHECK(sop_txn_prepare(t, &xid) == SOP_OK);
    FUZZ_CHECK(sop_db__crash_close(db) == SOP_OK); /* the prepared txn stays prepared */
    collect("");
    collect("seg");
    qsort(G.files, G.file_count, sizeof G.files[0], cmp_files);
}

static void setup(void)
{
    if (G.ready)
        return;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    snprintf(G.root, sizeof G.root, "%s/sop-fuzz-open-XXXXXX", base ? base : "/tmp");
    FUZZ_CHECK(mkdtemp(G.root) != NULL);
    snprintf(G.build, sizeof G.build, "%s/pristine", G.root);
    snprintf(G.work, sizeof G.work, "%s/work", G.root);
    G.vfs = *sop_vfs_posix();
    G.vfs.name = "posix-nosync";
    G.vfs.sync = nosync_file;
    G.vfs.sync_dir = nosync_dir;
    build_pristine();
    G.ready = 1;
}

static void cleanup(void)
{
    if (G.ready)
        rm_rf(G.root);
}

/* ---- one input ------------------------------------------------------------------------ */

typedef struct work_file {
    uint8_t *data;
    size_t len;
    int deleted;
} work_file;

static void apply(work_file *wf, const uint8_t *rec)
{
    unsigned op = rec[0];
    size_t idx = rec[1] % G.file_count;
    uint32_t off =
        (uint32_t)rec[2] | (uint32_t)rec[3] << 8 | (uint32_t)rec[4] << 16 | (uint32_t)rec[5] << 24;
    uint8_t b = rec[6];
    work_file *f = &wf[idx];
    if (f->deleted)
        return;
    switch (op & 3) {
    case 0:
        if (f->len)
            f->data[off % f->len] ^= (uint8_t)(b | 1);
        break;
    case 1:
        if (f->len)
            f->data[off % f->len] = b;
        break;
    case 2:
        f->len = off % (f->len + 1);
        break;
    default:
        if (op & 4) {
            f->deleted = 1;
        } else {
            uint8_t *n = realloc(f->data, f->len + b + 1);
            FUZZ_CHECK(n != NULL);
            memset(n + f->len, b, b);
            f->data = n;
            f->len += b;
        }
        break;
    }
}

static void write_folder(work_file *wf)
{
    char path[1000];
    rm_rf(G.work);
    FUZZ_CHECK(mkdir(G.work, 0777) == 0);
    snprintf(path, sizeof path, "%s/seg", G.work);
    FUZZ_CHECK(mkdir(path, 0777) == 0);
    for (size_t i = 0; i < G.file_count; i++) {
        if (wf[i].deleted)
            continue;
        snprintf(path, sizeof path, "%s/%s", G.work, G.files[i].rel);
        FILE *f = fopen(path, "wb");
        FUZZ_CHECK(f != NULL);
        FUZZ_CHECK(fwrite(wf[i].data, 1, wf[i].len, f) == wf[i].len);
        FUZZ_CHECK(fclose(f) == 0);
    }
}

static void on_finding(const char *finding, void *ctx)
{
    (void)finding;
    (*(uint64_t *)ctx)++;
}

/* Read everything; returns the number of items seen. */
static uint64_t read_all(sop_db *db, uint64_t *findings_out)
{
    sop_txn *t;
    char **names = NULL;
    size_t name_count = 0;
    uint64_t items = 0;
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
                sop_val got;
                int g = sop_get(&got, t, s, &k); /* k stays valid: not a cursor call */
                CHECK_CODE(g);
            }
            CHECK_CODE(r);
            for (r = sop_cursor_get(&k, &v, c, SOP_LAST, NULL); r == SOP_OK && back < 100000;
                 r = sop_cursor_get(&k, &v, c, SOP_PREV, NULL))
                back++;
            CHECK_CODE(r);
            sop_val probe = {"key-00050", 9};
            r = sop_cursor_get(&k, &v, c, SOP_SEEK_GE, &probe);
            CHECK_CODE(r);
            sop_cursor_close(c);
        }
        r = sop_count(&count, t, s);
        CHECK_CODE(r);
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
    *findings_out = rc == SOP_OK ? findings : 1;
    return items;
}

static void write_some(sop_db *db)
{
    sop_txn *t;
    sop_store *s;
    int rc = sop_txn_begin(&t, db, 0);
    CHECK_CODE(rc);
    if (rc)
        return;
    rc = sop_store_open(&s, t, "alpha", SOP_STORE_CREATE, NULL);
    CHECK_CODE(rc);
    if (rc == SOP_OK) {
        sop_val k = {"fuzz-key", 8}, v = {"fuzz-value", 10};
        rc = sop_upsert(t, s, &k, &v);
        CHECK_CODE(rc);
        k.data = "key-00010";
        k.len = 9;
        rc = sop_remove(t, s, &k);
        CHECK_CODE(rc);
    }
    rc = sop_txn_commit(t);
    CHECK_CODE(rc);
    if (rc == SOP_BUSY)
        sop_txn_abort(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    work_file wf[MAX_FILES];
    setup();
    for (size_t i = 0; i < G.file_count; i++) {
        wf[i].len = G.files[i].len;
        wf[i].data = malloc(wf[i].len + 1);
        FUZZ_CHECK(wf[i].data != NULL);
        memcpy(wf[i].data, G.files[i].data, wf[i].len);
        wf[i].deleted = 0;
    }
    size_t records = size / 7;
    for (size_t r = 0; r < records && r < 64; r++)
        apply(wf, data + 7 * r);
    write_folder(wf);
    for (size_t i = 0; i < G.file_count; i++)
        free(wf[i].data);

    sop_db_options o = options();
    sop_db *db = NULL;
    int rc = sop_db_open(&db, G.work, &o);
    CHECK_CODE(rc);
    if (records == 0)
        FUZZ_CHECK(rc == SOP_OK); /* the pristine folder must open */
    if (rc == SOP_OK) {
        uint64_t findings = 0;
        uint64_t items = read_all(db, &findings);
        if (records == 0) {
            FUZZ_CHECK(findings == 0);
            FUZZ_CHECK(items == 2 * ITEMS + 20 - 1);
        }
        write_some(db);
        rc = sop_db_close(db);
        CHECK_CODE(rc);
        rc = sop_db_open(&db, G.work, &o);
        CHECK_CODE(rc);
        if (rc == SOP_OK) {
            uint64_t again = 0;
            read_all(db, &again);
            CHECK_CODE(sop_db_close(db));
        }
    }
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    setup();
    atexit(cleanup);
    return 0;
}

/* ---- seed corpus ----------------------------------------------------------------------- */

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
    rc |= write_seed(dir, "pristine", (const uint8_t *)"", 0);
    /* One corruption of each kind at a few offsets of each of the first
     * eight files (FORMAT, LOCK, MANIFEST, segments, sorted by name). */
    static const uint32_t offs[] = {0, 4, 8, 12, 16, 24, 40, 48, 64, 100, 1000, 4096};
    for (unsigned file = 0; file < 8; file++)
        for (unsigned k = 0; k < sizeof offs / sizeof offs[0]; k++) {
            uint8_t rec[7] = {
                (uint8_t)(k % 3),   (uint8_t)file, (uint8_t)offs[k], (uint8_t)(offs[k] >> 8), 0, 0,
                (uint8_t)(0x5a + k)};
            snprintf(name, sizeof name, "f%u-op%u-off%u", file, rec[0], offs[k]);
            rc |= write_seed(dir, name, rec, sizeof rec);
        }
    for (unsigned file = 0; file < 8; file++) {
        uint8_t del[7] = {7, (uint8_t)file, 0, 0, 0, 0, 0};
        uint8_t grow[7] = {3, (uint8_t)file, 0, 0, 0, 0, 200};
        snprintf(name, sizeof name, "f%u-delete", file);
        rc |= write_seed(dir, name, del, sizeof del);
        snprintf(name, sizeof name, "f%u-append", file);
        rc |= write_seed(dir, name, grow, sizeof grow);
    }
    return rc ? -1 : 0;
}
