#!/usr/bin/env bash
# lint.sh <files...> - `make lint`: fails (exit 1) on
#   1. an #include in src/ that points up the layer list below, or a src/
#      file the list does not name (a new module takes its place in it);
#   2. an invariant ID such as (W1) defined in two places;
#   3. a return code of include/sop.h missing from src/errors.def;
#   4. clang-format drift in any of <files> (the files `make format` covers),
#      except those in scripts/format-pending.txt, which were hand-aligned
#      before this check existed and are formatted when nobody else is
#      editing them; a listed file that is clean fails too, so the list
#      only shrinks.
set -euo pipefail
cd "$(dirname "$0")/.."

# The layers of src/, bottom to top (docs/DESIGN-NOTES.md, "Layers"). A file
# may include its own layer and the layers below it, and the public headers
# (include/). Each entry: layer number, file.
layers='
0 sop_int.h
0 alloc.c
0 errors.c
0 errors.def
0 util.h
0 util.c
0 lock.h
0 lock.c
1 os.h
1 os_posix.c
2 keys.h
2 keys.c
2 txnrec.h
2 txnrec.c
3 wal.h
3 wal.c
3 blob.h
3 blob.c
4 registry.h
4 registry.c
5 node.h
5 node.c
6 db.h
7 cache.h
7 cache.c
8 btree.h
8 btree.c
9 txn.h
9 txn.c
9 cursor.c
9 commit.h
9 commit.c
10 db.c
10 ckpt.c
10 check.c
10 api.c
'
# Known upward includes, each with the reason it is still there. Remove an
# entry with the include it excuses.
exceptions='
'

declare -A rank
while read -r n f; do
  [ -n "${f:-}" ] && rank[$f]=$n
done <<<"$layers"

bad=0
for path in src/*.c src/*.h src/*.def; do
  f=${path#src/}
  if [ -z "${rank[$f]:-}" ]; then
    echo "lint: $path is not in the layer list (scripts/lint.sh, docs/DESIGN-NOTES.md)"
    bad=1
    continue
  fi
  while read -r inc; do
    [ -z "$inc" ] && continue
    [ -e "include/$inc" ] && continue # public header: any layer may use it
    if [ -z "${rank[$inc]:-}" ]; then
      echo "lint: $path includes \"$inc\", which is not in the layer list"
      bad=1
    elif [ "${rank[$inc]}" -gt "${rank[$f]}" ]; then
      if grep -q "^$f $inc " <<<"$exceptions"; then
        continue
      fi
      echo "lint: $path (layer ${rank[$f]}) includes \"$inc\" (layer ${rank[$inc]}): up the layer list"
      bad=1
    fi
  done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$path")
done
# An exception whose include is gone must go too.
while read -r f inc _; do
  [ -z "${f:-}" ] && continue
  if ! grep -q "^[[:space:]]*#[[:space:]]*include[[:space:]]*\"$inc\"" "src/$f" 2>/dev/null; then
    echo "lint: the exception '$f includes $inc' in scripts/lint.sh is stale: remove it"
    bad=1
  fi
done <<<"$exceptions"

# Invariant IDs -- "(W1)", "(R3)": a comment line ' *   (X9) text' defines
# one -- name one rule each across src/ and include/.
dups=$(grep -Ho '^ \*   ([A-Z][A-Z]*[0-9][0-9]*) ' src/*.[ch] include/*.h |
  sed 's/^\([^:]*\): \*   (\([A-Z0-9]*\)) $/\2 \1/' | sort | awk '
  { files[$1] = files[$1] " " $2; n[$1]++ } END { for (id in n) if (n[id] > 1) print id ":" files[id] }')
if [ -n "$dups" ]; then
  echo "lint: invariant IDs defined more than once (give each module its own letter):"
  echo "$dups"
  bad=1
fi

# Every return code sop.h defines is in src/errors.def (errors.c checks the
# other direction at compile time, one _Static_assert per code).
for code in $(sed -n 's/^#define \(SOP_[A-Z_]*\)  *\(-[0-9][0-9]*\|0\)  *\/\*\*<.*/\1/p' include/sop.h); do
  if ! grep -q "^X($code, " src/errors.def; then
    echo "lint: $code is defined in include/sop.h but missing from src/errors.def"
    bad=1
  fi
done

if ! command -v clang-format >/dev/null; then
  echo "lint: clang-format missing (scripts/deps.sh lint installs it)"
  exit 1
fi
pending=scripts/format-pending.txt
for f in "$@"; do
  listed=0
  grep -qx "$f" "$pending" 2>/dev/null && listed=1
  if clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
    if [ $listed = 1 ]; then
      echo "lint: $f is clang-format clean now: remove it from $pending"
      bad=1
    fi
  elif [ $listed = 0 ]; then
    echo "lint: $f is not clang-format clean (make format, or see: clang-format $f | diff $f -):"
    clang-format "$f" | diff "$f" - | head -20 || true
    bad=1
  fi
done
[ $bad = 0 ] && echo "lint: ok ($(grep -c . "$pending" 2>/dev/null || echo 0) files still pending clang-format)"
exit $bad
