/*
 * harness.h - the tiny test harness every tests/test_*.c uses.
 *
 * A test file defines its tests with TEST(name) and lists them in
 * TEST_MAIN(...). Each test gets a fresh temporary folder (test_dir()) and
 * a seed (env SOP_SEED, default fixed) printed on failure, so every run can
 * be replayed. CHECK* macros record the failure and return from the test.
 * The runner prints "N passed, N failed" and exits non-zero on failure.
 */
#ifndef SOP_TEST_HARNESS_H
#define SOP_TEST_HARNESS_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sop.h"

typedef void (*test_fn)(void);
struct test_case {
    const char *name;
    test_fn fn;
};

extern int test_failed_flag;
extern uint64_t test_seed;
extern const char *test_current;
extern const char *test_argv0;       /* path of the running test binary */
const char *test_dir(void);          /* fresh empty folder for this test */
const char *test_path(const char *leaf); /* test_dir()/leaf (static buffer, 8 slots) */
uint64_t test_rand(void);            /* splitmix64 from test_seed */
void test_rm_rf(const char *path);

#define TEST(name) static void name(void)

#define FAIL_AT(...)                                                                               \
    do {                                                                                           \
        fprintf(stderr, "FAIL %s (%s:%d, seed %" PRIu64 "): ", test_current, __FILE__, __LINE__,  \
                test_seed);                                                                        \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        test_failed_flag = 1;                                                                      \
    } while (0)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            FAIL_AT("CHECK(%s)", #cond);                                                           \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* Like CHECK, for helpers that return 1 (ok) or 0 (failed, already reported). */
#define REQ(cond)                                                                                  \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            FAIL_AT("REQ(%s)", #cond);                                                             \
            return 0;                                                                              \
        }                                                                                          \
    } while (0)

/* rc must equal expected; prints both codes and sop_errmsg(). */
#define CHECK_RC(expected, expr)                                                                   \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != (expected)) {                                                                   \
            FAIL_AT("%s returned %d (%s) [%s], expected %d (%s)", #expr, rc_, sop_strerror(rc_),   \
                    sop_errmsg(), (expected), sop_strerror(expected));                             \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define CHECK_OK(expr) CHECK_RC(SOP_OK, expr)

/* In helpers returning int: return the failing code instead of recording. */
#define CHECK_OK_RET(expr)                                                                         \
    do {                                                                                           \
        int rcr_ = (expr);                                                                         \
        if (rcr_ != SOP_OK) {                                                                      \
            fprintf(stderr, "%s:%d: %s returned %d (%s) [%s]\n", __FILE__, __LINE__, #expr,       \
                    rcr_, sop_strerror(rcr_), sop_errmsg());                                       \
            return rcr_;                                                                           \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_U64(a, b)                                                                         \
    do {                                                                                           \
        uint64_t a_ = (uint64_t)(a), b_ = (uint64_t)(b);                                           \
        if (a_ != b_) {                                                                            \
            FAIL_AT("%s == %" PRIu64 ", expected %s == %" PRIu64, #a, a_, #b, b_);                 \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* Compare a sop_val with a C string / bytes. */
#define CHECK_VAL(val, str)                                                                        \
    do {                                                                                           \
        size_t l_ = strlen(str);                                                                   \
        if ((val).len != l_ || memcmp((val).data, (str), l_) != 0) {                               \
            FAIL_AT("%s is '%.*s', expected '%s'", #val, (int)(val).len,                          \
                    (const char *)(val).data, (str));                                              \
            return;                                                                                \
        }                                                                                          \
    } while (0)

int test_run_all(const struct test_case *cases, size_t n, int argc, char **argv);

#define TEST_MAIN(...)                                                                             \
    int main(int argc, char **argv)                                                                \
    {                                                                                              \
        static const struct test_case cases_[] = {__VA_ARGS__};                                    \
        return test_run_all(cases_, sizeof cases_ / sizeof cases_[0], argc, argv);                \
    }
#define T(fn) {#fn, fn}

#endif
