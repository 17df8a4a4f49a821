/*
 * sop_keys.h - typed compound keys: an order-preserving tuple encoding,
 * index specifications, structs as keys, and key text for tools.
 *
 * A store's keys are byte strings ordered by memcmp (shorter first on a
 * common prefix). This header turns a tuple of typed fields - for example
 * ("US", "Sales", 42) with the last field descending - into such a byte
 * string so that the byte order IS the tuple order. Nothing in the engine
 * needs to know about types: a store of encoded tuples uses the default
 * bytewise order, and a range scan over a tuple prefix is a cursor bounded
 * by sop_cursor_set_range(c, prefix, prefix end, SOP_RANGE_HI_EXCLUSIVE),
 * the end from sop_key_prefix_end.
 *
 * Guarantees (each one is tested in tests/test_keys.c and fuzzed by
 * fuzz/fuzz_keys.c):
 *   (K1) Order: for any two tuples a, b, sign(memcmp order of enc(a), enc(b))
 *        == sign(sop_key_values_compare(a, b)), per-field directions included.
 *   (K2) Round trip: decode(enc(t)) == t, and enc(decode(k)) == k for every
 *        byte string k the decoder accepts: the encoding is canonical, so
 *        equal tuples have equal bytes (a store may compare specs and keys
 *        with memcmp).
 *   (K3) Prefixes: enc of the first j fields of t is a byte prefix of enc(t);
 *        [enc(p), sop_key_prefix_end(enc(p))) holds exactly the keys whose
 *        first j fields equal p, whatever the fields' directions.
 *   (K4) Robustness: every decoder here (keys, specs, text) checks every
 *        length before reading, returns SOP_CORRUPT or SOP_INVAL for bad
 *        input, and never reads outside [data, data + len).
 *
 * The order of values (sop_key_values_compare):
 *   - Fields are compared left to right; the first difference decides; a
 *     tuple that is a proper prefix of another sorts first.
 *   - Within one field position: an ascending field sorts before a
 *     descending one (only ad-hoc tuples can mix them); then the type, in
 *     sop_key_type order (null < bool < int64 < uint64 < double < timestamp
 *     < string < bytes < uuid), so null sorts first; then the value.
 *     SOP_KEY_DESC reverses the type and value order of that field, so in a
 *     descending field null sorts last.
 *   - int64, uint64 and timestamps numerically; false < true.
 *   - double by IEEE 754 totalOrder: -NaN < -inf < ... < -0.0 < +0.0 < ...
 *     < +inf < +NaN. NaN payloads are canonicalised on encode (every NaN
 *     becomes the quiet NaN of its sign), so all NaNs of one sign are equal.
 *   - string: by UTF-8 bytes, which is Unicode code point order (no
 *     collation, no normalisation). Strings must be valid UTF-8 (U+0000 is
 *     allowed); invalid input is SOP_INVAL on encode, SOP_CORRUPT on decode.
 *     Use bytes for anything else.
 *   - bytes and uuid: memcmp, shorter first.
 *
 * The byte-by-byte encoding is in docs/KEYS.md and src/keys.h.
 *
 * Memory and threads: nothing here keeps global state; every function is
 * safe to call from any thread on distinct objects. A sop_keyspec is
 * immutable once built and may then be read by any number of threads.
 * Allocation goes through the libsop allocator (sop_set_allocator). Failure
 * details are in sop_errmsg().
 */
#ifndef SOP_KEYS_H
#define SOP_KEYS_H

#include "sop.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Types, directions, values                                                 */
/* ------------------------------------------------------------------------ */

/**
 * Field types. The numbers are stored in index specifications and never
 * change; the enum order is also the cross-type sort order within a field.
 */
typedef enum sop_key_type {
    SOP_KEY_NULL = 0,      /**< no value; sorts first in an ascending field */
    SOP_KEY_BOOL = 1,      /**< false < true */
    SOP_KEY_INT64 = 2,     /**< int64_t */
    SOP_KEY_UINT64 = 3,    /**< uint64_t */
    SOP_KEY_DOUBLE = 4,    /**< IEEE 754 binary64, total order, NaN canonicalised */
    SOP_KEY_TIMESTAMP = 5, /**< int64_t nanoseconds since 1970-01-01T00:00:00Z
                            *   (UTC, no leap seconds): years 1677..2262 */
    SOP_KEY_STRING = 6,    /**< valid UTF-8, any length, may contain U+0000 */
    SOP_KEY_BYTES = 7,     /**< any bytes, any length */
    SOP_KEY_UUID = 8       /**< 16 bytes, compared as bytes (RFC 4122 order) */
} sop_key_type;

/** Field flags, for tuples (SOP_KEY_DESC only), specs and struct members. */
#define SOP_KEY_ASC      0x0u /**< ascending (the default; spelled out for readers) */
#define SOP_KEY_DESC     0x1u /**< descending: this field's order is reversed */
#define SOP_KEY_NULLABLE 0x2u /**< specs and members: the field may be null */

/** Most fields in a spec, and the longest field name (ASCII identifier). */
#define SOP_KEYSPEC_MAX_FIELDS   64
#define SOP_KEYSPEC_MAX_NAME_LEN 60
/** Longest encoded spec (fits sop_store_options.key_spec). */
#define SOP_KEYSPEC_MAX_LEN 4096

/**
 * One decoded field. For STRING and BYTES, u.str is borrowed: the function
 * that filled the value says how long it lives. Strings are not
 * NUL-terminated and may contain NUL bytes.
 */
typedef struct sop_key_value {
    sop_key_type type;
    unsigned flags; /**< SOP_KEY_DESC or 0 (never NULLABLE) */
    union {
        int b;            /**< BOOL: 0 or 1 */
        int64_t i64;      /**< INT64, TIMESTAMP (ns since the epoch) */
        uint64_t u64;     /**< UINT64 */
        double f64;       /**< DOUBLE */
        sop_val str;      /**< STRING, BYTES */
        uint8_t uuid[16]; /**< UUID */
    } u;
} sop_key_value;

/** Lower-case type name ("int64", ...), as used by the spec text; "?" if
 *  @p type is not a sop_key_type. Constant string. */
SOP_API const char *sop_key_type_name(sop_key_type type);

/** Free memory handed out by this header's *_alloc / text calls. NULL-safe. */
SOP_API void sop_key_free(void *ptr);

/* ------------------------------------------------------------------------ */
/* Building keys: sop_tuple                                                  */
/* ------------------------------------------------------------------------ */

/**
 * A key builder: caller-owned workspace (put it on the stack). Its fields
 * are private. Use (txn, store and value are the caller's; tests/test_build.sh
 * compiles and runs this example as it stands):
 *
 * @code
 *     uint8_t buf[SOP_MAX_KEY_LEN];
 *     sop_tuple t;
 *     sop_val key;
 *     sop_tuple_start(&t, buf, sizeof buf);
 *     sop_tuple_add_str(&t, "US", 2, SOP_KEY_ASC);
 *     sop_tuple_add_int64(&t, 42, SOP_KEY_DESC);
 *     int rc = sop_tuple_finish(&key, &t); // the first error of any add
 *     if (rc == SOP_OK)
 *         rc = sop_upsert(txn, store, &key, &value);
 *     sop_tuple_dispose(&t);
 * @endcode
 *
 * Errors are sticky: after the first failing add every later add and
 * sop_tuple_finish() return that same code and the key is unchanged, so a
 * caller may check only the result of finish. sop_errmsg() keeps the first
 * failure's detail (add calls do not clear it).
 *
 * @par Threads  One thread at a time per sop_tuple.
 */
typedef struct sop_tuple {
    uint8_t *buf;       /* private: output bytes */
    size_t len;         /* private: bytes used */
    size_t cap;         /* private: bytes available */
    size_t field_count; /* private: fields added */
    int rc;             /* private: first error (sticky) */
    unsigned state;     /* private: heap-owned buffer, closed by a *_prefix add */
} sop_tuple;

/**
 * @brief Start building a key.
 *
 * @param[out] t      The builder; any previous content is ignored (a heap
 *                    buffer from an earlier start is NOT freed: dispose first).
 * @param[in]  buf    Where the key is written, or NULL: the builder then
 *                    allocates (and grows) its own buffer, freed by
 *                    sop_tuple_dispose(). Must stay valid until finish.
 * @param[in]  buf_cap  Bytes at @p buf (ignored when buf is NULL). A key never
 *                    exceeds SOP_MAX_KEY_LEN bytes, so that capacity always
 *                    suffices.
 * Never fails.
 */
SOP_API void sop_tuple_start(sop_tuple *t, void *buf, size_t buf_cap);

/** Forget every field and any sticky error; keep the buffer (reuse in loops). */
SOP_API void sop_tuple_reset(sop_tuple *t);

/** Free the builder's own buffer, if any; a no-op for a caller buffer. Keys
 *  borrowed from that buffer by sop_tuple_finish() die here. NULL-safe. */
SOP_API void sop_tuple_dispose(sop_tuple *t);

/**
 * @brief Append one field.
 *
 * @param[in] flags  SOP_KEY_ASC or SOP_KEY_DESC; any other bit is SOP_INVAL.
 * Strings and byte strings are read during the call only.
 *
 * @retval SOP_OK
 * @retval SOP_INVAL  Unknown flag; the key would exceed SOP_MAX_KEY_LEN or the
 *                    caller's buffer; a string that is not valid UTF-8; data
 *                    NULL with len > 0; a field after a *_prefix field.
 * @retval SOP_NOMEM  The builder's own buffer could not grow.
 * Any earlier error: returned again, nothing appended (sticky).
 */
SOP_API int sop_tuple_add_null(sop_tuple *t, unsigned flags);
SOP_API int sop_tuple_add_bool(sop_tuple *t, int value, unsigned flags); /**< nonzero = true */
SOP_API int sop_tuple_add_int64(sop_tuple *t, int64_t value, unsigned flags);
SOP_API int sop_tuple_add_uint64(sop_tuple *t, uint64_t value, unsigned flags);
/** Any double; a NaN is stored as the quiet NaN of its sign (payload dropped). */
SOP_API int sop_tuple_add_double(sop_tuple *t, double value, unsigned flags);
/** @p ns_since_epoch: nanoseconds since 1970-01-01T00:00:00Z, may be negative. */
SOP_API int sop_tuple_add_timestamp(sop_tuple *t, int64_t ns_since_epoch, unsigned flags);
/** @p len bytes of UTF-8 at @p s (NUL bytes allowed; s may be NULL if len is 0). */
SOP_API int sop_tuple_add_str(sop_tuple *t, const char *s, size_t len, unsigned flags);
/** A NUL-terminated UTF-8 string; NULL is SOP_INVAL. */
SOP_API int sop_tuple_add_cstr(sop_tuple *t, const char *s, unsigned flags);
SOP_API int sop_tuple_add_bytes(sop_tuple *t, const void *data, size_t len, unsigned flags);
SOP_API int sop_tuple_add_uuid(sop_tuple *t, const uint8_t uuid[16], unsigned flags);
/** Append a decoded value (its type and its SOP_KEY_DESC flag). */
SOP_API int sop_tuple_add_value(sop_tuple *t, const sop_key_value *value);

/**
 * @brief Append a string (or byte string) PREFIX field, for range scans such as
 * "every city starting with 'San'". The field is left open: it has no
 * terminator, so nothing can be added after it (SOP_INVAL), and the result is
 * only a scan bound, never a key to store: with
 * lo = the finished tuple and hi = sop_key_prefix_end(lo), [lo, hi) holds
 * exactly the keys whose earlier fields match and whose field here starts
 * with these bytes, in either direction.
 * @retval as the other add calls.
 */
SOP_API int sop_tuple_add_str_prefix(sop_tuple *t, const char *s, size_t len, unsigned flags);
SOP_API int sop_tuple_add_bytes_prefix(sop_tuple *t, const void *data, size_t len, unsigned flags);

/**
 * @brief Finish: return the key built so far.
 *
 * @param[out] key_out  On SOP_OK, borrowed bytes in the builder's buffer (the
 *     caller's buf, or the builder's own buffer): valid until the next add,
 *     reset, start or dispose on @p t, or until the caller's buf changes.
 *     On failure {NULL, 0}. A tuple of zero fields is the empty key (a valid
 *     scan bound, but stores need keys of at least one byte).
 * @retval SOP_OK
 * @retval SOP_INVAL, SOP_NOMEM  The first error of an earlier add (sticky).
 * The builder stays usable (more fields may be added, then finish again).
 */
SOP_API int sop_tuple_finish(sop_val *key_out, sop_tuple *t);

/**
 * @brief Finish into a new allocation.
 * @param[out] key_out      On SOP_OK, a copy of the key (at least 1 byte is
 *     allocated even for the empty key); yours, free with sop_key_free().
 *     NULL on failure.
 * @param[out] key_len_out  Its length; 0 on failure.
 * @retval SOP_OK
 * @retval SOP_NOMEM  The copy could not be allocated.
 * @retval SOP_INVAL, SOP_NOMEM  The first error of an earlier add (sticky).
 */
SOP_API int sop_tuple_finish_alloc(void **key_out, size_t *key_len_out, sop_tuple *t);

/* ------------------------------------------------------------------------ */
/* Reading keys                                                              */
/* ------------------------------------------------------------------------ */

/**
 * An iterator over an encoded key's fields; caller-owned (about 4 KiB, it
 * holds a scratch buffer so decoding never allocates). Fields are private.
 *
 *     sop_key_iter it;
 *     sop_key_value v;
 *     sop_key_iter_init(&it, &key);
 *     while ((rc = sop_key_iter_next(&v, &it)) == SOP_OK) ...
 *     if (rc != SOP_NOTFOUND) ... // SOP_CORRUPT: bad bytes
 *
 * @par Threads  One thread at a time per iterator.
 */
typedef struct sop_key_iter {
    const uint8_t *start;             /* private */
    const uint8_t *pos;               /* private */
    const uint8_t *end;               /* private */
    size_t field_idx;                 /* private */
    int rc;                           /* private: sticky error */
    uint8_t scratch[SOP_MAX_KEY_LEN]; /* private */
} sop_key_iter;

/**
 * @brief Start iterating over @p key.
 * @param[in] key  The key; its bytes are borrowed and must stay unchanged
 *                 while the iterator and the values it returns are used.
 * @retval SOP_OK
 * @retval SOP_INVAL  key NULL, key->data NULL with len > 0, or key->len >
 *                    SOP_MAX_KEY_LEN. sop_key_iter_next then returns the same.
 */
SOP_API int sop_key_iter_init(sop_key_iter *it, const sop_val *key);

/**
 * @brief Decode the next field.
 *
 * @param[out] value_out  On SOP_OK the field. For STRING and BYTES, u.str
 *     points into the key's bytes or into the iterator's scratch: valid until
 *     the next sop_key_iter_next/_init on @p it, and while the key's bytes
 *     are unchanged. (Ascending fields without NUL bytes point into the key;
 *     do not rely on which.)
 * @retval SOP_OK
 * @retval SOP_NOTFOUND  No more fields (the key ended cleanly).
 * @retval SOP_CORRUPT   Malformed bytes at this field: unknown tag, truncated
 *     payload, missing terminator, bad escape, non-canonical form, invalid
 *     UTF-8, or bytes after an open prefix. Sticky.
 * @retval SOP_INVAL     The init failed.
 */
SOP_API int sop_key_iter_next(sop_key_value *value_out, sop_key_iter *it);

/**
 * @brief Check that @p key is a canonical encoded tuple (no allocation, no
 * copying). The engine and sop_check use this on keys of a store with a spec.
 * @param[out] field_count_out  May be NULL; the number of fields on SOP_OK.
 * @retval SOP_OK
 * @retval SOP_CORRUPT  See sop_key_iter_next().
 * @retval SOP_INVAL    key NULL or key->data NULL with len > 0.
 * Keys longer than SOP_MAX_KEY_LEN are checked too.
 */
SOP_API int sop_key_validate(size_t *field_count_out, const sop_val *key);

/**
 * @brief Decode every field of @p key at once.
 *
 * @param[out] values_out  Array of @p values_cap entries.
 * @param[out] count_out   Number of fields in the key (also on SOP_INVAL for a
 *                         too-small array, so the caller can retry).
 * @param[out] scratch     Where string/bytes fields that need unescaping are
 *     written; @p key->len bytes always suffice. May be NULL with cap 0 if no
 *     such field exists. u.str of the values points into @p key's bytes or
 *     @p scratch; valid while both are unchanged.
 * @param[in]  key         Read during the call; borrowed by the values.
 * @retval SOP_OK
 * @retval SOP_INVAL    values_cap or scratch_cap too small, or NULL args.
 * @retval SOP_CORRUPT  Malformed key (see sop_key_iter_next()).
 */
SOP_API int sop_key_decode(sop_key_value *values_out, size_t values_cap, size_t *count_out,
                           void *scratch, size_t scratch_cap, const sop_val *key);

/**
 * @brief The reference comparator: compare two values by type and value
 * (see "The order of values" at the top), never looking at an encoding.
 * @return <0, 0 or >0. All NaNs of one sign compare equal; -0.0 < +0.0.
 * Values with unknown types compare after all known ones (by type number).
 */
SOP_API int sop_key_value_compare(const sop_key_value *a, const sop_key_value *b);

/** Compare two tuples field by field with sop_key_value_compare(); a proper
 *  prefix sorts first. Equals the memcmp order of their encodings (K1). */
SOP_API int sop_key_values_compare(const sop_key_value *a, size_t a_count, const sop_key_value *b,
                                   size_t b_count);

/**
 * @brief The end of a prefix range: the smallest byte string greater than
 * every key that starts with @p prefix ("prefix successor": drop trailing
 * 0xFF bytes, add one to the last byte).
 *
 * To visit every key whose first fields equal a tuple prefix p, in either
 * direction of any field: SOP_SEEK_GE lo = enc(p), then SOP_NEXT while
 * key < hi (bytewise). Descending fields need no special care: they are
 * inverted inside the encoding, and the range is about bytes. Within the
 * range, keys come in the order of the remaining fields (each in its own
 * direction). A reverse scan is SOP_SEEK_GE hi then SOP_PREV (or SOP_LAST
 * when hi does not exist) down to lo.
 *
 * @param[out] buf          Receives hi; prefix->len bytes always suffice.
 * @param[out] hi_len_out   Length of hi on SOP_OK.
 * @param[in]  prefix       Read during the call.
 * @retval SOP_OK
 * @retval SOP_NOTFOUND  No upper bound exists (prefix empty or all 0xFF; never
 *                       for a non-empty encoded tuple): scan to the end.
 * @retval SOP_INVAL     buf_cap too small or NULL arguments.
 */
SOP_API int sop_key_prefix_end(void *buf, size_t buf_cap, size_t *hi_len_out,
                               const sop_val *prefix);

/* ------------------------------------------------------------------------ */
/* Index specifications                                                      */
/* ------------------------------------------------------------------------ */

/**
 * An index specification: an ordered list of named, typed fields, each
 * ascending or descending and maybe nullable. Encoded with
 * sop_keyspec_encode() it is what goes into sop_store_options.key_spec; the
 * store keeps it so any program or tool can decode the keys. Opaque; made by
 * sop_keyspec_new / _decode / _parse / _from_members, freed by
 * sop_keyspec_free. Built by one thread; immutable and shareable after.
 */
typedef struct sop_keyspec sop_keyspec;

/** One field of a spec, as returned by sop_keyspec_field_get(). */
typedef struct sop_keyspec_field {
    const char *name;  /**< NUL-terminated; borrowed from the spec, valid until
                        *   sop_keyspec_free */
    sop_key_type type; /**< never SOP_KEY_NULL */
    unsigned flags;    /**< SOP_KEY_DESC | SOP_KEY_NULLABLE */
} sop_keyspec_field;

/** @brief Make an empty spec (add fields with sop_keyspec_add).
 *  @param[out] spec_out  Yours; free with sop_keyspec_free. NULL on failure.
 *  @retval SOP_OK, SOP_INVAL (NULL), SOP_NOMEM */
SOP_API int sop_keyspec_new(sop_keyspec **spec_out);

/** Free a spec. NULL-safe. */
SOP_API void sop_keyspec_free(sop_keyspec *spec);

/**
 * @brief Append a field.
 * @param[in] name   1..SOP_KEYSPEC_MAX_NAME_LEN bytes, an ASCII identifier
 *                   ([A-Za-z_][A-Za-z0-9_]*), unique in the spec; copied.
 * @param[in] type   Any sop_key_type except SOP_KEY_NULL.
 * @param[in] flags  SOP_KEY_DESC and/or SOP_KEY_NULLABLE.
 * @retval SOP_OK
 * @retval SOP_INVAL  Bad or duplicate name, bad type, unknown flag, or the spec
 *                    already has SOP_KEYSPEC_MAX_FIELDS fields. Spec unchanged.
 */
SOP_API int sop_keyspec_add(sop_keyspec *spec, const char *name, sop_key_type type, unsigned flags);

/** Number of fields (0 for NULL). */
SOP_API size_t sop_keyspec_field_count(const sop_keyspec *spec);

/** @brief Describe field @p field_idx.
 *  @retval SOP_OK, SOP_INVAL (NULL or field_idx out of range) */
SOP_API int sop_keyspec_field_get(sop_keyspec_field *field_out, const sop_keyspec *spec,
                                  size_t field_idx);

/** 1 if both specs have the same fields (names, types, flags) in the same
 *  order, else 0. Two NULLs are equal. Equal specs have equal encodings. */
SOP_API int sop_keyspec_equal(const sop_keyspec *a, const sop_keyspec *b);

/**
 * @brief Encode a spec (versioned, CRC-32C checksummed; format in
 * docs/KEYS.md). The encoding is canonical: equal specs give equal bytes.
 *
 * @param[out] buf         Receives the bytes; may be NULL when buf_cap is 0
 *                         (to learn the length). SOP_KEYSPEC_MAX_LEN suffices.
 * @param[out] len_out     The encoded length, also when SOP_INVAL says the
 *                         buffer is too small.
 * @param[in]  spec        Must have at least one field.
 * @retval SOP_OK
 * @retval SOP_INVAL  buf_cap too small (nothing written), spec NULL or empty.
 */
SOP_API int sop_keyspec_encode(void *buf, size_t buf_cap, size_t *len_out, const sop_keyspec *spec);

/**
 * @brief Decode an encoded spec (from sop_store_info.options.key_spec).
 * @param[out] spec_out  Yours; free with sop_keyspec_free. NULL on failure.
 * @param[in]  data, len The bytes, read during the call only.
 * @retval SOP_OK
 * @retval SOP_CORRUPT  Wrong length, magic or checksum, or a malformed body
 *                      (bad type, flag, name, duplicate name, trailing bytes).
 * @retval SOP_VERSION  A valid spec of a newer format version.
 * @retval SOP_INVAL    NULL arguments.
 * @retval SOP_NOMEM
 */
SOP_API int sop_keyspec_decode(sop_keyspec **spec_out, const void *data, size_t len);

/**
 * @brief Check that @p key fits @p spec: field i has the type of spec field
 * i (or is null when that field is nullable) and its direction.
 * @param[in] flags  0: exactly the spec's field count; SOP_KEY_CHECK_PREFIX:
 *                   also accept 0..count fields (scan bounds).
 * @retval SOP_OK
 * @retval SOP_INVAL    The key does not fit (sop_errmsg() names the field), or
 *                      bad arguments.
 * @retval SOP_CORRUPT  Malformed key bytes.
 */
SOP_API int sop_keyspec_check_key(const sop_keyspec *spec, const sop_val *key, unsigned flags);
#define SOP_KEY_CHECK_PREFIX 0x1u

/**
 * @brief Render a spec as text, e.g. "(region string, dept string,
 * id int64 desc, note string nullable)"; sop_keyspec_parse() reads it back.
 * @param[out] text_out  NUL-terminated; yours, free with sop_key_free().
 * @retval SOP_OK, SOP_INVAL (NULL), SOP_NOMEM
 */
SOP_API int sop_keyspec_format(char **text_out, const sop_keyspec *spec);

/**
 * @brief Parse spec text: fields separated by commas, optionally in
 * parentheses; each "name type" followed by optional "asc", "desc",
 * "nullable" in any order. Types: bool int64 uint64 double timestamp string
 * bytes uuid. Whitespace is free.
 * @param[out] spec_out  Yours; free with sop_keyspec_free. NULL on failure.
 * @retval SOP_OK
 * @retval SOP_INVAL  Syntax error (sop_errmsg() gives the column), or a field
 *                    sop_keyspec_add() would reject.
 * @retval SOP_NOMEM
 */
SOP_API int sop_keyspec_parse(sop_keyspec **spec_out, const char *text);

/* ------------------------------------------------------------------------ */
/* Key text: ("US", "Sales", 42)                                             */
/* ------------------------------------------------------------------------ */

/** sop_key_format flags. */
#define SOP_KEY_FORMAT_NAMES 0x1u /**< name=value (needs a spec) */
#define SOP_KEY_FORMAT_TYPED 0x2u /**< self-describing literals even with a spec */

/**
 * @brief Render a key as a tuple, e.g. ("US", "Sales", 42).
 *
 * Literals: null, true, false; integers (uint64 gets a "u" suffix when typed);
 * doubles with a '.', an exponent, inf or nan (shortest text that reads back
 * exactly; -0.0 kept); "string" with \" \\ \n \r \t and \xHH escapes
 * (non-ASCII UTF-8 is written as is); x"00ff" for bytes;
 * uuid"123e4567-e89b-12d3-a456-426614174000";
 * ts"2024-05-06T07:08:09.123456789Z" for timestamps (UTC; the fraction is
 * omitted when zero). Typed output marks descending fields as desc(value).
 * Without a spec the output is always typed; sop_key_parse() reads either
 * form back to the same bytes (with the same spec, or none when typed).
 *
 * @param[out] buf       Receives the NUL-terminated text, truncated if
 *                       buf_cap is too small; may be NULL when buf_cap is 0.
 * @param[out] text_len_out  The full length (without the NUL), also when the
 *                       buffer was too small.
 * @param[in]  spec      NULL, or the key's spec: then the key must fit it (a
 *                       prefix of it is fine) and literals are untyped.
 * @param[in]  key       Read during the call only.
 * @param[in]  flags     SOP_KEY_FORMAT_*.
 * @retval SOP_OK
 * @retval SOP_INVAL    buf_cap <= the length (text truncated), NULL args,
 *                      unknown flag, NAMES without a spec, a key longer than
 *                      SOP_MAX_KEY_LEN, or the key does not fit the spec.
 * @retval SOP_CORRUPT  Malformed key bytes.
 * No allocation (the decoding scratch is on the stack, about 4 KiB).
 */
SOP_API int sop_key_format(char *buf, size_t buf_cap, size_t *text_len_out, const sop_keyspec *spec,
                           const sop_val *key, unsigned flags);

/** Same, into a new NUL-terminated allocation; free with sop_key_free().
 *  *text_out is NULL on failure.
 *  @retval SOP_OK, SOP_INVAL, SOP_CORRUPT, SOP_NOMEM */
SOP_API int sop_key_format_alloc(char **text_out, const sop_keyspec *spec, const sop_val *key,
                                 unsigned flags);

/**
 * @brief Parse tuple text (the sop_key_format() syntax) and append its fields
 * to @p t - for a CLI's get/put/scan of compound keys.
 *
 * With a spec, value i goes to spec field (fields already in t) + i and takes
 * that field's type and direction: plain literals suffice (42 for a uint64,
 * double or timestamp field; "text" for a bytes or uuid field), null only
 * where nullable; fewer values than fields give a prefix (a scan bound).
 * name=value is accepted and the name must match. Without a spec, types come
 * from the literal forms (a plain integer is int64) and desc(...) marks a
 * descending field. Whitespace is free; "()" is the empty tuple.
 *
 * @param[in,out] t     A started builder; fields are appended (sticky errors
 *                      as for the add calls).
 * @param[in] spec      NULL or the spec.
 * @param[in] text      NUL-terminated; read during the call only.
 * @retval SOP_OK
 * @retval SOP_INVAL  Syntax error (sop_errmsg() gives the column and what was
 *                    expected), a value that does not fit the spec, a number
 *                    out of range, a timestamp outside 1677..2262, or any add
 *                    error. The fields appended so far stay in @p t.
 * @retval SOP_NOMEM
 */
SOP_API int sop_key_parse(sop_tuple *t, const sop_keyspec *spec, const char *text);

/* ------------------------------------------------------------------------ */
/* Structs as keys                                                           */
/* ------------------------------------------------------------------------ */

/** How a struct member holds its value (sop_key_member.ctype). */
typedef enum sop_key_ctype {
    /** The member is the value: INT64 as int8/16/32/64_t, UINT64 as
     *  uint8/16/32/64_t, BOOL as any integer (0 = false), DOUBLE as double or
     *  float, TIMESTAMP as int64_t, UUID as uint8_t[16]. size = sizeof member. */
    SOP_KEY_C_SCALAR = 0,
    /** STRING: a const char * to a NUL-terminated string. With
     *  SOP_KEY_NULLABLE a NULL pointer is the null value. */
    SOP_KEY_C_STRPTR = 1,
    /** STRING: char m[N], up to the first NUL or all N bytes.
     *  BYTES: uint8_t m[N], exactly N bytes. UUID: uint8_t m[16]. */
    SOP_KEY_C_ARRAY = 2,
    /** STRING or BYTES: a const void * member and a size_t length member at
     *  len_offset. With SOP_KEY_NULLABLE a NULL pointer is the null value;
     *  otherwise NULL is allowed only with length 0. */
    SOP_KEY_C_PTRLEN = 3,
    /** STRING or BYTES: uint8_t m[N] holding the first len bytes, and a
     *  size_t length member (<= N) at len_offset. */
    SOP_KEY_C_ARRAYLEN = 4
} sop_key_ctype;

/**
 * One key field of a struct: describe a struct once, in key order, with the
 * SOP_KEY_MEMBER* macros, then pack and unpack keys from and to it:
 *
 *     struct employee { char region[8]; const char *dept; int32_t id; };
 *     static const sop_key_member employee_key[] = {
 *         SOP_KEY_MEMBER_ARRAY(struct employee, region, SOP_KEY_STRING, SOP_KEY_ASC),
 *         SOP_KEY_MEMBER_STRPTR(struct employee, dept, SOP_KEY_ASC),
 *         SOP_KEY_MEMBER(struct employee, id, SOP_KEY_INT64, SOP_KEY_DESC),
 *     };
 */
typedef struct sop_key_member {
    const char *name; /**< field name in the spec (sop_keyspec_from_members) */
    sop_key_type type;
    unsigned flags; /**< SOP_KEY_DESC | SOP_KEY_NULLABLE */
    sop_key_ctype ctype;
    size_t offset;     /**< offsetof(struct, member) */
    size_t size;       /**< sizeof the member */
    size_t len_offset; /**< PTRLEN, ARRAYLEN: offsetof the size_t length member */
} sop_key_member;

#define SOP_KEY_MEMBER_SIZE_(T, m) sizeof(((T *)0)->m)
/* offsetof the length member, and a compile error unless it is a size_t. */
#define SOP_KEY_MEMBER_LEN_OFF_(T, len_m)                                                          \
    (offsetof(T, len_m) +                                                                          \
     0 * sizeof(char[SOP_KEY_MEMBER_SIZE_(T, len_m) == sizeof(size_t) ? 1 : -1]))

/** A scalar member (SOP_KEY_C_SCALAR). */
#define SOP_KEY_MEMBER(T, m, type, flags)                                                          \
    {                                                                                              \
#m, (type), (flags), SOP_KEY_C_SCALAR, offsetof(T, m), SOP_KEY_MEMBER_SIZE_(T, m), 0       \
    }
/** A const char * string member (SOP_KEY_C_STRPTR). */
#define SOP_KEY_MEMBER_STRPTR(T, m, flags)                                                         \
    {                                                                                              \
#m, SOP_KEY_STRING, (flags), SOP_KEY_C_STRPTR, offsetof(T, m), SOP_KEY_MEMBER_SIZE_(T, m), \
            0                                                                                      \
    }
/** A fixed array member (SOP_KEY_C_ARRAY) of type STRING, BYTES or UUID. */
#define SOP_KEY_MEMBER_ARRAY(T, m, type, flags)                                                    \
    {                                                                                              \
#m, (type), (flags), SOP_KEY_C_ARRAY, offsetof(T, m), SOP_KEY_MEMBER_SIZE_(T, m), 0        \
    }
/** Pointer member m plus size_t length member len_m (SOP_KEY_C_PTRLEN). */
#define SOP_KEY_MEMBER_PTRLEN(T, m, len_m, type, flags)                                            \
    {                                                                                              \
#m, (type), (flags), SOP_KEY_C_PTRLEN, offsetof(T, m), SOP_KEY_MEMBER_SIZE_(T, m),         \
            SOP_KEY_MEMBER_LEN_OFF_(T, len_m)                                                      \
    }
/** Array member m plus size_t length member len_m (SOP_KEY_C_ARRAYLEN). */
#define SOP_KEY_MEMBER_ARRAYLEN(T, m, len_m, type, flags)                                          \
    {                                                                                              \
#m, (type), (flags), SOP_KEY_C_ARRAYLEN, offsetof(T, m), SOP_KEY_MEMBER_SIZE_(T, m),       \
            SOP_KEY_MEMBER_LEN_OFF_(T, len_m)                                                      \
    }

/**
 * @brief Make the spec matching a member list (names, types, flags), to
 * store with the store.
 * @param[out] spec_out  Yours; free with sop_keyspec_free.
 * @retval SOP_OK, SOP_INVAL (bad member description or name), SOP_NOMEM
 */
SOP_API int sop_keyspec_from_members(sop_keyspec **spec_out, const sop_key_member *members,
                                     size_t member_count);

/**
 * @brief Append the first @p field_count members of struct @p obj to @p t.
 * field_count == member_count gives a full key; fewer give a prefix for
 * range scans (e.g. all employees in region "US": field_count 1; then
 * "US"/"Sales": 2), to use with sop_key_prefix_end().
 * @param[in] obj  Read during the call only.
 * @retval SOP_OK
 * @retval SOP_INVAL  field_count > member_count; a bad member description
 *     (unknown type/ctype/flag, a size that does not fit the type); a NULL
 *     pointer member that is not nullable; an ARRAYLEN length > N; invalid
 *     UTF-8; and every add error.
 * @retval SOP_NOMEM
 */
SOP_API int sop_tuple_add_struct(sop_tuple *t, const sop_key_member *members, size_t member_count,
                                 size_t field_count, const void *obj);

/**
 * @brief Pack a struct into a key in @p buf (sop_tuple_add_struct into a
 * caller buffer).
 * @param[out] buf          SOP_MAX_KEY_LEN bytes always suffice.
 * @param[out] key_len_out  Key length on SOP_OK.
 * @retval as sop_tuple_add_struct (SOP_INVAL also when buf is too small).
 */
SOP_API int sop_key_pack(void *buf, size_t buf_cap, size_t *key_len_out,
                         const sop_key_member *members, size_t member_count, size_t field_count,
                         const void *obj);

/**
 * @brief Unpack a key into a struct: the key's fields, in order, into the
 * members. A key with fewer fields (a prefix) fills only the first ones;
 * the other members are left untouched.
 *
 * Where the bytes go, and how long they live:
 *   - SCALAR, ARRAY, ARRAYLEN: copied into the struct (string arrays are
 *     NUL-padded when shorter than N).
 *   - STRPTR: copied into @p storage, NUL-terminated; the member points there.
 *   - PTRLEN: the member points into @p key's bytes when the field is stored
 *     as is (ascending, no NUL byte), else into @p storage (strings then get a
 *     NUL after their length too). A null value sets the pointer to NULL and
 *     the length to 0.
 *   So pointers in @p obj_out are valid while both key->data's bytes and
 *   @p storage are unchanged. @p key->len bytes of storage always suffice.
 *
 * @param[out] obj_out          The struct to fill.
 * @param[out] field_count_out  May be NULL; fields unpacked on SOP_OK.
 * @param[out] storage          May be NULL when storage_cap is 0.
 * @retval SOP_OK
 * @retval SOP_INVAL    The key does not fit the members (more fields than
 *     members, another type or direction, a value out of the member's range,
 *     a string with a NUL for STRPTR/ARRAY, a null for a non-pointer member,
 *     too long for an array), storage too small, a bad member description,
 *     or a key longer than SOP_MAX_KEY_LEN. Members before the failing one
 *     may have been written.
 * @retval SOP_CORRUPT  Malformed key bytes.
 * @par Memory  No allocation (about 4 KiB of stack), so it suits scan loops.
 */
SOP_API int sop_key_unpack(void *obj_out, size_t *field_count_out, void *storage,
                           size_t storage_cap, const sop_key_member *members, size_t member_count,
                           const sop_val *key);

#ifdef __cplusplus
}
#endif
#endif /* SOP_KEYS_H */
