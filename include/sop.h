/*
 * sop.h - libsop: Scalable Objects Persistence for C.
 *
 * An embeddable, ACID-transactional B-tree storage engine. A program opens a
 * database folder (sop_db_open), begins transactions (sop_txn_begin), opens
 * named ordered stores inside them (sop_store_open) and reads and writes
 * byte-string keys and values. No server is needed.
 *
 * Handles (README.md has a tour; docs/FORMAT.md the on-disk format):
 *
 *   handle      made by            ended by                 threads
 *   sop_db      sop_db_open        sop_db_close             any number at once
 *   sop_txn     sop_txn_begin      sop_txn_commit / _abort  one at a time
 *                                  (either, whatever it returns);
 *                                  a prepared one also by sop_txn_release
 *                                  or sop_db_close (left prepared)
 *   sop_store   sop_store_open     sop_db_close (or removal) any
 *   sop_cursor  sop_cursor_open    sop_cursor_close         its txn's thread
 *
 * Conventions:
 *   - Every call that can fail returns int: SOP_OK (0) or a negative SOP_*
 *     code from the closed list below. sop_errmsg() gives a one-line detail
 *     of the last failure on the calling thread ("" after a call that
 *     returned SOP_OK).
 *   - Out-parameters come first, then the handle, then inputs.
 *   - Every public struct carries a version field and only ever grows at
 *     its end. Option structs: zero means "default" for every other field;
 *     initialise them with the *_INIT macro or *_init(); libsop reads only
 *     the fields the struct's version has (later ones take their
 *     defaults) and keeps no pointer to the struct after the call. Structs
 *     libsop fills (stat, info): set the version (the *_INIT macro does)
 *     and the call writes only the fields that version has. So a program
 *     built against an older header keeps working with a newer libsop; an
 *     unknown version (0, or newer than the library) is SOP_INVAL.
 *   - Bytes handed back as sop_val are borrowed: the comment of each call
 *     says how long they stay valid. Copy them to keep them.
 *   - Ending a transaction invalidates its cursors (later use returns
 *     SOP_BADSTATE); only sop_cursor_close frees a cursor.
 *   - A transaction handle is ended (freed) by sop_txn_abort and by
 *     sop_txn_commit, whatever either returns (SOP_BUSY too). The pointer
 *     is dangling afterwards: do not pass it to any call again, not even
 *     sop_txn_abort (set it to NULL: sop_txn_abort(NULL) does nothing).
 *     So a retry loop is always: begin, work, commit; on a retryable code
 *     (sop_rc_is_retryable) begin again.
 *     Builds of libsop with assertions (no NDEBUG) detect such a use and
 *     abort the program with a message on stderr.
 */
#ifndef SOP_H
#define SOP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SOP_VERSION_MAJOR  0
#define SOP_VERSION_MINOR  1
#define SOP_VERSION_PATCH  0
#define SOP_VERSION_STRING "0.1.0"

#if defined(SOP_BUILDING) && defined(__GNUC__)
#define SOP_API __attribute__((visibility("default")))
#else
#define SOP_API
#endif

/* ------------------------------------------------------------------------ */
/* Handles and values                                                        */
/* ------------------------------------------------------------------------ */

/** A database: one folder. Shared by any number of threads. */
typedef struct sop_db sop_db;
/** A transaction. Used by one thread at a time. */
typedef struct sop_txn sop_txn;
/** A named B-tree store. Owned by its sop_db; usable by any thread. */
typedef struct sop_store sop_store;
/** An ordered position in a store, inside one transaction. */
typedef struct sop_cursor sop_cursor;

/** Borrowed bytes: a pointer and a length. data may be NULL when len is 0. */
typedef struct sop_val {
    const void *data;
    size_t len;
} sop_val;

/** Largest key, in bytes. Keys are 1..SOP_MAX_KEY_LEN bytes long. */
#define SOP_MAX_KEY_LEN 4096
/** Largest value, in bytes (values may be empty). */
#define SOP_MAX_VALUE_LEN (1u << 30)
/** Longest store name, in bytes (names are 1..SOP_MAX_NAME_LEN bytes of
 *  well-formed UTF-8, no NUL: no overlong forms, surrogates or code points
 *  above U+10FFFF; anything else is SOP_INVAL). */
#define SOP_MAX_NAME_LEN 255
/** Longest external transaction id given to sop_txn_prepare(). */
#define SOP_MAX_XID_LEN 128

/* ------------------------------------------------------------------------ */
/* Return codes (append-only; numbers never change). Table: src/errors.def   */
/* ------------------------------------------------------------------------ */

#define SOP_OK              0   /**< success */
#define SOP_NOTFOUND        -1  /**< no such key / cursor ran off the end; txn usable */
#define SOP_KEYEXIST        -2  /**< add found the key already present; txn usable */
#define SOP_CONFLICT        -3  /**< a concurrent commit invalidated this txn; retry it */
#define SOP_BUSY            -4  /**< held elsewhere (other process, prepared txn); back off */
#define SOP_TIMEOUT         -5  /**< time limit passed; the txn has failed */
#define SOP_READONLY        -6  /**< write through a read-only txn; txn usable */
#define SOP_INVAL           -7  /**< bad argument; nothing changed */
#define SOP_BADSTATE        -8  /**< not allowed now (txn ended or failed, handles open) */
#define SOP_NOMEM           -9  /**< allocation failed; the txn has failed */
#define SOP_NOSPC           -10 /**< disk or quota full; the txn has failed */
#define SOP_IOERR           -11 /**< OS I/O error; the txn has failed */
#define SOP_CORRUPT         -12 /**< checksum or format check failed */
#define SOP_VERSION         -13 /**< file format newer than this library */
#define SOP_UNKNOWN_OUTCOME -14 /**< commit sent, outcome unknown (clustered mode) */
#define SOP_PANIC           -15 /**< an earlier fatal error (fsync) poisoned the db */
#define SOP_MISMATCH        -16 /**< options contradict the stored ones; nothing changed */

/** Constant English text for a return code ("unknown error" if not one). */
SOP_API const char *sop_strerror(int rc);
/** One-line detail of the last failure on this thread: "" after a call of
 *  this header that returned SOP_OK, whatever it met and tolerated inside.
 *  Valid until the next libsop call on this thread. */
SOP_API const char *sop_errmsg(void);
/** The OS errno behind the last SOP_IOERR/SOP_NOSPC on this thread, else 0. */
SOP_API int sop_os_errno(void);
/** 1 if the whole transaction may simply be retried (SOP_CONFLICT, SOP_BUSY). */
SOP_API int sop_rc_is_retryable(int rc);

/* ------------------------------------------------------------------------ */
/* Database                                                                  */
/* ------------------------------------------------------------------------ */

typedef enum sop_sync_mode {
    /** Commit returns after its record is on stable storage (one fdatasync,
     *  shared by concurrent committers: group commit). Default. */
    SOP_SYNC_FULL = 0,
    /** Commit returns after the record is written to the OS; the log is
     *  synced at checkpoints and on close. A power cut may lose the last
     *  commits, never expose a partial one. A process crash loses nothing. */
    SOP_SYNC_NORMAL = 1,
    /** No fdatasync or fsync at all (like SQLite synchronous=OFF or LMDB
     *  MDB_NOSYNC): not of commits, checkpoint manifests, new or sealed log
     *  segments, the folder (creation, renames), recovery or close. The one
     *  exception is sop_txn_prepare, which syncs the log segment holding its
     *  PREPARE record, as two-phase commit requires; older segments are not
     *  synced, so in this mode a prepare survives a power cut only if the OS
     *  wrote them back. A process crash loses nothing; an OS crash or power
     *  cut may lose recent commits or leave the database unopenable
     *  (SOP_CORRUPT). For bulk loads and tests. */
    SOP_SYNC_OFF = 2
} sop_sync_mode;

/** Open flags (sop_db_options.flags). Unknown bits give SOP_INVAL. */
#define SOP_DB_NOCREATE 0x1u /**< fail with SOP_NOTFOUND if the folder has no database */

/** Custom key order, registered by name at open (see sop_store_options.comparator).
 *  Must be a total order, deterministic and thread-safe; returns <0, 0, >0. */
typedef int (*sop_compare_fn)(const sop_val *a, const sop_val *b, void *ctx);
typedef struct sop_comparator {
    const char *name;       /**< 1..63 bytes, distinct within one open (else
                             *   SOP_INVAL); recorded in each store using it */
    sop_compare_fn compare;
    void *ctx;              /**< passed to compare; must outlive the sop_db */
} sop_comparator;

struct sop_vfs;      /* include/sop_sys.h */
struct sop_l2_cache; /* include/sop_sys.h */

typedef struct sop_db_options {
    uint32_t version;            /**< SOP_DB_OPTIONS_VERSION */
    uint32_t flags;              /**< SOP_DB_* */
    sop_sync_mode sync;          /**< 0 = SOP_SYNC_FULL */
    uint64_t cache_bytes;        /**< L1 budget for node memory; 0 = 256 MiB;
                                  *   min 1 MiB. Clean nodes beyond it are evicted
                                  *   (CLOCK); a checkpoint runs when dirty nodes
                                  *   reach half of it. It counts a running
                                  *   commit's node copies and a checkpoint's
                                  *   relocated nodes. Peak memory is about
                                  *   max(this, one transaction's changed nodes:
                                  *   ~6 KB per random put on a big tree) + a
                                  *   write batch (cache/16, 256 KiB..4 MiB) + ~120
                                  *   bytes per node (registry, manifest) + open
                                  *   transactions' write sets: within 8 MiB of
                                  *   an 8 MiB budget at 64 MiB of data
                                  *   (docs/SCALE.md §4). */
    uint64_t txn_time_limit_ms;  /**< 0 = 15 minutes; UINT64_MAX = none. A txn
                                  *   older than this fails with SOP_TIMEOUT at
                                  *   its next call, whatever the call (commit
                                  *   of a read-only txn too); then only abort. */
    uint64_t segment_bytes;      /**< log segment file size; 0 = 64 MiB; min 1 MiB */
    const sop_comparator *comparators; /**< array, read during open; may be NULL */
    size_t comparator_count;
    const struct sop_vfs *vfs;   /**< NULL = POSIX; must outlive the sop_db */
    /* version 1 ends here; fields are only ever appended */
    const struct sop_l2_cache *l2; /**< NULL = none; a second-level node cache
                                    *   (sop_sys.h: its contract), must
                                    *   outlive the sop_db */
} sop_db_options; /* version 2 ends here */

#define SOP_DB_OPTIONS_VERSION 2
/** Every field, in order, so that `gcc -Wextra` (-Wmissing-field-initializers)
 *  and C++ accept it; a field appended to the struct is appended here too. */
#define SOP_DB_OPTIONS_INIT    {SOP_DB_OPTIONS_VERSION, 0, SOP_SYNC_FULL, 0, 0, 0, 0, 0, 0, 0}
/** Fill *opts with defaults for @p version. SOP_INVAL for an unknown version. */
SOP_API int sop_db_options_init(sop_db_options *opts, uint32_t version);

/**
 * @brief Open (creating if needed) the database in folder @p path.
 *
 * A missing folder is created (unless SOP_DB_NOCREATE); an empty folder is
 * initialised; a folder holding a libsop database is opened and recovered:
 * the newest checkpoint is loaded and every durable commit after it is
 * replayed; an incomplete tail left by a crash is cut off. A folder holding
 * anything else is refused.
 *
 * Only one sop_db may have a folder open at a time, across all processes;
 * a second open (in this or another process) fails with SOP_BUSY.
 *
 * @param[out] db_out  The handle, or NULL on failure. Close with sop_db_close.
 * @param[in]  path    Folder path; read during the call only.
 * @param[in]  opts    NULL for defaults; read during the call only (the vfs
 *                     and comparator ctx pointers must outlive the db).
 * @retval SOP_OK
 * @retval SOP_INVAL     Bad options, or the folder holds non-libsop files.
 * @retval SOP_NOTFOUND  SOP_DB_NOCREATE and no database there.
 * @retval SOP_BUSY      Open elsewhere (another process or handle).
 * @retval SOP_VERSION   Made by a newer libsop.
 * @retval SOP_CORRUPT   Damage recovery can prove: the newest checkpoint,
 *                       a record below what a checkpoint or a later
 *                       commit's sync made durable (not a torn tail), a
 *                       segment missing after the checkpoint, a database
 *                       file that is not a regular file (a FIFO, a
 *                       device). Records the checkpoint already covers are
 *                       not read here: a damaged node or value is reported
 *                       when read, and sop_db_check verifies them all.
 * @retval SOP_IOERR, SOP_NOSPC, SOP_NOMEM
 * @par Threads  Any.
 */
SOP_API int sop_db_open(sop_db **db_out, const char *path, const sop_db_options *opts);

/**
 * @brief Close a database: checkpoint, sync (except SOP_SYNC_OFF), free.
 *
 * Every transaction that is not prepared must have ended first; otherwise
 * SOP_BADSTATE is returned and the handle (and every transaction) stays
 * open. Handles of prepared transactions are released as sop_txn_release
 * does: the transactions stay prepared, durable, and the next open lists
 * them (sop_db_prepared_list) for phase 2 by id; the pointers dangle.
 * On any return but SOP_BADSTATE the handle is freed (a failed final
 * checkpoint loses nothing: the log still holds every commit and prepare).
 * NULL is accepted and returns SOP_OK. Store handles and cursors' stores
 * die with the db (close cursors before or after: sop_cursor_close only
 * frees the cursor). No other call on @p db or its transactions may run
 * concurrently with close or follow it.
 * @retval SOP_OK, SOP_BADSTATE, SOP_NOSPC, SOP_PANIC
 * @retval SOP_IOERR  Also when the folder was deleted or renamed while the
 *                    handle was open (sop_os_errno() is then ENOENT); every
 *                    call that writes files reports that so.
 */
SOP_API int sop_db_close(sop_db *db);

/**
 * @brief Write a checkpoint now: dirty nodes to disk, registry and catalog to
 * an immutable manifest, and reclaim log segments nothing needs any more.
 * Runs concurrently with readers and writers. Normally automatic.
 * @retval SOP_OK, SOP_IOERR (folder gone too: see sop_db_close), SOP_NOSPC,
 *         SOP_NOMEM, SOP_PANIC
 */
SOP_API int sop_db_checkpoint(sop_db *db);

/** Counters of a database handle (sop_db_stat). */
typedef struct sop_db_stat_info {
    uint32_t version;         /**< in: SOP_DB_STAT_VERSION (or an older one) */
    uint64_t last_lsn;        /**< newest committed log sequence number */
    uint64_t checkpoint_lsn;  /**< newest durable checkpoint covers up to here */
    uint64_t commits;         /**< read-write commits since open */
    uint64_t conflicts;       /**< SOP_CONFLICT returned since open */
    uint64_t merges;          /**< commits whose nodes had changed since their snapshot */
    uint64_t syncs;           /**< fdatasync calls on the log since open */
    uint64_t node_loads;      /**< node reads from disk (L1 misses) */
    uint64_t node_hits;       /**< node fetches served from memory (every level
                               *   of every descent; a hit rate is
                               *   hits / (hits + loads)) */
    uint64_t cache_bytes;     /**< node memory now (clean + dirty) */
    uint64_t dirty_bytes;     /**< node memory not yet checkpointed */
    uint64_t disk_bytes;      /**< bytes in segment and checkpoint files */
    uint64_t live_bytes;      /**< of which still referenced */
    uint64_t segments;        /**< segment files */
    uint64_t prepared;        /**< prepared transactions awaiting resolution */
    /* version 1 ends here */
    uint64_t active_txns;     /**< transaction handles open now (version 2) */
} sop_db_stat_info;

#define SOP_DB_STAT_VERSION 2
/** Every field, in order (see SOP_DB_OPTIONS_INIT). */
#define SOP_DB_STAT_INIT {SOP_DB_STAT_VERSION, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

/**
 * @brief Fill *out with the handle's counters.
 *
 * Writes the fields of out->version only (version 1: up to prepared). The
 * counters are read one by one, not as one atomic snapshot: with commits
 * running they may be from slightly different moments.
 * @retval SOP_OK
 * @retval SOP_INVAL  NULL argument or unknown out->version (nothing written).
 * @par Threads  Any, concurrently with every call on @p db except close.
 */
SOP_API int sop_db_stat(sop_db_stat_info *out, sop_db *db);

/** Receives one integrity finding: a one-line description naming the store,
 *  node, segment or record concerned. */
typedef void (*sop_check_fn)(const char *finding, void *ctx);
/** Progress of sop_db_check: done out of total units (nodes + segments). */
typedef void (*sop_check_progress_fn)(uint64_t done, uint64_t total, void *ctx);

/**
 * @brief Verify the whole database (integrity checker).
 *
 * Checks, at the newest snapshot: every checksum (nodes, value blobs, every
 * record of every log segment kept - also those a checkpoint covers -, the
 * manifest); key order inside and across nodes; separators
 * bounding their subtrees; uniform depth; node fill (no empty non-root node,
 * at most slot_length items); each store's count against a full traversal;
 * every registry entry points at a valid node blob and no registry entry is
 * unreachable; every live blob is accounted for in its segment and no
 * segment claims live bytes nothing references; the log after the checkpoint
 * is a valid, consecutive sequence of records.
 *
 * It checks the snapshot of the newest commit when it starts, as a read-only
 * transaction would, and holds no lock a reader or a writer needs: other
 * threads read and commit while it runs (their commits come after its
 * snapshot and are not checked). Checkpoints do not run meanwhile: a
 * commit's automatic checkpoint is skipped, and sop_db_checkpoint() from
 * another thread waits for the check to finish. Memory: node images go
 * through the cache (cache_bytes) like a reader's, plus a few nodes and one
 * bit per node ID.
 *
 * Callbacks (on_finding, progress) run on the calling thread, with no lock
 * held that a transaction needs. They may call any libsop function on this
 * or another handle -- begin, read, write, commit or abort transactions,
 * sop_db_stat(), sop_errmsg() -- except, on this handle, sop_db_check(),
 * sop_db_checkpoint() and sop_db_close(), which wait for the running check
 * and would never return. A callback's commits are not checked. The
 * message passed to on_finding is valid only during the call.
 *
 * @param[out] findings_out  Number of findings (0 = clean).
 * @param[in]  on_finding    Called for each finding; may be NULL.
 * @param[in]  progress      Called now and then; may be NULL.
 * @retval SOP_OK  The check ran (see *findings_out).
 * @retval SOP_NOMEM, SOP_IOERR, SOP_PANIC  It could not run to the end.
 */
SOP_API int sop_db_check(uint64_t *findings_out, sop_db *db, sop_check_fn on_finding,
                         sop_check_progress_fn progress, void *ctx);

/* ------------------------------------------------------------------------ */
/* Transactions                                                              */
/* ------------------------------------------------------------------------ */

/** sop_txn_begin flags. */
#define SOP_TXN_READONLY 0x1u

/**
 * @brief Begin a transaction on the newest committed snapshot.
 *
 * Reads see every commit that returned before this call, plus this txn's
 * own writes, and nothing else. Read-write transactions take no locks while
 * they run; sop_txn_commit validates them (serializable).
 * @param[out] txn_out  Freed by sop_txn_commit or sop_txn_abort.
 * @retval SOP_OK, SOP_INVAL (unknown flag), SOP_NOMEM, SOP_PANIC
 * @par Threads  Any; the txn is then used by one thread at a time.
 */
SOP_API int sop_txn_begin(sop_txn **txn_out, sop_db *db, unsigned flags);

/**
 * @brief Commit and free the transaction.
 *
 * A read-write commit validates everything the transaction read (keys, and
 * the ranges its cursors covered) and wrote against commits made since it
 * began: if one of them changed such a key, the commit fails with
 * SOP_CONFLICT and nothing is written. Otherwise its key-level changes are
 * applied to the newest tree (changes by others to other keys of the same
 * nodes are kept: merge) and a commit record is appended to the log. With
 * SOP_SYNC_FULL the call returns after that record is on stable storage.
 *
 * On a prepared transaction this is phase 2: it commits for sure.
 *
 * The txn is freed on every return, whatever the code: the pointer must not
 * be used again (not even for sop_txn_abort). Its cursors become invalid
 * (close them with sop_cursor_close).
 *
 * Retrying: on SOP_CONFLICT begin a new transaction at once and redo its
 * reads and writes. The call returns only once the commit it lost to is
 * visible (with SOP_SYNC_FULL: durable), so the new transaction sees that
 * commit and never loses to it again; no back-off is needed. On SOP_BUSY
 * (a prepared transaction of someone else holds a key this one touches)
 * do the same after a back-off: the new transaction gets SOP_BUSY again
 * until the prepared one's phase 2.
 *
 * On a prepared transaction (phase 2) a failure (SOP_IOERR, SOP_NOSPC,
 * SOP_NOMEM) frees the handle but leaves the transaction prepared: commit
 * it by id (sop_db_prepared_commit). SOP_NOTFOUND: it had already been
 * resolved by id (sop_db_prepared_commit/rollback from another thread).
 *
 * @retval SOP_OK        Committed (durable per the sync mode).
 * @retval SOP_CONFLICT  Not committed; retry the whole transaction (above).
 * @retval SOP_BUSY      Not committed; retry the whole transaction after a
 *                       back-off (above).
 * @retval SOP_NOTFOUND  Prepared transaction already resolved by id.
 * @retval SOP_TIMEOUT   Older than the time limit (read-only txns too); not
 *                       committed; freed.
 * @retval SOP_BADSTATE  The txn had failed earlier; not committed; freed.
 * @retval SOP_INVAL     Its commit record would be longer than a log record
 *                       can be (4 GiB less 8 bytes: many large inline
 *                       values); nothing written; freed.
 * @retval SOP_IOERR, SOP_NOSPC, SOP_NOMEM  Not committed; freed. SOP_IOERR
 *                       also when the folder is gone (see sop_db_close).
 * @retval SOP_PANIC     fdatasync failed: the outcome is decided by recovery
 *                       at the next open; close the db.
 */
SOP_API int sop_txn_commit(sop_txn *txn);

/**
 * @brief End the transaction without committing and free it.
 *
 * The handle is freed whatever the result. NULL is a no-op (SOP_OK). Only
 * for a live handle: never after sop_txn_commit (the handle is freed then),
 * never twice. Its cursors become invalid.
 *
 * On a prepared transaction this is phase 2 "rollback": it writes a durable
 * ABORT_PREPARED record, which can fail; the transaction then stays
 * prepared (sop_db_prepared_list) and can be rolled back by id later.
 * @retval SOP_OK        Rolled back (always for a transaction not prepared).
 * @retval SOP_NOTFOUND  Prepared, but already resolved by id meanwhile.
 * @retval SOP_IOERR, SOP_NOSPC, SOP_NOMEM, SOP_PANIC  Prepared: the rollback
 *                       record could not be written; still prepared.
 */
SOP_API int sop_txn_abort(sop_txn *txn);

/**
 * @brief Two-phase commit, phase 1: validate and make the transaction durable
 * as "prepared". Afterwards sop_txn_commit() will succeed (even after a
 * crash and reopen: see sop_db_prepared_list), and other transactions that
 * write the keys it read or touch the keys it wrote get SOP_BUSY until it
 * is resolved. The PREPARE record is always synced, whatever the sync mode.
 *
 * For validation a prepared transaction's writes count as committed from
 * the moment it is prepared: a transaction that began before and read or
 * writes one of those keys fails with SOP_CONFLICT (also if the prepared
 * one is rolled back later); one that began after gets SOP_BUSY until
 * phase 2, then SOP_CONFLICT if phase 2 committed, and may commit if it
 * rolled back.
 *
 * @param[in] xid  Optional external id (0..SOP_MAX_XID_LEN bytes) stored with
 *                 the prepared txn for a coordinator; NULL for none.
 * @retval SOP_OK        Prepared; only sop_txn_commit/abort/release are
 *                       allowed now.
 * @retval SOP_CONFLICT  Validation failed; the txn has failed (abort it).
 * @retval SOP_BUSY      Another prepared txn holds a key; txn still active.
 * @retval SOP_READONLY  Read-only transactions cannot be prepared.
 * @retval SOP_INVAL     Bad xid, or the record would be too long (as for
 *                       sop_txn_commit).
 * @retval SOP_TIMEOUT, SOP_BADSTATE, SOP_IOERR, SOP_NOSPC, SOP_NOMEM, SOP_PANIC
 */
SOP_API int sop_txn_prepare(sop_txn *txn, const sop_val *xid);

/**
 * @brief Release the handle of a prepared transaction and leave it prepared.
 *
 * For a coordinator that decides phase 2 later, possibly after a restart:
 * the handle is freed (the pointer dangles), the transaction stays prepared
 * and durable, and is resolved by id with sop_db_prepared_commit or
 * sop_db_prepared_rollback, in this process or after a reopen.
 * sop_db_close does the same for every prepared handle still open.
 * @retval SOP_OK        Released.
 * @retval SOP_BADSTATE  Not prepared: nothing happened, the handle is still
 *                       yours (commit or abort it).
 * @retval SOP_INVAL     NULL.
 */
SOP_API int sop_txn_release(sop_txn *txn);

/** The id of a prepared transaction (0 before sop_txn_prepare succeeded). */
SOP_API uint64_t sop_txn_id(const sop_txn *txn);

/** A prepared transaction awaiting phase 2. */
typedef struct sop_prepared_info {
    uint64_t id;                    /**< for sop_db_prepared_commit/rollback */
    uint64_t lsn;                   /**< log position of its PREPARE record */
    size_t xid_len;
    uint8_t xid[SOP_MAX_XID_LEN];   /**< as given to sop_txn_prepare */
} sop_prepared_info;

/**
 * @brief List the prepared transactions awaiting phase 2, oldest first.
 *
 * Those prepared through a handle still open are listed too. The entries
 * are copies (owned by the caller); the list is one consistent moment.
 * @param[out] out        Room for @p cap entries; may be NULL when cap is 0
 *                        (to ask for the number only).
 * @param[out] count_out  The total number, which may exceed @p cap.
 * @retval SOP_OK, SOP_INVAL (NULL db or count_out, or out NULL with cap > 0)
 * @par Threads  Any, concurrently with every call on @p db except close.
 */
SOP_API int sop_db_prepared_list(sop_prepared_info *out, size_t cap, size_t *count_out,
                                 sop_db *db);
/**
 * @brief Phase 2 by id: commit the prepared transaction @p id.
 *
 * For a coordinator that kept only the id: after a crash or a clean close
 * (sop_txn_release, sop_db_close), or from another thread than the one
 * holding the handle. It commits for sure (no SOP_CONFLICT, no SOP_BUSY).
 * A transaction is resolved once: when this call and a phase 2 on the same
 * transaction (sop_txn_commit / sop_txn_abort of its handle, or the other
 * by-id call) race, exactly one of them resolves it and its outcome stands;
 * the others return SOP_NOTFOUND and change nothing. A handle whose
 * transaction was resolved by id must still be ended (sop_txn_commit and
 * sop_txn_abort then return SOP_NOTFOUND; sop_txn_release returns SOP_OK).
 * @retval SOP_OK        Committed (durable per the sync mode).
 * @retval SOP_NOTFOUND  No prepared transaction @p id (never was, or
 *                       already resolved).
 * @retval SOP_INVAL     NULL db.
 * @retval SOP_IOERR, SOP_NOSPC, SOP_NOMEM  Not committed; still prepared.
 * @retval SOP_CORRUPT   A value it wrote cannot be read back; still prepared.
 * @retval SOP_PANIC     fdatasync failed (see sop_txn_commit).
 * @par Threads  Any, concurrently with every call on @p db except close.
 */
SOP_API int sop_db_prepared_commit(sop_db *db, uint64_t id);
/** @brief Phase 2 by id: roll the prepared transaction @p id back (writes a
 *  durable record). Same rules and codes as sop_db_prepared_commit, with
 * "rolled back" for "committed". */
SOP_API int sop_db_prepared_rollback(sop_db *db, uint64_t id);

/* ------------------------------------------------------------------------ */
/* Stores                                                                    */
/* ------------------------------------------------------------------------ */

/** sop_store_options.flags */
#define SOP_STORE_DUPLICATES     0x1u /**< several items may share a key */
#define SOP_STORE_VALUES_SEPARATE 0x2u /**< every value in its own blob, not in the node */

/** Items per node: default, and the accepted range. */
#define SOP_SLOT_LENGTH_DEFAULT 64
#define SOP_SLOT_LENGTH_MIN     4
#define SOP_SLOT_LENGTH_MAX     10000

typedef struct sop_store_options {
    uint32_t version;          /**< SOP_STORE_OPTIONS_VERSION */
    uint32_t flags;            /**< SOP_STORE_* */
    uint32_t slot_length;      /**< items per node; 0 = SOP_SLOT_LENGTH_DEFAULT */
    uint32_t max_inline_value; /**< values longer than this get their own blob
                                *   even in-node; 0 = 1024; max 65536 */
    const char *comparator;    /**< registered comparator name; NULL = bytewise */
    const void *key_spec;      /**< opaque index specification (sop_keys.h); */
    size_t key_spec_len;       /**<   NULL/0 = none; at most 4096 bytes */
} sop_store_options; /* version 1 ends here */

#define SOP_STORE_OPTIONS_VERSION 1
/** Every field, in order (see SOP_DB_OPTIONS_INIT). */
#define SOP_STORE_OPTIONS_INIT    {SOP_STORE_OPTIONS_VERSION, 0, 0, 0, 0, 0, 0}
/** @brief Fill *opts with the defaults of @p version (every field 0: see
 *  each field) and set opts->version; the same as SOP_STORE_OPTIONS_INIT
 *  for the current version. The caller owns *opts; nothing is allocated.
 *  @retval SOP_OK
 *  @retval SOP_INVAL  NULL opts or a version this library does not know
 *                     (only SOP_STORE_OPTIONS_VERSION today); *opts unchanged.
 *  @par Threads  Any. */
SOP_API int sop_store_options_init(sop_store_options *opts, uint32_t version);

/** sop_store_open flags. */
#define SOP_STORE_CREATE 0x1u /**< create the store if it does not exist */

/**
 * @brief Open a store by name, creating it if asked.
 *
 * Creation is transactional: it becomes visible to others when @p txn
 * commits, and an aborted txn leaves no store. If two transactions create
 * the same name concurrently, the second to commit gets SOP_CONFLICT.
 *
 * @param[out] store_out  Owned by the db (do not free); valid until
 *                        sop_db_close, except: the handle of a store
 *                        created in @p txn dies when @p txn ends, unless
 *                        sop_txn_commit commits it directly (after
 *                        sop_txn_prepare, the committed store gets a new
 *                        handle: open it again by name); and a removed
 *                        store's handle is freed once the removal has
 *                        committed and every transaction that began before
 *                        it has ended. The same name gives the same handle
 *                        while that store lives.
 * @param[in]  txn        Read-write to create; any txn to open.
 * @param[in]  name       1..SOP_MAX_NAME_LEN bytes of UTF-8, NUL-terminated.
 * @param[in]  flags      0 or SOP_STORE_CREATE.
 * @param[in]  opts       NULL = the stored options (or defaults when
 *                        creating). When the store exists, any field given
 *                        (non-zero) must equal the stored one.
 * @retval SOP_OK
 * @retval SOP_NOTFOUND  No such store in txn's snapshot and no CREATE.
 * @retval SOP_INVAL     Bad name (too long, or not UTF-8) or options (an
 *                       unknown version or flag, a value out of range), or
 *                       an unregistered comparator.
 * @retval SOP_MISMATCH  The store exists and a field given in @p opts
 *                       contradicts its stored options (sop_errmsg() names
 *                       the field and both values); the txn stays usable.
 * @retval SOP_READONLY  CREATE of a missing store in a read-only txn.
 * @retval SOP_TIMEOUT, SOP_BADSTATE, SOP_NOMEM, SOP_IOERR, SOP_CORRUPT, SOP_PANIC
 */
SOP_API int sop_store_open(sop_store **store_out, sop_txn *txn, const char *name,
                           unsigned flags, const sop_store_options *opts);

/**
 * @brief Remove a store and all its items (transactional).
 *
 * The removal becomes visible when @p txn commits; until then other
 * transactions use the store as before, and an abort keeps it. Its fate:
 *   - in @p txn, at once: every call on the store (items, cursors,
 *     sop_store_info_get, sop_store_stat) returns SOP_BADSTATE, also
 *     through cursors opened before; sop_store_open without CREATE gives
 *     SOP_NOTFOUND. (Re-creating the name in the same txn is not
 *     supported yet: its commit fails with SOP_CONFLICT; remove and create
 *     in two transactions.) A store created in @p txn itself just never
 *     existed.
 *   - after the commit: transactions that began before it keep seeing the
 *     store through the same handle (their snapshot); those that begin
 *     later do not (SOP_BADSTATE / SOP_NOTFOUND).
 *   - the handle is freed once the removal has committed and the last
 *     transaction that began before it has ended; a cursor on it may still
 *     be closed (sop_cursor_close never reads the store), nothing else.
 * Conflicts: a concurrent commit that writes the store, or removes it
 * too, makes the later committer SOP_CONFLICT; a prepared transaction
 * holding keys of it makes the commit SOP_BUSY.
 * @retval SOP_OK
 * @retval SOP_NOTFOUND  No such store in txn's view.
 * @retval SOP_READONLY  Read-only txn (txn usable).
 * @retval SOP_INVAL     Bad name.
 * @retval SOP_BADSTATE  txn ended, failed or prepared.
 * @retval SOP_TIMEOUT, SOP_NOMEM  The txn has failed.
 * @par Threads  As any write of @p txn.
 */
SOP_API int sop_store_remove(sop_txn *txn, const char *name);

/**
 * @brief Names of the stores visible to @p txn, sorted bytewise.
 *
 * txn's view: its snapshot plus the stores it created, minus those it
 * removed. Not part of a read-write txn's read set (a store created
 * concurrently does not make it conflict).
 * @param[out] names_out  Array of *count_out NUL-terminated names, owned by
 *                        the caller (independent of txn and db): free with
 *                        sop_store_list_free(names, count). NULL (and count
 *                        0) on error; may be non-NULL with count 0.
 * @retval SOP_OK, SOP_INVAL (NULL argument), SOP_BADSTATE, SOP_TIMEOUT,
 *         SOP_NOMEM (nothing to free then)
 * @par Threads  As any read of @p txn.
 */
SOP_API int sop_store_list(char ***names_out, size_t *count_out, sop_txn *txn);
/** @brief Free what sop_store_list returned: @p count must be the count it
 *  gave. NULL is a no-op. Any thread; the db may be closed already. */
SOP_API void sop_store_list_free(char **names, size_t count);

typedef struct sop_store_info {
    uint32_t version;           /**< in: SOP_STORE_INFO_VERSION */
    uint64_t count;             /**< items in txn's view (own changes included) */
    sop_store_options options;  /**< stored options; pointers borrowed from the
                                 *   store handle, valid until sop_db_close */
    uint64_t id;                /**< internal store id */
} sop_store_info; /* version 1 ends here */

#define SOP_STORE_INFO_VERSION 1
/** Every field, in order (see SOP_DB_OPTIONS_INIT). */
#define SOP_STORE_INFO_INIT {SOP_STORE_INFO_VERSION, 0, SOP_STORE_OPTIONS_INIT, 0}

/**
 * @brief Fill *out for @p store as seen by @p txn.
 *
 * count is sop_count()'s (in a read-write txn it is a read: see there);
 * options is the store's stored options (options.version is
 * SOP_STORE_OPTIONS_VERSION). Writes the fields of out->version only.
 * @retval SOP_OK
 * @retval SOP_INVAL     NULL argument, unknown out->version, or a store of
 *                       another database.
 * @retval SOP_BADSTATE  Store not visible in @p txn, or @p txn unusable.
 * @retval SOP_TIMEOUT, SOP_IOERR, SOP_CORRUPT, SOP_NOMEM, SOP_PANIC  As for
 *                       sop_count (the txn has failed).
 * @par Threads  As any read of @p txn.
 */
SOP_API int sop_store_info_get(sop_store_info *out, sop_txn *txn, sop_store *store);
/** Shape and size of one store's tree (sop_store_stat). Fill factors are
 *  leaf_items / leaf_capacity and branch_children / branch_capacity. */
typedef struct sop_store_stat_info {
    uint32_t version;         /**< in: SOP_STORE_STAT_VERSION */
    uint32_t depth;           /**< levels; 1 = the root is a leaf */
    uint32_t slot_length;     /**< the store's items (children) per node */
    uint64_t leaf_nodes;      /**< leaves */
    uint64_t branch_nodes;    /**< branches (inner nodes) */
    uint64_t leaf_items;      /**< items in the leaves (the snapshot's count) */
    uint64_t leaf_capacity;   /**< leaf_nodes * slot_length */
    uint64_t branch_children; /**< children of all branches */
    uint64_t branch_capacity; /**< branch_nodes * slot_length */
    uint64_t node_bytes;      /**< bytes of the nodes in their on-disk form */
    uint64_t key_bytes;       /**< bytes of the keys in the leaves */
    uint64_t inline_value_bytes; /**< bytes of values stored inside leaves */
    uint64_t value_blobs;     /**< values stored apart from their leaf */
    uint64_t value_blob_bytes;   /**< their bytes */
} sop_store_stat_info; /* version 1 ends here */

#define SOP_STORE_STAT_VERSION 1
/** Every field, in order (see SOP_DB_OPTIONS_INIT). */
#define SOP_STORE_STAT_INIT {SOP_STORE_STAT_VERSION, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

/**
 * @brief Walk @p store's tree at @p txn's snapshot and describe its shape.
 *
 * Visits every node (loading from disk those not in memory), so it costs
 * a full scan's worth of node reads; it reads no value blobs. The
 * transaction's own uncommitted changes are not included, and the walk is
 * not part of a read-write transaction's read set: it is a statistic, not
 * a serializable read. A store created inside @p txn reports all zeros.
 * @param[in,out] out  out->version in; the fields of that version filled on
 *                     SOP_OK, zeroed on other errors.
 * @retval SOP_OK
 * @retval SOP_INVAL     NULL argument, unknown out->version (nothing
 *                       written), or a store of another database.
 * @retval SOP_BADSTATE  Store not visible in @p txn, or @p txn unusable.
 * @retval SOP_CORRUPT   A node could not be decoded.
 * @retval SOP_IOERR, SOP_NOMEM, SOP_PANIC
 * @par Threads  As any read of @p txn.
 */
SOP_API int sop_store_stat(sop_store_stat_info *out, sop_txn *txn, sop_store *store);
/** The store's name (owned by the handle). */
SOP_API const char *sop_store_name(const sop_store *store);

/* ------------------------------------------------------------------------ */
/* Items                                                                     */
/* ------------------------------------------------------------------------ */
/*
 * Common rules for the calls below:
 *   - key: 1..SOP_MAX_KEY_LEN bytes; value: 0..SOP_MAX_VALUE_LEN bytes; both
 *     read during the call only (copied).
 *   - SOP_READONLY for a write through a read-only txn (txn stays usable).
 *   - SOP_INVAL for bad lengths or a store of another db (txn usable).
 *   - SOP_BADSTATE if the txn has ended/failed/is prepared, or the store is
 *     not visible in its snapshot.
 *   - SOP_IOERR, SOP_CORRUPT, SOP_NOMEM, SOP_NOSPC: the txn has failed; only
 *     sop_txn_abort is allowed.
 *   - SOP_TIMEOUT: the txn is older than txn_time_limit_ms; it has failed.
 *     Every call that takes a txn (store, item and cursor calls alike)
 *     checks the limit.
 * In a duplicate-key store "the item with key K" means the first (oldest)
 * one; items with equal keys keep their insertion order.
 */

/** Add an item. Unique store: SOP_KEYEXIST if the key is present (nothing
 *  changed). Duplicate store: always adds another item. */
SOP_API int sop_add(sop_txn *txn, sop_store *store, const sop_val *key, const sop_val *value);
/** Add only if no item has this key; SOP_KEYEXIST otherwise (any store). */
SOP_API int sop_add_if_absent(sop_txn *txn, sop_store *store, const sop_val *key,
                              const sop_val *value);
/** Replace the value of the item with this key; SOP_NOTFOUND if none. */
SOP_API int sop_update(sop_txn *txn, sop_store *store, const sop_val *key, const sop_val *value);
/** Update if present, else add. */
SOP_API int sop_upsert(sop_txn *txn, sop_store *store, const sop_val *key, const sop_val *value);
/** Remove the item with this key (every item with it in a duplicate store);
 *  SOP_NOTFOUND if none. */
SOP_API int sop_remove(sop_txn *txn, sop_store *store, const sop_val *key);

/**
 * @brief Look up one key.
 * @param[out] value_out  On SOP_OK, borrowed bytes valid until the next call
 *     on @p txn or any of its cursors, or its end; else {NULL,0}. (The node
 *     holding them may be evicted from the cache after that.)
 * In a read-write txn the key joins the read set, found or not.
 * @retval SOP_OK, SOP_NOTFOUND, plus the common codes.
 */
SOP_API int sop_get(sop_val *value_out, sop_txn *txn, sop_store *store, const sop_val *key);

/** Number of items in @p txn's view of the store, own changes included:
 *  the count stored with the snapshot plus the transaction's own delta
 *  (its write set's keys are looked up; the store is not walked). In a
 *  read-write txn the count is a read validated at commit like any other:
 *  it covers every key of the store, so a commit since the snapshot that
 *  wrote any key of it makes this txn's commit SOP_CONFLICT. */
SOP_API int sop_count(uint64_t *count_out, sop_txn *txn, sop_store *store);

/* ------------------------------------------------------------------------ */
/* Cursors                                                                   */
/* ------------------------------------------------------------------------ */

typedef enum sop_cursor_op {
    SOP_FIRST,    /**< first item */
    SOP_LAST,     /**< last item */
    SOP_NEXT,     /**< next item (FIRST if unpositioned) */
    SOP_PREV,     /**< previous item (LAST if unpositioned) */
    SOP_SEEK,     /**< first item whose key equals key */
    SOP_SEEK_GE,  /**< first item whose key is >= key */
    SOP_CURRENT,  /**< the item at the cursor */
    SOP_NEXT_DUP, /**< next item with the same key as the current one */
    SOP_PREV_DUP  /**< previous item with the same key as the current one */
} sop_cursor_op;

/** Open a cursor on @p store within @p txn; it starts unpositioned. */
SOP_API int sop_cursor_open(sop_cursor **cursor_out, sop_txn *txn, sop_store *store);
/** Free a cursor (NULL-safe); always safe, even after its txn ended. */
SOP_API void sop_cursor_close(sop_cursor *cursor);

/**
 * @brief Move the cursor and return the item there.
 *
 * @param[out] key_out, value_out  May be NULL. On SOP_OK borrowed bytes valid
 *     until the next call on this cursor, on its txn or on another cursor of
 *     its txn, or the txn's end.
 * @param[in] key  Used by SOP_SEEK and SOP_SEEK_GE only.
 * @retval SOP_OK
 * @retval SOP_NOTFOUND  Nothing there. After FIRST/LAST/SEEK/SEEK_GE the
 *     cursor is unpositioned; after NEXT/PREV/NEXT_DUP/PREV_DUP it stays on
 *     the item it was on (CURRENT still returns it).
 * @retval SOP_INVAL     CURRENT/NEXT_DUP/PREV_DUP while unpositioned, bad op.
 * In a read-write txn the ranges the cursor covers join the read set.
 */
SOP_API int sop_cursor_get(sop_val *key_out, sop_val *value_out, sop_cursor *cursor,
                           sop_cursor_op op, const sop_val *key);

/** sop_cursor_set_range flags. */
#define SOP_RANGE_LO_EXCLUSIVE 0x1u /**< lo itself is outside the range */
#define SOP_RANGE_HI_EXCLUSIVE 0x2u /**< hi itself is outside the range */

/**
 * @brief Bound the cursor to the keys from @p lo to @p hi.
 *
 * Afterwards the cursor sees only items inside the bounds, as if the store
 * held nothing else: SOP_FIRST / SOP_LAST give the first / last item inside
 * them; SOP_NEXT / SOP_PREV return SOP_NOTFOUND at a bound (staying on the
 * item, as at the store's end); SOP_SEEK of a key outside them and
 * SOP_SEEK_GE that finds nothing inside them give SOP_NOTFOUND; SOP_SEEK_GE
 * of a key below @p lo starts at @p lo. So a range scan needs no "past the
 * end" check: SOP_NEXT (or SOP_PREV for reverse order) until SOP_NOTFOUND.
 * Bounds compare with the store's order (its comparator) and are inclusive
 * unless a SOP_RANGE_*_EXCLUSIVE flag says otherwise; lo above hi gives an
 * empty range. A prefix scan: lo = prefix, hi = sop_key_prefix_end(prefix),
 * SOP_RANGE_HI_EXCLUSIVE. In a read-write txn only what the cursor visits
 * joins the read set (plus at most the first item past a bound).
 *
 * @param[in] lo, hi  NULL = unbounded on that side; copied (1..SOP_MAX_KEY_LEN
 *                    bytes). Both NULL removes the bounds.
 * @param[in] flags   0 or SOP_RANGE_LO_EXCLUSIVE | SOP_RANGE_HI_EXCLUSIVE.
 * The cursor becomes unpositioned; the bounds last until the next call.
 * @retval SOP_OK
 * @retval SOP_INVAL     Bad key length or flag (nothing changed).
 * @retval SOP_BADSTATE  The cursor's txn has ended (or has failed).
 * @retval SOP_NOMEM, SOP_TIMEOUT
 */
SOP_API int sop_cursor_set_range(sop_cursor *cursor, const sop_val *lo, const sop_val *hi,
                                 unsigned flags);

/** Remove the item at the cursor (read-write txn). The cursor stays between
 *  its neighbours: NEXT/PREV move to them. SOP_INVAL if unpositioned. */
SOP_API int sop_cursor_remove(sop_cursor *cursor);

#ifdef __cplusplus
}
#endif

/* Typed compound keys: order-preserving tuple encoding, index
 * specifications, structs as keys. */
#include "sop_keys.h"

#endif /* SOP_H */
