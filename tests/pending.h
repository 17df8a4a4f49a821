/*
 * pending.h - the one gate for short torture cases that fail on the engine
 * of this branch because the fixes of issue 10 are made on other branches.
 *
 * A case named in PENDING_FIXES is skipped by `make test` unless
 * SOP_TEST_PENDING_FIXES=1, and prints "PENDING: <name>" so the skip is
 * never silent. `make torture` always runs every case (tests/torture.c sets
 * the variable). Once the fixes are merged, empty the list (or delete this
 * file and its calls): nothing else depends on it.
 */
#ifndef SOP_TEST_PENDING_H
#define SOP_TEST_PENDING_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PENDING_FIXES_ENV "SOP_TEST_PENDING_FIXES"

static const char *const PENDING_FIXES[] = {
    /* issue 10 defect 1: recovery's blob accounting drift */
    "test_blobcrash__sigkill_threads_checkpoint_and_reuse",
    "test_blobcrash__power_cuts_threads_checkpoint_and_reuse",
    /* issue 10 defects 2 and 3: 2PC lost update, recovered prepared commit under a small cache */
    "test_2pc__prepared_writes_block_lost_updates",
    "test_2pc__concurrent_bank_and_list_append",
    "test_2pc__recovered_prepared_commit_small_cache",
    NULL,
};

/* 1 if @p name is pending and the gate is closed (the caller returns). */
static inline int pending_skip(const char *name)
{
    const char *e = getenv(PENDING_FIXES_ENV);
    if (e && strcmp(e, "1") == 0)
        return 0;
    for (int i = 0; PENDING_FIXES[i]; i++)
        if (strcmp(PENDING_FIXES[i], name) == 0) {
            printf("PENDING: %s (set %s=1 to run it)\n", name, PENDING_FIXES_ENV);
            fflush(stdout);
            return 1;
        }
    return 0;
}

#endif
