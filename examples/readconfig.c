/*
 * readconfig.c - read back what quickstart.c stored, in a read-only
 * transaction, and list the whole store with a cursor.
 */
#include <stdio.h>
#include <string.h>

#include "sop.h"

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "./data";
    sop_db *db;
    sop_txn *txn;
    sop_store *config;
    sop_cursor *cur;
    sop_val key, value;
    int rc;
    sop_db_options opts = SOP_DB_OPTIONS_INIT;
    opts.flags = SOP_DB_NOCREATE;

    if ((rc = sop_db_open(&db, path, &opts)) != SOP_OK) {
        fprintf(stderr, "open: %s: %s\n", sop_strerror(rc), sop_errmsg());
        return 1;
    }
    if ((rc = sop_txn_begin(&txn, db, SOP_TXN_READONLY)) != SOP_OK ||
        (rc = sop_store_open(&config, txn, "sys_config", 0, NULL)) != SOP_OK ||
        (rc = sop_cursor_open(&cur, txn, config)) != SOP_OK) {
        fprintf(stderr, "error: %s: %s\n", sop_strerror(rc), sop_errmsg());
        return 1;
    }
    for (rc = sop_cursor_get(&key, &value, cur, SOP_FIRST, NULL); rc == SOP_OK;
         rc = sop_cursor_get(&key, &value, cur, SOP_NEXT, NULL))
        printf("%.*s = %.*s\n", (int)key.len, (const char *)key.data, (int)value.len,
               (const char *)value.data);
    sop_cursor_close(cur);
    sop_txn_abort(txn);
    if (rc != SOP_NOTFOUND) {
        fprintf(stderr, "error: %s: %s\n", sop_strerror(rc), sop_errmsg());
        return 1;
    }
    return sop_db_close(db) == SOP_OK ? 0 : 1;
}
