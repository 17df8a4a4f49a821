/*
 * test_blob.c - ranged reads of a value blob (src/blob.h), white-box: a
 * VALUE record of a large value is appended to an open handle's log the
 * way a put writes it, then read back by ranges.
 */
#include "harness.h"
#include "tutil.h"

#include "blob.h"
#include "db.h" /* white-box: db->wal */

#include <stdlib.h>

#define BIG (300u * 1024u + 5u) /* a large value, not a multiple of 8 */

static uint8_t byte_at(size_t i)
{
    return (uint8_t)(i * 131u + (i >> 9));
}

TEST(test_blob__ranged_read_of_a_large_value)
{
    sop_db *db;
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    size_t rlen = sop_rec_len(BIG);
    uint8_t *rec = calloc(1, rlen);
    CHECK(rec);
    for (size_t i = 0; i < BIG; i++)
        rec[SOP_REC_HDR_LEN + i] = byte_at(i);
    sop_loc loc;
    uint64_t token;
    uint32_t crc = sop_rec__header(rec, SOP_REC_VALUE, rec + SOP_REC_HDR_LEN, BIG, 0);
    CHECK_OK(sop_wal__append_value(db->wal, rec, rlen, &loc, &token));
    loc.crc = crc;
    free(rec);

    uint8_t *buf = NULL;
    size_t cap = 0;
    sop_val out;
    /* The whole value, as every get reads it. */
    CHECK_OK(sop_blob__read(&out, db->wal, &loc, BIG, 0, BIG, &buf, &cap));
    CHECK_EQ_U64(out.len, BIG);
    int same = 1;
    for (size_t i = 0; i < BIG; i++)
        same &= ((const uint8_t *)out.data)[i] == byte_at(i);
    CHECK(same);
    /* Ranges: in the middle, across the 64 KiB marks, the last byte, empty
     * at the end. */
    static const uint64_t ranges[][2] = {
        {12345, 1000}, {65536 - 3, 70000}, {BIG - 1, 1}, {BIG, 0}, {0, 1}};
    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
        uint64_t off = ranges[r][0], len = ranges[r][1];
        CHECK_OK(sop_blob__read(&out, db->wal, &loc, BIG, off, len, &buf, &cap));
        CHECK_EQ_U64(out.len, len);
        for (uint64_t i = 0; i < len; i++)
            same &= ((const uint8_t *)out.data)[i] == byte_at((size_t)(off + i));
        CHECK(same);
    }
    /* Outside the value: refused before any read. */
    CHECK_RC(SOP_INVAL, sop_blob__read(&out, db->wal, &loc, BIG, BIG, 1, &buf, &cap));
    CHECK_RC(SOP_INVAL, sop_blob__read(&out, db->wal, &loc, BIG, 10, BIG, &buf, &cap));
    CHECK_RC(SOP_INVAL, sop_blob__read(&out, db->wal, &loc, BIG, UINT64_MAX, 2, &buf, &cap));
    /* A record that does not hold value_len bytes is damage. */
    CHECK_RC(SOP_CORRUPT, sop_blob__read(&out, db->wal, &loc, BIG - 1, 0, 10, &buf, &cap));
    sop_loc bad = loc;
    bad.crc ^= 1;
    CHECK_RC(SOP_CORRUPT, sop_blob__read(&out, db->wal, &bad, BIG, 0, 10, &buf, &cap));
    sop_free(buf);                        /* grown by the wal's allocator */
    sop_wal__blob_discard(db->wal, &loc); /* never committed: garbage */
    CHECK_OK(sop_db_close(db));
}

TEST_MAIN(T(test_blob__ranged_read_of_a_large_value))
