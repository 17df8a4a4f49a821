/*
 * lock.c - the SOP_LOCK_DEBUG checker behind lock.h: a per-thread stack of
 * held locks, checked at every lock, unlock, wait and assert. Empty in
 * builds without SOP_LOCK_DEBUG.
 */
#include "lock.h"

#ifdef SOP_LOCK_DEBUG

#include <stdio.h>
#include <stdlib.h>

/* Deeper than any real nesting (the lock table has fewer levels). */
#define SOP_LOCK_MAX_HELD 16

typedef struct {
    const sop_mutex *m;
    const char *file;
    int line;
} held_lock;

static _Thread_local held_lock held[SOP_LOCK_MAX_HELD];
static _Thread_local int nheld;

static _Noreturn void lock_abort(const char *what, const sop_mutex *m, const char *file, int line)
{
    fprintf(stderr, "sop lock check: %s %s (level %d) at %s:%d\n", what, m->name, m->level, file,
            line);
    for (int i = nheld - 1; i >= 0; i--)
        fprintf(stderr, "  held: %s (level %d) taken at %s:%d\n", held[i].m->name, held[i].m->level,
                held[i].file, held[i].line);
    abort();
}

static int find_held(const sop_mutex *m)
{
    for (int i = nheld - 1; i >= 0; i--)
        if (held[i].m == m)
            return i;
    return -1;
}

int sop_mutex__init(sop_mutex *m, int level, const char *name)
{
    m->level = level;
    m->name = name;
    return pthread_mutex_init(&m->mu, NULL);
}

/* Order: a lock is taken only above every lock the thread holds. */
static void check_acquire(const sop_mutex *m, const char *file, int line)
{
    if (find_held(m) >= 0)
        lock_abort("re-lock of held lock", m, file, line);
    for (int i = 0; i < nheld; i++)
        if (held[i].m->level >= m->level)
            lock_abort("lock order violation: taking", m, file, line);
    if (nheld == SOP_LOCK_MAX_HELD)
        lock_abort("too many locks held taking", m, file, line);
}

static void push(const sop_mutex *m, const char *file, int line)
{
    held[nheld++] = (held_lock){m, file, line};
}

static void pop(const sop_mutex *m, const char *file, int line)
{
    int i = find_held(m);
    if (i < 0)
        lock_abort("unlock of lock not held", m, file, line);
    for (; i + 1 < nheld; i++)
        held[i] = held[i + 1];
    nheld--;
}

void sop_mutex__lock(sop_mutex *m, const char *file, int line)
{
    check_acquire(m, file, line);
    if (pthread_mutex_lock(&m->mu) != 0)
        lock_abort("pthread_mutex_lock failed on", m, file, line);
    push(m, file, line);
}

/* A trylock cannot deadlock, but its holder then takes locks above it: the
 * order is checked as for a lock. */
int sop_mutex__trylock(sop_mutex *m, const char *file, int line)
{
    check_acquire(m, file, line);
    int rc = pthread_mutex_trylock(&m->mu);
    if (rc == 0)
        push(m, file, line);
    return rc;
}

void sop_mutex__unlock(sop_mutex *m, const char *file, int line)
{
    pop(m, file, line);
    if (pthread_mutex_unlock(&m->mu) != 0)
        lock_abort("pthread_mutex_unlock failed on", m, file, line);
}

/* The wait releases and retakes m: it must be held, and it stays on the
 * stack across the wait (the thread takes nothing while blocked). */
int sop_mutex__wait(pthread_cond_t *cv, sop_mutex *m, const char *file, int line)
{
    if (find_held(m) < 0)
        lock_abort("condition wait without holding", m, file, line);
    return pthread_cond_wait(cv, &m->mu);
}

void sop_mutex__assert_held(const sop_mutex *m, int want, const char *file, int line)
{
    int is = find_held(m) >= 0;
    if (is != want)
        lock_abort(want ? "lock expected held but is not:" : "lock expected not held but is:", m,
                   file, line);
}

#else

/* ISO C forbids an empty translation unit. */
typedef int sop_lock_unused;

#endif /* SOP_LOCK_DEBUG */
