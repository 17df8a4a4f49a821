/*
 * util.h - the bottom layer: CRC-32C, splitmix64, the per-transaction arena,
 * a u64 -> pointer hash map and a growable byte buffer.
 *
 * Nothing here does I/O, takes a lock or keeps global mutable state (the
 * CRC tables are built once, under pthread_once, and are read-only after).
 * Every allocation goes through sop_malloc/sop_realloc/sop_free, so the
 * fail-Nth-malloc loop reaches it. Names follow sop_int.h's foundation
 * helpers (sop_malloc, sop_put_le32): sop_<noun>_<verb>, no double
 * underscore, because every layer above uses them.
 *
 * Guarantees:
 *   (U1) sop_crc32c is CRC-32C (Castagnoli, reflected polynomial 0x82F63B78,
 *        init and final xor ~0): "123456789" -> 0xE3069283. The hardware and
 *        table implementations give the same value for every input, and it is
 *        incremental: crc(a||b) == sop_crc32c(sop_crc32c(0, a), b).
 *   (U2) An arena hands out memory that stays valid and unmoved until
 *        sop_arena_reset/sop_arena_dispose; it never returns a pointer into
 *        memory it has freed. A failed allocation returns NULL and leaves
 *        the arena usable.
 *   (U3) sop_u64map and sop_buf report SOP_NOMEM and are then unchanged
 *        (the map keeps every entry; the buffer keeps its bytes).
 *   (U4) Iteration order of sop_u64map is unspecified and changes with
 *        capacity: nothing that must be deterministic (applying a commit
 *        record, DESIGN D3) may depend on it. Sort first.
 */
#ifndef SOP_UTIL_H
#define SOP_UTIL_H

#include "sop_int.h"

#include <stddef.h>
#include <stdint.h>

/* ---- CRC-32C ---------------------------------------------------------------- */

/* CRC-32C of buf[0..len), continuing from crc (0 to start; pass the previous
 * result to continue). Uses SSE4.2 when the CPU has it (checked once at run
 * time), else slice-by-8 tables. Thread-safe; no allocation. buf may be NULL
 * when len is 0. */
uint32_t sop_crc32c(uint32_t crc, const void *buf, size_t len);

/* The portable table implementation, always available (tests, benchmarks). */
uint32_t sop_crc32c_sw(uint32_t crc, const void *buf, size_t len);
/* 1 if sop_crc32c uses the CPU's crc32 instruction, else 0. */
int sop_crc32c_hw_available(void);
/* The hardware implementation; falls back to sop_crc32c_sw when the CPU (or
 * the build target) has no crc32 instruction, so it is always safe to call. */
uint32_t sop_crc32c_hw(uint32_t crc, const void *buf, size_t len);

/* ---- splitmix64 ----------------------------------------------------------- */

/* Next value of the splitmix64 sequence (Steele, Lea, Flood 2014) and
 * advance *state. Every seeded choice in libsop and its tests uses this,
 * never rand(): state 0 gives 0xe220a8397b1dcdaf first. */
static inline uint64_t sop_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ---- arena ------------------------------------------------------------------ */

/*
 * A bump allocator over a list of chunks, for memory that dies all at once
 * (a transaction's read/write sets, decoded keys, cursor scratch). Not
 * thread-safe: one arena belongs to one transaction, used by one thread at
 * a time.
 *
 * Debug mode (libgit2's GIT_DEBUG_POOL): every allocation is its own
 * sop_malloc of exactly the requested size, so ASan and valgrind see each
 * overflow and each use after reset. It is on when libsop is compiled with
 * -DSOP_DEBUG_ARENA, or when the environment has SOP_DEBUG_ARENA set to a
 * value other than "0" at sop_arena_init, or after sop_arena_set_debug(a, 1).
 */
typedef struct sop_arena_chunk sop_arena_chunk;

typedef struct sop_arena {
    sop_arena_chunk *chunks; /* newest first; chunks->data holds the bump region */
    uint8_t *bump_ptr;       /* next free byte in the current chunk */
    uint8_t *bump_end;       /* one past the current chunk's last byte */
    size_t chunk_bytes;      /* size of an ordinary chunk's data area */
    size_t held_bytes;       /* bytes obtained from sop_malloc, now held */
    /* Debug mode only: every live allocation, freed at reset. */
    void **debug_ptrs;
    size_t debug_count;
    size_t debug_cap;
    int is_debug;
} sop_arena;

#define SOP_ARENA_DEFAULT_CHUNK_BYTES 4096u
#define SOP_ARENA_MAX_ALIGN           4096u

/* Initialise an empty arena; allocates nothing. chunk_bytes is the size of an
 * ordinary chunk (0 = SOP_ARENA_DEFAULT_CHUNK_BYTES); a request larger than a
 * quarter of it gets a chunk of its own. */
void sop_arena_init(sop_arena *arena, size_t chunk_bytes);
/* The same with debug mode given, not read from the environment (getenv
 * walks the environment: hot paths read it once, sop_arena_debug_env). */
void sop_arena_init_as(sop_arena *arena, size_t chunk_bytes, int is_debug);
int sop_arena_debug_env(void);

/* Switch debug mode on or off. Only before the first allocation or after
 * sop_arena_dispose (while the arena holds no memory); otherwise ignored. */
void sop_arena_set_debug(sop_arena *arena, int is_debug);

/* size bytes aligned to align (a power of two up to SOP_ARENA_MAX_ALIGN;
 * 0 = alignof(max_align_t)), uninitialised. NULL if out of memory, if align
 * is not a power of two or is too large, or if size + align overflows. A
 * size of 0 returns a valid, non-NULL pointer to zero usable bytes. */
void *sop_arena_alloc(sop_arena *arena, size_t size, size_t align);

/* A copy of p[0..len) in the arena (byte aligned). NULL if out of memory. */
void *sop_arena_memdup(sop_arena *arena, const void *p, size_t len);

/* Free every allocation at once. Keeps one ordinary chunk, so a reused arena
 * (next transaction) need not call sop_malloc again; debug mode keeps
 * nothing. */
void sop_arena_reset(sop_arena *arena);

/* Free everything; the arena is then as after sop_arena_init (and may be
 * reused). NULL-safe. */
void sop_arena_dispose(sop_arena *arena);

/* Bytes the arena now holds from sop_malloc (for memory budgets). */
static inline size_t sop_arena_held_bytes(const sop_arena *arena)
{
    return arena->held_bytes;
}

/* ---- u64 -> pointer hash map -------------------------------------------------- */

/*
 * Open addressing with linear probing and backward-shift deletion (no
 * tombstones, so probe chains stay short under churn). Capacity is a power
 * of two, grown by doubling at 3/4 load; it never shrinks except at
 * dispose.
 *
 * Key 0 is reserved (it marks an empty slot): put/get/del of 0 return
 * SOP_INVAL. Every other value, including UINT64_MAX, is a valid key.
 * Values are opaque pointers and may be NULL; the map never frees them.
 * Not thread-safe: the owner serialises access.
 */
typedef struct sop_u64map_slot {
    uint64_t key; /* 0 = empty */
    void *value;
} sop_u64map_slot;

typedef struct sop_u64map {
    sop_u64map_slot *slots; /* NULL until the first put */
    size_t slots_cap;       /* 0 or a power of two */
    size_t count;           /* keys present */
} sop_u64map;

/* clang-format off */
#define SOP_U64MAP_INIT {NULL, 0, 0}
/* clang-format on */

/* Initialise an empty map; allocates nothing. */
void sop_u64map_init(sop_u64map *map);

/* Free the slot array (not the values); the map is then empty and reusable.
 * NULL-safe. */
void sop_u64map_dispose(sop_u64map *map);

/* Make room for count keys in total without growing again.
 * SOP_OK, SOP_NOMEM (map unchanged). */
int sop_u64map_reserve(sop_u64map *map, size_t count);

/* Look key up. SOP_OK with *value_out set, SOP_NOTFOUND (*value_out = NULL),
 * SOP_INVAL for key 0. value_out may be NULL (membership test). No
 * allocation. */
int sop_u64map_get(void **value_out, const sop_u64map *map, uint64_t key);

/* Insert key -> value, or replace the value of a present key. *old_out (if
 * old_out is not NULL) receives the replaced value, or NULL if the key was
 * new. Replacing never allocates. SOP_OK, SOP_INVAL (key 0), SOP_NOMEM
 * (growth failed; map unchanged). */
int sop_u64map_put(void **old_out, sop_u64map *map, uint64_t key, void *value);

/* Remove key. *old_out (if not NULL) receives its value. SOP_OK,
 * SOP_NOTFOUND, SOP_INVAL (key 0). Never allocates. */
int sop_u64map_del(void **old_out, sop_u64map *map, uint64_t key);

/* Remove every key; keeps the capacity. */
void sop_u64map_clear(sop_u64map *map);

static inline size_t sop_u64map_count(const sop_u64map *map)
{
    return map->count;
}

/* Iterate: set *pos_idx = 0, then call until it returns SOP_NOTFOUND; each
 * SOP_OK yields one entry. Order is unspecified (U4). The map must not be
 * changed during the walk, except by replacing the value of a present key
 * with sop_u64map_put. key_out and value_out may be NULL.
 *
 *   size_t pos = 0; uint64_t k; void *v;
 *   while (sop_u64map_next(&k, &v, map, &pos) == SOP_OK) ...
 */
int sop_u64map_next(uint64_t *key_out, void **value_out, const sop_u64map *map, size_t *pos_idx);

/* ---- growable byte buffer ------------------------------------------------------ */

/*
 * Bytes for encoding records. Appends return SOP_OK or SOP_NOMEM; the
 * failure is also sticky (libgit2's git_str "oom" state): after one
 * failed append every later append does nothing and returns SOP_NOMEM, so an
 * encoder may make a run of appends and check sop_buf_status() once. A
 * reset or dispose clears the failure. len never exceeds cap; data is NULL
 * while cap is 0.
 */
typedef struct sop_buf {
    uint8_t *data;
    size_t len; /* bytes written */
    size_t cap; /* bytes allocated */
    int is_oom; /* an append failed since the last reset */
} sop_buf;

/* clang-format off */
#define SOP_BUF_INIT {NULL, 0, 0, 0}
/* clang-format on */

void sop_buf_init(sop_buf *buf);
/* Free the bytes; the buffer is then as after init. NULL-safe. */
void sop_buf_dispose(sop_buf *buf);
/* len = 0 and clear the failure; keeps the allocation. */
void sop_buf_reset(sop_buf *buf);
/* SOP_NOMEM if an append failed since the last reset, else SOP_OK. */
static inline int sop_buf_status(const sop_buf *buf)
{
    return buf->is_oom ? SOP_NOMEM : SOP_OK;
}

/* Make cap >= len + extra_len. SOP_OK or SOP_NOMEM (sticky). */
int sop_buf_reserve(sop_buf *buf, size_t extra_len);
/* Append len bytes and return a pointer to them (uninitialised), for fields
 * filled in later (lengths, CRCs). NULL on failure (sticky). The pointer is
 * valid until the next append, reserve or dispose. */
uint8_t *sop_buf_extend(sop_buf *buf, size_t len);
/* Append bytes (data may be NULL when len is 0). */
int sop_buf_append(sop_buf *buf, const void *data, size_t len);
int sop_buf_append_u8(sop_buf *buf, uint8_t v);
int sop_buf_append_le16(sop_buf *buf, uint16_t v);
int sop_buf_append_le32(sop_buf *buf, uint32_t v);
int sop_buf_append_le64(sop_buf *buf, uint64_t v);


/* ---- bounded little-endian reader ---------------------------------------------- */

/*
 * Decoding bytes that came from disk: every read is checked against end; a
 * read past it sets bad and yields zeros (NULL for takes), so a decoder
 * reads field after field and checks bad once. Never reads outside
 * [p, end).
 */
typedef struct sop_rd {
    const uint8_t *p, *end;
    int bad;
} sop_rd;

static inline const uint8_t *sop_rd_take(sop_rd *r, size_t n)
{
    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *q = r->p;
    r->p += n;
    return q;
}
static inline uint8_t sop_rd_u8(sop_rd *r)
{
    const uint8_t *q = sop_rd_take(r, 1);
    return q ? q[0] : 0;
}
static inline uint16_t sop_rd_u16(sop_rd *r)
{
    const uint8_t *q = sop_rd_take(r, 2);
    return q ? sop_get_le16(q) : 0;
}
static inline uint32_t sop_rd_u32(sop_rd *r)
{
    const uint8_t *q = sop_rd_take(r, 4);
    return q ? sop_get_le32(q) : 0;
}
static inline uint64_t sop_rd_u64(sop_rd *r)
{
    const uint8_t *q = sop_rd_take(r, 8);
    return q ? sop_get_le64(q) : 0;
}
/* A u16 length, then that many bytes. */
static inline sop_val sop_rd_val16(sop_rd *r)
{
    sop_val v;
    v.len = sop_rd_u16(r);
    v.data = sop_rd_take(r, v.len);
    return v;
}

#endif /* SOP_UTIL_H */
