#!/usr/bin/env bash
# instr.sh [N] - instructions per operation (valgrind callgrind), binding vs
# the C API, per workload. Machine load does not change instruction counts,
# so this is the stable measure of the binding's overhead on a busy machine
# (wall-clock numbers: `make rust-bench`).
set -euo pipefail
cd "$(dirname "$0")"
N=${1:-20000}
BIN=target/release/sop-bench
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
count() { # engine stop
  SOP_BENCH_ONLY=$1 SOP_BENCH_STOP=$2 valgrind --tool=callgrind \
    --callgrind-out-file=/dev/null "$BIN" "$N" 1 "$DIR" 2>&1 | awk '/Collected/ {print $4}'
}
base=$(count 9 1) # workload generation only
echo "N = $N; instructions per operation (scan: per item, 10 passes)"
printf '%-24s %10s %10s %10s\n' engine fillrandom readrandom scan
declare -A R
for e in 0 1 2 5 6; do
  f=$(count $e 1); r=$(count $e 2); s=$(count $e 3)
  R[$e]="$(( (f - base) / N )) $(( (r - f) / N )) $(( (s - r) / (N * 10) ))"
  case $e in 0) name="sop (C API)" ;; 1) name="sop (C API, owned)" ;;
             2) name="sop (Rust binding)" ;; 5) name="sop (binding, views)" ;;
             6) name="sop (binding, next_ref)" ;; esac
  printf '%-24s %10s %10s %10s\n' "$name" ${R[$e]}
done
for pair in "2 0 binding_vs_C_API" "2 1 binding_vs_C_owned" "5 0 views_vs_C_API" \
            "6 0 next_ref_vs_C_API"; do
  read -r b c label <<<"$pair"
  read -r bf br bs <<<"${R[$b]}"
  read -r cf cr cs <<<"${R[$c]}"
  awk -v a="$bf" -v b="$br" -v d="$bs" -v x="$cf" -v y="$cr" -v z="$cs" -v l="$label" 'BEGIN {
    gsub("_", " ", l)
    printf "%-24s %+9.1f%% %+9.1f%% %+9.1f%%\n", l, (a / x - 1) * 100, (b / y - 1) * 100, (d / z - 1) * 100 }'
done
