/*
 * quickstart.c - the seed program: open a database in ./data, create (or
 * open) the store "sys_config", upsert two settings, commit.
 * Run it twice: the second run updates the same keys.
 */
#include <stdio.h>
#include <string.h>

#include "sop.h"

static sop_val str(const char *s)
{
    sop_val v = {s, strlen(s)};
    return v;
}

int main(void)
{
    sop_db *db;
    sop_txn *txn;
    sop_store *config;
    int rc;

    if ((rc = sop_db_open(&db, "./data", NULL)) != SOP_OK) {
        fprintf(stderr, "open: %s: %s\n", sop_strerror(rc), sop_errmsg());
        return 1;
    }
    if ((rc = sop_txn_begin(&txn, db, 0)) != SOP_OK)
        goto fail;
    if ((rc = sop_store_open(&config, txn, "sys_config", SOP_STORE_CREATE, NULL)) != SOP_OK)
        goto fail_txn;

    sop_val k1 = str("max_connections"), v1 = str("10000");
    sop_val k2 = str("timeout_ms"), v2 = str("500");
    if ((rc = sop_upsert(txn, config, &k1, &v1)) != SOP_OK ||
        (rc = sop_upsert(txn, config, &k2, &v2)) != SOP_OK)
        goto fail_txn;
    if ((rc = sop_txn_commit(txn)) != SOP_OK)
        goto fail;

    printf("System configuration persisted safely.\n");
    return sop_db_close(db) == SOP_OK ? 0 : 1;

fail_txn:
    sop_txn_abort(txn);
fail:
    fprintf(stderr, "error: %s: %s\n", sop_strerror(rc), sop_errmsg());
    sop_db_close(db);
    return 1;
}
