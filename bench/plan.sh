#!/usr/bin/env bash
# `beamops plan` on the up-to-date example project against `cat` of the same generated files and
# `git status`, in one run: wall time (hyperfine) and instructions (callgrind, repeatable on a
# busy machine; only when valgrind is installed). Prints each and the ratios (goal for
# `plan chapter-01`: <= 3x cat). BEAMOPS_BIN=path measures that binary instead of building one
# (to compare two revisions).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in hyperfine jq; do
  command -v "$tool" >/dev/null || { echo "$tool missing: apt-get install $tool" >&2; exit 3; }
done

if [ -n "${BEAMOPS_BIN:-}" ]; then
  bin=$(realpath "$BEAMOPS_BIN")
else
  cargo build --release --quiet
  bin="$(realpath "${CARGO_TARGET_DIR:-target}")/release/beamops"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Timed as installed (`cargo install` copies the binary): a file the linker has just written sits
# in the page cache in 4 KiB pages, and mapping it costs ~30 more page faults (+0.4 ms) than a
# copy's or a file read back from disk.
cp "$bin" "$work/beamops"
bin="$work/beamops"
cp -r examples/coordination "$work/project"
rm -rf "$work/project/_build" "$work/project/deps" "$work/project/.beamops"
git -C "$work/project" init -q
(cd "$work/project" && "$bin" up chapter-01 -q >/dev/null)
# Chapter 01 is what is timed: its files must be as beamops renders them. `plan --all` is timed
# as it is (later chapters pending without a swarm: exit 2, so hyperfine ignores its status).
(cd "$work/project" && "$bin" plan chapter-01 -q >/dev/null) || { echo "chapter 01 is not up to date" >&2; exit 1; }

# The generated files the lock records that the copy has (stack and monitoring files are not
# committed in the example).
files=$(cd "$work/project" && jq -r '.files | keys[]' beamops.lock | while read -r f; do [ -f "$f" ] && printf '%s ' "$f"; done)
one="$bin plan chapter-01 -q"
all="$bin plan --all -q"
floor="cat $files beamops.lock"
json="$work/plan.json"
(cd "$work/project" && hyperfine --warmup 5 --runs 50 -N --export-json "$json" \
  -n plan-01 "$one" -n cat "$floor" -n git-status "git status --short" >/dev/null)
(cd "$work/project" && hyperfine --warmup 2 --runs 10 -N -i --export-json "$work/all.json" \
  -n plan-all "$all" >/dev/null 2>&1)
jq -s '.[0].results += .[1].results | .[0]' "$json" "$work/all.json" > "$work/both.json"
mv "$work/both.json" "$json"

jq -r '
  def mean(n): .results[] | select(.command==n) | .mean;
  mean("cat") as $c | mean("git-status") as $g |
  (["plan-01","plan-all","cat","git-status"][] as $n | mean($n) as $m |
    "\($n | . + "            " | .[0:12]) \($m*1000 | .*100|round/100) ms   \($m/$c | .*10|round/10)x cat   \($m/$g | .*10|round/10)x git status"),
  (mean("plan-01")/$c | "goal plan-01 <= 3x cat: \(.*10|round/10)x, " + (if . <= 3 then "met" else "NOT met" end))
' "$json"

if ! command -v valgrind >/dev/null; then
  echo "instructions: valgrind missing (apt-get install valgrind) — wall time only"
  exit 0
fi

# Instructions: the same for every run of the same binary and inputs, whatever the load.
instructions() {
  (cd "$work/project" && valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" \
    >/dev/null 2>"$work/cg.err") || true
  grep -o 'Collected : [0-9]*' "$work/cg.err" | grep -o '[0-9]*$'
}
# shellcheck disable=SC2086 # word splitting of the command lines is intended
{
  i_one=$(instructions $one)
  i_cat=$(instructions $floor)
  i_git=$(instructions git status --short)
}
echo "instructions: plan chapter-01 $i_one, cat $i_cat, git status $i_git"
awk -v b="$i_one" -v c="$i_cat" -v g="$i_git" \
  'BEGIN { printf "instruction ratio: %.1fx cat, %.2fx git status\n", b / c, b / g }'
