/*
 * test_space.c - resource bounds (issue 12): what a workload may cost in
 * sync calls, bytes on disk and memory, asserted with exact numbers so a
 * regression is caught at every landing.
 *
 *   - SOP_SYNC_OFF makes no fdatasync/fsync and no directory sync at all,
 *     through checkpoints, segment rotation, close, reopen and recovery
 *     (counted by tests/vfs_fault.c), while SOP_SYNC_NORMAL on the same
 *     script does sync (so the count can fail).
 */
#include <inttypes.h>

#include "harness.h"
#include "tutil.h"
#include "vfs_fault.h"

/* A 100-byte value for (key, generation): checkable without a copy. */
static void make_value(char *v, size_t len, uint32_t key, uint32_t gen)
{
    uint64_t x = ((uint64_t)key << 32 | gen) * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x >> 29;
        x *= 0xBF58476D1CE4E5B9ull;
        v[i] = (char)('a' + (x >> 59));
    }
}

static void make_key(char *k, uint32_t key)
{
    snprintf(k, 16, "key%08" PRIu32, key);
}

/* Upsert keys [from, from + n) (mod nkeys when nkeys) in transactions of
 * batch puts, values of generation gen. */
static int put_range(sop_db *db, sop_store *s, uint32_t from, uint32_t n, uint32_t nkeys,
                     uint32_t batch, uint32_t gen)
{
    char k[16], v[100];
    for (uint32_t i = 0; i < n;) {
        sop_txn *t;
        CHECK_OK_RET(sop_txn_begin(&t, db, 0));
        for (uint32_t j = 0; j < batch && i < n; j++, i++) {
            uint32_t key = nkeys ? (from + i) % nkeys : from + i;
            make_key(k, key);
            make_value(v, sizeof v, key, gen);
            sop_val kk = {k, strlen(k)}, vv = {v, sizeof v};
            CHECK_OK_RET(sop_upsert(t, s, &kk, &vv));
        }
        CHECK_OK_RET(sop_txn_commit(t));
    }
    return SOP_OK;
}

static int open_store(sop_store **s, sop_db *db)
{
    sop_txn *t;
    CHECK_OK_RET(sop_txn_begin(&t, db, 0));
    CHECK_OK_RET(sop_store_open(s, t, "kv", SOP_STORE_CREATE, NULL));
    return sop_txn_commit(t);
}

/* The sync-count script: three sessions of ~4 MB of log each over 1 MiB
 * segments with a 1 MiB cache (so automatic checkpoints and rotations
 * happen), an explicit checkpoint, clean closes, and one crash (recovery
 * replays the log). *rotations / *auto_ckpt count the sessions that
 * rotated a segment / checkpointed before the explicit checkpoint. */
static int sync_script(const sop_vfs *vfs, sop_sync_mode mode, uint64_t *rotations,
                       uint64_t *auto_ckpt)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s/db%d", test_dir(), (int)mode);
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.sync = mode;
    o.cache_bytes = 1u << 20;
    o.segment_bytes = 1u << 20;
    o.vfs = vfs;
    *rotations = *auto_ckpt = 0;
    for (int session = 0; session < 3; session++) {
        sop_db *db;
        sop_store *s;
        sop_db_stat_info st;
        CHECK_OK_RET(sop_db_open(&db, dir, &o));
        CHECK_OK_RET(open_store(&s, db));
        CHECK_OK_RET(put_range(db, s, 0, 40000, 20000, 500, (uint32_t)session));
        CHECK_OK_RET(sop_db_stat(&st, db));
        if (st.checkpoint_lsn > 0)
            (*auto_ckpt)++;
        if (st.segments > 1)
            (*rotations)++;
        CHECK_OK_RET(sop_db_checkpoint(db));
        CHECK_OK_RET(put_range(db, s, 0, 100, 0, 100, (uint32_t)session + 1));
        if (session == 1)
            CHECK_OK_RET(crash_close(db)); /* the next open replays the log */
        else
            CHECK_OK_RET(sop_db_close(db));
    }
    /* everything reads back */
    sop_db *db;
    sop_store *s;
    sop_txn *t;
    char k[16], v[100];
    CHECK_OK_RET(sop_db_open(&db, dir, &o));
    CHECK_OK_RET(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK_RET(sop_store_open(&s, t, "kv", 0, NULL));
    for (uint32_t key = 0; key < 20000; key++) {
        sop_val kk, got;
        make_key(k, key);
        make_value(v, sizeof v, key, key < 100 ? 3 : 2);
        kk.data = k;
        kk.len = strlen(k);
        CHECK_OK_RET(sop_get(&got, t, s, &kk));
        if (got.len != sizeof v || memcmp(got.data, v, sizeof v) != 0) {
            fprintf(stderr, "key %" PRIu32 " has the wrong value\n", key);
            sop_txn_abort(t);
            sop_db_close(db);
            return SOP_CORRUPT;
        }
    }
    sop_txn_abort(t);
    return sop_db_close(db);
}

TEST(test_space__sync_off_makes_no_sync_calls)
{
    fault_vfs *fv = fault_vfs_new(NULL);
    CHECK(fv != NULL);
    fault_vfs_set_real_sync(fv, 0);
    uint64_t rot, ck;
    /* Control: the same script in SOP_SYNC_NORMAL syncs (checkpoints,
     * rotations, folder entries), so the counter sees them. */
    fault_vfs_reset(fv);
    CHECK_OK(sync_script(fault_vfs_vfs(fv), SOP_SYNC_NORMAL, &rot, &ck));
    CHECK(fault_vfs_calls(fv, FAULT_SYNC) > 10);
    CHECK(fault_vfs_calls(fv, FAULT_SYNC_DIR) > 3);
    fault_vfs_reset(fv);
    CHECK_OK(sync_script(fault_vfs_vfs(fv), SOP_SYNC_OFF, &rot, &ck));
    /* the script did rotate segments and checkpoint on its own */
    CHECK_EQ_U64(rot, 3);
    CHECK_EQ_U64(ck, 3);
    CHECK_EQ_U64(fault_vfs_calls(fv, FAULT_SYNC), 0);
    CHECK_EQ_U64(fault_vfs_calls(fv, FAULT_SYNC_DIR), 0);
    fault_vfs_free(fv);
}

TEST_MAIN(T(test_space__sync_off_makes_no_sync_calls))
