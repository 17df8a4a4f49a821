/*
 * os.h - the engine's side of the VFS: short call-throughs to a sop_file's
 * methods.
 *
 * The contract of a VFS method, (V1)-(V8), is in include/sop_sys.h, for
 * whoever implements one; os_posix.c is the reference implementation.
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
