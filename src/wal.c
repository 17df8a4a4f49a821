/*
 * wal.c - the segment log. Invariants (W1)-(W6) are stated in wal.h.
 *
 * Sections: record headers; segment table; append and rotation; group
 * commit; reads; recovery scan.
 */
#include "wal.h"
#include "util.h"
#include "lock.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

/* The wal's state: nobody outside this file sees it (wal.h). */
struct sop_wal {
    const sop_vfs *vfs;
    char *dir;
    uint8_t db_uuid[16];
    uint64_t seg_bytes;
    uint64_t max_record; /* largest append: SOP_REC_MAX_LEN (tests lower it) */

    sop_mutex append_mu; /* level 3: cur, tail_off, appended_total */
    sop_seg *cur;
    uint64_t tail_off;
    uint64_t zero_end;               /* (W7) cur's file holds zeros in [tail_off, zero_end) */
    int prezero;                     /* (W7) extend cur with zeros ahead of the tail */
    int nosync;                      /* SOP_SYNC_OFF: no syncs of its own (W5) */
    _Atomic uint64_t appended_total; /* monotonic byte counter: the group-commit
                                      * token (written under append_mu) */

    sop_mutex seg_mu; /* the segment table and its accounting */
    sop_seg **segs;   /* sorted by id */
    size_t seg_count, seg_cap;
    uint64_t next_seg_id;

    sop_mutex sync_mu; /* level 5 */
    /* Group commit: waiters that the running sync covers sleep on
     * sync_cv[sync_gen & 1], the others on the other one; a finished sync
     * wakes the first set and one of the second, who leads the next sync
     * (whose target covers all of that set). Nobody wakes just to sleep. */
    pthread_cond_t sync_cv[2];
    unsigned sync_gen;
    uint64_t sync_target; /* what the running sync covers */
    int sync_running;
    uint64_t durable_total;
    _Atomic int panicked; /* set once (W4); read without locks */
    uint64_t syncs;
    sop_file *tail_file; /* (W9) the LOCK file, or NULL */
    /* (W9) a leaf lock (taken inside append_mu or alone): what the note in
     * tail_file may claim at most (a note whose write failed may have
     * landed), and a generation bumped by every cut or new segment, so a
     * sync leader never raises the note over a cut it did not see. */
    sop_mutex note_mu;
    uint64_t note_id, note_min, note_gen;
};

/* ---- record headers ------------------------------------------------------ */

uint32_t sop_rec__header(uint8_t *hdr, int type, const void *payload, size_t payload_len,
                         uint64_t lsn)
{
    sop_put_le32(hdr, SOP_REC_MAGIC);
    hdr[4] = (uint8_t)type;
    hdr[5] = 1;
    sop_put_le16(hdr + 6, 0);
    sop_put_le32(hdr + 8, (uint32_t)payload_len);
    sop_put_le32(hdr + 12, 0);
    sop_put_le64(hdr + 16, lsn);
    uint32_t crc = sop_crc32c(0, hdr, SOP_REC_HDR_LEN);
    crc = sop_crc32c(crc, payload, payload_len);
    sop_put_le32(hdr + 12, crc);
    return crc;
}

/* Check a header; payload_len_out set. Does not check the crc. */
static int rec_check_header(const uint8_t *hdr, uint64_t avail, uint32_t *payload_len_out)
{
    if (sop_get_le32(hdr) != SOP_REC_MAGIC || hdr[5] != 1 || hdr[4] < SOP_REC_SEGHDR ||
        hdr[4] > SOP_REC_TXN)
        return 0;
    uint32_t plen = sop_get_le32(hdr + 8);
    if (sop_rec_len(plen) > avail)
        return 0;
    *payload_len_out = plen;
    return 1;
}

static uint32_t rec_crc(const uint8_t *hdr, const uint8_t *payload, size_t plen)
{
    uint8_t h[SOP_REC_HDR_LEN];
    memcpy(h, hdr, SOP_REC_HDR_LEN);
    sop_put_le32(h + 12, 0);
    uint32_t crc = sop_crc32c(0, h, SOP_REC_HDR_LEN);
    return sop_crc32c(crc, payload, plen);
}

/* (W8) The mark for a record at p when [0, synced) is durable: it may
 * claim less than synced (rounding, or 0 for a distance over 2 GiB), never
 * more. */
static uint16_t mark_encode(uint64_t p, uint64_t synced)
{
    uint64_t back = p - synced;
    if ((back + 7) / 8 <= 0x7ffe)
        return (uint16_t)((back + 7) / 8 + 1);
    uint64_t k = (back + 65535) / 65536;
    return k <= 0x8000 ? (uint16_t)(0x7fff + k) : 0;
}

/* (W8) What a valid record at p with mark m vouches was durable. */
static uint64_t mark_claim(uint64_t p, uint16_t m)
{
    uint64_t back = m == 0        ? UINT64_MAX
                    : m <= 0x7fff ? (uint64_t)(m - 1) * 8
                                  : (uint64_t)(m - 0x7fff) * 65536;
    return p >= SOP_SEGHDR_LEN && back <= p - SOP_SEGHDR_LEN ? p - back : SOP_SEGHDR_LEN;
}

/* ---- segment table ------------------------------------------------------- */

int sop_wal__open(sop_wal **out, const sop_vfs *vfs, const char *dir, const uint8_t uuid[16],
                  uint64_t seg_bytes)
{
    *out = NULL;
    sop_wal *w = sop_calloc(1, sizeof *w);
    if (!w)
        return sop_err(SOP_NOMEM, "wal init");
    w->vfs = vfs;
    w->dir = sop_strdup(dir);
    if (!w->dir) {
        sop_free(w);
        return sop_err(SOP_NOMEM, "wal init");
    }
    memcpy(w->db_uuid, uuid, 16);
    w->seg_bytes = seg_bytes;
    w->max_record = SOP_REC_MAX_LEN;
    w->next_seg_id = 1;
    sop_mutex_init(&w->append_mu, 30, "wal.append");
    sop_mutex_init(&w->seg_mu, 31, "wal.seg");
    sop_mutex_init(&w->sync_mu, 50, "wal.sync");
    sop_mutex_init(&w->note_mu, 90, "wal.note");
    pthread_cond_init(&w->sync_cv[0], NULL);
    pthread_cond_init(&w->sync_cv[1], NULL);
    *out = w;
    return SOP_OK;
}

void sop_wal__close(sop_wal *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->seg_count; i++) {
        if (w->segs[i]->file)
            w->vfs->close(w->segs[i]->file);
        sop_free(w->segs[i]);
    }
    sop_free(w->segs);
    sop_free(w->dir);
    sop_mutex_destroy(&w->append_mu);
    sop_mutex_destroy(&w->seg_mu);
    sop_mutex_destroy(&w->sync_mu);
    sop_mutex_destroy(&w->note_mu);
    pthread_cond_destroy(&w->sync_cv[0]);
    pthread_cond_destroy(&w->sync_cv[1]);
    sop_free(w);
}

static int seg_insert(sop_wal *w, sop_seg *s)
{
    if (w->seg_count == w->seg_cap) {
        size_t cap = w->seg_cap ? w->seg_cap * 2 : 16;
        sop_seg **n = sop_realloc(w->segs, cap * sizeof *n);
        if (!n)
            return sop_err(SOP_NOMEM, "segment table");
        w->segs = n;
        w->seg_cap = cap;
    }
    size_t i = w->seg_count;
    while (i > 0 && w->segs[i - 1]->id > s->id) {
        w->segs[i] = w->segs[i - 1];
        i--;
    }
    w->segs[i] = s;
    w->seg_count++;
    if (s->id >= w->next_seg_id)
        w->next_seg_id = s->id + 1;
    return SOP_OK;
}

int sop_wal__add_segment(sop_wal *w, uint64_t id, sop_file *f, uint64_t size)
{
    /* The next segment gets id + 1 (W1): after UINT64_MAX that wraps to 0,
     * a name no open reads. No real log gets there: a damaged name. */
    if (id == UINT64_MAX)
        return SOP_CORRUPT_BKPT("segment %016" PRIx64 " has the last id: none can follow", id);
    sop_seg *s = sop_calloc(1, sizeof *s);
    if (!s)
        return sop_err(SOP_NOMEM, "segment");
    s->id = id;
    s->file = f;
    s->size = size;
    sop_mutex_lock(&w->seg_mu);
    int rc = seg_insert(w, s);
    sop_mutex_unlock(&w->seg_mu);
    if (rc)
        sop_free(s);
    return rc;
}

static sop_seg *seg_find_locked(sop_wal *w, uint64_t id)
{
    sop_mutex_assert_held(&w->seg_mu);
    size_t lo = 0, hi = w->seg_count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (w->segs[mid]->id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < w->seg_count && w->segs[lo]->id == id ? w->segs[lo] : NULL;
}

sop_seg *sop_wal__segment(sop_wal *w, uint64_t id)
{
    sop_mutex_lock(&w->seg_mu);
    sop_seg *s = seg_find_locked(w, id);
    sop_mutex_unlock(&w->seg_mu);
    return s;
}

void sop_wal__blob_dead(sop_wal *w, const sop_loc *loc, uint64_t lsn)
{
    sop_mutex_lock(&w->seg_mu);
    sop_seg *s = seg_find_locked(w, loc->seg);
    if (s) {
        s->dead_bytes += loc->len;
        if (lsn > s->death_lsn)
            s->death_lsn = lsn;
    }
    sop_mutex_unlock(&w->seg_mu);
}

void sop_wal__blob_inflight(sop_wal *w, const sop_loc *loc, int sign)
{
    sop_mutex_lock(&w->seg_mu);
    sop_seg *s = seg_find_locked(w, loc->seg);
    if (s) {
        if (sign > 0)
            s->inflight_bytes += loc->len;
        else if (s->inflight_bytes >= loc->len)
            s->inflight_bytes -= loc->len;
    }
    sop_mutex_unlock(&w->seg_mu);
}

void sop_wal__blob_discard(sop_wal *w, const sop_loc *loc)
{
    sop_mutex_lock(&w->seg_mu);
    sop_seg *s = seg_find_locked(w, loc->seg);
    if (s) {
        if (s->inflight_bytes >= loc->len)
            s->inflight_bytes -= loc->len;
        s->dead_bytes += loc->len;
    }
    sop_mutex_unlock(&w->seg_mu);
}

int sop_wal__panic(sop_wal *w, int rc)
{
    sop_mutex_lock(&w->sync_mu);
    w->panicked = 1;
    pthread_cond_broadcast(&w->sync_cv[0]);
    pthread_cond_broadcast(&w->sync_cv[1]);
    sop_mutex_unlock(&w->sync_mu);
    return rc;
}

static int wal_panicked(sop_wal *w)
{
    sop_mutex_lock(&w->sync_mu);
    int p = w->panicked;
    sop_mutex_unlock(&w->sync_mu);
    return p;
}

#define TAIL_MAGIC_V1 "SOPTAIL1" /* magic, u64 id, u32 crc32c of the first 16 bytes, u32 0 */
#define TAIL_MAGIC    "SOPTAIL2"
#define TAIL_LEN      32 /* magic, u64 id, u64 min_size, u32 crc32c of the first 24 bytes, u32 0 */

/* (W9) Write the note; caller holds note_mu (or is single-threaded). A
 * failed write may still have landed, so note_id/note_min then keep the
 * larger of the two claims for the segment. */
static int note_write(sop_wal *w, uint64_t id, uint64_t min_size)
{
    uint8_t b[TAIL_LEN];
    memcpy(b, TAIL_MAGIC, 8);
    sop_put_le64(b + 8, id);
    sop_put_le64(b + 16, min_size);
    sop_put_le32(b + 24, sop_crc32c(0, b, 24));
    sop_put_le32(b + 28, 0);
    int rc = w->vfs->pwrite(w->tail_file, b, sizeof b, 0);
    if (rc == SOP_OK && !w->nosync)
        rc = w->vfs->sync(w->tail_file, 1);
    if (rc == SOP_OK || id != w->note_id || min_size > w->note_min)
        w->note_min = min_size;
    w->note_id = id;
    return rc;
}

int sop_wal__note_newest(sop_wal *w, uint64_t id, uint64_t min_size)
{
    if (!w->tail_file)
        return SOP_OK;
    sop_mutex_lock(&w->note_mu);
    w->note_gen++;
    int rc = note_write(w, id, min_size);
    sop_mutex_unlock(&w->note_mu);
    return rc;
}

int sop_wal__note_cut(sop_wal *w, uint64_t id, uint64_t size)
{
    int rc = SOP_OK;
    if (!w->tail_file)
        return SOP_OK;
    sop_mutex_lock(&w->note_mu);
    w->note_gen++; /* a leader that read the old size must not note it now */
    if (w->note_id == id && w->note_min > size)
        rc = note_write(w, id, size);
    sop_mutex_unlock(&w->note_mu);
    return rc;
}

/* (W9) The sync that read gen and s's zero end zend under append_mu has
 * made [0, zend) of s durable: note it before its commits are
 * acknowledged, unless a cut or a new segment came in between. Best
 * effort (a note not raised only claims less). */
static void note_raise(sop_wal *w, sop_seg *s, uint64_t zend, uint64_t gen)
{
    if (!w->tail_file)
        return;
    sop_mutex_lock(&w->note_mu);
    if (gen == w->note_gen && w->note_id == s->id && zend > w->note_min)
        (void)note_write(w, s->id, zend);
    sop_mutex_unlock(&w->note_mu);
}

int sop_wal__noted_newest(const sop_vfs *vfs, sop_file *f, uint64_t *id_out, uint64_t *min_size_out)
{
    uint8_t b[TAIL_LEN];
    size_t got = 0;
    *id_out = *min_size_out = 0;
    int rc = vfs->pread(f, b, sizeof b, 0, &got);
    if (rc)
        return rc;
    if (got == TAIL_LEN && memcmp(b, TAIL_MAGIC, 8) == 0 &&
        sop_get_le32(b + 24) == sop_crc32c(0, b, 24)) {
        *id_out = sop_get_le64(b + 8);
        *min_size_out = sop_get_le64(b + 16);
    } else if (got >= 24 && memcmp(b, TAIL_MAGIC_V1, 8) == 0 &&
               sop_get_le32(b + 16) == sop_crc32c(0, b, 16)) {
        *id_out = sop_get_le64(b + 8); /* version 1: no size claim */
    }
    return SOP_OK;
}

static void seg_path(char *buf, size_t cap, const char *dir, uint64_t id)
{
    snprintf(buf, cap, "%s/seg/%016" PRIx64 ".seg", dir, id);
}

/* Create the next segment, write and sync its header record and the
 * directory entry (W5). Caller holds append_mu (or is single-threaded). */
static int seg_create(sop_wal *w, sop_seg **out)
{
    char path[4096], dir[4096];
    uint8_t rec[SOP_REC_HDR_LEN + 24];
    sop_file *f = NULL;
    int rc;
    sop_mutex_lock(&w->seg_mu);
    uint64_t id = w->next_seg_id;
    sop_mutex_unlock(&w->seg_mu);
    seg_path(path, sizeof path, w->dir, id);
    snprintf(dir, sizeof dir, "%s/seg", w->dir);
    rc = w->vfs->open(&f, w->vfs, path, SOP_VFS_WRITE | SOP_VFS_CREATE | SOP_VFS_EXCL);
    if (rc)
        return rc == SOP_KEYEXIST ? SOP_CORRUPT_BKPT("segment %s already exists", path) : rc;
    uint8_t *p = rec + SOP_REC_HDR_LEN;
    memcpy(p, w->db_uuid, 16);
    sop_put_le64(p + 16, id);
    sop_rec__header(rec, SOP_REC_SEGHDR, p, 24, 0);
    if ((rc = w->vfs->pwrite(f, rec, sizeof rec, 0)) != SOP_OK ||
        (!w->nosync &&
         ((rc = w->vfs->sync(f, 1)) != SOP_OK || (rc = w->vfs->sync_dir(w->vfs, dir)) != SOP_OK))) {
        w->vfs->close(f);
        w->vfs->unlink(w->vfs, path);
        return rc;
    }
    sop_seg *s = sop_calloc(1, sizeof *s);
    if (!s) {
        w->vfs->close(f);
        return sop_err(SOP_NOMEM, "segment");
    }
    s->id = id;
    s->file = f;
    s->size = sizeof rec;
    atomic_init(&s->synced_off, sizeof rec); /* (W8) the header was synced above */
    sop_mutex_lock(&w->seg_mu);
    rc = seg_insert(w, s);
    sop_mutex_unlock(&w->seg_mu);
    if (rc) {
        w->vfs->close(f);
        sop_free(s);
        return rc;
    }
    /* (W9) its directory entry and header are durable: it may no longer
     * go missing or shrink below its header. Best effort: a note that did
     * not land only claims less. */
    (void)sop_wal__note_newest(w, id, sizeof rec);
    *out = s;
    return SOP_OK;
}

int sop_wal__start(sop_wal *w)
{
    sop_seg *s;
    sop_mutex_lock(&w->append_mu);
    int rc = seg_create(w, &s);
    if (rc == SOP_OK) {
        w->cur = s;
        w->tail_off = w->zero_end = s->size;
        s->base_total = atomic_load(&w->appended_total);
    }
    sop_mutex_unlock(&w->append_mu);
    return rc;
}

/* ---- append and rotation ------------------------------------------------- */

/* (W7) Make cur's file hold zeros up to at least need (plus a chunk, so
 * the next appends find them there). Caller holds append_mu. A failure
 * leaves zero_end where it was; the caller cuts the file back (W6). */
static int extend_zeros(sop_wal *w, uint64_t need)
{
    sop_mutex_assert_held(&w->append_mu);
    static const uint8_t zeros[64 * 1024];
    uint64_t end = need + SOP_WAL_ZERO_CHUNK;
    if (end > w->seg_bytes && need <= w->seg_bytes)
        end = w->seg_bytes; /* the segment rotates there anyway */
    for (uint64_t off = w->zero_end; off < end;) {
        size_t n = end - off < sizeof zeros ? (size_t)(end - off) : sizeof zeros;
        int rc = w->vfs->pwrite(w->cur->file, zeros, n, off);
        if (rc)
            return rc;
        off += n;
    }
    w->zero_end = end;
    return SOP_OK;
}

/* Cut cur's file to its tail (W6, W7), the note lowered first (W9): if
 * that fails, nothing is cut. Caller holds append_mu. */
static int cut_cur(sop_wal *w)
{
    sop_mutex_assert_held(&w->append_mu);
    int rc = sop_wal__note_cut(w, w->cur->id, w->tail_off);
    if (rc == SOP_OK)
        rc = w->vfs->truncate(w->cur->file, w->tail_off);
    if (rc == SOP_OK)
        w->zero_end = w->tail_off;
    return rc;
}

/* (W7) Cut cur's file back to its tail (no zeros after the last record).
 * Caller holds append_mu. */
static int cut_zeros(sop_wal *w)
{
    return w->zero_end <= w->tail_off ? SOP_OK : cut_cur(w);
}

int sop_wal__trim_tail(sop_wal *w)
{
    sop_mutex_lock(&w->append_mu);
    int rc = SOP_OK;
    if (w->cur && w->zero_end > w->tail_off && !wal_panicked(w)) {
        rc = cut_zeros(w);
        if (rc == SOP_OK && !w->nosync)
            rc = w->vfs->sync(w->cur->file, 1);
    }
    sop_mutex_unlock(&w->append_mu);
    return rc;
}

/* Seal cur and make a new segment the append target. Caller holds
 * append_mu. (W5): the old segment is synced before the new gets bytes,
 * cut back to its last record first (W7). */
static int rotate_locked(sop_wal *w)
{
    sop_mutex_assert_held(&w->append_mu);
    sop_seg *s;
    int rc;
    if ((rc = cut_zeros(w)) != SOP_OK ||
        (!w->nosync && (rc = w->vfs->sync(w->cur->file, 1)) != SOP_OK)) {
        rc = sop_wal__panic(w, SOP_PANIC);
        sop_err(SOP_PANIC, "fdatasync of segment %" PRIu64 " failed", w->cur->id);
        return rc;
    }
    if ((rc = seg_create(w, &s)) != SOP_OK)
        return rc;
    w->cur = s;
    w->tail_off = w->zero_end = s->size;
    s->base_total = atomic_load(&w->appended_total);
    return SOP_OK;
}

int sop_wal__rotate(sop_wal *w)
{
    int rc = SOP_OK;
    sop_mutex_lock(&w->append_mu);
    if (wal_panicked(w))
        rc = sop_err(SOP_PANIC, "log is unusable after an earlier fatal error");
    else if (w->cur && w->tail_off > SOP_REC_HDR_LEN + 24)
        rc = rotate_locked(w);
    sop_mutex_unlock(&w->append_mu);
    return rc;
}

static int append(sop_wal *w, void *buf, size_t len, uint64_t lsn_max, uint64_t blob_bytes,
                  int inflight, sop_loc *loc_out, uint64_t *token_out);

int sop_wal__append(sop_wal *w, void *buf, size_t len, uint64_t lsn_max, uint64_t blob_bytes,
                    sop_loc *loc_out, uint64_t *token_out)
{
    return append(w, buf, len, lsn_max, blob_bytes, 0, loc_out, token_out);
}

int sop_wal__append_value(sop_wal *w, void *buf, size_t len, sop_loc *loc_out, uint64_t *token_out)
{
    return append(w, buf, len, 0, len, 1, loc_out, token_out);
}

static int append(sop_wal *w, void *buf, size_t len, uint64_t lsn_max, uint64_t blob_bytes,
                  int inflight, sop_loc *loc_out, uint64_t *token_out)
{
    int rc = SOP_OK;
    sop_mutex_lock(&w->append_mu);
    if (wal_panicked(w)) {
        rc = sop_err(SOP_PANIC, "log is unusable after an earlier fatal error");
        goto out;
    }
    if (!w->cur) {
        rc = sop_err(SOP_BADSTATE, "log opened read-only");
        goto out;
    }
    if (len > w->max_record) {
        /* A record's payload_len and a sop_loc's len are 32-bit: a longer
         * one would be written with a truncated length. */
        rc = sop_err(SOP_INVAL,
                     "log record of %zu bytes is above the largest one the log holds (%" PRIu64
                     " bytes); nothing was written",
                     len, w->max_record);
        goto out;
    }
    if (w->tail_off + len > w->seg_bytes && w->tail_off > SOP_REC_HDR_LEN + 24 &&
        (rc = rotate_locked(w)) != SOP_OK)
        goto out;
    if (len >= SOP_REC_HDR_LEN && ((uint8_t *)buf)[4] == SOP_REC_TXN &&
        sop_rec_len(sop_get_le32((uint8_t *)buf + 8)) == len) {
        /* (W8) one TXN record: vouch for what is durable now. */
        uint8_t *b = buf;
        uint32_t plen = sop_get_le32(b + 8);
        sop_put_le16(b + 6, mark_encode(w->tail_off, atomic_load(&w->cur->synced_off)));
        sop_put_le32(b + 12, rec_crc(b, b + SOP_REC_HDR_LEN, plen));
    }
    if (w->prezero && w->tail_off + len > w->zero_end)
        rc = extend_zeros(w, w->tail_off + len);
    if (rc == SOP_OK)
        rc = w->vfs->pwrite(w->cur->file, buf, len, w->tail_off);
    if (rc != SOP_OK) {
        /* (W6) cut off whatever part of the write (or the zeros) landed. */
        int trc = cut_cur(w);
        if (trc != SOP_OK) {
            sop_wal__panic(w, SOP_PANIC);
            rc = sop_err(SOP_PANIC, "cannot cut a failed append off segment %" PRIu64, w->cur->id);
        }
        goto out;
    }
    loc_out->seg = w->cur->id;
    loc_out->off = w->tail_off;
    loc_out->len = (uint32_t)len;
    loc_out->crc = 0;
    w->tail_off += len;
    uint64_t total = atomic_load(&w->appended_total) + len;
    atomic_store(&w->appended_total, total);
    *token_out = total;
    sop_mutex_lock(&w->seg_mu);
    w->cur->size = w->tail_off;
    w->cur->blob_bytes += blob_bytes;
    if (inflight)
        w->cur->inflight_bytes += len;
    if (lsn_max > w->cur->max_lsn)
        w->cur->max_lsn = lsn_max;
    sop_mutex_unlock(&w->seg_mu);
out:
    sop_mutex_unlock(&w->append_mu);
    return rc;
}

/* ---- group commit -------------------------------------------------------- */

int sop_wal__sync_to(sop_wal *w, uint64_t token)
{
    int rc = SOP_OK;
    sop_mutex_lock(&w->sync_mu);
    while (!w->panicked && w->durable_total < token) {
        if (w->sync_running) {
            unsigned set = w->sync_gen + (token > w->sync_target);
            sop_mutex_wait(&w->sync_cv[set & 1], &w->sync_mu);
            continue;
        }
        /* Become the leader: one fdatasync for everything appended so far.
         * The target is read first: bytes up to it are in cur or in older
         * segments, which were synced when they were sealed (W5). */
        uint64_t target = atomic_load(&w->appended_total);
        w->sync_running = 1;
        w->sync_target = target;
        sop_mutex_unlock(&w->sync_mu);
        sop_mutex_lock(&w->append_mu);
        sop_seg *s = w->cur;
        uint64_t base = s ? s->base_total : 0, zend = w->zero_end;
        sop_mutex_lock(&w->note_mu);
        uint64_t note_gen = w->note_gen;
        sop_mutex_unlock(&w->note_mu);
        sop_mutex_unlock(&w->append_mu);
        rc = s ? w->vfs->sync(s->file, 1) : SOP_OK;
        if (rc == SOP_OK && s && w->prezero)
            note_raise(w, s, zend, note_gen); /* (W9) before anyone is acknowledged */
        if (rc == SOP_OK && s && target > base) {
            /* (W8) s was the append target since base, so the bytes up to
             * target are s's first target - base after its header. */
            uint64_t off = SOP_SEGHDR_LEN + (target - base);
            uint64_t old = atomic_load(&s->synced_off);
            while (off > old && !atomic_compare_exchange_weak(&s->synced_off, &old, off))
                ;
        }
        sop_mutex_lock(&w->sync_mu);
        w->sync_running = 0;
        w->syncs++;
        if (rc != SOP_OK) {
            w->panicked = 1; /* (W4) never retry a failed fsync */
            pthread_cond_broadcast(&w->sync_cv[(w->sync_gen + 1) & 1]);
        } else if (target > w->durable_total) {
            w->durable_total = target;
        }
        pthread_cond_broadcast(&w->sync_cv[w->sync_gen & 1]);
        pthread_cond_signal(&w->sync_cv[(w->sync_gen + 1) & 1]); /* next leader */
        w->sync_gen++;
    }
    if (w->panicked)
        rc = sop_err(SOP_PANIC, "fdatasync of the log failed; the database must be reopened");
    sop_mutex_unlock(&w->sync_mu);
    return rc;
}

int sop_wal__sync_all(sop_wal *w)
{
    sop_mutex_lock(&w->append_mu);
    uint64_t t = atomic_load(&w->appended_total);
    sop_mutex_unlock(&w->append_mu);
    return sop_wal__sync_to(w, t);
}

/* ---- reads ----------------------------------------------------------------- */

/* The segment of loc, with loc checked against it: len at least a record
 * header and [off, off + len) inside the segment, computed without
 * overflow (off + len is never formed: a damaged off near 2^64 would wrap
 * it). Locations come from disk, so this runs before loc->len sizes any
 * buffer. */
static int loc_segment(sop_wal *w, const sop_loc *loc, sop_file **file_out)
{
    sop_mutex_lock(&w->seg_mu);
    sop_seg *s = seg_find_locked(w, loc->seg);
    uint64_t seg_size = s ? s->size : 0;
    sop_file *file = s ? s->file : NULL;
    sop_mutex_unlock(&w->seg_mu);
    if (!s)
        return SOP_CORRUPT_BKPT("blob in missing segment %" PRIu64, loc->seg);
    if (loc->len < SOP_REC_HDR_LEN || loc->len > seg_size || loc->off > seg_size - loc->len)
        return SOP_CORRUPT_BKPT("blob %" PRIu64 ":%" PRIu64 "+%u beyond segment end", loc->seg,
                                loc->off, loc->len);
    *file_out = file;
    return SOP_OK;
}

int sop_wal__check_header(sop_wal *w, const sop_loc *loc, int expect_type)
{
    uint8_t hdr[SOP_REC_HDR_LEN];
    size_t got = 0;
    uint32_t plen;
    sop_file *file;
    int rc = loc_segment(w, loc, &file);
    if (rc)
        return rc;
    if ((rc = w->vfs->pread(file, hdr, sizeof hdr, loc->off, &got)) != SOP_OK)
        return rc;
    if (got != sizeof hdr || !rec_check_header(hdr, loc->len, &plen) || hdr[4] != expect_type ||
        sop_rec_len(plen) != loc->len || sop_get_le32(hdr + 12) != loc->crc)
        return SOP_CORRUPT_BKPT("no record matching blob %" PRIu64 ":%" PRIu64 "+%u", loc->seg,
                                loc->off, loc->len);
    return SOP_OK;
}

int sop_wal__read_buf(sop_wal *w, const sop_loc *loc, int expect_type, uint8_t **buf, size_t *cap)
{
    size_t got = 0;
    uint32_t plen;
    sop_file *file;
    int rc = loc_segment(w, loc, &file);
    if (rc)
        return rc;
    if (*cap < loc->len) {
        uint8_t *n = sop_realloc(*buf, loc->len);
        if (!n)
            return sop_err(SOP_NOMEM, "blob of %u bytes", loc->len);
        *buf = n;
        *cap = loc->len;
    }
    rc = w->vfs->pread(file, *buf, loc->len, loc->off, &got);
    if (rc)
        return rc;
    const uint8_t *b = *buf;
    if (got != loc->len || !rec_check_header(b, loc->len, &plen) || b[4] != expect_type ||
        sop_rec_len(plen) != loc->len)
        return SOP_CORRUPT_BKPT("bad record header at %" PRIu64 ":%" PRIu64, loc->seg, loc->off);
    uint32_t crc = sop_get_le32(b + 12);
    if (crc != loc->crc || rec_crc(b, b + SOP_REC_HDR_LEN, plen) != crc)
        return SOP_CORRUPT_BKPT("checksum mismatch at %" PRIu64 ":%" PRIu64, loc->seg, loc->off);
    return SOP_OK;
}

int sop_wal__read(sop_wal *w, const sop_loc *loc, int expect_type, uint8_t **payload_out,
                  size_t *payload_len_out)
{
    *payload_out = NULL;
    uint8_t *buf = NULL;
    size_t cap = 0;
    int rc = sop_wal__read_buf(w, loc, expect_type, &buf, &cap);
    if (rc) {
        sop_free(buf);
        return rc;
    }
    size_t plen = sop_get_le32(buf + 8);
    memmove(buf, buf + SOP_REC_HDR_LEN, plen);
    *payload_out = buf;
    *payload_len_out = plen;
    return SOP_OK;
}

/* ---- recovery scan ------------------------------------------------------- */

int sop_wal__scan(sop_wal *w, sop_seg *seg, uint64_t off, sop_wal_scan_fn cb, void *ctx,
                  uint64_t *end_out, int *torn_out)
{
    enum { CHUNK = 1 << 20 };
    sop_mutex_lock(&w->seg_mu);
    uint64_t fsize = seg->size; /* (W7) the tail, not the file's size */
    sop_mutex_unlock(&w->seg_mu);
    uint8_t *buf = NULL;
    size_t buf_cap = 0;
    int rc;
    *torn_out = 0;
    while (off < fsize) {
        uint8_t hdr[SOP_REC_HDR_LEN];
        size_t got;
        uint32_t plen;
        if (fsize - off < SOP_REC_HDR_LEN)
            break;
        SOP_TRY(w->vfs->pread(seg->file, hdr, sizeof hdr, off, &got));
        if (got != sizeof hdr || !rec_check_header(hdr, fsize - off, &plen))
            break;
        size_t rlen = sop_rec_len(plen);
        if (rlen > buf_cap) {
            size_t cap = rlen > CHUNK ? rlen : CHUNK;
            uint8_t *n = sop_realloc(buf, cap);
            if (!n) {
                rc = sop_err(SOP_NOMEM, "scan buffer");
                goto out;
            }
            buf = n;
            buf_cap = cap;
        }
        SOP_TRY(w->vfs->pread(seg->file, buf, rlen, off, &got));
        if (got != rlen || rec_crc(buf, buf + SOP_REC_HDR_LEN, plen) != sop_get_le32(buf + 12))
            break;
        if (buf[4] == SOP_REC_SEGHDR) {
            if (off != 0 || plen != 24 || memcmp(buf + SOP_REC_HDR_LEN, w->db_uuid, 16) != 0 ||
                sop_get_le64(buf + SOP_REC_HDR_LEN + 16) != seg->id) {
                rc = SOP_CORRUPT_BKPT("segment %" PRIu64 " does not belong to this database",
                                      seg->id);
                goto out;
            }
        } else {
            sop_loc loc = {seg->id, off, (uint32_t)rlen, sop_get_le32(buf + 12)};
            rc = cb(buf[4], sop_get_le64(buf + 16), buf + SOP_REC_HDR_LEN, plen, &loc, ctx);
            if (rc)
                goto out;
        }
        off += rlen;
    }
    *torn_out = off < fsize;
    rc = SOP_OK;
out:
    *end_out = off;
    sop_free(buf);
    return rc;
}

int sop_wal__check_seghdr(sop_wal *w, sop_seg *seg)
{
    uint8_t rec[SOP_SEGHDR_LEN];
    size_t got = 0;
    uint32_t plen;
    int rc = w->vfs->pread(seg->file, rec, sizeof rec, 0, &got);
    if (rc)
        return rc;
    if (got != sizeof rec || !rec_check_header(rec, sizeof rec, &plen) ||
        rec[4] != SOP_REC_SEGHDR || plen != 24 ||
        rec_crc(rec, rec + SOP_REC_HDR_LEN, plen) != sop_get_le32(rec + 12))
        return SOP_CORRUPT_BKPT("segment %" PRIu64 " has a damaged header", seg->id);
    if (memcmp(rec + SOP_REC_HDR_LEN, w->db_uuid, 16) != 0 ||
        sop_get_le64(rec + SOP_REC_HDR_LEN + 16) != seg->id)
        return SOP_CORRUPT_BKPT("segment %" PRIu64 " does not belong to this database", seg->id);
    return SOP_OK;
}

/* A valid record at off in buf[0, n) (the bytes of [base, base + n))?
 * Reads it whole when it runs past the buffer. *rlen_out, *claim_out and
 * *lsn_out describe it. */
static int probe_record(sop_wal *w, sop_seg *seg, const uint8_t *buf, size_t n, uint64_t base,
                        uint64_t off, uint64_t limit, uint8_t **big, size_t *big_cap, int *valid,
                        int *type_out, uint64_t *rlen_out, uint64_t *claim_out, uint64_t *lsn_out)
{
    const uint8_t *h = buf + (off - base);
    uint32_t plen;
    *valid = 0;
    if (!rec_check_header(h, limit - off, &plen))
        return SOP_OK;
    size_t rlen = sop_rec_len(plen);
    const uint8_t *r = h;
    if (off - base + rlen > n) {
        size_t got = 0;
        if (*big_cap < rlen) {
            uint8_t *nb = sop_realloc(*big, rlen);
            if (!nb)
                return sop_err(SOP_NOMEM, "log probe buffer");
            *big = nb;
            *big_cap = rlen;
        }
        int rc = w->vfs->pread(seg->file, *big, rlen, off, &got);
        if (rc)
            return rc;
        if (got != rlen)
            return SOP_OK;
        r = *big;
    }
    if (rec_crc(r, r + SOP_REC_HDR_LEN, plen) != sop_get_le32(r + 12))
        return SOP_OK;
    *valid = 1;
    *type_out = r[4];
    *rlen_out = rlen;
    *lsn_out = sop_get_le64(r + 16);
    /* Any valid record was written after the header was synced (W8). */
    *claim_out = r[4] == SOP_REC_TXN ? mark_claim(off, sop_get_le16(r + 6)) : SOP_SEGHDR_LEN;
    return SOP_OK;
}

/* Look for records vouching for from among candidates in [off, stop) (see
 * sop_wal__vouched). With strict, only a TXN record with lsn next_lsn or
 * next_lsn + 1 whose mark lies after from counts. */
static int vouch_range(sop_wal *w, sop_seg *seg, uint64_t off, uint64_t stop, uint64_t limit,
                       int strict, uint64_t from, uint64_t next_lsn, uint8_t *buf, uint8_t **big,
                       size_t *big_cap, uint64_t *vouched_out, uint64_t *by_out, uint64_t *lsn_out)
{
    enum { CHUNK = 1 << 20 };
    int rc = SOP_OK;
    while (off + SOP_REC_HDR_LEN <= limit && off < stop) {
        /* One chunk from off; candidates are checked where a record header
         * fits in it, the rest starts the next chunk. */
        size_t want = limit - off < CHUNK ? (size_t)(limit - off) : CHUNK, n = 0;
        if ((rc = w->vfs->pread(seg->file, buf, want, off, &n)) != SOP_OK)
            break;
        if (n < SOP_REC_HDR_LEN)
            break;
        uint64_t base = off;
        while (off + SOP_REC_HDR_LEN <= base + n && off < stop) {
            if (sop_get_le32(buf + (off - base)) != SOP_REC_MAGIC) {
                off += 8;
                continue;
            }
            int valid, type;
            uint64_t rlen, claim, lsn;
            if ((rc = probe_record(w, seg, buf, n, base, off, limit, big, big_cap, &valid, &type,
                                   &rlen, &claim, &lsn)) != SOP_OK)
                return rc;
            if (!valid) {
                off += 8;
                continue;
            }
            if (strict && (type != SOP_REC_TXN || (lsn != next_lsn && lsn != next_lsn + 1) ||
                           claim <= from)) {
                off += rlen;
                continue;
            }
            if (claim > *vouched_out) {
                *vouched_out = claim;
                *by_out = off;
                *lsn_out = lsn;
            }
            off += rlen;
        }
    }
    return rc;
}

int sop_wal__vouched(sop_wal *w, sop_seg *seg, uint64_t from, uint64_t next_lsn,
                     uint64_t *vouched_out, uint64_t *by_out, uint64_t *lsn_out)
{
    enum { CHUNK = 1 << 20 };
    sop_mutex_lock(&w->seg_mu);
    uint64_t limit = seg->size;
    sop_mutex_unlock(&w->seg_mu);
    uint8_t *buf = sop_malloc(CHUNK), *big = NULL;
    size_t big_cap = 0;
    int rc = SOP_OK;
    *vouched_out = *by_out = *lsn_out = 0;
    if (!buf)
        return sop_err(SOP_NOMEM, "log probe buffer");
    /* Start past the invalid record at from when its header still reads
     * as one (a damaged payload): records inside its payload (a value may
     * hold anything, a libsop log even) were never records of this log. */
    uint64_t off = (from + 7) & ~(uint64_t)7, start = off;
    if (off + SOP_REC_HDR_LEN <= limit) {
        uint8_t hdr[SOP_REC_HDR_LEN];
        size_t got = 0;
        uint32_t plen;
        if ((rc = w->vfs->pread(seg->file, hdr, sizeof hdr, off, &got)) != SOP_OK)
            goto out;
        off +=
            got == sizeof hdr && rec_check_header(hdr, limit - off, &plen) ? sop_rec_len(plen) : 8;
    }
    rc = vouch_range(w, seg, off, UINT64_MAX, limit, 0, from, next_lsn, buf, &big, &big_cap,
                     vouched_out, by_out, lsn_out);
    if (rc == SOP_OK && *vouched_out <= from && off > start + 8)
        /* Nothing after its extent vouches, but that extent comes from a
         * header that may be damaged (its length): look inside it too, for
         * the one record that would have followed - the next transaction
         * record (lsn next_lsn, or next_lsn + 1 after a bad TXN record),
         * vouching for from. An image inside a value hardly matches all
         * three; if one does, it costs a false SOP_CORRUPT, never data. */
        rc = vouch_range(w, seg, start + 8, off, limit, 1, from, next_lsn, buf, &big, &big_cap,
                         vouched_out, by_out, lsn_out);
out:
    sop_free(buf);
    sop_free(big);
    return rc;
}

/* ---- the interface for callers outside wal.c (wal.h) --------------------- */

void sop_wal__configure(sop_wal *w, sop_file *tail_file, int prezero, int nosync)
{
    w->tail_file = tail_file;
    w->prezero = prezero;
    w->nosync = nosync;
}

int sop_wal__panicked(sop_wal *w)
{
    return atomic_load_explicit(&w->panicked, memory_order_relaxed);
}

static sop_loc tail_locked(const sop_wal *w)
{
    sop_mutex_assert_held(&w->append_mu);
    sop_loc t = {w->cur ? w->cur->id : 0, w->tail_off, 0, 0};
    return t;
}

sop_loc sop_wal__tail(sop_wal *w)
{
    sop_mutex_lock(&w->append_mu);
    sop_loc t = tail_locked(w);
    sop_mutex_unlock(&w->append_mu);
    return t;
}

/* Caller holds append_mu (cur) and seg_mu (the counters). */
static void seg_info(const sop_wal *w, size_t i, sop_wal_seginfo *out)
{
    sop_mutex_assert_held(&w->append_mu);
    sop_mutex_assert_held(&w->seg_mu);
    sop_seg *s = w->segs[i];
    *out = (sop_wal_seginfo){s,
                             s->id,
                             s->size,
                             s->blob_bytes,
                             s->dead_bytes,
                             s->death_lsn,
                             s->max_lsn,
                             s->inflight_bytes,
                             s == w->cur,
                             i,
                             w->seg_count};
}

int sop_wal__each_segment(sop_wal *w, sop_loc *tail_out, sop_wal_seg_fn fn, void *ctx)
{
    int rc = 0;
    sop_mutex_lock(&w->append_mu);
    if (tail_out)
        *tail_out = tail_locked(w);
    sop_mutex_lock(&w->seg_mu);
    for (size_t i = 0; i < w->seg_count && rc == 0; i++) {
        sop_wal_seginfo si;
        seg_info(w, i, &si);
        rc = fn(&si, ctx);
    }
    sop_mutex_unlock(&w->seg_mu);
    sop_mutex_unlock(&w->append_mu);
    return rc;
}

int sop_wal__current(sop_wal *w, sop_wal_seginfo *out)
{
    int found = 0;
    sop_mutex_lock(&w->append_mu);
    sop_mutex_lock(&w->seg_mu);
    for (size_t i = 0; w->cur && i < w->seg_count && !found; i++) {
        if (w->segs[i] == w->cur) {
            seg_info(w, i, out);
            found = 1;
        }
    }
    sop_mutex_unlock(&w->seg_mu);
    sop_mutex_unlock(&w->append_mu);
    return found;
}

uint64_t sop_wal__seg_size(sop_wal *w, uint64_t id)
{
    sop_mutex_lock(&w->seg_mu);
    sop_seg *s = seg_find_locked(w, id);
    uint64_t size = s ? s->size : 0;
    sop_mutex_unlock(&w->seg_mu);
    return size;
}

void sop_wal__seg_path(const sop_wal *w, uint64_t id, char *buf, size_t cap)
{
    seg_path(buf, cap, w->dir, id);
}

/* Take entry i out of the table, close its file and free it: the one
 * place a segment leaves the wal. Caller holds seg_mu (and append_mu
 * unless single-threaded) and has made sure the segment is not cur. */
static void seg_remove_locked(sop_wal *w, size_t i)
{
    sop_mutex_assert_held(&w->seg_mu);
    assert(i < w->seg_count);
    sop_seg *s = w->segs[i];
    assert(s != w->cur);
    memmove(&w->segs[i], &w->segs[i + 1], (w->seg_count - i - 1) * sizeof *w->segs);
    w->seg_count--;
    if (s->file)
        w->vfs->close(s->file);
    sop_free(s);
}

size_t sop_wal__reclaim(sop_wal *w, sop_wal_seg_fn victim, void *ctx)
{
    size_t n = 0;
    sop_mutex_lock(&w->append_mu);
    sop_mutex_lock(&w->seg_mu);
    for (size_t i = 0; i < w->seg_count;) {
        sop_wal_seginfo si;
        seg_info(w, i, &si);
        if (si.current || !victim(&si, ctx)) {
            i++;
            continue;
        }
        char path[4300];
        seg_path(path, sizeof path, w->dir, si.id);
        w->vfs->close(w->segs[i]->file);
        w->segs[i]->file = NULL;
        w->vfs->unlink(w->vfs, path); /* a leftover only costs space */
        seg_remove_locked(w, i);
        n++;
    }
    sop_mutex_unlock(&w->seg_mu);
    sop_mutex_unlock(&w->append_mu);
    return n;
}

int sop_wal__drop_segment(sop_wal *w, sop_seg *s)
{
    char path[4300], dir[4200];
    uint64_t id = s->id;
    seg_path(path, sizeof path, w->dir, id);
    snprintf(dir, sizeof dir, "%s/seg", w->dir);
    sop_mutex_lock(&w->seg_mu);
    for (size_t k = 0; k < w->seg_count; k++)
        if (w->segs[k] == s) {
            seg_remove_locked(w, k);
            break;
        }
    if (w->next_seg_id == id + 1)
        w->next_seg_id = id;
    sop_mutex_unlock(&w->seg_mu);
    int rc = w->vfs->unlink(w->vfs, path);
    if (rc != SOP_OK)
        return rc;
    return w->nosync ? SOP_OK : w->vfs->sync_dir(w->vfs, dir);
}

void sop_wal__drop_empty_tail(sop_wal *w, uint64_t keep_upto)
{
    char path[4300], dir[4200];
    sop_mutex_lock(&w->append_mu);
    sop_seg *s = w->cur;
    sop_mutex_lock(&w->seg_mu);
    int empty = s && w->tail_off == SOP_SEGHDR_LEN && s->blob_bytes == 0 && s->id > keep_upto;
    uint64_t prev = 0, prev_size = 0; /* the newest segment that stays (sealed) */
    for (size_t i = 0; empty && i < w->seg_count; i++)
        if (w->segs[i]->id < s->id && w->segs[i]->id > prev) {
            prev = w->segs[i]->id;
            prev_size = w->segs[i]->size;
        }
    sop_mutex_unlock(&w->seg_mu);
    if (empty) {
        seg_path(path, sizeof path, w->dir, s->id);
        snprintf(dir, sizeof dir, "%s/seg", w->dir);
        /* (W9) no longer the newest before it goes: if the note cannot be
         * lowered, the empty segment stays (harmless). */
        if (sop_wal__note_newest(w, prev, prev_size) == SOP_OK &&
            w->vfs->unlink(w->vfs, path) == SOP_OK) {
            w->cur = NULL;
            sop_mutex_lock(&w->seg_mu);
            for (size_t i = 0; i < w->seg_count; i++)
                if (w->segs[i] == s) {
                    seg_remove_locked(w, i);
                    break;
                }
            sop_mutex_unlock(&w->seg_mu);
            if (!w->nosync)
                w->vfs->sync_dir(w->vfs, dir); /* best effort: a leftover is harmless */
        }
    }
    sop_mutex_unlock(&w->append_mu);
}

void sop_wal__reserve_ids(sop_wal *w, uint64_t id)
{
    sop_mutex_lock(&w->seg_mu);
    if (w->next_seg_id <= id)
        w->next_seg_id = id + 1;
    sop_mutex_unlock(&w->seg_mu);
}

void sop_wal__settle(sop_wal *w, uint64_t applied_lsn)
{
    sop_mutex_lock(&w->seg_mu);
    for (size_t i = 0; i < w->seg_count; i++) {
        sop_seg *s = w->segs[i];
        s->dead_bytes += s->inflight_bytes; /* unclaimed: never committed */
        if (s->inflight_bytes && applied_lsn > s->death_lsn)
            s->death_lsn = applied_lsn;
        s->inflight_bytes = 0;
        s->acct_end = 0;
    }
    sop_mutex_unlock(&w->seg_mu);
}

void sop_wal__adopt_note(sop_wal *w, uint64_t id, uint64_t min_size)
{
    sop_mutex_lock(&w->note_mu);
    w->note_id = id;
    w->note_min = min_size;
    sop_mutex_unlock(&w->note_mu);
}

uint64_t sop_wal__note_id(sop_wal *w)
{
    sop_mutex_lock(&w->note_mu);
    uint64_t id = w->note_id;
    sop_mutex_unlock(&w->note_mu);
    return id;
}

void sop_wal__stats(sop_wal *w, sop_wal_stats *out)
{
    memset(out, 0, sizeof *out);
    sop_mutex_lock(&w->sync_mu);
    out->syncs = w->syncs;
    sop_mutex_unlock(&w->sync_mu);
    sop_mutex_lock(&w->seg_mu);
    for (size_t i = 0; i < w->seg_count; i++) {
        const sop_seg *s = w->segs[i];
        out->disk_bytes += s->size;
        out->live_bytes += s->blob_bytes - s->dead_bytes;
        out->segments++;
    }
    sop_mutex_unlock(&w->seg_mu);
}

uint64_t sop_wal__max_record(sop_wal *w)
{
    return w->max_record;
}

void sop_wal__set_max_record(sop_wal *w, uint64_t max_record)
{
    w->max_record = max_record;
}
