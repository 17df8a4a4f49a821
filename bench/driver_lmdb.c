/*
 * driver_lmdb.c - LMDB behind the bench.h driver interface.
 *
 * Configuration (the fair one, see BENCHMARKS.md):
 *   - default environment flags for durable runs: each commit does one
 *     fdatasync (data pages) and then writes the meta page through a second
 *     descriptor opened O_DSYNC - two waits for the disk, of which strace
 *     counts only the fdatasync;
 *   - MDB_NOSYNC for no-sync runs. MDB_NOMETASYNC is not added: with NOSYNC
 *     neither the data nor the meta page is synced, so it would change
 *     nothing;
 *   - no MDB_WRITEMAP, no MDB_APPEND, no MDB_NORDAHEAD: the defaults an
 *     application gets, and nothing libsop has no counterpart for;
 *   - map size from cfg->map_bytes (the file grows only as pages are used).
 * The main (unnamed) database holds the items; LMDB's own byte order equals
 * memcmp order for these keys.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include <lmdb.h>

#include "bench.h"

typedef struct lm_db {
    MDB_env *env;
    MDB_dbi dbi;
} lm_db;

typedef struct lm_conn {
    lm_db *db;
    MDB_txn *txn;   /* NULL between transactions */
    int readonly;
} lm_conn;

static int lm_fail(const char *what, int rc)
{
    fprintf(stderr, "lmdb: %s: %s%s\n", what, mdb_strerror(rc),
            rc == MDB_MAP_FULL ? " (raise --map-bytes)" : "");
    return BENCH_ERR;
}

static const char *lm_version(void)
{
    return mdb_version(NULL, NULL, NULL);
}

static void lm_describe(char *buf, size_t cap, const bench_cfg *cfg)
{
    snprintf(buf, cap, "%s, mapsize %llu MiB, no WRITEMAP/APPEND",
             cfg->sync ? "default flags (fdatasync + O_DSYNC meta write per commit)"
                       : "MDB_NOSYNC (meta not synced either)",
             (unsigned long long)(cfg->map_bytes >> 20));
}

static int lm_open(void **db_out, const bench_cfg *cfg)
{
    lm_db *d = calloc(1, sizeof *d);
    MDB_txn *txn = NULL;
    int rc;

    *db_out = NULL;
    if (d == NULL)
        return lm_fail("calloc", ENOMEM);
    if ((rc = mdb_env_create(&d->env)) != 0)
        goto fail;
    if ((rc = mdb_env_set_mapsize(d->env, (size_t)cfg->map_bytes)) != 0)
        goto fail;
    if ((rc = mdb_env_set_maxreaders(d->env, (unsigned)(cfg->max_threads + 16))) != 0)
        goto fail;
    if ((rc = mdb_env_open(d->env, cfg->dir, cfg->sync ? 0 : MDB_NOSYNC, 0644)) != 0)
        goto fail;
    if ((rc = mdb_txn_begin(d->env, NULL, 0, &txn)) != 0)
        goto fail;
    if ((rc = mdb_dbi_open(txn, NULL, 0, &d->dbi)) != 0)
        goto fail;
    if ((rc = mdb_txn_commit(txn)) != 0) {
        txn = NULL;
        goto fail;
    }
    *db_out = d;
    return BENCH_OK;
fail:
    if (txn != NULL)
        mdb_txn_abort(txn);
    if (d->env != NULL)
        mdb_env_close(d->env);
    free(d);
    return lm_fail(cfg->dir, rc);
}

static int lm_close(void *db)
{
    lm_db *d = db;
    mdb_env_close(d->env);
    free(d);
    return BENCH_OK;
}

static int lm_conn_open(void **conn_out, void *db)
{
    lm_conn *c = calloc(1, sizeof *c);
    *conn_out = c;
    if (c == NULL)
        return lm_fail("calloc", ENOMEM);
    c->db = db;
    return BENCH_OK;
}

static void lm_abort(void *conn)
{
    lm_conn *c = conn;
    if (c->txn != NULL)
        mdb_txn_abort(c->txn);
    c->txn = NULL;
}

static void lm_conn_close(void *conn)
{
    lm_abort(conn);
    free(conn);
}

static int lm_begin(void *conn, int readonly)
{
    lm_conn *c = conn;
    int rc = mdb_txn_begin(c->db->env, NULL, readonly ? MDB_RDONLY : 0, &c->txn);
    if (rc != 0) {
        c->txn = NULL;
        return lm_fail("mdb_txn_begin", rc);
    }
    c->readonly = readonly;
    return BENCH_OK;
}

static int lm_commit(void *conn)
{
    lm_conn *c = conn;
    MDB_txn *txn = c->txn;
    int rc;

    c->txn = NULL;
    if (c->readonly) {
        mdb_txn_abort(txn); /* ends a read txn; nothing to commit */
        return BENCH_OK;
    }
    rc = mdb_txn_commit(txn); /* frees txn on every outcome */
    return rc == 0 ? BENCH_OK : lm_fail("mdb_txn_commit", rc);
}

static int lm_write(lm_conn *c, const void *key, size_t klen, const void *val, size_t vlen,
                    unsigned flags)
{
    MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
    int rc = mdb_put(c->txn, c->db->dbi, &k, &v, flags);
    if (rc == MDB_KEYEXIST)
        return BENCH_EXISTS;
    return rc == 0 ? BENCH_OK : lm_fail("mdb_put", rc);
}

static int lm_put(void *conn, const void *key, size_t klen, const void *val, size_t vlen)
{
    return lm_write(conn, key, klen, val, vlen, 0);
}

static int lm_add(void *conn, const void *key, size_t klen, const void *val, size_t vlen)
{
    return lm_write(conn, key, klen, val, vlen, MDB_NOOVERWRITE);
}

static int lm_get(void *conn, const void *key, size_t klen, const void **val, size_t *vlen)
{
    lm_conn *c = conn;
    MDB_val k = {klen, (void *)key}, v;
    int rc = mdb_get(c->txn, c->db->dbi, &k, &v);
    if (rc == MDB_NOTFOUND)
        return BENCH_NOTFOUND;
    if (rc != 0)
        return lm_fail("mdb_get", rc);
    *val = v.mv_data;
    *vlen = v.mv_size;
    return BENCH_OK;
}

static int lm_del(void *conn, const void *key, size_t klen)
{
    lm_conn *c = conn;
    MDB_val k = {klen, (void *)key};
    int rc = mdb_del(c->txn, c->db->dbi, &k, NULL);
    if (rc == MDB_NOTFOUND)
        return BENCH_NOTFOUND;
    return rc == 0 ? BENCH_OK : lm_fail("mdb_del", rc);
}

static int lm_scan(void *conn, bench_scan_fn fn, void *ctx)
{
    lm_conn *c = conn;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc, stop = 0;

    if ((rc = mdb_cursor_open(c->txn, c->db->dbi, &cur)) != 0)
        return lm_fail("mdb_cursor_open", rc);
    rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (rc == 0) {
        if ((stop = fn(ctx, k.mv_data, k.mv_size, v.mv_data, v.mv_size)) != 0)
            break;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (stop != 0)
        return stop;
    return rc == MDB_NOTFOUND ? BENCH_OK : lm_fail("mdb_cursor_get", rc);
}

const bench_driver bench_driver_lmdb = {
    .name = "lmdb",
    .version = lm_version,
    .describe = lm_describe,
    .open = lm_open,
    .close = lm_close,
    .conn_open = lm_conn_open,
    .conn_close = lm_conn_close,
    .begin = lm_begin,
    .commit = lm_commit,
    .abort = lm_abort,
    .put = lm_put,
    .add = lm_add,
    .get = lm_get,
    .del = lm_del,
    .scan = lm_scan,
    .syncs = NULL,
    .sync_note = "+1 O_DSYNC meta write/commit",
};
