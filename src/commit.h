/*
 * commit.h - the commit point: how a record takes its position in the log.
 *
 * Every transaction record (COMMIT, PREPARE, COMMIT_PREPARED,
 * ABORT_PREPARED) takes the next position, lsn = last applied + 1, and is
 * then written, published and made durable. This interface is the only
 * place that decides positions and writes records at them, so a different
 * way of deciding - clustered mode's exclusive creation of a log entry
 * (docs/DESIGN-NOTES.md, "The commit point") - replaces commit.c and no
 * caller.
 *
 * One commit, in order:
 *   lsn = sop_commit__claim(db);            commit_mu held from here ...
 *   ... validate, apply the body in memory (nothing published yet) ...
 *   sop_commit__write(db, rec, lsn, &tok);  the record is in the log at lsn
 *   ... publish the applied changes (must not fail) ...
 *   sop_commit__applied(db, lsn);           ... to here: lsn is the last applied
 *   (unlock commit_mu)
 *   sop_commit__durable(db, tok, lsn);      group fsync, then visible
 *
 * A failed claim. Standalone, commit_mu is the claim: holding it, nobody
 * else can take lsn, so a claim cannot fail and sop_commit__write fails
 * only on I/O or memory. In clustered mode the claim is a guess at the
 * next free position and sop_commit__write creates the entry for it
 * exclusively; losing that race (another writer created lsn first) is
 * the failed claim: the caller reads the records it missed, re-validates
 * against them and either claims again or returns SOP_CONFLICT. Standalone
 * never reports a lost race, so the callers do not handle it yet.
 *
 * Recovery does not claim: replay takes the positions the log already
 * holds, checking each is sop_commit__next(), and marks it applied.
 */
#ifndef SOP_COMMIT_H
#define SOP_COMMIT_H

#include "db.h"

/* The position the next record takes (commit_mu held, or recovery's single
 * thread). Claims nothing. */
uint64_t sop_commit__next(const sop_db *db);

/* Claim the next position for a record this writer is about to write.
 * commit_mu held, and held until the record is written and applied or the
 * claim is abandoned. Abandoning (an error before sop_commit__write
 * succeeds) leaves nothing behind: the next claim returns the same lsn.
 * Counts db->commit_claims (test hook: one per claim). */
uint64_t sop_commit__claim(sop_db *db);

/* Write rec - a record header's room (SOP_REC_HDR_LEN) then the payload -
 * at the claimed lsn: pad it to a record length, fill the header, append it
 * to the log. commit_mu held. On SOP_OK the record is in the log at lsn but
 * not yet durable (*token names it for sop_commit__durable) and counts in
 * db->log_since_ckpt; from here the caller must not fail before
 * sop_commit__applied (the log holds lsn). On error (SOP_NOMEM, an I/O
 * error) nothing is at lsn and the claim may be abandoned or retried;
 * rec may have been padded. */
int sop_commit__write(sop_db *db, sop_buf *rec, uint64_t lsn, uint64_t *token);

/* The record at lsn (the next position) is applied and its changes are
 * published: it becomes the last applied position, which later claims
 * follow. commit_mu held (or recovery). It is not visible to new snapshots
 * yet: see sop_commit__visible. */
void sop_commit__applied(sop_db *db, uint64_t lsn);

/* New snapshots see every record up to lsn (never moves back). lsn must be
 * applied, and durable if the sync mode or the record kind asks for it
 * (D1). Takes snap_mu; any other lock may be held. */
void sop_commit__visible(sop_db *db, uint64_t lsn);

/* Make the record written with token durable - joining the group fsync in
 * flight or leading the next - then visible at lsn. commit_mu NOT held (the
 * fsync runs outside it so commits batch). On error the handle is
 * panicked (after a failed fsync the log's durable state is unknown) and
 * the error returned; the record stays applied but is never visible. */
int sop_commit__durable(sop_db *db, uint64_t token, uint64_t lsn);

/* Make every record up to upto (applied) durable, then visible. commit_mu
 * NOT held. An error panics the handle, as for sop_commit__durable. */
int sop_commit__durable_upto(sop_db *db, uint64_t upto);

#endif
