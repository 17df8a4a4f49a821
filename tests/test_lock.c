/*
 * test_lock.c - the checked mutex of src/lock.h.
 *
 * In builds with SOP_LOCK_DEBUG (debug, asan) each misuse runs in a forked
 * child, which must die of SIGABRT with the checker's message naming the
 * lock on stderr: out-of-order locking, unlocking a lock not held, re-locking
 * a held lock, assert_held on a free lock, a condition wait without the lock.
 * Correct use (in order, waits, asserts) must not abort. In release builds
 * the checks are compiled out: there the test asserts the wrapper is the
 * plain pthread mutex (same size, no bookkeeping), so it is not counted as a
 * check that passed vacuously.
 */
#include "harness.h"
#include "lock.h"

#include <signal.h>
#include <sys/wait.h>

#ifdef SOP_LOCK_DEBUG

static sop_mutex lo, hi;

/* Runs fn in a child with stderr captured; checks it aborted and that its
 * stderr contains want. Returns 1 when both hold. */
static int child_aborts_with(void (*fn)(void), const char *want)
{
    int fds[2];
    if (pipe(fds) != 0)
        return 0;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        fn();
        _exit(0); /* the checker missed it */
    }
    close(fds[1]);
    char buf[4096];
    size_t n = 0;
    ssize_t r;
    while (n + 1 < sizeof buf && (r = read(fds[0], buf + n, sizeof buf - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = 0;
    close(fds[0]);
    int st = 0;
    if (waitpid(pid, &st, 0) != pid)
        return 0;
    if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGABRT) {
        fprintf(stderr, "child did not abort (status %d), stderr: %s\n", st, buf);
        return 0;
    }
    if (!strstr(buf, want)) {
        fprintf(stderr, "child stderr lacks \"%s\": %s\n", want, buf);
        return 0;
    }
    return 1;
}

static void init_pair(void)
{
    sop_mutex_init(&lo, 1, "test_lo");
    sop_mutex_init(&hi, 2, "test_hi");
}

static void out_of_order(void)
{
    sop_mutex_lock(&hi);
    sop_mutex_lock(&lo);
}

static void unlock_unheld(void)
{
    sop_mutex_unlock(&lo);
}

static void relock(void)
{
    sop_mutex_lock(&lo);
    sop_mutex_lock(&lo);
}

static void held_but_free(void)
{
    sop_mutex_assert_held(&hi);
}

static void wait_unheld(void)
{
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    sop_mutex_wait(&cv, &lo);
}

TEST(test_lock__out_of_order_aborts)
{
    init_pair();
    CHECK(child_aborts_with(out_of_order, "lock order violation: taking test_lo (level 1)"));
    CHECK(child_aborts_with(out_of_order, "held: test_hi (level 2) taken at"));
}

TEST(test_lock__unlock_of_unheld_aborts)
{
    init_pair();
    CHECK(child_aborts_with(unlock_unheld, "unlock of lock not held test_lo (level 1)"));
}

TEST(test_lock__relock_aborts)
{
    init_pair();
    CHECK(child_aborts_with(relock, "re-lock of held lock test_lo"));
}

TEST(test_lock__assert_held_and_wait_check)
{
    init_pair();
    CHECK(child_aborts_with(held_but_free, "lock expected held but is not: test_hi"));
    CHECK(child_aborts_with(wait_unheld, "condition wait without holding test_lo"));
}

TEST(test_lock__correct_use_passes)
{
    init_pair();
    sop_mutex_lock(&lo);
    sop_mutex_lock(&hi);
    sop_mutex_assert_held(&lo);
    sop_mutex_assert_held(&hi);
    sop_mutex_unlock(&lo); /* unlocking out of stack order is allowed */
    sop_mutex_assert_not_held(&lo);
    sop_mutex_unlock(&hi);
    sop_mutex_assert_not_held(&hi);
    /* Free again: the low lock may be taken after the high one was released. */
    sop_mutex_lock(&hi);
    sop_mutex_unlock(&hi);
    sop_mutex_lock(&lo);
    sop_mutex_unlock(&lo);
    sop_mutex_destroy(&lo);
    sop_mutex_destroy(&hi);
}

TEST_MAIN(T(test_lock__out_of_order_aborts), T(test_lock__unlock_of_unheld_aborts),
          T(test_lock__relock_aborts), T(test_lock__assert_held_and_wait_check),
          T(test_lock__correct_use_passes))

#else

TEST(test_lock__release_wrapper_is_the_plain_mutex)
{
    CHECK(sizeof(sop_mutex) == sizeof(pthread_mutex_t));
    sop_mutex m;
    CHECK(sop_mutex_init(&m, 3, "m") == 0);
    CHECK(sop_mutex_lock(&m) == 0);
    /* The plain mutex is really taken: trylock on the inner mutex fails. */
    CHECK(pthread_mutex_trylock(&m.mu) != 0);
    CHECK(sop_mutex_unlock(&m) == 0);
    CHECK(sop_mutex_destroy(&m) == 0);
}

TEST_MAIN(T(test_lock__release_wrapper_is_the_plain_mutex))

#endif
