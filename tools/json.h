/*
 * json.h - the little JSON the sop tool needs: writing strings (escaped)
 * and byte strings (a JSON string when the bytes are valid UTF-8, else a
 * {"b64":"..."} object), base64, and the parser for one line of a dump
 * ({"key":...,"value":...}).
 *
 *   (J1) Every byte string written by json_write_bytes() reads back, through
 *        json_parse_item(), as exactly the same bytes.
 *   (J2) Output is always valid JSON (RFC 8259): strings are valid UTF-8,
 *        control characters, '"' and '\' are escaped.
 *   (J3) The parser never reads outside [line, line + len) and accepts only
 *        the dump shape; anything else gives a one-line reason.
 */
#ifndef SOP_TOOLS_JSON_H
#define SOP_TOOLS_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/** 1 if @p data is well-formed UTF-8 (no overlong forms, no surrogates,
 *  nothing above U+10FFFF). NUL bytes are allowed. */
int json_utf8_valid(const uint8_t *data, size_t len);

/** Write @p len bytes of valid UTF-8 as a JSON string. */
void json_write_string(FILE *f, const uint8_t *data, size_t len);
/** Write a NUL-terminated text as a JSON string; invalid UTF-8 bytes become
 *  U+FFFD (for engine messages, names). */
void json_write_text(FILE *f, const char *text);
/** Write bytes: a JSON string if valid UTF-8, else {"b64":"<base64>"}. */
void json_write_bytes(FILE *f, const uint8_t *data, size_t len);

/** Standard base64 (RFC 4648, with padding) of @p len bytes into @p f. */
void base64_write(FILE *f, const uint8_t *data, size_t len);
/**
 * Decode standard base64 with padding (length a multiple of 4, no
 * whitespace) into @p out, which needs len / 4 * 3 bytes.
 * @return 0 and *out_len, or -1 for malformed input.
 */
int base64_decode(uint8_t *out, size_t *out_len, const uint8_t *text, size_t len);

/** A growable byte buffer (the parser's output). */
typedef struct json_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} json_buf;

void json_buf_dispose(json_buf *b);

/**
 * Parse one dump line: a JSON object with exactly the members "key" and
 * "value" (any order), each a string or an object {"b64":"..."}.
 * Surrounding whitespace is allowed. @p key and @p value receive the bytes.
 * @return 0 on success; -1 with a reason in @p why (e.g. "col 12: expected
 *     ':'"), -2 when out of memory.
 */
int json_parse_item(json_buf *key, json_buf *value, const char *line, size_t len, char *why,
                    size_t why_cap);

/** 1 if the line is only JSON whitespace (blank lines are skipped). */
int json_blank(const char *line, size_t len);

#endif
