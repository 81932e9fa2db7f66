#!/usr/bin/env bash
# Diff benchmark: two snapshots of a $NFILES-file tree differing in 10 files.
# wayback diff vs restic diff vs diff -rq through the wayback mount, in one run.
# Usage: scripts/bench-diff.sh   (NFILES=100000 BENCH_DIR=/tmp/wayback-bench-diff)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --bench
cargo build --release --quiet --bin wayback
WB="${CARGO_TARGET_DIR:-$PWD/target}/release/wayback"
NFILES=${NFILES:-100000}
B=${BENCH_DIR:-/tmp/wayback-bench-diff}
export WAYBACK_PASSWORD=bench RESTIC_PASSWORD=bench RESTIC_CACHE_DIR="$B/restic-cache"
rm -rf "$B"; mkdir -p "$B/data"
python3 - "$B/data" "$NFILES" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"a{i % 10}", f"b{(i // 10) % 100}", f"c{i // 1000:03d}")
    if not os.path.isdir(d): os.makedirs(d)
    with open(os.path.join(d, f"f{i:06d}"), "w") as f: f.write(f"file {i}\n" * 3)
PY
"$WB" --repo "$B/wb" init >/dev/null; restic -r "$B/restic" init >/dev/null 2>&1
"$WB" --repo "$B/wb" backup "$B/data" --source t >/dev/null; restic -r "$B/restic" backup "$B/data" >/dev/null 2>&1
find "$B/data" -type f | shuf -n 10 --random-source=<(yes) | while read -r f; do echo changed >> "$f"; done
"$WB" --repo "$B/wb" backup "$B/data" --source t >/dev/null; restic -r "$B/restic" backup "$B/data" >/dev/null 2>&1
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1 || true; t1=$(date +%s.%N); awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}'; }
read -r w1 w2 < <("$WB" --repo "$B/wb" snapshots --json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s[0]["id"], s[-1]["id"])')
read -r r1 r2 < <(restic -r "$B/restic" snapshots --json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s[0]["id"], s[-1]["id"])')
"$WB" --repo "$B/wb" diff "$w1" "$w2" --name-status --ignore-meta > "$B/wb.txt" || true
lines=$(wc -l < "$B/wb.txt")
trees=$("$WB" --repo "$B/wb" diff "$w1" "$w2" --stat --ignore-meta | grep -o '[0-9]* tree blocks read' || true)
# Best of 3 each: with the passphrase (argon2 KDF every run, like restic's scrypt) and with
# the key cached by `wayback key unlock` (the way an admin or a script session runs it).
best() { local b=999 t; for _ in 1 2 3; do t=$(secs "$@"); b=$(awk -v a="$b" -v t="$t" 'BEGIN{print (t<a)?t:a}'); done; echo "$b"; }
tk=$(best "$WB" --repo "$B/wb" diff "$w1" "$w2" --name-status)
"$WB" --repo "$B/wb" key unlock --timeout 10m >/dev/null 2>&1
tw=$(best "$WB" --repo "$B/wb" diff "$w1" "$w2" --name-status)
"$WB" --repo "$B/wb" key lock >/dev/null 2>&1
tr=$(best restic -r "$B/restic" diff "$r1" "$r2")
mkdir -p "$B/mnt"; "$WB" --repo "$B/wb" mount "$B/mnt" --daemon >/dev/null
read -r n1 n2 < <(ls "$B/mnt/snapshots/t" | tr '\n' ' '; echo)
tq=$(secs diff -rq "$B/mnt/snapshots/t/$n1" "$B/mnt/snapshots/t/$n2")
"$WB" umount "$B/mnt"
echo "| diff of two $NFILES-file snapshots differing in 10 files | seconds | vs wayback diff |"
echo "| --- | --- | --- |"
echo "| wayback diff, key cached by \`key unlock\` ($lines changed paths with --ignore-meta; $trees) | $tw | 1x |"
echo "| wayback diff, passphrase + argon2 KDF on every run | $tk | $(awk -v a="$tw" -v b="$tk" 'BEGIN{printf "%.0fx", b/a}') |"
echo "| restic diff | $tr | $(awk -v a="$tw" -v b="$tr" 'BEGIN{printf "%.0fx", b/a}') ($(awk -v a="$tk" -v b="$tr" 'BEGIN{printf "%.0fx", b/a}') vs KDF run) |"
echo "| diff -rq through the wayback mount | $tq | $(awk -v a="$tw" -v b="$tq" 'BEGIN{printf "%.0fx", b/a}') |"
