/*
 * test_node.c - node.c against a sorted-array model, its byte format, and
 * corrupt input.
 *
 * What is proven here (node.h, N1-N8):
 *   - random insert/remove/set_value sequences on leaves (dup and non-dup,
 *     inline and blob values, keys 1..300 bytes with shared prefixes, the
 *     bytewise and a reversed comparator) and on branches agree item by item
 *     with a plain array after every step, every image validates, and garbage
 *     stays at most half of data_len;
 *   - lower_bound and child_index agree with a linear search;
 *   - serialize is canonical and round-trips through validate and clone;
 *   - split then merge gives back the original bytes, leaf and branch;
 *   - validate returns SOP_CORRUPT for every truncation, for each bad field,
 *     for out-of-order keys, and for random byte flips it either rejects or
 *     accepts an image all accessors and edits handle in bounds (run under
 *     ASan: make VARIANT=asan);
 *   - a failed allocation (every Nth, transient and persistent) leaves the
 *     node byte-for-byte unchanged; appends allocate O(log n) times.
 * Every random choice comes from test_rand() (SOP_SEED); SOP_TEST_SCALE
 * multiplies the iteration counts.
 */
#include "harness.h"
#include "node.h"
#include "sop_sys.h"

/* ---- helpers ------------------------------------------------------------------ */

static unsigned scale(void)
{
    const char *s = getenv("SOP_TEST_SCALE");
    unsigned n = s ? (unsigned)strtoul(s, NULL, 10) : 1;
    return n ? n : 1;
}

static uint64_t rand_below(uint64_t n)
{
    return n ? test_rand() % n : 0;
}

/* Header fields a test reads directly (layout table in node.h). */
static uint32_t hdr_cap(const uint8_t *img)
{
    return sop_get_le32(img + 8);
}
static uint32_t hdr_data_len(const uint8_t *img)
{
    return sop_get_le32(img + 12);
}
static uint32_t hdr_garbage(const uint8_t *img)
{
    return sop_get_le32(img + 16);
}

#define MAX_TEST_KEY   300
#define MAX_TEST_VALUE 2100

typedef struct item {
    uint8_t key[MAX_TEST_KEY];
    size_t key_len;
    uint64_t seq;
    int is_blob;
    uint32_t value_len;
    sop_loc loc;
    uint64_t child; /* branch: child to the right of this separator */
    uint8_t value[MAX_TEST_VALUE];
} item;

/* The reference: a sorted array of items (or separators), child0 for branches. */
typedef struct model {
    item *items;
    size_t count, cap;
    int is_dup;
    const sop_keycmp *cmp;
    uint64_t child0;
} model;

static void model_init(model *m, int is_dup, const sop_keycmp *cmp)
{
    memset(m, 0, sizeof *m);
    m->is_dup = is_dup;
    m->cmp = cmp;
}

static void model_free(model *m)
{
    free(m->items);
    memset(m, 0, sizeof *m);
}

static int key_compare(const sop_keycmp *cmp, const void *a, size_t a_len, const void *b,
                       size_t b_len)
{
    if (cmp && cmp->fn) {
        sop_val va = {a, a_len}, vb = {b, b_len};
        return cmp->fn(&va, &vb, cmp->ctx);
    }
    return sop_memcmp_keys(a, a_len, b, b_len);
}

/* item vs (key, seq), the node's order. */
static int item_compare(const model *m, const item *it, const void *key, size_t key_len,
                        uint64_t seq)
{
    int c = key_compare(m->cmp, it->key, it->key_len, key, key_len);
    if (c)
        return c;
    if (!m->is_dup)
        return 0;
    return (it->seq > seq) - (it->seq < seq);
}

/* Linear lower bound: first item >= (key, seq). */
static size_t model_lower_bound(const model *m, const void *key, size_t key_len, uint64_t seq,
                                int *exact_out)
{
    size_t i = 0;
    while (i < m->count && item_compare(m, &m->items[i], key, key_len, seq) < 0)
        i++;
    *exact_out = i < m->count && item_compare(m, &m->items[i], key, key_len, seq) == 0;
    return i;
}

/* Linear child index: number of separators <= (key, seq). */
static size_t model_child_index(const model *m, const void *key, size_t key_len, uint64_t seq)
{
    size_t n = 0;
    for (size_t i = 0; i < m->count; i++)
        if (item_compare(m, &m->items[i], key, key_len, seq) <= 0)
            n++;
    return n;
}

static void model_insert(model *m, size_t idx, const item *it)
{
    if (m->count == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 64;
        m->items = realloc(m->items, m->cap * sizeof *m->items);
        if (!m->items) {
            fprintf(stderr, "test out of memory\n");
            abort();
        }
    }
    memmove(&m->items[idx + 1], &m->items[idx], (m->count - idx) * sizeof *m->items);
    m->items[idx] = *it;
    m->count++;
}

static void model_remove(model *m, size_t idx)
{
    memmove(&m->items[idx], &m->items[idx + 1], (m->count - idx - 1) * sizeof *m->items);
    m->count--;
}

/* A random key, 1..300 bytes: one of a few shared prefixes, then a tail
 * from a 4-letter alphabet (0x00 and 0xff included) so keys often collide
 * or share long prefixes. */
static size_t gen_key(uint8_t *buf)
{
    static const size_t prefix_lens[] = {0, 1, 8, 40, 200, 290};
    size_t prefix_len = prefix_lens[rand_below(6)];
    size_t tail_len = 1 + rand_below(rand_below(4) == 0 ? 12 : 3);
    size_t len = prefix_len + tail_len;
    if (len > MAX_TEST_KEY)
        len = MAX_TEST_KEY;
    for (size_t i = 0; i < prefix_len && i < len; i++)
        buf[i] = (uint8_t)('p' + i % 7);
    static const uint8_t alphabet[] = {0x00, 'a', 'b', 0xff};
    for (size_t i = prefix_len; i < len; i++)
        buf[i] = alphabet[rand_below(4)];
    return len;
}

static void gen_value(item *it)
{
    uint64_t r = rand_below(10);
    if (r < 3) {
        it->is_blob = 1;
        it->value_len = (uint32_t)rand_below((uint64_t)SOP_MAX_VALUE_LEN + 1);
        it->loc.seg = test_rand();
        it->loc.off = test_rand();
        it->loc.len = (uint32_t)test_rand();
        it->loc.crc = (uint32_t)test_rand();
    } else {
        it->is_blob = 0;
        memset(&it->loc, 0, sizeof it->loc);
        it->value_len = (uint32_t)(r == 9 ? rand_below(MAX_TEST_VALUE + 1) : rand_below(64));
        for (uint32_t i = 0; i < it->value_len; i++)
            it->value[i] = (uint8_t)test_rand();
    }
}

static void gen_item(item *it, int is_dup)
{
    it->key_len = gen_key(it->key);
    /* Small seqs make equal (key, seq) pairs likely; big ones test u64 order. */
    it->seq = !is_dup ? 0 : rand_below(2) ? rand_below(4) : test_rand();
    it->child = test_rand();
    gen_value(it);
}

static sop_leafval item_value(const item *it)
{
    sop_leafval v;
    memset(&v, 0, sizeof v);
    if (it->is_blob) {
        v.is_blob = 1;
        v.value_len = it->value_len;
        v.loc = it->loc;
    } else {
        v.inline_val.data = it->value;
        v.inline_val.len = it->value_len;
    }
    return v;
}

static sop_val item_key(const item *it)
{
    sop_val k = {it->key, it->key_len};
    return k;
}

/* The node holds exactly the model's items (leaf) or separators and
 * children (branch), and validates under the model's order. */
static int node_matches(const uint8_t *img, const model *m)
{
    int is_leaf = sop_node__is_leaf(img);
    REQ(sop_node__validate(img, sop_node__image_len(img), m->cmp ? m->cmp : &(sop_keycmp){0}) ==
        SOP_OK);
    REQ(sop_node__count(img) == m->count);
    REQ(sop_node__is_dup(img) == m->is_dup);
    if (!is_leaf)
        REQ(sop_node__child(img, 0) == m->child0);
    size_t used = 40;
    for (uint32_t i = 0; i < m->count; i++) {
        const item *it = &m->items[i];
        sop_val k;
        uint64_t seq = 12345;
        sop_node__key(img, i, &k, &seq);
        if (k.len != it->key_len || memcmp(k.data, it->key, k.len) != 0) {
            FAIL_AT("slot %u: key differs (len %zu vs %zu)", i, k.len, it->key_len);
            return 0;
        }
        REQ(seq == it->seq);
        if (is_leaf) {
            sop_leafval v;
            sop_node__leaf_value(img, i, &v);
            REQ(v.is_blob == it->is_blob);
            REQ(v.value_len == it->value_len);
            if (it->is_blob) {
                REQ(v.loc.seg == it->loc.seg && v.loc.off == it->loc.off &&
                    v.loc.len == it->loc.len && v.loc.crc == it->loc.crc);
                REQ(v.inline_val.data == NULL && v.inline_val.len == 0);
            } else {
                REQ(v.inline_val.len == it->value_len);
                REQ(it->value_len == 0 || memcmp(v.inline_val.data, it->value, it->value_len) == 0);
            }
        } else {
            REQ(sop_node__child(img, i + 1) == it->child);
        }
        used += 8 + sop_node__slot_bytes(img, i);
    }
    REQ(sop_node__used_bytes(img) == used);
    return 1;
}

/* lower_bound and child_index agree with the linear model on n probes:
 * existing keys with nearby seqs, and fresh random keys. */
static int probes_match(const uint8_t *img, const model *m, unsigned n)
{
    for (unsigned p = 0; p < n; p++) {
        item probe;
        if (m->count && rand_below(2)) {
            probe = m->items[rand_below(m->count)];
            if (m->is_dup) {
                uint64_t d = rand_below(3);
                probe.seq = d == 0 ? probe.seq - 1 : d == 1 ? probe.seq : probe.seq + 1;
            }
        } else {
            gen_item(&probe, m->is_dup);
        }
        sop_val k = item_key(&probe);
        int exact = -1, model_exact;
        size_t want = model_lower_bound(m, probe.key, probe.key_len, probe.seq, &model_exact);
        uint32_t got = sop_node__lower_bound(img, m->cmp, &k, probe.seq, &exact);
        if (got != want || exact != model_exact) {
            FAIL_AT("probe %u: lower_bound %u exact %d, model %zu exact %d", p, got, exact, want,
                    model_exact);
            return 0;
        }
        REQ(sop_node__lower_bound(img, m->cmp, &k, probe.seq, NULL) == want);
        REQ(sop_node__child_index(img, m->cmp, &k, probe.seq) ==
            model_child_index(m, probe.key, probe.key_len, probe.seq));
    }
    return 1;
}

/* Clones of images with garbage that copied it along / compacted it
 * (sop_node__clone takes both paths). */
static unsigned clones_kept_garbage, clones_compacted;

/* serialize -> validate -> same contents; clone -> same serialized bytes. */
static int serialize_round_trips(const uint8_t *img, const model *m)
{
    size_t len = 0;
    REQ(sop_node__serialize(img, NULL, 0, &len) == SOP_INVAL);
    REQ(len == sop_node__used_bytes(img));
    uint8_t *buf = malloc(len), *buf2 = malloc(len);
    REQ(buf && buf2);
    size_t len2 = 0;
    int ok = sop_node__serialize(img, buf, len, &len2) == SOP_OK && len2 == len &&
             sop_node__validate(buf, len, m->cmp ? m->cmp : &(sop_keycmp){0}) == SOP_OK &&
             hdr_cap(buf) == sop_node__count(buf) && hdr_garbage(buf) == 0 &&
             sop_node__image_len(buf) == len && sop_node__lid(buf) == sop_node__lid(img);
    if (ok)
        ok = node_matches(buf, m);
    sop_node clone = {0};
    if (ok)
        ok = sop_node__clone(&clone, buf, sop_node__lid(buf)) == SOP_OK &&
             sop_node__serialize(clone.img, buf2, len, &len2) == SOP_OK && len2 == len &&
             memcmp(buf, buf2, len) == 0;
    sop_node__free(&clone);
    /* A clone of the live image (garbage, slots out of index order) is
     * valid, has the same contents, and serializes to the same bytes. */
    if (ok)
        ok = sop_node__clone(&clone, img, sop_node__lid(img)) == SOP_OK &&
             sop_node__validate(clone.img, sop_node__image_len(clone.img),
                                m->cmp ? m->cmp : &(sop_keycmp){0}) == SOP_OK &&
             sop_node__image_len(clone.img) <= clone.alloc_len && node_matches(clone.img, m) &&
             sop_node__serialize(clone.img, buf2, len, &len2) == SOP_OK && len2 == len &&
             memcmp(buf, buf2, len) == 0;
    if (ok && hdr_garbage(img) > 0)
        *(hdr_garbage(clone.img) > 0 ? &clones_kept_garbage : &clones_compacted) += 1;
    sop_node__free(&clone);
    free(buf);
    free(buf2);
    REQ(ok);
    return 1;
}

/* Malloc'ed copy of n's compact image. */
static uint8_t *serialize_copy(const uint8_t *img, size_t *len_out)
{
    size_t len = sop_node__used_bytes(img);
    uint8_t *buf = malloc(len);
    if (buf && sop_node__serialize(img, buf, len, len_out) != SOP_OK) {
        free(buf);
        buf = NULL;
    }
    return buf;
}

/* Insert a random item not yet present at its model position. */
static int insert_random(sop_node *n, model *m)
{
    for (;;) {
        item it;
        int exact;
        gen_item(&it, m->is_dup);
        size_t idx = model_lower_bound(m, it.key, it.key_len, it.seq, &exact);
        if (exact)
            continue;
        sop_val k = item_key(&it);
        if (sop_node__is_leaf(n->img)) {
            sop_leafval v = item_value(&it);
            REQ(sop_node__leaf_insert(n, (uint32_t)idx, &k, it.seq, &v) == SOP_OK);
        } else {
            REQ(sop_node__branch_insert(n, (uint32_t)idx, &k, it.seq, it.child) == SOP_OK);
        }
        model_insert(m, idx, &it);
        return 1;
    }
}

static int build_node(sop_node *n, model *m, int kind, int is_dup, const sop_keycmp *cmp,
                      size_t count, uint64_t lid)
{
    model_init(m, is_dup, cmp);
    REQ(sop_node__new(n, kind, is_dup ? SOP_NODE_DUP : 0, lid) == SOP_OK);
    if (kind == SOP_NODE_BRANCH) {
        m->child0 = test_rand();
        sop_node__set_child(n, 0, m->child0);
    }
    while (m->count < count)
        if (!insert_random(n, m))
            return 0;
    return 1;
}

/* ---- comparators -------------------------------------------------------------- */

static int reverse_compare(const sop_val *a, const sop_val *b, void *ctx)
{
    (*(uint64_t *)ctx)++;
    int c = sop_memcmp_keys(a->data, a->len, b->data, b->len);
    return c > 0 ? -1 : c < 0 ? 1 : 0;
}

/* ---- counting / failing allocator ---------------------------------------------- */

static struct {
    long calls;     /* malloc + realloc calls so far */
    long fail_at;   /* 0 = never; else the call number that fails */
    int persistent; /* fail every call from fail_at on */
    int fired;
} alloc_state;

static int alloc_should_fail(void)
{
    long n = ++alloc_state.calls;
    if (alloc_state.fail_at &&
        (n == alloc_state.fail_at || (alloc_state.persistent && n > alloc_state.fail_at))) {
        alloc_state.fired = 1;
        return 1;
    }
    return 0;
}
static void *test_malloc(size_t n, void *ctx)
{
    (void)ctx;
    return alloc_should_fail() ? NULL : malloc(n);
}
static void *test_realloc(void *p, size_t n, void *ctx)
{
    (void)ctx;
    return alloc_should_fail() ? NULL : realloc(p, n);
}
static void test_free(void *p, void *ctx)
{
    (void)ctx;
    free(p);
}
static const sop_allocator counting_allocator = {test_malloc, test_realloc, test_free, NULL};

static void alloc_arm(long fail_at, int persistent)
{
    memset(&alloc_state, 0, sizeof alloc_state);
    alloc_state.fail_at = fail_at;
    alloc_state.persistent = persistent;
    sop_set_allocator(&counting_allocator);
}

static void alloc_disarm(void)
{
    sop_set_allocator(NULL);
}

/* ---- basic format ------------------------------------------------------------ */

TEST(test_node__new_nodes_are_empty_and_valid)
{
    sop_node n;
    for (int kind = SOP_NODE_LEAF; kind <= SOP_NODE_BRANCH; kind++) {
        for (unsigned flags = 0; flags <= SOP_NODE_DUP; flags++) {
            CHECK_OK(sop_node__new(&n, kind, flags, 77));
            CHECK(n.img != NULL && n.alloc_len >= sop_node__image_len(n.img));
            CHECK_OK(sop_node__validate(n.img, sop_node__image_len(n.img), &(sop_keycmp){0}));
            CHECK_EQ_U64(sop_node__kind(n.img), kind);
            CHECK_EQ_U64(sop_node__is_leaf(n.img), kind == SOP_NODE_LEAF);
            CHECK_EQ_U64(sop_node__is_dup(n.img), flags);
            CHECK_EQ_U64(sop_node__count(n.img), 0);
            CHECK_EQ_U64(sop_node__lid(n.img), 77);
            CHECK_EQ_U64(sop_node__used_bytes(n.img), 40);
            CHECK_EQ_U64(sop_node__split_point(n.img), 0);
            sop_val k = {"k", 1};
            int exact = -1;
            CHECK_EQ_U64(sop_node__lower_bound(n.img, NULL, &k, 0, &exact), 0);
            CHECK_EQ_U64(exact, 0);
            uint8_t out[40];
            size_t len;
            CHECK_OK(sop_node__serialize(n.img, out, sizeof out, &len));
            CHECK_EQ_U64(len, 40);
            CHECK_OK(sop_node__validate(out, len, NULL));
            sop_node__free(&n);
            CHECK(n.img == NULL && n.alloc_len == 0);
            sop_node__free(&n); /* twice is fine */
        }
    }
    sop_node__free(NULL);
    CHECK_RC(SOP_INVAL, sop_node__new(&n, 0, 0, 1));
    CHECK(n.img == NULL);
    CHECK_RC(SOP_INVAL, sop_node__new(&n, 3, 0, 1));
    CHECK_RC(SOP_INVAL, sop_node__new(&n, SOP_NODE_LEAF, 0x2, 1));
    CHECK(n.img == NULL);
}

TEST(test_node__leaf_image_bytes_match_format_table)
{
    /* clang-format off */
    static const uint8_t want[] = {
        /* header */
        1, 1, 0, 0,             /* leaf, dup, hint_pos 0 ("ab", "b") */
        2, 0, 0, 0,             /* count */
        2, 0, 0, 0,             /* cap */
        60, 0, 0, 0,            /* data_len = 20 + 40 */
        0, 0, 0, 0,             /* garbage */
        0, 0, 0, 0,             /* reserved */
        0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, /* lid */
        0, 0, 0, 0, 0, 0, 0, 0, /* child0 */
        0, 0, 0, 0,             /* off[0] */
        0, 0, 0x62, 0x61,       /* hint[0]: "ab\0\0" big-endian */
        20, 0, 0, 0,            /* off[1] */
        0, 0, 0, 0x62,          /* hint[1]: "b\0\0\0" */
        /* slot 0: "ab", seq 7, inline "xyz" */
        2, 0, 0, 'a', 'b', 7, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 'x', 'y', 'z',
        /* slot 1: "b", seq 1, blob of 1000 bytes at {3, 0x10, 0x20, 0xdeadbeef} */
        1, 0, 1, 'b', 1, 0, 0, 0, 0, 0, 0, 0, 0xe8, 3, 0, 0, /* key, seq, value_len */
        3, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0,   /* seg, off */
        0x20, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde,               /* len, crc */
    };
    /* clang-format on */
    sop_node n;
    CHECK_OK(sop_node__new(&n, SOP_NODE_LEAF, SOP_NODE_DUP, 0x1122334455667788ull));
    sop_leafval v = {0};
    v.is_blob = 1;
    v.value_len = 1000;
    v.loc = (sop_loc){3, 0x10, 0x20, 0xdeadbeef};
    CHECK_OK(sop_node__leaf_insert(&n, 0, &(sop_val){"b", 1}, 1, &v));
    memset(&v, 0, sizeof v);
    v.inline_val = (sop_val){"xyz", 3};
    CHECK_OK(sop_node__leaf_insert(&n, 0, &(sop_val){"ab", 2}, 7, &v));
    uint8_t out[sizeof want];
    size_t len;
    CHECK_OK(sop_node__serialize(n.img, out, sizeof out, &len));
    CHECK_EQ_U64(len, sizeof want);
    CHECK(memcmp(out, want, sizeof want) == 0);
    CHECK_OK(sop_node__validate(want, sizeof want, &(sop_keycmp){0}));
    sop_node__free(&n);
}

TEST(test_node__branch_image_bytes_match_format_table)
{
    /* clang-format off */
    static const uint8_t want[] = {
        2, 0, 1, 0,             /* branch, not dup, hint_pos 1 (one key "m") */
        1, 0, 0, 0,             /* count */
        1, 0, 0, 0,             /* cap */
        12, 0, 0, 0,            /* data_len */
        0, 0, 0, 0, 0, 0, 0, 0, /* garbage, reserved */
        5, 0, 0, 0, 0, 0, 0, 0, /* lid */
        9, 0, 0, 0, 0, 0, 0, 0, /* child0 */
        0, 0, 0, 0,             /* off[0] */
        0, 0, 0, 0,             /* hint[0]: "m" past its 1-byte prefix: nothing */
        1, 0, 0, 'm', 10, 0, 0, 0, 0, 0, 0, 0, /* "m", child 1 = 10 */
    };
    /* clang-format on */
    sop_node n;
    CHECK_OK(sop_node__new(&n, SOP_NODE_BRANCH, 0, 5));
    sop_node__set_child(&n, 0, 9);
    CHECK_OK(sop_node__branch_insert(&n, 0, &(sop_val){"m", 1}, 0, 10));
    uint8_t out[sizeof want];
    size_t len;
    CHECK_OK(sop_node__serialize(n.img, out, sizeof out, &len));
    CHECK_EQ_U64(len, sizeof want);
    CHECK(memcmp(out, want, sizeof want) == 0);
    CHECK_EQ_U64(sop_node__child(want, 0), 9);
    CHECK_EQ_U64(sop_node__child(want, 1), 10);
    sop_node__free(&n);
}

/* ---- random model tests ------------------------------------------------------ */

/* Thousands of inserts, removes and value updates on one leaf, checked
 * against the model after every step. */
static int run_leaf_model(int is_dup, const sop_keycmp *cmp, unsigned steps)
{
    sop_node n;
    model m;
    model_init(&m, is_dup, cmp);
    clones_kept_garbage = clones_compacted = 0;
    REQ(sop_node__new(&n, SOP_NODE_LEAF, is_dup ? SOP_NODE_DUP : 0, 42) == SOP_OK);
    int ok = 1;
    unsigned inserts = 0, removes = 0, updates = 0;
    for (unsigned step = 0; step < steps && ok; step++) {
        uint64_t r = rand_below(100);
        /* Keep the size wandering between empty and a few hundred items. */
        size_t target = (step / 500) % 2 ? 40 : 300;
        int want_insert = m.count < target ? r < 60 : r < 35;
        if (want_insert || m.count == 0) {
            item it;
            int exact;
            gen_item(&it, is_dup);
            size_t idx = model_lower_bound(&m, it.key, it.key_len, it.seq, &exact);
            sop_val k = item_key(&it);
            sop_leafval v = item_value(&it);
            int node_exact = -1;
            ok = sop_node__lower_bound(n.img, cmp, &k, it.seq, &node_exact) == idx &&
                 node_exact == exact;
            if (!ok) {
                FAIL_AT("step %u: lower_bound disagrees before insert", step);
                break;
            }
            if (exact) { /* present: update it instead */
                ok = sop_node__leaf_set_value(&n, (uint32_t)idx, &v) == SOP_OK;
                m.items[idx].is_blob = it.is_blob;
                m.items[idx].value_len = it.value_len;
                m.items[idx].loc = it.loc;
                memcpy(m.items[idx].value, it.value, it.is_blob ? 0 : it.value_len);
                updates++;
            } else {
                ok = sop_node__leaf_insert(&n, (uint32_t)idx, &k, it.seq, &v) == SOP_OK;
                model_insert(&m, idx, &it);
                inserts++;
            }
        } else if (r < 75 || m.count >= 2 * target) {
            size_t idx = rand_below(m.count);
            sop_node__remove(&n, (uint32_t)idx);
            model_remove(&m, idx);
            removes++;
        } else {
            size_t idx = rand_below(m.count);
            item it = m.items[idx];
            gen_value(&it);
            sop_leafval v = item_value(&it);
            ok = sop_node__leaf_set_value(&n, (uint32_t)idx, &v) == SOP_OK;
            m.items[idx] = it;
            updates++;
        }
        if (!ok) {
            FAIL_AT("step %u: edit failed: %s", step, sop_errmsg());
            break;
        }
        ok = node_matches(n.img, &m);
        /* (N8): garbage at most half of data_len after every edit. */
        if (ok && hdr_garbage(n.img) > hdr_data_len(n.img) / 2) {
            FAIL_AT("step %u: garbage %u of data_len %u", step, hdr_garbage(n.img),
                    hdr_data_len(n.img));
            ok = 0;
        }
        if (ok && n.alloc_len < sop_node__image_len(n.img)) {
            FAIL_AT("step %u: image longer than its buffer", step);
            ok = 0;
        }
        if (ok && step % 25 == 0)
            ok = probes_match(n.img, &m, 40) && serialize_round_trips(n.img, &m);
        if (!ok)
            FAIL_AT("at step %u (count %zu)", step, m.count);
    }
    if (ok && (clones_kept_garbage == 0 || clones_compacted == 0)) {
        FAIL_AT("clone paths not both taken: %u kept garbage, %u compacted", clones_kept_garbage,
                clones_compacted);
        ok = 0;
    }
    if (ok && (inserts < steps / 4 || removes < steps / 8 || updates < steps / 20)) {
        FAIL_AT("op mix too thin: %u inserts, %u removes, %u updates", inserts, removes, updates);
        ok = 0;
    }
    sop_node__free(&n);
    model_free(&m);
    return ok;
}

TEST(test_node__random_leaf_ops_match_model_unique_keys)
{
    CHECK(run_leaf_model(0, NULL, 4000 * scale()));
}

TEST(test_node__random_leaf_ops_match_model_dup_keys)
{
    CHECK(run_leaf_model(1, &(sop_keycmp){0}, 4000 * scale()));
}

TEST(test_node__random_leaf_ops_match_model_reverse_comparator)
{
    uint64_t calls = 0;
    sop_keycmp reverse = {reverse_compare, &calls};
    CHECK(run_leaf_model(1, &reverse, 2000 * scale()));
    CHECK(run_leaf_model(0, &reverse, 2000 * scale()));
    CHECK(calls > 0); /* ctx reached the comparator */
}

static int run_branch_model(int is_dup, unsigned steps)
{
    sop_node n;
    model m;
    if (!build_node(&n, &m, SOP_NODE_BRANCH, is_dup, NULL, 0, 7))
        return 0;
    int ok = 1;
    for (unsigned step = 0; step < steps && ok; step++) {
        uint64_t r = rand_below(100);
        size_t target = (step / 400) % 2 ? 20 : 200;
        if ((m.count < target ? r < 60 : r < 35) || m.count == 0) {
            ok = insert_random(&n, &m);
        } else if (r < 80) {
            size_t idx = rand_below(m.count);
            sop_node__remove(&n, (uint32_t)idx);
            model_remove(&m, idx);
        } else {
            size_t idx = rand_below(m.count + 1);
            uint64_t lid = test_rand();
            sop_node__set_child(&n, (uint32_t)idx, lid);
            if (idx == 0)
                m.child0 = lid;
            else
                m.items[idx - 1].child = lid;
        }
        if (ok)
            ok = node_matches(n.img, &m);
        if (ok && step % 25 == 0)
            ok = probes_match(n.img, &m, 40) && serialize_round_trips(n.img, &m);
        if (!ok)
            FAIL_AT("at step %u (count %zu)", step, m.count);
    }
    sop_node__free(&n);
    model_free(&m);
    return ok;
}

TEST(test_node__random_branch_ops_match_model)
{
    CHECK(run_branch_model(0, 3000 * scale()));
    CHECK(run_branch_model(1, 3000 * scale()));
}

TEST(test_node__prepends_and_middle_inserts_keep_order)
{
    sop_node n;
    model m;
    model_init(&m, 0, NULL);
    CHECK_OK(sop_node__new(&n, SOP_NODE_LEAF, 0, 1));
    /* 3000 descending keys, each inserted at index 0. */
    for (unsigned i = 0; i < 3000; i++) {
        item it;
        memset(&it, 0, sizeof it);
        unsigned key = 3000 - i;
        it.key[0] = (uint8_t)(key >> 8);
        it.key[1] = (uint8_t)key;
        it.key_len = 2;
        it.value_len = 4;
        memcpy(it.value, &key, 4);
        sop_val k = item_key(&it);
        sop_leafval v = item_value(&it);
        CHECK_OK(sop_node__leaf_insert(&n, 0, &k, 0, &v));
        model_insert(&m, 0, &it);
    }
    CHECK(node_matches(n.img, &m));
    CHECK(probes_match(n.img, &m, 200));
    sop_node__free(&n);
    model_free(&m);
}

TEST(test_node__custom_comparator_orders_lower_bound_and_child_index)
{
    uint64_t calls = 0;
    sop_keycmp reverse = {reverse_compare, &calls};
    sop_node leaf, branch;
    sop_leafval v = {0};
    CHECK_OK(sop_node__new(&leaf, SOP_NODE_LEAF, 0, 1));
    CHECK_OK(sop_node__new(&branch, SOP_NODE_BRANCH, 0, 2));
    sop_node__set_child(&branch, 0, 100);
    /* Reverse order: d, c, bb, b, a. Each insert position comes from lower_bound. */
    const char *keys[] = {"b", "d", "a", "bb", "c"};
    for (int i = 0; i < 5; i++) {
        sop_val k = {keys[i], strlen(keys[i])};
        int exact;
        uint32_t idx = sop_node__lower_bound(leaf.img, &reverse, &k, 0, &exact);
        CHECK_EQ_U64(exact, 0);
        CHECK_OK(sop_node__leaf_insert(&leaf, idx, &k, 0, &v));
    }
    const char *order[] = {"d", "c", "bb", "b", "a"};
    for (uint32_t i = 0; i < 5; i++) {
        sop_val k;
        sop_node__key(leaf.img, i, &k, NULL);
        CHECK_VAL(k, order[i]);
    }
    int exact;
    CHECK_EQ_U64(sop_node__lower_bound(leaf.img, &reverse, &(sop_val){"c", 1}, 0, &exact), 1);
    CHECK_EQ_U64(exact, 1);
    CHECK_EQ_U64(sop_node__lower_bound(leaf.img, &reverse, &(sop_val){"ba", 2}, 0, &exact), 3);
    CHECK_EQ_U64(exact, 0);
    CHECK_EQ_U64(sop_node__lower_bound(leaf.img, &reverse, &(sop_val){"z", 1}, 0, &exact), 0);
    CHECK_EQ_U64(sop_node__lower_bound(leaf.img, &reverse, &(sop_val){"\x01", 1}, 0, &exact), 5);
    CHECK(calls > 0);
    /* The same bytes are out of order bytewise. */
    CHECK_OK(sop_node__validate(leaf.img, sop_node__image_len(leaf.img), &reverse));
    CHECK_RC(SOP_CORRUPT,
             sop_node__validate(leaf.img, sop_node__image_len(leaf.img), &(sop_keycmp){0}));

    /* Branch with separators d, c, b (reverse): children 100 | 101 | 102 | 103. */
    CHECK_OK(sop_node__branch_insert(&branch, 0, &(sop_val){"d", 1}, 0, 101));
    CHECK_OK(sop_node__branch_insert(&branch, 1, &(sop_val){"c", 1}, 0, 102));
    CHECK_OK(sop_node__branch_insert(&branch, 2, &(sop_val){"b", 1}, 0, 103));
    struct {
        const char *key;
        uint32_t child_idx;
    } cases[] = {{"z", 0}, {"d", 1}, {"cc", 1}, {"c", 2}, {"bb", 2}, {"b", 3}, {"a", 3}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sop_val k = {cases[i].key, strlen(cases[i].key)};
        uint32_t got = sop_node__child_index(branch.img, &reverse, &k, 0);
        if (got != cases[i].child_idx)
            FAIL_AT("child_index(%s) = %u, want %u", cases[i].key, got, cases[i].child_idx);
        CHECK(got == cases[i].child_idx);
        CHECK_EQ_U64(sop_node__child(branch.img, got), 100 + got);
    }
    /* Bytewise, "z" would go right of every separator instead. */
    CHECK_EQ_U64(sop_node__child_index(branch.img, NULL, &(sop_val){"z", 1}, 0), 3);
    sop_node__free(&leaf);
    sop_node__free(&branch);
}

TEST(test_node__dup_seq_orders_equal_keys)
{
    sop_node n;
    sop_leafval v = {0};
    CHECK_OK(sop_node__new(&n, SOP_NODE_LEAF, SOP_NODE_DUP, 1));
    uint64_t seqs[] = {UINT64_MAX, 0, 5, 1ull << 63};
    for (int i = 0; i < 4; i++) {
        sop_val k = {"k", 1};
        int exact;
        uint32_t idx = sop_node__lower_bound(n.img, NULL, &k, seqs[i], &exact);
        CHECK_OK(sop_node__leaf_insert(&n, idx, &k, seqs[i], &v));
    }
    uint64_t want[] = {0, 5, 1ull << 63, UINT64_MAX};
    for (uint32_t i = 0; i < 4; i++) {
        sop_val k;
        uint64_t seq;
        sop_node__key(n.img, i, &k, &seq);
        CHECK_EQ_U64(seq, want[i]);
    }
    int exact;
    CHECK_EQ_U64(sop_node__lower_bound(n.img, NULL, &(sop_val){"k", 1}, 6, &exact), 2);
    CHECK_EQ_U64(exact, 0);
    CHECK_EQ_U64(sop_node__lower_bound(n.img, NULL, &(sop_val){"k", 1}, 5, &exact), 1);
    CHECK_EQ_U64(exact, 1);
    /* Same (key, seq) twice is out of order in a dup node. */
    CHECK_OK(sop_node__leaf_insert(&n, 1, &(sop_val){"k", 1}, 0, &v));
    CHECK_RC(SOP_CORRUPT, sop_node__validate(n.img, sop_node__image_len(n.img), &(sop_keycmp){0}));
    CHECK_OK(sop_node__validate(n.img, sop_node__image_len(n.img), NULL));
    sop_node__free(&n);
}

/* ---- split, merge, split point ---------------------------------------------------- */

static int split_merge_round_trip(int kind, int is_dup, size_t count)
{
    sop_node orig;
    model m;
    int ok = build_node(&orig, &m, kind, is_dup, NULL, count, 900);
    size_t orig_len = 0;
    uint8_t *orig_bytes = ok ? serialize_copy(orig.img, &orig_len) : NULL;
    static uint8_t sep_buf[SOP_MAX_KEY_LEN];
    uint32_t first_at = kind == SOP_NODE_LEAF ? 1 : 0;
    for (uint32_t at = first_at; ok && at < count; at++) {
        sop_node left = {0}, right = {0};
        sop_val sep = {0};
        uint64_t sep_seq = 99;
        ok = orig_bytes && sop_node__clone(&left, orig_bytes, 900) == SOP_OK &&
             sop_node__split(&left, &right, at, 901, &sep, &sep_seq, sep_buf) == SOP_OK;
        if (ok) {
            /* Left and right hold exactly the expected slices of the model. */
            model lm = m, rm = m;
            uint32_t right_first = kind == SOP_NODE_LEAF ? at : at + 1;
            lm.count = at;
            rm.items = m.items + right_first;
            rm.count = m.count - right_first;
            if (kind == SOP_NODE_BRANCH)
                rm.child0 = m.items[at].child;
            ok = node_matches(left.img, &lm) && node_matches(right.img, &rm) &&
                 sop_node__lid(left.img) == 900 && sop_node__lid(right.img) == 901 &&
                 sep.data == sep_buf && sep.len == m.items[at].key_len &&
                 memcmp(sep.data, m.items[at].key, sep.len) == 0 && sep_seq == m.items[at].seq;
            if (!ok)
                FAIL_AT("split at %u of %zu (kind %d dup %d) wrong", at, count, kind, is_dup);
        }
        if (ok) {
            /* Merging back gives the original bytes (serialize is canonical). */
            size_t len = 0;
            ok = sop_node__merge(&left, right.img, kind == SOP_NODE_LEAF ? NULL : &sep, sep_seq) ==
                 SOP_OK;
            uint8_t *bytes = ok ? serialize_copy(left.img, &len) : NULL;
            ok = bytes && len == orig_len && memcmp(bytes, orig_bytes, len) == 0;
            free(bytes);
            if (!ok)
                FAIL_AT("merge after split at %u of %zu (kind %d dup %d) differs", at, count, kind,
                        is_dup);
        }
        sop_node__free(&left);
        sop_node__free(&right);
    }
    free(orig_bytes);
    sop_node__free(&orig);
    model_free(&m);
    return ok;
}

TEST(test_node__leaf_split_merge_round_trip)
{
    CHECK(split_merge_round_trip(SOP_NODE_LEAF, 0, 2));
    CHECK(split_merge_round_trip(SOP_NODE_LEAF, 0, 60));
    CHECK(split_merge_round_trip(SOP_NODE_LEAF, 1, 60));
}

TEST(test_node__branch_split_merge_round_trip)
{
    CHECK(split_merge_round_trip(SOP_NODE_BRANCH, 0, 1));
    CHECK(split_merge_round_trip(SOP_NODE_BRANCH, 0, 60));
    CHECK(split_merge_round_trip(SOP_NODE_BRANCH, 1, 60));
}

TEST(test_node__split_then_edit_both_halves)
{
    /* After a split, both halves stay editable and the separator survives. */
    sop_node left, right;
    model m;
    CHECK(build_node(&left, &m, SOP_NODE_LEAF, 0, NULL, 100, 1));
    static uint8_t sep_buf[SOP_MAX_KEY_LEN];
    sop_val sep;
    uint64_t sep_seq;
    uint32_t at = sop_node__split_point(left.img);
    CHECK_OK(sop_node__split(&left, &right, at, 2, &sep, &sep_seq, sep_buf));
    /* Drop half of each side, from the far ends. */
    uint32_t drop_left = at / 2, drop_right = (100 - at) / 2;
    for (uint32_t i = 0; i < drop_left; i++)
        sop_node__remove(&left, 0);
    for (uint32_t i = 0; i < drop_right; i++)
        sop_node__remove(&right, sop_node__count(right.img) - 1);
    CHECK_EQ_U64(sop_node__count(left.img), at - drop_left);
    CHECK_EQ_U64(sop_node__count(right.img), 100 - at - drop_right);
    CHECK_EQ_U64(sep.len, m.items[at].key_len);
    CHECK(memcmp(sep.data, m.items[at].key, sep.len) == 0);
    CHECK_OK(sop_node__validate(left.img, sop_node__image_len(left.img), &(sop_keycmp){0}));
    CHECK_OK(sop_node__validate(right.img, sop_node__image_len(right.img), &(sop_keycmp){0}));
    sop_node__free(&left);
    sop_node__free(&right);
    model_free(&m);
}

/* |left - right| bytes for a split at `at` (the definition in node.h). */
static uint64_t split_imbalance(const uint8_t *img, uint32_t at)
{
    uint64_t left = 0, right = 0;
    uint32_t count = sop_node__count(img);
    for (uint32_t i = 0; i < count; i++) {
        uint64_t b = sop_node__slot_bytes(img, i) + 8;
        if (i < at)
            left += b;
        else if (i > at || sop_node__is_leaf(img))
            right += b;
    }
    return left > right ? left - right : right - left;
}

TEST(test_node__split_point_balances_bytes)
{
    for (int round = 0; round < 40; round++) {
        int kind = round % 2 ? SOP_NODE_BRANCH : SOP_NODE_LEAF;
        sop_node n;
        model m;
        CHECK(build_node(&n, &m, kind, round % 3 == 0, NULL, 2 + rand_below(120), 1));
        uint32_t count = sop_node__count(n.img);
        uint32_t at = sop_node__split_point(n.img);
        CHECK(at >= 1 && at <= count - 1);
        for (uint32_t j = 1; j < count; j++)
            CHECK(split_imbalance(n.img, at) <= split_imbalance(n.img, j));
        sop_node__free(&n);
        model_free(&m);
    }
    /* Equal slots: the middle. */
    sop_node n;
    CHECK_OK(sop_node__new(&n, SOP_NODE_LEAF, 0, 1));
    sop_leafval v = {0};
    for (int i = 0; i < 10; i++) {
        char key[2] = {(char)('a' + i), 0};
        CHECK_OK(sop_node__leaf_insert(&n, (uint32_t)i, &(sop_val){key, 1}, 0, &v));
    }
    CHECK_EQ_U64(sop_node__split_point(n.img), 5);
    /* One huge item at the end pulls the split point to it. */
    static uint8_t big[5000];
    v.inline_val = (sop_val){big, sizeof big};
    CHECK_OK(sop_node__leaf_insert(&n, 10, &(sop_val){"z", 1}, 0, &v));
    CHECK_EQ_U64(sop_node__split_point(n.img), 10);
    sop_node__free(&n);
}

TEST(test_node__split_and_merge_reject_bad_arguments)
{
    sop_node leaf, branch, right;
    model m1, m2;
    static uint8_t sep_buf[SOP_MAX_KEY_LEN];
    sop_val sep;
    uint64_t seq;
    CHECK(build_node(&leaf, &m1, SOP_NODE_LEAF, 0, NULL, 5, 1));
    CHECK(build_node(&branch, &m2, SOP_NODE_BRANCH, 0, NULL, 5, 2));
    size_t leaf_len = 0;
    uint8_t *before = serialize_copy(leaf.img, &leaf_len);
    CHECK(before != NULL);
    CHECK_RC(SOP_INVAL, sop_node__split(&leaf, &right, 0, 3, &sep, &seq, sep_buf));
    CHECK(right.img == NULL);
    CHECK_RC(SOP_INVAL, sop_node__split(&leaf, &right, 5, 3, &sep, &seq, sep_buf));
    CHECK_RC(SOP_INVAL, sop_node__split(&branch, &right, 5, 3, &sep, &seq, sep_buf));
    CHECK_RC(SOP_INVAL, sop_node__merge(&leaf, branch.img, NULL, 0));
    CHECK_RC(SOP_INVAL, sop_node__merge(&leaf, leaf.img, NULL, 0));
    CHECK_RC(SOP_INVAL, sop_node__merge(&branch, branch.img, &(sop_val){"k", 1}, 0));
    sop_node other;
    CHECK_OK(sop_node__new(&other, SOP_NODE_LEAF, SOP_NODE_DUP, 4));
    CHECK_RC(SOP_INVAL, sop_node__merge(&leaf, other.img, NULL, 0));
    sop_node__free(&other);
    CHECK_OK(sop_node__new(&other, SOP_NODE_BRANCH, 0, 4));
    CHECK_RC(SOP_INVAL, sop_node__merge(&branch, other.img, NULL, 0));
    CHECK_RC(SOP_INVAL, sop_node__merge(&branch, other.img, &(sop_val){"", 0}, 0));
    CHECK_RC(SOP_INVAL, sop_node__merge(&branch, other.img, &(sop_val){"k", 1}, 1));
    sop_node__free(&other);
    size_t len = 0;
    uint8_t *after = serialize_copy(leaf.img, &len);
    CHECK(after && len == leaf_len && memcmp(before, after, len) == 0);
    free(before);
    free(after);
    sop_node__free(&leaf);
    sop_node__free(&branch);
    model_free(&m1);
    model_free(&m2);
}

/* ---- edits: arguments, aliasing, growth ---------------------------------------- */

TEST(test_node__edits_reject_bad_arguments)
{
    sop_node leaf, dup, branch;
    model m;
    CHECK(build_node(&leaf, &m, SOP_NODE_LEAF, 0, NULL, 10, 1));
    CHECK_OK(sop_node__new(&dup, SOP_NODE_LEAF, SOP_NODE_DUP, 2));
    CHECK_OK(sop_node__new(&branch, SOP_NODE_BRANCH, 0, 3));
    size_t image_len = sop_node__image_len(leaf.img), alloc_len = leaf.alloc_len;
    uint8_t *before = malloc(image_len);
    CHECK(before != NULL);
    memcpy(before, leaf.img, image_len);

    static uint8_t long_key[SOP_MAX_KEY_LEN + 1];
    sop_leafval v = {0};
    sop_leafval too_long = {0};
    too_long.is_blob = 1;
    too_long.value_len = SOP_MAX_VALUE_LEN + 1;
    sop_leafval null_bytes = {0};
    null_bytes.inline_val.len = 3;
    sop_val k = {"k", 1};
    CHECK_RC(SOP_INVAL, sop_node__leaf_insert(&leaf, 11, &k, 0, &v));
    CHECK_RC(SOP_INVAL, sop_node__leaf_insert(&leaf, 0, &(sop_val){"", 0}, 0, &v));
    CHECK_RC(SOP_INVAL, sop_node__leaf_insert(&leaf, 0, &(sop_val){NULL, 1}, 0, &v));
    CHECK_RC(SOP_INVAL,
             sop_node__leaf_insert(&leaf, 0, &(sop_val){long_key, SOP_MAX_KEY_LEN + 1}, 0, &v));
    CHECK_RC(SOP_INVAL, sop_node__leaf_insert(&leaf, 0, &k, 1, &v)); /* seq in non-dup */
    CHECK_RC(SOP_INVAL, sop_node__leaf_insert(&leaf, 0, &k, 0, &too_long));
    CHECK_RC(SOP_INVAL, sop_node__leaf_insert(&leaf, 0, &k, 0, &null_bytes));
    CHECK_RC(SOP_INVAL, sop_node__leaf_insert(&leaf, 0, &k, 0, NULL));
    CHECK_RC(SOP_INVAL, sop_node__leaf_insert(NULL, 0, &k, 0, &v));
    CHECK_RC(SOP_INVAL, sop_node__leaf_set_value(&leaf, 10, &v));
    CHECK_RC(SOP_INVAL, sop_node__leaf_set_value(&leaf, 0, &too_long));
    CHECK_RC(SOP_INVAL, sop_node__branch_insert(&leaf, 0, &k, 0, 5));
    CHECK_RC(SOP_INVAL, sop_node__leaf_insert(&branch, 0, &k, 0, &v));
    CHECK_RC(SOP_INVAL, sop_node__leaf_set_value(&branch, 0, &v));
    CHECK_RC(SOP_INVAL, sop_node__branch_insert(&branch, 1, &k, 0, 5));
    CHECK_RC(SOP_INVAL, sop_node__branch_insert(&branch, 0, &k, 7, 5));
    CHECK(strstr(sop_errmsg(), "node 3") != NULL);
    CHECK_EQ_U64(sop_node__image_len(leaf.img), image_len);
    CHECK_EQ_U64(leaf.alloc_len, alloc_len);
    CHECK(memcmp(before, leaf.img, image_len) == 0);
    CHECK_EQ_U64(sop_node__count(branch.img), 0);
    /* The longest key and a seq are fine where they belong. */
    memset(long_key, 'x', sizeof long_key);
    CHECK_OK(sop_node__leaf_insert(&dup, 0, &(sop_val){long_key, SOP_MAX_KEY_LEN}, UINT64_MAX, &v));
    CHECK_OK(sop_node__validate(dup.img, sop_node__image_len(dup.img), &(sop_keycmp){0}));
    free(before);
    sop_node__free(&leaf);
    sop_node__free(&dup);
    sop_node__free(&branch);
    model_free(&m);
}

TEST(test_node__keys_and_values_may_point_into_own_image)
{
    sop_node n;
    model m;
    CHECK(build_node(&n, &m, SOP_NODE_LEAF, 1, NULL, 30, 1));
    for (int round = 0; round < 400; round++) {
        uint32_t idx = (uint32_t)rand_below(m.count);
        sop_val k;
        uint64_t seq;
        sop_leafval v;
        sop_node__key(n.img, idx, &k, &seq);
        sop_node__leaf_value(n.img, idx, &v);
        item it = m.items[idx];
        /* Insert a copy of item idx (seq + 1 if free) reading key and
         * value straight out of the image that may be reallocated. */
        it.seq = seq + 1;
        int exact;
        size_t at = model_lower_bound(&m, it.key, it.key_len, it.seq, &exact);
        if (!exact && it.seq != 0) {
            CHECK_OK(sop_node__leaf_insert(&n, (uint32_t)at, &k, it.seq, &v));
            model_insert(&m, at, &it);
        }
        /* Set item j's value from item i's bytes (both in the image). */
        uint32_t i = (uint32_t)rand_below(m.count), j = (uint32_t)rand_below(m.count);
        sop_node__leaf_value(n.img, i, &v);
        CHECK_OK(sop_node__leaf_set_value(&n, j, &v));
        m.items[j].is_blob = m.items[i].is_blob;
        m.items[j].value_len = m.items[i].value_len;
        m.items[j].loc = m.items[i].loc;
        if (!m.items[i].is_blob)
            memmove(m.items[j].value, m.items[i].value, m.items[i].value_len);
        CHECK(node_matches(n.img, &m));
    }
    /* A branch separator from the branch's own key. */
    sop_node b;
    model bm;
    CHECK(build_node(&b, &bm, SOP_NODE_BRANCH, 1, NULL, 7, 2));
    for (int i = 0; i < 200; i++) {
        sop_val k;
        uint64_t seq;
        sop_node__key(b.img, sop_node__count(b.img) - 1, &k, &seq);
        CHECK(seq != UINT64_MAX);
        item it = bm.items[bm.count - 1];
        it.seq = seq + 1;
        it.child = (uint64_t)i;
        CHECK_OK(sop_node__branch_insert(&b, sop_node__count(b.img), &k, it.seq, it.child));
        model_insert(&bm, bm.count, &it);
    }
    CHECK(node_matches(b.img, &bm));
    sop_node__free(&n);
    sop_node__free(&b);
    model_free(&m);
    model_free(&bm);
}

TEST(test_node__need_bytes_predict_growth)
{
    sop_node leaf, branch;
    model lm, bm;
    CHECK(build_node(&leaf, &lm, SOP_NODE_LEAF, 1, NULL, 0, 1));
    CHECK(build_node(&branch, &bm, SOP_NODE_BRANCH, 0, NULL, 0, 2));
    for (int i = 0; i < 200; i++) {
        item it;
        gen_item(&it, 1);
        sop_leafval v = item_value(&it);
        size_t before = sop_node__used_bytes(leaf.img);
        size_t need = sop_node__leaf_need_bytes(leaf.img, it.key_len, &v);
        sop_val k = item_key(&it);
        CHECK_OK(sop_node__leaf_insert(&leaf, 0, &k, it.seq, &v));
        CHECK_EQ_U64(sop_node__used_bytes(leaf.img), before + need);
        before = sop_node__used_bytes(branch.img);
        need = sop_node__branch_need_bytes(branch.img, it.key_len);
        CHECK_OK(sop_node__branch_insert(&branch, 0, &k, 0, 1));
        CHECK_EQ_U64(sop_node__used_bytes(branch.img), before + need);
    }
    sop_node__free(&leaf);
    sop_node__free(&branch);
    model_free(&lm);
    model_free(&bm);
}

TEST(test_node__sequential_appends_are_amortised)
{
    enum { N = 100000 };
    sop_node n;
    sop_leafval v = {0};
    alloc_arm(0, 0);
    int rc = sop_node__new(&n, SOP_NODE_LEAF, 0, 1);
    for (uint32_t i = 0; rc == SOP_OK && i < N; i++) {
        uint8_t key[4] = {(uint8_t)(i >> 24), (uint8_t)(i >> 16), (uint8_t)(i >> 8), (uint8_t)i};
        v.inline_val = (sop_val){key, 4};
        rc = sop_node__leaf_insert(&n, i, &(sop_val){key, 4}, 0, &v);
    }
    long calls = alloc_state.calls;
    alloc_disarm();
    CHECK_OK(rc);
    CHECK_EQ_U64(sop_node__count(n.img), N);
    /* Geometric growth: 1.5x from ~330 bytes to ~2 MB is about 22 steps. */
    if (calls > 40)
        FAIL_AT("%ld allocations for %d appends", calls, N);
    CHECK(calls <= 40);
    CHECK_OK(sop_node__validate(n.img, sop_node__image_len(n.img), &(sop_keycmp){0}));
    /* Removing from the end shortens data_len instead of piling up garbage. */
    for (uint32_t i = 0; i < N / 2; i++)
        sop_node__remove(&n, sop_node__count(n.img) - 1);
    CHECK_EQ_U64(hdr_garbage(n.img), 0);
    sop_node__free(&n);
}

TEST(test_node__removes_compact_the_node)
{
    sop_node n;
    model m;
    CHECK(build_node(&n, &m, SOP_NODE_LEAF, 0, NULL, 400, 1));
    size_t big_alloc = n.alloc_len;
    while (m.count > 10) {
        size_t idx = rand_below(m.count);
        sop_node__remove(&n, (uint32_t)idx);
        model_remove(&m, idx);
        CHECK(hdr_garbage(n.img) <= hdr_data_len(n.img) / 2);
    }
    CHECK(node_matches(n.img, &m));
    CHECK(n.alloc_len < big_alloc / 4); /* memory came back */
    sop_node__free(&n);
    model_free(&m);
}

/* ---- allocation failure ------------------------------------------------------------ */

static uint64_t local_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* n's raw image and buffer size equal the saved ones. */
static int node_unchanged(const sop_node *n, const uint8_t *saved, size_t saved_len,
                          size_t saved_alloc)
{
    REQ(n->alloc_len == saved_alloc);
    REQ(sop_node__image_len(n->img) == saved_len);
    REQ(memcmp(n->img, saved, saved_len) == 0);
    return 1;
}

/* A fixed sequence of edits (its own rng, so every run is the same) where
 * each call must return SOP_OK or SOP_NOMEM, and SOP_NOMEM must leave the
 * node byte-for-byte as it was. */
static unsigned nomem_seen; /* SOP_NOMEM returns, to prove the failures bit */

static int nomem_scenario(int kind)
{
    uint64_t rng = test_seed ^ 0x5eedull;
    static uint8_t saved[1 << 20];
    static uint8_t sep_buf[SOP_MAX_KEY_LEN];
    sop_node n, right, clone;
    int is_leaf = kind == SOP_NODE_LEAF;
    int rc = sop_node__new(&n, kind, SOP_NODE_DUP, 1);
    if (rc == SOP_NOMEM) {
        REQ(n.img == NULL);
        return 1;
    }
    REQ(rc == SOP_OK);
    int ok = 1;
    uint64_t next_seq = 1;
    for (int step = 0; step < 300 && ok; step++) {
        size_t saved_len = sop_node__image_len(n.img), saved_alloc = n.alloc_len;
        if (saved_len > sizeof saved)
            break;
        memcpy(saved, n.img, saved_len);
        uint32_t count = sop_node__count(n.img);
        uint64_t r = local_rand(&rng) % 100;
        /* Big-endian counter first, then padding of any length: appends stay
         * strictly increasing. */
        uint8_t key[40], value[300];
        size_t key_len = 8 + local_rand(&rng) % (sizeof key - 8);
        memset(key, 'k', key_len);
        for (int b = 0; b < 8; b++)
            key[b] = (uint8_t)(next_seq >> (56 - 8 * b));
        memset(value, (int)step, sizeof value);
        sop_leafval v = {0};
        v.inline_val = (sop_val){value, local_rand(&rng) % sizeof value};
        if (r < 55 || count < 2) {
            rc = is_leaf ? sop_node__leaf_insert(&n, count, &(sop_val){key, key_len}, next_seq, &v)
                         : sop_node__branch_insert(&n, count, &(sop_val){key, key_len}, next_seq,
                                                   next_seq);
            if (rc == SOP_OK)
                next_seq++;
        } else if (r < 70) {
            if (is_leaf) {
                rc = sop_node__leaf_set_value(&n, (uint32_t)(local_rand(&rng) % count), &v);
            } else {
                sop_node__set_child(&n, (uint32_t)(local_rand(&rng) % (count + 1)), step);
                rc = SOP_OK;
            }
        } else if (r < 85) {
            sop_node__remove(&n, (uint32_t)(local_rand(&rng) % count));
            rc = SOP_OK;
        } else if (r < 93) {
            sop_val sep;
            uint64_t sep_seq;
            rc = sop_node__split(&n, &right, sop_node__split_point(n.img), 2, &sep, &sep_seq,
                                 sep_buf);
            if (rc == SOP_OK) {
                rc = sop_node__merge(&n, right.img, &sep, sep_seq);
                if (rc == SOP_NOMEM)
                    ok = sop_node__validate(n.img, sop_node__image_len(n.img), NULL) == SOP_OK;
                sop_node__free(&right);
                if (rc == SOP_NOMEM) /* the split itself succeeded: content changed */
                    continue;
            } else {
                ok = right.img == NULL;
            }
        } else {
            rc = sop_node__clone(&clone, n.img, 3);
            ok = (rc == SOP_OK) == (clone.img != NULL);
            sop_node__free(&clone);
        }
        if (ok && rc != SOP_OK && rc != SOP_NOMEM) {
            FAIL_AT("step %d: rc %d (%s)", step, rc, sop_errmsg());
            ok = 0;
        }
        if (ok && rc == SOP_NOMEM) {
            nomem_seen++;
            ok = node_unchanged(&n, saved, saved_len, saved_alloc);
        }
        if (ok)
            ok = sop_node__validate(n.img, sop_node__image_len(n.img), &(sop_keycmp){0}) == SOP_OK;
        if (!ok)
            FAIL_AT("step %d (op %" PRIu64 ", rc %d)", step, r, rc);
    }
    sop_node__free(&n);
    return ok;
}

TEST(test_node__failed_malloc_leaves_node_unchanged)
{
    for (int persistent = 0; persistent <= 1; persistent++) {
        long n;
        nomem_seen = 0;
        for (n = 1;; n++) { /* fail call n until the run never reaches n */
            alloc_arm(n, persistent);
            int ok = nomem_scenario(SOP_NODE_LEAF) && nomem_scenario(SOP_NODE_BRANCH);
            int fired = alloc_state.fired;
            alloc_disarm();
            if (!ok)
                FAIL_AT("failing allocation %ld (%s)", n, persistent ? "persistent" : "once");
            CHECK(ok);
            if (!fired)
                break;
        }
        CHECK(n > 5); /* the scenario allocates more than a handful of times */
        /* Many failures surface as SOP_NOMEM; the rest hit best-effort
         * compactions (N8), which succeed without them. */
        CHECK(nomem_seen >= (unsigned)n / 4);
    }
}

/* ---- validation of corrupt images ---------------------------------------------------- */

/* A varied valid compact image: inline and blob values, dup seqs. */
static uint8_t *sample_image(size_t *len_out, int kind, int is_dup, size_t count)
{
    sop_node n;
    model m;
    uint8_t *bytes = NULL;
    if (build_node(&n, &m, kind, is_dup, NULL, count, 0xabcdef))
        bytes = serialize_copy(n.img, len_out);
    sop_node__free(&n);
    model_free(&m);
    return bytes;
}

TEST(test_node__validate_rejects_every_truncation)
{
    for (int variant = 0; variant < 3; variant++) {
        size_t len;
        int kind = variant == 2 ? SOP_NODE_BRANCH : SOP_NODE_LEAF;
        uint8_t *img = sample_image(&len, kind, variant == 1, 25);
        CHECK(img != NULL);
        CHECK_OK(sop_node__validate(img, len, &(sop_keycmp){0}));
        CHECK_RC(SOP_CORRUPT, sop_node__validate(NULL, 0, NULL));
        for (size_t cut = 0; cut < len; cut++) {
            /* Exact-size heap copy: ASan flags any read past the end. */
            uint8_t *copy = malloc(cut ? cut : 1);
            CHECK(copy != NULL);
            memcpy(copy, img, cut);
            int rc = sop_node__validate(copy, cut, NULL);
            free(copy);
            if (rc != SOP_CORRUPT)
                FAIL_AT("prefix of %zu of %zu bytes: rc %d", cut, len, rc);
            CHECK(rc == SOP_CORRUPT);
        }
        uint8_t *longer = malloc(len + 1);
        CHECK(longer != NULL);
        memcpy(longer, img, len);
        longer[len] = 0;
        CHECK_RC(SOP_CORRUPT, sop_node__validate(longer, len + 1, NULL));
        free(longer);
        free(img);
    }
}

/* Apply one corruption to a copy of img and return validate's answer. */
static int validate_patched(const uint8_t *img, size_t len, size_t at, const uint8_t *bytes,
                            size_t n, const sop_keycmp *cmp)
{
    uint8_t *copy = malloc(len);
    if (!copy)
        return SOP_NOMEM;
    memcpy(copy, img, len);
    memcpy(copy + at, bytes, n);
    int rc = sop_node__validate(copy, len, cmp);
    free(copy);
    return rc;
}

TEST(test_node__validate_rejects_bad_fields)
{
    size_t len, blen;
    sop_node n;
    sop_leafval inline_v = {0}, blob_v = {0};
    blob_v.is_blob = 1;
    blob_v.value_len = 10;
    inline_v.inline_val = (sop_val){"vvvv", 4};
    /* Leaf: "a" -> "vvvv" (slot 0 at 0, 12 bytes), "b" -> blob (slot 1 at 12). */
    CHECK_OK(sop_node__new(&n, SOP_NODE_LEAF, 0, 1));
    CHECK_OK(sop_node__leaf_insert(&n, 0, &(sop_val){"a", 1}, 0, &inline_v));
    CHECK_OK(sop_node__leaf_insert(&n, 1, &(sop_val){"b", 1}, 0, &blob_v));
    uint8_t *img = serialize_copy(n.img, &len);
    sop_node__free(&n);
    CHECK(img != NULL);
    CHECK_EQ_U64(len, 40 + 16 + 12 + 32);
    /* Branch: child0, "m" -> child. */
    CHECK_OK(sop_node__new(&n, SOP_NODE_BRANCH, 0, 2));
    sop_node__set_child(&n, 0, 5);
    CHECK_OK(sop_node__branch_insert(&n, 0, &(sop_val){"m", 1}, 0, 6));
    uint8_t *branch = serialize_copy(n.img, &blen);
    sop_node__free(&n);
    CHECK(branch != NULL);
    const sop_keycmp bytewise = {0};
    const size_t data = 56; /* data area offset: 40 + 8*cap(2) */
    CHECK_OK(sop_node__validate(img, len, &bytewise));
    CHECK_OK(sop_node__validate(branch, blen, &bytewise));

    uint8_t b0 = 0, b2 = 2, b3 = 3, bff = 0xff;
    uint8_t le32_3[4] = {3, 0, 0, 0}, le32_big[4] = {0xff, 0xff, 0xff, 0x7f};
    uint8_t le32_data_end[4] = {43, 0, 0, 0}; /* data_len - 1 */
    uint8_t le16_0[2] = {0, 0}, le16_4097[2] = {0x01, 0x10};
    uint8_t le32_1[4] = {1, 0, 0, 0}, le32_100[4] = {100, 0, 0, 0};
    uint8_t value_len_max1[4] = {0x01, 0, 0, 0x40}; /* SOP_MAX_VALUE_LEN + 1 */
    uint8_t swapped_offs[16];                       /* entries 1 and 0 (offset and hint each) */
    memcpy(swapped_offs, img + 48, 8);
    memcpy(swapped_offs + 8, img + 40, 8);
    uint8_t le16_none[2] = {0xff, 0xff}, le16_1[2] = {1, 0};
    struct {
        const char *what;
        size_t at;
        const uint8_t *bytes;
        size_t n;
    } cases[] = {
        {"kind 0", 0, &b0, 1},
        {"kind 3", 0, &b3, 1},
        {"flag bit 1", 1, &b2, 1},
        {"hint_pos longer than the keys", 2, &b3, 1},
        {"hint_pos 1: \"a\" and \"b\" share no byte", 2, le16_1, 2},
        {"wrong hint", 44, le32_1, 4},
        {"count > cap", 4, le32_3, 4},
        {"cap larger than image", 8, le32_3, 4},
        {"huge cap", 8, le32_big, 4},
        {"data_len too big", 12, le32_big, 4},
        {"garbage > data_len", 16, le32_big, 4},
        {"garbage miscounted", 16, le32_1, 4},
        {"reserved32", 20, le32_1, 4},
        {"leaf child0", 32, &b3, 1},
        {"offset past data", 48, le32_data_end, 4},
        {"offset huge", 40, le32_big, 4},
        {"key_len 0", data, le16_0, 2},
        {"key_len 4097", data, le16_4097, 2},
        {"vkind 2", data + 2, &b2, 1},
        {"vkind 0xff", data + 12 + 2, &bff, 1},
        {"inline value shorter than counted", data + 4, le32_3, 4}, /* live != data_len */
        {"inline value past data", data + 4, le32_100, 4},
        {"value_len > max", data + 12 + 4, value_len_max1, 4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = validate_patched(img, len, cases[i].at, cases[i].bytes, cases[i].n, &bytewise);
        if (rc != SOP_CORRUPT)
            FAIL_AT("%s: rc %d", cases[i].what, rc);
        CHECK(rc == SOP_CORRUPT);
        CHECK(strstr(sop_errmsg(), "node") != NULL);
    }
    /* Swapped offsets: well-formed but out of order. */
    CHECK_RC(SOP_CORRUPT, validate_patched(img, len, 40, swapped_offs, 16, &bytewise));
    CHECK_OK(validate_patched(img, len, 40, swapped_offs, 16, NULL));
    /* Hints not maintained (hint_pos 0xFFFF): whatever they hold is ignored. */
    CHECK_OK(validate_patched(img, len, 2, le16_none, 2, &bytewise));
    /* Equal keys in a non-dup node. */
    uint8_t key_a = 'a';
    CHECK_RC(SOP_CORRUPT, validate_patched(img, len, data + 12 + 3, &key_a, 1, &bytewise));
    /* Branch: kind byte of a separator must be 0; a blob vkind is corrupt there. */
    uint8_t vk1 = 1;
    CHECK_RC(SOP_CORRUPT, validate_patched(branch, blen, 48 + 2, &vk1, 1, &bytewise));
    /* A branch child0 may be anything, a leaf kind byte on it is not. */
    uint8_t leaf_kind = SOP_NODE_LEAF;
    CHECK_RC(SOP_CORRUPT, validate_patched(branch, blen, 0, &leaf_kind, 1, &bytewise));
    free(img);
    free(branch);
}

/* Read everything an accepted image offers, and edit a clone: under ASan any
 * read outside the exact-size buffer aborts the test. */
static int exercise_accepted(const uint8_t *img, size_t len)
{
    uint32_t count = sop_node__count(img);
    int is_leaf = sop_node__is_leaf(img);
    uint64_t sum = sop_node__lid(img) + sop_node__used_bytes(img) + sop_node__split_point(img);
    REQ(sop_node__image_len(img) == len);
    for (uint32_t i = 0; i < count; i++) {
        sop_val k;
        uint64_t seq;
        sop_node__key(img, i, &k, &seq);
        REQ(k.len >= 1 && k.len <= SOP_MAX_KEY_LEN);
        for (size_t j = 0; j < k.len; j++)
            sum += ((const uint8_t *)k.data)[j];
        sum += sop_node__slot_bytes(img, i);
        if (is_leaf) {
            sop_leafval v;
            sop_node__leaf_value(img, i, &v);
            for (size_t j = 0; j < v.inline_val.len; j++)
                sum += ((const uint8_t *)v.inline_val.data)[j];
        } else {
            sum += sop_node__child(img, i + 1);
        }
        sum += sop_node__lower_bound(img, NULL, &k, seq, NULL);
        if (!is_leaf)
            sum += sop_node__child_index(img, NULL, &k, seq);
    }
    if (!is_leaf)
        sum += sop_node__child(img, 0);
    /* Accepted input round-trips (validate without order: nor was it checked). */
    size_t out_len;
    uint8_t *out = serialize_copy(img, &out_len);
    REQ(out != NULL);
    REQ(sop_node__validate(out, out_len, NULL) == SOP_OK);
    sop_node c = {0}, right = {0};
    static uint8_t sep_buf[SOP_MAX_KEY_LEN];
    int ok = sop_node__clone(&c, img, 1) == SOP_OK;
    if (ok && is_leaf) {
        sop_leafval v = {0};
        ok = sop_node__leaf_insert(&c, count, &(sop_val){"zz", 2}, 0, &v) == SOP_OK &&
             sop_node__validate(c.img, sop_node__image_len(c.img), NULL) == SOP_OK;
        sop_node__remove(&c, count);
    }
    if (ok && count >= 2) {
        sop_val sep;
        uint64_t sep_seq;
        size_t back_len = 0;
        ok = sop_node__split(&c, &right, sop_node__split_point(c.img), 2, &sep, &sep_seq,
                             sep_buf) == SOP_OK &&
             sop_node__validate(c.img, sop_node__image_len(c.img), NULL) == SOP_OK &&
             sop_node__validate(right.img, sop_node__image_len(right.img), NULL) == SOP_OK &&
             sop_node__merge(&c, right.img, &sep, sep_seq) == SOP_OK;
        sop_node__set_lid(&c, sop_node__lid(img));
        uint8_t *back = ok ? serialize_copy(c.img, &back_len) : NULL;
        ok = back && back_len == out_len && memcmp(back, out, out_len) == 0;
        free(back);
    }
    sop_node__free(&c);
    sop_node__free(&right);
    free(out);
    REQ(ok);
    return sum != 1; /* keep the reads */
}

TEST(test_node__validate_survives_random_byte_flips)
{
    unsigned accepted = 0, rejected = 0;
    unsigned rounds = 3000 * scale();
    for (int variant = 0; variant < 4; variant++) {
        size_t len;
        int kind = variant >= 2 ? SOP_NODE_BRANCH : SOP_NODE_LEAF;
        uint8_t *img = sample_image(&len, kind, variant % 2, 12);
        CHECK(img != NULL);
        for (unsigned round = 0; round < rounds; round++) {
            uint8_t *copy = malloc(len); /* exact size for ASan */
            CHECK(copy != NULL);
            memcpy(copy, img, len);
            unsigned flips = 1 + (unsigned)rand_below(3);
            for (unsigned f = 0; f < flips; f++) {
                /* Half the flips hit the header and offsets, where damage bites. */
                size_t at = rand_below(2) ? rand_below(len < 100 ? len : 100) : rand_below(len);
                copy[at] ^= (uint8_t)(1 + rand_below(255));
            }
            int rc_order = sop_node__validate(copy, len, &(sop_keycmp){0});
            int rc = sop_node__validate(copy, len, NULL);
            int ok = (rc == SOP_OK || rc == SOP_CORRUPT) &&
                     (rc_order == SOP_OK || rc_order == SOP_CORRUPT) &&
                     !(rc_order == SOP_OK && rc != SOP_OK); /* order check only adds */
            if (ok && rc == SOP_OK) {
                accepted++;
                ok = exercise_accepted(copy, len);
            } else {
                rejected++;
            }
            free(copy);
            if (!ok)
                FAIL_AT("variant %d round %u: rc %d / %d", variant, round, rc, rc_order);
            CHECK(ok);
        }
        free(img);
    }
    /* Both outcomes happen: flips in key or value bytes pass, header ones fail. */
    CHECK(accepted > 0);
    CHECK(rejected > accepted / 4);
}

TEST(test_node__serialize_reports_needed_length)
{
    sop_node n;
    model m;
    CHECK(build_node(&n, &m, SOP_NODE_LEAF, 0, NULL, 20, 1));
    size_t need = 0;
    uint8_t small[64];
    memset(small, 0xaa, sizeof small);
    CHECK_RC(SOP_INVAL, sop_node__serialize(n.img, small, sizeof small, &need));
    CHECK_EQ_U64(need, sop_node__used_bytes(n.img));
    for (size_t i = 0; i < sizeof small; i++)
        CHECK(small[i] == 0xaa); /* untouched */
    sop_node__free(&n);
    model_free(&m);
}

/* clang-format off */
/* A random key over a tiny alphabet (0x00, 0x01, 'a', 0xff) after an
 * optional shared prefix: many ties, proper prefixes and zero bytes, the
 * cases where hints (N9) could go wrong. */
static size_t hint_key(uint8_t *out, const uint8_t *prefix, size_t prefix_len)
{
    static const uint8_t alpha[] = {0x00, 0x01, 'a', 0xff};
    size_t len = 0;
    unsigned shape = (unsigned)(test_rand() % 8);
    size_t keep = shape == 0 ? (size_t)(test_rand() % (prefix_len + 1)) : prefix_len;
    memcpy(out, prefix, keep);
    len = keep;
    if (shape == 1 && len) /* same length, one byte off inside the prefix */
        out[test_rand() % len] ^= (uint8_t)(1 + test_rand() % 255);
    size_t tail = (size_t)(test_rand() % 9);
    for (size_t i = 0; i < tail; i++)
        out[len++] = alpha[test_rand() % 4];
    if (len == 0)
        out[len++] = alpha[test_rand() % 4];
    return len;
}

/* Sealed leaves answer lower_bound through the hints; every answer (index
 * and exactness) must equal a linear scan's, for probes inside, before,
 * after and around the shared prefix. The same image round-trips through
 * validate and serialize with its hints. */
/* Probe img with 200 keys (a quarter existing); lower_bound (index and
 * exactness) must equal a linear scan over keys[0..count). 1 if so. */
static int probes_match_linear(const uint8_t *img, uint8_t (*keys)[24], const size_t *lens,
                               uint32_t count, const uint8_t *prefix, size_t prefix_len,
                               const char *stage, unsigned round)
{
    const sop_keycmp bytewise = {0};
    uint8_t probe[24];
    for (unsigned p = 0; p < 200; p++) {
        size_t plen;
        if (p % 4 == 0 && count) { /* an existing key */
            uint32_t i = (uint32_t)(test_rand() % count);
            memcpy(probe, keys[i], lens[i]);
            plen = lens[i];
        } else {
            plen = hint_key(probe, prefix, prefix_len);
        }
        uint32_t lin = 0;
        while (lin < count && sop_memcmp_keys(keys[lin], lens[lin], probe, plen) < 0)
            lin++;
        int lin_exact = lin < count && sop_memcmp_keys(keys[lin], lens[lin], probe, plen) == 0;
        int exact = -1;
        uint32_t at = sop_node__lower_bound(img, &bytewise, &(sop_val){probe, plen}, 0, &exact);
        if (at != lin || exact != lin_exact) {
            FAIL_AT("%s, round %u probe %u: lower_bound %u/%d, linear %u/%d", stage, round, p, at,
                    exact, lin, lin_exact);
            return 0;
        }
    }
    return 1;
}

/* Copy the node's keys out, in order. */
static uint32_t keys_of(const uint8_t *img, uint8_t (*keys)[24], size_t *lens)
{
    uint32_t count = sop_node__count(img);
    for (uint32_t i = 0; i < count; i++) {
        sop_val k;
        uint64_t seq;
        sop_node__key(img, i, &k, &seq);
        memcpy(keys[i], k.data, k.len);
        lens[i] = k.len;
    }
    return count;
}

/* lower_bound through the hints (N9), against a linear scan, on keys built
 * to tie (shared prefixes, 0x00 bytes, proper prefixes), at every stage a
 * node's hints go through: kept by inserts (in memory, possibly shorter
 * than they could be), recomputed by seal, still valid after removals,
 * canonical after serialize. */
TEST(test_node__hinted_lower_bound_matches_linear_scan)
{
    const sop_keycmp bytewise = {0};
    uint8_t keys[64][24];
    size_t lens[64];
    for (unsigned round = 0; round < 300 * scale(); round++) {
        uint8_t prefix[12];
        size_t prefix_len = (size_t)(test_rand() % sizeof prefix);
        for (size_t i = 0; i < prefix_len; i++)
            prefix[i] = (uint8_t)test_rand();
        sop_node n;
        CHECK_OK(sop_node__new(&n, SOP_NODE_LEAF, 0, 7));
        unsigned want = 1 + (unsigned)(test_rand() % 64);
        for (unsigned i = 0; i < want; i++) {
            uint8_t k[24];
            size_t len = hint_key(k, prefix, prefix_len);
            int exact;
            sop_val kv = {k, len};
            uint32_t at = sop_node__lower_bound(n.img, &bytewise, &kv, 0, &exact);
            if (exact)
                continue;
            sop_leafval v = {0};
            CHECK_OK(sop_node__leaf_insert(&n, at, &kv, 0, &v));
        }
        uint32_t count = keys_of(n.img, keys, lens);
        CHECK_OK(sop_node__validate(n.img, sop_node__image_len(n.img), &bytewise));
        if (!probes_match_linear(n.img, keys, lens, count, prefix, prefix_len, "inserted", round))
            break;
        sop_node__seal(&n);
        CHECK_OK(sop_node__validate(n.img, sop_node__image_len(n.img), &bytewise));
        if (!probes_match_linear(n.img, keys, lens, count, prefix, prefix_len, "sealed", round))
            break;
        for (uint32_t r = count / 3; r > 0; r--)
            sop_node__remove(&n, (uint32_t)(test_rand() % sop_node__count(n.img)));
        count = keys_of(n.img, keys, lens);
        CHECK_OK(sop_node__validate(n.img, sop_node__image_len(n.img), &bytewise));
        if (!probes_match_linear(n.img, keys, lens, count, prefix, prefix_len, "removed", round))
            break;
        for (unsigned i = 0; i < 8; i++) { /* after sealing: some lack the prefix */
            uint8_t k[24];
            size_t len = hint_key(k, prefix, prefix_len);
            int exact;
            sop_val kv = {k, len};
            uint32_t at = sop_node__lower_bound(n.img, &bytewise, &kv, 0, &exact);
            sop_leafval v = {0};
            if (!exact)
                CHECK_OK(sop_node__leaf_insert(&n, at, &kv, 0, &v));
        }
        count = keys_of(n.img, keys, lens);
        CHECK_OK(sop_node__validate(n.img, sop_node__image_len(n.img), &bytewise));
        if (!probes_match_linear(n.img, keys, lens, count, prefix, prefix_len, "reinserted",
                                 round))
            break;
        size_t len;
        uint8_t *copy = serialize_copy(n.img, &len);
        CHECK(copy != NULL);
        CHECK_OK(sop_node__validate(copy, len, &bytewise));
        int ok = probes_match_linear(copy, keys, lens, count, prefix, prefix_len, "serialized",
                                     round);
        free(copy);
        sop_node__free(&n);
        if (!ok)
            break;
    }
}

/* sop_node__reserve: after reserving k slots of b bytes, k such inserts
 * neither move the image nor grow the node; a too-big request is SOP_INVAL
 * and a refused allocation SOP_NOMEM, both with the node unchanged. */
TEST(test_node__reserve_makes_room_for_exactly_the_inserts)
{
    enum { K = 64, VLEN = 100 };
    uint8_t val[VLEN];
    memset(val, 'v', sizeof val);
    sop_node n;
    CHECK_OK(sop_node__new(&n, SOP_NODE_LEAF, 0, 7));
    char k[16];
    snprintf(k, sizeof k, "k%06d", 0);
    sop_val kv = {k, strlen(k)};
    sop_leafval v = {0};
    v.inline_val.data = val;
    v.inline_val.len = VLEN;
    CHECK_OK(sop_node__leaf_insert(&n, 0, &kv, 0, &v));
    size_t per = sop_node__slot_bytes(n.img, 0);
    CHECK_OK(sop_node__reserve(&n, K - 1, (K - 1) * per));
    CHECK_OK(sop_node__validate(n.img, sop_node__image_len(n.img), NULL));
    CHECK_EQ_U64(sop_node__count(n.img), 1);
    uint8_t *img = n.img;
    size_t alloc_len = n.alloc_len;
    uint64_t growths = sop_node__growths();
    for (int i = 1; i < K; i++) {
        snprintf(k, sizeof k, "k%06d", i);
        CHECK_OK(sop_node__leaf_insert(&n, (uint32_t)i, &kv, 0, &v));
    }
    CHECK(n.img == img);
    CHECK_EQ_U64(n.alloc_len, alloc_len);
    CHECK_EQ_U64(sop_node__growths(), growths);
    /* exactly: the image now fills the buffer */
    CHECK_EQ_U64(sop_node__image_len(n.img), n.alloc_len);
    CHECK_OK(sop_node__validate(n.img, sop_node__image_len(n.img), &(sop_keycmp){0}));
    /* room there already: no rebuild */
    CHECK_OK(sop_node__reserve(&n, 0, 0));
    CHECK(n.img == img);
    /* too big, then no memory: unchanged */
    size_t len = sop_node__image_len(n.img);
    CHECK_RC(SOP_INVAL, sop_node__reserve(&n, UINT32_MAX / 8, 0));
    alloc_arm(1, 0);
    int rc = sop_node__reserve(&n, 1, 1000);
    alloc_disarm();
    CHECK_RC(SOP_NOMEM, rc);
    CHECK(n.img == img && sop_node__image_len(n.img) == len);
    CHECK_EQ_U64(sop_node__count(n.img), K);
    sop_node__free(&n);
}

TEST_MAIN(T(test_node__new_nodes_are_empty_and_valid),
          T(test_node__hinted_lower_bound_matches_linear_scan),
          T(test_node__leaf_image_bytes_match_format_table),
          T(test_node__branch_image_bytes_match_format_table),
          T(test_node__random_leaf_ops_match_model_unique_keys),
          T(test_node__random_leaf_ops_match_model_dup_keys),
          T(test_node__random_leaf_ops_match_model_reverse_comparator),
          T(test_node__random_branch_ops_match_model),
          T(test_node__prepends_and_middle_inserts_keep_order),
          T(test_node__custom_comparator_orders_lower_bound_and_child_index),
          T(test_node__dup_seq_orders_equal_keys),
          T(test_node__leaf_split_merge_round_trip),
          T(test_node__branch_split_merge_round_trip),
          T(test_node__split_then_edit_both_halves),
          T(test_node__split_point_balances_bytes),
          T(test_node__split_and_merge_reject_bad_arguments),
          T(test_node__edits_reject_bad_arguments),
          T(test_node__keys_and_values_may_point_into_own_image),
          T(test_node__need_bytes_predict_growth),
          T(test_node__sequential_appends_are_amortised),
          T(test_node__reserve_makes_room_for_exactly_the_inserts),
          T(test_node__removes_compact_the_node),
          T(test_node__failed_malloc_leaves_node_unchanged),
          T(test_node__validate_rejects_every_truncation),
          T(test_node__validate_rejects_bad_fields),
          T(test_node__validate_survives_random_byte_flips),
          T(test_node__serialize_reports_needed_length))
/* clang-format on */
