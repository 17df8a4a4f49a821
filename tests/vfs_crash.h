/*
 * vfs_crash.h - simulated power loss for tests, and the oracle that checks
 * what a database holds afterwards.
 *
 * Part 1, crash_vfs: a VFS in the spirit of SQLite's src/test6.c. It wraps
 * the POSIX VFS and writes through to the real files, but remembers every
 * change not yet made durable:
 *   - data: each pwrite/truncate of a file since that file's last sync;
 *   - names: each create/rename/unlink/mkdir in a directory since that
 *     directory's last sync_dir (a rename or unlink is reversible because
 *     the displaced file is kept under a stash folder until then).
 * It simulates the cut after the Nth mutating call (open that creates,
 * pwrite, sync, truncate, unlink, rename, mkdir, sync_dir, symlink): a
 * pwrite that is the Nth call still lands (it is the write in flight), and
 * from then on every call fails with SOP_IOERR and changes nothing, so the
 * engine unwinds as if the process had died. crash_vfs_apply() then
 * rewrites the real files to one state a disk could hold after the cut,
 * chosen from the seed:
 *   CRASH_DROP     every unsynced write and unsynced name change is lost;
 *   CRASH_KEEP     nothing is lost (a process crash);
 *   CRASH_PREFIX   per file, the writes reached the disk in order up to one
 *                  write, which is torn at 512-byte granularity (a prefix of
 *                  its sectors landed, the next sector may hold garbage);
 *   CRASH_REORDER  per 512-byte sector, any version the sector held since
 *                  the last sync (so later writes can land without earlier
 *                  ones), one sector may hold garbage;
 * and for the non-trivial modes a prefix of each directory's unsynced name
 * changes survives. The file size after the cut is one the file had since
 * its last sync, so an append can leave a longer file of zeros.
 * Garbage follows SQLite's "powersafe overwrite": it only replaces bytes an
 * unsynced write touched, never bytes already durable in the same sector.
 * The test then reopens the folder with the plain POSIX VFS.
 *
 * Part 2, crash_model: the expected content of a database as a base state
 * plus the commits made since, each acknowledged (SOP_OK: must survive once
 * durable) or unknown (SOP_PANIC and the like: may or may not). After a
 * crash, crash_model_verify() reads the whole database through the public
 * API and accepts it only if it equals the base plus a prefix of the
 * commits that contains every durable one - so every acknowledged commit is
 * present and nothing of any other commit is visible, not even one key.
 * It also checks count == forward traversal == backward traversal ==
 * point lookups, and that sop_db_check() finds nothing.
 *
 * Part 3, crash_workload: a seeded random workload (stores created and
 * removed, upserts, adds, removes, reads, small/medium/large values, aborts,
 * checkpoints, clean and process-crash reopens) that records its outcomes
 * in a crash_model, and the scripted lifecycle test_fault/test_alloc sweep.
 *
 * Threads: one thread per crash_vfs and per model.
 */
#ifndef SOP_TEST_VFS_CRASH_H
#define SOP_TEST_VFS_CRASH_H

#include <stddef.h>
#include <stdint.h>

#include "sop.h"
#include "sop_sys.h"

/* ---- Part 1: the power-loss VFS ------------------------------------------- */

typedef enum crash_mode {
    CRASH_RANDOM = 0, /* pick one of the modes below from the seed */
    CRASH_DROP,
    CRASH_KEEP,
    CRASH_PREFIX,
    CRASH_REORDER,
    CRASH_MODE_COUNT
} crash_mode;

typedef struct crash_stats {
    crash_mode mode;          /* the mode used */
    uint64_t files;           /* files with unsynced writes at the cut */
    uint64_t writes;          /* unsynced writes and truncates at the cut */
    uint64_t sectors_old;     /* sectors left at their synced content */
    uint64_t sectors_new;     /* sectors at the newest content */
    uint64_t sectors_mid;     /* sectors at an intermediate version */
    uint64_t sectors_garbage; /* sectors whose unsynced bytes became garbage */
    uint64_t names_kept;      /* unsynced name changes that survived */
    uint64_t names_lost;      /* unsynced name changes undone */
} crash_stats;

typedef struct crash_vfs crash_vfs;

/* A power-loss VFS. @p stash_dir: a folder outside the database (created if
 * missing) on the same file system, where displaced files wait. NULL when
 * out of memory. */
crash_vfs *crash_vfs_new(const char *stash_dir, uint64_t seed);
/* Free; forgets unsynced state (apply first to simulate the cut). */
void crash_vfs_free(crash_vfs *cv);
const sop_vfs *crash_vfs_vfs(crash_vfs *cv);

/* Cut the power at the @p n-th mutating call from now (0 = never). Also
 * zeroes the mutating-call counter. */
void crash_vfs_arm(crash_vfs *cv, uint64_t n);
/* Mutating calls since the last arm (a dry run's total gives the range). */
uint64_t crash_vfs_mutations(const crash_vfs *cv);
/* 1 once the cut happened. */
int crash_vfs_crashed(const crash_vfs *cv);
/* Cut now (if it has not happened). */
void crash_vfs_crash_now(crash_vfs *cv);
/* Do real fsyncs (default 0: durability is simulated, so syncs only mark). */
void crash_vfs_set_real_sync(crash_vfs *cv, int on);

/*
 * Rewrite the real files to a post-cut state chosen by @p mode (CRASH_RANDOM:
 * from the seed), then forget all unsynced state and allow calls again (the
 * next cut needs crash_vfs_arm). Call after every sop_db using the VFS was
 * closed or dropped. Without a cut it still applies (a cut "now").
 * @retval 0 on success, -1 on a real I/O error (message on stderr).
 */
int crash_vfs_apply(crash_vfs *cv, crash_mode mode, crash_stats *stats_out);

const char *crash_mode_name(crash_mode mode);

/* ---- Part 2: the oracle ----------------------------------------------------- */

typedef struct crash_model crash_model;

crash_model *crash_model_new(void);
void crash_model_free(crash_model *m);

/* Building a commit: begin, ops, then end with the commit's return code. */
void crash_model_begin(crash_model *m);
void crash_model_create_store(crash_model *m, const char *name);
void crash_model_drop_store(crash_model *m, const char *name);
void crash_model_put(crash_model *m, const char *store, const void *key, size_t key_len,
                     const void *val, size_t val_len);
void crash_model_del(crash_model *m, const char *store, const void *key, size_t key_len);
/*
 * End the commit begun last. @p rc is what sop_txn_commit returned:
 *   SOP_OK                       acknowledged; with @p durable (SOP_SYNC_FULL)
 *                                it and every earlier commit must survive;
 *   SOP_PANIC, SOP_UNKNOWN_OUTCOME
 *                                unknown: may survive or not, all or nothing;
 *   anything else                not committed: forgotten.
 */
void crash_model_end(crash_model *m, int rc, int durable);
/* Every acknowledged commit so far is durable (after a successful
 * checkpoint or close in SOP_SYNC_NORMAL). */
void crash_model_mark_durable(crash_model *m);

/* Lookups in the newest state (every commit, acknowledged or not, applied;
 * the one the running transaction builds on). */
int crash_model_has_store(const crash_model *m, const char *name);
/* 1 and the value if present, else 0. */
int crash_model_get(const crash_model *m, const char *store, const void *key, size_t key_len,
                    const void **val_out, size_t *val_len_out);

/*
 * Read everything in @p db (one read-only snapshot) and compare it with the
 * accepted states; on success the model collapses to the state found (the
 * unknown commits are resolved).
 * @retval 0  accepted
 * @retval 1  a finding: no accepted state matches, the reads disagree with
 *            each other, or sop_db_check reported something; printed to
 *            stderr with @p what as prefix; the model is unchanged
 * @retval 2  a read failed with *read_rc_out (NULL allowed); unchanged
 */
int crash_model_verify(crash_model *m, sop_db *db, const char *what, int *read_rc_out);

/* Commits acknowledged / checked present by verify, since the model was made. */
uint64_t crash_model_acked(const crash_model *m);
uint64_t crash_model_checked(const crash_model *m);

/* ---- Part 3: the random workload -------------------------------------------- */

typedef struct crash_workload_stats {
    uint64_t opens, commits, acked, aborts, failures, checkpoints, closes;
    uint64_t failed_commits; /* sop_txn_commit returned an error */
    uint32_t rc_seen;        /* bit -rc set for every error code that ended a step */
    int sync_normal;         /* the seed chose SOP_SYNC_NORMAL */
    uint64_t crash_reopens;  /* process crashes (no sync) followed by an open */
    int last_rc;             /* the first error (a positive value: a call returned
                              * something that is not a SOP_* code), else SOP_OK */
    const char *last_call;   /* the call that returned it */
    char last_msg[256];      /* sop_errmsg() right after it */
} crash_workload_stats;

/* crash_workload_run flags:
 *   CRASH_WL_SCRIPT           start with the scripted full lifecycle;
 *   CRASH_WL_MAY_SYNC_NORMAL  the seed may pick SOP_SYNC_NORMAL;
 *   CRASH_WL_CONTINUE         go on after an error (transient faults): reopen
 *                             if the handle is gone; stop only at SOP_PANIC
 *                             or a failed reopen;
 *   CRASH_WL_FAULTS           calls fail on purpose: the checks after each
 *                             open skip sop_db_check (it would report the
 *                             injected failures); the caller's final verify
 *                             runs it. */
#define CRASH_WL_SCRIPT          0x1
#define CRASH_WL_MAY_SYNC_NORMAL 0x2
#define CRASH_WL_CONTINUE        0x4
#define CRASH_WL_FAULTS          0x8

/* crash_workload_run results besides 0: a state found after an open was
 * not accepted; a wrong value or return code, or a close that said
 * transactions were open (details on stderr). */
#define CRASH_WL_BAD_STATE 1
#define CRASH_WL_BAD_RULE  2

/*
 * Open @p dir with @p vfs and run @p txn_count random transactions (with
 * checkpoints, clean reopens and process-crash reopens among them) chosen by
 * @p seed, recording outcomes in @p m. With CRASH_WL_SCRIPT the scripted
 * lifecycle runs first: create stores, writes, commit, checkpoint, close,
 * reopen, commit, process crash, reopen with log replay, store removal,
 * abort, close. Every open is followed by crash_model_verify (recovery must
 * produce an accepted state). The run stops at the first error (a crash VFS
 * makes every call fail after its cut; the error is in @p stats) and closes
 * the handle. Choices depend only on the seed and the model, so a dry run
 * and a cut run agree up to the cut.
 * @retval 0 ran to the end or stopped at an error (see stats->last_rc)
 * @retval CRASH_WL_BAD_STATE, CRASH_WL_BAD_RULE  a finding, on stderr
 */
int crash_workload_run(crash_model *m, const char *dir, const sop_vfs *vfs, uint64_t seed,
                       int txn_count, int flags, crash_workload_stats *stats);

#endif
