#!/bin/sh
# The long bit-rot run: N seeded trials (default 360, twenty of each damage kind) of
# tests/it/bitrot.rs. Each damages one pack, index file, snapshot manifest, WAL record, key
# file or the config (flip bytes, truncate, delete), then checks, restores, cats, fetches WAL,
# runs `repair index`, `repair packs`, `repair snapshots --forget` and looks again.
# Prints one line per damage kind: trials, detected (exit 12 / only as a failed unlock of the
# damaged key), harmless (nothing served changed), undetectable deletions (a deleted manifest,
# WAL record or key file looks like forget, retention or key remove), after repair clean or
# only real loss left, wrong bytes served (must be 0) and failed trials (must be 0).
# Usage: scripts/bitrot.sh [N] [SEED]   (replay one trial: WAYBACK_BITROT_FROM=K scripts/bitrot.sh 1)
set -eu
cd "$(dirname "$0")/.."
report=$(mktemp)
trap 'rm -f "$report"' EXIT
WAYBACK_BITROT_TRIALS=${1:-360} WAYBACK_BITROT_SEED=${2:-24301} WAYBACK_BITROT_REPORT=$report \
    cargo test --test it bitrot:: -- --nocapture 2>&1 |
    sed -n '/^bit-rot trials/,/^total/p; /^test result/p' || true
python3 -c 'import json, sys
t = json.load(open(sys.argv[1]))["total"]
for f in json.load(open(sys.argv[1]))["failures"]:
    if f.startswith("trial "):
        print("FAILED " + f.splitlines()[0])
    elif not f.startswith("status:"):
        print("  " + f.splitlines()[0][:200])
print("total: %d trials, %d wrong bytes served, %d failed" % (t["trials"], t["wrong_bytes"], t["failures"]))
sys.exit(1 if t["failures"] or t["wrong_bytes"] else 0)' "$report"
