#!/usr/bin/env bash
# test_build.sh <root> <build-dir> <work> <section> - libsop as a user builds
# against it, outside the tree (tests/test_build.c runs one section per test):
#
#   headers       a tiny program using every public header and both
#                 SOP_*_OPTIONS_INIT macros compiles clean with the flags users
#                 use: gcc -Wall -Wextra -Werror -std=c11 (and -pedantic),
#                 clang -Wall -Wextra -Werror -std=c99 -pedantic, and g++.
#   keys_example  the usage example in include/sop_keys.h (between @code and
#                 @endcode), compiled as it stands and run against the library.
#   install       `make install` to a temporary PREFIX installs the headers,
#                 libsop.a, libsop.so and lib/pkgconfig/sop.pc; a program in
#                 another folder builds with `pkg-config --cflags --libs sop`
#                 (shared, and --static) and runs; DESTDIR stages the same tree.
#
# SOP_TEST_SAN: the sanitizer flags of the variant under test (the library
# objects need them at link time).
set -euo pipefail
root=$1 build=$2 work=$3 section=$4
san=${SOP_TEST_SAN:-}
cd "$work"

fail() { echo "    test_build.sh $section: $*" >&2; exit 1; }

# A user's program: every header, both INIT macros, a round trip.
write_user_program() {
  cat > "$1" <<'EOF'
#include <sop.h>
#include <sop_keys.h>
#include <sop_sys.h>

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    sop_db_options dopts = SOP_DB_OPTIONS_INIT;
    sop_store_options sopts = SOP_STORE_OPTIONS_INIT;
    sop_db *db;
    sop_txn *txn;
    sop_store *store;
    sop_val key = {"k", 1}, value = {"v", 1}, got;
    int rc;
    dopts.sync = SOP_SYNC_OFF;
    if (argc < 2)
        return 2;
    if ((rc = sop_db_open(&db, argv[1], &dopts)) != SOP_OK)
        return 3;
    if ((rc = sop_txn_begin(&txn, db, 0)) == SOP_OK &&
        (rc = sop_store_open(&store, txn, "s", SOP_STORE_CREATE, &sopts)) == SOP_OK &&
        (rc = sop_upsert(txn, store, &key, &value)) == SOP_OK &&
        (rc = sop_get(&got, txn, store, &key)) == SOP_OK)
        rc = got.len == 1 && memcmp(got.data, "v", 1) == 0 ? sop_txn_commit(txn) : -100;
    if (rc != SOP_OK)
        fprintf(stderr, "user program: %d %s\n", rc, sop_errmsg());
    sop_db_close(db);
    printf("libsop %s: %s\n", SOP_VERSION_STRING, rc == SOP_OK ? "ok" : "failed");
    return rc == SOP_OK ? 0 : 1;
}
EOF
}

case "$section" in
headers)
  write_user_program user.c
  cp user.c user.cpp
  gcc -Wall -Wextra -Werror -std=c11 -I"$root/include" -c user.c -o user_gcc11.o ||
    fail "gcc -Wall -Wextra -Werror -std=c11"
  gcc -Wall -Wextra -Werror -std=c11 -pedantic -I"$root/include" -c user.c -o user_gccp.o ||
    fail "gcc -Wall -Wextra -Werror -std=c11 -pedantic"
  gcc -Wall -Wextra -Werror -std=c99 -pedantic -I"$root/include" -c user.c -o user_gcc99.o ||
    fail "gcc -Wall -Wextra -Werror -std=c99 -pedantic"
  if command -v clang >/dev/null; then
    clang -Wall -Wextra -Werror -std=c99 -pedantic -I"$root/include" -c user.c -o user_clang.o ||
      fail "clang -Wall -Wextra -Werror -std=c99 -pedantic"
    clang -Wall -Wextra -Werror -std=c11 -I"$root/include" -c user.c -o user_clang11.o ||
      fail "clang -Wall -Wextra -Werror -std=c11"
  else
    echo "    (no clang: its cases skipped)"
  fi
  if command -v g++ >/dev/null; then
    g++ -Wall -Wextra -Werror -std=c++11 -I"$root/include" -c user.cpp -o user_cxx.o ||
      fail "g++ -Wall -Wextra -Werror -std=c++11"
  fi
  # The program works too (linked with this variant's static library).
  gcc -std=c11 $san user_gcc11.o "$build/libsop.a" -pthread -o user || fail "link"
  ./user "$work/db" | grep -q ': ok$' || fail "user program did not run"
  ;;
keys_example)
  # The lines between @code and @endcode, without their comment prefix.
  sed -n '/^ \* @code$/,/^ \* @endcode$/p' "$root/include/sop_keys.h" |
    sed -e '1d' -e '$d' -e 's/^ \*     //' > example.inc
  [ "$(grep -c sop_tuple example.inc)" -ge 4 ] || fail "no example found in sop_keys.h"
  cat > example.c <<'EOF'
#include <sop_keys.h>

#include <stdio.h>
#include <string.h>

/* The example as sop_keys.h shows it, with its free names as parameters. */
static int example(sop_txn *txn, sop_store *store, sop_val value)
{
#include "example.inc"
    return rc;
}

int main(int argc, char **argv)
{
    sop_db *db;
    sop_txn *txn;
    sop_store *store;
    sop_val value = {"Sales", 5}, got;
    uint64_t n = 0;
    int rc;
    if (argc < 2 || sop_db_open(&db, argv[1], NULL) != SOP_OK)
        return 2;
    if ((rc = sop_txn_begin(&txn, db, 0)) == SOP_OK &&
        (rc = sop_store_open(&store, txn, "people", SOP_STORE_CREATE, NULL)) == SOP_OK &&
        (rc = example(txn, store, value)) == SOP_OK)
        rc = sop_txn_commit(txn);
    else if (rc != SOP_OK)
        fprintf(stderr, "example: %d %s\n", rc, sop_errmsg());
    /* The stored key is the tuple ("US", 42 descending). */
    uint8_t buf[SOP_MAX_KEY_LEN];
    sop_tuple t;
    sop_val key;
    sop_tuple_start(&t, buf, sizeof buf);
    sop_tuple_add_str(&t, "US", 2, SOP_KEY_ASC);
    sop_tuple_add_int64(&t, 42, SOP_KEY_DESC);
    if (rc == SOP_OK && (rc = sop_tuple_finish(&key, &t)) == SOP_OK &&
        (rc = sop_txn_begin(&txn, db, SOP_TXN_READONLY)) == SOP_OK) {
        if ((rc = sop_store_open(&store, txn, "people", 0, NULL)) == SOP_OK &&
            (rc = sop_count(&n, txn, store)) == SOP_OK &&
            (rc = sop_get(&got, txn, store, &key)) == SOP_OK)
            rc = n == 1 && got.len == 5 && memcmp(got.data, "Sales", 5) == 0 ? SOP_OK : -100;
        sop_txn_abort(txn);
    }
    sop_tuple_dispose(&t);
    sop_db_close(db);
    printf("sop_keys.h example: %s\n", rc == SOP_OK ? "ok" : "failed");
    return rc == SOP_OK ? 0 : 1;
}
EOF
  gcc -Wall -Wextra -Werror -std=c11 -pedantic -I"$root/include" -I. $san example.c \
    "$build/libsop.a" -pthread -o example || fail "the example does not compile"
  ./example "$work/db" | grep -q ': ok$' || fail "the example did not store its key"
  ;;
install)
  command -v pkg-config >/dev/null || fail "pkg-config missing (scripts/deps.sh build)"
  variant=$(basename "$build")
  # The nested make must not join the caller's jobserver.
  unset MAKEFLAGS MFLAGS MAKELEVEL
  prefix="$work/prefix"
  make -s -C "$root" VARIANT="$variant" PREFIX="$prefix" install >make.log 2>&1 ||
    { cat make.log >&2; fail "make install PREFIX=$prefix"; }
  for f in include/sop.h include/sop_keys.h include/sop_sys.h lib/libsop.a lib/libsop.so \
           lib/libsop.so.0 lib/pkgconfig/sop.pc bin/sop; do
    [ -e "$prefix/$f" ] || fail "make install did not install $f"
  done
  mkdir -p elsewhere && cd elsewhere
  write_user_program user.c
  export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
  flags=$(pkg-config --cflags --libs sop) || fail "pkg-config --cflags --libs sop"
  case "$flags" in *"-I$prefix/include"*"-L$prefix/lib"*"-lsop"*) ;;
    *) fail "pkg-config says '$flags'" ;; esac
  [ "$(pkg-config --modversion sop)" = "$(sed -n 's/^#define SOP_VERSION_STRING *"\(.*\)"/\1/p' \
      "$root/include/sop.h")" ] || fail "pkg-config --modversion differs from SOP_VERSION_STRING"
  # shellcheck disable=SC2086 # word splitting of pkg-config's output is intended
  gcc -Wall -Wextra -Werror -std=c11 $san user.c $flags -o user_shared || fail "shared build"
  LD_LIBRARY_PATH="$prefix/lib" ./user_shared db1 | grep -q ': ok$' || fail "shared program"
  # shellcheck disable=SC2086
  gcc -Wall -Wextra -Werror -std=c11 $san user.c $(pkg-config --cflags sop) \
    "$prefix/lib/libsop.a" $(pkg-config --static --libs-only-other --libs-only-l sop |
      sed 's/-lsop//') -o user_static || fail "static build"
  ./user_static db2 | grep -q ': ok$' || fail "static program"
  cd ..
  # DESTDIR stages the same tree under it, naming the final PREFIX inside.
  make -s -C "$root" VARIANT="$variant" PREFIX=/opt/sop DESTDIR="$work/stage" install \
    >make2.log 2>&1 || { cat make2.log >&2; fail "make install DESTDIR=..."; }
  [ -e "$work/stage/opt/sop/lib/pkgconfig/sop.pc" ] || fail "DESTDIR: no sop.pc"
  grep -q '^prefix=/opt/sop$' "$work/stage/opt/sop/lib/pkgconfig/sop.pc" ||
    fail "DESTDIR: sop.pc does not name the final prefix"
  PKG_CONFIG_PATH="$work/stage/opt/sop/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$work/stage" \
    pkg-config --cflags sop | grep -q -- "-I$work/stage/opt/sop/include" ||
    fail "DESTDIR: pkg-config with PKG_CONFIG_SYSROOT_DIR"
  ;;
*)
  fail "unknown section"
  ;;
esac
echo "    test_build.sh $section: ok"
