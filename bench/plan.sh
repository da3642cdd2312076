#!/usr/bin/env bash
# `beamops plan --all` on the up-to-date example project against `cat` of the same generated
# files, in one hyperfine run. Prints both means and the ratio (target: < 50 ms and < 20x).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hyperfine >/dev/null || { echo "hyperfine missing: apt-get install hyperfine" >&2; exit 3; }

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
json="$work/plan.json"
(cd "$work/project" && hyperfine --warmup 5 --runs 50 -N --export-json "$json" \
  -n beamops "$bin plan --all -q" \
  -n cat "cat $files beamops.lock" >/dev/null)

jq -r '
  (.results[] | select(.command=="beamops") | .mean) as $b |
  (.results[] | select(.command=="cat") | .mean) as $c |
  "beamops plan --all: \($b*1000 | .*100|round/100) ms\ncat (floor):        \($c*1000 | .*100|round/100) ms\nratio:              \($b/$c | .*10|round/10)x"
' "$json"
