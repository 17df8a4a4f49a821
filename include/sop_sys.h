/*
 * sop_sys.h - libsop plug-in interfaces: the VFS table, the L2 node cache
 * and the allocator.
 *
 * Every file-system call, clock read and random byte libsop uses goes
 * through a sop_vfs, so tests can fail the Nth call, drop unsynced writes
 * (power loss) or run on an in-memory file system. Implementations return
 * SOP_* codes (never errno) and record detail with sop_vfs_set_error();
 * the whole contract is (V1)-(V8) below, every method is described in
 * struct sop_vfs. A second-level node cache shared between processes
 * (Redis, for one) plugs in through sop_l2_cache: contract (H1)-(H5).
 */
#ifndef SOP_SYS_H
#define SOP_SYS_H

#include "sop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sop_vfs sop_vfs;

/** An open file. VFS implementations embed this as their first member. */
typedef struct sop_file {
    const sop_vfs *vfs; /**< the VFS that opened it; its methods are used */
} sop_file;

/* open flags */
#define SOP_VFS_READ   0x1u /**< open for reading only */
#define SOP_VFS_WRITE  0x2u /**< open for reading and writing */
#define SOP_VFS_CREATE 0x4u /**< create if missing */
#define SOP_VFS_EXCL   0x8u /**< with CREATE: fail with SOP_KEYEXIST if it exists */

/* lock modes (advisory, whole file, non-blocking, per open file) */
#define SOP_VFS_LOCK_SHARED 1
#define SOP_VFS_LOCK_EXCL   2
#define SOP_VFS_UNLOCK      0

/*
 * The contract of every sop_vfs implementation (sop_vfs_posix() is the
 * reference; tests/test_os.c checks it). libsop's durability promises hold
 * only if a VFS keeps it.
 *
 *   (V1) A method returns a SOP_* code, never an errno, and records a
 *        one-line detail naming the path (and offset) with
 *        sop_vfs_set_error(), with the OS errno for sop_os_errno(). Mapping:
 *        ENOSPC, EDQUOT -> SOP_NOSPC; ENOENT -> SOP_NOTFOUND; ENOMEM ->
 *        SOP_NOMEM; EEXIST on open(CREATE|EXCL), mkdir and symlink ->
 *        SOP_KEYEXIST; a conflicting lock -> SOP_BUSY; not a regular file ->
 *        SOP_CORRUPT (V6); anything else -> SOP_IOERR. Bad flags -> SOP_INVAL.
 *   (V2) pread loops over short reads and EINTR; it stops short only at end
 *        of file, with SOP_OK and *got_out < len. pwrite writes all bytes or
 *        fails.
 *   (V3) sync is called once per failure: a failed fsync is never retried
 *        (the kernel may have dropped the dirty pages and a second call can
 *        report success without the data). libsop then panics the handle
 *        (SOP_PANIC). A sync that returns SOP_OK has made durable every
 *        byte written to the file before the call began.
 *   (V4) lock is whole-file, advisory, non-blocking and owned by the open
 *        file (POSIX: an OFD lock), not the process: two sop_files of the
 *        same path conflict even in one process, and closing one sop_file
 *        never drops a lock held through another. SOP_VFS_LOCK_EXCL needs a
 *        file opened with SOP_VFS_WRITE. Closing a file releases its lock.
 *   (V5) readlink writes the target plus a terminating NUL into buf and sets
 *        *len_out to the target's length; a target that does not fit in
 *        cap - 1 bytes gives SOP_INVAL. stat follows symlinks; size_out and
 *        is_dir_out may be NULL.
 *   (V6) Files are opened close-on-exec; open refuses a directory
 *        (SOP_IOERR, EISDIR) and anything else that is not a regular file,
 *        symlinks followed (a FIFO, a device, a socket: SOP_CORRUPT, the
 *        message naming the path and what it is), without blocking on a
 *        FIFO. So every sop_file is a regular file: libsop creates no
 *        other kind, and one of its names holding another is damage.
 *   (V7) Threads: the table and its ctx are shared by every thread of
 *        every sop_db using it. On one sop_file libsop calls pread from
 *        several threads at once, also while another thread pwrites
 *        elsewhere in the file (appends) or syncs it; it never reads bytes
 *        that a write in progress covers. close, truncate and lock of a
 *        file never run concurrently with another call on that file. The
 *        path methods may run concurrently with anything.
 *   (V8) Paths are NUL-terminated, absolute or relative to the process's
 *        working directory as given to sop_db_open, and are only read
 *        during the call. libsop passes only names it created (or the
 *        folder's own entries from list_dir).
 */

struct sop_vfs {
    uint32_t version; /**< SOP_VFS_VERSION; methods are only ever appended,
                       *   and a libsop calls only those the version has */
    const char *name; /**< for messages; NUL-terminated, static */
    void *ctx;        /**< implementation data, for the methods only */

    /** Open @p path with SOP_VFS_* flags (READ or WRITE, optionally CREATE,
     *  EXCL). On SOP_OK *file_out is a file whose first member is a sop_file
     *  with vfs set to @p vfs; on failure *file_out is untouched or NULL.
     *  SOP_NOTFOUND if missing and not CREATE; SOP_KEYEXIST for CREATE|EXCL
     *  of an existing file; (V6) for anything but a regular file. A file
     *  created here need not be durable until sync_dir of its folder. */
    int (*open)(sop_file **file_out, const sop_vfs *vfs, const char *path, unsigned flags);
    /** Close and free @p file (never NULL), releasing its lock (V4). The
     *  file is gone whatever the result; a failure only reports that the
     *  OS close failed (libsop has synced what it needs before). */
    int (*close)(sop_file *file);
    /** Read up to @p len bytes at @p off into @p buf; *got_out gets the
     *  number read, < len only at end of file (V2). A read past the end is
     *  SOP_OK with *got_out 0. */
    int (*pread)(sop_file *file, void *buf, size_t len, uint64_t off, size_t *got_out);
    /** Write all @p len bytes at @p off (extending the file, holes read as
     *  zeros) or fail; after a failure the bytes in the range are
     *  unspecified. Durable only after sync. */
    int (*pwrite)(sop_file *file, const void *buf, size_t len, uint64_t off);
    /** Make the file's written bytes durable: fdatasync when @p data_only
     *  (the size too, if it grew), else fsync (metadata as well). Called
     *  once per failure, never retried (V3); SOP_OK covers every write that
     *  returned before the call. */
    int (*sync)(sop_file *file, int data_only);
    /** Set the file's size to @p size (shrink, or grow with zeros). Durable
     *  after sync. */
    int (*truncate)(sop_file *file, uint64_t size);
    /** The file's current size in bytes, writes that returned included. */
    int (*size)(sop_file *file, uint64_t *size_out);
    /** Take (SOP_VFS_LOCK_SHARED / _EXCL) or drop (SOP_VFS_UNLOCK) the
     *  file's lock, without blocking: SOP_BUSY when another open file holds
     *  a conflicting one (V4). libsop locks LOCK in the database folder to
     *  keep one handle per folder across processes. */
    int (*lock)(sop_file *file, int mode);

    /** Remove the name @p path (a file). SOP_NOTFOUND if missing. Durable
     *  after sync_dir of its folder. */
    int (*unlink)(const sop_vfs *vfs, const char *path);
    /** Rename @p from to @p to atomically, replacing @p to: any later
     *  reader sees either the old or the new file under @p to, never none
     *  or a mix (checkpoint manifests and FORMAT rely on it). Durable after
     *  sync_dir of the folder. */
    int (*rename)(const sop_vfs *vfs, const char *from, const char *to);
    /** Create the folder @p path (parents must exist). SOP_KEYEXIST if it
     *  already exists; SOP_NOTFOUND if a parent is missing. */
    int (*mkdir)(const sop_vfs *vfs, const char *path);
    /** fsync the folder @p path, so that entries created, renamed or removed
     *  in it before the call are durable. (V3) applies. */
    int (*sync_dir)(const sop_vfs *vfs, const char *path);
    /** Call cb for every entry of the folder except "." and "..", in any
     *  order; a non-zero cb return stops the walk and is returned. The name
     *  passed to cb is valid during the callback only. */
    int (*list_dir)(const sop_vfs *vfs, const char *path,
                    int (*cb)(const char *name, void *cb_ctx), void *cb_ctx);
    /** Whether @p path exists, following symlinks (V5): SOP_NOTFOUND if not;
     *  else *is_dir_out (1 for a folder) and *size_out, each unless NULL. */
    int (*stat)(const sop_vfs *vfs, const char *path, int *is_dir_out, uint64_t *size_out);
    /** Create the symbolic link @p link_path pointing at @p target,
     *  exclusively (SOP_KEYEXIST if the name exists): the commit point of
     *  clustered mode. Not called in standalone mode. */
    int (*symlink)(const sop_vfs *vfs, const char *target, const char *link_path);
    /** Read the target of the link @p link_path into @p buf (cap bytes, NUL
     *  included; see V5). Not called in standalone mode. */
    int (*readlink)(const sop_vfs *vfs, const char *link_path, char *buf, size_t cap,
                    size_t *len_out);

    /** A monotonic clock in nanoseconds (never goes back; any origin): the
     *  transaction time limit. Cannot fail. */
    uint64_t (*monotonic_ns)(const sop_vfs *vfs);
    /** Fill @p buf with @p len random bytes (the database's id, written at
     *  creation): unpredictability is not needed, uniqueness across
     *  databases is. */
    int (*random)(const sop_vfs *vfs, void *buf, size_t len);
};

#define SOP_VFS_VERSION 1

/** The default VFS: POSIX calls, OFD locks, CLOCK_MONOTONIC, getrandom. */
SOP_API const sop_vfs *sop_vfs_posix(void);

/** Record detail for the current thread's sop_errmsg()/sop_os_errno() and
 *  return @p rc. For VFS implementations. */
SOP_API int sop_vfs_set_error(int rc, int os_errno, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* ------------------------------------------------------------------------ */
/* L2 node cache                                                             */
/* ------------------------------------------------------------------------ */

/**
 * The physical ID of a node: where its record is in the log (segment
 * number and byte offset), the record's length on disk and the crc32c of
 * its header. The log is append-only and segment numbers are never reused,
 * so an ID names the same bytes for as long as the database exists.
 */
typedef struct sop_node_id {
    uint64_t segment;
    uint64_t offset;
    uint32_t length; /**< the whole record on disk; the image is shorter */
    uint32_t crc;
} sop_node_id;

/**
 * A second-level cache of node images behind libsop's in-process cache
 * (sop_db_options.l2). libsop asks it for a node before reading the node
 * from disk, and offers it every node it read from disk. The contract:
 *
 *   (H1) Hints only. An image get() returns is used only if its length and
 *        crc match the ID it was asked for and it then validates as a
 *        node; otherwise it is ignored and the node is read from disk. A
 *        wrong, stale or damaged entry costs a disk read, never a wrong
 *        answer, so the cache needs no coherence protocol.
 *   (H2) No invalidation is needed for correctness: an ID never names
 *        other bytes (sop_node_id). invalidate() only says this handle
 *        stopped using a node, so an L2 private to one handle may drop it.
 *        In an L2 shared by several handles an entry may still be wanted
 *        by another.
 *   (H3) Threads: every method may be called from any thread, several at
 *        once, while the sop_db is open. A method must not call libsop
 *        (the calling thread may hold libsop's locks) and should not block
 *        for long: get() runs on the reading thread's path, put() and
 *        invalidate() on a reader's or a committer's.
 *   (H4) Ownership: libsop owns every buffer passed in; a method copies
 *        what it keeps and keeps no pointer after it returns. The table
 *        and ctx must outlive the sop_db.
 *   (H5) Keys: the ID is unique within one database. An L2 shared by
 *        several databases must add its own namespace (in ctx), such as
 *        the folder or the database's id.
 */
typedef struct sop_l2_cache {
    uint32_t version; /**< SOP_L2_CACHE_VERSION; methods are only appended */
    void *ctx;        /**< implementation data, passed to every method */
    /** Copy the image stored under @p id into @p buf (at most @p cap
     *  bytes; cap is enough for any image of that ID) and return its
     *  length, or 0 if there is none. */
    size_t (*get)(void *ctx, const sop_node_id *id, uint8_t *buf, size_t cap);
    /** An image read from disk under @p id and validated: the L2 may keep
     *  a copy of its @p len bytes. May be NULL (a read-only L2). */
    void (*put)(void *ctx, const sop_node_id *id, const uint8_t *image, size_t len);
    /** This handle no longer uses the node at @p id (H2). May be NULL. */
    void (*invalidate)(void *ctx, const sop_node_id *id);
} sop_l2_cache;

#define SOP_L2_CACHE_VERSION 1

/* ------------------------------------------------------------------------ */
/* Allocator                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct sop_allocator {
    void *(*malloc)(size_t size, void *ctx);
    void *(*realloc)(void *ptr, size_t size, void *ctx);
    void (*free)(void *ptr, void *ctx);
    void *ctx;
} sop_allocator;

/** Replace the allocator libsop uses. Call before any other libsop call, or
 *  while no sop_db is open. NULL restores malloc/realloc/free. Not thread-safe. */
SOP_API void sop_set_allocator(const sop_allocator *allocator);

#ifdef __cplusplus
}
#endif
#endif /* SOP_SYS_H */
