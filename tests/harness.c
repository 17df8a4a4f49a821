/*
 * harness.c - runner for harness.h. Usage: test_x [name-substring]
 * Env: SOP_SEED=<n> (default 1), SOP_TEST_KEEP=1 keeps the temp folders,
 * SOP_TEST_SCALE=<n> multiplies iteration counts in tests that read it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>

int test_failed_flag;
uint64_t test_seed = 1;
const char *test_current = "";
const char *test_argv0 = "";
static char dir_buf[512];
static uint64_t rng_state;

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

void test_rm_rf(const char *path)
{
    nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

const char *test_dir(void)
{
    return dir_buf;
}

const char *test_path(const char *leaf)
{
    static char bufs[8][600];
    static int next;
    char *b = bufs[next++ & 7];
    snprintf(b, 600, "%s/%s", dir_buf, leaf);
    return b;
}

uint64_t test_rand(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int test_run_all(const struct test_case *cases, size_t n, int argc, char **argv)
{
    const char *filter = argc > 1 ? argv[1] : NULL;
    test_argv0 = argv[0];
    const char *s = getenv("SOP_SEED");
    int keep = getenv("SOP_TEST_KEEP") != NULL;
    unsigned passed = 0, failed = 0;
    if (s)
        test_seed = strtoull(s, NULL, 10);
    const char *tmp = getenv("TMPDIR");
    for (size_t i = 0; i < n; i++) {
        if (filter && !strstr(cases[i].name, filter))
            continue;
        snprintf(dir_buf, sizeof dir_buf, "%s/soptest-%s-XXXXXX", tmp ? tmp : "/tmp",
                 cases[i].name);
        if (!mkdtemp(dir_buf)) {
            perror("mkdtemp");
            return 2;
        }
        test_current = cases[i].name;
        test_failed_flag = 0;
        rng_state = test_seed;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        cases[i].fn();
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
        if (test_failed_flag) {
            failed++;
            printf("  FAIL  %s (%.0f ms) dir %s\n", cases[i].name, ms, dir_buf);
        } else {
            passed++;
            printf("  ok    %s (%.0f ms)\n", cases[i].name, ms);
            if (!keep)
                test_rm_rf(dir_buf);
        }
        fflush(stdout);
    }
    printf("%u passed, %u failed\n", passed, failed);
    return failed ? 1 : 0;
}
