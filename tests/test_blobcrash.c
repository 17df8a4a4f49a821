/*
 * test_blobcrash.c - several writer threads committing values that live in
 * their own blobs, a checkpoint thread running beside them, SIGKILLs or
 * power cuts at random moments - and an oracle that does not stop at
 * recovery.
 *
 * Why: test_crash and test_powerloss kill one thread whose values are
 * mostly inline, and stop at "every acknowledged commit is present right
 * after recovery". Recovery's space accounting of value blobs can then be
 * wrong without any read failing yet; the loss shows only when the
 * database is used on: overwrites make blobs dead, a checkpoint reclaims
 * segments it believes dead, and a live blob goes with them. So here, after
 * every crash, the database is verified (every key, every byte, counts, a
 * cursor walk, sop_db_check with any finding a failure), and every few
 * crashes (and at the end) it is used on: every item but every 50th is
 * overwritten, some are deleted, checkpoint, close, reopen, checkpoint
 * (reclamation runs), and verified again.
 *
 * Workload: WRITERS threads, each with its own keys "w<w>-<k>" (k <
 * KEYS_PER_WRITER) in one store whose values of more than 64 bytes get
 * their own blob (max_inline_value 64; values are 100 B - 20 KB). Commit j
 * of writer w is a function of (seed, w, j) only (plan_of): insert key j
 * (or overwrite one once the writer has all its keys), overwrite an older
 * key, every fifth commit delete one, and set the marker "w<w>-last" to j.
 * A value's bytes are a function of (seed, w, key, version), so the oracle
 * knows each key's expected bytes from the model alone. A writer has one
 * commit in flight at a time, so after a crash writer w's keys must be the
 * state after its last acknowledged commit or the one after it (the marker
 * says which), and nothing else.
 *
 *   test_blobcrash__sigkill_threads_checkpoint_and_reuse
 *     a child process runs the threads; the parent kills it with SIGKILL
 *     0-100 ms after its first acknowledged commit; SOP_BLOBCRASH_KILLS
 *     kills (default 20), used on every 10 kills and at the end. Summary:
 *     "campaign blobkill: cases N failures F acked A".
 *   test_blobcrash__power_cuts_threads_checkpoint_and_reuse
 *     the same threads in this process over tests/vfs_crash.c's power-loss
 *     VFS (serialized by a locking wrapper: the crash VFS is single-
 *     threaded); the power is cut at a random mutating call, the files are
 *     rewritten to a state a disk could hold, the folder is reopened with
 *     the POSIX VFS. Chains of CUTS_PER_CHAIN cuts on one folder, used on
 *     at the end of each; SOP_BLOBCRASH_CUTS cuts (default 18). Summary:
 *     "campaign blobpower: ...".
 * A campaign in which no kill or cut landed fails.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

#include "harness.h"
#include "tutil.h"
#include "vfs_crash.h"

#define WRITERS         3
#define KEYS_PER_WRITER 300
#define POST_EVERY      10 /* kills between two use-on phases */
#define CUTS_PER_CHAIN  6
#define POST_BASE       1000000000 /* versions written by the use-on phase */
#define STORE           "blobs"

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* ---- keys, values, plans ---------------------------------------------------- */

static uint64_t campaign_seed;

static size_t key_of(char *buf, int w, uint32_t k)
{
    return (size_t)snprintf(buf, 32, "w%d-%06u", w, k);
}

static size_t marker_of(char *buf, int w)
{
    return (size_t)snprintf(buf, 32, "w%d-last", w);
}

/* The bytes of version @p ver of key k of writer w: 100 B - 20 KB. */
static size_t value_of(uint8_t *buf, int w, uint32_t k, int64_t ver)
{
    uint64_t h = mix(campaign_seed ^ ((uint64_t)w << 56) ^ ((uint64_t)k << 32) ^ (uint64_t)ver);
    size_t len = 100 + (size_t)(h % 19900);
    int n = snprintf((char *)buf, 64, "w%d k%u v%" PRId64 ";", w, k, ver);
    for (size_t i = (size_t)n; i < len; i++)
        buf[i] = (uint8_t)(h >> (i & 31)) ^ (uint8_t)(i * 131u);
    return len;
}

#define VALUE_MAX 20000

typedef struct plan {
    uint32_t put[2];
    int nput;
    uint32_t del; /* UINT32_MAX: none */
} plan;

static plan plan_of(int w, uint32_t j)
{
    plan p = {{0, 0}, 0, UINT32_MAX};
    uint64_t h = mix(campaign_seed * 31 + ((uint64_t)w << 40) + j);
    uint32_t have = j < KEYS_PER_WRITER ? j : KEYS_PER_WRITER;
    p.put[p.nput++] = j < KEYS_PER_WRITER ? j : (uint32_t)(h % KEYS_PER_WRITER);
    if (have > 0) {
        uint32_t r = (uint32_t)((h >> 20) % have);
        if (r != p.put[0])
            p.put[p.nput++] = r;
        uint32_t d = (uint32_t)((h >> 40) % have);
        if (j % 5 == 4 && d != p.put[0] && (p.nput < 2 || d != p.put[1]))
            p.del = d;
    }
    return p;
}

/* ---- the model ---------------------------------------------------------------- */

/* ver[w][k]: the version key k of writer w holds, -1 if absent; last[w]:
 * the marker (the last commit of w that is in), -1 if none yet. */
typedef struct model {
    int64_t ver[WRITERS][KEYS_PER_WRITER];
    int64_t last[WRITERS];
} model;

static void model_init(model *m)
{
    for (int w = 0; w < WRITERS; w++) {
        for (int k = 0; k < KEYS_PER_WRITER; k++)
            m->ver[w][k] = -1;
        m->last[w] = -1;
    }
}

static void model_apply(model *m, int w, uint32_t j)
{
    plan p = plan_of(w, j);
    for (int i = 0; i < p.nput; i++)
        m->ver[w][p.put[i]] = j;
    if (p.del != UINT32_MAX)
        m->ver[w][p.del] = -1;
    m->last[w] = j;
}

/* ---- writer and checkpoint threads -------------------------------------------- */

typedef struct bw_shared {
    sop_db *db;
    sop_store *store;
    int stop;    /* __atomic */
    int pipe_fd; /* the kill child reports each acknowledged (w, j) here; -1: none */
    uint64_t checkpoints;
} bw_shared;

typedef struct bw_writer {
    bw_shared *sh;
    pthread_t th;
    int w;
    uint32_t next;    /* the next commit number */
    uint32_t limit;   /* stop before this commit number */
    int64_t acked;    /* the last commit that returned SOP_OK, -1 if none */
    int in_flight_rc; /* what commit acked+1 returned (SOP_OK if none failed) */
    uint64_t commits;
    char msg[256];
} bw_writer;

/* *at_commit: the error came from sop_txn_commit (the record may be out). */
static int write_commit(bw_writer *wr, uint32_t j, int *at_commit)
{
    static __thread uint8_t val[VALUE_MAX + 64];
    char kb[32];
    sop_txn *t;
    int rc = sop_txn_begin(&t, wr->sh->db, 0);
    if (rc)
        return rc;
    plan p = plan_of(wr->w, j);
    for (int i = 0; i < p.nput && rc == SOP_OK; i++) {
        sop_val k = {kb, key_of(kb, wr->w, p.put[i])};
        sop_val v = {val, value_of(val, wr->w, p.put[i], j)};
        rc = sop_upsert(t, wr->sh->store, &k, &v);
    }
    if (rc == SOP_OK && p.del != UINT32_MAX) {
        sop_val k = {kb, key_of(kb, wr->w, p.del)};
        rc = sop_remove(t, wr->sh->store, &k);
        if (rc == SOP_NOTFOUND)
            rc = SOP_OK;
    }
    if (rc == SOP_OK) {
        char lb[24];
        sop_val k = {kb, marker_of(kb, wr->w)};
        sop_val v = {lb, (size_t)snprintf(lb, sizeof lb, "%u", j)};
        rc = sop_upsert(t, wr->sh->store, &k, &v);
    }
    if (rc) {
        sop_txn_abort(t);
        return rc;
    }
    *at_commit = 1;
    return sop_txn_commit(t); /* ends t, whatever it returns */
}

static void *writer_main(void *arg)
{
    bw_writer *wr = arg;
    while (!__atomic_load_n(&wr->sh->stop, __ATOMIC_ACQUIRE) && wr->next < wr->limit) {
        int at_commit = 0;
        int rc = write_commit(wr, wr->next, &at_commit);
        if (rc == SOP_CONFLICT || rc == SOP_BUSY)
            continue; /* disjoint keys: should not happen, but a retry is correct */
        if (rc) {
            wr->in_flight_rc = at_commit ? rc : SOP_OK;
            snprintf(wr->msg, sizeof wr->msg, "writer %d commit %u: %s: %s", wr->w, wr->next,
                     sop_strerror(rc), sop_errmsg());
            break;
        }
        wr->acked = wr->next;
        wr->commits++;
        if (wr->sh->pipe_fd >= 0) {
            uint32_t msg[2] = {(uint32_t)wr->w, wr->next};
            if (write(wr->sh->pipe_fd, msg, sizeof msg) != sizeof msg)
                _exit(7);
        }
        wr->next++;
    }
    return NULL;
}

typedef struct bw_ckpt {
    bw_shared *sh;
    pthread_t th;
    uint64_t rng;
    int rc;
    char msg[256];
} bw_ckpt;

static void *ckpt_main(void *arg)
{
    bw_ckpt *c = arg;
    while (!__atomic_load_n(&c->sh->stop, __ATOMIC_ACQUIRE)) {
        c->rng = mix(c->rng);
        usleep((useconds_t)(c->rng % 4000));
        int rc = sop_db_checkpoint(c->sh->db);
        if (rc) {
            c->rc = rc;
            snprintf(c->msg, sizeof c->msg, "checkpoint: %s: %s", sop_strerror(rc), sop_errmsg());
            break;
        }
        c->sh->checkpoints++;
    }
    return NULL;
}

static sop_db_options db_opts(const sop_vfs *vfs)
{
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.segment_bytes = 1u << 20;
    o.vfs = vfs;
    return o;
}

static int open_store(sop_store **s, sop_db *db)
{
    sop_txn *t;
    sop_store_options so = SOP_STORE_OPTIONS_INIT;
    so.max_inline_value = 64;
    int rc = sop_txn_begin(&t, db, 0);
    if (rc)
        return rc;
    rc = sop_store_open(s, t, STORE, SOP_STORE_CREATE, &so);
    if (rc) {
        sop_txn_abort(t);
        return rc;
    }
    return sop_txn_commit(t);
}

/* Run the threads until each writer reached its limit, failed, or *stop. */
static void run_threads(bw_shared *sh, bw_writer *wr, bw_ckpt *ck, const int64_t *last,
                        uint32_t commits_each, uint64_t seed)
{
    for (int w = 0; w < WRITERS; w++) {
        memset(&wr[w], 0, sizeof wr[w]);
        wr[w].sh = sh;
        wr[w].w = w;
        wr[w].next = (uint32_t)(last[w] + 1);
        wr[w].limit = commits_each ? wr[w].next + commits_each : UINT32_MAX;
        wr[w].acked = last[w];
    }
    memset(ck, 0, sizeof *ck);
    ck->sh = sh;
    ck->rng = seed;
    pthread_create(&ck->th, NULL, ckpt_main, ck);
    for (int w = 0; w < WRITERS; w++)
        pthread_create(&wr[w].th, NULL, writer_main, &wr[w]);
    for (int w = 0; w < WRITERS; w++)
        pthread_join(wr[w].th, NULL);
    __atomic_store_n(&sh->stop, 1, __ATOMIC_RELEASE);
    pthread_join(ck->th, NULL);
}

/* ---- the oracle ----------------------------------------------------------------- */

static void count_finding(const char *f, void *ctx)
{
    (*(uint64_t *)ctx)++;
    fprintf(stderr, "    check: %s\n", f);
}

/*
 * Verify @p db against @p m, where writer w may also have commit
 * m->last[w] + 1 in if maybe[w]. On success the model takes the state
 * found. 0 if accepted, else -1 (printed with @p what).
 */
static int verify_db(model *m, sop_db *db, const int *maybe, const char *what)
{
    static uint8_t want[VALUE_MAX + 64];
    model got = *m;
    sop_txn *t = NULL;
    sop_store *s;
    sop_val v;
    char kb[32];
    int rc = sop_txn_begin(&t, db, SOP_TXN_READONLY);
    if (rc == SOP_OK)
        rc = sop_store_open(&s, t, STORE, 0, NULL);
    if (rc) {
        fprintf(stderr, "%s: cannot read the store: %s: %s\n", what, sop_strerror(rc),
                sop_errmsg());
        if (rc != SOP_OK && t)
            sop_txn_abort(t);
        return -1;
    }
    uint64_t expect_count = 0;
    for (int w = 0; w < WRITERS; w++) {
        int64_t mark = -1;
        sop_val k = {kb, marker_of(kb, w)};
        rc = sop_get(&v, t, s, &k);
        if (rc == SOP_OK) {
            char lb[24];
            snprintf(lb, sizeof lb, "%.*s", (int)v.len, (const char *)v.data);
            mark = strtoll(lb, NULL, 10);
            expect_count++;
        } else if (rc != SOP_NOTFOUND) {
            fprintf(stderr, "%s: get %s: %s: %s\n", what, kb, sop_strerror(rc), sop_errmsg());
            goto bad;
        }
        if (mark == m->last[w] + 1 && maybe[w])
            model_apply(&got, w, (uint32_t)mark);
        else if (mark != m->last[w]) {
            fprintf(stderr,
                    "%s: writer %d: marker says commit %" PRId64 ", acknowledged up to %" PRId64
                    "%s\n",
                    what, w, mark, m->last[w], maybe[w] ? " (+1 in flight)" : "");
            goto bad;
        }
        for (uint32_t kk = 0; kk < KEYS_PER_WRITER; kk++) {
            k.len = key_of(kb, w, kk);
            rc = sop_get(&v, t, s, &k);
            int64_t ver = got.ver[w][kk];
            if (rc != SOP_OK && rc != SOP_NOTFOUND) {
                fprintf(stderr, "%s: get %s (version %" PRId64 " expected): %s: %s\n", what, kb,
                        ver, sop_strerror(rc), sop_errmsg());
                goto bad;
            }
            if ((rc == SOP_OK) != (ver >= 0)) {
                fprintf(stderr, "%s: %s is %s, expected %s (version %" PRId64 ")\n", what, kb,
                        rc == SOP_OK ? "present" : "absent", ver >= 0 ? "present" : "absent", ver);
                goto bad;
            }
            if (rc == SOP_OK) {
                size_t len = value_of(want, w, kk, ver);
                if (v.len != len || memcmp(v.data, want, len) != 0) {
                    fprintf(stderr,
                            "%s: %s: wrong bytes (%zu bytes '%.24s', expected %zu '%.24s')\n", what,
                            kb, v.len, (const char *)v.data, len, (const char *)want);
                    goto bad;
                }
                expect_count++;
            }
        }
    }
    uint64_t n = 0, walked = 0;
    sop_cursor *c;
    sop_val ck;
    if ((rc = sop_count(&n, t, s)) || (rc = sop_cursor_open(&c, t, s))) {
        fprintf(stderr, "%s: count/cursor: %s: %s\n", what, sop_strerror(rc), sop_errmsg());
        goto bad;
    }
    for (rc = sop_cursor_get(&ck, &v, c, SOP_FIRST, NULL); rc == SOP_OK;
         rc = sop_cursor_get(&ck, &v, c, SOP_NEXT, NULL))
        walked++;
    sop_cursor_close(c);
    if (rc != SOP_NOTFOUND) {
        fprintf(stderr, "%s: cursor walk: %s: %s\n", what, sop_strerror(rc), sop_errmsg());
        goto bad;
    }
    sop_txn_abort(t);
    t = NULL;
    if (n != expect_count || walked != expect_count) {
        fprintf(stderr, "%s: count %" PRIu64 ", walk %" PRIu64 ", expected %" PRIu64 "\n", what, n,
                walked, expect_count);
        return -1;
    }
    uint64_t findings = 0;
    rc = sop_db_check(&findings, db, count_finding, NULL, &findings);
    /* SOP_BLOBCRASH_IGNORE_CHECK=1 (never in the suite) shows that the reads
     * of the use-on phase catch what a finding announces. */
    if (findings && getenv("SOP_BLOBCRASH_IGNORE_CHECK"))
        findings = 0;
    if (rc != SOP_OK || findings) {
        fprintf(stderr, "%s: sop_db_check: %s, %" PRIu64 " finding(s)\n", what, sop_strerror(rc),
                findings);
        return -1;
    }
    *m = got;
    return 0;
bad:
    if (t)
        sop_txn_abort(t);
    return -1;
}

/* Open with the POSIX VFS, verify, close. */
static int reopen_verify(model *m, const int *maybe, const char *what)
{
    sop_db *db;
    sop_db_options o = db_opts(NULL);
    int rc = sop_db_open(&db, test_dir(), &o);
    if (rc) {
        fprintf(stderr, "%s: open: %s: %s\n", what, sop_strerror(rc), sop_errmsg());
        return -1;
    }
    int r = verify_db(m, db, maybe, what);
    rc = sop_db_close(db);
    if (r == 0 && rc) {
        fprintf(stderr, "%s: close: %s: %s\n", what, sop_strerror(rc), sop_errmsg());
        r = -1;
    }
    return r;
}

/*
 * Use the database on, as an application would after the crash: overwrite
 * every item but every 50th (new versions POST_BASE + round), delete every
 * 50th + 25, checkpoint, close, reopen, checkpoint, verify; close, reopen,
 * verify again.
 */
static int use_on(model *m, int round, const char *what)
{
    static uint8_t val[VALUE_MAX + 64];
    static const int none[WRITERS];
    char kb[32];
    sop_db *db = NULL;
    sop_store *s = NULL;
    sop_db_options o = db_opts(NULL);
    int rc = sop_db_open(&db, test_dir(), &o);
    if (rc == SOP_OK)
        rc = open_store(&s, db);
    int64_t ver = POST_BASE + round;
    for (int w = 0; w < WRITERS && rc == SOP_OK; w++) {
        for (uint32_t k0 = 0; k0 < KEYS_PER_WRITER && rc == SOP_OK; k0 += 25) {
            sop_txn *t;
            if ((rc = sop_txn_begin(&t, db, 0)))
                break;
            for (uint32_t k = k0; k < k0 + 25 && rc == SOP_OK; k++) {
                if (m->ver[w][k] < 0 || k % 50 == 0)
                    continue;
                sop_val kv = {kb, key_of(kb, w, k)};
                if (k % 50 == 25) {
                    rc = sop_remove(t, s, &kv);
                } else {
                    sop_val vv = {val, value_of(val, w, k, ver)};
                    rc = sop_upsert(t, s, &kv, &vv);
                }
            }
            if (rc) {
                sop_txn_abort(t);
                break;
            }
            if ((rc = sop_txn_commit(t)))
                break;
            for (uint32_t k = k0; k < k0 + 25; k++)
                if (m->ver[w][k] >= 0 && k % 50 != 0)
                    m->ver[w][k] = k % 50 == 25 ? -1 : ver;
        }
    }
    if (rc == SOP_OK)
        rc = sop_db_checkpoint(db);
    if (rc) {
        fprintf(stderr, "%s: use on: %s: %s\n", what, sop_strerror(rc), sop_errmsg());
        if (db)
            sop_db_close(db);
        return -1;
    }
    if ((rc = sop_db_close(db)) || (rc = sop_db_open(&db, test_dir(), &o)) ||
        (rc = sop_db_checkpoint(db))) {
        fprintf(stderr, "%s: use on: close/reopen/checkpoint: %s: %s\n", what, sop_strerror(rc),
                sop_errmsg());
        return -1;
    }
    int r = verify_db(m, db, none, what);
    if ((rc = sop_db_close(db)) && r == 0) {
        fprintf(stderr, "%s: use on: close: %s: %s\n", what, sop_strerror(rc), sop_errmsg());
        r = -1;
    }
    return r ? r : reopen_verify(m, none, what);
}

static int create_db(void)
{
    sop_db *db;
    sop_store *s;
    sop_db_options o = db_opts(NULL);
    int rc = sop_db_open(&db, test_dir(), &o);
    if (rc == SOP_OK && (rc = open_store(&s, db)) != SOP_OK)
        sop_db_close(db);
    else if (rc == SOP_OK)
        rc = sop_db_close(db);
    return rc;
}

/* ---- SIGKILL ------------------------------------------------------------------------ */

static void kill_child(int fd, const int64_t *last, uint64_t seed)
{
    bw_shared sh;
    bw_writer wr[WRITERS];
    bw_ckpt ck;
    memset(&sh, 0, sizeof sh);
    sh.pipe_fd = fd;
    sop_db_options o = db_opts(NULL);
    int rc = sop_db_open(&sh.db, test_dir(), &o);
    if (rc == SOP_OK)
        rc = open_store(&sh.store, sh.db);
    if (rc) {
        fprintf(stderr, "blobkill child: open: %s: %s\n", sop_strerror(rc), sop_errmsg());
        _exit(3);
    }
    run_threads(&sh, wr, &ck, last, 0, seed);
    for (int w = 0; w < WRITERS; w++)
        if (wr[w].msg[0])
            fprintf(stderr, "blobkill child: %s\n", wr[w].msg);
    if (ck.msg[0])
        fprintf(stderr, "blobkill child: %s\n", ck.msg);
    _exit(4);
}

TEST(test_blobcrash__sigkill_threads_checkpoint_and_reuse)
{
    int kills = getenv("SOP_BLOBCRASH_KILLS") ? atoi(getenv("SOP_BLOBCRASH_KILLS")) : 20;
    static model m;
    static const int all[WRITERS] = {1, 1, 1};
    uint64_t acked_total = 0, landed = 0, failures = 0;
    int k = 0;
    campaign_seed = test_seed;
    model_init(&m);
    CHECK_OK(create_db());
    for (k = 0; k < kills; k++) {
        int p[2];
        CHECK(pipe(p) == 0);
        fflush(NULL);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            kill_child(p[1], m.last, test_seed * 1000 + (uint64_t)k);
        }
        close(p[1]);
        /* The kill lands 0-100 ms after the child's first acknowledged
         * commit (waited for, so a slow start - ASan, TSan - still kills
         * writers at work, not a process still opening). */
        uint32_t msg[2];
        int64_t acked[WRITERS];
        memcpy(acked, m.last, sizeof acked);
        struct pollfd pfd = {p[0], POLLIN, 0};
        int first = poll(&pfd, 1, 60000) == 1 && read(p[0], msg, sizeof msg) == sizeof msg;
        usleep((useconds_t)(test_rand() % 100000));
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        for (int more = first; more; more = read(p[0], msg, sizeof msg) == sizeof msg) {
            if (msg[0] >= WRITERS || (int64_t)msg[1] != acked[msg[0]] + 1) {
                FAIL_AT("kill %d: bad report from the child (writer %u commit %u)", k, msg[0],
                        msg[1]);
                close(p[0]);
                return;
            }
            acked[msg[0]] = msg[1];
            acked_total++;
        }
        close(p[0]);
        if (!WIFSIGNALED(st)) {
            FAIL_AT("kill %d: the child exited by itself with status %d (its stderr above)", k,
                    WIFEXITED(st) ? WEXITSTATUS(st) : -1);
            failures++;
            break;
        }
        landed++;
        for (int w = 0; w < WRITERS; w++)
            while (m.last[w] < acked[w])
                model_apply(&m, w, (uint32_t)(m.last[w] + 1));
        char what[64];
        snprintf(what, sizeof what, "blobkill seed %" PRIu64 " kill %d", test_seed, k);
        if (reopen_verify(&m, all, what) != 0) {
            failures++;
            break;
        }
        if ((k + 1) % POST_EVERY == 0 || k + 1 == kills) {
            snprintf(what, sizeof what, "blobkill seed %" PRIu64 " kill %d use-on", test_seed, k);
            if (use_on(&m, k, what) != 0) {
                failures++;
                break;
            }
        }
    }
    printf("campaign blobkill: cases %d failures %" PRIu64 " acked %" PRIu64 "\n",
           k < kills ? k + 1 : kills, failures, acked_total);
    CHECK(failures == 0);
    CHECK(landed > 0);
    CHECK(acked_total > 0);
}

/* ---- power cuts ------------------------------------------------------------------------- */

/* The crash VFS keeps its bookkeeping unlocked (tests/vfs_crash.h: one
 * thread per crash_vfs); this wrapper serializes every call to it, which
 * is all the engine's threads need. */
typedef struct locked_vfs {
    sop_vfs vfs;
    const sop_vfs *inner;
    pthread_mutex_t mu;
} locked_vfs;

typedef struct locked_file {
    sop_file base;
    sop_file *inner;
} locked_file;

#define LV(v) ((locked_vfs *)(v)->ctx)
#define LF(f) (((locked_file *)(f))->inner)
#define LOCKED(lv, expr)                                                                           \
    do {                                                                                           \
        pthread_mutex_lock(&(lv)->mu);                                                             \
        int r_ = (expr);                                                                           \
        pthread_mutex_unlock(&(lv)->mu);                                                           \
        return r_;                                                                                 \
    } while (0)

static int l_open(sop_file **out, const sop_vfs *vfs, const char *path, unsigned flags)
{
    locked_vfs *lv = LV(vfs);
    locked_file *lf = calloc(1, sizeof *lf);
    *out = NULL;
    if (!lf)
        return sop_vfs_set_error(SOP_NOMEM, ENOMEM, "locked vfs: open %s", path);
    pthread_mutex_lock(&lv->mu);
    int rc = lv->inner->open(&lf->inner, lv->inner, path, flags);
    pthread_mutex_unlock(&lv->mu);
    if (rc) {
        free(lf);
        return rc;
    }
    lf->base.vfs = vfs;
    *out = &lf->base;
    return SOP_OK;
}

static int l_close(sop_file *f)
{
    locked_vfs *lv = LV(f->vfs);
    sop_file *in = LF(f);
    free(f);
    LOCKED(lv, in->vfs->close(in));
}
static int l_pread(sop_file *f, void *buf, size_t len, uint64_t off, size_t *got)
{
    LOCKED(LV(f->vfs), LF(f)->vfs->pread(LF(f), buf, len, off, got));
}
static int l_pwrite(sop_file *f, const void *buf, size_t len, uint64_t off)
{
    LOCKED(LV(f->vfs), LF(f)->vfs->pwrite(LF(f), buf, len, off));
}
static int l_sync(sop_file *f, int data_only)
{
    LOCKED(LV(f->vfs), LF(f)->vfs->sync(LF(f), data_only));
}
static int l_truncate(sop_file *f, uint64_t size)
{
    LOCKED(LV(f->vfs), LF(f)->vfs->truncate(LF(f), size));
}
static int l_size(sop_file *f, uint64_t *size)
{
    LOCKED(LV(f->vfs), LF(f)->vfs->size(LF(f), size));
}
static int l_lock(sop_file *f, int mode)
{
    LOCKED(LV(f->vfs), LF(f)->vfs->lock(LF(f), mode));
}
static int l_unlink(const sop_vfs *v, const char *p)
{
    LOCKED(LV(v), LV(v)->inner->unlink(LV(v)->inner, p));
}
static int l_rename(const sop_vfs *v, const char *a, const char *b)
{
    LOCKED(LV(v), LV(v)->inner->rename(LV(v)->inner, a, b));
}
static int l_mkdir(const sop_vfs *v, const char *p)
{
    LOCKED(LV(v), LV(v)->inner->mkdir(LV(v)->inner, p));
}
static int l_sync_dir(const sop_vfs *v, const char *p)
{
    LOCKED(LV(v), LV(v)->inner->sync_dir(LV(v)->inner, p));
}
static int l_list_dir(const sop_vfs *v, const char *p, int (*cb)(const char *, void *), void *ctx)
{
    LOCKED(LV(v), LV(v)->inner->list_dir(LV(v)->inner, p, cb, ctx));
}
static int l_stat(const sop_vfs *v, const char *p, int *is_dir, uint64_t *size)
{
    LOCKED(LV(v), LV(v)->inner->stat(LV(v)->inner, p, is_dir, size));
}
static int l_symlink(const sop_vfs *v, const char *t, const char *p)
{
    LOCKED(LV(v), LV(v)->inner->symlink(LV(v)->inner, t, p));
}
static int l_readlink(const sop_vfs *v, const char *p, char *buf, size_t cap, size_t *len)
{
    LOCKED(LV(v), LV(v)->inner->readlink(LV(v)->inner, p, buf, cap, len));
}
static uint64_t l_monotonic_ns(const sop_vfs *v)
{
    return LV(v)->inner->monotonic_ns(LV(v)->inner);
}
static int l_random(const sop_vfs *v, void *buf, size_t len)
{
    LOCKED(LV(v), LV(v)->inner->random(LV(v)->inner, buf, len));
}

static void locked_vfs_init(locked_vfs *lv, const sop_vfs *inner)
{
    lv->inner = inner;
    pthread_mutex_init(&lv->mu, NULL);
    lv->vfs = (sop_vfs){
        .version = SOP_VFS_VERSION,
        .name = "locked",
        .ctx = lv,
        .open = l_open,
        .close = l_close,
        .pread = l_pread,
        .pwrite = l_pwrite,
        .sync = l_sync,
        .truncate = l_truncate,
        .size = l_size,
        .lock = l_lock,
        .unlink = l_unlink,
        .rename = l_rename,
        .mkdir = l_mkdir,
        .sync_dir = l_sync_dir,
        .list_dir = l_list_dir,
        .stat = l_stat,
        .symlink = l_symlink,
        .readlink = l_readlink,
        .monotonic_ns = l_monotonic_ns,
        .random = l_random,
    };
}

#define CUT_COMMITS 25 /* commits per writer a case runs at most */

/*
 * One case: open over the power-loss VFS, run the threads, cut the power at
 * mutating call @p cut_at (0: never; the case then only counts the calls),
 * rewrite the files, verify with the POSIX VFS. Returns 0 if accepted, -1
 * on a finding; *cut_fired and *mutations_out report what happened.
 */
static int power_case(model *m, uint64_t cut_at, uint64_t seed, int *cut_fired,
                      uint64_t *mutations_out, uint64_t *acked_out, const char *what)
{
    char stash[600];
    snprintf(stash, sizeof stash, "%s.stash", test_dir());
    crash_vfs *cv = crash_vfs_new(stash, seed);
    locked_vfs lv;
    if (!cv)
        return -1;
    locked_vfs_init(&lv, crash_vfs_vfs(cv));
    crash_vfs_arm(cv, cut_at);
    bw_shared sh;
    bw_writer wr[WRITERS];
    bw_ckpt ck;
    memset(&sh, 0, sizeof sh);
    sh.pipe_fd = -1;
    sop_db_options o = db_opts(&lv.vfs);
    int rc = sop_db_open(&sh.db, test_dir(), &o);
    if (rc == SOP_OK && (rc = open_store(&sh.store, sh.db)) != SOP_OK) {
        sop_db__crash_close(sh.db);
        sh.db = NULL;
    }
    int maybe[WRITERS] = {0};
    int bad = 0;
    if (rc == SOP_OK) {
        run_threads(&sh, wr, &ck, m->last, CUT_COMMITS, seed);
        for (int w = 0; w < WRITERS; w++) {
            *acked_out += wr[w].commits;
            while (m->last[w] < wr[w].acked)
                model_apply(m, w, (uint32_t)(m->last[w] + 1));
            int frc = wr[w].in_flight_rc;
            /* A commit that failed after its record may have reached the log
             * is undecided (SOP_PANIC); any other error means not committed. */
            maybe[w] = frc == SOP_PANIC || frc == SOP_UNKNOWN_OUTCOME;
            if (wr[w].msg[0] && !crash_vfs_crashed(cv)) {
                fprintf(stderr, "%s: %s before any cut\n", what, wr[w].msg);
                bad = 1;
            }
        }
        if (ck.rc && !crash_vfs_crashed(cv)) {
            fprintf(stderr, "%s: %s before any cut\n", what, ck.msg);
            bad = 1;
        }
        sop_db__crash_close(sh.db);
    } else if (!crash_vfs_crashed(cv)) {
        fprintf(stderr, "%s: open: %s: %s\n", what, sop_strerror(rc), sop_errmsg());
        bad = 1;
    }
    *cut_fired = crash_vfs_crashed(cv);
    *mutations_out = crash_vfs_mutations(cv);
    crash_stats cs;
    if (crash_vfs_apply(cv, CRASH_RANDOM, &cs) != 0)
        bad = 1;
    crash_vfs_free(cv);
    pthread_mutex_destroy(&lv.mu);
    test_rm_rf(stash);
    if (bad)
        return -1;
    return reopen_verify(m, maybe, what);
}

TEST(test_blobcrash__power_cuts_threads_checkpoint_and_reuse)
{
    int cuts = getenv("SOP_BLOBCRASH_CUTS") ? atoi(getenv("SOP_BLOBCRASH_CUTS")) : 18;
    static model m;
    uint64_t acked = 0, fired = 0, failures = 0, cases = 0;
    campaign_seed = test_seed;
    for (int chain = 0; (int)cases < cuts && failures == 0; chain++) {
        test_rm_rf(test_dir());
        mkdir(test_dir(), 0700);
        model_init(&m);
        CHECK_OK(create_db());
        /* A dry run without a cut counts a case's mutating calls. */
        int f;
        uint64_t muts = 0;
        char what[96];
        snprintf(what, sizeof what, "blobpower seed %" PRIu64 " chain %d dry run", test_seed,
                 chain);
        if (power_case(&m, 0, test_seed * 7919 + (uint64_t)chain, &f, &muts, &acked, what) != 0) {
            failures++;
            break;
        }
        for (int c = 0; c < CUTS_PER_CHAIN && (int)cases < cuts; c++) {
            uint64_t seed = mix(test_seed * 1000003 + (uint64_t)chain * 101 + (uint64_t)c);
            uint64_t cut = 1 + seed % (muts ? muts : 1), got;
            snprintf(what, sizeof what, "blobpower seed %" PRIu64 " chain %d cut %d at %" PRIu64,
                     test_seed, chain, c, cut);
            cases++;
            int r = power_case(&m, cut, seed, &f, &got, &acked, what);
            fired += (uint64_t)f;
            if (r != 0) {
                failures++;
                break;
            }
        }
        if (failures == 0) {
            snprintf(what, sizeof what, "blobpower seed %" PRIu64 " chain %d use-on", test_seed,
                     chain);
            if (use_on(&m, chain, what) != 0)
                failures++;
        }
    }
    printf("campaign blobpower: cases %" PRIu64 " failures %" PRIu64 " acked %" PRIu64 " (%" PRIu64
           " cuts landed)\n",
           cases, failures, acked, fired);
    CHECK(failures == 0);
    CHECK(fired > 0);
}

TEST_MAIN(T(test_blobcrash__sigkill_threads_checkpoint_and_reuse),
          T(test_blobcrash__power_cuts_threads_checkpoint_and_reuse))
