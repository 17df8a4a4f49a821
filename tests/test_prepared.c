/*
 * test_prepared.c - two-phase commit against concurrent transactions: a
 * prepared transaction's writes count in validation exactly as a committed
 * transaction's do, from the moment it is prepared (issue 10, defect 2);
 * committing a recovered prepared transaction under a small cache (defect
 * 3); bank and list-append histories with prepare / commit-prepared /
 * rollback-prepared mixed in, in several threads.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "harness.h"
#include "tutil.h"

#include "txn.h" /* white-box: sop_txn__replay, db->applied_lsn */

#define CHECK_MSG_HAS(needle) CHECK(strstr(sop_errmsg(), (needle)) != NULL)

static sop_db *open_db(sop_sync_mode sync)
{
    sop_db *db = NULL;
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.sync = sync;
    if (sop_db_open(&db, test_dir(), &o) != SOP_OK)
        return NULL;
    return db;
}

static int make_store(sop_db *db, const char *name, sop_store **out)
{
    sop_txn *t;
    int rc = sop_txn_begin(&t, db, 0);
    if (rc)
        return rc;
    if ((rc = sop_store_open(out, t, name, SOP_STORE_CREATE, NULL)) != SOP_OK) {
        sop_txn_abort(t);
        return rc;
    }
    return sop_txn_commit(t);
}

/* x += 1 in t: read x (joins the read set), write the successor. */
static int incr(sop_txn *t, sop_store *s, const char *key)
{
    sop_val v;
    char buf[32];
    int rc = get_s(&v, t, s, key);
    long n = 0;
    if (rc == SOP_OK) {
        snprintf(buf, sizeof buf, "%.*s", (int)v.len, (const char *)v.data);
        n = strtol(buf, NULL, 10);
    } else if (rc != SOP_NOTFOUND) {
        return rc;
    }
    snprintf(buf, sizeof buf, "%ld", n + 1);
    return put_s(t, s, key, buf);
}

static int read_s(char *out, size_t cap, sop_db *db, sop_store *s, const char *key)
{
    sop_txn *t;
    sop_val v;
    int rc = sop_txn_begin(&t, db, SOP_TXN_READONLY);
    if (rc)
        return rc;
    rc = get_s(&v, t, s, key);
    if (rc == SOP_OK)
        snprintf(out, cap, "%.*s", (int)v.len, (const char *)v.data);
    sop_txn_abort(t);
    return rc;
}

/* Issue 10 defect 2, first history: T1 and T2 read x = 0 and write x + 1;
 * T1 prepares; T2's commit says BUSY (or CONFLICT) and ends T2; T1
 * commits; x is 1 (one increment acknowledged), and T2 redone from the
 * start reads 1 and commits 2. */
TEST(test_prepared__busy_retry_after_commit_prepared_conflicts)
{
    sop_db *db = open_db(SOP_SYNC_NORMAL);
    sop_store *s;
    sop_txn *t1, *t2;
    char buf[32];
    CHECK(db);
    CHECK_OK(make_store(db, "s", &s));
    CHECK_OK(sop_txn_begin(&t1, db, 0));
    CHECK_OK(put_s(t1, s, "x", "0"));
    CHECK_OK(sop_txn_commit(t1));
    CHECK_OK(sop_txn_begin(&t1, db, 0));
    CHECK_OK(sop_txn_begin(&t2, db, 0));
    CHECK_OK(incr(t1, s, "x"));
    CHECK_OK(incr(t2, s, "x"));
    CHECK_OK(sop_txn_prepare(t1, NULL));
    int rc = sop_txn_commit(t2);
    CHECK(rc == SOP_BUSY || rc == SOP_CONFLICT);
    CHECK_OK(sop_txn_commit(t1)); /* phase 2 */
    CHECK_OK(read_s(buf, sizeof buf, db, s, "x"));
    CHECK(strcmp(buf, "1") == 0);
    CHECK_OK(sop_txn_begin(&t2, db, 0)); /* the retry: a new transaction */
    CHECK_OK(incr(t2, s, "x"));
    CHECK_OK(sop_txn_commit(t2));
    CHECK_OK(read_s(buf, sizeof buf, db, s, "x"));
    CHECK(strcmp(buf, "2") == 0);
    CHECK_EQ_U64(check_db(db), 0);
    CHECK_OK(sop_db_close(db));
}

/* The same when T1's phase 2 runs before T2's first commit. */
TEST(test_prepared__commit_after_commit_prepared_conflicts)
{
    sop_db *db = open_db(SOP_SYNC_NORMAL);
    sop_store *s;
    sop_txn *t1, *t2;
    char buf[32];
    CHECK(db);
    CHECK_OK(make_store(db, "s", &s));
    CHECK_OK(sop_txn_begin(&t1, db, 0));
    CHECK_OK(sop_txn_begin(&t2, db, 0));
    CHECK_OK(incr(t1, s, "x"));
    CHECK_OK(incr(t2, s, "x"));
    CHECK_OK(sop_txn_prepare(t1, NULL));
    CHECK_OK(sop_txn_commit(t1));
    CHECK_RC(SOP_CONFLICT, sop_txn_commit(t2));
    CHECK_OK(read_s(buf, sizeof buf, db, s, "x"));
    CHECK(strcmp(buf, "1") == 0);
    CHECK_OK(sop_db_close(db));
}

/* Two blind writers of one key: first committer (here: first preparer)
 * wins, the second gets SOP_BUSY or SOP_CONFLICT, whether phase 2 commits
 * by handle or by id; a handle whose prepared txn was committed by id
 * aborts with SOP_NOTFOUND. */
TEST(test_prepared__blind_writer_after_prepare_conflicts)
{
    sop_db *db = open_db(SOP_SYNC_NORMAL);
    sop_store *s;
    char buf[32];
    CHECK(db);
    CHECK_OK(make_store(db, "s", &s));
    for (int by_id = 0; by_id < 2; by_id++) {
        sop_txn *t1, *t2;
        CHECK_OK(sop_txn_begin(&t1, db, 0));
        CHECK_OK(sop_txn_begin(&t2, db, 0));
        CHECK_OK(put_s(t1, s, "k", by_id ? "t1-by-id" : "t1"));
        CHECK_OK(put_s(t2, s, "k", "t2"));
        CHECK_OK(sop_txn_prepare(t1, NULL));
        int rc = sop_txn_commit(t2);
        CHECK(rc == SOP_BUSY || rc == SOP_CONFLICT);
        if (by_id) {
            CHECK_OK(sop_db_prepared_commit(db, sop_txn_id(t1)));
            CHECK_RC(SOP_NOTFOUND, sop_txn_abort(t1)); /* resolved by id already */
        } else {
            CHECK_OK(sop_txn_commit(t1));
        }
        CHECK_OK(read_s(buf, sizeof buf, db, s, "k"));
        CHECK(strcmp(buf, by_id ? "t1-by-id" : "t1") == 0);
    }
    CHECK_OK(sop_db_close(db));
}

/* A transaction that began after the prepare (it reads the old value,
 * since a prepared write is not visible) gets SOP_BUSY while the prepared
 * one holds the key; redone after phase 2 it reads the outcome (t1's
 * increment, or none after a rollback) and commits its own. */
TEST(test_prepared__snapshot_between_prepare_and_commit)
{
    sop_db *db = open_db(SOP_SYNC_NORMAL);
    sop_store *s;
    sop_txn *t1, *t3;
    char buf[32];
    CHECK(db);
    CHECK_OK(make_store(db, "s", &s));
    for (int rollback = 0; rollback < 2; rollback++) {
        CHECK_OK(sop_txn_begin(&t1, db, 0));
        CHECK_OK(incr(t1, s, "x"));
        CHECK_OK(sop_txn_prepare(t1, NULL));
        CHECK_OK(sop_txn_begin(&t3, db, 0));
        CHECK_OK(incr(t3, s, "x"));
        CHECK_RC(SOP_BUSY, sop_txn_commit(t3));
        if (rollback)
            CHECK_OK(sop_txn_abort(t1));
        else
            CHECK_OK(sop_txn_commit(t1));
        CHECK_OK(read_s(buf, sizeof buf, db, s, "x"));
        /* round 0: t1's increment; round 1: none (2 from round 0) */
        CHECK(strcmp(buf, rollback ? "2" : "1") == 0);
        CHECK_OK(sop_txn_begin(&t3, db, 0));
        CHECK_OK(incr(t3, s, "x"));
        CHECK_OK(sop_txn_commit(t3));
        CHECK_OK(read_s(buf, sizeof buf, db, s, "x"));
        CHECK(strcmp(buf, rollback ? "3" : "2") == 0); /* then t3's */
    }
    CHECK_OK(sop_db_close(db));
}

/* A transaction prepared before a crash, committed by id after recovery:
 * a transaction that read the old value gets SOP_BUSY; redone, it reads
 * the prepared one's value. */
TEST(test_prepared__recovered_prepared_commit_conflicts_with_reader)
{
    sop_db *db = open_db(SOP_SYNC_NORMAL);
    sop_store *s;
    sop_txn *t1, *t2;
    char buf[32];
    CHECK(db);
    CHECK_OK(make_store(db, "s", &s));
    CHECK_OK(sop_txn_begin(&t1, db, 0));
    CHECK_OK(put_s(t1, s, "x", "5"));
    CHECK_OK(sop_txn_commit(t1));
    CHECK_OK(sop_txn_begin(&t1, db, 0));
    CHECK_OK(incr(t1, s, "x"));
    CHECK_OK(sop_txn_prepare(t1, NULL));
    uint64_t id = sop_txn_id(t1);
    CHECK_OK(crash_close(db));
    forget_txn(t1);
    CHECK((db = open_db(SOP_SYNC_NORMAL)) != NULL);
    CHECK_OK(sop_txn_begin(&t2, db, 0));
    CHECK_OK(sop_store_open(&s, t2, "s", 0, NULL));
    CHECK_OK(incr(t2, s, "x")); /* reads 5 */
    CHECK_RC(SOP_BUSY, sop_txn_commit(t2));
    CHECK_OK(sop_db_prepared_commit(db, id));
    CHECK_OK(read_s(buf, sizeof buf, db, s, "x"));
    CHECK(strcmp(buf, "6") == 0);
    CHECK_OK(sop_txn_begin(&t2, db, 0));
    CHECK_OK(incr(t2, s, "x")); /* reads 6 */
    CHECK_OK(sop_txn_commit(t2));
    CHECK_OK(read_s(buf, sizeof buf, db, s, "x"));
    CHECK(strcmp(buf, "7") == 0);
    CHECK_EQ_U64(check_db(db), 0);
    CHECK_OK(sop_db_close(db));
}

/* ---- bank and list-append histories with 2PC, several threads ----------- */

enum { ACCOUNTS = 6, LISTS = 3, START_BALANCE = 1000 };

struct hist_worker {
    sop_db *db;
    sop_store *s;
    int id, txns;
    uint64_t rng;
    /* outcome */
    int errors;
    char err[256];
    int committed, rolled_back, prepared, busy, conflicts;
    /* committed[] tokens appended to the lists: "w<id>.<n>" for n < txns;
     * ok[n] = 1 if acknowledged, 2 if rolled back after prepare. */
    unsigned char *ok;
};

static uint64_t wrand(struct hist_worker *w)
{
    w->rng = w->rng * 6364136223846793005ull + 1442695040888963407ull;
    return w->rng >> 33;
}

static int get_long(long *out, sop_txn *t, sop_store *s, const char *key)
{
    sop_val v;
    char buf[32];
    int rc = get_s(&v, t, s, key);
    if (rc)
        return rc;
    snprintf(buf, sizeof buf, "%.*s", (int)v.len, (const char *)v.data);
    *out = strtol(buf, NULL, 10);
    return SOP_OK;
}

static int put_long(sop_txn *t, sop_store *s, const char *key, long n)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%ld", n);
    return put_s(t, s, key, buf);
}

/* One transaction: move an amount between two accounts and append this
 * transaction's token to one list (read-modify-write of both). */
static int hist_body(struct hist_worker *w, sop_txn *t, int n)
{
    char ka[16], kb[16], kl[16], tok[32];
    int a = (int)(wrand(w) % ACCOUNTS), b = (int)(wrand(w) % (ACCOUNTS - 1));
    if (b >= a)
        b++;
    long amount = (long)(wrand(w) % 50) + 1, va, vb;
    snprintf(ka, sizeof ka, "acct%d", a);
    snprintf(kb, sizeof kb, "acct%d", b);
    snprintf(kl, sizeof kl, "list%d", (int)(wrand(w) % LISTS));
    snprintf(tok, sizeof tok, "w%d.%d;", w->id, n);
    int rc;
    if ((rc = get_long(&va, t, w->s, ka)) || (rc = get_long(&vb, t, w->s, kb)))
        return rc;
    if ((rc = put_long(t, w->s, ka, va - amount)) || (rc = put_long(t, w->s, kb, vb + amount)))
        return rc;
    sop_val v;
    char list[1 << 14];
    rc = get_s(&v, t, w->s, kl);
    if (rc != SOP_OK && rc != SOP_NOTFOUND)
        return rc;
    size_t len = rc == SOP_OK ? v.len : 0;
    if (len + strlen(tok) >= sizeof list)
        return SOP_INVAL;
    if (len)
        memcpy(list, v.data, len);
    memcpy(list + len, tok, strlen(tok));
    sop_val kk = tv(kl), vv = {list, len + strlen(tok)};
    return sop_upsert(t, w->s, &kk, &vv);
}

static void *hist_thread(void *arg)
{
    struct hist_worker *w = arg;
    for (int n = 0; n < w->txns; n++) {
        for (;;) {
            sop_txn *t;
            int rc = sop_txn_begin(&t, w->db, 0);
            if (rc == SOP_OK)
                rc = hist_body(w, t, n);
            if (rc != SOP_OK) {
                sop_txn_abort(t);
                snprintf(w->err, sizeof w->err, "body: %s: %s", sop_strerror(rc), sop_errmsg());
                w->errors++;
                return NULL;
            }
            int mode = (int)(wrand(w) % 4); /* 0, 1: commit; 2: 2PC commit; 3: 2PC rollback */
            if (mode >= 2) {
                rc = sop_txn_prepare(t, NULL);
                if (rc == SOP_BUSY || rc == SOP_CONFLICT) {
                    rc == SOP_BUSY ? w->busy++ : w->conflicts++;
                    sop_txn_abort(t);
                    sched_yield();
                    continue;
                }
                if (rc != SOP_OK) {
                    sop_txn_abort(t);
                    snprintf(w->err, sizeof w->err, "prepare: %s: %s", sop_strerror(rc),
                             sop_errmsg());
                    w->errors++;
                    return NULL;
                }
                w->prepared++;
                sched_yield(); /* let others run into the prepared keys */
                if (mode == 3) {
                    sop_txn_abort(t);
                    w->ok[n] = 2;
                    w->rolled_back++;
                    break; /* a rolled-back transaction is not retried */
                }
                if ((rc = sop_txn_commit(t)) != SOP_OK) {
                    snprintf(w->err, sizeof w->err, "commit prepared: %s: %s", sop_strerror(rc),
                             sop_errmsg());
                    w->errors++;
                    return NULL;
                }
                w->ok[n] = 1;
                w->committed++;
                break;
            }
            /* A plain commit; on SOP_BUSY redo it after a yield (the
             * handle is ended whatever commit returns). */
            rc = sop_txn_commit(t);
            if (rc == SOP_BUSY) {
                w->busy++;
                sched_yield();
                continue;
            }
            if (rc == SOP_CONFLICT) {
                w->conflicts++;
                continue;
            }
            if (rc != SOP_OK) {
                snprintf(w->err, sizeof w->err, "commit: %s: %s", sop_strerror(rc), sop_errmsg());
                w->errors++;
                return NULL;
            }
            w->ok[n] = 1;
            w->committed++;
            break;
        }
    }
    return NULL;
}

/* Bank (the sum of balances is constant) and list-append (every
 * acknowledged append is in its list exactly once, no rolled-back one is)
 * with a quarter of the transactions prepared then committed and a quarter
 * prepared then rolled back; then prepared transactions across a crash,
 * resolved by id after reopening with a small cache. Before the fix a retry after SOP_BUSY or a
 * commit after a commit-prepared overwrote the prepared transaction's
 * writes: money appeared, appends vanished. */
TEST(test_prepared__bank_and_list_append_with_prepare)
{
    enum { THREADS = 4, TXNS = 300 };
    sop_db *db = open_db(SOP_SYNC_OFF);
    sop_store *s;
    sop_txn *t;
    char key[16];
    CHECK(db);
    CHECK_OK(make_store(db, "bank", &s));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    for (int i = 0; i < ACCOUNTS; i++) {
        snprintf(key, sizeof key, "acct%d", i);
        CHECK_OK(put_long(t, s, key, START_BALANCE));
    }
    CHECK_OK(sop_txn_commit(t));
    pthread_t th[THREADS];
    struct hist_worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] =
            (struct hist_worker){.db = db, .s = s, .id = i, .txns = TXNS, .rng = test_rand() | 1};
        w[i].ok = calloc(TXNS, 1);
        CHECK(w[i].ok);
        pthread_create(&th[i], NULL, hist_thread, &w[i]);
    }
    int committed = 0, rolled_back = 0, prepared = 0, busy = 0, conflicts = 0, errors = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        if (w[i].errors)
            fprintf(stderr, "    worker %d: %s\n", i, w[i].err);
        errors += w[i].errors;
        committed += w[i].committed, rolled_back += w[i].rolled_back;
        prepared += w[i].prepared, busy += w[i].busy, conflicts += w[i].conflicts;
    }
    printf("    %d committed (%d through prepare), %d rolled back, %d busy, %d conflicts\n",
           committed, prepared - rolled_back, rolled_back, busy, conflicts);
    CHECK_EQ_U64(errors, 0);
    CHECK_EQ_U64(committed + rolled_back, THREADS * TXNS);
    CHECK(prepared - rolled_back > 0 && rolled_back > 0);
    /* the invariants, in one snapshot */
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    long sum = 0, bal;
    for (int i = 0; i < ACCOUNTS; i++) {
        snprintf(key, sizeof key, "acct%d", i);
        CHECK_OK(get_long(&bal, t, s, key));
        sum += bal;
    }
    int found = 0, lost = 0, dup = 0, ghost = 0;
    for (int l = 0; l < LISTS; l++) {
        sop_val v;
        snprintf(key, sizeof key, "list%d", l);
        int rc = get_s(&v, t, s, key);
        CHECK(rc == SOP_OK || rc == SOP_NOTFOUND);
        const char *p = rc == SOP_OK ? v.data : "", *end = p + (rc == SOP_OK ? v.len : 0);
        while (p < end) {
            int id = -1, n = -1;
            CHECK(sscanf(p, "w%d.%d;", &id, &n) == 2 && id >= 0 && id < THREADS && n >= 0 &&
                  n < TXNS);
            if (w[id].ok[n] == 1)
                found++;
            else
                ghost++; /* rolled back, or never acknowledged */
            if (w[id].ok[n] == 1)
                w[id].ok[n] = 3; /* seen once */
            else if (w[id].ok[n] == 3)
                dup++;
            p = memchr(p, ';', (size_t)(end - p)) + 1;
        }
    }
    sop_txn_abort(t);
    for (int i = 0; i < THREADS; i++) {
        for (int n = 0; n < TXNS; n++)
            lost += w[i].ok[n] == 1;
        free(w[i].ok);
    }
    printf("    balances sum to %ld; lists: %d appends found, %d lost, %d duplicated, %d not "
           "acknowledged\n",
           sum, found, lost, dup, ghost);
    CHECK_EQ_U64(sum, ACCOUNTS * START_BALANCE);
    CHECK_EQ_U64(lost, 0);
    CHECK_EQ_U64(dup, 0);
    CHECK_EQ_U64(ghost, 0);
    CHECK_EQ_U64(found, committed);
    CHECK_EQ_U64(check_db(db), 0);

    /* Then across a crash: one transaction per list is left prepared (each
     * moves money between two accounts of its own and appends to its list),
     * the process dies, the database reopens with a 1 MiB cache, and phase
     * 2 by id commits two of them and rolls the third back. */
    uint64_t ids[LISTS];
    for (int l = 0; l < LISTS; l++) {
        char ka[16], kb[16], kl[16], tok[16], list[1 << 14];
        long va, vb;
        sop_val v;
        snprintf(ka, sizeof ka, "acct%d", 2 * l);
        snprintf(kb, sizeof kb, "acct%d", 2 * l + 1);
        snprintf(kl, sizeof kl, "list%d", l);
        snprintf(tok, sizeof tok, "p%d;", l);
        CHECK_OK(sop_txn_begin(&t, db, 0));
        CHECK_OK(get_long(&va, t, s, ka));
        CHECK_OK(get_long(&vb, t, s, kb));
        CHECK_OK(put_long(t, s, ka, va - 7));
        CHECK_OK(put_long(t, s, kb, vb + 7));
        CHECK_OK(get_s(&v, t, s, kl));
        CHECK(v.len + strlen(tok) < sizeof list);
        memcpy(list, v.data, v.len);
        memcpy(list + v.len, tok, strlen(tok));
        sop_val kk = tv(kl), vv = {list, v.len + strlen(tok)};
        CHECK_OK(sop_upsert(t, s, &kk, &vv));
        CHECK_OK(sop_txn_prepare(t, NULL));
        ids[l] = sop_txn_id(t);
        forget_txn(t);
    }
    CHECK_OK(crash_close(db));
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.sync = SOP_SYNC_OFF;
    o.cache_bytes = 1 << 20;
    CHECK_OK(sop_db_open(&db, test_dir(), &o));
    CHECK_OK(sop_db_prepared_commit(db, ids[0]));
    CHECK_OK(sop_db_prepared_rollback(db, ids[2]));
    CHECK_OK(sop_db_prepared_commit(db, ids[1]));
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(sop_store_open(&s, t, "bank", 0, NULL));
    sum = 0;
    for (int i = 0; i < ACCOUNTS; i++) {
        snprintf(key, sizeof key, "acct%d", i);
        CHECK_OK(get_long(&bal, t, s, key));
        sum += bal;
    }
    CHECK_EQ_U64(sum, ACCOUNTS * START_BALANCE);
    for (int l = 0; l < LISTS; l++) {
        sop_val v;
        char tok[16];
        snprintf(key, sizeof key, "list%d", l);
        snprintf(tok, sizeof tok, "p%d;", l);
        CHECK_OK(get_s(&v, t, s, key));
        int ends_with = v.len >= strlen(tok) &&
                        memcmp((const char *)v.data + v.len - strlen(tok), tok, strlen(tok)) == 0;
        CHECK(ends_with == (l != 2)); /* committed appends are there, the rolled back one not */
    }
    sop_txn_abort(t);
    CHECK_EQ_U64(check_db(db), 0);
    CHECK_OK(sop_db_close(db));
}

/* ---- recovered prepared transaction, small cache (issue 10 defect 3) ---- */

/* Prepare a transaction writing keys all over a tree much larger than the
 * cache, crash, reopen with a 1 MiB cache and commit it by id: applying it
 * loads nodes and evicts others while it works. Before the fix the commit
 * ran with no announced cache epoch, so an image it was merging into was
 * freed under it (ASan: heap-use-after-free in apply_img; release:
 * SOP_CORRUPT "node ... holds image of node 0"). */
TEST(test_prepared__recovered_prepared_commit_under_small_cache)
{
    enum { N = 20000, STRIDE = 37 };
    sop_db *db;
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.sync = SOP_SYNC_OFF;
    sop_store *s;
    sop_txn *t;
    char kb[32], vb[96];
    CHECK_OK(sop_db_open(&db, test_dir(), &o));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "big", SOP_STORE_CREATE, NULL));
    for (int i = 0; i < N; i++) {
        snprintf(kb, sizeof kb, "key%07d", i);
        snprintf(vb, sizeof vb, "value-%07d-%060d", i, 0);
        CHECK_OK(put_s(t, s, kb, vb));
    }
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_db_checkpoint(db));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    for (int i = 0; i < N; i += STRIDE) {
        snprintf(kb, sizeof kb, "key%07d", i);
        snprintf(vb, sizeof vb, "prepared-%07d", i);
        CHECK_OK(put_s(t, s, kb, vb));
    }
    CHECK_OK(sop_txn_prepare(t, NULL));
    uint64_t id = sop_txn_id(t);
    CHECK_OK(crash_close(db));
    forget_txn(t);

    o.cache_bytes = 1 << 20;
    CHECK_OK(sop_db_open(&db, test_dir(), &o));
    CHECK_OK(sop_db_prepared_commit(db, id));
    size_t np;
    CHECK_OK(sop_db_prepared_list(NULL, 0, &np, db));
    CHECK_EQ_U64(np, 0);
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(sop_store_open(&s, t, "big", 0, NULL));
    for (int i = 0; i < N; i++) {
        sop_val v;
        snprintf(kb, sizeof kb, "key%07d", i);
        if (i % STRIDE == 0)
            snprintf(vb, sizeof vb, "prepared-%07d", i);
        else
            snprintf(vb, sizeof vb, "value-%07d-%060d", i, 0);
        CHECK_OK(get_s(&v, t, s, kb));
        CHECK_VAL(v, vb);
    }
    sop_txn_abort(t);
    sop_db_stat_info st = SOP_DB_STAT_INIT;
    CHECK_OK(sop_db_stat(&st, db));
    CHECK(st.node_loads > 100); /* it really ran through the small cache */
    CHECK_EQ_U64(check_db(db), 0);
    CHECK_OK(sop_db_close(db));
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Feed n PREPARE records with empty bodies (ids 1000...) to replay, as
 * recovery does, checkpoint (the manifest then holds them) and close.
 * *replay_s and *open_s get the time replay took and the time a reopen
 * took to load them. */
static int inject_prepared(double *replay_s, double *open_s, const char *path, uint64_t n)
{
    sop_db *db;
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.sync = SOP_SYNC_OFF;
    CHECK_OK_RET(sop_db_open(&db, path, &o));
    uint8_t rec[24 + 2 + 12];
    memset(rec, 0, sizeof rec);
    rec[0] = 2; /* PREPARE (txn.h) */
    rec[1] = 1; /* version */
    double t0 = now_s();
    /* Replay is recovery's, which runs alone; on an open handle the
     * committer's lock stands in for that (registry.h R1). */
    sop_mutex_lock(&db->commit_mu);
    int rc = SOP_OK;
    for (uint64_t i = 0; i < n && rc == SOP_OK; i++) {
        uint64_t id = 1000 + i;
        memcpy(rec + 8, &id, 8); /* little-endian host (util.c asserts it) */
        rc = sop_txn__replay(db, db->applied_lsn + 1, rec, sizeof rec);
    }
    sop_mutex_unlock(&db->commit_mu);
    CHECK_OK_RET(rc);
    *replay_s = now_s() - t0;
    CHECK_OK_RET(sop_db_checkpoint(db));
    CHECK_OK_RET(sop_db_close(db));
    t0 = now_s();
    CHECK_OK_RET(sop_db_open(&db, path, &o));
    *open_s = now_s() - t0;
    return sop_db_close(db);
}

/* Issue 11: prepared entries were appended by walking the list to its
 * end, so recovering n prepared transactions (replaying n PREPARE
 * records, or loading n from a manifest) took n^2 / 2 steps: 30,000 took
 * 13.6 s to replay and 9.5 s to load. The records are fed to replay
 * directly (through sop_txn_prepare each would cost an fdatasync). Four
 * times the entries must cost about four times as long, not sixteen. */
TEST(test_prepared__many_prepared_are_recovered_in_linear_time)
{
    enum { N = 30000 };
    double r1, o1, r4, o4;
    CHECK_OK(inject_prepared(&r1, &o1, test_path("quarter"), N / 4));
    CHECK_OK(inject_prepared(&r4, &o4, test_path("full"), N));
    printf("    %d prepared: replayed in %.3f s, loaded by open in %.3f s (%d: %.3f s, %.3f s)\n",
           N, r4, o4, N / 4, r1, o1);
    CHECK(r4 < 8 * r1 + 0.25);
    CHECK(o4 < 8 * o1 + 0.25);

    sop_db *db;
    size_t n;
    sop_prepared_info info[2];
    CHECK_OK(sop_db_open(&db, test_path("full"), NULL));
    CHECK_OK(sop_db_prepared_list(info, 2, &n, db));
    CHECK_EQ_U64(n, N);
    CHECK_EQ_U64(info[0].id, 1000);
    /* resolving the newest and the oldest keeps the list consistent */
    CHECK_OK(sop_db_prepared_rollback(db, 1000 + N - 1));
    CHECK_OK(sop_db_prepared_rollback(db, 1000));
    sop_txn *t;
    sop_store *s;
    CHECK_OK(make_store(db, "after", &s));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(put_s(t, s, "k", "v"));
    CHECK_OK(sop_txn_prepare(t, NULL)); /* appended after the loaded ones */
    uint64_t id = sop_txn_id(t);
    CHECK(id >= 1000 + N);
    CHECK_OK(sop_db_prepared_list(info, 1, &n, db));
    CHECK_EQ_U64(n, N - 1);
    CHECK_EQ_U64(info[0].id, 1001);
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_db_prepared_list(info, 1, &n, db));
    CHECK_EQ_U64(n, N - 2);
    CHECK_OK(sop_db_close(db));
}

/* Issue 11: a prepared transaction could not survive a clean shutdown:
 * sop_db_close refused with SOP_BADSTATE while it was open and
 * sop_txn_abort rolled it back. Now sop_txn_release (a) and sop_db_close
 * itself (b) leave it prepared; after the reopen it is listed with its
 * xid, holds its keys (SOP_BUSY), and phase 2 by id commits (round 0) or
 * rolls back (round 1) its writes, checked by value after another clean
 * reopen. A plain open transaction still makes close SOP_BADSTATE, and
 * then nothing is released. */
TEST(test_prepared__prepared_survives_clean_close)
{
    for (int rollback = 0; rollback < 2; rollback++) {
        sop_db *db = open_db(SOP_SYNC_NORMAL);
        sop_store *s;
        sop_txn *a, *b, *plain;
        char buf[32];
        CHECK(db);
        CHECK_OK(make_store(db, rollback ? "r" : "c", &s));
        CHECK_OK(sop_txn_begin(&a, db, 0));
        CHECK_OK(put_s(a, s, "a", "from-a"));
        CHECK_OK(sop_txn_prepare(a, &(sop_val)S("xid-a")));
        CHECK_OK(sop_txn_begin(&b, db, 0));
        CHECK_OK(put_s(b, s, "b", "from-b"));
        CHECK_OK(sop_txn_prepare(b, &(sop_val)S("xid-b")));
        uint64_t ida = sop_txn_id(a), idb = sop_txn_id(b);
        CHECK(ida != 0 && idb != 0 && ida != idb);
        CHECK_OK(sop_txn_begin(&plain, db, 0));
        CHECK_RC(SOP_BADSTATE, sop_txn_release(plain)); /* not prepared: still live */
        CHECK_OK(put_s(plain, s, "p", "plain"));
        CHECK_RC(SOP_BADSTATE, sop_db_close(db)); /* plain is open */
        CHECK_MSG_HAS("1 transaction(s) still open");
        CHECK_OK(sop_txn_commit(plain));
        CHECK_OK(sop_txn_release(a)); /* (a) */
        CHECK_OK(sop_db_close(db));   /* (b): releases b */
        forget_txn(a);
        forget_txn(b);

        CHECK((db = open_db(SOP_SYNC_NORMAL)) != NULL);
        sop_prepared_info info[4];
        size_t n;
        CHECK_OK(sop_db_prepared_list(info, 4, &n, db));
        CHECK_EQ_U64(n, 2);
        CHECK_EQ_U64(info[0].id, ida);
        CHECK_EQ_U64(info[1].id, idb);
        CHECK(info[0].xid_len == 5 && memcmp(info[0].xid, "xid-a", 5) == 0);
        CHECK(info[1].xid_len == 5 && memcmp(info[1].xid, "xid-b", 5) == 0);
        CHECK_OK(sop_txn_begin(&plain, db, 0));
        CHECK_OK(sop_store_open(&s, plain, rollback ? "r" : "c", 0, NULL));
        CHECK_OK(put_s(plain, s, "a", "blocked"));
        CHECK_RC(SOP_BUSY, sop_txn_commit(plain));                   /* a still holds its key */
        CHECK_RC(SOP_NOTFOUND, read_s(buf, sizeof buf, db, s, "a")); /* not visible yet */
        CHECK_OK(read_s(buf, sizeof buf, db, s, "p"));
        CHECK(strcmp(buf, "plain") == 0);
        for (size_t i = 0; i < 2; i++)
            CHECK_OK(rollback ? sop_db_prepared_rollback(db, info[i].id)
                              : sop_db_prepared_commit(db, info[i].id));
        CHECK_RC(SOP_NOTFOUND, sop_db_prepared_commit(db, ida)); /* resolved once */
        CHECK_OK(sop_db_close(db));

        CHECK((db = open_db(SOP_SYNC_NORMAL)) != NULL);
        CHECK_OK(sop_db_prepared_list(info, 4, &n, db));
        CHECK_EQ_U64(n, 0);
        CHECK_OK(sop_txn_begin(&plain, db, SOP_TXN_READONLY));
        CHECK_OK(sop_store_open(&s, plain, rollback ? "r" : "c", 0, NULL));
        CHECK_OK(sop_txn_abort(plain));
        const char *keys[2] = {"a", "b"}, *vals[2] = {"from-a", "from-b"};
        for (int i = 0; i < 2; i++) {
            int rc = read_s(buf, sizeof buf, db, s, keys[i]);
            if (rollback) {
                CHECK_RC(SOP_NOTFOUND, rc);
            } else {
                CHECK_OK(rc);
                CHECK(strcmp(buf, vals[i]) == 0);
            }
        }
        uint64_t count;
        CHECK_OK(sop_txn_begin(&plain, db, SOP_TXN_READONLY));
        CHECK_OK(sop_count(&count, plain, s));
        CHECK_EQ_U64(count, rollback ? 1 : 3);
        CHECK_OK(sop_txn_abort(plain));
        CHECK_EQ_U64(check_db(db), 0);
        CHECK_OK(sop_db_close(db));
    }
}

/* Phase 2 of one prepared transaction from two threads at once: the
 * handle's sop_txn_commit and sop_db_prepared_rollback by id (sop.h: one
 * resolves it, the other gets SOP_NOTFOUND, the winner's outcome stands). */
struct race_arg {
    sop_db *db;
    uint64_t id;
    _Atomic int *go, *ready;
    int rc;
};

static void *race_rollback(void *arg)
{
    struct race_arg *r = arg;
    atomic_store(r->ready, 1);
    while (!atomic_load(r->go))
        ;
    r->rc = sop_db_prepared_rollback(r->db, r->id);
    return NULL;
}

TEST(test_prepared__phase2_by_handle_and_by_id_race)
{
    sop_db *db = open_db(SOP_SYNC_NORMAL);
    sop_store *s;
    char key[16], buf[32];
    int commits = 0, rollbacks = 0;
    CHECK(db);
    CHECK_OK(make_store(db, "s", &s));
    for (int i = 0; i < 40; i++) {
        sop_txn *t;
        _Atomic int go = 0, ready = 0;
        snprintf(key, sizeof key, "k%d", i);
        CHECK_OK(sop_txn_begin(&t, db, 0));
        CHECK_OK(put_s(t, s, key, "v"));
        CHECK_OK(sop_txn_prepare(t, NULL));
        struct race_arg r = {db, sop_txn_id(t), &go, &ready, 0};
        pthread_t th;
        CHECK(pthread_create(&th, NULL, race_rollback, &r) == 0);
        while (!atomic_load(&ready))
            ;
        atomic_store(&go, 1);
        for (volatile int spin = 0; spin < i % 4 * 20000; spin++) /* vary who starts first */
            ;
        int rc = sop_txn_commit(t);
        pthread_join(th, NULL);
        CHECK((rc == SOP_OK && r.rc == SOP_NOTFOUND) || (rc == SOP_NOTFOUND && r.rc == SOP_OK));
        int got = read_s(buf, sizeof buf, db, s, key);
        CHECK_RC(rc == SOP_OK ? SOP_OK : SOP_NOTFOUND, got);
        rc == SOP_OK ? commits++ : rollbacks++;
    }
    size_t n;
    CHECK_OK(sop_db_prepared_list(NULL, 0, &n, db));
    CHECK_EQ_U64(n, 0);
    printf("    40 races: %d won by the handle's commit, %d by the rollback by id\n", commits,
           rollbacks);
    CHECK_EQ_U64(check_db(db), 0);
    CHECK_OK(sop_db_close(db));
}

/* Issue 11 seam 4: every record takes its position through the commit
 * point (commit.h), and only records do. One claim per COMMIT, PREPARE and
 * resolution (by handle, by id, commit or rollback); none for a commit that
 * wrote nothing, one that lost validation, or replay; and every claim a
 * commit made was a position the log took: applied_lsn moved by exactly as
 * many. A path that computed its own position would leave the counts
 * unequal. */
TEST(test_prepared__every_record_claims_one_position)
{
    sop_db *db = open_db(SOP_SYNC_NORMAL);
    sop_store *s;
    sop_txn *t1, *t2, *p[3];
    sop_val v;
    CHECK(db);
    uint64_t claims0 = db->commit_claims, lsn0 = db->applied_lsn;
    CHECK_OK(make_store(db, "s", &s)); /* 1 commit */
    for (int i = 0; i < 5; i++) {      /* 5 commits */
        CHECK_OK(sop_txn_begin(&t1, db, 0));
        CHECK_OK(incr(t1, s, "x"));
        CHECK_OK(sop_txn_commit(t1));
    }
    CHECK_OK(sop_txn_begin(&t1, db, 0)); /* wrote nothing: no record */
    CHECK_OK(get_s(&v, t1, s, "x"));
    CHECK_OK(sop_txn_commit(t1));
    CHECK_EQ_U64(db->commit_claims - claims0, 6);
    CHECK_OK(sop_txn_begin(&t1, db, 0)); /* t1 commits, t2 loses validation */
    CHECK_OK(sop_txn_begin(&t2, db, 0));
    CHECK_OK(incr(t1, s, "x"));
    CHECK_OK(incr(t2, s, "x"));
    CHECK_OK(sop_txn_commit(t1));
    CHECK_RC(SOP_CONFLICT, sop_txn_commit(t2));
    CHECK_EQ_U64(db->commit_claims - claims0, 7);
    const char *keys[3] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) { /* 3 prepares */
        CHECK_OK(sop_txn_begin(&p[i], db, 0));
        CHECK_OK(put_s(p[i], s, keys[i], "v"));
        CHECK_OK(sop_txn_prepare(p[i], NULL));
    }
    CHECK_EQ_U64(db->commit_claims - claims0, 10);
    uint64_t id1 = sop_txn_id(p[1]), id2 = sop_txn_id(p[2]);
    CHECK_OK(sop_txn_commit(p[0]));  /* resolution by handle */
    CHECK_OK(sop_txn_release(p[1])); /* leaves it prepared */
    CHECK_OK(sop_txn_release(p[2]));
    CHECK_OK(sop_db_prepared_commit(db, id1));               /* by id */
    CHECK_OK(sop_db_prepared_rollback(db, id2));             /* rollback by id */
    CHECK_RC(SOP_NOTFOUND, sop_db_prepared_commit(db, id2)); /* no prepared: no claim */
    CHECK_EQ_U64(db->commit_claims - claims0, 13);
    CHECK_EQ_U64(db->applied_lsn - lsn0, 13);
    uint64_t last = db->applied_lsn;
    CHECK_OK(crash_close(db)); /* the next open replays all 13 */

    CHECK((db = open_db(SOP_SYNC_NORMAL)) != NULL);
    CHECK_EQ_U64(db->commit_claims, 0); /* replay takes the log's positions */
    CHECK_EQ_U64(db->applied_lsn, last);
    CHECK_OK(sop_txn_begin(&t1, db, 0));
    CHECK_OK(sop_store_open(&s, t1, "s", 0, NULL));
    CHECK_OK(get_s(&v, t1, s, "x")); /* 5 + the one that won */
    CHECK(v.len == 1 && memcmp(v.data, "6", 1) == 0);
    CHECK_OK(put_s(t1, s, "y", "1"));
    CHECK_OK(sop_txn_commit(t1));
    CHECK_EQ_U64(db->commit_claims, 1);
    CHECK_EQ_U64(db->applied_lsn, last + 1);
    CHECK_EQ_U64(check_db(db), 0);
    CHECK_OK(sop_db_close(db));
}

TEST_MAIN(T(test_prepared__busy_retry_after_commit_prepared_conflicts),
          T(test_prepared__commit_after_commit_prepared_conflicts),
          T(test_prepared__blind_writer_after_prepare_conflicts),
          T(test_prepared__snapshot_between_prepare_and_commit),
          T(test_prepared__recovered_prepared_commit_conflicts_with_reader),
          T(test_prepared__bank_and_list_append_with_prepare),
          T(test_prepared__recovered_prepared_commit_under_small_cache),
          T(test_prepared__many_prepared_are_recovered_in_linear_time),
          T(test_prepared__prepared_survives_clean_close),
          T(test_prepared__phase2_by_handle_and_by_id_race),
          T(test_prepared__every_record_claims_one_position))
