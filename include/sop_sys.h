/*
 * sop_sys.h - libsop plug-in interfaces: the VFS table and the allocator.
 *
 * Every file-system call, clock read and random byte libsop uses goes
 * through a sop_vfs, so tests can fail the Nth call, drop unsynced writes
 * (power loss) or run on an in-memory file system. Implementations return
 * SOP_* codes (never errno) and record detail with sop_vfs_set_error().
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

struct sop_vfs {
    uint32_t version; /**< SOP_VFS_VERSION */
    const char *name;
    void *ctx;        /**< implementation data */

    /** Open @p path. SOP_NOTFOUND if missing and not CREATE. */
    int (*open)(sop_file **file_out, const sop_vfs *vfs, const char *path, unsigned flags);
    /** Close; the return value reports a failed close (the file is gone either way). */
    int (*close)(sop_file *file);
    /** Read up to len bytes at off; *got_out < len only at end of file. */
    int (*pread)(sop_file *file, void *buf, size_t len, uint64_t off, size_t *got_out);
    /** Write all len bytes at off (loops over short writes) or fail. */
    int (*pwrite)(sop_file *file, const void *buf, size_t len, uint64_t off);
    /** fdatasync (data_only) or fsync. A failure must be treated as fatal. */
    int (*sync)(sop_file *file, int data_only);
    int (*truncate)(sop_file *file, uint64_t size);
    int (*size)(sop_file *file, uint64_t *size_out);
    /** Non-blocking lock; SOP_BUSY when another holder conflicts. */
    int (*lock)(sop_file *file, int mode);

    int (*unlink)(const sop_vfs *vfs, const char *path);
    /** Atomic rename, replacing @p to. */
    int (*rename)(const sop_vfs *vfs, const char *from, const char *to);
    /** SOP_KEYEXIST if it already exists. */
    int (*mkdir)(const sop_vfs *vfs, const char *path);
    /** fsync a directory so entries created/renamed/removed in it are durable. */
    int (*sync_dir)(const sop_vfs *vfs, const char *path);
    /** Call cb for every entry of the directory except "." and ".."; a
     *  non-zero cb return stops the walk and is returned. */
    int (*list_dir)(const sop_vfs *vfs, const char *path,
                    int (*cb)(const char *name, void *cb_ctx), void *cb_ctx);
    /** SOP_NOTFOUND if missing; *is_dir_out set otherwise. */
    int (*stat)(const sop_vfs *vfs, const char *path, int *is_dir_out, uint64_t *size_out);
    /** Create a symbolic link (exclusive: SOP_KEYEXIST) - for clustered mode. */
    int (*symlink)(const sop_vfs *vfs, const char *target, const char *link_path);
    int (*readlink)(const sop_vfs *vfs, const char *link_path, char *buf, size_t cap,
                    size_t *len_out);

    /** Monotonic clock in nanoseconds. */
    uint64_t (*monotonic_ns)(const sop_vfs *vfs);
    /** Fill buf with random bytes (db ids). */
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
