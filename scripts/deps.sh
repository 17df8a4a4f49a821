#!/usr/bin/env bash
# deps.sh <set> - install the Debian packages a make target needs, if missing.
#   build: a C compiler, make, pkg-config (tests/test_build.sh).
#   bench: + liblmdb-dev libsqlite3-dev librocksdb-dev gnuplot.
#   fuzz: + clang with libFuzzer.   lint: clang-format.
#   rust: + the Debian crates the Rust binding (bindings/rust) builds from.
#   rust-bench: + rusqlite and lmdb crates for the binding's benchmark.
# Runs apt-get only when something is missing (and only as root).
set -euo pipefail
want=(gcc make pkg-config)
case "${1:-build}" in
  bench) want+=(liblmdb-dev libsqlite3-dev librocksdb-dev gnuplot-nox) ;;
  fuzz)  want+=(clang libclang-rt-14-dev) ;;
  lint)  want=(clang-format) ;;
  memcheck) want=(valgrind) ;;
  rust)  want+=(librust-serde-dev librust-serde-derive-dev librust-bincode-dev
                librust-tempfile-dev librust-proptest-dev librust-proptest+std-dev
                librust-proptest+bit-set-dev) ;;
  rust-bench) want+=(librust-serde-dev librust-serde-derive-dev librust-bincode-dev
                librust-rusqlite-dev librust-lmdb-dev) ;;
esac
missing=()
for p in "${want[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "deps.sh: missing packages: ${missing[*]} (run as root, or apt-get install them)" >&2
  exit 1
fi
echo "deps.sh: installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
