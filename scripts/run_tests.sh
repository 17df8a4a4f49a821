#!/usr/bin/env bash
# run_tests.sh <build-dir> - run every test binary, then print one total line
# "N passed, N failed". Exit status non-zero if any test failed or crashed.
# SOP_TEST_THREADED_ONLY=1 runs only the binaries listed in tests/threaded.list.
# Failure lines (assertions, sanitizer reports, crashes) are repeated after the
# total, so a log that keeps only its tail (CI) still names what failed.
set -u
build=$1
total_pass=0; total_fail=0; crashed=0; recap=""
bins=$(ls "$build"/tests/test_* 2>/dev/null | sort)
if [ "${SOP_TEST_THREADED_ONLY:-}" = 1 ]; then
  bins=$(for t in $(cat tests/threaded.list); do echo "$build/tests/$t"; done)
fi
for t in $bins; do
  echo "== $(basename "$t")"
  out=$("$t" 2>&1); rc=$?
  echo "$out" | grep -v '^  ok '
  bad=$(echo "$out" | grep -E '^(  )?FAIL |returned -?[0-9]+ \(|ERROR: (Address|Leak|Thread)Sanitizer|runtime error:|^WARNING: ThreadSanitizer' | head -20)
  [ -n "$bad" ] && recap="$recap== $(basename "$t")
$bad
"
  line=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -1)
  if [ -z "$line" ]; then
    echo "!! $(basename "$t") exited $rc without a summary (crash?)"
    recap="$recap!! $(basename "$t") exited $rc without a summary
$(echo "$out" | tail -5)
"
    crashed=$((crashed+1)); continue
  fi
  p=${line%% passed*}; f=${line#*, }; f=${f%% failed*}
  total_pass=$((total_pass+p)); total_fail=$((total_fail+f))
  [ $rc -ne 0 ] && [ "$f" = 0 ] && { echo "!! $(basename "$t") exited $rc"; crashed=$((crashed+1))
    recap="$recap!! $(basename "$t") exited $rc
"; }
done
total_fail=$((total_fail+crashed))
if [ -n "$recap" ]; then
  echo "== what failed"
  printf '%s' "$recap"
fi
echo "$total_pass passed, $total_fail failed"
[ $total_fail -eq 0 ]
