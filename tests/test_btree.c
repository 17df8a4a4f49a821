/*
 * test_btree.c - B-tree apply shortcuts give the answers a full descent
 * gives: the append finger (btree.h B6) for items above the tree's last
 * item, in unique and duplicate stores, mixed with inserts below the end,
 * deletes, splits, and the same records replayed after a crash.
 */
#include "harness.h"
#include "tutil.h"

#include "db.h" /* white-box: db->st_appends */

#include <stdatomic.h>

#define NKEYS 6000

/* The oracle: keys "k%05u" for i in [0, 2 * NKEYS), present or not, with the
 * value "v%u.%u" (i, generation). */
typedef struct oracle {
    unsigned char present[2 * NKEYS];
    unsigned gen[2 * NKEYS];
} oracle;

static sop_val key_of(char *buf, unsigned i)
{
    int n = snprintf(buf, 16, "k%05u", i);
    return (sop_val){buf, (size_t)n};
}

static int put_i(sop_txn *t, sop_store *s, oracle *o, unsigned i, unsigned gen)
{
    char kb[16], vb[32];
    sop_val k = key_of(kb, i);
    int n = snprintf(vb, sizeof vb, "v%u.%u", i, gen);
    sop_val v = {vb, (size_t)n};
    int rc = sop_upsert(t, s, &k, &v);
    if (rc == SOP_OK) {
        o->present[i] = 1;
        o->gen[i] = gen;
    }
    return rc;
}

static int del_i(sop_txn *t, sop_store *s, oracle *o, unsigned i)
{
    char kb[16];
    sop_val k = key_of(kb, i);
    int rc = sop_remove(t, s, &k);
    if (rc == SOP_OK)
        o->present[i] = 0;
    return rc;
}

/* The store's items, in order, are exactly the oracle's. */
static int matches(sop_db *db, const oracle *o)
{
    sop_txn *t;
    sop_store *s;
    sop_cursor *c;
    REQ(sop_txn_begin(&t, db, SOP_TXN_READONLY) == SOP_OK);
    REQ(sop_store_open(&s, t, "kv", 0, NULL) == SOP_OK);
    REQ(sop_cursor_open(&c, t, s) == SOP_OK);
    int ok = 1;
    sop_val k, v;
    unsigned i = 0, seen = 0;
    for (int rc = sop_cursor_get(&k, &v, c, SOP_FIRST, NULL); ok && rc == SOP_OK;
         rc = sop_cursor_get(&k, &v, c, SOP_NEXT, NULL)) {
        while (i < 2 * NKEYS && !o->present[i])
            i++;
        char kb[16], vb[32];
        sop_val want_k = key_of(kb, i);
        int n = snprintf(vb, sizeof vb, "v%u.%u", i, o->gen[i]);
        ok = i < 2 * NKEYS && k.len == want_k.len && memcmp(k.data, want_k.data, k.len) == 0 &&
             v.len == (size_t)n && memcmp(v.data, vb, v.len) == 0;
        if (!ok)
            FAIL_AT("item %u: got %.*s=%.*s, want %s=%s", seen, (int)k.len, (const char *)k.data,
                    (int)v.len, (const char *)v.data, kb, vb);
        i++;
        seen++;
    }
    unsigned want = 0;
    for (unsigned j = 0; j < 2 * NKEYS; j++)
        want += o->present[j];
    uint64_t n = 0;
    if (ok)
        ok = sop_count(&n, t, s) == SOP_OK && n == want && seen == want;
    if (!ok)
        FAIL_AT("count %" PRIu64 ", scanned %u, oracle %u", n, seen, want);
    sop_cursor_close(c);
    sop_txn_abort(t);
    uint64_t findings = 1;
    REQ(sop_db_check(&findings, db, print_finding, NULL, NULL) == SOP_OK);
    REQ(findings == 0);
    return ok;
}

TEST(test_btree__append_finger_matches_descent)
{
    static oracle o;
    memset(&o, 0, sizeof o);
    sop_db *db;
    sop_txn *t;
    sop_store *s, *d;
    sop_store_options dup_opts = SOP_STORE_OPTIONS_INIT;
    dup_opts.flags = SOP_STORE_DUPLICATES;
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    uint64_t appends0 = atomic_load(&db->st_appends);

    /* 1. An ascending fill of two stores in one commit: many leaf splits,
     * and the finger moves between stores. */
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "kv", SOP_STORE_CREATE, NULL));
    CHECK_OK(sop_store_open(&d, t, "dup", SOP_STORE_CREATE, &dup_opts));
    for (unsigned i = 0; i < NKEYS; i += 2) {
        CHECK_OK(put_i(t, s, &o, i, 1));
        if (i % 64 == 0) { /* equal keys: ascending by seq */
            sop_val same = S("same"), x = S("x");
            for (int j = 0; j < 3; j++)
                CHECK_OK(sop_add(t, d, &same, &x));
        }
    }
    CHECK_OK(sop_txn_commit(t));
    uint64_t used = atomic_load(&db->st_appends) - appends0;
    /* Every put but the first after a split, a store switch or the start. */
    CHECK(used >= NKEYS / 2 - NKEYS / 2 / 10);
    CHECK(matches(db, &o));

    /* 2. Mixed: inserts below the end (descents), appends above it,
     * deletes of the last items and of absent keys above them. */
    uint64_t before = atomic_load(&db->st_appends);
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "kv", 0, NULL));
    for (unsigned i = 1; i < NKEYS; i += 6)
        CHECK_OK(put_i(t, s, &o, i, 2)); /* below the end */
    for (unsigned i = NKEYS; i < NKEYS + 1500; i++)
        CHECK_OK(put_i(t, s, &o, i, 2)); /* above it */
    for (unsigned i = NKEYS + 1400; i < NKEYS + 1500; i++)
        CHECK_OK(del_i(t, s, &o, i)); /* the new last items */
    for (unsigned i = NKEYS + 1500; i < NKEYS + 1600; i++)
        CHECK_OK(put_i(t, s, &o, i, 3)); /* appends after the deletes */
    CHECK_OK(sop_txn_commit(t));
    CHECK(atomic_load(&db->st_appends) - before >= 1000);
    CHECK(matches(db, &o));

    /* 3. The same records replayed from the log give the same tree. */
    CHECK_OK(crash_close(db));
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK(matches(db, &o));
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(sop_store_open(&d, t, "dup", 0, NULL));
    uint64_t n;
    CHECK_OK(sop_count(&n, t, d));
    CHECK_EQ_U64(n, 3 * ((NKEYS / 2 + 31) / 32));
    sop_txn_abort(t);
    CHECK_OK(sop_db_close(db));
}

TEST_MAIN(T(test_btree__append_finger_matches_descent))
