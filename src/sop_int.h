/*
 * sop_int.h - what every libsop source file shares: error recording, the
 * allocator, little-endian helpers, and the lock order.
 *
 * Lock order (acquire downward only; never hold a lower-numbered lock while
 * taking a higher one):
 *   1 db->ckpt_mu      one checkpoint at a time
 *   2 db->commit_mu    serialises commit application (validate, apply, append)
 *   3 log->append_mu   the log's append point and segment rotation
 *   4 db->snap_mu      active-transaction list and snapshot registration
 *   5 log->sync_mu     group-commit state (durable LSN, sync leader)
 *   (cache.c: 6 clock_mu, 7 retire_mu; db.h: 8 cat_mu, the store catalog, a leaf)
 * The snapshot and sync locks are never held across I/O.
 */
#ifndef SOP_INT_H
#define SOP_INT_H

#define SOP_BUILDING 1
#include "sop.h"
#include "sop_sys.h"

#include <assert.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <inttypes.h>

/* ---- errors --------------------------------------------------------------- */

/* Record a one-line detail for the calling thread and return rc. */
int sop_err(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Same, with an OS errno recorded for sop_os_errno(). */
int sop_err_os(int rc, int os_errno, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Clear the thread's detail (start of every API call). */
void sop_err_clear(void);
/* The end of every sop.h call that returns int: on SOP_OK the detail is
 * cleared, so sop_errmsg() never shows a failure the call tolerated inside
 * (mkdir of an existing folder, a probe that found nothing). */
static inline int sop_done(int rc)
{
    if (rc == SOP_OK)
        sop_err_clear();
    return rc;
}
/* An OS "no such file" met by a call whose target is the open database
 * (commit, checkpoint, close): its folder was renamed or deleted under the
 * handle. That is an I/O failure to the caller (SOP_IOERR; detail and
 * sop_os_errno() kept), not the documented "no such key/store" NOTFOUND. */
static inline int sop_err_lost_file(int rc)
{
    return rc == SOP_NOTFOUND ? SOP_IOERR : rc;
}

/* SOP_CORRUPT with the source line in the message: every site is distinct. */
#define SOP_CORRUPT_BKPT(...) sop_corrupt_at(__LINE__, __FILE__, __VA_ARGS__)
int sop_corrupt_at(int line, const char *file, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define SOP_TRY(expr)                                                                              \
    do {                                                                                           \
        if ((rc = (expr)) != SOP_OK)                                                               \
            goto out;                                                                              \
    } while (0)

/* Keep the first real error: a later one wins only if it is a panic or rc was OK. */
static inline int sop_rc_merge(int rc, int later)
{
    if (later == SOP_PANIC || rc == SOP_OK)
        return later == SOP_OK ? rc : later;
    return rc;
}

/* "Cannot happen, but do not crash if it does" (SQLite's ALWAYS/NEVER). */
#ifdef NDEBUG
#define ALWAYS(x) (x)
#define NEVER(x)  (x)
#else
#define ALWAYS(x) ((x) ? 1 : (assert(0 && #x), 0))
#define NEVER(x)  ((x) ? (assert(0 && #x), 1) : 0)
#endif

#define SOP_UNUSED(x) ((void)(x))
#define SOP_LIKELY(x)   __builtin_expect(!!(x), 1)
#define SOP_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ---- memory --------------------------------------------------------------- */

void *sop_malloc(size_t size);
void *sop_calloc(size_t count, size_t size); /* overflow-checked, zeroed */
void *sop_realloc(void *ptr, size_t size);
void sop_free(void *ptr);
/* Return free heap pages to the OS (glibc malloc only; else a no-op). */
void sop_alloc_release_free_memory(void);
char *sop_strdup(const char *s);
void *sop_memdup(const void *p, size_t len);

/* ---- little-endian encoding (never cast structs onto disk bytes) ---------- */

static inline void sop_put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void sop_put_le32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4); /* x86-64 and arm64 are little-endian; checked in util.c */
}
static inline void sop_put_le64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}
static inline uint16_t sop_get_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t sop_get_le32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline uint64_t sop_get_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* ---- blob locations -------------------------------------------------------- */

/* Where an immutable blob lives: a physical ID, unique and never reused
 * (segment numbers only grow). len is the whole record's length on disk,
 * crc its header CRC, so a misdirected read is caught. 24 bytes on disk:
 * u64 seg, u64 off, u32 len, u32 crc. seg == 0 means "no location". */
typedef struct sop_loc {
    uint64_t seg;
    uint64_t off;
    uint32_t len;
    uint32_t crc;
} sop_loc;
#define SOP_LOC_DISK_LEN 24

/* ---- misc ----------------------------------------------------------------- */

/* Bytewise key order: memcmp, then shorter first. */
static inline int sop_memcmp_keys(const void *a, size_t a_len, const void *b, size_t b_len)
{
    /* Short keys (the common case on the search path) compare a word at a
     * time inline: big-endian words order like memcmp. */
    const uint8_t *x = a, *y = b;
    size_t n = a_len < b_len ? a_len : b_len, i = 0;
    for (; i + 8 <= n && i < 32; i += 8) {
        uint64_t u, v;
        memcpy(&u, x + i, 8);
        memcpy(&v, y + i, 8);
        if (u != v) {
            u = __builtin_bswap64(u);
            v = __builtin_bswap64(v);
            return u < v ? -1 : 1;
        }
    }
    if (n - i < 8) {
        /* The last few bytes inline too: a libc call costs more. */
        for (; i < n; i++)
            if (x[i] != y[i])
                return x[i] < y[i] ? -1 : 1;
    } else {
        int c = memcmp(x + i, y + i, n - i);
        if (c)
            return c;
    }
    return (a_len > b_len) - (a_len < b_len);
}

#endif /* SOP_INT_H */
