/*
 * os_posix.c - the default VFS (sop_vfs_posix): POSIX file calls, open file
 * description locks, CLOCK_MONOTONIC and getrandom.
 *
 * It follows the VFS contract (V1)-(V8) in include/sop_sys.h. In particular:
 *   - every failure returns a SOP_* code and records "<call> <path>[ at
 *     <off>]: <strerror>" plus the errno (sop_errmsg/sop_os_errno);
 *   - pread/pwrite loop over short transfers and EINTR, at most 1 GiB per
 *     system call; offsets above INT64_MAX are SOP_INVAL (off_t is signed);
 *   - sync calls fdatasync/fsync exactly once and reports what it returned,
 *     even EINTR: never retried (V3);
 *   - locks are F_OFD_SETLK locks, owned by the open file description, so
 *     closing another descriptor of the same file (by libsop, or by a
 *     library in the same process) cannot drop them, unlike classic fcntl
 *     locks (LMDB's caveat). Linux >= 3.15 has them; this file refuses to
 *     build without them rather than fall back to a weaker lock.
 *
 * Threads: every method may be called from any thread; pread, pwrite, sync,
 * size and lock on one sop_file may run concurrently (no shared file
 * offset). close must not race with other calls on the same file.
 * Linux-specific: OFD locks, getrandom (falls back to /dev/urandom when the
 * system call is missing or filtered).
 */
#include "os.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef F_OFD_SETLK
#error "os_posix.c needs open file description locks (F_OFD_SETLK: Linux 3.15+, _GNU_SOURCE)"
#endif

/* Largest transfer per pread/pwrite call: Linux caps one call near 2 GiB. */
#define POSIX_MAX_IO ((size_t)1 << 30)

typedef struct posix_file {
    sop_file base; /* first member: a sop_file * is a posix_file * */
    int fd;
    char *path; /* as given to open, for error messages */
} posix_file;

/* ============================================================================ */
/* Errors                                                                        */
/* ============================================================================ */

/* strerror_r is the GNU variant (returns char *) on glibc with _GNU_SOURCE and
 * the XSI one (returns int) on musl; _Generic picks the right reading.
 * strerror itself is not thread-safe. */
__attribute__((unused)) static const char *strerror_gnu(char *ret, char *buf)
{
    (void)buf;
    return ret;
}
__attribute__((unused)) static const char *strerror_xsi(int ret, char *buf)
{
    return ret == 0 ? buf : "unknown error";
}
#define ERRNO_TEXT(e, buf)                                                                         \
    _Generic(strerror_r((e), (buf), sizeof(buf)), char *: strerror_gnu, int: strerror_xsi)(       \
        strerror_r((e), (buf), sizeof(buf)), (buf))

/* (V1): the errno -> SOP_* table. */
static int posix_rc(int e)
{
    switch (e) {
    case ENOSPC:
    case EDQUOT:
        return SOP_NOSPC;
    case ENOENT:
        return SOP_NOTFOUND;
    case ENOMEM:
        return SOP_NOMEM;
    default:
        return SOP_IOERR;
    }
}

/* Record "<what>: <strerror(e)>" with errno e and return rc. */
__attribute__((format(printf, 3, 4))) static int posix_fail_rc(int rc, int e, const char *fmt, ...)
{
    char what[384], text[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return sop_vfs_set_error(rc, e, "%s: %s", what, ERRNO_TEXT(e, text));
}

/* Same, with the code taken from the errno table. */
__attribute__((format(printf, 2, 3))) static int posix_fail(int e, const char *fmt, ...)
{
    char what[384], text[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return sop_vfs_set_error(posix_rc(e), e, "%s: %s", what, ERRNO_TEXT(e, text));
}

/* off..off+len must fit in off_t. */
static int posix_check_range(const posix_file *pf, const char *call, uint64_t off, size_t len)
{
    if (off > (uint64_t)INT64_MAX || (uint64_t)len > (uint64_t)INT64_MAX - off)
        return sop_vfs_set_error(SOP_INVAL, 0,
                                 "%s %s at %" PRIu64 ": %zu bytes past the largest offset", call,
                                 pf->path, off, len);
    return SOP_OK;
}

/* ============================================================================ */
/* Files                                                                         */
/* ============================================================================ */

static const sop_vfs posix_vfs;

static int posix_open(sop_file **file_out, const sop_vfs *vfs, const char *path, unsigned flags)
{
    const unsigned known = SOP_VFS_READ | SOP_VFS_WRITE | SOP_VFS_CREATE | SOP_VFS_EXCL;
    posix_file *pf = NULL;
    struct stat st;
    int fd, e, rc;

    *file_out = NULL;
    if ((flags & ~known) || !(flags & (SOP_VFS_READ | SOP_VFS_WRITE)) ||
        ((flags & SOP_VFS_EXCL) && !(flags & SOP_VFS_CREATE)))
        return sop_vfs_set_error(SOP_INVAL, 0, "open %s: bad flags 0x%x", path, flags);

    /* O_NONBLOCK: a FIFO in a file's place must not block the open (V6);
     * it is cleared again below once the file is known to be regular. */
    int oflags = O_CLOEXEC | O_NONBLOCK | ((flags & SOP_VFS_WRITE) ? O_RDWR : O_RDONLY);
    if (flags & SOP_VFS_CREATE)
        oflags |= O_CREAT;
    if (flags & SOP_VFS_EXCL)
        oflags |= O_EXCL;

    pf = sop_malloc(sizeof *pf);
    char *path_copy = sop_strdup(path);
    if (!pf || !path_copy) {
        sop_free(pf);
        sop_free(path_copy);
        return sop_vfs_set_error(SOP_NOMEM, 0, "open %s: out of memory", path);
    }

    do
        fd = open(path, oflags, 0644);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        e = errno;
        if (e == EEXIST && (flags & SOP_VFS_EXCL))
            rc = posix_fail_rc(SOP_KEYEXIST, e, "open %s", path);
        else
            rc = posix_fail(e, "open %s", path);
        goto fail;
    }
    /* (V6) O_RDONLY opens a directory; pread would then fail much later. */
    if (fstat(fd, &st) != 0) {
        e = errno;
        rc = posix_fail(e, "fstat %s", path);
        close(fd); /* the fstat error is the one to report */
        goto fail;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = posix_fail_rc(SOP_IOERR, EISDIR, "open %s", path);
        close(fd); /* read-only directory descriptor: nothing to lose */
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        /* (V6) A FIFO would block or feed us another process's bytes, a
         * device (/dev/zero through a symlink) reads as endless zeros:
         * libsop creates only regular files, so this is a damaged folder. */
        const char *kind = S_ISFIFO(st.st_mode)   ? "a FIFO"
                           : S_ISCHR(st.st_mode)  ? "a character device"
                           : S_ISBLK(st.st_mode)  ? "a block device"
                           : S_ISSOCK(st.st_mode) ? "a socket"
                                                  : "not a file";
        rc = sop_vfs_set_error(SOP_CORRUPT, EINVAL, "open %s: %s, not a regular file", path, kind);
        close(fd); /* nothing was written through it */
        goto fail;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl == -1 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) == -1) {
        e = errno;
        rc = posix_fail(e, "fcntl %s", path);
        close(fd);
        goto fail;
    }

    /* The caller's table, not posix_vfs: a test may copy this table and
     * replace one method (sync, say); its files must then use the copy. */
    pf->base.vfs = vfs ? vfs : &posix_vfs;
    pf->fd = fd;
    pf->path = path_copy;
    *file_out = &pf->base;
    return SOP_OK;

fail:
    sop_free(path_copy);
    sop_free(pf);
    return rc;
}

static int posix_close(sop_file *file)
{
    posix_file *pf = (posix_file *)file;
    int rc = SOP_OK;
    if (!pf)
        return SOP_OK;
    /* Linux closes the descriptor even when close fails (EINTR included), so
     * it is never retried: a retry could close a descriptor another thread
     * just opened. EINTR loses nothing (no data is flushed at close on local
     * file systems); other errors (EIO from NFS) are reported. */
    if (close(pf->fd) != 0 && errno != EINTR) {
        int e = errno;
        rc = posix_fail(e, "close %s", pf->path);
    }
    sop_free(pf->path);
    sop_free(pf);
    return rc;
}

static int posix_pread(sop_file *file, void *buf, size_t len, uint64_t off, size_t *got_out)
{
    posix_file *pf = (posix_file *)file;
    size_t done = 0;
    int rc;

    *got_out = 0;
    if ((rc = posix_check_range(pf, "pread", off, len)) != SOP_OK)
        return rc;
    while (done < len) {
        size_t chunk = len - done < POSIX_MAX_IO ? len - done : POSIX_MAX_IO;
        ssize_t n = pread(pf->fd, (uint8_t *)buf + done, chunk, (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            *got_out = done;
            return posix_fail(e, "pread %s at %" PRIu64, pf->path, off + done);
        }
        if (n == 0)
            break; /* end of file (V2) */
        done += (size_t)n;
    }
    *got_out = done;
    return SOP_OK;
}

static int posix_pwrite(sop_file *file, const void *buf, size_t len, uint64_t off)
{
    posix_file *pf = (posix_file *)file;
    size_t done = 0;
    int rc;

    if ((rc = posix_check_range(pf, "pwrite", off, len)) != SOP_OK)
        return rc;
    while (done < len) {
        size_t chunk = len - done < POSIX_MAX_IO ? len - done : POSIX_MAX_IO;
        ssize_t n = pwrite(pf->fd, (const uint8_t *)buf + done, chunk, (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            return posix_fail(e, "pwrite %s at %" PRIu64, pf->path, off + done);
        }
        if (n == 0) /* not seen on regular files; looping would spin */
            return sop_vfs_set_error(SOP_IOERR, 0, "pwrite %s at %" PRIu64 ": no progress",
                                     pf->path, off + done);
        done += (size_t)n;
    }
    return SOP_OK;
}

static int posix_sync(sop_file *file, int data_only)
{
    posix_file *pf = (posix_file *)file;
    /* Exactly one call, whatever it returns (V3). */
    int r = data_only ? fdatasync(pf->fd) : fsync(pf->fd);
    if (r != 0) {
        int e = errno;
        return posix_fail(e, "%s %s", data_only ? "fdatasync" : "fsync", pf->path);
    }
    return SOP_OK;
}

static int posix_truncate(sop_file *file, uint64_t size)
{
    posix_file *pf = (posix_file *)file;
    int r;
    if (size > (uint64_t)INT64_MAX)
        return sop_vfs_set_error(SOP_INVAL, 0, "ftruncate %s to %" PRIu64 ": too large", pf->path,
                                 size);
    do /* setting a length is idempotent, so EINTR may be retried */
        r = ftruncate(pf->fd, (off_t)size);
    while (r != 0 && errno == EINTR);
    if (r != 0) {
        int e = errno;
        return posix_fail(e, "ftruncate %s to %" PRIu64, pf->path, size);
    }
    return SOP_OK;
}

static int posix_size(sop_file *file, uint64_t *size_out)
{
    posix_file *pf = (posix_file *)file;
    struct stat st;
    *size_out = 0;
    if (fstat(pf->fd, &st) != 0) {
        int e = errno;
        return posix_fail(e, "fstat %s", pf->path);
    }
    *size_out = (uint64_t)st.st_size;
    return SOP_OK;
}

static int posix_lock(sop_file *file, int mode)
{
    posix_file *pf = (posix_file *)file;
    struct flock fl;
    const char *mode_name;
    int r;

    memset(&fl, 0, sizeof fl); /* l_pid must be 0 for OFD locks */
    switch (mode) {
    case SOP_VFS_LOCK_SHARED:
        fl.l_type = F_RDLCK;
        mode_name = "shared";
        break;
    case SOP_VFS_LOCK_EXCL:
        fl.l_type = F_WRLCK;
        mode_name = "exclusive";
        break;
    case SOP_VFS_UNLOCK:
        fl.l_type = F_UNLCK;
        mode_name = "unlock";
        break;
    default:
        return sop_vfs_set_error(SOP_INVAL, 0, "lock %s: bad mode %d", pf->path, mode);
    }
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 0; /* whole file, however large it grows */
    do
        r = fcntl(pf->fd, F_OFD_SETLK, &fl);
    while (r != 0 && errno == EINTR);
    if (r != 0) {
        int e = errno;
        if (e == EAGAIN || e == EACCES)
            return sop_vfs_set_error(SOP_BUSY, e, "lock %s %s: held through another open file",
                                     mode_name, pf->path);
        return posix_fail(e, "lock %s %s", mode_name, pf->path);
    }
    return SOP_OK;
}

/* ============================================================================ */
/* Paths and directories                                                         */
/* ============================================================================ */

static int posix_unlink(const sop_vfs *vfs, const char *path)
{
    (void)vfs;
    if (unlink(path) != 0) {
        int e = errno;
        return posix_fail(e, "unlink %s", path);
    }
    return SOP_OK;
}

static int posix_rename(const sop_vfs *vfs, const char *from, const char *to)
{
    (void)vfs;
    if (rename(from, to) != 0) {
        int e = errno;
        return posix_fail(e, "rename %s to %s", from, to);
    }
    return SOP_OK;
}

static int posix_mkdir(const sop_vfs *vfs, const char *path)
{
    (void)vfs;
    if (mkdir(path, 0755) != 0) {
        int e = errno;
        if (e == EEXIST)
            return posix_fail_rc(SOP_KEYEXIST, e, "mkdir %s", path);
        return posix_fail(e, "mkdir %s", path);
    }
    return SOP_OK;
}

static int posix_sync_dir(const sop_vfs *vfs, const char *path)
{
    int fd, rc = SOP_OK;
    (void)vfs;
    do
        fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        int e = errno;
        return posix_fail(e, "open directory %s", path);
    }
    /* Reported as is, never retried (V3); a file system that cannot sync
     * directories (EINVAL) is reported too: the caller relies on it. */
    if (fsync(fd) != 0) {
        int e = errno;
        rc = posix_fail(e, "fsync directory %s", path);
    }
    close(fd); /* read-only descriptor: its close cannot lose data */
    return rc;
}

static int posix_list_dir(const sop_vfs *vfs, const char *path,
                          int (*cb)(const char *name, void *cb_ctx), void *cb_ctx)
{
    DIR *dir;
    int rc = SOP_OK;
    (void)vfs;
    if (!(dir = opendir(path))) {
        int e = errno;
        return posix_fail(e, "opendir %s", path);
    }
    for (;;) {
        errno = 0;
        struct dirent *ent = readdir(dir);
        if (!ent) {
            if (errno != 0) {
                int e = errno;
                rc = posix_fail(e, "readdir %s", path);
            }
            break;
        }
        const char *name = ent->d_name;
        if (name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0')))
            continue;
        if ((rc = cb(name, cb_ctx)) != 0)
            break;
    }
    closedir(dir); /* read-only stream: nothing to lose if it fails */
    return rc;
}

static int posix_stat(const sop_vfs *vfs, const char *path, int *is_dir_out, uint64_t *size_out)
{
    struct stat st;
    (void)vfs;
    if (is_dir_out)
        *is_dir_out = 0;
    if (size_out)
        *size_out = 0;
    if (stat(path, &st) != 0) {
        int e = errno;
        return posix_fail(e, "stat %s", path);
    }
    if (is_dir_out)
        *is_dir_out = S_ISDIR(st.st_mode) ? 1 : 0;
    if (size_out)
        *size_out = (uint64_t)st.st_size;
    return SOP_OK;
}

static int posix_symlink(const sop_vfs *vfs, const char *target, const char *link_path)
{
    (void)vfs;
    if (symlink(target, link_path) != 0) {
        int e = errno;
        if (e == EEXIST)
            return posix_fail_rc(SOP_KEYEXIST, e, "symlink %s -> %s", link_path, target);
        return posix_fail(e, "symlink %s -> %s", link_path, target);
    }
    return SOP_OK;
}

static int posix_readlink(const sop_vfs *vfs, const char *link_path, char *buf, size_t cap,
                          size_t *len_out)
{
    (void)vfs;
    if (len_out)
        *len_out = 0;
    if (cap == 0)
        return sop_vfs_set_error(SOP_INVAL, 0, "readlink %s: empty buffer", link_path);
    ssize_t n = readlink(link_path, buf, cap);
    if (n < 0) {
        int e = errno;
        buf[0] = '\0';
        return posix_fail(e, "readlink %s", link_path);
    }
    if ((size_t)n >= cap) { /* no room for the NUL: possibly truncated (V5) */
        buf[0] = '\0';
        return sop_vfs_set_error(SOP_INVAL, 0, "readlink %s: target longer than %zu bytes",
                                 link_path, cap - 1);
    }
    buf[n] = '\0';
    if (len_out)
        *len_out = (size_t)n;
    return SOP_OK;
}

/* ============================================================================ */
/* Clock and randomness                                                          */
/* ============================================================================ */

static uint64_t posix_monotonic_ns(const sop_vfs *vfs)
{
    struct timespec ts;
    (void)vfs;
    /* CLOCK_MONOTONIC cannot fail on Linux (valid clock id, valid pointer). */
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int posix_random_urandom(uint8_t *buf, size_t len)
{
    size_t done = 0;
    int fd, rc = SOP_OK;
    do
        fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        int e = errno;
        return posix_fail(e, "open /dev/urandom");
    }
    while (done < len) {
        ssize_t n = read(fd, buf + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            rc = posix_fail(e, "read /dev/urandom");
            break;
        }
        done += (size_t)n;
    }
    close(fd); /* read-only descriptor */
    return rc;
}

static int posix_random(const sop_vfs *vfs, void *buf, size_t len)
{
    uint8_t *p = buf;
    size_t done = 0;
    (void)vfs;
    while (done < len) {
        /* Requests over 256 bytes may return short if a signal arrives. */
        ssize_t n = getrandom(p + done, len - done, 0);
        if (n < 0) {
            int e = errno;
            if (e == EINTR)
                continue;
            if (e == ENOSYS || e == EPERM) /* old kernel, or a seccomp filter */
                return posix_random_urandom(p + done, len - done);
            return posix_fail(e, "getrandom %zu bytes", len - done);
        }
        done += (size_t)n;
    }
    return SOP_OK;
}

/* ============================================================================ */
/* The table                                                                     */
/* ============================================================================ */

static const sop_vfs posix_vfs = {
    .version = SOP_VFS_VERSION,
    .name = "posix",
    .ctx = NULL,
    .open = posix_open,
    .close = posix_close,
    .pread = posix_pread,
    .pwrite = posix_pwrite,
    .sync = posix_sync,
    .truncate = posix_truncate,
    .size = posix_size,
    .lock = posix_lock,
    .unlink = posix_unlink,
    .rename = posix_rename,
    .mkdir = posix_mkdir,
    .sync_dir = posix_sync_dir,
    .list_dir = posix_list_dir,
    .stat = posix_stat,
    .symlink = posix_symlink,
    .readlink = posix_readlink,
    .monotonic_ns = posix_monotonic_ns,
    .random = posix_random,
};

const sop_vfs *sop_vfs_posix(void)
{
    return &posix_vfs;
}
