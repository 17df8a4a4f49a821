/*
 * test_core.c - the engine through the public API: CRUD across reopen,
 * unique vs duplicate stores, every error code, stores (create/remove/list/
 * info/options), cursors, deep-tree navigation against a sorted reference,
 * separate-blob values, checkpoints and recovery, prepared transactions.
 */
#include "harness.h"
#include "tutil.h"

TEST(test_core__crud_roundtrip_across_reopen)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    sop_val v;
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "kv", SOP_STORE_CREATE, NULL));
    CHECK_OK(put_s(t, s, "apple", "red"));
    CHECK_OK(put_s(t, s, "banana", "yellow"));
    CHECK_OK(put_s(t, s, "cherry", "dark red"));
    CHECK_OK(get_s(&v, t, s, "banana"));
    CHECK_VAL(v, "yellow");
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_db_close(db));

    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "kv", 0, NULL));
    CHECK_OK(get_s(&v, t, s, "apple"));
    CHECK_VAL(v, "red");
    CHECK_OK(upd_s(t, s, "apple", "green"));
    CHECK_OK(del_s(t, s, "cherry"));
    CHECK_RC(SOP_NOTFOUND, get_s(&v, t, s, "cherry"));
    uint64_t n;
    CHECK_OK(sop_count(&n, t, s));
    CHECK_EQ_U64(n, 2);
    CHECK_OK(sop_txn_commit(t));
    /* no close: the next open must recover from the log alone */
    CHECK_OK(crash_close(db));

    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(sop_store_open(&s, t, "kv", 0, NULL));
    CHECK_OK(get_s(&v, t, s, "apple"));
    CHECK_VAL(v, "green");
    CHECK_RC(SOP_NOTFOUND, get_s(&v, t, s, "cherry"));
    CHECK_OK(sop_count(&n, t, s));
    CHECK_EQ_U64(n, 2);
    sop_txn_abort(t);
    CHECK_OK(sop_db_close(db));
}

TEST(test_core__error_codes)
{
    sop_db *db, *db2;
    sop_txn *t, *ro;
    sop_store *s;
    sop_val v, k = S("k"), big;
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_RC(SOP_BUSY, sop_db_open(&db2, test_dir(), NULL)); /* second handle refused */
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "s", SOP_STORE_CREATE, NULL));
    CHECK_OK(put_s(t, s, "k", "1"));
    CHECK_RC(SOP_KEYEXIST, add_s(t, s, "k", "2"));
    CHECK_RC(SOP_KEYEXIST, sop_add_if_absent(t, s, &k, &k));
    CHECK_OK(get_s(&v, t, s, "k"));
    CHECK_VAL(v, "1"); /* nothing changed by the refused add */
    CHECK_RC(SOP_NOTFOUND, upd_s(t, s, "missing", "x"));
    CHECK_RC(SOP_NOTFOUND, del_s(t, s, "missing"));
    sop_val empty = {NULL, 0};
    CHECK_RC(SOP_INVAL, sop_upsert(t, s, &empty, &k)); /* empty key */
    char huge[SOP_MAX_KEY_LEN + 1];
    memset(huge, 'x', sizeof huge);
    big.data = huge;
    big.len = sizeof huge;
    CHECK_RC(SOP_INVAL, sop_upsert(t, s, &big, &k));
    CHECK_RC(SOP_INVAL, sop_txn_begin(&ro, db, 0x80));
    CHECK_RC(SOP_INVAL, sop_store_open(&s, t, "", SOP_STORE_CREATE, NULL));
    CHECK_RC(SOP_NOTFOUND, sop_store_open(&s, t, "nope", 0, NULL));
    CHECK_OK(sop_store_open(&s, t, "s", 0, NULL));
    CHECK_OK(sop_txn_commit(t));

    CHECK_OK(sop_txn_begin(&ro, db, SOP_TXN_READONLY));
    CHECK_OK(sop_store_open(&s, ro, "s", 0, NULL));
    CHECK_RC(SOP_READONLY, put_s(ro, s, "k", "2"));
    CHECK_RC(SOP_READONLY, del_s(ro, s, "k"));
    sop_store *other;
    CHECK_RC(SOP_READONLY, sop_store_open(&other, ro, "new", SOP_STORE_CREATE, NULL));
    CHECK_OK(get_s(&v, ro, s, "k")); /* still usable after SOP_READONLY */
    CHECK_VAL(v, "1");
    CHECK_RC(SOP_BADSTATE, sop_db_close(db)); /* a txn is open */
    sop_txn_abort(ro);

    /* contradicting options */
    sop_store_options o = SOP_STORE_OPTIONS_INIT;
    o.slot_length = SOP_SLOT_LENGTH_DEFAULT / 2; /* "s" has the default */
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_RC(SOP_MISMATCH, sop_store_open(&s, t, "s", 0, &o));
    o.slot_length = 2;
    CHECK_RC(SOP_INVAL, sop_store_open(&s, t, "bad", SOP_STORE_CREATE, &o));
    o.slot_length = 0;
    o.flags = SOP_STORE_DUPLICATES;
    CHECK_RC(SOP_MISMATCH, sop_store_open(&s, t, "s", 0, &o));
    o.flags = 0;
    o.comparator = "unregistered";
    CHECK_RC(SOP_INVAL, sop_store_open(&s, t, "c", SOP_STORE_CREATE, &o));
    sop_txn_abort(t);
    CHECK_OK(sop_db_close(db));

    /* a folder holding something else is refused */
    char p[600];
    snprintf(p, sizeof p, "%s/other", test_dir());
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/other/notes.txt", test_dir());
    FILE *f = fopen(p, "w");
    CHECK(f != NULL);
    fputs("hello", f);
    fclose(f);
    snprintf(p, sizeof p, "%s/other", test_dir());
    CHECK_RC(SOP_INVAL, sop_db_open(&db, p, NULL));
    sop_db_options dopts = SOP_DB_OPTIONS_INIT;
    dopts.flags = SOP_DB_NOCREATE;
    snprintf(p, sizeof p, "%s/absent", test_dir());
    CHECK_RC(SOP_NOTFOUND, sop_db_open(&db, p, &dopts));
    dopts.version = 99;
    CHECK_RC(SOP_INVAL, sop_db_open(&db, p, &dopts));
    CHECK(strcmp(sop_strerror(SOP_CONFLICT), "unknown error") != 0);
    CHECK(sop_rc_is_retryable(SOP_CONFLICT) && !sop_rc_is_retryable(SOP_NOTFOUND));
}

TEST(test_core__store_lifecycle)
{
    sop_db *db;
    sop_txn *t;
    sop_store *a, *b;
    char **names;
    size_t n;
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    /* a rolled-back create leaves no store */
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&a, t, "ghost", SOP_STORE_CREATE, NULL));
    CHECK_OK(put_s(t, a, "x", "1"));
    sop_txn_abort(t);
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_RC(SOP_NOTFOUND, sop_store_open(&a, t, "ghost", 0, NULL));
    sop_store_options o = SOP_STORE_OPTIONS_INIT;
    o.flags = SOP_STORE_DUPLICATES;
    o.slot_length = 16;
    CHECK_OK(sop_store_open(&a, t, "alpha", SOP_STORE_CREATE, &o));
    CHECK_OK(sop_store_open(&b, t, "beta", SOP_STORE_CREATE, NULL));
    CHECK_OK(put_s(t, b, "k", "v"));
    CHECK_OK(sop_store_list(&names, &n, t));
    CHECK_EQ_U64(n, 2);
    CHECK(strcmp(names[0], "alpha") == 0 && strcmp(names[1], "beta") == 0);
    sop_store_list_free(names, n);
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_db_close(db));

    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&a, t, "alpha", 0, NULL)); /* stored options used */
    sop_store_info info = SOP_STORE_INFO_INIT;
    CHECK_OK(sop_store_info_get(&info, t, a));
    CHECK_EQ_U64(info.options.slot_length, 16);
    CHECK_EQ_U64(info.options.flags, SOP_STORE_DUPLICATES);
    CHECK_EQ_U64(info.count, 0);
    CHECK_OK(sop_store_remove(t, "beta"));
    CHECK_RC(SOP_NOTFOUND, sop_store_open(&b, t, "beta", 0, NULL));
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_RC(SOP_NOTFOUND, sop_store_open(&b, t, "beta", 0, NULL));
    CHECK_OK(sop_store_list(&names, &n, t));
    CHECK_EQ_U64(n, 1);
    sop_store_list_free(names, n);
    /* re-create with the same name: a fresh, empty store */
    CHECK_OK(sop_store_open(&b, t, "beta", SOP_STORE_CREATE, NULL));
    sop_val v;
    CHECK_RC(SOP_NOTFOUND, get_s(&v, t, b, "k"));
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_db_close(db));
}

TEST(test_core__duplicates)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    sop_cursor *c;
    sop_val k, v;
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    sop_store_options o = SOP_STORE_OPTIONS_INIT;
    o.flags = SOP_STORE_DUPLICATES;
    o.slot_length = 4;
    CHECK_OK(sop_store_open(&s, t, "d", SOP_STORE_CREATE, &o));
    CHECK_OK(add_s(t, s, "b", "b1"));
    CHECK_OK(add_s(t, s, "a", "a1"));
    CHECK_OK(add_s(t, s, "b", "b2"));
    CHECK_OK(add_s(t, s, "b", "b3"));
    CHECK_OK(add_s(t, s, "c", "c1"));
    CHECK_RC(SOP_KEYEXIST, sop_add_if_absent(t, s, &(sop_val)S("b"), &(sop_val)S("x")));
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(add_s(t, s, "b", "b4")); /* after committed dups, in insertion order */
    uint64_t n;
    CHECK_OK(sop_count(&n, t, s));
    CHECK_EQ_U64(n, 6);
    CHECK_OK(get_s(&v, t, s, "b"));
    CHECK_VAL(v, "b1"); /* the first (oldest) */
    CHECK_OK(sop_cursor_open(&c, t, s));
    CHECK_OK(sop_cursor_get(&k, &v, c, SOP_SEEK, &(sop_val)S("b")));
    CHECK_VAL(v, "b1");
    CHECK_OK(sop_cursor_get(&k, &v, c, SOP_NEXT_DUP, NULL));
    CHECK_VAL(v, "b2");
    CHECK_OK(sop_cursor_get(&k, &v, c, SOP_NEXT_DUP, NULL));
    CHECK_VAL(v, "b3");
    CHECK_OK(sop_cursor_get(&k, &v, c, SOP_NEXT_DUP, NULL));
    CHECK_VAL(v, "b4");
    CHECK_RC(SOP_NOTFOUND, sop_cursor_get(&k, &v, c, SOP_NEXT_DUP, NULL));
    CHECK_OK(sop_cursor_get(&k, &v, c, SOP_CURRENT, NULL)); /* stayed on b4 */
    CHECK_VAL(v, "b4");
    CHECK_OK(sop_cursor_get(&k, &v, c, SOP_PREV_DUP, NULL));
    CHECK_VAL(v, "b3");
    CHECK_OK(sop_cursor_remove(c)); /* remove b3 only */
    CHECK_OK(sop_cursor_get(&k, &v, c, SOP_NEXT, NULL));
    CHECK_VAL(v, "b4");
    sop_cursor_close(c);
    CHECK_OK(upd_s(t, s, "b", "B1"));
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_db_close(db));

    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "d", 0, NULL));
    const char *want[] = {"a1", "B1", "b2", "b4", "c1"};
    CHECK_OK(sop_cursor_open(&c, t, s));
    int i = 0, rc;
    for (rc = sop_cursor_get(&k, &v, c, SOP_FIRST, NULL); rc == SOP_OK;
         rc = sop_cursor_get(&k, &v, c, SOP_NEXT, NULL), i++) {
        CHECK(i < 5);
        CHECK_VAL(v, want[i]);
    }
    CHECK_EQ_U64(i, 5);
    sop_cursor_close(c);
    CHECK_OK(del_s(t, s, "b")); /* removes every item with key b */
    CHECK_OK(sop_count(&n, t, s));
    CHECK_EQ_U64(n, 2);
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(sop_count(&n, t, s));
    CHECK_EQ_U64(n, 2);
    sop_txn_abort(t);
    CHECK_OK(sop_db_close(db));
}

/* 100,000 keys, slot length 4: a deep tree walked both ways vs sorted keys. */
TEST(test_core__deep_tree_navigation)
{
    enum { N = 100000 };
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    sop_cursor *c;
    sop_val k, v;
    char kb[32], vb[32];
    sop_db_options dopts = SOP_DB_OPTIONS_INIT;
    dopts.sync = SOP_SYNC_OFF;
    CHECK_OK(sop_db_open(&db, test_dir(), &dopts));
    sop_store_options o = SOP_STORE_OPTIONS_INIT;
    o.slot_length = 4;
    /* insert in a scrambled order, in batches */
    uint32_t *perm = malloc(N * sizeof *perm);
    for (uint32_t i = 0; i < N; i++)
        perm[i] = i;
    for (uint32_t i = N - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(test_rand() % (i + 1)), x = perm[i];
        perm[i] = perm[j];
        perm[j] = x;
    }
    for (int b = 0; b < N; b += 5000) {
        CHECK_OK(sop_txn_begin(&t, db, 0));
        CHECK_OK(sop_store_open(&s, t, "deep", SOP_STORE_CREATE, &o));
        for (int i = b; i < b + 5000; i++) {
            snprintf(kb, sizeof kb, "%08u", perm[i] * 3);
            snprintf(vb, sizeof vb, "v%u", perm[i]);
            CHECK_OK(put_s(t, s, kb, vb));
        }
        CHECK_OK(sop_txn_commit(t));
        if (b == N / 2)
            CHECK_OK(sop_db_checkpoint(db));
    }
    free(perm);
    CHECK_OK(sop_db_close(db));
    CHECK_OK(sop_db_open(&db, test_dir(), &dopts));
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(sop_store_open(&s, t, "deep", 0, NULL));
    CHECK_OK(sop_cursor_open(&c, t, s));
    uint32_t i = 0;
    int rc;
    for (rc = sop_cursor_get(&k, &v, c, SOP_FIRST, NULL); rc == SOP_OK;
         rc = sop_cursor_get(&k, &v, c, SOP_NEXT, NULL), i++) {
        snprintf(kb, sizeof kb, "%08u", i * 3);
        snprintf(vb, sizeof vb, "v%u", i);
        CHECK_VAL(k, kb);
        CHECK_VAL(v, vb);
    }
    CHECK_RC(SOP_NOTFOUND, rc);
    CHECK_EQ_U64(i, N);
    i = N;
    for (rc = sop_cursor_get(&k, &v, c, SOP_LAST, NULL); rc == SOP_OK;
         rc = sop_cursor_get(&k, &v, c, SOP_PREV, NULL)) {
        i--;
        snprintf(kb, sizeof kb, "%08u", i * 3);
        CHECK_VAL(k, kb);
    }
    CHECK_EQ_U64(i, 0);
    /* seek_ge lands on the next multiple of 3 */
    for (int j = 0; j < 1000; j++) {
        uint32_t x = (uint32_t)(test_rand() % (3 * N - 3));
        snprintf(kb, sizeof kb, "%08u", x);
        CHECK_OK(sop_cursor_get(&k, &v, c, SOP_SEEK_GE, &(sop_val){kb, strlen(kb)}));
        snprintf(kb, sizeof kb, "%08u", (x + 2) / 3 * 3);
        CHECK_VAL(k, kb);
        rc = sop_cursor_get(&k, &v, c, SOP_SEEK, &(sop_val){kb, strlen(kb)});
        CHECK_OK(rc);
    }
    CHECK_RC(SOP_NOTFOUND, sop_cursor_get(&k, &v, c, SOP_SEEK, &(sop_val)S("00000001")));
    CHECK_RC(SOP_NOTFOUND, sop_cursor_get(&k, &v, c, SOP_SEEK_GE, &(sop_val)S("99999999")));
    sop_cursor_close(c);
    uint64_t n;
    CHECK_OK(sop_count(&n, t, s));
    CHECK_EQ_U64(n, N);
    sop_txn_abort(t);
    /* delete everything but every 1000th key: merges collapse the tree */
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "deep", 0, NULL));
    for (uint32_t j = 0; j < N; j++) {
        if (j % 1000 == 0)
            continue;
        snprintf(kb, sizeof kb, "%08u", j * 3);
        CHECK_OK(del_s(t, s, kb));
    }
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(sop_count(&n, t, s));
    CHECK_EQ_U64(n, N / 1000);
    CHECK_EQ_U64(check_db(db), 0);
    CHECK_OK(sop_cursor_open(&c, t, s));
    i = 0;
    for (rc = sop_cursor_get(&k, &v, c, SOP_FIRST, NULL); rc == SOP_OK;
         rc = sop_cursor_get(&k, &v, c, SOP_NEXT, NULL), i++) {
        snprintf(kb, sizeof kb, "%08u", i * 3000);
        CHECK_VAL(k, kb);
    }
    CHECK_EQ_U64(i, N / 1000);
    sop_cursor_close(c);
    sop_txn_abort(t);
    CHECK_OK(sop_db_close(db));
}

TEST(test_core__separate_values)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s, *inl;
    sop_val v;
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    sop_store_options o = SOP_STORE_OPTIONS_INIT;
    o.flags = SOP_STORE_VALUES_SEPARATE;
    CHECK_OK(sop_store_open(&s, t, "blobs", SOP_STORE_CREATE, &o));
    CHECK_OK(sop_store_open(&inl, t, "inline", SOP_STORE_CREATE, NULL));
    size_t big_len = 300000;
    char *big = malloc(big_len);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (char)(i * 7 + 3);
    sop_val bv = {big, big_len};
    CHECK_OK(sop_upsert(t, s, &(sop_val)S("big"), &bv));
    CHECK_OK(put_s(t, s, "small", "tiny"));
    CHECK_OK(sop_upsert(t, inl, &(sop_val)S("big"), &bv)); /* > max_inline: own blob */
    CHECK_OK(sop_get(&v, t, s, &(sop_val)S("big")));
    CHECK(v.len == big_len && memcmp(v.data, big, big_len) == 0);
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_db_close(db));
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(sop_store_open(&s, t, "blobs", 0, NULL));
    CHECK_OK(sop_store_open(&inl, t, "inline", 0, NULL));
    CHECK_OK(sop_get(&v, t, s, &(sop_val)S("big")));
    CHECK(v.len == big_len && memcmp(v.data, big, big_len) == 0);
    CHECK_OK(sop_get(&v, t, inl, &(sop_val)S("big")));
    CHECK(v.len == big_len && memcmp(v.data, big, big_len) == 0);
    CHECK_OK(get_s(&v, t, s, "small"));
    CHECK_VAL(v, "tiny");
    sop_txn_abort(t);
    free(big);
    CHECK_EQ_U64(check_db(db), 0);
    CHECK_OK(sop_db_close(db));
}

TEST(test_core__prepared_survives_reopen)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    sop_val v;
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "p", SOP_STORE_CREATE, NULL));
    CHECK_OK(put_s(t, s, "base", "0"));
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(put_s(t, s, "x", "prepared"));
    CHECK_OK(sop_txn_prepare(t, &(sop_val)S("xid-42")));
    CHECK(sop_txn_id(t) != 0);
    CHECK_RC(SOP_BADSTATE, put_s(t, s, "y", "1")); /* only commit/abort now */
    /* someone else writing x is blocked until resolution */
    sop_txn *t2;
    CHECK_OK(sop_txn_begin(&t2, db, 0));
    CHECK_OK(put_s(t2, s, "x", "other"));
    CHECK_RC(SOP_BUSY, sop_txn_commit(t2)); /* and t2 ended */
    CHECK_OK(sop_txn_abort(t));             /* phase 2 rollback */
    size_t n;
    sop_prepared_info info[4];
    CHECK_OK(sop_db_prepared_list(info, 4, &n, db));
    CHECK_EQ_U64(n, 0);

    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(put_s(t, s, "x", "prepared"));
    CHECK_OK(sop_txn_prepare(t, &(sop_val)S("xid-43")));
    uint64_t id = sop_txn_id(t);
    CHECK_OK(crash_close(db)); /* the process "dies" with t prepared */
    forget_txn(t);

    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_db_prepared_list(info, 4, &n, db));
    CHECK_EQ_U64(n, 1);
    CHECK_EQ_U64(info[0].id, id);
    CHECK(info[0].xid_len == 6 && memcmp(info[0].xid, "xid-43", 6) == 0);
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(sop_store_open(&s, t, "p", 0, NULL));
    CHECK_RC(SOP_NOTFOUND, get_s(&v, t, s, "x")); /* not visible before phase 2 */
    sop_txn_abort(t);
    CHECK_OK(sop_db_checkpoint(db)); /* prepared state also survives via the manifest */
    CHECK_OK(sop_db_close(db));
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_db_prepared_list(info, 4, &n, db));
    CHECK_EQ_U64(n, 1);
    CHECK_OK(sop_db_prepared_commit(db, id));
    CHECK_RC(SOP_NOTFOUND, sop_db_prepared_commit(db, id));
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(sop_store_open(&s, t, "p", 0, NULL));
    CHECK_OK(get_s(&v, t, s, "x"));
    CHECK_VAL(v, "prepared");
    sop_txn_abort(t);
    CHECK_EQ_U64(check_db(db), 0);
    CHECK_OK(sop_db_close(db));
}

TEST(test_core__custom_comparator)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    sop_cursor *c;
    sop_val k, v;
    sop_comparator rev = {"reverse", reverse_cmp, NULL};
    sop_db_options dopts = SOP_DB_OPTIONS_INIT;
    dopts.comparators = &rev;
    dopts.comparator_count = 1;
    CHECK_OK(sop_db_open(&db, test_dir(), &dopts));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    sop_store_options o = SOP_STORE_OPTIONS_INIT;
    o.comparator = "reverse";
    o.slot_length = 4;
    CHECK_OK(sop_store_open(&s, t, "r", SOP_STORE_CREATE, &o));
    for (int i = 0; i < 50; i++) {
        char kb[16];
        snprintf(kb, sizeof kb, "%03d", i);
        CHECK_OK(put_s(t, s, kb, kb));
    }
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_db_close(db));
    /* without the comparator registered: a clear error, never a wrong order */
    CHECK_RC(SOP_INVAL, sop_db_open(&db, test_dir(), NULL));
    CHECK(strstr(sop_errmsg(), "reverse") != NULL);
    CHECK_OK(sop_db_open(&db, test_dir(), &dopts));
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(sop_store_open(&s, t, "r", 0, NULL));
    CHECK_OK(sop_cursor_open(&c, t, s));
    CHECK_OK(sop_cursor_get(&k, &v, c, SOP_FIRST, NULL));
    CHECK_VAL(k, "049");
    CHECK_OK(sop_cursor_get(&k, &v, c, SOP_LAST, NULL));
    CHECK_VAL(k, "000");
    sop_cursor_close(c);
    sop_txn_abort(t);
    CHECK_OK(sop_db_close(db));
}

/* Under churn the files stay near the size of live data: dead node blobs are
 * reclaimed, and live ones are moved out of mostly-dead segments. */
TEST(test_core__space_reclaimed_under_churn)
{
    enum { N = 20000, ROUNDS = 40, PER = 4000 };
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    char kb[32], vb[128];
    sop_db_options dopts = SOP_DB_OPTIONS_INIT;
    dopts.sync = SOP_SYNC_OFF;
    dopts.segment_bytes = 1 << 20;
    CHECK_OK(sop_db_open(&db, test_dir(), &dopts));
    sop_db_stat_info st = SOP_DB_STAT_INIT;
    uint64_t max_disk = 0, live = 0;
    for (int r = 0; r <= ROUNDS; r++) {
        CHECK_OK(sop_txn_begin(&t, db, 0));
        CHECK_OK(sop_store_open(&s, t, "churn", SOP_STORE_CREATE, NULL));
        for (int i = 0; i < (r == 0 ? N : PER); i++) {
            /* skewed: a hot quarter of the keys gets most updates */
            uint32_t k =
                r == 0 ? (uint32_t)i
                       : (uint32_t)(test_rand() % 4 ? test_rand() % (N / 4) : test_rand() % N);
            snprintf(kb, sizeof kb, "key%08u", k);
            snprintf(vb, sizeof vb, "%0100u", (unsigned)(test_rand() % 1000000));
            CHECK_OK(put_s(t, s, kb, vb));
        }
        CHECK_OK(sop_txn_commit(t));
        CHECK_OK(sop_db_checkpoint(db));
        CHECK_OK(sop_db_stat(&st, db));
        if (r >= ROUNDS / 2 && st.disk_bytes > max_disk)
            max_disk = st.disk_bytes;
        live = st.live_bytes;
    }
    CHECK_OK(sop_db_checkpoint(db)); /* the second pass deletes what the first emptied */
    CHECK_OK(sop_db_stat(&st, db));
    printf("    live %" PRIu64 " bytes, disk %" PRIu64 " bytes (max %" PRIu64
           " in the second half), %" PRIu64 " segments\n",
           st.live_bytes, st.disk_bytes, max_disk, st.segments);
    /* live data ~2.5 MB in 1 MiB segments: 1.5x plus the open segment */
    CHECK_EQ_U64(check_db(db), 0);
    CHECK(st.disk_bytes <= live * 3 / 2 + (1u << 20));
    CHECK(max_disk <= live * 2 + 2 * (1u << 20));
    CHECK_OK(sop_db_close(db));
    /* and the data is intact after reopen */
    CHECK_OK(sop_db_open(&db, test_dir(), &dopts));
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(sop_store_open(&s, t, "churn", 0, NULL));
    uint64_t n;
    CHECK_OK(sop_count(&n, t, s));
    CHECK_EQ_U64(n, N);
    sop_txn_abort(t);
    CHECK_OK(sop_db_close(db));
}

static int seg_file(char *out, size_t cap, int which) /* 1 = oldest, -1 = newest */
{
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls %s/seg/*.seg | %s -n 1", test_dir(), which > 0 ? "head" : "tail");
    FILE *p = popen(cmd, "r");
    if (!p || !fgets(out, (int)cap, p))
        return -1;
    pclose(p);
    out[strcspn(out, "\n")] = 0;
    return 0;
}

/* A torn tail is cut off; damage in an older segment is SOP_CORRUPT. */
TEST(test_core__torn_tail_and_corruption)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    sop_val v;
    char path[700];
    /* NORMAL: no zeros ahead of the tail (W7), so the file ends at the
     * last record and the garbage below lands right after it. */
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.sync = SOP_SYNC_NORMAL;
    CHECK_OK(sop_db_open(&db, test_dir(), &o));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "s", SOP_STORE_CREATE, NULL));
    CHECK_OK(put_s(t, s, "a", "first"));
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(crash_close(db));
    /* garbage after the last record, as a torn append would leave */
    CHECK(seg_file(path, sizeof path, -1) == 0);
    FILE *f = fopen(path, "ab");
    CHECK(f != NULL);
    for (int i = 0; i < 300; i++)
        fputc((int)(test_rand() & 0xff), f);
    fclose(f);
    struct stat st0, st1;
    stat(path, &st0);
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    stat(path, &st1);
    CHECK(st1.st_size == st0.st_size - 300); /* cut back to the last valid record */
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "s", 0, NULL));
    CHECK_OK(get_s(&v, t, s, "a"));
    CHECK_VAL(v, "first");
    CHECK_OK(put_s(t, s, "b", "second"));
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(crash_close(db));
    /* now damage the older segment's commit record: newer segments exist */
    CHECK(seg_file(path, sizeof path, 1) == 0);
    f = fopen(path, "r+b");
    CHECK(f != NULL);
    fseek(f, 60, SEEK_SET);
    int c = fgetc(f);
    fseek(f, 60, SEEK_SET);
    fputc(c ^ 0x5a, f);
    fclose(f);
    CHECK_RC(SOP_CORRUPT, sop_db_open(&db, test_dir(), NULL));
    CHECK(strstr(sop_errmsg(), "segment") != NULL);
}

static long long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* (W7) With SOP_SYNC_FULL the newest segment holds zeros ahead of its
 * tail; recovery and a clean close cut them, so only records remain. */
TEST(test_core__log_zeros_ahead_of_tail_are_cut)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    sop_val v;
    char first[700], newest[700];
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "s", SOP_STORE_CREATE, NULL));
    CHECK_OK(put_s(t, s, "a", "first"));
    CHECK_OK(sop_txn_commit(t));
    CHECK(seg_file(first, sizeof first, -1) == 0);
    long long zeroed = file_size(first);
    CHECK(zeroed >= (1 << 20)); /* a chunk of zeros past the commit */
    FILE *f = fopen(first, "rb");
    CHECK(f != NULL);
    fseek(f, 4096, SEEK_SET);
    int nonzero = 0;
    for (int i = 0; i < (1 << 20) - 4096; i++)
        nonzero |= fgetc(f);
    fclose(f);
    CHECK_EQ_U64(nonzero, 0);
    CHECK_OK(crash_close(db));

    CHECK_OK(sop_db_open(&db, test_dir(), NULL)); /* recovery cuts the zeros */
    long long cut = file_size(first);
    CHECK(cut > 0 && cut < 4096 && cut % 8 == 0);
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "s", 0, NULL));
    CHECK_OK(get_s(&v, t, s, "a"));
    CHECK_VAL(v, "first");
    CHECK_OK(put_s(t, s, "b", "second"));
    CHECK_OK(sop_txn_commit(t));
    CHECK_EQ_U64(check_db(db), 0); /* the checker scans to the tail, not EOF */
    CHECK(seg_file(newest, sizeof newest, -1) == 0);
    CHECK(strcmp(first, newest) != 0);
    CHECK(file_size(newest) >= (1 << 20));
    CHECK_OK(sop_db_close(db)); /* a clean close cuts them too */
    long long closed = file_size(newest);
    CHECK(closed > 0 && closed < (1 << 20) && closed % 8 == 0);

    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(sop_store_open(&s, t, "s", 0, NULL));
    CHECK_OK(get_s(&v, t, s, "b"));
    CHECK_VAL(v, "second");
    sop_txn_abort(t);
    CHECK_EQ_U64(check_db(db), 0);
    CHECK_OK(sop_db_close(db));
}

static int count_segments(void)
{
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls %s/seg | wc -l", test_dir());
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (p && fscanf(p, "%d", &n) != 1)
        n = -1;
    if (p)
        pclose(p);
    return n;
}

/* Damage inside what a checkpoint made durable is SOP_CORRUPT, never
 * mistaken for a torn tail (which would silently drop later commits). */
TEST(test_core__damage_below_checkpoint_is_corrupt)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    char path[700];
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "s", SOP_STORE_CREATE, NULL));
    CHECK_OK(put_s(t, s, "k1", "v1"));
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_db_checkpoint(db));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(put_s(t, s, "k2", "v2")); /* durable: acknowledged after fdatasync */
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(crash_close(db));
    CHECK(seg_file(path, sizeof path, -1) == 0);
    FILE *f = fopen(path, "r+b");
    CHECK(f != NULL);
    uint8_t buf[8192];
    size_t n = fread(buf, 1, sizeof buf, f);
    long node_at = -1;
    for (size_t i = 0; i + 5 <= n; i += 8)
        if (memcmp(buf + i, "SOPR", 4) == 0 && buf[i + 4] == 2) { /* a NODE record */
            node_at = (long)i;
            break;
        }
    CHECK(node_at > 0);
    fseek(f, node_at + 30, SEEK_SET);
    fputc(buf[node_at + 30] ^ 0x40, f);
    fclose(f);
    CHECK_RC(SOP_CORRUPT, sop_db_open(&db, test_dir(), NULL));
    CHECK(strstr(sop_errmsg(), "durable") != NULL);
}

/* Opening and closing without writing leaves no files behind; a failed
 * NOCREATE open leaves the folder as it was. */
TEST(test_core__idle_open_close_leaves_no_files)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "s", SOP_STORE_CREATE, NULL));
    CHECK_OK(put_s(t, s, "k", "v"));
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_db_close(db));
    int before = count_segments();
    CHECK(before > 0);
    for (int i = 0; i < 5; i++) {
        CHECK_OK(sop_db_open(&db, test_dir(), NULL));
        CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
        sop_txn_abort(t);
        CHECK_OK(sop_db_close(db));
    }
    CHECK_EQ_U64(count_segments(), before);
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "s", 0, NULL));
    sop_val v;
    CHECK_OK(get_s(&v, t, s, "k"));
    CHECK_VAL(v, "v");
    CHECK_OK(put_s(t, s, "k2", "v2")); /* new segment ids stay unique */
    CHECK_OK(sop_txn_commit(t));
    CHECK_EQ_U64(check_db(db), 0);
    CHECK_OK(sop_db_close(db));

    char empty[700];
    snprintf(empty, sizeof empty, "%s/empty", test_dir());
    mkdir(empty, 0755);
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.flags = SOP_DB_NOCREATE;
    CHECK_RC(SOP_NOTFOUND, sop_db_open(&db, empty, &o));
    char cmd[800];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A %s)\"", empty);
    CHECK(system(cmd) == 0);
}

/* sop_store_stat: shape and byte counts of a tree, against what the
 * inserts imply; unchanged by reopen (nodes then come from disk); own
 * uncommitted writes not counted; a store created in the txn is empty. */
TEST(test_core__store_stat_describes_the_tree)
{
    enum { N = 1000, VLEN = 20 };
    sop_db *db;
    sop_txn *t;
    sop_store *s, *b, *e;
    sop_store_stat_info st = SOP_STORE_STAT_INIT, st2 = SOP_STORE_STAT_INIT,
                        sb = SOP_STORE_STAT_INIT;
    char key[16], val[VLEN + 1];
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    sop_store_options o = SOP_STORE_OPTIONS_INIT;
    o.slot_length = 8;
    CHECK_OK(sop_store_open(&s, t, "seq", SOP_STORE_CREATE, &o));
    CHECK_OK(sop_store_open(&e, t, "empty", SOP_STORE_CREATE, &o));
    o.flags = SOP_STORE_VALUES_SEPARATE;
    CHECK_OK(sop_store_open(&b, t, "blobs", SOP_STORE_CREATE, &o));
    CHECK_OK(sop_store_stat(&st, t, s)); /* created here: nothing committed */
    CHECK_EQ_U64(st.depth, 0);
    CHECK_EQ_U64(st.leaf_nodes + st.branch_nodes + st.node_bytes, 0);
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "k%04d", i);
        snprintf(val, sizeof val, "%0*d", VLEN, i);
        CHECK_OK(put_s(t, s, key, val));
        if (i < 100)
            CHECK_OK(put_s(t, b, key, val));
    }
    CHECK_OK(sop_txn_commit(t));

    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(put_s(t, s, "zzz", "uncommitted"));
    CHECK_OK(sop_store_stat(&st, t, s));
    CHECK_OK(sop_store_stat(&sb, t, b));
    CHECK_OK(sop_store_stat(&st2, t, e));
    sop_txn_abort(t);
    /* items, keys, values: exactly what was committed */
    CHECK_EQ_U64(st.leaf_items, N);
    CHECK_EQ_U64(st.key_bytes, 5 * N);
    CHECK_EQ_U64(st.inline_value_bytes, (uint64_t)VLEN * N);
    CHECK_EQ_U64(st.value_blobs, 0);
    CHECK_EQ_U64(st.slot_length, 8);
    /* shape: every node but the root is someone's child; capacities */
    CHECK_EQ_U64(st.branch_children, st.leaf_nodes + st.branch_nodes - 1);
    CHECK_EQ_U64(st.leaf_capacity, 8 * st.leaf_nodes);
    CHECK_EQ_U64(st.branch_capacity, 8 * st.branch_nodes);
    CHECK(st.leaf_nodes >= N / 8);         /* at most 8 items per leaf */
    CHECK(st.depth >= 4 && st.depth <= 8); /* 8^3 < N/8 leaves needs 4 levels */
    /* ascending inserts use the sequential-fill split: leaves stay full */
    CHECK(st.leaf_items * 100 >= 90 * st.leaf_capacity);
    CHECK(st.node_bytes > st.key_bytes + st.inline_value_bytes);
    /* separate values: counted as blobs, not inline */
    CHECK_EQ_U64(sb.leaf_items, 100);
    CHECK_EQ_U64(sb.value_blobs, 100);
    CHECK_EQ_U64(sb.value_blob_bytes, 100 * VLEN);
    CHECK_EQ_U64(sb.inline_value_bytes, 0);
    /* committed but empty store: one empty root leaf */
    CHECK_EQ_U64(st2.depth, 1);
    CHECK_EQ_U64(st2.leaf_nodes, 1);
    CHECK_EQ_U64(st2.branch_nodes, 0);
    CHECK_EQ_U64(st2.leaf_items, 0);
    CHECK_OK(sop_db_close(db));

    /* reopen: the same tree, read back from disk */
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(sop_store_open(&s, t, "seq", 0, NULL));
    CHECK_OK(sop_store_stat(&st2, t, s));
    CHECK(memcmp(&st, &st2, sizeof st) == 0);
    CHECK_RC(SOP_INVAL, sop_store_stat(NULL, t, s));
    CHECK_RC(SOP_INVAL, sop_store_stat(&st2, t, NULL));
    CHECK_RC(SOP_INVAL, sop_store_stat(&st2, NULL, s));
    sop_txn_abort(t);
    CHECK_OK(sop_db_close(db));
}

/* ---- cursor bounds (sop_cursor_set_range) ---------------------------------- */

/* Oracle: the items of @p keys (sorted, each @p dups times) inside the
 * bounds, forward; their count. lo/hi < 0: unbounded. */
static int range_oracle(int *out, const int *keys, int n, int dups, int lo, int hi, unsigned f)
{
    int m = 0;
    for (int i = 0; i < n; i++) {
        int k = keys[i];
        if (lo >= 0 && (k < lo || (k == lo && (f & SOP_RANGE_LO_EXCLUSIVE))))
            continue;
        if (hi >= 0 && (k > hi || (k == hi && (f & SOP_RANGE_HI_EXCLUSIVE))))
            continue;
        for (int d = 0; d < dups; d++)
            out[m++] = k;
    }
    return m;
}

static int key_num(const sop_val *k)
{
    char b[8];
    snprintf(b, sizeof b, "%.*s", (int)k->len, (const char *)k->data);
    return atoi(b + 1);
}

/* Scan @p c within the bounds both ways and compare with the oracle; also
 * the stop at each bound (NOTFOUND, still on the edge item) and SEEK /
 * SEEK_GE of every key 0..41. Returns 0 if all agree. */
static int check_bounded(sop_cursor *c, const int *keys, int n, int dups, int lo, int hi,
                         unsigned f)
{
    int want[128], m = range_oracle(want, keys, n, dups, lo, hi, f);
    char lb[16], hb[16];
    snprintf(lb, sizeof lb, "k%02d", lo);
    snprintf(hb, sizeof hb, "k%02d", hi);
    sop_val lv = tv(lb), hv = tv(hb), k;
    if (sop_cursor_set_range(c, lo >= 0 ? &lv : NULL, hi >= 0 ? &hv : NULL, f) != SOP_OK)
        return -1;
    for (int dir = 1; dir >= -1; dir -= 2) {
        int got = 0, rc;
        sop_cursor_op first = dir > 0 ? SOP_FIRST : SOP_LAST, next = dir > 0 ? SOP_NEXT : SOP_PREV;
        for (rc = sop_cursor_get(&k, NULL, c, first, NULL); rc == SOP_OK;
             rc = sop_cursor_get(&k, NULL, c, next, NULL)) {
            int want_k = dir > 0 ? want[got] : want[m - 1 - got];
            if (got >= m || key_num(&k) != want_k)
                return 1;
            got++;
        }
        if (rc != SOP_NOTFOUND || got != m)
            return 2;
        if (m) { /* stopped at the bound, still on the edge item */
            if (sop_cursor_get(&k, NULL, c, SOP_CURRENT, NULL) != SOP_OK ||
                key_num(&k) != (dir > 0 ? want[m - 1] : want[0]))
                return 3;
            if (sop_cursor_get(&k, NULL, c, next, NULL) != SOP_NOTFOUND)
                return 4;
        }
        /* NEXT/PREV from unpositioned = FIRST/LAST inside the bounds */
        if (sop_cursor_set_range(c, lo >= 0 ? &lv : NULL, hi >= 0 ? &hv : NULL, f) != SOP_OK)
            return -1;
        rc = sop_cursor_get(&k, NULL, c, next, NULL);
        if (m ? rc != SOP_OK || key_num(&k) != (dir > 0 ? want[0] : want[m - 1])
              : rc != SOP_NOTFOUND)
            return 5;
    }
    for (int x = 0; x <= 41; x++) {
        char xb[16];
        snprintf(xb, sizeof xb, "k%02d", x);
        sop_val xv = tv(xb);
        int present = 0, ge = -1;
        for (int i = 0; i < m; i++) {
            present |= want[i] == x;
            if (ge < 0 && want[i] >= x)
                ge = want[i];
        }
        int rc = sop_cursor_get(&k, NULL, c, SOP_SEEK, &xv);
        if (present ? rc != SOP_OK || key_num(&k) != x : rc != SOP_NOTFOUND)
            return 6;
        rc = sop_cursor_get(&k, NULL, c, SOP_SEEK_GE, &xv);
        if (ge >= 0 ? rc != SOP_OK || key_num(&k) != ge : rc != SOP_NOTFOUND)
            return 7;
    }
    return 0;
}

/* Issue 11: a cursor had no upper bound; every range scan wrote its own
 * past-the-end check. With sop_cursor_set_range a scan is FIRST/NEXT (or
 * LAST/PREV) until SOP_NOTFOUND. Checked against an oracle for bounds on
 * present and absent keys, inclusive and exclusive, one side or none,
 * empty ranges, forward and reverse, SEEK/SEEK_GE of every key: in a
 * read-only txn (plain tree cursor), in a read-write txn with its own
 * writes inside and at the bounds (merged cursor), and in a duplicate
 * store (both items of a bound key are in or out together). */
TEST(test_core__cursor_range_bounds)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s, *d;
    sop_cursor *c;
    char kb[16];
    int keys[32], n = 0;
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "u", SOP_STORE_CREATE, NULL));
    sop_store_options o = SOP_STORE_OPTIONS_INIT;
    o.flags = SOP_STORE_DUPLICATES;
    o.slot_length = 4; /* several leaves: bounds fall across nodes */
    CHECK_OK(sop_store_open(&d, t, "d", SOP_STORE_CREATE, &o));
    for (int i = 0; i <= 38; i += 2) {
        snprintf(kb, sizeof kb, "k%02d", i);
        keys[n++] = i;
        CHECK_OK(put_s(t, s, kb, "v"));
        sop_val kv = tv(kb);
        CHECK_OK(sop_add(t, d, &kv, &(sop_val)S("1")));
        CHECK_OK(sop_add(t, d, &kv, &(sop_val)S("2")));
    }
    CHECK_OK(sop_txn_commit(t));
    static const int bounds[] = {-1, 0, 1, 10, 11, 20, 38, 39, 41};
    const int nb = (int)(sizeof bounds / sizeof bounds[0]);
    for (int mode = 0; mode < 3; mode++) {
        int mk[32], mn = 0;
        CHECK_OK(sop_txn_begin(&t, db, mode == 1 ? 0 : SOP_TXN_READONLY));
        if (mode == 1) { /* own writes: add k11 and k39, remove k10 and k20 */
            CHECK_OK(put_s(t, s, "k11", "new"));
            CHECK_OK(put_s(t, s, "k39", "new"));
            CHECK_OK(del_s(t, s, "k10"));
            CHECK_OK(del_s(t, s, "k20"));
            for (int i = 0; i < n; i++) {
                if (keys[i] != 10 && keys[i] != 20)
                    mk[mn++] = keys[i];
                if (keys[i] == 10)
                    mk[mn++] = 11;
            }
            mk[mn++] = 39;
        } else {
            memcpy(mk, keys, sizeof keys);
            mn = n;
        }
        CHECK_OK(sop_cursor_open(&c, t, mode == 2 ? d : s));
        for (int a = 0; a < nb; a++)
            for (int b = 0; b < nb; b++)
                for (unsigned f = 0; f < 4; f++) {
                    int r = check_bounded(c, mk, mn, mode == 2 ? 2 : 1, bounds[a], bounds[b], f);
                    if (r)
                        fprintf(stderr, "    mode %d lo %d hi %d flags %u: check %d\n", mode,
                                bounds[a], bounds[b], f, r);
                    CHECK_EQ_U64(r, 0);
                }
        /* Both NULL removes the bounds; bad arguments change nothing. */
        CHECK_OK(sop_cursor_set_range(c, NULL, NULL, 0));
        sop_val k;
        CHECK_OK(sop_cursor_get(&k, NULL, c, SOP_LAST, NULL));
        CHECK_EQ_U64(key_num(&k), mode == 1 ? 39 : 38);
        CHECK_RC(SOP_INVAL, sop_cursor_set_range(c, &(sop_val){"", 0}, NULL, 0));
        CHECK_RC(SOP_INVAL, sop_cursor_set_range(c, NULL, NULL, 4));
        CHECK_OK(sop_cursor_get(&k, NULL, c, SOP_CURRENT, NULL)); /* still positioned */
        CHECK_OK(mode == 1 ? sop_txn_commit(t) : sop_txn_abort(t));
        CHECK_RC(SOP_BADSTATE, sop_cursor_set_range(c, NULL, NULL, 0));
        sop_cursor_close(c);
    }
    /* Removing at a bound through the cursor: the next step stops at the
     * bound, never outside it (k11, below the second range, stays unseen). */
    {
        sop_val k;
        CHECK_OK(sop_txn_begin(&t, db, 0));
        CHECK_OK(sop_cursor_open(&c, t, s));
        CHECK_OK(sop_cursor_set_range(c, &(sop_val)S("k12"), &(sop_val)S("k16"), 0));
        CHECK_OK(sop_cursor_get(&k, NULL, c, SOP_LAST, NULL));
        CHECK_EQ_U64(key_num(&k), 16);
        CHECK_OK(sop_cursor_remove(c));
        CHECK_RC(SOP_NOTFOUND, sop_cursor_get(&k, NULL, c, SOP_NEXT, NULL));
        CHECK_OK(sop_cursor_get(&k, NULL, c, SOP_PREV, NULL));
        CHECK_EQ_U64(key_num(&k), 14);
        CHECK_OK(sop_cursor_set_range(c, &(sop_val)S("k12"), &(sop_val)S("k12"), 0));
        CHECK_OK(sop_cursor_get(&k, NULL, c, SOP_FIRST, NULL));
        CHECK_EQ_U64(key_num(&k), 12);
        CHECK_OK(sop_cursor_remove(c));
        CHECK_RC(SOP_NOTFOUND, sop_cursor_get(&k, NULL, c, SOP_NEXT, NULL));
        CHECK_RC(SOP_NOTFOUND, sop_cursor_get(&k, NULL, c, SOP_PREV, NULL));
        CHECK_RC(SOP_NOTFOUND, sop_cursor_get(&k, NULL, c, SOP_FIRST, NULL));
        sop_cursor_close(c);
        CHECK_OK(sop_txn_abort(t));
    }
    /* In a read-write txn a bounded scan reads its range: an insert into
     * it by a concurrent commit conflicts, one far past the bound not. */
    static const char *const inserts[2] = {"k33", "k15"};
    for (int i = 0; i < 2; i++) {
        sop_txn *other;
        sop_val k;
        int items = 0, rc;
        CHECK_OK(sop_txn_begin(&t, db, 0));
        CHECK_OK(sop_cursor_open(&c, t, s));
        CHECK_OK(sop_cursor_set_range(c, &(sop_val)S("k12"), &(sop_val)S("k18"), 0));
        while ((rc = sop_cursor_get(&k, NULL, c, SOP_NEXT, NULL)) == SOP_OK)
            items++;
        CHECK_RC(SOP_NOTFOUND, rc);
        CHECK_EQ_U64(items, 4); /* k12 k14 k16 k18 */
        CHECK_OK(put_s(t, s, "sum", "4"));
        CHECK_OK(sop_txn_begin(&other, db, 0));
        CHECK_OK(put_s(other, s, inserts[i], "x"));
        CHECK_OK(sop_txn_commit(other));
        CHECK_RC(i ? SOP_CONFLICT : SOP_OK, sop_txn_commit(t));
        sop_cursor_close(c);
    }
    CHECK_OK(sop_db_close(db));
}

TEST_MAIN(T(test_core__damage_below_checkpoint_is_corrupt),
          T(test_core__idle_open_close_leaves_no_files), T(test_core__torn_tail_and_corruption),
          T(test_core__space_reclaimed_under_churn), T(test_core__crud_roundtrip_across_reopen),
          T(test_core__error_codes), T(test_core__store_lifecycle), T(test_core__duplicates),
          T(test_core__deep_tree_navigation), T(test_core__separate_values),
          T(test_core__prepared_survives_reopen), T(test_core__custom_comparator),
          T(test_core__store_stat_describes_the_tree),
          T(test_core__log_zeros_ahead_of_tail_are_cut), T(test_core__cursor_range_bounds))
