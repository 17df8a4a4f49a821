/*
 * employees.c - typed compound keys: employees keyed by
 * (region ASC, department ASC, id DESC), described once as a struct.
 * Prints every employee in key order, then a prefix scan of one region,
 * then of one region and department.
 *
 * Usage: employees [db-folder]   (default ./employees-data)
 */
#include <stdio.h>
#include <string.h>

#include "sop.h"

struct employee_key {
    const char *region;
    const char *department;
    int64_t id;
};

static const sop_key_member key_members[] = {
    SOP_KEY_MEMBER_STRPTR(struct employee_key, region, SOP_KEY_ASC),
    SOP_KEY_MEMBER_STRPTR(struct employee_key, department, SOP_KEY_ASC),
    SOP_KEY_MEMBER(struct employee_key, id, SOP_KEY_INT64, SOP_KEY_DESC),
};
#define NMEMBERS (sizeof key_members / sizeof key_members[0])

static const struct {
    struct employee_key key;
    const char *name;
} staff[] = {
    {{"US", "Sales", 7}, "Grace"},   {{"EU", "Research", 3}, "Ada"},
    {{"US", "Research", 12}, "Alan"}, {{"US", "Sales", 21}, "Barbara"},
    {{"APAC", "Sales", 5}, "Yukihiro"}, {{"EU", "Sales", 9}, "Linus"},
    {{"US", "Sales", 2}, "Dennis"},  {{"US", "Operations", 30}, "Margaret"},
};

static int fail(int rc, const char *what)
{
    fprintf(stderr, "%s: %s: %s\n", what, sop_strerror(rc), sop_errmsg());
    return 1;
}

/* Print every item whose key starts with the first nfields of prefix. */
static int scan_prefix(sop_txn *txn, sop_store *store, const sop_keyspec *spec,
                       const struct employee_key *prefix, size_t nfields)
{
    uint8_t lo[SOP_MAX_KEY_LEN], hi[SOP_MAX_KEY_LEN];
    size_t lo_len = 0, hi_len = 0;
    int has_hi = 0;
    sop_cursor *cur;
    sop_val key, value;
    int rc;
    if (nfields > 0) { /* [lo, hi): every key starting with the packed prefix */
        if ((rc = sop_key_pack(lo, sizeof lo, &lo_len, key_members, NMEMBERS, nfields, prefix)))
            return fail(rc, "prefix");
        rc = sop_key_prefix_end(hi, sizeof hi, &hi_len, &(sop_val){lo, lo_len});
        if (rc != SOP_OK && rc != SOP_NOTFOUND)
            return fail(rc, "prefix end");
        has_hi = rc == SOP_OK;
    }
    if ((rc = sop_cursor_open(&cur, txn, store)))
        return fail(rc, "cursor");
    for (rc = nfields ? sop_cursor_get(&key, &value, cur, SOP_SEEK_GE, &(sop_val){lo, lo_len})
                      : sop_cursor_get(&key, &value, cur, SOP_FIRST, NULL);
         rc == SOP_OK; rc = sop_cursor_get(&key, &value, cur, SOP_NEXT, NULL)) {
        if (has_hi) {
            size_t n = key.len < hi_len ? key.len : hi_len;
            int c = memcmp(key.data, hi, n);
            if (c > 0 || (c == 0 && key.len >= hi_len))
                break; /* past the prefix range */
        }
        char text[256];
        size_t tlen;
        sop_key_format(text, sizeof text, &tlen, spec, &key, SOP_KEY_FORMAT_NAMES);
        printf("  %s -> %.*s\n", text, (int)value.len, (const char *)value.data);
    }
    sop_cursor_close(cur);
    return rc == SOP_OK || rc == SOP_NOTFOUND ? 0 : fail(rc, "scan");
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "./employees-data";
    sop_db *db;
    sop_txn *txn;
    sop_store *store;
    sop_keyspec *spec;
    uint8_t spec_bytes[SOP_KEYSPEC_MAX_LEN], key[SOP_MAX_KEY_LEN];
    size_t spec_len, key_len;
    int rc;

    if ((rc = sop_keyspec_from_members(&spec, key_members, NMEMBERS)) ||
        (rc = sop_keyspec_encode(spec_bytes, sizeof spec_bytes, &spec_len, spec)))
        return fail(rc, "key spec");
    if ((rc = sop_db_open(&db, path, NULL)))
        return fail(rc, "open");
    if ((rc = sop_txn_begin(&txn, db, 0)))
        return fail(rc, "begin");
    sop_store_options opts = SOP_STORE_OPTIONS_INIT;
    opts.key_spec = spec_bytes;
    opts.key_spec_len = spec_len;
    if ((rc = sop_store_open(&store, txn, "employees", SOP_STORE_CREATE, &opts)))
        return fail(rc, "store");
    for (size_t i = 0; i < sizeof staff / sizeof staff[0]; i++) {
        sop_val name = {staff[i].name, strlen(staff[i].name)};
        if ((rc = sop_key_pack(key, sizeof key, &key_len, key_members, NMEMBERS, NMEMBERS,
                               &staff[i].key)) ||
            (rc = sop_upsert(txn, store, &(sop_val){key, key_len}, &name)))
            return fail(rc, "put");
    }
    if ((rc = sop_txn_commit(txn)))
        return fail(rc, "commit");

    if ((rc = sop_txn_begin(&txn, db, SOP_TXN_READONLY)))
        return fail(rc, "begin");
    struct employee_key all = {0}, us = {"US", NULL, 0}, us_sales = {"US", "Sales", 0};
    printf("all employees (region asc, department asc, id desc):\n");
    rc = scan_prefix(txn, store, spec, &all, 0);
    printf("region US:\n");
    rc = rc ? rc : scan_prefix(txn, store, spec, &us, 1);
    printf("region US, department Sales:\n");
    rc = rc ? rc : scan_prefix(txn, store, spec, &us_sales, 2);
    sop_txn_abort(txn);
    sop_keyspec_free(spec);
    if (sop_db_close(db) != SOP_OK)
        return 1;
    return rc;
}
