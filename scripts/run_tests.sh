#!/usr/bin/env bash
# run_tests.sh <build-dir> - run every test binary, then print one total line
# "N passed, N failed". Exit status non-zero if any test failed or crashed.
# SOP_TEST_THREADED_ONLY=1 runs only the binaries listed in tests/threaded.list.
set -u
build=$1
total_pass=0; total_fail=0; crashed=0
bins=$(ls "$build"/tests/test_* 2>/dev/null | sort)
if [ "${SOP_TEST_THREADED_ONLY:-}" = 1 ]; then
  bins=$(for t in $(cat tests/threaded.list); do echo "$build/tests/$t"; done)
fi
for t in $bins; do
  echo "== $(basename "$t")"
  out=$("$t" 2>&1); rc=$?
  echo "$out" | grep -v '^  ok ' 
  line=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -1)
  if [ -z "$line" ]; then
    echo "!! $(basename "$t") exited $rc without a summary (crash?)"
    crashed=$((crashed+1)); continue
  fi
  p=${line%% passed*}; f=${line#*, }; f=${f%% failed*}
  total_pass=$((total_pass+p)); total_fail=$((total_fail+f))
  [ $rc -ne 0 ] && [ "$f" = 0 ] && { echo "!! $(basename "$t") exited $rc"; crashed=$((crashed+1)); }
done
total_fail=$((total_fail+crashed))
echo "$total_pass passed, $total_fail failed"
[ $total_fail -eq 0 ]
