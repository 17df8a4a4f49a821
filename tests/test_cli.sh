#!/usr/bin/env bash
# test_cli.sh <sop-binary> [work-dir] [fixtures] [section...]
#
# Shell-level tests of the `sop` tool, run by tests/test_cli.c (one harness
# test per section) or by hand:
#   bash tests/test_cli.sh build/release/tools/sop
# work-dir: an empty folder to use ("-" or absent: a fresh mktemp -d,
# removed at the end). fixtures: a folder with databases the tool cannot
# make, built by test_cli.c: prepared/ (two prepared transactions) and
# comparator/ (a store with a custom comparator); "-" or absent skips the
# sections needing them. Sections: help basics hex scan tuples dup dumpload
# errors busy check json progress recover comparator. Prints "  ok <what>"
# per check (filtered out by scripts/run_tests.sh), "FAIL ..." per failure,
# and exits non-zero if anything failed.
set -u
export LC_ALL=C

SOP=${1:?usage: test_cli.sh <sop-binary> [work-dir] [fixtures] [section...]}
case $SOP in /*) ;; *) SOP=$PWD/$SOP ;; esac
[ -x "$SOP" ] || { echo "FAIL: $SOP is not an executable"; exit 1; }
own_work=0
if [ -n "${2:-}" ] && [ "${2:-}" != - ]; then WORK=$2; else WORK=$(mktemp -d); own_work=1; fi
FIXTURES=${3:--}
shift $(( $# < 3 ? $# : 3 ))
SECTIONS=${*:-help basics hex scan tuples dup dumpload errors busy check json progress recover comparator}
cd "$WORK" || exit 1

checks=0; failures=0
have_python=0; command -v python3 >/dev/null 2>&1 && have_python=1

pass() { checks=$((checks+1)); echo "  ok $1"; }
failed() {
  checks=$((checks+1)); failures=$((failures+1))
  echo "FAIL [$section] $1"
  [ -n "${OUT:-}" ] && echo "    stdout: $(printf '%s' "$OUT" | head -c 600)"
  [ -n "${ERR:-}" ] && echo "    stderr: $(printf '%s' "$ERR" | head -c 600)"
  return 0
}

# run <args...>: run sop, capture OUT, ERR (trailing newlines dropped, as
# $(...) would) and RC; stdin from /dev/null unless RUN_STDIN names a file.
# Builtins only around the one fork: process start-up is the slow part here.
shopt -s extglob
run() {
  "$SOP" "$@" <"${RUN_STDIN:-/dev/null}" >"$WORK/.out" 2>"$WORK/.err"
  RC=$?
  IFS= read -r -d '' OUT <"$WORK/.out"; OUT=${OUT%%+($'\n')}
  IFS= read -r -d '' ERR <"$WORK/.err"; ERR=${ERR%%+($'\n')}
  return 0
}
# expect <rc> <description>: the last run exited rc.
expect() {
  if [ "$RC" -eq "$1" ]; then pass "$2 (exit $1)"; else failed "$2: exit $RC, expected $1"; fi
}
# expect_out <text> <description>: stdout is exactly text.
expect_out() {
  if [ "$OUT" == "$1" ]; then pass "$2"; else failed "$2: stdout differs; expected: $1"; fi
}
# expect_err <extended-regex> <description>: stderr is one "sop: " line matching it.
expect_err() {
  local re="^sop: .*$1"
  if [[ $ERR != *$'\n'* && $ERR =~ $re ]]; then
    pass "$2 (message)"
  else
    failed "$2: expected one stderr line 'sop: ...$1'"
  fi
}
# fails <rc> <regex> <description> <args...>: a failing command, checked fully.
fails() {
  local rc=$1 re=$2 what=$3; shift 3
  run "$@"
  if [ "$RC" -eq "$rc" ]; then pass "$what (exit $rc)"; else failed "$what: exit $RC, expected $rc"; fi
  expect_err "$re" "$what"
  [ -z "$OUT" ] || failed "$what: printed on stdout"
}
# json_valid <file> <description> [lines]: queue a check that the file
# parses as JSON (or as JSON Lines); json_flush runs one python3 for all of
# a section's files (its start-up is slow). Skipped without python3.
json_queue=()
json_valid() {
  if [ $have_python = 0 ]; then pass "$2 (JSON not validated: no python3)"; return; fi
  local copy="$WORK/.json.${#json_queue[@]}"
  cp "$1" "$copy"
  json_queue+=("$copy|${3:-doc}|$2")
}
# json_same_items <a.jsonl> <b.jsonl> <description>: queue a check that both
# files hold the same key -> value bytes (the last line of a key wins).
json_same_items() {
  if [ $have_python = 0 ]; then pass "$3 (not compared: no python3)"; return; fi
  json_queue+=("$1|same:$2|$3")
}
json_flush() {
  [ ${#json_queue[@]} -eq 0 ] && return
  local line
  while IFS= read -r line; do
    case $line in OK\ *) pass "${line#OK }" ;; *) failed "${line#BAD }" ;; esac
  done < <(python3 -I -S - "${json_queue[@]}" <<'EOF'
import base64, json, sys
for arg in sys.argv[1:]:
    path, mode, what = arg.split("|", 2)
    try:
        if mode.startswith("same:"):
            def items(p):
                d = {}
                for line in open(p, encoding="utf-8"):
                    o = json.loads(line)
                    k, v = [base64.b64decode(x["b64"]) if isinstance(x, dict)
                            else x.encode("utf-8", "surrogatepass") for x in (o["key"], o["value"])]
                    d[k] = v
                return d
            a, b = items(path), items(mode[5:])
            if a != b:
                print("BAD %s: %d vs %d items; first difference at key %r" % (what, len(a), len(b),
                      next((k for k in a if b.get(k) != a[k]), None)))
            else:
                print("OK " + what)
            continue
        with open(path, encoding="utf-8") as f:
            if mode == "lines":
                for n, line in enumerate(f, 1):
                    json.loads(line)
            else:
                json.load(f)
        print("OK %s (valid JSON)" % what)
    except Exception as e:
        print("BAD %s: not valid JSON: %s" % (what, e))
EOF
  )
  json_queue=()
}
# Dump of store $2 in db $1 (to compare states before/after a failure).
snapshot() { "$SOP" "$1" dump "$2" 2>&1; echo "rc=$?"; }

# ---------------------------------------------------------------------------
section_help() {
  run --help; expect 0 "sop --help"
  printf '%s' "$OUT" | grep -q "exit status" && printf '%s' "$OUT" | grep -q "4  check found problems" \
    && pass "--help documents exit codes" || failed "--help lacks the exit codes"
  run db scan --help; expect 0 "sop <db> scan --help"
  printf '%s' "$OUT" | grep -q -- "--reverse" && pass "scan --help lists --reverse" || failed "scan --help"
  [ ! -e db ] && pass "--help touches no database" || failed "--help created db"
  run scan --help; expect 0 "sop scan --help"
  for c in stores create drop get put del dump load check stat recover commit-prepared rollback-prepared; do
    run db $c --help
    [ $RC -eq 0 ] && printf '%s' "$OUT" | grep -q "usage: sop <db-folder> $c" || failed "$c --help"
  done
  pass "every command has --help"
  run --version; expect 0 "sop --version"
}

section_basics() {
  run db create users; expect 0 "create store"
  run db put users alice "Alice Liddell"; expect 0 "put text"
  run db get users alice; expect 0 "get"; expect_out "Alice Liddell" "get prints the value"
  run db put users alice "Alice B."; expect 0 "put replaces (upsert)"
  run db get users alice; expect_out "Alice B." "get sees the new value"
  run db put users "key with spaces" "value with spaces"; expect 0 "put key with spaces"
  run db get users "key with spaces"; expect_out "value with spaces" "get key with spaces"
  run db put users empty ""; expect 0 "put empty value"
  run db get users empty; expect_out "" "get empty value"
  run db put users accent "é ü 日本"; run db get users accent; expect_out "é ü 日本" "UTF-8 value prints as text"
  run db put users alice "x" --add; expect 5 "put --add on a present key"
  expect_err "already exists" "put --add on a present key"
  run db get users alice; expect_out "Alice B." "failed --add changed nothing"
  run db put users bob "Bob" --add; expect 0 "put --add of a new key"
  run db del users bob; expect 0 "del"
  run db get users bob; expect 2 "get after del"; expect_err "not found" "get after del"
  run db del users bob; expect 2 "del of an absent key"
  printf 'line1\nline2\000\377' >bin.val
  RUN_STDIN=bin.val run db put users blob -; expect 0 "put value from stdin"
  "$SOP" db get users blob --raw >blob.out
  cmp -s bin.val blob.out && pass "get --raw returns the exact bytes" || failed "get --raw bytes differ"
  run db get users blob; expect_out "0x6c696e65310a6c696e653200ff" "binary value prints as hex"
  run db stores; expect 0 "stores"
  printf '%s' "$OUT" | grep -Eq "^users +5 +unique slot_length=[0-9]+ values=inline +-$" && pass "stores shows name, count, options" \
    || failed "stores output"
  run db drop users; expect 0 "drop"
  run db get users alice; expect 2 "store gone after drop"; expect_err "no such store" "store gone after drop"
}

section_hex() {
  "$SOP" db create h || failed "create h"
  run db put h 0x0001 0xcafe; expect 0 "put hex key and value"
  run db put h 0x00ff two; run db put h 0x01 three; run db put h abc text
  run db get h 0x0001; expect_out "0xcafe" "get by hex key"
  run db get h 0x00FF; expect_out "two" "hex digits in upper case"
  run db put h 0x30787a "v"; run db get h 0x30787a; expect_out "v" "text key starting with 0x given in hex"
  run db scan h --keys-only
  expect_out $'0x0001\n0x00ff\n0x01\n0x30787a\nabc' "hex keys print as hex; text starting with 0x too"
  run db scan h --from 0x00 --to 0x01
  expect_out $'0x0001\t0xcafe\n0x00ff\ttwo' "scan a hex range"
  run db put h 0x 1; expect 1 "empty hex key"; expect_err "key: empty" "empty hex key"
}

section_scan() {
  "$SOP" db create s || failed "create s"
  for k in a b c d e f g h; do echo "{\"key\":\"$k\",\"value\":\"v$k\"}"; done >s.jsonl
  printf '{"key":"ab","value":"vab"}\n{"key":"abc","value":"vabc"}\n{"key":"b1","value":"vb1"}\n' >>s.jsonl
  run db load s s.jsonl; expect 0 "load 11 items"
  run db scan s --keys-only; expect_out $'a\nab\nabc\nb\nb1\nc\nd\ne\nf\ng\nh' "full scan in key order"
  run db scan s; expect_out $'a\tva\nab\tvab\nabc\tvabc\nb\tvb\nb1\tvb1\nc\tvc\nd\tvd\ne\tve\nf\tvf\ng\tvg\nh\tvh' "scan prints key<TAB>value"
  run db scan s --from c --to f --keys-only; expect_out $'c\nd\ne' "--from inclusive, --to exclusive"
  run db scan s --from bz --keys-only --limit 2; expect_out $'c\nd' "--from between keys, --limit"
  run db scan s --prefix ab --keys-only; expect_out $'ab\nabc' "--prefix"
  run db scan s --prefix b --reverse; expect_out $'b1\tvb1\nb\tvb' "--prefix --reverse"
  run db scan s --reverse --keys-only --limit 3; expect_out $'h\ng\nf' "--reverse --limit"
  run db scan s --reverse --from c --to f --keys-only; expect_out $'e\nd\nc' "--reverse over [from, to)"
  run db scan s --reverse --to zz --keys-only --limit 1; expect_out "h" "--reverse with --to past the end"
  run db scan s --reverse --to a --keys-only; expect_out "" "--reverse with --to at the first key: empty"
  run db scan s --from x --keys-only; expect 0 "--from past the end"; expect_out "" "--from past the end prints nothing"
  run db scan s --prefix b --from b1 --keys-only; expect_out "b1" "--prefix and --from intersect"
  run db scan s --limit 0; expect_out "" "--limit 0"
  run db scan s --limit=2 --keys-only; expect_out $'a\nab' "--option=value form"
  "$SOP" db scan s --keys-only | head -1 >/dev/null; rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] && pass "scan into a closed pipe exits 0" || failed "scan | head: exit $rc"
}

section_tuples() {
  run db create emp --key-spec '(region string, dept string, id int64 desc)'; expect 0 "create with --key-spec"
  for t in '("US", "Sales", 2) Dennis' '("US", "Sales", 21) Barbara' '("EU", "Research", 3) Ada' \
           '("US", "Research", 12) Alan' '("APAC", "Sales", 5) Yukihiro' '("US", "Sales", 7) Grace'; do
    run db put emp "${t% *}" "${t##* }"; [ $RC -eq 0 ] || failed "put $t"
  done
  pass "put by tuple"
  run db get emp '("US","Sales",7)'; expect_out "Grace" "get by tuple (spacing free)"
  run db get emp '(region="EU", dept="Research", id=3)'; expect_out "Ada" "get by tuple with names"
  run db scan emp --keys-only
  expect_out $'("APAC", "Sales", 5)\n("EU", "Research", 3)\n("US", "Research", 12)\n("US", "Sales", 21)\n("US", "Sales", 7)\n("US", "Sales", 2)' \
    "scan prints tuples in spec order (id descending)"
  run db scan emp --prefix '("US", "Sales")'
  expect_out $'("US", "Sales", 21)\tBarbara\n("US", "Sales", 7)\tGrace\n("US", "Sales", 2)\tDennis' "scan --prefix tuple"
  run db scan emp --prefix '("US")' --reverse --limit 2 --keys-only
  expect_out $'("US", "Sales", 2)\n("US", "Sales", 7)' "scan --prefix tuple --reverse"
  run db scan emp --from '("EU")' --to '("US")' --keys-only
  expect_out '("EU", "Research", 3)' "scan --from/--to tuple prefixes"
  run db del emp '("US", "Sales", 7)'; expect 0 "del by tuple"
  run db get emp '("US", "Sales", 7)'; expect 2 "deleted tuple is gone"
  expect_err 'key \("US", "Sales", 7\): not found' "not-found message prints the tuple"
  run db stores; printf '%s' "$OUT" | grep -q "(region string, dept string, id int64 desc)" \
    && pass "stores shows the key spec" || failed "stores lacks the key spec"
  fails 1 "does not fit the key spec" "get with a partial tuple" db get emp '("US")'
  fails 1 "key text col" "tuple with a wrong type" db put emp '("US", "Sales", "x")' v
  fails 1 "key 'US': store 'emp' has typed keys: give a tuple \(region string, dept string, id int64 desc\)" \
    "plain text key in a tuple store" db get emp US
  fails 1 "key-spec" "bad --key-spec" db create bad --key-spec '(a strang)'
  run db stores; printf '%s' "$OUT" | grep -q "^bad" && failed "bad spec created a store" || pass "bad spec created nothing"
}

section_dup() {
  run db create d --dup; expect 0 "create --dup"
  run db put d k first --add; run db put d k second --add; run db put d j other --add
  run db scan d; expect_out $'j\tother\nk\tfirst\nk\tsecond' "--dup keeps every item, in insertion order"
  run db get d k; expect_out "first" "get returns the first item of a key"
  "$SOP" db dump d >d1.jsonl
  run db2 load d d1.jsonl --dup; expect 0 "load into a new --dup store"
  "$SOP" db2 dump d >d2.jsonl
  cmp -s d1.jsonl d2.jsonl && pass "dup store: dump, load, dump is identical" || failed "dup dump differs"
  run db del d k; expect 0 "del removes every item of a key"
  run db scan d --keys-only; expect_out "j" "only the other key is left"
}

section_dumpload() {
  # 100,000 items: text, escapes, non-UTF-8 bytes (b64), empty values.
  awk 'BEGIN {
    for (i = 0; i < 100000; i++) {
      if (i % 10 == 3)      printf "{\"key\":\"k%06d\",\"value\":{\"b64\":\"AP8Q\"}}\n", i
      else if (i % 10 == 5) printf "{\"key\":{\"b64\":\"/wA%c\"},\"value\":\"\"}\n", 65 + i % 26
      else if (i % 10 == 7) printf "{ \"value\" : \"tab\\there \\\"q\\\" \\u00e9\\ud83d\\ude00\", \"key\" : \"k%06d\" }\n", i
      else                  printf "{\"key\":\"k%06d\",\"value\":\"value %d\"}\n", i, i * 7
    }
  }' >gen.jsonl
  run db load big gen.jsonl; expect 0 "load 100,000 generated lines"
  [ -z "$ERR" ] && pass "no progress output when stderr is not a terminal" || failed "load printed on stderr"
  "$SOP" db dump big >dump1.jsonl; rc1=$?
  RUN_STDIN=dump1.jsonl run db2 load big; expect 0 "load the dump from a pipe into a new database"
  "$SOP" db2 dump big >dump2.jsonl; rc2=$?
  [ $rc1 -eq 0 ] && [ $rc2 -eq 0 ] && cmp -s dump1.jsonl dump2.jsonl \
    && pass "dump -> load -> dump is byte-identical" || failed "dumps differ (rc $rc1 $rc2)"
  n=$(wc -l <dump1.jsonl)
  # the b64 keys of the i%10==5 lines collide: ff 00 'A'+i%26 takes 13 values
  [ "$n" -eq 90013 ] && pass "dump has every distinct key ($n)" || failed "dump has $n lines, expected 90013"
  grep -q '^{"key":"k000003","value":{"b64":"AP8Q"}}$' dump1.jsonl && pass "non-UTF-8 value dumped as b64" \
    || failed "b64 value missing"
  grep -q '^{"key":"k000007","value":"tab\\there \\"q\\" é😀"}$' dump1.jsonl \
    && pass "escapes and UTF-8 normalised in the dump" || failed "escaped value wrong"
  run db2 stat big; expect 0 "stat of the loaded store"
  printf '%s' "$OUT" | grep -Eq "items +90013" && pass "stat shows the item count" || failed "stat count"
  printf '%s' "$OUT" | grep -Eq "^  depth +[0-9]+$" && printf '%s' "$OUT" | grep -Eq "^  leaf fill +[0-9.]+% \(90013 of " \
    && pass "stat shows depth and leaf fill" || failed "stat depth/fill"
  # The tree's shape from --json, checked for consistency: 90013 items in
  # leaves of at most 64, every node but the root a child, fill in (0.5, 1].
  run db2 stat big --json; expect 0 "stat --json of the loaded store"
  printf '%s' "$OUT" | python3 -c '
import json, sys
t = json.load(sys.stdin)["store"]["tree"]
assert t["nodes"] == t["leaf_nodes"] + t["branch_nodes"], t
assert t["leaf_nodes"] * 64 >= 90013 and t["depth"] >= 3, t
assert 0.5 < t["leaf_fill"] <= 1 and 0 < t["branch_fill"] <= 1, t
assert t["key_bytes"] > 0 and t["node_bytes"] > t["key_bytes"], t
' && pass "stat --json tree shape is consistent" || failed "stat --json tree: $OUT"
  run db2 stat; expect 0 "stat of every store"
  printf '%s' "$OUT" | grep -Eq "^big +90013 +[0-9]+ +[0-9]+ +[0-9.]+% +[0-9]+$" \
    && pass "stat lists each store's depth, nodes and fill" || failed "stat store table: $OUT"
  json_valid dump1.jsonl "dump output" lines
  run db2 check; expect 0 "check of the loaded database"; expect_out "clean" "check says clean"
}

section_errors() {
  "$SOP" db create s >/dev/null && "$SOP" db put s k v && "$SOP" db create t --key-spec '(n int64)' \
    || failed "setup"
  before=$(snapshot db s)
  fails 2 "no database there" "missing database folder" nodb get s k
  [ ! -e nodb ] && pass "a missing folder is not created" || failed "nodb was created"
  fails 2 "no database there" "missing nested folder" no/such/dir stores
  mkdir empty
  fails 2 "no database there" "empty folder" empty stat
  # (the engine leaves its LOCK file behind; no database is made)
  [ ! -e empty/FORMAT ] && [ ! -e empty/seg ] && pass "no database made in an empty folder" \
    || failed "a database was made in the empty folder"
  mkdir junk; echo hi >junk/notes.txt
  fails 3 "not a libsop database" "folder with other files" junk stores
  fails 2 "store 'nope': no such store" "unknown store (get)" db get nope k
  fails 2 "store 'nope': no such store" "unknown store (put)" db put nope k v
  fails 2 "store 'nope': no such store" "unknown store (drop)" db drop nope
  fails 2 "store 'nope': no such store" "unknown store (scan)" db scan nope
  fails 2 "key zz: not found in store 's'" "unknown key" db get s zz
  fails 1 "bad hex '0x12g4': 'g' is not a hex digit" "bad hex key" db get s 0x12g4
  fails 1 "bad hex '0xabc': odd number of digits" "odd hex value" db put s k 0xabc
  fails 1 "key: empty" "empty key" db put s "" v
  fails 1 "key: too long \(4097 bytes" "key too long" db put s "$(head -c 4097 /dev/zero | tr '\0' a)" v
  truncate -s $(( (1 << 30) + 1 )) huge.val
  RUN_STDIN=huge.val fails 1 "value: too large \(1073741825 bytes" "value too large" db put s k -
  fails 1 "key text col" "malformed tuple key" db get t '(1,'
  fails 1 "unknown command" "unknown command" db frobnicate
  fails 1 "the database folder comes first" "command before folder" get db s k
  fails 1 "unknown option '--bogus'" "unknown option" db scan s --bogus
  fails 1 "unknown option '--reverse'" "option of another command" db get s k --reverse
  fails 1 "missing argument" "missing argument" db get s
  fails 1 "unexpected argument 'extra'" "extra argument" db get s k extra
  fails 1 "--limit 'x'" "bad --limit" db scan s --limit x
  fails 1 "option --from needs a value" "option without its value" db scan s --from
  fails 1 "--slot-length: 2 is outside" "bad --slot-length" db create z --slot-length 2
  fails 5 "store 's': already exists" "create an existing store" db create s
  fails 1 "missing command" "no command" db
  fails 1 "missing database folder" "no arguments"
  fails 1 "expected a decimal number" "bad prepared id" db commit-prepared 12x
  fails 2 "prepared transaction 999: not found" "unknown prepared id" db rollback-prepared 999
  fails 1 "nosuch.jsonl: No such file" "load from a missing file" db load s nosuch.jsonl
  # load: every malformed line is reported with its number, nothing written
  printf '{"key":"a","value":"1"}\n{"key":"b","value":"2"}\n{"key":"c" "value":"3"}\n' >bad1.jsonl
  fails 1 "bad1.jsonl:3: col 12: expected ',' or '\}'" "load: syntax error with line number" db load s bad1.jsonl
  printf '{"key":"a","value":"1"}\n{"key":"b","value":"2","extra":"x"}\n' >bad2.jsonl
  fails 1 'bad2.jsonl:2: col 24: unexpected member' "load: unexpected member" db load s bad2.jsonl
  printf '{"key":"a","value":{"b64":"!!!!"}}\n' >bad3.jsonl
  fails 1 'bad3.jsonl:1: col 27: malformed base64' "load: bad base64" db load s bad3.jsonl
  printf '{"key":"a","value":"1"}\n{"key":"a\377","value":"1"}\n' >bad4.jsonl
  fails 1 'bad4.jsonl:2: col 9: string is not valid UTF-8' "load: invalid UTF-8" db load s bad4.jsonl
  printf '{"key":"","value":"1"}\n' >bad5.jsonl
  fails 1 'bad5.jsonl:1: key: 0 bytes' "load: empty key" db load s bad5.jsonl
  printf '{"key":"a"}\n' >bad6.jsonl
  fails 1 'bad6.jsonl:1: col 1: missing member "value"' "load: missing value" db load s bad6.jsonl
  printf '["a","b"]\n' >bad7.jsonl
  fails 1 "bad7.jsonl:1: col 1: expected '\{'" "load: not an object" db load s bad7.jsonl
  printf '{"key":"x","value":"1"}\n' >bad8.jsonl
  fails 1 "bad8.jsonl:1: key does not fit the key spec" "load: key not fitting the spec" db load t bad8.jsonl
  [ "$(snapshot db s)" == "$before" ] && pass "failed commands changed nothing in store s" \
    || failed "store s changed after failures"
  run db load newstore bad1.jsonl; expect 1 "load into a new store with a bad line"
  run db stores; printf '%s' "$OUT" | grep -q newstore && failed "failed load created its store" \
    || pass "failed load of a file created nothing"
  # from a pipe, earlier batches stay and the message says so
  cat bad1.jsonl | "$SOP" db load p --batch 1 2>err.txt; rc=$?
  [ $rc -eq 1 ] && grep -q "^sop: stdin:3: col 12: expected" err.txt \
    && grep -q "^sop: load: 2 items of earlier batches were committed" err.txt \
    && pass "pipe load names the line and what was committed" || failed "pipe load: exit $rc, $(cat err.txt)"
  run db scan p --keys-only; expect_out $'a\nb' "the earlier batches of the pipe load are there"
  cat bad1.jsonl | "$SOP" db load p2 --batch 0 2>/dev/null; rc=$?
  [ $rc -eq 1 ] && pass "load --batch 0 from a pipe fails" || failed "load --batch 0: exit $rc"
  run db stores; printf '%s' "$OUT" | grep -q "^p2" && failed "--batch 0 load left a store" \
    || pass "--batch 0: all or nothing"
}

section_busy() {
  "$SOP" db create s && "$SOP" db put s k v || failed "setup"
  rm -f fifo; mkfifo fifo
  exec 7<>fifo
  "$SOP" db load s <fifo 7>&- & holder=$!
  # Wait until the holder has the database open: its OFD lock on LOCK shows
  # in /proc/locks. (Polling with a sop command would open the database
  # itself, and could make the holder's own open fail as busy.)
  ino=$(stat -c %i db/LOCK)
  for _ in $(seq 1 200); do
    grep -q ":$ino " /proc/locks && break
    kill -0 $holder 2>/dev/null || break
    sleep 0.05
  done
  grep -q ":$ino " /proc/locks || failed "the holder never got the database open"
  fails 3 "database busy: another process has it open" "database open in another process" db get s k
  fails 3 "database busy" "busy: a write is refused too" db put s k2 v2
  echo '{"key":"k3","value":"from the holder"}' >&7
  exec 7>&-
  wait $holder; rc=$?
  [ $rc -eq 0 ] && pass "the holder finished normally" || failed "holder exit $rc"
  run db get s k3; expect_out "from the holder" "database usable after the holder closed"
  run db get s k2; expect 2 "the refused put wrote nothing"
}

# Offsets of a marker string in the segment files, "file:offset" per line, in
# write order (segment ids are hex, so sorted names are in order).
marker_spots() { for f in $(ls "$1"/seg/*.seg | sort); do grep -obUa "$2" "$f" | sed "s|^|$f:|"; done; }
flip_byte() { printf 'X' | dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null; }

section_check() {
  "$SOP" db create s && "$SOP" db put s k1 v1 && "$SOP" db put s k2 v2 || failed "setup"
  run db check; expect 0 "check of a clean database"; expect_out "clean" "check prints clean"
  run db check --json; expect 0 "check --json"; expect_out '{"clean":true,"findings":0,"messages":[]}' "check --json clean"
  # A) corrupt the node written by the newest checkpoint. The log replay at
  #    open reads it: today the engine takes it for a torn tail and cuts the
  #    segment there (reported to the lead), so check finds the lost node
  #    (exit 4); an engine that refuses the open gives exit 3. Either way
  #    the corruption is reported, never a clean exit.
  cp -r db dbA
  "$SOP" dbA put s marker "MARKER-node-blob-payload" || failed "put marker"
  spot=$(marker_spots dbA MARKER-node | tail -1)
  [ -n "$spot" ] || failed "marker not found in the segment files"
  flip_byte "${spot%:*:*}" $(( $(echo "$spot" | cut -d: -f2) + 8 ))
  run dbA check
  if [ $RC -eq 4 ] || { [ $RC -eq 3 ] && printf '%s' "$ERR" | grep -q "corrupt"; }; then
    pass "corrupt newest node: check reports it (exit $RC)"
  else
    failed "corrupt newest node: check exit $RC"
  fi
  fails 3 "database is corrupt" "corrupt newest node: get refuses" dbA get s k1
  # B) corrupt a node of an older checkpoint (not replayed at open): check
  #    must find it and exit 4; reading that node fails with exit 3.
  "$SOP" db put s marker "MARKER-node-blob-payload" && "$SOP" db create other \
    && "$SOP" db put other x y || failed "setup B"
  run db check; expect 0 "still clean before the corruption"
  spot=$(marker_spots db MARKER-node | tail -1)
  flip_byte "${spot%:*:*}" $(( $(echo "$spot" | cut -d: -f2) + 8 ))
  run db check; expect 4 "check finds the corrupted node"
  printf '%s' "$OUT" | grep -q "store 's': node .*checksum mismatch" \
    && pass "check names the store and the checksum" || failed "check output lacks the finding"
  printf '%s' "$OUT" | tail -1 | grep -Eq "^[0-9]+ findings?$" && pass "check prints the count" || failed "check count line"
  run db check --json; expect 4 "check --json with findings"
  printf '%s' "$OUT" >check.json; json_valid check.json "check --json with findings"
  printf '%s' "$OUT" | grep -q '"clean":false' && pass "check --json says not clean" || failed "check --json"
  fails 3 "corrupt" "get from the corrupted node" db get s marker
  run db get other x; expect_out "y" "other stores still readable"
  # C) a damaged checkpoint manifest: every command refuses to open.
  "$SOP" dbC create s && "$SOP" dbC put s k v || failed "setup C"
  manifest=$(ls dbC/MANIFEST-* | tail -1)
  flip_byte "$manifest" $(( $(wc -c <"$manifest") / 2 ))
  fails 3 "dbC: database is corrupt: .*MANIFEST" "corrupt manifest: check" dbC check
  fails 3 "dbC: database is corrupt" "corrupt manifest: get" dbC get s k
}

section_json() {
  "$SOP" db create "s\"q" && "$SOP" db create plain --separate-values --slot-length 16 \
    && "$SOP" db create tup --key-spec '(name string, n uint64)' || failed "setup"
  "$SOP" db put plain "$(printf 'ctl\001\037')" "$(printf 'tab\tquote"back\\')" && "$SOP" db put plain 0xff00 0x00 \
    && "$SOP" db put tup '("a\"b", 7)' "v" || failed "setup puts"
  # The words of each entry are split on purpose; s"q is a store name.
  # shellcheck disable=SC2089,SC2090
  for cmd in "stores" "scan plain" "scan tup" "scan s\"q" "stat" "stat plain" "recover" "check" "scan plain --keys-only"; do
    # shellcheck disable=SC2086,SC2090
    run db $cmd --json
    [ $RC -eq 0 ] || failed "$cmd --json: exit $RC"
    printf '%s' "$OUT" >out.json; json_valid out.json "$cmd --json"
  done
  run db stores --json
  printf '%s' "$OUT" | grep -q '"name":"s\\"q"' && pass "store names escaped" || failed "store name escaping"
  printf '%s' "$OUT" | grep -q '"slot_length":16' && pass "stores --json has options" || failed "slot_length missing"
  run db scan plain --json
  expect_out $'[\n {"key":"ctl\\u0001\\u001f","value":"tab\\tquote\\"back\\\\"},\n {"key":{"b64":"/wA="},"value":"\\u0000"}\n]' \
    "scan --json escapes control bytes (NUL too) and uses b64 for non-UTF-8"
  run db scan tup --json; expect_out $'[\n {"key":"(\\"a\\\\\\"b\\", 7)","value":"v"}\n]' "scan --json of a tuple store"
  "$SOP" db dump plain >p.jsonl; json_valid p.jsonl "dump with odd bytes" lines
  run db2 load plain p.jsonl --separate-values; "$SOP" db2 dump plain >p2.jsonl
  cmp -s p.jsonl p2.jsonl && pass "odd bytes survive dump and load" || failed "odd bytes round trip"
  run db recover --json; expect_out "[]" "recover --json with nothing prepared"
  "$SOP" db dump plain >/dev/full 2>/dev/null; rc=$?
  [ $rc -eq 3 ] && pass "dump to a full device: exit 3" || failed "dump >/dev/full: exit $rc"
  # Random bytes (seeded): ASCII, controls, UTF-8 of every length, invalid
  # sequences, surrogate escapes in the input; the dump must hold exactly
  # the same bytes (strings where UTF-8, b64 elsewhere).
  if [ $have_python = 1 ]; then
    python3 -I -S - "${SOP_SEED:-1}" >rand.jsonl <<'EOF'
import base64, json, random, sys
rnd = random.Random(int(sys.argv[1]))
pieces = [b"a", b"Z", b" ", b"\x00", b"\x01", b"\x1f", b"\x7f", b'"', b"\\", b"/", b"\n",
          "\u00e9".encode(), "\u20ac".encode(), "\U0001f600".encode(), "\u0085".encode(),
          b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"0x"]
for i in range(3000):
    k = b"".join(rnd.choice(pieces) for _ in range(rnd.randint(1, 8)))
    v = b"".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 12)))
    def enc(b):
        try:
            s = b.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(b).decode()}
        return s if rnd.random() < 0.7 else {"b64": base64.b64encode(b).decode()}
    print(json.dumps({"key": enc(k), "value": enc(v)}, ensure_ascii=rnd.random() < 0.5))
EOF
    run rnd load r rand.jsonl; expect 0 "load 3000 random items (seed ${SOP_SEED:-1})"
    "$SOP" rnd dump r >rand.dump
    json_valid rand.dump "dump of random bytes" lines
    json_same_items rand.jsonl rand.dump "random bytes survive load and dump exactly (seed ${SOP_SEED:-1})"
  fi
}

section_progress() {
  awk 'BEGIN { for (i = 0; i < 20000; i++) printf "{\"key\":\"k%07d\",\"value\":\"v\"}\n", i }' >p.jsonl
  run db load s p.jsonl; expect 0 "load with stderr not a terminal"
  [ -z "$ERR" ] && pass "no progress bar when stderr is piped" || failed "progress printed to a pipe"
  if ! command -v script >/dev/null 2>&1; then pass "progress on a terminal (skipped: no script(1))"; return; fi
  script -qec "'$SOP' db2 load s p.jsonl" /dev/null >tty.out 2>&1
  grep -aq "items/s" tty.out && grep -aq "ETA" tty.out && pass "progress bar with rate and ETA on a terminal" \
    || failed "no progress bar on a terminal: $(head -c 300 tty.out)"
  grep -aq "loaded 20000 items" tty.out && pass "summary line on a terminal" || failed "no summary line"
  script -qec "'$SOP' db2 check" /dev/null >tty2.out 2>&1
  grep -aq "clean" tty2.out && pass "check on a terminal" || failed "check on a terminal"
}

section_recover() {
  if [ "$FIXTURES" = - ]; then pass "recover (skipped: no fixtures given)"; return; fi
  cp -r "$FIXTURES/prepared" pdb
  run pdb recover; expect 0 "recover lists prepared transactions"
  printf '%s' "$OUT" | grep -q "xid-commit" && printf '%s' "$OUT" | grep -q "xid-rollback" \
    && pass "recover shows both xids" || failed "recover output"
  run pdb recover --json; printf '%s' "$OUT" >r.json; json_valid r.json "recover --json"
  id_commit=$(printf '%s\n' "$OUT" | grep xid-commit | sed 's/.*"id":\([0-9]*\).*/\1/')
  id_rollback=$(printf '%s\n' "$OUT" | grep xid-rollback | sed 's/.*"id":\([0-9]*\).*/\1/')
  run pdb stat; printf '%s' "$OUT" | grep -Eq "prepared txns +2" && pass "stat counts prepared" || failed "stat prepared"
  run pdb get p a; expect 2 "prepared write invisible before phase 2"
  run pdb put p a other; expect 3 "a prepared key blocks other writers"; expect_err "prepared transaction" "blocked writer"
  run pdb commit-prepared "$id_commit"; expect 0 "commit-prepared"
  run pdb get p a; expect_out "committed later" "committed write visible"
  run pdb rollback-prepared "$id_rollback"; expect 0 "rollback-prepared"
  run pdb get p b; expect 2 "rolled-back write absent"
  run pdb commit-prepared "$id_commit"; expect 2 "commit-prepared twice"
  run pdb recover; expect_out "no prepared transactions" "nothing left to recover"
  run pdb check; expect 0 "check after recovery"
}

section_comparator() {
  if [ "$FIXTURES" = - ]; then pass "comparator (skipped: no fixtures given)"; return; fi
  cp -r "$FIXTURES/comparator" cdb
  fails 3 "cannot be opened by this tool: .*comparator 'reverse'" "database with a custom comparator" cdb stores
  fails 3 "comparator 'reverse'" "custom comparator: get" cdb get r k
}

for section in $SECTIONS; do
  mkdir -p "$WORK/$section" && cd "$WORK/$section" || exit 1
  WORK_SAVE=$WORK; WORK=$WORK/$section
  "section_$section"
  json_flush
  WORK=$WORK_SAVE; cd "$WORK" || exit 1
done
[ $own_work = 1 ] && rm -rf "$WORK"
if [ $failures -eq 0 ]; then
  echo "  ok test_cli.sh $SECTIONS: $checks checks passed"
else
  echo "FAIL test_cli.sh $SECTIONS: $failures of $checks checks failed"
fi
[ $failures -eq 0 ]
