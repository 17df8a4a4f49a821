/*
 * fuzz_node.c - libFuzzer target for the node image decoder (src/node.h):
 * sop_node__validate on arbitrary bytes, then everything the engine does
 * with an image validate accepted.
 *
 * Input: byte 0 selects the mode (bit 0: validate with the bytewise
 * comparator, so key order is checked too; else without), the rest is the
 * image, in an allocation of exactly its size.
 *
 * Properties (abort() on violation, so libFuzzer reports it):
 *   - validate returns SOP_OK or SOP_CORRUPT, never reads outside the image
 *     (ASan), never crashes or hits UB (UBSan);
 *   - on an accepted image (N3): every read accessor stays inside it (keys,
 *     seqs, inline values within bounds, lengths within limits);
 *   - serialize gives the compact image, which validates again, has
 *     used_bytes bytes, and serializes to itself (canonical form);
 *   - clone gives an image that validates and serializes to the same bytes;
 *   - with the comparator: lower_bound finds every slot at its own index,
 *     child_index routes each separator to its right child;
 *   - edits keep an accepted image valid (N4): split at split_point then
 *     merge gives the compact image back; removing slot 0 and inserting a
 *     new key at its lower_bound both validate.
 *
 * Build and run: fuzz/fuzz_engine.mk (make fuzz-node-smoke). Without
 * libFuzzer, fuzz/standalone.c replays files through the same entry point.
 */
#include "node.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int fuzz_write_seeds(const char *dir);

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_node: %s:%d: CHECK(%s) failed [%s]\n", __FILE__, __LINE__,       \
                    #cond, sop_errmsg());                                                          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const sop_keycmp bytewise = {NULL, NULL};

/* Touch every byte an accessor hands back, so ASan sees any overread. */
static unsigned sink(const void *p, size_t len)
{
    const volatile uint8_t *b = p;
    unsigned s = 0;
    for (size_t i = 0; i < len; i++)
        s += b[i];
    return s;
}

static void read_everything(const uint8_t *img, size_t len)
{
    uint32_t count = sop_node__count(img);
    int leaf = sop_node__is_leaf(img);
    FUZZ_CHECK(sop_node__image_len(img) == len);
    FUZZ_CHECK(sop_node__used_bytes(img) <= len);
    FUZZ_CHECK(leaf || sop_node__kind(img) == SOP_NODE_BRANCH);
    for (uint32_t i = 0; i < count; i++) {
        sop_val key;
        uint64_t seq;
        sop_node__key(img, i, &key, &seq);
        FUZZ_CHECK(key.len >= 1 && key.len <= SOP_MAX_KEY_LEN);
        FUZZ_CHECK((const uint8_t *)key.data >= img &&
                   (const uint8_t *)key.data + key.len <= img + len);
        FUZZ_CHECK(sop_node__is_dup(img) || seq == 0);
        sink(key.data, key.len);
        FUZZ_CHECK(sop_node__slot_bytes(img, i) <= len);
        if (leaf) {
            sop_leafval v;
            sop_node__leaf_value(img, i, &v);
            FUZZ_CHECK(v.value_len <= SOP_MAX_VALUE_LEN);
            if (!v.is_blob) {
                FUZZ_CHECK(v.inline_val.len == v.value_len);
                FUZZ_CHECK(v.inline_val.len == 0 ||
                           ((const uint8_t *)v.inline_val.data >= img &&
                            (const uint8_t *)v.inline_val.data + v.inline_val.len <= img + len));
                sink(v.inline_val.data, v.inline_val.len);
            }
        }
    }
    if (!leaf)
        for (uint32_t i = 0; i <= count; i++)
            (void)sop_node__child(img, i);
}

static void check_order(const uint8_t *img)
{
    uint32_t count = sop_node__count(img);
    for (uint32_t i = 0; i < count; i++) {
        sop_val key;
        uint64_t seq;
        int exact = 0;
        sop_node__key(img, i, &key, &seq);
        FUZZ_CHECK(sop_node__lower_bound(img, &bytewise, &key, seq, &exact) == i);
        FUZZ_CHECK(exact == 1);
        if (!sop_node__is_leaf(img))
            FUZZ_CHECK(sop_node__child_index(img, &bytewise, &key, seq) == i + 1);
    }
}

/* Split at the split point and merge back: the compact image returns. */
static void check_split_merge(const uint8_t *compact, size_t compact_len, const sop_keycmp *cmp)
{
    sop_node left, right;
    uint8_t sep_buf[SOP_MAX_KEY_LEN];
    sop_val sep;
    uint64_t sep_seq;
    uint32_t at = sop_node__split_point(compact);
    if (at == 0)
        return;
    if (sop_node__clone(&left, compact, sop_node__lid(compact)) != SOP_OK)
        return; /* out of memory */
    int rc = sop_node__split(&left, &right, at, 77, &sep, &sep_seq, sep_buf);
    if (rc == SOP_NOMEM) {
        sop_node__free(&left);
        return;
    }
    FUZZ_CHECK(rc == SOP_OK);
    FUZZ_CHECK(sop_node__validate(left.img, sop_node__image_len(left.img), cmp) == SOP_OK);
    FUZZ_CHECK(sop_node__validate(right.img, sop_node__image_len(right.img), cmp) == SOP_OK);
    rc = sop_node__merge(&left, right.img, &sep, sep_seq);
    if (rc == SOP_OK) {
        size_t len = sop_node__used_bytes(left.img);
        uint8_t *again = malloc(len ? len : 1);
        FUZZ_CHECK(again != NULL);
        FUZZ_CHECK(sop_node__serialize(left.img, again, len, &len) == SOP_OK);
        FUZZ_CHECK(len == compact_len && memcmp(again, compact, len) == 0);
        free(again);
    } else {
        FUZZ_CHECK(rc == SOP_NOMEM);
    }
    sop_node__free(&left);
    sop_node__free(&right);
}

/* Remove slot 0; insert a key just above slot 0's (leaf) where it belongs. */
static void check_edits(const uint8_t *compact, const sop_keycmp *cmp)
{
    sop_node n;
    uint32_t count = sop_node__count(compact);
    if (count == 0 || sop_node__clone(&n, compact, sop_node__lid(compact)) != SOP_OK)
        return;
    if (sop_node__is_leaf(compact)) {
        sop_val key;
        uint64_t seq;
        uint8_t kb[SOP_MAX_KEY_LEN];
        sop_node__key(n.img, 0, &key, &seq);
        if (key.len < SOP_MAX_KEY_LEN) {
            memcpy(kb, key.data, key.len);
            kb[key.len] = 0; /* the smallest key above slot 0's */
            sop_val nk = {kb, key.len + 1};
            int exact = 0;
            uint32_t at = sop_node__lower_bound(n.img, cmp ? cmp : &bytewise, &nk, seq, &exact);
            if (!exact) {
                sop_leafval v = {0, {"fuzz", 4}, 4, {0, 0, 0, 0}};
                int rc = sop_node__leaf_insert(&n, at, &nk, seq, &v);
                FUZZ_CHECK(rc == SOP_OK || rc == SOP_NOMEM || rc == SOP_INVAL);
                FUZZ_CHECK(sop_node__validate(n.img, sop_node__image_len(n.img), cmp) == SOP_OK);
            }
        }
    }
    sop_node__remove(&n, 0);
    FUZZ_CHECK(sop_node__validate(n.img, sop_node__image_len(n.img), cmp) == SOP_OK);
    sop_node__free(&n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const sop_keycmp *cmp = (data[0] & 1) ? &bytewise : NULL;
    const uint8_t *img = data + 1;
    size_t len = size - 1;
    int rc = sop_node__validate(len ? img : NULL, len, cmp);
    FUZZ_CHECK(rc == SOP_OK || rc == SOP_CORRUPT);
    if (rc != SOP_OK)
        return 0;
    FUZZ_CHECK(len >= SOP_NODE_HEADER_LEN);
    read_everything(img, len);
    if (cmp)
        check_order(img);
    /* Compact form: valid, canonical. */
    size_t used = sop_node__used_bytes(img), got = 0;
    uint8_t *compact = malloc(used ? used : 1);
    FUZZ_CHECK(compact != NULL);
    FUZZ_CHECK(sop_node__serialize(img, compact, used, &got) == SOP_OK && got == used);
    FUZZ_CHECK(sop_node__validate(compact, used, cmp) == SOP_OK);
    uint8_t *again = malloc(used ? used : 1);
    FUZZ_CHECK(again != NULL);
    FUZZ_CHECK(sop_node__serialize(compact, again, used, &got) == SOP_OK && got == used);
    FUZZ_CHECK(memcmp(again, compact, used) == 0);
    if (used > 0)
        FUZZ_CHECK(sop_node__serialize(img, again, used - 1, &got) == SOP_INVAL && got == used);
    /* Clone: same node. */
    sop_node n;
    if (sop_node__clone(&n, img, sop_node__lid(img)) == SOP_OK) {
        FUZZ_CHECK(sop_node__validate(n.img, sop_node__image_len(n.img), cmp) == SOP_OK);
        FUZZ_CHECK(sop_node__serialize(n.img, again, used, &got) == SOP_OK && got == used);
        FUZZ_CHECK(memcmp(again, compact, used) == 0);
        sop_node__free(&n);
    }
    check_split_merge(compact, used, cmp);
    check_edits(compact, cmp);
    free(again);
    free(compact);
    return 0;
}

/* ---- seed corpus ----------------------------------------------------------------- */

static int write_seed(const char *dir, const char *name, uint8_t mode, const sop_node *n)
{
    char path[4096];
    size_t len = sop_node__used_bytes(n->img), got;
    uint8_t *buf = malloc(len + 1);
    if (!buf)
        return -1;
    buf[0] = mode;
    if (sop_node__serialize(n->img, buf + 1, len, &got) != SOP_OK) {
        free(buf);
        return -1;
    }
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    int rc = f && fwrite(buf, 1, len + 1, f) == len + 1 ? 0 : -1;
    if (f && fclose(f) != 0)
        rc = -1;
    free(buf);
    return rc;
}

int fuzz_write_seeds(const char *dir)
{
    sop_node leaf, dup, branch;
    char key[64];
    int rc = 0;
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return -1;
    if (sop_node__new(&leaf, SOP_NODE_LEAF, 0, 7) || sop_node__new(&dup, SOP_NODE_LEAF, 1, 8) ||
        sop_node__new(&branch, SOP_NODE_BRANCH, 0, 9))
        return -1;
    for (uint32_t i = 0; i < 12; i++) {
        snprintf(key, sizeof key, "key-%03u", i);
        sop_val k = {key, strlen(key)};
        sop_leafval inl = {0, {"value-of-item", 5 + i % 3}, 5 + i % 3, {0, 0, 0, 0}};
        sop_leafval blob = {1, {NULL, 0}, 100000, {3, 4096, 128, 0xdeadbeef}};
        rc |= sop_node__leaf_insert(&leaf, i, &k, 0, i % 4 == 3 ? &blob : &inl);
        rc |= sop_node__leaf_insert(&dup, i, &k, 0, &inl);
        rc |= sop_node__branch_insert(&branch, i, &k, 0, 100 + i);
    }
    sop_node__set_child(&branch, 0, 99);
    rc |= write_seed(dir, "leaf-ordered", 1, &leaf);
    rc |= write_seed(dir, "leaf-unordered", 0, &leaf);
    rc |= write_seed(dir, "dup-leaf", 1, &dup);
    rc |= write_seed(dir, "branch", 1, &branch);
    sop_node__free(&leaf);
    sop_node__free(&dup);
    sop_node__free(&branch);
    return rc ? -1 : 0;
}
