/*
 * bench_run.h - what bench.c (runs workloads), report.c (aggregates and
 * prints them) and keys_bench.c (compound-key costs) share: the options,
 * one measured result, and the machine facts.
 *
 * A bench_result is one measurement of one workload on one engine in one run,
 * made inside a child process that ran nothing else of the other engines.
 * report.c turns the runs into medians per (workload, engine, n, slot).
 */
#ifndef SOP_BENCH_RUN_H
#define SOP_BENCH_RUN_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "bench.h"

#define BENCH_MAX_ENGINES 4
#define BENCH_MAX_LIST    16

/** Workloads, in the order they run and are reported. */
enum bench_workload {
    W_FILLSEQ,
    W_FILLRANDOM,
    W_OVERWRITE,
    W_READRANDOM,
    W_READSEQ,
    W_READWHILEWRITING,
    W_DELETERANDOM,
    W_FILLRANDSYNC,
    W_FILLSYNC_CONCURRENT,
    W_SOPSHAPE,
    W_KEYS,
    W_COUNT
};
extern const char *const bench_workload_names[W_COUNT];

typedef struct bench_opts {
    uint64_t num;             /**< --num: keys in the db_bench workloads */
    uint64_t reads;           /**< --reads: gets in readrandom/readwhilewriting (0 = num) */
    size_t key_size;          /**< --key-size: digits per key */
    size_t value_size;        /**< --value-size */
    uint64_t batch;           /**< --batch: puts per write txn */
    uint64_t reads_per_txn;   /**< --reads-per-txn: readwhilewriting reader txn size */
    uint64_t seed;            /**< --seed */
    uint64_t sync_num;        /**< --sync-num: commits in the sync workloads */
    int sync_threads;         /**< --sync-threads */
    uint64_t sop_nums[BENCH_MAX_LIST];  /**< --sop-nums */
    int n_sop_nums;
    uint32_t sop_slots[BENCH_MAX_LIST]; /**< --sop-slots (libsop only) */
    int n_sop_slots;
    int runs;                 /**< --runs */
    char dir[PATH_MAX];       /**< --dir: parent of the per-engine folders */
    const char *json;         /**< --json FILE or NULL */
    const char *chart;        /**< --chart FILE (PNG) or NULL */
    uint64_t cache_bytes;     /**< --cache-bytes */
    uint64_t map_bytes;       /**< --map-bytes (LMDB); 0 = from num */
    uint64_t sqlite_mmap;     /**< --sqlite-mmap */
    int strace;               /**< --strace=auto|no */
    unsigned timeout;         /**< --timeout: seconds per child process; 0 = none */
    int keep;                 /**< --keep: leave the data folders */
    const bench_driver *engines[BENCH_MAX_ENGINES];
    int n_engines;
    int workloads[W_COUNT];   /**< 1 = selected */
    int argc;                 /**< the command line, for the report and strace */
    char **argv;
} bench_opts;

typedef struct bench_result {
    char workload[32];   /**< e.g. "fillrandom", "sopshape-add" */
    char engine[16];
    uint64_t n;          /**< keys (or commits) in this workload */
    uint32_t slot;       /**< sop-shape slot length; 0 = not applicable */
    int run;             /**< 1..runs; 0 = the strace counting pass */
    uint64_t ops;
    double secs;
    uint64_t rss_kb;     /**< peak RSS during the workload (VmHWM after a reset) */
    uint64_t disk_bytes; /**< sum of file sizes in the engine's folder afterwards */
    uint64_t disk_alloc; /**< the same in allocated blocks */
    int64_t syncs;       /**< engine's own sync counter; -1 = none */
    int64_t syncs_strace;/**< fsync-family calls counted by strace; -1 = none */
    uint64_t commits;
    uint64_t retries;    /**< transactions redone after conflict/busy */
    double aux1;         /**< readwhilewriting: reader-alone ops/s */
    double aux2;         /**< readwhilewriting: writer puts/s */
    int hwm_reset;       /**< 1 if rss_kb covers this workload only */
    double cpu_secs;     /**< user + system CPU of the process while timed; -1 = n/a */
    uint64_t rss_base_kb;/**< RSS of the child before it opened the engine */
} bench_result;

typedef struct bench_results {
    bench_result *v;
    size_t n, cap;
    uint64_t engine_maxrss_kb[BENCH_MAX_ENGINES]; /**< wait4 ru_maxrss, max over children */
    int failures;
    char failed[16][96]; /**< the first failures, "engine job: how" */
} bench_results;

int bench_results_add(bench_results *all, const bench_result *r);

typedef struct bench_machine {
    long nproc;
    char cpu[128];
    uint64_t mem_kb;
    char kernel[128];
    char fs[32];
    char disk[160];
    char date[40];
    char load_start[64]; /**< /proc/loadavg when the run began */
    char load_end[64];   /**< ... and when it ended */
} bench_machine;

void bench_machine_read(bench_machine *m, const char *dir);
/** The first three fields of /proc/loadavg ("" if unreadable). */
void bench_loadavg(char *out, size_t cap);

/** Print the table; write --json and --chart. 0, or -1 if a file failed. */
int bench_report(const bench_opts *o, const bench_machine *m, const bench_results *all);

/* ------------------------------------------------------------------------ */
/* Compound-key encode/decode costs (keys_bench.c)                           */
/* ------------------------------------------------------------------------ */

/** Measure the compound-key encoding (issue 3) and add one result per
 *  measurement to @p all (engine "sop"). Returns 0 when measured, 1 when not
 *  available in this build (a note is printed), -1 on a failed check. */
int keys_bench_run(const bench_opts *o, bench_results *all);

#endif /* SOP_BENCH_RUN_H */
