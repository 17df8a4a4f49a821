/*
 * blob.h - value blobs: the values stored in records of their own (VALUE
 * records, wal.h), read by range.
 *
 * Every read of a value blob goes through sop_blob__read with an offset and
 * a length: today's callers ask for the whole value (offset 0, its full
 * length); streaming and ranged reads ask for a part. The record's crc
 * covers its whole payload, so today a range costs a read and a check of
 * the whole record; a chunked blob layout (streaming values) will read
 * only the chunks a range touches, behind this same call.
 */
#ifndef SOP_BLOB_H
#define SOP_BLOB_H

#include "sop_int.h"
#include "wal.h"

/* Bytes [off, off + len) of the value of value_len bytes stored at loc:
 * out->data points into *buf (grown as needed; the whole value is at
 * *buf + SOP_REC_HDR_LEN), out->len = len. The record is checked first: a
 * VALUE record with loc's checksum holding exactly value_len bytes
 * (sop_wal__read_buf checks the location before *buf grows). SOP_INVAL
 * if the range is not inside the value (nothing read); SOP_CORRUPT if the
 * record is not that; I/O errors of the read. */
int sop_blob__read(sop_val *out, sop_wal *w, const sop_loc *loc, uint32_t value_len, uint64_t off,
                   uint64_t len, uint8_t **buf, size_t *cap);

#endif
