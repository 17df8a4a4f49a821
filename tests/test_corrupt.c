/*
 * test_corrupt.c - damaged manifests and records whose checksums are right
 * (a writer's bug or deliberate tampering): the engine must answer with a
 * SOP_* code (SOP_CORRUPT naming the file and field) or a checker finding,
 * never crash, hang, overflow, allocate by a length from disk, or lose data
 * silently. Regression tests for bugs 9-13 of docs/TESTING.md (found by
 * fuzz/fuzz_wal.c and fuzz/fuzz_manifest.c), and for two prepared-store
 * bugs their fixes depend on.
 *
 * Each test builds a small database with the public API, then rewrites
 * MANIFEST fields (or a log record) in place and recomputes the CRC, as
 * fuzz_manifest.c does. Manifest layout: src/ckpt.c, docs/FORMAT.md.
 */
#include "harness.h"
#include "tutil.h"

#include "db.h" /* white-box: db->reg.next_lid, sop_store.root_lid */
#include "sop_sys.h"

#include <dirent.h>
#include <signal.h>

/* ---- the manifest, as byte offsets ------------------------------------------------------ */

#define M_CKPT_LSN   16
#define M_REPLAY_SEG 24
#define M_REPLAY_OFF 32
#define M_DUR_SEG    40
#define M_DUR_OFF    48
#define M_NEXT_LID   56
#define M_NEXT_STORE 64
#define M_NEXT_TXN   72
#define M_STORES     80
/* in a store entry */
#define ST_ID      0
#define ST_ROOT    8
#define ST_COUNT   16
#define ST_CREATED 32
#define ST_NAME    42 /* after u16 name_len at 40 */
/* in a prepared entry */
#define PR_ID   0
#define PR_LSN  8
#define PR_BODY 20 /* after u32 body_len at 16 */
/* in a registry entry (32 bytes) */
#define RG_LID 0
#define RG_SEG 8
#define RG_OFF 16
#define RG_LEN 24
#define RG_CRC 28

typedef struct mani {
    char path[700];
    uint8_t *d;
    size_t len;
    size_t nst, st[8];
    size_t npr, pr[4];
    size_t nrg, rg; /* entries at rg + 32 * i */
} mani;

static uint64_t g64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}
static uint32_t g32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint16_t g16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}
static void p64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void p32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Load and index the (only) manifest of test_dir(). 0 on success. */
static int mani_load(mani *m)
{
    memset(m, 0, sizeof *m);
    DIR *dir = opendir(test_dir());
    struct dirent *e;
    while (dir && (e = readdir(dir)) != NULL)
        if (strncmp(e->d_name, "MANIFEST-", 9) == 0 && !strchr(e->d_name, '.'))
            snprintf(m->path, sizeof m->path, "%s/%s", test_dir(), e->d_name);
    if (dir)
        closedir(dir);
    if (!m->path[0] || !(m->d = tfile_read(m->path, &m->len)) || m->len < M_STORES + 4)
        return -1;
    size_t p = M_STORES;
    m->nst = g32(m->d + p);
    p += 4;
    for (size_t i = 0; i < m->nst && i < 8; i++) {
        m->st[i] = p;
        p += ST_NAME + g16(m->d + p + 40);
        p += 12;                /* flags, slot_length, max_inline */
        p += 2 + g16(m->d + p); /* comparator */
        p += 4 + g32(m->d + p); /* key spec */
    }
    m->npr = g32(m->d + p);
    p += 4;
    for (size_t i = 0; i < m->npr && i < 4; i++) {
        m->pr[i] = p;
        p += PR_BODY + g32(m->d + p + 16);
    }
    p += 4 + 56 * (size_t)g32(m->d + p); /* segment accounting */
    m->nrg = (size_t)g64(m->d + p);
    m->rg = p + 8;
    return m->rg + 32 * m->nrg + 4 == m->len ? 0 : -1;
}

/* Write it back with a correct CRC. */
static int mani_save(mani *m)
{
    p32(m->d + m->len - 4, tcrc32c(0, m->d, m->len - 4));
    return tfile_write(m->path, m->d, m->len);
}

static void mani_free(mani *m)
{
    free(m->d);
    m->d = NULL;
}

static size_t store_at(const mani *m, const char *name)
{
    for (size_t i = 0; i < m->nst; i++)
        if (g16(m->d + m->st[i] + 40) == strlen(name) &&
            memcmp(m->d + m->st[i] + ST_NAME, name, strlen(name)) == 0)
            return m->st[i];
    return 0;
}

static size_t reg_at(const mani *m, uint64_t lid)
{
    for (size_t i = 0; i < m->nrg; i++)
        if (g64(m->d + m->rg + 32 * i) == lid)
            return m->rg + 32 * i;
    return 0;
}

/* Offset, inside a COMMIT/PREPARE body (from the xid on), of the value_len
 * of its first blob put (its sop_loc follows); 0 if none. No catalog ops. */
static size_t body_blob_put(const uint8_t *b, size_t len)
{
    size_t p = 2 + g16(b);
    if (p + 8 > len || g32(b + p) != 0)
        return 0;
    uint32_t nst = g32(b + p + 4);
    p += 8;
    for (uint32_t i = 0; i < nst && p + 28 <= len; i++) {
        uint32_t nops = g32(b + p + 24);
        p += 28;
        for (uint32_t j = 0; j < nops && p + 4 <= len; j++) {
            uint8_t kind = b[p], vkind = b[p + 1];
            p += 4 + g16(b + p + 2) + 8;
            if (kind != 1)
                continue;
            if (vkind)
                return p;
            p += 4 + g32(b + p);
        }
    }
    return 0;
}

/* The newest segment file of test_dir(). */
static const char *newest_segment(void)
{
    static char path[700];
    char best[21] = "";
    DIR *dir = opendir(test_path("seg"));
    struct dirent *e;
    while (dir && (e = readdir(dir)) != NULL)
        if (strlen(e->d_name) == 20 && strcmp(e->d_name, best) > 0)
            memcpy(best, e->d_name, 21); /* <id>.seg and its NUL */
    if (dir)
        closedir(dir);
    snprintf(path, sizeof path, "%s/seg/%s", test_dir(), best);
    return path;
}

/* ---- the database the tests damage ------------------------------------------------------ */

#define DEEP_KEYS 40
#define BLOB_LEN  1300

static uint8_t blob_val[BLOB_LEN];

/* Stores "deep" (4 slots, DEEP_KEYS keys: a branch root), "flat" (3 keys),
 * "blob" (values in their own blobs, 2 keys); a prepared transaction (id 1)
 * that puts a BLOB_LEN-byte value "p0" into "blob". The prepared
 * transaction is in the manifest, or (prepare_in_log) in the log after it;
 * commit_after adds "f9" to "flat" after the checkpoint. Left as a crash
 * leaves it, so the next open replays the log. */
static int build_db(int prepare_in_log, int commit_after)
{
    sop_db *db;
    sop_txn *t, *p;
    sop_store *s;
    sop_store_options o;
    char k[16];
    for (size_t i = 0; i < BLOB_LEN; i++)
        blob_val[i] = (uint8_t)(i * 7 + 3);
    sop_val bv = {blob_val, BLOB_LEN};
    CHECK_OK_RET(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK_RET(sop_txn_begin(&t, db, 0));
    sop_store_options_init(&o, SOP_STORE_OPTIONS_VERSION);
    o.slot_length = 4;
    CHECK_OK_RET(sop_store_open(&s, t, "deep", SOP_STORE_CREATE, &o));
    for (int i = 0; i < DEEP_KEYS; i++) {
        snprintf(k, sizeof k, "d%03d", i);
        CHECK_OK_RET(put_s(t, s, k, "deep-value"));
    }
    CHECK_OK_RET(sop_store_open(&s, t, "flat", SOP_STORE_CREATE, NULL));
    for (int i = 0; i < 3; i++) {
        snprintf(k, sizeof k, "f%d", i);
        CHECK_OK_RET(put_s(t, s, k, "flat-value"));
    }
    sop_store_options_init(&o, SOP_STORE_OPTIONS_VERSION);
    o.flags = SOP_STORE_VALUES_SEPARATE;
    CHECK_OK_RET(sop_store_open(&s, t, "blob", SOP_STORE_CREATE, &o));
    for (int i = 0; i < 2; i++) {
        sop_val kv = {k, (size_t)snprintf(k, sizeof k, "s%d", i)};
        CHECK_OK_RET(sop_upsert(t, s, &kv, &bv));
    }
    CHECK_OK_RET(sop_txn_commit(t));
    if (prepare_in_log)
        CHECK_OK_RET(sop_db_checkpoint(db));
    CHECK_OK_RET(sop_txn_begin(&p, db, 0));
    CHECK_OK_RET(sop_store_open(&s, p, "blob", 0, NULL));
    sop_val pk = S("p0");
    CHECK_OK_RET(sop_upsert(p, s, &pk, &bv));
    CHECK_OK_RET(sop_txn_prepare(p, NULL));
    if (!prepare_in_log)
        CHECK_OK_RET(sop_db_checkpoint(db));
    if (commit_after) {
        CHECK_OK_RET(sop_txn_begin(&t, db, 0));
        CHECK_OK_RET(sop_store_open(&s, t, "flat", 0, NULL));
        CHECK_OK_RET(put_s(t, s, "f9", "flat-value"));
        CHECK_OK_RET(sop_txn_commit(t));
    }
    return crash_close(db); /* the prepared txn stays prepared */
}

/* sop_db_check's findings, joined with newlines into buf; the count, or
 * UINT64_MAX if the checker could not run. */
static char findings_buf[16384];

static void collect_finding(const char *f, void *ctx)
{
    (void)ctx;
    size_t n = strlen(findings_buf);
    snprintf(findings_buf + n, sizeof findings_buf - n, "%s\n", f);
}

static uint64_t check_findings(sop_db *db)
{
    uint64_t n = 0;
    findings_buf[0] = 0;
    if (sop_db_check(&n, db, collect_finding, NULL, NULL) != SOP_OK)
        return UINT64_MAX;
    return n;
}

#define CHECK_FINDINGS(db, expect)                                                                 \
    do {                                                                                           \
        uint64_t f_ = check_findings(db);                                                          \
        if (f_ != (uint64_t)(expect)) {                                                            \
            FAIL_AT("sop_db_check: %" PRIu64 " findings, expected %" PRIu64 ":\n%s", f_,           \
                    (uint64_t)(expect), findings_buf);                                             \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define CHECK_MSG(substr)                                                                          \
    do {                                                                                           \
        if (!strstr(sop_errmsg(), (substr))) {                                                     \
            FAIL_AT("message '%s' lacks '%s'", sop_errmsg(), (substr));                            \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define CHECK_FINDING(substr)                                                                      \
    do {                                                                                           \
        if (!strstr(findings_buf, (substr))) {                                                     \
            FAIL_AT("no finding with '%s' in:\n%s", (substr), findings_buf);                       \
            return;                                                                                \
        }                                                                                          \
    } while (0)

static int open_store(sop_store **s, sop_txn *t, const char *name)
{
    return sop_store_open(s, t, name, 0, NULL);
}

/* Count of a store in a fresh read-only transaction. */
static int count_of(uint64_t *n, sop_db *db, const char *name)
{
    sop_txn *t = NULL;
    sop_store *s;
    int rc = sop_txn_begin(&t, db, SOP_TXN_READONLY);
    if (rc == SOP_OK && (rc = open_store(&s, t, name)) == SOP_OK)
        rc = sop_count(n, t, s);
    if (t)
        sop_txn_abort(t);
    return rc;
}

/* ---- bug 9: prepared bodies ------------------------------------------------------------- */

/* The prepared transaction's blob put now declares 1307 bytes for a
 * 1300-byte blob: the checker reports it, and commit refuses it and leaves
 * it prepared (it used to commit a value sop_get cannot read). */
static void expect_prepared_blob_refused(void)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    sop_val v;
    sop_prepared_info info[2];
    size_t n = 0;
    char want[128];
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_db_prepared_list(info, 2, &n, db));
    CHECK_EQ_U64(n, 1);
    CHECK(check_findings(db) >= 1);
    snprintf(want, sizeof want, "prepared transaction %" PRIu64 ": value blob at", info[0].id);
    CHECK_FINDING(want);
    CHECK_FINDING("value blob length 1300, expected 1307");
    CHECK_RC(SOP_CORRUPT, sop_db_prepared_commit(db, info[0].id));
    snprintf(want, sizeof want, "prepared transaction %" PRIu64 ":", info[0].id);
    CHECK_MSG(want);
    CHECK_MSG("value blob length 1300, expected 1307");
    /* Nothing was applied; the transaction is still prepared. */
    CHECK_OK(sop_db_prepared_list(info, 2, &n, db));
    CHECK_EQ_U64(n, 1);
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(open_store(&s, t, "blob"));
    CHECK_RC(SOP_NOTFOUND, get_s(&v, t, s, "p0"));
    CHECK_OK(get_s(&v, t, s, "s1"));
    CHECK(v.len == BLOB_LEN && memcmp(v.data, blob_val, BLOB_LEN) == 0);
    sop_txn_abort(t);
    /* It can still be rolled back; then the database is clean. */
    CHECK_OK(sop_db_prepared_rollback(db, info[0].id));
    CHECK_FINDINGS(db, 0);
    CHECK_OK(sop_db_close(db));
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_FINDINGS(db, 0);
    CHECK_OK(sop_db_close(db));
}

TEST(test_corrupt__prepared_body_blob_length_in_manifest_is_checked)
{
    mani m;
    CHECK_OK(build_db(0, 0));
    CHECK(mani_load(&m) == 0);
    CHECK_EQ_U64(m.npr, 1);
    uint8_t *body = m.d + m.pr[0] + PR_BODY;
    size_t vl = body_blob_put(body, g32(m.d + m.pr[0] + 16));
    CHECK(vl != 0);
    CHECK_EQ_U64(g32(body + vl), BLOB_LEN);
    p32(body + vl, BLOB_LEN + 7);
    CHECK(mani_save(&m) == 0);
    mani_free(&m);
    expect_prepared_blob_refused();
}

TEST(test_corrupt__prepared_body_blob_length_in_log_is_checked)
{
    size_t len, off = 0;
    CHECK_OK(build_db(1, 0));
    const char *seg = newest_segment();
    uint8_t *d = tfile_read(seg, &len);
    CHECK(d != NULL);
    /* Find the PREPARE record; rewrite the value length, then its CRC. */
    int done = 0;
    while (!done && off + 24 <= len && g32(d + off) == 0x52504F53u) {
        uint32_t plen = g32(d + off + 8);
        uint8_t *pay = d + off + 24;
        if (d[off + 4] == 4 && plen > 24 && pay[0] == 2) {
            size_t vl = body_blob_put(pay + 24, plen - 24);
            CHECK(vl != 0 && g32(pay + 24 + vl) == BLOB_LEN);
            p32(pay + 24 + vl, BLOB_LEN + 7);
            p32(d + off + 12, 0);
            p32(d + off + 12, tcrc32c(tcrc32c(0, d + off, 24), pay, plen));
            done = 1;
        }
        off += (24 + plen + 7) & ~(size_t)7;
    }
    CHECK(done);
    CHECK(tfile_write(seg, d, len) == 0);
    free(d);
    expect_prepared_blob_refused();
}

/* Rolling back a prepared transaction counts its value blobs dead. A
 * damaged location (here a length of nearly 4 GiB) used to be counted as
 * it stood: segment 1 had more dead bytes than blob bytes, and the next
 * checkpoint deleted it with every live node in it. Only a blob that is
 * there dies now. */
TEST(test_corrupt__rollback_counts_dead_only_blobs_that_are_there)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    sop_val v;
    mani m;
    sop_prepared_info info[1];
    size_t n;
    char k[16];
    CHECK_OK(build_db(0, 0));
    CHECK(mani_load(&m) == 0);
    uint8_t *body = m.d + m.pr[0] + PR_BODY;
    size_t vl = body_blob_put(body, g32(m.d + m.pr[0] + 16));
    CHECK(vl != 0);
    p32(body + vl + 4 + 16, 0xFFFFFFF0u); /* loc.len */
    CHECK(mani_save(&m) == 0);
    mani_free(&m);
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_db_prepared_list(info, 1, &n, db));
    CHECK_EQ_U64(n, 1);
    CHECK_OK(sop_db_prepared_rollback(db, info[0].id));
    CHECK_OK(sop_db_checkpoint(db)); /* segment reclamation runs here */
    CHECK_OK(sop_db_close(db));
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(open_store(&s, t, "deep"));
    for (int i = 0; i < DEEP_KEYS; i++) {
        snprintf(k, sizeof k, "d%03d", i);
        CHECK_OK(get_s(&v, t, s, k));
        CHECK_VAL(v, "deep-value");
    }
    CHECK_OK(open_store(&s, t, "blob"));
    CHECK_OK(get_s(&v, t, s, "s0"));
    CHECK(v.len == BLOB_LEN && memcmp(v.data, blob_val, BLOB_LEN) == 0);
    CHECK_RC(SOP_NOTFOUND, get_s(&v, t, s, "p0"));
    sop_txn_abort(t);
    /* The rolled-back blob stays counted live: leaked space, reported. */
    CHECK_FINDINGS(db, 1);
    CHECK_FINDING("live blob bytes");
    CHECK_OK(sop_db_close(db));
}

/* ---- bug 10: store counts near 2^63 ----------------------------------------------------- */

TEST(test_corrupt__store_count_above_int64_max_is_refused)
{
    static const uint64_t bad[] = {(uint64_t)INT64_MAX + 1, UINT64_MAX};
    sop_db *db;
    mani m;
    CHECK_OK(build_db(0, 0));
    for (size_t i = 0; i < 2; i++) {
        char want[80];
        CHECK(mani_load(&m) == 0);
        size_t st = store_at(&m, "flat");
        CHECK(st != 0);
        p64(m.d + st + ST_COUNT, bad[i]);
        CHECK(mani_save(&m) == 0);
        mani_free(&m);
        CHECK_RC(SOP_CORRUPT, sop_db_open(&db, test_dir(), NULL));
        CHECK_MSG("MANIFEST-");
        snprintf(want, sizeof want, "store 'flat' count %" PRIu64 " is above INT64_MAX", bad[i]);
        CHECK_MSG(want);
    }
}

/* A count of INT64_MAX is accepted, and nothing that moves it overflows:
 * replay (publish_catalog), sop_count and a commit keep it at INT64_MAX.
 * (They computed (int64_t)count + 1: signed overflow.) */
TEST(test_corrupt__store_count_at_int64_max_does_not_overflow)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    mani m;
    uint64_t n;
    CHECK_OK(build_db(0, 1)); /* "f9" is added after the checkpoint */
    CHECK(mani_load(&m) == 0);
    size_t st = store_at(&m, "flat");
    CHECK(st != 0);
    CHECK_EQ_U64(g64(m.d + st + ST_COUNT), 3);
    p64(m.d + st + ST_COUNT, INT64_MAX);
    CHECK(mani_save(&m) == 0);
    mani_free(&m);
    CHECK_OK(sop_db_open(&db, test_dir(), NULL)); /* replays +1 */
    CHECK_OK(count_of(&n, db, "flat"));
    CHECK_EQ_U64(n, INT64_MAX);
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(open_store(&s, t, "flat"));
    CHECK_OK(put_s(t, s, "f5", "new"));
    CHECK_OK(sop_count(&n, t, s));
    CHECK_EQ_U64(n, INT64_MAX);
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(count_of(&n, db, "flat"));
    CHECK_EQ_U64(n, INT64_MAX);
    /* The checker compares it with the tree. */
    CHECK_FINDINGS(db, 1);
    CHECK_FINDING("store 'flat': count is 9223372036854775807 but the tree holds 5 items");
    /* What the engine wrote, it loads again. */
    CHECK_OK(sop_db_close(db));
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(count_of(&n, db, "flat"));
    CHECK_EQ_U64(n, INT64_MAX);
    CHECK_OK(sop_db_close(db));
}

/* ---- bug 11: blob lengths from disk ----------------------------------------------------- */

#define BIG_ALLOC ((size_t)64 << 20)
static size_t largest_request;

static void *cap_malloc(size_t n, void *ctx)
{
    (void)ctx;
    if (n > largest_request)
        largest_request = n;
    return n > BIG_ALLOC ? NULL : malloc(n);
}
static void *cap_realloc(void *p, size_t n, void *ctx)
{
    (void)ctx;
    if (n > largest_request)
        largest_request = n;
    return n > BIG_ALLOC ? NULL : realloc(p, n);
}
static void cap_free(void *p, void *ctx)
{
    (void)ctx;
    free(p);
}

/* Everything that reads a blob location checks it against its segment
 * before it allocates loc.len bytes: node loads (sop_wal__read), values
 * (sop_txn__value, commit of a prepared body) and the checker's buffer.
 * Lengths near 4 GiB used to be allocated first (SOP_NOMEM, or 4 GiB). */
TEST(test_corrupt__blob_length_is_checked_before_it_sizes_an_allocation)
{
    static const sop_allocator capped = {cap_malloc, cap_realloc, cap_free, NULL};
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    sop_val v;
    mani m;
    sop_prepared_info info[1];
    size_t n;
    CHECK_OK(build_db(0, 0));
    CHECK(mani_load(&m) == 0);
    size_t st = store_at(&m, "flat");
    size_t rg = reg_at(&m, g64(m.d + st + ST_ROOT));
    CHECK(st && rg);
    p32(m.d + rg + RG_LEN, 0xFFFFFFF8u); /* the root of "flat" */
    uint8_t *body = m.d + m.pr[0] + PR_BODY;
    size_t vl = body_blob_put(body, g32(m.d + m.pr[0] + 16));
    CHECK(vl != 0);
    p32(body + vl + 4 + 16, 0xFFFFFFF0u); /* the prepared value's loc.len */
    CHECK(mani_save(&m) == 0);
    mani_free(&m);

    largest_request = 0;
    sop_set_allocator(&capped);
    int rc = sop_db_open(&db, test_dir(), NULL);
    if (rc != SOP_OK)
        sop_set_allocator(NULL);
    CHECK_OK(rc);
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(open_store(&s, t, "flat"));
    CHECK_RC(SOP_CORRUPT, get_s(&v, t, s, "f1"));
    CHECK_MSG("beyond segment end");
    sop_txn_abort(t);
    uint64_t f = check_findings(db);
    CHECK(f >= 2 && f != UINT64_MAX);
    CHECK_FINDING("store 'flat': node");
    CHECK_FINDING("+4294967288 beyond segment end");
    CHECK_FINDING("prepared transaction 1: value blob at");
    CHECK_FINDING("+4294967280 beyond segment end");
    CHECK_OK(sop_db_prepared_list(info, 1, &n, db));
    CHECK_RC(SOP_CORRUPT, sop_db_prepared_commit(db, info[0].id));
    CHECK_MSG("beyond segment end");
    crash_close(db);
    sop_set_allocator(NULL);
    if (largest_request > BIG_ALLOC)
        FAIL_AT("libsop asked for %zu bytes", largest_request);
}

/* off + len used to be computed: an offset near 2^64 wrapped past the
 * check and reached pread (SOP_IOERR, not SOP_CORRUPT). */
TEST(test_corrupt__blob_offset_near_2_64_does_not_wrap)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    sop_val v;
    mani m;
    CHECK_OK(build_db(0, 0));
    CHECK(mani_load(&m) == 0);
    size_t rg = reg_at(&m, g64(m.d + store_at(&m, "flat") + ST_ROOT));
    CHECK(rg != 0);
    p64(m.d + rg + RG_OFF, UINT64_MAX - 16);
    CHECK(mani_save(&m) == 0);
    mani_free(&m);
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(open_store(&s, t, "flat"));
    CHECK_RC(SOP_CORRUPT, get_s(&v, t, s, "f1"));
    CHECK_MSG("beyond segment end");
    sop_txn_abort(t);
    crash_close(db);
}

/* ---- bug 12: counters and positions ----------------------------------------------------- */

/* Rewrite one u64 of the manifest; expect the open to fail with SOP_CORRUPT
 * and a message holding want. */
static int expect_refused(size_t off, uint64_t value, const char *want)
{
    mani m;
    sop_db *db = NULL;
    if (mani_load(&m) != 0)
        return -1;
    uint8_t *orig = malloc(m.len);
    if (!orig)
        return -1;
    memcpy(orig, m.d, m.len);
    p64(m.d + off, value);
    mani_save(&m);
    int rc = sop_db_open(&db, test_dir(), NULL);
    int ok = rc == SOP_CORRUPT && strstr(sop_errmsg(), "MANIFEST-") && strstr(sop_errmsg(), want);
    if (!ok)
        fprintf(stderr, "    offset %zu = %" PRIu64 ": open returned %d [%s], expected '%s'\n", off,
                value, rc, sop_errmsg(), want);
    if (rc == SOP_OK)
        crash_close(db);
    tfile_write(m.path, orig, m.len); /* the real manifest again */
    free(orig);
    mani_free(&m);
    return ok ? 0 : -1;
}

/* The database opens and every item is there. */
static int intact(void)
{
    sop_db *db;
    uint64_t n;
    CHECK_OK_RET(sop_db_open(&db, test_dir(), NULL));
    int rc = count_of(&n, db, "deep");
    if (rc == SOP_OK && n != DEEP_KEYS)
        rc = SOP_CORRUPT;
    if (rc == SOP_OK && check_findings(db) != 0) {
        fprintf(stderr, "    findings:\n%s", findings_buf);
        rc = SOP_CORRUPT;
    }
    crash_close(db);
    return rc;
}

/* next_lid at or below a live lid: commits reused it (replacing another
 * tree's node; a split could hold one lid twice and crash). */
TEST(test_corrupt__next_lid_at_a_live_lid_is_refused)
{
    mani m;
    CHECK_OK(build_db(0, 0));
    CHECK(mani_load(&m) == 0);
    uint64_t max_lid = 0, max_root = 0;
    for (size_t i = 0; i < m.nrg; i++)
        max_lid = g64(m.d + m.rg + 32 * i) > max_lid ? g64(m.d + m.rg + 32 * i) : max_lid;
    for (size_t i = 0; i < m.nst; i++)
        max_root =
            g64(m.d + m.st[i] + ST_ROOT) > max_root ? g64(m.d + m.st[i] + ST_ROOT) : max_root;
    CHECK(max_lid > max_root);
    mani_free(&m);
    char want[80];
    snprintf(want, sizeof want, "next_lid %" PRIu64 " is not past node %" PRIu64, max_lid, max_lid);
    CHECK(expect_refused(M_NEXT_LID, max_lid, want) == 0);
    CHECK(expect_refused(M_NEXT_LID, max_root, "next_lid is") == 0);
    CHECK(expect_refused(M_NEXT_LID, 0, "next_lid is 0") == 0);
    CHECK_OK(intact());
}

/* Defence in depth: lid allocation itself refuses a lid in use (white-box:
 * no manifest the loader accepts can set this up any more). */
TEST(test_corrupt__lid_allocation_refuses_a_live_lid)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    sop_store_options o;
    uint64_t n;
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    sop_store_options_init(&o, SOP_STORE_OPTIONS_VERSION);
    o.slot_length = 4;
    CHECK_OK(sop_store_open(&s, t, "deep", SOP_STORE_CREATE, &o));
    CHECK_OK(put_s(t, s, "k1", "v"));
    CHECK_OK(put_s(t, s, "k2", "v"));
    CHECK_OK(put_s(t, s, "k3", "v"));
    CHECK_OK(sop_txn_commit(t));
    uint64_t saved = db->reg.next_lid;
    db->reg.next_lid = s->root_lid; /* as a stale next_lid would */
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(open_store(&s, t, "deep"));
    CHECK_OK(put_s(t, s, "k4", "v"));
    CHECK_OK(put_s(t, s, "k5", "v")); /* 5 items in a 4-slot leaf: a split */
    CHECK_RC(SOP_CORRUPT, sop_txn_commit(t));
    CHECK_MSG("is already in use");
    CHECK_OK(count_of(&n, db, "deep"));
    CHECK_EQ_U64(n, 3);
    db->reg.next_lid = saved;
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(open_store(&s, t, "deep"));
    CHECK_OK(put_s(t, s, "k4", "v"));
    CHECK_OK(put_s(t, s, "k5", "v"));
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(count_of(&n, db, "deep"));
    CHECK_EQ_U64(n, 5);
    CHECK_FINDINGS(db, 0);
    CHECK_OK(sop_db_close(db));
}

/* A prepared entry with lsn > ckpt_lsn: the next checkpoint, which keeps
 * only lsn <= its own, would drop it. */
TEST(test_corrupt__prepared_lsn_after_the_checkpoint_is_refused)
{
    mani m;
    CHECK_OK(build_db(0, 0));
    CHECK(mani_load(&m) == 0);
    uint64_t C = g64(m.d + M_CKPT_LSN);
    size_t pr = m.pr[0];
    mani_free(&m);
    CHECK(expect_refused(pr + PR_LSN, C + 1, "prepared transaction 1 has lsn") == 0);
    CHECK(expect_refused(pr + PR_LSN, C + 1, "after the checkpoint lsn") == 0);
    CHECK(expect_refused(pr + PR_ID, 0, "prepared transaction id 0") == 0);
    CHECK_OK(intact());
}

/* replay_seg = UINT64_MAX replayed nothing (the commits after the
 * checkpoint vanished) and wrapped the next segment id to 0. */
TEST(test_corrupt__replay_position_outside_the_log_is_refused)
{
    sop_db *db;
    mani m;
    CHECK_OK(build_db(1, 1)); /* records after the checkpoint */
    CHECK(mani_load(&m) == 0);
    uint64_t rseg = g64(m.d + M_REPLAY_SEG), roff = g64(m.d + M_REPLAY_OFF);
    uint64_t dseg = g64(m.d + M_DUR_SEG), doff = g64(m.d + M_DUR_OFF);
    mani_free(&m);
    CHECK_EQ_U64(rseg, dseg);
    const char *want = "out of order or outside the log";
    CHECK(expect_refused(M_REPLAY_SEG, UINT64_MAX, want) == 0);
    CHECK(expect_refused(M_REPLAY_SEG, dseg + 1, want) == 0);
    CHECK(expect_refused(M_DUR_SEG, UINT64_MAX, want) == 0);
    CHECK(expect_refused(M_REPLAY_OFF, doff + 8, want) == 0); /* after the durable one */
    CHECK(expect_refused(M_REPLAY_OFF, UINT64_MAX, want) == 0);
    (void)roff;
    CHECK_OK(intact());
    /* A segment file with the last id: the next one would be 0. */
    char path[700];
    snprintf(path, sizeof path, "%s/seg/ffffffffffffffff.seg", test_dir());
    CHECK(tfile_write(path, (const uint8_t *)"", 0) == 0);
    CHECK_RC(SOP_CORRUPT, sop_db_open(&db, test_dir(), NULL));
    CHECK_MSG("has the last id: none can follow");
    remove(path);
    CHECK_OK(intact());
}

/* Two store entries sharing an id, a name or a root lid, or one created
 * after the checkpoint: two stores shared a tree (or a name). */
TEST(test_corrupt__stores_sharing_id_name_or_root_are_refused)
{
    mani m;
    CHECK_OK(build_db(0, 0));
    CHECK(mani_load(&m) == 0);
    size_t deep = store_at(&m, "deep"), flat = store_at(&m, "flat");
    CHECK(deep && flat);
    uint64_t deep_id = g64(m.d + deep + ST_ID), deep_root = g64(m.d + deep + ST_ROOT);
    uint64_t C = g64(m.d + M_CKPT_LSN);
    /* the name: "flat" becomes "deep" */
    uint8_t *orig = malloc(m.len);
    CHECK(orig != NULL);
    memcpy(orig, m.d, m.len);
    memcpy(m.d + flat + ST_NAME, "deep", 4);
    CHECK(mani_save(&m) == 0);
    sop_db *db;
    int rc = sop_db_open(&db, test_dir(), NULL);
    memcpy(m.d, orig, m.len);
    CHECK(mani_save(&m) == 0);
    free(orig);
    mani_free(&m);
    CHECK_RC(SOP_CORRUPT, rc);
    CHECK_MSG("two stores share an id, a root lid or a name");
    CHECK(expect_refused(flat + ST_ID, deep_id, "two stores share") == 0);
    CHECK(expect_refused(flat + ST_ROOT, deep_root, "two stores share") == 0);
    CHECK(expect_refused(flat + ST_CREATED, C + 1, "store 'flat' created at lsn") == 0);
    CHECK_OK(intact());
}

TEST(test_corrupt__next_store_and_txn_ids_must_pass_the_used_ones)
{
    mani m;
    CHECK_OK(build_db(0, 0));
    CHECK(mani_load(&m) == 0);
    uint64_t max_id = 0;
    for (size_t i = 0; i < m.nst; i++)
        max_id = g64(m.d + m.st[i] + ST_ID) > max_id ? g64(m.d + m.st[i] + ST_ID) : max_id;
    uint64_t pid = g64(m.d + m.pr[0] + PR_ID);
    mani_free(&m);
    CHECK(expect_refused(M_NEXT_STORE, max_id, "next_store_id is") == 0);
    CHECK(expect_refused(M_NEXT_TXN, pid, "next_txn_id is") == 0);
    CHECK_OK(intact());
}

/* Counters at the end of their range: the next id would wrap to 0 (and
 * the manifest written after it would contradict itself). Creating a store
 * or preparing then fails with SOP_CORRUPT and leaves the counter, so the
 * database still reopens; a next_lid past the largest lid is refused. */
TEST(test_corrupt__exhausted_ids_are_refused_not_wrapped)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    mani m;
    CHECK_OK(build_db(0, 0));
    CHECK(expect_refused(M_NEXT_LID, (1ull << 36) + 1, "is past the largest node id") == 0);
    CHECK(mani_load(&m) == 0);
    p64(m.d + M_NEXT_STORE, UINT64_MAX);
    p64(m.d + M_NEXT_TXN, UINT64_MAX);
    CHECK(mani_save(&m) == 0);
    mani_free(&m);
    for (int round = 0; round < 2; round++) {
        CHECK_OK(sop_db_open(&db, test_dir(), NULL));
        CHECK_OK(sop_txn_begin(&t, db, 0));
        CHECK_OK(sop_store_open(&s, t, "new", SOP_STORE_CREATE, NULL));
        CHECK_OK(put_s(t, s, "k", "v"));
        CHECK_RC(SOP_CORRUPT, sop_txn_commit(t));
        CHECK_MSG("store ids exhausted");
        CHECK_OK(sop_txn_begin(&t, db, 0));
        CHECK_OK(open_store(&s, t, "flat"));
        CHECK_OK(put_s(t, s, "f7", "v"));
        CHECK_RC(SOP_CORRUPT, sop_txn_prepare(t, NULL));
        CHECK_MSG("transaction ids exhausted");
        sop_txn_abort(t);
        CHECK_OK(sop_txn_begin(&t, db, 0)); /* other commits go on */
        CHECK_OK(open_store(&s, t, "flat"));
        CHECK_OK(put_s(t, s, round ? "f8" : "f7", "v"));
        CHECK_OK(sop_txn_commit(t));
        CHECK_OK(sop_db_close(db)); /* the next round reopens what it wrote */
    }
    uint64_t n;
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(count_of(&n, db, "flat"));
    CHECK_EQ_U64(n, 5);
    CHECK_FINDINGS(db, 0);
    CHECK_OK(sop_db_close(db));
}

/* Replaying a PREPARE record did not reserve the root lid of the store it
 * creates: a replayed (or new) commit took that lid for another tree, and
 * committing the prepared transaction replaced that node. */
TEST(test_corrupt__replayed_prepare_reserves_its_new_store_root)
{
    sop_db *db;
    sop_txn *a, *b;
    sop_store *s;
    sop_store_options o;
    sop_prepared_info info[1];
    size_t np;
    uint64_t n;
    char k[16];
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&b, db, 0));
    sop_store_options_init(&o, SOP_STORE_OPTIONS_VERSION);
    o.slot_length = 4;
    CHECK_OK(sop_store_open(&s, b, "base", SOP_STORE_CREATE, &o));
    CHECK_OK(put_s(b, s, "k000", "v"));
    CHECK_OK(sop_txn_commit(b));
    CHECK_OK(sop_db_checkpoint(db));
    CHECK_OK(sop_txn_begin(&a, db, 0));
    CHECK_OK(sop_store_open(&s, a, "new", SOP_STORE_CREATE, NULL));
    CHECK_OK(put_s(a, s, "x", "v"));
    CHECK_OK(sop_txn_prepare(a, NULL));
    CHECK_OK(sop_txn_begin(&b, db, 0));
    CHECK_OK(open_store(&s, b, "base"));
    for (int i = 1; i < 40; i++) { /* splits: new lids */
        snprintf(k, sizeof k, "k%03d", i);
        CHECK_OK(put_s(b, s, k, "v"));
    }
    CHECK_OK(sop_txn_commit(b));
    CHECK_OK(crash_close(db));
    CHECK_OK(sop_db_open(&db, test_dir(), NULL)); /* replays PREPARE, then the commit */
    CHECK_FINDINGS(db, 0);
    CHECK_OK(sop_db_prepared_list(info, 1, &np, db));
    CHECK_EQ_U64(np, 1);
    CHECK_OK(sop_db_prepared_commit(db, info[0].id));
    CHECK_FINDINGS(db, 0);
    CHECK_OK(count_of(&n, db, "base"));
    CHECK_EQ_U64(n, 40);
    CHECK_OK(count_of(&n, db, "new"));
    CHECK_EQ_U64(n, 1);
    CHECK_OK(sop_db_close(db));
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_FINDINGS(db, 0);
    CHECK_OK(sop_db_close(db));
}

/* A prepared transaction that creates store "x" holds the name: another
 * transaction creating "x" used to commit, and the prepared commit then
 * made a second live "x" (a manifest the loader now refuses). */
TEST(test_corrupt__prepared_store_create_holds_its_name)
{
    sop_db *db;
    sop_txn *a, *b;
    sop_store *s;
    sop_prepared_info info[1];
    size_t np;
    uint64_t n;
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&a, db, 0));
    CHECK_OK(sop_store_open(&s, a, "x", SOP_STORE_CREATE, NULL));
    CHECK_OK(put_s(a, s, "a", "1"));
    CHECK_OK(sop_txn_prepare(a, NULL));
    CHECK_OK(sop_txn_begin(&b, db, 0));
    CHECK_OK(sop_store_open(&s, b, "x", SOP_STORE_CREATE, NULL));
    CHECK_OK(put_s(b, s, "b", "2"));
    CHECK_RC(SOP_BUSY, sop_txn_commit(b));
    CHECK_MSG("creates store 'x'");
    /* The same after a crash, when only the record knows the name. */
    CHECK_OK(crash_close(db));
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&b, db, 0));
    CHECK_OK(sop_store_open(&s, b, "x", SOP_STORE_CREATE, NULL));
    CHECK_OK(put_s(b, s, "b", "2"));
    CHECK_RC(SOP_BUSY, sop_txn_commit(b));
    CHECK_OK(sop_db_prepared_list(info, 1, &np, db));
    CHECK_EQ_U64(np, 1);
    CHECK_OK(sop_db_prepared_commit(db, info[0].id));
    CHECK_OK(count_of(&n, db, "x"));
    CHECK_EQ_U64(n, 1);
    CHECK_OK(sop_db_close(db));
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_FINDINGS(db, 0);
    CHECK_OK(sop_db_close(db));
}

/* ---- bug 13: the checker's walk --------------------------------------------------------- */

/* A hang would fail the test binary (SIGALRM) instead of the suite hanging. */
#define WALK_ALARM 120

/* The record at (seg, off) of test_dir(). */
static uint8_t *node_record(uint64_t seg, size_t *len, char *path, size_t cap)
{
    snprintf(path, cap, "%s/seg/%016" PRIx64 ".seg", test_dir(), seg);
    return tfile_read(path, len);
}

/* The registry entries of the first two children of "deep"'s root name the
 * root's blob: "node X holds the image of node R". The walk used to go on
 * into R's children, both X again among them: 2^40 paths (a hang). */
TEST(test_corrupt__check_stops_at_a_misdirected_node)
{
    sop_db *db;
    mani m;
    size_t len;
    char path[700], want[96];
    uint64_t child[2];
    CHECK_OK(build_db(0, 0));
    CHECK(mani_load(&m) == 0);
    uint64_t root = g64(m.d + store_at(&m, "deep") + ST_ROOT);
    size_t rr = reg_at(&m, root);
    CHECK(rr != 0);
    uint8_t *d = node_record(g64(m.d + rr + RG_SEG), &len, path, sizeof path);
    CHECK(d != NULL);
    uint64_t off = g64(m.d + rr + RG_OFF);
    const uint8_t *img = d + off + 24;
    CHECK(off + 24 + 48 <= len && img[0] == 2 && g32(img + 4) >= 1); /* a branch */
    /* child 0 in the header; child 1 ends separator 0 (u16 key_len, u8, key) */
    const uint8_t *slot0 = img + 40 + 8 * (size_t)g32(img + 8) + g32(img + 40);
    child[0] = g64(img + 32);
    child[1] = g64(slot0 + 3 + g16(slot0));
    free(d);
    for (int i = 0; i < 2; i++) {
        size_t rc_child = reg_at(&m, child[i]);
        CHECK(rc_child != 0);
        memcpy(m.d + rc_child + RG_SEG, m.d + rr + RG_SEG, 24); /* seg, off, len, crc */
    }
    CHECK(mani_save(&m) == 0);
    mani_free(&m);
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    alarm(WALK_ALARM);
    uint64_t f = check_findings(db);
    alarm(0);
    CHECK(f >= 2 && f != UINT64_MAX);
    for (int i = 0; i < 2; i++) {
        snprintf(want, sizeof want, "node %" PRIu64 " holds the image of node %" PRIu64, child[i],
                 root);
        CHECK_FINDING(want);
    }
    crash_close(db);
}

/* The root's first child pointer names the root: a cycle with correct
 * lids. The walk keeps a visited set and reports the second visit. */
TEST(test_corrupt__check_stops_at_a_cycle)
{
    sop_db *db;
    mani m;
    size_t len;
    char path[700], want[96];
    CHECK_OK(build_db(0, 0));
    CHECK(mani_load(&m) == 0);
    uint64_t root = g64(m.d + store_at(&m, "deep") + ST_ROOT);
    size_t rr = reg_at(&m, root);
    CHECK(rr != 0);
    uint8_t *d = node_record(g64(m.d + rr + RG_SEG), &len, path, sizeof path);
    CHECK(d != NULL);
    uint64_t off = g64(m.d + rr + RG_OFF);
    uint8_t *rec = d + off, *img = rec + 24;
    uint32_t plen = g32(rec + 8);
    CHECK(off + 24 + plen <= len && img[0] == 2 && g64(img + 24) == root);
    p64(img + 32, root); /* child 0 := the root itself */
    p32(rec + 12, 0);
    uint32_t crc = tcrc32c(tcrc32c(0, rec, 24), img, plen);
    p32(rec + 12, crc);
    CHECK(tfile_write(path, d, len) == 0);
    free(d);
    p32(m.d + rr + RG_CRC, crc);
    CHECK(mani_save(&m) == 0);
    mani_free(&m);
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    alarm(WALK_ALARM);
    uint64_t f = check_findings(db);
    alarm(0);
    CHECK(f >= 1 && f != UINT64_MAX);
    snprintf(want, sizeof want, "store 'deep': node %" PRIu64 " is reached more than once", root);
    CHECK_FINDING(want);
    crash_close(db);
}

TEST_MAIN(T(test_corrupt__prepared_body_blob_length_in_manifest_is_checked),
          T(test_corrupt__prepared_body_blob_length_in_log_is_checked),
          T(test_corrupt__rollback_counts_dead_only_blobs_that_are_there),
          T(test_corrupt__store_count_above_int64_max_is_refused),
          T(test_corrupt__store_count_at_int64_max_does_not_overflow),
          T(test_corrupt__blob_length_is_checked_before_it_sizes_an_allocation),
          T(test_corrupt__blob_offset_near_2_64_does_not_wrap),
          T(test_corrupt__next_lid_at_a_live_lid_is_refused),
          T(test_corrupt__lid_allocation_refuses_a_live_lid),
          T(test_corrupt__prepared_lsn_after_the_checkpoint_is_refused),
          T(test_corrupt__replay_position_outside_the_log_is_refused),
          T(test_corrupt__stores_sharing_id_name_or_root_are_refused),
          T(test_corrupt__next_store_and_txn_ids_must_pass_the_used_ones),
          T(test_corrupt__exhausted_ids_are_refused_not_wrapped),
          T(test_corrupt__replayed_prepare_reserves_its_new_store_root),
          T(test_corrupt__prepared_store_create_holds_its_name),
          T(test_corrupt__check_stops_at_a_misdirected_node),
          T(test_corrupt__check_stops_at_a_cycle))
