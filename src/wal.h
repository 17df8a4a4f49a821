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
 *        checkpoint's position and stops at the first invalid record: a
 *        torn tail if nothing durable lies there (W5, W8), else damage.
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
 *   (W8) Durable marks. Each segment knows how much of itself an fdatasync
 *        has made durable (synced_off; its header is durable from the
 *        start). Every TXN record carries, in its header's mark field, a
 *        lower bound of synced_off at the moment it was appended. Bytes
 *        below a valid record's mark were durable before that record was
 *        written, so a crash cannot have torn them: an invalid record
 *        there is damage, never a torn tail (sop_wal__vouched). No crash
 *        can make a mark claim too much: it only counts completed syncs.
 *   (W9) The newest segment's id is noted in the LOCK file (tail_file)
 *        once its creation is durable, and lowered before a clean close
 *        removes an empty newest segment. So the LOCK never names a
 *        segment that may lawfully be missing: if it names one newer than
 *        every segment file, a segment holding records was deleted. The
 *        note also names a lower bound of that segment's file size: its
 *        header at creation; with prezero (W7), the end of a zero
 *        extension once an fdatasync made it durable, noted (and LOCK
 *        synced) by the sync's leader before any commit of that sync is
 *        acknowledged (note_raise). Every cut of the segment's file (W6,
 *        W7 at rotation and close, recovery's torn-tail cut) lowers the
 *        note first, durably, and does not cut if that fails: so the note
 *        never claims more than the file lawfully has, and a newest
 *        segment shorter than its note was truncated by someone else.
 *        Acknowledged records lie below the note's size (their sync made
 *        the extension they were written into durable). Raising the note
 *        is a hint: a failure to write it is ignored (an older note only
 *        claims less).
 *
 * Record layout (little-endian), 8-byte aligned:
 *   0  u32 magic 0x52504F53 ("SOPR")     12 u32 crc32c(header with crc=0, payload)
 *   4  u8  type  (SOP_REC_*)              16 u64 lsn (transaction records; 0 else)
 *   5  u8  version (1)                    24 payload, then zero padding to 8
 *   6  u16 durable mark (W8; TXN records, else 0)
 *   8  u32 payload_len
 *
 * The mark m says how far back from the record's own offset p the segment
 * was durable: 0 no more than its header; 1..0x7fff: p - (m - 1) * 8;
 * 0x8000..0xffff: p - (m - 0x7fff) * 64 KiB (rounded so that it never
 * claims more than was synced); never below the header.
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

/* The largest record, header and padding included: payload_len and
 * sop_loc.len are u32. sop_wal__append refuses longer appends with
 * SOP_INVAL before writing anything (a transaction whose record would be
 * longer fails its commit; checkpoint batches are at most 4 MiB). */
#define SOP_REC_MAX_LEN ((uint64_t)UINT32_MAX & ~(uint64_t)7)

/* The SEGHDR record: header and payload (db uuid, segment id). */
#define SOP_SEGHDR_LEN (SOP_REC_HDR_LEN + 24)

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
    /* (W8) set under append_mu when the segment becomes the append target:
     * appended_total then, so offset = SOP_SEGHDR_LEN + (total - base_total) */
    uint64_t base_total;
    _Atomic uint64_t synced_off; /* (W8) bytes [0, synced_off) are durable */
} sop_seg;

/* The wal's state is its own (wal.c): callers hold a handle and use the
 * functions below. */
typedef struct sop_wal sop_wal;

/* Allocate a wal over dir/seg/ with no segment yet (recovery adds them,
 * then sop_wal__start creates the append target). *out is NULL on error
 * (SOP_NOMEM). sop_wal__close closes every segment file and frees the wal;
 * NULL is a no-op. Neither runs concurrently with anything. */
int sop_wal__open(sop_wal **out, const sop_vfs *vfs, const char *dir, const uint8_t uuid[16],
                  uint64_t seg_bytes);
void sop_wal__close(sop_wal *w);

/* Register an existing segment file (recovery). SOP_CORRUPT for id
 * UINT64_MAX: no id could follow it (W1). */
int sop_wal__add_segment(sop_wal *w, uint64_t id, sop_file *f, uint64_t size);
sop_seg *sop_wal__segment(sop_wal *w, uint64_t id); /* seg_mu taken inside */
/* Create segment next_seg_id and make it the append target (W5). */
int sop_wal__start(sop_wal *w);

/* Append len bytes (one or more complete records). *loc_out gets the seg/off
 * of the first byte, *token_out the group-commit token. lsn_max updates the
 * segment's max_lsn; blob_bytes adds to its blob accounting. When buf is
 * one TXN record, its durable mark is filled in here and its crc updated
 * (W8): nothing keeps a TXN record's crc. */
int sop_wal__append(sop_wal *w, void *buf, size_t len, uint64_t lsn_max, uint64_t blob_bytes,
                    sop_loc *loc_out, uint64_t *token_out);
/* Append one value blob record of a running transaction: counted as a blob
 * and in flight in the same step, so a checkpoint's accounting snapshot
 * never sees the one without the other. */
int sop_wal__append_value(sop_wal *w, void *buf, size_t len, sop_loc *loc_out,
                          uint64_t *token_out);
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
/* A running transaction's value blob it replaced or abandoned: no longer in
 * flight, and dead, in one step (same reason as sop_wal__append_value). */
void sop_wal__blob_discard(sop_wal *w, const sop_loc *loc);

/* Scan one segment from off. cb gets each valid record (payload borrowed
 * for the call). Stops at seg->size (W7) or the first invalid record:
 * *end_out = offset after the last valid record, *torn_out = 1 if bytes
 * remain after it. A cb return != SOP_OK stops the scan and is returned. */
typedef int (*sop_wal_scan_fn)(int type, uint64_t lsn, const uint8_t *payload, size_t len,
                               const sop_loc *loc, void *ctx);
int sop_wal__scan(sop_wal *w, sop_seg *seg, uint64_t off, sop_wal_scan_fn cb, void *ctx,
                  uint64_t *end_out, int *torn_out);

/* Is seg's SEGHDR record intact and ours (this database, this id)?
 * SOP_CORRUPT naming the segment if not. */
int sop_wal__check_seghdr(sop_wal *w, sop_seg *seg);

/* (W8) Look for valid records in seg's bytes after the invalid record at
 * from (after its extent if its header still reads as one, else from the
 * next 8-byte boundary; then at every 8-byte boundary up to seg->size)
 * and return in *vouched_out the
 * highest offset any of them vouches was durable (0 if none is found; any
 * valid record vouches for the header). If nothing after a parsed header's
 * extent vouches for from, the extent itself is searched from from + 8,
 * where only the TXN record that would have followed counts (lsn next_lsn
 * or next_lsn + 1, its mark after from): the length may be what is damaged.
 * *by_out / *lsn_out name the record that vouches for the most. Reads the
 * whole range: for recovery only. */
int sop_wal__vouched(sop_wal *w, sop_seg *seg, uint64_t from, uint64_t next_lsn,
                     uint64_t *vouched_out, uint64_t *by_out, uint64_t *lsn_out);

int sop_wal__panic(sop_wal *w, int rc);

/* ---- the operations callers outside wal.c perform ------------------------
 *
 * ckpt.c, db.c and check.c reach the wal only through these (as SQLite's
 * pager reaches its WAL only through wal.h): its table, tail and locks are
 * the wal's own. Lock levels: append_mu is taken before seg_mu, never the
 * other way round; none of these is called with either held. Functions that
 * say "recovery" assume one thread (open, before sop_wal__start); the others
 * may run on any thread.
 */

/* One segment as the table holds it, copied under seg_mu. */
typedef struct sop_wal_seginfo {
    sop_seg *seg;            /* borrowed: valid while the segment is in the table */
    uint64_t id, size;       /* size: the tail (W7), not the file's size */
    uint64_t blob_bytes, dead_bytes, death_lsn, max_lsn, inflight_bytes;
    int current;             /* the append target (never reclaimed, C3) */
    size_t index, count;     /* position in id order, and the table's size */
} sop_wal_seginfo;

/* A visitor: nonzero stops a walk (and is its result; for
 * sop_wal__reclaim: remove this segment). Runs with append_mu and seg_mu
 * held: it must not call into the wal, nor take a lock above them
 * (commit_mu, ckpt_mu, snap_mu may be held by its caller). */
typedef int (*sop_wal_seg_fn)(const sop_wal_seginfo *s, void *ctx);

/* Recovery: set what db.c decides at open. tail_file: the LOCK file the
 * (W9) note goes to, NULL for none (read-only); prezero (W7); nosync
 * (W5: SOP_SYNC_OFF). */
void sop_wal__configure(sop_wal *w, sop_file *tail_file, int prezero, int nosync);

/* Has the wal panicked (W4)? A relaxed atomic read: no lock, any thread. */
int sop_wal__panicked(sop_wal *w);

/* The append position {current segment id, its tail offset} ({0, 0}
 * before sop_wal__start or after sop_wal__drop_empty_tail): append_mu
 * taken inside. Bytes appended before the call lie below it. */
sop_loc sop_wal__tail(sop_wal *w);

/* Call fn for every segment in id order, with append_mu and seg_mu held
 * throughout, so the tail (*tail_out, if not NULL: as sop_wal__tail) and
 * every segment's size and counters are one instant's. Returns fn's first
 * nonzero result (the walk stops there), else 0. */
int sop_wal__each_segment(sop_wal *w, sop_loc *tail_out, sop_wal_seg_fn fn, void *ctx);

/* The current segment's info (as sop_wal__each_segment); 0 if there is
 * none (read-only), else 1. append_mu and seg_mu taken inside. */
int sop_wal__current(sop_wal *w, sop_wal_seginfo *out);

/* The tail of segment id; 0 if it is not in the table. seg_mu taken. */
uint64_t sop_wal__seg_size(sop_wal *w, uint64_t id);

/* seg/<id>.seg under the wal's folder, into buf (cap bytes, truncated). */
void sop_wal__seg_path(const sop_wal *w, uint64_t id, char *buf, size_t cap);

/* (C3) Delete every sealed segment victim(info) says may go: closed,
 * unlinked (a failed unlink only leaves a file that costs space) and out
 * of the table, its ids never reused (W1). The current segment is never
 * offered. append_mu and seg_mu held for the whole walk, so no append or
 * read (loc lookups take seg_mu) sees a half-removed segment; the caller
 * guarantees nothing references a victim any more. Returns how many went. */
size_t sop_wal__reclaim(sop_wal *w, sop_wal_seg_fn victim, void *ctx);

/* Recovery: remove segment s, a creation a crash interrupted (no valid
 * header, no record): out of the table, closed, unlinked, the folder
 * synced unless nosync. If it was the newest id, the next segment takes
 * its id. s is freed even on failure; the unlink's or sync's error is
 * returned. */
int sop_wal__drop_segment(sop_wal *w, sop_seg *s);

/* At a clean close: if the current segment holds only its header and no
 * blob, and its id is above keep_below (the checkpoint's replay and
 * durable segments), lower the (W9) note to the newest segment that stays
 * and remove it; there is no current segment after that (no append may
 * follow). Best effort: if the note cannot be lowered or the unlink fails,
 * the empty segment stays (harmless). append_mu held throughout. */
void sop_wal__drop_empty_tail(sop_wal *w, uint64_t keep_below);

/* Recovery: ids up to and including id are taken (a manifest names them,
 * W1): the next segment gets a larger one. */
void sop_wal__reserve_ids(sop_wal *w, uint64_t id);

/* Recovery, after the replay: blob bytes still counted in flight were
 * never claimed by a replayed record, so they are dead, at applied_lsn
 * (their transactions never committed); every acct_end is cleared (the
 * manifest's accounting has been merged). */
void sop_wal__settle(sop_wal *w, uint64_t applied_lsn);

/* Recovery: (W9) the note LOCK holds, as sop_wal__noted_newest read it;
 * a cut below it lowers it first. sop_wal__note_id returns the noted id. */
void sop_wal__adopt_note(sop_wal *w, uint64_t id, uint64_t min_size);
uint64_t sop_wal__note_id(sop_wal *w);

/* sop_db_stat's share: fdatasyncs so far (sync_mu), and over the table
 * (seg_mu) bytes on disk, live blob bytes and segments. */
typedef struct sop_wal_stats {
    uint64_t syncs, disk_bytes, live_bytes, segments;
} sop_wal_stats;
void sop_wal__stats(sop_wal *w, sop_wal_stats *out);

/* Test hooks: the largest append (SOP_REC_MAX_LEN unless lowered). Set it
 * only while no append runs. */
uint64_t sop_wal__max_record(sop_wal *w);
void sop_wal__set_max_record(sop_wal *w, uint64_t max_record);

/* (W9) Write "the log reached segment id, whose file holds at least
 * min_size bytes" to w->tail_file and sync it. */
int sop_wal__note_newest(sop_wal *w, uint64_t id, uint64_t min_size);
/* (W9) Segment id is about to be cut to size: lower the note first if it
 * may claim more (durably; an error means: do not cut). */
int sop_wal__note_cut(sop_wal *w, uint64_t id, uint64_t size);
/* (W9) The segment id and minimum size noted in f; 0, 0 if none (or the
 * note is torn); a version 1 note ("SOPTAIL1") claims no size. */
int sop_wal__noted_newest(const sop_vfs *vfs, sop_file *f, uint64_t *id_out,
                          uint64_t *min_size_out);

#endif
