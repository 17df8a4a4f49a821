/*
 * json.c - JSON strings, base64 and the dump-line parser of the sop tool.
 * Guarantees (J1)-(J3) are stated in json.h. No global state.
 */
#include "json.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* UTF-8                                                                     */
/* ------------------------------------------------------------------------ */

/* Length of the well-formed UTF-8 sequence at p (at most end - p bytes), or
 * 0 if it is not one (RFC 3629 table 3-7). */
static size_t utf8_seq_len(const uint8_t *p, const uint8_t *end)
{
    uint8_t c = p[0];
    size_t avail = (size_t)(end - p);
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return avail >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (avail < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
            return 0;
        if (c == 0xE0 && p[1] < 0xA0)
            return 0; /* overlong */
        if (c == 0xED && p[1] > 0x9F)
            return 0; /* surrogate */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (avail < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && p[1] < 0x90)
            return 0; /* overlong */
        if (c == 0xF4 && p[1] > 0x8F)
            return 0; /* above U+10FFFF */
        return 4;
    }
    return 0;
}

int json_utf8_valid(const uint8_t *data, size_t len)
{
    if (len == 0)
        return 1; /* data may be NULL */
    const uint8_t *p = data, *end = data + len;
    while (p < end) {
        if (*p < 0x80) { /* fast path for ASCII runs */
            p++;
            continue;
        }
        size_t n = utf8_seq_len(p, end);
        if (!n)
            return 0;
        p += n;
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                   */
/* ------------------------------------------------------------------------ */

/* Write a string body. A byte that does not start a well-formed UTF-8
 * sequence becomes U+FFFD, so the output is valid JSON whatever the input
 * (J2); callers that need the exact bytes back validate first (J1). */
static void write_string_body(FILE *f, const uint8_t *data, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    putc('"', f);
    if (len == 0) { /* data may be NULL (an empty sop_val) */
        putc('"', f);
        return;
    }
    const uint8_t *p = data, *end = data + len, *run = data;
    while (p < end) {
        uint8_t c = *p;
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            p++;
            continue;
        }
        if (c >= 0x80) {
            size_t n = utf8_seq_len(p, end);
            if (n) {
                p += n;
                continue;
            }
            fwrite(run, 1, (size_t)(p - run), f);
            fputs("\\ufffd", f);
            p++;
            run = p;
            continue;
        }
        fwrite(run, 1, (size_t)(p - run), f);
        switch (c) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        case '\b':
            fputs("\\b", f);
            break;
        case '\f':
            fputs("\\f", f);
            break;
        default:
            fputs("\\u00", f);
            putc(hex[c >> 4], f);
            putc(hex[c & 15], f);
        }
        p++;
        run = p;
    }
    fwrite(run, 1, (size_t)(p - run), f);
    putc('"', f);
}

void json_write_string(FILE *f, const uint8_t *data, size_t len)
{
    write_string_body(f, data, len);
}

void json_write_text(FILE *f, const char *text)
{
    write_string_body(f, (const uint8_t *)text, strlen(text));
}

void json_write_bytes(FILE *f, const uint8_t *data, size_t len)
{
    if (json_utf8_valid(data, len)) {
        write_string_body(f, data, len);
        return;
    }
    fputs("{\"b64\":\"", f);
    base64_write(f, data, len);
    fputs("\"}", f);
}

/* ------------------------------------------------------------------------ */
/* Base64                                                                    */
/* ------------------------------------------------------------------------ */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void base64_write(FILE *f, const uint8_t *data, size_t len)
{
    char out[4];
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        out[0] = b64_alphabet[v >> 18];
        out[1] = b64_alphabet[(v >> 12) & 63];
        out[2] = b64_alphabet[(v >> 6) & 63];
        out[3] = b64_alphabet[v & 63];
        fwrite(out, 1, 4, f);
    }
    if (i < len) {
        uint32_t v = (uint32_t)data[i] << 16 | (i + 1 < len ? (uint32_t)data[i + 1] << 8 : 0);
        out[0] = b64_alphabet[v >> 18];
        out[1] = b64_alphabet[(v >> 12) & 63];
        out[2] = i + 1 < len ? b64_alphabet[(v >> 6) & 63] : '=';
        out[3] = '=';
        fwrite(out, 1, 4, f);
    }
}

static int b64_val(uint8_t c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int base64_decode(uint8_t *out, size_t *out_len, const uint8_t *text, size_t len)
{
    size_t o = 0;
    if (len % 4)
        return -1;
    for (size_t i = 0; i < len; i += 4) {
        int last = i + 4 == len;
        int pad = 0;
        if (last && text[i + 3] == '=')
            pad = text[i + 2] == '=' ? 2 : 1;
        int v0 = b64_val(text[i]), v1 = b64_val(text[i + 1]);
        int v2 = pad >= 2 ? 0 : b64_val(text[i + 2]);
        int v3 = pad >= 1 ? 0 : b64_val(text[i + 3]);
        if (v0 < 0 || v1 < 0 || v2 < 0 || v3 < 0)
            return -1;
        uint32_t v = (uint32_t)v0 << 18 | (uint32_t)v1 << 12 | (uint32_t)v2 << 6 | (uint32_t)v3;
        /* Canonical form only: the bits dropped by padding must be zero,
         * so every byte string has exactly one accepted spelling. */
        if ((pad == 2 && (v & 0xFFFF)) || (pad == 1 && (v & 0xFF)))
            return -1;
        out[o++] = (uint8_t)(v >> 16);
        if (pad < 2)
            out[o++] = (uint8_t)(v >> 8);
        if (pad < 1)
            out[o++] = (uint8_t)v;
    }
    *out_len = o;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Parsing one dump line                                                     */
/* ------------------------------------------------------------------------ */

typedef struct jparser {
    const uint8_t *s;
    size_t pos, len;
    char *why;
    size_t why_cap;
    int nomem;
} jparser;

static int jfail(jparser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int jfail(jparser *p, const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(p->why, p->why_cap, "col %zu: %s", p->pos + 1, msg);
    return -1;
}

void json_buf_dispose(json_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static int buf_reserve(json_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->len < extra) {
        if (cap > SIZE_MAX / 2)
            return -1;
        cap *= 2;
    }
    uint8_t *d = realloc(b->data, cap);
    if (!d)
        return -1;
    b->data = d;
    b->cap = cap;
    return 0;
}

static void skip_ws(jparser *p)
{
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                               p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
        p->pos++;
}

int json_blank(const char *line, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (line[i] != ' ' && line[i] != '\t' && line[i] != '\n' && line[i] != '\r')
            return 0;
    return 1;
}

static int hex4(jparser *p, uint32_t *out)
{
    uint32_t v = 0;
    if (p->len - p->pos < 4)
        return jfail(p, "expected 4 hex digits after \\u");
    for (int i = 0; i < 4; i++) {
        uint8_t c = p->s[p->pos + (size_t)i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return jfail(p, "expected 4 hex digits after \\u");
        v = v << 4 | (uint32_t)d;
    }
    p->pos += 4;
    *out = v;
    return 0;
}

static void put_utf8(json_buf *b, uint32_t cp)
{
    uint8_t *o = b->data + b->len;
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        b->len += 1;
    } else if (cp < 0x800) {
        o[0] = (uint8_t)(0xC0 | cp >> 6);
        o[1] = (uint8_t)(0x80 | (cp & 63));
        b->len += 2;
    } else if (cp < 0x10000) {
        o[0] = (uint8_t)(0xE0 | cp >> 12);
        o[1] = (uint8_t)(0x80 | ((cp >> 6) & 63));
        o[2] = (uint8_t)(0x80 | (cp & 63));
        b->len += 3;
    } else {
        o[0] = (uint8_t)(0xF0 | cp >> 18);
        o[1] = (uint8_t)(0x80 | ((cp >> 12) & 63));
        o[2] = (uint8_t)(0x80 | ((cp >> 6) & 63));
        o[3] = (uint8_t)(0x80 | (cp & 63));
        b->len += 4;
    }
}

/* A JSON string at pos (the opening '"'), decoded into out (replacing it). */
static int parse_string(jparser *p, json_buf *out)
{
    out->len = 0;
    if (p->pos >= p->len || p->s[p->pos] != '"')
        return jfail(p, "expected '\"'");
    p->pos++;
    for (;;) {
        size_t run = p->pos;
        while (p->pos < p->len && p->s[p->pos] >= 0x20 && p->s[p->pos] != '"' &&
               p->s[p->pos] != '\\')
            p->pos++;
        size_t n = p->pos - run;
        if (n) {
            if (!json_utf8_valid(p->s + run, n)) {
                p->pos = run;
                return jfail(p, "string is not valid UTF-8");
            }
            if (buf_reserve(out, n)) {
                p->nomem = 1;
                return -1;
            }
            memcpy(out->data + out->len, p->s + run, n);
            out->len += n;
        }
        if (p->pos >= p->len)
            return jfail(p, "unterminated string");
        uint8_t c = p->s[p->pos];
        if (c == '"') {
            p->pos++;
            return 0;
        }
        if (c < 0x20)
            return jfail(p, "control character 0x%02x in a string (escape it)", c);
        /* backslash */
        p->pos++;
        if (p->pos >= p->len)
            return jfail(p, "unterminated string");
        if (buf_reserve(out, 4)) {
            p->nomem = 1;
            return -1;
        }
        c = p->s[p->pos++];
        switch (c) {
        case '"':
            out->data[out->len++] = '"';
            break;
        case '\\':
            out->data[out->len++] = '\\';
            break;
        case '/':
            out->data[out->len++] = '/';
            break;
        case 'b':
            out->data[out->len++] = '\b';
            break;
        case 'f':
            out->data[out->len++] = '\f';
            break;
        case 'n':
            out->data[out->len++] = '\n';
            break;
        case 'r':
            out->data[out->len++] = '\r';
            break;
        case 't':
            out->data[out->len++] = '\t';
            break;
        case 'u': {
            uint32_t cp, lo;
            if (hex4(p, &cp))
                return -1;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return jfail(p, "lone low surrogate \\u%04x", (unsigned)cp);
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (p->len - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u')
                    return jfail(p, "high surrogate \\u%04x without its low half", (unsigned)cp);
                p->pos += 2;
                if (hex4(p, &lo))
                    return -1;
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return jfail(p, "high surrogate followed by \\u%04x", (unsigned)lo);
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            put_utf8(out, cp);
            break;
        }
        default:
            p->pos--;
            return jfail(p, "bad escape \\%c", c >= 0x20 && c < 0x7F ? c : '?');
        }
    }
}

/* A member value: a string, or {"b64":"..."}. */
static int parse_bytes(jparser *p, json_buf *out, json_buf *scratch)
{
    if (p->pos < p->len && p->s[p->pos] == '"')
        return parse_string(p, out);
    if (p->pos >= p->len || p->s[p->pos] != '{')
        return jfail(p, "expected a string or {\"b64\":\"...\"}");
    p->pos++;
    skip_ws(p);
    size_t name_pos = p->pos;
    if (parse_string(p, scratch))
        return -1;
    if (scratch->len != 3 || memcmp(scratch->data, "b64", 3) != 0) {
        p->pos = name_pos;
        return jfail(p, "expected \"b64\" (the only member of a bytes object)");
    }
    skip_ws(p);
    if (p->pos >= p->len || p->s[p->pos] != ':')
        return jfail(p, "expected ':'");
    p->pos++;
    skip_ws(p);
    size_t text_pos = p->pos;
    if (parse_string(p, scratch))
        return -1;
    out->len = 0;
    if (buf_reserve(out, scratch->len / 4 * 3 + 1)) {
        p->nomem = 1;
        return -1;
    }
    if (base64_decode(out->data, &out->len, scratch->data, scratch->len)) {
        p->pos = text_pos;
        return jfail(p, "malformed base64");
    }
    skip_ws(p);
    if (p->pos >= p->len || p->s[p->pos] != '}')
        return jfail(p, "expected '}' (a bytes object has only \"b64\")");
    p->pos++;
    return 0;
}

int json_parse_item(json_buf *key, json_buf *value, const char *line, size_t len, char *why,
                    size_t why_cap)
{
    jparser p = {(const uint8_t *)line, 0, len, why, why_cap, 0};
    json_buf name = {0};
    int have_key = 0, have_value = 0, rc = -1;
    skip_ws(&p);
    if (p.pos >= p.len || p.s[p.pos] != '{') {
        jfail(&p, "expected '{' (each line is {\"key\":...,\"value\":...})");
        goto out;
    }
    p.pos++;
    for (;;) {
        skip_ws(&p);
        size_t name_pos = p.pos;
        if (parse_string(&p, &name))
            goto out;
        json_buf *target;
        int *seen;
        if (name.len == 3 && memcmp(name.data, "key", 3) == 0) {
            target = key;
            seen = &have_key;
        } else if (name.len == 5 && memcmp(name.data, "value", 5) == 0) {
            target = value;
            seen = &have_value;
        } else {
            p.pos = name_pos;
            jfail(&p, "unexpected member (only \"key\" and \"value\")");
            goto out;
        }
        if (*seen) {
            p.pos = name_pos;
            jfail(&p, "duplicate member \"%s\"", target == key ? "key" : "value");
            goto out;
        }
        *seen = 1;
        skip_ws(&p);
        if (p.pos >= p.len || p.s[p.pos] != ':') {
            jfail(&p, "expected ':'");
            goto out;
        }
        p.pos++;
        skip_ws(&p);
        if (parse_bytes(&p, target, &name))
            goto out;
        skip_ws(&p);
        if (p.pos < p.len && p.s[p.pos] == ',') {
            p.pos++;
            continue;
        }
        if (p.pos < p.len && p.s[p.pos] == '}') {
            p.pos++;
            break;
        }
        jfail(&p, "expected ',' or '}'");
        goto out;
    }
    skip_ws(&p);
    if (p.pos != p.len) {
        jfail(&p, "text after the object");
        goto out;
    }
    if (!have_key || !have_value) {
        p.pos = 0;
        jfail(&p, "missing member \"%s\"", have_key ? "value" : "key");
        goto out;
    }
    rc = 0;
out:
    json_buf_dispose(&name);
    if (rc && p.nomem) {
        snprintf(why, why_cap, "out of memory");
        rc = -2;
    }
    return rc;
}
