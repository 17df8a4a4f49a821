/*
 * keys.c - typed compound keys: the order-preserving tuple encoding, index
 * specifications, key text, and structs as keys.
 *
 * A key is a tuple of typed fields encoded so that memcmp order is tuple
 * order (shorter first on a common prefix). The engine knows nothing of
 * types; everything typed lives here. The byte formats are the tables in
 * keys.h (tuple encoding, spec format); the order of values is stated at
 * the top of include/sop_keys.h.
 *
 * Invariants this file keeps (numbers cited below):
 *   (E1) Every field encoding is self-delimiting and prefix-free, so the
 *        first differing byte of two keys lies inside the first differing
 *        field of both; memcmp order is then that field's order (K1) and a
 *        tuple prefix is a byte prefix (K3).
 *   (E2) Canonical: the encoder has one output per value (NaN payloads and
 *        integer widths normalised) and the decoder rejects every other byte
 *        string, so enc(dec(k)) == k for every accepted k (K2).
 *   (E3) Bounds: each decoder compares a remaining length with what it is
 *        about to read before reading it; nothing trusts a length field.
 *   (E4) The builder never writes past min(cap, SOP_MAX_KEY_LEN) and keeps
 *        its first error: a failed add appends nothing.
 *
 * Sections: helpers | building | decoding | reference order | specs |
 * key text | spec text | structs.
 * Not here: storing the spec with a store and checking it at open (api.c).
 */
#include "keys.h"
#include "util.h"

#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* ======================================================================== */
/* Helpers                                                                   */
/* ======================================================================== */

#define TUPLE_HEAP 0x1u /* t->buf is ours (sop_malloc) */
#define TUPLE_OPEN 0x2u /* a *_prefix field was added: nothing may follow */

#define DBL_SIGN     0x8000000000000000ull
#define DBL_EXP      0x7FF0000000000000ull
#define DBL_MANT     0x000FFFFFFFFFFFFFull
#define DBL_QNAN     0x7FF8000000000000ull
#define NS_PER_SEC   1000000000ll
#define SECS_PER_DAY 86400ll

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t get_be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

static void invert(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)~p[i];
}

/* Bytes needed for m > 0 (1..8). */
static size_t be_width(uint64_t m)
{
    return (size_t)(64 - __builtin_clzll(m) + 7) / 8;
}

/* The bits a double is stored with: NaN payloads dropped (E2), sign kept. */
static uint64_t dbl_canon_bits(double d)
{
    uint64_t b;
    memcpy(&b, &d, 8);
    if ((b & DBL_EXP) == DBL_EXP && (b & DBL_MANT) != 0)
        b = (b & DBL_SIGN) | DBL_QNAN;
    return b;
}

static double dbl_from_bits(uint64_t b)
{
    double d;
    memcpy(&d, &b, 8);
    return d;
}

/* ---- UTF-8 (RFC 3629: no overlongs, no surrogates, <= U+10FFFF) ---------- */

typedef struct utf8_state {
    uint8_t need;   /* continuation bytes still expected */
    uint8_t lo, hi; /* allowed range of the next continuation byte */
} utf8_state;

/* Feed one byte; 0 if the sequence is invalid. */
static int utf8_step(utf8_state *u, uint8_t c)
{
    if (u->need == 0) {
        if (c < 0x80)
            return 1;
        u->lo = 0x80;
        u->hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            u->need = 1;
        } else if (c == 0xE0) {
            u->need = 2;
            u->lo = 0xA0;
        } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
            u->need = 2;
        } else if (c == 0xED) {
            u->need = 2;
            u->hi = 0x9F; /* no surrogates */
        } else if (c == 0xF0) {
            u->need = 3;
            u->lo = 0x90;
        } else if (c >= 0xF1 && c <= 0xF3) {
            u->need = 3;
        } else if (c == 0xF4) {
            u->need = 3;
            u->hi = 0x8F; /* <= U+10FFFF */
        } else {
            return 0;
        }
        return 1;
    }
    if (c < u->lo || c > u->hi)
        return 0;
    u->need--;
    u->lo = 0x80;
    u->hi = 0xBF;
    return 1;
}

static int utf8_valid(const uint8_t *s, size_t len)
{
    utf8_state u = {0, 0x80, 0xBF};
    size_t i = 0;
    while (i < len) {
        if (u.need == 0 && i + 8 <= len) { /* ASCII fast path */
            uint64_t w;
            memcpy(&w, s + i, 8);
            if ((w & 0x8080808080808080ull) == 0) {
                i += 8;
                continue;
            }
        }
        if ((s[i] >= 0x80 || u.need) && !utf8_step(&u, s[i]))
            return 0;
        i++;
    }
    return u.need == 0;
}

/* First c in [p, end), or NULL. Short spans (most key fields) are scanned
 * inline: a libc call costs more than the scan. */
static const uint8_t *find_byte(const uint8_t *p, const uint8_t *end, uint8_t c)
{
    if (end - p > 32)
        return memchr(p, c, (size_t)(end - p));
    for (; p < end; p++)
        if (*p == c)
            return p;
    return NULL;
}

/* One pass over string/bytes data: count the 0x00 bytes (each needs an
 * escape) and, for strings, check UTF-8. Eight bytes at a time while they
 * are ASCII (or any bytes, for bytes). 0 if the string is not valid UTF-8. */
static int scan_data(const uint8_t *s, size_t len, int is_string, size_t *zero_count_out)
{
    utf8_state u = {0, 0x80, 0xBF};
    size_t zero_count = 0, i = 0;
    while (i < len) {
        if (u.need == 0 && len - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!is_string || (w & 0x8080808080808080ull) == 0) {
                /* Has a zero byte (the classic bit trick: exact for "any"). */
                if ((w - 0x0101010101010101ull) & ~w & 0x8080808080808080ull)
                    for (int k = 0; k < 8; k++)
                        zero_count += s[i + k] == 0;
                i += 8;
                continue;
            }
        }
        uint8_t c = s[i++];
        zero_count += c == 0;
        if (is_string && (c >= 0x80 || u.need) && !utf8_step(&u, c))
            return 0;
    }
    *zero_count_out = zero_count;
    return u.need == 0;
}

static int is_ident_start(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static int is_ident_char(int c)
{
    return is_ident_start(c) || (c >= '0' && c <= '9');
}

/* A spec field name: [A-Za-z_][A-Za-z0-9_]*, 1..SOP_KEYSPEC_MAX_NAME_LEN. */
static int name_ok(const char *s, size_t len)
{
    if (len == 0 || len > SOP_KEYSPEC_MAX_NAME_LEN || !is_ident_start((unsigned char)s[0]))
        return 0;
    for (size_t i = 1; i < len; i++)
        if (!is_ident_char((unsigned char)s[i]))
            return 0;
    return 1;
}

static int type_ok(unsigned type)
{
    return type <= SOP_KEY_UUID;
}

const char *sop_key_type_name(sop_key_type type)
{
    static const char *const names[] = {"null",      "bool",   "int64", "uint64", "double",
                                        "timestamp", "string", "bytes", "uuid"};
    return type_ok((unsigned)type) ? names[type] : "?";
}

void sop_key_free(void *ptr)
{
    sop_free(ptr);
}

/* ======================================================================== */
/* Building keys                                                             */
/* ======================================================================== */

static int tuple_fail(sop_tuple *t, int rc)
{
    t->rc = rc;
    return rc;
}

/* Make room for need more bytes (E4). */
static int tuple_reserve(sop_tuple *t, size_t need)
{
    if (need > SOP_MAX_KEY_LEN || t->len + need > SOP_MAX_KEY_LEN)
        return tuple_fail(t, sop_err(SOP_INVAL, "key would be longer than %d bytes (field %zu)",
                                     SOP_MAX_KEY_LEN, t->field_count));
    if (t->len + need <= t->cap)
        return SOP_OK;
    if (!(t->state & TUPLE_HEAP))
        return tuple_fail(t, sop_err(SOP_INVAL, "key buffer too small: %zu bytes, need %zu", t->cap,
                                     t->len + need));
    size_t cap = t->cap ? t->cap : 64;
    while (cap < t->len + need)
        cap *= 2;
    if (cap > SOP_MAX_KEY_LEN)
        cap = SOP_MAX_KEY_LEN;
    uint8_t *p = sop_realloc(t->buf, cap);
    if (!p)
        return tuple_fail(t, sop_err(SOP_NOMEM, "key buffer of %zu bytes", cap));
    t->buf = p;
    t->cap = cap;
    return SOP_OK;
}

/* Common entry checks of every add: sticky error, flags, closed tuple. */
static int tuple_begin(sop_tuple *t, unsigned flags)
{
    if (!t)
        return sop_err(SOP_INVAL, "sop_tuple is NULL");
    if (t->rc)
        return t->rc;
    if (flags & ~SOP_KEY_DESC)
        return tuple_fail(t, sop_err(SOP_INVAL, "unknown tuple field flags 0x%x", flags));
    if (t->state & TUPLE_OPEN)
        return tuple_fail(t, sop_err(SOP_INVAL, "no field may follow a prefix field"));
    return SOP_OK;
}

/* Commit n bytes just written at buf+len as one field; invert if DESC. */
static int tuple_commit(sop_tuple *t, size_t n, unsigned flags)
{
    if (flags & SOP_KEY_DESC)
        invert(t->buf + t->len, n);
    t->len += n;
    t->field_count++;
    return SOP_OK;
}

/* A field that is a tag plus up to 8 payload bytes. */
static int tuple_add_small(sop_tuple *t, const uint8_t *enc, size_t n, unsigned flags)
{
    int rc = tuple_begin(t, flags);
    if (rc)
        return rc;
    if ((rc = tuple_reserve(t, n)) != SOP_OK)
        return rc;
    memcpy(t->buf + t->len, enc, n);
    return tuple_commit(t, n, flags);
}

static size_t enc_int64(uint8_t *p, int64_t v)
{
    if (v == 0) {
        p[0] = SOP_KEYS_TAG_INT_ZERO;
        return 1;
    }
    int neg = v < 0;
    uint64_t m = neg ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    size_t n = be_width(m);
    uint64_t w = neg ? ~m : m;
    p[0] = (uint8_t)(neg ? SOP_KEYS_TAG_INT_ZERO - n : SOP_KEYS_TAG_INT_ZERO + n);
    for (size_t i = 0; i < n; i++)
        p[1 + i] = (uint8_t)(w >> (8 * (n - 1 - i)));
    return 1 + n;
}

static size_t enc_uint64(uint8_t *p, uint64_t v)
{
    if (v == 0) {
        p[0] = SOP_KEYS_TAG_UINT_ZERO;
        return 1;
    }
    size_t n = be_width(v);
    p[0] = (uint8_t)(SOP_KEYS_TAG_UINT_ZERO + n);
    for (size_t i = 0; i < n; i++)
        p[1 + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    return 1 + n;
}

void sop_tuple_start(sop_tuple *t, void *buf, size_t buf_cap)
{
    if (!t)
        return;
    t->buf = buf;
    t->cap = buf ? buf_cap : 0;
    t->len = 0;
    t->field_count = 0;
    t->rc = SOP_OK;
    t->state = buf ? 0 : TUPLE_HEAP;
}

void sop_tuple_reset(sop_tuple *t)
{
    if (!t)
        return;
    t->len = 0;
    t->field_count = 0;
    t->rc = SOP_OK;
    t->state &= TUPLE_HEAP;
}

void sop_tuple_dispose(sop_tuple *t)
{
    if (!t)
        return;
    if (t->state & TUPLE_HEAP)
        sop_free(t->buf);
    t->buf = NULL;
    t->cap = 0;
    t->len = 0;
    t->field_count = 0;
    t->state = TUPLE_HEAP; /* a later add allocates afresh */
}

int sop_tuple_add_null(sop_tuple *t, unsigned flags)
{
    uint8_t e = SOP_KEYS_TAG_NULL;
    return tuple_add_small(t, &e, 1, flags);
}

int sop_tuple_add_bool(sop_tuple *t, int value, unsigned flags)
{
    uint8_t e = value ? SOP_KEYS_TAG_TRUE : SOP_KEYS_TAG_FALSE;
    return tuple_add_small(t, &e, 1, flags);
}

int sop_tuple_add_int64(sop_tuple *t, int64_t value, unsigned flags)
{
    uint8_t e[9];
    return tuple_add_small(t, e, enc_int64(e, value), flags);
}

int sop_tuple_add_uint64(sop_tuple *t, uint64_t value, unsigned flags)
{
    uint8_t e[9];
    return tuple_add_small(t, e, enc_uint64(e, value), flags);
}

int sop_tuple_add_double(sop_tuple *t, double value, unsigned flags)
{
    uint8_t e[9];
    uint64_t b = dbl_canon_bits(value);
    e[0] = SOP_KEYS_TAG_DOUBLE;
    put_be64(e + 1, (b & DBL_SIGN) ? ~b : b ^ DBL_SIGN);
    return tuple_add_small(t, e, 9, flags);
}

int sop_tuple_add_timestamp(sop_tuple *t, int64_t ns_since_epoch, unsigned flags)
{
    uint8_t e[9];
    e[0] = SOP_KEYS_TAG_TIMESTAMP;
    put_be64(e + 1, (uint64_t)ns_since_epoch ^ DBL_SIGN);
    return tuple_add_small(t, e, 9, flags);
}

int sop_tuple_add_uuid(sop_tuple *t, const uint8_t uuid[16], unsigned flags)
{
    int rc = tuple_begin(t, flags);
    if (rc)
        return rc;
    if (!uuid)
        return tuple_fail(t, sop_err(SOP_INVAL, "uuid is NULL"));
    if ((rc = tuple_reserve(t, 17)) != SOP_OK)
        return rc;
    t->buf[t->len] = SOP_KEYS_TAG_UUID;
    memcpy(t->buf + t->len + 1, uuid, 16);
    return tuple_commit(t, 17, flags);
}

/* String or bytes: tag, escaped data, and the terminator unless is_open. */
static int tuple_add_escaped(sop_tuple *t, uint8_t tag, const void *data, size_t len,
                             unsigned flags, int is_open)
{
    const uint8_t *s = data;
    int rc = tuple_begin(t, flags);
    if (rc)
        return rc;
    if (!s && len)
        return tuple_fail(
            t, sop_err(SOP_INVAL, "field %zu: NULL data with length %zu", t->field_count, len));
    if (len > SOP_MAX_KEY_LEN) /* before any arithmetic on len */
        return tuple_reserve(t, len);
    size_t zero_count = 0;
    if (!scan_data(s, len, tag == SOP_KEYS_TAG_STRING, &zero_count))
        return tuple_fail(
            t, sop_err(SOP_INVAL, "field %zu: string is not valid UTF-8", t->field_count));
    size_t n = 1 + len + zero_count + (is_open ? 0 : 2);
    if ((rc = tuple_reserve(t, n)) != SOP_OK)
        return rc;
    uint8_t *p = t->buf + t->len;
    *p++ = tag;
    if (zero_count == 0) {
        if (len)
            memcpy(p, s, len);
        p += len;
    } else {
        for (size_t i = 0; i < len; i++) {
            *p++ = s[i];
            if (s[i] == 0)
                *p++ = 0xFF;
        }
    }
    if (!is_open) {
        *p++ = 0x00;
        *p++ = 0x01;
    } else {
        t->state |= TUPLE_OPEN;
    }
    assert((size_t)(p - (t->buf + t->len)) == n);
    return tuple_commit(t, n, flags);
}

int sop_tuple_add_str(sop_tuple *t, const char *s, size_t len, unsigned flags)
{
    return tuple_add_escaped(t, SOP_KEYS_TAG_STRING, s, len, flags, 0);
}

int sop_tuple_add_cstr(sop_tuple *t, const char *s, unsigned flags)
{
    if (t && !t->rc && !s)
        return tuple_fail(t, sop_err(SOP_INVAL, "field %zu: string is NULL", t->field_count));
    return tuple_add_escaped(t, SOP_KEYS_TAG_STRING, s, s ? strlen(s) : 0, flags, 0);
}

int sop_tuple_add_bytes(sop_tuple *t, const void *data, size_t len, unsigned flags)
{
    return tuple_add_escaped(t, SOP_KEYS_TAG_BYTES, data, len, flags, 0);
}

int sop_tuple_add_str_prefix(sop_tuple *t, const char *s, size_t len, unsigned flags)
{
    return tuple_add_escaped(t, SOP_KEYS_TAG_STRING, s, len, flags, 1);
}

int sop_tuple_add_bytes_prefix(sop_tuple *t, const void *data, size_t len, unsigned flags)
{
    return tuple_add_escaped(t, SOP_KEYS_TAG_BYTES, data, len, flags, 1);
}

int sop_tuple_add_value(sop_tuple *t, const sop_key_value *v)
{
    if (!v) {
        if (t && !t->rc)
            return tuple_fail(t, sop_err(SOP_INVAL, "value is NULL"));
        return t ? t->rc : sop_err(SOP_INVAL, "sop_tuple is NULL");
    }
    switch (v->type) {
    case SOP_KEY_NULL:
        return sop_tuple_add_null(t, v->flags);
    case SOP_KEY_BOOL:
        return sop_tuple_add_bool(t, v->u.b, v->flags);
    case SOP_KEY_INT64:
        return sop_tuple_add_int64(t, v->u.i64, v->flags);
    case SOP_KEY_UINT64:
        return sop_tuple_add_uint64(t, v->u.u64, v->flags);
    case SOP_KEY_DOUBLE:
        return sop_tuple_add_double(t, v->u.f64, v->flags);
    case SOP_KEY_TIMESTAMP:
        return sop_tuple_add_timestamp(t, v->u.i64, v->flags);
    case SOP_KEY_STRING:
        return sop_tuple_add_str(t, v->u.str.data, v->u.str.len, v->flags);
    case SOP_KEY_BYTES:
        return sop_tuple_add_bytes(t, v->u.str.data, v->u.str.len, v->flags);
    case SOP_KEY_UUID:
        return sop_tuple_add_uuid(t, v->u.uuid, v->flags);
    }
    int rc = tuple_begin(t, 0);
    return rc ? rc : tuple_fail(t, sop_err(SOP_INVAL, "unknown key type %d", (int)v->type));
}

int sop_tuple_finish(sop_val *key_out, sop_tuple *t)
{
    if (!key_out || !t) {
        if (key_out)
            *key_out = (sop_val){NULL, 0};
        return sop_err(SOP_INVAL, "NULL argument to sop_tuple_finish");
    }
    if (t->rc) {
        *key_out = (sop_val){NULL, 0};
        return t->rc;
    }
    *key_out = (sop_val){t->buf, t->len};
    return SOP_OK;
}

int sop_tuple_finish_alloc(void **key_out, size_t *key_len_out, sop_tuple *t)
{
    sop_val key;
    if (!key_out || !key_len_out)
        return sop_err(SOP_INVAL, "NULL argument to sop_tuple_finish_alloc");
    *key_out = NULL;
    *key_len_out = 0;
    int rc = sop_tuple_finish(&key, t);
    if (rc)
        return rc;
    void *p = sop_malloc(key.len ? key.len : 1);
    if (!p)
        return sop_err(SOP_NOMEM, "key copy of %zu bytes", key.len);
    if (key.len)
        memcpy(p, key.data, key.len);
    *key_out = p;
    *key_len_out = key.len;
    return SOP_OK;
}

/* ======================================================================== */
/* Decoding                                                                  */
/* ======================================================================== */

/* Where string payloads go: scratch may be NULL (validate only). */
typedef struct dec_ctx {
    uint8_t *scratch;
    size_t scratch_cap;
    size_t scratch_used;
} dec_ctx;

/* Decode the field at *pos (E3). On SOP_OK *pos moves past it and, when out
 * is not NULL, *out holds it; *is_copied_out (may be NULL) says whether
 * out->u.str was unescaped into ctx->scratch. The key starts at base (for
 * offsets in messages). */
static int dec_field(sop_key_value *out, int *is_copied_out, const uint8_t **pos,
                     const uint8_t *base, const uint8_t *end, dec_ctx *ctx, size_t field_idx)
{
    const uint8_t *p = *pos;
    size_t off = (size_t)(p - base);
    size_t rem = (size_t)(end - p);
    sop_key_value local;
    /* Written in place, not built in a local and copied: the copy's wide
     * load after narrow stores stalled store forwarding (a third of the
     * decode time). On failure *out is unspecified. */
    sop_key_value *v = out ? out : &local;
    int is_copied = 0;

    if (rem == 0)
        return SOP_CORRUPT_BKPT("key field %zu at offset %zu: no bytes", field_idx, off);
    uint8_t inv = (p[0] & 0x80) ? 0xFF : 0x00;
    uint8_t tag = (uint8_t)(p[0] ^ inv);
    size_t n; /* bytes of this field after the tag */
    v->flags = inv ? SOP_KEY_DESC : 0;
    p++;
    rem--;

    if (tag == SOP_KEYS_TAG_NULL) {
        v->type = SOP_KEY_NULL;
        n = 0;
    } else if (tag == SOP_KEYS_TAG_FALSE || tag == SOP_KEYS_TAG_TRUE) {
        v->type = SOP_KEY_BOOL;
        v->u.b = tag == SOP_KEYS_TAG_TRUE;
        n = 0;
    } else if (tag >= SOP_KEYS_TAG_INT_ZERO - 8 && tag <= SOP_KEYS_TAG_INT_ZERO + 8) {
        int neg = tag < SOP_KEYS_TAG_INT_ZERO;
        n = neg ? (size_t)(SOP_KEYS_TAG_INT_ZERO - tag) : (size_t)(tag - SOP_KEYS_TAG_INT_ZERO);
        if (rem < n)
            return SOP_CORRUPT_BKPT("key field %zu at offset %zu: int64 needs %zu bytes, %zu left",
                                    field_idx, off, n, rem);
        v->type = SOP_KEY_INT64;
        v->u.i64 = 0;
        if (n > 0) {
            uint8_t first = (uint8_t)(p[0] ^ inv);
            if (first == (neg ? 0xFF : 0x00))
                return SOP_CORRUPT_BKPT("key field %zu at offset %zu: non-canonical int64",
                                        field_idx, off);
            uint64_t w = get_be(p, n);
            if (inv)
                w = ~w & (n == 8 ? ~0ull : ((1ull << (8 * n)) - 1));
            if (neg) {
                uint64_t m = ~w & (n == 8 ? ~0ull : ((1ull << (8 * n)) - 1));
                if (m > DBL_SIGN) /* magnitude above 2^63 */
                    return SOP_CORRUPT_BKPT("key field %zu at offset %zu: int64 out of range",
                                            field_idx, off);
                v->u.i64 = -(int64_t)(m - 1) - 1;
            } else {
                if (w > (uint64_t)INT64_MAX)
                    return SOP_CORRUPT_BKPT("key field %zu at offset %zu: int64 out of range",
                                            field_idx, off);
                v->u.i64 = (int64_t)w;
            }
        }
    } else if (tag >= SOP_KEYS_TAG_UINT_ZERO && tag <= SOP_KEYS_TAG_UINT_ZERO + 8) {
        n = (size_t)(tag - SOP_KEYS_TAG_UINT_ZERO);
        if (rem < n)
            return SOP_CORRUPT_BKPT("key field %zu at offset %zu: uint64 needs %zu bytes, %zu left",
                                    field_idx, off, n, rem);
        v->type = SOP_KEY_UINT64;
        v->u.u64 = 0;
        if (n > 0) {
            if ((uint8_t)(p[0] ^ inv) == 0)
                return SOP_CORRUPT_BKPT("key field %zu at offset %zu: non-canonical uint64",
                                        field_idx, off);
            uint64_t w = get_be(p, n);
            if (inv)
                w = ~w & (n == 8 ? ~0ull : ((1ull << (8 * n)) - 1));
            v->u.u64 = w;
        }
    } else if (tag == SOP_KEYS_TAG_DOUBLE || tag == SOP_KEYS_TAG_TIMESTAMP) {
        n = 8;
        if (rem < n)
            return SOP_CORRUPT_BKPT("key field %zu at offset %zu: %s needs 8 bytes, %zu left",
                                    field_idx, off,
                                    tag == SOP_KEYS_TAG_DOUBLE ? "double" : "timestamp", rem);
        uint64_t w = get_be(p, 8);
        if (inv)
            w = ~w;
        if (tag == SOP_KEYS_TAG_DOUBLE) {
            uint64_t b = (w & DBL_SIGN) ? w ^ DBL_SIGN : ~w;
            if ((b & DBL_EXP) == DBL_EXP && (b & DBL_MANT) != 0 && (b & ~DBL_SIGN) != DBL_QNAN)
                return SOP_CORRUPT_BKPT("key field %zu at offset %zu: non-canonical NaN", field_idx,
                                        off);
            v->type = SOP_KEY_DOUBLE;
            v->u.f64 = dbl_from_bits(b);
        } else {
            v->type = SOP_KEY_TIMESTAMP;
            v->u.i64 = (int64_t)(w ^ DBL_SIGN);
        }
    } else if (tag == SOP_KEYS_TAG_UUID) {
        n = 16;
        if (rem < n)
            return SOP_CORRUPT_BKPT("key field %zu at offset %zu: uuid needs 16 bytes, %zu left",
                                    field_idx, off, rem);
        v->type = SOP_KEY_UUID;
        for (size_t i = 0; i < 16; i++)
            v->u.uuid[i] = (uint8_t)(p[i] ^ inv);
    } else if (tag == SOP_KEYS_TAG_STRING || tag == SOP_KEYS_TAG_BYTES) {
        /* Find the terminator: an encoded 0x00 (inv) followed by 0x01. */
        const uint8_t *q = p, *z;
        size_t escape_count = 0;
        for (;;) {
            z = find_byte(q, end, inv);
            if (!z)
                return SOP_CORRUPT_BKPT("key field %zu at offset %zu: no string terminator",
                                        field_idx, off);
            if (z + 1 >= end)
                return SOP_CORRUPT_BKPT("key field %zu at offset %zu: truncated escape", field_idx,
                                        off);
            uint8_t next = (uint8_t)(z[1] ^ inv);
            if (next == 0x01)
                break;
            if (next != 0xFF)
                return SOP_CORRUPT_BKPT("key field %zu at offset %zu: bad escape 0x00 0x%02x",
                                        field_idx, off, next);
            escape_count++;
            q = z + 2;
        }
        size_t raw_len = (size_t)(z - p);
        size_t data_len = raw_len - escape_count;
        int is_string = tag == SOP_KEYS_TAG_STRING;
        n = raw_len + 2;
        v->type = is_string ? SOP_KEY_STRING : SOP_KEY_BYTES;
        if (!inv && escape_count == 0) {
            if (is_string && !utf8_valid(p, raw_len))
                return SOP_CORRUPT_BKPT("key field %zu at offset %zu: invalid UTF-8", field_idx,
                                        off);
            v->u.str = (sop_val){p, raw_len};
        } else if (data_len == 0) { /* descending empty: nothing to copy */
            v->u.str = (sop_val){p, 0};
        } else if (out && ctx) {
            if (!ctx->scratch || data_len > ctx->scratch_cap - ctx->scratch_used)
                return sop_err(SOP_INVAL, "key field %zu: %zu bytes of scratch needed, %zu left",
                               field_idx, data_len,
                               ctx->scratch ? ctx->scratch_cap - ctx->scratch_used : 0);
            uint8_t *d = ctx->scratch + ctx->scratch_used;
            for (size_t i = 0, j = 0; i < raw_len; i++) {
                uint8_t c = (uint8_t)(p[i] ^ inv);
                d[j++] = c;
                if (c == 0)
                    i++; /* skip the 0xFF of the escape, checked above */
            }
            if (is_string && !utf8_valid(d, data_len))
                return SOP_CORRUPT_BKPT("key field %zu at offset %zu: invalid UTF-8", field_idx,
                                        off);
            ctx->scratch_used += data_len;
            v->u.str = (sop_val){d, data_len};
            is_copied = 1;
        } else { /* validate only (no ctx): stream the unescaped bytes through UTF-8 */
            if (is_string) {
                utf8_state u = {0, 0x80, 0xBF};
                for (size_t i = 0; i < raw_len; i++) {
                    uint8_t c = (uint8_t)(p[i] ^ inv);
                    if (!utf8_step(&u, c))
                        return SOP_CORRUPT_BKPT("key field %zu at offset %zu: invalid UTF-8",
                                                field_idx, off);
                    if (c == 0)
                        i++;
                }
                if (u.need)
                    return SOP_CORRUPT_BKPT("key field %zu at offset %zu: invalid UTF-8", field_idx,
                                            off);
            }
            v->u.str = (sop_val){NULL, data_len};
        }
    } else {
        return SOP_CORRUPT_BKPT("key field %zu at offset %zu: unknown tag 0x%02x", field_idx, off,
                                p[-1]);
    }
    *pos = p + n;
    if (is_copied_out)
        *is_copied_out = is_copied;
    return SOP_OK;
}

static int key_arg_ok(const sop_val *key)
{
    if (!key)
        return sop_err(SOP_INVAL, "key is NULL");
    if (!key->data && key->len)
        return sop_err(SOP_INVAL, "key data is NULL with length %zu", key->len);
    return SOP_OK;
}

int sop_key_iter_init(sop_key_iter *it, const sop_val *key)
{
    if (!it)
        return sop_err(SOP_INVAL, "sop_key_iter is NULL");
    it->start = it->pos = it->end = NULL;
    it->field_idx = 0;
    it->rc = key_arg_ok(key);
    if (it->rc == SOP_OK && key->len > SOP_MAX_KEY_LEN)
        it->rc =
            sop_err(SOP_INVAL, "key of %zu bytes is longer than %d", key->len, SOP_MAX_KEY_LEN);
    if (it->rc == SOP_OK && key->len) {
        it->start = it->pos = key->data;
        it->end = it->pos + key->len;
    }
    return it->rc;
}

/* The iterator step, also telling whether a string went to the scratch. */
static int iter_next(sop_key_value *value_out, int *is_copied_out, sop_key_iter *it)
{
    if (!it)
        return sop_err(SOP_INVAL, "sop_key_iter is NULL");
    if (it->rc)
        return it->rc;
    if (it->pos == it->end)
        return SOP_NOTFOUND;
    dec_ctx ctx = {it->scratch, sizeof it->scratch, 0};
    sop_key_value tmp;
    int rc = dec_field(value_out ? value_out : &tmp, is_copied_out, &it->pos, it->start, it->end,
                       &ctx, it->field_idx);
    if (rc)
        return it->rc = rc;
    it->field_idx++;
    return SOP_OK;
}

int sop_key_iter_next(sop_key_value *value_out, sop_key_iter *it)
{
    return iter_next(value_out, NULL, it);
}

int sop_key_validate(size_t *field_count_out, const sop_val *key)
{
    int rc;
    size_t field_count = 0;
    if (field_count_out)
        *field_count_out = 0;
    if ((rc = key_arg_ok(key)) != SOP_OK)
        return rc;
    /* data may be NULL when len is 0: no pointer arithmetic on it then */
    const uint8_t *base = key->data, *p = base, *end = key->len ? base + key->len : base;
    while (p < end) {
        if ((rc = dec_field(NULL, NULL, &p, base, end, NULL, field_count)) != SOP_OK)
            return rc;
        field_count++;
    }
    if (field_count_out)
        *field_count_out = field_count;
    return SOP_OK;
}

int sop_key_decode(sop_key_value *values_out, size_t values_cap, size_t *count_out, void *scratch,
                   size_t scratch_cap, const sop_val *key)
{
    int rc;
    size_t count = 0;
    if (!count_out || (!values_out && values_cap))
        return sop_err(SOP_INVAL, "NULL argument to sop_key_decode");
    *count_out = 0;
    if ((rc = key_arg_ok(key)) != SOP_OK)
        return rc;
    dec_ctx ctx = {scratch, scratch ? scratch_cap : 0, 0};
    const uint8_t *base = key->data, *p = base, *end = key->len ? base + key->len : base;
    while (p < end) {
        if (count < values_cap)
            rc = dec_field(&values_out[count], NULL, &p, base, end, &ctx, count);
        else
            rc = dec_field(NULL, NULL, &p, base, end, NULL, count);
        if (rc)
            return rc;
        count++;
    }
    *count_out = count;
    if (count > values_cap)
        return sop_err(SOP_INVAL, "key has %zu fields, room for %zu", count, values_cap);
    return SOP_OK;
}

int sop_key_prefix_end(void *buf, size_t buf_cap, size_t *hi_len_out, const sop_val *prefix)
{
    int rc;
    if (!hi_len_out || (!buf && buf_cap))
        return sop_err(SOP_INVAL, "NULL argument to sop_key_prefix_end");
    *hi_len_out = 0;
    if ((rc = key_arg_ok(prefix)) != SOP_OK)
        return rc;
    const uint8_t *p = prefix->data;
    size_t len = prefix->len;
    while (len > 0 && p[len - 1] == 0xFF)
        len--;
    if (len == 0)
        return SOP_NOTFOUND; /* no upper bound: scan to the end */
    if (len > buf_cap)
        return sop_err(SOP_INVAL, "prefix end needs %zu bytes, buffer has %zu", len, buf_cap);
    memmove(buf, p, len);
    ((uint8_t *)buf)[len - 1]++;
    *hi_len_out = len;
    return SOP_OK;
}

/* ======================================================================== */
/* The reference order (independent of the encoding)                         */
/* ======================================================================== */

static int cmp_u64(uint64_t a, uint64_t b)
{
    return (a > b) - (a < b);
}

static int cmp_i64(int64_t a, int64_t b)
{
    return (a > b) - (a < b);
}

/* IEEE 754 totalOrder with NaN payloads ignored. */
static int cmp_double(double x, double y)
{
    int x_nan = isnan(x), y_nan = isnan(y);
    int x_neg = signbit(x) != 0, y_neg = signbit(y) != 0;
    if (x_nan || y_nan) {
        int xr = x_nan ? (x_neg ? -1 : 1) : 0;
        int yr = y_nan ? (y_neg ? -1 : 1) : 0;
        return (xr > yr) - (xr < yr);
    }
    if (x < y)
        return -1;
    if (x > y)
        return 1;
    if (x_neg != y_neg) /* -0.0 vs +0.0 */
        return x_neg ? -1 : 1;
    return 0;
}

static int cmp_bytes(const sop_val *a, const sop_val *b)
{
    size_t n = a->len < b->len ? a->len : b->len;
    int c = n ? memcmp(a->data, b->data, n) : 0;
    if (c)
        return c < 0 ? -1 : 1;
    return (a->len > b->len) - (a->len < b->len);
}

int sop_key_value_compare(const sop_key_value *a, const sop_key_value *b)
{
    int a_desc = (a->flags & SOP_KEY_DESC) != 0, b_desc = (b->flags & SOP_KEY_DESC) != 0;
    int c = 0;
    if (a_desc != b_desc)
        return a_desc ? 1 : -1;
    if (a->type != b->type) {
        c = (unsigned)a->type < (unsigned)b->type ? -1 : 1;
    } else {
        switch (a->type) {
        case SOP_KEY_NULL:
            c = 0;
            break;
        case SOP_KEY_BOOL:
            c = (a->u.b != 0) - (b->u.b != 0);
            break;
        case SOP_KEY_INT64:
        case SOP_KEY_TIMESTAMP:
            c = cmp_i64(a->u.i64, b->u.i64);
            break;
        case SOP_KEY_UINT64:
            c = cmp_u64(a->u.u64, b->u.u64);
            break;
        case SOP_KEY_DOUBLE:
            c = cmp_double(a->u.f64, b->u.f64);
            break;
        case SOP_KEY_STRING:
        case SOP_KEY_BYTES:
            c = cmp_bytes(&a->u.str, &b->u.str);
            break;
        case SOP_KEY_UUID:
            c = memcmp(a->u.uuid, b->u.uuid, 16);
            c = (c > 0) - (c < 0);
            break;
        }
    }
    return a_desc ? -c : c;
}

int sop_key_values_compare(const sop_key_value *a, size_t a_count, const sop_key_value *b,
                           size_t b_count)
{
    size_t n = a_count < b_count ? a_count : b_count;
    for (size_t i = 0; i < n; i++) {
        int c = sop_key_value_compare(&a[i], &b[i]);
        if (c)
            return c;
    }
    return (a_count > b_count) - (a_count < b_count);
}

/* ======================================================================== */
/* Index specifications                                                      */
/* ======================================================================== */

typedef struct keyspec_field {
    uint8_t type;
    uint8_t flags;
    uint8_t name_len;
    char name[SOP_KEYSPEC_MAX_NAME_LEN + 1];
} keyspec_field;

struct sop_keyspec {
    size_t field_count;
    keyspec_field fields[SOP_KEYSPEC_MAX_FIELDS];
};

#define SPEC_FLAGS_ALL (SOP_KEY_DESC | SOP_KEY_NULLABLE)

int sop_keyspec_new(sop_keyspec **spec_out)
{
    if (!spec_out)
        return sop_err(SOP_INVAL, "spec_out is NULL");
    *spec_out = sop_calloc(1, sizeof(sop_keyspec));
    if (!*spec_out)
        return sop_err(SOP_NOMEM, "key spec");
    return SOP_OK;
}

void sop_keyspec_free(sop_keyspec *spec)
{
    sop_free(spec);
}

/* Would field (name, type, flags) be accepted as the next field? */
static int spec_field_check(const sop_keyspec *spec, const char *name, size_t name_len,
                            unsigned type, unsigned flags)
{
    if (spec->field_count >= SOP_KEYSPEC_MAX_FIELDS)
        return sop_err(SOP_INVAL, "key spec has %d fields already", SOP_KEYSPEC_MAX_FIELDS);
    if (!name_ok(name, name_len))
        return sop_err(SOP_INVAL, "key field name '%.*s' is not an identifier of 1..%d bytes",
                       (int)(name_len > 80 ? 80 : name_len), name, SOP_KEYSPEC_MAX_NAME_LEN);
    if (type == SOP_KEY_NULL || !type_ok(type))
        return sop_err(SOP_INVAL, "key field '%.*s': bad type %u", (int)name_len, name, type);
    if (flags & ~SPEC_FLAGS_ALL)
        return sop_err(SOP_INVAL, "key field '%.*s': unknown flags 0x%x", (int)name_len, name,
                       flags);
    for (size_t i = 0; i < spec->field_count; i++)
        if (spec->fields[i].name_len == name_len && !memcmp(spec->fields[i].name, name, name_len))
            return sop_err(SOP_INVAL, "key field name '%.*s' appears twice", (int)name_len, name);
    return SOP_OK;
}

static void spec_field_append(sop_keyspec *spec, const char *name, size_t name_len, unsigned type,
                              unsigned flags)
{
    keyspec_field *f = &spec->fields[spec->field_count++];
    f->type = (uint8_t)type;
    f->flags = (uint8_t)flags;
    f->name_len = (uint8_t)name_len;
    memcpy(f->name, name, name_len);
    f->name[name_len] = '\0';
}

int sop_keyspec_add(sop_keyspec *spec, const char *name, sop_key_type type, unsigned flags)
{
    int rc;
    if (!spec || !name)
        return sop_err(SOP_INVAL, "NULL argument to sop_keyspec_add");
    size_t name_len = strnlen(name, SOP_KEYSPEC_MAX_NAME_LEN + 1);
    if ((rc = spec_field_check(spec, name, name_len, (unsigned)type, flags)) != SOP_OK)
        return rc;
    spec_field_append(spec, name, name_len, (unsigned)type, flags);
    return SOP_OK;
}

size_t sop_keyspec_field_count(const sop_keyspec *spec)
{
    return spec ? spec->field_count : 0;
}

int sop_keyspec_field_get(sop_keyspec_field *field_out, const sop_keyspec *spec, size_t field_idx)
{
    if (!field_out || !spec)
        return sop_err(SOP_INVAL, "NULL argument to sop_keyspec_field_get");
    if (field_idx >= spec->field_count)
        return sop_err(SOP_INVAL, "key spec has %zu fields, no field %zu", spec->field_count,
                       field_idx);
    const keyspec_field *f = &spec->fields[field_idx];
    field_out->name = f->name;
    field_out->type = (sop_key_type)f->type;
    field_out->flags = f->flags;
    return SOP_OK;
}

int sop_keyspec_equal(const sop_keyspec *a, const sop_keyspec *b)
{
    if (!a || !b)
        return a == b;
    if (a->field_count != b->field_count)
        return 0;
    for (size_t i = 0; i < a->field_count; i++) {
        const keyspec_field *x = &a->fields[i], *y = &b->fields[i];
        if (x->type != y->type || x->flags != y->flags || x->name_len != y->name_len ||
            memcmp(x->name, y->name, x->name_len) != 0)
            return 0;
    }
    return 1;
}

static size_t spec_encoded_len(const sop_keyspec *spec)
{
    size_t len = SOP_KEYSPEC_HEADER_LEN + SOP_KEYSPEC_CRC_LEN;
    for (size_t i = 0; i < spec->field_count; i++)
        len += 3 + spec->fields[i].name_len;
    return len;
}

int sop_keyspec_encode(void *buf, size_t buf_cap, size_t *len_out, const sop_keyspec *spec)
{
    if (!len_out || !spec || (!buf && buf_cap))
        return sop_err(SOP_INVAL, "NULL argument to sop_keyspec_encode");
    *len_out = 0;
    if (spec->field_count == 0)
        return sop_err(SOP_INVAL, "key spec has no fields");
    size_t len = spec_encoded_len(spec);
    *len_out = len;
    if (len > buf_cap)
        return sop_err(SOP_INVAL, "key spec needs %zu bytes, buffer has %zu", len, buf_cap);
    uint8_t *p = buf;
    memcpy(p, SOP_KEYSPEC_MAGIC, 4);
    p[4] = SOP_KEYSPEC_VERSION;
    p[5] = 0;
    sop_put_le16(p + 6, (uint16_t)spec->field_count);
    size_t off = SOP_KEYSPEC_HEADER_LEN;
    for (size_t i = 0; i < spec->field_count; i++) {
        const keyspec_field *f = &spec->fields[i];
        p[off] = f->type;
        p[off + 1] = f->flags;
        p[off + 2] = f->name_len;
        memcpy(p + off + 3, f->name, f->name_len);
        off += 3 + (size_t)f->name_len;
    }
    sop_put_le32(p + off, sop_crc32c(0, p, off));
    return SOP_OK;
}

/* Check encoded spec bytes (E3); fill *out when not NULL. */
static int spec_parse(sop_keyspec *out, const uint8_t *p, size_t len)
{
    if (len < SOP_KEYSPEC_HEADER_LEN + SOP_KEYSPEC_CRC_LEN)
        return SOP_CORRUPT_BKPT("key spec is %zu bytes, at least %d needed", len,
                                SOP_KEYSPEC_HEADER_LEN + SOP_KEYSPEC_CRC_LEN);
    if (len > SOP_KEYSPEC_MAX_LEN)
        return SOP_CORRUPT_BKPT("key spec is %zu bytes, at most %d allowed", len,
                                SOP_KEYSPEC_MAX_LEN);
    if (memcmp(p, SOP_KEYSPEC_MAGIC, 4) != 0)
        return SOP_CORRUPT_BKPT("key spec: bad magic");
    size_t body_len = len - SOP_KEYSPEC_CRC_LEN;
    uint32_t want = sop_get_le32(p + body_len), got = sop_crc32c(0, p, body_len);
    if (want != got)
        return SOP_CORRUPT_BKPT("key spec: checksum 0x%08x, computed 0x%08x", want, got);
    /* The envelope (magic, version byte, CRC at the end) is the same in every
     * version, so a newer spec is told apart from a damaged one. */
    if (p[4] > SOP_KEYSPEC_VERSION)
        return sop_err(SOP_VERSION, "key spec format version %u, this library reads %d", p[4],
                       SOP_KEYSPEC_VERSION);
    if (p[4] != SOP_KEYSPEC_VERSION)
        return SOP_CORRUPT_BKPT("key spec: format version %u", p[4]);
    if (p[5] != 0)
        return SOP_CORRUPT_BKPT("key spec: reserved flags 0x%02x", p[5]);
    size_t field_count = sop_get_le16(p + 6);
    if (field_count == 0 || field_count > SOP_KEYSPEC_MAX_FIELDS)
        return SOP_CORRUPT_BKPT("key spec: %zu fields", field_count);
    sop_keyspec local; /* duplicate-name check needs the earlier names */
    sop_keyspec *spec = out ? out : &local;
    spec->field_count = 0;
    size_t off = SOP_KEYSPEC_HEADER_LEN;
    for (size_t i = 0; i < field_count; i++) {
        if (body_len - off < 3)
            return SOP_CORRUPT_BKPT("key spec: field %zu header past the end", i);
        unsigned type = p[off], flags = p[off + 1];
        size_t name_len = p[off + 2];
        if (body_len - off - 3 < name_len)
            return SOP_CORRUPT_BKPT("key spec: field %zu name past the end", i);
        const char *name = (const char *)p + off + 3;
        if (spec_field_check(spec, name, name_len, type, flags) != SOP_OK)
            return SOP_CORRUPT_BKPT("key spec: field %zu: %s", i, sop_errmsg());
        spec_field_append(spec, name, name_len, type, flags);
        off += 3 + name_len;
    }
    if (off != body_len)
        return SOP_CORRUPT_BKPT("key spec: %zu bytes after the last field", body_len - off);
    return SOP_OK;
}

int sop_keyspec_decode(sop_keyspec **spec_out, const void *data, size_t len)
{
    int rc;
    sop_keyspec *spec = NULL;
    if (!spec_out || (!data && len))
        return sop_err(SOP_INVAL, "NULL argument to sop_keyspec_decode");
    *spec_out = NULL;
    sop_err_clear();
    SOP_TRY(sop_keyspec_new(&spec));
    SOP_TRY(spec_parse(spec, data, len));
    *spec_out = spec;
    spec = NULL;
out:
    sop_keyspec_free(spec);
    return rc;
}

int sop_keys__spec_check(const void *data, size_t len)
{
    if (!data)
        return SOP_CORRUPT_BKPT("key spec: no bytes");
    return spec_parse(NULL, data, len);
}

/* Does decoded field v fit spec field f (at index idx)? */
static int spec_value_fits(const keyspec_field *f, const sop_key_value *v, size_t idx)
{
    if (v->type == SOP_KEY_NULL) {
        if (!(f->flags & SOP_KEY_NULLABLE))
            return sop_err(SOP_INVAL, "key field %zu (%s): null, and the field is not nullable",
                           idx, f->name);
    } else if ((unsigned)v->type != f->type) {
        return sop_err(SOP_INVAL, "key field %zu (%s): %s, the spec says %s", idx, f->name,
                       sop_key_type_name(v->type), sop_key_type_name((sop_key_type)f->type));
    }
    if ((v->flags & SOP_KEY_DESC) != (f->flags & SOP_KEY_DESC))
        return sop_err(SOP_INVAL, "key field %zu (%s): %s, the spec says %s", idx, f->name,
                       (v->flags & SOP_KEY_DESC) ? "descending" : "ascending",
                       (f->flags & SOP_KEY_DESC) ? "descending" : "ascending");
    return SOP_OK;
}

static int spec_check_key(const sop_keyspec *spec, const uint8_t *key, size_t key_len,
                          unsigned flags)
{
    int rc;
    size_t idx = 0;
    const uint8_t *p = key, *end = key_len ? key + key_len : key;
    if (flags & ~SOP_KEY_CHECK_PREFIX)
        return sop_err(SOP_INVAL, "unknown key check flags 0x%x", flags);
    while (p < end) {
        sop_key_value v;
        if ((rc = dec_field(&v, NULL, &p, key, end, NULL, idx)) != SOP_OK)
            return rc;
        if (idx >= spec->field_count)
            return sop_err(SOP_INVAL, "key has more fields than the spec's %zu", spec->field_count);
        if ((rc = spec_value_fits(&spec->fields[idx], &v, idx)) != SOP_OK)
            return rc;
        idx++;
    }
    if (idx != spec->field_count && !(flags & SOP_KEY_CHECK_PREFIX))
        return sop_err(SOP_INVAL, "key has %zu fields, the spec %zu", idx, spec->field_count);
    return SOP_OK;
}

int sop_keyspec_check_key(const sop_keyspec *spec, const sop_val *key, unsigned flags)
{
    int rc;
    if (!spec)
        return sop_err(SOP_INVAL, "key spec is NULL");
    if ((rc = key_arg_ok(key)) != SOP_OK)
        return rc;
    return spec_check_key(spec, key->data, key->len, flags);
}

int sop_keys__key_check(const void *spec_bytes, size_t spec_len, const void *key, size_t key_len,
                        unsigned flags)
{
    sop_keyspec spec;
    int rc;
    if (!spec_bytes)
        return SOP_CORRUPT_BKPT("key spec: no bytes");
    if (!key && key_len)
        return sop_err(SOP_INVAL, "key data is NULL with length %zu", key_len);
    if ((rc = spec_parse(&spec, spec_bytes, spec_len)) != SOP_OK)
        return rc;
    return spec_check_key(&spec, key, key_len, flags);
}

/* ======================================================================== */
/* Key text                                                                  */
/* ======================================================================== */

/* An output that counts what did not fit (snprintf-style). */
typedef struct textw {
    char *buf;
    size_t cap;
    size_t len;
} textw;

static void tw_mem(textw *w, const void *s, size_t n)
{
    if (w->len < w->cap) {
        size_t room = w->cap - w->len;
        memcpy(w->buf + w->len, s, n < room ? n : room);
    }
    w->len += n;
}

static void tw_str(textw *w, const char *s)
{
    tw_mem(w, s, strlen(s));
}

static void tw_ch(textw *w, char c)
{
    tw_mem(w, &c, 1);
}

static void tw_fmt(textw *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tw_fmt(textw *w, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        tw_mem(w, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* NUL-terminate; SOP_OK if everything fit. */
static int tw_finish(textw *w, size_t *len_out)
{
    if (len_out)
        *len_out = w->len;
    if (w->cap)
        w->buf[w->len < w->cap ? w->len : w->cap - 1] = '\0';
    if (w->len >= w->cap)
        return sop_err(SOP_INVAL, "text needs %zu bytes plus NUL, buffer has %zu", w->len, w->cap);
    return SOP_OK;
}

static const char hex_digits[] = "0123456789abcdef";

/* The locale's decimal point, for printf/strtod (LC_NUMERIC may not be "C"). */
static char decimal_point(void)
{
    const struct lconv *lc = localeconv();
    return (lc && lc->decimal_point && lc->decimal_point[0] && !lc->decimal_point[1])
               ? lc->decimal_point[0]
               : '.';
}

static double parse_double_c(const char *s, size_t len, int *ok)
{
    char tmp[80];
    char *end = NULL;
    char dp = decimal_point();
    *ok = 0;
    if (len == 0 || len >= sizeof tmp)
        return 0;
    for (size_t i = 0; i < len; i++)
        tmp[i] = s[i] == '.' ? dp : s[i];
    tmp[len] = '\0';
    double d = strtod(tmp, &end);
    *ok = end == tmp + len;
    return d;
}

/* Shortest "%.Ng" that reads back exactly, with '.' as decimal point and a
 * ".0" added when it would otherwise look like an integer. */
static void render_double(textw *w, double d)
{
    char tmp[48] = "0";
    if (isnan(d)) {
        tw_str(w, signbit(d) ? "-nan" : "nan");
        return;
    }
    if (isinf(d)) {
        tw_str(w, d < 0 ? "-inf" : "inf");
        return;
    }
    char dp = decimal_point();
    for (int prec = 15; prec <= 17; prec++) {
        int n = snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        if (n <= 0 || (size_t)n >= sizeof tmp)
            continue;
        for (int i = 0; i < n; i++)
            if (tmp[i] == dp)
                tmp[i] = '.';
        int ok;
        double back = parse_double_c(tmp, (size_t)n, &ok);
        if (ok && (back == d || prec == 17))
            break;
    }
    tw_str(w, tmp);
    if (!strpbrk(tmp, ".en"))
        tw_str(w, ".0");
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y_out, unsigned *m_out, unsigned *d_out)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    unsigned m = mp < 10 ? mp + 3 : mp - 9;
    *d_out = doy - (153 * mp + 2) / 5 + 1;
    *m_out = m;
    *y_out = (int64_t)yoe + era * 400 + (m <= 2);
}

static void render_timestamp(textw *w, int64_t ns)
{
    /* Not frac = ns - secs * 1e9: secs * 1e9 overflows near INT64_MIN. */
    int64_t secs = ns / NS_PER_SEC, frac = ns % NS_PER_SEC;
    if (frac < 0) {
        frac += NS_PER_SEC;
        secs--;
    }
    int64_t days = floor_div(secs, SECS_PER_DAY);
    int64_t sod = secs - days * SECS_PER_DAY;
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    tw_fmt(w, "ts\"%04lld-%02u-%02uT%02u:%02u:%02u", (long long)y, m, d, (unsigned)(sod / 3600),
           (unsigned)(sod / 60 % 60), (unsigned)(sod % 60));
    if (frac)
        tw_fmt(w, ".%09u", (unsigned)frac);
    tw_str(w, "Z\"");
}

static void render_quoted(textw *w, const uint8_t *s, size_t len)
{
    tw_ch(w, '"');
    size_t run = 0; /* bytes copied as is, flushed in one call */
    for (size_t i = 0; i < len; i++) {
        uint8_t c = s[i];
        const char *esc = NULL;
        char hex[5];
        if (c == '"')
            esc = "\\\"";
        else if (c == '\\')
            esc = "\\\\";
        else if (c == '\n')
            esc = "\\n";
        else if (c == '\r')
            esc = "\\r";
        else if (c == '\t')
            esc = "\\t";
        else if (c < 0x20 || c == 0x7F) {
            hex[0] = '\\';
            hex[1] = 'x';
            hex[2] = hex_digits[c >> 4];
            hex[3] = hex_digits[c & 15];
            hex[4] = '\0';
            esc = hex;
        }
        if (esc) {
            tw_mem(w, s + i - run, run);
            run = 0;
            tw_str(w, esc);
        } else {
            run++;
        }
    }
    tw_mem(w, s + len - run, run);
    tw_ch(w, '"');
}

static void render_uuid(textw *w, const uint8_t *u)
{
    tw_str(w, "uuid\"");
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            tw_ch(w, '-');
        tw_ch(w, hex_digits[u[i] >> 4]);
        tw_ch(w, hex_digits[u[i] & 15]);
    }
    tw_ch(w, '"');
}

static void render_value(textw *w, const sop_key_value *v, int is_typed)
{
    int wrap = is_typed && (v->flags & SOP_KEY_DESC);
    if (wrap)
        tw_str(w, "desc(");
    switch (v->type) {
    case SOP_KEY_NULL:
        tw_str(w, "null");
        break;
    case SOP_KEY_BOOL:
        tw_str(w, v->u.b ? "true" : "false");
        break;
    case SOP_KEY_INT64:
        tw_fmt(w, "%lld", (long long)v->u.i64);
        break;
    case SOP_KEY_UINT64:
        tw_fmt(w, "%llu%s", (unsigned long long)v->u.u64, is_typed ? "u" : "");
        break;
    case SOP_KEY_DOUBLE:
        render_double(w, v->u.f64);
        break;
    case SOP_KEY_TIMESTAMP:
        render_timestamp(w, v->u.i64);
        break;
    case SOP_KEY_STRING:
        render_quoted(w, v->u.str.data, v->u.str.len);
        break;
    case SOP_KEY_BYTES:
        tw_str(w, "x\"");
        for (size_t i = 0; i < v->u.str.len; i++) {
            uint8_t c = ((const uint8_t *)v->u.str.data)[i];
            tw_ch(w, hex_digits[c >> 4]);
            tw_ch(w, hex_digits[c & 15]);
        }
        tw_ch(w, '"');
        break;
    case SOP_KEY_UUID:
        render_uuid(w, v->u.uuid);
        break;
    }
    if (wrap)
        tw_ch(w, ')');
}

static int key_format(textw *w, const sop_keyspec *spec, const sop_val *key, unsigned flags)
{
    int rc;
    sop_key_iter it;
    sop_key_value v;
    size_t idx = 0;
    if ((rc = key_arg_ok(key)) != SOP_OK)
        return rc;
    if (flags & ~(SOP_KEY_FORMAT_NAMES | SOP_KEY_FORMAT_TYPED))
        return sop_err(SOP_INVAL, "unknown key format flags 0x%x", flags);
    if ((flags & SOP_KEY_FORMAT_NAMES) && !spec)
        return sop_err(SOP_INVAL, "SOP_KEY_FORMAT_NAMES needs a key spec");
    if ((rc = sop_key_iter_init(&it, key)) != SOP_OK)
        return rc;
    tw_ch(w, '(');
    while ((rc = sop_key_iter_next(&v, &it)) == SOP_OK) {
        if (spec) {
            if (idx >= spec->field_count)
                return sop_err(SOP_INVAL, "key has more fields than the spec's %zu",
                               spec->field_count);
            if ((rc = spec_value_fits(&spec->fields[idx], &v, idx)) != SOP_OK)
                return rc;
        }
        if (idx)
            tw_str(w, ", ");
        if (flags & SOP_KEY_FORMAT_NAMES) {
            tw_str(w, spec->fields[idx].name);
            tw_ch(w, '=');
        }
        render_value(w, &v, !spec || (flags & SOP_KEY_FORMAT_TYPED));
        idx++;
    }
    if (rc != SOP_NOTFOUND)
        return rc;
    tw_ch(w, ')');
    return SOP_OK;
}

int sop_key_format(char *buf, size_t buf_cap, size_t *text_len_out, const sop_keyspec *spec,
                   const sop_val *key, unsigned flags)
{
    int rc;
    if (!text_len_out || (!buf && buf_cap))
        return sop_err(SOP_INVAL, "NULL argument to sop_key_format");
    *text_len_out = 0;
    sop_err_clear();
    textw w = {buf, buf_cap, 0};
    if ((rc = key_format(&w, spec, key, flags)) != SOP_OK) {
        if (buf_cap)
            buf[0] = '\0';
        return rc;
    }
    return tw_finish(&w, text_len_out);
}

int sop_key_format_alloc(char **text_out, const sop_keyspec *spec, const sop_val *key,
                         unsigned flags)
{
    int rc;
    if (!text_out)
        return sop_err(SOP_INVAL, "text_out is NULL");
    *text_out = NULL;
    sop_err_clear();
    textw w = {NULL, 0, 0};
    if ((rc = key_format(&w, spec, key, flags)) != SOP_OK)
        return rc;
    w.buf = sop_malloc(w.len + 1);
    if (!w.buf)
        return sop_err(SOP_NOMEM, "key text of %zu bytes", w.len + 1);
    w.cap = w.len + 1;
    w.len = 0;
    if ((rc = key_format(&w, spec, key, flags)) != SOP_OK || (rc = tw_finish(&w, NULL)) != SOP_OK) {
        sop_free(w.buf);
        return rc;
    }
    *text_out = w.buf;
    return SOP_OK;
}

/* ---- parsing -------------------------------------------------------------- */

typedef struct parser {
    const char *s;
    size_t pos;
    const char *what;             /* "key text" or "key spec text", for messages */
    uint8_t tmp[SOP_MAX_KEY_LEN]; /* the current string literal, decoded */
} parser;

static int parse_err(const parser *ps, const char *what)
{
    return sop_err(SOP_INVAL, "%s col %zu: %s", ps->what, ps->pos + 1, what);
}

static void skip_ws(parser *ps)
{
    while (ps->s[ps->pos] == ' ' || ps->s[ps->pos] == '\t' || ps->s[ps->pos] == '\n' ||
           ps->s[ps->pos] == '\r')
        ps->pos++;
}

/* Length of the identifier at pos (0 if none). */
static size_t ident_len(const parser *ps)
{
    size_t n = 0;
    if (!is_ident_start((unsigned char)ps->s[ps->pos]))
        return 0;
    while (is_ident_char((unsigned char)ps->s[ps->pos + n]))
        n++;
    return n;
}

/* Is the word at pos exactly w (not followed by an identifier char)? */
static int at_word(const parser *ps, const char *w)
{
    size_t n = strlen(w);
    return strncmp(ps->s + ps->pos, w, n) == 0 && !is_ident_char((unsigned char)ps->s[ps->pos + n]);
}

static int hex_val(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A "..." literal at pos, decoded into ps->tmp. */
static int parse_quoted(parser *ps, size_t *len_out)
{
    size_t len = 0;
    if (ps->s[ps->pos] != '"')
        return parse_err(ps, "expected '\"'");
    ps->pos++;
    for (;;) {
        unsigned char c = (unsigned char)ps->s[ps->pos];
        if (c == '\0')
            return parse_err(ps, "unterminated string");
        if (c == '"') {
            ps->pos++;
            break;
        }
        if (c == '\\') {
            char e = ps->s[ps->pos + 1];
            if (e == '"' || e == '\\')
                c = (unsigned char)e;
            else if (e == 'n')
                c = '\n';
            else if (e == 'r')
                c = '\r';
            else if (e == 't')
                c = '\t';
            else if (e == '0')
                c = 0;
            else if (e == 'x') {
                int h = hex_val(ps->s[ps->pos + 2]), l = h < 0 ? -1 : hex_val(ps->s[ps->pos + 3]);
                if (h < 0 || l < 0)
                    return parse_err(ps, "\\x needs two hex digits");
                c = (unsigned char)(h * 16 + l);
                ps->pos += 2;
            } else {
                return parse_err(ps, "unknown escape (use \\\" \\\\ \\n \\r \\t \\0 \\xHH)");
            }
            ps->pos += 2;
        } else {
            ps->pos++;
        }
        if (len >= sizeof ps->tmp)
            return parse_err(ps, "string longer than a key");
        ps->tmp[len++] = c;
    }
    *len_out = len;
    return SOP_OK;
}

/* x"hex" at pos (after the x), into ps->tmp. */
static int parse_hex(parser *ps, size_t *len_out)
{
    size_t len = 0;
    if (ps->s[ps->pos] != '"')
        return parse_err(ps, "expected '\"' after x");
    ps->pos++;
    while (ps->s[ps->pos] != '"') {
        int h = hex_val(ps->s[ps->pos]), l = h < 0 ? -1 : hex_val(ps->s[ps->pos + 1]);
        if (h < 0 || l < 0)
            return parse_err(ps, "expected pairs of hex digits");
        if (len >= sizeof ps->tmp)
            return parse_err(ps, "bytes longer than a key");
        ps->tmp[len++] = (uint8_t)(h * 16 + l);
        ps->pos += 2;
    }
    ps->pos++;
    *len_out = len;
    return SOP_OK;
}

/* UUID text (8-4-4-4-12 hex, or 32 hex digits) of exactly len bytes. */
static int uuid_from_text(uint8_t out[16], const uint8_t *s, size_t len)
{
    size_t j = 0;
    if (len != 36 && len != 32)
        return 0;
    for (size_t i = 0; i < len;) {
        if (len == 36 && (i == 8 || i == 13 || i == 18 || i == 23)) {
            if (s[i] != '-')
                return 0;
            i++;
            continue;
        }
        int h = hex_val(s[i]), l = h < 0 ? -1 : hex_val(s[i + 1]);
        if (h < 0 || l < 0 || j >= 16)
            return 0;
        out[j++] = (uint8_t)(h * 16 + l);
        i += 2;
    }
    return j == 16;
}

static int digits(const uint8_t *s, size_t n, unsigned *out)
{
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    *out = v;
    return 1;
}

/* "YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z" of exactly len bytes -> ns. */
static int timestamp_from_text(int64_t *ns_out, const uint8_t *s, size_t len)
{
    unsigned y, mo, d, h, mi, sec, frac = 0;
    static const unsigned char mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (len < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' ||
        s[len - 1] != 'Z')
        return 0;
    if (!digits(s, 4, &y) || !digits(s + 5, 2, &mo) || !digits(s + 8, 2, &d) ||
        !digits(s + 11, 2, &h) || !digits(s + 14, 2, &mi) || !digits(s + 17, 2, &sec))
        return 0;
    if (len > 20) {
        size_t fd = len - 21; /* digits after the '.' */
        if (s[19] != '.' || fd < 1 || fd > 9 || !digits(s + 20, fd, &frac))
            return 0;
        for (size_t i = fd; i < 9; i++)
            frac *= 10;
    }
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] + (unsigned)(mo == 2 && leap) || h > 23 ||
        mi > 59 || sec > 59)
        return 0;
    int64_t secs = days_from_civil(y, mo, d) * SECS_PER_DAY + h * 3600 + mi * 60 + sec, ns;
    /* Before the epoch with a fraction, go through secs + 1: INT64_MIN ns is
     * -9223372037 s + 145224192 ns, and -9223372037 s alone overflows. */
    if (secs < 0 && frac > 0) {
        if (__builtin_mul_overflow(secs + 1, NS_PER_SEC, &ns) ||
            __builtin_sub_overflow(ns, NS_PER_SEC - (int64_t)frac, &ns))
            return 0;
    } else if (__builtin_mul_overflow(secs, NS_PER_SEC, &ns) ||
               __builtin_add_overflow(ns, (int64_t)frac, &ns)) {
        return 0;
    }
    *ns_out = ns;
    return 1;
}

/* Integer magnitude [0-9]+ at s[0..n) into *m; 0 on overflow or no digit. */
static int parse_magnitude(const char *s, size_t n, uint64_t *m)
{
    uint64_t v = 0;
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        if (__builtin_mul_overflow(v, 10, &v) ||
            __builtin_add_overflow(v, (uint64_t)(s[i] - '0'), &v))
            return 0;
    }
    *m = v;
    return 1;
}

/* A number at pos: into v as int64/uint64/double according to want (the
 * spec type, or SOP_KEY_NULL when there is no spec). */
static int parse_number(parser *ps, sop_key_value *v, sop_key_type want)
{
    const char *s = ps->s + ps->pos;
    size_t i = 0;
    int neg = 0, is_float = 0, is_unsigned = 0;
    if (s[i] == '+' || s[i] == '-')
        neg = s[i++] == '-';
    if (!strncmp(s + i, "inf", 3) || !strncmp(s + i, "nan", 3)) {
        int is_nan = s[i] == 'n';
        if (is_ident_char((unsigned char)s[i + 3]))
            return parse_err(ps, "expected a value");
        ps->pos += i + 3;
        if (want != SOP_KEY_NULL && want != SOP_KEY_DOUBLE)
            return parse_err(ps, "inf/nan given for a non-double field");
        v->type = SOP_KEY_DOUBLE;
        v->u.f64 =
            is_nan ? dbl_from_bits(DBL_QNAN | (neg ? DBL_SIGN : 0)) : (neg ? -HUGE_VAL : HUGE_VAL);
        return SOP_OK;
    }
    size_t digits_start = i;
    while (s[i] >= '0' && s[i] <= '9')
        i++;
    size_t int_digits = i - digits_start;
    size_t frac_digits = 0;
    if (s[i] == '.') {
        is_float = 1;
        i++;
        while (s[i + frac_digits] >= '0' && s[i + frac_digits] <= '9')
            frac_digits++;
        i += frac_digits;
    }
    if (int_digits + frac_digits == 0)
        return parse_err(ps, "expected a value");
    if (s[i] == 'e' || s[i] == 'E') {
        size_t e = i + 1;
        if (s[e] == '+' || s[e] == '-')
            e++;
        if (s[e] < '0' || s[e] > '9')
            return parse_err(ps, "expected exponent digits");
        while (s[e] >= '0' && s[e] <= '9')
            e++;
        is_float = 1;
        i = e;
    }
    size_t num_len = i;
    if (s[i] == 'u') {
        is_unsigned = 1;
        i++;
    }
    if (is_ident_char((unsigned char)s[i]) || s[i] == '.')
        return parse_err(ps, "malformed number");
    if (is_unsigned && (is_float || neg))
        return parse_err(ps, "the u suffix needs a non-negative integer");
    if (want == SOP_KEY_NULL)
        want = is_float ? SOP_KEY_DOUBLE : is_unsigned ? SOP_KEY_UINT64 : SOP_KEY_INT64;
    if (is_unsigned && want != SOP_KEY_UINT64)
        return parse_err(ps, "uint64 literal for another type");
    if (is_float && want != SOP_KEY_DOUBLE)
        return parse_err(ps, "decimal number for an integer field");
    v->type = want;
    if (want == SOP_KEY_DOUBLE) {
        int ok;
        v->u.f64 = parse_double_c(s, num_len, &ok);
        if (!ok)
            return parse_err(ps, "malformed number");
    } else if (want == SOP_KEY_INT64 || want == SOP_KEY_TIMESTAMP || want == SOP_KEY_UINT64) {
        uint64_t m;
        if (!parse_magnitude(s + digits_start, int_digits, &m))
            return parse_err(ps, "integer out of range");
        if (want == SOP_KEY_UINT64) {
            if (neg && m != 0)
                return parse_err(ps, "negative number for a uint64 field");
            v->u.u64 = m;
        } else {
            if (m > (neg ? DBL_SIGN : (uint64_t)INT64_MAX))
                return parse_err(ps, want == SOP_KEY_INT64 && !neg
                                         ? "integer out of int64 range (add u for uint64)"
                                         : "integer out of int64 range");
            v->u.i64 = neg ? -(int64_t)(m - (m > 0)) - (m > 0) : (int64_t)m;
        }
    } else {
        return parse_err(ps, "number given for a non-numeric field");
    }
    ps->pos += i;
    return SOP_OK;
}

/* One value at pos into v (strings borrow ps->tmp). f: its spec field or NULL. */
static int parse_value(parser *ps, sop_key_value *v, const keyspec_field *f, int depth)
{
    int rc;
    size_t len;
    sop_key_type want = f ? (sop_key_type)f->type : SOP_KEY_NULL;
    memset(v, 0, sizeof *v);
    skip_ws(ps);
    const char *s = ps->s + ps->pos;
    if (at_word(ps, "desc") || (!strncmp(s, "desc", 4) && s[4] == '(')) {
        size_t save = ps->pos;
        ps->pos += 4;
        skip_ws(ps);
        if (ps->s[ps->pos] == '(' && depth == 0) {
            if (f && !(f->flags & SOP_KEY_DESC))
                return parse_err(ps, "desc(...) for an ascending field");
            ps->pos++;
            if ((rc = parse_value(ps, v, f, 1)) != SOP_OK)
                return rc;
            skip_ws(ps);
            if (ps->s[ps->pos] != ')')
                return parse_err(ps, "expected ')' after desc(value");
            ps->pos++;
            v->flags = SOP_KEY_DESC;
            return SOP_OK;
        }
        ps->pos = save;
        return parse_err(ps, "expected a value");
    }
    if (s[0] == '"') {
        if ((rc = parse_quoted(ps, &len)) != SOP_OK)
            return rc;
        if (want == SOP_KEY_NULL || want == SOP_KEY_STRING || want == SOP_KEY_BYTES) {
            v->type = want == SOP_KEY_BYTES ? SOP_KEY_BYTES : SOP_KEY_STRING;
            v->u.str = (sop_val){ps->tmp, len};
        } else if (want == SOP_KEY_UUID) {
            if (!uuid_from_text(v->u.uuid, ps->tmp, len))
                return parse_err(ps, "malformed uuid");
            v->type = SOP_KEY_UUID;
        } else if (want == SOP_KEY_TIMESTAMP) {
            if (!timestamp_from_text(&v->u.i64, ps->tmp, len))
                return parse_err(ps, "malformed timestamp (YYYY-MM-DDTHH:MM:SS[.fffffffff]Z, "
                                     "years 1677..2262)");
            v->type = SOP_KEY_TIMESTAMP;
        } else {
            return parse_err(ps, "string given for a non-string field");
        }
    } else if (s[0] == 'x' && s[1] == '"') {
        ps->pos++;
        if ((rc = parse_hex(ps, &len)) != SOP_OK)
            return rc;
        if (want != SOP_KEY_NULL && want != SOP_KEY_BYTES)
            return parse_err(ps, "bytes given for a non-bytes field");
        v->type = SOP_KEY_BYTES;
        v->u.str = (sop_val){ps->tmp, len};
    } else if (!strncmp(s, "uuid\"", 5)) {
        ps->pos += 4;
        if ((rc = parse_quoted(ps, &len)) != SOP_OK)
            return rc;
        if (want != SOP_KEY_NULL && want != SOP_KEY_UUID)
            return parse_err(ps, "uuid given for a non-uuid field");
        if (!uuid_from_text(v->u.uuid, ps->tmp, len))
            return parse_err(ps, "malformed uuid");
        v->type = SOP_KEY_UUID;
    } else if (!strncmp(s, "ts\"", 3)) {
        ps->pos += 2;
        if ((rc = parse_quoted(ps, &len)) != SOP_OK)
            return rc;
        if (want != SOP_KEY_NULL && want != SOP_KEY_TIMESTAMP)
            return parse_err(ps, "timestamp given for a non-timestamp field");
        if (!timestamp_from_text(&v->u.i64, ps->tmp, len))
            return parse_err(ps, "malformed timestamp (YYYY-MM-DDTHH:MM:SS[.fffffffff]Z, "
                                 "years 1677..2262)");
        v->type = SOP_KEY_TIMESTAMP;
    } else if (at_word(ps, "null")) {
        ps->pos += 4;
        if (f && !(f->flags & SOP_KEY_NULLABLE))
            return parse_err(ps, "null for a field that is not nullable");
        v->type = SOP_KEY_NULL;
    } else if (at_word(ps, "true") || at_word(ps, "false")) {
        if (want != SOP_KEY_NULL && want != SOP_KEY_BOOL)
            return parse_err(ps, "bool given for a non-bool field");
        v->type = SOP_KEY_BOOL;
        v->u.b = s[0] == 't';
        ps->pos += v->u.b ? 4 : 5;
    } else if ((s[0] >= '0' && s[0] <= '9') || s[0] == '-' || s[0] == '+' || s[0] == '.' ||
               at_word(ps, "inf") || at_word(ps, "nan")) {
        if ((rc = parse_number(ps, v, want)) != SOP_OK)
            return rc;
    } else {
        return parse_err(ps, "expected a value");
    }
    if (f)
        v->flags = f->flags & SOP_KEY_DESC;
    return SOP_OK;
}

int sop_key_parse(sop_tuple *t, const sop_keyspec *spec, const char *text)
{
    int rc;
    parser *ps = NULL;
    sop_key_value v;
    if (!t || !text)
        return sop_err(SOP_INVAL, "NULL argument to sop_key_parse");
    if (t->rc)
        return t->rc;
    sop_err_clear();
    ps = sop_malloc(sizeof *ps); /* 4 KiB string buffer: keep it off the stack */
    if (!ps)
        return tuple_fail(t, sop_err(SOP_NOMEM, "key text parser"));
    ps->s = text;
    ps->pos = 0;
    ps->what = "key text";
    skip_ws(ps);
    if (ps->s[ps->pos] != '(') {
        rc = parse_err(ps, "expected '('");
        goto out;
    }
    ps->pos++;
    skip_ws(ps);
    if (ps->s[ps->pos] != ')') {
        for (;;) {
            const keyspec_field *f = NULL;
            skip_ws(ps);
            size_t name_len = ident_len(ps), save = ps->pos;
            if (name_len) { /* name=value? */
                ps->pos += name_len;
                skip_ws(ps);
                if (ps->s[ps->pos] == '=') {
                    if (!spec) {
                        rc = parse_err(ps, "name=value needs a key spec");
                        goto out;
                    }
                    size_t idx = t->field_count;
                    if (idx >= spec->field_count || spec->fields[idx].name_len != name_len ||
                        memcmp(spec->fields[idx].name, ps->s + save, name_len) != 0) {
                        ps->pos = save;
                        rc = parse_err(ps, "field name does not match the spec at this position");
                        goto out;
                    }
                    ps->pos++;
                } else {
                    ps->pos = save;
                }
            }
            if (spec) {
                if (t->field_count >= spec->field_count) {
                    rc = parse_err(ps, "more values than the spec has fields");
                    goto out;
                }
                f = &spec->fields[t->field_count];
            }
            if ((rc = parse_value(ps, &v, f, 0)) != SOP_OK)
                goto out;
            if ((rc = sop_tuple_add_value(t, &v)) != SOP_OK)
                goto out;
            skip_ws(ps);
            if (ps->s[ps->pos] == ',') {
                ps->pos++;
                continue;
            }
            if (ps->s[ps->pos] == ')')
                break;
            rc = parse_err(ps, "expected ',' or ')'");
            goto out;
        }
    }
    ps->pos++; /* the ')' */
    skip_ws(ps);
    if (ps->s[ps->pos] != '\0') {
        rc = parse_err(ps, "text after ')'");
        goto out;
    }
    rc = SOP_OK;
out:
    if (rc && !t->rc)
        t->rc = rc;
    sop_free(ps);
    return rc;
}

/* ======================================================================== */
/* Spec text                                                                 */
/* ======================================================================== */

int sop_keyspec_format(char **text_out, const sop_keyspec *spec)
{
    if (!text_out || !spec)
        return sop_err(SOP_INVAL, "NULL argument to sop_keyspec_format");
    *text_out = NULL;
    textw w = {NULL, 0, 0};
    for (int pass = 0; pass < 2; pass++) {
        w.len = 0;
        tw_ch(&w, '(');
        for (size_t i = 0; i < spec->field_count; i++) {
            const keyspec_field *f = &spec->fields[i];
            if (i)
                tw_str(&w, ", ");
            tw_str(&w, f->name);
            tw_ch(&w, ' ');
            tw_str(&w, sop_key_type_name((sop_key_type)f->type));
            if (f->flags & SOP_KEY_DESC)
                tw_str(&w, " desc");
            if (f->flags & SOP_KEY_NULLABLE)
                tw_str(&w, " nullable");
        }
        tw_ch(&w, ')');
        if (pass == 0) {
            w.cap = w.len + 1;
            w.buf = sop_malloc(w.cap);
            if (!w.buf)
                return sop_err(SOP_NOMEM, "key spec text");
        }
    }
    tw_finish(&w, NULL);
    *text_out = w.buf;
    return SOP_OK;
}

int sop_keyspec_parse(sop_keyspec **spec_out, const char *text)
{
    int rc;
    sop_keyspec *spec = NULL;
    parser ps_small; /* only s and pos are used here */
    parser *ps = &ps_small;
    if (!spec_out || !text)
        return sop_err(SOP_INVAL, "NULL argument to sop_keyspec_parse");
    *spec_out = NULL;
    sop_err_clear();
    SOP_TRY(sop_keyspec_new(&spec));
    ps->s = text;
    ps->pos = 0;
    ps->what = "key spec text";
    skip_ws(ps);
    int has_paren = ps->s[ps->pos] == '(';
    if (has_paren)
        ps->pos++;
    for (;;) {
        skip_ws(ps);
        size_t name_off = ps->pos, name_len = ident_len(ps);
        if (!name_len) {
            rc = parse_err(ps, "expected a field name");
            goto out;
        }
        ps->pos += name_len;
        skip_ws(ps);
        size_t type_len = ident_len(ps);
        unsigned type = 0;
        for (unsigned ty = SOP_KEY_BOOL; ty <= SOP_KEY_UUID; ty++) {
            const char *tn = sop_key_type_name((sop_key_type)ty);
            if (strlen(tn) == type_len && !strncmp(ps->s + ps->pos, tn, type_len))
                type = ty;
        }
        if (!type) {
            rc = parse_err(ps, "expected a type (bool int64 uint64 double timestamp string "
                               "bytes uuid)");
            goto out;
        }
        ps->pos += type_len;
        unsigned flags = 0;
        for (;;) {
            skip_ws(ps);
            if (at_word(ps, "asc")) {
                ps->pos += 3;
            } else if (at_word(ps, "desc")) {
                flags |= SOP_KEY_DESC;
                ps->pos += 4;
            } else if (at_word(ps, "nullable")) {
                flags |= SOP_KEY_NULLABLE;
                ps->pos += 8;
            } else {
                break;
            }
        }
        if (spec_field_check(spec, ps->s + name_off, name_len, type, flags) != SOP_OK) {
            char why[256]; /* copied: sop_errmsg()'s buffer is about to be rewritten */
            snprintf(why, sizeof why, "%s", sop_errmsg());
            ps->pos = name_off;
            rc = parse_err(ps, why);
            goto out;
        }
        spec_field_append(spec, ps->s + name_off, name_len, type, flags);
        if (ps->s[ps->pos] == ',') {
            ps->pos++;
            continue;
        }
        break;
    }
    if (has_paren) {
        if (ps->s[ps->pos] != ')') {
            rc = parse_err(ps, "expected ',' or ')'");
            goto out;
        }
        ps->pos++;
        skip_ws(ps);
    }
    if (ps->s[ps->pos] != '\0') {
        rc = parse_err(ps, "expected ',' or the end");
        goto out;
    }
    *spec_out = spec;
    spec = NULL;
    rc = SOP_OK;
out:
    sop_keyspec_free(spec);
    return rc;
}

/* ======================================================================== */
/* Structs as keys                                                           */
/* ======================================================================== */

static int member_err(const sop_key_member *m, size_t idx, const char *what)
{
    return sop_err(SOP_INVAL, "key member %zu (%s): %s", idx, m->name ? m->name : "?", what);
}

/* Is this member description usable? */
static int member_check(const sop_key_member *m, size_t idx)
{
    unsigned type = (unsigned)m->type;
    size_t sz = m->size;
    int is_int_size = sz == 1 || sz == 2 || sz == 4 || sz == 8;
    if (!type_ok(type) || type == SOP_KEY_NULL)
        return member_err(m, idx, "bad type");
    if (m->flags & ~SPEC_FLAGS_ALL)
        return member_err(m, idx, "unknown flags");
    switch (m->ctype) {
    case SOP_KEY_C_SCALAR:
        if ((type == SOP_KEY_BOOL || type == SOP_KEY_INT64 || type == SOP_KEY_UINT64) &&
            is_int_size)
            break;
        if ((type == SOP_KEY_DOUBLE && (sz == 4 || sz == 8)) ||
            (type == SOP_KEY_TIMESTAMP && sz == 8) || (type == SOP_KEY_UUID && sz == 16))
            break;
        return member_err(m, idx,
                          "member size does not fit the type (strings and bytes need "
                          "STRPTR, ARRAY, PTRLEN or ARRAYLEN)");
    case SOP_KEY_C_STRPTR:
        if (type == SOP_KEY_STRING && sz == sizeof(char *))
            break;
        return member_err(m, idx, "STRPTR needs a string type and a char * member");
    case SOP_KEY_C_ARRAY:
        if (((type == SOP_KEY_STRING || type == SOP_KEY_BYTES) && sz >= 1) ||
            (type == SOP_KEY_UUID && sz == 16))
            break;
        return member_err(m, idx, "ARRAY needs a string, bytes or uuid type");
    case SOP_KEY_C_PTRLEN:
        if ((type == SOP_KEY_STRING || type == SOP_KEY_BYTES) && sz == sizeof(void *))
            break;
        return member_err(m, idx, "PTRLEN needs a string or bytes type and a pointer member");
    case SOP_KEY_C_ARRAYLEN:
        if ((type == SOP_KEY_STRING || type == SOP_KEY_BYTES) && sz >= 1)
            break;
        return member_err(m, idx, "ARRAYLEN needs a string or bytes type");
    default:
        return member_err(m, idx, "unknown ctype");
    }
    if ((m->flags & SOP_KEY_NULLABLE) && m->ctype != SOP_KEY_C_STRPTR &&
        m->ctype != SOP_KEY_C_PTRLEN)
        return member_err(m, idx, "only pointer members (STRPTR, PTRLEN) can be nullable");
    return SOP_OK;
}

static int64_t read_signed(const uint8_t *p, size_t sz)
{
    switch (sz) {
    case 1: {
        int8_t v;
        memcpy(&v, p, 1);
        return v;
    }
    case 2: {
        int16_t v;
        memcpy(&v, p, 2);
        return v;
    }
    case 4: {
        int32_t v;
        memcpy(&v, p, 4);
        return v;
    }
    default: {
        int64_t v;
        memcpy(&v, p, 8);
        return v;
    }
    }
}

static uint64_t read_unsigned(const uint8_t *p, size_t sz)
{
    switch (sz) {
    case 1:
        return p[0];
    case 2: {
        uint16_t v;
        memcpy(&v, p, 2);
        return v;
    }
    case 4: {
        uint32_t v;
        memcpy(&v, p, 4);
        return v;
    }
    default: {
        uint64_t v;
        memcpy(&v, p, 8);
        return v;
    }
    }
}

/* Store the low sz bytes of v (native endianness) at p. */
static void write_int(uint8_t *p, size_t sz, uint64_t v)
{
    switch (sz) {
    case 1: {
        uint8_t x = (uint8_t)v;
        memcpy(p, &x, 1);
        break;
    }
    case 2: {
        uint16_t x = (uint16_t)v;
        memcpy(p, &x, 2);
        break;
    }
    case 4: {
        uint32_t x = (uint32_t)v;
        memcpy(p, &x, 4);
        break;
    }
    default:
        memcpy(p, &v, 8);
        break;
    }
}

static size_t read_size(const uint8_t *obj, size_t off)
{
    size_t v;
    memcpy(&v, obj + off, sizeof v);
    return v;
}

static const void *read_ptr(const uint8_t *p)
{
    const void *v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Add member m of obj to t. */
static int add_member(sop_tuple *t, const sop_key_member *m, size_t idx, const uint8_t *obj)
{
    const uint8_t *p = obj + m->offset;
    unsigned dir = m->flags & SOP_KEY_DESC;
    size_t len;
    const void *data;
    switch (m->ctype) {
    case SOP_KEY_C_SCALAR:
        switch (m->type) {
        case SOP_KEY_BOOL:
            return sop_tuple_add_bool(t, read_unsigned(p, m->size) != 0, dir);
        case SOP_KEY_INT64:
            return sop_tuple_add_int64(t, read_signed(p, m->size), dir);
        case SOP_KEY_UINT64:
            return sop_tuple_add_uint64(t, read_unsigned(p, m->size), dir);
        case SOP_KEY_DOUBLE:
            if (m->size == 4) {
                float f;
                memcpy(&f, p, 4);
                return sop_tuple_add_double(t, f, dir);
            } else {
                double d;
                memcpy(&d, p, 8);
                return sop_tuple_add_double(t, d, dir);
            }
        case SOP_KEY_TIMESTAMP:
            return sop_tuple_add_timestamp(t, read_signed(p, 8), dir);
        default: /* UUID, by member_check */
            return sop_tuple_add_uuid(t, p, dir);
        }
    case SOP_KEY_C_STRPTR:
        data = read_ptr(p);
        if (!data) {
            if (m->flags & SOP_KEY_NULLABLE)
                return sop_tuple_add_null(t, dir);
            return tuple_fail(t, member_err(m, idx,
                                            "NULL string in a member that is not "
                                            "nullable"));
        }
        return sop_tuple_add_str(t, data, strlen(data), dir);
    case SOP_KEY_C_ARRAY:
        if (m->type == SOP_KEY_UUID)
            return sop_tuple_add_uuid(t, p, dir);
        if (m->type == SOP_KEY_STRING)
            return sop_tuple_add_str(t, (const char *)p, strnlen((const char *)p, m->size), dir);
        return sop_tuple_add_bytes(t, p, m->size, dir);
    case SOP_KEY_C_PTRLEN:
        data = read_ptr(p);
        len = read_size(obj, m->len_offset);
        if (!data && (m->flags & SOP_KEY_NULLABLE))
            return sop_tuple_add_null(t, dir);
        if (!data && len)
            return tuple_fail(t, member_err(m, idx, "NULL pointer with a nonzero length"));
        break;
    default: /* SOP_KEY_C_ARRAYLEN */
        data = p;
        len = read_size(obj, m->len_offset);
        if (len > m->size)
            return tuple_fail(t, member_err(m, idx, "length member exceeds the array size"));
        break;
    }
    if (m->type == SOP_KEY_STRING)
        return sop_tuple_add_str(t, data, len, dir);
    return sop_tuple_add_bytes(t, data, len, dir);
}

int sop_tuple_add_struct(sop_tuple *t, const sop_key_member *members, size_t member_count,
                         size_t field_count, const void *obj)
{
    int rc = tuple_begin(t, 0);
    if (rc)
        return rc;
    if ((!members && member_count) || !obj)
        return tuple_fail(t, sop_err(SOP_INVAL, "NULL argument to sop_tuple_add_struct"));
    if (field_count > member_count)
        return tuple_fail(
            t, sop_err(SOP_INVAL, "field_count %zu > member_count %zu", field_count, member_count));
    for (size_t i = 0; i < field_count; i++) {
        if ((rc = member_check(&members[i], i)) != SOP_OK)
            return tuple_fail(t, rc);
        if ((rc = add_member(t, &members[i], i, obj)) != SOP_OK)
            return rc;
    }
    return SOP_OK;
}

int sop_key_pack(void *buf, size_t buf_cap, size_t *key_len_out, const sop_key_member *members,
                 size_t member_count, size_t field_count, const void *obj)
{
    sop_tuple t;
    sop_val key;
    int rc;
    if (!key_len_out || !buf)
        return sop_err(SOP_INVAL, "NULL argument to sop_key_pack");
    *key_len_out = 0;
    sop_err_clear();
    sop_tuple_start(&t, buf, buf_cap);
    sop_tuple_add_struct(&t, members, member_count, field_count, obj);
    if ((rc = sop_tuple_finish(&key, &t)) == SOP_OK)
        *key_len_out = key.len;
    return rc;
}

/* Store decoded value v into member m of obj. in_scratch: v's string data
 * lives in the iterator's scratch (copy it) rather than the key (borrow). */
static int unpack_member(uint8_t *obj, const sop_key_member *m, size_t idx, const sop_key_value *v,
                         int in_scratch, uint8_t *storage, size_t storage_cap, size_t *storage_used)
{
    uint8_t *p = obj + m->offset;
    if (v->type == SOP_KEY_NULL) {
        if ((m->ctype != SOP_KEY_C_STRPTR && m->ctype != SOP_KEY_C_PTRLEN) ||
            !(m->flags & SOP_KEY_NULLABLE))
            return member_err(m, idx, "null value for a member that cannot hold null");
        /* A null keeps its field's direction in the encoding: packing the
         * struct back must give the same bytes. */
        if ((v->flags & SOP_KEY_DESC) != (m->flags & SOP_KEY_DESC))
            return member_err(m, idx, "key field and member differ in direction");
        const void *null_ptr = NULL;
        memcpy(p, &null_ptr, sizeof null_ptr);
        if (m->ctype == SOP_KEY_C_PTRLEN) {
            size_t zero = 0;
            memcpy(obj + m->len_offset, &zero, sizeof zero);
        }
        return SOP_OK;
    }
    if (v->type != m->type)
        return sop_err(SOP_INVAL, "key member %zu (%s): key field is %s, member is %s", idx,
                       m->name ? m->name : "?", sop_key_type_name(v->type),
                       sop_key_type_name(m->type));
    if ((v->flags & SOP_KEY_DESC) != (m->flags & SOP_KEY_DESC))
        return member_err(m, idx, "key field and member differ in direction");
    switch (m->ctype) {
    case SOP_KEY_C_SCALAR:
        switch (m->type) {
        case SOP_KEY_BOOL:
            write_int(p, m->size, (uint64_t)(v->u.b != 0));
            return SOP_OK;
        case SOP_KEY_INT64:
        case SOP_KEY_TIMESTAMP: {
            int64_t lim = m->size == 8 ? INT64_MAX : (int64_t)((1ull << (8 * m->size - 1)) - 1);
            if (v->u.i64 > lim || v->u.i64 < -lim - 1)
                return member_err(m, idx, "value out of the member's range");
            write_int(p, m->size, (uint64_t)v->u.i64);
            return SOP_OK;
        }
        case SOP_KEY_UINT64: {
            uint64_t lim = m->size == 8 ? UINT64_MAX : (1ull << (8 * m->size)) - 1;
            if (v->u.u64 > lim)
                return member_err(m, idx, "value out of the member's range");
            write_int(p, m->size, v->u.u64);
            return SOP_OK;
        }
        case SOP_KEY_DOUBLE:
            if (m->size == 4) {
                float f = (float)v->u.f64;
                if (!isnan(v->u.f64) && (double)f != v->u.f64)
                    return member_err(m, idx, "value does not fit a float");
                if (isnan(v->u.f64))
                    f = signbit(v->u.f64) ? -NAN : NAN;
                memcpy(p, &f, 4);
            } else {
                memcpy(p, &v->u.f64, 8);
            }
            return SOP_OK;
        default: /* UUID */
            memcpy(p, v->u.uuid, 16);
            return SOP_OK;
        }
    case SOP_KEY_C_ARRAY:
        if (m->type == SOP_KEY_UUID) {
            memcpy(p, v->u.uuid, 16);
            return SOP_OK;
        }
        if (m->type == SOP_KEY_BYTES) {
            if (v->u.str.len != m->size)
                return member_err(m, idx, "byte string length differs from the array size");
        } else if (v->u.str.len > m->size) {
            return member_err(m, idx, "string longer than the array");
        } else if (memchr(v->u.str.data, 0, v->u.str.len)) {
            return member_err(m, idx, "string contains NUL; use PTRLEN or ARRAYLEN");
        }
        if (v->u.str.len)
            memcpy(p, v->u.str.data, v->u.str.len);
        memset(p + v->u.str.len, 0, m->size - v->u.str.len);
        return SOP_OK;
    case SOP_KEY_C_ARRAYLEN:
        if (v->u.str.len > m->size)
            return member_err(m, idx, "value longer than the array");
        if (v->u.str.len)
            memcpy(p, v->u.str.data, v->u.str.len);
        memset(p + v->u.str.len, 0, m->size - v->u.str.len);
        memcpy(obj + m->len_offset, &v->u.str.len, sizeof(size_t));
        return SOP_OK;
    default: { /* STRPTR, PTRLEN */
        const void *data = v->u.str.data;
        size_t len = v->u.str.len;
        int is_strptr = m->ctype == SOP_KEY_C_STRPTR;
        if (is_strptr && memchr(data, 0, len))
            return member_err(m, idx, "string contains NUL; use PTRLEN");
        if (is_strptr || in_scratch) {
            size_t need = len + (m->type == SOP_KEY_STRING);
            if (need > storage_cap - *storage_used)
                return sop_err(SOP_INVAL,
                               "key member %zu (%s): storage too small (%zu bytes "
                               "used, %zu more needed, capacity %zu)",
                               idx, m->name ? m->name : "?", *storage_used, need, storage_cap);
            uint8_t *d = storage + *storage_used;
            if (len)
                memcpy(d, data, len);
            if (m->type == SOP_KEY_STRING)
                d[len] = '\0';
            *storage_used += need;
            data = d;
        } else if (!data) { /* empty, borrowed from the key: never NULL */
            data = "";
        }
        memcpy(p, &data, sizeof data);
        if (!is_strptr)
            memcpy(obj + m->len_offset, &len, sizeof len);
        return SOP_OK;
    }
    }
}

int sop_key_unpack(void *obj_out, size_t *field_count_out, void *storage, size_t storage_cap,
                   const sop_key_member *members, size_t member_count, const sop_val *key)
{
    int rc;
    sop_key_iter it; /* on the stack: unpacking in a scan loop allocates nothing */
    sop_key_value v;
    size_t idx = 0, storage_used = 0;
    if (field_count_out)
        *field_count_out = 0;
    if (!obj_out || (!members && member_count) || (!storage && storage_cap))
        return sop_err(SOP_INVAL, "NULL argument to sop_key_unpack");
    sop_err_clear();
    if ((rc = sop_key_iter_init(&it, key)) != SOP_OK)
        return rc;
    for (;;) {
        int in_scratch = 0;
        rc = iter_next(&v, &in_scratch, &it);
        if (rc == SOP_NOTFOUND)
            break;
        if (rc)
            return rc;
        if (idx >= member_count)
            return sop_err(SOP_INVAL, "key has more fields than the %zu members", member_count);
        if ((rc = member_check(&members[idx], idx)) != SOP_OK)
            return rc;
        if ((rc = unpack_member(obj_out, &members[idx], idx, &v, in_scratch, storage, storage_cap,
                                &storage_used)) != SOP_OK)
            return rc;
        idx++;
    }
    if (field_count_out)
        *field_count_out = idx;
    return SOP_OK;
}

int sop_keyspec_from_members(sop_keyspec **spec_out, const sop_key_member *members,
                             size_t member_count)
{
    int rc;
    sop_keyspec *spec = NULL;
    if (!spec_out || (!members && member_count))
        return sop_err(SOP_INVAL, "NULL argument to sop_keyspec_from_members");
    *spec_out = NULL;
    sop_err_clear();
    SOP_TRY(sop_keyspec_new(&spec));
    for (size_t i = 0; i < member_count; i++) {
        SOP_TRY(member_check(&members[i], i));
        if (!members[i].name) {
            rc = member_err(&members[i], i, "no name");
            goto out;
        }
        SOP_TRY(sop_keyspec_add(spec, members[i].name, members[i].type, members[i].flags));
    }
    *spec_out = spec;
    spec = NULL;
out:
    sop_keyspec_free(spec);
    return rc;
}
