#!/usr/bin/env bash
# Mount memory benchmark: peak RSS of `wayback mount` while `find` stats every entry of a
# snapshot with $NFILES files (default 1,000,000 in 10,000 directories). Target: < 200 MB.
# Also reports the walk time and the inode numbers' stability (a second walk must agree).
# Usage: scripts/bench-mount-1m.sh   (NFILES=1000000 BENCH_DIR=/tmp/wayback-bench-1m KEEP=1)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --bench
cargo build --release --quiet --bin wayback
WB="${CARGO_TARGET_DIR:-$PWD/target}/release/wayback"
NFILES=${NFILES:-1000000}
B=${BENCH_DIR:-/tmp/wayback-bench-1m}
export WAYBACK_PASSWORD=bench
if [[ ! -f "$B/done-$NFILES" ]]; then
  rm -rf "$B"; mkdir -p "$B/data"
  echo "generating $NFILES files..." >&2
  python3 - "$B/data" "$NFILES" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i // 10000:03d}", f"e{(i // 100) % 100:02d}")
    if i % 100 == 0: os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:07d}"), "w") as f: f.write(f"{i}\n")
PY
  "$WB" --repo "$B/wb" init >/dev/null
  echo "backup..." >&2
  /usr/bin/time -f "backup: %e s, peak RSS %M KB" "$WB" --repo "$B/wb" backup "$B/data" --source big >/dev/null
  touch "$B/done-$NFILES"
fi
mp="$B/mnt"; mkdir -p "$mp"
fusermount3 -u "$mp" 2>/dev/null || true
"$WB" --repo "$B/wb" mount "$mp" --daemon >/dev/null
pid=$(pgrep -f "mount $mp" | head -1)
root="$mp/latest/big"
t0=$(date +%s.%N)
find "$root" -printf '%i %s %m %n\n' > "$B/walk1.txt"
t1=$(date +%s.%N)
find "$root" -printf '%i %s %m %n\n' > "$B/walk2.txt"
t2=$(date +%s.%N)
entries=$(wc -l < "$B/walk1.txt")
rss=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$pid/status")
now=$(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$pid/status")
same=$(cmp -s "$B/walk1.txt" "$B/walk2.txt" && echo yes || echo NO)
"$WB" umount "$mp"
echo "| 1M-file mount | value |"
echo "| --- | --- |"
echo "| entries walked (find -printf, stats every entry) | $entries |"
echo "| first walk (s) | $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') |"
echo "| second walk, kernel-cached (s) | $(awk -v a="$t1" -v b="$t2" 'BEGIN{printf "%.1f", b-a}') |"
echo "| mount peak RSS (MB), target < 200 | $rss |"
echo "| mount RSS after the walks (MB) | $now |"
echo "| inode numbers equal across walks | $same |"
[[ "${KEEP:-1}" == 1 ]] || rm -rf "$B"
