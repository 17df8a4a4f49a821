/*
 * fuzz_keys.c - libFuzzer target for every decoder of the typed-key module
 * (src/keys.c): key bytes, spec bytes, key text, spec text, struct unpack.
 *
 * The first input byte picks the decoder; the rest is its input:
 *   0  key bytes              sop_key_validate / iterator / sop_key_decode
 *   1  spec bytes             sop_keyspec_decode (mostly fails the CRC)
 *   2  spec body, CRC forged  "SOPK" + input + a correct CRC-32C, so the
 *                             structural checks behind the CRC are reached
 *   3  key text, no spec      sop_key_parse
 *   4  key text, fixed spec   sop_key_parse with FUZZ_SPEC
 *   5  spec text              sop_keyspec_parse
 *   6  key bytes vs FUZZ_SPEC sop_keyspec_check_key, sop_keys__key_check
 *   7  key bytes -> struct    sop_key_unpack
 *
 * Properties (abort() on violation, so libFuzzer reports it):
 *   - no crash, no read outside the input (ASan), no UB (UBSan);
 *   - rejected input gives SOP_CORRUPT or SOP_INVAL (SOP_VERSION for a
 *     newer spec), never anything else;
 *   - accepted input round-trips exactly: bytes -> values -> the same bytes,
 *     spec -> bytes -> the same spec bytes, text -> key -> text -> the same
 *     key, key -> struct -> the same key; the no-allocation checks
 *     (sop_key_validate, sop_keys__spec_check, sop_keys__key_check) agree
 *     with the decoders.
 *
 * Build and run: fuzz/fuzz.mk (make fuzz-keys-smoke). Without libFuzzer,
 * fuzz/standalone.c replays files through the same entry point.
 */
#include "keys.h"
#include "sop_keys.h"
#include "util.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int fuzz_write_seeds(const char *dir);

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_keys: %s:%d: CHECK(%s) failed [%s]\n", __FILE__, __LINE__,       \
                    #cond, sop_errmsg());                                                          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define FUZZ_SPEC                                                                                  \
    "(region string, dept string nullable, id int64 desc, score double, at timestamp desc, "       \
    "raw bytes, tag uuid nullable, ok bool, n uint64 desc)"

static const sop_keyspec *fuzz_spec(void)
{
    static sop_keyspec *spec; /* built once; the harness runs one input at a time */
    if (!spec)
        FUZZ_CHECK(sop_keyspec_parse(&spec, FUZZ_SPEC) == SOP_OK);
    return spec;
}

static int same_bytes(const void *a, size_t a_len, const void *b, size_t b_len)
{
    return a_len == b_len && (a_len == 0 || memcmp(a, b, a_len) == 0);
}

static int is_error(int rc)
{
    return rc == SOP_CORRUPT || rc == SOP_INVAL;
}

/* key -> text -> key, with or without a spec. */
static void check_text_roundtrip(const sop_val *key, const sop_keyspec *spec, unsigned flags)
{
    char *text = NULL;
    sop_tuple t;
    sop_val again;
    FUZZ_CHECK(sop_key_format_alloc(&text, spec, key, flags) == SOP_OK);
    sop_tuple_start(&t, NULL, 0);
    FUZZ_CHECK(sop_key_parse(&t, (flags & SOP_KEY_FORMAT_TYPED) ? NULL : spec, text) == SOP_OK);
    FUZZ_CHECK(sop_tuple_finish(&again, &t) == SOP_OK);
    FUZZ_CHECK(same_bytes(again.data, again.len, key->data, key->len));
    sop_tuple_dispose(&t);
    sop_key_free(text);
}

/* Mode 0: arbitrary key bytes. */
static void fuzz_key_bytes(const uint8_t *p, size_t len)
{
    sop_val key = {p, len};
    size_t field_count = 0;
    int rc = sop_key_validate(&field_count, &key);
    FUZZ_CHECK(rc == SOP_OK || rc == SOP_CORRUPT);

    sop_key_iter it;
    sop_key_value v;
    int irc = sop_key_iter_init(&it, &key);
    if (len > SOP_MAX_KEY_LEN) {
        FUZZ_CHECK(irc == SOP_INVAL);
        return;
    }
    FUZZ_CHECK(irc == SOP_OK);
    size_t n = 0;
    uint8_t buf[SOP_MAX_KEY_LEN];
    sop_tuple t;
    sop_tuple_start(&t, buf, sizeof buf);
    while ((irc = sop_key_iter_next(&v, &it)) == SOP_OK) {
        FUZZ_CHECK(sop_tuple_add_value(&t, &v) == SOP_OK);
        n++;
    }
    FUZZ_CHECK(irc == SOP_NOTFOUND || irc == SOP_CORRUPT);
    FUZZ_CHECK((rc == SOP_OK) == (irc == SOP_NOTFOUND)); /* validate agrees */
    if (rc != SOP_OK)
        return;
    FUZZ_CHECK(n == field_count);
    sop_val again;
    FUZZ_CHECK(sop_tuple_finish(&again, &t) == SOP_OK);
    FUZZ_CHECK(same_bytes(again.data, again.len, p, len)); /* canonical (K2) */

    static sop_key_value values[SOP_MAX_KEY_LEN];
    static uint8_t scratch[SOP_MAX_KEY_LEN];
    size_t count = 0;
    FUZZ_CHECK(sop_key_decode(values, SOP_MAX_KEY_LEN, &count, scratch, len, &key) == SOP_OK);
    FUZZ_CHECK(count == field_count);
    check_text_roundtrip(&key, NULL, 0);

    uint8_t hi[SOP_MAX_KEY_LEN];
    size_t hi_len = 0;
    rc = sop_key_prefix_end(hi, sizeof hi, &hi_len, &key);
    FUZZ_CHECK(len == 0 ? rc == SOP_NOTFOUND : rc == SOP_OK); /* first byte is never 0xFF */
    if (rc == SOP_OK)
        FUZZ_CHECK(hi_len <= len && memcmp(hi, p, hi_len - 1) == 0 &&
                   hi[hi_len - 1] > p[hi_len - 1]);
}

/* Modes 1 and 2: spec bytes. */
static void fuzz_spec_bytes(const uint8_t *p, size_t len)
{
    sop_keyspec *spec = NULL, *again = NULL;
    int rc = sop_keyspec_decode(&spec, p, len);
    FUZZ_CHECK(rc == SOP_OK || rc == SOP_CORRUPT || rc == SOP_VERSION);
    FUZZ_CHECK(sop_keys__spec_check(p, len) == rc);
    if (rc != SOP_OK) {
        FUZZ_CHECK(spec == NULL);
        return;
    }
    uint8_t buf[SOP_KEYSPEC_MAX_LEN];
    size_t out_len = 0;
    FUZZ_CHECK(sop_keyspec_encode(buf, sizeof buf, &out_len, spec) == SOP_OK);
    FUZZ_CHECK(same_bytes(buf, out_len, p, len)); /* canonical */
    char *text = NULL;
    FUZZ_CHECK(sop_keyspec_format(&text, spec) == SOP_OK);
    FUZZ_CHECK(sop_keyspec_parse(&again, text) == SOP_OK);
    FUZZ_CHECK(sop_keyspec_equal(spec, again));
    sop_key_free(text);
    sop_keyspec_free(again);
    sop_keyspec_free(spec);
}

static void fuzz_spec_forged(const uint8_t *p, size_t len)
{
    static uint8_t buf[SOP_KEYSPEC_MAX_LEN + 16];
    if (len > SOP_KEYSPEC_MAX_LEN)
        len = SOP_KEYSPEC_MAX_LEN;
    memcpy(buf, SOP_KEYSPEC_MAGIC, 4);
    memcpy(buf + 4, p, len);
    sop_put_le32(buf + 4 + len, sop_crc32c(0, buf, 4 + len));
    fuzz_spec_bytes(buf, 4 + len + 4);
}

/* Modes 3 and 4: key text. */
static void fuzz_key_text(const char *text, const sop_keyspec *spec)
{
    sop_tuple t;
    sop_val key;
    sop_tuple_start(&t, NULL, 0);
    int rc = sop_key_parse(&t, spec, text);
    FUZZ_CHECK(rc == SOP_OK || rc == SOP_INVAL);
    FUZZ_CHECK(sop_tuple_finish(&key, &t) == rc);
    if (rc == SOP_OK) {
        size_t field_count;
        FUZZ_CHECK(sop_key_validate(&field_count, &key) == SOP_OK);
        if (spec) {
            FUZZ_CHECK(sop_keyspec_check_key(spec, &key, SOP_KEY_CHECK_PREFIX) == SOP_OK);
            check_text_roundtrip(&key, spec, 0);
            check_text_roundtrip(&key, spec, SOP_KEY_FORMAT_NAMES);
        }
        check_text_roundtrip(&key, spec, SOP_KEY_FORMAT_TYPED);
        if (!spec)
            check_text_roundtrip(&key, NULL, 0);
    }
    sop_tuple_dispose(&t);
}

/* Mode 5: spec text. */
static void fuzz_spec_text(const char *text)
{
    sop_keyspec *spec = NULL, *again = NULL;
    int rc = sop_keyspec_parse(&spec, text);
    FUZZ_CHECK(rc == SOP_OK || rc == SOP_INVAL);
    if (rc != SOP_OK) {
        FUZZ_CHECK(spec == NULL);
        return;
    }
    uint8_t buf[SOP_KEYSPEC_MAX_LEN];
    size_t len;
    char *out = NULL;
    FUZZ_CHECK(sop_keyspec_encode(buf, sizeof buf, &len, spec) == SOP_OK);
    FUZZ_CHECK(sop_keyspec_decode(&again, buf, len) == SOP_OK);
    FUZZ_CHECK(sop_keyspec_equal(spec, again));
    sop_keyspec_free(again);
    FUZZ_CHECK(sop_keyspec_format(&out, spec) == SOP_OK);
    FUZZ_CHECK(sop_keyspec_parse(&again, out) == SOP_OK);
    FUZZ_CHECK(sop_keyspec_equal(spec, again));
    sop_keyspec_free(again);
    sop_key_free(out);
    sop_keyspec_free(spec);
}

/* Mode 6: key bytes against a spec. */
static void fuzz_key_vs_spec(const uint8_t *p, size_t len)
{
    static uint8_t spec_bytes[SOP_KEYSPEC_MAX_LEN];
    static size_t spec_len;
    const sop_keyspec *spec = fuzz_spec();
    sop_val key = {p, len};
    if (!spec_len)
        FUZZ_CHECK(sop_keyspec_encode(spec_bytes, sizeof spec_bytes, &spec_len, spec) == SOP_OK);
    for (unsigned flags = 0; flags <= SOP_KEY_CHECK_PREFIX; flags++) {
        int rc = sop_keyspec_check_key(spec, &key, flags);
        FUZZ_CHECK(rc == SOP_OK || is_error(rc));
        FUZZ_CHECK(sop_keys__key_check(spec_bytes, spec_len, p, len, flags) == rc);
        if (rc == SOP_OK && flags == SOP_KEY_CHECK_PREFIX && len <= SOP_MAX_KEY_LEN) {
            check_text_roundtrip(&key, spec, 0);
            check_text_roundtrip(&key, spec, SOP_KEY_FORMAT_NAMES);
        }
    }
}

/* Mode 7: key bytes into a struct and back. */
struct fuzz_rec {
    int16_t a;
    uint32_t b;
    double c;
    float f;
    bool d;
    int64_t ts;
    uint8_t id[16];
    const char *s;
    char arr[6];
    const void *p;
    size_t p_len;
    char al[5];
    size_t al_len;
};

static const sop_key_member fuzz_members[] = {
    SOP_KEY_MEMBER(struct fuzz_rec, a, SOP_KEY_INT64, SOP_KEY_ASC),
    SOP_KEY_MEMBER(struct fuzz_rec, b, SOP_KEY_UINT64, SOP_KEY_DESC),
    SOP_KEY_MEMBER(struct fuzz_rec, c, SOP_KEY_DOUBLE, SOP_KEY_ASC),
    SOP_KEY_MEMBER(struct fuzz_rec, f, SOP_KEY_DOUBLE, SOP_KEY_DESC),
    SOP_KEY_MEMBER(struct fuzz_rec, d, SOP_KEY_BOOL, SOP_KEY_ASC),
    SOP_KEY_MEMBER(struct fuzz_rec, ts, SOP_KEY_TIMESTAMP, SOP_KEY_DESC),
    SOP_KEY_MEMBER(struct fuzz_rec, id, SOP_KEY_UUID, SOP_KEY_ASC),
    SOP_KEY_MEMBER_STRPTR(struct fuzz_rec, s, SOP_KEY_NULLABLE),
    SOP_KEY_MEMBER_ARRAY(struct fuzz_rec, arr, SOP_KEY_STRING, SOP_KEY_DESC),
    SOP_KEY_MEMBER_PTRLEN(struct fuzz_rec, p, p_len, SOP_KEY_BYTES,
                          SOP_KEY_DESC | SOP_KEY_NULLABLE),
    SOP_KEY_MEMBER_ARRAYLEN(struct fuzz_rec, al, al_len, SOP_KEY_STRING, SOP_KEY_ASC),
};
#define FUZZ_MEMBERS (sizeof fuzz_members / sizeof *fuzz_members)

static void fuzz_unpack(const uint8_t *p, size_t len)
{
    static uint8_t storage[SOP_MAX_KEY_LEN], again[SOP_MAX_KEY_LEN];
    struct fuzz_rec r;
    size_t fields = 0, again_len = 0;
    memset(&r, 0, sizeof r);
    int rc = sop_key_unpack(&r, &fields, storage, len < sizeof storage ? len : sizeof storage,
                            fuzz_members, FUZZ_MEMBERS, &(sop_val){p, len});
    FUZZ_CHECK(rc == SOP_OK || is_error(rc));
    if (rc != SOP_OK)
        return;
    FUZZ_CHECK(sop_key_pack(again, sizeof again, &again_len, fuzz_members, FUZZ_MEMBERS, fields,
                            &r) == SOP_OK);
    FUZZ_CHECK(same_bytes(again, again_len, p, len));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char text[SOP_MAX_KEY_LEN * 2 + 1];
    if (size == 0)
        return 0;
    uint8_t mode = data[0] & 7;
    const uint8_t *p = data + 1;
    size_t len = size - 1;
    size_t text_len = len < sizeof text - 1 ? len : sizeof text - 1;
    switch (mode) {
    case 0:
        fuzz_key_bytes(p, len);
        break;
    case 1:
        fuzz_spec_bytes(p, len);
        break;
    case 2:
        fuzz_spec_forged(p, len);
        break;
    case 3:
    case 4:
    case 5:
        memcpy(text, p, text_len);
        text[text_len] = '\0'; /* the text APIs take NUL-terminated strings */
        if (mode == 5)
            fuzz_spec_text(text);
        else
            fuzz_key_text(text, mode == 4 ? fuzz_spec() : NULL);
        break;
    case 6:
        fuzz_key_vs_spec(p, len);
        break;
    default:
        fuzz_unpack(p, len);
        break;
    }
    return 0;
}

/* ---- seed corpus (written by fuzz/standalone.c --write-seeds DIR) --------- */

static int seed_count;

static int write_seed(const char *dir, uint8_t mode, const void *p, size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/seed-%03d-mode%u", dir, seed_count++, mode);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = fputc(mode, f) != EOF && fwrite(p, 1, len, f) == len;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

int fuzz_write_seeds(const char *dir)
{
    static const char *const key_texts[] = {
        "(\"US\", \"Sales\", desc(42))",
        "()",
        "(null, true, false, -1, 0, 1, 255, -256, 9223372036854775807, -9223372036854775808)",
        "(18446744073709551615u, 0u, desc(7u))",
        "(1.5, -0.0, 0.0, inf, -inf, nan, -nan, 1e-310, 1.7976931348623157e+308)",
        ("(ts\"1970-01-01T00:00:00Z\", desc(ts\"2262-04-11T23:47:16.854775807Z\"), "
         "ts\"1677-09-21T00:12:43.145224192Z\")"),
        "(\"a\\\"b\\\\c\\n\\x01\\x00\xc3\xa9\", desc(\"\"), x\"00ff01\", desc(x\"\"))",
        ("(uuid\"123e4567-e89b-12d3-a456-426614174000\", desc(uuid\"ffffffff-ffff-ffff-ffff-"
         "ffffffffffff\"))"),
    };
    static const char *const spec_key_texts[] = {
        ("(\"US\", \"Sales\", 42, 1.5, ts\"2024-02-29T12:00:00Z\", x\"00\", "
         "\"123e4567e89b12d3a456426614174000\", true, 7)"),
        "(region=\"EU\", dept=null, id=-5)",
        "(\"\", \"\", 0, nan, 0, \"raw\", null, false, 18446744073709551615)",
    };
    static const char *const spec_texts[] = {
        FUZZ_SPEC,
        "(a bool)",
        "x uuid nullable desc, y bytes asc, _z timestamp",
    };
    uint8_t buf[SOP_MAX_KEY_LEN];
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return -1;
    seed_count = 0;
    for (size_t i = 0; i < sizeof key_texts / sizeof *key_texts; i++) {
        sop_tuple t;
        sop_val key;
        sop_tuple_start(&t, buf, sizeof buf);
        if (sop_key_parse(&t, NULL, key_texts[i]) != SOP_OK || sop_tuple_finish(&key, &t) != SOP_OK)
            return -1;
        if (write_seed(dir, 0, key.data, key.len) || write_seed(dir, 7, key.data, key.len) ||
            write_seed(dir, 3, key_texts[i], strlen(key_texts[i])))
            return -1;
    }
    for (size_t i = 0; i < sizeof spec_key_texts / sizeof *spec_key_texts; i++) {
        sop_tuple t;
        sop_val key;
        sop_tuple_start(&t, buf, sizeof buf);
        if (sop_key_parse(&t, fuzz_spec(), spec_key_texts[i]) != SOP_OK ||
            sop_tuple_finish(&key, &t) != SOP_OK)
            return -1;
        if (write_seed(dir, 6, key.data, key.len) || write_seed(dir, 0, key.data, key.len) ||
            write_seed(dir, 4, spec_key_texts[i], strlen(spec_key_texts[i])))
            return -1;
    }
    for (size_t i = 0; i < sizeof spec_texts / sizeof *spec_texts; i++) {
        sop_keyspec *spec = NULL;
        size_t len;
        if (sop_keyspec_parse(&spec, spec_texts[i]) != SOP_OK ||
            sop_keyspec_encode(buf, sizeof buf, &len, spec) != SOP_OK) {
            sop_keyspec_free(spec);
            return -1;
        }
        sop_keyspec_free(spec);
        /* mode 2 takes the body without magic and CRC */
        if (write_seed(dir, 1, buf, len) || write_seed(dir, 2, buf + 4, len - 8) ||
            write_seed(dir, 5, spec_texts[i], strlen(spec_texts[i])))
            return -1;
    }
    /* A struct-shaped key for mode 7. */
    struct fuzz_rec r;
    size_t len;
    static const uint8_t blob[3] = {0, 0xff, 1};
    memset(&r, 0, sizeof r);
    r.a = -300;
    r.b = 4000000000u;
    r.c = -2.5;
    r.f = 0.25f;
    r.d = true;
    r.ts = -1;
    r.id[15] = 1;
    r.s = "name";
    memcpy(r.arr, "ABCDEF", 6);
    r.p = blob;
    r.p_len = sizeof blob;
    memcpy(r.al, "x\0y", 3);
    r.al_len = 3;
    if (sop_key_pack(buf, sizeof buf, &len, fuzz_members, FUZZ_MEMBERS, FUZZ_MEMBERS, &r) ||
        write_seed(dir, 7, buf, len))
        return -1;
    r.s = NULL;
    r.p = NULL;
    r.p_len = 0;
    if (sop_key_pack(buf, sizeof buf, &len, fuzz_members, FUZZ_MEMBERS, FUZZ_MEMBERS, &r) ||
        write_seed(dir, 7, buf, len))
        return -1;
    printf("fuzz_keys: wrote %d seeds to %s\n", seed_count, dir);
    return 0;
}
