#!/usr/bin/env python3
"""Generate a tree of worktree-like copies of shell scripts for bench/dedupe.sh.

A base set of scripts is copied into many "worktrees"; in each copy a few scripts are edited
(a line changed or appended: near copies), a few re-commented or re-indented (normalized
copies), a few dropped, and some get backup-looking siblings. Deterministic (fixed seed).

usage: gen_dedupe_tree.py DIR [--files N] [--bytes B]
"""
import os
import random
import sys

LINES = [
    'echo "step {n}: building {w}"',
    'if [ -f "{w}.conf" ]; then . "./{w}.conf"; fi',
    'for f in {w}/*.log; do gzip -9 "$f" || true; done',
    'export {W}_HOME="${{HOME}}/{w}/{n}"',
    'rsync -a --delete "{w}/" "backup/{w}-{n}/"',
    'case "$1" in start) run_{w} ;; stop) kill_{w} ;; *) echo "usage" ;; esac',
    'count=$(( count + {n} ))',
    'printf "%s\\n" "${{#{w}_list[@]}} items in {w}"',
    'docker compose -f "{w}.yml" up -d --remove-orphans',
    'mix deps.get && mix compile --warnings-as-errors # {w}',
    'test -d "{w}" || mkdir -p "{w}/{n}"',
    'curl -fsS "http://localhost:{n}/{w}" >/dev/null',
]
WORDS = "alpha beta gamma delta release deploy cache assets worker queue metrics cluster".split()


def script(rng, size):
    out = ["#!/bin/bash", "# generated script %d" % rng.randrange(10**9), "set -euo pipefail"]
    total = sum(len(x) + 1 for x in out)
    while total < size:
        w = rng.choice(WORDS)
        line = rng.choice(LINES).format(n=rng.randrange(100000), w=w, W=w.upper())
        if rng.random() < 0.08:
            line = "# " + line
        if rng.random() < 0.05:
            line = "cat <<EOF\n# not a comment: %s\nEOF" % w
        out.append(("  " if rng.random() < 0.3 else "") + line)
        total += len(out[-1]) + 1
    return "\n".join(out) + "\n"


def main():
    args = sys.argv[1:]
    root = args[0]
    want_files = int(args[args.index("--files") + 1]) if "--files" in args else 100_000
    want_bytes = int(args[args.index("--bytes") + 1]) if "--bytes" in args else 1 << 30
    rng = random.Random(42)
    copies = 50
    base_count = int(want_files / (copies * 0.975)) + 1  # 2% are dropped per copy
    mean = want_bytes / (base_count * copies) * 1.08
    base = []
    for i in range(base_count):
        size = max(200, int(rng.lognormvariate(0, 0.6) * mean * 0.84))
        name = "scripts/%s/%s_%d" % (rng.choice(WORDS), rng.choice(WORDS), i)
        name += "" if i % 50 == 0 else ".sh"  # a few extensionless, found by shebang
        base.append((name, script(rng, size)))
    files = written = 0
    for c in range(copies):
        wt = os.path.join(root, "wt-%02d" % c)
        for name, text in base:
            r = rng.random()
            if r < 0.02:
                continue  # deleted in this copy
            if r < 0.05:
                lines = text.split("\n")
                k = rng.randrange(3, max(4, len(lines) - 1))
                lines[k] = 'echo "edited in copy %d"' % c
                text = "\n".join(lines)
            elif r < 0.07:
                text = text.replace("\n", "\n# reviewed in copy %d\n" % c, 1)
            path = os.path.join(wt, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
            files += 1
            written += len(text)
            if rng.random() < 0.005:
                with open(path + ".bak", "w") as f:
                    f.write(text)
                files += 1
                written += len(text)
    print("generated %d files, %.2f GB in %s" % (files, written / 1e9, root))


if __name__ == "__main__":
    main()
