/*
 * test_2pc.c - two-phase commit mixed into concurrent histories, checked for
 * serializability, across crashes.
 *
 * Why: the concurrent and crash campaigns never prepared a transaction, so
 * nothing checked that a prepared transaction's writes count in the
 * validation of others from the moment it is prepared (issue 10 defect 2:
 * a commit that got SOP_BUSY behind a prepared writer and was retried after
 * phase 2 committed on a stale read - a lost update), nor that a prepared
 * transaction recovered by the next open can be committed when the cache is
 * far smaller than the tree (defect 3: a use after free).
 *
 *   test_2pc__prepared_writes_block_lost_updates
 *     the shapes of defect 2, deterministic: T1 and T2 read x and write x+1
 *     (or both write x blind); T1 prepares; T2's commit before and after
 *     T1's phase 2 (commit or rollback). The number of commits that returned
 *     SOP_OK must equal x (no lost update), and a blind second writer must
 *     not commit (SOP_BUSY or SOP_CONFLICT; either ends it).
 *   test_2pc__concurrent_bank_and_list_append
 *     ROUNDS rounds (SOP_2PC_ROUNDS, default 2) of threads running at once:
 *     bank transfers (read two accounts, move an amount) and list appends
 *     (read 1-3 lists, append a unique element to 1-2 of them), each ended
 *     at random by a plain commit, prepare + commit, prepare + rollback, or
 *     prepare and hand over to a resolver thread that commits or rolls back
 *     later; an auditor reads every account and list in read-only
 *     snapshots. SOP_BUSY (after a back-off) and SOP_CONFLICT redo the
 *     transaction (commit ends the handle whatever it returns). Each round
 *     ends with prepared transactions still open and a process crash
 *     (sop_db__crash_close); the next open must list exactly those
 *     (sop_db_prepared_list), which are committed or rolled back by id.
 *     Oracle: the bank total never changes (in any snapshot, and after
 *     each reopen); every element of a committed append is in its list
 *     exactly once, at the position right after the list its
 *     transaction read; no element of any other transaction appears; every
 *     list any snapshot read is a prefix of the final list; sop_db_check
 *     clean. Summary: "campaign 2pc: cases N failures F acked A".
 *   test_2pc__recovered_prepared_commit_small_cache
 *     20,000 keys, prepared transactions touching keys across the tree, a
 *     crash, reopen with a 1 MiB cache, commit (and roll back) them by id:
 *     every call SOP_OK, every value right, check clean. In a forked child,
 *     so a crash of the engine is a failure, not the end of the suite.
 */
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

#include "harness.h"
#include "tutil.h"

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static int get_int(int64_t *out, sop_txn *t, sop_store *s, const char *k)
{
    sop_val v;
    int rc = get_s(&v, t, s, k);
    if (rc == SOP_OK) {
        char b[32];
        snprintf(b, sizeof b, "%.*s", (int)v.len, (const char *)v.data);
        *out = strtoll(b, NULL, 10);
    }
    return rc;
}

static int put_int(sop_txn *t, sop_store *s, const char *k, int64_t x)
{
    char b[32];
    snprintf(b, sizeof b, "%" PRId64, x);
    return put_s(t, s, k, b);
}

/* ---- deterministic shapes of defect 2 ---------------------------------------------- */

/* x = 0; T1, T2 read x (unless blind) and write x+1; T1 prepares; then the
 * steps of @p order: 'c' T2 commits (the first 'c' ends T2 whatever the
 * result, SOP_BUSY too; later ones do nothing), '2' T1's phase 2 (commit,
 * or rollback if rollback). Returns 0 if x equals the number of SOP_OK
 * commits and a blind T2 did not commit over a committed T1. */
static int shape(sop_db *db, sop_store *s, const char *key, int blind, int rollback,
                 const char *order, char *why, size_t why_cap)
{
    sop_txn *t0, *t1, *t2;
    int64_t x = 0;
    int oks = 0, rc;
    if ((rc = sop_txn_begin(&t0, db, 0)) || (rc = put_int(t0, s, key, 0)) ||
        (rc = sop_txn_commit(t0)))
        return snprintf(why, why_cap, "setup: %s", sop_strerror(rc)), -1;
    if ((rc = sop_txn_begin(&t1, db, 0)) || (rc = sop_txn_begin(&t2, db, 0)))
        return snprintf(why, why_cap, "begin: %s", sop_strerror(rc)), -1;
    int64_t x1 = 0, x2 = 0;
    if (!blind && ((rc = get_int(&x1, t1, s, key)) || (rc = get_int(&x2, t2, s, key))))
        return snprintf(why, why_cap, "read: %s", sop_strerror(rc)), -1;
    if ((rc = put_int(t1, s, key, x1 + 1)) || (rc = put_int(t2, s, key, x2 + 1)))
        return snprintf(why, why_cap, "write: %s", sop_strerror(rc)), -1;
    if ((rc = sop_txn_prepare(t1, NULL)))
        return snprintf(why, why_cap, "T1 prepare: %s", sop_strerror(rc)), -1;
    int t1_committed = 0, t2_done = 0, t2_rc = 0;
    char trace[128] = "";
    for (const char *p = order; *p; p++) {
        if (*p == '2') {
            if (rollback) {
                sop_txn_abort(t1);
            } else {
                if ((rc = sop_txn_commit(t1)))
                    return snprintf(why, why_cap, "T1 phase 2: %s", sop_strerror(rc)), -1;
                oks++;
                t1_committed = 1;
            }
            strcat(trace, rollback ? " T1-rollback" : " T1-commit");
        } else if (!t2_done) {
            t2_rc = sop_txn_commit(t2);
            snprintf(trace + strlen(trace), sizeof trace - strlen(trace), " T2-commit=%s",
                     sop_strerror(t2_rc));
            t2_done = 1; /* the handle is ended, SOP_BUSY too */
            if (t2_rc == SOP_OK)
                oks++;
        }
    }
    if (!t2_done)
        sop_txn_abort(t2);
    sop_txn *tr;
    if ((rc = sop_txn_begin(&tr, db, SOP_TXN_READONLY)) || (rc = get_int(&x, tr, s, key)))
        return snprintf(why, why_cap, "final read: %s", sop_strerror(rc)), -1;
    sop_txn_abort(tr);
    if (!blind && x != oks) {
        snprintf(why, why_cap, "%d commits returned SOP_OK but x = %" PRId64 " (lost update):%s",
                 oks, x, trace);
        return -1;
    }
    if (blind && t1_committed && t2_done && t2_rc == SOP_OK) {
        snprintf(why, why_cap, "blind second writer after a committed prepared one:%s", trace);
        return -1;
    }
    return 0;
}

static const struct shape_def {
    int blind, rollback;
    const char *order;
} shapes[] = {
    {0, 0, "c2c"},                 /* T2 busy behind T1 (ended), T1 commits */
    {0, 0, "2c"},                  /* T1's phase 2 first, then T2 */
    {0, 0, "cc2c"}, {1, 0, "c2c"}, /* blind writers of one key */
    {1, 0, "2c"},   {0, 1, "c2c"}, /* T1 rolls back: T2's retry may commit */
    {0, 1, "2c"},   {1, 1, "c2c"},
};

/* Run the shapes with rollback == @p rollback; returns the failures. */
static int run_shapes(int rollback)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    if (sop_db_open(&db, test_dir(), NULL) || sop_txn_begin(&t, db, 0) ||
        sop_store_open(&s, t, "x", SOP_STORE_CREATE, NULL) || sop_txn_commit(t)) {
        fprintf(stderr, "  setup: %s\n", sop_errmsg());
        return 1;
    }
    int failures = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        char key[16], why[256] = "";
        if (shapes[i].rollback != rollback)
            continue;
        snprintf(key, sizeof key, "x%zu", i);
        if (shape(db, s, key, shapes[i].blind, shapes[i].rollback, shapes[i].order, why,
                  sizeof why) != 0) {
            fprintf(stderr, "  shape %s%s order %s: %s\n", shapes[i].blind ? "blind" : "read-write",
                    shapes[i].rollback ? " rollback" : "", shapes[i].order, why);
            failures++;
        }
    }
    failures += check_db(db) != 0;
    failures += sop_db_close(db) != SOP_OK;
    return failures;
}

/* Phase 2 commit of T1: T2 (stale read, or blind write) must not commit. */
TEST(test_2pc__prepared_writes_block_lost_updates)
{
    CHECK(run_shapes(0) == 0);
}

/* Phase 2 rollback of T1: T2 waited (SOP_BUSY) and may then commit. */
TEST(test_2pc__prepared_rollback_releases_its_keys)
{
    CHECK(run_shapes(1) == 0);
}

/* ---- concurrent bank and list-append histories --------------------------------------- */

#define ACCOUNTS        8
#define INITIAL_BALANCE 1000
#define LISTS           8
#define BANK_THREADS    2
#define LIST_THREADS    2
#define TXNS_PER_THREAD 150
#define MAX_HANDOFF     64

enum { END_COMMIT, END_PREPARE_COMMIT, END_PREPARE_ROLLBACK, END_HANDOFF, END_KINDS };
enum { OUT_PENDING, OUT_COMMITTED, OUT_ABORTED };

/* One list-append transaction (or an auditor's snapshot: no appends). */
typedef struct la_rec {
    int outcome;
    uint64_t prepared_id; /* left prepared at a crash: resolved by id after reopen */
    int nreads, nappends;
    int rkey[LISTS];
    char *rval[LISTS]; /* the list read ("" if absent) */
    int akey[2];
    int64_t elem[2];
} la_rec;

typedef struct handoff {
    sop_txn *t;
    la_rec *rec; /* NULL for a bank transfer */
} handoff;

typedef struct world {
    sop_db *db;
    sop_store *bank, *list;
    pthread_mutex_t mu;
    la_rec **recs;
    size_t nrecs, cap;
    handoff q[MAX_HANDOFF];
    int nq;
    int stop, failed; /* read with __atomic by the threads */
    int round;
    uint64_t commits, prepares, rollbacks, busy, conflicts, audits;
    char why[512];
} world;

static void w_fail(world *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#include <stdarg.h>
static void w_fail(world *w, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&w->mu);
    if (!w->failed) {
        va_start(ap, fmt);
        vsnprintf(w->why, sizeof w->why, fmt, ap);
        va_end(ap);
        __atomic_store_n(&w->failed, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&w->mu);
}

static int running_failed(world *w)
{
    return __atomic_load_n(&w->failed, __ATOMIC_ACQUIRE);
}

static void add_rec(world *w, la_rec *r)
{
    pthread_mutex_lock(&w->mu);
    if (w->nrecs == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 256;
        w->recs = realloc(w->recs, w->cap * sizeof *w->recs);
    }
    w->recs[w->nrecs++] = r;
    pthread_mutex_unlock(&w->mu);
}

/* Commit @p t (which ends it whatever the result); SOP_BUSY is counted
 * and backed off from, and the caller redoes the transaction. */
static int commit_retry(world *w, sop_txn *t)
{
    int rc = sop_txn_commit(t);
    if (rc == SOP_BUSY) {
        __atomic_fetch_add(&w->busy, 1, __ATOMIC_RELAXED);
        usleep(100);
    }
    return rc;
}

static int prepare_retry(world *w, sop_txn *t)
{
    for (int i = 0;; i++) {
        int rc = sop_txn_prepare(t, NULL);
        if (rc != SOP_BUSY)
            return rc;
        __atomic_fetch_add(&w->busy, 1, __ATOMIC_RELAXED);
        if (i == 200)
            return SOP_BUSY;
        usleep(100);
    }
}

/*
 * End @p t as @p how says. Returns OUT_COMMITTED / OUT_ABORTED for an
 * outcome known now, OUT_PENDING when handed to the resolver, -1 for a
 * conflict or busy (redo), -2 for an unexpected error (w_fail called).
 */
static int end_txn(world *w, sop_txn *t, int how, la_rec *rec)
{
    int rc;
    if (how == END_COMMIT) {
        rc = commit_retry(w, t);
    } else {
        rc = prepare_retry(w, t);
        if (rc == SOP_CONFLICT || rc == SOP_BUSY) {
            sop_txn_abort(t);
            __atomic_fetch_add(&w->conflicts, 1, __ATOMIC_RELAXED);
            return -1;
        }
        if (rc) {
            sop_txn_abort(t);
            w_fail(w, "prepare: %s: %s", sop_strerror(rc), sop_errmsg());
            return -2;
        }
        __atomic_fetch_add(&w->prepares, 1, __ATOMIC_RELAXED);
        if (how == END_PREPARE_ROLLBACK) {
            sop_txn_abort(t);
            __atomic_fetch_add(&w->rollbacks, 1, __ATOMIC_RELAXED);
            return OUT_ABORTED;
        }
        if (how == END_HANDOFF) {
            pthread_mutex_lock(&w->mu);
            if (w->nq < MAX_HANDOFF) {
                if (rec)
                    rec->prepared_id = sop_txn_id(t);
                w->q[w->nq++] = (handoff){t, rec};
                pthread_mutex_unlock(&w->mu);
                return OUT_PENDING;
            }
            pthread_mutex_unlock(&w->mu);
        }
        rc = sop_txn_commit(t); /* phase 2 must succeed */
        if (rc) {
            w_fail(w, "phase 2 commit: %s: %s", sop_strerror(rc), sop_errmsg());
            return -2;
        }
    }
    if (rc == SOP_CONFLICT || rc == SOP_BUSY) {
        __atomic_fetch_add(&w->conflicts, 1, __ATOMIC_RELAXED);
        return -1;
    }
    if (rc) {
        w_fail(w, "commit: %s: %s", sop_strerror(rc), sop_errmsg());
        return -2;
    }
    __atomic_fetch_add(&w->commits, 1, __ATOMIC_RELAXED);
    return OUT_COMMITTED;
}

typedef struct worker {
    world *w;
    pthread_t th;
    int id;
    uint64_t rng;
} worker;

static uint64_t wrand(worker *k)
{
    return k->rng = mix(k->rng);
}

static void *bank_main(void *arg)
{
    worker *k = arg;
    world *w = k->w;
    for (int n = 0; n < TXNS_PER_THREAD && !running_failed(w);) {
        int a = (int)(wrand(k) % ACCOUNTS), b = (int)(wrand(k) % (ACCOUNTS - 1));
        b += b >= a;
        int64_t amt = (int64_t)(wrand(k) % 50), ba, bb;
        char ka[16], kb[16];
        snprintf(ka, sizeof ka, "a%d", a);
        snprintf(kb, sizeof kb, "a%d", b);
        sop_txn *t;
        int rc;
        if ((rc = sop_txn_begin(&t, w->db, 0)) || (rc = get_int(&ba, t, w->bank, ka)) ||
            (rc = get_int(&bb, t, w->bank, kb)) || (rc = put_int(t, w->bank, ka, ba - amt)) ||
            (rc = put_int(t, w->bank, kb, bb + amt))) {
            sop_txn_abort(t);
            w_fail(w, "bank transfer: %s: %s", sop_strerror(rc), sop_errmsg());
            return NULL;
        }
        int out = end_txn(w, t, (int)(wrand(k) % END_KINDS), NULL);
        if (out == -2)
            return NULL;
        n += out >= 0;
    }
    return NULL;
}

static char *dup_val(const sop_val *v)
{
    char *s = malloc(v->len + 1);
    memcpy(s, v->data, v->len);
    s[v->len] = 0;
    return s;
}

static void rec_free(la_rec *r)
{
    for (int i = 0; i < r->nreads; i++)
        free(r->rval[i]);
    free(r);
}

static void *list_main(void *arg)
{
    worker *k = arg;
    world *w = k->w;
    int64_t attempt = 0;
    for (int n = 0; n < TXNS_PER_THREAD && !running_failed(w);) {
        attempt++;
        la_rec *r = calloc(1, sizeof *r);
        int nread = 1 + (int)(wrand(k) % 3), used[LISTS] = {0};
        r->nappends = 1 + (int)(wrand(k) % 2);
        if (r->nappends > nread)
            r->nappends = nread;
        sop_txn *t;
        int rc = sop_txn_begin(&t, w->db, 0);
        for (int i = 0; i < nread && rc == SOP_OK; i++) {
            int key;
            do
                key = (int)(wrand(k) % LISTS);
            while (used[key]);
            used[key] = 1;
            char kb[16];
            sop_val v;
            snprintf(kb, sizeof kb, "l%d", key);
            rc = get_s(&v, t, w->list, kb);
            if (rc == SOP_NOTFOUND) {
                v = (sop_val){"", 0};
                rc = SOP_OK;
            }
            if (rc)
                break;
            r->rkey[r->nreads] = key;
            r->rval[r->nreads++] = dup_val(&v);
            if (i < r->nappends) { /* append to the first lists read */
                int64_t e = ((int64_t)w->round << 40) + ((int64_t)k->id << 32) + attempt * 4 + i;
                char nv[16384];
                snprintf(nv, sizeof nv, "%s%s%" PRId64, r->rval[r->nreads - 1], v.len ? "," : "",
                         e);
                r->akey[i] = key;
                r->elem[i] = e;
                rc = put_s(t, w->list, kb, nv);
            }
        }
        if (rc) {
            sop_txn_abort(t);
            rec_free(r);
            w_fail(w, "list append: %s: %s", sop_strerror(rc), sop_errmsg());
            return NULL;
        }
        /* A transaction that will be redone records its elements as aborted:
         * none of them may appear. */
        add_rec(w, r);
        int out = end_txn(w, t, (int)(wrand(k) % END_KINDS), r);
        if (out == -2)
            return NULL;
        if (out != OUT_PENDING) /* else the resolver (or the reopen) decides it */
            __atomic_store_n(&r->outcome, out == -1 ? OUT_ABORTED : out, __ATOMIC_RELEASE);
        n += out >= 0;
    }
    return NULL;
}

/* Bank total and a list snapshot, read-only. */
static int audit(world *w, int record)
{
    sop_txn *t;
    int64_t total = 0, b;
    char kb[16];
    int rc = sop_txn_begin(&t, w->db, SOP_TXN_READONLY);
    for (int i = 0; i < ACCOUNTS && rc == SOP_OK; i++) {
        snprintf(kb, sizeof kb, "a%d", i);
        if ((rc = get_int(&b, t, w->bank, kb)) == SOP_OK)
            total += b;
    }
    la_rec *r = record ? calloc(1, sizeof *r) : NULL;
    for (int i = 0; i < LISTS && rc == SOP_OK && r; i++) {
        sop_val v;
        snprintf(kb, sizeof kb, "l%d", i);
        rc = get_s(&v, t, w->list, kb);
        if (rc == SOP_NOTFOUND)
            v = (sop_val){"", 0}, rc = SOP_OK;
        if (rc == SOP_OK) {
            r->rkey[r->nreads] = i;
            r->rval[r->nreads++] = dup_val(&v);
        }
    }
    sop_txn_abort(t);
    if (rc) {
        if (r)
            rec_free(r);
        w_fail(w, "audit: %s: %s", sop_strerror(rc), sop_errmsg());
        return -1;
    }
    if (r) {
        r->outcome = OUT_COMMITTED;
        add_rec(w, r);
    }
    __atomic_fetch_add(&w->audits, 1, __ATOMIC_RELAXED);
    if (total != ACCOUNTS * INITIAL_BALANCE) {
        w_fail(w, "bank total %" PRId64 " in a snapshot, expected %d", total,
               ACCOUNTS * INITIAL_BALANCE);
        return -1;
    }
    return 0;
}

static void *auditor_main(void *arg)
{
    world *w = arg;
    while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE) && !running_failed(w)) {
        audit(w, 1);
        usleep(2000);
    }
    return NULL;
}

/* Resolve handed-over prepared transactions, keeping up to @p keep open. */
static void resolve_some(world *w, uint64_t *rng, int keep)
{
    for (;;) {
        pthread_mutex_lock(&w->mu);
        if (w->nq <= keep) {
            pthread_mutex_unlock(&w->mu);
            return;
        }
        *rng = mix(*rng);
        int i = (int)(*rng % (uint64_t)w->nq);
        handoff h = w->q[i];
        w->q[i] = w->q[--w->nq];
        pthread_mutex_unlock(&w->mu);
        if (*rng >> 63) {
            sop_txn_abort(h.t);
            __atomic_fetch_add(&w->rollbacks, 1, __ATOMIC_RELAXED);
            if (h.rec)
                __atomic_store_n(&h.rec->outcome, OUT_ABORTED, __ATOMIC_RELEASE);
        } else {
            int rc = sop_txn_commit(h.t);
            if (rc) {
                w_fail(w, "resolver phase 2 commit: %s: %s", sop_strerror(rc), sop_errmsg());
                return;
            }
            __atomic_fetch_add(&w->commits, 1, __ATOMIC_RELAXED);
            if (h.rec)
                __atomic_store_n(&h.rec->outcome, OUT_COMMITTED, __ATOMIC_RELEASE);
        }
    }
}

typedef struct resolver {
    world *w;
    pthread_t th;
    uint64_t rng;
} resolver;

static void *resolver_main(void *arg)
{
    resolver *r = arg;
    while (!__atomic_load_n(&r->w->stop, __ATOMIC_ACQUIRE) && !running_failed(r->w)) {
        resolve_some(r->w, &r->rng, 0);
        usleep(300);
    }
    return NULL;
}

/* Parse "1,2,3" into elems (returns the count). */
static size_t parse_list(const char *s, int64_t **out)
{
    size_t n = 0, cap = 16;
    int64_t *a = malloc(cap * sizeof *a);
    while (*s) {
        if (n == cap)
            a = realloc(a, (cap *= 2) * sizeof *a);
        char *end;
        a[n++] = strtoll(s, &end, 10);
        s = *end == ',' ? end + 1 : end;
        if (end == s && *s)
            break;
    }
    *out = a;
    return n;
}

/* The final check of the list-append history against the database. */
static int check_lists(world *w, char *why, size_t cap)
{
    sop_txn *t;
    char kb[16];
    char *final[LISTS];
    int64_t *el[LISTS];
    size_t nel[LISTS];
    int rc = sop_txn_begin(&t, w->db, SOP_TXN_READONLY), bad = 0;
    for (int i = 0; i < LISTS; i++) {
        sop_val v = {"", 0};
        snprintf(kb, sizeof kb, "l%d", i);
        int r = rc ? rc : get_s(&v, t, w->list, kb);
        if (r == SOP_NOTFOUND)
            v = (sop_val){"", 0};
        else if (r && !rc)
            rc = r;
        final[i] = dup_val(&v);
        nel[i] = parse_list(final[i], &el[i]);
    }
    sop_txn_abort(t);
    if (rc) {
        snprintf(why, cap, "reading the lists: %s", sop_strerror(rc));
        bad = 1;
    }
    for (size_t i = 0; i < w->nrecs && !bad; i++) {
        la_rec *r = w->recs[i];
        int committed = r->outcome == OUT_COMMITTED;
        if (r->outcome == OUT_PENDING) {
            snprintf(why, cap, "a transaction's outcome was never decided");
            bad = 1;
            break;
        }
        for (int j = 0; j < r->nreads && committed && !bad; j++) {
            size_t len = strlen(r->rval[j]);
            const char *f = final[r->rkey[j]];
            if (strncmp(f, r->rval[j], len) != 0 || (len && f[len] && f[len] != ',')) {
                snprintf(why, cap,
                         "list l%d: a committed read saw '%.60s', not a prefix of the "
                         "final '%.60s'",
                         r->rkey[j], r->rval[j], f);
                bad = 1;
            }
        }
        for (int j = 0; j < r->nappends && !bad; j++) {
            int found = 0;
            size_t pos = 0;
            for (int l = 0; l < LISTS; l++)
                for (size_t e = 0; e < nel[l]; e++)
                    if (el[l][e] == r->elem[j]) {
                        found += 1 + (l != r->akey[j]) * 1000;
                        pos = e;
                    }
            int64_t *rd;
            size_t nrd = parse_list(r->rval[j], &rd);
            free(rd);
            if (committed && found != 1)
                snprintf(why, cap, "committed append %" PRId64 " to l%d found %d times%s",
                         r->elem[j], r->akey[j], found % 1000,
                         found >= 1000 ? " (other list)" : ""),
                    bad = 1;
            else if (committed && pos != nrd)
                snprintf(why, cap,
                         "committed append %" PRId64 " to l%d at position %zu, but its txn read "
                         "%zu elements (lost or reordered update)",
                         r->elem[j], r->akey[j], pos, nrd),
                    bad = 1;
            else if (!committed && found)
                snprintf(why, cap, "append %" PRId64 " of a transaction that did not commit is in",
                         r->elem[j]),
                    bad = 1;
        }
    }
    for (int i = 0; i < LISTS; i++) {
        free(final[i]);
        free(el[i]);
    }
    return bad ? -1 : 0;
}

/* Prepare a transfer a0 -> a1 and an append to l0 and leave both in the
 * handover queue (the crash that follows abandons them). */
static int leave_prepared(world *w, int round)
{
    sop_txn *t;
    int64_t a0, a1;
    sop_val v;
    int rc;
    if ((rc = sop_txn_begin(&t, w->db, 0)) || (rc = get_int(&a0, t, w->bank, "a0")) ||
        (rc = get_int(&a1, t, w->bank, "a1")) || (rc = put_int(t, w->bank, "a0", a0 - 1)) ||
        (rc = put_int(t, w->bank, "a1", a1 + 1)) || (rc = sop_txn_prepare(t, NULL))) {
        fprintf(stderr, "leave_prepared transfer: %s: %s\n", sop_strerror(rc), sop_errmsg());
        sop_txn_abort(t);
        return -1;
    }
    w->q[w->nq++] = (handoff){t, NULL};
    la_rec *r = calloc(1, sizeof *r);
    if ((rc = sop_txn_begin(&t, w->db, 0)) ||
        ((rc = get_s(&v, t, w->list, "l0")) && rc != SOP_NOTFOUND)) {
        fprintf(stderr, "leave_prepared append: %s: %s\n", sop_strerror(rc), sop_errmsg());
        sop_txn_abort(t);
        free(r);
        return -1;
    }
    if (rc == SOP_NOTFOUND)
        v = (sop_val){"", 0};
    char nv[16384];
    r->nreads = r->nappends = 1;
    r->rkey[0] = r->akey[0] = 0;
    r->rval[0] = dup_val(&v);
    r->elem[0] = ((int64_t)round << 40) + (999ll << 32);
    snprintf(nv, sizeof nv, "%s%s%" PRId64, r->rval[0], v.len ? "," : "", r->elem[0]);
    add_rec(w, r);
    if ((rc = put_s(t, w->list, "l0", nv)) || (rc = sop_txn_prepare(t, NULL))) {
        fprintf(stderr, "leave_prepared append: %s: %s\n", sop_strerror(rc), sop_errmsg());
        sop_txn_abort(t);
        r->outcome = OUT_ABORTED;
        return -1;
    }
    w->prepares += 2;
    w->q[w->nq++] = (handoff){t, r};
    return 0;
}

static int open_world(world *w, const char *dir, int create)
{
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.segment_bytes = 1u << 20;
    sop_txn *t;
    int rc = sop_db_open(&w->db, dir, &o);
    if (rc)
        return rc;
    if ((rc = sop_txn_begin(&t, w->db, 0)) ||
        (rc = sop_store_open(&w->bank, t, "bank", SOP_STORE_CREATE, NULL)) ||
        (rc = sop_store_open(&w->list, t, "list", SOP_STORE_CREATE, NULL))) {
        sop_txn_abort(t);
        return rc;
    }
    for (int i = 0; i < ACCOUNTS && create && rc == SOP_OK; i++) {
        char kb[16];
        snprintf(kb, sizeof kb, "a%d", i);
        rc = put_int(t, w->bank, kb, INITIAL_BALANCE);
    }
    if (rc) {
        sop_txn_abort(t);
        return rc;
    }
    return sop_txn_commit(t);
}

TEST(test_2pc__concurrent_bank_and_list_append)
{
    int rounds = getenv("SOP_2PC_ROUNDS") ? atoi(getenv("SOP_2PC_ROUNDS")) : 2;
    static world w;
    memset(&w, 0, sizeof w);
    pthread_mutex_init(&w.mu, NULL);
    uint64_t rng = mix(test_seed), by_id = 0, cases = 0;
    CHECK_OK(open_world(&w, test_dir(), 1));
    for (int round = 0; round < rounds && !w.failed; round++) {
        w.round = round;
        __atomic_store_n(&w.stop, 0, __ATOMIC_RELEASE);
        worker wk[BANK_THREADS + LIST_THREADS];
        resolver rs = {&w, 0, mix(rng + 1)};
        pthread_t aud;
        pthread_create(&aud, NULL, auditor_main, &w);
        pthread_create(&rs.th, NULL, resolver_main, &rs);
        for (int i = 0; i < BANK_THREADS + LIST_THREADS; i++) {
            wk[i] = (worker){&w, 0, i, mix(test_seed * 977 + (uint64_t)round * 31 + (uint64_t)i)};
            pthread_create(&wk[i].th, NULL, i < BANK_THREADS ? bank_main : list_main, &wk[i]);
        }
        for (int i = 0; i < BANK_THREADS + LIST_THREADS; i++)
            pthread_join(wk[i].th, NULL);
        __atomic_store_n(&w.stop, 1, __ATOMIC_RELEASE);
        pthread_join(rs.th, NULL);
        pthread_join(aud, NULL);
        cases++;
        /* Two prepared transactions stay open across the crash: one transfer
         * and one append, prepared once everything else is resolved. */
        resolve_some(&w, &rng, 0);
        CHECK(leave_prepared(&w, round) == 0);
        uint64_t left[MAX_HANDOFF];
        la_rec *left_rec[MAX_HANDOFF];
        int nleft = w.nq;
        for (int i = 0; i < nleft; i++) {
            left[i] = sop_txn_id(w.q[i].t);
            left_rec[i] = w.q[i].rec;
        }
        w.nq = 0;
        CHECK_OK(sop_db__crash_close(w.db)); /* the handles die with it */
        CHECK_OK(open_world(&w, test_dir(), 0));
        sop_prepared_info info[MAX_HANDOFF + 1];
        size_t n = 0;
        CHECK_OK(sop_db_prepared_list(info, MAX_HANDOFF + 1, &n, w.db));
        if (n != (size_t)nleft) {
            FAIL_AT("round %d: %zu prepared after reopen, %d were open at the crash", round, n,
                    nleft);
            break;
        }
        for (int i = 0; i < nleft; i++) {
            size_t j = 0;
            while (j < n && info[j].id != left[i])
                j++;
            CHECK(j < n);
            rng = mix(rng);
            int commit = (int)(rng & 1);
            int rc = commit ? sop_db_prepared_commit(w.db, left[i])
                            : sop_db_prepared_rollback(w.db, left[i]);
            if (rc) {
                FAIL_AT("round %d: prepared %s of id %" PRIu64 " after reopen: %s: %s", round,
                        commit ? "commit" : "rollback", left[i], sop_strerror(rc), sop_errmsg());
                break;
            }
            by_id++;
            if (left_rec[i])
                left_rec[i]->outcome = commit ? OUT_COMMITTED : OUT_ABORTED;
        }
        if (test_failed_flag)
            break;
        CHECK_OK(sop_db_prepared_list(info, 1, &n, w.db));
        CHECK_EQ_U64(n, 0);
        audit(&w, 0);
        if (check_db(w.db) != 0)
            w_fail(&w, "round %d: sop_db_check findings after reopen", round);
    }
    char why[512] = "";
    if (!w.failed && !test_failed_flag && check_lists(&w, why, sizeof why) != 0)
        w_fail(&w, "%s", why);
    if (w.db)
        sop_db_close(w.db);
    printf("campaign 2pc: cases %" PRIu64 " failures %d acked %" PRIu64 " (%" PRIu64
           " prepares, %" PRIu64 " rollbacks, %" PRIu64 " resolved by id after a crash, %" PRIu64
           " busy, %" PRIu64 " conflicts, %" PRIu64 " audits)\n",
           cases, w.failed || test_failed_flag, w.commits, w.prepares, w.rollbacks, by_id, w.busy,
           w.conflicts, w.audits);
    for (size_t i = 0; i < w.nrecs; i++)
        rec_free(w.recs[i]);
    free(w.recs);
    pthread_mutex_destroy(&w.mu);
    if (w.failed)
        FAIL_AT("%s", w.why);
    CHECK(w.prepares > 0 && by_id > 0);
}

/* ---- a recovered prepared transaction under a small cache ---------------------------- */

#define SC_KEYS     20000
#define SC_PREPARED 4

/* Prepared transaction p (of SC_PREPARED) writes the keys j with
 * j % (step * SC_PREPARED) == p: from a few hundred keys to thousands. */
static int small_cache_child(const char *dir, int step)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    char kb[32], vb[160];
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.segment_bytes = 4u << 20;
    CHECK_OK_RET(sop_db_open(&db, dir, &o));
    for (int i = 0; i < SC_KEYS; i += 1000) {
        CHECK_OK_RET(sop_txn_begin(&t, db, 0));
        CHECK_OK_RET(sop_store_open(&s, t, "big", SOP_STORE_CREATE, NULL));
        for (int j = i; j < i + 1000; j++) {
            snprintf(kb, sizeof kb, "key%08d", j);
            snprintf(vb, sizeof vb, "base value %d %0100d", j, j);
            CHECK_OK_RET(put_s(t, s, kb, vb));
        }
        CHECK_OK_RET(sop_txn_commit(t));
    }
    CHECK_OK_RET(sop_db_checkpoint(db));
    /* prepared transactions over keys spread across the whole tree */
    for (int p = 0; p < SC_PREPARED; p++) {
        CHECK_OK_RET(sop_txn_begin(&t, db, 0));
        for (int j = p; j < SC_KEYS; j += step * SC_PREPARED) {
            snprintf(kb, sizeof kb, "key%08d", j);
            snprintf(vb, sizeof vb, "prepared %d value %d", p, j);
            CHECK_OK_RET(put_s(t, s, kb, vb));
        }
        CHECK_OK_RET(sop_txn_prepare(t, NULL));
        forget_txn(t);
    }
    CHECK_OK_RET(sop_db__crash_close(db));
    o.cache_bytes = 1u << 20;
    CHECK_OK_RET(sop_db_open(&db, dir, &o));
    sop_prepared_info info[SC_PREPARED + 1];
    size_t n;
    CHECK_OK_RET(sop_db_prepared_list(info, SC_PREPARED + 1, &n, db));
    if (n != SC_PREPARED) {
        fprintf(stderr, "%zu prepared after reopen, expected %d\n", n, SC_PREPARED);
        return -100;
    }
    /* oldest first: p = 0..3; commit the even ones, roll back the odd ones */
    for (int p = 0; p < SC_PREPARED; p++) {
        int rc = p % 2 ? sop_db_prepared_rollback(db, info[p].id)
                       : sop_db_prepared_commit(db, info[p].id);
        if (rc) {
            fprintf(stderr, "prepared %s of #%d: %s: %s\n", p % 2 ? "rollback" : "commit", p,
                    sop_strerror(rc), sop_errmsg());
            return rc;
        }
    }
    for (int pass = 0; pass < 2; pass++) {
        CHECK_OK_RET(sop_txn_begin(&t, db, SOP_TXN_READONLY));
        CHECK_OK_RET(sop_store_open(&s, t, "big", 0, NULL));
        for (int j = 0; j < SC_KEYS; j++) {
            sop_val v;
            int p = j % (step * SC_PREPARED);
            snprintf(kb, sizeof kb, "key%08d", j);
            if (p < SC_PREPARED && p % 2 == 0)
                snprintf(vb, sizeof vb, "prepared %d value %d", p, j);
            else
                snprintf(vb, sizeof vb, "base value %d %0100d", j, j);
            CHECK_OK_RET(get_s(&v, t, s, kb));
            if (v.len != strlen(vb) || memcmp(v.data, vb, v.len) != 0) {
                fprintf(stderr, "%s is '%.*s', expected '%s'\n", kb, (int)v.len,
                        (const char *)v.data, vb);
                return -101;
            }
        }
        sop_txn_abort(t);
        if (check_db(db) != 0)
            return -102;
        CHECK_OK_RET(sop_db_close(db));
        CHECK_OK_RET(sop_db_open(&db, dir, &o));
    }
    return sop_db_close(db);
}

TEST(test_2pc__recovered_prepared_commit_small_cache)
{
    static const int steps[] = {97, 40, 7};
    int failures = 0;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        char dir[600];
        snprintf(dir, sizeof dir, "%s/stride-%d", test_dir(), steps[i]);
        fflush(NULL);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0)
            _exit(small_cache_child(dir, steps[i]) == SOP_OK ? 0 : 1);
        int st;
        waitpid(pid, &st, 0);
        if (WIFSIGNALED(st))
            fprintf(stderr, "  stride %d: the child died with signal %d\n", steps[i], WTERMSIG(st));
        else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            fprintf(stderr, "  stride %d: failed (above)\n", steps[i]);
        else
            continue;
        failures++;
    }
    CHECK(failures == 0);
}

TEST_MAIN(T(test_2pc__prepared_writes_block_lost_updates),
          T(test_2pc__prepared_rollback_releases_its_keys),
          T(test_2pc__concurrent_bank_and_list_append),
          T(test_2pc__recovered_prepared_commit_small_cache))
