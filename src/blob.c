/*
 * blob.c - reading value blobs by range (blob.h).
 */
#include "blob.h"

int sop_blob__read(sop_val *out, sop_wal *w, const sop_loc *loc, uint32_t value_len, uint64_t off,
                   uint64_t len, uint8_t **buf, size_t *cap)
{
    if (off > value_len || len > value_len - off)
        return sop_err(SOP_INVAL, "range %" PRIu64 "+%" PRIu64 " is outside a value of %u bytes",
                       off, len, value_len);
    int rc = sop_wal__read_buf(w, loc, SOP_REC_VALUE, buf, cap);
    if (rc)
        return rc;
    if (sop_get_le32(*buf + 8) != value_len)
        return SOP_CORRUPT_BKPT("value blob length %u, expected %u", sop_get_le32(*buf + 8),
                                value_len);
    out->data = *buf + SOP_REC_HDR_LEN + off;
    out->len = (size_t)len;
    return SOP_OK;
}
