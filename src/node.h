/*
 * node.h - the B+tree node format and single-node operations.
 *
 * A node is one contiguous byte image. The same bytes live in memory (the
 * L1 cache, a transaction's private copy) and on disk (as the payload of a
 * checksummed log record: the checksum is the log's job, not this module's).
 * Published images are immutable; a commit clones one into a mutable
 * sop_node, edits it, serializes it and publishes the copy. Children are
 * named by 64-bit logical ids (lids); there are no parent or sibling links.
 *
 * Image layout (all integers little-endian, written with sop_put_le*):
 *
 *   OFFSET  SIZE    DESCRIPTION
 *   0       1       kind: 1 = leaf (SOP_NODE_LEAF), 2 = branch (SOP_NODE_BRANCH)
 *   1       1       flags: bit0 = dup (SOP_NODE_DUP): every slot stores a u64
 *                   seq after its key. Other bits are 0.
 *   2       2       hint_pos: every key's first hint_pos bytes are the same;
 *                   0xFFFF = the hints are not maintained (a node being edited)
 *   4       4       count: leaf = items; branch = separators (children = count+1)
 *   8       4       cap: entries in the offset array, >= count
 *   12      4       data_len: bytes of the data area in use
 *   16      4       garbage: dead bytes inside data_len
 *   20      4       reserved, 0
 *   24      8       lid: the node's own logical id
 *   32      8       child0: branch = leftmost child's lid; leaf = 0
 *   40      8*cap   off[cap]: per slot i, u32 offset of the slot from the
 *                   data area's start, then u32 hint (N9); only off[0..count)
 *                   is meaningful, unused entries are 0
 *   40+8*cap data_len  data area: slots, in any order, plus garbage
 *
 * The image is exactly 40 + 8*cap + data_len bytes long. A compact image
 * (what sop_node__serialize writes, and what goes to disk) has cap == count,
 * garbage == 0, its slots laid out in index order and its hints computed; it
 * is canonical: two nodes with the same kind, flags, lid, child0 and slots
 * serialize to the same bytes.
 *
 * Slots (KL = key_len, SQ = 8 in dup nodes, else 0 and absent):
 *
 *   leaf, inline value (vkind 0):
 *     0 u16 key_len (1..SOP_MAX_KEY_LEN) | 2 u8 vkind = 0 | 3 key bytes |
 *     3+KL [u64 seq] | 3+KL+SQ u32 value_len (<= SOP_MAX_VALUE_LEN) |
 *     7+KL+SQ value bytes
 *   leaf, separate blob (vkind 1):
 *     0 u16 key_len | 2 u8 vkind = 1 | 3 key bytes | 3+KL [u64 seq] |
 *     3+KL+SQ u32 value_len (the real value's length) |
 *     7+KL+SQ sop_loc: u64 seg, u64 off, u32 len, u32 crc (24 bytes)
 *   branch, separator i (its child is child i+1):
 *     0 u16 key_len | 2 u8 0 | 3 key bytes | 3+KL [u64 seq] | 3+KL+SQ u64 child
 *
 * Any other vkind is corrupt. Order: leaf items, and branch separators, are
 * strictly increasing by (key, seq): key under the store's comparator, then
 * seq as an unsigned u64 (in non-dup nodes seq is 0 and not stored, so
 * keys are unique). In a branch child 0 covers (key,seq) < sep(0), child i
 * covers [sep(i-1), sep(i)) and child count covers >= sep(count-1).
 *
 * Guarantees:
 *   (N1) Header consistency: count <= cap; 40 + 8*cap + data_len is the
 *        image's length and at most SOP_NODE_MAX_IMAGE_LEN; garbage ==
 *        data_len - (the sum of the live slots' lengths).
 *   (N2) Every live slot lies inside the data area; key lengths are
 *        1..SOP_MAX_KEY_LEN, value lengths <= SOP_MAX_VALUE_LEN.
 *   (N3) sop_node__validate accepts an image only if (N1) and (N2) hold (and
 *        the order above, when given a comparator). Every read accessor below
 *        then stays inside [img, img + len): it is safe on any image
 *        validate accepted, whatever else the bytes say. Overlapping slots
 *        are not detected (they cannot make a read go out of bounds).
 *   (N4) Every edit leaves a valid image. An edit that fails (SOP_NOMEM,
 *        SOP_INVAL) leaves the node exactly as it was.
 *   (N5) Edits do not check order: the caller (btree.c) picks the index,
 *        normally from sop_node__lower_bound. validate(img, len, cmp) checks.
 *   (N6) Read accessors never allocate, lock or write. Bytes they hand back
 *        (keys, inline values) are borrowed from the image: valid until the
 *        image is next edited or freed.
 *   (N7) Appending at the end is amortised O(slot size): capacity and the
 *        data area grow geometrically; inserting in the middle also moves
 *        the offset array (8 bytes per later slot).
 *   (N8) Garbage stays at most half of data_len: an edit that makes more
 *        compacts the node (best effort: if that allocation fails the node
 *        simply stays valid and uncompacted).
 *   (N9) Search hints. When hint_pos != 0xFFFF, every key has at least
 *        hint_pos bytes, equal to slot 0's, and slot i's hint is its key's
 *        bytes [hint_pos, hint_pos + 4) as a big-endian u32 (missing bytes
 *        0). For bytewise order the hints are then monotone in the keys,
 *        and a lookup binary-searches the contiguous off[] array instead of
 *        touching a slot (a cache miss) per step. sop_node__serialize (and
 *        so every on-disk image) uses the longest shared prefix: canonical.
 *        In memory, an inserted key that has the prefix gets its hint; one
 *        that has not drops them (hint_pos 0xFFFF: lookups compare full
 *        keys); removals and splits keep them valid but maybe shorter than
 *        they could be (sop_node.hints_stale). sop_node__seal, before an
 *        image is published, recomputes them in both cases.
 *
 * Argument order: the node (image or sop_node) first, outputs last, as in
 * the interface agreed with btree.c; STYLE.md's "outputs first" is applied
 * only to the constructors (new, clone), whose output is the node itself.
 *
 * Not here: checksums, where nodes are stored, tree algorithms (btree.c).
 * Nothing here locks: a published image is read by any thread; a sop_node
 * belongs to one transaction's thread.
 */
#ifndef SOP_NODE_H
#define SOP_NODE_H

#include "sop_int.h"

#include <stddef.h>
#include <stdint.h>

#define SOP_NODE_LEAF   1    /* kind byte of a leaf */
#define SOP_NODE_BRANCH 2    /* kind byte of a branch */
#define SOP_NODE_DUP    0x1u /* flags bit: slots carry a u64 seq (duplicate-key store) */

#define SOP_NODE_HEADER_LEN 40
/* Largest image: lengths travel as u32 (log records, the registry). */
#define SOP_NODE_MAX_IMAGE_LEN ((size_t)UINT32_MAX)

/* Key order of a store. fn NULL = bytewise (sop_memcmp_keys). fn must be a
 * total order and must not call back into libsop. */
typedef struct sop_keycmp {
    sop_compare_fn fn;
    void *ctx; /* passed to fn */
} sop_keycmp;

/* The one key compare: a against b under cmp (NULL, or fn NULL: bytewise). */
static inline int sop_keycmp__keys(const sop_keycmp *cmp, const sop_val *a, const sop_val *b)
{
    return cmp && cmp->fn ? cmp->fn(a, b, cmp->ctx)
                          : sop_memcmp_keys(a->data, a->len, b->data, b->len);
}

/* Items: (key, seq) pairs, by key, then seq (duplicates keep insertion order). */
static inline int sop_keycmp__items(const sop_keycmp *cmp, const sop_val *a, uint64_t a_seq,
                                    const sop_val *b, uint64_t b_seq)
{
    int c = sop_keycmp__keys(cmp, a, b);
    return c ? c : (a_seq > b_seq) - (a_seq < b_seq);
}

/* A leaf item's value. Inline: the bytes are in the node (inline_val;
 * value_len == inline_val.len when read back). Blob: the value lives in a
 * separate blob at loc and has value_len bytes (inline_val is {NULL, 0}). */
typedef struct sop_leafval {
    int is_blob;
    sop_val inline_val;
    uint32_t value_len;
    sop_loc loc;
} sop_leafval;

/*
 * A mutable node owned by the caller: img is one sop_malloc'ed buffer of
 * alloc_len bytes whose first sop_node__image_len(img) bytes are a valid
 * image. Growing replaces img, never the sop_node itself, which is why this
 * is a small struct the caller embeds (path stacks, dirty-node tables) and
 * not a header with a flexible array: a flexible array would move on every
 * growth and invalidate each pointer to the node. Pass n->img to the read
 * accessors. Cleaned with sop_node__free. One thread at a time.
 */
typedef struct sop_node {
    size_t alloc_len;
    uint8_t *img;
    int hints_stale; /* hints valid but maybe shorter than they could be (N9) */
} sop_node;

/* ---- validation ------------------------------------------------------------ */

/*
 * Check that img[0..len) is a node image the read accessors can use safely:
 * the header (kind, flags, reserved fields, count <= cap, exact length),
 * every slot inside the data area, key lengths 1..SOP_MAX_KEY_LEN, vkind,
 * value lengths, a leaf's child0 == 0, and the garbage count (N1-N2). With
 * cmp != NULL, also that slots are strictly increasing by (key, seq) under
 * *cmp (cmp->fn NULL = bytewise); cmp NULL skips that check.
 * img may be NULL when len is 0. No allocation.
 * @retval SOP_OK
 * @retval SOP_CORRUPT  sop_errmsg() names the field, slot and offset.
 */
int sop_node__validate(const uint8_t *img, size_t len, const sop_keycmp *cmp);

/* ---- read accessors (img validated, or built by this module) --------------- */

int sop_node__kind(const uint8_t *img);       /* SOP_NODE_LEAF or SOP_NODE_BRANCH */
int sop_node__is_leaf(const uint8_t *img);    /* 1 for a leaf, else 0 */
int sop_node__is_dup(const uint8_t *img);     /* 1 if slots carry a seq, else 0 */
uint32_t sop_node__count(const uint8_t *img); /* leaf: items; branch: separators */
uint64_t sop_node__lid(const uint8_t *img);
/* Bytes the image occupies now: 40 + 8*cap + data_len (the len to validate). */
size_t sop_node__image_len(const uint8_t *img);
/* Bytes of its compact image: 40 + 4*count + data_len - garbage. */
size_t sop_node__used_bytes(const uint8_t *img);
/* Bytes of slot idx (< count) in the data area; it costs 4 more in off[]. */
size_t sop_node__slot_bytes(const uint8_t *img, uint32_t idx);

/* Branch: lid of child idx, idx in [0, count]. */
uint64_t sop_node__child(const uint8_t *img, uint32_t idx);

/* Key and seq of slot idx (< count), leaf or branch. seq_out is set to 0 in
 * non-dup nodes and may be NULL. key_out->data is borrowed (N6). */
void sop_node__key(const uint8_t *img, uint32_t idx, sop_val *key_out, uint64_t *seq_out);

/* Leaf: value of item idx (< count). Inline bytes are borrowed (N6). */
void sop_node__leaf_value(const uint8_t *img, uint32_t idx, sop_leafval *value_out);

/*
 * First slot whose (key, seq) is >= (key, seq), in [0, count]: count when
 * every slot is smaller. *exact_out (may be NULL) is 1 when that slot equals
 * (key, seq), else 0. In non-dup nodes seq is ignored (keys compare alone).
 * cmp NULL = bytewise. Works on leaves and branches; O(log count) compares;
 * no allocation.
 */
uint32_t sop_node__lower_bound(const uint8_t *img, const sop_keycmp *cmp, const sop_val *key,
                               uint64_t seq, int *exact_out);

/* Branch: index of the child that covers (key, seq), in [0, count]: the
 * number of separators <= (key, seq). seq ignored in non-dup nodes. */
uint32_t sop_node__child_index(const uint8_t *img, const sop_keycmp *cmp, const sop_val *key,
                               uint64_t seq);

/* Growth of the compact image if this slot were inserted (slot + offset):
 * compare used_bytes + need against a node-size budget before inserting.
 * v is not read for its bytes, only its kind and length. */
size_t sop_node__leaf_need_bytes(const uint8_t *img, size_t key_len, const sop_leafval *v);
size_t sop_node__branch_need_bytes(const uint8_t *img, size_t key_len);

/*
 * Where to split: the index `at` in [1, count-1] that makes the two halves'
 * compact sizes closest (leaf: [0,at) | [at,count); branch: [0,at) |
 * (at,count), the separator at moving up). 0 if count < 2 (cannot split).
 */
uint32_t sop_node__split_point(const uint8_t *img);

/*
 * Write img's compact, canonical image to out[0..out_cap): cap == count,
 * garbage 0, slots in index order. *len_out = its length
 * (sop_node__used_bytes), also when out_cap is too small.
 * @retval SOP_OK
 * @retval SOP_INVAL  out_cap < *len_out; out untouched.
 */
int sop_node__serialize(const uint8_t *img, uint8_t *out, size_t out_cap, size_t *len_out);

/* ---- building and editing ---------------------------------------------------- */

/*
 * An empty node of @p kind (SOP_NODE_LEAF/SOP_NODE_BRANCH) with @p flags
 * (0 or SOP_NODE_DUP; SOP_NODE_DUP is 1, so a 0/1 "is dup" value works) and
 * lid; a branch's child0 starts as 0 (set it with sop_node__set_child).
 * *node_out is zeroed on failure.
 * @retval SOP_OK, SOP_INVAL (bad kind or flag bits), SOP_NOMEM
 */
int sop_node__new(sop_node *node_out, int kind, unsigned flags, uint64_t lid);

/*
 * A mutable compact copy of img (validated, or built here) with room to
 * grow, whose lid is set to @p lid (pass sop_node__lid(img) to keep it).
 * *node_out is zeroed on failure.
 * @retval SOP_OK, SOP_NOMEM
 */
int sop_node__clone(sop_node *node_out, const uint8_t *img, uint64_t lid);

/* Free n's image and zero *n (the struct itself is the caller's; STYLE.md
 * would call this _dispose, the agreed interface calls it _free). NULL and
 * a zeroed node are accepted. */
void sop_node__free(sop_node *n);
/* Recompute the search hints (N9) if an edit dropped them; call before the
 * image is published. O(count); cannot fail. */
void sop_node__seal(sop_node *n);
/* Give back the free room at the end of n's buffer (alloc_len becomes the
 * image length) when it is a sizeable part of it; for an image about to be
 * published, which is never edited again. Best effort: if the allocator
 * refuses, n keeps its room. Cannot fail. */
void sop_node__shrink(sop_node *n);

/*
 * Make room in n for add_slots more slots holding add_data more data bytes,
 * so that those inserts do not reallocate (growth by edits is 1.5x at a
 * time, N7: a node filled from one slot copies itself ~8 times). If n has
 * to grow it gets exactly that room; n keeps its contents (and img moves).
 * For a node whose growth the caller can predict (the right half of an
 * append split, btree.c). Published images are shrunk (sop_node__shrink).
 * @retval SOP_OK
 * @retval SOP_INVAL  the image would pass SOP_NODE_MAX_IMAGE_LEN; n unchanged.
 * @retval SOP_NOMEM  n unchanged.
 */
int sop_node__reserve(sop_node *n, uint32_t add_slots, size_t add_data);

/* How many times an edit has had to grow a node (rebuild it into a bigger
 * buffer, N7), summed over the process: a statistic for tests. */
uint64_t sop_node__growths(void);

/*
 * Leaf: insert (key, seq, *v) as item idx (in [0, count]); later items
 * move up by one. seq must be 0 in a non-dup node. key and the inline
 * value bytes are copied; they may point into any image, n's own included.
 * @retval SOP_OK
 * @retval SOP_INVAL  not a leaf, idx > count, key length not in
 *                    1..SOP_MAX_KEY_LEN, value too long, seq != 0 in a
 *                    non-dup node, or the image would pass
 *                    SOP_NODE_MAX_IMAGE_LEN (split first). n unchanged.
 * @retval SOP_NOMEM  n unchanged.
 */
int sop_node__leaf_insert(sop_node *n, uint32_t idx, const sop_val *key, uint64_t seq,
                          const sop_leafval *v);

/* Leaf: replace item idx's value (its key and seq stay). Errors as
 * sop_node__leaf_insert (SOP_INVAL also for idx >= count). */
int sop_node__leaf_set_value(sop_node *n, uint32_t idx, const sop_leafval *v);

/*
 * Branch: insert separator (key, seq) at idx (in [0, count]) with
 * right_child as child idx+1; later separators and children move up by
 * one. Used after a child split: the old child stays child idx.
 * @retval SOP_OK, SOP_INVAL (as sop_node__leaf_insert), SOP_NOMEM (n unchanged)
 */
int sop_node__branch_insert(sop_node *n, uint32_t idx, const sop_val *key, uint64_t seq,
                            uint64_t right_child);

/* Leaf: remove item idx. Branch: remove separator idx and child idx+1 (to
 * drop child 0 instead, set_child(0, child(1)) first). idx < count. Never
 * fails; may compact (N8). */
void sop_node__remove(sop_node *n, uint32_t idx);

/* Branch: set child idx (in [0, count]) to lid. */
void sop_node__set_child(sop_node *n, uint32_t idx, uint64_t lid);
void sop_node__set_lid(sop_node *n, uint64_t lid);

/*
 * Split *left at @p at into left and a new node *right_out (lid right_lid,
 * same kind and flags), and return the separator that goes up to the
 * parent, copied into sep_key_buf (SOP_MAX_KEY_LEN bytes, caller's):
 * sep_key_out->data == sep_key_buf, so it survives later edits of both.
 *   leaf:   at in [1, count-1]; left keeps items [0,at), right gets
 *           [at,count); separator = right's first (key, seq).
 *   branch: at in [0, count-1]; the separator at moves up; left keeps
 *           separators [0,at) (children 0..at), right gets (at,count) with
 *           child0 = child at+1.
 * *right_out is zeroed on failure.
 * @retval SOP_OK
 * @retval SOP_INVAL  at out of range; left unchanged.
 * @retval SOP_NOMEM  left unchanged.
 */
int sop_node__split(sop_node *left, sop_node *right_out, uint32_t at, uint64_t right_lid,
                    sop_val *sep_key_out, uint64_t *sep_seq_out, uint8_t *sep_key_buf);

/*
 * Append right_img's slots to *left (the inverse of sop_node__split): leaf:
 * right's items; branch: the separator (sep_key, sep_seq) with child =
 * right's child0, then right's separators. sep_key is ignored for leaves
 * (may be NULL). Order is the caller's duty (N5): everything in right must
 * follow everything in left. left's lid stays.
 * @retval SOP_OK
 * @retval SOP_INVAL  kinds or dup flags differ, bad separator, or too big;
 *                    left unchanged.
 * @retval SOP_NOMEM  left unchanged.
 */
int sop_node__merge(sop_node *left, const uint8_t *right_img, const sop_val *sep_key,
                    uint64_t sep_seq);

#endif /* SOP_NODE_H */
