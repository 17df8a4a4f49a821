/*
 * txnrec.h - the transaction record's payload: one encoder for its head and
 * one decoder for all of it, so that the layout lives in one file (and in
 * docs/FORMAT.md "TXN record", which tests/test_txnrec.c ties to it with a
 * golden record). The log's record header around it is wal.h's.
 *
 * Payload (SOP_REC_TXN), little-endian:
 *   head, SOP_TXNREC_HEAD_LEN bytes:
 *     u8 kind (SOP_TXNREC_COMMIT, _PREPARE, _COMMIT_PREPARED, _ABORT_PREPARED)
 *     u8 version (SOP_TXNREC_VERSION), u16 0, u32 0, u64 txn_id, u64 snapshot
 *   COMMIT and PREPARE continue with the body:
 *   u16 xid_len, xid
 *   u32 catalog_count, each: u8 op (1 create, 2 drop), u64 store_id,
 *       create only: u64 root_lid, u16 name_len, name, u32 flags,
 *       u32 slot_length, u32 max_inline, u16 cmp_len, cmp, u32 spec_len, spec
 *   u32 store_count, each: u64 store_id, i64 count_delta, u64 next_seq,
 *       u32 op_count, ops: u8 kind (1 put, 2 del), u8 vkind (0 inline,
 *       1 blob), u16 key_len, key, u64 seq, put only: u32 value_len, then
 *       value bytes (inline) or a SOP_TXNREC_LOC_LEN-byte location (blob:
 *       u64 segment, u64 offset, u32 length, u32 crc)
 *   u32 read_count, each: u64 store_id, u8 kind (1 point, 2 range),
 *       point: u16 len, key; range: u8 flags (1 lo open-ended, 2 hi
 *       open-ended), u16 lo_len, lo, u16 hi_len, hi   (bounds inclusive)
 *
 * The decoder is a pull reader over one body: catalog entries, then store
 * sections (each with its operations), then reads. Asking for a later
 * section skips what is left of the earlier ones; every next call returns
 * 1 with an entry, 0 at the end of its section, or SOP_CORRUPT (with a
 * message naming the section) for bytes that do not follow the grammar:
 * short input, an unknown op/kind, a count larger than the bytes left, a
 * name or key of length 0 or above its limit. Meaning (does the store
 * exist, do the deltas agree) is the caller's to check.
 *
 *   (X1) Decoded entries point into the body: they live as long as it.
 *   (X2) The decoder never reads outside [body, body + len).
 *   (X3) After an error every later call returns the same error.
 */
#ifndef SOP_TXNREC_H
#define SOP_TXNREC_H

#include "util.h"

#define SOP_TXNREC_HEAD_LEN 24
#define SOP_TXNREC_VERSION  1
#define SOP_TXNREC_LOC_LEN  24

#define SOP_TXNREC_COMMIT          1
#define SOP_TXNREC_PREPARE         2
#define SOP_TXNREC_COMMIT_PREPARED 3
#define SOP_TXNREC_ABORT_PREPARED  4

#define SOP_TXNREC_CREATE  1 /* catalog ops */
#define SOP_TXNREC_DROP    2
#define SOP_TXNREC_PUT     1 /* operation kinds (btree.h's SOP_OP_PUT/DEL) */
#define SOP_TXNREC_DEL     2
#define SOP_TXNREC_POINT   1 /* read kinds */
#define SOP_TXNREC_RANGE   2
#define SOP_TXNREC_LO_OPEN 1 /* range read flags */
#define SOP_TXNREC_HI_OPEN 2

typedef struct sop_txnrec_head {
    uint8_t kind;
    uint64_t txn_id;   /* PREPARE: its id; COMMIT/ABORT_PREPARED: the id resolved */
    uint64_t snapshot; /* the LSN the transaction read from (0 for resolutions) */
} sop_txnrec_head;

/* Append the head to b (its status records an allocation failure). */
void sop_txnrec__put_head(sop_buf *b, const sop_txnrec_head *h);

/* Decode the head of payload[0..len). *body and *body_len: the rest (empty
 * for kinds without a body). SOP_CORRUPT for a short payload, an unknown
 * version or kind, or a body on a kind that has none. */
int sop_txnrec__get_head(sop_txnrec_head *h, const uint8_t **body, size_t *body_len,
                         const uint8_t *payload, size_t len);

/* Does a record of this kind carry a body? */
static inline int sop_txnrec__has_body(uint8_t kind)
{
    return kind == SOP_TXNREC_COMMIT || kind == SOP_TXNREC_PREPARE;
}

typedef struct sop_txnrec_cat {
    uint8_t op; /* SOP_TXNREC_CREATE / _DROP */
    uint64_t store_id;
    /* create only: */
    uint64_t root_lid;
    sop_val name; /* 1..max_name bytes */
    uint32_t flags, slot_length, max_inline;
    sop_val comparator; /* len 0: bytewise */
    sop_val key_spec;
} sop_txnrec_cat;

typedef struct sop_txnrec_store {
    uint64_t store_id;
    int64_t count_delta;
    size_t count_delta_off; /* offset of count_delta in the body (commit patches it) */
    uint64_t next_seq;
    uint32_t op_count;
} sop_txnrec_store;

typedef struct sop_txnrec_op {
    uint8_t kind; /* SOP_TXNREC_PUT / _DEL */
    uint8_t is_blob;
    sop_val key; /* 1..max_key bytes */
    uint64_t seq;
    uint32_t value_len; /* put only */
    sop_val value;      /* put, inline: the bytes */
    sop_loc loc;        /* put, blob: where the value is */
} sop_txnrec_op;

typedef struct sop_txnrec_read {
    uint64_t store_id;
    uint8_t kind;  /* SOP_TXNREC_POINT / _RANGE */
    uint8_t flags; /* range: SOP_TXNREC_LO_OPEN | SOP_TXNREC_HI_OPEN */
    sop_val lo;    /* point: the key */
    sop_val hi;
} sop_txnrec_read;

typedef struct sop_txnrec_rd {
    sop_rd r;
    const uint8_t *base;
    size_t max_name, max_key;
    int section;   /* 0 catalog, 1 stores, 2 reads, 3 done */
    uint32_t left; /* entries left in the section */
    uint32_t ops_left;
    int rc; /* X3 */
} sop_txnrec_rd;

/* Start reading body[0..len); *xid gets the external id (PREPARE; empty
 * for COMMIT). max_name/max_key: the longest store name and key accepted. */
int sop_txnrec__open(sop_txnrec_rd *d, sop_val *xid, const uint8_t *body, size_t len,
                     size_t max_name, size_t max_key);
int sop_txnrec__next_cat(sop_txnrec_rd *d, sop_txnrec_cat *out);
int sop_txnrec__next_store(sop_txnrec_rd *d, sop_txnrec_store *out);
/* The next operation of the store section last returned. */
int sop_txnrec__next_op(sop_txnrec_rd *d, sop_txnrec_op *out);
int sop_txnrec__next_read(sop_txnrec_rd *d, sop_txnrec_read *out);
/* SOP_OK once every section was read or skipped and no byte is left over;
 * skips what was not read. SOP_CORRUPT otherwise. */
int sop_txnrec__finish(sop_txnrec_rd *d);

#endif
