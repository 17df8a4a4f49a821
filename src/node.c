/*
 * node.c - B+tree node images: validation, read accessors and edits.
 *
 * The format table and the guarantees (N1)-(N8) are in node.h. How the
 * edits keep them:
 *
 *   - A new slot is always written into the free space after data_len, so it
 *     never overlaps a live slot, and the offset array is shifted to put it
 *     at its index. Removing or shrinking a slot turns its bytes into
 *     garbage (or shortens data_len when the slot is the last one in the
 *     data area), so garbage == data_len - live always holds (N1).
 *   - When the offset array or the free space is too small, the node is
 *     rebuilt into a new buffer: compacted (slots in index order, garbage 0)
 *     with capacity and free space grown geometrically (N7). The old buffer
 *     is freed only after the new slot is written, so key and value bytes
 *     may point into the node's own image. Rebuilding allocates before it
 *     changes anything, so SOP_NOMEM leaves the node as it was (N4).
 *   - An edit that leaves garbage above half of data_len rebuilds the node
 *     at the same size; if that allocation fails the node stays valid, only
 *     less dense (N8), and the next edit tries again.
 *
 * Every length read from an image is checked by sop_node__validate before
 * any accessor trusts it; the accessors themselves only assert.
 *
 * Sections: helpers, validation, read accessors, building and editing.
 */
#include "node.h"

#include <inttypes.h>
#include <stdatomic.h>

/* ---- helpers ---------------------------------------------------------------- */

/* Header field offsets (table in node.h). */
#define H_KIND       0
#define H_FLAGS      1
#define H_HINT_POS   2
#define H_COUNT      4
#define H_CAP        8
#define H_DATA_LEN   12
#define H_GARBAGE    16
#define H_RESERVED32 20
#define H_LID        24
#define H_CHILD0     32

#define VKIND_INLINE  0
#define VKIND_BLOB    1
#define SLOT_HEAD_LEN 3 /* u16 key_len + u8 vkind */
#define SEQ_LEN       8
#define VALUE_LEN_LEN 4       /* u32 value_len in leaf slots */
#define CHILD_LEN     8       /* u64 child in branch slots */
#define OFF_LEN       8       /* one off[] entry: u32 offset, u32 hint */
#define HINT_NONE     0xFFFFu /* H_HINT_POS: the hints are not maintained */

/* Room a fresh node starts with (sop_node__new). */
#define NEW_NODE_CAP       8
#define NEW_NODE_DATA_ROOM 256

static inline uint32_t h_count(const uint8_t *img)
{
    return sop_get_le32(img + H_COUNT);
}
static inline uint32_t h_cap(const uint8_t *img)
{
    return sop_get_le32(img + H_CAP);
}
static inline uint32_t h_data_len(const uint8_t *img)
{
    return sop_get_le32(img + H_DATA_LEN);
}
static inline uint32_t h_garbage(const uint8_t *img)
{
    return sop_get_le32(img + H_GARBAGE);
}
static inline int h_is_leaf(const uint8_t *img)
{
    return img[H_KIND] == SOP_NODE_LEAF;
}
/* Bytes of the seq field in this node's slots: 8 in dup nodes, else 0. */
static inline size_t h_seq_len(const uint8_t *img)
{
    return (img[H_FLAGS] & SOP_NODE_DUP) ? SEQ_LEN : 0;
}
static inline uint64_t h_lid(const uint8_t *img)
{
    return sop_get_le64(img + H_LID);
}
/* Offset of the data area from the image start. */
static inline size_t data_start(const uint8_t *img)
{
    return SOP_NODE_HEADER_LEN + (size_t)OFF_LEN * h_cap(img);
}
static inline uint32_t slot_off(const uint8_t *img, uint32_t idx)
{
    return sop_get_le32(img + SOP_NODE_HEADER_LEN + (size_t)OFF_LEN * idx);
}
static inline const uint8_t *slot_ptr(const uint8_t *img, uint32_t idx)
{
    return img + data_start(img) + slot_off(img, idx);
}
static inline uint32_t slot_hint(const uint8_t *img, uint32_t idx)
{
    return sop_get_le32(img + SOP_NODE_HEADER_LEN + (size_t)OFF_LEN * idx + 4);
}
static inline unsigned h_hint_pos(const uint8_t *img)
{
    return sop_get_le16(img + H_HINT_POS);
}

/* A key's hint: its bytes [pos, pos + 4) as a big-endian number, missing
 * bytes as 0. Among keys that share their first pos bytes, hint(a) <
 * hint(b) implies a < b and a < b implies hint(a) <= hint(b) (bytewise). */
static inline uint32_t key_hint(const uint8_t *key, size_t len, size_t pos)
{
    if (pos + 4 <= len) {
        uint32_t h;
        memcpy(&h, key + pos, 4);
        return __builtin_bswap32(h);
    }
    uint32_t h = 0;
    for (size_t i = 0; i < 4; i++)
        h = h << 8 | (pos + i < len ? key[pos + i] : 0u);
    return h;
}

/* Length of the common prefix of a[0..n) and b[0..n). */
static inline size_t common_prefix(const uint8_t *a, const uint8_t *b, size_t n)
{
    size_t i = 0;
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

/* The longest prefix all keys share. In bytewise order it is that of the
 * first and the last key, checked against each key with one memcmp; other
 * orders fall back to shrinking it key by key. */
static size_t shared_prefix(const uint8_t *img)
{
    uint32_t count = h_count(img);
    if (count == 0)
        return 0;
    const uint8_t *p0 = slot_ptr(img, 0), *pl = slot_ptr(img, count - 1);
    const uint8_t *k0 = p0 + SLOT_HEAD_LEN;
    size_t len0 = sop_get_le16(p0), lenl = sop_get_le16(pl);
    size_t pos = common_prefix(k0, pl + SLOT_HEAD_LEN, len0 < lenl ? len0 : lenl);
    for (uint32_t i = 1; i + 1 < count && pos; i++) {
        const uint8_t *p = slot_ptr(img, i);
        size_t len = sop_get_le16(p);
        if (len < pos || memcmp(p + SLOT_HEAD_LEN, k0, pos) != 0)
            pos = common_prefix(p + SLOT_HEAD_LEN, k0, len < pos ? len : pos);
    }
    return pos;
}

/* The hints (node.h, N9) of an image whose slots are in place. */
static void hints_compute(uint8_t *img)
{
    uint32_t count = h_count(img);
    size_t pos = shared_prefix(img);
    sop_put_le16(img + H_HINT_POS, (uint16_t)pos); /* <= SOP_MAX_KEY_LEN < HINT_NONE */
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *p = slot_ptr(img, i);
        sop_put_le32(img + SOP_NODE_HEADER_LEN + (size_t)OFF_LEN * i + 4,
                     key_hint(p + SLOT_HEAD_LEN, sop_get_le16(p), pos));
    }
}

/* An edit changed the set of keys: the hints are stale until sealed. */
static inline void hints_drop(uint8_t *img)
{
    sop_put_le16(img + H_HINT_POS, HINT_NONE);
}

/* Length of the slot at p in a node of this kind; p's slot is known to lie
 * inside the data area (validated or built here). */
static size_t slot_len_at(const uint8_t *p, int is_leaf, size_t seq_len)
{
    size_t base = SLOT_HEAD_LEN + sop_get_le16(p) + seq_len;
    if (!is_leaf)
        return base + CHILD_LEN;
    if (p[2] == VKIND_BLOB)
        return base + VALUE_LEN_LEN + SOP_LOC_DISK_LEN;
    return base + VALUE_LEN_LEN + sop_get_le32(p + base);
}

static size_t slot_len(const uint8_t *img, uint32_t idx)
{
    return slot_len_at(slot_ptr(img, idx), h_is_leaf(img), h_seq_len(img));
}

/* Compare (a, a_seq) with (b, b_seq): key under cmp (NULL or fn NULL =
 * bytewise), then seq unsigned. */
static int compare_key_seq(const sop_keycmp *cmp, const void *a, size_t a_len, uint64_t a_seq,
                           const void *b, size_t b_len, uint64_t b_seq)
{
    sop_val va = {a, a_len}, vb = {b, b_len};
    return sop_keycmp__items(cmp, &va, a_seq, &vb, b_seq);
}

/* Bytes a leaf slot takes for this key and value. */
static size_t leaf_slot_len(size_t key_len, size_t seq_len, const sop_leafval *v)
{
    size_t value_part = v->is_blob ? SOP_LOC_DISK_LEN : v->inline_val.len;
    return SLOT_HEAD_LEN + key_len + seq_len + VALUE_LEN_LEN + value_part;
}

static size_t branch_slot_len(size_t key_len, size_t seq_len)
{
    return SLOT_HEAD_LEN + key_len + seq_len + CHILD_LEN;
}

/* ---- validation -------------------------------------------------------------- */

int sop_node__validate(const uint8_t *img, size_t len, const sop_keycmp *cmp)
{
    if (len < SOP_NODE_HEADER_LEN || !img)
        return SOP_CORRUPT_BKPT("node image is %zu bytes, shorter than its %d-byte header", len,
                                SOP_NODE_HEADER_LEN);

    uint64_t lid = h_lid(img);
    int kind = img[H_KIND];
    if (kind != SOP_NODE_LEAF && kind != SOP_NODE_BRANCH)
        return SOP_CORRUPT_BKPT("node %" PRIu64 ": bad kind %d", lid, kind);
    if (img[H_FLAGS] & ~SOP_NODE_DUP)
        return SOP_CORRUPT_BKPT("node %" PRIu64 ": unknown flags 0x%x", lid, img[H_FLAGS]);
    if (sop_get_le32(img + H_RESERVED32) != 0)
        return SOP_CORRUPT_BKPT("node %" PRIu64 ": reserved header field not 0", lid);
    unsigned hint_pos = h_hint_pos(img);
    if (hint_pos != HINT_NONE && hint_pos > SOP_MAX_KEY_LEN)
        return SOP_CORRUPT_BKPT("node %" PRIu64 ": hint position %u", lid, hint_pos);

    int is_leaf = kind == SOP_NODE_LEAF;
    size_t seq_len = h_seq_len(img);
    uint32_t count = h_count(img), cap = h_cap(img);
    uint32_t data_len = h_data_len(img), garbage = h_garbage(img);
    if (count > cap)
        return SOP_CORRUPT_BKPT("node %" PRIu64 ": count %" PRIu32 " > cap %" PRIu32, lid, count,
                                cap);
    uint64_t image_len = SOP_NODE_HEADER_LEN + (uint64_t)OFF_LEN * cap + data_len;
    if (image_len != len || image_len > SOP_NODE_MAX_IMAGE_LEN)
        return SOP_CORRUPT_BKPT("node %" PRIu64 ": header says %" PRIu64 " bytes (cap %" PRIu32
                                ", data_len %" PRIu32 "), image has %zu",
                                lid, image_len, cap, data_len, len);
    if (garbage > data_len)
        return SOP_CORRUPT_BKPT("node %" PRIu64 ": garbage %" PRIu32 " > data_len %" PRIu32, lid,
                                garbage, data_len);
    if (is_leaf && sop_get_le64(img + H_CHILD0) != 0)
        return SOP_CORRUPT_BKPT("node %" PRIu64 ": leaf with a child0", lid);

    const uint8_t *data = img + data_start(img);
    const uint8_t *prev_key = NULL;
    size_t prev_key_len = 0;
    uint64_t prev_seq = 0, live = 0;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t off = slot_off(img, i);
        /* 64-bit sums: off and lengths are u32 from the image, so no sum
         * below can wrap, and each bound is checked before the read. */
        uint64_t end = (uint64_t)off + SLOT_HEAD_LEN;
        if (end > data_len)
            return SOP_CORRUPT_BKPT("node %" PRIu64 ": slot %" PRIu32 " offset %" PRIu32
                                    " outside data area of %" PRIu32 " bytes",
                                    lid, i, off, data_len);
        const uint8_t *p = data + off;
        size_t key_len = sop_get_le16(p);
        int vkind = p[2];
        if (key_len < 1 || key_len > SOP_MAX_KEY_LEN)
            return SOP_CORRUPT_BKPT("node %" PRIu64 ": slot %" PRIu32 " key length %zu", lid, i,
                                    key_len);
        end += key_len + seq_len;
        if (is_leaf) {
            if (vkind != VKIND_INLINE && vkind != VKIND_BLOB)
                return SOP_CORRUPT_BKPT("node %" PRIu64 ": slot %" PRIu32 " bad vkind %d", lid, i,
                                        vkind);
            end += VALUE_LEN_LEN;
            if (end > data_len)
                return SOP_CORRUPT_BKPT("node %" PRIu64 ": slot %" PRIu32 " at offset %" PRIu32
                                        " runs past the data area",
                                        lid, i, off);
            uint32_t value_len = sop_get_le32(data + end - VALUE_LEN_LEN);
            if (value_len > SOP_MAX_VALUE_LEN)
                return SOP_CORRUPT_BKPT("node %" PRIu64 ": slot %" PRIu32 " value length %" PRIu32,
                                        lid, i, value_len);
            end += vkind == VKIND_BLOB ? SOP_LOC_DISK_LEN : value_len;
        } else {
            if (vkind != 0)
                return SOP_CORRUPT_BKPT("node %" PRIu64 ": separator %" PRIu32 " bad kind byte %d",
                                        lid, i, vkind);
            end += CHILD_LEN;
        }
        if (end > data_len)
            return SOP_CORRUPT_BKPT("node %" PRIu64 ": slot %" PRIu32 " at offset %" PRIu32
                                    " runs past the data area",
                                    lid, i, off);
        live += end - off;

        if (hint_pos != HINT_NONE) {
            /* (N9) every key holds the shared prefix, and its hint */
            const uint8_t *k0 = i ? data + slot_off(img, 0) + SLOT_HEAD_LEN : p + SLOT_HEAD_LEN;
            if (key_len < hint_pos || memcmp(p + SLOT_HEAD_LEN, k0, hint_pos) != 0)
                return SOP_CORRUPT_BKPT("node %" PRIu64 ": slot %" PRIu32
                                        " lacks the %u-byte prefix of the hints",
                                        lid, i, hint_pos);
            if (slot_hint(img, i) != key_hint(p + SLOT_HEAD_LEN, key_len, hint_pos))
                return SOP_CORRUPT_BKPT("node %" PRIu64 ": slot %" PRIu32 " has a wrong hint", lid,
                                        i);
        }
        uint64_t seq = seq_len ? sop_get_le64(p + SLOT_HEAD_LEN + key_len) : 0;
        if (cmp && prev_key &&
            compare_key_seq(cmp, prev_key, prev_key_len, prev_seq, p + SLOT_HEAD_LEN, key_len,
                            seq) >= 0)
            return SOP_CORRUPT_BKPT("node %" PRIu64 ": slot %" PRIu32 " out of order", lid, i);
        prev_key = p + SLOT_HEAD_LEN;
        prev_key_len = key_len;
        prev_seq = seq;
    }
    /* live cannot wrap: count < 2^30 slots of < 2^32 bytes each. */
    if (live + garbage != data_len)
        return SOP_CORRUPT_BKPT("node %" PRIu64 ": %" PRIu64 " live + %" PRIu32
                                " garbage bytes != data_len %" PRIu32,
                                lid, live, garbage, data_len);
    return SOP_OK;
}

/* ---- read accessors ------------------------------------------------------------ */

int sop_node__kind(const uint8_t *img)
{
    return img[H_KIND];
}

int sop_node__is_leaf(const uint8_t *img)
{
    return h_is_leaf(img);
}

int sop_node__is_dup(const uint8_t *img)
{
    return (img[H_FLAGS] & SOP_NODE_DUP) != 0;
}

uint32_t sop_node__count(const uint8_t *img)
{
    return h_count(img);
}

uint64_t sop_node__lid(const uint8_t *img)
{
    return h_lid(img);
}

size_t sop_node__image_len(const uint8_t *img)
{
    return data_start(img) + h_data_len(img);
}

size_t sop_node__used_bytes(const uint8_t *img)
{
    /* Exact because garbage == data_len - live (N1). */
    return SOP_NODE_HEADER_LEN + (size_t)OFF_LEN * h_count(img) + h_data_len(img) - h_garbage(img);
}

size_t sop_node__slot_bytes(const uint8_t *img, uint32_t idx)
{
    assert(idx < h_count(img));
    return slot_len(img, idx);
}

uint64_t sop_node__child(const uint8_t *img, uint32_t idx)
{
    assert(!h_is_leaf(img) && idx <= h_count(img));
    if (idx == 0)
        return sop_get_le64(img + H_CHILD0);
    const uint8_t *p = slot_ptr(img, idx - 1);
    return sop_get_le64(p + SLOT_HEAD_LEN + sop_get_le16(p) + h_seq_len(img));
}

void sop_node__key(const uint8_t *img, uint32_t idx, sop_val *key_out, uint64_t *seq_out)
{
    assert(idx < h_count(img));
    const uint8_t *p = slot_ptr(img, idx);
    size_t key_len = sop_get_le16(p);
    key_out->data = p + SLOT_HEAD_LEN;
    key_out->len = key_len;
    if (seq_out)
        *seq_out = h_seq_len(img) ? sop_get_le64(p + SLOT_HEAD_LEN + key_len) : 0;
}

void sop_node__leaf_value(const uint8_t *img, uint32_t idx, sop_leafval *value_out)
{
    assert(h_is_leaf(img) && idx < h_count(img));
    const uint8_t *p = slot_ptr(img, idx);
    const uint8_t *v = p + SLOT_HEAD_LEN + sop_get_le16(p) + h_seq_len(img);
    uint32_t value_len = sop_get_le32(v);
    memset(value_out, 0, sizeof *value_out);
    value_out->value_len = value_len;
    v += VALUE_LEN_LEN;
    if (p[2] == VKIND_BLOB) {
        value_out->is_blob = 1;
        value_out->loc.seg = sop_get_le64(v);
        value_out->loc.off = sop_get_le64(v + 8);
        value_out->loc.len = sop_get_le32(v + 16);
        value_out->loc.crc = sop_get_le32(v + 20);
    } else {
        value_out->inline_val.data = v;
        value_out->inline_val.len = value_len;
    }
}

/*
 * lower_bound through the hints (N9): bytewise keys, no seq. Binary search
 * on the hint array (contiguous, a few cache lines), then on full keys
 * only among entries whose hint equals the key's; one slot at the end
 * settles exactness and whether key shares the node's prefix at all (if
 * not, it sorts before or after every key, and the hints meant nothing).
 */
static uint32_t lower_bound_hinted(const uint8_t *img, const sop_val *key, int *exact_out)
{
    uint32_t n = h_count(img), lo = 0, hi = n, pos = h_hint_pos(img);
    const uint8_t *k = key->data;
    *exact_out = 0;
    if (n == 0)
        return 0;
    uint32_t h = key_hint(k, key->len, pos);
    while (lo < hi) { /* first entry with hint >= h */
        uint32_t mid = lo + (hi - lo) / 2;
        if (slot_hint(img, mid) < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    uint32_t end = lo, top = n;
    while (end < top) { /* first entry with hint > h */
        uint32_t mid = end + (top - end) / 2;
        if (slot_hint(img, mid) <= h)
            end = mid + 1;
        else
            top = mid;
    }
    while (lo < end) { /* full keys among equal hints */
        uint32_t mid = lo + (end - lo) / 2;
        const uint8_t *p = slot_ptr(img, mid);
        if (sop_memcmp_keys(p + SLOT_HEAD_LEN, sop_get_le16(p), k, key->len) < 0)
            lo = mid + 1;
        else
            end = mid;
    }
    const uint8_t *p = slot_ptr(img, lo < n ? lo : n - 1);
    size_t plen = sop_get_le16(p);
    if (pos) {
        size_t m = key->len < pos ? key->len : pos;
        int c = memcmp(k, p + SLOT_HEAD_LEN, m);
        if (c == 0 && key->len < pos)
            c = -1; /* a proper prefix of the shared prefix */
        if (c)
            return c < 0 ? 0 : n;
    }
    *exact_out = lo < n && sop_memcmp_keys(p + SLOT_HEAD_LEN, plen, k, key->len) == 0;
    return lo;
}

uint32_t sop_node__lower_bound(const uint8_t *img, const sop_keycmp *cmp, const sop_val *key,
                               uint64_t seq, int *exact_out)
{
    size_t seq_len = h_seq_len(img);
    if (!seq_len && (!cmp || !cmp->fn) && h_hint_pos(img) != HINT_NONE) {
        int exact;
        uint32_t at = lower_bound_hinted(img, key, &exact);
        if (exact_out)
            *exact_out = exact;
        return at;
    }
    uint32_t lo = 0, hi = h_count(img), equal_idx = UINT32_MAX;
    if (!seq_len)
        seq = 0; /* non-dup: every stored seq is 0, so keys compare alone */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        const uint8_t *p = slot_ptr(img, mid);
        size_t key_len = sop_get_le16(p);
        uint64_t mid_seq = seq_len ? sop_get_le64(p + SLOT_HEAD_LEN + key_len) : 0;
        int c = compare_key_seq(cmp, p + SLOT_HEAD_LEN, key_len, mid_seq, key->data, key->len, seq);
        if (c < 0) {
            lo = mid + 1;
        } else {
            if (c == 0)
                equal_idx = mid;
            hi = mid;
        }
    }
    /* Slots are strictly ordered, so at most one equals (key, seq); when
     * one does, the search ends on it. */
    if (exact_out)
        *exact_out = equal_idx == lo;
    return lo;
}

uint32_t sop_node__child_index(const uint8_t *img, const sop_keycmp *cmp, const sop_val *key,
                               uint64_t seq)
{
    int exact;
    uint32_t idx = sop_node__lower_bound(img, cmp, key, seq, &exact);
    /* A key equal to separator i belongs to child i+1: [sep(i), sep(i+1)). */
    return idx + (exact ? 1u : 0u);
}

size_t sop_node__leaf_need_bytes(const uint8_t *img, size_t key_len, const sop_leafval *v)
{
    return OFF_LEN + leaf_slot_len(key_len, h_seq_len(img), v);
}

size_t sop_node__branch_need_bytes(const uint8_t *img, size_t key_len)
{
    return OFF_LEN + branch_slot_len(key_len, h_seq_len(img));
}

uint32_t sop_node__split_point(const uint8_t *img)
{
    uint32_t count = h_count(img);
    if (count < 2)
        return 0;
    int is_leaf = h_is_leaf(img);
    uint64_t total = 0;
    for (uint32_t i = 0; i < count; i++)
        total += slot_len(img, i) + OFF_LEN;

    /* left(at) = bytes of [0,at); right = the rest, minus the separator at
     * for a branch (it moves up). Pick the at with the smallest difference. */
    uint32_t best_at = 1;
    uint64_t best_diff = UINT64_MAX;
    uint64_t prefix = slot_len(img, 0) + OFF_LEN;
    for (uint32_t at = 1; at < count; at++) {
        uint64_t cur = slot_len(img, at) + OFF_LEN;
        uint64_t right = total - prefix - (is_leaf ? 0 : cur);
        uint64_t diff = prefix > right ? prefix - right : right - prefix;
        if (diff < best_diff) {
            best_diff = diff;
            best_at = at;
        }
        prefix += cur;
    }
    return best_at;
}

/* Write img's header and live slots, compacted in index order, to dst with
 * an offset array of new_cap >= count entries. dst holds at least
 * 40 + 4*new_cap + (data_len - garbage) bytes. */
static void write_compact(uint8_t *dst, const uint8_t *img, uint32_t new_cap)
{
    uint32_t count = h_count(img);
    int is_leaf = h_is_leaf(img);
    size_t seq_len = h_seq_len(img);
    const uint8_t *src_data = img + data_start(img);
    uint8_t *dst_data = dst + SOP_NODE_HEADER_LEN + (size_t)OFF_LEN * new_cap;
    uint32_t pos = 0;
    int hints = h_hint_pos(img) != HINT_NONE; /* kept as they are, or 0s */

    assert(new_cap >= count);
    memcpy(dst, img, SOP_NODE_HEADER_LEN);
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *p = src_data + slot_off(img, i);
        size_t len = slot_len_at(p, is_leaf, seq_len);
        memcpy(dst_data + pos, p, len);
        sop_put_le32(dst + SOP_NODE_HEADER_LEN + (size_t)OFF_LEN * i, pos);
        sop_put_le32(dst + SOP_NODE_HEADER_LEN + (size_t)OFF_LEN * i + 4,
                     hints ? slot_hint(img, i) : 0);
        pos += (uint32_t)len; /* live <= data_len, a u32 (N1) */
    }
    /* Unused entries are zero, so equal contents give equal bytes. */
    memset(dst + SOP_NODE_HEADER_LEN + (size_t)OFF_LEN * count, 0,
           (size_t)OFF_LEN * (new_cap - count));
    sop_put_le32(dst + H_CAP, new_cap);
    sop_put_le32(dst + H_DATA_LEN, pos);
    sop_put_le32(dst + H_GARBAGE, 0);
}

/* Copy img to dst with an offset array of new_cap >= count entries: as it
 * is, garbage and slot order included, in two memcpys (keep_garbage; dst
 * holds 40 + 8*new_cap + data_len bytes), or compacted slot by slot
 * (write_compact). Offsets are relative to the data area, so they survive
 * a larger cap; the slots' order in the data area does not matter (N5) and
 * the garbage stays counted (N1). */
static void write_image(uint8_t *dst, const uint8_t *img, uint32_t new_cap, int keep_garbage)
{
    uint32_t count = h_count(img);
    assert(new_cap >= count);
    if (!keep_garbage) {
        write_compact(dst, img, new_cap);
        return;
    }
    memcpy(dst, img, SOP_NODE_HEADER_LEN + (size_t)OFF_LEN * count);
    memset(dst + SOP_NODE_HEADER_LEN + (size_t)OFF_LEN * count, 0,
           (size_t)OFF_LEN * (new_cap - count));
    memcpy(dst + SOP_NODE_HEADER_LEN + (size_t)OFF_LEN * new_cap, img + data_start(img),
           h_data_len(img));
    sop_put_le32(dst + H_CAP, new_cap);
}

/* Whether a copy of img keeps its garbage: when it is little, copying the
 * image whole is cheaper than compacting it slot by slot (the slot walk was
 * the biggest cost of a random put, which clones one leaf per put, and of a
 * sequential fill, which grows the last leaf: docs/SCALE.md); a later edit
 * compacts once garbage passes half of data_len (N8). */
static int copy_keeps_garbage(const uint8_t *img)
{
    return h_garbage(img) <= h_data_len(img) / 8;
}

int sop_node__serialize(const uint8_t *img, uint8_t *out, size_t out_cap, size_t *len_out)
{
    size_t used = sop_node__used_bytes(img);
    *len_out = used;
    if (out_cap < used)
        return sop_err(SOP_INVAL, "node %" PRIu64 ": serialize needs %zu bytes, buffer has %zu",
                       h_lid(img), used, out_cap);
    write_compact(out, img, h_count(img));
    hints_compute(out); /* from the keys alone: canonical (N9) */
    return SOP_OK;
}

/* ---- building and editing ---------------------------------------------------- */

/* Capacity and room to give a node that needs slot_count slots and
 * data_need data bytes: 1.5x plus a little, so appends are amortised O(1)
 * (N7), within SOP_NODE_MAX_IMAGE_LEN. The caller has checked that the bare
 * need fits. */
static void pick_room(uint32_t *cap_out, size_t *data_room_out, uint64_t slot_count,
                      uint64_t data_need)
{
    uint64_t cap = slot_count + slot_count / 2 + 8;
    uint64_t room = data_need + data_need / 2 + 64;
    if (SOP_NODE_HEADER_LEN + OFF_LEN * cap + room > SOP_NODE_MAX_IMAGE_LEN) {
        cap = slot_count; /* near the limit: exactly what is needed */
        room = data_need;
    }
    *cap_out = (uint32_t)cap;
    *data_room_out = (size_t)room;
}

/* Rebuild n compacted into a new buffer with new_cap offsets and data_room
 * bytes of data area (>= live). On success the old buffer goes to *old_out
 * for the caller to free once done reading it (or is freed if old_out is
 * NULL). On failure n is untouched and SOP_NOMEM returned without a message
 * (callers decide whether it is an error). */
static int node_rebuild(sop_node *n, uint32_t new_cap, size_t data_room, int keep_garbage,
                        uint8_t **old_out)
{
    size_t alloc_len = SOP_NODE_HEADER_LEN + (size_t)OFF_LEN * new_cap + data_room;
    uint8_t *buf;

    assert(new_cap >= h_count(n->img) &&
           data_room >= (size_t)h_data_len(n->img) - (keep_garbage ? 0 : h_garbage(n->img)));
    buf = sop_malloc(alloc_len);
    if (!buf)
        return SOP_NOMEM;
    write_image(buf, n->img, new_cap, keep_garbage);
    if (old_out)
        *old_out = n->img;
    else
        sop_free(n->img);
    n->img = buf;
    n->alloc_len = alloc_len;
    return SOP_OK;
}

/* Rebuilds by node_reserve, process-wide (sop_node__growths). */
static _Atomic uint64_t node_growths;

uint64_t sop_node__growths(void)
{
    return atomic_load_explicit(&node_growths, memory_order_relaxed);
}

/* Make room for add_slots more slots and add_data more data bytes, growing
 * (and compacting) if needed. *old_out gets a buffer to free after the edit
 * (NULL if none). n unchanged on failure. */
static int node_reserve(sop_node *n, uint64_t add_slots, uint64_t add_data, uint8_t **old_out)
{
    const uint8_t *img = n->img;
    uint64_t count = h_count(img), cap = h_cap(img);
    uint64_t live = (uint64_t)h_data_len(img) - h_garbage(img);
    uint64_t need_cap = count + add_slots;

    *old_out = NULL;
    if (SOP_NODE_HEADER_LEN + OFF_LEN * need_cap + live + add_data > SOP_NODE_MAX_IMAGE_LEN)
        return sop_err(SOP_INVAL,
                       "node %" PRIu64 ": %" PRIu64 " slots and %" PRIu64
                       " data bytes would pass the %zu-byte image limit; split it first",
                       h_lid(img), need_cap, live + add_data, SOP_NODE_MAX_IMAGE_LEN);
    if (need_cap <= cap && sop_node__image_len(img) + add_data <= n->alloc_len)
        return SOP_OK;

    uint32_t new_cap;
    size_t data_room;
    /* Rebuilding anyway: size both the offset array and the data area for
     * 1.5x what is needed, so neither runs out a few inserts later. */
    int keep = copy_keeps_garbage(img);
    uint64_t kept = keep ? h_data_len(img) : live;
    if (keep &&
        SOP_NODE_HEADER_LEN + OFF_LEN * need_cap + kept + add_data > SOP_NODE_MAX_IMAGE_LEN) {
        keep = 0; /* near the limit: the garbage must go */
        kept = live;
    }
    pick_room(&new_cap, &data_room, need_cap, kept + add_data);
    if (node_rebuild(n, new_cap, data_room, keep, old_out) != SOP_OK)
        return sop_err(SOP_NOMEM, "node %" PRIu64 ": no memory to grow to %zu bytes", h_lid(img),
                       SOP_NODE_HEADER_LEN + (size_t)OFF_LEN * new_cap + data_room);
    atomic_fetch_add_explicit(&node_growths, 1, memory_order_relaxed);
    return SOP_OK;
}

/* (N8): rebuild when garbage passes half of data_len. Best effort: on
 * SOP_NOMEM the node is still valid, just holds dead bytes until a later
 * edit succeeds in compacting it; nothing is lost, so nothing to report. */
static void node_compact_if_sparse(sop_node *n)
{
    const uint8_t *img = n->img;
    if (h_garbage(img) <= h_data_len(img) / 2)
        return;
    uint32_t new_cap;
    size_t data_room;
    uint64_t live = (uint64_t)h_data_len(img) - h_garbage(img);
    pick_room(&new_cap, &data_room, h_count(img), live);
    if (new_cap > h_cap(img))
        new_cap = h_cap(img);                           /* compaction never grows cap */
    (void)node_rebuild(n, new_cap, data_room, 0, NULL); /* best effort, see above */
}

static int check_node(const sop_node *n)
{
    if (!n || !n->img)
        return sop_err(SOP_INVAL, "node: NULL node");
    return SOP_OK;
}

static int check_key(const uint8_t *img, const sop_val *key, uint64_t seq)
{
    if (!key || key->len < 1 || key->len > SOP_MAX_KEY_LEN || !key->data)
        return sop_err(SOP_INVAL, "node %" PRIu64 ": key length %zu not in 1..%d", h_lid(img),
                       key ? key->len : 0, SOP_MAX_KEY_LEN);
    if (!h_seq_len(img) && seq != 0)
        return sop_err(SOP_INVAL, "node %" PRIu64 ": seq %" PRIu64 " in a non-dup node", h_lid(img),
                       seq);
    return SOP_OK;
}

static int check_value(const uint8_t *img, const sop_leafval *v)
{
    size_t value_len = v ? (v->is_blob ? v->value_len : v->inline_val.len) : 0;
    if (!v || value_len > SOP_MAX_VALUE_LEN || (!v->is_blob && value_len && !v->inline_val.data))
        return sop_err(SOP_INVAL, "node %" PRIu64 ": bad value (length %zu, max %u)", h_lid(img),
                       value_len, SOP_MAX_VALUE_LEN);
    return SOP_OK;
}

/* Write a leaf value (value_len field and what follows) at p. The bytes go
 * first so that a source overlapping p's length field is read before it is
 * overwritten; memmove because the source may be in this very image. */
static void put_value(uint8_t *p, const sop_leafval *v)
{
    if (v->is_blob) {
        uint8_t *l = p + VALUE_LEN_LEN;
        sop_put_le64(l, v->loc.seg);
        sop_put_le64(l + 8, v->loc.off);
        sop_put_le32(l + 16, v->loc.len);
        sop_put_le32(l + 20, v->loc.crc);
        sop_put_le32(p, v->value_len);
    } else {
        if (v->inline_val.len)
            memmove(p + VALUE_LEN_LEN, v->inline_val.data, v->inline_val.len);
        sop_put_le32(p, (uint32_t)v->inline_val.len);
    }
}

/* Write a slot's key_len, vkind, key and seq at p (free space, so no live
 * byte is overwritten); return where the value or child goes. */
static uint8_t *put_slot_key(uint8_t *p, const sop_val *key, int vkind, size_t seq_len,
                             uint64_t seq)
{
    sop_put_le16(p, (uint16_t)key->len);
    p[2] = (uint8_t)vkind;
    memmove(p + SLOT_HEAD_LEN, key->data, key->len);
    p += SLOT_HEAD_LEN + key->len;
    if (seq_len) {
        sop_put_le64(p, seq);
        p += SEQ_LEN;
    }
    return p;
}

/* Make the len bytes just written at data_len into slot idx; node_reserve
 * has made room for both. */
static void link_new_slot(sop_node *n, uint32_t idx, size_t len)
{
    uint8_t *img = n->img;
    uint32_t count = h_count(img), data_len = h_data_len(img);
    uint8_t *off_arr = img + SOP_NODE_HEADER_LEN;
    /* (N9) The new key keeps the hints valid if it has the shared prefix
     * (which then stays the longest); otherwise they are dropped. */
    const uint8_t *slot = img + data_start(img) + data_len;
    const uint8_t *key = slot + SLOT_HEAD_LEN;
    size_t key_len = sop_get_le16(slot);
    unsigned pos = h_hint_pos(img);
    uint32_t hint = 0;
    if (pos != HINT_NONE) {
        const uint8_t *k0 = count ? slot_ptr(img, 0) + SLOT_HEAD_LEN : key;
        if (key_len >= pos && memcmp(key, k0, pos) == 0)
            hint = key_hint(key, key_len, pos);
        else
            hints_drop(img);
        if (count == 0)
            n->hints_stale = 1; /* one key: its prefix is longer */
    }
    memmove(off_arr + (size_t)OFF_LEN * (idx + 1), off_arr + (size_t)OFF_LEN * idx,
            (size_t)OFF_LEN * (count - idx));
    sop_put_le32(off_arr + (size_t)OFF_LEN * idx, data_len);
    sop_put_le32(off_arr + (size_t)OFF_LEN * idx + 4, hint);
    sop_put_le32(img + H_COUNT, count + 1);
    sop_put_le32(img + H_DATA_LEN, data_len + (uint32_t)len);
}

/* Pointer to the free byte right after the data in use. */
static uint8_t *data_end(sop_node *n)
{
    return n->img + sop_node__image_len(n->img);
}

int sop_node__new(sop_node *node_out, int kind, unsigned flags, uint64_t lid)
{
    memset(node_out, 0, sizeof *node_out);
    if ((kind != SOP_NODE_LEAF && kind != SOP_NODE_BRANCH) || (flags & ~SOP_NODE_DUP))
        return sop_err(SOP_INVAL, "node %" PRIu64 ": bad kind %d or flags 0x%x", lid, kind, flags);
    size_t alloc_len = SOP_NODE_HEADER_LEN + OFF_LEN * NEW_NODE_CAP + NEW_NODE_DATA_ROOM;
    uint8_t *img = sop_malloc(alloc_len);
    if (!img)
        return sop_err(SOP_NOMEM, "node %" PRIu64 ": no memory for a new node", lid);
    memset(img, 0, SOP_NODE_HEADER_LEN + OFF_LEN * NEW_NODE_CAP);
    img[H_KIND] = (uint8_t)kind;
    img[H_FLAGS] = (uint8_t)flags;
    sop_put_le32(img + H_CAP, NEW_NODE_CAP);
    sop_put_le64(img + H_LID, lid);
    node_out->img = img;
    node_out->alloc_len = alloc_len;
    return SOP_OK;
}

int sop_node__clone(sop_node *node_out, const uint8_t *img, uint64_t lid)
{
    uint32_t count = h_count(img), cap;
    uint64_t live = (uint64_t)h_data_len(img) - h_garbage(img);
    size_t data_room;

    memset(node_out, 0, sizeof *node_out);
    /* A clone is about to be edited, usually by one or two keys, and is
     * then published with whatever room it has left (the cache counts the
     * image, not the room): a little slack; bigger edits grow it (N7). */
    uint32_t garbage = h_garbage(img);
    int copy_whole = copy_keeps_garbage(img);
    uint64_t keep = copy_whole ? h_data_len(img) : live;
    cap = count + count / 16 + 4;
    data_room = (size_t)(keep + keep / 16 + 256);
    if (SOP_NODE_HEADER_LEN + (uint64_t)OFF_LEN * cap + data_room > SOP_NODE_MAX_IMAGE_LEN) {
        cap = count;
        data_room = (size_t)live;
        copy_whole = garbage == 0;
    }
    size_t alloc_len = SOP_NODE_HEADER_LEN + (size_t)OFF_LEN * cap + data_room;
    uint8_t *buf = sop_malloc(alloc_len);
    if (!buf)
        return sop_err(SOP_NOMEM, "node %" PRIu64 ": no memory to clone (%zu bytes)", h_lid(img),
                       alloc_len);
    write_image(buf, img, cap, copy_whole);
    sop_put_le64(buf + H_LID, lid);
    node_out->img = buf;
    node_out->alloc_len = alloc_len;
    return SOP_OK;
}

void sop_node__shrink(sop_node *n)
{
    size_t len = sop_node__image_len(n->img);
    assert(len <= n->alloc_len);
    /* A node grown by appends has up to a third of its buffer free (N7);
     * published, that is memory the cache budget does not see (it counts
     * image lengths). Shrinking a heap block in place costs no copy. */
    if (n->alloc_len - len < 256 || n->alloc_len - len < n->alloc_len / 8)
        return;
    uint8_t *img = sop_realloc(n->img, len);
    if (!img)
        return;
    n->img = img;
    n->alloc_len = len;
}

void sop_node__seal(sop_node *n)
{
    if (n && n->img && (n->hints_stale || h_hint_pos(n->img) == HINT_NONE))
        hints_compute(n->img);
    if (n)
        n->hints_stale = 0;
}

void sop_node__free(sop_node *n)
{
    if (!n)
        return;
    sop_free(n->img);
    n->img = NULL;
    n->alloc_len = 0;
}

int sop_node__reserve(sop_node *n, uint32_t add_slots, size_t add_data)
{
    uint8_t *old = NULL;
    int rc = check_node(n);
    if (rc)
        return rc;
    const uint8_t *img = n->img;
    uint64_t count = h_count(img), cap = h_cap(img);
    uint64_t need_cap = count + add_slots;
    if (need_cap <= cap && sop_node__image_len(img) + add_data <= n->alloc_len)
        return SOP_OK;
    /* Exactly what was asked for (no 1.5x): the caller knows how far the
     * node will grow, and room beyond that would only be shrunk away. */
    int keep = copy_keeps_garbage(img);
    uint64_t kept = keep ? h_data_len(img) : (uint64_t)h_data_len(img) - h_garbage(img);
    if (need_cap < cap)
        need_cap = cap;
    if (SOP_NODE_HEADER_LEN + OFF_LEN * need_cap + kept + add_data > SOP_NODE_MAX_IMAGE_LEN)
        return sop_err(SOP_INVAL,
                       "node %" PRIu64 ": reserving %" PRIu64 " slots and %zu data bytes would "
                       "pass the %zu-byte image limit",
                       h_lid(img), need_cap, add_data, SOP_NODE_MAX_IMAGE_LEN);
    if (node_rebuild(n, (uint32_t)need_cap, (size_t)(kept + add_data), keep, &old) != SOP_OK)
        return sop_err(SOP_NOMEM, "node %" PRIu64 ": no memory to reserve %zu bytes", h_lid(img),
                       SOP_NODE_HEADER_LEN + (size_t)OFF_LEN * need_cap + kept + add_data);
    sop_free(old);
    return SOP_OK;
}

int sop_node__leaf_insert(sop_node *n, uint32_t idx, const sop_val *key, uint64_t seq,
                          const sop_leafval *v)
{
    uint8_t *old = NULL;
    int rc;

    SOP_TRY(check_node(n));
    if (!h_is_leaf(n->img) || idx > h_count(n->img)) {
        rc = sop_err(SOP_INVAL,
                     "node %" PRIu64 ": leaf insert at %" PRIu32 " of %s with %" PRIu32 " slots",
                     h_lid(n->img), idx, h_is_leaf(n->img) ? "leaf" : "branch", h_count(n->img));
        goto out;
    }
    SOP_TRY(check_key(n->img, key, seq));
    SOP_TRY(check_value(n->img, v));
    size_t len = leaf_slot_len(key->len, h_seq_len(n->img), v);
    SOP_TRY(node_reserve(n, 1, len, &old));
    uint8_t *p = put_slot_key(data_end(n), key, v->is_blob ? VKIND_BLOB : VKIND_INLINE,
                              h_seq_len(n->img), seq);
    put_value(p, v);
    link_new_slot(n, idx, len);
out:
    sop_free(old); /* after the copy: key/value may have pointed into it */
    return rc;
}

int sop_node__leaf_set_value(sop_node *n, uint32_t idx, const sop_leafval *v)
{
    uint8_t *old = NULL;
    int rc;

    SOP_TRY(check_node(n));
    if (!h_is_leaf(n->img) || idx >= h_count(n->img)) {
        rc = sop_err(SOP_INVAL,
                     "node %" PRIu64 ": set value of slot %" PRIu32 " in %s with %" PRIu32 " slots",
                     h_lid(n->img), idx, h_is_leaf(n->img) ? "leaf" : "branch", h_count(n->img));
        goto out;
    }
    SOP_TRY(check_value(n->img, v));

    const uint8_t *slot = slot_ptr(n->img, idx);
    size_t old_len = slot_len(n->img, idx);
    size_t head_len = SLOT_HEAD_LEN + sop_get_le16(slot) + h_seq_len(n->img); /* up to value */
    size_t new_len = head_len + VALUE_LEN_LEN + (v->is_blob ? SOP_LOC_DISK_LEN : v->inline_val.len);
    int vkind = v->is_blob ? VKIND_BLOB : VKIND_INLINE;

    if (new_len <= old_len) {
        /* In place: same key, shorter or equal value part. */
        uint8_t *p = n->img + data_start(n->img) + slot_off(n->img, idx);
        uint32_t off = slot_off(n->img, idx), data_len = h_data_len(n->img);
        uint32_t freed = (uint32_t)(old_len - new_len);
        put_value(p + head_len, v);
        p[2] = (uint8_t)vkind;
        if (off + old_len == data_len) /* last in the data area: just shorten it */
            sop_put_le32(n->img + H_DATA_LEN, data_len - freed);
        else
            sop_put_le32(n->img + H_GARBAGE, h_garbage(n->img) + freed);
    } else {
        SOP_TRY(node_reserve(n, 0, new_len, &old));
        /* The slot may have moved (rebuilt); copy its key and seq to the end. */
        const uint8_t *cur = slot_ptr(n->img, idx);
        uint8_t *p = data_end(n);
        uint32_t data_len = h_data_len(n->img);
        memcpy(p, cur, head_len);
        p[2] = (uint8_t)vkind;
        put_value(p + head_len, v);
        sop_put_le32(n->img + SOP_NODE_HEADER_LEN + (size_t)OFF_LEN * idx, data_len);
        sop_put_le32(n->img + H_DATA_LEN, data_len + (uint32_t)new_len);
        sop_put_le32(n->img + H_GARBAGE, h_garbage(n->img) + (uint32_t)old_len);
    }
    sop_free(old); /* after put_value: the value may have pointed into it */
    old = NULL;
    node_compact_if_sparse(n);
out:
    sop_free(old);
    return rc;
}

int sop_node__branch_insert(sop_node *n, uint32_t idx, const sop_val *key, uint64_t seq,
                            uint64_t right_child)
{
    uint8_t *old = NULL;
    int rc;

    SOP_TRY(check_node(n));
    if (h_is_leaf(n->img) || idx > h_count(n->img)) {
        rc = sop_err(SOP_INVAL,
                     "node %" PRIu64 ": branch insert at %" PRIu32 " of %s with %" PRIu32 " slots",
                     h_lid(n->img), idx, h_is_leaf(n->img) ? "leaf" : "branch", h_count(n->img));
        goto out;
    }
    SOP_TRY(check_key(n->img, key, seq));
    size_t len = branch_slot_len(key->len, h_seq_len(n->img));
    SOP_TRY(node_reserve(n, 1, len, &old));
    uint8_t *p = put_slot_key(data_end(n), key, 0, h_seq_len(n->img), seq);
    sop_put_le64(p, right_child);
    link_new_slot(n, idx, len);
out:
    sop_free(old); /* after the copy: key may have pointed into it */
    return rc;
}

void sop_node__remove(sop_node *n, uint32_t idx)
{
    if (NEVER(!n || !n->img || idx >= h_count(n->img)))
        return;
    uint8_t *img = n->img;
    uint32_t count = h_count(img), data_len = h_data_len(img), off = slot_off(img, idx);
    uint32_t len = (uint32_t)slot_len(img, idx);
    uint8_t *off_arr = img + SOP_NODE_HEADER_LEN;

    memmove(off_arr + (size_t)OFF_LEN * idx, off_arr + (size_t)OFF_LEN * (idx + 1),
            (size_t)OFF_LEN * (count - idx - 1));
    memset(off_arr + (size_t)OFF_LEN * (count - 1), 0, OFF_LEN);
    sop_put_le32(img + H_COUNT, count - 1);
    n->hints_stale = 1;                  /* still valid; the shared prefix may have grown */
    if ((uint64_t)off + len == data_len) /* last in the data area: just shorten it */
        sop_put_le32(img + H_DATA_LEN, data_len - len);
    else
        sop_put_le32(img + H_GARBAGE, h_garbage(img) + len);
    node_compact_if_sparse(n);
}

void sop_node__set_child(sop_node *n, uint32_t idx, uint64_t lid)
{
    if (NEVER(!n || !n->img || h_is_leaf(n->img) || idx > h_count(n->img)))
        return;
    if (idx == 0) {
        sop_put_le64(n->img + H_CHILD0, lid);
        return;
    }
    uint8_t *p = n->img + data_start(n->img) + slot_off(n->img, idx - 1);
    sop_put_le64(p + SLOT_HEAD_LEN + sop_get_le16(p) + h_seq_len(n->img), lid);
}

void sop_node__set_lid(sop_node *n, uint64_t lid)
{
    if (NEVER(!n || !n->img))
        return;
    sop_put_le64(n->img + H_LID, lid);
}

int sop_node__split(sop_node *left, sop_node *right_out, uint32_t at, uint64_t right_lid,
                    sop_val *sep_key_out, uint64_t *sep_seq_out, uint8_t *sep_key_buf)
{
    memset(right_out, 0, sizeof *right_out);
    if (check_node(left) != SOP_OK)
        return SOP_INVAL;

    uint8_t *img = left->img;
    uint32_t count = h_count(img);
    int is_leaf = h_is_leaf(img);
    if (is_leaf ? (at < 1 || at >= count) : at >= count)
        return sop_err(SOP_INVAL, "node %" PRIu64 ": split at %" PRIu32 " of %" PRIu32 " slots",
                       h_lid(img), at, count);

    /* Right gets slots [first, count): a leaf's item at, or the separators
     * after the one that moves up. */
    uint32_t first = is_leaf ? at : at + 1;
    uint32_t right_count = count - first;
    uint64_t moved = 0;
    for (uint32_t i = first; i < count; i++)
        moved += slot_len(img, i);

    uint32_t right_cap;
    size_t data_room;
    pick_room(&right_cap, &data_room, right_count, moved);
    size_t alloc_len = SOP_NODE_HEADER_LEN + (size_t)OFF_LEN * right_cap + data_room;
    uint8_t *buf = sop_malloc(alloc_len);
    if (!buf)
        return sop_err(SOP_NOMEM, "node %" PRIu64 ": no memory to split (%zu bytes)", h_lid(img),
                       alloc_len);

    /* Build right: header as left's, then its slots in index order. */
    memcpy(buf, img, SOP_NODE_HEADER_LEN);
    sop_put_le32(buf + H_COUNT, right_count);
    sop_put_le32(buf + H_CAP, right_cap);
    sop_put_le32(buf + H_GARBAGE, 0);
    sop_put_le64(buf + H_LID, right_lid);
    sop_put_le64(buf + H_CHILD0, is_leaf ? 0 : sop_node__child(img, at + 1));
    uint8_t *right_data = buf + SOP_NODE_HEADER_LEN + (size_t)OFF_LEN * right_cap;
    uint32_t pos = 0;
    for (uint32_t i = first; i < count; i++) {
        size_t len = slot_len(img, i);
        memcpy(right_data + pos, slot_ptr(img, i), len);
        sop_put_le32(buf + SOP_NODE_HEADER_LEN + (size_t)OFF_LEN * (i - first), pos);
        /* a subset of left's keys: left's prefix and hints still hold */
        sop_put_le32(buf + SOP_NODE_HEADER_LEN + (size_t)OFF_LEN * (i - first) + 4,
                     slot_hint(img, i));
        pos += (uint32_t)len;
    }
    memset(buf + SOP_NODE_HEADER_LEN + (size_t)OFF_LEN * right_count, 0,
           (size_t)OFF_LEN * (right_cap - right_count));
    sop_put_le32(buf + H_DATA_LEN, pos);

    /* The separator: copy it out before left drops (and may compact) it. */
    sop_val sep;
    sop_node__key(img, at, &sep, sep_seq_out);
    memcpy(sep_key_buf, sep.data, sep.len);
    sep_key_out->data = sep_key_buf;
    sep_key_out->len = sep.len;

    /* Left keeps [0, at): the rest is garbage now. Nothing can fail from
     * here on, so a failure above left left untouched (N4). */
    uint64_t dropped = moved + (is_leaf ? 0 : slot_len(img, at));
    memset(img + SOP_NODE_HEADER_LEN + (size_t)OFF_LEN * at, 0, (size_t)OFF_LEN * (count - at));
    sop_put_le32(img + H_COUNT, at);
    left->hints_stale = 1;
    sop_put_le32(img + H_GARBAGE, h_garbage(img) + (uint32_t)dropped);
    node_compact_if_sparse(left);

    right_out->img = buf;
    right_out->alloc_len = alloc_len;
    right_out->hints_stale = 1;
    return SOP_OK;
}

int sop_node__merge(sop_node *left, const uint8_t *right_img, const sop_val *sep_key,
                    uint64_t sep_seq)
{
    uint8_t *old = NULL;
    int rc;

    SOP_TRY(check_node(left));
    const uint8_t *img = left->img;
    int is_leaf = h_is_leaf(img);
    if (!right_img || right_img == img || right_img[H_KIND] != img[H_KIND] ||
        right_img[H_FLAGS] != img[H_FLAGS]) {
        rc = sop_err(SOP_INVAL, "node %" PRIu64 ": merge with a node of another kind", h_lid(img));
        goto out;
    }
    uint32_t right_count = h_count(right_img);
    uint64_t add_slots = right_count,
             add_data = (uint64_t)h_data_len(right_img) - h_garbage(right_img);
    if (!is_leaf) {
        SOP_TRY(check_key(img, sep_key, sep_seq));
        add_slots += 1;
        add_data += branch_slot_len(sep_key->len, h_seq_len(img));
    }
    SOP_TRY(node_reserve(left, add_slots, add_data, &old));

    if (!is_leaf) {
        size_t len = branch_slot_len(sep_key->len, h_seq_len(left->img));
        uint8_t *p = put_slot_key(data_end(left), sep_key, 0, h_seq_len(left->img), sep_seq);
        sop_put_le64(p, sop_get_le64(right_img + H_CHILD0));
        link_new_slot(left, h_count(left->img), len);
    }
    int right_is_leaf = h_is_leaf(right_img);
    size_t seq_len = h_seq_len(right_img);
    for (uint32_t i = 0; i < right_count; i++) {
        const uint8_t *p = slot_ptr(right_img, i);
        size_t len = slot_len_at(p, right_is_leaf, seq_len);
        memcpy(data_end(left), p, len);
        link_new_slot(left, h_count(left->img), len);
    }
out:
    sop_free(old); /* after the copy: sep_key may have pointed into it */
    return rc;
}
