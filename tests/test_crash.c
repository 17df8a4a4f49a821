/*
 * test_crash.c - real processes killed with SIGKILL at random moments.
 *
 * A child commits transactions in a loop (SOP_SYNC_FULL) and reports each
 * acknowledged commit through a pipe; it also checkpoints now and then and
 * uses small segments, so kills land in commits, group syncs, rotations and
 * checkpoints. The parent kills it after a random delay, reopens the
 * database (recovery) and checks: every acknowledged transaction is fully
 * present; every transaction is all-or-nothing; the store count equals a
 * full traversal. SOP_CRASH_KILLS sets the number of kills (default 50).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

#include "harness.h"
#include "tutil.h"

static int keys_of(uint64_t j)
{
    return (int)((j * 7) % 13) + 1;
}

static sop_db_options crash_opts(void)
{
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.segment_bytes = 1 << 20;
    return o;
}

/* Child: continue from the last committed txn; never returns. */
static void child_die(int code, int rc)
{
    fprintf(stderr, "crash child: step %d failed: %s: %s\n", code, sop_strerror(rc), sop_errmsg());
    _exit(code);
}

static void child_loop(int fd, uint64_t start, uint64_t seed)
{
    int rc;
    sop_db *db;
    sop_db_options o = crash_opts();
    uint64_t rng = seed;
    if ((rc = sop_db_open(&db, test_dir(), &o)) != SOP_OK)
        child_die(3, rc);
    for (uint64_t j = start;; j++) {
        sop_txn *t;
        sop_store *s;
        char kb[48], vb[48];
        if ((rc = sop_txn_begin(&t, db, 0)) || (rc = sop_store_open(&s, t, "c", SOP_STORE_CREATE, NULL)))
            child_die(4, rc);
        for (int i = 0; i < keys_of(j); i++) {
            snprintf(kb, sizeof kb, "t%08" PRIu64 "-%02d", j, i);
            snprintf(vb, sizeof vb, "value of %" PRIu64 "/%d", j, i);
            if ((rc = put_s(t, s, kb, vb)))
                child_die(5, rc);
        }
        snprintf(vb, sizeof vb, "%" PRIu64, j);
        if ((rc = put_s(t, s, "last", vb)) || (rc = sop_txn_commit(t)))
            child_die(6, rc);
        if (write(fd, &j, sizeof j) != sizeof j)
            _exit(7);
        if ((rng = rng * 6364136223846793005ull + 1442695040888963407ull) >> 60 == 0 &&
            (rc = sop_db_checkpoint(db)))
            child_die(8, rc);
    }
}

/* Parent check after a kill. Returns the next txn number to use. */
static int verify(uint64_t acked, int have_acked, uint64_t *next_out)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    sop_val v;
    char kb[48];
    sop_db_options o = crash_opts();
    CHECK_OK_RET(sop_db_open(&db, test_dir(), &o));
    CHECK_OK_RET(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    int rc = sop_store_open(&s, t, "c", 0, NULL);
    if (rc == SOP_NOTFOUND && !have_acked) {
        *next_out = 0;
        sop_txn_abort(t);
        return sop_db_close(db);
    }
    CHECK_OK_RET(rc);
    CHECK_OK_RET(get_s(&v, t, s, "last"));
    char lb[32];
    snprintf(lb, sizeof lb, "%.*s", (int)v.len, (const char *)v.data);
    uint64_t last = strtoull(lb, NULL, 10);
    if (have_acked && last < acked) {
        fprintf(stderr, "acknowledged txn %" PRIu64 " lost (last is %" PRIu64 ")\n", acked, last);
        return -100;
    }
    uint64_t expect = 1; /* "last" */
    for (uint64_t j = 0; j <= last + 3; j++) {
        int present = 0;
        for (int i = 0; i < keys_of(j); i++) {
            snprintf(kb, sizeof kb, "t%08" PRIu64 "-%02d", j, i);
            rc = get_s(&v, t, s, kb);
            if (rc != SOP_OK && rc != SOP_NOTFOUND)
                return rc;
            present += rc == SOP_OK;
        }
        int want = j <= last ? keys_of(j) : 0;
        if (present != want) {
            fprintf(stderr, "txn %" PRIu64 ": %d of %d keys present (last %" PRIu64 ")\n", j,
                    present, keys_of(j), last);
            return -101;
        }
        expect += (uint64_t)present;
    }
    uint64_t n, walked = 0;
    CHECK_OK_RET(sop_count(&n, t, s));
    sop_cursor *c;
    sop_val k;
    CHECK_OK_RET(sop_cursor_open(&c, t, s));
    for (rc = sop_cursor_get(&k, &v, c, SOP_FIRST, NULL); rc == SOP_OK;
         rc = sop_cursor_get(&k, &v, c, SOP_NEXT, NULL))
        walked++;
    sop_cursor_close(c);
    sop_txn_abort(t);
    if (n != expect || walked != expect) {
        fprintf(stderr, "count %" PRIu64 ", traversal %" PRIu64 ", expected %" PRIu64 "\n", n,
                walked, expect);
        return -102;
    }
    *next_out = last + 1;
    if (check_db(db) != 0)
        return -103;
    return sop_db_close(db);
}

TEST(test_crash__sigkill_loses_no_acknowledged_commit)
{
    int kills = getenv("SOP_CRASH_KILLS") ? atoi(getenv("SOP_CRASH_KILLS")) : 50;
    uint64_t next = 0, total_acked = 0;
    for (int k = 0; k < kills; k++) {
        int p[2];
        CHECK(pipe(p) == 0);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            child_loop(p[1], next, test_seed * 1000 + (uint64_t)k);
        }
        close(p[1]);
        /* let it run 5..100 ms, then kill it wherever it is */
        usleep((useconds_t)(5000 + test_rand() % 95000));
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        if (!WIFSIGNALED(st)) {
            FAIL_AT("kill %d: child exited by itself with status %d (see its stderr above)", k,
                    WIFEXITED(st) ? WEXITSTATUS(st) : -1);
            return;
        }
        uint64_t j, acked = 0;
        int have = 0;
        while (read(p[0], &j, sizeof j) == sizeof j) {
            acked = j;
            have = 1;
            total_acked++;
        }
        close(p[0]);
        int rc = verify(acked, have || next > 0, &next);
        if (rc != SOP_OK) {
            FAIL_AT("kill %d: verification failed (%d: %s %s)", k, rc, sop_strerror(rc),
                    sop_errmsg());
            return;
        }
    }
    printf("    %d kills, %" PRIu64 " acknowledged commits, all present\n", kills, total_acked);
}

TEST(test_crash__prepared_survives_sigkill)
{
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        sop_db *db;
        sop_txn *t;
        sop_store *s;
        close(p[0]);
        if (sop_db_open(&db, test_dir(), NULL) || sop_txn_begin(&t, db, 0) ||
            sop_store_open(&s, t, "p", SOP_STORE_CREATE, NULL) || put_s(t, s, "seed", "1") ||
            sop_txn_commit(t))
            _exit(3);
        if (sop_txn_begin(&t, db, 0) || put_s(t, s, "k", "prepared value") ||
            sop_txn_prepare(t, NULL))
            _exit(4);
        uint64_t id = sop_txn_id(t);
        if (write(p[1], &id, sizeof id) != sizeof id)
            _exit(5);
        for (;;)
            pause();
    }
    close(p[1]);
    uint64_t id = 0;
    CHECK(read(p[0], &id, sizeof id) == sizeof id);
    close(p[0]);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    sop_val v;
    size_t n;
    sop_prepared_info info[2];
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_db_prepared_list(info, 2, &n, db));
    CHECK_EQ_U64(n, 1);
    CHECK_EQ_U64(info[0].id, id);
    CHECK_OK(sop_db_prepared_commit(db, id));
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(sop_store_open(&s, t, "p", 0, NULL));
    CHECK_OK(get_s(&v, t, s, "k"));
    CHECK_VAL(v, "prepared value");
    sop_txn_abort(t);
    CHECK_OK(sop_db_close(db));
}

TEST_MAIN(T(test_crash__sigkill_loses_no_acknowledged_commit),
          T(test_crash__prepared_survives_sigkill))
