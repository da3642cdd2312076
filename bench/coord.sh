#!/usr/bin/env bash
# Benchmark `beamops coord claim` against the legacy coordination_helper.sh in one run: AGENTS
# concurrent agents, each claiming CLAIMS work items one after another, once through beamops
# and once through the legacy helper, each against a fresh coordination directory.
# Goal (issue 20): every claim stored (1000 of 1000) and at least 100x the legacy helper's
# stored claims per second.
#
# usage: bench/coord.sh LEGACY_HELPER_PATH [AGENTS] [CLAIMS]     (defaults: 100 agents x 10)
#   LEGACY_HELPER_PATH: agent_coordination/coordination_helper.sh of the public repository
#   seanchatmangpt/ai-self-sustaining-system, saved OUTSIDE this repository (it never enters it).
# env: BEAMOPS (default: target/release/beamops, built if missing), BENCH_DIR (default: a fresh
#      dir under /tmp)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
legacy=${1:?usage: bench/coord.sh LEGACY_HELPER_PATH [AGENTS] [CLAIMS]}
agents=${2:-100}
claims=${3:-10}
legacy=$(cd "$(dirname "$legacy")" && pwd)/$(basename "$legacy")
case "$legacy" in "$here"/*) echo "keep the legacy helper outside this repository" >&2; exit 1 ;; esac
# The legacy helper's own dependencies (beamops needs none of them).
for tool in bash jq python3 openssl; do
  command -v "$tool" >/dev/null || { echo "missing $tool (the legacy helper needs it)" >&2; exit 3; }
done

if [ -z "${BEAMOPS:-}" ]; then
  target=${CARGO_TARGET_DIR:-$here/target}
  (cd "$here" && cargo build --release --quiet)
  BEAMOPS="$target/release/beamops"
fi
work=${BENCH_DIR:-$(mktemp -d /tmp/beamops-coord-bench.XXXXXX)}
trap 'rm -rf "$work"' EXIT

# A pyenv-style python3 shim is itself a bash script: give the legacy helper the interpreter
# directly so it is not charged for the shim.
pydir=$(dirname "$(python3 -c 'import sys; print(sys.executable)')")

now_ns() { date +%s%N; }

# run LABEL CMD...: AGENTS background agents x CLAIMS claims; per agent, one line per claim:
# "<exit code> <work id or -> <CONFLICT or ->".
run() {
  local label=$1; shift
  local dir="$work/$label"
  mkdir -p "$dir/results"
  local start end
  start=$(now_ns)
  for a in $(seq 1 "$agents"); do
    (
      export COORDINATION_DIR="$dir/coordination" AGENT_ID="agent_bench_$a"
      for c in $(seq 1 "$claims"); do
        rc=0
        out=$("$@" claim benchmark "agent $a claim $c" high bench_team 2>&1) || rc=$?
        id=$(printf '%s\n' "$out" | grep -o 'work_[0-9]*' | head -1 || true)
        conflict=-
        case "$out" in *CONFLICT*) conflict=CONFLICT ;; esac
        echo "$rc ${id:--} $conflict"
      done > "$dir/results/$a"
    ) &
  done
  wait
  end=$(now_ns)
  local file="$dir/coordination/work_claims.json" stored valid
  if jq -e 'type == "array"' "$file" >/dev/null 2>&1; then
    valid=yes
    stored=$(jq '[.[].work_item_id] | unique | length' "$file")
  else
    valid=no
    stored=0
  fi
  local attempts exit0 conflicts lost
  attempts=$(cat "$dir"/results/* | wc -l)
  exit0=$(cat "$dir"/results/* | awk '$1 == 0' | wc -l)
  conflicts=$(cat "$dir"/results/* | awk '$3 == "CONFLICT"' | wc -l)
  # Claims that exited 0 with an id the file does not hold.
  if [ "$valid" = yes ]; then
    lost=$(comm -23 <(cat "$dir"/results/* | awk '$1 == 0 && $2 != "-" {print $2}' | sort -u) \
                    <(jq -r '.[].work_item_id' "$file" | sort -u) | wc -l)
  else
    lost=$exit0
  fi
  local ms=$(( (end - start) / 1000000 ))
  local rate
  rate=$(awk -v s="$stored" -v ms="$ms" 'BEGIN { printf "%.2f", (ms > 0 ? s * 1000 / ms : 0) }')
  printf '%-8s attempts %5d  exit0 %5d  stored %5d  conflicts %5d  lost %4d  valid-json %-3s  wall %8.2f s  stored/s %9s\n' \
    "$label" "$attempts" "$exit0" "$stored" "$conflicts" "$lost" "$valid" "$(awk -v ms="$ms" 'BEGIN{print ms/1000}')" "$rate"
  echo "$rate" > "$work/$label.rate"
}

echo "== $agents agents x $claims claims, $(nproc) cores; beamops: $BEAMOPS; legacy: $legacy"
# The default --lock-wait (30 s), as callers going through the shim get it.
run beamops "$BEAMOPS" coord
PATH="$pydir:$PATH" run legacy bash "$legacy"
awk -v b="$(cat "$work/beamops.rate")" -v l="$(cat "$work/legacy.rate")" 'BEGIN {
  if (l > 0) printf "ratio    beamops stored/s / legacy stored/s = %.1fx\n", b / l;
  else printf "ratio    legacy stored no claim (beamops %.2f stored/s)\n", b }'
