/*
 * keys_bench.c - the compound-key encode/decode cost report (workload "keys").
 *
 * Builds --num tuples deterministically from --seed, each an employee key
 * (region string asc, department string asc, id int64 desc) described once
 * as a struct, then times:
 *   keys-encode  sop_key_pack of every struct into its key bytes;
 *   keys-decode  sop_key_unpack of every key back into a struct.
 * Every decode is checked against the original struct, and the memcmp
 * order of consecutive encodings against the tuple order; a mismatch fails
 * the run. It runs in the parent process (no database), once per run.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_run.h"
#include "sop.h"

struct emp {
    const char *region;
    const char *dept;
    int64_t id;
};

static const sop_key_member emp_key[] = {
    SOP_KEY_MEMBER_STRPTR(struct emp, region, SOP_KEY_ASC),
    SOP_KEY_MEMBER_STRPTR(struct emp, dept, SOP_KEY_ASC),
    SOP_KEY_MEMBER(struct emp, id, SOP_KEY_INT64, SOP_KEY_DESC),
};
#define EMP_FIELDS 3

static const char *const regions[] = {"APAC", "EU", "LATAM", "MEA", "NA", "US"};
static const char *const depts[] = {"Engineering", "Finance", "Legal", "Marketing",
                                    "Operations", "Research", "Sales", "Support"};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reference order of two employees: region asc, dept asc, id desc. */
static int emp_cmp(const struct emp *a, const struct emp *b)
{
    int c = strcmp(a->region, b->region);
    if (!c)
        c = strcmp(a->dept, b->dept);
    if (!c)
        c = (a->id < b->id) - (a->id > b->id);
    return c;
}

int keys_bench_run(const bench_opts *o, bench_results *all)
{
    uint64_t n = o->num ? o->num : 1;
    struct emp *e = malloc(n * sizeof *e);
    uint8_t *keys = malloc(n * 64);
    size_t *lens = malloc(n * sizeof *lens);
    uint8_t storage[64];
    uint64_t rng = o->seed * 0x9e3779b97f4a7c15ull + 1;
    int rc = -1;
    if (!e || !keys || !lens)
        goto out;
    for (uint64_t i = 0; i < n; i++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        e[i].region = regions[(rng >> 33) % 6];
        e[i].dept = depts[(rng >> 41) % 8];
        e[i].id = (int64_t)((rng >> 7) % 10000000) - 5000000;
    }
    double t0 = now_s();
    for (uint64_t i = 0; i < n; i++) {
        if (sop_key_pack(keys + i * 64, 64, &lens[i], emp_key, EMP_FIELDS, EMP_FIELDS, &e[i]) !=
            SOP_OK) {
            fprintf(stderr, "bench: keys: pack %llu failed: %s\n", (unsigned long long)i,
                    sop_errmsg());
            goto out;
        }
    }
    double t1 = now_s();
    for (uint64_t i = 0; i < n; i++) {
        struct emp d;
        sop_val k = {keys + i * 64, lens[i]};
        if (sop_key_unpack(&d, NULL, storage, sizeof storage, emp_key, EMP_FIELDS, &k) != SOP_OK ||
            emp_cmp(&d, &e[i]) != 0) {
            fprintf(stderr, "bench: keys: unpack %llu does not round-trip\n",
                    (unsigned long long)i);
            goto out;
        }
    }
    double t2 = now_s();
    for (uint64_t i = 1; i < n; i++) {
        size_t a = lens[i - 1], b = lens[i], m = a < b ? a : b;
        int c = memcmp(keys + (i - 1) * 64, keys + i * 64, m);
        if (!c)
            c = (a > b) - (a < b);
        int want = emp_cmp(&e[i - 1], &e[i]);
        if ((c > 0) != (want > 0) || (c < 0) != (want < 0)) {
            fprintf(stderr, "bench: keys: byte order differs from tuple order at %llu\n",
                    (unsigned long long)i);
            goto out;
        }
    }
    for (int k = 0; k < 2; k++) {
        bench_result r;
        memset(&r, 0, sizeof r);
        snprintf(r.workload, sizeof r.workload, "%s", k ? "keys-decode" : "keys-encode");
        snprintf(r.engine, sizeof r.engine, "sop");
        r.n = n;
        r.ops = n;
        r.secs = k ? t2 - t1 : t1 - t0;
        r.syncs = -1;
        r.syncs_strace = -1;
        r.cpu_secs = -1;
        r.run = 1;
        if (bench_results_add(all, &r) != 0)
            goto out;
    }
    rc = 0;
out:
    free(e);
    free(keys);
    free(lens);
    return rc;
}
