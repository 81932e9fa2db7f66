#!/usr/bin/env bash
# Retention benchmark: the same history of $SNAPS daily snapshots of a changing tree and dump in
# wayback, restic and borg; then one GFS policy (--keep-daily 7 --keep-weekly 4 --keep-monthly 6)
# applied and the space given back: `wayback forget` + `wayback prune --grace 0`, `restic forget
# --prune`, `borg prune` + `borg compact`. Prints time, peak RSS and repository sizes per tool.
# Usage: scripts/bench-prune.sh   (SNAPS=200 NFILES=3000 DUMP_MB=256 BENCH_DIR=/tmp/wayback-bench-prune
#                                  WB=path/to/wayback to skip the build)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --bench
if [[ -z "${WB:-}" ]]; then
  cargo build --release --quiet --bin wayback
  WB="${CARGO_TARGET_DIR:-$PWD/target}/release/wayback"
fi
SNAPS=${SNAPS:-200}
NFILES=${NFILES:-3000}
DUMP_MB=${DUMP_MB:-256}
B=${BENCH_DIR:-/tmp/wayback-bench-prune}
export WAYBACK_PASSWORD=bench RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export BORG_BASE_DIR="$B/borg-home" RESTIC_CACHE_DIR="$B/restic-cache" XDG_CACHE_HOME="$B/cache"
rm -rf "$B"; mkdir -p "$B/data/files" "$B/data/db"

# ---------- data: a tree and a dump that change a little every "day" ----------
cat >"$B/step.py" <<'PY'
import os, random, sys
root, step, nfiles, dump_mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(step)
files = os.path.join(root, "files")
dump = os.path.join(root, "db", "app.dump")
def row(r):
    return b"%08d|customer-%06d|%10d|%s\n" % (r.randint(0, 10**8), r.randint(0, 10**6), r.randint(0, 10**9), b"x" * r.randint(10, 60))
def text(r, n):
    out = bytearray()
    while len(out) < n:
        out += row(r)
    return bytes(out[:n])
if step == 0:
    for i in range(nfiles):
        d = os.path.join(files, "d%03d" % (i // 100))
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "f%05d" % i), "wb") as f:
            f.write(text(rnd, rnd.randint(4096, 65536)) if i % 2 else os.urandom(rnd.randint(4096, 65536)))
    with open(dump, "wb") as f:
        r = random.Random(12345)
        block = text(r, 1 << 20)
        for k in range(dump_mb):
            # Varied blocks: each MiB is the base block shifted by a different offset.
            s = (k * 7919) % len(block)
            f.write(block[s:] + block[:s])
    sys.exit(0)
# ~3% of the files rewritten, some added, some deleted.
names = sorted(os.path.join(dp, n) for dp, _, ns in os.walk(files) for n in ns)
for p in rnd.sample(names, max(1, len(names) * 3 // 100)):
    with open(p, "wb") as f:
        f.write(os.urandom(rnd.randint(4096, 65536)))
for p in rnd.sample(names, 10):
    os.unlink(p)
d = os.path.join(files, "new%04d" % step)
os.makedirs(d, exist_ok=True)
for i in range(20):
    with open(os.path.join(d, "n%02d" % i), "wb") as f:
        f.write(text(rnd, rnd.randint(4096, 65536)))
# ~1% of the dump rewritten in place (rows updated), in 16 places.
size = os.path.getsize(dump)
with open(dump, "r+b") as f:
    for _ in range(16):
        n = size // 100 // 16
        off = rnd.randrange(0, size - n)
        f.seek(off)
        f.write(text(rnd, n))
PY
python3 "$B/step.py" "$B/data" 0 "$NFILES" "$DUMP_MB"
echo "data: $(du -sh "$B/data" | cut -f1) per snapshot, $SNAPS snapshots" >&2

"$WB" --repo "$B/wb" init >/dev/null
restic -q -r "$B/restic" init >/dev/null
borg init -e repokey "$B/borg" >/dev/null 2>&1
t0=$(date -u -d "2026-01-01" +%s)
for i in $(seq 0 $((SNAPS - 1))); do
  ((i == 0)) || python3 "$B/step.py" "$B/data" "$i" "$NFILES" "$DUMP_MB"
  ts=$(date -u -d "@$((t0 + i * 86400 + 7200))" +%Y-%m-%dT%H:%M:%S)
  "$WB" --repo "$B/wb" backup "$B/data" --source data --time "${ts}Z" >/dev/null
  restic -q -r "$B/restic" backup "$B/data" --time "${ts//T/ }" --host bench >/dev/null
  borg create --timestamp "$ts" "$B/borg::s$i" "$B/data"
  ((i % 20 == 0)) && echo "  snapshot $i/$SNAPS" >&2
done

# ---------- forget + prune ----------
t() { /usr/bin/time -f "%e %M" -o "$B/time.txt" "$@" >/dev/null 2>"$B/last.err" || { cat "$B/last.err" >&2; return 1; }; awk '{printf "%s %.0f\n", $1, $2/1024}' "$B/time.txt"; }
size() { du -sb --exclude=index --exclude=locks --exclude=tmp "$1" | cut -f1; }
policy=(--keep-daily 7 --keep-weekly 4 --keep-monthly 6)
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
wb_before=$(size "$B/wb") rs_before=$(size "$B/restic") bg_before=$(size "$B/borg")
# One command each where the tool has one (restic forget --prune, wayback forget --prune).
read -r wb_s wb_m < <(t "$WB" --repo "$B/wb" forget --source data "${policy[@]}" --prune --grace 0)
read -r rs_s rs_m < <(t restic -r "$B/restic" forget "${policy[@]}" --prune)
read -r bp_s bp_m < <(t borg prune "${policy[@]}" "$B/borg")
read -r bc_s bc_m < <(t borg compact "$B/borg")
wb_after=$(size "$B/wb") rs_after=$(size "$B/restic") bg_after=$(size "$B/borg")
kept_wb=$("$WB" --repo "$B/wb" snapshots --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
kept_rs=$(restic -r "$B/restic" snapshots --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
kept_bg=$(borg list --short "$B/borg" | wc -l)
"$WB" --repo "$B/wb" check --read-data >/dev/null

mb() { awk -v b="$1" 'BEGIN{printf "%.0f", b/1048576}'; }
bg_s=$(awk -v a="$bp_s" -v b="$bc_s" 'BEGIN{print a+b}')
bg_m=$((bp_m > bc_m ? bp_m : bc_m))
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2fx", a/b}'; }
echo
echo "| $SNAPS daily snapshots, keep daily 7 / weekly 4 / monthly 6 | wayback | restic | borg |"
echo "| --- | --- | --- | --- |"
echo "| snapshots kept | $kept_wb | $kept_rs | $kept_bg |"
echo "| forget + prune time (s) | $wb_s | $rs_s ($(ratio "$rs_s" "$wb_s")) | $bg_s ($(ratio "$bg_s" "$wb_s"); prune $bp_s + compact $bc_s) |"
echo "| peak RSS (MB) | $wb_m | $rs_m | $bg_m |"
echo "| repository before (MB) | $(mb "$wb_before") | $(mb "$rs_before") | $(mb "$bg_before") |"
echo "| repository after (MB) | $(mb "$wb_after") | $(mb "$rs_after") | $(mb "$bg_after") |"
pct() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f%%", 100*a/b}'; }
echo "| reclaimed (MB, share of before) | $(mb $((wb_before - wb_after))) ($(pct $((wb_before - wb_after)) "$wb_before")) | $(mb $((rs_before - rs_after))) ($(pct $((rs_before - rs_after)) "$rs_before")) | $(mb $((bg_before - bg_after))) ($(pct $((bg_before - bg_after)) "$bg_before")) |"
