/*
 * test_alloc.c - fail the Nth allocation of a whole lifecycle, for every N.
 *
 * The lifecycle is the one test_fault.c sweeps (crash_workload_run's
 * script: create database and stores, writes, commit, checkpoint, close,
 * reopen, commit, process crash, reopen with log replay, reads of
 * everything, store removal, abort, close, reopen), run with libsop's
 * allocator replaced by tests/vfs_fault.c's counting allocator
 * (sop_set_allocator). For N = 1, 2, ... allocation N fails once
 * (transient: the run goes on, reopening when the handle is gone) and from
 * N on (persistent), until N passes the lifecycle's last allocation. After
 * each run:
 *   - the first call that failed returned SOP_NOMEM (never a wrong value,
 *     never SOP_CORRUPT or SOP_IOERR, never a crash), and every later
 *     failure was SOP_NOMEM or SOP_PANIC;
 *   - libsop holds no block once every handle is closed (the allocator
 *     counts them; LeakSanitizer agrees under ASan);
 *   - the folder, reopened with allocation working, holds every
 *     acknowledged commit and nothing of the others (crash_model_verify)
 *     and sop_db_check finds nothing - a failed allocation corrupts nothing.
 * The VFS is tests/vfs_fault.c's, disarmed and with syncs not reaching the
 * disk (durability is test_powerloss.c's business), to keep this fast.
 *
 * Env: SOP_ALLOC_ONLY=N[:t|p] runs one case; SOP_ALLOC_STRIDE=k tests every
 * k-th N only (default 1: all); SOP_ALLOC_SEEDS=k sweeps k lifecycles. The
 * summary line "campaign alloc: ..." is read by tests/torture.c.
 *
 * Regression tests for engine bugs that were fixed, one line per bug:
 *   test_alloc__open_fails_only_with_nomem
 *     bug 4: sop_db_open out of memory returned SOP_IOERR "cannot list", not SOP_NOMEM.
 *     bug 6: sop_db_open returned 1, not a SOP_* code, when the segment list could not grow.
 *   test_alloc__commit_that_says_nomem_is_not_visible_after_reopen
 *     bug 5: a commit already in the log returned SOP_NOMEM, yet was visible after reopen.
 *   test_alloc__check_reports_no_finding_when_memory_runs_out
 *     bug 7: sop_db_check reported its own allocation failures as findings (corruption).
 * The sweep's leak check guards bug 2 (see test_powerloss.c).
 */
#include <inttypes.h>

#include "harness.h"
#include "tutil.h"
#include "vfs_crash.h"
#include "vfs_fault.h"

typedef struct alloc_totals {
    uint64_t cases, failures, acked_checked, fired, calls_max;
} alloc_totals;

/* Reopen with @p vfs (allocation working), verify, close. 0 if accepted. */
static int reopen_check(crash_model *m, const char *db_dir, const sop_vfs *vfs, const char *label)
{
    sop_db *db;
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.vfs = vfs;
    int rc = sop_db_open(&db, db_dir, &o);
    if (rc) {
        fprintf(stderr, "%s: reopen failed: %d %s [%s]\n", label, rc, sop_strerror(rc),
                sop_errmsg());
        return -1;
    }
    int read_rc = SOP_OK;
    int r = crash_model_verify(m, db, label, &read_rc);
    if (r == 2)
        fprintf(stderr, "%s: read failed: %d %s [%s]\n", label, read_rc, sop_strerror(read_rc),
                sop_errmsg());
    rc = sop_db_close(db);
    if (rc && !r)
        fprintf(stderr, "%s: close failed: %d %s [%s]\n", label, rc, sop_strerror(rc),
                sop_errmsg());
    return r || rc ? -1 : 0;
}

/* One run with allocation n failing. Returns 1 if the failure fired. */
static int one_case(alloc_totals *tot, fault_vfs *fv, uint64_t wseed, uint64_t n, fault_mode mode,
                    int txns)
{
    char db_dir[600], label[160];
    crash_workload_stats ws;
    int failed = 0;
    snprintf(db_dir, sizeof db_dir, "%s/db", test_dir());
    snprintf(label, sizeof label, "seed %" PRIu64 " allocation %" PRIu64 " %s", wseed, n,
             mode == FAULT_PERSISTENT ? "persistent" : "transient");
    test_rm_rf(db_dir);
    crash_model *m = crash_model_new();
    uint64_t live_before = fault_alloc_live();
    int flags =
        CRASH_WL_SCRIPT | CRASH_WL_FAULTS | (mode == FAULT_TRANSIENT ? CRASH_WL_CONTINUE : 0);
    fault_alloc_arm(n, mode);
    int r = crash_workload_run(m, db_dir, fault_vfs_vfs(fv), wseed, txns, flags, &ws);
    uint64_t calls = fault_alloc_calls();
    int fired = fault_alloc_fired() > 0;
    fault_alloc_disarm();
    if (calls > tot->calls_max)
        tot->calls_max = calls;
    if (r) {
        fprintf(stderr, "%s: finding during the run (%d)\n", label, r);
        failed = 1;
    } else if (ws.last_rc != SOP_OK && ws.last_rc != SOP_NOMEM && ws.last_rc != SOP_PANIC) {
        fprintf(stderr,
                "%s: %s returned %d (%s) [%s]; an allocation failure must give "
                "SOP_NOMEM\n",
                label, ws.last_call, ws.last_rc, sop_strerror(ws.last_rc), ws.last_msg);
        failed = 1;
    } else if (!fired && ws.last_rc) {
        fprintf(stderr, "%s: %s failed with nothing injected\n", label, ws.last_call);
        failed = 1;
    }
    uint32_t allowed = (1u << -SOP_NOMEM) | (1u << -SOP_PANIC);
    if (!failed && (ws.rc_seen & ~allowed)) {
        fprintf(stderr, "%s: a later step failed with an unexpected code (mask 0x%x)\n", label,
                ws.rc_seen);
        failed = 1;
    }
    uint64_t live_after = fault_alloc_live();
    if (live_after != live_before) {
        fprintf(stderr, "%s: libsop leaked %" PRIu64 " block(s) (%s returned %d)\n", label,
                live_after - live_before, ws.last_call ? ws.last_call : "-", ws.last_rc);
        failed = 1;
    }
    if (!failed && reopen_check(m, db_dir, fault_vfs_vfs(fv), label) != 0)
        failed = 1;
    tot->cases++;
    tot->fired += fired;
    if (failed) {
        tot->failures++;
        fprintf(stderr, "%s: FAILED; replay: SOP_SEED=%" PRIu64 " SOP_ALLOC_ONLY=%" PRIu64 ":%c\n",
                label, test_seed, n, mode == FAULT_PERSISTENT ? 'p' : 't');
    } else {
        tot->acked_checked += crash_model_checked(m);
    }
    crash_model_free(m);
    return fired;
}

TEST(test_alloc__every_allocation_of_the_lifecycle_can_fail)
{
    const char *only = getenv("SOP_ALLOC_ONLY");
    const char *stride_env = getenv("SOP_ALLOC_STRIDE");
    const char *seeds_env = getenv("SOP_ALLOC_SEEDS");
    uint64_t stride = stride_env ? strtoull(stride_env, NULL, 10) : 1;
    uint64_t seeds = seeds_env ? strtoull(seeds_env, NULL, 10) : 1;
    alloc_totals tot;
    memset(&tot, 0, sizeof tot);
    if (stride == 0)
        stride = 1;
    fault_vfs *fv = fault_vfs_new(NULL);
    CHECK(fv != NULL);
    fault_vfs_set_real_sync(fv, 0);
    fault_alloc_install();
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (uint64_t si = 0; si < seeds; si++) {
        uint64_t wseed = test_seed * 104729 + si;
        int txns = si == 0 ? 0 : 6;
        if (only) {
            uint64_t n = strtoull(only, NULL, 10);
            const char *colon = strchr(only, ':');
            if (!colon || colon[1] == 't')
                one_case(&tot, fv, wseed, n, FAULT_TRANSIENT, txns);
            if (!colon || colon[1] == 'p')
                one_case(&tot, fv, wseed, n, FAULT_PERSISTENT, txns);
            continue;
        }
        for (uint64_t n = 1 + si % stride;; n += stride) {
            int a = one_case(&tot, fv, wseed, n, FAULT_TRANSIENT, txns);
            int b = one_case(&tot, fv, wseed, n, FAULT_PERSISTENT, txns);
            if (!a && !b)
                break;
            if (n > 10000000) {
                FAIL_AT("the lifecycle does not end");
                break;
            }
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    if (fault_alloc_uninstall() != 0) {
        fprintf(stderr, "libsop still holds %" PRIu64 " block(s)\n", fault_alloc_live());
        tot.failures++;
    }
    fault_vfs_free(fv);
    printf("    %" PRIu64 " runs over %" PRIu64 " lifecycle(s) of up to %" PRIu64
           " allocations (every %" PRIu64 "th), %" PRIu64 " with a failure injected, %" PRIu64
           " acknowledged commits checked, %.1f s\n",
           tot.cases, seeds, tot.calls_max, stride, tot.fired, tot.acked_checked, secs);
    printf("campaign alloc: cases %" PRIu64 " failures %" PRIu64 " acked %" PRIu64 "\n", tot.cases,
           tot.failures, tot.acked_checked);
    CHECK_EQ_U64(tot.failures, 0);
}

/* The counting allocator itself: fails the Nth call, keeps count of live
 * blocks, and a database's whole life leaves nothing behind. */
TEST(test_alloc__counting_allocator_sees_every_block)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    fault_alloc_install();
    uint64_t live0 = fault_alloc_live(), bytes0 = fault_alloc_live_bytes();
    CHECK_OK(sop_db_open(&db, test_path("db"), NULL));
    CHECK(fault_alloc_live() > live0);
    fault_alloc_arm(1, FAULT_TRANSIENT);
    CHECK_RC(SOP_NOMEM, sop_txn_begin(&t, db, 0));
    CHECK_EQ_U64(fault_alloc_fired(), 1);
    fault_alloc_disarm();
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "s", SOP_STORE_CREATE, NULL));
    CHECK_OK(put_s(t, s, "k", "v"));
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_db_close(db));
    CHECK_EQ_U64(fault_alloc_live(), live0);
    CHECK_EQ_U64(fault_alloc_live_bytes(), bytes0);
    if (live0 == 0)
        CHECK(fault_alloc_uninstall() == 0);
}

/* Regression test for bug 7 (fixed): sop_db_check under allocation
 * failures gives SOP_NOMEM or a clean result, never a finding. */
TEST(test_alloc__check_reports_no_finding_when_memory_runs_out)
{
    char db_dir[600];
    crash_workload_stats ws;
    uint64_t runs = 0, nomem = 0, false_findings = 0;
    snprintf(db_dir, sizeof db_dir, "%s/db", test_dir());
    crash_model *m = crash_model_new();
    CHECK(m != NULL);
    CHECK(crash_workload_run(m, db_dir, NULL, test_seed, 0, CRASH_WL_SCRIPT, &ws) == 0);
    CHECK_EQ_U64(ws.last_rc, SOP_OK);
    crash_model_free(m);
    fault_alloc_install();
    sop_db *db;
    CHECK_OK(sop_db_open(&db, db_dir, NULL));
    for (uint64_t n = 1; n < 100000; n++) {
        uint64_t findings = 0;
        fault_alloc_arm(n, FAULT_TRANSIENT);
        int rc = sop_db_check(&findings, db, NULL, NULL, NULL);
        int fired = fault_alloc_fired() > 0;
        fault_alloc_disarm();
        runs++;
        if (rc != SOP_OK && rc != SOP_NOMEM) {
            FAIL_AT("allocation %" PRIu64 ": sop_db_check returned %d %s", n, rc, sop_strerror(rc));
            break;
        }
        nomem += rc == SOP_NOMEM;
        if (rc == SOP_OK && findings != 0) {
            FAIL_AT("allocation %" PRIu64 ": sop_db_check reported %" PRIu64
                    " finding(s) instead of SOP_NOMEM",
                    n, findings);
            false_findings++;
        }
        if (!fired)
            break;
    }
    uint64_t findings = 0;
    CHECK_OK(sop_db_check(&findings, db, NULL, NULL, NULL));
    CHECK_EQ_U64(findings, 0);
    CHECK_OK(sop_db_close(db));
    printf("    sop_db_check with allocation 1..%" PRIu64 " failing: %" PRIu64
           " SOP_NOMEM, %" PRIu64 " reported findings instead\n",
           runs - 1, nomem, false_findings);
    CHECK_EQ_U64(false_findings, 0);
}

/* Copy folder src to dst (dst replaced). 0 on success. */
static int copy_folder(const char *src, const char *dst)
{
    char cmd[2000];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -a '%s' '%s'", dst, src, dst);
    return system(cmd) == 0 ? 0 : -1;
}

/* Regression test for bugs 4 and 6 (fixed): sop_db_open of an existing
 * database with allocation n failing must return SOP_NOMEM (or succeed),
 * never SOP_IOERR "cannot list" (bug 4) nor 1, not a SOP_* code (bug 6).
 * Each open starts from the same copy: every open adds a segment file, so
 * the number of allocations an open makes would otherwise keep growing. */
TEST(test_alloc__open_fails_only_with_nomem)
{
    char pristine[600], db_dir[600];
    crash_workload_stats ws;
    uint64_t nomem = 0, wrong = 0, runs = 0;
    snprintf(pristine, sizeof pristine, "%s/pristine", test_dir());
    snprintf(db_dir, sizeof db_dir, "%s/db", test_dir());
    crash_model *m = crash_model_new();
    CHECK(m != NULL);
    CHECK(crash_workload_run(m, pristine, NULL, test_seed, 0, CRASH_WL_SCRIPT, &ws) == 0);
    crash_model_free(m);
    fault_alloc_install();
    for (uint64_t n = 1; n < 100000; n++) {
        sop_db *db = NULL;
        CHECK(copy_folder(pristine, db_dir) == 0);
        fault_alloc_arm(n, FAULT_TRANSIENT);
        int rc = sop_db_open(&db, db_dir, NULL);
        int fired = fault_alloc_fired() > 0;
        fault_alloc_disarm();
        runs++;
        if (rc == SOP_OK) {
            CHECK_OK(sop_db_close(db));
        } else if (rc == SOP_NOMEM) {
            nomem++;
        } else {
            FAIL_AT("allocation %" PRIu64 ": sop_db_open returned %d (%s) [%s], expected SOP_NOMEM",
                    n, rc, sop_strerror(rc), sop_errmsg());
            wrong++;
        }
        if (!fired)
            break;
    }
    printf("    sop_db_open with allocation 1..%" PRIu64 " failing: %" PRIu64 " SOP_NOMEM, %" PRIu64
           " other codes\n",
           runs - 1, nomem, wrong);
    CHECK_EQ_U64(wrong, 0);
}

/* Regression test for bug 5 (fixed): a commit that returns SOP_NOMEM ("not
 * committed") must not be visible after a reopen, whichever allocation of
 * the commit failed. */
TEST(test_alloc__commit_that_says_nomem_is_not_visible_after_reopen)
{
    char db_dir[600];
    uint64_t visible = 0, nomem = 0;
    snprintf(db_dir, sizeof db_dir, "%s/db", test_dir());
    fault_alloc_install();
    for (uint64_t n = 1; n < 100000; n++) {
        sop_db *db;
        sop_txn *t;
        sop_store *s;
        sop_val got;
        char key[32];
        snprintf(key, sizeof key, "k%05" PRIu64, n);
        CHECK_OK(sop_db_open(&db, db_dir, NULL));
        CHECK_OK(sop_txn_begin(&t, db, 0));
        CHECK_OK(sop_store_open(&s, t, "s", SOP_STORE_CREATE, NULL));
        CHECK_OK(put_s(t, s, key, "v"));
        fault_alloc_arm(n, FAULT_TRANSIENT);
        int rc = sop_txn_commit(t);
        int fired = fault_alloc_fired() > 0;
        fault_alloc_disarm();
        int crc = sop_db_close(db);
        CHECK(crc != SOP_BADSTATE);
        CHECK(rc == SOP_OK || rc == SOP_NOMEM || rc == SOP_PANIC);
        CHECK_OK(sop_db_open(&db, db_dir, NULL));
        CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
        int there =
            sop_store_open(&s, t, "s", 0, NULL) == SOP_OK && get_s(&got, t, s, key) == SOP_OK;
        sop_txn_abort(t);
        CHECK_OK(sop_db_close(db));
        if (rc == SOP_OK)
            CHECK(there);
        nomem += rc == SOP_NOMEM;
        if (rc == SOP_NOMEM && there) {
            FAIL_AT("allocation %" PRIu64 ": the commit returned SOP_NOMEM but is visible after "
                    "reopen",
                    n);
            visible++;
        }
        if (!fired)
            break;
    }
    printf("    commit with one allocation failing: %" PRIu64 " SOP_NOMEM, %" PRIu64
           " of them visible after reopen\n",
           nomem, visible);
    CHECK_EQ_U64(visible, 0);
}

TEST_MAIN(T(test_alloc__every_allocation_of_the_lifecycle_can_fail),
          T(test_alloc__open_fails_only_with_nomem),
          T(test_alloc__commit_that_says_nomem_is_not_visible_after_reopen),
          T(test_alloc__counting_allocator_sees_every_block),
          T(test_alloc__check_reports_no_finding_when_memory_runs_out))
