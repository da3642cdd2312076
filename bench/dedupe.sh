#!/usr/bin/env bash
# Benchmark `beamops dedupe` against jdupes, rmlint and fdupes on ≥100k files / ≥1 GB of
# worktree-like script copies. Exact mode should be no slower than the fastest peer; the full
# mode (exact + normalized + near) within 2× of it.
#
# usage: bench/dedupe.sh [FILES] [BYTES]     (defaults: 100000 files, 1 GiB)
# env:   BENCH_DIR (default: a fresh dir under /tmp), RUNS (default 3)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
files=${1:-100000}
bytes=${2:-1073741824}
runs=${RUNS:-3}
for tool in jdupes rmlint fdupes hyperfine python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install $tool)" >&2; exit 3; }
done

work=${BENCH_DIR:-$(mktemp -d /tmp/beamops-dedupe-bench.XXXXXX)}
trap 'rm -rf "$work"' EXIT
tree="$work/tree"
mkdir -p "$tree"

(cd "$here" && cargo build --release --quiet)
beamops="$here/target/release/beamops"

echo "== generating $files files / $bytes bytes in $tree"
time python3 "$here/bench/gen_dedupe_tree.py" "$tree" --files "$files" --bytes "$bytes"
echo "files: $(find "$tree" -type f | wc -l), bytes: $(du -sb "$tree" | cut -f1), cores: $(nproc)"

# rmlint writes its reports into the working directory, and replaces (renames over) the file
# it is told to write: never point it at /dev/null.
cd "$work"
hyperfine --runs "$runs" --warmup 1 --ignore-failure --export-json "$work/exact.json" \
  -n beamops-exact "$beamops dedupe --exact-only --format json $tree > /dev/null" \
  -n jdupes "jdupes -r -q $tree > /dev/null" \
  -n rmlint "rmlint -T df -o fdupes:$work/rmlint.out $tree" \
  -n fdupes "fdupes -r -q $tree > /dev/null"
hyperfine --runs "$runs" --warmup 1 --ignore-failure --export-json "$work/full.json" \
  -n beamops-full "$beamops dedupe --format json $tree > /dev/null"

"$beamops" dedupe --exact-only --format json "$tree" | python3 -c 'import json,sys; print("exact summary:", json.load(sys.stdin)["summary"])' || true
"$beamops" dedupe --format json "$tree" | python3 -c 'import json,sys; print("full summary:", json.load(sys.stdin)["summary"])' || true

python3 - "$work/exact.json" "$work/full.json" <<'PY'
import json, sys
exact = {r["command"]: r["mean"] for r in json.load(open(sys.argv[1]))["results"]}
full = {r["command"]: r["mean"] for r in json.load(open(sys.argv[2]))["results"]}
peers = {k: v for k, v in exact.items() if k != "beamops-exact"}
fastest = min(peers, key=peers.get)
print()
for name, mean in sorted({**exact, **full}.items(), key=lambda kv: kv[1]):
    print(f"{name:14} {mean:8.3f} s")
e = exact["beamops-exact"] / peers[fastest]
f = full["beamops-full"] / peers[fastest]
print(f"\nfastest peer: {fastest} ({peers[fastest]:.3f} s)")
print(f"exact mode / {fastest}: {e:.2f}x  (target <= 1.00x) {'OK' if e <= 1.0 else 'MISSED'}")
print(f"full mode  / {fastest}: {f:.2f}x  (target <= 2.00x) {'OK' if f <= 2.0 else 'MISSED'}")
PY
