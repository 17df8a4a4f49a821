/*
 * test_fault.c - fail the Nth VFS call of a whole lifecycle, for every N.
 *
 * The lifecycle is crash_workload_run's script (tests/vfs_crash.h): create
 * the database, create stores, writes (small, large and separate-blob
 * values), commit, checkpoint, clean close, reopen, commit, process crash,
 * reopen with log replay, reads of everything, a store removal, an abort,
 * close, reopen - over tests/vfs_fault.c. For N = 1, 2, ... the Nth VFS
 * call of any method fails, once (transient: the run goes on, reopening
 * when the handle is gone) and from N on (persistent), with SOP_IOERR,
 * SOP_NOSPC or a short write (half the bytes land, then SOP_IOERR) in turn,
 * until N passes the lifecycle's last call. After each run:
 *   - every call returned SOP_OK or a failure code that fits the fault
 *     (SOP_IOERR, SOP_NOSPC, or SOP_PANIC after a failed sync), never a
 *     wrong value or SOP_CORRUPT, never a crash;
 *   - libsop holds no memory (counting allocator) once every handle closed;
 *   - the folder, reopened with the POSIX VFS, holds every acknowledged
 *     commit and nothing of the others (crash_model_verify), and
 *     sop_db_check finds nothing.
 * Syncs are counted and fail like any call but do not reach the disk
 * (durability is test_powerloss.c's business), which keeps this fast.
 *
 * Env: SOP_FAULT_ONLY=N[:t|p] runs one case. The summary line
 * "campaign fault: ..." is read by tests/torture.c; SOP_FAULT_SEEDS=k runs
 * the sweep over k lifecycles with different values (default 1).
 * The leak check is a regression test for bug 2, fixed (see test_powerloss.c):
 * a commit whose log append failed leaked the node images it had built.
 */
#include <inttypes.h>

#include "harness.h"
#include "tutil.h"
#include "vfs_crash.h"
#include "vfs_fault.h"

typedef struct fault_totals {
    uint64_t cases, failures, acked_checked, fired, panics, calls_max;
} fault_totals;

static int fits_fault(int rc, int injected)
{
    return rc == SOP_OK || rc == injected || rc == SOP_IOERR || rc == SOP_PANIC;
}

/* Reopen with the POSIX VFS, verify, close. 0 if accepted. */
static int reopen_check(crash_model *m, const char *db_dir, const char *label)
{
    sop_db *db;
    int rc = sop_db_open(&db, db_dir, NULL);
    if (rc) {
        fprintf(stderr, "%s: reopen with POSIX VFS failed: %d %s [%s]\n", label, rc,
                sop_strerror(rc), sop_errmsg());
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

/* One run with call n failing. Returns 1 if the fault fired. */
static int one_case(fault_totals *tot, fault_vfs *fv, uint64_t wseed, uint64_t n, fault_mode mode,
                    int txns)
{
    static const int codes[3] = {SOP_IOERR, SOP_NOSPC, SOP_IOERR};
    char db_dir[600], label[200];
    crash_workload_stats ws;
    int kind_idx = (int)((n + (mode == FAULT_PERSISTENT)) % 3);
    fault_kind kind = kind_idx == 2 ? FAULT_SHORT_WRITE : FAULT_ERROR;
    int code = codes[kind_idx];
    int failed = 0;
    snprintf(db_dir, sizeof db_dir, "%s/db", test_dir());
    snprintf(label, sizeof label, "seed %" PRIu64 " call %" PRIu64 " %s %s%s", wseed, n,
             mode == FAULT_PERSISTENT ? "persistent" : "transient", sop_strerror(code),
             kind == FAULT_SHORT_WRITE ? " (short write)" : "");
    test_rm_rf(db_dir);
    crash_model *m = crash_model_new();
    uint64_t live_before = fault_alloc_live();
    fault_vfs_arm(fv, FAULT_ANY, n, mode, kind, code);
    int flags =
        CRASH_WL_SCRIPT | CRASH_WL_FAULTS | (mode == FAULT_TRANSIENT ? CRASH_WL_CONTINUE : 0);
    int r = crash_workload_run(m, db_dir, fault_vfs_vfs(fv), wseed, txns, flags, &ws);
    uint64_t calls = fault_vfs_calls(fv, FAULT_ANY);
    int fired = fault_vfs_fired(fv) > 0;
    fault_vfs_disarm(fv);
    if (calls > tot->calls_max)
        tot->calls_max = calls;
    if (r) {
        fprintf(stderr, "%s: finding during the run (%d)\n", label, r);
        failed = 1;
    } else if (!fired && ws.last_rc) {
        fprintf(stderr, "%s: %s failed with nothing injected: %d %s\n", label, ws.last_call,
                ws.last_rc, sop_strerror(ws.last_rc));
        failed = 1;
    } else if (!fits_fault(ws.last_rc, code)) {
        fprintf(stderr, "%s: %s returned %d (%s) [%s] for an injected %s\n", label, ws.last_call,
                ws.last_rc, sop_strerror(ws.last_rc), sop_errmsg(), sop_strerror(code));
        failed = 1;
    }
    uint32_t allowed = (1u << -SOP_IOERR) | (1u << -SOP_NOSPC) | (1u << -SOP_PANIC);
    if (!failed && (ws.rc_seen & ~allowed)) {
        fprintf(stderr, "%s: a step failed with an unexpected code (mask 0x%x) [%s]\n", label,
                ws.rc_seen, sop_errmsg());
        failed = 1;
    }
    tot->panics += (ws.rc_seen >> -SOP_PANIC) & 1;
    uint64_t live_after = fault_alloc_live();
    if (live_after != live_before) {
        fprintf(stderr, "%s: libsop leaked %" PRIu64 " block(s) (%s returned %d)\n", label,
                live_after - live_before, ws.last_call ? ws.last_call : "-", ws.last_rc);
        failed = 1;
    }
    if (!failed && reopen_check(m, db_dir, label) != 0)
        failed = 1;
    tot->cases++;
    tot->fired += fired;
    if (failed) {
        tot->failures++;
        fprintf(stderr, "%s: FAILED; replay: SOP_SEED=%" PRIu64 " SOP_FAULT_ONLY=%" PRIu64 ":%c\n",
                label, test_seed, n, mode == FAULT_PERSISTENT ? 'p' : 't');
    } else {
        tot->acked_checked += crash_model_checked(m);
    }
    crash_model_free(m);
    return fired;
}

TEST(test_fault__every_vfs_call_of_the_lifecycle_can_fail)
{
    const char *only = getenv("SOP_FAULT_ONLY");
    const char *seeds_env = getenv("SOP_FAULT_SEEDS");
    uint64_t seeds = seeds_env ? strtoull(seeds_env, NULL, 10) : 1;
    fault_totals tot;
    memset(&tot, 0, sizeof tot);
    fault_vfs *fv = fault_vfs_new(NULL);
    CHECK(fv != NULL);
    fault_vfs_set_real_sync(fv, 0);
    fault_alloc_install();
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (uint64_t si = 0; si < seeds; si++) {
        uint64_t wseed = test_seed * 7919 + si;
        int txns = si == 0 ? 0 : 8; /* later lifecycles add random transactions */
        if (only) {
            uint64_t n = strtoull(only, NULL, 10);
            const char *colon = strchr(only, ':');
            fault_mode mode = colon && colon[1] == 'p' ? FAULT_PERSISTENT : FAULT_TRANSIENT;
            one_case(&tot, fv, wseed, n, mode, txns);
            if (!colon)
                one_case(&tot, fv, wseed, n, FAULT_PERSISTENT, txns);
            continue;
        }
        for (uint64_t n = 1;; n++) {
            int a = one_case(&tot, fv, wseed, n, FAULT_TRANSIENT, txns);
            int b = one_case(&tot, fv, wseed, n, FAULT_PERSISTENT, txns);
            if (!a && !b)
                break; /* the lifecycle never reached call n */
            if (n > 100000) {
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
           " VFS calls, %" PRIu64 " with a fault injected (%" PRIu64
           " ended in SOP_PANIC), %" PRIu64 " acknowledged commits checked, %.1f s\n",
           tot.cases, seeds, tot.calls_max, tot.fired, tot.panics, tot.acked_checked, secs);
    printf("campaign fault: cases %" PRIu64 " failures %" PRIu64 " acked %" PRIu64 "\n", tot.cases,
           tot.failures, tot.acked_checked);
    CHECK_EQ_U64(tot.failures, 0);
}

/* By design (STYLE.md 3, wal.h W4): a failed fdatasync of a commit panics
 * the handle, every later call says SOP_PANIC, close still frees it, and
 * the next open decides the commit (its record reached the file here). */
TEST(test_fault__failed_commit_sync_panics_the_handle)
{
    char db_dir[600];
    snprintf(db_dir, sizeof db_dir, "%s/db", test_dir());
    fault_vfs *fv = fault_vfs_new(NULL);
    CHECK(fv != NULL);
    fault_vfs_set_real_sync(fv, 0);
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    sop_val got;
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.vfs = fault_vfs_vfs(fv);
    CHECK_OK(sop_db_open(&db, db_dir, &o));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "s", SOP_STORE_CREATE, NULL));
    CHECK_OK(put_s(t, s, "k", "v"));
    fault_vfs_arm(fv, FAULT_SYNC, 1, FAULT_TRANSIENT, FAULT_ERROR, SOP_IOERR);
    CHECK_RC(SOP_PANIC, sop_txn_commit(t));
    CHECK_EQ_U64(fault_vfs_fired(fv), 1);
    fault_vfs_disarm(fv);
    CHECK_RC(SOP_PANIC, sop_txn_begin(&t, db, 0));
    CHECK_RC(SOP_PANIC, sop_db_checkpoint(db));
    CHECK_RC(SOP_PANIC, sop_db_close(db));
    CHECK_OK(sop_db_open(&db, db_dir, NULL));
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(sop_store_open(&s, t, "s", 0, NULL));
    CHECK_OK(get_s(&got, t, s, "k"));
    CHECK_VAL(got, "v");
    sop_txn_abort(t);
    CHECK_OK(sop_db_close(db));
    fault_vfs_free(fv);
}

/* The fault VFS itself: counters per method, transient vs persistent,
 * a short write leaves a prefix. */
TEST(test_fault__vfs_counts_and_fails_the_nth_call)
{
    fault_vfs *fv = fault_vfs_new(NULL);
    CHECK(fv != NULL);
    const sop_vfs *v = fault_vfs_vfs(fv);
    sop_file *f;
    uint8_t buf[2048];
    size_t got;
    uint64_t size;
    memset(buf, 'x', sizeof buf);
    CHECK_OK(v->open(&f, v, test_path("f"), SOP_VFS_WRITE | SOP_VFS_CREATE));
    fault_vfs_arm(fv, FAULT_PWRITE, 2, FAULT_TRANSIENT, FAULT_ERROR, SOP_NOSPC);
    CHECK_OK(v->pwrite(f, buf, 10, 0));
    CHECK_RC(SOP_NOSPC, v->pwrite(f, buf, 10, 10));
    CHECK_OK(v->pwrite(f, buf, 10, 10));
    CHECK_EQ_U64(fault_vfs_calls(fv, FAULT_PWRITE), 3);
    CHECK_EQ_U64(fault_vfs_fired(fv), 1);
    fault_vfs_arm(fv, FAULT_ANY, 2, FAULT_PERSISTENT, FAULT_SHORT_WRITE, SOP_IOERR);
    CHECK_OK(v->size(f, &size));
    CHECK_EQ_U64(size, 20);
    CHECK_RC(SOP_IOERR, v->pwrite(f, buf, 2048, 0)); /* 1024 bytes land */
    CHECK_RC(SOP_IOERR, v->pread(f, buf, 10, 0, &got));
    CHECK_RC(SOP_IOERR, v->sync(f, 1));
    CHECK_EQ_U64(fault_vfs_fired(fv), 3);
    CHECK_EQ_U64(fault_vfs_calls(fv, FAULT_SYNC), 1);
    fault_vfs_disarm(fv);
    CHECK_OK(v->size(f, &size));
    CHECK_EQ_U64(size, 1024);
    CHECK_OK(v->close(f));
    fault_vfs_free(fv);
}

TEST_MAIN(T(test_fault__every_vfs_call_of_the_lifecycle_can_fail),
          T(test_fault__failed_commit_sync_panics_the_handle),
          T(test_fault__vfs_counts_and_fails_the_nth_call))
