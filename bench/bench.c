/*
 * bench.c - libsop's benchmark harness: the same workloads against libsop,
 * LMDB and SQLite in one run, every read verified.
 *
 * The parent process plans the jobs, runs each in a forked child, and reports
 * medians (report.c). A child opens one engine in its own empty folder, runs
 * one job and writes its bench_results to a file:
 *
 *   chain        the db_bench sequence on one database: fillseq, fillrandom
 *                (fresh), overwrite, readrandom, readseq, readwhilewriting,
 *                deleterandom - whichever are selected; a workload that needs
 *                a loaded database and has none gets an unmeasured load first
 *   fillrandsync / fillsync-concurrent   a fresh database, durable commits
 *   sopshape     a fresh database per (n, slot length): add all, find all,
 *                remove all, one transaction each
 *
 * Guarantees:
 *   (B1) Every read is checked: a missing key, an extra key, a key out of
 *        order or a value that is not the one last written ends the child
 *        with exit status 2, and the whole run exits non-zero.
 *   (B2) An engine's numbers come from processes that never loaded another
 *        engine's data: peak RSS (VmHWM, reset before each workload through
 *        /proc/self/clear_refs) is that engine's alone.
 *   (B3) Runs are deterministic by --seed: the same keys, order and values.
 *   (B4) Timed regions contain only engine calls and the key/value
 *        generation and checks every engine pays equally; loads a workload
 *        needs as a precondition and after-the-fact checks are not timed.
 *
 * Fsyncs of the peers are counted in an extra pass of the sync workloads run
 * under `strace -f -c` (never timed); libsop counts its own (sop_db_stat).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_run.h"

const char *const bench_workload_names[W_COUNT] = {
    [W_FILLSEQ] = "fillseq",
    [W_FILLRANDOM] = "fillrandom",
    [W_OVERWRITE] = "overwrite",
    [W_READRANDOM] = "readrandom",
    [W_READSEQ] = "readseq",
    [W_READWHILEWRITING] = "readwhilewriting",
    [W_DELETERANDOM] = "deleterandom",
    [W_FILLRANDSYNC] = "fillrandsync",
    [W_FILLSYNC_CONCURRENT] = "fillsync-concurrent",
    [W_SOPSHAPE] = "sopshape",
    [W_KEYS] = "keys",
};

/* Every engine compiled into this binary (see BENCH_ENGINES in bench.mk). */
static const bench_driver *const all_drivers[] = {
#ifdef BENCH_WITH_SOP
    &bench_driver_sop,
#endif
#ifdef BENCH_WITH_LMDB
    &bench_driver_lmdb,
#endif
#ifdef BENCH_WITH_SQLITE
    &bench_driver_sqlite,
#endif
#ifdef BENCH_WITH_ROCKSDB
    &bench_driver_rocksdb,
#endif
    NULL,
};

enum job { JOB_CHAIN = 1, JOB_FILLRANDSYNC, JOB_FILLSYNC_CONCURRENT, JOB_SOPSHAPE };
static const char *const job_names[] = {"", "chain", "fillrandsync", "fillsync-concurrent",
                                        "sopshape"};

/* ======================================================================== */
/* Small helpers                                                             */
/* ======================================================================== */

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int bench_mkdirs(const char *path)
{
    char buf[PATH_MAX];
    size_t len = strlen(path);
    struct stat st;

    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return -1;
    if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return (flag == FTW_DP ? rmdir(path) : unlink(path)) != 0 && errno != ENOENT ? -1 : 0;
}

static int rm_rf(const char *path)
{
    if (access(path, F_OK) != 0)
        return 0;
    return nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS);
}

static uint64_t du_size, du_alloc;
static int du_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)path;
    (void)ftw;
    if (flag == FTW_F) {
        du_size += (uint64_t)st->st_size;
        du_alloc += (uint64_t)st->st_blocks * 512u;
    }
    return 0;
}

/* Sum of the sizes (and allocated bytes) of the files under @p dir. */
static void dir_bytes(const char *dir, uint64_t *size, uint64_t *alloc)
{
    du_size = du_alloc = 0;
    nftw(dir, du_one, 32, FTW_PHYS);
    *size = du_size;
    *alloc = du_alloc;
}

/* Reset the peak-RSS mark to the current RSS (Linux >= 4.0). 1 if it worked. */
static int rss_reset(void)
{
    int fd = open("/proc/self/clear_refs", O_WRONLY);
    int ok;
    if (fd < 0)
        return 0;
    ok = write(fd, "5", 1) == 1;
    close(fd);
    return ok;
}

static uint64_t rss_peak_kb(void)
{
    char line[256];
    unsigned long long kb = 0;
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL)
        return 0;
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "VmHWM: %llu kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

static uint64_t rss_now_kb(void)
{
    char line[256];
    unsigned long long kb = 0;
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL)
        return 0;
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "VmRSS: %llu kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* A random permutation of 0..n-1 (Fisher-Yates, splitmix64). */
static uint32_t *make_perm(uint64_t n, uint64_t seed)
{
    uint32_t *p = malloc((n ? n : 1) * sizeof *p);
    uint64_t s = seed;
    if (p == NULL)
        return NULL;
    for (uint64_t i = 0; i < n; i++)
        p[i] = (uint32_t)i;
    for (uint64_t i = n; i > 1; i--) {
        uint64_t j = bench_splitmix64(&s) % i;
        uint32_t t = p[i - 1];
        p[i - 1] = p[j];
        p[j] = t;
    }
    return p;
}

/* ======================================================================== */
/* Child: one engine, one job                                                */
/* ======================================================================== */

typedef struct child {
    const bench_opts *o;
    const bench_driver *drv;
    char dir[PATH_MAX + 32];
    bench_cfg cfg;
    void *db;
    void *conn;
    int run;
    /* What the database holds: keys 0..nkeys-1, each at a generation in
     * [gen_lo, gen_hi], when full; nothing when !full && nkeys == 0. */
    int full;
    uint64_t nkeys;
    uint32_t gen_lo, gen_hi;
    uint64_t rss_base_kb;
    bench_result res[64];
    size_t nres;
} child;

static int child_fail(const child *c, const char *what, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "FAIL %s %s: ", c->drv->name, what);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (seed %" PRIu64 ")\n", c->o->seed);
    return -1;
}

static void db_close(child *c)
{
    if (c->conn != NULL)
        c->drv->conn_close(c->conn);
    c->conn = NULL;
    if (c->db != NULL)
        c->drv->close(c->db);
    c->db = NULL;
}

/* Close whatever is open, wipe the folder, open an empty database. */
static int db_fresh(child *c, int sync, uint32_t slot)
{
    db_close(c);
    if (rm_rf(c->dir) != 0 || bench_mkdirs(c->dir) != 0)
        return child_fail(c, "setup", "cannot recreate %s: %s", c->dir, strerror(errno));
    c->cfg.sync = sync;
    c->cfg.slot_length = slot;
    if (c->drv->open(&c->db, &c->cfg) != BENCH_OK)
        return child_fail(c, "setup", "open %s", c->dir);
    if (c->drv->conn_open(&c->conn, c->db) != BENCH_OK)
        return child_fail(c, "setup", "conn_open");
    c->full = 0;
    c->nkeys = 0;
    c->gen_lo = c->gen_hi = 0;
    return 0;
}

/* Value check: @p v must be key idx's value at a generation in [lo, hi]. */
static int value_ok(const bench_opts *o, uint8_t *scratch, uint64_t idx, const void *v,
                    size_t vlen, uint32_t lo, uint32_t hi)
{
    if (vlen != o->value_size)
        return 0;
    for (uint32_t g = hi + 1; g-- > lo;) {
        bench_value(scratch, o->value_size, o->seed, idx, g);
        if (memcmp(scratch, v, vlen) == 0)
            return 1;
    }
    return 0;
}

static double cpu_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

typedef struct timing {
    double t0, cpu0;
    int hwm_reset;
} timing;

static void timing_start(timing *t)
{
    t->hwm_reset = rss_reset();
    t->cpu0 = cpu_now();
    t->t0 = now_sec();
}

static void progress(const child *c, const bench_result *r)
{
    fprintf(stderr, "  [run %d] %-7s %-20s %12.0f ops/s %9.3f s\n", c->run, c->drv->name,
            r->workload, r->secs > 0 ? (double)r->ops / r->secs : 0.0, r->secs);
}

/* End a timed region: record ops, time, peak RSS and disk use. Prints the
 * progress line unless @p quiet (the caller adjusts and prints it). */
static bench_result *timing_stop_q(child *c, const timing *t, const char *workload, uint64_t n,
                                   uint64_t ops, int quiet)
{
    double secs = now_sec() - t->t0, cpu = cpu_now() - t->cpu0;
    bench_result *r = &c->res[c->nres < 63 ? c->nres++ : 63];

    memset(r, 0, sizeof *r);
    snprintf(r->workload, sizeof r->workload, "%s", workload);
    snprintf(r->engine, sizeof r->engine, "%s", c->drv->name);
    r->n = n;
    r->slot = 0;
    r->run = c->run;
    r->ops = ops;
    r->secs = secs;
    r->rss_kb = rss_peak_kb();
    r->hwm_reset = t->hwm_reset;
    r->cpu_secs = cpu;
    r->rss_base_kb = c->rss_base_kb;
    dir_bytes(c->dir, &r->disk_bytes, &r->disk_alloc);
    r->syncs = -1;
    r->syncs_strace = -1;
    if (!quiet)
        progress(c, r);
    return r;
}

static bench_result *timing_stop(child *c, const timing *t, const char *workload, uint64_t n,
                                 uint64_t ops)
{
    return timing_stop_q(c, t, workload, n, ops, 0);
}

/* Write keys order[start..end) (or start..end when order is NULL) at @p gen
 * in one transaction on @p conn, redoing it on BENCH_RETRY. */
static int write_batch(child *c, void *conn, const char *what, const uint32_t *order,
                       uint64_t start, uint64_t end, uint32_t gen, uint64_t *retries)
{
    const bench_opts *o = c->o;
    char key[64];
    uint8_t val[o->value_size ? o->value_size : 1];
    int rc;

    for (;;) {
        if (c->drv->begin(conn, 0) != BENCH_OK)
            return child_fail(c, what, "begin");
        for (uint64_t i = start; i < end; i++) {
            uint64_t idx = order != NULL ? order[i] : i;
            bench_key(key, o->key_size, idx);
            bench_value(val, o->value_size, o->seed, idx, gen);
            if (c->drv->put(conn, key, o->key_size, val, o->value_size) != BENCH_OK) {
                c->drv->abort(conn);
                return child_fail(c, what, "put of key %" PRIu64, idx);
            }
        }
        rc = c->drv->commit(conn);
        if (rc == BENCH_OK)
            return 0;
        if (rc != BENCH_RETRY)
            return child_fail(c, what, "commit");
        ++*retries;
    }
}

/* Load keys 0..n-1 in @p order (NULL = ascending) in --batch transactions. */
static int load(child *c, const char *what, const uint32_t *order, uint64_t n, uint32_t gen,
                uint64_t *retries)
{
    for (uint64_t s = 0; s < n; s += c->o->batch) {
        uint64_t e = s + c->o->batch < n ? s + c->o->batch : n;
        if (write_batch(c, c->conn, what, order, s, e, gen, retries) != 0)
            return -1;
    }
    return 0;
}

/* Read every key 0..n-1 in one read txn; each must hold a value in [lo, hi]. */
static int verify_all(child *c, void *conn, const char *what, uint64_t n, uint32_t lo,
                      uint32_t hi)
{
    const bench_opts *o = c->o;
    char key[64];
    uint8_t scratch[o->value_size ? o->value_size : 1];
    const void *v;
    size_t vlen;
    int rc;

    if (c->drv->begin(conn, 1) != BENCH_OK)
        return child_fail(c, what, "begin (verify)");
    for (uint64_t i = 0; i < n; i++) {
        bench_key(key, o->key_size, i);
        rc = c->drv->get(conn, key, o->key_size, &v, &vlen);
        if (rc != BENCH_OK || !value_ok(o, scratch, i, v, vlen, lo, hi)) {
            c->drv->abort(conn);
            return child_fail(c, what, "verify: key %.*s %s", (int)o->key_size, key,
                              rc == BENCH_NOTFOUND ? "missing" : rc == BENCH_OK ? "has a wrong value"
                                                                                 : "read failed");
        }
    }
    return c->drv->commit(conn) == BENCH_OK ? 0 : child_fail(c, what, "commit (verify)");
}

static int count_cb(void *ctx, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)k, (void)kl, (void)v, (void)vl;
    ++*(uint64_t *)ctx;
    return 0;
}

static int verify_empty(child *c, const char *what)
{
    uint64_t n = 0;
    if (c->drv->begin(c->conn, 1) != BENCH_OK || c->drv->scan(c->conn, count_cb, &n) != BENCH_OK ||
        c->drv->commit(c->conn) != BENCH_OK)
        return child_fail(c, what, "scan (verify empty)");
    if (n != 0)
        return child_fail(c, what, "%" PRIu64 " items left after deleting every key", n);
    return 0;
}

/* ---- the chain: db_bench workloads on one database --------------------- */

static int w_fill(child *c, int w)
{
    const char *name = bench_workload_names[w];
    uint32_t *perm = NULL;
    uint64_t retries = 0;
    timing t;
    bench_result *r;

    if (db_fresh(c, 0, 0) != 0)
        return -1;
    if (w == W_FILLRANDOM && (perm = make_perm(c->o->num, c->o->seed ^ 1)) == NULL)
        return child_fail(c, name, "out of memory");
    timing_start(&t);
    if (load(c, name, perm, c->o->num, 0, &retries) != 0) {
        free(perm);
        return -1;
    }
    r = timing_stop(c, &t, name, c->o->num, c->o->num);
    r->commits = (c->o->num + c->o->batch - 1) / c->o->batch;
    r->retries = retries;
    free(perm);
    c->full = 1;
    c->nkeys = c->o->num;
    c->gen_lo = c->gen_hi = 0;
    return 0;
}

/* Make sure keys 0..num-1 are all there (unmeasured load if not). */
static int need_full(child *c, const char *name)
{
    uint32_t *perm;
    uint64_t retries = 0;
    int rc;

    if (c->full)
        return 0;
    fprintf(stderr, "  [run %d] %-7s %-20s (loading %" PRIu64 " keys first, not measured)\n",
            c->run, c->drv->name, name, c->o->num);
    if (db_fresh(c, 0, 0) != 0)
        return -1;
    if ((perm = make_perm(c->o->num, c->o->seed ^ 1)) == NULL)
        return child_fail(c, name, "out of memory");
    rc = load(c, name, perm, c->o->num, 0, &retries);
    free(perm);
    if (rc != 0)
        return -1;
    c->full = 1;
    c->nkeys = c->o->num;
    return 0;
}

static int w_overwrite(child *c)
{
    const char *name = "overwrite";
    uint32_t *perm;
    uint64_t retries = 0;
    timing t;
    bench_result *r;
    int rc;

    if (need_full(c, name) != 0)
        return -1;
    if ((perm = make_perm(c->nkeys, c->o->seed ^ 2)) == NULL)
        return child_fail(c, name, "out of memory");
    timing_start(&t);
    rc = load(c, name, perm, c->nkeys, c->gen_hi + 1, &retries);
    free(perm);
    if (rc != 0)
        return -1;
    r = timing_stop(c, &t, name, c->nkeys, c->nkeys);
    r->commits = (c->nkeys + c->o->batch - 1) / c->o->batch;
    r->retries = retries;
    c->gen_lo = c->gen_hi = c->gen_hi + 1;
    return 0;
}

static int w_readrandom(child *c)
{
    const char *name = "readrandom";
    const bench_opts *o = c->o;
    uint64_t reads = o->reads ? o->reads : o->num, s = o->seed ^ 4;
    uint8_t scratch[o->value_size ? o->value_size : 1];
    char key[64];
    const void *v;
    size_t vlen;
    timing t;
    int rc;

    if (need_full(c, name) != 0)
        return -1;
    timing_start(&t);
    if (c->drv->begin(c->conn, 1) != BENCH_OK)
        return child_fail(c, name, "begin");
    for (uint64_t i = 0; i < reads; i++) {
        uint64_t idx = bench_splitmix64(&s) % c->nkeys;
        bench_key(key, o->key_size, idx);
        rc = c->drv->get(c->conn, key, o->key_size, &v, &vlen);
        if (rc != BENCH_OK || !value_ok(o, scratch, idx, v, vlen, c->gen_lo, c->gen_hi)) {
            c->drv->abort(c->conn);
            return child_fail(c, name, "key %.*s %s", (int)o->key_size, key,
                              rc == BENCH_NOTFOUND ? "missing"
                              : rc == BENCH_OK     ? "has a wrong value"
                                                   : "read failed");
        }
    }
    if (c->drv->commit(c->conn) != BENCH_OK)
        return child_fail(c, name, "end read txn");
    timing_stop(c, &t, name, c->nkeys, reads);
    return 0;
}

typedef struct scan_state {
    const bench_opts *o;
    uint64_t next;
    uint32_t lo, hi;
    uint8_t *scratch;
    char *key;
    int bad;
} scan_state;

static int readseq_cb(void *ctx, const void *k, size_t kl, const void *v, size_t vl)
{
    scan_state *st = ctx;
    bench_key(st->key, st->o->key_size, st->next);
    if (kl != st->o->key_size || memcmp(k, st->key, kl) != 0) {
        st->bad = 1; /* missing, extra or out-of-order key */
        return 1;
    }
    if (!value_ok(st->o, st->scratch, st->next, v, vl, st->lo, st->hi)) {
        st->bad = 2;
        return 1;
    }
    st->next++;
    return 0;
}

static int w_readseq(child *c)
{
    const char *name = "readseq";
    const bench_opts *o = c->o;
    uint8_t scratch[o->value_size ? o->value_size : 1];
    char key[64];
    scan_state st = {o, 0, 0, 0, scratch, key, 0};
    timing t;
    int rc;

    if (need_full(c, name) != 0)
        return -1;
    st.lo = c->gen_lo;
    st.hi = c->gen_hi;
    timing_start(&t);
    if (c->drv->begin(c->conn, 1) != BENCH_OK)
        return child_fail(c, name, "begin");
    rc = c->drv->scan(c->conn, readseq_cb, &st);
    if (rc == BENCH_ERR) {
        c->drv->abort(c->conn);
        return child_fail(c, name, "scan");
    }
    if (c->drv->commit(c->conn) != BENCH_OK)
        return child_fail(c, name, "end read txn");
    if (st.bad != 0 || st.next != c->nkeys)
        return child_fail(c, name, "at item %" PRIu64 " (expected key %.*s): %s", st.next,
                          (int)o->key_size, key,
                          st.bad == 2   ? "wrong value"
                          : st.bad == 1 ? "wrong key (missing, extra or out of order)"
                                        : "scan ended early");
    timing_stop(c, &t, name, c->nkeys, c->nkeys);
    return 0;
}

/* ---- readwhilewriting ---------------------------------------------------- */

typedef struct rww {
    child *c;
    uint64_t reads;
    uint32_t lo, hi;       /* generations a reader may see */
    uint32_t write_gen;
    atomic_int stop;       /* set by the reader when done; the writer polls it */
    atomic_int failed;
    pthread_barrier_t *start;
    double reader_secs;
    double writer_secs;
    uint64_t writes, retries;
} rww;

static void *rww_reader(void *arg)
{
    rww *x = arg;
    child *c = x->c;
    const bench_opts *o = c->o;
    uint64_t s = o->seed ^ 5, per = o->reads_per_txn;
    uint8_t scratch[o->value_size ? o->value_size : 1];
    char key[64];
    const void *v;
    size_t vlen;
    void *conn = NULL;
    double t0;
    int rc = BENCH_OK;

    if (c->drv->conn_open(&conn, c->db) != BENCH_OK)
        atomic_store(&x->failed, 1);
    if (x->start != NULL)
        pthread_barrier_wait(x->start);
    t0 = now_sec();
    for (uint64_t i = 0; i < x->reads && !atomic_load(&x->failed); i++) {
        uint64_t idx = bench_splitmix64(&s) % c->nkeys;
        if (i % per == 0 && c->drv->begin(conn, 1) != BENCH_OK) {
            atomic_store(&x->failed, 1);
            break;
        }
        bench_key(key, o->key_size, idx);
        rc = c->drv->get(conn, key, o->key_size, &v, &vlen);
        if (rc != BENCH_OK || !value_ok(o, scratch, idx, v, vlen, x->lo, x->hi)) {
            child_fail(c, "readwhilewriting", "reader: key %.*s %s", (int)o->key_size, key,
                       rc == BENCH_NOTFOUND ? "missing"
                       : rc == BENCH_OK     ? "has a wrong value"
                                            : "read failed");
            c->drv->abort(conn);
            atomic_store(&x->failed, 1);
            break;
        }
        if ((i % per == per - 1 || i + 1 == x->reads) && c->drv->commit(conn) != BENCH_OK) {
            atomic_store(&x->failed, 1);
            break;
        }
    }
    x->reader_secs = now_sec() - t0;
    atomic_store(&x->stop, 1);
    if (conn != NULL)
        c->drv->conn_close(conn);
    return NULL;
}

static void *rww_writer(void *arg)
{
    rww *x = arg;
    child *c = x->c;
    const bench_opts *o = c->o;
    uint64_t s = o->seed ^ 6, n = o->batch;
    uint32_t *order = malloc((n ? n : 1) * sizeof *order);
    void *conn = NULL;
    double t0;

    if (order == NULL || c->drv->conn_open(&conn, c->db) != BENCH_OK)
        atomic_store(&x->failed, 1);
    pthread_barrier_wait(x->start);
    t0 = now_sec();
    while (!atomic_load(&x->stop) && !atomic_load(&x->failed)) {
        for (uint64_t i = 0; i < n; i++)
            order[i] = (uint32_t)(bench_splitmix64(&s) % c->nkeys);
        if (write_batch(c, conn, "readwhilewriting", order, 0, n, x->write_gen, &x->retries) !=
            0) {
            atomic_store(&x->failed, 1);
            break;
        }
        x->writes += n;
    }
    x->writer_secs = now_sec() - t0;
    if (conn != NULL)
        c->drv->conn_close(conn);
    free(order);
    return NULL;
}

static int w_readwhilewriting(child *c)
{
    const char *name = "readwhilewriting";
    const bench_opts *o = c->o;
    pthread_barrier_t start;
    pthread_t rt, wt;
    rww alone, both;
    timing t;
    bench_result *r;

    if (need_full(c, name) != 0)
        return -1;
    memset(&alone, 0, sizeof alone);
    alone.c = c;
    alone.reads = o->reads ? o->reads : o->num;
    alone.lo = c->gen_lo;
    alone.hi = c->gen_hi;
    both = alone;
    both.hi = both.write_gen = c->gen_hi + 1;

    timing_start(&t);
    /* 1. The reader alone: the baseline. */
    if (pthread_create(&rt, NULL, rww_reader, &alone) != 0)
        return child_fail(c, name, "pthread_create");
    pthread_join(rt, NULL);
    if (atomic_load(&alone.failed))
        return child_fail(c, name, "reader (alone) failed");
    /* 2. The same reader with one writer overwriting random keys meanwhile. */
    pthread_barrier_init(&start, NULL, 2);
    both.start = &start;
    if (pthread_create(&wt, NULL, rww_writer, &both) != 0)
        return child_fail(c, name, "pthread_create");
    rww_reader(&both); /* this thread is the reader */
    pthread_join(wt, NULL);
    pthread_barrier_destroy(&start);
    if (atomic_load(&both.failed))
        return child_fail(c, name, "reader or writer failed");
    c->gen_hi = both.write_gen; /* keys now hold gen_lo..gen_hi */

    r = timing_stop_q(c, &t, name, c->nkeys, both.reads, 1);
    r->secs = both.reader_secs; /* reader ops/s with the writer running */
    r->cpu_secs = -1;           /* two phases and a writer: no per-read figure */
    r->aux1 = alone.reader_secs > 0 ? (double)alone.reads / alone.reader_secs : 0;
    r->aux2 = both.writer_secs > 0 ? (double)both.writes / both.writer_secs : 0;
    r->commits = both.writes / (o->batch ? o->batch : 1);
    r->retries = both.retries;
    progress(c, r);
    fprintf(stderr, "  [run %d] %-7s %-20s (reader alone %.0f/s: %.0f%%; writer %.0f puts/s)\n",
            c->run, c->drv->name, name, r->aux1,
            100.0 * ((double)r->ops / r->secs) / (r->aux1 > 0 ? r->aux1 : 1), r->aux2);
    return 0;
}

static int w_deleterandom(child *c)
{
    const char *name = "deleterandom";
    const bench_opts *o = c->o;
    char key[64];
    uint32_t *perm;
    uint64_t n, retries = 0;
    timing t;
    bench_result *r;
    int rc;

    if (need_full(c, name) != 0)
        return -1;
    n = c->nkeys;
    if ((perm = make_perm(n, o->seed ^ 3)) == NULL)
        return child_fail(c, name, "out of memory");
    timing_start(&t);
    for (uint64_t s = 0; s < n; s += o->batch) {
        uint64_t e = s + o->batch < n ? s + o->batch : n;
        for (;;) {
            if (c->drv->begin(c->conn, 0) != BENCH_OK) {
                free(perm);
                return child_fail(c, name, "begin");
            }
            for (uint64_t i = s; i < e; i++) {
                bench_key(key, o->key_size, perm[i]);
                rc = c->drv->del(c->conn, key, o->key_size);
                if (rc != BENCH_OK) {
                    c->drv->abort(c->conn);
                    free(perm);
                    return child_fail(c, name, "key %.*s %s", (int)o->key_size, key,
                                      rc == BENCH_NOTFOUND ? "missing" : "delete failed");
                }
            }
            rc = c->drv->commit(c->conn);
            if (rc == BENCH_OK)
                break;
            if (rc != BENCH_RETRY) {
                free(perm);
                return child_fail(c, name, "commit");
            }
            retries++;
        }
    }
    free(perm);
    r = timing_stop(c, &t, name, n, n);
    r->commits = (n + o->batch - 1) / o->batch;
    r->retries = retries;
    c->full = 0;
    c->nkeys = 0;
    return verify_empty(c, name);
}

static int job_chain(child *c)
{
    const int *w = c->o->workloads;

    if (w[W_FILLSEQ] && w_fill(c, W_FILLSEQ) != 0)
        return -1;
    if (w[W_FILLRANDOM] && w_fill(c, W_FILLRANDOM) != 0)
        return -1;
    if (w[W_OVERWRITE] && w_overwrite(c) != 0)
        return -1;
    if (w[W_READRANDOM] && w_readrandom(c) != 0)
        return -1;
    if (w[W_READSEQ] && w_readseq(c) != 0)
        return -1;
    if (w[W_READWHILEWRITING] && w_readwhilewriting(c) != 0)
        return -1;
    if (w[W_DELETERANDOM] && w_deleterandom(c) != 0)
        return -1;
    return 0;
}

/* ---- durable commits ---------------------------------------------------- */

static int syncs_now(child *c, int64_t *out)
{
    uint64_t v;
    *out = -1;
    if (c->drv->syncs == NULL)
        return 0;
    if (c->drv->syncs(c->db, &v) != BENCH_OK)
        return child_fail(c, "syncs", "sync counter");
    *out = (int64_t)v;
    return 0;
}

static int job_fillrandsync(child *c)
{
    const char *name = "fillrandsync";
    uint64_t n = c->o->sync_num, retries = 0;
    uint32_t *perm;
    int64_t s0, s1;
    timing t;
    bench_result *r;

    if (db_fresh(c, 1, 0) != 0 || syncs_now(c, &s0) != 0)
        return -1;
    if ((perm = make_perm(n, c->o->seed ^ 7)) == NULL)
        return child_fail(c, name, "out of memory");
    timing_start(&t);
    for (uint64_t i = 0; i < n; i++)
        if (write_batch(c, c->conn, name, perm, i, i + 1, 0, &retries) != 0) {
            free(perm);
            return -1;
        }
    free(perm);
    r = timing_stop(c, &t, name, n, n);
    r->commits = n;
    r->retries = retries;
    if (syncs_now(c, &s1) != 0)
        return -1;
    r->syncs = s0 >= 0 ? s1 - s0 : -1;
    return verify_all(c, c->conn, name, n, 0, 0);
}

typedef struct committer {
    child *c;
    int id, nthreads;
    pthread_barrier_t *start;
    uint64_t retries;
    int failed;
} committer;

static void *committer_main(void *arg)
{
    committer *x = arg;
    child *c = x->c;
    void *conn = NULL;
    uint32_t idx[1];

    if (c->drv->conn_open(&conn, c->db) != BENCH_OK)
        x->failed = 1;
    pthread_barrier_wait(x->start);
    for (uint64_t i = (uint64_t)x->id; i < c->o->sync_num && !x->failed;
         i += (uint64_t)x->nthreads) {
        idx[0] = (uint32_t)i;
        if (write_batch(c, conn, "fillsync-concurrent", idx, 0, 1, 0, &x->retries) != 0)
            x->failed = 1;
    }
    if (conn != NULL)
        c->drv->conn_close(conn);
    return NULL;
}

static int job_fillsync_concurrent(child *c)
{
    const char *name = "fillsync-concurrent";
    int nt = c->o->sync_threads, failed = 0;
    uint64_t retries = 0;
    pthread_barrier_t start;
    pthread_t th[64];
    committer x[64];
    int64_t s0, s1;
    timing t;
    bench_result *r;

    if (db_fresh(c, 1, 0) != 0 || syncs_now(c, &s0) != 0)
        return -1;
    pthread_barrier_init(&start, NULL, (unsigned)nt + 1);
    for (int i = 0; i < nt; i++) {
        x[i] = (committer){c, i, nt, &start, 0, 0};
        if (pthread_create(&th[i], NULL, committer_main, &x[i]) != 0)
            return child_fail(c, name, "pthread_create");
    }
    pthread_barrier_wait(&start);
    timing_start(&t);
    for (int i = 0; i < nt; i++) {
        pthread_join(th[i], NULL);
        failed |= x[i].failed;
        retries += x[i].retries;
    }
    pthread_barrier_destroy(&start);
    if (failed)
        return child_fail(c, name, "a committer failed");
    r = timing_stop(c, &t, name, c->o->sync_num, c->o->sync_num);
    r->commits = c->o->sync_num;
    r->retries = retries;
    if (syncs_now(c, &s1) != 0)
        return -1;
    r->syncs = s0 >= 0 ? s1 - s0 : -1;
    return verify_all(c, c->conn, name, c->o->sync_num, 0, 0);
}

/* ---- SOP's own benchmark shape ------------------------------------------ */

static int job_sopshape(child *c, uint64_t n, uint32_t slot)
{
    char key[48], val[48], what[32];
    const void *v;
    size_t vlen;
    int kl, vl, rc;
    timing t;
    bench_result *r;

    if (db_fresh(c, 0, slot) != 0)
        return -1;
    /* 1. One transaction adds key_<i> -> value_<i>. */
    snprintf(what, sizeof what, "sopshape-add");
    timing_start(&t);
    if (c->drv->begin(c->conn, 0) != BENCH_OK)
        return child_fail(c, what, "begin");
    for (uint64_t i = 0; i < n; i++) {
        kl = snprintf(key, sizeof key, "key_%" PRIu64, i);
        vl = snprintf(val, sizeof val, "value_%" PRIu64, i);
        rc = c->drv->add(c->conn, key, (size_t)kl, val, (size_t)vl);
        if (rc != BENCH_OK) {
            c->drv->abort(c->conn);
            return child_fail(c, what, "%s: %s", key, rc == BENCH_EXISTS ? "exists" : "failed");
        }
    }
    if (c->drv->commit(c->conn) != BENCH_OK)
        return child_fail(c, what, "commit");
    r = timing_stop(c, &t, what, n, n);
    r->slot = slot;
    r->commits = 1;
    /* 2. Find and read every key. */
    snprintf(what, sizeof what, "sopshape-find");
    timing_start(&t);
    if (c->drv->begin(c->conn, 1) != BENCH_OK)
        return child_fail(c, what, "begin");
    for (uint64_t i = 0; i < n; i++) {
        kl = snprintf(key, sizeof key, "key_%" PRIu64, i);
        vl = snprintf(val, sizeof val, "value_%" PRIu64, i);
        rc = c->drv->get(c->conn, key, (size_t)kl, &v, &vlen);
        if (rc != BENCH_OK || vlen != (size_t)vl || memcmp(v, val, vlen) != 0) {
            c->drv->abort(c->conn);
            return child_fail(c, what, "%s: %s", key,
                              rc == BENCH_NOTFOUND ? "missing"
                              : rc == BENCH_OK     ? "wrong value"
                                                   : "read failed");
        }
    }
    if (c->drv->commit(c->conn) != BENCH_OK)
        return child_fail(c, what, "end read txn");
    r = timing_stop(c, &t, what, n, n);
    r->slot = slot;
    /* 3. One transaction removes every key. */
    snprintf(what, sizeof what, "sopshape-remove");
    timing_start(&t);
    if (c->drv->begin(c->conn, 0) != BENCH_OK)
        return child_fail(c, what, "begin");
    for (uint64_t i = 0; i < n; i++) {
        kl = snprintf(key, sizeof key, "key_%" PRIu64, i);
        rc = c->drv->del(c->conn, key, (size_t)kl);
        if (rc != BENCH_OK) {
            c->drv->abort(c->conn);
            return child_fail(c, what, "%s: %s", key,
                              rc == BENCH_NOTFOUND ? "missing" : "remove failed");
        }
    }
    if (c->drv->commit(c->conn) != BENCH_OK)
        return child_fail(c, what, "commit");
    r = timing_stop(c, &t, what, n, n);
    r->slot = slot;
    r->commits = 1;
    return verify_empty(c, what);
}

static int child_main(const bench_opts *o, const bench_driver *drv, int job, uint64_t n,
                      uint32_t slot, int run, const char *out_path)
{
    child *c = calloc(1, sizeof *c);
    FILE *f;
    int rc = -1;

    if (c == NULL)
        return 2;
    if (o->timeout)
        alarm(o->timeout);
    c->o = o;
    c->drv = drv;
    c->run = run;
    snprintf(c->dir, sizeof c->dir, "%s/%s", o->dir, drv->name);
    c->cfg.dir = c->dir;
    c->cfg.cache_bytes = o->cache_bytes;
    c->cfg.map_bytes = o->map_bytes;
    c->cfg.sqlite_mmap = o->sqlite_mmap;
    c->cfg.max_threads = o->sync_threads > 2 ? o->sync_threads + 1 : 3;
    c->rss_base_kb = rss_now_kb();
    switch (job) {
    case JOB_CHAIN: rc = job_chain(c); break;
    case JOB_FILLRANDSYNC: rc = job_fillrandsync(c); break;
    case JOB_FILLSYNC_CONCURRENT: rc = job_fillsync_concurrent(c); break;
    case JOB_SOPSHAPE: rc = job_sopshape(c, n, slot); break;
    default: break;
    }
    db_close(c);
    if (!o->keep)
        rm_rf(c->dir);
    if (rc == 0) {
        f = fopen(out_path, "wb");
        if (f == NULL || fwrite(c->res, sizeof c->res[0], c->nres, f) != c->nres ||
            fclose(f) != 0) {
            fprintf(stderr, "bench: cannot write %s: %s\n", out_path, strerror(errno));
            rc = -1;
        }
    }
    free(c);
    return rc == 0 ? 0 : 2;
}

/* ======================================================================== */
/* Parent: plan, fork, collect                                               */
/* ======================================================================== */

int bench_results_add(bench_results *all, const bench_result *r)
{
    if (all->n == all->cap) {
        size_t cap = all->cap ? all->cap * 2 : 256;
        bench_result *v = realloc(all->v, cap * sizeof *v);
        if (v == NULL)
            return -1;
        all->v = v;
        all->cap = cap;
    }
    all->v[all->n++] = *r;
    return 0;
}

static void note_failure(bench_results *all, const char *fmt, ...)
{
    va_list ap;
    if (all->failures < 16) {
        va_start(ap, fmt);
        vsnprintf(all->failed[all->failures], sizeof all->failed[0], fmt, ap);
        va_end(ap);
    }
    all->failures++;
}

static int engine_index(const bench_opts *o, const bench_driver *d)
{
    for (int i = 0; i < o->n_engines; i++)
        if (o->engines[i] == d)
            return i;
    return 0;
}

/* Sum the fsync-family calls in an `strace -c` summary:
 *   % time     seconds  usecs/call     calls    errors syscall
 *   100.00    0.003667          36       100           fdatasync
 * -1 if the file cannot be read; 0 when no line counts a call. */
static int64_t strace_syncs(const char *path)
{
    char line[256], *tok[8], *save = NULL;
    int64_t total = 0;
    FILE *f = fopen(path, "r");

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL) {
        int nt = 0;
        for (char *t = strtok_r(line, " \t\n", &save); t != NULL && nt < 8;
             t = strtok_r(NULL, " \t\n", &save))
            tok[nt++] = t;
        if ((nt == 5 || nt == 6) && strchr("0123456789", tok[0][0]) != NULL &&
            strcmp(tok[nt - 1], "total") != 0)
            total += strtoll(tok[3], NULL, 10);
    }
    fclose(f);
    return total;
}

/* Write back every dirty page of --dir's file system before a job starts, so
 * no job pays for the previous one's writes (never timed). */
static void flush_disk(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        syncfs(fd);
        close(fd);
    }
}

static int have_strace(void)
{
    return system("strace -V >/dev/null 2>&1") == 0;
}

/* Run one job for one engine in a child process; add its results. */
static void run_job(const bench_opts *o, const bench_driver *d, int job, uint64_t n,
                    uint32_t slot, int run, int under_strace, bench_results *all)
{
    char out[PATH_MAX + 64], st[PATH_MAX + 64], arg[5][PATH_MAX + 96], self[PATH_MAX];
    struct rusage ru;
    int status = 0, ei = engine_index(o, d);
    pid_t pid;
    FILE *f;
    bench_result r;

    snprintf(out, sizeof out, "%s/.result-%s.tmp", o->dir, d->name);
    snprintf(st, sizeof st, "%s/.strace-%s.tmp", o->dir, d->name);
    unlink(out);
    flush_disk(o->dir);
    /* strace execs this very program through the parent's /proc/PID/exe,
     * which works even if a rebuild has replaced or deleted the file. */
    snprintf(self, sizeof self, "/proc/%ld/exe", (long)getpid());
    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        note_failure(all, "%s %s: fork: %s", d->name, job_names[job], strerror(errno));
        return;
    }
    if (pid == 0) {
        if (!under_strace)
            _exit(child_main(o, d, job, n, slot, run, out));
        /* strace -c the same program in child mode: argv + --child-* options. */
        char **av = calloc((size_t)o->argc + 16, sizeof *av);
        int k = 0;
        av[k++] = "strace";
        av[k++] = "-f";
        av[k++] = "-c";
        av[k++] = "--seccomp-bpf";
        av[k++] = "-o";
        av[k++] = st;
        av[k++] = "-e";
        av[k++] = "trace=fsync,fdatasync,msync,sync_file_range,syncfs,sync";
        av[k++] = self;
        for (int i = 1; i < o->argc; i++)
            av[k++] = o->argv[i];
        snprintf(arg[0], sizeof arg[0], "--child-job=%d", job);
        snprintf(arg[1], sizeof arg[1], "--child-engine=%s", d->name);
        snprintf(arg[2], sizeof arg[2], "--child-n=%" PRIu64, n);
        snprintf(arg[3], sizeof arg[3], "--child-slot=%u", slot);
        snprintf(arg[4], sizeof arg[4], "--child-out=%s", out);
        for (int i = 0; i < 5; i++)
            av[k++] = arg[i];
        av[k] = NULL;
        execvp("strace", av);
        _exit(127);
    }
    while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR)
        ;
    if ((uint64_t)ru.ru_maxrss > all->engine_maxrss_kb[ei] && !under_strace)
        all->engine_maxrss_kb[ei] = (uint64_t)ru.ru_maxrss;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (under_strace) {
            fprintf(stderr, "bench: %s %s under strace failed (status %d); syncs n/a\n",
                    d->name, job_names[job], status);
            return;
        }
        if (WIFSIGNALED(status))
            note_failure(all, "%s %s run %d: killed by signal %d%s", d->name, job_names[job], run,
                         WTERMSIG(status),
                         WTERMSIG(status) == SIGALRM ? " (--timeout)" : "");
        else
            note_failure(all, "%s %s run %d: exit status %d", d->name, job_names[job], run,
                         WEXITSTATUS(status));
        return;
    }
    if ((f = fopen(out, "rb")) == NULL) {
        note_failure(all, "%s %s run %d: no results", d->name, job_names[job], run);
        return;
    }
    while (fread(&r, sizeof r, 1, f) == 1) {
        r.run = under_strace ? 0 : run;
        if (under_strace)
            r.syncs_strace = strace_syncs(st);
        bench_results_add(all, &r);
    }
    fclose(f);
    unlink(out);
    unlink(st);
}

static void run_all(const bench_opts *o, bench_results *all)
{
    const int *w = o->workloads;
    int chain = w[W_FILLSEQ] || w[W_FILLRANDOM] || w[W_OVERWRITE] || w[W_READRANDOM] ||
                w[W_READSEQ] || w[W_READWHILEWRITING] || w[W_DELETERANDOM];
    int strace = 0;

    if (o->strace && (w[W_FILLRANDSYNC] || w[W_FILLSYNC_CONCURRENT])) {
        strace = have_strace();
        if (!strace)
            fprintf(stderr, "bench: strace not found: peer fsync counts will be n/a\n");
    }
    /* Each job runs for every engine back to back, so the engines meet the
     * same machine state; the engine that goes first rotates with the run. */
    for (int run = 1; run <= o->runs; run++) {
        for (int job = JOB_CHAIN; job <= JOB_SOPSHAPE; job++) {
            for (int k = 0; k < o->n_engines; k++) {
                const bench_driver *d = o->engines[(k + run - 1) % o->n_engines];
                int is_sop = strcmp(d->name, "sop") == 0;
                if (job == JOB_CHAIN && chain)
                    run_job(o, d, JOB_CHAIN, o->num, 0, run, 0, all);
                if (job == JOB_FILLRANDSYNC && w[W_FILLRANDSYNC])
                    run_job(o, d, JOB_FILLRANDSYNC, o->sync_num, 0, run, 0, all);
                if (job == JOB_FILLSYNC_CONCURRENT && w[W_FILLSYNC_CONCURRENT])
                    run_job(o, d, JOB_FILLSYNC_CONCURRENT, o->sync_num, 0, run, 0, all);
                if (job == JOB_SOPSHAPE && w[W_SOPSHAPE])
                    for (int i = 0; i < o->n_sop_nums; i++)
                        for (int j = 0; j < (is_sop ? o->n_sop_slots : 1); j++)
                            run_job(o, d, JOB_SOPSHAPE, o->sop_nums[i],
                                    is_sop ? o->sop_slots[j] : 0, run, 0, all);
            }
        }
    }
    /* The fsync counts: one more pass of the sync workloads, under strace. */
    for (int e = 0; strace && e < o->n_engines; e++) {
        fprintf(stderr, "bench: counting %s syncs under strace (not timed)\n",
                o->engines[e]->name);
        if (w[W_FILLRANDSYNC])
            run_job(o, o->engines[e], JOB_FILLRANDSYNC, o->sync_num, 0, 0, 1, all);
        if (w[W_FILLSYNC_CONCURRENT])
            run_job(o, o->engines[e], JOB_FILLSYNC_CONCURRENT, o->sync_num, 0, 0, 1, all);
    }
}

/* ======================================================================== */
/* Options                                                                   */
/* ======================================================================== */

static void usage(FILE *f)
{
    fprintf(f,
"usage: bench [options]\n"
"  --engines=LIST        comma list of engines (default: every one built in)\n"
"  --workloads=LIST      comma list (default: all) of fillseq fillrandom overwrite\n"
"                        readrandom readseq readwhilewriting deleterandom fillrandsync\n"
"                        fillsync-concurrent sopshape keys\n"
"  --num=N               keys in the db_bench workloads (1000000)\n"
"  --reads=N             gets in readrandom/readwhilewriting (0 = --num)\n"
"  --key-size=N          key bytes, zero-padded decimal (16)\n"
"  --value-size=N        value bytes, incompressible (100)\n"
"  --batch=N             puts per write transaction (1000)\n"
"  --reads-per-txn=N     readwhilewriting: gets per read transaction (1000)\n"
"  --seed=N              seed of key order and values (301)\n"
"  --sync-num=N          commits in fillrandsync / fillsync-concurrent (10000)\n"
"  --sync-threads=N      committers in fillsync-concurrent (8)\n"
"  --sop-nums=LIST       sopshape item counts (10000,100000)\n"
"  --sop-slots=LIST      sopshape slot lengths, libsop only (1000,2000,3000,4000,5000)\n"
"  --runs=N              runs; the report shows medians (3)\n"
"  --dir=DIR             where the engines' folders go (./bench-data.tmp)\n"
"  --json=FILE           write the results as JSON\n"
"  --chart=FILE          draw a PNG chart with gnuplot\n"
"  --cache-bytes=N       libsop cache_bytes and SQLite cache_size (256M)\n"
"  --map-bytes=N         LMDB map size (0 = 8 x the data, at least 1G)\n"
"  --sqlite-mmap=N       SQLite mmap_size (0 = off, SQLite's default)\n"
"  --strace=auto|no      count peer fsyncs in an extra strace pass (auto)\n"
"  --timeout=SEC         kill a child process after SEC seconds (0 = never)\n"
"  --keep                keep the data folders\n"
"Sizes take K, M, G suffixes. Engines built in:");
    for (int i = 0; all_drivers[i] != NULL; i++)
        fprintf(f, " %s", all_drivers[i]->name);
    fprintf(f, "%s\n", all_drivers[0] == NULL ? " none" : "");
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    errno = 0;
    v = strtoull(s, &end, 0);
    if (errno != 0 || end == s || *s == '-')
        return -1;
    if (*end == 'K' || *end == 'k')
        v <<= 10, end++;
    else if (*end == 'M' || *end == 'm')
        v <<= 20, end++;
    else if (*end == 'G' || *end == 'g')
        v <<= 30, end++;
    if (*end != '\0')
        return -1;
    *out = v;
    return 0;
}

static int parse_list_u64(const char *s, uint64_t *out, int cap, int *count)
{
    char buf[512], *save = NULL;
    int n = 0;
    snprintf(buf, sizeof buf, "%s", s);
    for (char *t = strtok_r(buf, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
        if (n == cap || parse_u64(t, &out[n]) != 0 || out[n] == 0)
            return -1;
        n++;
    }
    *count = n;
    return n > 0 ? 0 : -1;
}

static int select_engines(bench_opts *o, const char *list)
{
    char buf[256], *save = NULL;
    o->n_engines = 0;
    snprintf(buf, sizeof buf, "%s", list);
    for (char *t = strtok_r(buf, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
        const bench_driver *d = NULL;
        for (int i = 0; all_drivers[i] != NULL; i++)
            if (strcmp(all_drivers[i]->name, t) == 0)
                d = all_drivers[i];
        if (d == NULL) {
            fprintf(stderr, "bench: engine '%s' is not built in (rebuild with "
                            "BENCH_ENGINES=...,%s)\n", t, t);
            return -1;
        }
        if (o->n_engines == BENCH_MAX_ENGINES)
            return -1;
        o->engines[o->n_engines++] = d;
    }
    return o->n_engines > 0 ? 0 : -1;
}

static int select_workloads(bench_opts *o, const char *list)
{
    char buf[512], *save = NULL;
    memset(o->workloads, 0, sizeof o->workloads);
    snprintf(buf, sizeof buf, "%s", list);
    for (char *t = strtok_r(buf, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
        int found = 0;
        for (int i = 0; i < W_COUNT; i++)
            if (strcmp(t, bench_workload_names[i]) == 0 || strcmp(t, "all") == 0)
                o->workloads[i] = found = 1;
        if (!found) {
            fprintf(stderr, "bench: unknown workload '%s'\n", t);
            return -1;
        }
    }
    return 0;
}

enum {
    OPT_ENGINES = 256, OPT_WORKLOADS, OPT_NUM, OPT_READS, OPT_KEY_SIZE, OPT_VALUE_SIZE, OPT_BATCH,
    OPT_READS_PER_TXN, OPT_SEED, OPT_SYNC_NUM, OPT_SYNC_THREADS, OPT_SOP_NUMS, OPT_SOP_SLOTS,
    OPT_RUNS, OPT_DIR, OPT_JSON, OPT_CHART, OPT_CACHE, OPT_MAP, OPT_SQLITE_MMAP, OPT_STRACE,
    OPT_TIMEOUT, OPT_KEEP, OPT_HELP, OPT_CHILD_JOB, OPT_CHILD_ENGINE, OPT_CHILD_N, OPT_CHILD_SLOT,
    OPT_CHILD_OUT
};

typedef struct child_args {
    int job;
    const char *engine, *out;
    uint64_t n;
    uint64_t slot;
} child_args;

static int parse_opts(bench_opts *o, child_args *ca, int argc, char **argv)
{
    static const struct option longs[] = {
        {"engines", 1, 0, OPT_ENGINES},       {"workloads", 1, 0, OPT_WORKLOADS},
        {"num", 1, 0, OPT_NUM},               {"reads", 1, 0, OPT_READS},
        {"key-size", 1, 0, OPT_KEY_SIZE},     {"value-size", 1, 0, OPT_VALUE_SIZE},
        {"batch", 1, 0, OPT_BATCH},           {"reads-per-txn", 1, 0, OPT_READS_PER_TXN},
        {"seed", 1, 0, OPT_SEED},             {"sync-num", 1, 0, OPT_SYNC_NUM},
        {"sync-threads", 1, 0, OPT_SYNC_THREADS}, {"sop-nums", 1, 0, OPT_SOP_NUMS},
        {"sop-slots", 1, 0, OPT_SOP_SLOTS},   {"runs", 1, 0, OPT_RUNS},
        {"dir", 1, 0, OPT_DIR},               {"json", 1, 0, OPT_JSON},
        {"chart", 1, 0, OPT_CHART},           {"cache-bytes", 1, 0, OPT_CACHE},
        {"map-bytes", 1, 0, OPT_MAP},         {"sqlite-mmap", 1, 0, OPT_SQLITE_MMAP},
        {"strace", 1, 0, OPT_STRACE},         {"timeout", 1, 0, OPT_TIMEOUT},
        {"keep", 0, 0, OPT_KEEP},             {"help", 0, 0, OPT_HELP},
        {"child-job", 1, 0, OPT_CHILD_JOB},   {"child-engine", 1, 0, OPT_CHILD_ENGINE},
        {"child-n", 1, 0, OPT_CHILD_N},       {"child-slot", 1, 0, OPT_CHILD_SLOT},
        {"child-out", 1, 0, OPT_CHILD_OUT},   {0, 0, 0, 0},
    };
    const char *engines = NULL, *workloads = "all";
    uint64_t v;
    int opt, bad = 0;

    memset(o, 0, sizeof *o);
    memset(ca, 0, sizeof *ca);
    o->num = 1000000;
    o->key_size = 16;
    o->value_size = 100;
    o->batch = 1000;
    o->reads_per_txn = 1000;
    o->seed = 301;
    o->sync_num = 10000;
    o->sync_threads = 8;
    o->sop_nums[0] = 10000;
    o->sop_nums[1] = 100000;
    o->n_sop_nums = 2;
    for (int i = 0; i < 5; i++)
        o->sop_slots[i] = 1000u * (uint32_t)(i + 1);
    o->n_sop_slots = 5;
    o->runs = 3;
    snprintf(o->dir, sizeof o->dir, "bench-data.tmp");
    o->cache_bytes = 256u << 20;
    o->strace = 1;
    o->argc = argc;
    o->argv = argv;

    while ((opt = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        const char *a = optarg;
        switch (opt) {
        case OPT_ENGINES: engines = a; break;
        case OPT_WORKLOADS: workloads = a; break;
        case OPT_NUM: bad |= parse_u64(a, &o->num) || o->num == 0 || o->num > UINT32_MAX; break;
        case OPT_READS: bad |= parse_u64(a, &o->reads); break;
        case OPT_KEY_SIZE:
            bad |= parse_u64(a, &v) || v < 4 || v > 32;
            o->key_size = (size_t)v;
            break;
        case OPT_VALUE_SIZE:
            bad |= parse_u64(a, &v) || v > (1u << 20);
            o->value_size = (size_t)v;
            break;
        case OPT_BATCH: bad |= parse_u64(a, &o->batch) || o->batch == 0; break;
        case OPT_READS_PER_TXN:
            bad |= parse_u64(a, &o->reads_per_txn) || o->reads_per_txn == 0;
            break;
        case OPT_SEED: bad |= parse_u64(a, &o->seed); break;
        case OPT_SYNC_NUM:
            bad |= parse_u64(a, &o->sync_num) || o->sync_num == 0 || o->sync_num > UINT32_MAX;
            break;
        case OPT_SYNC_THREADS:
            bad |= parse_u64(a, &v) || v == 0 || v > 64;
            o->sync_threads = (int)v;
            break;
        case OPT_SOP_NUMS:
            bad |= parse_list_u64(a, o->sop_nums, BENCH_MAX_LIST, &o->n_sop_nums);
            break;
        case OPT_SOP_SLOTS: {
            uint64_t s[BENCH_MAX_LIST];
            bad |= parse_list_u64(a, s, BENCH_MAX_LIST, &o->n_sop_slots);
            for (int i = 0; i < o->n_sop_slots; i++)
                o->sop_slots[i] = (uint32_t)s[i];
            break;
        }
        case OPT_RUNS:
            bad |= parse_u64(a, &v) || v == 0 || v > 99;
            o->runs = (int)v;
            break;
        case OPT_DIR:
            bad |= strlen(a) == 0 || strlen(a) > sizeof o->dir - 128;
            snprintf(o->dir, sizeof o->dir, "%s", a);
            break;
        case OPT_JSON: o->json = a; break;
        case OPT_CHART: o->chart = a; break;
        case OPT_CACHE: bad |= parse_u64(a, &o->cache_bytes); break;
        case OPT_MAP: bad |= parse_u64(a, &o->map_bytes); break;
        case OPT_SQLITE_MMAP: bad |= parse_u64(a, &o->sqlite_mmap); break;
        case OPT_STRACE:
            o->strace = strcmp(a, "no") != 0;
            bad |= strcmp(a, "no") != 0 && strcmp(a, "auto") != 0;
            break;
        case OPT_TIMEOUT:
            bad |= parse_u64(a, &v) || v > 86400;
            o->timeout = (unsigned)v;
            break;
        case OPT_KEEP: o->keep = 1; break;
        case OPT_CHILD_JOB:
            bad |= parse_u64(a, &v) || v < JOB_CHAIN || v > JOB_SOPSHAPE;
            ca->job = (int)v;
            break;
        case OPT_CHILD_ENGINE: ca->engine = a; break;
        case OPT_CHILD_N: bad |= parse_u64(a, &ca->n); break;
        case OPT_CHILD_SLOT: bad |= parse_u64(a, &ca->slot); break;
        case OPT_CHILD_OUT: ca->out = a; break;
        case OPT_HELP:
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
        if (bad) {
            fprintf(stderr, "bench: bad value '%s' for option %s\n", a ? a : "",
                    argv[optind - 1]);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "bench: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (engines == NULL) {
        char buf[128] = "";
        for (int i = 0; all_drivers[i] != NULL; i++)
            snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%s", i ? "," : "",
                     all_drivers[i]->name);
        if (buf[0] == '\0' && !ca->job)
            fprintf(stderr, "bench: no engine built in; only 'keys' can run\n");
        if (buf[0] != '\0' && select_engines(o, buf) != 0)
            return -1;
    } else if (select_engines(o, engines) != 0) {
        return -1;
    }
    if (select_workloads(o, workloads) != 0)
        return -1;
    {
        uint64_t max = 1;
        for (size_t i = 0; i < o->key_size && max <= UINT32_MAX; i++)
            max *= 10;
        if (o->num > max || o->sync_num > max) {
            fprintf(stderr, "bench: --key-size %zu is too short for the key count\n",
                    o->key_size);
            return -1;
        }
    }
    if (o->map_bytes == 0) {
        uint64_t n = o->num > o->sync_num ? o->num : o->sync_num;
        for (int i = 0; i < o->n_sop_nums; i++)
            n = o->sop_nums[i] > n ? o->sop_nums[i] : n;
        o->map_bytes = 8 * n * (o->key_size + o->value_size + 64);
        if (o->map_bytes < (1ull << 30))
            o->map_bytes = 1ull << 30;
    }
    return 0;
}

int main(int argc, char **argv)
{
    bench_opts o;
    child_args ca;
    bench_machine m;
    bench_results all;
    int rc;

    if (parse_opts(&o, &ca, argc, argv) != 0)
        return 2;
    if (ca.job != 0) { /* we are a child re-executed under strace */
        for (int i = 0; all_drivers[i] != NULL; i++)
            if (ca.engine != NULL && strcmp(ca.engine, all_drivers[i]->name) == 0 &&
                ca.out != NULL)
                return child_main(&o, all_drivers[i], ca.job, ca.n, (uint32_t)ca.slot, 0, ca.out);
        fprintf(stderr, "bench: bad --child-* options\n");
        return 2;
    }
    if (bench_mkdirs(o.dir) != 0) {
        fprintf(stderr, "bench: cannot create --dir %s: %s\n", o.dir, strerror(errno));
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    memset(&all, 0, sizeof all);
    bench_machine_read(&m, o.dir);
    bench_loadavg(m.load_start, sizeof m.load_start);
    fprintf(stderr, "bench: %d engine(s), num=%" PRIu64 ", runs=%d, dir=%s (%s)\n", o.n_engines,
            o.num, o.runs, o.dir, m.fs);
    if (strcmp(m.fs, "tmpfs") == 0)
        fprintf(stderr, "bench: warning: --dir is on tmpfs; sync numbers mean nothing there\n");
    run_all(&o, &all);
    if (o.workloads[W_KEYS] && keys_bench_run(&o, &all) < 0)
        note_failure(&all, "keys: a compound-key check failed");
    bench_loadavg(m.load_end, sizeof m.load_end);
    rc = bench_report(&o, &m, &all);
    if (!o.keep)
        rmdir(o.dir); /* only if empty: never removes what we did not create */
    for (int i = 0; i < all.failures && i < 16; i++)
        fprintf(stderr, "bench: FAILED: %s\n", all.failed[i]);
    free(all.v);
    if (all.failures > 0) {
        fprintf(stderr, "bench: %d failure(s)\n", all.failures);
        return 1;
    }
    return rc == 0 ? 0 : 1;
}
