/*
 * vfs_fault.h - a fault-injecting VFS for tests: it wraps another sop_vfs
 * (the POSIX one by default), counts the calls of every method, and fails
 * the Nth call of any method, or of one chosen method, the way SQLite's
 * src/test_vfs.c does (FAULT_INJECT_TRANSIENT / _PERSISTENT).
 *
 * What an injected failure does:
 *   - FAULT_ERROR: the call returns the armed code (SOP_IOERR or SOP_NOSPC)
 *     without reaching the wrapped VFS. close still closes the real file
 *     (the contract: "the file is gone either way") and reports the code.
 *   - FAULT_SHORT_WRITE: on pwrite, the first half of the bytes (rounded
 *     down to a 512-byte sector when the write is larger than one sector)
 *     really reach the file, then the call fails; on any other method it is
 *     FAULT_ERROR.
 *   - FAULT_TRANSIENT fails the Nth matching call only; FAULT_PERSISTENT
 *     fails the Nth and every later matching call until disarmed.
 *
 * Counting: calls are numbered from 1 per fault_vfs since the last
 * fault_vfs_reset(); FAULT_ANY counts every method except monotonic_ns
 * (it cannot fail). A sweep therefore looks like:
 *
 *   for (n = 1;; n++) {
 *       fault_vfs_arm(fv, FAULT_ANY, n, FAULT_PERSISTENT, FAULT_ERROR, SOP_IOERR);
 *       run(fault_vfs_vfs(fv));
 *       if (!fault_vfs_fired(fv)) break;      // the run never reached call n
 *   }
 *
 * Threads: every method may be called from any thread (counters are under a
 * mutex); arming and reading counters while calls run is allowed.
 */
#ifndef SOP_TEST_VFS_FAULT_H
#define SOP_TEST_VFS_FAULT_H

#include <stdint.h>

#include "sop_sys.h"

typedef enum fault_method {
    FAULT_ANY = 0, /* match every counted method */
    FAULT_OPEN,
    FAULT_CLOSE,
    FAULT_PREAD,
    FAULT_PWRITE,
    FAULT_SYNC,
    FAULT_TRUNCATE,
    FAULT_SIZE,
    FAULT_LOCK,
    FAULT_UNLINK,
    FAULT_RENAME,
    FAULT_MKDIR,
    FAULT_SYNC_DIR,
    FAULT_LIST_DIR,
    FAULT_STAT,
    FAULT_SYMLINK,
    FAULT_READLINK,
    FAULT_RANDOM,
    FAULT_METHOD_COUNT
} fault_method;

typedef enum fault_mode {
    FAULT_TRANSIENT = 0, /* only the Nth matching call fails */
    FAULT_PERSISTENT = 1 /* the Nth and every later matching call fail */
} fault_mode;

typedef enum fault_kind {
    FAULT_ERROR = 0,      /* return the code, nothing done */
    FAULT_SHORT_WRITE = 1 /* pwrite: write a prefix, then return the code */
} fault_kind;

typedef struct fault_vfs fault_vfs;

/* A new fault VFS over @p base (NULL = sop_vfs_posix()), disarmed, counters
 * at 0. Returns NULL when out of memory. Free with fault_vfs_free after
 * every sop_db using it is closed. */
fault_vfs *fault_vfs_new(const sop_vfs *base);
void fault_vfs_free(fault_vfs *fv);

/* The table to put in sop_db_options.vfs. */
const sop_vfs *fault_vfs_vfs(fault_vfs *fv);

/* Fail the @p n-th call (from 1) of @p method with @p rc (SOP_IOERR,
 * SOP_NOSPC, ...), counting from now: arming zeroes every counter. */
void fault_vfs_arm(fault_vfs *fv, fault_method method, uint64_t n, fault_mode mode, fault_kind kind,
                   int rc);
/* Stop injecting; counters keep running. */
void fault_vfs_disarm(fault_vfs *fv);
/* Number of calls failed by injection since the last arm. */
uint64_t fault_vfs_fired(const fault_vfs *fv);
/* Calls of @p method (FAULT_ANY: of all methods) since the last reset. */
uint64_t fault_vfs_calls(const fault_vfs *fv, fault_method method);
/* Zero every counter (does not disarm). */
void fault_vfs_reset(fault_vfs *fv);

/* @p on = 0: sync and sync_dir are counted and can fail, but do not reach
 * the disk (fast sweeps: nothing here simulates power loss, so durability
 * is not what they test). Default 1. */
void fault_vfs_set_real_sync(fault_vfs *fv, int on);

/* "pwrite", "sync", ... for messages. */
const char *fault_method_name(fault_method method);

/*
 * Allocations (sop_set_allocator): a counting allocator that can fail the
 * Nth allocation, as SQLite's src/test_malloc.c does, and knows how many
 * blocks and bytes libsop holds, so a test can assert "no leak" after each
 * case by itself (not only through LeakSanitizer at exit). Each block gets
 * a 16-byte header (size, magic); a free of a block it did not allocate
 * aborts. Counting covers malloc and realloc calls (a realloc that grows or
 * moves may fail; realloc(p, n) of a live block counts as one call).
 * Install before any libsop call or while no sop_db is open, as
 * sop_set_allocator requires; keep it installed until every block it made
 * is freed (uninstall refuses otherwise and returns -1).
 */
void fault_alloc_install(void);
int fault_alloc_uninstall(void);
/* Fail the @p n-th allocation from now (n >= 1), counting from 0 again. */
void fault_alloc_arm(uint64_t n, fault_mode mode);
void fault_alloc_disarm(void);
/* Allocations failed since the last arm. */
uint64_t fault_alloc_fired(void);
/* Allocation calls since the last arm (or install). */
uint64_t fault_alloc_calls(void);
/* Blocks / bytes allocated through the hook and not yet freed. */
uint64_t fault_alloc_live(void);
uint64_t fault_alloc_live_bytes(void);
/* The most bytes live at once since install or the last reset_peak. */
uint64_t fault_alloc_peak_bytes(void);
void fault_alloc_reset_peak(void);

#endif
