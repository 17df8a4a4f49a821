/*
 * keys.h - internal view of the typed-key module (src/keys.c): the tuple
 * encoding and the index-specification format, byte by byte, plus the two
 * no-allocation checks the engine calls.
 *
 * Public API: include/sop_keys.h. Longer prose and examples: docs/KEYS.md.
 *
 * ---- Tuple encoding --------------------------------------------------------
 *
 * A key is the concatenation of its fields' encodings; nothing precedes the
 * first field and nothing follows the last. Every field encoding is
 * self-delimiting and prefix-free (no field's bytes are a proper prefix of
 * another field's bytes), which is what makes memcmp order equal tuple order
 * field by field (K1) and makes every tuple prefix a byte prefix (K3).
 *
 * An ascending field is a tag byte followed by its payload:
 *
 *   TAG         TYPE        PAYLOAD
 *   0x05        null        -
 *   0x10        bool false  -
 *   0x11        bool true   -
 *   0x18..0x1F  int64 < 0   n = 0x20 - tag bytes (1..8): the low n bytes of
 *                           ~m big-endian, m = -v as uint64 (1..2^63);
 *                           canonical: first byte != 0xFF
 *   0x20        int64 0     -
 *   0x21..0x28  int64 > 0   n = tag - 0x20 bytes (1..8): v big-endian,
 *                           canonical: first byte != 0x00
 *   0x30        uint64 0    -
 *   0x31..0x38  uint64 > 0  n = tag - 0x30 bytes (1..8), as int64 > 0
 *   0x40        double      8 bytes big-endian of t(bits): bits ^ 0x8000...
 *                           when the sign bit is 0, ~bits when it is 1. NaN is
 *                           stored only as 0x7FF8000000000000 / 0xFFF8...
 *                           (other NaN bit patterns are non-canonical: corrupt)
 *   0x48        timestamp   8 bytes big-endian of (uint64)ns ^ 0x8000000000000000
 *   0x50        string      escaped bytes (below), UTF-8 after unescaping
 *   0x60        bytes       escaped bytes
 *   0x70        uuid        16 bytes as is
 *
 * Escaping (string, bytes): each data byte 0x00 is written 0x00 0xFF, every
 * other byte as is, then the terminator 0x00 0x01. A 0x00 followed by
 * anything but 0xFF or 0x01, or a missing terminator, is corrupt. Order: the
 * terminator (00 01) sorts below any continuation (00 FF or a byte >= 01),
 * so a shorter string sorts first.
 *
 * A descending field is its ascending encoding with every byte, tag and
 * terminator included, XORed with 0xFF. Ascending tags are all < 0x80 and
 * descending tags all >= 0x80, so the decoder knows each field's direction
 * from its tag, and at one position every ascending field sorts before every
 * descending one. Inverting a prefix-free encoding exactly reverses its
 * memcmp order.
 *
 * An open prefix field (sop_tuple_add_str_prefix) is a string/bytes field
 * without its terminator; it only ever appears last in a scan bound and the
 * decoder reports it as corrupt (missing terminator).
 *
 * ---- Index specification (sop_store_options.key_spec) ----------------------
 *
 * Little-endian. Canonical: the encoder is the only writer; the decoder
 * rejects anything the encoder would not produce, so equal specs have equal
 * bytes and the engine may compare stored and given specs with memcmp.
 *
 *   OFFSET  SIZE  DESCRIPTION
 *   0       4     magic "SOPK" (0x53 0x4F 0x50 0x4B)
 *   4       1     format version, 1 (a larger value with a valid CRC: SOP_VERSION)
 *   5       1     reserved flags, 0
 *   6       2     field_count, u16, 1..SOP_KEYSPEC_MAX_FIELDS (64)
 *   8       ...   field_count fields, each:
 *                   +0  1  type (sop_key_type 1..8; never 0 = null)
 *                   +1  1  flags: bit 0 SOP_KEY_DESC, bit 1 SOP_KEY_NULLABLE,
 *                          other bits 0
 *                   +2  1  name_len, 1..SOP_KEYSPEC_MAX_NAME_LEN (60)
 *                   +3  n  name: [A-Za-z_][A-Za-z0-9_]*, unique in the spec
 *   end-4   4     CRC-32C (util.h sop_crc32c) of bytes [0, end-4), u32
 *
 * Largest: 8 + 64 * (3 + 60) + 4 = 4044 bytes <= SOP_KEYSPEC_MAX_LEN.
 */
#ifndef SOP_KEYS_INT_H
#define SOP_KEYS_INT_H

#include "sop_int.h"
#include "sop_keys.h"

/* Ascending tags (descending = tag ^ 0xFF). */
#define SOP_KEYS_TAG_NULL      0x05
#define SOP_KEYS_TAG_FALSE     0x10
#define SOP_KEYS_TAG_TRUE      0x11
#define SOP_KEYS_TAG_INT_ZERO  0x20 /* 0x18..0x1F negative, 0x21..0x28 positive */
#define SOP_KEYS_TAG_UINT_ZERO 0x30 /* 0x31..0x38 */
#define SOP_KEYS_TAG_DOUBLE    0x40
#define SOP_KEYS_TAG_TIMESTAMP 0x48
#define SOP_KEYS_TAG_STRING    0x50
#define SOP_KEYS_TAG_BYTES     0x60
#define SOP_KEYS_TAG_UUID      0x70

/* Spec format constants (table above). */
#define SOP_KEYSPEC_MAGIC      "SOPK"
#define SOP_KEYSPEC_VERSION    1
#define SOP_KEYSPEC_HEADER_LEN 8
#define SOP_KEYSPEC_CRC_LEN    4

/* Check encoded spec bytes without allocating: SOP_OK, SOP_CORRUPT or
 * SOP_VERSION, exactly as sop_keyspec_decode() would answer. For store open
 * (validate the caller's key_spec; then memcmp it with the stored one, which
 * is enough because the encoding is canonical) and for sop_check. */
int sop_keys__spec_check(const void *data, size_t len);

/* Check a key against encoded spec bytes without allocating (the put path
 * of a store with a spec): SOP_OK, SOP_INVAL (does not fit; detail in
 * sop_errmsg), SOP_CORRUPT (bad key or spec bytes). flags as
 * sop_keyspec_check_key. */
int sop_keys__key_check(const void *spec, size_t spec_len, const void *key, size_t key_len,
                        unsigned flags);

#endif /* SOP_KEYS_INT_H */
