#!/usr/bin/env bash
# `beamops plan` on the up-to-date example project against `cat` of the same generated files and
# `git status`, in one run: wall time (hyperfine) and instructions (callgrind, repeatable on a
# busy machine). Prints each and the ratios (goal for `plan chapter-01`: <= 3x cat).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in hyperfine valgrind jq; do
  command -v "$tool" >/dev/null || { echo "$tool missing: apt-get install $tool" >&2; exit 3; }
done

cargo build --release --quiet
bin="$PWD/target/release/beamops"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r examples/coordination "$work/project"
rm -rf "$work/project/_build" "$work/project/deps" "$work/project/.beamops"
git -C "$work/project" init -q
(cd "$work/project" && "$bin" up chapter-01 -q >/dev/null)
(cd "$work/project" && "$bin" plan --all -q >/dev/null) || { echo "project is not up to date" >&2; exit 1; }

files=$(cd "$work/project" && jq -r '.files | keys[]' beamops.lock | tr '\n' ' ')
one="$bin plan chapter-01 -q"
all="$bin plan --all -q"
floor="cat $files beamops.lock"
json="$work/plan.json"
(cd "$work/project" && hyperfine --warmup 5 --runs 50 -N --export-json "$json" \
  -n plan-01 "$one" -n plan-all "$all" -n cat "$floor" -n git-status "git status --short" >/dev/null)

jq -r '
  def mean(n): .results[] | select(.command==n) | .mean;
  mean("cat") as $c | mean("git-status") as $g |
  (["plan-01","plan-all","cat","git-status"][] as $n | mean($n) as $m |
    "\($n | . + "            " | .[0:12]) \($m*1000 | .*100|round/100) ms   \($m/$c | .*10|round/10)x cat   \($m/$g | .*10|round/10)x git status")
' "$json"

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
