/*
 * test_util.c - CRC-32C, splitmix64, arena, u64map and sop_buf (src/util.h).
 *
 * CRC: published vectors (RFC 3720 B.4), hardware == table on every length
 * 0..300 at every misalignment 0..15 and on long buffers that reach the
 * three-stream paths, and the incremental property (U1). Arena: alignment,
 * no overlap, reset reuse without malloc, debug mode (U2). u64map: a seeded
 * random model test against a reference, growth, NOMEM leaves it unchanged
 * (U3). sop_buf: exact little-endian bytes, sticky NOMEM.
 */
#include "harness.h"
#include "util.h"

#include <stdalign.h>
#include <stdlib.h>

/* ---- a counting allocator that can fail (installed around a test body) ---- */

static long alloc_calls;      /* malloc + realloc calls since install */
static long alloc_fail_after; /* calls beyond this many fail; -1 = never */

static void *count_malloc(size_t n, void *ctx)
{
    (void)ctx;
    if (alloc_fail_after >= 0 && alloc_calls >= alloc_fail_after) {
        alloc_calls++;
        return NULL;
    }
    alloc_calls++;
    return malloc(n);
}
static void *count_realloc(void *p, size_t n, void *ctx)
{
    (void)ctx;
    if (alloc_fail_after >= 0 && alloc_calls >= alloc_fail_after) {
        alloc_calls++;
        return NULL;
    }
    alloc_calls++;
    return realloc(p, n);
}
static void count_free(void *p, void *ctx)
{
    (void)ctx;
    free(p);
}

/* Run body with the counting allocator; restored even when a CHECK returns. */
static void with_counting_allocator(void (*body)(void))
{
    static const sop_allocator a = {count_malloc, count_realloc, count_free, NULL};
    alloc_calls = 0;
    alloc_fail_after = -1;
    sop_set_allocator(&a);
    body();
    sop_set_allocator(NULL);
}

static void fill_random(uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)test_rand();
}

/* ============================================================================ */
/* CRC-32C                                                                       */
/* ============================================================================ */

static uint32_t crc_all(int impl, uint32_t crc, const void *p, size_t len)
{
    switch (impl) {
    case 0:
        return sop_crc32c(crc, p, len);
    case 1:
        return sop_crc32c_sw(crc, p, len);
    default:
        return sop_crc32c_hw(crc, p, len);
    }
}

TEST(test_util__crc32c_known_vectors)
{
    uint8_t buf[48];
    for (int impl = 0; impl < 3; impl++) {
        CHECK_EQ_U64(crc_all(impl, 0, "123456789", 9), 0xE3069283u);
        CHECK_EQ_U64(crc_all(impl, 0, NULL, 0), 0);
        CHECK_EQ_U64(crc_all(impl, 0x12345678u, NULL, 0), 0x12345678u);
        CHECK_EQ_U64(crc_all(impl, 0, "a", 1), 0xC1D04330u);
        /* RFC 3720 (iSCSI) appendix B.4 */
        memset(buf, 0, 32);
        CHECK_EQ_U64(crc_all(impl, 0, buf, 32), 0x8A9136AAu);
        memset(buf, 0xff, 32);
        CHECK_EQ_U64(crc_all(impl, 0, buf, 32), 0x62A8AB43u);
        for (int i = 0; i < 32; i++)
            buf[i] = (uint8_t)i;
        CHECK_EQ_U64(crc_all(impl, 0, buf, 32), 0x46DD794Eu);
        for (int i = 0; i < 32; i++)
            buf[i] = (uint8_t)(31 - i);
        CHECK_EQ_U64(crc_all(impl, 0, buf, 32), 0x113FDB5Cu);
        static const uint8_t iscsi_read[48] = {
            0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
            0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
        CHECK_EQ_U64(crc_all(impl, 0, iscsi_read, sizeof iscsi_read), 0xD9963A56u);
    }
    printf("  note  crc32c hardware path: %s\n",
           sop_crc32c_hw_available() ? "sse4.2" : "unavailable (table fallback)");
}

TEST(test_util__crc32c_hw_equals_sw_every_length_and_alignment)
{
    static uint8_t raw[300 + 16];
    fill_random(raw, sizeof raw);
    unsigned compared = 0;
    for (size_t misalign = 0; misalign < 16; misalign++) {
        for (size_t len = 0; len <= 300; len++) {
            uint32_t seed = (len & 1) ? (uint32_t)test_rand() : 0;
            const uint8_t *p = raw + misalign;
            uint32_t sw = sop_crc32c_sw(seed, p, len);
            uint32_t hw = sop_crc32c_hw(seed, p, len);
            if (sw != hw || sop_crc32c(seed, p, len) != sw) {
                FAIL_AT("len %zu misalign %zu seed %08x: sw %08x hw %08x", len, misalign, seed, sw,
                        hw);
                return;
            }
            compared++;
        }
    }
    CHECK_EQ_U64(compared, 16 * 301);
}

TEST(test_util__crc32c_hw_equals_sw_long_buffers)
{
    /* Around the three-stream block sizes: 3*256 = 768 and 3*8192 = 24576. */
    static const size_t lens[] = {767,   768,   769,   775,    776,    1535,   1536,
                                  1537,  4096,  24575, 24576,  24577,  24583,  49152,
                                  49160, 65536, 73728, 100003, 262144, 1048583};
    size_t max_len = 1048583 + 8;
    uint8_t *buf = malloc(max_len);
    CHECK(buf != NULL);
    fill_random(buf, max_len);
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        for (size_t misalign = 0; misalign < 8; misalign++) {
            uint32_t seed = (uint32_t)test_rand();
            uint32_t sw = sop_crc32c_sw(seed, buf + misalign, lens[i]);
            uint32_t hw = sop_crc32c_hw(seed, buf + misalign, lens[i]);
            if (sw != hw) {
                FAIL_AT("len %zu misalign %zu: sw %08x hw %08x", lens[i], misalign, sw, hw);
                free(buf);
                return;
            }
        }
    }
    free(buf);
}

TEST(test_util__crc32c_is_incremental)
{
    static uint8_t buf[300];
    fill_random(buf, sizeof buf);
    CHECK_EQ_U64(sop_crc32c(sop_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
    for (int impl = 0; impl < 3; impl++) {
        uint32_t whole = crc_all(impl, 0, buf, sizeof buf);
        for (size_t split = 0; split <= sizeof buf; split++) {
            uint32_t a = crc_all(impl, 0, buf, split);
            uint32_t ab = crc_all(impl, a, buf + split, sizeof buf - split);
            if (ab != whole) {
                FAIL_AT("impl %d split %zu: %08x != %08x", impl, split, ab, whole);
                return;
            }
        }
    }
    /* A long buffer in random pieces (pieces cross the block paths). */
    size_t len = 200000;
    uint8_t *big = malloc(len);
    CHECK(big != NULL);
    fill_random(big, len);
    uint32_t whole = sop_crc32c_sw(0, big, len);
    for (int round = 0; round < 20; round++) {
        uint32_t crc = 0;
        size_t off = 0;
        while (off < len) {
            size_t piece = (size_t)(test_rand() % 40000);
            if (piece > len - off)
                piece = len - off;
            crc = sop_crc32c(crc, big + off, piece);
            off += piece;
        }
        if (crc != whole) {
            FAIL_AT("round %d: pieces give %08x, whole %08x", round, crc, whole);
            free(big);
            return;
        }
    }
    free(big);
}

/* ============================================================================ */
/* splitmix64                                                                    */
/* ============================================================================ */

TEST(test_util__splitmix64_reference_sequence)
{
    uint64_t state = 0;
    CHECK_EQ_U64(sop_splitmix64(&state), 0xe220a8397b1dcdafull);
    CHECK_EQ_U64(state, 0x9e3779b97f4a7c15ull);
    CHECK_EQ_U64(sop_splitmix64(&state), 0x6e789e6aa1b965f4ull);
    /* The harness uses the same generator: one seed, one sequence. */
    state = test_seed;
    for (int i = 0; i < 100; i++)
        CHECK_EQ_U64(sop_splitmix64(&state), test_rand());
}

/* ============================================================================ */
/* Arena                                                                         */
/* ============================================================================ */

struct arena_rec {
    uint8_t *p;
    size_t len;
    uint8_t fill;
};

/* Random sizes and alignments; every block aligned, none overlapping. */
static void arena_alignment_run(int is_debug)
{
    enum { N = 3000 };
    static struct arena_rec recs[N];
    sop_arena arena;
    sop_arena_init(&arena, 0);
    sop_arena_set_debug(&arena, is_debug);
    CHECK_EQ_U64(arena.is_debug, (unsigned)is_debug);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            size_t align = (size_t)1 << (test_rand() % 13); /* 1..4096 */
            size_t len =
                test_rand() % 8 == 0 ? (size_t)(test_rand() % 5000) : (size_t)(test_rand() % 100);
            uint8_t *p = sop_arena_alloc(&arena, len, align);
            CHECK(p != NULL);
            if ((uintptr_t)p & (align - 1)) {
                FAIL_AT("alloc %d: %p not aligned to %zu (debug %d)", i, (void *)p, align,
                        is_debug);
                sop_arena_dispose(&arena);
                return;
            }
            recs[i] = (struct arena_rec){p, len, (uint8_t)(i * 7 + round)};
            memset(p, recs[i].fill, len);
        }
        for (int i = 0; i < N; i++) {
            for (size_t j = 0; j < recs[i].len; j++) {
                if (recs[i].p[j] != recs[i].fill) {
                    FAIL_AT("alloc %d byte %zu overwritten (debug %d)", i, j, is_debug);
                    sop_arena_dispose(&arena);
                    return;
                }
            }
        }
        sop_arena_reset(&arena);
    }
    sop_arena_dispose(&arena);
}

TEST(test_util__arena_alignment_and_no_overlap)
{
    arena_alignment_run(0);
    if (test_failed_flag)
        return;
    arena_alignment_run(1);
}

TEST(test_util__arena_edge_arguments)
{
    sop_arena arena;
    sop_arena_init(&arena, 0);
    sop_arena_set_debug(&arena, 0);
    void *p = sop_arena_alloc(&arena, 24, 0);
    CHECK(p != NULL);
    CHECK(((uintptr_t)p & (alignof(max_align_t) - 1)) == 0);
    CHECK(sop_arena_alloc(&arena, 0, 1) != NULL);
    CHECK(sop_arena_alloc(&arena, 8, 3) == NULL);                       /* not a power of two */
    CHECK(sop_arena_alloc(&arena, 8, SOP_ARENA_MAX_ALIGN * 2) == NULL); /* too large */
    CHECK(sop_arena_alloc(&arena, SIZE_MAX, 1) == NULL);                /* overflow */
    CHECK(sop_arena_alloc(&arena, SIZE_MAX - 8, 16) == NULL);
    const char text[] = "libsop arena";
    char *copy = sop_arena_memdup(&arena, text, sizeof text);
    CHECK(copy != NULL && copy != text);
    CHECK(memcmp(copy, text, sizeof text) == 0);
    CHECK(sop_arena_memdup(&arena, NULL, 0) != NULL);
    sop_arena_dispose(&arena);
    CHECK_EQ_U64(sop_arena_held_bytes(&arena), 0);
    CHECK(arena.chunks == NULL);
    /* Reusable after dispose. */
    CHECK(sop_arena_alloc(&arena, 100, 8) != NULL);
    sop_arena_dispose(&arena);
    sop_arena_dispose(NULL);
}

static void arena_reset_body(void)
{
    sop_arena arena;
    sop_arena_init(&arena, 4096);
    sop_arena_set_debug(&arena, 0);
    uint8_t *first = sop_arena_alloc(&arena, 10, 1);
    CHECK(first != NULL);
    CHECK_EQ_U64(alloc_calls, 1);
    /* A large request that does not fit gets its own chunk and keeps the
     * current bump region. */
    CHECK(sop_arena_alloc(&arena, 5000, 8) != NULL);
    CHECK_EQ_U64(alloc_calls, 2);
    uint8_t *next = sop_arena_alloc(&arena, 10, 1);
    CHECK(next == first + 10);
    for (int i = 0; i < 1000; i++)
        CHECK(sop_arena_alloc(&arena, 40, 8) != NULL);
    long before_reset = alloc_calls;
    CHECK(before_reset > 5);
    size_t held = sop_arena_held_bytes(&arena);
    CHECK(held > 40000);
    sop_arena_reset(&arena);
    CHECK(sop_arena_held_bytes(&arena) < 4096 + 64); /* one ordinary chunk kept */
    CHECK(sop_arena_held_bytes(&arena) >= 4096);
    /* A reused arena serves a chunk's worth without sop_malloc. */
    for (int i = 0; i < 90; i++)
        CHECK(sop_arena_alloc(&arena, 40, 8) != NULL);
    CHECK_EQ_U64(alloc_calls, before_reset);
    sop_arena_dispose(&arena);
}

TEST(test_util__arena_reset_reuses_one_chunk)
{
    with_counting_allocator(arena_reset_body);
}

static void arena_debug_body(void)
{
    sop_arena arena;
    sop_arena_init(&arena, 0);
    sop_arena_set_debug(&arena, 1);
    for (int i = 0; i < 50; i++) {
        uint8_t *p = sop_arena_alloc(&arena, (size_t)i, (size_t)1 << (i % 8));
        CHECK(p != NULL);
        memset(p, 0xab, (size_t)i);
    }
    /* One sop_malloc per allocation, plus the pointer list (one growth). */
    CHECK_EQ_U64(alloc_calls, 51);
    CHECK_EQ_U64(arena.debug_count, 50);
    sop_arena_reset(&arena);
    CHECK_EQ_U64(sop_arena_held_bytes(&arena), 0);
    CHECK(arena.chunks == NULL && arena.debug_count == 0);
    /* set_debug is ignored while memory is held. */
    CHECK(sop_arena_alloc(&arena, 8, 8) != NULL);
    sop_arena_set_debug(&arena, 0);
    CHECK_EQ_U64(arena.is_debug, 1);
    sop_arena_dispose(&arena);
}

TEST(test_util__arena_debug_mode_mallocs_each_allocation)
{
    with_counting_allocator(arena_debug_body);
    if (test_failed_flag)
        return;
    /* The environment switch. */
    sop_arena arena;
    setenv("SOP_DEBUG_ARENA", "1", 1);
    sop_arena_init(&arena, 0);
    CHECK_EQ_U64(arena.is_debug, 1);
    setenv("SOP_DEBUG_ARENA", "0", 1);
    sop_arena_init(&arena, 0);
#ifdef SOP_DEBUG_ARENA
    CHECK_EQ_U64(arena.is_debug, 1);
#else
    CHECK_EQ_U64(arena.is_debug, 0);
#endif
    unsetenv("SOP_DEBUG_ARENA");
}

static void arena_nomem_body(void)
{
    for (int is_debug = 0; is_debug < 2; is_debug++) {
        sop_arena arena;
        sop_arena_init(&arena, 1024);
        sop_arena_set_debug(&arena, is_debug);
        CHECK(sop_arena_alloc(&arena, 16, 8) != NULL);
        alloc_fail_after = alloc_calls;
        CHECK(sop_arena_alloc(&arena, 100000, 8) == NULL);
        if (!is_debug) /* fits the current chunk: no malloc needed */
            CHECK(sop_arena_alloc(&arena, 16, 8) != NULL);
        alloc_fail_after = -1;
        uint8_t *p = sop_arena_alloc(&arena, 100000, 8);
        CHECK(p != NULL);
        memset(p, 1, 100000);
        sop_arena_dispose(&arena);
    }
}

TEST(test_util__arena_nomem_returns_null_and_stays_usable)
{
    with_counting_allocator(arena_nomem_body);
}

/* ============================================================================ */
/* u64map                                                                        */
/* ============================================================================ */

struct model_key {
    uint64_t key;
    size_t idx;
};

static int model_key_cmp(const void *a, const void *b)
{
    const struct model_key *x = a, *y = b;
    return (x->key > y->key) - (x->key < y->key);
}

static void *val_of(uint64_t step)
{
    return step % 16 == 0 ? NULL : (void *)(uintptr_t)(step * 2 + 1); /* NULL values allowed */
}

/* Random put/del/get against an array model; full comparison every 500 steps. */
TEST(test_util__u64map_random_model)
{
    enum { K = 3000 };
    static uint64_t keys[K];
    static struct model_key sorted[K];
    static void *model_val[K];
    static int model_has[K];
    long scale = getenv("SOP_TEST_SCALE") ? atol(getenv("SOP_TEST_SCALE")) : 1;
    uint64_t steps = 200000 * (uint64_t)(scale > 0 ? scale : 1);

    /* Keys: dense small ids, ids spaced by 2^32 (low bits equal), random, and
     * the extremes. */
    for (size_t i = 0; i < K; i++) {
        uint64_t k;
        if (i < 1000)
            k = i + 1;
        else if (i < 1500)
            k = (uint64_t)(i - 999) << 32;
        else if (i == 1500)
            k = UINT64_MAX;
        else if (i == 1501)
            k = 1ull << 63;
        else
            do
                k = test_rand();
            while (k <= 1000 || (k & 0xffffffffull) == 0 || k == UINT64_MAX || k == 1ull << 63);
        keys[i] = k;
        sorted[i] = (struct model_key){k, i};
        model_has[i] = 0;
        model_val[i] = NULL;
    }
    qsort(sorted, K, sizeof sorted[0], model_key_cmp);
    for (size_t i = 1; i < K; i++)
        CHECK(sorted[i].key != sorted[i - 1].key);

    sop_u64map map;
    sop_u64map_init(&map);
    size_t model_count = 0, max_cap = 0;
    uint64_t dels = 0, replaces = 0;
    for (uint64_t step = 1; step <= steps; step++) {
        /* Phases bias toward growth, then churn, then shrinking. */
        uint64_t phase = (step * 4 / steps) % 4;
        unsigned put_pct = phase == 0 ? 70 : phase == 3 ? 25 : 45;
        unsigned r = (unsigned)(test_rand() % 100);
        size_t i = (size_t)(test_rand() % K);
        void *got = (void *)1;
        int rc;
        if (r < put_pct) {
            void *v = val_of(step);
            rc = sop_u64map_put(&got, &map, keys[i], v);
            if (rc != SOP_OK || got != (model_has[i] ? model_val[i] : NULL)) {
                FAIL_AT("step %" PRIu64 ": put %" PRIx64 " rc %d old %p", step, keys[i], rc, got);
                goto out;
            }
            replaces += model_has[i];
            model_count += !model_has[i];
            model_has[i] = 1;
            model_val[i] = v;
        } else if (r < put_pct + 30) {
            rc = sop_u64map_del(&got, &map, keys[i]);
            int want = model_has[i] ? SOP_OK : SOP_NOTFOUND;
            if (rc != want || got != (model_has[i] ? model_val[i] : NULL)) {
                FAIL_AT("step %" PRIu64 ": del %" PRIx64 " rc %d want %d", step, keys[i], rc, want);
                goto out;
            }
            dels += model_has[i];
            model_count -= model_has[i];
            model_has[i] = 0;
            model_val[i] = NULL;
        } else {
            rc = sop_u64map_get(&got, &map, keys[i]);
            int want = model_has[i] ? SOP_OK : SOP_NOTFOUND;
            if (rc != want || got != (model_has[i] ? model_val[i] : NULL)) {
                FAIL_AT("step %" PRIu64 ": get %" PRIx64 " rc %d want %d", step, keys[i], rc, want);
                goto out;
            }
        }
        if (sop_u64map_count(&map) != model_count) {
            FAIL_AT("step %" PRIu64 ": count %zu, model %zu", step, sop_u64map_count(&map),
                    model_count);
            goto out;
        }
        if (map.slots_cap > max_cap)
            max_cap = map.slots_cap;
        if (step % 500 == 0) {
            /* Every key by get; the iteration yields each present key once. */
            for (size_t j = 0; j < K; j++) {
                rc = sop_u64map_get(&got, &map, keys[j]);
                if (rc != (model_has[j] ? SOP_OK : SOP_NOTFOUND) || got != model_val[j]) {
                    FAIL_AT("step %" PRIu64 ": sweep get %" PRIx64 " rc %d", step, keys[j], rc);
                    goto out;
                }
            }
            static unsigned char seen[K];
            memset(seen, 0, sizeof seen);
            size_t pos = 0, walked = 0;
            uint64_t k;
            void *v;
            while (sop_u64map_next(&k, &v, &map, &pos) == SOP_OK) {
                struct model_key probe = {k, 0};
                struct model_key *mk = bsearch(&probe, sorted, K, sizeof sorted[0], model_key_cmp);
                if (!mk || !model_has[mk->idx] || seen[mk->idx] || model_val[mk->idx] != v) {
                    FAIL_AT("step %" PRIu64 ": walk yields bad key %" PRIx64, step, k);
                    goto out;
                }
                seen[mk->idx] = 1;
                walked++;
            }
            if (walked != model_count) {
                FAIL_AT("step %" PRIu64 ": walk saw %zu keys, model %zu", step, walked,
                        model_count);
                goto out;
            }
        }
    }
    /* The run covered growth, replacement and deletion. */
    CHECK(max_cap >= 2048);
    CHECK(dels > 10000 && replaces > 10000);
out:
    sop_u64map_dispose(&map);
}

TEST(test_util__u64map_key_zero_is_reserved)
{
    sop_u64map map = SOP_U64MAP_INIT;
    void *v = (void *)1;
    CHECK_RC(SOP_INVAL, sop_u64map_put(NULL, &map, 0, &v));
    CHECK_RC(SOP_INVAL, sop_u64map_get(&v, &map, 0));
    CHECK(v == NULL);
    CHECK_RC(SOP_INVAL, sop_u64map_del(NULL, &map, 0));
    CHECK_RC(SOP_NOTFOUND, sop_u64map_get(NULL, &map, 5)); /* empty, unallocated */
    CHECK_RC(SOP_NOTFOUND, sop_u64map_del(NULL, &map, 5));
    size_t pos = 0;
    CHECK_RC(SOP_NOTFOUND, sop_u64map_next(NULL, NULL, &map, &pos));
    CHECK_OK(sop_u64map_put(NULL, &map, UINT64_MAX, &v));
    CHECK_OK(sop_u64map_get(NULL, &map, UINT64_MAX));
    CHECK_EQ_U64(sop_u64map_count(&map), 1);
    sop_u64map_dispose(&map);
    CHECK(map.slots == NULL && map.count == 0);
    sop_u64map_dispose(NULL);
}

static void u64map_nomem_body(void)
{
    sop_u64map map;
    sop_u64map_init(&map);
    uint64_t k;
    for (k = 1; k <= 12; k++) /* 16 slots hold 12 at 3/4 load */
        CHECK_OK(sop_u64map_put(NULL, &map, k * 1000003, (void *)(uintptr_t)k));
    CHECK_EQ_U64(map.slots_cap, 16);
    alloc_fail_after = alloc_calls;
    sop_err_clear();
    CHECK_RC(SOP_NOMEM, sop_u64map_put(NULL, &map, 13 * 1000003, (void *)13));
    CHECK(strstr(sop_errmsg(), "u64map") != NULL);
    CHECK_EQ_U64(sop_u64map_count(&map), 12);
    CHECK_EQ_U64(map.slots_cap, 16);
    CHECK_RC(SOP_NOTFOUND, sop_u64map_get(NULL, &map, 13 * 1000003));
    /* Replacing and deleting never allocate. */
    void *old = NULL;
    CHECK_OK(sop_u64map_put(&old, &map, 5 * 1000003, (void *)55));
    CHECK(old == (void *)5);
    CHECK_OK(sop_u64map_del(&old, &map, 6 * 1000003));
    CHECK(old == (void *)6);
    CHECK_RC(SOP_NOMEM, sop_u64map_reserve(&map, 1000));
    alloc_fail_after = -1;
    for (k = 1; k <= 12; k++) {
        void *v;
        int rc = sop_u64map_get(&v, &map, k * 1000003);
        if (k == 6) {
            CHECK_RC(SOP_NOTFOUND, rc);
        } else {
            CHECK_OK(rc);
            CHECK(v == (void *)(uintptr_t)(k == 5 ? 55 : k));
        }
    }
    CHECK_OK(sop_u64map_put(NULL, &map, 13 * 1000003, (void *)13));
    /* reserve() makes later puts allocation-free. */
    CHECK_OK(sop_u64map_reserve(&map, 5000));
    long calls = alloc_calls;
    for (k = 100; k < 5000; k++)
        CHECK_OK(sop_u64map_put(NULL, &map, k, (void *)(uintptr_t)k));
    CHECK_EQ_U64(alloc_calls, calls);
    CHECK_EQ_U64(sop_u64map_count(&map), 12 + 4900);
    sop_u64map_dispose(&map);
}

TEST(test_util__u64map_nomem_leaves_map_unchanged)
{
    with_counting_allocator(u64map_nomem_body);
}

TEST(test_util__u64map_replace_during_walk_and_clear)
{
    sop_u64map map;
    sop_u64map_init(&map);
    for (uint64_t k = 1; k <= 500; k++)
        CHECK_OK(sop_u64map_put(NULL, &map, k << 20, (void *)(uintptr_t)k));
    size_t pos = 0, walked = 0;
    uint64_t k;
    void *v;
    while (sop_u64map_next(&k, &v, &map, &pos) == SOP_OK) {
        CHECK(v == (void *)(uintptr_t)(k >> 20));
        CHECK_OK(sop_u64map_put(NULL, &map, k, (void *)(uintptr_t)(k + 1)));
        walked++;
    }
    CHECK_EQ_U64(walked, 500);
    for (k = 1; k <= 500; k++) {
        CHECK_OK(sop_u64map_get(&v, &map, k << 20));
        CHECK(v == (void *)(uintptr_t)((k << 20) + 1));
    }
    size_t cap = map.slots_cap;
    sop_u64map_clear(&map);
    CHECK_EQ_U64(sop_u64map_count(&map), 0);
    CHECK_EQ_U64(map.slots_cap, cap);
    CHECK_RC(SOP_NOTFOUND, sop_u64map_get(NULL, &map, 1 << 20));
    pos = 0;
    CHECK_RC(SOP_NOTFOUND, sop_u64map_next(&k, &v, &map, &pos));
    sop_u64map_dispose(&map);
}

/* ============================================================================ */
/* sop_buf                                                                       */
/* ============================================================================ */

TEST(test_util__buf_appends_little_endian_bytes)
{
    sop_buf buf = SOP_BUF_INIT;
    CHECK_OK(sop_buf_append_u8(&buf, 0xa5));
    CHECK_OK(sop_buf_append_le16(&buf, 0x1234));
    CHECK_OK(sop_buf_append_le32(&buf, 0xdeadbeef));
    CHECK_OK(sop_buf_append_le64(&buf, 0x0102030405060708ull));
    CHECK_OK(sop_buf_append(&buf, "xyz", 3));
    CHECK_OK(sop_buf_append(&buf, NULL, 0));
    static const uint8_t want[] = {0xa5, 0x34, 0x12, 0xef, 0xbe, 0xad, 0xde, 0x08, 0x07,
                                   0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 'x',  'y',  'z'};
    CHECK_EQ_U64(buf.len, sizeof want);
    CHECK(memcmp(buf.data, want, sizeof want) == 0);
    CHECK_OK(sop_buf_status(&buf));
    /* extend: a placeholder patched later (a length or CRC field). */
    uint8_t *slot = sop_buf_extend(&buf, 4);
    CHECK(slot != NULL);
    size_t slot_off = (size_t)(slot - buf.data);
    CHECK_OK(sop_buf_append(&buf, "tail", 4));
    sop_put_le32(buf.data + slot_off, 0xcafef00d);
    CHECK_EQ_U64(sop_get_le32(buf.data + slot_off), 0xcafef00d);
    CHECK(memcmp(buf.data + buf.len - 4, "tail", 4) == 0);
    size_t cap = buf.cap;
    sop_buf_reset(&buf);
    CHECK_EQ_U64(buf.len, 0);
    CHECK_EQ_U64(buf.cap, cap);
    sop_buf_dispose(&buf);
    CHECK(buf.data == NULL && buf.cap == 0);
    /* extend(0) on an empty buffer is not a failure. */
    CHECK(sop_buf_extend(&buf, 0) != NULL);
    sop_buf_dispose(&buf);
    sop_buf_dispose(NULL);
}

TEST(test_util__buf_grows_to_match_reference)
{
    size_t total = 3 << 20;
    uint8_t *ref = malloc(total);
    CHECK(ref != NULL);
    fill_random(ref, total);
    sop_buf buf;
    sop_buf_init(&buf);
    size_t off = 0;
    while (off < total) {
        size_t piece = (size_t)(test_rand() % 5000);
        if (piece > total - off)
            piece = total - off;
        if (sop_buf_append(&buf, ref + off, piece) != SOP_OK) {
            FAIL_AT("append at %zu failed", off);
            break;
        }
        off += piece;
    }
    if (!test_failed_flag) {
        CHECK_EQ_U64(buf.len, total);
        CHECK(buf.cap >= total && buf.cap <= 2 * total);
        CHECK(memcmp(buf.data, ref, total) == 0);
    }
    sop_buf_dispose(&buf);
    free(ref);
}

static void buf_nomem_body(void)
{
    sop_buf buf = SOP_BUF_INIT;
    CHECK_OK(sop_buf_reserve(&buf, 1000));
    CHECK(buf.cap >= 1000);
    long calls = alloc_calls;
    for (int i = 0; i < 250; i++)
        CHECK_OK(sop_buf_append_le32(&buf, (uint32_t)i));
    CHECK_EQ_U64(alloc_calls, calls); /* reserved: no reallocation */
    alloc_fail_after = alloc_calls;
    sop_err_clear();
    static const uint8_t block[100];
    CHECK_RC(SOP_NOMEM, sop_buf_append(&buf, block, sizeof block)); /* 1100 > cap 1024 */
    CHECK(strstr(sop_errmsg(), "buffer") != NULL);
    alloc_fail_after = -1;
    /* Sticky: later appends fail too, even ones that would fit. */
    CHECK_RC(SOP_NOMEM, sop_buf_append_u8(&buf, 1));
    CHECK(sop_buf_extend(&buf, 0) == NULL);
    CHECK_RC(SOP_NOMEM, sop_buf_status(&buf));
    CHECK_EQ_U64(buf.len, 1000);
    for (int i = 0; i < 250; i++)
        CHECK_EQ_U64(sop_get_le32(buf.data + 4 * i), (uint32_t)i);
    sop_buf_reset(&buf);
    CHECK_OK(sop_buf_status(&buf));
    CHECK_OK(sop_buf_append_u8(&buf, 7));
    /* Overflowing sizes fail without allocating. */
    calls = alloc_calls;
    CHECK_RC(SOP_NOMEM, sop_buf_reserve(&buf, SIZE_MAX));
    CHECK_EQ_U64(alloc_calls, calls);
    sop_buf_dispose(&buf);
    CHECK_OK(sop_buf_status(&buf));
}

TEST(test_util__buf_nomem_is_sticky_and_keeps_bytes)
{
    with_counting_allocator(buf_nomem_body);
}

TEST_MAIN(T(test_util__crc32c_known_vectors),
          T(test_util__crc32c_hw_equals_sw_every_length_and_alignment),
          T(test_util__crc32c_hw_equals_sw_long_buffers), T(test_util__crc32c_is_incremental),
          T(test_util__splitmix64_reference_sequence), T(test_util__arena_alignment_and_no_overlap),
          T(test_util__arena_edge_arguments), T(test_util__arena_reset_reuses_one_chunk),
          T(test_util__arena_debug_mode_mallocs_each_allocation),
          T(test_util__arena_nomem_returns_null_and_stays_usable),
          T(test_util__u64map_random_model), T(test_util__u64map_key_zero_is_reserved),
          T(test_util__u64map_nomem_leaves_map_unchanged),
          T(test_util__u64map_replace_during_walk_and_clear),
          T(test_util__buf_appends_little_endian_bytes), T(test_util__buf_grows_to_match_reference),
          T(test_util__buf_nomem_is_sticky_and_keeps_bytes))
