/*
 * os.h - the engine's side of the VFS: short call-throughs to a sop_file's
 * methods, and the rules every sop_vfs implementation (os_posix.c, test
 * VFS layers) follows beyond the comments in include/sop_sys.h.
 *
 * Contract of a VFS method (os_posix.c is the reference):
 *   (V1) It returns a SOP_* code, never an errno, and records a one-line
 *        detail naming the path (and offset) with sop_vfs_set_error(), with
 *        the OS errno for sop_os_errno(). Mapping: ENOSPC, EDQUOT ->
 *        SOP_NOSPC; ENOENT -> SOP_NOTFOUND; ENOMEM -> SOP_NOMEM; EEXIST on
 *        open(CREATE|EXCL), mkdir and symlink -> SOP_KEYEXIST; a conflicting
 *        lock -> SOP_BUSY; not a regular file -> SOP_CORRUPT (V6); anything
 *        else -> SOP_IOERR. Bad flags -> SOP_INVAL.
 *   (V2) pread loops over short reads and EINTR; it stops short only at end
 *        of file, with SOP_OK and *got_out < len. pwrite writes all bytes or
 *        fails.
 *   (V3) sync is called once per failure: a failed fsync is never retried
 *        (the kernel may have dropped the dirty pages and a second call can
 *        report success without the data). The caller panics the handle.
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
 */
#ifndef SOP_OS_H
#define SOP_OS_H

#include "sop_int.h"

#include <inttypes.h>

/* The VFS to use: @p vfs, or the POSIX one when NULL (sop_db_options.vfs). */
static inline const sop_vfs *sop_os_vfs_or_default(const sop_vfs *vfs)
{
    return vfs ? vfs : sop_vfs_posix();
}

static inline int sop_file_open(sop_file **file_out, const sop_vfs *vfs, const char *path,
                                unsigned flags)
{
    return vfs->open(file_out, vfs, path, flags);
}

/* NULL-safe; reports a failed close (the file is closed either way). */
static inline int sop_file_close(sop_file *file)
{
    return file ? file->vfs->close(file) : SOP_OK;
}

static inline int sop_file_pread(sop_file *file, void *buf, size_t len, uint64_t off,
                                 size_t *got_out)
{
    return file->vfs->pread(file, buf, len, off, got_out);
}

/* Read exactly len bytes at off; a short read is SOP_CORRUPT (the caller
 * expected the bytes to be there: a torn or truncated file). */
static inline int sop_file_pread_full(sop_file *file, void *buf, size_t len, uint64_t off,
                                      const char *what)
{
    size_t got = 0;
    int rc = file->vfs->pread(file, buf, len, off, &got);
    if (rc != SOP_OK)
        return rc;
    if (got != len)
        return SOP_CORRUPT_BKPT("%s: %zu of %zu bytes at %" PRIu64 " before end of file", what, got,
                                len, off);
    return SOP_OK;
}

static inline int sop_file_pwrite(sop_file *file, const void *buf, size_t len, uint64_t off)
{
    return file->vfs->pwrite(file, buf, len, off);
}

/* See (V3): a failure here is final for the file's data. */
static inline int sop_file_sync(sop_file *file, int data_only)
{
    return file->vfs->sync(file, data_only);
}

static inline int sop_file_truncate(sop_file *file, uint64_t size)
{
    return file->vfs->truncate(file, size);
}

static inline int sop_file_size(sop_file *file, uint64_t *size_out)
{
    return file->vfs->size(file, size_out);
}

/* mode: SOP_VFS_LOCK_SHARED, SOP_VFS_LOCK_EXCL or SOP_VFS_UNLOCK; see (V4). */
static inline int sop_file_lock(sop_file *file, int mode)
{
    return file->vfs->lock(file, mode);
}

#endif /* SOP_OS_H */
