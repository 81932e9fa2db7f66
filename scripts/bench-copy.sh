#!/usr/bin/env bash
# Off-site copy benchmark: `wayback copy` vs `restic copy`, local directory to local directory,
# destination with another passphrase (so another key). borg 1.x has no copy between
# repositories (`borg transfer` is borg 2), so it is not in the table.
# Data: $NFILES small text files, a $RAND_MB MB random file and a $TEXT_MB MB compressible one.
# Rows: first copy of one snapshot, an incremental copy after a ~1% change, a copy with nothing
# new. Prints a markdown table with wall time, peak RSS and what the destination stores.
# Usage: scripts/bench-copy.sh   (NFILES=20000 RAND_MB=200 TEXT_MB=200 BENCH_DIR=/tmp/wayback-bench-copy;
#                                 WB=path/to/wayback measures that binary instead of building)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${WB:-}" ]]; then
  cargo build --release --quiet --bin wayback
  WB="${CARGO_TARGET_DIR:-$PWD/target}/release/wayback"
fi
NFILES=${NFILES:-20000}
RAND_MB=${RAND_MB:-200}
TEXT_MB=${TEXT_MB:-200}
B=${BENCH_DIR:-/tmp/wayback-bench-copy}
rm -rf "$B"; mkdir -p "$B/data"
export RESTIC_CACHE_DIR="$B/restic-cache" WAYBACK_CACHE_DIR="$B/wayback-cache"
python3 - "$B/data" "$NFILES" "$TEXT_MB" <<'PY'
import os, random, sys
root, n, text_mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(42)
words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(3, 9))) for _ in range(2000)]
for i in range(n):
    d = os.path.join(root, "files", f"d{i // 100:04d}")
    if i % 100 == 0: os.makedirs(d, exist_ok=True)
    size = rnd.randint(200, 8000)
    body = b" ".join(rnd.choice(words) for _ in range(size // 6))
    with open(os.path.join(d, f"f{i:06d}.txt"), "wb") as f: f.write(body[:size])
with open(os.path.join(root, "log.txt"), "wb") as f:
    line = lambda: b" ".join(rnd.choice(words) for _ in range(12)) + b"\n"
    lines = [line() for _ in range(50000)]
    left = text_mb << 20
    while left > 0:
        chunk = b"".join(rnd.choice(lines) for _ in range(4096))[:left]
        f.write(chunk); left -= len(chunk)
PY
head -c $((RAND_MB << 20)) /dev/urandom > "$B/data/random.bin"
DATA_MB=$(du -sm "$B/data" | cut -f1)
# A ~1% change: 1% of the small files rewritten, 2 MB of the random file, text appended.
change() {
  python3 - "$B/data" "$NFILES" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(7)
for i in rnd.sample(range(n), n // 100):
    p = os.path.join(root, "files", f"d{i // 100:04d}", f"f{i:06d}.txt")
    with open(p, "ab") as f: f.write(b" changed")
with open(os.path.join(root, "random.bin"), "r+b") as f:
    f.seek(os.path.getsize(os.path.join(root, "random.bin")) // 2); f.write(os.urandom(2 << 20))
with open(os.path.join(root, "log.txt"), "ab") as f: f.write(b"appended line\n" * 100000)
PY
}
# time_it LABEL CMD...: wall seconds and peak RSS (MB) into $B/times.
time_it() {
  local label=$1; shift
  sync
  /usr/bin/time -f "%e %M" -o "$B/t" "$@" >/dev/null 2>"$B/err" || { cat "$B/err" >&2; exit 1; }
  read -r secs kb < "$B/t"
  echo "$label $secs $((kb / 1024))" >> "$B/times"
}
: > "$B/times"
# ---------- wayback ----------
export WAYBACK_PASSWORD=bench-src WAYBACK_TO_PASSWORD=bench-dst
"$WB" --repo "$B/wb-src" init >/dev/null
WAYBACK_PASSWORD=bench-dst "$WB" --repo "$B/wb-dst" init >/dev/null
"$WB" --repo "$B/wb-src" backup "$B/data" --source data >/dev/null
time_it wayback-first "$WB" --repo "$B/wb-src" copy --to "$B/wb-dst"
WB_FIRST=$(du -sm "$B/wb-dst/packs" | cut -f1)
# ---------- restic ----------
export RESTIC_PASSWORD=bench-src RESTIC_FROM_PASSWORD=bench-src
restic -q -r "$B/restic-src" init >/dev/null
RESTIC_PASSWORD=bench-dst restic -q -r "$B/restic-dst" init --from-repo "$B/restic-src" --copy-chunker-params >/dev/null
restic -q -r "$B/restic-src" backup "$B/data" >/dev/null
time_it restic-first env RESTIC_PASSWORD=bench-dst restic -q -r "$B/restic-dst" copy --from-repo "$B/restic-src"
RESTIC_FIRST=$(du -sm "$B/restic-dst/data" | cut -f1)
# ---------- the change, then incremental and empty copies ----------
change
"$WB" --repo "$B/wb-src" backup "$B/data" --source data >/dev/null
restic -q -r "$B/restic-src" backup "$B/data" >/dev/null
time_it wayback-incr "$WB" --repo "$B/wb-src" copy --to "$B/wb-dst"
time_it restic-incr env RESTIC_PASSWORD=bench-dst restic -q -r "$B/restic-dst" copy --from-repo "$B/restic-src"
time_it wayback-none "$WB" --repo "$B/wb-src" copy --to "$B/wb-dst"
time_it restic-none env RESTIC_PASSWORD=bench-dst restic -q -r "$B/restic-dst" copy --from-repo "$B/restic-src"
"$WB" --repo "$B/wb-src" copy --to "$B/wb-dst" --json > "$B/wb-last.json"
WB_DST=$(du -sm "$B/wb-dst/packs" | cut -f1)
RESTIC_DST=$(du -sm "$B/restic-dst/data" | cut -f1)
get() { awk -v l="$1" -v f="$2" '$1 == l { print $f }' "$B/times"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}x')"; }
echo
echo "data: ${DATA_MB} MB ($NFILES small files, ${RAND_MB} MB random, ${TEXT_MB} MB text), local -> local, $(nproc) cores"
echo
echo "| copy | wayback s | restic s | restic/wayback | wayback RSS MB | restic RSS MB |"
echo "|---|---|---|---|---|---|"
for row in first incr none; do
  w=$(get "wayback-$row" 2); r=$(get "restic-$row" 2)
  echo "| $row | $w | $r | $(ratio "$r" "$w") | $(get "wayback-$row" 3) | $(get "restic-$row" 3) |"
done
echo
echo "destination packs after the first copy: wayback ${WB_FIRST} MB, restic ${RESTIC_FIRST} MB; after both: wayback ${WB_DST} MB, restic ${RESTIC_DST} MB"
