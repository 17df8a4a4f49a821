/*
 * driver_rocksdb.c - RocksDB (Debian's librocksdb-dev, C API rocksdb/c.h)
 * behind the bench.h driver interface.
 *
 * Configuration, and why it is fair: RocksDB's defaults (LSM tree, 64 MiB
 * memtable, leveled compaction) plus what db_bench sets for this shape: a
 * block cache of cfg->cache_bytes (the budget libsop and SQLite get), a
 * 10-bit bloom filter, no compression (the values are incompressible, and
 * no other engine compresses), two background jobs (the machine has 2
 * cores). Durability: the WAL stays on; durable runs set sync=1 on every
 * write (one WAL fsync per commit), no-sync runs leave the WAL to the OS.
 *
 * Transactions: RocksDB has no read-write transaction in this API shape;
 * a write transaction is a write batch applied atomically at commit (what
 * an application does), a read-only transaction reads from a snapshot
 * taken at begin. get/del inside a write transaction read the database,
 * not the batch: the workloads never read a key they wrote in the same
 * transaction. del first reads the key so that it can report NOTFOUND as
 * the other engines do (RocksDB's delete is blind): that read is counted
 * in its deleterandom figure.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>

#include <rocksdb/c.h>

#include "bench.h"

typedef struct rk_db {
    rocksdb_t *db;
    rocksdb_options_t *opts;
    rocksdb_block_based_table_options_t *topts;
    rocksdb_cache_t *cache;
    rocksdb_writeoptions_t *wopts;
} rk_db;

typedef struct rk_conn {
    rk_db *d;
    rocksdb_writebatch_t *batch;
    rocksdb_readoptions_t *ropts;
    const rocksdb_snapshot_t *snap;
    rocksdb_pinnableslice_t *last; /* bytes of the last get (D2) */
    int in_txn, readonly;
} rk_conn;

static int rk_fail(const char *what, char *err)
{
    fprintf(stderr, "rocksdb: %s: %s\n", what, err ? err : "failed");
    free(err);
    return BENCH_ERR;
}

static const char *rk_version(void)
{
    return "7.8 (Debian librocksdb-dev)";
}

static void rk_describe(char *buf, size_t cap, const bench_cfg *cfg)
{
    snprintf(buf, cap, "WAL %s, block cache %llu MiB, bloom 10 bits, no compression",
             cfg->sync ? "synced per commit" : "not synced",
             (unsigned long long)(cfg->cache_bytes >> 20));
}

static int rk_open(void **db_out, const bench_cfg *cfg)
{
    rk_db *d = calloc(1, sizeof *d);
    char *err = NULL;
    *db_out = NULL;
    if (!d)
        return rk_fail("calloc", NULL);
    d->opts = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(d->opts, 1);
    rocksdb_options_set_compression(d->opts, rocksdb_no_compression);
    rocksdb_options_set_max_background_jobs(d->opts, 2);
    d->topts = rocksdb_block_based_options_create();
    d->cache = rocksdb_cache_create_lru(cfg->cache_bytes ? cfg->cache_bytes : (256u << 20));
    rocksdb_block_based_options_set_block_cache(d->topts, d->cache);
    rocksdb_block_based_options_set_filter_policy(d->topts, rocksdb_filterpolicy_create_bloom(10));
    rocksdb_options_set_block_based_table_factory(d->opts, d->topts);
    d->wopts = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(d->wopts, cfg->sync ? 1 : 0);
    d->db = rocksdb_open(d->opts, cfg->dir, &err);
    if (!d->db) {
        rk_fail("rocksdb_open", err);
        rocksdb_writeoptions_destroy(d->wopts);
        rocksdb_block_based_options_destroy(d->topts);
        rocksdb_cache_destroy(d->cache);
        rocksdb_options_destroy(d->opts);
        free(d);
        return BENCH_ERR;
    }
    *db_out = d;
    return BENCH_OK;
}

static int rk_close(void *db)
{
    rk_db *d = db;
    rocksdb_close(d->db);
    rocksdb_writeoptions_destroy(d->wopts);
    rocksdb_block_based_options_destroy(d->topts);
    rocksdb_cache_destroy(d->cache);
    rocksdb_options_destroy(d->opts);
    free(d);
    return BENCH_OK;
}

static int rk_conn_open(void **conn_out, void *db)
{
    rk_conn *c = calloc(1, sizeof *c);
    *conn_out = c;
    if (!c)
        return rk_fail("calloc", NULL);
    c->d = db;
    c->batch = rocksdb_writebatch_create();
    c->ropts = rocksdb_readoptions_create();
    return BENCH_OK;
}

static void rk_release(rk_conn *c)
{
    if (c->last) {
        rocksdb_pinnableslice_destroy(c->last);
        c->last = NULL;
    }
}

static void rk_abort(void *conn)
{
    rk_conn *c = conn;
    rk_release(c);
    rocksdb_writebatch_clear(c->batch);
    if (c->snap) {
        rocksdb_readoptions_set_snapshot(c->ropts, NULL);
        rocksdb_release_snapshot(c->d->db, c->snap);
        c->snap = NULL;
    }
    c->in_txn = 0;
}

static void rk_conn_close(void *conn)
{
    rk_conn *c = conn;
    if (!c)
        return;
    rk_abort(c);
    rocksdb_writebatch_destroy(c->batch);
    rocksdb_readoptions_destroy(c->ropts);
    free(c);
}

static int rk_begin(void *conn, int readonly)
{
    rk_conn *c = conn;
    c->in_txn = 1;
    c->readonly = readonly;
    if (readonly) {
        c->snap = rocksdb_create_snapshot(c->d->db);
        rocksdb_readoptions_set_snapshot(c->ropts, c->snap);
    }
    return BENCH_OK;
}

static int rk_commit(void *conn)
{
    rk_conn *c = conn;
    char *err = NULL;
    if (!c->readonly && rocksdb_writebatch_count(c->batch) > 0)
        rocksdb_write(c->d->db, c->d->wopts, c->batch, &err);
    rk_abort(c);
    return err ? rk_fail("rocksdb_write", err) : BENCH_OK;
}

static int rk_put(void *conn, const void *key, size_t klen, const void *val, size_t vlen)
{
    rk_conn *c = conn;
    rocksdb_writebatch_put(c->batch, key, klen, val, vlen);
    return BENCH_OK;
}

static int rk_get(void *conn, const void *key, size_t klen, const void **val, size_t *vlen)
{
    rk_conn *c = conn;
    char *err = NULL;
    rk_release(c);
    c->last = rocksdb_get_pinned(c->d->db, c->ropts, key, klen, &err);
    if (err)
        return rk_fail("rocksdb_get_pinned", err);
    if (!c->last)
        return BENCH_NOTFOUND;
    *val = rocksdb_pinnableslice_value(c->last, vlen);
    return BENCH_OK;
}

static int rk_add(void *conn, const void *key, size_t klen, const void *val, size_t vlen)
{
    const void *v;
    size_t vl;
    int rc = rk_get(conn, key, klen, &v, &vl);
    if (rc == BENCH_OK)
        return BENCH_EXISTS;
    if (rc != BENCH_NOTFOUND)
        return rc;
    return rk_put(conn, key, klen, val, vlen);
}

static int rk_del(void *conn, const void *key, size_t klen)
{
    rk_conn *c = conn;
    const void *v;
    size_t vl;
    int rc = rk_get(conn, key, klen, &v, &vl);
    if (rc != BENCH_OK)
        return rc;
    rocksdb_writebatch_delete(c->batch, key, klen);
    return BENCH_OK;
}

static int rk_scan(void *conn, bench_scan_fn fn, void *ctx)
{
    rk_conn *c = conn;
    int stop = 0;
    rocksdb_iterator_t *it = rocksdb_create_iterator(c->d->db, c->ropts);
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it) && !stop; rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl), *v = rocksdb_iter_value(it, &vl);
        stop = fn(ctx, k, kl, v, vl);
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    if (err)
        return rk_fail("iterator", err);
    return stop;
}

const bench_driver bench_driver_rocksdb = {
    .name = "rocksdb",
    .version = rk_version,
    .describe = rk_describe,
    .open = rk_open,
    .close = rk_close,
    .conn_open = rk_conn_open,
    .conn_close = rk_conn_close,
    .begin = rk_begin,
    .commit = rk_commit,
    .abort = rk_abort,
    .put = rk_put,
    .add = rk_add,
    .get = rk_get,
    .del = rk_del,
    .scan = rk_scan,
    .syncs = NULL,
};
