/*
 * vfs_crash.c - the power-loss VFS, the crash oracle and the random
 * workload described in vfs_crash.h.
 *
 * Sections: helpers; part 1 (unsynced-state bookkeeping, the VFS methods,
 * computing a post-cut image); part 2 (model states, commits, verify);
 * part 3 (the workload).
 *
 * How a post-cut file image is computed (crash_vfs_apply, per file with
 * unsynced writes):
 *   1. D, the durable image: the current bytes with every unsynced op undone
 *      newest first (each op kept the bytes it displaced).
 *   2. Versions: replay the ops on a copy of D; after op k, snapshot every
 *      512-byte sector op k touched. Sector s then has versions
 *      0 (its bytes in D), k1 < k2 < ... (after each op touching it).
 *   3. The mode picks a version per touched sector and a size among the
 *      sizes the file had (size 0 = D's), the image is D with those sectors
 *      laid over it, and "garbage" replaces the bytes unsynced ops touched
 *      in a sector with random bytes.
 * Sectors no unsynced op touched hold the same bytes in every version, so
 * they are never changed: synced data stays intact (powersafe overwrite).
 */
#include "vfs_crash.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* tests/tutil.h's hook, declared here too: a process crash (no sync). */
int sop_db__crash_close(sop_db *db);

#define SECTOR 512u

/* ============================================================================ */
/* Helpers                                                                       */
/* ============================================================================ */

static uint64_t mix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, n) (n > 0). */
static uint64_t below(uint64_t *state, uint64_t n)
{
    return n ? mix64(state) % n : 0;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "vfs_crash: out of memory (%zu bytes)\n", n);
        abort();
    }
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "vfs_crash: out of memory (%zu bytes)\n", n);
        abort();
    }
    return q;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

static void *xmemdup(const void *p, size_t n)
{
    void *q = xmalloc(n);
    if (n)
        memcpy(q, p, n);
    return q;
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return xstrdup(".");
    size_t n = (size_t)(slash - path);
    char *d = xmalloc(n + 1);
    memcpy(d, path, n);
    d[n] = 0;
    return d;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void rm_rf(const char *path)
{
    nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Read all of fd into *buf_out (malloc'ed); -1 on error. */
static int read_all(int fd, uint8_t **buf_out, uint64_t *len_out)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -1;
    uint64_t len = (uint64_t)st.st_size;
    uint8_t *buf = xmalloc(len);
    uint64_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, buf + done, len - done, (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            free(buf);
            return -1;
        }
        done += (uint64_t)n;
    }
    *buf_out = buf;
    *len_out = len;
    return 0;
}

static int write_all(int fd, const uint8_t *buf, uint64_t len)
{
    uint64_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(fd, buf + done, len - done, (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        done += (uint64_t)n;
    }
    return 0;
}

/* ============================================================================ */
/* Part 1: the power-loss VFS                                                    */
/* ============================================================================ */

typedef struct data_op {
    int is_truncate;
    uint64_t off, len; /* write: the range; truncate: off = the new size */
    uint64_t size_before;
    uint8_t *new_bytes; /* write: len bytes */
    uint8_t *old_bytes; /* the bytes it displaced from [off, size_before) */
    uint64_t old_len;
} data_op;

/* A file (inode) with unsynced writes. */
typedef struct cnode {
    struct cnode *next;
    dev_t dev;
    ino_t ino;
    int fd; /* our own descriptor: valid after renames and unlinks */
    char *path;
    data_op *ops;
    size_t op_count, op_cap;
} cnode;

typedef enum name_kind { NAME_CREATE, NAME_MKDIR, NAME_UNLINK, NAME_RENAME } name_kind;

/* An unsynced change of a directory entry. */
typedef struct name_op {
    name_kind kind;
    char *dir;   /* sync_dir(dir) makes it durable */
    char *path;  /* create/mkdir/unlink: the entry; rename: the new name */
    char *from;  /* rename: the old name */
    char *stash; /* unlink: the file, kept; rename: the replaced target (or NULL) */
} name_op;

struct crash_vfs {
    sop_vfs vfs;
    const sop_vfs *base;
    char *stash_dir;
    uint64_t rng;
    uint64_t arm_at;
    uint64_t mutations;
    int crashed;
    int real_sync;
    uint64_t stash_seq;
    cnode *nodes;
    name_op *names;
    size_t name_count, name_cap;
};

typedef struct crash_file {
    sop_file base; /* first member */
    sop_file *inner;
    int fd; /* our descriptor for bookkeeping; -1 when opened read-only */
    char *path;
} crash_file;

static const char *const mode_names[CRASH_MODE_COUNT] = {"random", "drop", "keep", "prefix",
                                                         "reorder"};

const char *crash_mode_name(crash_mode mode)
{
    return (unsigned)mode < CRASH_MODE_COUNT ? mode_names[mode] : "?";
}

static crash_vfs *cv_of(const sop_vfs *vfs)
{
    return (crash_vfs *)vfs->ctx;
}

static int dead(const char *call)
{
    return sop_vfs_set_error(SOP_IOERR, EIO, "%s: power is off (simulated cut)", call);
}

/* Count a mutating call. 0: go on; 1: this is the cut (the call is the one
 * in flight); -1: the power was already off. */
static int gate(crash_vfs *cv)
{
    if (cv->crashed)
        return -1;
    cv->mutations++;
    if (cv->arm_at && cv->mutations >= cv->arm_at) {
        cv->crashed = 1;
        if (getenv("SOP_CRASH_TRACE"))
            fprintf(stderr, "crash vfs: the power is cut at mutating call %" PRIu64 "\n",
                    cv->mutations);
        return 1;
    }
    return 0;
}

static cnode *node_for(crash_vfs *cv, int fd, const char *path)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return NULL;
    for (cnode *n = cv->nodes; n; n = n->next)
        if (n->dev == st.st_dev && n->ino == st.st_ino)
            return n;
    cnode *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->dev = st.st_dev;
    n->ino = st.st_ino;
    n->fd = dup(fd);
    if (n->fd < 0) {
        free(n);
        return NULL;
    }
    n->path = xstrdup(path);
    n->next = cv->nodes;
    cv->nodes = n;
    return n;
}

static void node_free(cnode *n)
{
    for (size_t i = 0; i < n->op_count; i++) {
        free(n->ops[i].new_bytes);
        free(n->ops[i].old_bytes);
    }
    free(n->ops);
    free(n->path);
    if (n->fd >= 0)
        close(n->fd);
    free(n);
}

/* Bytes [off, off+len) of fd clipped to size: malloc'ed copy. */
static uint8_t *grab(int fd, uint64_t off, uint64_t len, uint64_t *got_len)
{
    uint8_t *b = xmalloc(len);
    uint64_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, b + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        done += (uint64_t)n;
    }
    *got_len = done;
    return b;
}

/* Record a write or truncate before it happens. */
static int record_data(crash_vfs *cv, crash_file *cf, int is_truncate, const void *buf,
                       uint64_t len, uint64_t off)
{
    struct stat st;
    cnode *n = node_for(cv, cf->fd, cf->path);
    if (!n || fstat(n->fd, &st) != 0)
        return -1;
    uint64_t size = (uint64_t)st.st_size;
    if (n->op_count == n->op_cap) {
        n->op_cap = n->op_cap ? n->op_cap * 2 : 8;
        n->ops = xrealloc(n->ops, n->op_cap * sizeof *n->ops);
    }
    data_op *op = &n->ops[n->op_count++];
    memset(op, 0, sizeof *op);
    op->is_truncate = is_truncate;
    op->off = off;
    op->len = is_truncate ? 0 : len;
    op->size_before = size;
    if (!is_truncate)
        op->new_bytes = xmemdup(buf, len);
    uint64_t end = is_truncate ? size : off + len;
    if (end > size)
        end = size;
    if (off < end)
        op->old_bytes = grab(n->fd, off, end - off, &op->old_len);
    return 0;
}

static void name_push(crash_vfs *cv, name_kind kind, const char *path, const char *from,
                      char *stash)
{
    if (cv->name_count == cv->name_cap) {
        cv->name_cap = cv->name_cap ? cv->name_cap * 2 : 16;
        cv->names = xrealloc(cv->names, cv->name_cap * sizeof *cv->names);
    }
    name_op *o = &cv->names[cv->name_count++];
    o->kind = kind;
    o->dir = dir_of(path);
    o->path = xstrdup(path);
    o->from = from ? xstrdup(from) : NULL;
    o->stash = stash;
}

static void name_free(name_op *o)
{
    free(o->dir);
    free(o->path);
    free(o->from);
    free(o->stash);
}

static char *stash_name(crash_vfs *cv)
{
    char *p = xmalloc(strlen(cv->stash_dir) + 32);
    sprintf(p, "%s/%" PRIu64, cv->stash_dir, ++cv->stash_seq);
    return p;
}

/* ---- file methods ----------------------------------------------------------- */

static int c_open(sop_file **file_out, const sop_vfs *vfs, const char *path, unsigned flags)
{
    crash_vfs *cv = cv_of(vfs);
    struct stat st;
    *file_out = NULL;
    int creates = (flags & SOP_VFS_CREATE) && lstat(path, &st) != 0 && errno == ENOENT;
    if (creates) {
        if (gate(cv) != 0)
            return dead("open");
    } else if (cv->crashed) {
        return dead("open");
    }
    crash_file *cf = calloc(1, sizeof *cf);
    if (!cf)
        return sop_vfs_set_error(SOP_NOMEM, ENOMEM, "crash vfs: open %s", path);
    cf->fd = -1;
    int rc = cv->base->open(&cf->inner, cv->base, path, flags);
    if (rc) {
        free(cf);
        return rc;
    }
    if (flags & SOP_VFS_WRITE) {
        cf->fd = open(path, O_RDWR | O_CLOEXEC);
        if (cf->fd < 0) {
            int e = errno;
            cv->base->close(cf->inner);
            free(cf);
            return sop_vfs_set_error(SOP_IOERR, e, "crash vfs: reopen %s", path);
        }
    }
    cf->path = xstrdup(path);
    cf->base.vfs = vfs;
    if (creates)
        name_push(cv, NAME_CREATE, path, NULL, NULL);
    *file_out = &cf->base;
    return SOP_OK;
}

static int c_close(sop_file *file)
{
    crash_file *cf = (crash_file *)file;
    crash_vfs *cv = cv_of(file->vfs);
    int rc = cf->inner->vfs->close(cf->inner);
    if (cf->fd >= 0)
        close(cf->fd);
    free(cf->path);
    free(cf);
    return cv->crashed ? dead("close") : rc;
}

static int c_pread(sop_file *file, void *buf, size_t len, uint64_t off, size_t *got_out)
{
    crash_file *cf = (crash_file *)file;
    *got_out = 0;
    if (cv_of(file->vfs)->crashed)
        return dead("pread");
    return cf->inner->vfs->pread(cf->inner, buf, len, off, got_out);
}

static int c_pwrite(sop_file *file, const void *buf, size_t len, uint64_t off)
{
    crash_file *cf = (crash_file *)file;
    crash_vfs *cv = cv_of(file->vfs);
    int g = gate(cv);
    if (g < 0)
        return dead("pwrite");
    if (cf->fd < 0)
        return sop_vfs_set_error(SOP_IOERR, EBADF, "crash vfs: pwrite to a read-only file");
    if (record_data(cv, cf, 0, buf, len, off) != 0)
        return sop_vfs_set_error(SOP_IOERR, errno, "crash vfs: bookkeeping for %s", cf->path);
    int rc = cf->inner->vfs->pwrite(cf->inner, buf, len, off);
    /* The write in flight at the cut reached the page cache; apply decides
     * whether the disk got it. */
    return g ? dead("pwrite") : rc;
}

static int c_sync(sop_file *file, int data_only)
{
    crash_file *cf = (crash_file *)file;
    crash_vfs *cv = cv_of(file->vfs);
    if (gate(cv) != 0)
        return dead("sync");
    if (cv->real_sync) {
        int rc = cf->inner->vfs->sync(cf->inner, data_only);
        if (rc)
            return rc;
    }
    if (cf->fd < 0)
        return SOP_OK;
    struct stat st;
    if (fstat(cf->fd, &st) != 0)
        return sop_vfs_set_error(SOP_IOERR, errno, "crash vfs: fstat %s", cf->path);
    cnode **pp = &cv->nodes;
    if (getenv("SOP_CRASH_TRACE"))
        fprintf(stderr, "crash vfs: sync %s\n", cf->path);
    while (*pp) {
        cnode *n = *pp;
        if (n->dev == st.st_dev && n->ino == st.st_ino) {
            *pp = n->next; /* every write of this file is durable now */
            node_free(n);
            break;
        }
        pp = &n->next;
    }
    return SOP_OK;
}

static int c_truncate(sop_file *file, uint64_t size)
{
    crash_file *cf = (crash_file *)file;
    crash_vfs *cv = cv_of(file->vfs);
    if (gate(cv) != 0)
        return dead("truncate");
    if (cf->fd < 0)
        return sop_vfs_set_error(SOP_IOERR, EBADF, "crash vfs: truncate of a read-only file");
    if (record_data(cv, cf, 1, NULL, 0, size) != 0)
        return sop_vfs_set_error(SOP_IOERR, errno, "crash vfs: bookkeeping for %s", cf->path);
    return cf->inner->vfs->truncate(cf->inner, size);
}

static int c_size(sop_file *file, uint64_t *size_out)
{
    crash_file *cf = (crash_file *)file;
    if (cv_of(file->vfs)->crashed)
        return dead("size");
    return cf->inner->vfs->size(cf->inner, size_out);
}

static int c_lock(sop_file *file, int mode)
{
    crash_file *cf = (crash_file *)file;
    if (cv_of(file->vfs)->crashed && mode != SOP_VFS_UNLOCK)
        return dead("lock");
    return cf->inner->vfs->lock(cf->inner, mode);
}

/* ---- path methods ----------------------------------------------------------- */

static int c_unlink(const sop_vfs *vfs, const char *path)
{
    crash_vfs *cv = cv_of(vfs);
    struct stat st;
    if (gate(cv) != 0)
        return dead("unlink");
    if (lstat(path, &st) != 0 || S_ISDIR(st.st_mode))
        return cv->base->unlink(cv->base, path); /* the real error */
    char *stash = stash_name(cv);
    if (rename(path, stash) != 0) {
        int e = errno;
        free(stash);
        return sop_vfs_set_error(SOP_IOERR, e, "crash vfs: stash %s", path);
    }
    name_push(cv, NAME_UNLINK, path, NULL, stash);
    return SOP_OK;
}

static int c_rename(const sop_vfs *vfs, const char *from, const char *to)
{
    crash_vfs *cv = cv_of(vfs);
    struct stat st;
    char *stash = NULL;
    if (gate(cv) != 0)
        return dead("rename");
    if (lstat(to, &st) == 0 && !S_ISDIR(st.st_mode)) {
        stash = stash_name(cv);
        if (link(to, stash) != 0) {
            int e = errno;
            free(stash);
            return sop_vfs_set_error(SOP_IOERR, e, "crash vfs: stash %s", to);
        }
    }
    int rc = cv->base->rename(cv->base, from, to);
    if (rc) {
        if (stash)
            unlink(stash);
        free(stash);
        return rc;
    }
    name_push(cv, NAME_RENAME, to, from, stash);
    return SOP_OK;
}

static int c_mkdir(const sop_vfs *vfs, const char *path)
{
    crash_vfs *cv = cv_of(vfs);
    if (gate(cv) != 0)
        return dead("mkdir");
    int rc = cv->base->mkdir(cv->base, path);
    if (rc == SOP_OK)
        name_push(cv, NAME_MKDIR, path, NULL, NULL);
    return rc;
}

static int c_sync_dir(const sop_vfs *vfs, const char *path)
{
    crash_vfs *cv = cv_of(vfs);
    if (gate(cv) != 0)
        return dead("sync_dir");
    if (cv->real_sync) {
        int rc = cv->base->sync_dir(cv->base, path);
        if (rc)
            return rc;
    }
    size_t keep = 0;
    for (size_t i = 0; i < cv->name_count; i++) {
        name_op *o = &cv->names[i];
        if (strcmp(o->dir, path) == 0) {
            if (o->stash)
                unlink(o->stash); /* the displaced file is gone for good */
            name_free(o);
            continue;
        }
        cv->names[keep++] = *o;
    }
    cv->name_count = keep;
    return SOP_OK;
}

static int c_list_dir(const sop_vfs *vfs, const char *path,
                      int (*cb)(const char *name, void *cb_ctx), void *cb_ctx)
{
    crash_vfs *cv = cv_of(vfs);
    if (cv->crashed)
        return dead("list_dir");
    return cv->base->list_dir(cv->base, path, cb, cb_ctx);
}

static int c_stat(const sop_vfs *vfs, const char *path, int *is_dir_out, uint64_t *size_out)
{
    crash_vfs *cv = cv_of(vfs);
    if (cv->crashed)
        return dead("stat");
    return cv->base->stat(cv->base, path, is_dir_out, size_out);
}

static int c_symlink(const sop_vfs *vfs, const char *target, const char *link_path)
{
    crash_vfs *cv = cv_of(vfs);
    if (gate(cv) != 0)
        return dead("symlink");
    int rc = cv->base->symlink(cv->base, target, link_path);
    if (rc == SOP_OK)
        name_push(cv, NAME_CREATE, link_path, NULL, NULL);
    return rc;
}

static int c_readlink(const sop_vfs *vfs, const char *link_path, char *buf, size_t cap,
                      size_t *len_out)
{
    crash_vfs *cv = cv_of(vfs);
    if (cv->crashed)
        return dead("readlink");
    return cv->base->readlink(cv->base, link_path, buf, cap, len_out);
}

static uint64_t c_monotonic_ns(const sop_vfs *vfs)
{
    crash_vfs *cv = cv_of(vfs);
    return cv->base->monotonic_ns(cv->base);
}

static int c_random(const sop_vfs *vfs, void *buf, size_t len)
{
    crash_vfs *cv = cv_of(vfs);
    if (cv->crashed)
        return dead("random");
    return cv->base->random(cv->base, buf, len);
}

/* ---- control ---------------------------------------------------------------- */

crash_vfs *crash_vfs_new(const char *stash_dir, uint64_t seed)
{
    crash_vfs *cv = calloc(1, sizeof *cv);
    if (!cv)
        return NULL;
    if (mkdir(stash_dir, 0777) != 0 && errno != EEXIST) {
        perror(stash_dir);
        free(cv);
        return NULL;
    }
    cv->stash_dir = xstrdup(stash_dir);
    cv->rng = seed ^ 0x6372617368ull;
    cv->base = sop_vfs_posix();
    cv->vfs = (sop_vfs){
        .version = SOP_VFS_VERSION,
        .name = "crash",
        .ctx = cv,
        .open = c_open,
        .close = c_close,
        .pread = c_pread,
        .pwrite = c_pwrite,
        .sync = c_sync,
        .truncate = c_truncate,
        .size = c_size,
        .lock = c_lock,
        .unlink = c_unlink,
        .rename = c_rename,
        .mkdir = c_mkdir,
        .sync_dir = c_sync_dir,
        .list_dir = c_list_dir,
        .stat = c_stat,
        .symlink = c_symlink,
        .readlink = c_readlink,
        .monotonic_ns = c_monotonic_ns,
        .random = c_random,
    };
    return cv;
}

static void forget_all(crash_vfs *cv)
{
    while (cv->nodes) {
        cnode *n = cv->nodes;
        cv->nodes = n->next;
        node_free(n);
    }
    for (size_t i = 0; i < cv->name_count; i++)
        name_free(&cv->names[i]);
    cv->name_count = 0;
}

void crash_vfs_free(crash_vfs *cv)
{
    if (!cv)
        return;
    forget_all(cv);
    free(cv->names);
    free(cv->stash_dir);
    free(cv);
}

const sop_vfs *crash_vfs_vfs(crash_vfs *cv)
{
    return &cv->vfs;
}

void crash_vfs_arm(crash_vfs *cv, uint64_t n)
{
    cv->arm_at = n;
    cv->mutations = 0;
}

uint64_t crash_vfs_mutations(const crash_vfs *cv)
{
    return cv->mutations;
}

int crash_vfs_crashed(const crash_vfs *cv)
{
    return cv->crashed;
}

void crash_vfs_crash_now(crash_vfs *cv)
{
    cv->crashed = 1;
}

void crash_vfs_set_real_sync(crash_vfs *cv, int on)
{
    cv->real_sync = on;
}

/* ---- computing the post-cut image of one file -------------------------------- */

typedef struct sector_ver {
    uint64_t sector;
    size_t version; /* k: the content after op k-1 (1-based); 0 is never stored */
    uint8_t bytes[SECTOR];
} sector_ver;

typedef struct growbuf {
    uint8_t *data;
    uint64_t len, cap;
} growbuf;

static void gb_resize(growbuf *b, uint64_t len)
{
    if (len > b->cap) {
        uint64_t cap = b->cap ? b->cap : 4096;
        while (cap < len)
            cap *= 2;
        b->data = xrealloc(b->data, cap);
        b->cap = cap;
    }
    if (len > b->len)
        memset(b->data + b->len, 0, len - b->len);
    b->len = len;
}

static int cmp_sector_ver(const void *a, const void *b)
{
    const sector_ver *x = a, *y = b;
    if (x->sector != y->sector)
        return x->sector < y->sector ? -1 : 1;
    return (x->version > y->version) - (x->version < y->version);
}

/* Range of sectors op touches: [*first, *last]; 0 if none. Also the byte
 * range [*lo, *hi). */
static int op_touch(const data_op *op, uint64_t *lo, uint64_t *hi)
{
    if (op->is_truncate) {
        *lo = op->off < op->size_before ? op->off : op->size_before;
        *hi = op->off < op->size_before ? op->size_before : op->off;
    } else {
        *lo = op->off;
        *hi = op->off + op->len;
    }
    return *hi > *lo;
}

static void garble(crash_vfs *cv, growbuf *img, const cnode *n, uint64_t sector, size_t upto_ops)
{
    /* Only bytes an unsynced op (among the first upto_ops) touched. */
    uint64_t s_lo = sector * SECTOR, s_hi = s_lo + SECTOR;
    for (size_t k = 0; k < upto_ops && k < n->op_count; k++) {
        uint64_t lo, hi;
        if (!op_touch(&n->ops[k], &lo, &hi))
            continue;
        if (lo < s_lo)
            lo = s_lo;
        if (hi > s_hi)
            hi = s_hi;
        if (hi > img->len)
            hi = img->len;
        for (uint64_t b = lo; b < hi; b++)
            img->data[b] = (uint8_t)mix64(&cv->rng);
    }
}

static int apply_file(crash_vfs *cv, cnode *n, crash_mode mode, crash_stats *st)
{
    uint8_t *cur = NULL;
    uint64_t cur_len = 0;
    growbuf d = {0}, w = {0}, img = {0};
    sector_ver *sv = NULL;
    size_t sv_count = 0, sv_cap = 0;
    uint64_t *sizes = NULL;
    int rc = -1;
    if (n->op_count == 0)
        return 0;
    if (read_all(n->fd, &cur, &cur_len) != 0) {
        perror("crash vfs: read");
        goto out;
    }
    /* 1. D: undo newest first. */
    gb_resize(&d, cur_len);
    if (cur_len)
        memcpy(d.data, cur, cur_len);
    for (size_t k = n->op_count; k-- > 0;) {
        const data_op *op = &n->ops[k];
        if (d.len > op->size_before)
            d.len = op->size_before;
        gb_resize(&d, op->size_before);
        if (op->old_len)
            memcpy(d.data + op->off, op->old_bytes, op->old_len);
    }
    /* 2. Versions. */
    sizes = xmalloc((n->op_count + 1) * sizeof *sizes);
    sizes[0] = d.len;
    gb_resize(&w, d.len);
    if (d.len)
        memcpy(w.data, d.data, d.len);
    for (size_t k = 0; k < n->op_count; k++) {
        const data_op *op = &n->ops[k];
        uint64_t lo, hi;
        if (op->is_truncate) {
            if (w.len > op->off)
                w.len = op->off;
            gb_resize(&w, op->off);
        } else {
            if (w.len < op->off + op->len)
                gb_resize(&w, op->off + op->len);
            memcpy(w.data + op->off, op->new_bytes, op->len);
        }
        sizes[k + 1] = w.len;
        if (!op_touch(op, &lo, &hi))
            continue;
        for (uint64_t s = lo / SECTOR; s <= (hi - 1) / SECTOR; s++) {
            if (sv_count == sv_cap) {
                sv_cap = sv_cap ? sv_cap * 2 : 64;
                sv = xrealloc(sv, sv_cap * sizeof *sv);
            }
            sector_ver *v = &sv[sv_count++];
            v->sector = s;
            v->version = k + 1;
            memset(v->bytes, 0, SECTOR);
            uint64_t from = s * SECTOR;
            if (from < w.len)
                memcpy(v->bytes, w.data + from, w.len - from < SECTOR ? w.len - from : SECTOR);
        }
    }
    if (sv_count > 1) /* sv is NULL when no op touched a sector (qsort's argument is nonnull) */
        qsort(sv, sv_count, sizeof *sv, cmp_sector_ver);
    /* 3. Choose. */
    size_t nops = n->op_count;
    size_t upto = nops;     /* PREFIX: ops fully applied */
    uint64_t torn_keep = 0; /* PREFIX: sectors of op `upto` that landed */
    int torn_garbage = 0;
    uint64_t size;
    if (mode == CRASH_KEEP) {
        size = sizes[nops];
    } else if (mode == CRASH_DROP) {
        size = sizes[0];
    } else if (mode == CRASH_PREFIX) {
        upto = (size_t)below(&cv->rng, nops + 1);
        size = sizes[upto];
        if (upto < nops) {
            uint64_t lo, hi, count = 0;
            if (op_touch(&n->ops[upto], &lo, &hi))
                count = (hi - 1) / SECTOR - lo / SECTOR + 1;
            torn_keep = below(&cv->rng, count + 1);
            torn_garbage = torn_keep < count && below(&cv->rng, 2);
            if (below(&cv->rng, 2))
                size = sizes[upto + 1];
        }
    } else {
        size = sizes[below(&cv->rng, nops + 1)];
    }
    gb_resize(&img, d.len);
    if (d.len)
        memcpy(img.data, d.data, d.len);
    if (img.len > size)
        img.len = size;
    gb_resize(&img, size);
    int reorder_garbage = mode == CRASH_REORDER && below(&cv->rng, 3) == 0;
    uint64_t garbage_pick = reorder_garbage ? below(&cv->rng, sv_count ? sv_count : 1) : 0;
    size_t sectors_seen = 0;
    for (size_t i = 0; i < sv_count;) {
        size_t j = i;
        while (j < sv_count && sv[j].sector == sv[i].sector)
            j++;
        /* sv[i..j) are the versions of this sector, ascending. */
        uint64_t s = sv[i].sector;
        const sector_ver *pick = NULL; /* NULL = version 0 (D) */
        int garbage = 0;
        if (mode == CRASH_KEEP) {
            pick = &sv[j - 1];
        } else if (mode == CRASH_PREFIX) {
            for (size_t k = i; k < j; k++)
                if (sv[k].version <= upto)
                    pick = &sv[k];
            if (upto < nops) {
                uint64_t lo, hi;
                if (op_touch(&n->ops[upto], &lo, &hi) && s >= lo / SECTOR &&
                    s <= (hi - 1) / SECTOR) {
                    uint64_t idx = s - lo / SECTOR;
                    if (idx < torn_keep) {
                        for (size_t k = i; k < j; k++)
                            if (sv[k].version == upto + 1)
                                pick = &sv[k];
                    } else if (idx == torn_keep && torn_garbage) {
                        garbage = 1;
                    }
                }
            }
        } else if (mode == CRASH_REORDER) {
            uint64_t r = below(&cv->rng, 3);
            if (r == 1)
                pick = &sv[j - 1];
            else if (r == 2) {
                uint64_t v = below(&cv->rng, j - i + 1);
                pick = v == 0 ? NULL : &sv[i + v - 1];
            }
            garbage = reorder_garbage && sectors_seen == garbage_pick;
        }
        uint64_t from = s * SECTOR;
        if (pick && from < img.len)
            memcpy(img.data + from, pick->bytes, img.len - from < SECTOR ? img.len - from : SECTOR);
        if (!pick)
            st->sectors_old++;
        else if (pick == &sv[j - 1])
            st->sectors_new++;
        else
            st->sectors_mid++;
        if (garbage && from < img.len) {
            garble(cv, &img, n, s, mode == CRASH_PREFIX ? upto + 1 : nops);
            st->sectors_garbage++;
        }
        sectors_seen++;
        i = j;
    }
    if (ftruncate(n->fd, (off_t)img.len) != 0 || write_all(n->fd, img.data, img.len) != 0) {
        perror("crash vfs: write image");
        goto out;
    }
    st->files++;
    st->writes += nops;
    if (getenv("SOP_CRASH_TRACE"))
        fprintf(stderr,
                "crash vfs: %s: %zu unsynced op(s), size %" PRIu64 " -> durable %" PRIu64
                " -> after the cut %" PRIu64 " (%s)\n",
                n->path, nops, cur_len, sizes[0], img.len, crash_mode_name(mode));
    rc = 0;
out:
    free(cur);
    free(d.data);
    free(w.data);
    free(img.data);
    free(sv);
    free(sizes);
    return rc;
}

/* Undo a lost name change (newest first). */
static void undo_name(const name_op *o)
{
    switch (o->kind) {
    case NAME_CREATE:
        unlink(o->path);
        break;
    case NAME_MKDIR:
        rm_rf(o->path);
        break;
    case NAME_UNLINK:
        if (rename(o->stash, o->path) != 0)
            perror("crash vfs: restore unlinked file");
        break;
    case NAME_RENAME:
        if (rename(o->path, o->from) != 0)
            perror("crash vfs: undo rename");
        if (o->stash && rename(o->stash, o->path) != 0)
            perror("crash vfs: restore replaced file");
        break;
    }
}

int crash_vfs_apply(crash_vfs *cv, crash_mode mode, crash_stats *stats_out)
{
    crash_stats st;
    int rc = 0;
    memset(&st, 0, sizeof st);
    cv->crashed = 1; /* nothing may change the files while we work */
    if (mode == CRASH_RANDOM) {
        uint64_t r = below(&cv->rng, 100);
        mode = r < 15 ? CRASH_DROP : r < 25 ? CRASH_KEEP : r < 60 ? CRASH_PREFIX : CRASH_REORDER;
    }
    st.mode = mode;
    for (cnode *n = cv->nodes; n; n = n->next)
        if (apply_file(cv, n, mode, &st) != 0)
            rc = -1;
    /* Names: per directory, a prefix of its unsynced changes survives. */
    uint8_t *lost = calloc(cv->name_count ? cv->name_count : 1, 1);
    if (!lost)
        abort();
    for (size_t i = 0; i < cv->name_count; i++) {
        int first_of_dir = 1;
        for (size_t k = 0; k < i; k++)
            if (strcmp(cv->names[k].dir, cv->names[i].dir) == 0)
                first_of_dir = 0;
        if (!first_of_dir)
            continue;
        size_t count = 0;
        for (size_t k = i; k < cv->name_count; k++)
            count += strcmp(cv->names[k].dir, cv->names[i].dir) == 0;
        size_t keep = mode == CRASH_KEEP   ? count
                      : mode == CRASH_DROP ? 0
                                           : (size_t)below(&cv->rng, count + 1);
        size_t seen = 0;
        for (size_t k = i; k < cv->name_count; k++)
            if (strcmp(cv->names[k].dir, cv->names[i].dir) == 0)
                lost[k] = seen++ >= keep;
    }
    for (size_t i = cv->name_count; i-- > 0;) {
        if (getenv("SOP_CRASH_TRACE"))
            fprintf(stderr, "crash vfs: %s %s%s%s: %s\n",
                    (const char *[]){"create", "mkdir", "unlink", "rename"}[cv->names[i].kind],
                    cv->names[i].from ? cv->names[i].from : "", cv->names[i].from ? " -> " : "",
                    cv->names[i].path, lost[i] ? "lost" : "kept");
        if (lost[i]) {
            undo_name(&cv->names[i]);
            st.names_lost++;
        } else {
            if (cv->names[i].stash)
                unlink(cv->names[i].stash);
            st.names_kept++;
        }
    }
    free(lost);
    forget_all(cv);
    cv->crashed = 0;
    cv->arm_at = 0;
    cv->mutations = 0;
    if (stats_out)
        *stats_out = st;
    return rc;
}

/* ============================================================================ */
/* Part 2: the oracle                                                            */
/* ============================================================================ */

/* Immutable shared bytes (keys, values): states share them by count. */
typedef struct blob {
    size_t refs;
    size_t len;
    uint8_t data[];
} blob;

static blob *blob_new(const void *p, size_t len)
{
    blob *b = xmalloc(sizeof *b + len);
    b->refs = 1;
    b->len = len;
    if (len)
        memcpy(b->data, p, len);
    return b;
}

static blob *blob_ref(blob *b)
{
    b->refs++;
    return b;
}

static void blob_unref(blob *b)
{
    if (b && --b->refs == 0)
        free(b);
}

static int key_cmp(const void *a, size_t a_len, const void *b, size_t b_len)
{
    size_t n = a_len < b_len ? a_len : b_len;
    int c = n ? memcmp(a, b, n) : 0;
    return c ? c : (a_len > b_len) - (a_len < b_len);
}

typedef struct item {
    blob *key, *val;
} item;

typedef struct mstore {
    char *name;
    item *items;
    size_t count, cap;
} mstore;

typedef struct mstate {
    mstore *stores; /* sorted by name */
    size_t count, cap;
} mstate;

enum { MOP_CREATE = 1, MOP_DROP, MOP_PUT, MOP_DEL };

typedef struct mop {
    int kind;
    char *store;
    blob *key, *val;
} mop;

typedef struct mcommit {
    mop *ops;
    size_t count, cap;
    int acked;
} mcommit;

struct crash_model {
    mstate base;      /* every durable commit applied */
    mcommit *pending; /* commits after base, oldest first */
    size_t pending_count, pending_cap;
    uint64_t pending_acked;
    mstate newest; /* base + every pending commit */
    mcommit cur;   /* the commit being built */
    uint64_t acked, base_acked, checked;
};

static void store_clear(mstore *s)
{
    for (size_t i = 0; i < s->count; i++) {
        blob_unref(s->items[i].key);
        blob_unref(s->items[i].val);
    }
    free(s->items);
    free(s->name);
    memset(s, 0, sizeof *s);
}

static void state_clear(mstate *st)
{
    for (size_t i = 0; i < st->count; i++)
        store_clear(&st->stores[i]);
    free(st->stores);
    memset(st, 0, sizeof *st);
}

static void state_copy(mstate *dst, const mstate *src)
{
    state_clear(dst);
    dst->count = dst->cap = src->count;
    dst->stores = xmalloc((src->count ? src->count : 1) * sizeof *dst->stores);
    for (size_t i = 0; i < src->count; i++) {
        const mstore *s = &src->stores[i];
        mstore *d = &dst->stores[i];
        d->name = xstrdup(s->name);
        d->count = d->cap = s->count;
        d->items = xmalloc((s->count ? s->count : 1) * sizeof *d->items);
        for (size_t k = 0; k < s->count; k++) {
            d->items[k].key = blob_ref(s->items[k].key);
            d->items[k].val = blob_ref(s->items[k].val);
        }
    }
}

/* Index of store name, or where it would go (*found 0). */
static size_t store_find(const mstate *st, const char *name, int *found)
{
    size_t lo = 0, hi = st->count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(st->stores[mid].name, name);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

static size_t item_find(const mstore *s, const void *key, size_t len, int *found)
{
    size_t lo = 0, hi = s->count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = key_cmp(s->items[mid].key->data, s->items[mid].key->len, key, len);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

static void state_apply(mstate *st, const mop *op)
{
    int found;
    size_t i = store_find(st, op->store, &found);
    switch (op->kind) {
    case MOP_CREATE:
        if (found)
            return;
        if (st->count == st->cap) {
            st->cap = st->cap ? st->cap * 2 : 4;
            st->stores = xrealloc(st->stores, st->cap * sizeof *st->stores);
        }
        memmove(&st->stores[i + 1], &st->stores[i], (st->count - i) * sizeof *st->stores);
        memset(&st->stores[i], 0, sizeof *st->stores);
        st->stores[i].name = xstrdup(op->store);
        st->count++;
        return;
    case MOP_DROP:
        if (!found)
            return;
        store_clear(&st->stores[i]);
        memmove(&st->stores[i], &st->stores[i + 1], (st->count - i - 1) * sizeof *st->stores);
        st->count--;
        return;
    default:
        break;
    }
    if (!found)
        return; /* cannot happen: ops name stores of the txn's view */
    mstore *s = &st->stores[i];
    size_t k = item_find(s, op->key->data, op->key->len, &found);
    if (op->kind == MOP_PUT) {
        if (found) {
            blob_unref(s->items[k].val);
            s->items[k].val = blob_ref(op->val);
            return;
        }
        if (s->count == s->cap) {
            s->cap = s->cap ? s->cap * 2 : 16;
            s->items = xrealloc(s->items, s->cap * sizeof *s->items);
        }
        memmove(&s->items[k + 1], &s->items[k], (s->count - k) * sizeof *s->items);
        s->items[k].key = blob_ref(op->key);
        s->items[k].val = blob_ref(op->val);
        s->count++;
    } else if (found) {
        blob_unref(s->items[k].key);
        blob_unref(s->items[k].val);
        memmove(&s->items[k], &s->items[k + 1], (s->count - k - 1) * sizeof *s->items);
        s->count--;
    }
}

static void commit_clear(mcommit *c)
{
    for (size_t i = 0; i < c->count; i++) {
        free(c->ops[i].store);
        blob_unref(c->ops[i].key);
        blob_unref(c->ops[i].val);
    }
    free(c->ops);
    memset(c, 0, sizeof *c);
}

crash_model *crash_model_new(void)
{
    return calloc(1, sizeof(crash_model));
}

static void pending_clear(crash_model *m)
{
    for (size_t i = 0; i < m->pending_count; i++)
        commit_clear(&m->pending[i]);
    m->pending_count = 0;
    m->pending_acked = 0;
}

void crash_model_free(crash_model *m)
{
    if (!m)
        return;
    state_clear(&m->base);
    state_clear(&m->newest);
    pending_clear(m);
    free(m->pending);
    commit_clear(&m->cur);
    free(m);
}

void crash_model_begin(crash_model *m)
{
    commit_clear(&m->cur);
}

static void cur_push(crash_model *m, int kind, const char *store, blob *key, blob *val)
{
    mcommit *c = &m->cur;
    if (c->count == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->ops = xrealloc(c->ops, c->cap * sizeof *c->ops);
    }
    c->ops[c->count++] = (mop){kind, xstrdup(store), key, val};
}

void crash_model_create_store(crash_model *m, const char *name)
{
    cur_push(m, MOP_CREATE, name, NULL, NULL);
}

void crash_model_drop_store(crash_model *m, const char *name)
{
    cur_push(m, MOP_DROP, name, NULL, NULL);
}

void crash_model_put(crash_model *m, const char *store, const void *key, size_t key_len,
                     const void *val, size_t val_len)
{
    cur_push(m, MOP_PUT, store, blob_new(key, key_len), blob_new(val, val_len));
}

void crash_model_del(crash_model *m, const char *store, const void *key, size_t key_len)
{
    cur_push(m, MOP_DEL, store, blob_new(key, key_len), NULL);
}

void crash_model_mark_durable(crash_model *m)
{
    /* Only acknowledged commits can be pending here: an unknown one ends
     * the run that made it. */
    state_copy(&m->base, &m->newest);
    m->base_acked += m->pending_acked;
    pending_clear(m);
}

void crash_model_end(crash_model *m, int rc, int durable)
{
    int known = rc == SOP_OK;
    int unknown = rc == SOP_PANIC || rc == SOP_UNKNOWN_OUTCOME;
    if ((!known && !unknown) || m->cur.count == 0) {
        commit_clear(&m->cur);
        if (known && durable)
            crash_model_mark_durable(m);
        return;
    }
    for (size_t i = 0; i < m->cur.count; i++)
        state_apply(&m->newest, &m->cur.ops[i]);
    if (m->pending_count == m->pending_cap) {
        m->pending_cap = m->pending_cap ? m->pending_cap * 2 : 8;
        m->pending = xrealloc(m->pending, m->pending_cap * sizeof *m->pending);
    }
    m->cur.acked = known;
    m->pending[m->pending_count++] = m->cur;
    memset(&m->cur, 0, sizeof m->cur);
    if (known) {
        m->acked++;
        m->pending_acked++;
        if (durable)
            crash_model_mark_durable(m);
    }
}

int crash_model_has_store(const crash_model *m, const char *name)
{
    for (size_t i = m->cur.count; i-- > 0;) {
        const mop *op = &m->cur.ops[i];
        if (strcmp(op->store, name) == 0 && (op->kind == MOP_CREATE || op->kind == MOP_DROP))
            return op->kind == MOP_CREATE;
    }
    int found;
    store_find(&m->newest, name, &found);
    return found;
}

int crash_model_get(const crash_model *m, const char *store, const void *key, size_t key_len,
                    const void **val_out, size_t *val_len_out)
{
    for (size_t i = m->cur.count; i-- > 0;) {
        const mop *op = &m->cur.ops[i];
        if (strcmp(op->store, store) != 0)
            continue;
        if (op->kind == MOP_CREATE || op->kind == MOP_DROP)
            return 0; /* a fresh or gone store: nothing older counts */
        if (key_cmp(op->key->data, op->key->len, key, key_len) != 0)
            continue;
        if (op->kind == MOP_DEL)
            return 0;
        *val_out = op->val->data;
        *val_len_out = op->val->len;
        return 1;
    }
    int found;
    size_t i = store_find(&m->newest, store, &found);
    if (!found)
        return 0;
    const mstore *s = &m->newest.stores[i];
    size_t k = item_find(s, key, key_len, &found);
    if (!found)
        return 0;
    *val_out = s->items[k].val->data;
    *val_len_out = s->items[k].val->len;
    return 1;
}

uint64_t crash_model_acked(const crash_model *m)
{
    return m->acked;
}

uint64_t crash_model_checked(const crash_model *m)
{
    return m->checked;
}

/* ---- reading a database ------------------------------------------------------- */

static void print_bytes(FILE *f, const void *p, size_t len)
{
    const uint8_t *b = p;
    fputc('\'', f);
    for (size_t i = 0; i < len && i < 40; i++)
        fputc(b[i] >= 32 && b[i] < 127 && b[i] != '\'' ? b[i] : '.', f);
    if (len > 40)
        fprintf(f, "...");
    fprintf(f, "' (%zu bytes)", len);
}

static void on_finding(const char *finding, void *ctx)
{
    const char *what = ctx;
    fprintf(stderr, "%s: sop_db_check: %s\n", what, finding);
}

/* 0: read into *out; 1: an inconsistency (printed); 2: a read error (*rc_out).
 * run_check 0: skip sop_db_check (faults are being injected: the checker
 * would report the injected failures as findings; the final check, with
 * nothing injected, runs it). */
static int read_db(mstate *out, sop_db *db, const char *what, int *rc_out, int run_check)
{
    sop_txn *t = NULL;
    char **names = NULL;
    size_t name_count = 0;
    sop_cursor *c = NULL;
    int result = 2, rc;
    state_clear(out);
    if ((rc = sop_txn_begin(&t, db, SOP_TXN_READONLY)) != SOP_OK)
        goto out;
    if ((rc = sop_store_list(&names, &name_count, t)) != SOP_OK)
        goto out;
    for (size_t i = 0; i < name_count; i++) {
        sop_store *s;
        sop_val k, v;
        mop create = {MOP_CREATE, names[i], NULL, NULL};
        state_apply(out, &create);
        int found;
        mstore *ms = &out->stores[store_find(out, names[i], &found)];
        if ((rc = sop_store_open(&s, t, names[i], 0, NULL)) != SOP_OK)
            goto out;
        if ((rc = sop_cursor_open(&c, t, s)) != SOP_OK)
            goto out;
        for (rc = sop_cursor_get(&k, &v, c, SOP_FIRST, NULL); rc == SOP_OK;
             rc = sop_cursor_get(&k, &v, c, SOP_NEXT, NULL)) {
            if (ms->count && key_cmp(ms->items[ms->count - 1].key->data,
                                     ms->items[ms->count - 1].key->len, k.data, k.len) >= 0) {
                fprintf(stderr, "%s: store '%s': keys out of order at ", what, names[i]);
                print_bytes(stderr, k.data, k.len);
                fprintf(stderr, "\n");
                result = 1;
                goto out;
            }
            if (ms->count == ms->cap) {
                ms->cap = ms->cap ? ms->cap * 2 : 16;
                ms->items = xrealloc(ms->items, ms->cap * sizeof *ms->items);
            }
            ms->items[ms->count].key = blob_new(k.data, k.len);
            ms->items[ms->count].val = blob_new(v.data, v.len);
            ms->count++;
        }
        if (rc != SOP_NOTFOUND)
            goto out;
        uint64_t back = 0;
        for (rc = sop_cursor_get(&k, &v, c, SOP_LAST, NULL); rc == SOP_OK;
             rc = sop_cursor_get(&k, &v, c, SOP_PREV, NULL)) {
            if (back >= ms->count) {
                back++;
                break;
            }
            const item *it = &ms->items[ms->count - 1 - back];
            if (key_cmp(it->key->data, it->key->len, k.data, k.len) != 0) {
                fprintf(stderr, "%s: store '%s': backward scan differs at item %zu\n", what,
                        names[i], (size_t)(ms->count - 1 - back));
                result = 1;
                goto out;
            }
            back++;
        }
        if (rc != SOP_NOTFOUND && rc != SOP_OK)
            goto out;
        sop_cursor_close(c);
        c = NULL;
        uint64_t count = 0;
        sop_store_info info = SOP_STORE_INFO_INIT;
        if ((rc = sop_count(&count, t, s)) != SOP_OK ||
            (rc = sop_store_info_get(&info, t, s)) != SOP_OK)
            goto out;
        if (count != ms->count || back != ms->count || info.count != ms->count) {
            fprintf(stderr,
                    "%s: store '%s': sop_count %" PRIu64 ", info.count %" PRIu64
                    ", forward scan %zu, backward scan %" PRIu64 "\n",
                    what, names[i], count, info.count, ms->count, back);
            result = 1;
            goto out;
        }
        for (size_t j = 0; j < ms->count; j++) {
            sop_val key = {ms->items[j].key->data, ms->items[j].key->len};
            if ((rc = sop_get(&v, t, s, &key)) != SOP_OK)
                goto out;
            if (v.len != ms->items[j].val->len ||
                (v.len && memcmp(v.data, ms->items[j].val->data, v.len) != 0)) {
                fprintf(stderr, "%s: store '%s': sop_get and the scan disagree on ", what,
                        names[i]);
                print_bytes(stderr, key.data, key.len);
                fprintf(stderr, "\n");
                result = 1;
                goto out;
            }
        }
    }
    sop_store_list_free(names, name_count);
    names = NULL;
    sop_txn_abort(t);
    t = NULL;
    if (run_check) {
        uint64_t findings = 0;
        if ((rc = sop_db_check(&findings, db, on_finding, NULL, (void *)what)) != SOP_OK)
            goto out;
        if (findings) {
            fprintf(stderr, "%s: sop_db_check: %" PRIu64 " finding(s)\n", what, findings);
            result = 1;
            goto out;
        }
    }
    rc = SOP_OK;
    result = 0;
out:
    if (result == 2)
        *rc_out = rc;
    sop_cursor_close(c);
    if (names)
        sop_store_list_free(names, name_count);
    sop_txn_abort(t);
    return result;
}

/* First difference between a and b, printed; 0 if equal. */
static int state_diff(const mstate *a, const mstate *b, const char *label, FILE *f)
{
    for (size_t i = 0, j = 0; i < a->count || j < b->count;) {
        int c = i == a->count   ? 1
                : j == b->count ? -1
                                : strcmp(a->stores[i].name, b->stores[j].name);
        if (c) {
            if (f)
                fprintf(f, "  vs %s: store '%s' only in %s\n", label,
                        c < 0 ? a->stores[i].name : b->stores[j].name,
                        c < 0 ? "the database" : "the model");
            return 1;
        }
        const mstore *x = &a->stores[i], *y = &b->stores[j];
        for (size_t p = 0, q = 0; p < x->count || q < y->count;) {
            int d = p == x->count   ? 1
                    : q == y->count ? -1
                                    : key_cmp(x->items[p].key->data, x->items[p].key->len,
                                              y->items[q].key->data, y->items[q].key->len);
            if (d == 0 &&
                (x->items[p].val->len != y->items[q].val->len ||
                 (x->items[p].val->len && memcmp(x->items[p].val->data, y->items[q].val->data,
                                                 x->items[p].val->len) != 0))) {
                if (f) {
                    fprintf(f, "  vs %s: store '%s' key ", label, x->name);
                    print_bytes(f, x->items[p].key->data, x->items[p].key->len);
                    fprintf(f, ": database value ");
                    print_bytes(f, x->items[p].val->data, x->items[p].val->len);
                    fprintf(f, ", model value ");
                    print_bytes(f, y->items[q].val->data, y->items[q].val->len);
                    fprintf(f, "\n");
                }
                return 1;
            }
            if (d) {
                if (f) {
                    const item *it = d < 0 ? &x->items[p] : &y->items[q];
                    fprintf(f, "  vs %s: store '%s' key ", label, x->name);
                    print_bytes(f, it->key->data, it->key->len);
                    fprintf(f, " only in %s (database %zu items, model %zu)\n",
                            d < 0 ? "the database" : "the model", x->count, y->count);
                }
                return 1;
            }
            p++, q++;
        }
        i++, j++;
    }
    return 0;
}

static int verify(crash_model *m, sop_db *db, const char *what, int *read_rc_out, int run_check)
{
    mstate found = {0}, cand = {0};
    int rc = SOP_OK;
    int r = read_db(&found, db, what, &rc, run_check);
    if (r != 0) {
        if (read_rc_out)
            *read_rc_out = rc;
        state_clear(&found);
        return r;
    }
    state_copy(&cand, &m->base);
    size_t match = SIZE_MAX;
    uint64_t acked_in = m->base_acked;
    if (!state_diff(&found, &cand, "", NULL))
        match = 0;
    for (size_t i = 0; i < m->pending_count && match == SIZE_MAX; i++) {
        for (size_t k = 0; k < m->pending[i].count; k++)
            state_apply(&cand, &m->pending[i].ops[k]);
        acked_in += m->pending[i].acked;
        if (!state_diff(&found, &cand, "", NULL))
            match = i + 1;
    }
    if (match == SIZE_MAX) {
        fprintf(stderr,
                "%s: the database matches no accepted state (%" PRIu64
                " durable commits, %zu commits that may or may not have survived)\n",
                what, m->base_acked, m->pending_count);
        state_diff(&found, &m->base, "the state with only the durable commits", stderr);
        if (m->pending_count)
            state_diff(&found, &m->newest, "the state with every commit", stderr);
        state_clear(&found);
        state_clear(&cand);
        return 1;
    }
    /* Collapse: the commits after the match are gone for good. */
    state_clear(&m->base);
    m->base = found;
    state_copy(&m->newest, &m->base);
    m->base_acked = acked_in;
    m->checked += acked_in;
    pending_clear(m);
    state_clear(&cand);
    return 0;
}

int crash_model_verify(crash_model *m, sop_db *db, const char *what, int *read_rc_out)
{
    return verify(m, db, what, read_rc_out, 1);
}

/* ============================================================================ */
/* Part 3: the workload                                                          */
/* ============================================================================ */

#define WL_STORES   4
#define WL_KEYSPACE 400

typedef struct wl {
    crash_model *m;
    const char *dir;
    const sop_vfs *vfs;
    uint64_t rng;
    sop_db_options opts;
    int durable_commits; /* SOP_SYNC_FULL */
    int faults;          /* CRASH_WL_FAULTS */
    sop_db *db;
    crash_workload_stats *st;
    uint8_t *vbuf;
    size_t vbuf_cap;
} wl;

static const char *store_name(int i)
{
    static const char *const names[WL_STORES] = {"s0", "s1", "s2", "s3"};
    return names[i];
}

/* Store options by name: s1 has tiny nodes (deep trees, many splits), s2
 * puts every value in its own blob, s3 small nodes and small inline limit. */
static void store_opts(int i, sop_store_options *o)
{
    sop_store_options_init(o, SOP_STORE_OPTIONS_VERSION);
    if (i == 1)
        o->slot_length = 4;
    if (i == 2)
        o->flags = SOP_STORE_VALUES_SEPARATE;
    if (i == 3) {
        o->slot_length = 8;
        o->max_inline_value = 64;
    }
}

static size_t make_key(char *buf, unsigned idx)
{
    if (idx % 7 == 3) {
        /* long keys: 100..299 bytes */
        size_t len = 100 + (idx * 37u) % 200;
        int n = sprintf(buf, "k%05u-", idx);
        for (size_t i = (size_t)n; i < len; i++)
            buf[i] = (char)('a' + (idx + i) % 26);
        return len;
    }
    return (size_t)sprintf(buf, "k%05u", idx);
}

static size_t pick_value_len(wl *w)
{
    uint64_t r = below(&w->rng, 100);
    if (r < 60)
        return (size_t)below(&w->rng, 33);
    if (r < 85)
        return 33 + (size_t)below(&w->rng, 968);
    if (r < 97)
        return 1025 + (size_t)below(&w->rng, 8000);
    return 30000 + (size_t)below(&w->rng, 90000);
}

static const uint8_t *make_value(wl *w, size_t len)
{
    if (len > w->vbuf_cap) {
        w->vbuf = xrealloc(w->vbuf, len);
        w->vbuf_cap = len;
    }
    uint64_t s = mix64(&w->rng);
    for (size_t i = 0; i < len; i++) {
        if ((i & 7) == 0)
            s = mix64(&s);
        w->vbuf[i] = (uint8_t)(s >> ((i & 7) * 8));
    }
    return w->vbuf;
}

static int stop(wl *w, int rc, const char *call)
{
    if (getenv("SOP_CRASH_TRACE"))
        fprintf(stderr, "workload: %s returned %d (%s) [%s]\n", call, rc, sop_strerror(rc),
                sop_errmsg());
    if (w->st->last_rc == SOP_OK) {
        w->st->last_rc = rc;
        w->st->last_call = call;
        snprintf(w->st->last_msg, sizeof w->st->last_msg, "%s", sop_errmsg());
    }
    w->st->failures++;
    if (rc > 0) {
        fprintf(stderr, "workload: %s returned %d, which is not a SOP_* code [%s]\n", call, rc,
                sop_errmsg());
        return CRASH_WL_BAD_RULE;
    }
    if (rc < 0 && rc > -32)
        w->st->rc_seen |= 1u << -rc;
    return rc;
}

static int wl_open(wl *w)
{
    int rc = sop_db_open(&w->db, w->dir, &w->opts);
    if (rc)
        return stop(w, rc, "sop_db_open");
    w->st->opens++;
    int read_rc = SOP_OK;
    int r = verify(w->m, w->db, "after open", &read_rc, !w->faults);
    if (r == 1)
        return CRASH_WL_BAD_STATE;
    if (r == 2) {
        /* Unverified: the model still counts the commits a crash before
         * this open may have lost as pending. A clean close of this handle
         * (which may well succeed: it has nothing to write) must not make
         * them durable, so drop the handle as a crash would. */
        sop_db__crash_close(w->db);
        w->db = NULL;
        return stop(w, read_rc, "read after open");
    }
    return SOP_OK;
}

static int wl_close(wl *w, int crash)
{
    sop_db *db = w->db;
    w->db = NULL;
    if (crash) {
        w->st->crash_reopens++;
        return sop_db__crash_close(db);
    }
    int rc = sop_db_close(db);
    if (rc == SOP_BADSTATE) {
        fprintf(stderr, "workload: sop_db_close says transactions are open\n");
        return CRASH_WL_BAD_RULE;
    }
    if (rc)
        return stop(w, rc, "sop_db_close");
    w->st->closes++;
    crash_model_mark_durable(w->m);
    return SOP_OK;
}

/* One transaction. plan_ops < 0: random size. */
static int wl_txn(wl *w, int plan_ops, int allow_abort)
{
    sop_txn *t = NULL;
    sop_store *handles[WL_STORES] = {0};
    char kbuf[400];
    int rc;
    crash_model_begin(w->m);
    if ((rc = sop_txn_begin(&t, w->db, 0)) != SOP_OK)
        return stop(w, rc, "sop_txn_begin");
    int live[WL_STORES], nlive = 0;
    for (int i = 0; i < WL_STORES; i++)
        if (crash_model_has_store(w->m, store_name(i)))
            live[nlive++] = i;
    uint64_t r = below(&w->rng, 100);
    if (nlive == 0 || (r < 6 && nlive < WL_STORES)) {
        int i = 0;
        while (crash_model_has_store(w->m, store_name(i)))
            i++;
        sop_store_options o;
        store_opts(i, &o);
        if ((rc = sop_store_open(&handles[i], t, store_name(i), SOP_STORE_CREATE, &o)) != SOP_OK) {
            sop_txn_abort(t);
            return stop(w, rc, "sop_store_open(CREATE)");
        }
        crash_model_create_store(w->m, store_name(i));
        live[nlive++] = i;
    } else if (r < 9 && nlive > 1) {
        int i = live[below(&w->rng, (uint64_t)nlive)];
        if ((rc = sop_store_remove(t, store_name(i))) != SOP_OK) {
            sop_txn_abort(t);
            return stop(w, rc, "sop_store_remove");
        }
        crash_model_drop_store(w->m, store_name(i));
        goto commit; /* a removal is the whole transaction */
    }
    int nops = plan_ops >= 0             ? plan_ops
               : below(&w->rng, 10) == 0 ? 50 + (int)below(&w->rng, 150)
                                         : 1 + (int)below(&w->rng, 24);
    for (int op = 0; op < nops; op++) {
        int si = live[below(&w->rng, (uint64_t)nlive)];
        const char *sname = store_name(si);
        if (!handles[si] && (rc = sop_store_open(&handles[si], t, sname, 0, NULL)) != SOP_OK) {
            sop_txn_abort(t);
            return stop(w, rc, "sop_store_open");
        }
        unsigned idx = (unsigned)below(&w->rng, WL_KEYSPACE);
        size_t klen = make_key(kbuf, idx);
        sop_val key = {kbuf, klen};
        const void *mv;
        size_t mv_len;
        int present = crash_model_get(w->m, sname, kbuf, klen, &mv, &mv_len);
        uint64_t kind = below(&w->rng, 100);
        const char *call;
        int want;
        if (kind < 55) {
            size_t vlen = pick_value_len(w);
            sop_val v = {make_value(w, vlen), vlen};
            call = "sop_upsert";
            rc = sop_upsert(t, handles[si], &key, &v);
            want = SOP_OK;
            if (rc == SOP_OK)
                crash_model_put(w->m, sname, kbuf, klen, v.data, vlen);
        } else if (kind < 70) {
            size_t vlen = pick_value_len(w);
            sop_val v = {make_value(w, vlen), vlen};
            call = "sop_add";
            rc = sop_add(t, handles[si], &key, &v);
            want = present ? SOP_KEYEXIST : SOP_OK;
            if (rc == SOP_OK && !present)
                crash_model_put(w->m, sname, kbuf, klen, v.data, vlen);
        } else if (kind < 90) {
            call = "sop_remove";
            rc = sop_remove(t, handles[si], &key);
            want = present ? SOP_OK : SOP_NOTFOUND;
            if (rc == SOP_OK && present)
                crash_model_del(w->m, sname, kbuf, klen);
        } else {
            sop_val v;
            call = "sop_get";
            rc = sop_get(&v, t, handles[si], &key);
            want = present ? SOP_OK : SOP_NOTFOUND;
            if (rc == SOP_OK && present &&
                (v.len != mv_len || (mv_len && memcmp(v.data, mv, mv_len) != 0))) {
                fprintf(stderr, "workload: %s of %.*s in %s returned a wrong value\n", call,
                        (int)klen, kbuf, sname);
                sop_txn_abort(t);
                return CRASH_WL_BAD_RULE;
            }
        }
        if (rc == want)
            continue;
        if (rc == SOP_OK || rc == SOP_NOTFOUND || rc == SOP_KEYEXIST) {
            fprintf(stderr, "workload: %s of %.*s in %s returned %d (%s), the model says %d\n",
                    call, (int)(klen > 40 ? 40 : klen), kbuf, sname, rc, sop_strerror(rc), want);
            sop_txn_abort(t);
            return CRASH_WL_BAD_RULE;
        }
        sop_txn_abort(t);
        return stop(w, rc, call);
    }
commit:
    if (allow_abort && below(&w->rng, 10) == 0) {
        sop_txn_abort(t);
        crash_model_end(w->m, SOP_BADSTATE, 0); /* forgotten */
        w->st->aborts++;
        return SOP_OK;
    }
    rc = sop_txn_commit(t);
    w->st->commits++;
    if (rc == SOP_CONFLICT || rc == SOP_BUSY) {
        fprintf(stderr, "workload: a lone committer got %s\n", sop_strerror(rc));
        crash_model_end(w->m, rc, 0);
        return CRASH_WL_BAD_RULE;
    }
    crash_model_end(w->m, rc, w->durable_commits);
    if (rc) {
        w->st->failed_commits++;
        return stop(w, rc, "sop_txn_commit");
    }
    w->st->acked++;
    return SOP_OK;
}

static int wl_checkpoint(wl *w)
{
    int rc = sop_db_checkpoint(w->db);
    if (rc)
        return stop(w, rc, "sop_db_checkpoint");
    w->st->checkpoints++;
    crash_model_mark_durable(w->m);
    return SOP_OK;
}

/* Remove the newest store, if there are two or more (script step 'R'). */
static int wl_remove_store(wl *w)
{
    int n = 0, last = WL_STORES - 1, rc;
    sop_txn *t = NULL;
    for (int i = 0; i < WL_STORES; i++)
        n += crash_model_has_store(w->m, store_name(i));
    if (n < 2)
        return SOP_OK;
    while (!crash_model_has_store(w->m, store_name(last)))
        last--;
    crash_model_begin(w->m);
    if ((rc = sop_txn_begin(&t, w->db, 0)) != SOP_OK)
        return stop(w, rc, "sop_txn_begin");
    if ((rc = sop_store_remove(t, store_name(last))) != SOP_OK) {
        sop_txn_abort(t);
        return stop(w, rc, "sop_store_remove");
    }
    crash_model_drop_store(w->m, store_name(last));
    rc = sop_txn_commit(t);
    w->st->commits++;
    crash_model_end(w->m, rc, w->durable_commits);
    if (rc) {
        w->st->failed_commits++;
        return stop(w, rc, "sop_txn_commit");
    }
    w->st->acked++;
    return SOP_OK;
}

/* Write in a transaction, then abort it (script step 'A'). */
static int wl_abort(wl *w)
{
    sop_txn *t = NULL;
    sop_store *s;
    sop_val k = {"aborted", 7}, v = {"never", 5};
    int rc = sop_txn_begin(&t, w->db, 0);
    /* CREATE: an earlier failure (CRASH_WL_CONTINUE) may have left no store */
    if (rc == SOP_OK && (rc = sop_store_open(&s, t, "s0", SOP_STORE_CREATE, NULL)) == SOP_OK)
        rc = sop_upsert(t, s, &k, &v);
    sop_txn_abort(t);
    if (rc)
        return stop(w, rc, "write before an abort");
    w->st->aborts++;
    return SOP_OK;
}

/*
 * One step: T/t a scripted transaction of 40/12 operations, C checkpoint,
 * X clean close, K process crash (no sync, no checkpoint), O open,
 * R remove the newest store, A an aborted transaction, r a random step.
 */
static int wl_step(wl *w, char code)
{
    if (code == 'r') {
        uint64_t r = below(&w->rng, 100);
        code = r < 6 ? 'C' : r < 9 ? 'c' : r < 11 ? 'k' : 'x';
    }
    if (code != 'O' && !w->db)
        return SOP_OK; /* an earlier error closed it and CONTINUE could not reopen */
    int rc;
    switch (code) {
    case 'T':
        return wl_txn(w, 40, 0);
    case 't':
        return wl_txn(w, 12, 0);
    case 'x':
        return wl_txn(w, -1, 1);
    case 'C':
        return wl_checkpoint(w);
    case 'X':
        return wl_close(w, 0);
    case 'K':
        return wl_close(w, 1);
    case 'O':
        return w->db ? SOP_OK : wl_open(w);
    case 'R':
        return wl_remove_store(w);
    case 'A':
        return wl_abort(w);
    case 'c':
    case 'k':
        if ((rc = wl_close(w, code == 'k')) != SOP_OK)
            return rc;
        return wl_open(w);
    default:
        return SOP_OK;
    }
}

int crash_workload_run(crash_model *m, const char *dir, const sop_vfs *vfs, uint64_t seed,
                       int txn_count, int flags, crash_workload_stats *stats)
{
    /* The full lifecycle: create stores, writes, commit, checkpoint, clean
     * close, reopen, commit, process crash, reopen with log replay
     * (verified), store removal, abort, clean close, reopen. */
    static const char script[] = "OTTCtXOtKOtRAXO";
    wl w;
    int rc = SOP_OK;
    memset(&w, 0, sizeof w);
    memset(stats, 0, sizeof *stats);
    w.m = m;
    w.dir = dir;
    w.vfs = vfs;
    w.rng = seed * 0x2545f4914f6cdd1dull + 17;
    w.st = stats;
    sop_db_options_init(&w.opts, SOP_DB_OPTIONS_VERSION);
    w.opts.vfs = vfs;
    w.opts.segment_bytes = 1u << 20;
    w.opts.sync = (flags & CRASH_WL_MAY_SYNC_NORMAL) && below(&w.rng, 5) == 0 ? SOP_SYNC_NORMAL
                                                                              : SOP_SYNC_FULL;
    if (below(&w.rng, 2))
        w.opts.cache_bytes = 1u << 20; /* checkpoints start by themselves */
    w.durable_commits = w.opts.sync == SOP_SYNC_FULL;
    stats->sync_normal = w.opts.sync == SOP_SYNC_NORMAL;
    w.faults = (flags & CRASH_WL_FAULTS) != 0;
    size_t script_len = (flags & CRASH_WL_SCRIPT) ? sizeof script - 1 : 1;
    size_t total = script_len + (size_t)(txn_count > 0 ? txn_count : 0) + 1;
    for (size_t i = 0; i < total; i++) {
        char code = i < script_len  ? ((flags & CRASH_WL_SCRIPT) ? script[i] : 'O')
                    : i + 1 < total ? 'r'
                                    : 'X';
        rc = wl_step(&w, code);
        if (getenv("SOP_CRASH_TRACE"))
            fprintf(stderr, "workload step %zu '%c': %d %s%s%s\n", i, code, rc,
                    rc < 0 ? sop_strerror(rc) : "", rc < 0 ? " in " : "",
                    rc < 0 && w.st->last_call ? w.st->last_call : "");
        if (rc > 0)
            break; /* a finding */
        if (rc < 0) {
            if (!(flags & CRASH_WL_CONTINUE) || rc == SOP_PANIC)
                break;
            if (!w.db && wl_open(&w) != SOP_OK)
                break;
            rc = SOP_OK;
        }
    }
    if (w.db) {
        int crc = sop_db_close(w.db);
        if (crc == SOP_BADSTATE) {
            fprintf(stderr, "workload: sop_db_close says transactions are open\n");
            rc = CRASH_WL_BAD_RULE;
        } else if (crc == SOP_OK && rc <= 0) {
            crash_model_mark_durable(m);
        }
        w.db = NULL;
    }
    free(w.vbuf);
    return rc > 0 ? rc : 0;
}
