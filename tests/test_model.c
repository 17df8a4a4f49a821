/*
 * test_model.c - seeded, model-based random testing. The same random
 * operations go to libsop and to a sorted in-memory model; reads inside
 * each transaction are checked against the transaction's view of the model,
 * and every store is compared item by item (and by count) after every
 * transaction. Some transactions are rolled back; the database is closed,
 * crash-closed (no checkpoint) and reopened along the way. Small slot
 * lengths make splits, merges and root collapses frequent.
 *
 * SOP_SEED picks the sequence; SOP_TEST_SCALE multiplies its length.
 */
#include "harness.h"
#include "tutil.h"

#define MAX_ITEMS 4000
#define NSTORES   3

typedef struct item {
    char key[24];
    char val[40];
    uint64_t ord; /* insertion order (dup stores) */
} item;

typedef struct model {
    item *it;
    int n;
    int dup;
} model;

static uint64_t next_ord = 1;

static int item_cmp(const void *a, const void *b)
{
    const item *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    if (c)
        return c;
    return (x->ord > y->ord) - (x->ord < y->ord);
}

static int m_first(const model *m, const char *key)
{
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->it[i].key, key) == 0)
            return i;
    return -1;
}

static void m_insert(model *m, const char *key, const char *val)
{
    item x;
    memset(&x, 0, sizeof x);
    snprintf(x.key, sizeof x.key, "%s", key);
    snprintf(x.val, sizeof x.val, "%s", val);
    x.ord = next_ord++;
    m->it[m->n++] = x;
    qsort(m->it, m->n, sizeof *m->it, item_cmp);
}

static void m_remove_at(model *m, int i)
{
    memmove(&m->it[i], &m->it[i + 1], (m->n - i - 1) * sizeof *m->it);
    m->n--;
}

static void m_copy(model *dst, const model *src)
{
    memcpy(dst->it, src->it, src->n * sizeof *src->it);
    dst->n = src->n;
    dst->dup = src->dup;
}

/* Compare a whole store with the model through a cursor, both directions. */
static int verify_store(sop_txn *t, sop_store *s, const model *m, const char **why)
{
    sop_cursor *c;
    sop_val k, v;
    uint64_t n;
    int rc, i = 0;
    if (sop_count(&n, t, s) != SOP_OK || n != (uint64_t)m->n) {
        *why = "count";
        return 0;
    }
    if (sop_cursor_open(&c, t, s) != SOP_OK) {
        *why = "cursor_open";
        return 0;
    }
    for (rc = sop_cursor_get(&k, &v, c, SOP_FIRST, NULL); rc == SOP_OK;
         rc = sop_cursor_get(&k, &v, c, SOP_NEXT, NULL), i++) {
        if (i >= m->n || k.len != strlen(m->it[i].key) ||
            memcmp(k.data, m->it[i].key, k.len) != 0 || v.len != strlen(m->it[i].val) ||
            memcmp(v.data, m->it[i].val, v.len) != 0) {
            *why = "forward item";
            sop_cursor_close(c);
            return 0;
        }
    }
    if (rc != SOP_NOTFOUND || i != m->n) {
        *why = "forward end";
        sop_cursor_close(c);
        return 0;
    }
    for (rc = sop_cursor_get(&k, &v, c, SOP_LAST, NULL); rc == SOP_OK;
         rc = sop_cursor_get(&k, &v, c, SOP_PREV, NULL)) {
        i--;
        if (i < 0 || k.len != strlen(m->it[i].key) ||
            memcmp(k.data, m->it[i].key, k.len) != 0) {
            *why = "backward item";
            sop_cursor_close(c);
            return 0;
        }
    }
    sop_cursor_close(c);
    if (i != 0) {
        *why = "backward end";
        return 0;
    }
    return 1;
}

static void rand_key(char *buf, size_t cap, int space)
{
    snprintf(buf, cap, "k%05u", (unsigned)(test_rand() % (uint64_t)space));
}

TEST(test_model__random_operations_match_model)
{
    int scale = getenv("SOP_TEST_SCALE") ? atoi(getenv("SOP_TEST_SCALE")) : 1;
    int txns = 400 * (scale > 0 ? scale : 1);
    static item storage[NSTORES][MAX_ITEMS], view_storage[NSTORES][MAX_ITEMS];
    model m[NSTORES], view[NSTORES];
    const char *names[NSTORES] = {"uniq4", "uniq16", "dup4"};
    sop_db *db;
    sop_db_options dopts = SOP_DB_OPTIONS_INIT;
    dopts.sync = SOP_SYNC_OFF;
    CHECK_OK(sop_db_open(&db, test_dir(), &dopts));
    sop_txn *t;
    sop_store *s[NSTORES];
    CHECK_OK(sop_txn_begin(&t, db, 0));
    for (int i = 0; i < NSTORES; i++) {
        sop_store_options o = SOP_STORE_OPTIONS_INIT;
        o.slot_length = i == 1 ? 16 : 4;
        o.flags = i == 2 ? SOP_STORE_DUPLICATES : 0;
        if (i == 1)
            o.max_inline_value = 12; /* some values go to their own blob */
        CHECK_OK(sop_store_open(&s[i], t, names[i], SOP_STORE_CREATE, &o));
        m[i] = (model){storage[i], 0, i == 2};
        view[i] = (model){view_storage[i], 0, i == 2};
    }
    CHECK_OK(sop_txn_commit(t));
    uint64_t ops_done = 0;
    for (int tx = 0; tx < txns; tx++) {
        for (int i = 0; i < NSTORES; i++)
            m_copy(&view[i], &m[i]);
        uint64_t ord_before = next_ord;
        CHECK_OK(sop_txn_begin(&t, db, 0));
        for (int i = 0; i < NSTORES; i++)
            CHECK_OK(sop_store_open(&s[i], t, names[i], 0, NULL));
        int nops = 1 + (int)(test_rand() % 40);
        for (int op = 0; op < nops; op++, ops_done++) {
            int si = (int)(test_rand() % NSTORES);
            model *vm = &view[si];
            char key[24], val[40];
            rand_key(key, sizeof key, 600);
            snprintf(val, sizeof val, "v%d.%d.%u", tx, op, (unsigned)(test_rand() % 1000));
            int f = m_first(vm, key);
            int r = (int)(test_rand() % 100);
            sop_val v;
            if (r < 30 && vm->n < MAX_ITEMS - 50) { /* upsert */
                CHECK_OK(put_s(t, s[si], key, val));
                if (f >= 0)
                    snprintf(vm->it[f].val, sizeof vm->it[f].val, "%s", val);
                else
                    m_insert(vm, key, val);
            } else if (r < 45 && vm->n < MAX_ITEMS - 50) { /* add */
                int rc = add_s(t, s[si], key, val);
                if (vm->dup || f < 0) {
                    CHECK_OK(rc);
                    m_insert(vm, key, val);
                } else {
                    CHECK_RC(SOP_KEYEXIST, rc);
                }
            } else if (r < 55) { /* update */
                int rc = upd_s(t, s[si], key, val);
                if (f >= 0) {
                    CHECK_OK(rc);
                    snprintf(vm->it[f].val, sizeof vm->it[f].val, "%s", val);
                } else {
                    CHECK_RC(SOP_NOTFOUND, rc);
                }
            } else if (r < 75) { /* remove */
                int rc = del_s(t, s[si], key);
                if (f >= 0) {
                    CHECK_OK(rc);
                    while ((f = m_first(vm, key)) >= 0)
                        m_remove_at(vm, f);
                } else {
                    CHECK_RC(SOP_NOTFOUND, rc);
                }
            } else if (r < 90) { /* get */
                int rc = get_s(&v, t, s[si], key);
                if (f >= 0) {
                    CHECK_OK(rc);
                    CHECK_VAL(v, vm->it[f].val);
                } else {
                    CHECK_RC(SOP_NOTFOUND, rc);
                }
            } else { /* seek_ge + a few steps */
                sop_cursor *c;
                sop_val k;
                CHECK_OK(sop_cursor_open(&c, t, s[si]));
                int rc = sop_cursor_get(&k, &v, c, SOP_SEEK_GE, &(sop_val){key, strlen(key)});
                int i = 0;
                while (i < vm->n && strcmp(vm->it[i].key, key) < 0)
                    i++;
                for (int step = 0; step < 5; step++) {
                    if (i >= vm->n) {
                        CHECK_RC(SOP_NOTFOUND, rc);
                        break;
                    }
                    CHECK_OK(rc);
                    CHECK_VAL(k, vm->it[i].key);
                    CHECK_VAL(v, vm->it[i].val);
                    i++;
                    rc = sop_cursor_get(&k, &v, c, SOP_NEXT, NULL);
                }
                sop_cursor_close(c);
            }
        }
        if (test_rand() % 8 == 0) {
            sop_txn_abort(t);
            next_ord = ord_before; /* the engine never saw these adds */
        } else {
            CHECK_OK(sop_txn_commit(t));
            for (int i = 0; i < NSTORES; i++)
                m_copy(&m[i], &view[i]);
        }
        int what = (int)(test_rand() % 40);
        if (what == 0) {
            CHECK_OK(sop_db_close(db));
            CHECK_OK(sop_db_open(&db, test_dir(), &dopts));
        } else if (what == 1) {
            CHECK_OK(crash_close(db));
            CHECK_OK(sop_db_open(&db, test_dir(), &dopts));
        } else if (what == 2) {
            CHECK_OK(sop_db_checkpoint(db));
        }
        if (what <= 3 || tx % 50 == 0)
            CHECK_EQ_U64(check_db(db), 0);
        CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
        for (int i = 0; i < NSTORES; i++) {
            const char *why = "";
            CHECK_OK(sop_store_open(&s[i], t, names[i], 0, NULL));
            if (!verify_store(t, s[i], &m[i], &why)) {
                FAIL_AT("store %s differs from the model after txn %d: %s", names[i], tx, why);
                sop_txn_abort(t);
                return;
            }
        }
        sop_txn_abort(t);
    }
    printf("    model: %d transactions, %" PRIu64 " operations, final sizes %d/%d/%d\n", txns,
           ops_done, m[0].n, m[1].n, m[2].n);
    CHECK_EQ_U64(check_db(db), 0);
    CHECK_OK(sop_db_close(db));
}

TEST_MAIN(T(test_model__random_operations_match_model))
