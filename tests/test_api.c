/*
 * test_api.c - the public API's contract at its edges: the transaction time
 * limit at every call, store name and option validation, error codes when
 * the folder disappears under an open handle, sop_errmsg() after a success,
 * the bound on a transaction record's size, and the store catalog (dropped
 * stores freed, lookups not linear in the number of stores).
 */
#include "harness.h"
#include "tutil.h"

#include "db.h" /* white-box: db->stores, db->wal.max_record, catalog probes */
#include "sop_sys.h"
#include "txn.h"

#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <stdatomic.h>

/* ---- a VFS whose clock the test moves ------------------------------------- */

static _Atomic uint64_t fake_now = 1000000000ull;
static sop_vfs clock_vfs;

static uint64_t fake_monotonic_ns(const sop_vfs *vfs)
{
    (void)vfs;
    return atomic_load(&fake_now);
}

static const sop_vfs *fake_clock_vfs(void)
{
    clock_vfs = *sop_vfs_posix();
    clock_vfs.monotonic_ns = fake_monotonic_ns;
    return &clock_vfs;
}

/* Calls that must notice an expired transaction. */
enum {
    K_GET_RO,
    K_GET_RW,
    K_UPSERT,
    K_ADD,
    K_UPDATE,
    K_REMOVE,
    K_COUNT_RO,
    K_COUNT_RW,
    K_STORE_OPEN,
    K_STORE_CREATE,
    K_STORE_REMOVE,
    K_STORE_LIST,
    K_STORE_INFO,
    K_STORE_STAT,
    K_CURSOR_OPEN,
    K_CURSOR_GET,
    K_PREPARE,
    K_COMMIT_RO,
    K_COMMIT_RW,
    K_KINDS
};

static int expired_call(sop_txn *t, sop_store *s, sop_cursor *c, int kind, int *freed)
{
    sop_val v, k = S("k"), val = S("v");
    uint64_t n;
    char **names;
    size_t count;
    sop_store *s2;
    sop_store_info info = SOP_STORE_INFO_INIT;
    sop_store_stat_info st = SOP_STORE_STAT_INIT;
    sop_cursor *c2;
    switch (kind) {
    case K_GET_RO:
    case K_GET_RW:
        return sop_get(&v, t, s, &k);
    case K_UPSERT:
        return sop_upsert(t, s, &k, &val);
    case K_ADD:
        return sop_add(t, s, &val, &val);
    case K_UPDATE:
        return sop_update(t, s, &k, &val);
    case K_REMOVE:
        return sop_remove(t, s, &k);
    case K_COUNT_RO:
    case K_COUNT_RW:
        return sop_count(&n, t, s);
    case K_STORE_OPEN:
        return sop_store_open(&s2, t, "s", 0, NULL);
    case K_STORE_CREATE:
        return sop_store_open(&s2, t, "new", SOP_STORE_CREATE, NULL);
    case K_STORE_REMOVE:
        return sop_store_remove(t, "s");
    case K_STORE_LIST: {
        int rc = sop_store_list(&names, &count, t);
        if (rc == SOP_OK)
            sop_store_list_free(names, count);
        return rc;
    }
    case K_STORE_INFO:
        return sop_store_info_get(&info, t, s);
    case K_STORE_STAT:
        return sop_store_stat(&st, t, s);
    case K_CURSOR_OPEN: {
        int rc = sop_cursor_open(&c2, t, s);
        if (rc == SOP_OK)
            sop_cursor_close(c2);
        return rc;
    }
    case K_CURSOR_GET:
        return sop_cursor_get(&k, &v, c, SOP_FIRST, NULL);
    case K_PREPARE:
        return sop_txn_prepare(t, NULL);
    default:
        *freed = 1;
        return sop_txn_commit(t);
    }
}

/* Issue 10 #7: a transaction past its time limit fails at every call, not
 * only at commit and every 64th call. */
TEST(test_api__time_limit_enforced_at_every_call)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.vfs = fake_clock_vfs();
    o.txn_time_limit_ms = 10;
    CHECK_OK(sop_db_open(&db, test_dir(), &o));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "s", SOP_STORE_CREATE, NULL));
    CHECK_OK(put_s(t, s, "k", "v"));
    CHECK_OK(sop_txn_commit(t));
    for (int kind = 0; kind < K_KINDS; kind++) {
        int ro = kind == K_GET_RO || kind == K_COUNT_RO || kind == K_COMMIT_RO ||
                 kind == K_STORE_LIST || kind == K_STORE_INFO || kind == K_STORE_STAT ||
                 kind == K_CURSOR_OPEN || kind == K_CURSOR_GET || kind == K_STORE_OPEN;
        sop_cursor *c = NULL;
        CHECK_OK(sop_txn_begin(&t, db, ro ? SOP_TXN_READONLY : 0));
        CHECK_OK(sop_store_open(&s, t, "s", 0, NULL));
        if (kind == K_CURSOR_GET)
            CHECK_OK(sop_cursor_open(&c, t, s));
        if (kind == K_COMMIT_RW)
            CHECK_OK(put_s(t, s, "k", "w"));
        atomic_fetch_add(&fake_now, 30ull * 1000000); /* 3x the limit */
        int freed = 0;
        int rc = expired_call(t, s, c, kind, &freed);
        if (rc != SOP_TIMEOUT)
            FAIL_AT("call kind %d on an expired txn returned %d (%s), expected SOP_TIMEOUT", kind,
                    rc, sop_strerror(rc));
        CHECK(rc == SOP_TIMEOUT);
        CHECK(strstr(sop_errmsg(), "time limit") != NULL);
        if (!freed) {
            /* the transaction has failed: even a commit does not succeed */
            sop_val v;
            CHECK_RC(SOP_BADSTATE, get_s(&v, t, s, "k"));
            CHECK(sop_txn_commit(t) != SOP_OK);
        }
        sop_cursor_close(c);
    }
    /* Within the limit every call works, and nothing above committed. */
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(sop_store_open(&s, t, "s", 0, NULL));
    sop_val v;
    CHECK_OK(get_s(&v, t, s, "k"));
    CHECK_VAL(v, "v");
    uint64_t n;
    CHECK_OK(sop_count(&n, t, s));
    CHECK_EQ_U64(n, 1);
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_db_close(db));
}

/* ---- validation ------------------------------------------------------------ */

/* Issue 10 #8: store names are UTF-8 (as sop.h says and the CLI checks). */
TEST(test_api__store_names_must_be_utf8)
{
    static const char *bad[] = {
        "bad\xff\xfe",          /* bytes that never occur in UTF-8 */
        "over\xc0\xaf",         /* overlong '/' */
        "over\xe0\x80\xaf",     /* overlong, 3 bytes */
        "sur\xed\xa0\x80",      /* UTF-16 surrogate D800 */
        "sur\xed\xbf\xbf",      /* surrogate DFFF */
        "big\xf4\x90\x80\x80",  /* above U+10FFFF */
        "cut\xe6\x97",          /* truncated sequence */
        "lone\x80",             /* continuation byte alone */
        "\xf8\x88\x80\x80\x80", /* 5-byte form */
    };
    static const char *good[] = {"plain",
                                 "caf\xc3\xa9",
                                 "\xe6\x97\xa5\xe6\x9c\xac",
                                 "emoji\xf0\x9f\x98\x80",
                                 "max\xf4\x8f\xbf\xbf",
                                 "edge\xed\x9f\xbf" /* U+D7FF */};
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = sop_store_open(&s, t, bad[i], SOP_STORE_CREATE, NULL);
        if (rc != SOP_INVAL)
            FAIL_AT("store name %zu accepted (%d)", i, rc);
        CHECK(rc == SOP_INVAL);
        CHECK(strstr(sop_errmsg(), "UTF-8") != NULL);
        CHECK_RC(SOP_INVAL, sop_store_remove(t, bad[i]));
    }
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        CHECK_OK(sop_store_open(&s, t, good[i], SOP_STORE_CREATE, NULL));
    CHECK_OK(sop_txn_commit(t));
    char **names;
    size_t count;
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(sop_store_list(&names, &count, t));
    sop_store_list_free(names, count);
    CHECK_EQ_U64(count, sizeof good / sizeof *good);
    sop_txn_abort(t);
    CHECK_OK(sop_db_close(db));
}

static int other_cmp(const sop_val *a, const sop_val *b, void *ctx)
{
    (void)ctx;
    return reverse_cmp(b, a, NULL);
}

/* Issue 10 #8: one name, two comparators: which one orders the store? */
TEST(test_api__duplicate_comparator_names_refused)
{
    sop_db *db = NULL;
    sop_comparator cmps[3] = {
        {"rev", reverse_cmp, NULL}, {"fwd", other_cmp, NULL}, {"rev", other_cmp, NULL}};
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.comparators = cmps;
    o.comparator_count = 3;
    CHECK_RC(SOP_INVAL, sop_db_open(&db, test_dir(), &o));
    CHECK(db == NULL);
    CHECK(strstr(sop_errmsg(), "rev") != NULL);
    o.comparator_count = 2; /* distinct names are fine */
    CHECK_OK(sop_db_open(&db, test_dir(), &o));
    CHECK_OK(sop_db_close(db));
}

/* Issue 11: options that contradict a store's stored ones were SOP_INVAL,
 * like a bad argument; only the message told them apart. Every field
 * gives SOP_MISMATCH now (message naming it), after a reopen too (the
 * stored options), and the txn stays usable; a bad argument on an
 * existing store is still SOP_INVAL. */
TEST(test_api__contradicting_store_options_are_mismatch)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    sop_comparator cmps[2] = {{"rev", reverse_cmp, NULL}, {"fwd", other_cmp, NULL}};
    sop_db_options dopts = SOP_DB_OPTIONS_INIT;
    dopts.comparators = cmps;
    dopts.comparator_count = 2;
    CHECK_OK(sop_db_open(&db, test_dir(), &dopts));
    sop_store_options o = SOP_STORE_OPTIONS_INIT;
    o.slot_length = 32;
    o.max_inline_value = 100;
    o.comparator = "rev";
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "s", SOP_STORE_CREATE, &o));
    CHECK_OK(put_s(t, s, "k", "v"));
    CHECK_OK(sop_txn_commit(t));
    CHECK(strcmp(sop_strerror(SOP_MISMATCH), "options contradict the stored ones") == 0);
    for (int reopen = 0; reopen < 2; reopen++) {
        if (reopen) {
            CHECK_OK(sop_db_close(db));
            CHECK_OK(sop_db_open(&db, test_dir(), &dopts));
        }
        CHECK_OK(sop_txn_begin(&t, db, 0));
        sop_store_options m = o; /* each field in turn contradicts */
        m.slot_length = 64;
        CHECK_RC(SOP_MISMATCH, sop_store_open(&s, t, "s", 0, &m));
        CHECK(strstr(sop_errmsg(), "slot_length 32, opened with 64") != NULL);
        m = o, m.max_inline_value = 200;
        CHECK_RC(SOP_MISMATCH, sop_store_open(&s, t, "s", SOP_STORE_CREATE, &m));
        CHECK(strstr(sop_errmsg(), "max_inline_value") != NULL);
        m = o, m.flags = SOP_STORE_DUPLICATES;
        CHECK_RC(SOP_MISMATCH, sop_store_open(&s, t, "s", 0, &m));
        CHECK(strstr(sop_errmsg(), "flags") != NULL);
        m = o, m.comparator = "fwd";
        CHECK_RC(SOP_MISMATCH, sop_store_open(&s, t, "s", 0, &m));
        CHECK(strstr(sop_errmsg(), "comparator 'rev', opened with 'fwd'") != NULL);
        m = o, m.comparator = NULL, m.key_spec = "\x01", m.key_spec_len = 1;
        CHECK_RC(SOP_MISMATCH, sop_store_open(&s, t, "s", 0, &m));
        CHECK(strstr(sop_errmsg(), "key specification") != NULL);
        m = o, m.version = 99; /* a bad argument, not a contradiction */
        CHECK_RC(SOP_INVAL, sop_store_open(&s, t, "s", 0, &m));
        CHECK_OK(sop_store_open(&s, t, "s", 0, &o)); /* the same options: fine */
        sop_val v;
        CHECK_OK(get_s(&v, t, s, "k")); /* the txn stayed usable */
        CHECK_VAL(v, "v");
        CHECK_OK(put_s(t, s, "k2", "w"));
        CHECK_OK(sop_txn_commit(t));
    }
    CHECK_OK(sop_db_close(db));
}

/* Issue 11: the stat and info structs had no version field, so a field
 * appended later would be written past the end of an older program's
 * struct. Each has one now and the call writes only that version's
 * fields: a version-1 sop_db_stat_info (as a program built against the
 * version-1 header declares it) is filled up to `prepared` and the bytes
 * after it are untouched; version 2 adds active_txns; unknown versions
 * are SOP_INVAL with nothing written. */
TEST(test_api__older_version_stat_struct_still_works)
{
    struct db_stat_v1 { /* sop.h's sop_db_stat_info of version 1 */
        uint32_t version;
        uint64_t last_lsn, checkpoint_lsn, commits, conflicts, merges, syncs, node_loads, node_hits,
            cache_bytes, dirty_bytes, disk_bytes, live_bytes, segments, prepared;
    };
    struct {
        struct db_stat_v1 st;
        uint64_t canary[4];
    } old;
    sop_db *db;
    sop_txn *p, *t;
    sop_store *s;
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "s", SOP_STORE_CREATE, NULL));
    CHECK_OK(put_s(t, s, "k", "v"));
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_txn_begin(&p, db, 0));
    CHECK_OK(put_s(p, s, "p", "v"));
    CHECK_OK(sop_txn_prepare(p, NULL));
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));

    memset(&old, 0xAB, sizeof old);
    old.st.version = 1;
    CHECK_OK(sop_db_stat((sop_db_stat_info *)&old, db));
    CHECK_EQ_U64(old.st.version, 1);
    CHECK_EQ_U64(old.st.commits, 1);
    CHECK_EQ_U64(old.st.prepared, 1);
    CHECK(old.st.last_lsn >= 2);
    for (int i = 0; i < 4; i++)
        CHECK_EQ_U64(old.canary[i], 0xABABABABABABABABull); /* nothing past v1 */
    CHECK(sizeof(struct db_stat_v1) == offsetof(sop_db_stat_info, active_txns));

    sop_db_stat_info cur = SOP_DB_STAT_INIT;
    CHECK_OK(sop_db_stat(&cur, db));
    CHECK_EQ_U64(cur.version, SOP_DB_STAT_VERSION);
    CHECK_EQ_U64(cur.prepared, 1);
    CHECK_EQ_U64(cur.active_txns, 2); /* p (prepared) and t */
    CHECK_EQ_U64(cur.commits, old.st.commits);

    for (uint32_t bad = 0; bad < 2; bad++) { /* version 0 and a newer one */
        memset(&old, 0xAB, sizeof old);
        old.st.version = bad ? SOP_DB_STAT_VERSION + 1 : 0;
        CHECK_RC(SOP_INVAL, sop_db_stat((sop_db_stat_info *)&old, db));
        CHECK_EQ_U64(old.st.commits, 0xABABABABABABABABull);
        sop_store_info info = SOP_STORE_INFO_INIT;
        info.version = old.st.version;
        CHECK_RC(SOP_INVAL, sop_store_info_get(&info, t, s));
        sop_store_stat_info ss = SOP_STORE_STAT_INIT;
        ss.version = old.st.version;
        CHECK_RC(SOP_INVAL, sop_store_stat(&ss, t, s));
    }
    sop_store_info info = SOP_STORE_INFO_INIT;
    CHECK_OK(sop_store_info_get(&info, t, s));
    CHECK_EQ_U64(info.version, SOP_STORE_INFO_VERSION);
    CHECK_EQ_U64(info.count, 1);
    CHECK_EQ_U64(info.options.version, SOP_STORE_OPTIONS_VERSION);
    CHECK_EQ_U64(info.options.slot_length, SOP_SLOT_LENGTH_DEFAULT);
    sop_store_stat_info ss = SOP_STORE_STAT_INIT;
    CHECK_OK(sop_store_stat(&ss, t, s));
    CHECK_EQ_U64(ss.version, SOP_STORE_STAT_VERSION);
    CHECK_EQ_U64(ss.leaf_items, 1);
    CHECK_EQ_U64(ss.depth, 1);
    CHECK_OK(sop_txn_abort(t));
    CHECK_OK(sop_txn_abort(p));
    CHECK_OK(sop_db_close(db));
}

/* Issue 11: option structs were copied whole (o = *in) and only the
 * current version was accepted, so a program built against an older
 * sop.h would have had bytes past its struct read as options. Now only
 * the caller's version's fields are read. Version 1 is the oldest: each
 * struct is handed over in a heap block of exactly its version-1 size,
 * so a read past it is a heap overflow under ASan (make asan), and its
 * fields must take effect. Unknown versions are SOP_INVAL. */
TEST(test_api__options_read_only_the_callers_version)
{
    struct db_options_v1 { /* sop.h's sop_db_options of version 1 */
        uint32_t version, flags;
        sop_sync_mode sync;
        uint64_t cache_bytes, txn_time_limit_ms, segment_bytes;
        const sop_comparator *comparators;
        size_t comparator_count;
        const struct sop_vfs *vfs;
    };
    _Static_assert(sizeof(struct db_options_v1) == offsetof(sop_db_options, vfs) + sizeof(void *),
                   "version 1 ends at vfs");
    size_t dn = sizeof(struct db_options_v1);
    size_t sn = offsetof(sop_store_options, key_spec_len) + sizeof(size_t);
    struct db_options_v1 *dbo = malloc(dn);
    sop_store_options *so = malloc(sn);
    CHECK(dbo && so);
    memset(dbo, 0, dn);
    dbo->version = 1;
    dbo->sync = SOP_SYNC_OFF;
    dbo->cache_bytes = 3u << 20;
    memset(so, 0, sn);
    so->version = 1;
    so->slot_length = 8;
    so->flags = SOP_STORE_DUPLICATES;
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    CHECK_OK(sop_db_open(&db, test_dir(), (const sop_db_options *)(void *)dbo));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "s", SOP_STORE_CREATE, so));
    CHECK_OK(put_s(t, s, "k", "1"));
    CHECK_OK(add_s(t, s, "k", "2")); /* duplicates took effect */
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(sop_store_open(&s, t, "s", 0, so)); /* the match check reads v1 only too */
    sop_store_info info = SOP_STORE_INFO_INIT;
    CHECK_OK(sop_store_info_get(&info, t, s));
    CHECK_EQ_U64(info.options.slot_length, 8);
    CHECK_EQ_U64(info.options.flags, SOP_STORE_DUPLICATES);
    CHECK_EQ_U64(info.count, 2);
    sop_db_stat_info st = SOP_DB_STAT_INIT;
    CHECK_OK(sop_db_stat(&st, db));
    CHECK_EQ_U64(st.syncs, 0); /* SOP_SYNC_OFF took effect */

    for (uint32_t bad = 0; bad < 2; bad++) {
        uint32_t v = bad ? SOP_STORE_OPTIONS_VERSION + 1 : 0;
        so->version = v;
        sop_store *s2;
        CHECK_RC(SOP_INVAL, sop_store_open(&s2, t, "s", 0, so));
        CHECK(strstr(sop_errmsg(), "sop_store_options version") != NULL);
        sop_store_options o2;
        CHECK_RC(SOP_INVAL, sop_store_options_init(&o2, v));
        sop_db_options d2;
        CHECK_RC(SOP_INVAL, sop_db_options_init(&d2, bad ? SOP_DB_OPTIONS_VERSION + 1 : 0));
        dbo->version = bad ? SOP_DB_OPTIONS_VERSION + 1 : 0;
        sop_db *db2;
        CHECK_RC(SOP_INVAL,
                 sop_db_open(&db2, test_path("other"), (const sop_db_options *)(void *)dbo));
        CHECK(strstr(sop_errmsg(), "sop_db_options version") != NULL);
    }
    CHECK_OK(sop_txn_abort(t));
    CHECK_OK(sop_db_close(db));
    free(dbo);
    free(so);
}

/* Issue 11: what sop.h says of sop_store_remove, checked: in the removing
 * txn every call on the store and its cursors is SOP_BADSTATE and the name
 * is gone (list, open); others see it until the commit, transactions that
 * began before keep their snapshot through the same handle after it, and
 * an abort keeps the store. */
TEST(test_api__store_remove_contract)
{
    sop_db *db;
    sop_txn *t, *old, *rm;
    sop_store *s, *s2;
    sop_cursor *c, *oc;
    sop_val v, k;
    char **names;
    size_t n;
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "gone", SOP_STORE_CREATE, NULL));
    CHECK_OK(put_s(t, s, "k", "v"));
    CHECK_OK(sop_txn_commit(t));
    for (int abort_it = 1; abort_it >= 0; abort_it--) {
        CHECK_OK(sop_txn_begin(&old, db, SOP_TXN_READONLY));
        CHECK_OK(sop_cursor_open(&oc, old, s));
        CHECK_OK(sop_txn_begin(&rm, db, 0));
        CHECK_OK(sop_cursor_open(&c, rm, s));
        CHECK_OK(sop_cursor_get(&k, NULL, c, SOP_FIRST, NULL));
        CHECK_OK(sop_store_remove(rm, "gone"));
        CHECK_RC(SOP_BADSTATE, get_s(&v, rm, s, "k"));
        CHECK_RC(SOP_BADSTATE, put_s(rm, s, "k2", "v"));
        CHECK_RC(SOP_BADSTATE, sop_cursor_get(&k, NULL, c, SOP_CURRENT, NULL));
        CHECK_RC(SOP_NOTFOUND, sop_store_open(&s2, rm, "gone", 0, NULL));
        CHECK_RC(SOP_NOTFOUND, sop_store_remove(rm, "gone"));
        CHECK_OK(sop_store_list(&names, &n, rm));
        CHECK_EQ_U64(n, 0);
        sop_store_list_free(names, n);
        CHECK_OK(get_s(&v, old, s, "k")); /* others: unchanged until the commit */
        CHECK_VAL(v, "v");
        CHECK_OK(abort_it ? sop_txn_abort(rm) : sop_txn_commit(rm));
        CHECK_RC(SOP_BADSTATE, sop_cursor_get(&k, NULL, c, SOP_NEXT, NULL)); /* txn ended */
        sop_cursor_close(c);
        CHECK_OK(get_s(&v, old, s, "k")); /* its snapshot, the same handle */
        CHECK_VAL(v, "v");
        CHECK_OK(sop_cursor_get(&k, NULL, oc, SOP_FIRST, NULL));
        CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
        CHECK_RC(abort_it ? SOP_OK : SOP_NOTFOUND, sop_store_open(&s2, t, "gone", 0, NULL));
        CHECK(!abort_it || s2 == s);
        if (!abort_it)
            CHECK_RC(SOP_BADSTATE, get_s(&v, t, s, "k")); /* began after the removal */
        CHECK_OK(sop_txn_abort(t));
        CHECK_OK(sop_txn_abort(old));
        sop_cursor_close(oc); /* after the handle may be freed: only the cursor is freed */
    }
    CHECK_OK(sop_db_close(db));
}

/* Issue 10 #8: sop_errmsg() after a successful call is "", whatever
 * happened inside it (open of an existing folder tolerates EEXIST). */
TEST(test_api__errmsg_empty_after_success)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    sop_val v;
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_db_close(db));
    CHECK_OK(sop_db_open(&db, test_dir(), NULL)); /* seg/ exists now */
    CHECK(strcmp(sop_errmsg(), "") == 0);
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_RC(SOP_NOTFOUND, sop_store_open(&s, t, "s", 0, NULL));
    CHECK(strcmp(sop_errmsg(), "") != 0); /* a failure has its detail */
    CHECK_OK(sop_store_open(&s, t, "s", SOP_STORE_CREATE, NULL));
    CHECK(strcmp(sop_errmsg(), "") == 0);
    CHECK_RC(SOP_NOTFOUND, get_s(&v, t, s, "k"));
    CHECK_OK(put_s(t, s, "k", "v"));
    CHECK(strcmp(sop_errmsg(), "") == 0);
    CHECK_OK(sop_txn_commit(t));
    CHECK(strcmp(sop_errmsg(), "") == 0);
    CHECK_OK(sop_db_checkpoint(db));
    CHECK(strcmp(sop_errmsg(), "") == 0);
    CHECK_OK(sop_db_close(db));
    CHECK(strcmp(sop_errmsg(), "") == 0);
}

/* Issue 10 #8: the folder renamed or deleted under an open handle: commit,
 * checkpoint and close report SOP_IOERR (documented), not SOP_NOTFOUND. */
static void folder_gone(int delete_it)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    char moved[4200];
    snprintf(moved, sizeof moved, "%s.moved", test_path("db"));
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.segment_bytes = 1u << 20;
    CHECK_OK(sop_db_open(&db, test_path("db"), &o));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "s", SOP_STORE_CREATE, NULL));
    CHECK_OK(put_s(t, s, "k", "v"));
    CHECK_OK(sop_txn_commit(t));
    if (delete_it)
        test_rm_rf(test_path("db"));
    else
        CHECK(rename(test_path("db"), moved) == 0);
    int rc = sop_db_checkpoint(db);
    if (rc != SOP_IOERR)
        FAIL_AT("checkpoint returned %d (%s) [%s]", rc, sop_strerror(rc), sop_errmsg());
    CHECK(rc == SOP_IOERR);
    CHECK(sop_os_errno() == ENOENT);
    /* Commits (inline values: only the commit record is appended) until
     * one needs a new segment. */
    static char small[1000];
    memset(small, 's', sizeof small);
    rc = SOP_OK;
    for (int i = 0; i < 30 && rc == SOP_OK; i++) {
        CHECK_OK(sop_txn_begin(&t, db, 0));
        CHECK_OK(sop_store_open(&s, t, "s", 0, NULL));
        for (int j = 0; j < 100; j++) {
            int kk = i * 100 + j;
            sop_val k = {&kk, sizeof kk}, v = {small, sizeof small};
            CHECK_OK(sop_upsert(t, s, &k, &v));
        }
        rc = sop_txn_commit(t);
    }
    if (rc != SOP_IOERR)
        FAIL_AT("commit returned %d (%s) [%s]", rc, sop_strerror(rc), sop_errmsg());
    CHECK(rc == SOP_IOERR);
    /* A large value, written to the log before commit. */
    static char big[300000];
    memset(big, 'x', sizeof big);
    rc = SOP_OK;
    for (int i = 0; i < 8 && rc == SOP_OK; i++) {
        sop_val k = {&i, sizeof i}, v = {big, sizeof big};
        CHECK_OK(sop_txn_begin(&t, db, 0));
        CHECK_OK(sop_store_open(&s, t, "s", 0, NULL));
        rc = sop_upsert(t, s, &k, &v);
        if (rc == SOP_OK)
            rc = sop_txn_commit(t);
        else
            sop_txn_abort(t);
    }
    if (rc != SOP_IOERR)
        FAIL_AT("write returned %d (%s) [%s]", rc, sop_strerror(rc), sop_errmsg());
    CHECK(rc == SOP_IOERR);
    rc = sop_db_close(db);
    if (rc != SOP_IOERR)
        FAIL_AT("close returned %d (%s) [%s]", rc, sop_strerror(rc), sop_errmsg());
    CHECK(rc == SOP_IOERR);
    test_rm_rf(moved);
}

TEST(test_api__folder_renamed_under_handle_is_ioerr)
{
    folder_gone(0);
}

TEST(test_api__folder_deleted_under_handle_is_ioerr)
{
    folder_gone(1);
}

/* ---- record size bound ------------------------------------------------------ */

/* Issue 10 #10: a transaction record must fit the 32-bit length field; one
 * that would not is refused before anything is written. The bound is
 * lowered here (white-box) so the test needs no 4 GiB of memory. */
TEST(test_api__oversized_commit_record_refused)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    sop_db_stat_info before = SOP_DB_STAT_INIT, after = SOP_DB_STAT_INIT;
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK(sop_wal__max_record(db->wal) >= (1ull << 32) - 64 &&
          sop_wal__max_record(db->wal) < (1ull << 32));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "s", SOP_STORE_CREATE, NULL));
    CHECK_OK(put_s(t, s, "small", "1"));
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_db_stat(&before, db));
    sop_wal__set_max_record(db->wal, 64 * 1024);
    static char val[1000];
    memset(val, 'v', sizeof val);
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "s", 0, NULL));
    for (int i = 0; i < 100; i++) { /* 100 KB of inline values: one record */
        char key[16];
        snprintf(key, sizeof key, "k%03d", i);
        sop_val k = tv(key), v = {val, sizeof val};
        CHECK_OK(sop_upsert(t, s, &k, &v));
    }
    CHECK_RC(SOP_INVAL, sop_txn_commit(t));
    CHECK(strstr(sop_errmsg(), "record") != NULL);
    CHECK_OK(sop_db_stat(&after, db));
    CHECK_EQ_U64(after.last_lsn, before.last_lsn);
    CHECK_EQ_U64(after.disk_bytes, before.disk_bytes); /* nothing written */
    /* The handle is fine: a small commit goes through and survives. */
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "s", 0, NULL));
    CHECK_OK(put_s(t, s, "after", "2"));
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(crash_close(db));
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(sop_store_open(&s, t, "s", 0, NULL));
    uint64_t n;
    CHECK_OK(sop_count(&n, t, s));
    CHECK_EQ_U64(n, 2);
    sop_txn_abort(t);
    CHECK_EQ_U64(check_db(db), 0);
    CHECK_OK(sop_db_close(db));
}

/* ---- the store catalog ------------------------------------------------------ */

static size_t catalog_entries(sop_db *db)
{
    size_t n = 0;
    for (sop_store *s = atomic_load(&db->stores); s; s = s->next)
        n++;
    return n;
}

static int create_drop_cycles(sop_db *db, int cycles)
{
    sop_txn *t;
    sop_store *s;
    for (int i = 0; i < cycles; i++) {
        CHECK_OK_RET(sop_txn_begin(&t, db, 0));
        CHECK_OK_RET(sop_store_open(&s, t, "tmp", SOP_STORE_CREATE, NULL));
        CHECK_OK_RET(put_s(t, s, "k", "v"));
        CHECK_OK_RET(sop_txn_commit(t));
        CHECK_OK_RET(sop_txn_begin(&t, db, 0));
        CHECK_OK_RET(sop_store_remove(t, "tmp"));
        CHECK_OK_RET(sop_txn_commit(t));
        /* created and removed in one transaction, and an abandoned create */
        CHECK_OK_RET(sop_txn_begin(&t, db, 0));
        CHECK_OK_RET(sop_store_open(&s, t, "t2", SOP_STORE_CREATE, NULL));
        CHECK_OK_RET(sop_store_remove(t, "t2"));
        CHECK_OK_RET(sop_txn_commit(t));
        CHECK_OK_RET(sop_txn_begin(&t, db, 0));
        CHECK_OK_RET(sop_store_open(&s, t, "t3", SOP_STORE_CREATE, NULL));
        sop_txn_abort(t);
    }
    return SOP_OK;
}

/* A commit: its trim frees the drops older than every snapshot (the newest
 * drop, made visible only after its own commit's trim, waits for this). */
static int touch(sop_db *db)
{
    sop_txn *t;
    sop_store *s;
    CHECK_OK_RET(sop_txn_begin(&t, db, 0));
    CHECK_OK_RET(sop_store_open(&s, t, "keep", 0, NULL));
    CHECK_OK_RET(put_s(t, s, "touch", "1"));
    return sop_txn_commit(t);
}

/* A commit that writes a fresh store (the trim of any commit frees the
 * drops older than every snapshot). */
static int touch_any(sop_db *db)
{
    sop_txn *t;
    sop_store *s;
    CHECK_OK_RET(sop_txn_begin(&t, db, 0));
    CHECK_OK_RET(sop_store_open(&s, t, "touch", SOP_STORE_CREATE, NULL));
    CHECK_OK_RET(put_s(t, s, "k", "touch"));
    return sop_txn_commit(t);
}

/* Issue 10 #6: dropped (and never-committed) stores are freed once no
 * snapshot can see them; the handle does not grow with create/drop churn. */
TEST(test_api__dropped_stores_are_freed)
{
    sop_db *db;
    sop_txn *t, *reader;
    sop_store *s, *old;
    sop_val v;
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.sync = SOP_SYNC_NORMAL; /* churn without an fdatasync per commit */
    CHECK_OK(sop_db_open(&db, test_dir(), &o));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "keep", SOP_STORE_CREATE, NULL));
    CHECK_OK(put_s(t, s, "a", "1"));
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(create_drop_cycles(db, 300));
    CHECK(catalog_entries(db) <= 2);
    CHECK_OK(touch(db));
    CHECK_EQ_U64(catalog_entries(db), 1);

    /* A reader that began before a drop still sees the dropped store (and
     * keeps it) until it ends. */
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "tmp", SOP_STORE_CREATE, NULL));
    CHECK_OK(put_s(t, s, "k", "pinned"));
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_txn_begin(&reader, db, SOP_TXN_READONLY));
    CHECK_OK(sop_store_open(&old, reader, "tmp", 0, NULL));
    CHECK_OK(create_drop_cycles(db, 50)); /* drops "tmp", re-creates, drops ... */
    CHECK(catalog_entries(db) >= 2);
    CHECK_OK(get_s(&v, reader, old, "k"));
    CHECK_VAL(v, "pinned");
    sop_txn_abort(reader);
    CHECK_OK(touch(db)); /* a commit reclaims what the reader held */
    CHECK_EQ_U64(catalog_entries(db), 1);

    /* Recovery replays the churn: the reopened handle holds the live store. */
    CHECK_OK(crash_close(db));
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_EQ_U64(catalog_entries(db), 1);
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_RC(SOP_NOTFOUND, sop_store_open(&s, t, "tmp", 0, NULL));
    CHECK_OK(sop_store_open(&s, t, "keep", 0, NULL));
    CHECK_OK(get_s(&v, t, s, "a"));
    CHECK_VAL(v, "1");
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(create_drop_cycles(db, 20));
    CHECK_OK(touch(db));
    CHECK_EQ_U64(catalog_entries(db), 1);
    CHECK_EQ_U64(check_db(db), 0);
    CHECK_OK(sop_db_close(db));
}

/* A store created in a prepared transaction: committed by phase 2 it is
 * reachable by name, and the transaction's own (pending) object is freed
 * with it; rolled back, nothing stays. */
TEST(test_api__prepared_create_frees_pending_object)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    sop_val v;
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    for (int commit = 0; commit < 2; commit++) {
        CHECK_OK(sop_txn_begin(&t, db, 0));
        CHECK_OK(sop_store_open(&s, t, commit ? "yes" : "no", SOP_STORE_CREATE, NULL));
        CHECK_OK(put_s(t, s, "k", "v"));
        CHECK_OK(sop_txn_prepare(t, NULL));
        if (commit)
            CHECK_OK(sop_txn_commit(t));
        else
            sop_txn_abort(t);
    }
    CHECK_OK(touch_any(db));
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_RC(SOP_NOTFOUND, sop_store_open(&s, t, "no", 0, NULL));
    CHECK_OK(sop_store_open(&s, t, "yes", 0, NULL));
    CHECK_OK(get_s(&v, t, s, "k"));
    CHECK_VAL(v, "v");
    sop_txn_abort(t);
    CHECK_EQ_U64(catalog_entries(db), 2); /* "yes" and "touch" */
    CHECK_EQ_U64(check_db(db), 0);
    CHECK_OK(sop_db_close(db));
}

#define MANY_STORES 16000

static void many_names(char *buf, size_t cap, int i)
{
    snprintf(buf, cap, "store-%05d", i);
}

static int list_count(sop_db *db, size_t *count_out)
{
    sop_txn *t;
    char **names;
    CHECK_OK_RET(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    int rc = sop_store_list(&names, count_out, t);
    if (rc == SOP_OK)
        sop_store_list_free(names, *count_out);
    sop_txn_abort(t);
    return rc;
}

/* Issue 10 #6: 16,000 stores created in one transaction: lookups by name
 * and id (catalog) and by store (the transaction's write sets) examine a
 * bounded number of entries each, not all of them. */
TEST(test_api__many_stores_in_one_txn)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    char name[32];
    size_t count;
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    uint64_t probes0 = db->cat_probes;
    for (int i = 0; i < MANY_STORES; i++) {
        many_names(name, sizeof name, i);
        CHECK_OK(sop_store_open(&s, t, name, SOP_STORE_CREATE, NULL));
        if (i % 4 == 0)
            CHECK_OK(put_s(t, s, "k", name));
    }
    /* open each again: the pending catalog answers */
    for (int i = 0; i < MANY_STORES; i++) {
        many_names(name, sizeof name, i);
        CHECK_OK(sop_store_open(&s, t, name, 0, NULL));
    }
    uint64_t per_op = (db->cat_probes - probes0 + t->ws_probes) / (2 * MANY_STORES);
    if (per_op > 8)
        FAIL_AT("%" PRIu64 " catalog entries examined per store lookup", per_op);
    CHECK(per_op <= 8);
    probes0 = db->cat_probes;
    CHECK_OK(sop_txn_commit(t));
    per_op = (db->cat_probes - probes0) / MANY_STORES;
    if (per_op > 16)
        FAIL_AT("%" PRIu64 " catalog entries examined per created store at commit", per_op);
    CHECK(per_op <= 16);
    CHECK_OK(list_count(db, &count));
    CHECK_EQ_U64(count, MANY_STORES);

    /* Replay of that record (no checkpoint), then a manifest load. */
    CHECK_OK(crash_close(db));
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    per_op = db->cat_probes / MANY_STORES;
    if (per_op > 16)
        FAIL_AT("%" PRIu64 " catalog entries examined per store at replay", per_op);
    CHECK(per_op <= 16);
    CHECK_OK(list_count(db, &count));
    CHECK_EQ_U64(count, MANY_STORES);
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    for (int i = 0; i < MANY_STORES; i += 997) {
        sop_val v;
        many_names(name, sizeof name, i);
        CHECK_OK(sop_store_open(&s, t, name, 0, NULL));
        if (i % 4 == 0) {
            CHECK_OK(get_s(&v, t, s, "k"));
            CHECK_VAL(v, name);
        }
    }
    sop_txn_abort(t);
    /* Small commits next to 16k stores do not walk them all: trim looks
     * only at stores with old count versions, and the lid map let go of
     * the burst. */
    for (int i = 0; i < 50; i++) {
        CHECK_OK(sop_txn_begin(&t, db, 0));
        CHECK_OK(sop_store_open(&s, t, "store-00000", 0, NULL));
        CHECK_OK(put_s(t, s, "k", "store-00000"));
        CHECK_OK(sop_txn_commit(t));
    }
    size_t multi = 0;
    for (sop_store *m = db->count_multi; m; m = m->counts_next)
        multi++;
    CHECK(multi <= 2);
    CHECK(db->trim_lids.slots_cap <= 1024);
    CHECK_OK(sop_db_close(db));
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(list_count(db, &count));
    CHECK_EQ_U64(count, MANY_STORES);
    /* drop them all in one transaction */
    CHECK_OK(sop_txn_begin(&t, db, 0));
    for (int i = 0; i < MANY_STORES; i++) {
        many_names(name, sizeof name, i);
        CHECK_OK(sop_store_remove(t, name));
    }
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(list_count(db, &count));
    CHECK_EQ_U64(count, 0);
    CHECK_OK(sop_txn_begin(&t, db, 0)); /* the next commit reclaims them */
    CHECK_OK(sop_store_open(&s, t, "one", SOP_STORE_CREATE, NULL));
    CHECK_OK(sop_txn_commit(t));
    CHECK_EQ_U64(catalog_entries(db), 1);
    CHECK_EQ_U64(check_db(db), 0);
    CHECK_OK(sop_db_close(db));
}

/* Threads creating, dropping and opening stores of a few shared names,
 * with readers: the catalog's indexes, reclamation and the per-txn write
 * set index under concurrency (run under TSan: tests/threaded.list). */
struct churn_arg {
    sop_db *db;
    int id;
    int errors;
};

static void *churn_thread(void *p)
{
    struct churn_arg *a = p;
    char name[16];
    for (int i = 0; i < 300; i++) {
        sop_txn *t;
        sop_store *s;
        sop_val v;
        int ro = a->id == 0;
        if (sop_txn_begin(&t, a->db, ro ? SOP_TXN_READONLY : 0) != SOP_OK) {
            a->errors++;
            break;
        }
        int rc = SOP_OK;
        for (int j = 0; j < (ro ? 12 : 3) && rc == SOP_OK; j++) {
            v.data = NULL;
            snprintf(name, sizeof name, "n%d", (i * 7 + j + a->id) % 12);
            rc = sop_store_open(&s, t, name, ro ? 0 : SOP_STORE_CREATE, NULL);
            if (rc == SOP_OK)
                rc = ro ? get_s(&v, t, s, "k") : put_s(t, s, "k", name);
            if (rc == SOP_NOTFOUND)
                rc = SOP_OK;
            if (rc == SOP_OK && ro && v.data &&
                (v.len != strlen(name) || memcmp(v.data, name, v.len)))
                a->errors++; /* a store's value names its store */
        }
        if (rc == SOP_OK && !ro && i % 3 == 0) {
            snprintf(name, sizeof name, "n%d", (i + a->id) % 12);
            rc = sop_store_remove(t, name);
            if (rc == SOP_NOTFOUND)
                rc = SOP_OK;
        }
        if (rc != SOP_OK) {
            if (rc != SOP_CONFLICT && rc != SOP_BADSTATE) {
                fprintf(stderr, "    thread %d: %s: %s\n", a->id, sop_strerror(rc), sop_errmsg());
                a->errors++;
            }
            sop_txn_abort(t);
            continue;
        }
        rc = sop_txn_commit(t);
        if (rc != SOP_OK && rc != SOP_CONFLICT) {
            fprintf(stderr, "    thread %d commit: %s: %s\n", a->id, sop_strerror(rc),
                    sop_errmsg());
            a->errors++;
        }
    }
    return NULL;
}

TEST(test_api__catalog_churn_threads)
{
    sop_db *db;
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.sync = SOP_SYNC_OFF;
    CHECK_OK(sop_db_open(&db, test_dir(), &o));
    pthread_t th[4];
    struct churn_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct churn_arg){db, i, 0};
        CHECK(pthread_create(&th[i], NULL, churn_thread, &args[i]) == 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++)
        CHECK_EQ_U64(args[i].errors, 0);
    CHECK_OK(touch_any(db));
    size_t live;
    CHECK_OK(list_count(db, &live));
    CHECK_EQ_U64(catalog_entries(db), live); /* nothing dropped is left */
    CHECK(live <= 13);                       /* n0..n11 and "touch" */
    CHECK_EQ_U64(check_db(db), 0);
    CHECK_OK(sop_db_close(db));
}

TEST_MAIN(T(test_api__time_limit_enforced_at_every_call), T(test_api__store_names_must_be_utf8),
          T(test_api__duplicate_comparator_names_refused), T(test_api__errmsg_empty_after_success),
          T(test_api__folder_renamed_under_handle_is_ioerr),
          T(test_api__folder_deleted_under_handle_is_ioerr),
          T(test_api__oversized_commit_record_refused), T(test_api__dropped_stores_are_freed),
          T(test_api__many_stores_in_one_txn), T(test_api__catalog_churn_threads),
          T(test_api__prepared_create_frees_pending_object),
          T(test_api__contradicting_store_options_are_mismatch),
          T(test_api__older_version_stat_struct_still_works), T(test_api__store_remove_contract),
          T(test_api__options_read_only_the_callers_version))
