/*
 * test_build.c - libsop as a user builds against it: runs the sections of
 * tests/test_build.sh (see there), one harness test each, in its folder.
 *
 *   test_build__headers_compile_with_user_flags
 *     SOP_DB_OPTIONS_INIT and SOP_STORE_OPTIONS_INIT failed a user's build
 *     under gcc -Wall -Wextra -Werror (-Wmissing-field-initializers).
 *   test_build__sop_keys_example_compiles_and_runs
 *     the sop_keys.h usage example called sop_put(), which does not exist.
 *   test_build__install_with_pkg_config
 *     `make install` installed no pkg-config file.
 */
#include <libgen.h>
#include <limits.h>
#include <sys/wait.h>

#include "harness.h"

/* Absolute path of <dir of this binary>/<rel> into out; 0 if it exists. */
static int beside_binary(char *out, size_t cap, const char *rel)
{
    char self[PATH_MAX], joined[PATH_MAX + 64];
    if (!realpath(test_argv0, self)) /* build/<variant>/tests/test_build */
        return -1;
    snprintf(joined, sizeof joined, "%s/%s", dirname(self), rel);
    if (!realpath(joined, out) || strlen(out) >= cap) {
        fprintf(stderr, "    cannot find %s\n", joined);
        return -1;
    }
    return 0;
}

/* The sanitizer flags the library objects of this variant need. */
static const char *san_flags(const char *build)
{
    const char *v = strrchr(build, '/');
    v = v ? v + 1 : build;
    if (strcmp(v, "asan") == 0)
        return "-fsanitize=address,undefined";
    if (strcmp(v, "tsan") == 0)
        return "-fsanitize=thread";
    return "";
}

/* bash tests/test_build.sh <root> <build> <work> <section>; 0 = passed. */
static int run_section(const char *section)
{
    char root[PATH_MAX], build[PATH_MAX], script[PATH_MAX], cmd[4 * PATH_MAX];
    if (beside_binary(root, sizeof root, "../../..") || beside_binary(build, sizeof build, "..") ||
        beside_binary(script, sizeof script, "../../../tests/test_build.sh"))
        return -1;
    snprintf(cmd, sizeof cmd, "SOP_TEST_SAN='%s' bash '%s' '%s' '%s' '%s' %s", san_flags(build),
             script, root, build, test_dir(), section);
    fflush(stdout);
    int status = system(cmd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(test_build__headers_compile_with_user_flags)
{
    CHECK(run_section("headers") == 0);
}

TEST(test_build__sop_keys_example_compiles_and_runs)
{
    CHECK(run_section("keys_example") == 0);
}

TEST(test_build__install_with_pkg_config)
{
    CHECK(run_section("install") == 0);
}

TEST_MAIN(T(test_build__headers_compile_with_user_flags),
          T(test_build__sop_keys_example_compiles_and_runs), T(test_build__install_with_pkg_config))
