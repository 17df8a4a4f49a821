/*
 * vfs_fault.c - the fault-injecting VFS described in vfs_fault.h.
 *
 * Every method of the wrapped VFS is forwarded after one decision, made
 * under fv->mu: count the call (its method and FAULT_ANY), and fail it if
 * the armed method matches and its count has reached N (== N when
 * transient, >= N when persistent). The decision never depends on anything
 * but the call sequence, so a sweep is deterministic for a deterministic
 * workload. The allocation hook at the end works the same way.
 */
#include "vfs_fault.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fault_vfs {
    sop_vfs vfs; /* ctx points back here */
    const sop_vfs *base;
    pthread_mutex_t mu; /* everything below */
    uint64_t calls[FAULT_METHOD_COUNT];
    int armed;
    fault_method method;
    uint64_t n;
    fault_mode mode;
    fault_kind kind;
    int rc;
    uint64_t fired;
    int real_sync;
};

typedef struct fault_file {
    sop_file base; /* first: a sop_file * is a fault_file * */
    sop_file *inner;
} fault_file;

static const char *const method_names[FAULT_METHOD_COUNT] = {
    "any",    "open",   "close", "pread",    "pwrite",   "sync", "truncate", "size",     "lock",
    "unlink", "rename", "mkdir", "sync_dir", "list_dir", "stat", "symlink",  "readlink", "random"};

const char *fault_method_name(fault_method method)
{
    return (unsigned)method < FAULT_METHOD_COUNT ? method_names[method] : "?";
}

static fault_vfs *fv_of(const sop_vfs *vfs)
{
    return (fault_vfs *)vfs->ctx;
}

static fault_vfs *fv_of_file(const sop_file *file)
{
    return (fault_vfs *)file->vfs->ctx;
}

/* Count one call of @p method; 0 to run it, else the code to fail with
 * (*short_out set when the failure is a short write). */
static int decide(fault_vfs *fv, fault_method method, int *short_out)
{
    int rc = SOP_OK;
    pthread_mutex_lock(&fv->mu);
    uint64_t any = ++fv->calls[FAULT_ANY];
    uint64_t mine = ++fv->calls[method];
    if (fv->armed && (fv->method == FAULT_ANY || fv->method == method)) {
        uint64_t at = fv->method == FAULT_ANY ? any : mine;
        if (at == fv->n || (fv->mode == FAULT_PERSISTENT && at > fv->n)) {
            rc = fv->rc;
            fv->fired++;
            if (short_out)
                *short_out = fv->kind == FAULT_SHORT_WRITE && method == FAULT_PWRITE;
        }
    }
    pthread_mutex_unlock(&fv->mu);
    return rc;
}

static int injected(int rc, fault_method method, const char *path)
{
    return sop_vfs_set_error(rc, rc == SOP_NOSPC ? ENOSPC : EIO, "%s %s: injected fault",
                             fault_method_name(method), path ? path : "(file)");
}

/* ---- file methods ----------------------------------------------------------- */

static int f_open(sop_file **file_out, const sop_vfs *vfs, const char *path, unsigned flags)
{
    fault_vfs *fv = fv_of(vfs);
    *file_out = NULL;
    int rc = decide(fv, FAULT_OPEN, NULL);
    if (rc)
        return injected(rc, FAULT_OPEN, path);
    fault_file *ff = calloc(1, sizeof *ff);
    if (!ff)
        return sop_vfs_set_error(SOP_NOMEM, ENOMEM, "fault vfs: open %s", path);
    rc = fv->base->open(&ff->inner, fv->base, path, flags);
    if (rc) {
        free(ff);
        return rc;
    }
    ff->base.vfs = vfs;
    *file_out = &ff->base;
    return SOP_OK;
}

static int f_close(sop_file *file)
{
    fault_file *ff = (fault_file *)file;
    int rc = decide(fv_of_file(file), FAULT_CLOSE, NULL);
    int crc = ff->inner->vfs->close(ff->inner); /* closed either way */
    free(ff);
    return rc ? injected(rc, FAULT_CLOSE, NULL) : crc;
}

static int f_pread(sop_file *file, void *buf, size_t len, uint64_t off, size_t *got_out)
{
    fault_file *ff = (fault_file *)file;
    int rc = decide(fv_of_file(file), FAULT_PREAD, NULL);
    if (rc) {
        *got_out = 0;
        return injected(rc, FAULT_PREAD, NULL);
    }
    return ff->inner->vfs->pread(ff->inner, buf, len, off, got_out);
}

static int f_pwrite(sop_file *file, const void *buf, size_t len, uint64_t off)
{
    fault_file *ff = (fault_file *)file;
    int is_short = 0;
    int rc = decide(fv_of_file(file), FAULT_PWRITE, &is_short);
    if (!rc)
        return ff->inner->vfs->pwrite(ff->inner, buf, len, off);
    if (is_short && len > 1) {
        size_t part = len / 2;
        if (part > 512)
            part &= ~(size_t)511;
        ff->inner->vfs->pwrite(ff->inner, buf, part, off); /* error replaced below */
    }
    return injected(rc, FAULT_PWRITE, NULL);
}

static int f_sync(sop_file *file, int data_only)
{
    fault_file *ff = (fault_file *)file;
    int rc = decide(fv_of_file(file), FAULT_SYNC, NULL);
    if (rc)
        return injected(rc, FAULT_SYNC, NULL);
    return fv_of_file(file)->real_sync ? ff->inner->vfs->sync(ff->inner, data_only) : SOP_OK;
}

static int f_truncate(sop_file *file, uint64_t size)
{
    fault_file *ff = (fault_file *)file;
    int rc = decide(fv_of_file(file), FAULT_TRUNCATE, NULL);
    return rc ? injected(rc, FAULT_TRUNCATE, NULL) : ff->inner->vfs->truncate(ff->inner, size);
}

static int f_size(sop_file *file, uint64_t *size_out)
{
    fault_file *ff = (fault_file *)file;
    int rc = decide(fv_of_file(file), FAULT_SIZE, NULL);
    return rc ? injected(rc, FAULT_SIZE, NULL) : ff->inner->vfs->size(ff->inner, size_out);
}

static int f_lock(sop_file *file, int mode)
{
    fault_file *ff = (fault_file *)file;
    int rc = decide(fv_of_file(file), FAULT_LOCK, NULL);
    return rc ? injected(rc, FAULT_LOCK, NULL) : ff->inner->vfs->lock(ff->inner, mode);
}

/* ---- path methods ----------------------------------------------------------- */

static int f_unlink(const sop_vfs *vfs, const char *path)
{
    fault_vfs *fv = fv_of(vfs);
    int rc = decide(fv, FAULT_UNLINK, NULL);
    return rc ? injected(rc, FAULT_UNLINK, path) : fv->base->unlink(fv->base, path);
}

static int f_rename(const sop_vfs *vfs, const char *from, const char *to)
{
    fault_vfs *fv = fv_of(vfs);
    int rc = decide(fv, FAULT_RENAME, NULL);
    return rc ? injected(rc, FAULT_RENAME, from) : fv->base->rename(fv->base, from, to);
}

static int f_mkdir(const sop_vfs *vfs, const char *path)
{
    fault_vfs *fv = fv_of(vfs);
    int rc = decide(fv, FAULT_MKDIR, NULL);
    return rc ? injected(rc, FAULT_MKDIR, path) : fv->base->mkdir(fv->base, path);
}

static int f_sync_dir(const sop_vfs *vfs, const char *path)
{
    fault_vfs *fv = fv_of(vfs);
    int rc = decide(fv, FAULT_SYNC_DIR, NULL);
    if (rc)
        return injected(rc, FAULT_SYNC_DIR, path);
    return fv->real_sync ? fv->base->sync_dir(fv->base, path) : SOP_OK;
}

static int f_list_dir(const sop_vfs *vfs, const char *path,
                      int (*cb)(const char *name, void *cb_ctx), void *cb_ctx)
{
    fault_vfs *fv = fv_of(vfs);
    int rc = decide(fv, FAULT_LIST_DIR, NULL);
    return rc ? injected(rc, FAULT_LIST_DIR, path) : fv->base->list_dir(fv->base, path, cb, cb_ctx);
}

static int f_stat(const sop_vfs *vfs, const char *path, int *is_dir_out, uint64_t *size_out)
{
    fault_vfs *fv = fv_of(vfs);
    int rc = decide(fv, FAULT_STAT, NULL);
    return rc ? injected(rc, FAULT_STAT, path)
              : fv->base->stat(fv->base, path, is_dir_out, size_out);
}

static int f_symlink(const sop_vfs *vfs, const char *target, const char *link_path)
{
    fault_vfs *fv = fv_of(vfs);
    int rc = decide(fv, FAULT_SYMLINK, NULL);
    return rc ? injected(rc, FAULT_SYMLINK, link_path)
              : fv->base->symlink(fv->base, target, link_path);
}

static int f_readlink(const sop_vfs *vfs, const char *link_path, char *buf, size_t cap,
                      size_t *len_out)
{
    fault_vfs *fv = fv_of(vfs);
    int rc = decide(fv, FAULT_READLINK, NULL);
    return rc ? injected(rc, FAULT_READLINK, link_path)
              : fv->base->readlink(fv->base, link_path, buf, cap, len_out);
}

static uint64_t f_monotonic_ns(const sop_vfs *vfs)
{
    fault_vfs *fv = fv_of(vfs);
    return fv->base->monotonic_ns(fv->base);
}

static int f_random(const sop_vfs *vfs, void *buf, size_t len)
{
    fault_vfs *fv = fv_of(vfs);
    int rc = decide(fv, FAULT_RANDOM, NULL);
    return rc ? injected(rc, FAULT_RANDOM, NULL) : fv->base->random(fv->base, buf, len);
}

/* ---- control ---------------------------------------------------------------- */

fault_vfs *fault_vfs_new(const sop_vfs *base)
{
    fault_vfs *fv = calloc(1, sizeof *fv);
    if (!fv)
        return NULL;
    fv->base = base ? base : sop_vfs_posix();
    fv->real_sync = 1;
    pthread_mutex_init(&fv->mu, NULL);
    fv->vfs = (sop_vfs){
        .version = SOP_VFS_VERSION,
        .name = "fault",
        .ctx = fv,
        .open = f_open,
        .close = f_close,
        .pread = f_pread,
        .pwrite = f_pwrite,
        .sync = f_sync,
        .truncate = f_truncate,
        .size = f_size,
        .lock = f_lock,
        .unlink = f_unlink,
        .rename = f_rename,
        .mkdir = f_mkdir,
        .sync_dir = f_sync_dir,
        .list_dir = f_list_dir,
        .stat = f_stat,
        .symlink = f_symlink,
        .readlink = f_readlink,
        .monotonic_ns = f_monotonic_ns,
        .random = f_random,
    };
    return fv;
}

void fault_vfs_free(fault_vfs *fv)
{
    if (!fv)
        return;
    pthread_mutex_destroy(&fv->mu);
    free(fv);
}

const sop_vfs *fault_vfs_vfs(fault_vfs *fv)
{
    return &fv->vfs;
}

void fault_vfs_arm(fault_vfs *fv, fault_method method, uint64_t n, fault_mode mode, fault_kind kind,
                   int rc)
{
    pthread_mutex_lock(&fv->mu);
    memset(fv->calls, 0, sizeof fv->calls);
    fv->armed = 1;
    fv->method = method;
    fv->n = n;
    fv->mode = mode;
    fv->kind = kind;
    fv->rc = rc;
    fv->fired = 0;
    pthread_mutex_unlock(&fv->mu);
}

void fault_vfs_disarm(fault_vfs *fv)
{
    pthread_mutex_lock(&fv->mu);
    fv->armed = 0;
    pthread_mutex_unlock(&fv->mu);
}

uint64_t fault_vfs_fired(const fault_vfs *fv)
{
    fault_vfs *m = (fault_vfs *)fv;
    pthread_mutex_lock(&m->mu);
    uint64_t n = m->fired;
    pthread_mutex_unlock(&m->mu);
    return n;
}

uint64_t fault_vfs_calls(const fault_vfs *fv, fault_method method)
{
    fault_vfs *m = (fault_vfs *)fv;
    if ((unsigned)method >= FAULT_METHOD_COUNT)
        return 0;
    pthread_mutex_lock(&m->mu);
    uint64_t n = m->calls[method];
    pthread_mutex_unlock(&m->mu);
    return n;
}

void fault_vfs_set_real_sync(fault_vfs *fv, int on)
{
    pthread_mutex_lock(&fv->mu);
    fv->real_sync = on;
    pthread_mutex_unlock(&fv->mu);
}

void fault_vfs_reset(fault_vfs *fv)
{
    pthread_mutex_lock(&fv->mu);
    memset(fv->calls, 0, sizeof fv->calls);
    pthread_mutex_unlock(&fv->mu);
}

/* ---- allocations -------------------------------------------------------------- */

#define ALLOC_MAGIC 0x534f50414c4c4f43ull /* "SOPALLOC" */
#define ALLOC_HDR   16u                   /* keeps max_align_t alignment */

static pthread_mutex_t alloc_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    int armed;
    uint64_t n;
    fault_mode mode;
    uint64_t calls, fired, live, live_bytes, peak_bytes;
} alloc_state;

/* Count one allocation call; 1 if it must fail. */
static int alloc_decide(void)
{
    int fail = 0;
    pthread_mutex_lock(&alloc_mu);
    uint64_t at = ++alloc_state.calls;
    if (alloc_state.armed &&
        (at == alloc_state.n || (alloc_state.mode == FAULT_PERSISTENT && at > alloc_state.n))) {
        fail = 1;
        alloc_state.fired++;
    }
    pthread_mutex_unlock(&alloc_mu);
    return fail;
}

static void alloc_account(int64_t blocks, int64_t bytes)
{
    pthread_mutex_lock(&alloc_mu);
    alloc_state.live += (uint64_t)blocks;
    alloc_state.live_bytes += (uint64_t)bytes;
    if (alloc_state.live_bytes > alloc_state.peak_bytes)
        alloc_state.peak_bytes = alloc_state.live_bytes;
    pthread_mutex_unlock(&alloc_mu);
}

static uint8_t *alloc_header_check(void *p)
{
    uint8_t *h = (uint8_t *)p - ALLOC_HDR;
    uint64_t magic;
    memcpy(&magic, h + 8, 8);
    if (magic != ALLOC_MAGIC) {
        fprintf(stderr, "fault_alloc: free/realloc of %p, which it did not allocate\n", p);
        abort();
    }
    return h;
}

static void *a_malloc(size_t size, void *ctx)
{
    (void)ctx;
    if (alloc_decide() || size > SIZE_MAX - ALLOC_HDR)
        return NULL;
    uint8_t *h = malloc(size + ALLOC_HDR);
    if (!h)
        return NULL;
    uint64_t sz = size, magic = ALLOC_MAGIC;
    memcpy(h, &sz, 8);
    memcpy(h + 8, &magic, 8);
    alloc_account(1, (int64_t)size);
    return h + ALLOC_HDR;
}

static void a_free(void *p, void *ctx)
{
    (void)ctx;
    if (!p)
        return;
    uint8_t *h = alloc_header_check(p);
    uint64_t sz, zero = 0;
    memcpy(&sz, h, 8);
    memcpy(h + 8, &zero, 8); /* a second free aborts instead of corrupting */
    alloc_account(-1, -(int64_t)sz);
    free(h);
}

static void *a_realloc(void *p, size_t size, void *ctx)
{
    if (!p)
        return a_malloc(size, ctx);
    uint8_t *h = alloc_header_check(p);
    uint64_t old;
    memcpy(&old, h, 8);
    if (alloc_decide() || size > SIZE_MAX - ALLOC_HDR)
        return NULL; /* p stays valid, as realloc promises */
    uint8_t *n = realloc(h, size + ALLOC_HDR);
    if (!n)
        return NULL;
    uint64_t sz = size;
    memcpy(n, &sz, 8);
    alloc_account(0, (int64_t)size - (int64_t)old);
    return n + ALLOC_HDR;
}

void fault_alloc_install(void)
{
    static const sop_allocator counting = {a_malloc, a_realloc, a_free, NULL};
    sop_set_allocator(&counting);
}

int fault_alloc_uninstall(void)
{
    if (fault_alloc_live() != 0)
        return -1; /* blocks made by this allocator must be freed by it */
    sop_set_allocator(NULL);
    return 0;
}

void fault_alloc_arm(uint64_t n, fault_mode mode)
{
    pthread_mutex_lock(&alloc_mu);
    alloc_state.armed = 1;
    alloc_state.n = n;
    alloc_state.mode = mode;
    alloc_state.calls = 0;
    alloc_state.fired = 0;
    pthread_mutex_unlock(&alloc_mu);
}

void fault_alloc_disarm(void)
{
    pthread_mutex_lock(&alloc_mu);
    alloc_state.armed = 0;
    pthread_mutex_unlock(&alloc_mu);
}

#define ALLOC_GETTER(name, field)                                                                  \
    uint64_t name(void)                                                                            \
    {                                                                                              \
        pthread_mutex_lock(&alloc_mu);                                                             \
        uint64_t v = alloc_state.field;                                                            \
        pthread_mutex_unlock(&alloc_mu);                                                           \
        return v;                                                                                  \
    }
ALLOC_GETTER(fault_alloc_fired, fired)
ALLOC_GETTER(fault_alloc_calls, calls)
ALLOC_GETTER(fault_alloc_live, live)
ALLOC_GETTER(fault_alloc_live_bytes, live_bytes)
ALLOC_GETTER(fault_alloc_peak_bytes, peak_bytes)

void fault_alloc_reset_peak(void)
{
    pthread_mutex_lock(&alloc_mu);
    alloc_state.peak_bytes = alloc_state.live_bytes;
    pthread_mutex_unlock(&alloc_mu);
}
