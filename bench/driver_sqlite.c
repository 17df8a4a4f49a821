/*
 * driver_sqlite.c - SQLite behind the bench.h driver interface.
 *
 * Configuration (the fair one, see BENCHMARKS.md):
 *   - one table  CREATE TABLE kv(k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID,
 *     so the items live in one B-tree ordered by key, like the other engines;
 *   - journal_mode=WAL; synchronous=FULL for durable runs (one WAL fsync per
 *     commit), synchronous=OFF for no-sync runs;
 *   - every statement prepared once per connection (SQLITE_PREPARE_PERSISTENT)
 *     and bound with SQLITE_STATIC: no SQL parsing or copying in the loops;
 *   - cache_size = the same byte budget libsop gets (--cache-bytes), instead
 *     of SQLite's 2 MiB default; mmap_size only if --sqlite-mmap is given;
 *   - one connection per thread, opened SQLITE_OPEN_NOMUTEX (each is used by
 *     one thread only). SQLite has one writer at a time and no group commit;
 *     its own way of making writers wait is polling the lock (busy handler,
 *     by default sleeping up to 100 ms), which costs concurrent writers far
 *     more than the wait itself. So the driver queues this process's write
 *     transactions on a mutex, held from BEGIN IMMEDIATE to COMMIT/ROLLBACK,
 *     as an application would; an uncontended lock costs nanoseconds. A
 *     short-sleep busy handler stays as a fallback (another process).
 * put is an upsert (INSERT ... ON CONFLICT(k) DO UPDATE), add a plain INSERT.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <sqlite3.h>

#include "bench.h"

typedef struct sq_db {
    char path[4096];
    int sync;
    uint64_t cache_bytes;
    uint64_t mmap_bytes;
    sqlite3 *keeper; /* held open so the WAL survives conns coming and going */
    pthread_mutex_t writer; /* held by the conn in a write txn */
} sq_db;

enum { ST_BEGIN_RO, ST_BEGIN_RW, ST_COMMIT, ST_ROLLBACK, ST_PUT, ST_ADD, ST_GET, ST_DEL, ST_SCAN,
       ST_COUNT };

static const char *const sq_sql[ST_COUNT] = {
    [ST_BEGIN_RO] = "BEGIN",
    [ST_BEGIN_RW] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_PUT] = "INSERT INTO kv(k, v) VALUES(?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
    [ST_ADD] = "INSERT INTO kv(k, v) VALUES(?1, ?2)",
    [ST_GET] = "SELECT v FROM kv WHERE k = ?1",
    [ST_DEL] = "DELETE FROM kv WHERE k = ?1",
    [ST_SCAN] = "SELECT k, v FROM kv ORDER BY k",
};

typedef struct sq_conn {
    sq_db *db;
    sqlite3 *h;
    sqlite3_stmt *st[ST_COUNT];
    int in_txn;
    int holds_writer;
} sq_conn;

static int sq_fail(sqlite3 *h, const char *what, int rc)
{
    fprintf(stderr, "sqlite: %s: %s (%s)\n", what, sqlite3_errstr(rc),
            h != NULL ? sqlite3_errmsg(h) : "-");
    return BENCH_ERR;
}

static const char *sq_version(void)
{
    return sqlite3_libversion();
}

static void sq_describe(char *buf, size_t cap, const bench_cfg *cfg)
{
    snprintf(buf, cap,
             "WITHOUT ROWID BLOB pk, WAL, synchronous=%s, cache_size=%llu MiB, mmap_size=%llu "
             "MiB, prepared statements, in-process writer mutex",
             cfg->sync ? "FULL" : "OFF", (unsigned long long)(cfg->cache_bytes >> 20),
             (unsigned long long)(cfg->sqlite_mmap >> 20));
}

/* Writers queue on the WAL write lock: poll it often, sleep briefly. */
static int sq_busy(void *ctx, int count)
{
    (void)ctx;
    if (count < 16)
        sched_yield();
    else
        usleep(100);
    return count < 600000; /* give up after about a minute */
}

static int sq_exec(sqlite3 *h, const char *sql)
{
    char *err = NULL;
    int rc = sqlite3_exec(h, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) {
        fprintf(stderr, "sqlite: %s: %s\n", sql, err != NULL ? err : sqlite3_errstr(rc));
        sqlite3_free(err);
        return BENCH_ERR;
    }
    return BENCH_OK;
}

static int sq_handle(sqlite3 **out, const sq_db *d)
{
    char sql[256];
    sqlite3 *h = NULL;
    int rc = sqlite3_open_v2(d->path, &h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                              SQLITE_OPEN_NOMUTEX, NULL);
    *out = NULL;
    if (rc != SQLITE_OK) {
        sq_fail(h, d->path, rc);
        sqlite3_close(h);
        return BENCH_ERR;
    }
    sqlite3_busy_handler(h, sq_busy, NULL);
    snprintf(sql, sizeof sql,
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA cache_size=-%llu; "
             "PRAGMA mmap_size=%llu;",
             d->sync ? "FULL" : "OFF", (unsigned long long)(d->cache_bytes >> 10),
             (unsigned long long)d->mmap_bytes);
    if (sq_exec(h, sql) != BENCH_OK) {
        sqlite3_close(h);
        return BENCH_ERR;
    }
    *out = h;
    return BENCH_OK;
}

static int sq_open(void **db_out, const bench_cfg *cfg)
{
    sq_db *d = calloc(1, sizeof *d);

    *db_out = NULL;
    if (d == NULL)
        return BENCH_ERR;
    pthread_mutex_init(&d->writer, NULL);
    snprintf(d->path, sizeof d->path, "%s/kv.sqlite", cfg->dir);
    d->sync = cfg->sync;
    d->cache_bytes = cfg->cache_bytes;
    d->mmap_bytes = cfg->sqlite_mmap;
    if (sq_handle(&d->keeper, d) != BENCH_OK ||
        sq_exec(d->keeper,
                "CREATE TABLE IF NOT EXISTS kv(k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID") !=
            BENCH_OK) {
        sqlite3_close(d->keeper);
        pthread_mutex_destroy(&d->writer);
        free(d);
        return BENCH_ERR;
    }
    *db_out = d;
    return BENCH_OK;
}

static int sq_close(void *db)
{
    sq_db *d = db;
    int rc = sqlite3_close(d->keeper);
    pthread_mutex_destroy(&d->writer);
    free(d);
    return rc == SQLITE_OK ? BENCH_OK : sq_fail(NULL, "close", rc);
}

static void sq_abort(void *conn);

static void sq_conn_close(void *conn)
{
    sq_conn *c = conn;
    if (c == NULL)
        return;
    sq_abort(c);
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(c->st[i]);
    sqlite3_close(c->h);
    free(c);
}

static int sq_conn_open(void **conn_out, void *db)
{
    sq_conn *c = calloc(1, sizeof *c);
    int rc;

    *conn_out = NULL;
    if (c == NULL)
        return BENCH_ERR;
    c->db = db;
    if (sq_handle(&c->h, c->db) != BENCH_OK) {
        free(c);
        return BENCH_ERR;
    }
    for (int i = 0; i < ST_COUNT; i++) {
        rc = sqlite3_prepare_v3(c->h, sq_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &c->st[i], NULL);
        if (rc != SQLITE_OK) {
            sq_fail(c->h, sq_sql[i], rc);
            sq_conn_close(c);
            return BENCH_ERR;
        }
    }
    *conn_out = c;
    return BENCH_OK;
}

/* Run a statement that returns no rows; SQLite rc. */
static int sq_run(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static void sq_reset_reads(sq_conn *c)
{
    sqlite3_reset(c->st[ST_GET]);
    sqlite3_reset(c->st[ST_SCAN]);
}

static void sq_release_writer(sq_conn *c)
{
    if (c->holds_writer)
        pthread_mutex_unlock(&c->db->writer);
    c->holds_writer = 0;
}

static int sq_begin(void *conn, int readonly)
{
    sq_conn *c = conn;
    int rc;

    if (!readonly) {
        pthread_mutex_lock(&c->db->writer);
        c->holds_writer = 1;
    }
    rc = sq_run(c->st[readonly ? ST_BEGIN_RO : ST_BEGIN_RW]);
    if (rc != SQLITE_OK) {
        sq_release_writer(c);
        return sq_fail(c->h, sq_sql[readonly ? ST_BEGIN_RO : ST_BEGIN_RW], rc);
    }
    c->in_txn = 1;
    return BENCH_OK;
}

static void sq_abort(void *conn)
{
    sq_conn *c = conn;
    if (!c->in_txn)
        return;
    sq_reset_reads(c);
    sq_run(c->st[ST_ROLLBACK]);
    c->in_txn = 0;
    sq_release_writer(c);
}

static int sq_commit(void *conn)
{
    sq_conn *c = conn;
    int rc;

    sq_reset_reads(c);
    rc = sq_run(c->st[ST_COMMIT]);
    if (rc == SQLITE_OK) {
        c->in_txn = 0;
        sq_release_writer(c);
        return BENCH_OK;
    }
    sq_abort(c);
    if (rc == SQLITE_BUSY)
        return BENCH_RETRY;
    return sq_fail(c->h, "COMMIT", rc);
}

static int sq_write(sq_conn *c, int which, const void *key, size_t klen, const void *val,
                    size_t vlen)
{
    sqlite3_stmt *st = c->st[which];
    int rc;

    sqlite3_bind_blob(st, 1, key, (int)klen, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, val, (int)vlen, SQLITE_STATIC);
    rc = sq_run(st);
    if (rc == SQLITE_OK)
        return BENCH_OK;
    if (which == ST_ADD && (rc & 0xff) == SQLITE_CONSTRAINT)
        return BENCH_EXISTS;
    return sq_fail(c->h, sq_sql[which], rc);
}

static int sq_put(void *conn, const void *key, size_t klen, const void *val, size_t vlen)
{
    return sq_write(conn, ST_PUT, key, klen, val, vlen);
}

static int sq_add(void *conn, const void *key, size_t klen, const void *val, size_t vlen)
{
    return sq_write(conn, ST_ADD, key, klen, val, vlen);
}

static int sq_get(void *conn, const void *key, size_t klen, const void **val, size_t *vlen)
{
    sq_conn *c = conn;
    sqlite3_stmt *st = c->st[ST_GET];
    int rc;

    sqlite3_reset(st); /* ends the previous get: its bytes were borrowed until now */
    sqlite3_bind_blob(st, 1, key, (int)klen, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return BENCH_NOTFOUND;
    if (rc != SQLITE_ROW)
        return sq_fail(c->h, sq_sql[ST_GET], rc);
    *val = sqlite3_column_blob(st, 0);
    *vlen = (size_t)sqlite3_column_bytes(st, 0);
    return BENCH_OK;
}

static int sq_del(void *conn, const void *key, size_t klen)
{
    sq_conn *c = conn;
    sqlite3_stmt *st = c->st[ST_DEL];
    int rc;

    sqlite3_bind_blob(st, 1, key, (int)klen, SQLITE_STATIC);
    rc = sq_run(st);
    if (rc != SQLITE_OK)
        return sq_fail(c->h, sq_sql[ST_DEL], rc);
    return sqlite3_changes(c->h) == 1 ? BENCH_OK : BENCH_NOTFOUND;
}

static int sq_scan(void *conn, bench_scan_fn fn, void *ctx)
{
    sq_conn *c = conn;
    sqlite3_stmt *st = c->st[ST_SCAN];
    int rc = SQLITE_DONE, stop = 0;

    while (stop == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW)
        stop = fn(ctx, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0),
                  sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1));
    sqlite3_reset(st);
    if (stop != 0)
        return stop;
    return rc == SQLITE_DONE ? BENCH_OK : sq_fail(c->h, sq_sql[ST_SCAN], rc);
}

const bench_driver bench_driver_sqlite = {
    .name = "sqlite",
    .version = sq_version,
    .describe = sq_describe,
    .open = sq_open,
    .close = sq_close,
    .conn_open = sq_conn_open,
    .conn_close = sq_conn_close,
    .begin = sq_begin,
    .commit = sq_commit,
    .abort = sq_abort,
    .put = sq_put,
    .add = sq_add,
    .get = sq_get,
    .del = sq_del,
    .scan = sq_scan,
    .syncs = NULL,
};
