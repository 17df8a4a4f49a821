/*
 * tutil.h - small helpers shared by the engine tests: C-string keys and
 * values, and a simulated crash (drop the handle without a checkpoint).
 */
#ifndef SOP_TUTIL_H
#define SOP_TUTIL_H

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

#endif
