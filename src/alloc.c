/*
 * alloc.c - every libsop allocation goes through here, so tests can count
 * allocations and fail the Nth one (sop_set_allocator).
 */
#include "sop_int.h"

#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

static void *std_malloc(size_t n, void *ctx)
{
    (void)ctx;
    return malloc(n);
}
static void *std_realloc(void *p, size_t n, void *ctx)
{
    (void)ctx;
    return realloc(p, n);
}
static void std_free(void *p, void *ctx)
{
    (void)ctx;
    free(p);
}

static sop_allocator allocator = {std_malloc, std_realloc, std_free, NULL};

void sop_set_allocator(const sop_allocator *a)
{
    if (a)
        allocator = *a;
    else
        allocator = (sop_allocator){std_malloc, std_realloc, std_free, NULL};
}

void *sop_malloc(size_t n)
{
    return allocator.malloc(n ? n : 1, allocator.ctx);
}

void *sop_calloc(size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size)
        return NULL;
    void *p = sop_malloc(count * size);
    if (p)
        memset(p, 0, count * size);
    return p;
}

void *sop_realloc(void *p, size_t n)
{
    return allocator.realloc(p, n ? n : 1, allocator.ctx);
}

void sop_free(void *p)
{
    if (p)
        allocator.free(p, allocator.ctx);
}

/* Sanitizers replace malloc: glibc's heaps are not the ones in use, and
 * walking them (malloc_trim) crashed under ASan in a threaded Rust test. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SOP_SANITIZED_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||                         \
    __has_feature(memory_sanitizer)
#define SOP_SANITIZED_MALLOC 1
#endif
#endif

void sop_alloc_release_free_memory(void)
{
#if defined(__GLIBC__) && !defined(SOP_SANITIZED_MALLOC)
    /* glibc keeps freed node images in its heaps; after a checkpoint has
     * turned many dirty copies into garbage, give their pages back so the
     * process stays near the cache budget. Only for libc's allocator. */
    if (allocator.free == std_free)
        malloc_trim(0);
#endif
}

char *sop_strdup(const char *s)
{
    return sop_memdup(s, strlen(s) + 1);
}

void *sop_memdup(const void *p, size_t len)
{
    void *q = sop_malloc(len);
    if (q && len)
        memcpy(q, p, len);
    return q;
}
