/*
 * report.c - turn the runs into medians and show them three ways: a table on
 * stdout, JSON (--json) and a gnuplot PNG (--chart). Also reads the machine
 * facts every report carries.
 *
 * A row is one (workload, engine, n, slot). Each number is the median over
 * the timed runs (run >= 1) of that number alone; µs/op is 1e6 / median
 * ops/s. The strace pass (run 0) contributes only its fsync count. Ratios
 * are libsop / peer for the same workload and n: ops/s (higher is better for
 * libsop), peak RSS and bytes on disk (lower is better).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench_run.h"

/* Row order: the order the workloads run in. */
static const char *const row_order[] = {
    "fillseq",      "fillrandom",   "overwrite",          "readrandom",  "readseq",
    "readwhilewriting", "deleterandom", "fillrandsync", "fillsync-concurrent", "sopshape-add",
    "sopshape-find", "sopshape-remove", "keys-encode",     "keys-decode", NULL,
};

typedef struct row {
    const bench_result *first;
    int runs;
    double ops_s;       /* median */
    double secs;        /* median */
    double rss_kb;      /* median */
    double disk;        /* median */
    double disk_alloc;  /* median */
    double aux1, aux2;  /* medians */
    double cpu_secs;    /* median; -1 = n/a */
    double rss_base_kb; /* median */
    int64_t syncs;      /* median of the engine's counter; -1 none */
    int64_t syncs_strace;
    uint64_t commits;
    uint64_t retries;   /* summed over runs */
    int hwm_reset;
    double samples[100];
} row;

static int rank_of(const char *workload)
{
    for (int i = 0; row_order[i] != NULL; i++)
        if (strcmp(row_order[i], workload) == 0)
            return i;
    return 99;
}

static int engine_rank(const bench_opts *o, const char *engine)
{
    for (int i = 0; i < o->n_engines; i++)
        if (strcmp(o->engines[i]->name, engine) == 0)
            return i;
    return strcmp(engine, "sop") == 0 ? -1 : 99;
}

static int same_key(const bench_result *a, const bench_result *b)
{
    return strcmp(a->workload, b->workload) == 0 && strcmp(a->engine, b->engine) == 0 &&
           a->n == b->n && a->slot == b->slot;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    if (n == 0)
        return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static const bench_opts *sort_opts;
static int cmp_row(const void *a, const void *b)
{
    const bench_result *x = ((const row *)a)->first, *y = ((const row *)b)->first;
    int d = rank_of(x->workload) - rank_of(y->workload);
    if (d == 0)
        d = strcmp(x->workload, y->workload);
    if (d == 0)
        d = x->n < y->n ? -1 : x->n > y->n;
    if (d == 0)
        d = engine_rank(sort_opts, x->engine) - engine_rank(sort_opts, y->engine);
    if (d == 0)
        d = x->slot < y->slot ? -1 : x->slot > y->slot;
    return d;
}

/* Group the results into rows of medians. Returns the row count. */
static int build_rows(row **out, const bench_opts *o, const bench_results *all)
{
    row *rows = calloc(all->n ? all->n : 1, sizeof *rows);
    int n = 0;

    *out = rows;
    if (rows == NULL)
        return 0;
    for (size_t i = 0; i < all->n; i++) {
        const bench_result *r = &all->v[i];
        int k;
        if (r->run == 0)
            continue;
        for (k = 0; k < n && !same_key(rows[k].first, r); k++)
            ;
        if (k == n)
            rows[n++].first = r;
    }
    for (int k = 0; k < n; k++) {
        row *w = &rows[k];
        double secs[100], rss[100], disk[100], alloc[100], a1[100], a2[100], sy[100], cpu[100],
            base[100];
        int m = 0, nsy = 0, ncpu = 0;
        w->syncs = w->syncs_strace = -1;
        w->hwm_reset = 1;
        for (size_t i = 0; i < all->n; i++) {
            const bench_result *r = &all->v[i];
            if (!same_key(w->first, r))
                continue;
            if (r->run == 0) { /* the strace pass */
                w->syncs_strace = r->syncs_strace;
                continue;
            }
            if (m == 100)
                continue;
            w->samples[m] = r->secs > 0 ? (double)r->ops / r->secs : 0;
            secs[m] = r->secs;
            rss[m] = (double)r->rss_kb;
            disk[m] = (double)r->disk_bytes;
            alloc[m] = (double)r->disk_alloc;
            a1[m] = r->aux1;
            a2[m] = r->aux2;
            base[m] = (double)r->rss_base_kb;
            if (r->cpu_secs >= 0)
                cpu[ncpu++] = r->cpu_secs;
            if (r->syncs >= 0)
                sy[nsy++] = (double)r->syncs;
            w->commits = r->commits;
            w->retries += r->retries;
            w->hwm_reset &= r->hwm_reset;
            m++;
        }
        w->runs = m;
        {
            double tmp[100];
            memcpy(tmp, w->samples, sizeof tmp);
            w->ops_s = median(tmp, m);
        }
        w->secs = median(secs, m);
        w->rss_kb = median(rss, m);
        w->disk = median(disk, m);
        w->disk_alloc = median(alloc, m);
        w->aux1 = median(a1, m);
        w->aux2 = median(a2, m);
        w->rss_base_kb = median(base, m);
        w->cpu_secs = ncpu == m && m > 0 ? median(cpu, ncpu) : -1;
        if (nsy > 0)
            w->syncs = (int64_t)median(sy, nsy);
    }
    sort_opts = o;
    qsort(rows, (size_t)n, sizeof *rows, cmp_row);
    return n;
}

/* The row of @p engine for the same workload and n as @p r (slot 0: peers). */
static const row *find_peer(const row *rows, int n, const row *r, const char *engine)
{
    for (int i = 0; i < n; i++) {
        const bench_result *x = rows[i].first;
        if (strcmp(x->engine, engine) == 0 && strcmp(x->workload, r->first->workload) == 0 &&
            x->n == r->first->n && x->slot == 0)
            return &rows[i];
    }
    return NULL;
}

static const char *params(char *buf, size_t cap, const bench_result *r)
{
    if (r->slot != 0)
        snprintf(buf, cap, "n=%" PRIu64 " slot=%u", r->n, r->slot);
    else
        snprintf(buf, cap, "n=%" PRIu64, r->n);
    return buf;
}

/* 1234567.8 -> "1,234,568" */
static const char *grouped(char *buf, size_t cap, double v)
{
    char raw[48];
    int len, j = 0;
    snprintf(raw, sizeof raw, "%.0f", v);
    len = (int)strlen(raw);
    for (int i = 0; i < len && j + 2 < (int)cap; i++) {
        if (i > 0 && (len - i) % 3 == 0 && raw[i - 1] != '-')
            buf[j++] = ',';
        buf[j++] = raw[i];
    }
    buf[j] = '\0';
    return buf;
}

static double syncs_of(const row *r, const char **src)
{
    *src = "";
    if (r->syncs >= 0) {
        *src = "stat";
        return (double)r->syncs;
    }
    if (r->syncs_strace >= 0) {
        *src = "strace";
        return (double)r->syncs_strace;
    }
    return -1;
}

static void notes(char *buf, size_t cap, const bench_opts *o, const row *r, const row *rows,
                  int n)
{
    const bench_result *f = r->first;
    size_t len = 0;
    buf[0] = '\0';
    if (strcmp(f->workload, "readwhilewriting") == 0) {
        char a[32], b[32];
        len += (size_t)snprintf(buf + len, cap - len, "alone %s/s (%.0f%%), writer %s puts/s",
                                grouped(a, sizeof a, r->aux1),
                                r->aux1 > 0 ? 100.0 * r->ops_s / r->aux1 : 0.0,
                                grouped(b, sizeof b, r->aux2));
    }
    if (strcmp(f->workload, "fillsync-concurrent") == 0) {
        const row *one = NULL;
        for (int i = 0; i < n; i++)
            if (strcmp(rows[i].first->workload, "fillrandsync") == 0 &&
                strcmp(rows[i].first->engine, f->engine) == 0)
                one = &rows[i];
        if (one != NULL && one->ops_s > 0)
            len += (size_t)snprintf(buf + len, cap - len, "%.2fx own fillrandsync",
                                    r->ops_s / one->ops_s);
    }
    if (strstr(f->workload, "sync") != NULL && len < cap) {
        for (int i = 0; i < o->n_engines; i++)
            if (strcmp(o->engines[i]->name, f->engine) == 0 && o->engines[i]->sync_note != NULL)
                len += (size_t)snprintf(buf + len, cap - len, "%s%s", len ? ", " : "",
                                        o->engines[i]->sync_note);
    }
    if (r->retries > 0 && len < cap)
        len += (size_t)snprintf(buf + len, cap - len, "%sretries %" PRIu64, len ? ", " : "",
                                r->retries);
    if (!r->hwm_reset && len < cap)
        snprintf(buf + len, cap - len, "%sRSS since process start", len ? ", " : "");
}

/* ---- table ------------------------------------------------------------- */

static void print_table(const bench_opts *o, const bench_machine *m, const bench_results *all,
                        const row *rows, int n)
{
    int have_sop = 0;
    char cfgtxt[256], p[64], a[32];
    bench_cfg cfg = {0};

    for (int i = 0; i < o->n_engines; i++)
        have_sop |= strcmp(o->engines[i]->name, "sop") == 0;
    printf("\nlibsop benchmark - %s\n", m->date);
    printf("machine: %ld cpus (%s), %" PRIu64 " MiB RAM, Linux %s, %s on %s\n", m->nproc, m->cpu,
           m->mem_kb >> 10, m->kernel, m->fs, m->disk);
    printf("load:    %s at start, %s at end (1/5/15-min averages; this bench adds ~1, "
           "the rest is other work on these cpus)\n",
           m->load_start, m->load_end);
    printf("params:  num=%" PRIu64 " key=%zuB value=%zuB batch=%" PRIu64 " sync-num=%" PRIu64
           " sync-threads=%d seed=%" PRIu64 " runs=%d (medians)\n",
           o->num, o->key_size, o->value_size, o->batch, o->sync_num, o->sync_threads, o->seed,
           o->runs);
    cfg.cache_bytes = o->cache_bytes;
    cfg.map_bytes = o->map_bytes;
    cfg.sqlite_mmap = o->sqlite_mmap;
    for (int i = 0; i < o->n_engines; i++) {
        const bench_driver *d = o->engines[i];
        printf("engine:  %-7s %s\n", d->name, d->version());
        cfg.sync = 0;
        d->describe(cfgtxt, sizeof cfgtxt, &cfg);
        printf("           no-sync: %s\n", cfgtxt);
        cfg.sync = 1;
        d->describe(cfgtxt, sizeof cfgtxt, &cfg);
        printf("           sync:    %s\n", cfgtxt);
    }
    printf("\n%-20s %-18s %-7s %13s %9s %9s %8s %9s %13s %9s %10s  %s\n", "workload", "params",
           "engine", "ops/s", "us/op", "cpu us/op", "RSS MiB", "disk MiB", "syncs/commit",
           "sop/lmdb", "sop/sqlite", "notes");
    for (int i = 0; i < n; i++) {
        const row *r = &rows[i];
        const bench_result *f = r->first;
        const char *src;
        char sy[32] = "-", rl[16] = "-", rs[16] = "-", nt[160], cu[24] = "-";
        double s = syncs_of(r, &src);
        if (s >= 0 && r->commits > 0)
            snprintf(sy, sizeof sy, "%.2f %s", s / (double)r->commits, src);
        else if (strstr(f->workload, "sync") != NULL)
            snprintf(sy, sizeof sy, "n/a");
        if (strcmp(f->engine, "sop") == 0) {
            const row *l = find_peer(rows, n, r, "lmdb"), *q = find_peer(rows, n, r, "sqlite");
            if (l != NULL && l->ops_s > 0)
                snprintf(rl, sizeof rl, "%.2fx", r->ops_s / l->ops_s);
            if (q != NULL && q->ops_s > 0)
                snprintf(rs, sizeof rs, "%.2fx", r->ops_s / q->ops_s);
        } else if (!have_sop && (strcmp(f->engine, "lmdb") == 0 ||
                                 strcmp(f->engine, "sqlite") == 0)) {
            snprintf(rl, sizeof rl, "pending");
            snprintf(rs, sizeof rs, "pending");
        }
        notes(nt, sizeof nt, o, r, rows, n);
        if (r->cpu_secs >= 0 && f->ops > 0)
            snprintf(cu, sizeof cu, "%.3f", 1e6 * r->cpu_secs / (double)f->ops);
        printf("%-20s %-18s %-7s %13s %9.3f %9s %8.1f %9.1f %13s %9s %10s  %s\n", f->workload,
               params(p, sizeof p, f), f->engine, grouped(a, sizeof a, r->ops_s),
               r->ops_s > 0 ? 1e6 / r->ops_s : 0.0, cu, r->rss_kb / 1024.0, r->disk / 1048576.0,
               sy, rl, rs, nt);
    }
    printf("\npeak RSS of any job:");
    for (int i = 0; i < o->n_engines; i++)
        printf(" %s %.1f MiB", o->engines[i]->name, (double)all->engine_maxrss_kb[i] / 1024.0);
    printf("\nus/op is wall time; cpu us/op is user+system CPU of the engine's process (all "
           "threads) per op.\nRSS is VmHWM of the engine's own process, reset before each "
           "workload; it counts LMDB's and SQLite's mmap'd file pages\nand the harness's own "
           "few MiB (rss_base_kb in the JSON).\n");
    if (!have_sop)
        printf("libsop: not in this run (ratios pending engine; build with "
               "BENCH_ENGINES=sop,lmdb,sqlite).\n");
    fflush(stdout);
}

/* ---- JSON ---------------------------------------------------------------- */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static int write_json(const bench_opts *o, const bench_machine *m, const bench_results *all,
                      const row *rows, int n)
{
    FILE *f = fopen(o->json, "w");
    char buf[512];
    bench_cfg cfg = {0};
    size_t len = 0;

    if (f == NULL) {
        fprintf(stderr, "bench: cannot write %s\n", o->json);
        return -1;
    }
    buf[0] = '\0';
    for (int i = 0; i < o->argc && len < sizeof buf; i++)
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", i ? " " : "", o->argv[i]);
    fprintf(f, "{\n  \"format\": \"libsop-bench/1\",\n  \"date\": ");
    json_str(f, m->date);
    fprintf(f, ",\n  \"command\": ");
    json_str(f, buf);
    fprintf(f, ",\n  \"machine\": {\"nproc\": %ld, \"cpu\": ", m->nproc);
    json_str(f, m->cpu);
    fprintf(f, ", \"mem_kb\": %" PRIu64 ", \"kernel\": ", m->mem_kb);
    json_str(f, m->kernel);
    fprintf(f, ", \"fs\": ");
    json_str(f, m->fs);
    fprintf(f, ", \"disk\": ");
    json_str(f, m->disk);
    fprintf(f, ", \"loadavg_start\": ");
    json_str(f, m->load_start);
    fprintf(f, ", \"loadavg_end\": ");
    json_str(f, m->load_end);
    fprintf(f,
            "},\n  \"params\": {\"num\": %" PRIu64 ", \"reads\": %" PRIu64
            ", \"key_size\": %zu, \"value_size\": %zu, \"batch\": %" PRIu64
            ", \"reads_per_txn\": %" PRIu64 ", \"seed\": %" PRIu64 ", \"sync_num\": %" PRIu64
            ", \"sync_threads\": %d, \"runs\": %d, \"cache_bytes\": %" PRIu64
            ", \"map_bytes\": %" PRIu64 ", \"sqlite_mmap\": %" PRIu64 "},\n  \"engines\": [",
            o->num, o->reads ? o->reads : o->num, o->key_size, o->value_size, o->batch,
            o->reads_per_txn, o->seed, o->sync_num, o->sync_threads, o->runs, o->cache_bytes,
            o->map_bytes, o->sqlite_mmap);
    cfg.cache_bytes = o->cache_bytes;
    cfg.map_bytes = o->map_bytes;
    cfg.sqlite_mmap = o->sqlite_mmap;
    for (int i = 0; i < o->n_engines; i++) {
        const bench_driver *d = o->engines[i];
        fprintf(f, "%s\n    {\"name\": ", i ? "," : "");
        json_str(f, d->name);
        fprintf(f, ", \"version\": ");
        json_str(f, d->version());
        cfg.sync = 0;
        d->describe(buf, sizeof buf, &cfg);
        fprintf(f, ", \"config_nosync\": ");
        json_str(f, buf);
        cfg.sync = 1;
        d->describe(buf, sizeof buf, &cfg);
        fprintf(f, ", \"config_sync\": ");
        json_str(f, buf);
        fprintf(f, ", \"peak_rss_kb_any_job\": %" PRIu64 "}", all->engine_maxrss_kb[i]);
    }
    fprintf(f, "\n  ],\n  \"results\": [");
    for (int i = 0; i < n; i++) {
        const row *r = &rows[i];
        const bench_result *x = r->first;
        const char *src;
        double s = syncs_of(r, &src);
        fprintf(f, "%s\n    {\"workload\": ", i ? "," : "");
        json_str(f, x->workload);
        fprintf(f, ", \"engine\": ");
        json_str(f, x->engine);
        fprintf(f,
                ", \"n\": %" PRIu64 ", \"slot\": %u, \"runs\": %d, \"ops_per_sec\": %.1f, "
                "\"us_per_op\": %.4f, \"secs\": %.4f, \"peak_rss_kb\": %.0f, "
                "\"rss_per_workload\": %s, \"disk_bytes\": %.0f, \"disk_alloc_bytes\": %.0f, "
                "\"commits\": %" PRIu64 ", \"retries\": %" PRIu64,
                x->n, x->slot, r->runs, r->ops_s, r->ops_s > 0 ? 1e6 / r->ops_s : 0.0, r->secs,
                r->rss_kb, r->hwm_reset ? "true" : "false", r->disk, r->disk_alloc, r->commits,
                r->retries);
        fprintf(f, ", \"rss_base_kb\": %.0f", r->rss_base_kb);
        if (r->cpu_secs >= 0)
            fprintf(f, ", \"cpu_secs\": %.4f, \"cpu_us_per_op\": %.4f", r->cpu_secs,
                    x->ops > 0 ? 1e6 * r->cpu_secs / (double)x->ops : 0.0);
        if (r->syncs >= 0)
            fprintf(f, ", \"syncs\": %" PRId64, r->syncs);
        if (r->syncs_strace >= 0)
            fprintf(f, ", \"syncs_strace\": %" PRId64, r->syncs_strace);
        if (s >= 0 && r->commits > 0)
            fprintf(f, ", \"syncs_per_commit\": %.3f, \"syncs_source\": \"%s\"",
                    s / (double)r->commits, src);
        if (strcmp(x->workload, "readwhilewriting") == 0)
            fprintf(f, ", \"reader_alone_ops_per_sec\": %.1f, \"reader_vs_alone\": %.4f, "
                       "\"writer_puts_per_sec\": %.1f",
                    r->aux1, r->aux1 > 0 ? r->ops_s / r->aux1 : 0.0, r->aux2);
        fprintf(f, ", \"samples_ops_per_sec\": [");
        for (int k = 0; k < r->runs; k++)
            fprintf(f, "%s%.1f", k ? ", " : "", r->samples[k]);
        fprintf(f, "]}");
    }
    fprintf(f, "\n  ],\n  \"ratios\": [");
    {
        int first = 1;
        for (int i = 0; i < n; i++) {
            const row *r = &rows[i];
            if (strcmp(r->first->engine, "sop") != 0)
                continue;
            for (int pi = 0; pi < 2; pi++) {
                const char *peer = pi ? "sqlite" : "lmdb";
                const row *q = find_peer(rows, n, r, peer);
                if (q == NULL || q->ops_s <= 0)
                    continue;
                fprintf(f, "%s\n    {\"workload\": ", first ? "" : ",");
                first = 0;
                json_str(f, r->first->workload);
                fprintf(f,
                        ", \"n\": %" PRIu64 ", \"slot\": %u, \"vs\": \"%s\", \"ops\": %.4f, "
                        "\"rss\": %.4f, \"disk\": %.4f}",
                        r->first->n, r->first->slot, peer, r->ops_s / q->ops_s,
                        q->rss_kb > 0 ? r->rss_kb / q->rss_kb : 0.0,
                        q->disk > 0 ? r->disk / q->disk : 0.0);
            }
        }
    }
    fprintf(f, "\n  ],\n  \"failures\": [");
    for (int i = 0; i < all->failures && i < 16; i++) {
        fprintf(f, "%s", i ? ", " : "");
        json_str(f, all->failed[i]);
    }
    fprintf(f, "]\n}\n");
    if (fclose(f) != 0) {
        fprintf(stderr, "bench: cannot write %s\n", o->json);
        return -1;
    }
    fprintf(stderr, "bench: wrote %s\n", o->json);
    return 0;
}

/* ---- chart ----------------------------------------------------------------- */

/* A clustered bar chart of median ops/s, log scale, one cluster per workload.
 * Sop-shape rows use the largest n; libsop's bar there is its best slot. */
static int write_chart(const bench_opts *o, const bench_machine *m, const row *rows, int n)
{
    uint64_t maxn = 0;
    FILE *g;
    int rc;

    if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
        fprintf(stderr, "bench: gnuplot not found: chart %s skipped (scripts/deps.sh bench "
                        "installs it)\n", o->chart);
        return 0;
    }
    for (int i = 0; i < n; i++)
        if (strncmp(rows[i].first->workload, "sopshape", 8) == 0 && rows[i].first->n > maxn)
            maxn = rows[i].first->n;
    if ((g = popen("gnuplot", "w")) == NULL)
        return -1;
    fprintf(g,
            "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
            "  set terminal pngcairo size 1400,720 font ',10' noenhanced\n"
            "} else {\n"
            "  set terminal png size 1400,720 noenhanced\n"
            "}\n"
            "set output '%s'\n"
            "set title \"libsop bench: median ops/s of %d runs (log scale), num=%" PRIu64
            ", %s, %ld cpus %s\"\n"
            "set style data histograms\nset style histogram clustered gap 1\n"
            "set style fill solid 0.85 border -1\nset boxwidth 0.9\nset logscale y\n"
            "set ylabel 'ops/s'\nset xtics rotate by 30 right scale 0 nomirror\nset format y '%%.0s%%c'\nset grid ytics\n"
            "set key top right\nset datafile missing '-'\nset bmargin 7\n"
            "$data << EOD\nworkload",
            o->chart, o->runs, o->num, m->date, m->nproc, m->cpu);
    for (int e = 0; e < o->n_engines; e++)
        fprintf(g, " %s", o->engines[e]->name);
    fprintf(g, "\n");
    for (int ri = 0; row_order[ri] != NULL; ri++) {
        const char *w = row_order[ri];
        int is_shape = strncmp(w, "sopshape", 8) == 0, any = 0;
        double v[BENCH_MAX_ENGINES];
        for (int e = 0; e < o->n_engines; e++) {
            v[e] = -1;
            for (int i = 0; i < n; i++) {
                const bench_result *x = rows[i].first;
                if (strcmp(x->workload, w) != 0 || strcmp(x->engine, o->engines[e]->name) != 0 ||
                    (is_shape && x->n != maxn))
                    continue;
                if (rows[i].ops_s > v[e])
                    v[e] = rows[i].ops_s;
            }
            any |= v[e] > 0;
        }
        if (!any)
            continue;
        if (is_shape)
            fprintf(g, "%s/n=%" PRIu64, w, maxn);
        else
            fprintf(g, "%s", w);
        for (int e = 0; e < o->n_engines; e++)
            if (v[e] > 0)
                fprintf(g, " %.1f", v[e]);
            else
                fprintf(g, " -");
        fprintf(g, "\n");
    }
    fprintf(g, "EOD\nplot for [i=2:%d] $data using i:xtic(1) title columnheader(i)\n",
            o->n_engines + 1);
    rc = pclose(g);
    if (rc != 0) {
        fprintf(stderr, "bench: gnuplot failed (status %d); chart %s not written\n", rc,
                o->chart);
        return -1;
    }
    fprintf(stderr, "bench: wrote %s\n", o->chart);
    return 0;
}

int bench_report(const bench_opts *o, const bench_machine *m, const bench_results *all)
{
    row *rows;
    int n = build_rows(&rows, o, all), rc = 0;

    print_table(o, m, all, rows, n);
    if (o->json != NULL && write_json(o, m, all, rows, n) != 0)
        rc = -1;
    if (o->chart != NULL && n > 0 && write_chart(o, m, rows, n) != 0)
        rc = -1;
    free(rows);
    return rc;
}

/* ---- machine facts ------------------------------------------------------------- */

static void read_line(char *out, size_t cap, const char *path)
{
    FILE *f = fopen(path, "r");
    out[0] = '\0';
    if (f == NULL)
        return;
    if (fgets(out, (int)cap, f) != NULL)
        out[strcspn(out, "\n")] = '\0';
    fclose(f);
    for (size_t n = strlen(out); n > 0 && out[n - 1] == ' '; n--)
        out[n - 1] = '\0';
}

void bench_loadavg(char *out, size_t cap)
{
    double a = 0, b = 0, c = 0;
    FILE *f = fopen("/proc/loadavg", "r");
    out[0] = '\0';
    if (f == NULL)
        return;
    if (fscanf(f, "%lf %lf %lf", &a, &b, &c) == 3)
        snprintf(out, cap, "%.2f %.2f %.2f", a, b, c);
    fclose(f);
}

void bench_machine_read(bench_machine *m, const char *dir)
{
    char line[512], path[PATH_MAX + 64], real[PATH_MAX], model[96], rot[8];
    struct statfs sf;
    struct stat st;
    struct utsname u;
    time_t t = time(NULL);
    FILE *f;

    memset(m, 0, sizeof *m);
    m->nproc = sysconf(_SC_NPROCESSORS_ONLN);
    snprintf(m->cpu, sizeof m->cpu, "unknown cpu");
    if ((f = fopen("/proc/cpuinfo", "r")) != NULL) {
        while (fgets(line, sizeof line, f) != NULL) {
            char *c = strchr(line, ':');
            if (strncmp(line, "model name", 10) == 0 && c != NULL) {
                c += 1 + strspn(c + 1, " \t");
                c[strcspn(c, "\n")] = '\0';
                snprintf(m->cpu, sizeof m->cpu, "%s", c);
                break;
            }
        }
        fclose(f);
    }
    if ((f = fopen("/proc/meminfo", "r")) != NULL) {
        unsigned long long kb;
        while (fgets(line, sizeof line, f) != NULL)
            if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
                m->mem_kb = kb;
        fclose(f);
    }
    if (uname(&u) == 0)
        snprintf(m->kernel, sizeof m->kernel, "%s", u.release);
    strftime(m->date, sizeof m->date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
    snprintf(m->fs, sizeof m->fs, "unknown fs");
    if (statfs(dir, &sf) == 0) {
        switch ((unsigned long)sf.f_type) {
        case 0xEF53: snprintf(m->fs, sizeof m->fs, "ext4"); break;
        case 0x58465342: snprintf(m->fs, sizeof m->fs, "xfs"); break;
        case 0x9123683E: snprintf(m->fs, sizeof m->fs, "btrfs"); break;
        case 0x01021994: snprintf(m->fs, sizeof m->fs, "tmpfs"); break;
        case 0x794c7630: snprintf(m->fs, sizeof m->fs, "overlayfs"); break;
        case 0x2FC12FC1: snprintf(m->fs, sizeof m->fs, "zfs"); break;
        default: snprintf(m->fs, sizeof m->fs, "fs 0x%lx", (unsigned long)sf.f_type);
        }
    }
    snprintf(m->disk, sizeof m->disk, "unknown disk");
    if (stat(dir, &st) == 0) {
        snprintf(path, sizeof path, "/sys/dev/block/%u:%u", major(st.st_dev), minor(st.st_dev));
        if (realpath(path, real) != NULL) {
            const char *name = strrchr(real, '/') ? strrchr(real, '/') + 1 : real;
            snprintf(path, sizeof path, "%s/queue/rotational", real);
            if (access(path, R_OK) != 0) /* a partition: the queue is the parent's */
                snprintf(path, sizeof path, "%s/../queue/rotational", real);
            read_line(rot, sizeof rot, path);
            snprintf(path, sizeof path, "%s/device/model", real);
            if (access(path, R_OK) != 0)
                snprintf(path, sizeof path, "%s/../device/model", real);
            read_line(model, sizeof model, path);
            snprintf(m->disk, sizeof m->disk, "/dev/%.32s%s%.64s%s, rotational=%.4s", name,
                     model[0] ? " (" : "", model, model[0] ? ")" : "", rot[0] ? rot : "?");
        }
    }
}
