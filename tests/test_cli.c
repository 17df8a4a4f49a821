/*
 * test_cli.c - run the shell-level tests of the `sop` tool
 * (tests/test_cli.sh) against build/<variant>/tools/sop, one harness test
 * per section of the script, each in its own test folder.
 *
 * Some databases cannot be made with the tool, so the recover and
 * comparator tests first build them as fixtures and hand their folder to
 * the script: prepared/ holds two prepared transactions (a child process
 * prepares them and exits without closing, as a crashed coordinator
 * would); comparator/ holds a store ordered by a custom comparator.
 */
#include <libgen.h>
#include <limits.h>
#include <sys/wait.h>

#include "harness.h"
#include "tutil.h"

/* Absolute path of <dir of this binary>/<rel> into out; 0 if it exists. */
static int beside_binary(char *out, size_t cap, const char *rel)
{
    char self[PATH_MAX], joined[PATH_MAX + 64];
    if (!realpath(test_argv0, self)) /* build/<variant>/tests/test_cli, links resolved */
        return -1;
    snprintf(joined, sizeof joined, "%s/%s", dirname(self), rel);
    if (!realpath(joined, out) || strlen(out) >= cap) {
        fprintf(stderr, "    cannot find %s\n", joined);
        return -1;
    }
    return 0;
}

/* bash tests/test_cli.sh <sop> <work> <fixtures> <section>; 0 = passed. */
static int run_section(const char *section, const char *fixtures)
{
    char sop[PATH_MAX], script[PATH_MAX], cmd[4 * PATH_MAX];
    if (beside_binary(sop, sizeof sop, "../tools/sop") ||
        beside_binary(script, sizeof script, "../../../tests/test_cli.sh"))
        return -1;
    snprintf(cmd, sizeof cmd, "bash '%s' '%s' '%s' '%s' %s", script, sop, test_dir(),
             fixtures ? fixtures : "-", section);
    fflush(stdout);
    int status = system(cmd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* In a child: a store "p" with one committed key, then two prepared
 * transactions (a -> "committed later", b -> "rolled back"), then _exit
 * without closing. Returns 0 when the child succeeded. */
static int make_prepared_db(const char *path)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        sop_db *db;
        sop_txn *t, *t1, *t2;
        sop_store *s;
        if (sop_db_open(&db, path, NULL) || sop_txn_begin(&t, db, 0) ||
            sop_store_open(&s, t, "p", SOP_STORE_CREATE, NULL) || put_s(t, s, "base", "0") ||
            sop_txn_commit(t))
            _exit(1);
        if (sop_txn_begin(&t1, db, 0) || put_s(t1, s, "a", "committed later") ||
            sop_txn_prepare(t1, &(sop_val)S("xid-commit")))
            _exit(2);
        if (sop_txn_begin(&t2, db, 0) || put_s(t2, s, "b", "rolled back") ||
            sop_txn_prepare(t2, &(sop_val)S("xid-rollback")))
            _exit(3);
        _exit(0); /* the "coordinator" dies with both prepared */
    }
    int status;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

#define SECTION_TEST(name)                                                                         \
    TEST(test_cli__##name)                                                                         \
    {                                                                                              \
        CHECK(run_section(#name, NULL) == 0);                                                      \
    }

SECTION_TEST(help)
SECTION_TEST(basics)
SECTION_TEST(hex)
SECTION_TEST(scan)
SECTION_TEST(tuples)
SECTION_TEST(dup)
SECTION_TEST(dumpload)
SECTION_TEST(errors)
SECTION_TEST(busy)
SECTION_TEST(check)
SECTION_TEST(json)
SECTION_TEST(progress)

/* A store "r" ordered by the comparator "reverse", one item. */
static int make_comparator_db(const char *path)
{
    sop_comparator rev = {"reverse", reverse_cmp, NULL};
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    sop_store_options so = SOP_STORE_OPTIONS_INIT;
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    o.comparators = &rev;
    o.comparator_count = 1;
    so.comparator = "reverse";
    CHECK_OK_RET(sop_db_open(&db, path, &o));
    CHECK_OK_RET(sop_txn_begin(&t, db, 0));
    CHECK_OK_RET(sop_store_open(&s, t, "r", SOP_STORE_CREATE, &so));
    CHECK_OK_RET(put_s(t, s, "k", "v"));
    CHECK_OK_RET(sop_txn_commit(t));
    return sop_db_close(db);
}

TEST(test_cli__recover)
{
    CHECK(mkdir(test_path("fixtures"), 0755) == 0);
    CHECK(make_prepared_db(test_path("fixtures/prepared")) == 0);
    CHECK(run_section("recover", test_path("fixtures")) == 0);
}

TEST(test_cli__comparator)
{
    CHECK(mkdir(test_path("fixtures"), 0755) == 0);
    CHECK_OK(make_comparator_db(test_path("fixtures/comparator")));
    CHECK(run_section("comparator", test_path("fixtures")) == 0);
}

TEST_MAIN(T(test_cli__help), T(test_cli__basics), T(test_cli__hex), T(test_cli__scan),
          T(test_cli__tuples), T(test_cli__dup), T(test_cli__dumpload), T(test_cli__errors),
          T(test_cli__busy), T(test_cli__check), T(test_cli__json), T(test_cli__progress),
          T(test_cli__recover), T(test_cli__comparator))
