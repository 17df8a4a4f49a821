/*
 * test_cache.c - the L1's L2 hook (sop_sys.h's sop_l2_cache, cache.h L5),
 * through sop_db_options.l2, with the cache's counters read white-box.
 *
 * A test L2 keeps the images offered to it in memory, keyed by physical ID,
 * and counts what it is asked. It serves them intact (the loads must then
 * come from it: the node records on disk are damaged under the handle, and
 * one without the L2 must fail on them), or with a byte flipped (each must be
 * rejected by its crc and read from disk, with the right values). The
 * records are damaged only while a handle is open: open refuses damage
 * below the durable point.
 */
#include "harness.h"
#include "tutil.h"

#include "cache.h" /* white-box: sop_cache__stat */
#include "sop_sys.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define KEYS      3000
#define MAX_ENTRY 1024

typedef struct test_l2 {
    sop_node_id id[MAX_ENTRY];
    uint8_t *img[MAX_ENTRY];
    size_t len[MAX_ENTRY];
    size_t count;
    int corrupt; /* serve every image with one byte flipped */
    uint64_t gets, served, puts, invalidates;
} test_l2;

static int same_id(const sop_node_id *a, const sop_node_id *b)
{
    return a->segment == b->segment && a->offset == b->offset && a->length == b->length &&
           a->crc == b->crc;
}

static size_t l2_get(void *ctx, const sop_node_id *id, uint8_t *buf, size_t cap)
{
    test_l2 *l = ctx;
    l->gets++;
    for (size_t i = 0; i < l->count; i++)
        if (same_id(&l->id[i], id) && l->len[i] <= cap) {
            memcpy(buf, l->img[i], l->len[i]);
            if (l->corrupt)
                buf[l->len[i] / 2] ^= 0x20;
            l->served++;
            return l->len[i];
        }
    return 0;
}

static void l2_put(void *ctx, const sop_node_id *id, const uint8_t *img, size_t len)
{
    test_l2 *l = ctx;
    l->puts++;
    for (size_t i = 0; i < l->count; i++)
        if (same_id(&l->id[i], id))
            return;
    if (l->count == MAX_ENTRY)
        return;
    l->img[l->count] = malloc(len);
    if (!l->img[l->count])
        return;
    memcpy(l->img[l->count], img, len);
    l->id[l->count] = *id;
    l->len[l->count] = len;
    l->count++;
}

static void l2_invalidate(void *ctx, const sop_node_id *id)
{
    (void)id;
    ((test_l2 *)ctx)->invalidates++;
}

static void l2_free(test_l2 *l)
{
    for (size_t i = 0; i < l->count; i++)
        free(l->img[i]);
}

static void key_of(char *buf, int i)
{
    snprintf(buf, 32, "key%06d", (i * 7919) % KEYS);
}
static void value_of(char *buf, int i)
{
    snprintf(buf, 128, "value %d of the l2 test, long enough to need a few leaves %d", i, i * 31);
}

static void build(const char *dir)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    char k[32], v[128];
    CHECK_OK(sop_db_open(&db, dir, NULL));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    CHECK_OK(sop_store_open(&s, t, "kv", SOP_STORE_CREATE, NULL));
    for (int i = 0; i < KEYS; i++) {
        key_of(k, i);
        value_of(v, (i * 7919) % KEYS);
        CHECK_OK(put_s(t, s, k, v));
    }
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_db_close(db)); /* checkpoints: every node is a record on disk */
}

/* Damage (or restore) one payload byte of every node record l holds, in
 * the files of an open handle: recovery refuses damage below the durable
 * point at open, so the records are damaged only between open and close. */
static int damage_records(const char *dir, const test_l2 *l, int restore)
{
    char path[512];
    for (size_t i = 0; i < l->count; i++) {
        snprintf(path, sizeof path, "%s/seg/%016" PRIx64 ".seg", dir, l->id[i].segment);
        int fd = open(path, O_RDWR);
        if (fd < 0)
            return -1;
        uint8_t b = l->img[i][l->len[i] / 2];
        if (!restore)
            b ^= 0x55;
        off_t at = (off_t)(l->id[i].offset + SOP_REC_HDR_LEN + l->len[i] / 2);
        ssize_t n = pwrite(fd, &b, 1, at);
        close(fd);
        if (n != 1)
            return -1;
    }
    return 0;
}

/* Open dir with l2 (NULL: none) and read every key: the number of values
 * right, or the code of the first failing call (all codes are < 0). *st gets the cache's counters.
 */
static int read_all(const char *dir, const sop_l2_cache *l2, sop_cache_stat *st,
                    const test_l2 *damage)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    char k[32], v[128];
    int good = 0, rc;
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.l2 = l2; /* the public way in: in place from open on */
    if ((rc = sop_db_open(&db, dir, &o)) != SOP_OK)
        return rc;
    if (damage && damage_records(dir, damage, 0) != 0)
        rc = SOP_IOERR;
    else if ((rc = sop_txn_begin(&t, db, SOP_TXN_READONLY)) == SOP_OK &&
             (rc = sop_store_open(&s, t, "kv", 0, NULL)) == SOP_OK) {
        for (int i = 0; i < KEYS; i++) {
            sop_val got;
            snprintf(k, sizeof k, "key%06d", i);
            value_of(v, i);
            if ((rc = get_s(&got, t, s, k)) != SOP_OK)
                break;
            good += got.len == strlen(v) && memcmp(got.data, v, got.len) == 0;
        }
        sop_txn_abort(t);
    }
    sop_cache__stat(db->cache, st);
    if (damage && damage_records(dir, damage, 1) != 0 && rc == SOP_OK)
        rc = SOP_IOERR;
    sop_db_close(db);
    return rc == SOP_OK ? good : rc;
}

TEST(test_cache__l2_serves_verified_images)
{
    const char *dir = test_dir();
    static test_l2 l;
    memset(&l, 0, sizeof l);
    sop_l2_cache hook = {SOP_L2_CACHE_VERSION, &l, l2_get, l2_put, l2_invalidate};
    sop_cache_stat st;
    build(dir);

    /* Cold: every load misses the L2, comes from disk, is offered to it. */
    CHECK_EQ_U64(read_all(dir, &hook, &st, NULL), KEYS);
    CHECK(st.loads > 2); /* a root and its leaves at least */
    CHECK_EQ_U64(st.l2_hits, 0);
    CHECK_EQ_U64(st.l2_rejects, 0);
    CHECK_EQ_U64(l.puts, st.loads);
    CHECK_EQ_U64(l.count, st.loads);
    CHECK_EQ_U64(l.gets, st.loads);
    uint64_t nodes = st.loads;

    /* With the node records on disk damaged, a read without the L2 fails. */
    sop_cache_stat st2;
    CHECK_EQ_U64(read_all(dir, NULL, &st2, &l), SOP_CORRUPT);

    /* With it, every node comes from the L2 (its images match their IDs)
     * and no load reaches the disk. */
    l.gets = l.served = l.puts = 0;
    CHECK_EQ_U64(read_all(dir, &hook, &st, &l), KEYS);
    CHECK_EQ_U64(st.loads, 0);
    CHECK_EQ_U64(st.l2_hits, nodes);
    CHECK_EQ_U64(st.l2_rejects, 0);
    CHECK_EQ_U64(l.served, nodes);
    CHECK_EQ_U64(l.puts, 0);
    l2_free(&l);
}

TEST(test_cache__l2_corrupt_image_is_rejected)
{
    const char *dir = test_dir();
    static test_l2 l;
    memset(&l, 0, sizeof l);
    sop_l2_cache hook = {SOP_L2_CACHE_VERSION, &l, l2_get, l2_put, NULL};
    sop_cache_stat st;
    build(dir);
    CHECK_EQ_U64(read_all(dir, &hook, &st, NULL), KEYS);
    uint64_t nodes = st.loads;
    CHECK(nodes > 2);
    CHECK_EQ_U64(l.count, nodes);

    /* The L2 serves every image with a byte flipped: each is rejected by
     * its crc (L5) and read from disk, and every value is right. */
    l.corrupt = 1;
    l.gets = l.served = l.puts = 0;
    CHECK_EQ_U64(read_all(dir, &hook, &st, NULL), KEYS);
    CHECK_EQ_U64(l.served, nodes);
    CHECK_EQ_U64(st.l2_rejects, nodes);
    CHECK_EQ_U64(st.l2_hits, 0);
    CHECK_EQ_U64(st.loads, nodes);
    CHECK_EQ_U64(l.puts, nodes); /* the disk's image is offered again */
    l2_free(&l);
}

/* sop_db_stat's node_hits counts every node fetch served from memory:
 * one warm point read adds exactly the tree's depth, a read whose nodes
 * were all loaded adds none of its loads, and the sum holds across two
 * transactions on two threads' slots. */
TEST(test_cache__node_hits_count_every_fetch)
{
    const char *dir = test_dir();
    build(dir);
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    sop_val got;
    CHECK_OK(sop_db_open(&db, dir, NULL));
    CHECK_OK(sop_txn_begin(&t, db, SOP_TXN_READONLY));
    CHECK_OK(sop_store_open(&s, t, "kv", 0, NULL));
    sop_store_stat_info shape = SOP_STORE_STAT_INIT;
    CHECK_OK(sop_store_stat(&shape, t, s)); /* loads every node */
    CHECK(shape.depth >= 2);
    sop_db_stat_info a = SOP_DB_STAT_INIT, b = SOP_DB_STAT_INIT;
    CHECK_OK(sop_db_stat(&a, db));
    CHECK_OK(get_s(&got, t, s, "key000042"));
    CHECK_OK(sop_db_stat(&b, db));
    CHECK_EQ_U64(b.node_loads, a.node_loads);
    CHECK_EQ_U64(b.node_hits - a.node_hits, shape.depth);
    /* A second transaction (another slot) adds its own. */
    sop_txn *t2;
    CHECK_OK(sop_txn_begin(&t2, db, SOP_TXN_READONLY));
    CHECK_OK(get_s(&got, t2, s, "key000043"));
    CHECK_OK(get_s(&got, t, s, "key000044"));
    CHECK_OK(sop_db_stat(&a, db));
    CHECK_EQ_U64(a.node_hits - b.node_hits, 2 * (uint64_t)shape.depth);
    sop_txn_abort(t2);
    sop_txn_abort(t);
    CHECK_OK(sop_db_close(db));
}

/* A malformed sop_l2_cache is refused at open with SOP_INVAL and a
 * message, before anything is read; version-1 options have no l2 field
 * and open without one (test_api reads them from a block of exactly that
 * size). */
TEST(test_cache__l2_option_is_checked)
{
    const char *dir = test_dir();
    static test_l2 l;
    sop_db *db;
    sop_db_options o;
    CHECK_OK(sop_db_options_init(&o, SOP_DB_OPTIONS_VERSION));
    CHECK(o.l2 == NULL);
    sop_l2_cache bad = {SOP_L2_CACHE_VERSION + 1, &l, l2_get, l2_put, NULL};
    o.l2 = &bad;
    CHECK_RC(SOP_INVAL, sop_db_open(&db, dir, &o));
    CHECK(strstr(sop_errmsg(), "sop_l2_cache version") != NULL);
    bad.version = SOP_L2_CACHE_VERSION;
    bad.get = NULL;
    CHECK_RC(SOP_INVAL, sop_db_open(&db, dir, &o));
    CHECK(strstr(sop_errmsg(), "no get method") != NULL);
    bad.get = l2_get;
    CHECK_OK(sop_db_open(&db, dir, &o));
    CHECK_OK(sop_db_close(db));
    CHECK_OK(sop_db_options_init(&o, 1));
    CHECK_OK(sop_db_open(&db, dir, &o));
    CHECK_OK(sop_db_close(db));
}

TEST_MAIN(T(test_cache__l2_serves_verified_images), T(test_cache__l2_option_is_checked),
          T(test_cache__l2_corrupt_image_is_rejected), T(test_cache__node_hits_count_every_fetch))
