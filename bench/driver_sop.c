/*
 * driver_sop.c - libsop behind the bench.h driver interface.
 *
 * Configuration: SOP_SYNC_FULL for durable runs (the default mode: commit
 * returns after its log record is on stable storage, group commit shared by
 * concurrent committers), SOP_SYNC_OFF for no-sync runs; cache_bytes from
 * --cache-bytes (the same budget SQLite gets); one store "bench" created
 * with slot_length from the workload (0 = SOP_SLOT_LENGTH_DEFAULT).
 *
 * What this driver assumes about include/sop.h (report a change here):
 *   - sop_store_open() in a read-write txn with SOP_STORE_CREATE creates the
 *     store; the handle stays valid until sop_db_close() on any thread;
 *   - put = sop_upsert(), add = sop_add() (SOP_KEYEXIST), del = sop_remove()
 *     (SOP_NOTFOUND), get = sop_get() whose bytes live until the next call on
 *     the txn; a scan is SOP_FIRST then SOP_NEXT until SOP_NOTFOUND;
 *   - a read-only txn is ended with sop_txn_abort() (nothing to commit);
 *   - sop_txn_commit() frees the txn whatever it returns; on every
 *     sop_rc_is_retryable() code we report BENCH_RETRY and the harness
 *     redoes the whole txn;
 *   - sop_db_stat().syncs counts every fdatasync the handle issued.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>

#include "sop.h"

#include "bench.h"

#define SO_STORE_NAME "bench"

typedef struct so_db {
    sop_db *db;
    sop_store *store;
} so_db;

typedef struct so_conn {
    so_db *d;
    sop_txn *txn; /* NULL between transactions */
    int readonly;
    sop_cursor *cursor;
} so_conn;

static int so_fail(const char *what, int rc)
{
    fprintf(stderr, "sop: %s: %s (%s)\n", what, sop_strerror(rc), sop_errmsg());
    return BENCH_ERR;
}

static const char *so_version(void)
{
    return SOP_VERSION_STRING;
}

static void so_describe(char *buf, size_t cap, const bench_cfg *cfg)
{
    snprintf(buf, cap, "%s, cache_bytes=%llu MiB, slot_length=%u",
             cfg->sync ? "SOP_SYNC_FULL" : "SOP_SYNC_OFF",
             (unsigned long long)(cfg->cache_bytes >> 20),
             cfg->slot_length ? cfg->slot_length : (unsigned)SOP_SLOT_LENGTH_DEFAULT);
}

static int so_open(void **db_out, const bench_cfg *cfg)
{
    sop_db_options opts = SOP_DB_OPTIONS_INIT;
    sop_store_options sopts = SOP_STORE_OPTIONS_INIT;
    so_db *d = calloc(1, sizeof *d);
    sop_txn *txn = NULL;
    const char *what = "calloc";
    int rc = SOP_NOMEM;

    *db_out = NULL;
    if (d == NULL)
        goto fail;
    opts.sync = cfg->sync ? SOP_SYNC_FULL : SOP_SYNC_OFF;
    opts.cache_bytes = cfg->cache_bytes;
    sopts.slot_length = cfg->slot_length;
    what = "sop_db_open";
    if ((rc = sop_db_open(&d->db, cfg->dir, &opts)) != SOP_OK)
        goto fail;
    what = "sop_txn_begin";
    if ((rc = sop_txn_begin(&txn, d->db, 0)) != SOP_OK)
        goto fail;
    what = "sop_store_open";
    if ((rc = sop_store_open(&d->store, txn, SO_STORE_NAME, SOP_STORE_CREATE, &sopts)) != SOP_OK)
        goto fail;
    what = "sop_txn_commit (store create)";
    rc = sop_txn_commit(txn);
    txn = NULL;
    if (rc != SOP_OK)
        goto fail;
    *db_out = d;
    return BENCH_OK;
fail:
    so_fail(what, rc);
    sop_txn_abort(txn);
    if (d != NULL)
        sop_db_close(d->db);
    free(d);
    return BENCH_ERR;
}

static int so_close(void *db)
{
    so_db *d = db;
    int rc = sop_db_close(d->db);
    free(d);
    return rc == SOP_OK ? BENCH_OK : so_fail("sop_db_close", rc);
}

static int so_conn_open(void **conn_out, void *db)
{
    so_conn *c = calloc(1, sizeof *c);
    *conn_out = c;
    if (c == NULL)
        return so_fail("calloc", SOP_NOMEM);
    c->d = db;
    return BENCH_OK;
}

static void so_abort(void *conn)
{
    so_conn *c = conn;
    sop_cursor_close(c->cursor);
    c->cursor = NULL;
    sop_txn_abort(c->txn);
    c->txn = NULL;
}

static void so_conn_close(void *conn)
{
    if (conn == NULL)
        return;
    so_abort(conn);
    free(conn);
}

static int so_begin(void *conn, int readonly)
{
    so_conn *c = conn;
    int rc = sop_txn_begin(&c->txn, c->d->db, readonly ? SOP_TXN_READONLY : 0);
    if (rc != SOP_OK) {
        c->txn = NULL;
        return so_fail("sop_txn_begin", rc);
    }
    c->readonly = readonly;
    return BENCH_OK;
}

static int so_commit(void *conn)
{
    so_conn *c = conn;
    int rc;

    if (c->readonly) {
        so_abort(c);
        return BENCH_OK;
    }
    sop_cursor_close(c->cursor);
    c->cursor = NULL;
    rc = sop_txn_commit(c->txn); /* frees the txn whatever it returns */
    c->txn = NULL;
    if (rc == SOP_OK)
        return BENCH_OK;
    if (sop_rc_is_retryable(rc))
        return BENCH_RETRY;
    return so_fail("sop_txn_commit", rc);
}

static int so_put(void *conn, const void *key, size_t klen, const void *val, size_t vlen)
{
    so_conn *c = conn;
    sop_val k = {key, klen}, v = {val, vlen};
    int rc = sop_upsert(c->txn, c->d->store, &k, &v);
    return rc == SOP_OK ? BENCH_OK : so_fail("sop_upsert", rc);
}

static int so_add(void *conn, const void *key, size_t klen, const void *val, size_t vlen)
{
    so_conn *c = conn;
    sop_val k = {key, klen}, v = {val, vlen};
    int rc = sop_add(c->txn, c->d->store, &k, &v);
    if (rc == SOP_KEYEXIST)
        return BENCH_EXISTS;
    return rc == SOP_OK ? BENCH_OK : so_fail("sop_add", rc);
}

static int so_get(void *conn, const void *key, size_t klen, const void **val, size_t *vlen)
{
    so_conn *c = conn;
    sop_val k = {key, klen}, v;
    int rc = sop_get(&v, c->txn, c->d->store, &k);
    if (rc == SOP_NOTFOUND)
        return BENCH_NOTFOUND;
    if (rc != SOP_OK)
        return so_fail("sop_get", rc);
    *val = v.data;
    *vlen = v.len;
    return BENCH_OK;
}

static int so_del(void *conn, const void *key, size_t klen)
{
    so_conn *c = conn;
    sop_val k = {key, klen};
    int rc = sop_remove(c->txn, c->d->store, &k);
    if (rc == SOP_NOTFOUND)
        return BENCH_NOTFOUND;
    return rc == SOP_OK ? BENCH_OK : so_fail("sop_remove", rc);
}

static int so_scan(void *conn, bench_scan_fn fn, void *ctx)
{
    so_conn *c = conn;
    sop_val k, v;
    int rc, stop = 0;

    if (c->cursor == NULL && (rc = sop_cursor_open(&c->cursor, c->txn, c->d->store)) != SOP_OK)
        return so_fail("sop_cursor_open", rc);
    rc = sop_cursor_get(&k, &v, c->cursor, SOP_FIRST, NULL);
    while (rc == SOP_OK) {
        if ((stop = fn(ctx, k.data, k.len, v.data, v.len)) != 0)
            break;
        rc = sop_cursor_get(&k, &v, c->cursor, SOP_NEXT, NULL);
    }
    if (stop != 0)
        return stop;
    return rc == SOP_NOTFOUND ? BENCH_OK : so_fail("sop_cursor_get", rc);
}

static int so_syncs(void *db, uint64_t *out)
{
    so_db *d = db;
    sop_db_stat_info st = SOP_DB_STAT_INIT;
    int rc = sop_db_stat(&st, d->db);
    if (rc != SOP_OK)
        return so_fail("sop_db_stat", rc);
    *out = st.syncs;
    return BENCH_OK;
}

const bench_driver bench_driver_sop = {
    .name = "sop",
    .version = so_version,
    .describe = so_describe,
    .open = so_open,
    .close = so_close,
    .conn_open = so_conn_open,
    .conn_close = so_conn_close,
    .begin = so_begin,
    .commit = so_commit,
    .abort = so_abort,
    .put = so_put,
    .add = so_add,
    .get = so_get,
    .del = so_del,
    .scan = so_scan,
    .syncs = so_syncs,
};
