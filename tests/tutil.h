/*
 * tutil.h - small helpers shared by the engine tests: C-string keys and
 * values, a simulated crash (drop the handle without a checkpoint), whole
 * files read and written, and a reference CRC-32C for forging checksums.
 */
#ifndef SOP_TUTIL_H
#define SOP_TUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sop.h"

#define S(str) {(str), sizeof(str) - 1}

static inline sop_val tv(const char *s)
{
    sop_val v = {s, strlen(s)};
    return v;
}
static inline int put_s(sop_txn *t, sop_store *s, const char *k, const char *v)
{
    sop_val kk = tv(k), vv = tv(v);
    return sop_upsert(t, s, &kk, &vv);
}
static inline int add_s(sop_txn *t, sop_store *s, const char *k, const char *v)
{
    sop_val kk = tv(k), vv = tv(v);
    return sop_add(t, s, &kk, &vv);
}
static inline int upd_s(sop_txn *t, sop_store *s, const char *k, const char *v)
{
    sop_val kk = tv(k), vv = tv(v);
    return sop_update(t, s, &kk, &vv);
}
static inline int del_s(sop_txn *t, sop_store *s, const char *k)
{
    sop_val kk = tv(k);
    return sop_remove(t, s, &kk);
}
static inline int get_s(sop_val *out, sop_txn *t, sop_store *s, const char *k)
{
    sop_val kk = tv(k);
    return sop_get(out, t, s, &kk);
}
static inline int reverse_cmp(const sop_val *a, const sop_val *b, void *ctx)
{
    (void)ctx;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->data, b->data, n);
    if (!c)
        c = (a->len > b->len) - (a->len < b->len);
    return -c;
}

#include <stdio.h>

static inline void print_finding(const char *f, void *ctx)
{
    (void)ctx;
    fprintf(stderr, "    check: %s\n", f);
}
/* Run the integrity checker; returns the number of findings (printed), or
 * 1000000 + the error code's magnitude if it could not run. */
static inline uint64_t check_db(sop_db *db)
{
    uint64_t n = 0;
    int rc = sop_db_check(&n, db, print_finding, NULL, NULL);
    if (rc != SOP_OK) {
        fprintf(stderr, "    check failed to run: %s: %s\n", sop_strerror(rc), sop_errmsg());
        return 1000000u + (uint64_t)(-rc);
    }
    return n;
}

/* Free the handle as a crash would leave the files: no checkpoint, no sync,
 * transactions abandoned (prepared ones stay prepared). Internal hook. */
int sop_db__crash_close(sop_db *db);
static inline int crash_close(sop_db *db)
{
    return sop_db__crash_close(db);
}
#define forget_txn(t) ((void)(t))

/* The whole file at path (malloc'd, *len its size), or NULL. */
static inline uint8_t *tfile_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *d = malloc(n > 0 ? (size_t)n : 1);
    if (d && fread(d, 1, (size_t)n, f) != (size_t)n) {
        free(d);
        d = NULL;
    }
    fclose(f);
    *len = n > 0 ? (size_t)n : 0;
    return d;
}

/* Replace the file at path with len bytes of d: 0, or -1. */
static inline int tfile_write(const char *path, const uint8_t *d, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int rc = fwrite(d, 1, len, f) == len ? 0 : -1;
    return fclose(f) == 0 ? rc : -1;
}

/* CRC-32C (Castagnoli, reflected) continued from crc, bit by bit: tests
 * forge checksums without the engine's code. */
static inline uint32_t tcrc32c(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

#endif
