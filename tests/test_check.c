/*
 * test_check.c - the integrity checker (sop_db_check) as a user runs it on
 * a live database: on a snapshot, beside writers, within the cache budget.
 *
 *   test_check__progress_callback_can_commit
 *     the checker held the commit lock for its whole walk, so a progress
 *     callback that committed a transaction deadlocked.
 *   test_check__finding_callback_can_commit
 *     the same for a finding callback (a damaged value blob).
 *   test_check__writer_commits_during_a_long_check
 *     a writer that began during a check waited for all of it (no commit
 *     completed while the check ran).
 *   test_check__memory_stays_within_the_cache_budget
 *     a check over a database several times the cache kept every node it
 *     read (RSS 101 -> 211 MiB on a 64 MiB cache, issue 10 defect 11).
 *
 * Threaded (tests/threaded.list): runs under `make tsan`.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "harness.h"
#include "tutil.h"
#include "vfs_fault.h"

/* Fill store "s" with n keys of value_len bytes, batch keys per commit. */
static int fill(sop_db *db, int n, size_t value_len, int batch)
{
    char key[32];
    char *val = malloc(value_len + 1);
    if (!val)
        return SOP_NOMEM;
    for (int i = 0; i < n;) {
        sop_txn *t;
        sop_store *s;
        CHECK_OK_RET(sop_txn_begin(&t, db, 0));
        CHECK_OK_RET(sop_store_open(&s, t, "s", SOP_STORE_CREATE, NULL));
        for (int j = 0; j < batch && i < n; j++, i++) {
            snprintf(key, sizeof key, "key%08d", i);
            memset(val, 'a' + i % 26, value_len);
            sop_val k = tv(key), v = {val, value_len};
            CHECK_OK_RET(sop_upsert(t, s, &k, &v));
        }
        CHECK_OK_RET(sop_txn_commit(t));
    }
    free(val);
    return SOP_OK;
}

/* Commit key = "v" into store "s" in a transaction of its own, as a
 * callback of the running check does. */
static int commit_key(sop_db *db, const char *key)
{
    sop_txn *t;
    sop_store *s;
    int rc = sop_txn_begin(&t, db, 0);
    if (rc != SOP_OK)
        return rc;
    if ((rc = sop_store_open(&s, t, "s", 0, NULL)) != SOP_OK ||
        (rc = put_s(t, s, key, "v")) != SOP_OK) {
        sop_txn_abort(t);
        return rc;
    }
    return sop_txn_commit(t); /* ends t whatever it returns */
}

struct commit_cb {
    sop_db *db;
    int calls, commits;
    int rc; /* first failure */
};

static void progress_commits(uint64_t done, uint64_t total, void *ctx)
{
    struct commit_cb *c = ctx;
    if (done == total)
        return; /* the last call, after the walk */
    c->calls++;
    if (c->commits >= 3 || c->rc)
        return;
    char key[32];
    snprintf(key, sizeof key, "from-callback-%d", c->commits);
    int rc = commit_key(c->db, key);
    if (rc)
        c->rc = rc;
    else
        c->commits++;
}

/* A progress callback commits transactions: the check completes, the
 * commits are there, and the check of the snapshot it began with is clean. */
TEST(test_check__progress_callback_can_commit)
{
    sop_db *db;
    alarm(120); /* a deadlock fails the test instead of hanging the suite */
    CHECK_OK(sop_db_open(&db, test_path("db"), NULL));
    CHECK_OK(fill(db, 50000, 20, 5000));
    struct commit_cb c = {db, 0, 0, 0};
    uint64_t findings = 99;
    CHECK_OK(sop_db_check(&findings, db, print_finding, progress_commits, &c));
    alarm(0);
    CHECK_EQ_U64(findings, 0);
    CHECK_OK(c.rc);
    CHECK(c.calls >= 1);
    CHECK_EQ_U64(c.commits, c.calls < 3 ? c.calls : 3);
    sop_txn *t;
    sop_store *s;
    sop_val v;
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(sop_store_open(&s, t, "s", 0, NULL));
    CHECK_OK(get_s(&v, t, s, "from-callback-0"));
    CHECK_VAL(v, "v");
    uint64_t n;
    CHECK_OK(sop_count(&n, t, s));
    CHECK_EQ_U64(n, 50000 + (uint64_t)c.commits);
    sop_txn_abort(t);
    CHECK_EQ_U64(check_db(db), 0);
    CHECK_OK(sop_db_close(db));
}

struct finding_cb {
    sop_db *db;
    int findings, commits, rc;
};

static void finding_commits(const char *f, void *ctx)
{
    struct finding_cb *c = ctx;
    fprintf(stderr, "    check: %s\n", f);
    c->findings++;
    int rc = commit_key(c->db, "from-finding");
    if (rc)
        c->rc = rc;
    else
        c->commits++;
}

/* Flip one byte of the first run of 64 'Z' bytes in the folder's segments. */
static int damage_value(const char *dir)
{
    char cmd[1200];
    snprintf(
        cmd, sizeof cmd,
        "for f in '%s'/seg/*.seg; do off=$(grep -obUaP 'Z{64}' \"$f\" | head -1 | cut -d: -f1);"
        " [ -n \"$off\" ] && printf 'Y' | dd of=\"$f\" bs=1 seek=$((off + 10)) conv=notrunc "
        "2>/dev/null && exit 0; done; exit 1",
        dir);
    return system(cmd);
}

/* A finding callback commits a transaction: the check completes. */
TEST(test_check__finding_callback_can_commit)
{
    sop_db *db;
    char big[5000];
    memset(big, 'Z', sizeof big);
    alarm(120);
    CHECK_OK(sop_db_open(&db, test_path("db"), NULL));
    CHECK_OK(fill(db, 2000, 20, 500));
    sop_txn *t;
    sop_store *s;
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "s", 0, NULL));
    sop_val k = tv("big"), v = {big, sizeof big};
    CHECK_OK(sop_upsert(t, s, &k, &v));
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_db_close(db));
    CHECK(damage_value(test_path("db")) == 0);
    CHECK_OK(sop_db_open(&db, test_path("db"), NULL));
    struct finding_cb c = {db, 0, 0, 0};
    uint64_t findings = 0;
    CHECK_OK(sop_db_check(&findings, db, finding_commits, NULL, &c));
    alarm(0);
    CHECK_OK(c.rc);
    CHECK(findings >= 1);
    CHECK_EQ_U64(c.findings, findings);
    CHECK_EQ_U64(c.commits, findings);
    CHECK_OK(sop_db_close(db));
}

struct writer {
    sop_db *db;
    atomic_int stop;
    atomic_int total; /* commits done */
    int first, last;  /* total at the first and the last progress call of the walk */
    int calls;
    int rc;
};

static void *writer_thread(void *arg)
{
    struct writer *w = arg;
    char key[32], val[600];
    for (int i = 0; !atomic_load(&w->stop); i++) {
        sop_txn *t;
        sop_store *s;
        int rc = sop_txn_begin(&t, w->db, 0);
        if (rc) {
            w->rc = rc;
            break;
        }
        /* Overwrites and new keys, small values and separate blobs. */
        snprintf(key, sizeof key, i % 2 ? "key%08d" : "new%08d", (i * 7919) % 6000);
        size_t vl = i % 3 == 0 ? 500 : 10;
        memset(val, 'A' + i % 26, vl);
        sop_val k = tv(key), v = {val, vl};
        if ((rc = sop_store_open(&s, t, "s", 0, NULL)) == SOP_OK &&
            (rc = sop_upsert(t, s, &k, &v)) == SOP_OK) {
            rc = sop_txn_commit(t);
            t = NULL;
            if (rc == SOP_OK)
                atomic_fetch_add(&w->total, 1);
        }
        if (t)
            sop_txn_abort(t);
        if (rc && rc != SOP_CONFLICT && rc != SOP_BUSY) {
            w->rc = rc;
            break;
        }
    }
    return NULL;
}

static void progress_slow(uint64_t done, uint64_t total, void *ctx)
{
    struct writer *w = ctx;
    if (done == total)
        return; /* the last call comes after the walk */
    int n = atomic_load(&w->total);
    if (w->calls++ == 0)
        w->first = n;
    w->last = n;
    usleep(20000); /* a long check: the writer gets many chances */
}

/* A writer thread keeps committing while a (slow) check runs: commits
 * complete during the check, and the check of its snapshot stays clean. */
TEST(test_check__writer_commits_during_a_long_check)
{
    sop_db *db;
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.sync = SOP_SYNC_NORMAL;
    o.cache_bytes = 1u << 20; /* loads, evictions and reloads during the walk */
    alarm(300);
    CHECK_OK(sop_db_open(&db, test_path("db"), &o));
    CHECK_OK(fill(db, 40000, 100, 5000));
    CHECK_OK(sop_db_checkpoint(db));
    struct writer w = {.db = db};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, writer_thread, &w) == 0);
    uint64_t findings = 99;
    int rc = sop_db_check(&findings, db, print_finding, progress_slow, &w);
    atomic_store(&w.stop, 1);
    pthread_join(th, NULL);
    alarm(0);
    int during = w.last - w.first;
    printf("    %d commits during the check (between its first and last of %d progress calls), "
           "%d in all\n",
           during, w.calls, atomic_load(&w.total));
    CHECK_OK(rc);
    CHECK_EQ_U64(findings, 0);
    CHECK_OK(w.rc);
    CHECK(w.calls >= 2);
    CHECK(during > 0);
    CHECK_EQ_U64(check_db(db), 0);
    CHECK_OK(sop_db_close(db));
    CHECK_OK(sop_db_open(&db, test_path("db"), &o));
    CHECK_EQ_U64(check_db(db), 0);
    CHECK_OK(sop_db_close(db));
}

struct mem_watch {
    uint64_t peak;
};

static void progress_mem(uint64_t done, uint64_t total, void *ctx)
{
    struct mem_watch *m = ctx;
    (void)done;
    (void)total;
    uint64_t b = fault_alloc_live_bytes();
    if (b > m->peak)
        m->peak = b;
}

/* A check over a database eight times the cache: the engine's allocated
 * bytes (counted by the test allocator, sampled at every progress call)
 * stay within what they were before plus the cache budget and a small
 * constant; the check reads every node, so it did evict. */
TEST(test_check__memory_stays_within_the_cache_budget)
{
    const uint64_t cache = 1u << 20, slack = 512u << 10;
    sop_db *db;
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.sync = SOP_SYNC_OFF;
    o.cache_bytes = cache;
    fault_alloc_install();
    CHECK_OK(sop_db_open(&db, test_path("db"), &o));
    CHECK_OK(fill(db, 60000, 100, 5000)); /* about 8 MiB of leaves */
    CHECK_OK(sop_db_close(db));
    CHECK_OK(sop_db_open(&db, test_path("db"), &o));
    sop_db_stat_info st = SOP_DB_STAT_INIT;
    CHECK_OK(sop_db_stat(&st, db));
    uint64_t before = fault_alloc_live_bytes();
    struct mem_watch m = {before};
    uint64_t findings = 99;
    CHECK_OK(sop_db_check(&findings, db, print_finding, progress_mem, &m));
    CHECK_EQ_U64(findings, 0);
    sop_db_stat_info st2 = SOP_DB_STAT_INIT;
    CHECK_OK(sop_db_stat(&st2, db));
    printf("    before %" PRIu64 " KiB, peak %" PRIu64 " KiB (+%" PRIu64
           " KiB), cache budget %" PRIu64 " KiB, disk %" PRIu64 " KiB\n",
           before >> 10, m.peak >> 10, (m.peak - before) >> 10, cache >> 10, st2.disk_bytes >> 10);
    CHECK(st2.disk_bytes > 6 * cache);
    CHECK(m.peak <= before + cache + slack);
    CHECK_OK(sop_db_close(db));
    CHECK(fault_alloc_uninstall() == 0);
}

TEST_MAIN(T(test_check__progress_callback_can_commit), T(test_check__finding_callback_can_commit),
          T(test_check__writer_commits_during_a_long_check),
          T(test_check__memory_stays_within_the_cache_budget))
