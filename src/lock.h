/*
 * lock.h - sop_mutex: a pthread mutex with a level and a name.
 *
 * Every mutex of libsop has a level (docs/DESIGN-NOTES.md, "Lock table"); a
 * thread takes locks in strictly increasing level order, so no cycle and no
 * deadlock is possible. With SOP_LOCK_DEBUG (defined by the debug and asan
 * builds) each thread keeps a stack of the locks it holds and the wrappers
 * abort with both locks' names, levels and file:line when that order is
 * broken, when a thread re-locks a lock it holds, or unlocks one it does not
 * hold; sop_mutex_assert_held() makes "X held" comments executable. Without
 * it the wrappers are inline pthread calls and the struct is the plain
 * mutex: release pays nothing.
 */
#ifndef SOP_LOCK_H
#define SOP_LOCK_H

#include <pthread.h>

#ifdef SOP_LOCK_DEBUG

typedef struct sop_mutex {
    pthread_mutex_t mu;
    int level;
    const char *name;
} sop_mutex;

int sop_mutex__init(sop_mutex *m, int level, const char *name);
void sop_mutex__lock(sop_mutex *m, const char *file, int line);
void sop_mutex__unlock(sop_mutex *m, const char *file, int line);
int sop_mutex__trylock(sop_mutex *m, const char *file, int line);
int sop_mutex__wait(pthread_cond_t *cv, sop_mutex *m, const char *file, int line);
void sop_mutex__assert_held(const sop_mutex *m, int held, const char *file, int line);

#define sop_mutex_init(m, level, name) sop_mutex__init((m), (level), (name))
#define sop_mutex_destroy(m)           pthread_mutex_destroy(&(m)->mu)
#define sop_mutex_lock(m)              sop_mutex__lock((m), __FILE__, __LINE__)
#define sop_mutex_unlock(m)            sop_mutex__unlock((m), __FILE__, __LINE__)
#define sop_mutex_trylock(m)           sop_mutex__trylock((m), __FILE__, __LINE__)
#define sop_mutex_wait(cv, m)          sop_mutex__wait((cv), (m), __FILE__, __LINE__)
#define sop_mutex_assert_held(m)       sop_mutex__assert_held((m), 1, __FILE__, __LINE__)
#define sop_mutex_assert_not_held(m)   sop_mutex__assert_held((m), 0, __FILE__, __LINE__)

#else

typedef struct sop_mutex {
    pthread_mutex_t mu;
} sop_mutex;

static inline int sop_mutex_init(sop_mutex *m, int level, const char *name)
{
    (void)level;
    (void)name;
    return pthread_mutex_init(&m->mu, NULL);
}
#define sop_mutex_destroy(m)         pthread_mutex_destroy(&(m)->mu)
#define sop_mutex_lock(m)            pthread_mutex_lock(&(m)->mu)
#define sop_mutex_unlock(m)          pthread_mutex_unlock(&(m)->mu)
#define sop_mutex_trylock(m)         pthread_mutex_trylock(&(m)->mu)
#define sop_mutex_wait(cv, m)        pthread_cond_wait((cv), &(m)->mu)
#define sop_mutex_assert_held(m)     ((void)(m))
#define sop_mutex_assert_not_held(m) ((void)(m))

#endif /* SOP_LOCK_DEBUG */

#endif /* SOP_LOCK_H */
