/*
 * test_accounting.c - space accounting across crashes, checkpoints and
 * recovery (issue 10 defect 1 and 9, issue 11's checkpoint defects).
 *
 * Each segment counts the bytes of the blobs written into it and of those
 * that died; a checkpoint deletes a segment whose blobs are all dead. A
 * death counted twice, or a birth not counted, makes a segment look empty
 * while something still references a blob in it: the next reclamation
 * deletes live data ("blob in missing segment"). sop_db_check compares the
 * accounting with what is referenced; every test here ends with a clean
 * check, and the end-to-end ones go on using the database (overwrites,
 * checkpoints, reopen) and read every value back, because drift shows as
 * data loss only once reclamation acts on it.
 *
 * The windows inside a checkpoint are hit deterministically through a VFS
 * that runs a callback at the checkpoint's log sync (hook_vfs below): a
 * commit made there lands after the checkpoint's cut and before its
 * manifest, the place recovery accounts differently from the live handle.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

#include "harness.h"
#include "sop_sys.h"
#include "tutil.h"
#include "vfs_crash.h"

/* ---- a VFS that calls back at a sync --------------------------------------- */

static sop_vfs hook_table;
static const sop_vfs *hook_base;
static void (*hook_fn)(void *);
static void *hook_ctx;
static int hook_armed; /* fire at the next file sync */

static int hook_sync(sop_file *f, int data_only)
{
    int rc = hook_base->sync(f, data_only);
    if (hook_armed) {
        hook_armed = 0;
        hook_fn(hook_ctx);
    }
    return rc;
}

/* The base VFS with sync hooked; the callback runs after the first file sync
 * once armed (the checkpoint's sync of the log, step 3 of sop_ckpt__run:
 * after the cut, before the manifest). */
static const sop_vfs *hook_vfs(const sop_vfs *base)
{
    hook_base = base ? base : sop_vfs_posix();
    hook_table = *hook_base;
    hook_table.sync = hook_sync;
    hook_armed = 0;
    return &hook_table;
}

static sop_db_options opts_with(const sop_vfs *vfs, sop_sync_mode sync)
{
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.vfs = vfs;
    o.sync = sync;
    o.segment_bytes = 1 << 20;
    return o;
}

static int open_blob_store(sop_store **s, sop_txn *t)
{
    sop_store_options so = SOP_STORE_OPTIONS_INIT;
    so.max_inline_value = 64;
    return sop_store_open(s, t, "b", SOP_STORE_CREATE, &so);
}

static void fill(char *buf, size_t len, uint64_t tag)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (char)('a' + (tag * 31 + i) % 26);
}

/* Put key -> a value of len bytes derived from tag, in its own transaction. */
static int put_blob(sop_db *db, const char *key, size_t len, uint64_t tag)
{
    static char buf[32768];
    sop_txn *t;
    sop_store *s;
    fill(buf, len, tag);
    sop_val k = tv(key), v = {buf, len};
    int rc = sop_txn_begin(&t, db, 0);
    if (rc)
        return rc;
    if ((rc = open_blob_store(&s, t)) || (rc = sop_upsert(t, s, &k, &v))) {
        sop_txn_abort(t);
        return rc;
    }
    return sop_txn_commit(t);
}

/* Is key's value the one put_blob(len, tag) wrote? */
static int value_is(sop_db *db, const char *key, size_t len, uint64_t tag)
{
    static char buf[32768];
    sop_txn *t;
    sop_store *s;
    sop_val v, k = tv(key);
    int rc = sop_txn_begin(&t, db, SOP_TXN_READONLY);
    if (rc)
        return rc;
    if ((rc = sop_store_open(&s, t, "b", 0, NULL)) == SOP_OK && (rc = sop_get(&v, t, s, &k)) == 0) {
        fill(buf, len, tag);
        if (v.len != len || memcmp(v.data, buf, len) != 0)
            rc = -1;
    }
    sop_txn_abort(t);
    return rc;
}

/* ---- deterministic windows ------------------------------------------------- */

struct commit_in_ckpt {
    sop_db *db;
    sop_txn *txn; /* committed in the hook if set */
    const char *key;
    size_t len;
    uint64_t tag;
    int rc;
};

static void commit_in_hook(void *ctx)
{
    struct commit_in_ckpt *c = ctx;
    if (c->txn)
        c->rc = sop_txn_commit(c->txn);
    else
        c->rc = put_blob(c->db, c->key, c->len, c->tag);
}

/*
 * A checkpoint writes node N (dirty at its cut C); a commit after C replaces
 * N before the manifest is written. The live handle counts N's blob dead at
 * once (it is superseded), and so did the manifest; recovery then replays
 * the commit, whose publish finds N's blob in the manifest's registry and
 * counts its death again: the segment claims fewer live bytes than its
 * blobs hold, and a later checkpoint deletes it under live nodes.
 */
TEST(test_accounting__node_superseded_during_checkpoint_dies_once)
{
    const sop_vfs *vfs = hook_vfs(NULL);
    sop_db_options o = opts_with(vfs, SOP_SYNC_NORMAL);
    sop_db *db;
    CHECK_OK(sop_db_open(&db, test_dir(), &o));
    CHECK_OK(put_blob(db, "k1", 500, 1));
    CHECK_OK(sop_db_checkpoint(db));
    CHECK_OK(put_blob(db, "k1", 700, 2)); /* the leaf is dirty again */
    struct commit_in_ckpt c = {db, NULL, "k2", 900, 3, SOP_OK};
    hook_fn = commit_in_hook;
    hook_ctx = &c;
    hook_armed = 1;
    CHECK_OK(sop_db_checkpoint(db));
    CHECK(!hook_armed);
    CHECK_OK(c.rc);
    CHECK_EQ_U64(check_db(db), 0);
    CHECK_OK(crash_close(db));
    CHECK_OK(sop_db_open(&db, test_dir(), &o));
    CHECK_EQ_U64(check_db(db), 0);
    CHECK_OK(sop_db_checkpoint(db));
    CHECK_EQ_U64(check_db(db), 0);
    CHECK_OK(value_is(db, "k1", 700, 2));
    CHECK_OK(value_is(db, "k2", 900, 3));
    CHECK_OK(sop_db_close(db));
}

/*
 * Transaction T's value blob is in flight at the cut and T commits before the
 * manifest is written; U's blob is in flight at both and U commits after the
 * checkpoint. The manifest counted only U's bytes in flight; recovery claimed
 * T's bytes from them when replaying T, then could not claim U's, and counted
 * the remainder dead although U references it.
 */
TEST(test_accounting__value_committed_during_checkpoint_stays_live)
{
    const sop_vfs *vfs = hook_vfs(NULL);
    sop_db_options o = opts_with(vfs, SOP_SYNC_NORMAL);
    sop_db *db;
    sop_txn *t, *u;
    sop_store *s;
    static char big[5000], small[1000];
    fill(big, sizeof big, 7);
    fill(small, sizeof small, 8);
    sop_val kt = tv("t"), ku = tv("u"), vt = {small, sizeof small}, vu = {big, sizeof big};
    CHECK_OK(sop_db_open(&db, test_dir(), &o));
    CHECK_OK(put_blob(db, "seed", 200, 1));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(open_blob_store(&s, t));
    CHECK_OK(sop_upsert(t, s, &kt, &vt));
    CHECK_OK(sop_txn_begin(&u, db, 0));
    CHECK_OK(open_blob_store(&s, u));
    CHECK_OK(sop_upsert(u, s, &ku, &vu));
    struct commit_in_ckpt c = {db, t, NULL, 0, 0, SOP_OK};
    hook_fn = commit_in_hook;
    hook_ctx = &c;
    hook_armed = 1;
    CHECK_OK(sop_db_checkpoint(db));
    CHECK(!hook_armed);
    CHECK_OK(c.rc);
    CHECK_OK(sop_txn_commit(u));
    CHECK_EQ_U64(check_db(db), 0);
    CHECK_OK(crash_close(db));
    CHECK_OK(sop_db_open(&db, test_dir(), &o));
    CHECK_EQ_U64(check_db(db), 0);
    CHECK_OK(sop_db_checkpoint(db));
    CHECK_EQ_U64(check_db(db), 0);
    CHECK_OK(value_is(db, "t", sizeof small, 8));
    CHECK_OK(value_is(db, "u", sizeof big, 7));
    CHECK_OK(sop_db_close(db));
}

TEST_MAIN(T(test_accounting__node_superseded_during_checkpoint_dies_once),
          T(test_accounting__value_committed_during_checkpoint_stays_live))
