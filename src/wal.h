/*
 * wal.h - the segment log: libsop's write-ahead log AND its blob store.
 *
 * Everything libsop writes, except checkpoint manifests, is appended to
 * numbered segment files seg/<id>.seg: node blobs (written by checkpoints),
 * value blobs (written while a transaction runs), and transaction records
 * (COMMIT, PREPARE, COMMIT_PREPARED, ABORT_PREPARED). One append stream
 * means one fdatasync covers a commit's value blobs and its record.
 *
 *   (W1) Append-only. A segment id is never reused; a byte is written once.
 *   (W2) A transaction is committed exactly when its record, and every
 *        byte before it in the log, is durable. Recovery scans from the
 *        checkpoint's position and stops at the first invalid record.
 *   (W3) With SOP_SYNC_FULL a commit returns only after an fdatasync
 *        covering its record returned 0 (group commit: one sync serves
 *        every record appended before it started).
 *   (W4) After a failed fdatasync the wal is panicked; nothing is written
 *        again (sop_wal__append/sync return SOP_PANIC).
 *   (W5) Before a new segment receives bytes, the previous one is synced
 *        and the new file's directory entry is synced; so only the newest
 *        segment can end with a torn record. Not with nosync set
 *        (SOP_SYNC_OFF): then the wal makes no sync call at all, except
 *        the ones a caller asks for (sop_wal__sync_to: PREPARE records).
 *   (W6) A failed append is cut off with ftruncate before anything else
 *        is appended (if that fails too, the wal panics).
 *   (W7) With prezero set (SOP_SYNC_FULL), the current segment's file is
 *        extended with zeros ahead of the tail, SOP_WAL_ZERO_CHUNK bytes
 *        at a time, so that a commit's fdatasync rewrites allocated blocks
 *        and need not journal a new file size and new extents (ext4 and
 *        XFS do that on every fdatasync of a growing file). Bytes past
 *        the tail are therefore zeros, or unsynced records a crash left:
 *        the recovery scan stops at the first invalid record either way,
 *        and recovery cuts everything after it (as for a torn tail).
 *        A segment is cut back to its tail before it is sealed, and at a
 *        clean close, so sealed segments end exactly at their last record.
 *        Scans stop at seg->size, the tail, not at the file's size.
 *
 * Record layout (little-endian), 8-byte aligned:
 *   0  u32 magic 0x52504F53 ("SOPR")     12 u32 crc32c(header with crc=0, payload)
 *   4  u8  type  (SOP_REC_*)              16 u64 lsn (transaction records; 0 else)
 *   5  u8  version (1)                    24 payload, then zero padding to 8
 *   6  u16 reserved (0)
 *   8  u32 payload_len
 */
#ifndef SOP_WAL_H
#define SOP_WAL_H

#include "sop_int.h"

#include <pthread.h>

#define SOP_REC_MAGIC   0x52504F53u
#define SOP_REC_HDR_LEN 24
#define SOP_REC_SEGHDR  1 /* first record of every segment: db uuid, seg id */
#define SOP_REC_NODE    2 /* a node image */
#define SOP_REC_VALUE   3 /* a value stored in its own blob */
#define SOP_REC_TXN     4 /* a transaction record (see txn.h) */

#define SOP_WAL_ZERO_CHUNK (1u << 20) /* (W7) */

static inline size_t sop_rec_len(size_t payload_len)
{
    return (SOP_REC_HDR_LEN + payload_len + 7) & ~(size_t)7;
}

/* Fill the 24-byte header for payload; returns the crc. */
uint32_t sop_rec__header(uint8_t *hdr, int type, const void *payload, size_t payload_len,
                         uint64_t lsn);

typedef struct sop_seg {
    uint64_t id;
    sop_file *file;
    uint64_t size;        /* bytes appended / found */
    /* space accounting (seg_mu) */
    uint64_t blob_bytes;  /* node and value records */
    uint64_t dead_bytes;  /* of which no longer referenced */
    uint64_t death_lsn;   /* lsn of the newest death */
    uint64_t max_lsn;     /* newest transaction record in it */
    uint64_t inflight_bytes; /* value blobs of transactions still running */
    uint64_t acct_end;    /* recovery: the manifest's accounting covers [0, acct_end) */
} sop_seg;

typedef struct sop_wal {
    const sop_vfs *vfs;
    char *dir;
    uint8_t db_uuid[16];
    uint64_t seg_bytes;

    pthread_mutex_t append_mu; /* level 3: cur, tail_off, appended_total */
    sop_seg *cur;
    uint64_t tail_off;
    uint64_t zero_end;         /* (W7) cur's file holds zeros in [tail_off, zero_end) */
    int prezero;               /* (W7) extend cur with zeros ahead of the tail */
    int nosync;                /* SOP_SYNC_OFF: no syncs of its own (W5) */
    _Atomic uint64_t appended_total; /* monotonic byte counter: the group-commit
                                      * token (written under append_mu) */

    pthread_mutex_t seg_mu;    /* the segment table and its accounting */
    sop_seg **segs;            /* sorted by id */
    size_t seg_count, seg_cap;
    uint64_t next_seg_id;

    pthread_mutex_t sync_mu;   /* level 5 */
    /* Group commit: waiters that the running sync covers sleep on
     * sync_cv[sync_gen & 1], the others on the other one; a finished sync
     * wakes the first set and one of the second, who leads the next sync
     * (whose target covers all of that set). Nobody wakes just to sleep. */
    pthread_cond_t sync_cv[2];
    unsigned sync_gen;
    uint64_t sync_target;      /* what the running sync covers */
    int sync_running;
    uint64_t durable_total;
    _Atomic int panicked;      /* set once (W4); read without locks */
    uint64_t syncs;
} sop_wal;

int sop_wal__init(sop_wal *w, const sop_vfs *vfs, const char *dir, const uint8_t uuid[16],
                  uint64_t seg_bytes);
void sop_wal__dispose(sop_wal *w);

/* Register an existing segment file (recovery). SOP_CORRUPT for id
 * UINT64_MAX: no id could follow it (W1). */
int sop_wal__add_segment(sop_wal *w, uint64_t id, sop_file *f, uint64_t size);
sop_seg *sop_wal__segment(sop_wal *w, uint64_t id); /* seg_mu taken inside */
/* Create segment next_seg_id and make it the append target (W5). */
int sop_wal__start(sop_wal *w);

/* Append len bytes (one or more complete records). *loc_out gets the seg/off
 * of the first byte, *token_out the group-commit token. lsn_max updates the
 * segment's max_lsn; blob_bytes adds to its blob accounting. */
int sop_wal__append(sop_wal *w, const void *buf, size_t len, uint64_t lsn_max,
                    uint64_t blob_bytes, sop_loc *loc_out, uint64_t *token_out);
/* Seal the current segment and append to a new one from now on (W5), so
 * that the sealed one can be cleaned; a no-op on a segment holding only its
 * header. */
int sop_wal__rotate(sop_wal *w);
/* Wait until everything up to token is durable (group commit, W3). */
int sop_wal__sync_to(sop_wal *w, uint64_t token);
/* Sync everything appended so far. */
int sop_wal__sync_all(sop_wal *w);
/* Cut the zeros ahead of the tail (W7) off the current segment and sync
 * it; called at a clean close. */
int sop_wal__trim_tail(sop_wal *w);

/* Does loc name a record of expect_type whose header matches it (record
 * length, checksum field)? Reads the header only. SOP_CORRUPT if not. */
int sop_wal__check_header(sop_wal *w, const sop_loc *loc, int expect_type);

/* Read and verify the record at loc; *payload_out (sop_malloc'ed, caller
 * frees) gets its payload. expect_type checked. */
int sop_wal__read(sop_wal *w, const sop_loc *loc, int expect_type, uint8_t **payload_out,
                  size_t *payload_len_out);
/* Read and verify the record at loc into *buf, grown to loc->len if *cap
 * is smaller (payload at *buf + SOP_REC_HDR_LEN). The location is checked
 * against its segment first (wrap-proof), so a damaged length costs a
 * SOP_CORRUPT, never an allocation of up to 4 GiB. */
int sop_wal__read_buf(sop_wal *w, const sop_loc *loc, int expect_type, uint8_t **buf,
                      size_t *cap);

/* Record a blob's death for space accounting. */
void sop_wal__blob_dead(sop_wal *w, const sop_loc *loc, uint64_t lsn);
/* A running transaction's value blob: +1 when written, -1 when its
 * transaction commits, prepares, replaces or abandons it. */
void sop_wal__blob_inflight(sop_wal *w, const sop_loc *loc, int sign);

/* Scan one segment from off. cb gets each valid record (payload borrowed
 * for the call). Stops at seg->size (W7) or the first invalid record:
 * *end_out = offset after the last valid record, *torn_out = 1 if bytes
 * remain after it. A cb return != SOP_OK stops the scan and is returned. */
typedef int (*sop_wal_scan_fn)(int type, uint64_t lsn, const uint8_t *payload, size_t len,
                               const sop_loc *loc, void *ctx);
int sop_wal__scan(sop_wal *w, sop_seg *seg, uint64_t off, sop_wal_scan_fn cb, void *ctx,
                  uint64_t *end_out, int *torn_out);

int sop_wal__panic(sop_wal *w, int rc);

#endif
