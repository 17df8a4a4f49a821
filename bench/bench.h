/*
 * bench.h - the one small interface every engine driver implements for
 * bench.c, and the key/value helpers the workloads and drivers share.
 *
 * A driver wraps one engine (libsop, LMDB, SQLite) behind the same handful of
 * calls, so every workload runs the same code against each engine:
 *
 *   db   = open(cfg)          one database in cfg->dir (an empty folder)
 *   conn = conn_open(db)      one per thread; holds at most one transaction
 *   begin(conn, readonly) ... put/add/get/del/scan ... commit(conn) | abort(conn)
 *
 * Guarantees the harness relies on:
 *   (D1) Calls return BENCH_OK, BENCH_NOTFOUND (get/del: no such key),
 *        BENCH_EXISTS (add: key present), BENCH_RETRY (commit only: conflict
 *        or busy; the transaction has ended, redo it) or BENCH_ERR (the
 *        driver already printed one line naming the engine and the cause).
 *   (D2) get() hands back bytes borrowed until the next call on the conn.
 *   (D3) A conn is used by one thread at a time; a db by any number.
 *   (D4) Writes from put() replace, add() never replaces. Neither copies
 *        more than the engine itself does.
 *
 * Keys follow db_bench: a fixed-width zero-padded decimal index (16 bytes by
 * default). Values are incompressible bytes derived from (seed, index,
 * generation), so any read can be checked without keeping a copy: a
 * generation counts how often a workload has rewritten the key.
 */
#ifndef SOP_BENCH_H
#define SOP_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define BENCH_OK       0
#define BENCH_NOTFOUND 1
#define BENCH_EXISTS   2
#define BENCH_RETRY    3
#define BENCH_ERR      (-1)

/** How one database is opened. Zero means "the engine's default". */
typedef struct bench_cfg {
    const char *dir;       /**< the engine's own folder; exists and is empty */
    int sync;              /**< 1: every commit durable; 0: no syncs */
    uint64_t cache_bytes;  /**< libsop cache_bytes, SQLite cache_size */
    uint64_t map_bytes;    /**< LMDB map size */
    uint64_t sqlite_mmap;  /**< SQLite mmap_size (0 = off, SQLite's default) */
    uint32_t slot_length;  /**< libsop items per node */
    int max_threads;       /**< most conns open at once */
} bench_cfg;

/** Called by scan() for every item in key order; non-zero stops the scan
 *  and becomes scan()'s return value. */
typedef int (*bench_scan_fn)(void *ctx, const void *key, size_t klen, const void *val,
                             size_t vlen);

typedef struct bench_driver {
    const char *name;
    const char *(*version)(void);
    /** One line describing how cfg is mapped onto the engine's knobs. */
    void (*describe)(char *buf, size_t cap, const bench_cfg *cfg);
    int (*open)(void **db_out, const bench_cfg *cfg);
    int (*close)(void *db);
    int (*conn_open)(void **conn_out, void *db);
    void (*conn_close)(void *conn);
    int (*begin)(void *conn, int readonly);
    int (*commit)(void *conn);    /**< ends a read-only txn too */
    void (*abort)(void *conn);    /**< no-op without a txn */
    int (*put)(void *conn, const void *key, size_t klen, const void *val, size_t vlen);
    int (*add)(void *conn, const void *key, size_t klen, const void *val, size_t vlen);
    int (*get)(void *conn, const void *key, size_t klen, const void **val, size_t *vlen);
    int (*del)(void *conn, const void *key, size_t klen);
    int (*scan)(void *conn, bench_scan_fn fn, void *ctx);
    /** Durable syncs done by this handle so far; NULL if the engine has no
     *  such counter (the harness then counts with strace). */
    int (*syncs)(void *db, uint64_t *out);
    /** Durable writes that no fsync-family call shows (or NULL), for the report. */
    const char *sync_note;
} bench_driver;

/* The drivers; bench.c lists those built in (BENCH_WITH_SOP, _LMDB, _SQLITE). */
extern const bench_driver bench_driver_sop;
extern const bench_driver bench_driver_lmdb;
extern const bench_driver bench_driver_sqlite;
extern const bench_driver bench_driver_rocksdb; /* bench-scale (bench/scale.c) */

/** Create folder @p path and its parents (like mkdir -p). 0 or -1. */
int bench_mkdirs(const char *path);

/* ------------------------------------------------------------------------ */
/* Keys and values                                                           */
/* ------------------------------------------------------------------------ */

static inline uint64_t bench_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/** Write @p idx as @p width zero-padded decimal digits (no NUL). */
static inline void bench_key(char *out, size_t width, uint64_t idx)
{
    for (size_t i = width; i-- > 0;) {
        out[i] = (char)('0' + idx % 10);
        idx /= 10;
    }
}

/** The @p len value bytes of key @p idx at generation @p gen: random-looking,
 *  so no engine can compress them, and reproducible from the arguments. */
static inline void bench_value(uint8_t *out, size_t len, uint64_t seed, uint64_t idx,
                               uint32_t gen)
{
    uint64_t s = seed ^ (idx * 0xD1B54A32D192ED03ull) ^ ((uint64_t)gen * 0xA0761D6478BD642Full);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t r = bench_splitmix64(&s);
        memcpy(out + i, &r, 8);
    }
    if (i < len) {
        uint64_t r = bench_splitmix64(&s);
        memcpy(out + i, &r, len - i);
    }
}

#endif /* SOP_BENCH_H */
