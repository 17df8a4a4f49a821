/*
 * test_keys.c - typed compound keys (include/sop_keys.h, src/keys.c).
 *
 * What is proved here, by guarantee of sop_keys.h:
 *   (K1) order: random tuples of every type, mixed directions, special
 *        doubles and integer extremes: sign(memcmp of encodings) ==
 *        sign(sop_key_values_compare), on random pairs and on sorted
 *        neighbours (test_keys__property_*).
 *   (K2) round trip: decode(encode(t)) == t, value for value and bit for bit
 *        (NaN canonicalised), and re-encoding the decoded tuple gives the same
 *        bytes; text render -> parse gives the same bytes.
 *   (K3) prefixes: a prefix encoding is a byte prefix of every extension and
 *        sorts before it; [lo, prefix_end(lo)) holds exactly the keys with
 *        that tuple prefix.
 *   (K4) robustness: every truncation of valid keys and specs, byte flips,
 *        forged-checksum bodies and random garbage give SOP_CORRUPT or
 *        SOP_INVAL (or, for garbage that happens to be valid, a canonical
 *        round trip), never a crash (the ASan build checks the reads).
 * Plus: the exact bytes of the format table (so it cannot drift silently),
 * spec/struct/text APIs, the builder's sticky errors, and fail-Nth-malloc.
 *
 * Scale: SOP_TEST_SCALE=n multiplies the property-test iteration counts.
 */
#include "harness.h"
#include "sop_keys.h"
#include "keys.h" /* sop_keys__spec_check, sop_keys__key_check */
#include "util.h" /* sop_crc32c, to forge spec checksums */

#include <math.h>
#include <stdbool.h>
#include <stddef.h>

/* ---- helpers ---------------------------------------------------------------- */

#define MAX_FIELDS 8

/* Like CHECK, for helpers that return nonzero on failure. */
#define REQUIRE(cond, ...)                                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            FAIL_AT(__VA_ARGS__);                                                                  \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

static unsigned scale(void)
{
    const char *s = getenv("SOP_TEST_SCALE");
    unsigned n = s ? (unsigned)strtoul(s, NULL, 10) : 1;
    return n ? n : 1;
}

static uint64_t rnd(uint64_t n) /* 0..n-1 */
{
    return n ? test_rand() % n : 0;
}

static int sign(int x)
{
    return (x > 0) - (x < 0);
}

static int bytes_cmp(const void *a, size_t a_len, const void *b, size_t b_len)
{
    size_t n = a_len < b_len ? a_len : b_len;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return sign(c);
    return (a_len > b_len) - (a_len < b_len);
}

static uint64_t dbl_bits(double d)
{
    uint64_t b;
    memcpy(&b, &d, 8);
    return b;
}

static double dbl_of(uint64_t b)
{
    double d;
    memcpy(&d, &b, 8);
    return d;
}

/* The bits a double must decode to: NaN payloads dropped, sign kept. Written
 * independently of keys.c on purpose. */
static uint64_t canon_bits(double d)
{
    if (isnan(d))
        return signbit(d) ? 0xFFF8000000000000ull : 0x7FF8000000000000ull;
    return dbl_bits(d);
}

/* Exact equality of a decoded value with the original. */
static int value_identical(const sop_key_value *a, const sop_key_value *b)
{
    if (a->type != b->type || a->flags != b->flags)
        return 0;
    switch (a->type) {
    case SOP_KEY_NULL:
        return 1;
    case SOP_KEY_BOOL:
        return (a->u.b != 0) == (b->u.b != 0);
    case SOP_KEY_INT64:
    case SOP_KEY_TIMESTAMP:
        return a->u.i64 == b->u.i64;
    case SOP_KEY_UINT64:
        return a->u.u64 == b->u.u64;
    case SOP_KEY_DOUBLE:
        return canon_bits(a->u.f64) == canon_bits(b->u.f64);
    case SOP_KEY_STRING:
    case SOP_KEY_BYTES:
        return a->u.str.len == b->u.str.len &&
               (a->u.str.len == 0 || !memcmp(a->u.str.data, b->u.str.data, a->u.str.len));
    case SOP_KEY_UUID:
        return !memcmp(a->u.uuid, b->u.uuid, 16);
    }
    return 0;
}

/* A tuple under test: values, their string bytes, and the encoding. */
typedef struct tup {
    size_t n;
    sop_key_value v[MAX_FIELDS];
    uint8_t strbuf[MAX_FIELDS][128];
    uint8_t *key;
    size_t key_len;
} tup;

static int encode_tup(tup *t)
{
    sop_tuple b;
    sop_tuple_start(&b, NULL, 0);
    for (size_t i = 0; i < t->n; i++)
        sop_tuple_add_value(&b, &t->v[i]);
    int rc = sop_tuple_finish_alloc((void **)&t->key, &t->key_len, &b);
    sop_tuple_dispose(&b);
    return rc;
}

/* ---- random values ------------------------------------------------------- */

static const char *const utf8_atoms[] = {"\0",
                                         "\x01",
                                         "a",
                                         "b",
                                         "z",
                                         "\x7f",
                                         "\xc3\xa9" /* é */,
                                         "\xc3\xbf" /* ÿ */,
                                         "\xe2\x82\xac" /* € */,
                                         "\xef\xbf\xbf" /* U+FFFF */,
                                         "\xf4\x8f\xbf\xbf" /* U+10FFFF */,
                                         "\xf0\x9f\x98\x80" /* 😀 */,
                                         "\xed\x9f\xbf" /* U+D7FF */,
                                         "\xee\x80\x80" /* U+E000 */};

static size_t random_utf8(uint8_t *out, size_t cap)
{
    size_t atoms = rnd(8) == 0 ? rnd(30) : rnd(6), len = 0;
    for (size_t i = 0; i < atoms; i++) {
        const char *a = utf8_atoms[rnd(sizeof utf8_atoms / sizeof *utf8_atoms)];
        size_t l = a[0] ? strlen(a) : 1;
        if (len + l > cap)
            break;
        memcpy(out + len, a, l);
        len += l;
    }
    return len;
}

static size_t random_bytes(uint8_t *out, size_t cap)
{
    static const uint8_t special[] = {0x00, 0x01, 0x02, 0x7f, 0x80, 0xfe, 0xff};
    size_t len = rnd(8) == 0 ? rnd(cap < 60 ? cap : 60) : rnd(7);
    for (size_t i = 0; i < len; i++)
        out[i] = rnd(3) ? special[rnd(sizeof special)] : (uint8_t)test_rand();
    return len;
}

static int64_t random_i64(void)
{
    static const int64_t special[] = {0,
                                      1,
                                      -1,
                                      127,
                                      128,
                                      -128,
                                      -129,
                                      255,
                                      256,
                                      -255,
                                      -256,
                                      -257,
                                      65535,
                                      65536,
                                      -65536,
                                      INT64_MAX,
                                      INT64_MIN,
                                      INT64_MAX - 1,
                                      INT64_MIN + 1,
                                      1ll << 32,
                                      -(1ll << 32),
                                      (1ll << 55) - 1,
                                      -(1ll << 55)};
    if (rnd(3) == 0)
        return special[rnd(sizeof special / sizeof *special)];
    uint64_t r = test_rand() >> rnd(64);
    return rnd(2) ? (int64_t)r : -(int64_t)(r >> 1);
}

static uint64_t random_u64(void)
{
    static const uint64_t special[] = {
        0, 1, 255, 256, 65535, UINT64_MAX, UINT64_MAX - 1, 1ull << 63, (1ull << 63) - 1};
    if (rnd(3) == 0)
        return special[rnd(sizeof special / sizeof *special)];
    return test_rand() >> rnd(64);
}

static double random_double(void)
{
    static const uint64_t special[] = {
        0x0000000000000000ull, 0x8000000000000000ull, /* +0, -0 */
        0x7FF0000000000000ull, 0xFFF0000000000000ull, /* +inf, -inf */
        0x7FF8000000000000ull, 0xFFF8000000000000ull, /* quiet NaNs */
        0x7FF0000000000001ull, 0xFFF0000000000001ull, /* signalling NaNs */
        0x7FFFFFFFFFFFFFFFull, 0xFFFFFFFFFFFFFFFFull, /* NaNs, all payload bits */
        0x7FF8000000000123ull,                        /* NaN with payload */
        0x0000000000000001ull, 0x8000000000000001ull, /* smallest denormals */
        0x0010000000000000ull, 0x7FEFFFFFFFFFFFFFull, /* DBL_MIN, DBL_MAX */
        0xFFEFFFFFFFFFFFFFull, 0x3FF0000000000000ull, 0xBFF0000000000000ull};
    switch (rnd(4)) {
    case 0:
        return dbl_of(special[rnd(sizeof special / sizeof *special)]);
    case 1:
        return dbl_of(test_rand()); /* any bits, NaN payloads included */
    case 2:
        return (double)(int64_t)(rnd(21)) - 10.0;
    default:
        return ((double)(int64_t)test_rand() / 1e9) * (rnd(2) ? 1e-300 : 1.0);
    }
}

static void random_value(sop_key_value *v, sop_key_type type, unsigned flags, uint8_t *buf)
{
    memset(v, 0, sizeof *v);
    v->type = type;
    v->flags = flags;
    switch (type) {
    case SOP_KEY_NULL:
        break;
    case SOP_KEY_BOOL:
        v->u.b = (int)rnd(2);
        break;
    case SOP_KEY_INT64:
    case SOP_KEY_TIMESTAMP:
        v->u.i64 = random_i64();
        break;
    case SOP_KEY_UINT64:
        v->u.u64 = random_u64();
        break;
    case SOP_KEY_DOUBLE:
        v->u.f64 = random_double();
        break;
    case SOP_KEY_STRING:
        v->u.str = (sop_val){buf, random_utf8(buf, 120)};
        break;
    case SOP_KEY_BYTES:
        v->u.str = (sop_val){buf, random_bytes(buf, 120)};
        break;
    case SOP_KEY_UUID:
        for (int i = 0; i < 16; i++)
            v->u.uuid[i] = rnd(4) ? (uint8_t)rnd(3) : (uint8_t)test_rand();
        break;
    }
}

static void copy_value(sop_key_value *dst, uint8_t *dst_buf, const sop_key_value *src)
{
    *dst = *src;
    if (src->type == SOP_KEY_STRING || src->type == SOP_KEY_BYTES) {
        if (src->u.str.len)
            memcpy(dst_buf, src->u.str.data, src->u.str.len);
        dst->u.str.data = dst_buf;
    }
}

/* ---- the properties, on one batch ------------------------------------------ */

static int cmp_tup_keys(const void *a, const void *b)
{
    const tup *x = *(const tup *const *)a, *y = *(const tup *const *)b;
    return bytes_cmp(x->key, x->key_len, y->key, y->key_len);
}

/* decode(encode(t)) == t, enc(decode) == enc, validate agrees. */
static int check_roundtrip(const tup *t)
{
    sop_key_value out[MAX_FIELDS + 1];
    static uint8_t scratch[SOP_MAX_KEY_LEN];
    size_t count = 0, vcount = 0;
    sop_val key = {t->key, t->key_len};
    int rc = sop_key_decode(out, MAX_FIELDS + 1, &count, scratch, sizeof scratch, &key);
    REQUIRE(rc == SOP_OK, "decode rc %d (%s)", rc, sop_errmsg());
    REQUIRE(count == t->n, "decoded %zu fields, encoded %zu", count, t->n);
    REQUIRE(sop_key_validate(&vcount, &key) == SOP_OK && vcount == t->n, "validate");
    for (size_t i = 0; i < t->n; i++) {
        REQUIRE(value_identical(&out[i], &t->v[i]), "field %zu (%s) differs after decode", i,
                sop_key_type_name(t->v[i].type));
        REQUIRE(sop_key_value_compare(&out[i], &t->v[i]) == 0, "field %zu compares unequal", i);
    }
    /* The iterator gives the same values. */
    sop_key_iter it;
    sop_key_value v;
    size_t i = 0;
    REQUIRE(sop_key_iter_init(&it, &key) == SOP_OK, "iter init");
    while ((rc = sop_key_iter_next(&v, &it)) == SOP_OK) {
        REQUIRE(i < t->n && value_identical(&v, &t->v[i]), "iterator field %zu differs", i);
        i++;
    }
    REQUIRE(rc == SOP_NOTFOUND && i == t->n, "iterator ended with %d after %zu", rc, i);
    /* Re-encode (K2). */
    uint8_t again[SOP_MAX_KEY_LEN];
    sop_tuple b;
    sop_val k2;
    sop_tuple_start(&b, again, sizeof again);
    for (i = 0; i < count; i++)
        sop_tuple_add_value(&b, &out[i]);
    REQUIRE(sop_tuple_finish(&k2, &b) == SOP_OK, "re-encode");
    REQUIRE(bytes_cmp(k2.data, k2.len, t->key, t->key_len) == 0, "re-encoding differs");
    return 0;
}

/* Render without a spec, parse back: the same bytes. */
static int check_text_roundtrip(const tup *t, const sop_keyspec *spec, unsigned flags)
{
    sop_val key = {t->key, t->key_len};
    char *text = NULL;
    int rc = sop_key_format_alloc(&text, spec, &key, flags);
    REQUIRE(rc == SOP_OK, "format rc %d (%s)", rc, sop_errmsg());
    sop_tuple b;
    sop_val k2;
    sop_tuple_start(&b, NULL, 0);
    rc = sop_key_parse(&b, spec, text);
    if (rc == SOP_OK)
        rc = sop_tuple_finish(&k2, &b);
    int same = rc == SOP_OK && bytes_cmp(k2.data, k2.len, t->key, t->key_len) == 0;
    if (!same)
        FAIL_AT("text round trip of %s: rc %d (%s)", text, rc, sop_errmsg());
    sop_tuple_dispose(&b);
    sop_key_free(text);
    return !same;
}

static size_t pair_checks, prefix_checks;

/* K1 on random pairs and on sorted neighbours. Sorts pointers: a tup's
 * string values point into its own strbuf, so tups must not move. */
static int check_order(const tup *ts, size_t count)
{
    static const tup *sorted[4096];
    for (size_t k = 0; k < count * 5; k++) {
        const tup *a = &ts[rnd(count)], *b = &ts[rnd(count)];
        int enc = bytes_cmp(a->key, a->key_len, b->key, b->key_len);
        int ref = sign(sop_key_values_compare(a->v, a->n, b->v, b->n));
        REQUIRE(enc == ref, "pair: memcmp order %d, reference %d", enc, ref);
        pair_checks++;
    }
    for (size_t k = 0; k < count; k++)
        sorted[k] = &ts[k];
    qsort(sorted, count, sizeof *sorted, cmp_tup_keys);
    for (size_t k = 1; k < count; k++) {
        const tup *a = sorted[k - 1], *b = sorted[k];
        int enc = bytes_cmp(a->key, a->key_len, b->key, b->key_len);
        int ref = sign(sop_key_values_compare(a->v, a->n, b->v, b->n));
        REQUIRE(enc == ref, "neighbours %zu: memcmp order %d, reference %d", k, enc, ref);
        pair_checks++;
    }
    return 0;
}

/* K3 for prefixes of random tuples of the batch. */
static int check_prefixes(const tup *ts, size_t count, size_t rounds)
{
    for (size_t r = 0; r < rounds; r++) {
        const tup *t = &ts[rnd(count)];
        size_t j = rnd(t->n + 1);
        uint8_t lo[SOP_MAX_KEY_LEN], hi[SOP_MAX_KEY_LEN];
        sop_tuple b;
        sop_val lo_key;
        size_t hi_len = 0;
        sop_tuple_start(&b, lo, sizeof lo);
        for (size_t i = 0; i < j; i++)
            sop_tuple_add_value(&b, &t->v[i]);
        REQUIRE(sop_tuple_finish(&lo_key, &b) == SOP_OK, "prefix encode");
        REQUIRE(lo_key.len <= t->key_len && !memcmp(lo_key.data, t->key, lo_key.len),
                "prefix of %zu fields is not a byte prefix", j);
        if (j < t->n)
            REQUIRE(bytes_cmp(lo_key.data, lo_key.len, t->key, t->key_len) < 0,
                    "prefix does not sort before its extension");
        int rc = sop_key_prefix_end(hi, sizeof hi, &hi_len, &lo_key);
        REQUIRE(rc == (j == 0 ? SOP_NOTFOUND : SOP_OK), "prefix_end rc %d for %zu fields", rc, j);
        for (size_t u = 0; u < count; u++) {
            const tup *x = &ts[u];
            int in_range = bytes_cmp(x->key, x->key_len, lo_key.data, lo_key.len) >= 0 &&
                           (rc == SOP_NOTFOUND || bytes_cmp(x->key, x->key_len, hi, hi_len) < 0);
            int has_prefix = x->n >= j && sop_key_values_compare(x->v, j, t->v, j) == 0;
            REQUIRE(in_range == has_prefix, "tuple %zu: in range %d, has the %zu-field prefix %d",
                    u, in_range, j, has_prefix);
            prefix_checks++;
        }
    }
    return 0;
}

static void free_batch(tup *ts, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        sop_key_free(ts[i].key);
        ts[i].key = NULL;
    }
}

/* ---- tests: the exact bytes ------------------------------------------------ */

static int expect_bytes(const sop_key_value *v, const char *hex)
{
    uint8_t buf[64], want[64];
    size_t want_len = 0;
    sop_tuple b;
    sop_val key;
    for (const char *p = hex; *p;) {
        if (*p == ' ') {
            p++;
            continue;
        }
        unsigned x;
        sscanf(p, "%2x", &x);
        want[want_len++] = (uint8_t)x;
        p += 2;
    }
    sop_tuple_start(&b, buf, sizeof buf);
    REQUIRE(sop_tuple_add_value(&b, v) == SOP_OK, "add");
    REQUIRE(sop_tuple_finish(&key, &b) == SOP_OK, "finish");
    if (key.len != want_len || memcmp(key.data, want, want_len)) {
        char got[200] = "";
        for (size_t i = 0; i < key.len && i < 60; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%02x ", buf[i]);
        REQUIRE(0, "%s value encodes as [%s], expected [%s]", sop_key_type_name(v->type), got, hex);
    }
    return 0;
}

#define VAL_I64(x, f) ((sop_key_value){.type = SOP_KEY_INT64, .flags = (f), .u.i64 = (x)})
#define VAL_U64(x, f) ((sop_key_value){.type = SOP_KEY_UINT64, .flags = (f), .u.u64 = (x)})
#define VAL_DBL(x, f) ((sop_key_value){.type = SOP_KEY_DOUBLE, .flags = (f), .u.f64 = (x)})
#define VAL_STR(s, n, f)                                                                           \
    ((sop_key_value){.type = SOP_KEY_STRING, .flags = (f), .u.str = {(s), (n)}})
#define VAL_BYTES(s, n, f)                                                                         \
    ((sop_key_value){.type = SOP_KEY_BYTES, .flags = (f), .u.str = {(s), (n)}})

TEST(test_keys__encoding_bytes_match_the_format_table)
{
    sop_key_value v;
#define EXPECT(val, hex)                                                                           \
    do {                                                                                           \
        v = (val);                                                                                 \
        if (expect_bytes(&v, hex))                                                                 \
            return;                                                                                \
    } while (0)
    EXPECT(((sop_key_value){.type = SOP_KEY_NULL}), "05");
    EXPECT(((sop_key_value){.type = SOP_KEY_NULL, .flags = SOP_KEY_DESC}), "fa");
    EXPECT(((sop_key_value){.type = SOP_KEY_BOOL, .u.b = 0}), "10");
    EXPECT(((sop_key_value){.type = SOP_KEY_BOOL, .u.b = 1}), "11");
    EXPECT(((sop_key_value){.type = SOP_KEY_BOOL, .flags = SOP_KEY_DESC, .u.b = 1}), "ee");
    EXPECT(VAL_I64(0, 0), "20");
    EXPECT(VAL_I64(1, 0), "21 01");
    EXPECT(VAL_I64(255, 0), "21 ff");
    EXPECT(VAL_I64(256, 0), "22 01 00");
    EXPECT(VAL_I64(-1, 0), "1f fe");
    EXPECT(VAL_I64(-255, 0), "1f 00");
    EXPECT(VAL_I64(-256, 0), "1e fe ff");
    EXPECT(VAL_I64(INT64_MAX, 0), "28 7f ff ff ff ff ff ff ff");
    EXPECT(VAL_I64(INT64_MIN, 0), "18 7f ff ff ff ff ff ff ff");
    EXPECT(VAL_I64(1, SOP_KEY_DESC), "de fe");
    EXPECT(VAL_U64(0, 0), "30");
    EXPECT(VAL_U64(1, 0), "31 01");
    EXPECT(VAL_U64(UINT64_MAX, 0), "38 ff ff ff ff ff ff ff ff");
    EXPECT(VAL_DBL(0.0, 0), "40 80 00 00 00 00 00 00 00");
    EXPECT(VAL_DBL(-0.0, 0), "40 7f ff ff ff ff ff ff ff");
    EXPECT(VAL_DBL(1.0, 0), "40 bf f0 00 00 00 00 00 00");
    EXPECT(VAL_DBL(INFINITY, 0), "40 ff f0 00 00 00 00 00 00");
    EXPECT(VAL_DBL(dbl_of(0x7FF0000000000001ull), 0), "40 ff f8 00 00 00 00 00 00");
    EXPECT(VAL_DBL(dbl_of(0xFFFFFFFFFFFFFFFFull), 0), "40 00 07 ff ff ff ff ff ff");
    EXPECT(((sop_key_value){.type = SOP_KEY_TIMESTAMP, .u.i64 = 0}), "48 80 00 00 00 00 00 00 00");
    EXPECT(((sop_key_value){.type = SOP_KEY_TIMESTAMP, .u.i64 = -1}), "48 7f ff ff ff ff ff ff ff");
    EXPECT(VAL_STR("", 0, 0), "50 00 01");
    EXPECT(VAL_STR("a\0b", 3, 0), "50 61 00 ff 62 00 01");
    EXPECT(VAL_STR("a", 1, SOP_KEY_DESC), "af 9e ff fe");
    EXPECT(VAL_BYTES("\xff\x00", 2, 0), "60 ff 00 ff 00 01");
    EXPECT(((sop_key_value){.type = SOP_KEY_UUID,
                            .u.uuid = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}}),
           "70 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10");
#undef EXPECT
}

/* ---- tests: properties ----------------------------------------------------- */

static const sop_key_type all_types[] = {SOP_KEY_BOOL,   SOP_KEY_INT64,     SOP_KEY_UINT64,
                                         SOP_KEY_DOUBLE, SOP_KEY_TIMESTAMP, SOP_KEY_STRING,
                                         SOP_KEY_BYTES,  SOP_KEY_UUID};
#define TYPE_COUNT (sizeof all_types / sizeof *all_types)

/* Tuples that follow one random schema, values drawn from small pools (so
 * equal prefixes are common), some fields null, some tuples shorter. */
TEST(test_keys__property_schema_tuples_order_roundtrip_and_prefix_ranges)
{
    enum { BATCH = 500, POOL = 5 };
    size_t batches = 40 * scale(), tuples = 0;
    tup *ts = calloc(BATCH, sizeof *ts);
    static uint8_t pool_buf[MAX_FIELDS][POOL][128];
    sop_key_value pool[MAX_FIELDS][POOL];
    CHECK(ts);
    pair_checks = prefix_checks = 0;
    for (size_t batch = 0; batch < batches; batch++) {
        size_t nf = 1 + rnd(6);
        sop_key_type types[MAX_FIELDS];
        unsigned flags[MAX_FIELDS];
        int nullable[MAX_FIELDS];
        sop_keyspec *spec = NULL;
        CHECK_OK(sop_keyspec_new(&spec));
        for (size_t f = 0; f < nf; f++) {
            char name[32];
            types[f] = all_types[rnd(TYPE_COUNT)];
            flags[f] = rnd(2) ? SOP_KEY_DESC : SOP_KEY_ASC;
            nullable[f] = rnd(3) == 0;
            snprintf(name, sizeof name, "f%zu", f);
            CHECK_OK(sop_keyspec_add(spec, name, types[f],
                                     flags[f] | (nullable[f] ? SOP_KEY_NULLABLE : 0)));
            for (size_t p = 0; p < POOL; p++)
                random_value(&pool[f][p], types[f], flags[f], pool_buf[f][p]);
        }
        for (size_t i = 0; i < BATCH; i++) {
            tup *t = &ts[i];
            t->n = rnd(5) == 0 ? rnd(nf + 1) : nf;
            for (size_t f = 0; f < t->n; f++) {
                if (nullable[f] && rnd(6) == 0)
                    t->v[f] = (sop_key_value){.type = SOP_KEY_NULL, .flags = flags[f]};
                else if (rnd(4) == 0) /* a fresh value now and then */
                    random_value(&t->v[f], types[f], flags[f], t->strbuf[f]);
                else
                    copy_value(&t->v[f], t->strbuf[f], &pool[f][rnd(POOL)]);
            }
            CHECK_OK(encode_tup(t));
            if (check_roundtrip(t))
                goto fail;
            CHECK_OK(
                sop_keyspec_check_key(spec, &(sop_val){t->key, t->key_len}, SOP_KEY_CHECK_PREFIX));
            if (i % 8 == 0 &&
                (check_text_roundtrip(t, NULL, 0) || check_text_roundtrip(t, spec, 0) ||
                 check_text_roundtrip(t, spec, SOP_KEY_FORMAT_NAMES)))
                goto fail;
        }
        tuples += BATCH;
        if (check_order(ts, BATCH) || check_prefixes(ts, BATCH, 100))
            goto fail;
        free_batch(ts, BATCH);
        sop_keyspec_free(spec);
        continue;
    fail:
        free_batch(ts, BATCH);
        sop_keyspec_free(spec);
        free(ts);
        return;
    }
    free(ts);
    printf("    %zu tuples, %zu pair checks, %zu prefix-range checks\n", tuples, pair_checks,
           prefix_checks);
    CHECK(tuples >= 20000);
}

/* Tuples with any types and directions at any position. */
TEST(test_keys__property_heterogeneous_tuples_order_and_roundtrip)
{
    enum { BATCH = 500 };
    size_t batches = 40 * scale(), tuples = 0;
    tup *ts = calloc(BATCH, sizeof *ts);
    CHECK(ts);
    pair_checks = prefix_checks = 0;
    for (size_t batch = 0; batch < batches; batch++) {
        /* Few types per batch, so equal types meet often at one position. */
        sop_key_type pick[3];
        for (int k = 0; k < 3; k++)
            pick[k] = rnd(9) == 0 ? SOP_KEY_NULL : all_types[rnd(TYPE_COUNT)];
        for (size_t i = 0; i < BATCH; i++) {
            tup *t = &ts[i];
            t->n = rnd(MAX_FIELDS + 1);
            for (size_t f = 0; f < t->n; f++)
                random_value(&t->v[f], pick[rnd(3)], rnd(4) == 0 ? SOP_KEY_DESC : 0, t->strbuf[f]);
            CHECK_OK(encode_tup(t));
            if (check_roundtrip(t) || (i % 4 == 0 && check_text_roundtrip(t, NULL, 0)))
                goto fail;
        }
        tuples += BATCH;
        if (check_order(ts, BATCH) || check_prefixes(ts, BATCH, 20))
            goto fail;
        free_batch(ts, BATCH);
        continue;
    fail:
        free_batch(ts, BATCH);
        free(ts);
        return;
    }
    free(ts);
    printf("    %zu tuples, %zu pair checks, %zu prefix-range checks\n", tuples, pair_checks,
           prefix_checks);
    CHECK(tuples >= 20000);
}

TEST(test_keys__double_total_order_and_nan_canonicalisation)
{
    /* Strictly increasing under the documented total order. */
    const uint64_t order[] = {0xFFF8000000000000ull, 0xFFF0000000000000ull, 0xFFEFFFFFFFFFFFFFull,
                              0xBFF0000000000000ull, 0x8000000000000001ull, 0x8000000000000000ull,
                              0x0000000000000000ull, 0x0000000000000001ull, 0x3FF0000000000000ull,
                              0x7FEFFFFFFFFFFFFFull, 0x7FF0000000000000ull, 0x7FF8000000000000ull};
    uint8_t prev[16], cur[16];
    size_t prev_len = 0;
    for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
        sop_tuple b;
        sop_val k;
        sop_tuple_start(&b, cur, sizeof cur);
        CHECK_OK(sop_tuple_add_double(&b, dbl_of(order[i]), SOP_KEY_ASC));
        CHECK_OK(sop_tuple_finish(&k, &b));
        if (i) {
            CHECK(bytes_cmp(prev, prev_len, cur, k.len) < 0);
            sop_key_value a = VAL_DBL(dbl_of(order[i - 1]), 0), c = VAL_DBL(dbl_of(order[i]), 0);
            CHECK(sop_key_value_compare(&a, &c) < 0);
        }
        memcpy(prev, cur, k.len);
        prev_len = k.len;
    }
    /* Every NaN of one sign encodes the same; the decoder rejects payloads. */
    const uint64_t nans[] = {0x7FF0000000000001ull, 0x7FF8000000000000ull, 0x7FFFFFFFFFFFFFFFull,
                             0x7FF4000000000000ull};
    uint8_t first[16];
    for (size_t i = 0; i < sizeof nans / sizeof *nans; i++) {
        sop_tuple b;
        sop_val k;
        sop_tuple_start(&b, cur, sizeof cur);
        CHECK_OK(sop_tuple_add_double(&b, dbl_of(nans[i]), SOP_KEY_ASC));
        CHECK_OK(sop_tuple_finish(&k, &b));
        if (i == 0)
            memcpy(first, cur, 9);
        CHECK(!memcmp(first, cur, 9));
    }
    uint8_t payload_nan[9] = {0x40, 0xFF, 0xF8, 0, 0, 0, 0, 0, 0x01};
    CHECK_RC(SOP_CORRUPT, sop_key_validate(NULL, &(sop_val){payload_nan, 9}));
}

/* ---- tests: decoder robustness -------------------------------------------- */

static int check_truncations(const tup *t)
{
    /* Cutting inside a field is corrupt; cutting at a field boundary is a
     * valid shorter key. Every cut must be one of the two. The boundaries
     * are the lengths of the encoded prefixes (K3). */
    const uint8_t *key = t->key;
    size_t len = t->key_len, boundaries[MAX_FIELDS + 1], nb = 0;
    sop_key_iter it;
    sop_key_value v;
    for (size_t j = 0; j <= t->n; j++) {
        uint8_t buf[SOP_MAX_KEY_LEN];
        sop_tuple b;
        sop_val pk;
        sop_tuple_start(&b, buf, sizeof buf);
        for (size_t i = 0; i < j; i++)
            sop_tuple_add_value(&b, &t->v[i]);
        REQUIRE(sop_tuple_finish(&pk, &b) == SOP_OK, "prefix");
        boundaries[nb++] = pk.len;
    }
    REQUIRE(boundaries[t->n] == len, "boundaries");
    for (size_t cut = 0; cut < len; cut++) {
        int at_boundary = 0;
        for (size_t b = 0; b < nb; b++)
            at_boundary |= boundaries[b] == cut;
        uint8_t *copy = malloc(cut ? cut : 1); /* exact size: ASan sees any overread */
        memcpy(copy, key, cut);
        size_t fc = 0;
        int rc = sop_key_validate(&fc, &(sop_val){copy, cut});
        sop_key_iter_init(&it, &(sop_val){copy, cut});
        int irc;
        while ((irc = sop_key_iter_next(&v, &it)) == SOP_OK)
            ;
        free(copy);
        if (at_boundary)
            REQUIRE(rc == SOP_OK && irc == SOP_NOTFOUND, "cut %zu at a boundary: rc %d", cut, rc);
        else
            REQUIRE(rc == SOP_CORRUPT && irc == SOP_CORRUPT, "cut %zu inside a field: rc %d/%d",
                    cut, rc, irc);
    }
    return 0;
}

TEST(test_keys__decoder_rejects_every_truncation)
{
    size_t keys = 0, cuts = 0;
    for (size_t i = 0; i < 2000 * scale(); i++) {
        tup t;
        t.n = 1 + rnd(MAX_FIELDS);
        for (size_t f = 0; f < t.n; f++)
            random_value(&t.v[f], all_types[rnd(TYPE_COUNT)], rnd(2) ? SOP_KEY_DESC : 0,
                         t.strbuf[f]);
        CHECK_OK(encode_tup(&t));
        int bad = check_truncations(&t);
        cuts += t.key_len;
        sop_key_free(t.key);
        if (bad)
            return;
        keys++;
    }
    printf("    %zu keys, %zu truncations\n", keys, cuts);
}

/* Garbage: either an error, or (rarely) a valid key that round-trips. */
TEST(test_keys__decoder_rejects_garbage)
{
    size_t rejected = 0, accepted = 0;
    for (size_t i = 0; i < 100000 * scale(); i++) {
        size_t len = 1 + rnd(40);
        uint8_t *g = malloc(len);
        int mode = (int)rnd(3);
        for (size_t k = 0; k < len; k++) {
            /* mode 1: valid-looking tags; mode 2: flip bytes of a real key */
            g[k] = (uint8_t)test_rand();
            if (mode == 1 && rnd(2))
                g[k] = (uint8_t)(0x50 + rnd(2) * 0x10) ^ (rnd(2) ? 0xFF : 0);
        }
        if (mode == 2) {
            uint8_t buf[64];
            sop_tuple b;
            sop_val k;
            sop_tuple_start(&b, buf, sizeof buf);
            sop_tuple_add_str(&b, "ab\0c", 4, rnd(2) ? SOP_KEY_DESC : 0);
            sop_tuple_add_int64(&b, random_i64(), rnd(2) ? SOP_KEY_DESC : 0);
            sop_tuple_add_double(&b, random_double(), rnd(2) ? SOP_KEY_DESC : 0);
            sop_tuple_finish(&k, &b);
            free(g);
            len = k.len;
            g = malloc(len);
            memcpy(g, buf, len);
            g[rnd(len)] ^= (uint8_t)(1 + rnd(255));
        }
        size_t fc = 0;
        int rc = sop_key_validate(&fc, &(sop_val){g, len});
        if (rc == SOP_OK) {
            /* Accepted: it must be canonical (decode, re-encode, same bytes). */
            sop_key_value vals[64];
            static uint8_t scratch[64];
            size_t n = 0;
            sop_tuple b;
            sop_val k2;
            uint8_t again[128];
            int drc = sop_key_decode(vals, 64, &n, scratch, sizeof scratch, &(sop_val){g, len});
            sop_tuple_start(&b, again, sizeof again);
            for (size_t f = 0; f < n; f++)
                sop_tuple_add_value(&b, &vals[f]);
            int frc = sop_tuple_finish(&k2, &b);
            int ok = drc == SOP_OK && frc == SOP_OK && n == fc &&
                     bytes_cmp(k2.data, k2.len, g, len) == 0;
            free(g);
            CHECK(ok);
            accepted++;
        } else {
            free(g);
            CHECK(rc == SOP_CORRUPT);
            rejected++;
        }
    }
    printf("    %zu rejected, %zu accepted (canonical)\n", rejected, accepted);
    CHECK(rejected > accepted);
}

TEST(test_keys__decoder_rejects_malformed_fields)
{
    static const struct {
        const char *what;
        uint8_t bytes[12];
        size_t len;
    } bad[] = {
        {"unknown tag", {0x00}, 1},
        {"unknown tag 0xff", {0xFF}, 1},
        {"unknown tag 0x7f", {0x7F}, 1},
        {"int64 with a leading zero", {0x22, 0x00, 0x01}, 3},
        {"negative int64 with a leading 0xff", {0x1E, 0xFF, 0x00}, 3},
        {"int64 above INT64_MAX", {0x28, 0x80, 0, 0, 0, 0, 0, 0, 0}, 9},
        {"int64 below INT64_MIN", {0x18, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE}, 9},
        {"uint64 with a leading zero", {0x32, 0x00, 0x05}, 3},
        {"string without terminator", {0x50, 'a', 'b'}, 3},
        {"string with a bad escape", {0x50, 'a', 0x00, 0x02, 0x00, 0x01}, 6},
        {"string ending in 0x00", {0x50, 'a', 0x00}, 3},
        {"string with invalid UTF-8", {0x50, 0xC0, 0x80, 0x00, 0x01}, 5},
        {"string with a surrogate", {0x50, 0xED, 0xA0, 0x80, 0x00, 0x01}, 6},
        {"string with an escaped 0xff (not UTF-8)", {0x50, 0xFF, 0x00, 0x01}, 4},
        {"descending string, invalid UTF-8", {0xAF, 0x3F, 0xFF, 0xFE}, 4},
        {"double, 7 bytes", {0x40, 1, 2, 3, 4, 5, 6, 7}, 8},
        {"uuid, 11 bytes", {0x70, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, 12},
        {"good field then junk", {0x05, 0x00}, 2},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = sop_key_validate(NULL, &(sop_val){bad[i].bytes, bad[i].len});
        if (rc != SOP_CORRUPT)
            FAIL_AT("%s: rc %d, expected SOP_CORRUPT", bad[i].what, rc);
        CHECK(rc == SOP_CORRUPT);
        CHECK(strlen(sop_errmsg()) > 0);
    }
    /* The iterator is sticky after an error and reports SOP_INVAL for bad input. */
    sop_key_iter it;
    sop_key_value v;
    uint8_t k[] = {0x05, 0x00, 0x05};
    CHECK_OK(sop_key_iter_init(&it, &(sop_val){k, 3}));
    CHECK_OK(sop_key_iter_next(&v, &it));
    CHECK(v.type == SOP_KEY_NULL);
    CHECK_RC(SOP_CORRUPT, sop_key_iter_next(&v, &it));
    CHECK_RC(SOP_CORRUPT, sop_key_iter_next(&v, &it));
    CHECK_RC(SOP_INVAL, sop_key_iter_init(&it, NULL));
    CHECK_RC(SOP_INVAL, sop_key_iter_next(&v, &it));
    CHECK_RC(SOP_INVAL, sop_key_iter_init(&it, &(sop_val){NULL, 3}));
    static uint8_t big[SOP_MAX_KEY_LEN + 1];
    CHECK_RC(SOP_INVAL, sop_key_iter_init(&it, &(sop_val){big, sizeof big}));
    CHECK_OK(sop_key_iter_init(&it, &(sop_val){NULL, 0}));
    CHECK_RC(SOP_NOTFOUND, sop_key_iter_next(&v, &it));
}

TEST(test_keys__decode_all_reports_small_arrays_and_scratch)
{
    uint8_t buf[128], scratch[8];
    sop_key_value vals[4];
    size_t n = 99;
    sop_tuple b;
    sop_val k;
    sop_tuple_start(&b, buf, sizeof buf);
    sop_tuple_add_int64(&b, 1, 0);
    sop_tuple_add_str(&b, "plain", 5, 0);           /* borrowed from the key */
    sop_tuple_add_str(&b, "desc", 4, SOP_KEY_DESC); /* needs scratch */
    CHECK_OK(sop_tuple_finish(&k, &b));
    CHECK_RC(SOP_INVAL, sop_key_decode(vals, 2, &n, scratch, sizeof scratch, &k));
    CHECK_EQ_U64(n, 3); /* the count is reported so the caller can retry */
    CHECK_RC(SOP_INVAL, sop_key_decode(vals, 4, &n, NULL, 0, &k));
    CHECK_RC(SOP_INVAL, sop_key_decode(vals, 4, &n, scratch, 3, &k));
    CHECK_OK(sop_key_decode(vals, 4, &n, scratch, 4, &k));
    CHECK_EQ_U64(n, 3);
    CHECK(vals[1].u.str.data == buf + 3); /* ascending, no NUL: points into the key */
    CHECK(vals[2].u.str.data == scratch && !memcmp(scratch, "desc", 4));
    CHECK(vals[2].flags == SOP_KEY_DESC);
}

/* ---- tests: the builder ----------------------------------------------------- */

TEST(test_keys__builder_errors_are_sticky_and_checked)
{
    uint8_t buf[8];
    sop_tuple t;
    sop_val k;
    sop_tuple_start(&t, buf, sizeof buf);
    CHECK_OK(sop_tuple_add_int64(&t, 5, SOP_KEY_ASC));
    CHECK_RC(SOP_INVAL, sop_tuple_add_str(&t, "too long here", 13, SOP_KEY_ASC));
    CHECK(strstr(sop_errmsg(), "too small") != NULL);
    CHECK_RC(SOP_INVAL, sop_tuple_add_int64(&t, 6, SOP_KEY_ASC)); /* sticky */
    CHECK_RC(SOP_INVAL, sop_tuple_finish(&k, &t));
    CHECK(k.data == NULL && k.len == 0);
    sop_tuple_reset(&t);
    CHECK_OK(sop_tuple_add_int64(&t, 5, SOP_KEY_ASC));
    CHECK_OK(sop_tuple_finish(&k, &t));
    CHECK_EQ_U64(k.len, 2);

    sop_tuple_reset(&t);
    CHECK_RC(SOP_INVAL, sop_tuple_add_int64(&t, 5, 0x4)); /* unknown flag */
    sop_tuple_reset(&t);
    CHECK_RC(SOP_INVAL, sop_tuple_add_int64(&t, 5, SOP_KEY_NULLABLE));
    sop_tuple_reset(&t);
    CHECK_RC(SOP_INVAL, sop_tuple_add_str(&t, "\xff", 1, 0)); /* not UTF-8 */
    sop_tuple_reset(&t);
    CHECK_RC(SOP_INVAL, sop_tuple_add_str(&t, NULL, 1, 0));
    sop_tuple_reset(&t);
    CHECK_OK(sop_tuple_add_str(&t, NULL, 0, 0));
    sop_tuple_reset(&t);
    CHECK_RC(SOP_INVAL, sop_tuple_add_cstr(&t, NULL, 0));
    sop_tuple_reset(&t);
    CHECK_RC(SOP_INVAL, sop_tuple_add_uuid(&t, NULL, 0));
    sop_tuple_reset(&t);
    CHECK_RC(SOP_INVAL, sop_tuple_add_value(&t, &(sop_key_value){.type = (sop_key_type)42}));
    sop_tuple_reset(&t);
    CHECK_OK(sop_tuple_add_str_prefix(&t, "ab", 2, 0));
    CHECK_RC(SOP_INVAL, sop_tuple_add_null(&t, 0)); /* nothing after a prefix field */

    /* The key length limit, with a heap builder. */
    sop_tuple_start(&t, NULL, 0);
    static char big[SOP_MAX_KEY_LEN];
    memset(big, 'x', sizeof big);
    CHECK_OK(sop_tuple_add_str(&t, big, SOP_MAX_KEY_LEN - 3, 0)); /* exactly 4096 bytes */
    CHECK_OK(sop_tuple_finish(&k, &t));
    CHECK_EQ_U64(k.len, SOP_MAX_KEY_LEN);
    CHECK_RC(SOP_INVAL, sop_tuple_add_null(&t, 0));
    CHECK(strstr(sop_errmsg(), "longer than") != NULL);
    sop_tuple_reset(&t);
    CHECK_RC(SOP_INVAL, sop_tuple_add_bytes(&t, big, SIZE_MAX / 2, 0)); /* no overflow */
    sop_tuple_dispose(&t);
    sop_tuple_dispose(&t); /* twice is fine */
    sop_tuple_dispose(NULL);

    /* finish_alloc copies; the empty tuple is the empty key. */
    void *copy = NULL;
    size_t copy_len = 9;
    sop_tuple_start(&t, NULL, 0);
    CHECK_OK(sop_tuple_finish_alloc(&copy, &copy_len, &t));
    CHECK(copy != NULL && copy_len == 0);
    sop_key_free(copy);
    CHECK_OK(sop_tuple_add_bool(&t, 1, SOP_KEY_DESC));
    CHECK_OK(sop_tuple_finish_alloc(&copy, &copy_len, &t));
    sop_tuple_dispose(&t);
    CHECK(copy_len == 1 && ((uint8_t *)copy)[0] == 0xEE);
    sop_key_free(copy);
}

TEST(test_keys__string_prefix_field_bounds_a_range)
{
    /* Keys ("US", city) for cities; the range for ("US", "San"*) in both
     * directions holds exactly the cities that start with "San". */
    static const char *const cities[] = {"Sacramento", "San", "San Diego", "San Jose",
                                         "Sana",       "Sam", "Santa\0Fe", "Sao",
                                         "",           "Sb",  "S"};
    size_t city_len[] = {10, 3, 9, 8, 4, 3, 8, 3, 0, 2, 1};
    for (int desc = 0; desc < 2; desc++) {
        unsigned dir = desc ? SOP_KEY_DESC : SOP_KEY_ASC;
        uint8_t lo[64], hi[64], k[64];
        sop_tuple t;
        sop_val lo_key, key;
        size_t hi_len, inside = 0;
        sop_tuple_start(&t, lo, sizeof lo);
        sop_tuple_add_cstr(&t, "US", 0);
        sop_tuple_add_str_prefix(&t, "San", 3, dir);
        CHECK_OK(sop_tuple_finish(&lo_key, &t));
        CHECK_OK(sop_key_prefix_end(hi, sizeof hi, &hi_len, &lo_key));
        CHECK_RC(SOP_CORRUPT, sop_key_validate(NULL, &lo_key)); /* a bound, not a key */
        for (size_t i = 0; i < sizeof cities / sizeof *cities; i++) {
            sop_tuple_start(&t, k, sizeof k);
            sop_tuple_add_cstr(&t, "US", 0);
            sop_tuple_add_str(&t, cities[i], city_len[i], dir);
            sop_tuple_add_int64(&t, 7, 0);
            CHECK_OK(sop_tuple_finish(&key, &t));
            int in =
                bytes_cmp(k, key.len, lo, lo_key.len) >= 0 && bytes_cmp(k, key.len, hi, hi_len) < 0;
            int starts = city_len[i] >= 3 && !memcmp(cities[i], "San", 3);
            CHECK(in == starts);
            inside += (size_t)in;
        }
        CHECK_EQ_U64(inside, 5);
    }
}

TEST(test_keys__prefix_end_edge_cases)
{
    uint8_t hi[8];
    size_t hi_len = 7;
    CHECK_RC(SOP_NOTFOUND, sop_key_prefix_end(hi, sizeof hi, &hi_len, &(sop_val){NULL, 0}));
    CHECK_RC(SOP_NOTFOUND, sop_key_prefix_end(hi, sizeof hi, &hi_len, &(sop_val){"\xff\xff", 2}));
    CHECK_OK(sop_key_prefix_end(hi, sizeof hi, &hi_len, &(sop_val){"\x21\x05\xff\xff", 4}));
    CHECK(hi_len == 2 && hi[0] == 0x21 && hi[1] == 0x06);
    CHECK_RC(SOP_INVAL, sop_key_prefix_end(hi, 1, &hi_len, &(sop_val){"\x21\x05\xff", 3}));
    CHECK_RC(SOP_INVAL, sop_key_prefix_end(hi, sizeof hi, NULL, &(sop_val){"\x21", 1}));
    /* In place: buf may be the prefix itself. */
    uint8_t p[3] = {0x50, 0x61, 0xff};
    CHECK_OK(sop_key_prefix_end(p, sizeof p, &hi_len, &(sop_val){p, 3}));
    CHECK(hi_len == 2 && p[1] == 0x62);
}

/* ---- tests: specs ------------------------------------------------------------ */

static sop_keyspec *make_employee_spec(void)
{
    sop_keyspec *s = NULL;
    if (sop_keyspec_new(&s) != SOP_OK)
        return NULL;
    if (sop_keyspec_add(s, "region", SOP_KEY_STRING, SOP_KEY_ASC) ||
        sop_keyspec_add(s, "dept", SOP_KEY_STRING, SOP_KEY_ASC) ||
        sop_keyspec_add(s, "id", SOP_KEY_INT64, SOP_KEY_DESC) ||
        sop_keyspec_add(s, "note", SOP_KEY_BYTES, SOP_KEY_NULLABLE)) {
        sop_keyspec_free(s);
        return NULL;
    }
    return s;
}

TEST(test_keys__spec_encode_decode_round_trip)
{
    sop_keyspec *s = make_employee_spec(), *d = NULL;
    uint8_t buf[SOP_KEYSPEC_MAX_LEN], again[SOP_KEYSPEC_MAX_LEN];
    size_t len = 0, len2 = 0;
    sop_keyspec_field f;
    CHECK(s);
    CHECK_EQ_U64(sop_keyspec_field_count(s), 4);
    CHECK_RC(SOP_INVAL, sop_keyspec_encode(buf, 10, &len, s));
    CHECK_EQ_U64(len, 8 + (3 + 6) + (3 + 4) + (3 + 2) + (3 + 4) + 4);
    CHECK_RC(SOP_INVAL, sop_keyspec_encode(NULL, 0, &len, s)); /* length query */
    CHECK_EQ_U64(len, 40);
    CHECK_OK(sop_keyspec_encode(buf, sizeof buf, &len, s));
    CHECK(!memcmp(buf, "SOPK\x01\x00\x04\x00\x06\x00\x06region", 17));
    CHECK_OK(sop_keys__spec_check(buf, len));
    CHECK_OK(sop_keyspec_decode(&d, buf, len));
    CHECK(sop_keyspec_equal(s, d));
    CHECK_OK(sop_keyspec_encode(again, sizeof again, &len2, d));
    CHECK(len2 == len && !memcmp(buf, again, len)); /* canonical */
    CHECK_OK(sop_keyspec_field_get(&f, d, 2));
    CHECK(!strcmp(f.name, "id") && f.type == SOP_KEY_INT64 && f.flags == SOP_KEY_DESC);
    CHECK_OK(sop_keyspec_field_get(&f, d, 3));
    CHECK(f.type == SOP_KEY_BYTES && f.flags == SOP_KEY_NULLABLE);
    CHECK_RC(SOP_INVAL, sop_keyspec_field_get(&f, d, 4));
    sop_keyspec_free(d);

    /* Equality looks at every attribute. */
    sop_keyspec *e = NULL;
    CHECK_OK(sop_keyspec_new(&e));
    CHECK(!sop_keyspec_equal(s, e));
    CHECK_OK(sop_keyspec_add(e, "region", SOP_KEY_STRING, 0));
    CHECK_OK(sop_keyspec_add(e, "dept", SOP_KEY_STRING, 0));
    CHECK_OK(sop_keyspec_add(e, "id", SOP_KEY_INT64, 0)); /* ascending: differs */
    CHECK_OK(sop_keyspec_add(e, "note", SOP_KEY_BYTES, SOP_KEY_NULLABLE));
    CHECK(!sop_keyspec_equal(s, e));
    CHECK(sop_keyspec_equal(NULL, NULL) && !sop_keyspec_equal(s, NULL));
    sop_keyspec_free(e);

    /* The largest spec fits SOP_KEYSPEC_MAX_LEN. */
    CHECK_OK(sop_keyspec_new(&e));
    for (int i = 0; i < SOP_KEYSPEC_MAX_FIELDS; i++) {
        char name[SOP_KEYSPEC_MAX_NAME_LEN + 1];
        memset(name, 'n', SOP_KEYSPEC_MAX_NAME_LEN);
        snprintf(name, sizeof name, "f%02d", i);
        name[3] = 'n';
        name[SOP_KEYSPEC_MAX_NAME_LEN] = '\0';
        CHECK_OK(sop_keyspec_add(e, name, SOP_KEY_UUID, SOP_KEY_DESC | SOP_KEY_NULLABLE));
    }
    CHECK_RC(SOP_INVAL, sop_keyspec_add(e, "extra", SOP_KEY_BOOL, 0));
    CHECK_OK(sop_keyspec_encode(buf, sizeof buf, &len, e));
    CHECK_EQ_U64(len, 4044);
    CHECK_OK(sop_keyspec_decode(&d, buf, len));
    CHECK(sop_keyspec_equal(d, e));
    sop_keyspec_free(d);
    sop_keyspec_free(e);
    sop_keyspec_free(s);
}

TEST(test_keys__spec_builder_rejects_bad_fields)
{
    sop_keyspec *s = NULL;
    CHECK_OK(sop_keyspec_new(&s));
    CHECK_RC(SOP_INVAL, sop_keyspec_add(s, "", SOP_KEY_INT64, 0));
    CHECK_RC(SOP_INVAL, sop_keyspec_add(s, "9lives", SOP_KEY_INT64, 0));
    CHECK_RC(SOP_INVAL, sop_keyspec_add(s, "has space", SOP_KEY_INT64, 0));
    CHECK_RC(SOP_INVAL, sop_keyspec_add(s, "x", SOP_KEY_NULL, 0));
    CHECK_RC(SOP_INVAL, sop_keyspec_add(s, "x", (sop_key_type)9, 0));
    CHECK_RC(SOP_INVAL, sop_keyspec_add(s, "x", SOP_KEY_INT64, 0x4));
    CHECK_RC(SOP_INVAL, sop_keyspec_add(s, NULL, SOP_KEY_INT64, 0));
    char long_name[SOP_KEYSPEC_MAX_NAME_LEN + 2];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    CHECK_RC(SOP_INVAL, sop_keyspec_add(s, long_name, SOP_KEY_INT64, 0));
    long_name[SOP_KEYSPEC_MAX_NAME_LEN] = '\0';
    CHECK_OK(sop_keyspec_add(s, long_name, SOP_KEY_INT64, 0));
    CHECK_OK(sop_keyspec_add(s, "_ok_1", SOP_KEY_INT64, 0));
    CHECK_RC(SOP_INVAL, sop_keyspec_add(s, "_ok_1", SOP_KEY_BOOL, 0)); /* duplicate */
    CHECK_EQ_U64(sop_keyspec_field_count(s), 2);
    sop_keyspec_free(s);
    CHECK_OK(sop_keyspec_new(&s));
    uint8_t buf[64];
    size_t len;
    CHECK_RC(SOP_INVAL, sop_keyspec_encode(buf, sizeof buf, &len, s)); /* no fields */
    sop_keyspec_free(s);
    sop_keyspec_free(NULL);
}

static int spec_decode_rc(const uint8_t *p, size_t len)
{
    sop_keyspec *d = NULL;
    uint8_t *copy = malloc(len ? len : 1); /* exact size for ASan */
    memcpy(copy, p, len);
    int rc = sop_keyspec_decode(&d, copy, len);
    int rc2 = sop_keys__spec_check(copy, len);
    free(copy);
    if (rc == SOP_OK)
        sop_keyspec_free(d);
    else if (d != NULL)
        return 1000; /* must be NULL on failure */
    return rc == rc2 ? rc : 1001;
}

TEST(test_keys__spec_rejects_truncations_and_byte_flips)
{
    sop_keyspec *s = make_employee_spec();
    uint8_t buf[SOP_KEYSPEC_MAX_LEN], bad[SOP_KEYSPEC_MAX_LEN];
    size_t len, flips = 0;
    CHECK(s);
    CHECK_OK(sop_keyspec_encode(buf, sizeof buf, &len, s));
    sop_keyspec_free(s);
    for (size_t cut = 0; cut < len; cut++)
        CHECK_RC(SOP_CORRUPT, spec_decode_rc(buf, cut));
    memcpy(bad, buf, len);
    bad[len] = 0;
    CHECK_RC(SOP_CORRUPT, spec_decode_rc(bad, len + 1)); /* extra byte */
    /* Every single-byte change is caught (CRC-32C catches bursts <= 32 bits). */
    for (size_t pos = 0; pos < len; pos++)
        for (unsigned x = 1; x < 256; x++) {
            memcpy(bad, buf, len);
            bad[pos] ^= (uint8_t)x;
            CHECK_RC(SOP_CORRUPT, spec_decode_rc(bad, len));
            flips++;
        }
    /* Random multi-byte damage. */
    for (size_t i = 0; i < 20000; i++) {
        memcpy(bad, buf, len);
        size_t n = 2 + rnd(6);
        for (size_t k = 0; k < n; k++)
            bad[rnd(len)] ^= (uint8_t)(1 + rnd(255));
        int rc = spec_decode_rc(bad, len);
        CHECK(rc == SOP_CORRUPT || (rc == SOP_OK && !memcmp(bad, buf, len)));
        flips++;
    }
    printf("    %zu truncations, %zu damaged copies\n", len, flips);
}

/* Bodies with a valid checksum: only the structural checks stand. */
static int forged_rc(const uint8_t *body, size_t body_len)
{
    uint8_t buf[SOP_KEYSPEC_MAX_LEN + 8];
    memcpy(buf, body, body_len);
    sop_put_le32(buf + body_len, sop_crc32c(0, body, body_len));
    return spec_decode_rc(buf, body_len + 4);
}

TEST(test_keys__spec_with_valid_checksum_rejects_malformed_bodies)
{
#define FORGED(rc, lit) CHECK_RC(rc, forged_rc((const uint8_t *)(lit), sizeof(lit) - 1))
    FORGED(SOP_OK, "SOPK\x01\x00\x01\x00\x02\x00\x01x");
    FORGED(SOP_OK, "SOPK\x01\x00\x01\x00\x02\x03\x01x");
    FORGED(SOP_VERSION, "SOPK\x02\x00\x01\x00\x02\x00\x01x");
    FORGED(SOP_CORRUPT, "SOPK\x00\x00\x01\x00\x02\x00\x01x");              /* version 0 */
    FORGED(SOP_CORRUPT, "SOPK\x01\x01\x01\x00\x02\x00\x01x");              /* reserved flags */
    FORGED(SOP_CORRUPT, "SOPK\x01\x00\x00\x00");                           /* no fields */
    FORGED(SOP_CORRUPT, "SOPK\x01\x00\x41\x00\x02\x00\x01x");              /* 65 fields */
    FORGED(SOP_CORRUPT, "SOPK\x01\x00\x01\x00\x00\x00\x01x");              /* type null */
    FORGED(SOP_CORRUPT, "SOPK\x01\x00\x01\x00\x09\x00\x01x");              /* type 9 */
    FORGED(SOP_CORRUPT, "SOPK\x01\x00\x01\x00\x02\x04\x01x");              /* flag bit 2 */
    FORGED(SOP_CORRUPT, "SOPK\x01\x00\x01\x00\x02\x00\x00");               /* empty name */
    FORGED(SOP_CORRUPT, "SOPK\x01\x00\x01\x00\x02\x00\x01\x31");           /* name "1" */
    FORGED(SOP_CORRUPT, "SOPK\x01\x00\x01\x00\x02\x00\x02x");              /* name past the end */
    FORGED(SOP_CORRUPT, "SOPK\x01\x00\x01\x00\x02\x00\x01xy");             /* trailing byte */
    FORGED(SOP_CORRUPT, "SOPK\x01\x00\x02\x00\x02\x00\x01x\x03\x00\x01x"); /* duplicate */
    FORGED(SOP_CORRUPT, "SOPK\x01\x00\x02\x00\x02\x00\x01x\x03");          /* header cut */
    FORGED(SOP_CORRUPT, "SOPX\x01\x00\x01\x00\x02\x00\x01x");              /* magic */
#undef FORGED
}

TEST(test_keys__keys_checked_against_a_spec)
{
    sop_keyspec *s = make_employee_spec();
    uint8_t spec_bytes[256], buf[128];
    size_t spec_len;
    sop_tuple t;
    sop_val k;
    CHECK(s);
    CHECK_OK(sop_keyspec_encode(spec_bytes, sizeof spec_bytes, &spec_len, s));
    sop_tuple_start(&t, buf, sizeof buf);
    sop_tuple_add_cstr(&t, "US", 0);
    sop_tuple_add_cstr(&t, "Sales", 0);
    CHECK_OK(sop_tuple_finish(&k, &t));
    CHECK_RC(SOP_INVAL, sop_keyspec_check_key(s, &k, 0)); /* too few */
    CHECK_OK(sop_keyspec_check_key(s, &k, SOP_KEY_CHECK_PREFIX));
    CHECK_OK(sop_keys__key_check(spec_bytes, spec_len, k.data, k.len, SOP_KEY_CHECK_PREFIX));
    sop_tuple_add_int64(&t, 42, SOP_KEY_DESC);
    sop_tuple_add_null(&t, 0);
    CHECK_OK(sop_tuple_finish(&k, &t));
    CHECK_OK(sop_keyspec_check_key(s, &k, 0));
    CHECK_OK(sop_keys__key_check(spec_bytes, spec_len, k.data, k.len, 0));
    sop_tuple_add_null(&t, 0);
    CHECK_OK(sop_tuple_finish(&k, &t));
    CHECK_RC(SOP_INVAL, sop_keyspec_check_key(s, &k, SOP_KEY_CHECK_PREFIX)); /* too many */

    sop_tuple_reset(&t);
    sop_tuple_add_cstr(&t, "US", 0);
    sop_tuple_add_cstr(&t, "Sales", 0);
    sop_tuple_add_int64(&t, 42, SOP_KEY_ASC); /* wrong direction */
    CHECK_OK(sop_tuple_finish(&k, &t));
    CHECK_RC(SOP_INVAL, sop_keyspec_check_key(s, &k, SOP_KEY_CHECK_PREFIX));
    CHECK(strstr(sop_errmsg(), "id") != NULL);
    sop_tuple_reset(&t);
    sop_tuple_add_null(&t, 0); /* region is not nullable */
    CHECK_OK(sop_tuple_finish(&k, &t));
    CHECK_RC(SOP_INVAL, sop_keyspec_check_key(s, &k, SOP_KEY_CHECK_PREFIX));
    sop_tuple_reset(&t);
    sop_tuple_add_uint64(&t, 1, 0); /* wrong type */
    CHECK_OK(sop_tuple_finish(&k, &t));
    CHECK_RC(SOP_INVAL, sop_keyspec_check_key(s, &k, SOP_KEY_CHECK_PREFIX));
    CHECK_RC(SOP_INVAL, sop_keyspec_check_key(s, &k, 0x8));
    CHECK_RC(SOP_CORRUPT, sop_keyspec_check_key(s, &(sop_val){"\x50\x61", 2}, 0));
    CHECK_RC(SOP_CORRUPT, sop_keys__key_check(spec_bytes, spec_len - 1, k.data, k.len, 0));
    sop_keyspec_free(s);
}

TEST(test_keys__spec_text_round_trip)
{
    sop_keyspec *s = make_employee_spec(), *p = NULL;
    char *text = NULL;
    CHECK(s);
    CHECK_OK(sop_keyspec_format(&text, s));
    CHECK(!strcmp(text, "(region string, dept string, id int64 desc, note bytes nullable)"));
    CHECK_OK(sop_keyspec_parse(&p, text));
    CHECK(sop_keyspec_equal(s, p));
    sop_keyspec_free(p);
    sop_key_free(text);
    CHECK_OK(sop_keyspec_parse(&p, "  region string asc,dept string,\n id int64 desc ,"
                                   " note bytes nullable  "));
    CHECK(sop_keyspec_equal(s, p));
    sop_keyspec_free(p);
    CHECK_OK(sop_keyspec_parse(&p, "(a uuid nullable desc, b timestamp, c double, d uint64, "
                                   "e bool)"));
    CHECK_EQ_U64(sop_keyspec_field_count(p), 5);
    sop_keyspec_free(p);
    static const char *const bad[] = {"",          "()",         "(a)",        "(a int)",
                                      "(a int64",  "(a int64,)", "a int64 b",  "(a int64, a bool)",
                                      "(1a bool)", "(a null)",   "(a int64) x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        p = (sop_keyspec *)1;
        CHECK_RC(SOP_INVAL, sop_keyspec_parse(&p, bad[i]));
        CHECK(p == NULL);
        CHECK(strstr(sop_errmsg(), "col ") != NULL);
    }
    sop_keyspec_free(s);
}

/* ---- tests: key text --------------------------------------------------------- */

static int expect_text(const sop_keyspec *spec, const sop_val *key, unsigned flags,
                       const char *want)
{
    char buf[512];
    size_t len = 0;
    int rc = sop_key_format(buf, sizeof buf, &len, spec, key, flags);
    REQUIRE(rc == SOP_OK, "format rc %d (%s)", rc, sop_errmsg());
    REQUIRE(!strcmp(buf, want) && len == strlen(want), "rendered %s, expected %s", buf, want);
    /* And it parses back to the same bytes. */
    sop_tuple t;
    sop_val k2;
    uint8_t kb[SOP_MAX_KEY_LEN];
    sop_tuple_start(&t, kb, sizeof kb);
    rc = sop_key_parse(&t, (flags & SOP_KEY_FORMAT_TYPED) ? NULL : spec, buf);
    REQUIRE(rc == SOP_OK, "parse of %s: rc %d (%s)", buf, rc, sop_errmsg());
    REQUIRE(sop_tuple_finish(&k2, &t) == SOP_OK, "finish");
    REQUIRE(bytes_cmp(k2.data, k2.len, key->data, key->len) == 0, "%s parses to other bytes", buf);
    return 0;
}

TEST(test_keys__text_render_examples)
{
    sop_keyspec *s = make_employee_spec();
    uint8_t buf[512];
    sop_tuple t;
    sop_val k;
    CHECK(s);
    sop_tuple_start(&t, buf, sizeof buf);
    sop_tuple_add_cstr(&t, "US", 0);
    sop_tuple_add_cstr(&t, "Sales", 0);
    sop_tuple_add_int64(&t, 42, SOP_KEY_DESC);
    CHECK_OK(sop_tuple_finish(&k, &t));
    if (expect_text(s, &k, 0, "(\"US\", \"Sales\", 42)") ||
        expect_text(s, &k, SOP_KEY_FORMAT_NAMES, "(region=\"US\", dept=\"Sales\", id=42)") ||
        expect_text(s, &k, SOP_KEY_FORMAT_TYPED, "(\"US\", \"Sales\", desc(42))") ||
        expect_text(NULL, &k, 0, "(\"US\", \"Sales\", desc(42))"))
        goto out;
    sop_tuple_add_null(&t, 0);
    CHECK_OK(sop_tuple_finish(&k, &t));
    if (expect_text(s, &k, 0, "(\"US\", \"Sales\", 42, null)"))
        goto out;

    static const uint8_t uuid[16] = {0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3,
                                     0xa4, 0x56, 0x42, 0x66, 0x14, 0x17, 0x40, 0x00};
    sop_tuple_reset(&t);
    sop_tuple_add_null(&t, 0);
    sop_tuple_add_bool(&t, 1, 0);
    sop_tuple_add_bool(&t, 0, SOP_KEY_DESC);
    sop_tuple_add_int64(&t, INT64_MIN, 0);
    sop_tuple_add_uint64(&t, UINT64_MAX, 0);
    sop_tuple_add_double(&t, 1.5, 0);
    sop_tuple_add_double(&t, -0.0, 0);
    sop_tuple_add_double(&t, 0.1, 0);
    sop_tuple_add_double(&t, 1e300, 0);
    sop_tuple_add_double(&t, 5.0, 0);
    sop_tuple_add_double(&t, -INFINITY, 0);
    sop_tuple_add_double(&t, -NAN, 0);
    sop_tuple_add_timestamp(&t, 0, 0);
    sop_tuple_add_str(&t, "a\"b\\c\n\x01\0\xc3\xa9", 10, 0);
    sop_tuple_add_bytes(&t, "\x00\xff\x10", 3, 0);
    sop_tuple_add_uuid(&t, uuid, 0);
    CHECK_OK(sop_tuple_finish(&k, &t));
    if (expect_text(NULL, &k, 0,
                    "(null, true, desc(false), -9223372036854775808, 18446744073709551615u, 1.5, "
                    "-0.0, 0.1, 1e+300, 5.0, -inf, -nan, ts\"1970-01-01T00:00:00Z\", "
                    "\"a\\\"b\\\\c\\n\\x01\\x00\xc3\xa9\", x\"00ff10\", "
                    "uuid\"123e4567-e89b-12d3-a456-426614174000\")"))
        goto out;
    sop_tuple_reset(&t);
    CHECK_OK(sop_tuple_finish(&k, &t));
    if (expect_text(NULL, &k, 0, "()"))
        goto out;

    /* Buffer too small: truncated, NUL-terminated, full length reported. */
    char small[5];
    size_t len = 0;
    sop_tuple_add_cstr(&t, "abcdef", 0);
    CHECK_OK(sop_tuple_finish(&k, &t));
    CHECK_RC(SOP_INVAL, sop_key_format(small, sizeof small, &len, NULL, &k, 0));
    CHECK(len == 10 && !strcmp(small, "(\"ab"));
    CHECK_RC(SOP_INVAL, sop_key_format(NULL, 0, &len, NULL, &k, 0));
    CHECK_EQ_U64(len, 10);
    CHECK_RC(SOP_INVAL, sop_key_format(small, sizeof small, &len, NULL, &k,
                                       SOP_KEY_FORMAT_NAMES)); /* names need a spec */
    CHECK_RC(SOP_INVAL, sop_key_format(small, sizeof small, &len, NULL, &k, 0x10));
    CHECK_RC(SOP_INVAL, sop_key_format(small, sizeof small, &len, s, &k, 0)); /* misfit */
    CHECK_RC(SOP_CORRUPT,
             sop_key_format(small, sizeof small, &len, NULL, &(sop_val){"\x50\x61", 2}, 0));
out:
    sop_keyspec_free(s);
}

static int ts_text(int64_t ns, const char *want)
{
    uint8_t buf[16];
    char text[64];
    size_t len;
    sop_tuple t;
    sop_val k;
    sop_tuple_start(&t, buf, sizeof buf);
    sop_tuple_add_timestamp(&t, ns, 0);
    sop_tuple_finish(&k, &t);
    REQUIRE(sop_key_format(text, sizeof text, &len, NULL, &k, 0) == SOP_OK, "format");
    REQUIRE(!strcmp(text, want), "%" PRId64 " ns renders as %s, expected %s", ns, text, want);
    return expect_text(NULL, &k, 0, want);
}

TEST(test_keys__timestamp_text_is_utc_iso8601)
{
    if (ts_text(0, "(ts\"1970-01-01T00:00:00Z\")") ||
        ts_text(-1, "(ts\"1969-12-31T23:59:59.999999999Z\")") ||
        ts_text(1709208000ll * 1000000000ll, "(ts\"2024-02-29T12:00:00Z\")") ||
        ts_text(951782400ll * 1000000000ll + 5, "(ts\"2000-02-29T00:00:00.000000005Z\")") ||
        ts_text(INT64_MIN, "(ts\"1677-09-21T00:12:43.145224192Z\")") ||
        ts_text(INT64_MAX, "(ts\"2262-04-11T23:47:16.854775807Z\")"))
        return;
    /* Random instants round-trip. */
    for (int i = 0; i < 20000; i++) {
        uint8_t buf[16], kb[16];
        char text[64];
        size_t len;
        sop_tuple t;
        sop_val k, k2;
        sop_tuple_start(&t, buf, sizeof buf);
        sop_tuple_add_timestamp(&t, (int64_t)test_rand(), 0);
        sop_tuple_finish(&k, &t);
        CHECK_OK(sop_key_format(text, sizeof text, &len, NULL, &k, 0));
        sop_tuple_start(&t, kb, sizeof kb);
        CHECK_OK(sop_key_parse(&t, NULL, text));
        CHECK_OK(sop_tuple_finish(&k2, &t));
        CHECK(bytes_cmp(k.data, k.len, k2.data, k2.len) == 0);
    }
}

static int parse_rc(const sop_keyspec *spec, const char *text)
{
    sop_tuple t;
    sop_tuple_start(&t, NULL, 0);
    int rc = sop_key_parse(&t, spec, text);
    sop_tuple_dispose(&t);
    return rc;
}

TEST(test_keys__text_parse_accepts_plain_forms_and_rejects_errors)
{
    sop_keyspec *s = NULL;
    uint8_t a[128], b[128];
    sop_tuple t;
    sop_val ka, kb;
    CHECK_OK(sop_keyspec_parse(&s, "(n uint64, d double, ts timestamp, by bytes, id uuid, "
                                   "s string desc nullable)"));
    /* Plain literals with a spec == typed literals without one. */
    sop_tuple_start(&t, a, sizeof a);
    CHECK_OK(sop_key_parse(&t, s,
                           " ( 7 , 3 , 1000, \"ab\", \"123e4567e89b12d3a456426614174000\","
                           " null ) "));
    CHECK_OK(sop_tuple_finish(&ka, &t));
    sop_tuple_start(&t, b, sizeof b);
    CHECK_OK(sop_key_parse(&t, NULL,
                           "(7u, 3.0, ts\"1970-01-01T00:00:00.000001Z\", x\"6162\", "
                           "uuid\"123e4567-e89b-12d3-a456-426614174000\", desc(null))"));
    CHECK_OK(sop_tuple_finish(&kb, &t));
    CHECK(bytes_cmp(ka.data, ka.len, kb.data, kb.len) == 0);
    /* Parsing appends: a prefix, then more fields. */
    sop_tuple_start(&t, a, sizeof a);
    CHECK_OK(sop_key_parse(&t, s, "(7)"));
    CHECK_OK(sop_key_parse(&t, s, "(d=3, ts=1000)"));
    CHECK_OK(sop_tuple_finish(&ka, &t));
    CHECK(ka.len > 0 && !memcmp(ka.data, kb.data, ka.len));

    static const struct {
        const char *text;
        int with_spec;
    } bad[] = {
        {"", 0},
        {"1", 0},
        {"(1", 0},
        {"(1 2)", 0},
        {"(1,)", 0},
        {"(1) x", 0},
        {"(\"\\q\")", 0},
        {"(\"abc)", 0},
        {"(\"\\x4\")", 0},
        {"(\"\xff\")", 0},             /* not UTF-8 */
        {"(99999999999999999999)", 0}, /* out of range */
        {"(9223372036854775808)", 0},  /* int64 max + 1 (needs u) */
        {"(-9223372036854775809)", 0},
        {"(18446744073709551616u)", 0},
        {"(-1u)", 0},
        {"(1.5u)", 0},
        {"(12abc)", 0},
        {"(1e)", 0},
        {"(.)", 0},
        {"(x\"0\")", 0},
        {"(x\"zz\")", 0},
        {"(uuid\"123\")", 0},
        {"(ts\"2023-02-29T00:00:00Z\")", 0},
        {"(ts\"2262-04-12T00:00:00Z\")", 0},
        {"(ts\"1677-09-21T00:12:43.145224191Z\")", 0},
        {"(ts\"2024-01-01T24:00:00Z\")", 0},
        {"(ts\"2024-01-01T00:00:00.1234567890Z\")", 0},
        {"(ts\"2024-01-01 00:00:00Z\")", 0},
        {"(desc(desc(1)))", 0},
        {"(desc 1)", 0},
        {"(nul)", 0},
        {"(a=1)", 0},      /* names need a spec */
        {"(-1)", 1},       /* negative uint64 */
        {"(1, \"x\")", 1}, /* string for a double */
        {"(1, 2, 3, x\"00\", \"not-a-uuid\")", 1},
        {"(null)", 1},    /* n is not nullable */
        {"(d=1)", 1},     /* name at the wrong position */
        {"(desc(1))", 1}, /* n is ascending */
        {"(1, 2, 3, x\"\", uuid\"123e4567e89b12d3a456426614174000\", \"\", 7)", 1},
        {"(1, true)", 1},
        {"(1, 2, \"1970-01-01\")", 1},
        {"(inf)", 1},                                               /* inf for a uint64 */
        {"(1, 2, x\"00\")", 1},                                     /* bytes for a timestamp */
        {"(1, 2, 3, uuid\"123e4567e89b12d3a456426614174000\")", 1}, /* uuid for bytes */
        {"(1, 2, 3, ts\"1970-01-01T00:00:00Z\")", 1},               /* ts for bytes */
        {"(1, 2, 3, x\"\", uuid\"123e4567e89b12d3a456426614174000\", 5)", 1}, /* int, string */
        {"(1.5)", 1}, /* decimal for a uint64 */
        {"(1, 2, 3, x\"\", uuid\"123e4567e89b12d3a456426614174000\", desc(\"s\"", 1},
        {"(x\"00\"", 0},
        {"(uuid\"123e4567-e89b-12d3-a456-42661417400g\")", 0},
        {"(ts\"2024-13-01T00:00:00Z\")", 0},
        {"(ts\"2024-01-01T00:00:00.Z\")", 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = parse_rc(bad[i].with_spec ? s : NULL, bad[i].text);
        if (rc != SOP_INVAL)
            FAIL_AT("parse %s: rc %d, expected SOP_INVAL", bad[i].text, rc);
        CHECK(rc == SOP_INVAL);
    }
    CHECK_RC(SOP_INVAL, parse_rc(NULL, "(1 2)"));
    CHECK(strstr(sop_errmsg(), "col 4") != NULL);
    /* Every escape, and upper-case hex, read back. */
    sop_tuple_start(&t, a, sizeof a);
    CHECK_OK(sop_key_parse(&t, NULL, "(\"\\r\\t\\0\\n\\\"\\\\\\x7F\", x\"aBcD\")"));
    CHECK_OK(sop_tuple_finish(&ka, &t));
    sop_tuple_start(&t, b, sizeof b);
    sop_tuple_add_str(&t, "\r\t\0\n\"\\\x7f", 7, 0);
    sop_tuple_add_bytes(&t, "\xab\xcd", 2, 0);
    CHECK_OK(sop_tuple_finish(&kb, &t));
    CHECK(bytes_cmp(ka.data, ka.len, kb.data, kb.len) == 0);
    /* Sticky into the tuple, like the add calls. */
    sop_tuple_start(&t, a, sizeof a);
    CHECK_RC(SOP_INVAL, sop_key_parse(&t, NULL, "(1, ?)"));
    CHECK_RC(SOP_INVAL, sop_tuple_finish(&ka, &t));
    sop_keyspec_free(s);
}

/* ---- tests: structs ------------------------------------------------------- */

struct rec {
    int8_t i8;
    int16_t i16;
    int32_t i32;
    int64_t i64;
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    bool b;
    int bi;
    float f;
    double d;
    int64_t ts;
    uint8_t id[16];
    uint8_t id2[16];
    const char *name;
    char code[8];
    const char *note;
    size_t note_len;
    const void *blob;
    size_t blob_len;
    uint8_t tag[6];
    size_t tag_len;
    uint8_t fixed[4];
    char label[5];
    size_t label_len;
};

static const sop_key_member rec_members[] = {
    SOP_KEY_MEMBER(struct rec, i8, SOP_KEY_INT64, SOP_KEY_ASC),
    SOP_KEY_MEMBER(struct rec, i16, SOP_KEY_INT64, SOP_KEY_DESC),
    SOP_KEY_MEMBER(struct rec, i32, SOP_KEY_INT64, SOP_KEY_ASC),
    SOP_KEY_MEMBER(struct rec, i64, SOP_KEY_INT64, SOP_KEY_DESC),
    SOP_KEY_MEMBER(struct rec, u8, SOP_KEY_UINT64, SOP_KEY_ASC),
    SOP_KEY_MEMBER(struct rec, u16, SOP_KEY_UINT64, SOP_KEY_ASC),
    SOP_KEY_MEMBER(struct rec, u32, SOP_KEY_UINT64, SOP_KEY_DESC),
    SOP_KEY_MEMBER(struct rec, u64, SOP_KEY_UINT64, SOP_KEY_ASC),
    SOP_KEY_MEMBER(struct rec, b, SOP_KEY_BOOL, SOP_KEY_ASC),
    SOP_KEY_MEMBER(struct rec, bi, SOP_KEY_BOOL, SOP_KEY_DESC),
    SOP_KEY_MEMBER(struct rec, f, SOP_KEY_DOUBLE, SOP_KEY_ASC),
    SOP_KEY_MEMBER(struct rec, d, SOP_KEY_DOUBLE, SOP_KEY_DESC),
    SOP_KEY_MEMBER(struct rec, ts, SOP_KEY_TIMESTAMP, SOP_KEY_ASC),
    SOP_KEY_MEMBER(struct rec, id, SOP_KEY_UUID, SOP_KEY_ASC),
    SOP_KEY_MEMBER_ARRAY(struct rec, id2, SOP_KEY_UUID, SOP_KEY_DESC),
    SOP_KEY_MEMBER_STRPTR(struct rec, name, SOP_KEY_NULLABLE),
    SOP_KEY_MEMBER_ARRAY(struct rec, code, SOP_KEY_STRING, SOP_KEY_DESC),
    SOP_KEY_MEMBER_PTRLEN(struct rec, note, note_len, SOP_KEY_STRING, SOP_KEY_ASC),
    SOP_KEY_MEMBER_PTRLEN(struct rec, blob, blob_len, SOP_KEY_BYTES,
                          SOP_KEY_DESC | SOP_KEY_NULLABLE),
    SOP_KEY_MEMBER_ARRAYLEN(struct rec, tag, tag_len, SOP_KEY_BYTES, SOP_KEY_ASC),
    SOP_KEY_MEMBER_ARRAY(struct rec, fixed, SOP_KEY_BYTES, SOP_KEY_DESC),
    SOP_KEY_MEMBER_ARRAYLEN(struct rec, label, label_len, SOP_KEY_STRING, SOP_KEY_DESC),
};
#define REC_MEMBERS (sizeof rec_members / sizeof *rec_members)

static int same_ptrlen(const void *a, size_t a_len, const void *b, size_t b_len)
{
    if ((a == NULL) != (b == NULL) || a_len != b_len)
        return 0;
    return a_len == 0 || !memcmp(a, b, a_len);
}

static int rec_equal(const struct rec *x, const struct rec *y)
{
    return x->i8 == y->i8 && x->i16 == y->i16 && x->i32 == y->i32 && x->i64 == y->i64 &&
           x->u8 == y->u8 && x->u16 == y->u16 && x->u32 == y->u32 && x->u64 == y->u64 &&
           x->b == y->b && (x->bi != 0) == (y->bi != 0) && canon_bits(x->f) == canon_bits(y->f) &&
           canon_bits(x->d) == canon_bits(y->d) && x->ts == y->ts && !memcmp(x->id, y->id, 16) &&
           !memcmp(x->id2, y->id2, 16) &&
           (x->name == NULL ? y->name == NULL : (y->name && !strcmp(x->name, y->name))) &&
           !strncmp(x->code, y->code, sizeof x->code) &&
           same_ptrlen(x->note, x->note_len, y->note, y->note_len) &&
           same_ptrlen(x->blob, x->blob_len, y->blob, y->blob_len) && x->tag_len == y->tag_len &&
           !memcmp(x->tag, y->tag, x->tag_len) && !memcmp(x->fixed, y->fixed, 4) &&
           x->label_len == y->label_len && !memcmp(x->label, y->label, x->label_len);
}

TEST(test_keys__struct_pack_unpack_round_trip)
{
    static char names[4][16] = {"alice", "", "b\xc3\xa9la", "zed"};
    static const char *const notes[] = {"", "x", "with\0nul", "\xe2\x82\xac"};
    static const size_t note_lens[] = {0, 1, 8, 3};
    size_t packs = 0, borrowed = 0;
    for (int i = 0; i < 5000; i++) {
        struct rec r, out;
        uint8_t key[SOP_MAX_KEY_LEN], storage[SOP_MAX_KEY_LEN], blob[8];
        size_t key_len = 0, fields = 0;
        memset(&r, 0, sizeof r);
        r.i8 = (int8_t)test_rand();
        r.i16 = (int16_t)test_rand();
        r.i32 = (int32_t)test_rand();
        r.i64 = random_i64();
        r.u8 = (uint8_t)test_rand();
        r.u16 = (uint16_t)test_rand();
        r.u32 = (uint32_t)test_rand();
        r.u64 = random_u64();
        r.b = rnd(2);
        r.bi = (int)rnd(3);
        r.f = (float)((double)(int32_t)test_rand() / 64.0);
        r.d = random_double();
        r.ts = random_i64();
        for (int k = 0; k < 16; k++) {
            r.id[k] = (uint8_t)test_rand();
            r.id2[k] = (uint8_t)test_rand();
        }
        r.name = rnd(5) ? names[rnd(4)] : NULL;
        size_t code_len = rnd(9);
        memset(r.code, 0, sizeof r.code);
        for (size_t k = 0; k < code_len; k++)
            r.code[k] = (char)('A' + rnd(26));
        size_t n = rnd(4);
        r.note = notes[n];
        r.note_len = note_lens[n];
        r.blob_len = rnd(9);
        for (size_t k = 0; k < r.blob_len; k++)
            blob[k] = (uint8_t)(rnd(2) ? 0 : test_rand());
        r.blob = rnd(5) ? (const void *)blob : NULL;
        if (!r.blob)
            r.blob_len = 0;
        r.tag_len = rnd(7);
        for (size_t k = 0; k < 6; k++)
            r.tag[k] = k < r.tag_len ? (uint8_t)test_rand() : 0;
        for (size_t k = 0; k < 4; k++)
            r.fixed[k] = (uint8_t)test_rand();
        r.label_len = rnd(6);
        memset(r.label, 0, sizeof r.label);
        for (size_t k = 0; k < r.label_len; k++)
            r.label[k] = rnd(4) ? (char)('a' + rnd(26)) : '\0';

        CHECK_OK(
            sop_key_pack(key, sizeof key, &key_len, rec_members, REC_MEMBERS, REC_MEMBERS, &r));
        memset(&out, 0xA5, sizeof out);
        CHECK_OK(sop_key_unpack(&out, &fields, storage, key_len, rec_members, REC_MEMBERS,
                                &(sop_val){key, key_len}));
        CHECK_EQ_U64(fields, REC_MEMBERS);
        CHECK(rec_equal(&r, &out));
        /* Ascending, NUL-free PTRLEN strings point into the key itself. */
        if (out.note_len && !memchr(out.note, 0, out.note_len)) {
            CHECK((const uint8_t *)out.note >= key && (const uint8_t *)out.note < key + key_len);
            borrowed++;
        }
        /* A prefix packs to a byte prefix and unpacks only its members. */
        size_t k = rnd(REC_MEMBERS + 1), pk_len = 0;
        uint8_t pk[SOP_MAX_KEY_LEN];
        struct rec part;
        CHECK_OK(sop_key_pack(pk, sizeof pk, &pk_len, rec_members, REC_MEMBERS, k, &r));
        CHECK(pk_len <= key_len && !memcmp(pk, key, pk_len));
        memset(&part, 0, sizeof part);
        part.u64 = 12345;
        CHECK_OK(sop_key_unpack(&part, &fields, storage, sizeof storage, rec_members, REC_MEMBERS,
                                &(sop_val){pk, pk_len}));
        CHECK_EQ_U64(fields, k);
        if (k <= 7)
            CHECK(part.u64 == 12345); /* untouched */
        packs++;
    }
    printf("    %zu structs, %zu borrowed strings\n", packs, borrowed);
    CHECK(borrowed > 0);

    /* The spec from the members matches the packed keys. */
    sop_keyspec *spec = NULL;
    struct rec r;
    uint8_t key[SOP_MAX_KEY_LEN];
    size_t key_len;
    memset(&r, 0, sizeof r);
    r.note = "";
    CHECK_OK(sop_keyspec_from_members(&spec, rec_members, REC_MEMBERS));
    CHECK_EQ_U64(sop_keyspec_field_count(spec), REC_MEMBERS);
    CHECK_OK(sop_key_pack(key, sizeof key, &key_len, rec_members, REC_MEMBERS, REC_MEMBERS, &r));
    CHECK_OK(sop_keyspec_check_key(spec, &(sop_val){key, key_len}, 0));
    sop_keyspec_field f;
    CHECK_OK(sop_keyspec_field_get(&f, spec, 18));
    CHECK(!strcmp(f.name, "blob") && f.flags == (SOP_KEY_DESC | SOP_KEY_NULLABLE));
    sop_keyspec_free(spec);
}

TEST(test_keys__struct_errors)
{
    struct small {
        int8_t x;
        const char *s;
        char arr[3];
        uint8_t raw[2];
        const void *p;
        size_t p_len;
        float f;
    } o;
    const sop_key_member m_x = SOP_KEY_MEMBER(struct small, x, SOP_KEY_INT64, 0);
    const sop_key_member m_s = SOP_KEY_MEMBER_STRPTR(struct small, s, 0);
    const sop_key_member m_arr = SOP_KEY_MEMBER_ARRAY(struct small, arr, SOP_KEY_STRING, 0);
    const sop_key_member m_raw = SOP_KEY_MEMBER_ARRAY(struct small, raw, SOP_KEY_BYTES, 0);
    const sop_key_member m_p = SOP_KEY_MEMBER_PTRLEN(struct small, p, p_len, SOP_KEY_BYTES, 0);
    const sop_key_member m_f = SOP_KEY_MEMBER(struct small, f, SOP_KEY_DOUBLE, 0);
    uint8_t key[64], storage[64];
    size_t len, fields;
    sop_tuple t;
    sop_val k;
    memset(&o, 0, sizeof o);

    /* Bad descriptions. */
    sop_key_member bad = m_x;
    bad.size = 3;
    CHECK_RC(SOP_INVAL, sop_key_pack(key, sizeof key, &len, &bad, 1, 1, &o));
    bad = m_x;
    bad.type = SOP_KEY_STRING;
    CHECK_RC(SOP_INVAL, sop_key_pack(key, sizeof key, &len, &bad, 1, 1, &o));
    bad = m_x;
    bad.flags = SOP_KEY_NULLABLE; /* only pointers can be null */
    CHECK_RC(SOP_INVAL, sop_key_pack(key, sizeof key, &len, &bad, 1, 1, &o));
    bad = m_x;
    bad.ctype = (sop_key_ctype)9;
    CHECK_RC(SOP_INVAL, sop_key_pack(key, sizeof key, &len, &bad, 1, 1, &o));
    CHECK_RC(SOP_INVAL, sop_key_pack(key, sizeof key, &len, &m_x, 1, 2, &o)); /* k > count */
    sop_keyspec *spec = (sop_keyspec *)1;
    CHECK_RC(SOP_INVAL, sop_keyspec_from_members(&spec, &bad, 1));
    CHECK(spec == NULL);

    /* NULL string without NULLABLE; buffer too small. */
    CHECK_RC(SOP_INVAL, sop_key_pack(key, sizeof key, &len, &m_s, 1, 1, &o));
    o.s = "hello";
    CHECK_RC(SOP_INVAL, sop_key_pack(key, 4, &len, &m_s, 1, 1, &o));
    CHECK_OK(sop_key_pack(key, sizeof key, &len, &m_s, 1, 1, &o));

    /* Unpack: storage too small for the STRPTR copy, then big enough. */
    memset(&o, 0, sizeof o);
    CHECK_RC(SOP_INVAL, sop_key_unpack(&o, &fields, storage, 5, &m_s, 1, &(sop_val){key, len}));
    CHECK_OK(sop_key_unpack(&o, &fields, storage, 6, &m_s, 1, &(sop_val){key, len}));
    CHECK(!strcmp(o.s, "hello") && o.s == (const char *)storage);

    /* Unpack mismatches. */
    sop_tuple_start(&t, key, sizeof key);
    sop_tuple_add_int64(&t, 200, 0); /* does not fit int8_t */
    CHECK_OK(sop_tuple_finish(&k, &t));
    CHECK_RC(SOP_INVAL, sop_key_unpack(&o, &fields, NULL, 0, &m_x, 1, &k));
    sop_tuple_reset(&t);
    sop_tuple_add_int64(&t, -128, SOP_KEY_DESC); /* fits, wrong direction */
    CHECK_OK(sop_tuple_finish(&k, &t));
    CHECK_RC(SOP_INVAL, sop_key_unpack(&o, &fields, NULL, 0, &m_x, 1, &k));
    sop_tuple_reset(&t);
    sop_tuple_add_int64(&t, -128, 0);
    sop_tuple_add_int64(&t, 1, 0); /* more fields than members */
    CHECK_OK(sop_tuple_finish(&k, &t));
    CHECK_RC(SOP_INVAL, sop_key_unpack(&o, &fields, NULL, 0, &m_x, 1, &k));
    CHECK_OK(sop_key_unpack(&o, &fields, NULL, 0, (sop_key_member[]){m_x, m_x}, 2, &k));
    CHECK(o.x == 1 && fields == 2);
    sop_tuple_reset(&t);
    sop_tuple_add_null(&t, 0); /* null into an int */
    CHECK_OK(sop_tuple_finish(&k, &t));
    CHECK_RC(SOP_INVAL, sop_key_unpack(&o, &fields, NULL, 0, &m_x, 1, &k));
    sop_tuple_reset(&t);
    sop_tuple_add_str(&t, "abcd", 4, 0); /* longer than char[3] */
    CHECK_OK(sop_tuple_finish(&k, &t));
    CHECK_RC(SOP_INVAL, sop_key_unpack(&o, &fields, NULL, 0, &m_arr, 1, &k));
    sop_tuple_reset(&t);
    sop_tuple_add_str(&t, "abc", 3, 0); /* exactly char[3], no NUL */
    CHECK_OK(sop_tuple_finish(&k, &t));
    CHECK_OK(sop_key_unpack(&o, &fields, NULL, 0, &m_arr, 1, &k));
    CHECK(!memcmp(o.arr, "abc", 3));
    CHECK_OK(sop_key_pack(storage, sizeof storage, &len, &m_arr, 1, 1, &o)); /* strnlen */
    CHECK(len == k.len && !memcmp(storage, k.data, len));
    sop_tuple_reset(&t);
    sop_tuple_add_str(&t, "a\0", 2, 0); /* NUL cannot live in a char array */
    CHECK_OK(sop_tuple_finish(&k, &t));
    CHECK_RC(SOP_INVAL, sop_key_unpack(&o, &fields, NULL, 0, &m_arr, 1, &k));
    CHECK_RC(SOP_INVAL, sop_key_unpack(&o, &fields, storage, sizeof storage, &m_s, 1, &k));
    sop_tuple_reset(&t);
    sop_tuple_add_bytes(&t, "abc", 3, 0); /* bytes arrays need the exact length */
    CHECK_OK(sop_tuple_finish(&k, &t));
    CHECK_RC(SOP_INVAL, sop_key_unpack(&o, &fields, NULL, 0, &m_raw, 1, &k));
    sop_tuple_reset(&t);
    sop_tuple_add_double(&t, 0.1, 0); /* not exact as a float */
    CHECK_OK(sop_tuple_finish(&k, &t));
    CHECK_RC(SOP_INVAL, sop_key_unpack(&o, &fields, NULL, 0, &m_f, 1, &k));
    sop_tuple_reset(&t);
    sop_tuple_add_double(&t, 0.5, 0);
    CHECK_OK(sop_tuple_finish(&k, &t));
    CHECK_OK(sop_key_unpack(&o, &fields, NULL, 0, &m_f, 1, &k));
    CHECK(o.f == 0.5f);
    /* PTRLEN: NULL with a length is refused; an empty value is not NULL. */
    o.p = NULL;
    o.p_len = 2;
    CHECK_RC(SOP_INVAL, sop_key_pack(key, sizeof key, &len, &m_p, 1, 1, &o));
    o.p_len = 0;
    CHECK_OK(sop_key_pack(key, sizeof key, &len, &m_p, 1, 1, &o));
    CHECK_OK(sop_key_unpack(&o, &fields, NULL, 0, &m_p, 1, &(sop_val){key, len}));
    CHECK(o.p != NULL && o.p_len == 0);
    CHECK_RC(SOP_CORRUPT, sop_key_unpack(&o, &fields, NULL, 0, &m_p, 1, &(sop_val){"\x60", 1}));
}

/* The example: employees by (region, dept, id desc); scan a region,
 * then a region and department, over a sorted array standing in for a store. */
struct employee {
    char region[8];
    const char *dept;
    int32_t id;
};

static const sop_key_member employee_key[] = {
    SOP_KEY_MEMBER_ARRAY(struct employee, region, SOP_KEY_STRING, SOP_KEY_ASC),
    SOP_KEY_MEMBER_STRPTR(struct employee, dept, SOP_KEY_ASC),
    SOP_KEY_MEMBER(struct employee, id, SOP_KEY_INT64, SOP_KEY_DESC),
};

typedef struct packed_key {
    uint8_t bytes[64];
    size_t len;
} packed_key;

static int cmp_packed(const void *a, const void *b)
{
    const packed_key *x = a, *y = b;
    return bytes_cmp(x->bytes, x->len, y->bytes, y->len);
}

TEST(test_keys__struct_prefix_scan_of_employees)
{
    static const char *const regions[] = {"EU", "US", "USA", "APAC"};
    static const char *const depts[] = {"Sales", "Eng", "Sales\x01", "Ops"};
    packed_key keys[96];
    size_t n = 0, us = 0, us_sales = 0;
    for (int r = 0; r < 4; r++)
        for (int d = 0; d < 4; d++)
            for (int id = 0; id < 6; id++) {
                struct employee e;
                memset(&e, 0, sizeof e);
                strcpy(e.region, regions[r]);
                e.dept = depts[d];
                e.id = id * 7 - 10;
                CHECK_OK(sop_key_pack(keys[n].bytes, sizeof keys[n].bytes, &keys[n].len,
                                      employee_key, 3, 3, &e));
                n++;
                us += r == 1;
                us_sales += r == 1 && d == 0;
            }
    qsort(keys, n, sizeof *keys, cmp_packed);

    struct employee probe = {"US", "Sales", 0};
    for (size_t depth = 1; depth <= 2; depth++) {
        uint8_t lo[64], hi[64];
        size_t lo_len, hi_len, found = 0;
        int32_t last_id = INT32_MAX;
        CHECK_OK(sop_key_pack(lo, sizeof lo, &lo_len, employee_key, 3, depth, &probe));
        CHECK_OK(sop_key_prefix_end(hi, sizeof hi, &hi_len, &(sop_val){lo, lo_len}));
        /* SEEK_GE lo, then NEXT while < hi. */
        size_t i = 0;
        while (i < n && bytes_cmp(keys[i].bytes, keys[i].len, lo, lo_len) < 0)
            i++;
        for (; i < n && bytes_cmp(keys[i].bytes, keys[i].len, hi, hi_len) < 0; i++) {
            struct employee e;
            uint8_t storage[64];
            CHECK_OK(sop_key_unpack(&e, NULL, storage, sizeof storage, employee_key, 3,
                                    &(sop_val){keys[i].bytes, keys[i].len}));
            CHECK(!strcmp(e.region, "US"));
            if (depth == 2) {
                CHECK(!strcmp(e.dept, "Sales"));
                CHECK(e.id < last_id); /* id descending within the department */
                last_id = e.id;
            }
            found++;
        }
        CHECK_EQ_U64(found, depth == 1 ? us : us_sales);
    }
}

/* ---- tests: allocation failures ------------------------------------------- */

static long alloc_countdown = -1, alloc_live;
static int alloc_failed;

static void *fail_malloc(size_t n, void *ctx)
{
    (void)ctx;
    if (alloc_countdown == 0) {
        alloc_failed = 1;
        return NULL;
    }
    if (alloc_countdown > 0)
        alloc_countdown--;
    alloc_live++;
    return malloc(n);
}

static void *fail_realloc(void *p, size_t n, void *ctx)
{
    (void)ctx;
    if (alloc_countdown == 0) {
        alloc_failed = 1;
        return NULL;
    }
    if (alloc_countdown > 0)
        alloc_countdown--;
    if (!p)
        alloc_live++;
    return realloc(p, n);
}

static void fail_free(void *p, void *ctx)
{
    (void)ctx;
    if (p)
        alloc_live--;
    free(p);
}

/* Everything in this module that allocates; SOP_OK or SOP_NOMEM only. */
static int scenario_allocating_calls(void)
{
    uint8_t spec_bytes[256];
    size_t spec_len;
    sop_keyspec *s = NULL, *d = NULL;
    char *text = NULL;
    sop_tuple t;
    sop_val k;
    int rc;
    sop_tuple_start(&t, NULL, 0);
    if ((rc = sop_keyspec_parse(&s, "(region string, id int64 desc)")) != SOP_OK)
        goto out;
    if ((rc = sop_keyspec_encode(spec_bytes, sizeof spec_bytes, &spec_len, s)) != SOP_OK)
        goto out;
    if ((rc = sop_keyspec_decode(&d, spec_bytes, spec_len)) != SOP_OK)
        goto out;
    if ((rc = sop_keyspec_format(&text, d)) != SOP_OK)
        goto out;
    sop_key_free(text);
    text = NULL;
    for (int i = 0; i < 40; i++) /* grow the heap buffer several times */
        sop_tuple_add_cstr(&t, "0123456789abcdef", 0);
    if ((rc = sop_tuple_finish(&k, &t)) != SOP_OK)
        goto out;
    sop_tuple_reset(&t);
    if ((rc = sop_key_parse(&t, d, "(\"US\", 42)")) != SOP_OK)
        goto out;
    if ((rc = sop_tuple_finish(&k, &t)) != SOP_OK)
        goto out;
    rc = sop_key_format_alloc(&text, d, &k, 0);
out:
    sop_key_free(text);
    sop_keyspec_free(s);
    sop_keyspec_free(d);
    sop_tuple_dispose(&t);
    return rc;
}

TEST(test_keys__every_allocation_failure_gives_nomem_and_no_leak)
{
    sop_allocator a = {fail_malloc, fail_realloc, fail_free, NULL};
    long n;
    sop_set_allocator(&a);
    for (n = 0;; n++) {
        alloc_countdown = n;
        alloc_live = 0;
        alloc_failed = 0;
        int rc = scenario_allocating_calls();
        int fired = alloc_failed;
        alloc_countdown = -1;
        if (!(rc == SOP_OK || (fired && rc == SOP_NOMEM)) || alloc_live != 0) {
            sop_set_allocator(NULL);
            FAIL_AT("failing allocation %ld: rc %d, %ld blocks leaked", n, rc, alloc_live);
            return;
        }
        if (!fired)
            break;
    }
    sop_set_allocator(NULL);
    printf("    %ld allocation sites failed in turn\n", n);
    CHECK(n > 5);
}

/* Every entry point refuses NULLs with SOP_INVAL (never a crash), and
 * NULL-safe destructors accept NULL. */
TEST(test_keys__api_misuse_returns_inval)
{
    uint8_t buf[64];
    sop_val k = {"\x05", 1}, out;
    size_t n;
    void *p;
    char *text;
    sop_keyspec *spec = NULL;
    sop_keyspec_field f;
    sop_key_value v = {.type = SOP_KEY_NULL};
    sop_tuple t;
    sop_key_iter it;
    struct {
        int64_t x;
    } obj;
    const sop_key_member m = {"x", SOP_KEY_INT64, 0, SOP_KEY_C_SCALAR, 0, 8, 0};

    CHECK_RC(SOP_INVAL, sop_tuple_add_null(NULL, 0));
    CHECK_RC(SOP_INVAL, sop_tuple_add_value(NULL, &v));
    sop_tuple_start(&t, buf, sizeof buf);
    CHECK_RC(SOP_INVAL, sop_tuple_add_value(&t, NULL));
    CHECK_RC(SOP_INVAL, sop_tuple_add_value(&t, NULL)); /* sticky */
    CHECK_RC(SOP_INVAL, sop_tuple_finish(NULL, &t));
    CHECK_RC(SOP_INVAL, sop_tuple_finish(&out, NULL));
    CHECK(out.data == NULL && out.len == 0);
    CHECK_RC(SOP_INVAL, sop_tuple_finish_alloc(NULL, &n, &t));
    CHECK_RC(SOP_INVAL, sop_tuple_finish_alloc(&p, &n, &t)); /* the sticky error */
    CHECK(p == NULL && n == 0);
    sop_tuple_start(NULL, buf, sizeof buf);
    sop_tuple_reset(NULL);
    sop_tuple_start(&t, buf, sizeof buf);
    CHECK_RC(SOP_INVAL, sop_tuple_add_struct(&t, NULL, 1, 1, &obj));
    sop_tuple_start(&t, buf, sizeof buf);
    CHECK_RC(SOP_INVAL, sop_tuple_add_struct(&t, &m, 1, 1, NULL));
    sop_tuple_start(&t, buf, sizeof buf);
    CHECK_OK(sop_tuple_add_bytes_prefix(&t, "\x00", 1, SOP_KEY_DESC));
    CHECK_OK(sop_tuple_finish(&out, &t));
    CHECK(out.len == 3 && buf[0] == 0x9F && buf[1] == 0xFF && buf[2] == 0x00);

    CHECK_RC(SOP_INVAL, sop_key_iter_init(NULL, &k));
    CHECK_RC(SOP_INVAL, sop_key_iter_next(&v, NULL));
    CHECK_OK(sop_key_iter_init(&it, &k));
    CHECK_OK(sop_key_iter_next(NULL, &it)); /* skipping a field is allowed */
    CHECK_RC(SOP_NOTFOUND, sop_key_iter_next(&v, &it));
    CHECK_RC(SOP_INVAL, sop_key_validate(&n, NULL));
    CHECK_RC(SOP_INVAL, sop_key_decode(&v, 1, NULL, NULL, 0, &k));
    CHECK_RC(SOP_INVAL, sop_key_decode(NULL, 1, &n, NULL, 0, &k));
    CHECK_RC(SOP_INVAL, sop_key_decode(&v, 1, &n, NULL, 0, NULL));
    CHECK_RC(SOP_INVAL, sop_key_prefix_end(buf, sizeof buf, &n, NULL));
    CHECK_RC(SOP_INVAL, sop_key_prefix_end(NULL, 4, &n, &k));

    CHECK_RC(SOP_INVAL, sop_keyspec_new(NULL));
    CHECK_RC(SOP_INVAL, sop_keyspec_field_get(NULL, spec, 0));
    CHECK_RC(SOP_INVAL, sop_keyspec_field_get(&f, NULL, 0));
    CHECK_EQ_U64(sop_keyspec_field_count(NULL), 0);
    CHECK_RC(SOP_INVAL, sop_keyspec_encode(buf, sizeof buf, NULL, spec));
    CHECK_RC(SOP_INVAL, sop_keyspec_encode(buf, sizeof buf, &n, NULL));
    CHECK_RC(SOP_INVAL, sop_keyspec_decode(NULL, buf, 4));
    CHECK_RC(SOP_INVAL, sop_keyspec_decode(&spec, NULL, 4));
    CHECK_RC(SOP_CORRUPT, sop_keyspec_decode(&spec, NULL, 0));
    CHECK(spec == NULL);
    CHECK_RC(SOP_CORRUPT, sop_keys__spec_check(NULL, 0));
    CHECK_RC(SOP_CORRUPT, sop_keys__key_check(NULL, 0, "\x05", 1, 0));
    static uint8_t big[SOP_KEYSPEC_MAX_LEN + 1];
    CHECK_RC(SOP_CORRUPT, sop_keyspec_decode(&spec, big, sizeof big));
    CHECK_RC(SOP_INVAL, sop_keyspec_check_key(NULL, &k, 0));
    CHECK_RC(SOP_INVAL, sop_keyspec_format(NULL, spec));
    CHECK_RC(SOP_INVAL, sop_keyspec_format(&text, NULL));
    CHECK_RC(SOP_INVAL, sop_keyspec_parse(NULL, "(a bool)"));
    CHECK_RC(SOP_INVAL, sop_keyspec_parse(&spec, NULL));
    CHECK_RC(SOP_INVAL, sop_keyspec_from_members(NULL, &m, 1));
    CHECK_RC(SOP_INVAL, sop_keyspec_from_members(&spec, NULL, 1));
    sop_key_member unnamed = m;
    unnamed.name = NULL;
    CHECK_RC(SOP_INVAL, sop_keyspec_from_members(&spec, &unnamed, 1));

    CHECK_RC(SOP_INVAL, sop_key_format((char *)buf, sizeof buf, NULL, NULL, &k, 0));
    CHECK_RC(SOP_INVAL, sop_key_format((char *)buf, sizeof buf, &n, NULL, NULL, 0));
    CHECK_RC(SOP_INVAL, sop_key_format_alloc(NULL, NULL, &k, 0));
    CHECK_RC(SOP_INVAL, sop_key_format_alloc(&text, NULL, NULL, 0));
    CHECK_RC(SOP_INVAL, sop_key_parse(NULL, NULL, "()"));
    sop_tuple_start(&t, buf, sizeof buf);
    CHECK_RC(SOP_INVAL, sop_key_parse(&t, NULL, NULL));

    CHECK_RC(SOP_INVAL, sop_key_pack(NULL, 8, &n, &m, 1, 1, &obj));
    CHECK_RC(SOP_INVAL, sop_key_pack(buf, sizeof buf, NULL, &m, 1, 1, &obj));
    CHECK_RC(SOP_INVAL, sop_key_unpack(NULL, &n, NULL, 0, &m, 1, &k));
    CHECK_RC(SOP_INVAL, sop_key_unpack(&obj, &n, NULL, 4, &m, 1, &k));
    CHECK_RC(SOP_INVAL, sop_key_unpack(&obj, &n, NULL, 0, NULL, 1, &k));
    CHECK_RC(SOP_INVAL, sop_key_unpack(&obj, &n, NULL, 0, &m, 1, NULL));
    sop_keyspec_free(NULL);
    sop_key_free(NULL);
}

/* Unpack range and shape checks for every member kind. */
TEST(test_keys__unpack_checks_ranges_and_shapes)
{
    struct s {
        uint8_t u8;
        int16_t i16;
        float f;
        uint8_t al[2];
        size_t al_len;
        int64_t i64;
    } o;
    const sop_key_member m_u8 = SOP_KEY_MEMBER(struct s, u8, SOP_KEY_UINT64, 0);
    const sop_key_member m_i16 = SOP_KEY_MEMBER(struct s, i16, SOP_KEY_INT64, 0);
    const sop_key_member m_f = SOP_KEY_MEMBER(struct s, f, SOP_KEY_DOUBLE, 0);
    const sop_key_member m_al = SOP_KEY_MEMBER_ARRAYLEN(struct s, al, al_len, SOP_KEY_BYTES, 0);
    const sop_key_member m_i64 = SOP_KEY_MEMBER(struct s, i64, SOP_KEY_INT64, 0);
    uint8_t buf[64];
    sop_tuple t;
    sop_val k;
    size_t n;
    memset(&o, 0, sizeof o);
#define ONE(add, member, want_rc)                                                                  \
    do {                                                                                           \
        sop_tuple_start(&t, buf, sizeof buf);                                                      \
        add;                                                                                       \
        CHECK_OK(sop_tuple_finish(&k, &t));                                                        \
        CHECK_RC(want_rc, sop_key_unpack(&o, &n, NULL, 0, &(member), 1, &k));                      \
    } while (0)
    ONE(sop_tuple_add_uint64(&t, 255, 0), m_u8, SOP_OK);
    CHECK(o.u8 == 255);
    ONE(sop_tuple_add_uint64(&t, 256, 0), m_u8, SOP_INVAL);
    ONE(sop_tuple_add_int64(&t, -32768, 0), m_i16, SOP_OK);
    CHECK(o.i16 == -32768);
    ONE(sop_tuple_add_int64(&t, 32768, 0), m_i16, SOP_INVAL);
    ONE(sop_tuple_add_int64(&t, -32769, 0), m_i16, SOP_INVAL);
    ONE(sop_tuple_add_int64(&t, INT64_MIN, 0), m_i64, SOP_OK);
    CHECK(o.i64 == INT64_MIN);
    ONE(sop_tuple_add_uint64(&t, 1, 0), m_i64, SOP_INVAL); /* type differs */
    ONE(sop_tuple_add_double(&t, -NAN, 0), m_f, SOP_OK);
    CHECK(isnan(o.f) && signbit(o.f));
    ONE(sop_tuple_add_double(&t, 1e300, 0), m_f, SOP_INVAL);
    ONE(sop_tuple_add_bytes(&t, "ab", 2, 0), m_al, SOP_OK);
    CHECK(o.al_len == 2 && o.al[1] == 'b');
    ONE(sop_tuple_add_bytes(&t, "abc", 3, 0), m_al, SOP_INVAL);
#undef ONE
    o.al_len = 3; /* length member beyond the array */
    CHECK_RC(SOP_INVAL, sop_key_pack(buf, sizeof buf, &n, &m_al, 1, 1, &o));
}

TEST(test_keys__type_names)
{
    CHECK(!strcmp(sop_key_type_name(SOP_KEY_TIMESTAMP), "timestamp"));
    CHECK(!strcmp(sop_key_type_name(SOP_KEY_NULL), "null"));
    CHECK(!strcmp(sop_key_type_name((sop_key_type)99), "?"));
}

TEST_MAIN(T(test_keys__encoding_bytes_match_the_format_table),
          T(test_keys__property_schema_tuples_order_roundtrip_and_prefix_ranges),
          T(test_keys__property_heterogeneous_tuples_order_and_roundtrip),
          T(test_keys__double_total_order_and_nan_canonicalisation),
          T(test_keys__decoder_rejects_every_truncation), T(test_keys__decoder_rejects_garbage),
          T(test_keys__decoder_rejects_malformed_fields),
          T(test_keys__decode_all_reports_small_arrays_and_scratch),
          T(test_keys__builder_errors_are_sticky_and_checked),
          T(test_keys__string_prefix_field_bounds_a_range), T(test_keys__prefix_end_edge_cases),
          T(test_keys__spec_encode_decode_round_trip),
          T(test_keys__spec_builder_rejects_bad_fields),
          T(test_keys__spec_rejects_truncations_and_byte_flips),
          T(test_keys__spec_with_valid_checksum_rejects_malformed_bodies),
          T(test_keys__keys_checked_against_a_spec), T(test_keys__spec_text_round_trip),
          T(test_keys__text_render_examples), T(test_keys__timestamp_text_is_utc_iso8601),
          T(test_keys__text_parse_accepts_plain_forms_and_rejects_errors),
          T(test_keys__struct_pack_unpack_round_trip), T(test_keys__struct_errors),
          T(test_keys__struct_prefix_scan_of_employees),
          T(test_keys__every_allocation_failure_gives_nomem_and_no_leak),
          T(test_keys__api_misuse_returns_inval), T(test_keys__unpack_checks_ranges_and_shapes),
          T(test_keys__type_names))
