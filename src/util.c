/*
 * util.c - CRC-32C, the arena, the u64 hash map and the byte buffer.
 *
 * The contracts (U1)-(U4) are in util.h. Sections:
 *   1. CRC-32C: slice-by-8 tables; SSE4.2 with three interleaved streams.
 *   2. Arena: bump allocation over a chunk list; debug mode.
 *   3. u64map: linear probing, backward-shift deletion.
 *   4. sop_buf.
 *
 * All on-disk integers are little-endian and sop_int.h's sop_get_le32/64 copy
 * raw bytes, so the build target must be little-endian: checked here once.
 */
#include "util.h"

#include <pthread.h>
#include <stdalign.h>
#include <stdlib.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "libsop's on-disk encoding assumes a little-endian CPU (sop_int.h)");

/* ============================================================================ */
/* 1. CRC-32C                                                                    */
/* ============================================================================ */

/*
 * The CRC "register" below is the raw state: ~crc of the public value.
 *
 * Software: slice-by-8 (Intel, Kounavis and Berry 2005). crc_table[k][b] is
 * the register after feeding byte b followed by k zero bytes into a zero
 * register, so eight input bytes are folded with eight lookups.
 *
 * Hardware: the crc32 instruction has a latency of 3 cycles and a
 * throughput of 1 per cycle, so one dependent chain uses a third of the
 * unit. Blocks of 3 * N bytes are processed as three independent streams
 * (the first continues the running CRC, the others start at zero) and joined
 * with the linearity of CRCs:
 *     reg(S, A||B) = shift_|B|(reg(S, A)) ^ reg(0, B)
 * where shift_n(r) is the register after feeding n zero bytes from r. shift
 * is linear in r, so it is four 256-entry table lookups (crc_shift_*),
 * built once for N = CRC_LONG and N = CRC_SHORT (Mark Adler's crc32c.c
 * scheme). Tails shorter than 3 * CRC_SHORT go 8 bytes at a time.
 */

#define CRC32C_POLY 0x82F63B78u /* reflected Castagnoli polynomial */
#define CRC_LONG    8192u
#define CRC_SHORT   256u

static uint32_t crc_table[8][256];
static uint32_t crc_shift_long[4][256];
static uint32_t crc_shift_short[4][256];
static int crc_has_hw;
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static uint32_t crc_shift(uint32_t shift[4][256], uint32_t reg)
{
    return shift[0][reg & 0xff] ^ shift[1][(reg >> 8) & 0xff] ^ shift[2][(reg >> 16) & 0xff] ^
           shift[3][reg >> 24];
}

/* shift[k][b] = register after feeding zero_len zero bytes from b << 8k. */
static void crc_build_shift(uint32_t shift[4][256], size_t zero_len)
{
    uint32_t column[32]; /* the operator applied to each single-bit register */
    for (unsigned bit = 0; bit < 32; bit++) {
        uint32_t reg = 1u << bit;
        for (size_t i = 0; i < zero_len; i++)
            reg = crc_table[0][reg & 0xff] ^ (reg >> 8);
        column[bit] = reg;
    }
    for (unsigned k = 0; k < 4; k++) {
        for (unsigned b = 0; b < 256; b++) {
            uint32_t in = (uint32_t)b << (8 * k), out = 0;
            for (unsigned bit = 0; bit < 32; bit++)
                if (in & (1u << bit))
                    out ^= column[bit];
            shift[k][b] = out;
        }
    }
}

#if defined(__x86_64__) || defined(__i386__)
#define SOP_CRC_HW_X86 1
#include <nmmintrin.h>

static int cpu_has_sse42(void)
{
    __builtin_cpu_init(); /* harmless if already done; required before constructors ran */
    return __builtin_cpu_supports("sse4.2") ? 1 : 0;
}
#else
static int cpu_has_sse42(void)
{
    return 0;
}
#endif

static void crc_init(void)
{
    for (unsigned b = 0; b < 256; b++) {
        uint32_t reg = b;
        for (int i = 0; i < 8; i++)
            reg = (reg & 1) ? (reg >> 1) ^ CRC32C_POLY : reg >> 1;
        crc_table[0][b] = reg;
    }
    for (unsigned b = 0; b < 256; b++) {
        uint32_t reg = crc_table[0][b];
        for (unsigned k = 1; k < 8; k++) {
            reg = crc_table[0][reg & 0xff] ^ (reg >> 8);
            crc_table[k][b] = reg;
        }
    }
    crc_has_hw = cpu_has_sse42();
    if (crc_has_hw) {
        crc_build_shift(crc_shift_long, CRC_LONG);
        crc_build_shift(crc_shift_short, CRC_SHORT);
    }
}

static uint32_t crc_sw_reg(uint32_t reg, const uint8_t *p, size_t len)
{
    while (len && ((uintptr_t)p & 7)) {
        reg = crc_table[0][(reg ^ *p++) & 0xff] ^ (reg >> 8);
        len--;
    }
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8); /* little-endian: byte 0 is the low byte */
        w ^= reg;
        reg = crc_table[7][w & 0xff] ^ crc_table[6][(w >> 8) & 0xff] ^
              crc_table[5][(w >> 16) & 0xff] ^ crc_table[4][(w >> 24) & 0xff] ^
              crc_table[3][(w >> 32) & 0xff] ^ crc_table[2][(w >> 40) & 0xff] ^
              crc_table[1][(w >> 48) & 0xff] ^ crc_table[0][w >> 56];
        p += 8;
        len -= 8;
    }
    while (len--)
        reg = crc_table[0][(reg ^ *p++) & 0xff] ^ (reg >> 8);
    return reg;
}

#ifdef SOP_CRC_HW_X86
static inline uint64_t load_u64(const uint8_t *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* Three streams over block_len-byte thirds of each 3*block_len chunk. */
__attribute__((target("sse4.2"))) static uint32_t
crc_hw_3way(uint32_t reg, const uint8_t **pp, size_t *len, size_t block_len, uint32_t shift[4][256])
{
    const uint8_t *p = *pp;
    uint64_t r0 = reg;
    while (*len >= 3 * block_len) {
        uint64_t r1 = 0, r2 = 0;
        const uint8_t *end = p + block_len;
        do {
            r0 = _mm_crc32_u64(r0, load_u64(p));
            r1 = _mm_crc32_u64(r1, load_u64(p + block_len));
            r2 = _mm_crc32_u64(r2, load_u64(p + 2 * block_len));
            p += 8;
        } while (p < end);
        r0 = crc_shift(shift, (uint32_t)r0) ^ (uint32_t)r1;
        r0 = crc_shift(shift, (uint32_t)r0) ^ (uint32_t)r2;
        p += 2 * block_len;
        *len -= 3 * block_len;
    }
    *pp = p;
    return (uint32_t)r0;
}

__attribute__((target("sse4.2"))) static uint32_t crc_hw_reg(uint32_t reg, const uint8_t *p,
                                                             size_t len)
{
    reg = crc_hw_3way(reg, &p, &len, CRC_LONG, crc_shift_long);
    reg = crc_hw_3way(reg, &p, &len, CRC_SHORT, crc_shift_short);
    uint64_t r = reg;
    while (len >= 8) {
        r = _mm_crc32_u64(r, load_u64(p));
        p += 8;
        len -= 8;
    }
    reg = (uint32_t)r;
    while (len--)
        reg = _mm_crc32_u8(reg, *p++);
    return reg;
}
#endif

uint32_t sop_crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
    pthread_once(&crc_once, crc_init);
    return ~crc_sw_reg(~crc, buf, len);
}

int sop_crc32c_hw_available(void)
{
    pthread_once(&crc_once, crc_init);
    return crc_has_hw;
}

uint32_t sop_crc32c_hw(uint32_t crc, const void *buf, size_t len)
{
    pthread_once(&crc_once, crc_init);
#ifdef SOP_CRC_HW_X86
    if (crc_has_hw)
        return ~crc_hw_reg(~crc, buf, len);
#endif
    return ~crc_sw_reg(~crc, buf, len);
}

uint32_t sop_crc32c(uint32_t crc, const void *buf, size_t len)
{
    return sop_crc32c_hw(crc, buf, len);
}

/* ============================================================================ */
/* 2. Arena                                                                      */
/* ============================================================================ */

struct sop_arena_chunk {
    sop_arena_chunk *next;
    size_t cap;     /* bytes in data[] */
    uint8_t data[]; /* alignment is computed on addresses, not assumed */
};

#define ARENA_DEFAULT_ALIGN alignof(max_align_t)

int sop_arena_debug_env(void)
{
#ifdef SOP_DEBUG_ARENA
    return 1;
#else
    const char *v = getenv("SOP_DEBUG_ARENA");
    return v && v[0] && strcmp(v, "0") != 0;
#endif
}

void sop_arena_init_as(sop_arena *arena, size_t chunk_bytes, int is_debug)
{
    memset(arena, 0, sizeof *arena);
    arena->chunk_bytes = chunk_bytes ? chunk_bytes : SOP_ARENA_DEFAULT_CHUNK_BYTES;
    arena->is_debug = is_debug ? 1 : 0;
}

void sop_arena_init(sop_arena *arena, size_t chunk_bytes)
{
    sop_arena_init_as(arena, chunk_bytes, sop_arena_debug_env());
}

void sop_arena_set_debug(sop_arena *arena, int is_debug)
{
    if (arena->chunks == NULL && arena->debug_count == 0)
        arena->is_debug = is_debug ? 1 : 0;
}

static size_t align_pad(const uint8_t *p, size_t align)
{
    return (size_t)(-(uintptr_t)p) & (align - 1);
}

static void *arena_alloc_debug(sop_arena *arena, size_t size, size_t align)
{
    if (arena->debug_count == arena->debug_cap) {
        size_t cap = arena->debug_cap ? arena->debug_cap * 2 : 64;
        void **ptrs;
        if (cap > SIZE_MAX / sizeof *ptrs)
            return NULL;
        ptrs = sop_realloc(arena->debug_ptrs, cap * sizeof *ptrs);
        if (!ptrs)
            return NULL;
        arena->debug_ptrs = ptrs;
        arena->debug_cap = cap;
    }
    /* Up to max_align_t, malloc's own alignment suffices and the block ends
     * exactly at size, so ASan flags a one-byte overflow. */
    size_t raw_len = align <= ARENA_DEFAULT_ALIGN ? size : size + align - 1;
    uint8_t *raw = sop_malloc(raw_len);
    if (!raw)
        return NULL;
    arena->debug_ptrs[arena->debug_count++] = raw;
    arena->held_bytes += raw_len;
    return raw + align_pad(raw, align);
}

static sop_arena_chunk *arena_new_chunk(sop_arena *arena, size_t cap)
{
    if (cap > SIZE_MAX - sizeof(sop_arena_chunk))
        return NULL;
    sop_arena_chunk *chunk = sop_malloc(sizeof *chunk + cap);
    if (!chunk)
        return NULL;
    chunk->cap = cap;
    arena->held_bytes += sizeof *chunk + cap;
    return chunk;
}

void *sop_arena_alloc(sop_arena *arena, size_t size, size_t align)
{
    if (align == 0)
        align = ARENA_DEFAULT_ALIGN;
    if ((align & (align - 1)) != 0 || align > SOP_ARENA_MAX_ALIGN)
        return NULL;
    if (size > SIZE_MAX - align)
        return NULL;
    if (arena->is_debug)
        return arena_alloc_debug(arena, size, align);

    if (arena->bump_ptr) {
        size_t pad = align_pad(arena->bump_ptr, align);
        size_t room = (size_t)(arena->bump_end - arena->bump_ptr);
        if (pad <= room && size <= room - pad) {
            uint8_t *p = arena->bump_ptr + pad;
            arena->bump_ptr = p + size;
            return p;
        }
    }

    size_t need = size + align - 1; /* worst-case padding; no overflow, checked above */
    if (need > arena->chunk_bytes / 4) {
        /* A chunk of its own, linked behind the current one so the current
         * bump region is not abandoned. */
        sop_arena_chunk *chunk = arena_new_chunk(arena, need);
        if (!chunk)
            return NULL;
        if (arena->chunks) {
            chunk->next = arena->chunks->next;
            arena->chunks->next = chunk;
        } else {
            chunk->next = NULL;
            arena->chunks = chunk; /* bump region stays empty: not an ordinary chunk */
        }
        return chunk->data + align_pad(chunk->data, align);
    }

    sop_arena_chunk *chunk = arena_new_chunk(arena, arena->chunk_bytes);
    if (!chunk)
        return NULL;
    chunk->next = arena->chunks;
    arena->chunks = chunk;
    uint8_t *p = chunk->data + align_pad(chunk->data, align);
    arena->bump_ptr = p + size;
    arena->bump_end = chunk->data + chunk->cap;
    return p;
}

void *sop_arena_memdup(sop_arena *arena, const void *p, size_t len)
{
    void *q = sop_arena_alloc(arena, len, 1);
    if (q && len)
        memcpy(q, p, len);
    return q;
}

static void arena_free_debug(sop_arena *arena)
{
    for (size_t i = 0; i < arena->debug_count; i++)
        sop_free(arena->debug_ptrs[i]);
    sop_free(arena->debug_ptrs);
    arena->debug_ptrs = NULL;
    arena->debug_count = 0;
    arena->debug_cap = 0;
}

void sop_arena_reset(sop_arena *arena)
{
    sop_arena_chunk *keep = NULL;
    sop_arena_chunk *chunk = arena->chunks;
    arena_free_debug(arena);
    arena->held_bytes = 0;
    while (chunk) {
        sop_arena_chunk *next = chunk->next;
        if (!keep && chunk->cap == arena->chunk_bytes) {
            keep = chunk;
            keep->next = NULL;
            arena->held_bytes = sizeof *keep + keep->cap;
        } else {
            sop_free(chunk);
        }
        chunk = next;
    }
    arena->chunks = keep;
    arena->bump_ptr = keep ? keep->data : NULL;
    arena->bump_end = keep ? keep->data + keep->cap : NULL;
}

void sop_arena_dispose(sop_arena *arena)
{
    if (!arena)
        return;
    sop_arena_reset(arena);
    sop_free(arena->chunks);
    arena->chunks = NULL;
    arena->bump_ptr = NULL;
    arena->bump_end = NULL;
    arena->held_bytes = 0;
}

/* ============================================================================ */
/* 3. u64map                                                                     */
/* ============================================================================ */

#define U64MAP_MIN_CAP 16u

/* murmur3's fmix64: logical ids are dense and sequential, so the low bits of
 * the key alone would cluster. */
static inline size_t u64map_home(uint64_t key, size_t mask)
{
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    key *= 0xc4ceb9fe1a85ec53ull;
    key ^= key >> 33;
    return (size_t)key & mask;
}

/* Largest count a table of cap slots holds: 3/4 load. */
static inline size_t u64map_max_count(size_t cap)
{
    return cap - cap / 4;
}

/* Slot holding key, or the empty slot where it would go. slots_cap > 0 and
 * the table always has an empty slot (load <= 3/4), so this terminates. */
static size_t u64map_probe(const sop_u64map *map, uint64_t key)
{
    size_t mask = map->slots_cap - 1;
    size_t idx = u64map_home(key, mask);
    while (map->slots[idx].key != 0 && map->slots[idx].key != key)
        idx = (idx + 1) & mask;
    return idx;
}

static int u64map_rehash(sop_u64map *map, size_t new_cap)
{
    sop_u64map_slot *slots = sop_calloc(new_cap, sizeof *slots);
    if (!slots)
        return sop_err(SOP_NOMEM, "u64map: no memory for %zu slots", new_cap);
    sop_u64map old = *map;
    map->slots = slots;
    map->slots_cap = new_cap;
    for (size_t i = 0; i < old.slots_cap; i++) {
        if (old.slots[i].key != 0)
            map->slots[u64map_probe(map, old.slots[i].key)] = old.slots[i];
    }
    sop_free(old.slots);
    return SOP_OK;
}

void sop_u64map_init(sop_u64map *map)
{
    map->slots = NULL;
    map->slots_cap = 0;
    map->count = 0;
}

void sop_u64map_dispose(sop_u64map *map)
{
    if (!map)
        return;
    sop_free(map->slots);
    sop_u64map_init(map);
}

int sop_u64map_reserve(sop_u64map *map, size_t count)
{
    size_t cap = map->slots_cap ? map->slots_cap : U64MAP_MIN_CAP;
    while (u64map_max_count(cap) < count) {
        if (cap > SIZE_MAX / 2 / sizeof(sop_u64map_slot))
            return sop_err(SOP_NOMEM, "u64map: %zu keys is too many", count);
        cap *= 2;
    }
    if (cap == map->slots_cap)
        return SOP_OK;
    return u64map_rehash(map, cap);
}

int sop_u64map_get(void **value_out, const sop_u64map *map, uint64_t key)
{
    if (value_out)
        *value_out = NULL;
    if (key == 0)
        return SOP_INVAL;
    if (map->count == 0)
        return SOP_NOTFOUND;
    size_t idx = u64map_probe(map, key);
    if (map->slots[idx].key == 0)
        return SOP_NOTFOUND;
    if (value_out)
        *value_out = map->slots[idx].value;
    return SOP_OK;
}

int sop_u64map_put(void **old_out, sop_u64map *map, uint64_t key, void *value)
{
    int rc;
    if (old_out)
        *old_out = NULL;
    if (key == 0)
        return SOP_INVAL;
    if (map->slots_cap) {
        size_t idx = u64map_probe(map, key);
        if (map->slots[idx].key == key) {
            if (old_out)
                *old_out = map->slots[idx].value;
            map->slots[idx].value = value;
            return SOP_OK;
        }
    }
    if (map->slots_cap == 0 || map->count + 1 > u64map_max_count(map->slots_cap)) {
        if ((rc = sop_u64map_reserve(map, map->count + 1)) != SOP_OK)
            return rc;
    }
    size_t idx = u64map_probe(map, key);
    map->slots[idx].key = key;
    map->slots[idx].value = value;
    map->count++;
    return SOP_OK;
}

int sop_u64map_del(void **old_out, sop_u64map *map, uint64_t key)
{
    if (old_out)
        *old_out = NULL;
    if (key == 0)
        return SOP_INVAL;
    if (map->count == 0)
        return SOP_NOTFOUND;
    size_t mask = map->slots_cap - 1;
    size_t hole = u64map_probe(map, key);
    if (map->slots[hole].key == 0)
        return SOP_NOTFOUND;
    if (old_out)
        *old_out = map->slots[hole].value;
    /* Backward shift: walk the cluster after the hole; an entry whose home
     * is not cyclically in (hole, idx] would be unreachable past the hole,
     * so it moves into it and its old slot becomes the hole. */
    for (size_t idx = (hole + 1) & mask; map->slots[idx].key != 0; idx = (idx + 1) & mask) {
        size_t home = u64map_home(map->slots[idx].key, mask);
        int stays = hole <= idx ? (hole < home && home <= idx) : (hole < home || home <= idx);
        if (stays)
            continue;
        map->slots[hole] = map->slots[idx];
        hole = idx;
    }
    map->slots[hole].key = 0;
    map->slots[hole].value = NULL;
    map->count--;
    return SOP_OK;
}

void sop_u64map_clear(sop_u64map *map)
{
    if (map->slots)
        memset(map->slots, 0, map->slots_cap * sizeof *map->slots);
    map->count = 0;
}

int sop_u64map_next(uint64_t *key_out, void **value_out, const sop_u64map *map, size_t *pos_idx)
{
    for (size_t idx = *pos_idx; idx < map->slots_cap; idx++) {
        if (map->slots[idx].key != 0) {
            if (key_out)
                *key_out = map->slots[idx].key;
            if (value_out)
                *value_out = map->slots[idx].value;
            *pos_idx = idx + 1;
            return SOP_OK;
        }
    }
    *pos_idx = map->slots_cap;
    return SOP_NOTFOUND;
}

/* ============================================================================ */
/* 4. sop_buf                                                                    */
/* ============================================================================ */

#define BUF_MIN_CAP 64u

void sop_buf_init(sop_buf *buf)
{
    buf->data = NULL;
    buf->len = 0;
    buf->cap = 0;
    buf->is_oom = 0;
}

void sop_buf_dispose(sop_buf *buf)
{
    if (!buf)
        return;
    sop_free(buf->data);
    sop_buf_init(buf);
}

void sop_buf_reset(sop_buf *buf)
{
    buf->len = 0;
    buf->is_oom = 0;
}

int sop_buf_reserve(sop_buf *buf, size_t extra_len)
{
    if (buf->is_oom)
        return SOP_NOMEM;
    if (buf->data && extra_len <= buf->cap - buf->len)
        return SOP_OK; /* an empty buffer allocates even for 0, so extend(0) is non-NULL */
    if (extra_len > SIZE_MAX - buf->len) {
        buf->is_oom = 1;
        return sop_err(SOP_NOMEM, "buffer: %zu + %zu bytes overflows", buf->len, extra_len);
    }
    size_t need = buf->len + extra_len;
    size_t cap = buf->cap > BUF_MIN_CAP ? buf->cap : BUF_MIN_CAP;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *data = sop_realloc(buf->data, cap);
    if (!data) {
        buf->is_oom = 1;
        return sop_err(SOP_NOMEM, "buffer: no memory for %zu bytes", cap);
    }
    buf->data = data;
    buf->cap = cap;
    return SOP_OK;
}

uint8_t *sop_buf_extend(sop_buf *buf, size_t len)
{
    if (sop_buf_reserve(buf, len) != SOP_OK)
        return NULL;
    uint8_t *p = buf->data + buf->len;
    buf->len += len;
    return p;
}

int sop_buf_append(sop_buf *buf, const void *data, size_t len)
{
    uint8_t *p = sop_buf_extend(buf, len);
    if (!p)
        return SOP_NOMEM;
    if (len)
        memcpy(p, data, len);
    return SOP_OK;
}

int sop_buf_append_u8(sop_buf *buf, uint8_t v)
{
    return sop_buf_append(buf, &v, 1);
}

int sop_buf_append_le16(sop_buf *buf, uint16_t v)
{
    uint8_t *p = sop_buf_extend(buf, 2);
    if (!p)
        return SOP_NOMEM;
    sop_put_le16(p, v);
    return SOP_OK;
}

int sop_buf_append_le32(sop_buf *buf, uint32_t v)
{
    uint8_t *p = sop_buf_extend(buf, 4);
    if (!p)
        return SOP_NOMEM;
    sop_put_le32(p, v);
    return SOP_OK;
}

int sop_buf_append_le64(sop_buf *buf, uint64_t v)
{
    uint8_t *p = sop_buf_extend(buf, 8);
    if (!p)
        return SOP_NOMEM;
    sop_put_le64(p, v);
    return SOP_OK;
}
