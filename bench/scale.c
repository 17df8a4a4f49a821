/*
 * scale.c - `make bench-scale` (issue 12): what the engines cost as the data
 * outgrows the cache. For each engine and each cache size, one forked child
 * runs, on one fresh database of N keys (16-byte keys, 100-byte
 * incompressible values, 1,000 operations per transaction, no sync):
 *
 *   fillrandom    N puts in a random permutation
 *   readrandom    N gets of random keys (read-only txns of 1,000), checked
 *   overwrite     N puts in another permutation, new values
 *   mixed         N operations: read-only txns of 500 random gets, then
 *                 write txns of 500 random puts, alternating; gets checked
 *                 against the generation each key was last written with
 *   deleterandom  every key deleted in a third permutation, each found
 *   close         closing the database (final checkpoint, compaction)
 *
 * and prints, per workload: ops/s, bytes written to storage (write_bytes of
 * /proc/self/io: dirtied page-cache bytes headed for the disk, background
 * threads included) and written through write(2) (wchar), fsync-family
 * calls (this program wraps fsync, fdatasync, sync_file_range, msync and
 * syncfs, so every engine is counted the same way, libraries included),
 * peak RSS of the workload (VmHWM after a reset through clear_refs), and
 * bytes on disk in the engine's folder: the peak seen by a sampling thread
 * (every 20 ms) and the figure at the end of the workload.
 *
 *   scale [--num=N] [--caches=256M,64M] [--engines=sop,rocksdb,lmdb,sqlite]
 *         [--dir=DIR] [--workloads=LIST] [--seed=N]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define EXPORT __attribute__((visibility("default")))

/* ---- fsync-family counting ------------------------------------------------ */

static _Atomic uint64_t n_syncs;

EXPORT int fsync(int fd);
EXPORT int fdatasync(int fd);
EXPORT int sync_file_range(int fd, off64_t off, off64_t n, unsigned int flags);
EXPORT int msync(void *addr, size_t len, int flags);
EXPORT int syncfs(int fd);

typedef int (*fd_fn)(int);
typedef int (*sfr_fn)(int, off64_t, off64_t, unsigned int);
typedef int (*msync_fn)(void *, size_t, int);
#define REAL(name, type)                                                                           \
    static type real_##name;                                                                       \
    if (!real_##name)                                                                              \
        real_##name = (type)dlsym(RTLD_NEXT, #name);

int fsync(int fd)
{
    REAL(fsync, fd_fn);
    atomic_fetch_add(&n_syncs, 1);
    return real_fsync(fd);
}
int fdatasync(int fd)
{
    REAL(fdatasync, fd_fn);
    atomic_fetch_add(&n_syncs, 1);
    return real_fdatasync(fd);
}
int sync_file_range(int fd, off64_t off, off64_t n, unsigned int flags)
{
    REAL(sync_file_range, sfr_fn);
    atomic_fetch_add(&n_syncs, 1);
    return real_sync_file_range(fd, off, n, flags);
}
int msync(void *addr, size_t len, int flags)
{
    REAL(msync, msync_fn);
    atomic_fetch_add(&n_syncs, 1);
    return real_msync(addr, len, flags);
}
int syncfs(int fd)
{
    REAL(syncfs, fd_fn);
    atomic_fetch_add(&n_syncs, 1);
    return real_syncfs(fd);
}

/* ---- drivers and options -------------------------------------------------- */

static const bench_driver *const drivers[] = {
#ifdef BENCH_WITH_SOP
    &bench_driver_sop,
#endif
#ifdef BENCH_WITH_ROCKSDB
    &bench_driver_rocksdb,
#endif
#ifdef BENCH_WITH_LMDB
    &bench_driver_lmdb,
#endif
#ifdef BENCH_WITH_SQLITE
    &bench_driver_sqlite,
#endif
    NULL,
};

enum { WL_FILL, WL_READ, WL_OVERWRITE, WL_MIXED, WL_DELETE, WL_N };
static const char *const wl_names[WL_N] = {"fillrandom", "readrandom", "overwrite", "mixed",
                                           "deleterandom"};

static uint64_t opt_num = 1000000, opt_seed = 301;
static uint64_t opt_caches[8] = {256u << 20, 64u << 20};
static int n_caches = 2;
static const char *opt_engines = NULL, *opt_workloads = NULL, *opt_dir = "bench-scale.tmp";

#define KEY_LEN 16
#define VAL_LEN 100
#define BATCH   1000

/* ---- measurement helpers --------------------------------------------------- */

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t du_total;
static int du_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)p;
    (void)ftw;
    if (flag == FTW_F)
        du_total += (uint64_t)st->st_size;
    return 0;
}
static pthread_mutex_t du_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t dir_size(const char *dir)
{
    pthread_mutex_lock(&du_mu);
    du_total = 0;
    nftw(dir, du_one, 16, FTW_PHYS);
    uint64_t t = du_total;
    pthread_mutex_unlock(&du_mu);
    return t;
}

static void proc_io(uint64_t *write_bytes, uint64_t *wchar)
{
    char line[128];
    unsigned long long v;
    FILE *f = fopen("/proc/self/io", "r");
    *write_bytes = *wchar = 0;
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "write_bytes: %llu", &v) == 1)
            *write_bytes = v;
        else if (sscanf(line, "wchar: %llu", &v) == 1)
            *wchar = v;
    }
    fclose(f);
}

static void rss_reset(void)
{
    int fd = open("/proc/self/clear_refs", O_WRONLY);
    if (fd >= 0) {
        if (write(fd, "5", 1) != 1) {
            /* older kernels: the peak then covers the whole child */
        }
        close(fd);
    }
}

static uint64_t rss_peak_kb(void)
{
    char line[256];
    unsigned long long kb = 0;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %llu kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* The sampler: peak folder size while a workload runs. */
static const char *sample_dir;
static _Atomic uint64_t sample_peak;
static _Atomic int sample_stop;
static void *sampler(void *arg)
{
    (void)arg;
    while (!atomic_load(&sample_stop)) {
        uint64_t s = dir_size(sample_dir);
        if (s > atomic_load(&sample_peak))
            atomic_store(&sample_peak, s);
        usleep(20000);
    }
    return NULL;
}

typedef struct meas {
    double t0;
    uint64_t wb0, wc0, sy0;
} meas;

static void meas_start(meas *m)
{
    rss_reset();
    atomic_store(&sample_peak, dir_size(sample_dir));
    proc_io(&m->wb0, &m->wc0);
    m->sy0 = atomic_load(&n_syncs);
    m->t0 = now_sec();
}

static void meas_stop(const meas *m, const char *engine, uint64_t cache, const char *wl,
                      uint64_t ops)
{
    double secs = now_sec() - m->t0;
    uint64_t wb, wc;
    proc_io(&wb, &wc);
    uint64_t final = dir_size(sample_dir);
    uint64_t peak = atomic_load(&sample_peak);
    if (final > peak)
        peak = final;
    printf("%-8s %5" PRIu64 "M %-12s %9" PRIu64 " %11.0f %9.1f %9.1f %8" PRIu64
           " %8.1f %9.1f %9.1f\n",
           engine, cache >> 20, wl, ops, secs > 0 ? (double)ops / secs : 0.0,
           (double)(wb - m->wb0) / 1048576.0, (double)(wc - m->wc0) / 1048576.0,
           atomic_load(&n_syncs) - m->sy0, (double)rss_peak_kb() / 1024.0, (double)peak / 1048576.0,
           (double) final / 1048576.0);
    fflush(stdout);
}

/* ---- the workloads ---------------------------------------------------------- */

static uint32_t *perm(uint64_t n, uint64_t seed)
{
    uint32_t *p = malloc(n * sizeof *p);
    if (!p)
        return NULL;
    for (uint64_t i = 0; i < n; i++)
        p[i] = (uint32_t)i;
    uint64_t s = seed;
    for (uint64_t i = n; i > 1; i--) {
        uint64_t j = bench_splitmix64(&s) % i;
        uint32_t t = p[i - 1];
        p[i - 1] = p[j];
        p[j] = t;
    }
    return p;
}

static int fail(const char *engine, const char *wl, const char *what, uint64_t key)
{
    fprintf(stderr, "scale: %s %s: %s (key %" PRIu64 ")\n", engine, wl, what, key);
    return 1;
}

/* Commit, redoing nothing: these runs have one writer, so no retries. */
static int commit(const bench_driver *d, void *c, const char *wl)
{
    int rc = d->commit(c);
    return rc == BENCH_OK ? 0 : fail(d->name, wl, "commit failed", 0);
}

static int write_perm(const bench_driver *d, void *c, const uint32_t *order, uint64_t n,
                      uint8_t *gens, int del, const char *wl)
{
    char k[KEY_LEN];
    uint8_t v[VAL_LEN];
    for (uint64_t i = 0; i < n;) {
        if (d->begin(c, 0) != BENCH_OK)
            return fail(d->name, wl, "begin", i);
        for (int j = 0; j < BATCH && i < n; j++, i++) {
            uint64_t key = order[i];
            bench_key(k, KEY_LEN, key);
            if (del) {
                if (d->del(c, k, KEY_LEN) != BENCH_OK)
                    return fail(d->name, wl, "delete did not find its key", key);
            } else {
                bench_value(v, VAL_LEN, opt_seed, key, gens[key]);
                if (d->put(c, k, KEY_LEN, v, VAL_LEN) != BENCH_OK)
                    return fail(d->name, wl, "put", key);
            }
        }
        if (commit(d, c, wl))
            return 1;
    }
    return 0;
}

static int get_check(const bench_driver *d, void *c, uint64_t key, uint8_t gen, const char *wl)
{
    char k[KEY_LEN];
    uint8_t v[VAL_LEN];
    const void *got;
    size_t gl;
    bench_key(k, KEY_LEN, key);
    if (d->get(c, k, KEY_LEN, &got, &gl) != BENCH_OK)
        return fail(d->name, wl, "get did not find the key", key);
    bench_value(v, VAL_LEN, opt_seed, key, gen);
    if (gl != VAL_LEN || memcmp(got, v, VAL_LEN) != 0)
        return fail(d->name, wl, "wrong value", key);
    return 0;
}

static int want(int wl)
{
    if (!opt_workloads)
        return 1;
    const char *p = strstr(opt_workloads, wl_names[wl]);
    return p != NULL;
}

static int run_engine(const bench_driver *d, uint64_t cache)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s-%" PRIu64 "M", opt_dir, d->name, cache >> 20);
    char cmd[8400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    if (system(cmd) != 0)
        return fail(d->name, "setup", "cannot make the folder", 0);
    sample_dir = dir;
    pthread_t th;
    pthread_create(&th, NULL, sampler, NULL);
    uint64_t n = opt_num;
    uint8_t *gens = calloc(n, 1);
    uint32_t *p1 = perm(n, opt_seed), *p2 = perm(n, opt_seed + 1), *p3 = perm(n, opt_seed + 2);
    if (!gens || !p1 || !p2 || !p3)
        return fail(d->name, "setup", "out of memory", 0);
    bench_cfg cfg = {0};
    cfg.dir = dir;
    cfg.cache_bytes = cache;
    cfg.map_bytes = n * 1024 < (1ull << 30) ? (1ull << 30) : n * 1024;
    cfg.max_threads = 1;
    void *db, *c;
    meas m;
    int rc = 0;
    if (d->open(&db, &cfg) != BENCH_OK || d->conn_open(&c, db) != BENCH_OK)
        return fail(d->name, "open", "failed", 0);
    uint64_t s = opt_seed * 7 + 3;

    meas_start(&m);
    rc = write_perm(d, c, p1, n, gens, 0, "fillrandom");
    if (!rc)
        meas_stop(&m, d->name, cache, "fillrandom", n);
    if (!rc && want(WL_READ)) {
        meas_start(&m);
        for (uint64_t i = 0; i < n && !rc;) {
            if (d->begin(c, 1) != BENCH_OK)
                rc = fail(d->name, "readrandom", "begin", i);
            for (int j = 0; j < BATCH && i < n && !rc; j++, i++) {
                uint64_t key = bench_splitmix64(&s) % n;
                rc = get_check(d, c, key, gens[key], "readrandom");
            }
            if (!rc)
                rc = commit(d, c, "readrandom");
        }
        if (!rc)
            meas_stop(&m, d->name, cache, "readrandom", n);
    }
    if (!rc && want(WL_OVERWRITE)) {
        for (uint64_t i = 0; i < n; i++)
            gens[i]++;
        meas_start(&m);
        rc = write_perm(d, c, p2, n, gens, 0, "overwrite");
        if (!rc)
            meas_stop(&m, d->name, cache, "overwrite", n);
    }
    if (!rc && want(WL_MIXED)) {
        char k[KEY_LEN];
        uint8_t v[VAL_LEN];
        meas_start(&m);
        for (uint64_t i = 0; i < n && !rc;) {
            int ro = (i / (BATCH / 2)) % 2 == 0;
            if (d->begin(c, ro) != BENCH_OK)
                rc = fail(d->name, "mixed", "begin", i);
            for (int j = 0; j < BATCH / 2 && i < n && !rc; j++, i++) {
                uint64_t key = bench_splitmix64(&s) % n;
                if (ro) {
                    rc = get_check(d, c, key, gens[key], "mixed");
                } else {
                    gens[key]++;
                    bench_key(k, KEY_LEN, key);
                    bench_value(v, VAL_LEN, opt_seed, key, gens[key]);
                    if (d->put(c, k, KEY_LEN, v, VAL_LEN) != BENCH_OK)
                        rc = fail(d->name, "mixed", "put", key);
                }
            }
            if (!rc)
                rc = commit(d, c, "mixed");
        }
        if (!rc)
            meas_stop(&m, d->name, cache, "mixed", n);
    }
    if (!rc && want(WL_DELETE)) {
        meas_start(&m);
        rc = write_perm(d, c, p3, n, gens, 1, "deleterandom");
        if (!rc)
            meas_stop(&m, d->name, cache, "deleterandom", n);
    }
    d->conn_close(c);
    meas_start(&m);
    if (d->close(db) != BENCH_OK && !rc)
        rc = fail(d->name, "close", "failed", 0);
    if (!rc)
        meas_stop(&m, d->name, cache, "close", 0);
    atomic_store(&sample_stop, 1);
    pthread_join(th, NULL);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "scale: could not remove %s\n", dir);
    free(gens);
    free(p1);
    free(p2);
    free(p3);
    return rc;
}

static uint64_t parse_size(const char *s)
{
    char *end;
    uint64_t v = strtoull(s, &end, 10);
    if (*end == 'K' || *end == 'k')
        v <<= 10;
    else if (*end == 'M' || *end == 'm')
        v <<= 20;
    else if (*end == 'G' || *end == 'g')
        v <<= 30;
    return v;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--num=", 6) == 0)
            opt_num = parse_size(a + 6);
        else if (strncmp(a, "--seed=", 7) == 0)
            opt_seed = strtoull(a + 7, NULL, 10);
        else if (strncmp(a, "--dir=", 6) == 0)
            opt_dir = a + 6;
        else if (strncmp(a, "--engines=", 10) == 0)
            opt_engines = a + 10;
        else if (strncmp(a, "--workloads=", 12) == 0)
            opt_workloads = a + 12;
        else if (strncmp(a, "--caches=", 9) == 0) {
            n_caches = 0;
            for (char *p = (char *)a + 9; *p && n_caches < 8;) {
                opt_caches[n_caches++] = parse_size(p);
                p = strchr(p, ',');
                if (!p)
                    break;
                p++;
            }
        } else {
            fprintf(
                stderr,
                "usage: scale [--num=N] [--caches=256M,64M] [--engines=sop,rocksdb,lmdb,sqlite]\n"
                "             [--workloads=LIST] [--dir=DIR] [--seed=N]\n");
            return 2;
        }
    }
    if (opt_num == 0 || opt_num > UINT32_MAX) {
        fprintf(stderr, "scale: --num must be 1..%u\n", UINT32_MAX);
        return 2;
    }
    printf("# bench-scale: N=%" PRIu64 " keys, %d-byte keys, %d-byte values, %d ops/txn, no sync\n",
           opt_num, KEY_LEN, VAL_LEN, BATCH);
    printf("# written = /proc/self/io write_bytes, wchar = bytes through write(2); disk in MiB\n");
    printf("%-8s %6s %-12s %9s %11s %9s %9s %8s %8s %9s %9s\n", "engine", "cache", "workload",
           "ops", "ops/s", "written", "wchar", "fsyncs", "rss_MiB", "disk_peak", "disk_end");
    fflush(stdout);
    int failures = 0;
    for (int e = 0; drivers[e]; e++) {
        const bench_driver *d = drivers[e];
        if (opt_engines && !strstr(opt_engines, d->name))
            continue;
        for (int ci = 0; ci < n_caches; ci++) {
            pid_t pid = fork();
            if (pid == 0)
                _exit(run_engine(d, opt_caches[ci]) ? 1 : 0);
            int st = 0;
            waitpid(pid, &st, 0);
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                fprintf(stderr, "scale: %s with cache %" PRIu64 "M failed\n", d->name,
                        opt_caches[ci] >> 20);
                failures++;
            }
        }
    }
    return failures ? 1 : 0;
}
