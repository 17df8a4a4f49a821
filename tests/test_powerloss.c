/*
 * test_powerloss.c - simulated power cuts across the commit path.
 *
 * Each workload is a seeded random sequence of transactions (stores created
 * and removed, upserts, adds, removes, small to 120 KB values, aborts,
 * checkpoints, clean and crashed reopens; see crash_workload_run) over
 * tests/vfs_crash.c's power-loss VFS. A dry run counts its mutating VFS
 * calls (T); then CUTS_PER_WORKLOAD runs of the same workload cut the power
 * at a call spread over [1, T], so cuts land in commits, group syncs,
 * segment rotations, checkpoints, manifest renames and segment reclamation.
 * After the cut the files are rewritten to what a disk could hold (unsynced
 * writes dropped, torn at 512 bytes, reordered; unsynced directory changes
 * undone), and one case in four cuts the power a second time while the
 * database recovers and runs on. Then the folder is opened with the POSIX
 * VFS and crash_model_verify checks: every acknowledged commit present,
 * nothing of any other commit visible, counts == both traversals == point
 * reads, sop_db_check clean; closed, reopened, verified again; and, under
 * ASan, LeakSanitizer finds nothing leaked by the case.
 *
 * Env: SOP_POWERLOSS_CUTS (default 240) sets the number of cuts; SOP_SEED
 * the seed. A failing case prints "seed S workload W cut K" and replays
 * alone with SOP_POWERLOSS_ONLY=W:K (and the same SOP_SEED).
 * The summary line "campaign powerloss: ..." is read by tests/torture.c.
 *
 * Regression tests for engine bugs that were fixed, one line per bug:
 *   test_powerloss__new_folder_survives_a_power_cut
 *     bug 1: sop_db_open created a missing folder without syncing its parent directory.
 *   test_powerloss__empty_segment_left_by_recovery_survives_a_crash
 *     bug 3: an empty segment left by recovery made every open after one more crash fail.
 *   test_powerloss__replayed_tail_is_durable_before_new_commits
 *     bug 8: recovery never synced a replayed, unsynced log tail that new commits built on.
 * The campaign's leak check (and LeakSanitizer under ASan) guards bug 2: a commit whose
 * log append failed leaked the node images it had built.
 */
#include <inttypes.h>

#include "harness.h"
#include "tutil.h"
#include "vfs_crash.h"
#include "vfs_fault.h"

#define CUTS_PER_WORKLOAD 4
#define WORKLOAD_TXNS     30

typedef struct pl_totals {
    uint64_t cases, failures, acked_checked, double_cuts, no_cut;
    uint64_t modes[CRASH_MODE_COUNT];
    uint64_t names_lost, sectors_garbage, sectors_mid;
} pl_totals;

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static int expected_after_cut(int rc)
{
    return rc == SOP_OK || rc == SOP_IOERR || rc == SOP_PANIC;
}

/* Open with the POSIX VFS, verify, close; twice. 0 if accepted, -1
 * otherwise. */
static int final_check(crash_model *m, const char *db_dir, const char *label)
{
    for (int pass = 0; pass < 2; pass++) {
        sop_db *db;
        sop_db_options o = SOP_DB_OPTIONS_INIT;
        o.segment_bytes = 1u << 20;
        int rc = sop_db_open(&db, db_dir, &o);
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
        if (r)
            return -1;
        if (rc) {
            fprintf(stderr, "%s: close failed: %d %s [%s]\n", label, rc, sop_strerror(rc),
                    sop_errmsg());
            return -1;
        }
        crash_model_mark_durable(m);
    }
    return 0;
}

/* One cut of workload @p wseed at mutating call @p cut. 0 = passed. */
static int one_case(pl_totals *tot, uint64_t wseed, uint64_t cut, uint64_t cseed, int flags,
                    const char *label, const char *replay)
{
    char db_dir[600], stash[600];
    crash_workload_stats ws;
    crash_stats cs;
    int failed = 0;
    memset(&cs, 0, sizeof cs);
    snprintf(db_dir, sizeof db_dir, "%s/db", test_dir());
    snprintf(stash, sizeof stash, "%s/stash", test_dir());
    test_rm_rf(db_dir);
    test_rm_rf(stash);
    crash_model *m = crash_model_new();
    crash_vfs *cv = crash_vfs_new(stash, cseed);
    if (!m || !cv) {
        fprintf(stderr, "%s: out of memory\n", label);
        crash_model_free(m);
        crash_vfs_free(cv);
        return -1;
    }
    uint64_t live_before = fault_alloc_live();
    crash_vfs_arm(cv, cut);
    int r = crash_workload_run(m, db_dir, crash_vfs_vfs(cv), wseed, WORKLOAD_TXNS, flags, &ws);
    if (r) {
        fprintf(stderr, "%s: finding during the run (%d)\n", label, r);
        failed = 1;
    } else if (!crash_vfs_crashed(cv)) {
        tot->no_cut++;
        if (ws.last_rc) {
            fprintf(stderr, "%s: %s failed without a cut: %d %s\n", label, ws.last_call, ws.last_rc,
                    sop_strerror(ws.last_rc));
            failed = 1;
        }
    } else if (!expected_after_cut(ws.last_rc)) {
        fprintf(stderr, "%s: after the cut %s returned %d (%s), expected IOERR or PANIC\n", label,
                ws.last_call, ws.last_rc, sop_strerror(ws.last_rc));
        failed = 1;
    }
    if (!failed && crash_vfs_apply(cv, CRASH_RANDOM, &cs) != 0)
        failed = 1;
    if (!failed) {
        tot->modes[cs.mode]++;
        tot->names_lost += cs.names_lost;
        tot->sectors_garbage += cs.sectors_garbage;
        tot->sectors_mid += cs.sectors_mid;
        /* One case in four: cut again while recovering and running on. */
        if (mix(cseed) % 4 == 0) {
            uint64_t cut2 = 1 + mix(cseed + 1) % (mix(cseed + 2) % 2 ? 12 : 60);
            crash_vfs_arm(cv, cut2);
            r = crash_workload_run(m, db_dir, crash_vfs_vfs(cv), mix(wseed), 6, flags, &ws);
            if (r) {
                fprintf(stderr, "%s: finding after the first cut, second cut at %" PRIu64 "\n",
                        label, cut2);
                failed = 1;
            } else if (crash_vfs_crashed(cv) && !expected_after_cut(ws.last_rc)) {
                fprintf(stderr, "%s: after the second cut %s returned %d (%s)\n", label,
                        ws.last_call, ws.last_rc, sop_strerror(ws.last_rc));
                failed = 1;
            } else if (!crash_vfs_crashed(cv) && ws.last_rc) {
                fprintf(stderr, "%s: %s failed before the second cut: %d %s\n", label, ws.last_call,
                        ws.last_rc, sop_strerror(ws.last_rc));
                failed = 1;
            }
            if (!failed && crash_vfs_apply(cv, CRASH_RANDOM, &cs) != 0)
                failed = 1;
            tot->double_cuts++;
        }
    }
    if (!failed && final_check(m, db_dir, label) != 0)
        failed = 1;
    uint64_t live_after = fault_alloc_live();
    if (live_after != live_before) {
        fprintf(stderr, "%s: libsop leaked %" PRIu64 " block(s)\n", label,
                live_after - live_before);
        failed = 1;
    }
    tot->cases++;
    if (failed) {
        tot->failures++;
        fprintf(stderr,
                "%s: FAILED (mode %s); replay: SOP_SEED=%" PRIu64 " SOP_POWERLOSS_ONLY=%s\n", label,
                crash_mode_name(cs.mode), test_seed, replay);
        if (getenv("SOP_TEST_KEEP") == NULL)
            test_rm_rf(stash);
    } else {
        tot->acked_checked += crash_model_checked(m);
    }
    crash_vfs_free(cv);
    crash_model_free(m);
    return failed ? -1 : 0;
}

/* Mutating calls of a whole uncut run of workload wseed. */
static uint64_t dry_run(uint64_t wseed, int flags, int *finding)
{
    crash_workload_stats ws;
    char db_dir[600], stash[600];
    snprintf(db_dir, sizeof db_dir, "%s/db", test_dir());
    snprintf(stash, sizeof stash, "%s/stash", test_dir());
    test_rm_rf(db_dir);
    crash_model *m = crash_model_new();
    crash_vfs *cv = crash_vfs_new(stash, 1);
    crash_vfs_arm(cv, 0);
    int r = crash_workload_run(m, db_dir, crash_vfs_vfs(cv), wseed, WORKLOAD_TXNS, flags, &ws);
    uint64_t n = crash_vfs_mutations(cv);
    *finding = r != 0 || ws.last_rc != SOP_OK;
    if (*finding)
        fprintf(stderr, "dry run of workload %" PRIu64 ": finding %d, %s returned %d (%s)\n", wseed,
                r, ws.last_call ? ws.last_call : "-", ws.last_rc, sop_strerror(ws.last_rc));
    else if (final_check(m, db_dir, "dry run") != 0)
        *finding = 1;
    crash_vfs_free(cv);
    crash_model_free(m);
    return n;
}

TEST(test_powerloss__cuts_lose_no_acknowledged_commit)
{
    const char *env = getenv("SOP_POWERLOSS_CUTS");
    const char *only = getenv("SOP_POWERLOSS_ONLY");
    uint64_t cuts = env ? strtoull(env, NULL, 10) : 240;
    int flags = CRASH_WL_MAY_SYNC_NORMAL;
    pl_totals tot;
    char label[160], replay[64];
    memset(&tot, 0, sizeof tot);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    fault_alloc_install();
    uint64_t workloads = (cuts + CUTS_PER_WORKLOAD - 1) / CUTS_PER_WORKLOAD;
    uint64_t only_w = 0, only_k = 0;
    if (only && sscanf(only, "%" SCNu64 ":%" SCNu64, &only_w, &only_k) != 2) {
        FAIL_AT("SOP_POWERLOSS_ONLY must be <workload>:<cut>");
        return;
    }
    for (uint64_t wi = only ? only_w : 0; only ? wi == only_w : wi < workloads && tot.cases < cuts;
         wi++) {
        uint64_t wseed = mix(test_seed * 1000003 + wi);
        int finding = 0;
        uint64_t total = dry_run(wseed, flags, &finding);
        if (finding) {
            tot.cases++;
            tot.failures++;
            continue;
        }
        for (int c = 0; c < CUTS_PER_WORKLOAD && tot.cases < cuts; c++) {
            /* Stratified: cut c lands in the c-th quarter of the run. */
            uint64_t lo = total * (uint64_t)c / CUTS_PER_WORKLOAD;
            uint64_t hi = total * (uint64_t)(c + 1) / CUTS_PER_WORKLOAD;
            uint64_t cut = 1 + lo + mix(wseed + (uint64_t)c) % (hi > lo ? hi - lo : 1);
            if (only && cut != only_k)
                continue;
            snprintf(label, sizeof label,
                     "seed %" PRIu64 " workload %" PRIu64 " cut %" PRIu64 " of %" PRIu64, test_seed,
                     wi, cut, total);
            snprintf(replay, sizeof replay, "%" PRIu64 ":%" PRIu64, wi, cut);
            one_case(&tot, wseed, cut, mix(wseed ^ cut), flags, label, replay);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (fault_alloc_uninstall() != 0) {
        fprintf(stderr, "libsop still holds %" PRIu64 " block(s) after the campaign\n",
                fault_alloc_live());
        tot.failures++;
    }
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("    %" PRIu64 " power cuts (%" PRIu64
           " second cuts during recovery; modes drop %" PRIu64 " keep %" PRIu64 " prefix %" PRIu64
           " reorder %" PRIu64 "; %" PRIu64 " name changes undone, %" PRIu64
           " garbage sectors), %" PRIu64 " acknowledged commits checked, %.1f s\n",
           tot.cases, tot.double_cuts, tot.modes[CRASH_DROP], tot.modes[CRASH_KEEP],
           tot.modes[CRASH_PREFIX], tot.modes[CRASH_REORDER], tot.names_lost, tot.sectors_garbage,
           tot.acked_checked, secs);
    printf("campaign powerloss: cases %" PRIu64 " failures %" PRIu64 " acked %" PRIu64 "\n",
           tot.cases, tot.failures, tot.acked_checked);
    CHECK_EQ_U64(tot.failures, 0);
    if (!only)
        CHECK(tot.cases >= cuts);
}

/* Regression test for bug 1 (fixed): the engine creates the folder, one
 * commit is acknowledged, the power goes; nothing unsynced survives, and
 * the commit must. Returns 1 if the acknowledged commit was lost, 0 if it
 * survived, -1 on an unexpected error (message on stderr). */
static int new_folder_loses_a_commit(const char *db_dir, const char *stash, uint64_t *names_lost)
{
    crash_vfs *cv = crash_vfs_new(stash, test_seed);
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    sop_val k = {"key", 3}, v = {"acknowledged", 12}, got;
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    crash_stats cs;
    int rc;
    if (!cv)
        return -1;
    o.vfs = crash_vfs_vfs(cv);
    if ((rc = sop_db_open(&db, db_dir, &o)) != SOP_OK ||
        (rc = sop_txn_begin(&t, db, 0)) != SOP_OK ||
        (rc = sop_store_open(&s, t, "s", SOP_STORE_CREATE, NULL)) != SOP_OK ||
        (rc = sop_upsert(t, s, &k, &v)) != SOP_OK || (rc = sop_txn_commit(t)) != SOP_OK) {
        fprintf(stderr, "new folder: %d %s [%s]\n", rc, sop_strerror(rc), sop_errmsg());
        crash_vfs_free(cv);
        return -1;
    }
    crash_vfs_crash_now(cv); /* acknowledged (SOP_SYNC_FULL); now the power goes */
    sop_db_close(db);        /* fails: the power is off */
    rc = crash_vfs_apply(cv, CRASH_DROP, &cs);
    crash_vfs_free(cv);
    *names_lost = cs.names_lost;
    if (rc != 0)
        return -1;
    o.vfs = NULL;
    if (sop_db_open(&db, db_dir, &o) != SOP_OK)
        return 1;
    int lost = sop_txn_begin(&t, db, SOP_TXN_READONLY) != SOP_OK ||
               sop_store_open(&s, t, "s", 0, NULL) != SOP_OK || sop_get(&got, t, s, &k) != SOP_OK;
    sop_txn_abort(t);
    if (sop_db_close(db) != SOP_OK)
        return -1;
    return lost;
}

TEST(test_powerloss__new_folder_survives_a_power_cut)
{
    char db_dir[600], stash[600];
    uint64_t names_lost = 0;
    snprintf(db_dir, sizeof db_dir, "%s/db", test_dir());
    snprintf(stash, sizeof stash, "%s/stash", test_dir());
    int lost = new_folder_loses_a_commit(db_dir, stash, &names_lost);
    CHECK(lost >= 0);
    if (lost)
        FAIL_AT("the acknowledged commit was lost with the folder (%" PRIu64
                " unsynced name changes undone)",
                names_lost);
}

/* Regression test for bug 3 (fixed), with the files a cut leaves: a cut
 * right after seg_create's open(CREATE|EXCL) reached the directory but
 * before the segment header was durable leaves a 0-byte newest segment.
 * Recovery used to keep it (truncated to 0) and start the next segment; a
 * process crash before any checkpoint then made the folder unopenable. */
TEST(test_powerloss__empty_segment_left_by_recovery_survives_a_crash)
{
    char db_dir[600], seg[700];
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    sop_val k = {"key", 3}, v = {"acknowledged", 12}, got;
    snprintf(db_dir, sizeof db_dir, "%s/db", test_dir());
    /* NORMAL: segment 1 ends at its last record, as a sealed segment does
     * (with FULL it would hold zeros ahead of the tail (W7), which only the
     * newest segment may; recovery or rotation cut them before segment 2
     * could exist). */
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.sync = SOP_SYNC_NORMAL;
    CHECK_OK(sop_db_open(&db, db_dir, &o));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "s", SOP_STORE_CREATE, NULL));
    CHECK_OK(sop_upsert(t, s, &k, &v));
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_db__crash_close(db)); /* segment 1 holds the commit */
    /* the power cut's leftovers: segment 2 created, header not durable */
    snprintf(seg, sizeof seg, "%s/seg/0000000000000002.seg", db_dir);
    FILE *f = fopen(seg, "w");
    CHECK(f != NULL);
    fclose(f);
    CHECK_OK(sop_db_open(&db, db_dir, NULL)); /* recovery meets the empty segment 2 */
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "s", 0, NULL));
    CHECK_OK(sop_upsert(t, s, &v, &k));
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_db__crash_close(db)); /* a crash before any checkpoint */
    CHECK_OK(sop_db_open(&db, db_dir, NULL));
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(sop_store_open(&s, t, "s", 0, NULL));
    CHECK_OK(sop_get(&got, t, s, &k));
    CHECK_VAL(got, "acknowledged");
    CHECK_OK(sop_get(&got, t, s, &v));
    CHECK_VAL(got, "key");
    sop_txn_abort(t);
    CHECK_OK(sop_db_close(db));
}

/* The power-loss VFS itself, on a file and a directory entry. */
static int file_bytes(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return (int)n;
}

TEST(test_powerloss__crash_vfs_keeps_exactly_what_was_synced)
{
    char stash[600], path[600], other[600], buf[4096];
    uint8_t a[1024], b[1024];
    memset(a, 'a', sizeof a);
    memset(b, 'b', sizeof b);
    snprintf(stash, sizeof stash, "%s/stash", test_dir());
    snprintf(path, sizeof path, "%s/f", test_dir());
    snprintf(other, sizeof other, "%s/g", test_dir());
    for (int mode = CRASH_DROP; mode < CRASH_MODE_COUNT; mode++) {
        crash_vfs *cv = crash_vfs_new(stash, test_seed + (uint64_t)mode);
        CHECK(cv != NULL);
        const sop_vfs *v = crash_vfs_vfs(cv);
        sop_file *f, *g;
        crash_stats cs;
        unlink(path);
        unlink(other);
        /* f: 1024 'a' synced, then 1024 'b' appended unsynced; g: created,
         * written and synced, but its directory entry never synced. */
        CHECK_OK(v->open(&f, v, path, SOP_VFS_WRITE | SOP_VFS_CREATE));
        CHECK_OK(v->pwrite(f, a, sizeof a, 0));
        CHECK_OK(v->sync(f, 1));
        CHECK_OK(v->sync_dir(v, test_dir()));
        CHECK_OK(v->pwrite(f, b, sizeof b, sizeof a));
        CHECK_OK(v->open(&g, v, other, SOP_VFS_WRITE | SOP_VFS_CREATE));
        CHECK_OK(v->pwrite(g, a, 10, 0));
        CHECK_OK(v->sync(g, 1));
        crash_vfs_arm(cv, 1); /* the next mutating call is the cut */
        CHECK_RC(SOP_IOERR, v->sync(f, 1));
        CHECK(crash_vfs_crashed(cv));
        CHECK_RC(SOP_IOERR, v->pwrite(f, b, 1, 0));
        v->close(f);
        v->close(g);
        CHECK(crash_vfs_apply(cv, (crash_mode)mode, &cs) == 0);
        CHECK(cs.mode == (crash_mode)mode);
        int n = file_bytes(path, buf, sizeof buf);
        int g_exists = access(other, F_OK) == 0;
        /* Synced bytes always survive; the unsynced sectors hold 'b' or
         * what was there before (nothing: a shorter file, or zeros), or,
         * at most one sector, garbage. */
        CHECK(n >= 1024 && n <= 2048);
        CHECK(memcmp(buf, a, 1024) == 0);
        if (mode == CRASH_DROP) {
            CHECK(n == 1024 && !g_exists);
        } else if (mode == CRASH_KEEP) {
            CHECK(n == 2048 && memcmp(buf + 1024, b, 1024) == 0 && g_exists);
        } else {
            int odd = 0;
            for (int s = 1024; s < n; s += 512) {
                int len = n - s < 512 ? n - s : 512;
                int all_b = 1, all_0 = 1;
                for (int i = 0; i < len; i++) {
                    all_b &= buf[s + i] == 'b';
                    all_0 &= buf[s + i] == 0;
                }
                odd += !all_b && !all_0;
            }
            CHECK(odd <= 1);
        }
        crash_vfs_free(cv);
    }
}

/* Regression test for bug 8 (fixed): a process crash leaves commits that
 * were written but not synced (SOP_SYNC_NORMAL here; in SOP_SYNC_FULL, a
 * commit killed between its append and its fdatasync). The next open
 * replays them and builds on them, so it must make them durable first:
 * recover() used to sync only a torn tail it cut, and a later durable
 * commit in the new segment then survived a power cut that took the
 * replayed ones. After the cut both must be there. */
TEST(test_powerloss__replayed_tail_is_durable_before_new_commits)
{
    char db_dir[600], stash[600];
    snprintf(db_dir, sizeof db_dir, "%s/db", test_dir());
    snprintf(stash, sizeof stash, "%s/stash", test_dir());
    crash_vfs *cv = crash_vfs_new(stash, test_seed);
    CHECK(cv != NULL);
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    sop_val got;
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.vfs = crash_vfs_vfs(cv);
    o.sync = SOP_SYNC_NORMAL;
    CHECK_OK(sop_db_open(&db, db_dir, &o));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "s", SOP_STORE_CREATE, NULL));
    CHECK_OK(put_s(t, s, "t1", "written, not synced"));
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_db__crash_close(db)); /* the process dies; the OS keeps the bytes */
    o.sync = SOP_SYNC_FULL;
    CHECK_OK(sop_db_open(&db, db_dir, &o)); /* recovery replays t1 */
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "s", 0, NULL));
    CHECK_OK(get_s(&got, t, s, "t1"));
    CHECK_OK(put_s(t, s, "t2", "acknowledged, durable"));
    CHECK_OK(sop_txn_commit(t)); /* SOP_SYNC_FULL: must survive a power cut */
    crash_vfs_crash_now(cv);
    sop_db_close(db);
    crash_stats cs;
    CHECK(crash_vfs_apply(cv, CRASH_DROP, &cs) == 0);
    crash_vfs_free(cv);
    o.vfs = NULL;
    CHECK_OK(sop_db_open(&db, db_dir, &o));
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(sop_store_open(&s, t, "s", 0, NULL));
    CHECK_OK(get_s(&got, t, s, "t2")); /* acknowledged, durable */
    CHECK_VAL(got, "acknowledged, durable");
    CHECK_OK(get_s(&got, t, s, "t1")); /* what t2 was built on */
    CHECK_VAL(got, "written, not synced");
    sop_txn_abort(t);
    CHECK_OK(sop_db_close(db));
}

TEST_MAIN(T(test_powerloss__crash_vfs_keeps_exactly_what_was_synced),
          T(test_powerloss__replayed_tail_is_durable_before_new_commits),
          T(test_powerloss__cuts_lose_no_acknowledged_commit),
          T(test_powerloss__new_folder_survives_a_power_cut),
          T(test_powerloss__empty_segment_left_by_recovery_survives_a_crash))
