#!/usr/bin/env bash
# Concurrency under load (issue 16): the mount under 8 parallel readers (random reads, find-like
# walks, cp -a of a directory) for $DUR seconds (default 600) while the agent backs up a
# directory and a dump every second, archives a WAL segment every second and prunes every 30 s.
# Reports per kind of read the count and p50/p99/max latency, the mount's and the agent's RSS at
# start and end, and fails on any read error, any single read or directory listing slower than
# 1 s, a failed job, or a check --read-data that does not pass at the end.
# Usage: sudo scripts/load.sh [DUR_SECONDS]   (needs root for FUSE)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-${DUR:-600}}
WB=${WB:-$PWD/target/release/wayback}
[[ -x "$WB" ]] || cargo build --release --quiet
B=$(mktemp -d /var/tmp/wayback-load.XXXXXX)
cp "$WB" "$B/wayback"; WB="$B/wayback"
export WAYBACK_REPO="$B/repo" WAYBACK_PASSWORD=load WAYBACK_CACHE_DIR="$B/cache"
MNT="$B/mnt"; SRC="$B/src"; WAL="$B/pg_wal"
mkdir -p "$MNT" "$SRC" "$WAL"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
  [[ -n "${KEEP:-}" ]] || rm -rf "$B"
}
trap cleanup EXIT
log() { printf '%s load: %s\n' "$(date -u +%H:%M:%S)" "$*"; }
rss() { awk '/VmRSS/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

"$WB" init > /dev/null
# 2,000 files in 40 directories, 1 KiB .. 4 MiB.
python3 - "$SRC" <<'PY'
import os, random, sys
random.seed(7)
root = sys.argv[1]
for d in range(40):
    p = os.path.join(root, f"d{d:02d}"); os.makedirs(p)
    for f in range(50):
        n = int(1024 * 2 ** random.uniform(0, 12))
        with open(os.path.join(p, f"f{f:02d}"), "wb") as fh:
            fh.write(os.urandom(n // 2) + bytes(n - n // 2))
PY
cat > "$B/agent.toml" <<EOF
repo = "$B/repo"
prune_every = "30s"
prune_grace = "10s"
wal_late = "off"

[[source]]
name = "files"
type = "paths"
paths = ["$SRC"]
every = "1s"
keep = { last = 20 }

[[source]]
name = "dump"
type = "command"
command = "date +%s%N; seq 1 100000"
file = "d.txt"
every = "1s"
keep = { last = 20 }
EOF
RUST_LOG=info "$WB" agent --config "$B/agent.toml" 2> "$B/agent.log" &
AGENT=$!; PIDS+=("$AGENT")
for _ in $(seq 1 100); do [[ -S "$B/repo/wal-push.sock" ]] && break; sleep 0.2; done
for _ in $(seq 1 100); do "$WB" snapshots --json 2>/dev/null | grep -q '"files"' && break; sleep 0.2; done
"$WB" mount "$MNT" --daemon --log-file "$B/mount.log"
MOUNT=$(pgrep -n -f "mount $MNT")
# Writers beside the agent: a file of the source changes and a WAL segment is archived, each second.
python3 - "$SRC" "$WAL" "$WB" "$DUR" > "$B/writer.log" 2>&1 <<'PY' &
import os, random, struct, subprocess, sys, time
src, wal, wb, dur = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
end = time.time() + dur; seg = 1
while time.time() < end:
    p = os.path.join(src, f"d{random.randrange(40):02d}", f"f{random.randrange(50):02d}")
    with open(p, "ab") as f: f.write(os.urandom(4096))
    b = bytearray(os.urandom(1 << 20)) + bytes((16 << 20) - (1 << 20))
    b[0:40] = bytes(40); b[0:2] = struct.pack("<H", 0xD110); b[2:4] = struct.pack("<H", 2)
    b[24:32] = struct.pack("<Q", 7)
    name = f"00000001{seg >> 8:08X}{seg & 0xFF:08X}"
    path = os.path.join(wal, name)
    with open(path, "wb") as f: f.write(b)
    rc = subprocess.call([wb, "wal-push", "--cluster", "main", path])
    print(f"push {name} rc={rc}", flush=True)
    os.unlink(path); seg += 1
    time.sleep(1)
PY
PIDS+=("$!")
sleep 3
A0=$(rss "$AGENT"); M0=$(rss "$MOUNT")
log "start: agent RSS $A0 kB, mount RSS $M0 kB; 8 readers for ${DUR}s"
python3 - "$MNT" "$DUR" "$B" > "$B/readers.txt" <<'PY'
import os, random, shutil, sys, threading, time
mnt, dur, scratch = sys.argv[1], float(sys.argv[2]), sys.argv[3]
lat = {"read": [], "listdir": [], "cp": []}
errors = []; lock = threading.Lock()
def rec(kind, t):
    with lock: lat[kind].append(t)
def reader(n):
    rnd = random.Random(n); end = time.time() + dur
    while time.time() < end:
        op = rnd.choice(["read"] * 6 + ["walk", "cp"])
        base = os.path.join(mnt, "at", "latest", "files")
        try:
            if op == "read":
                p = os.path.join(base, f"d{rnd.randrange(40):02d}", f"f{rnd.randrange(50):02d}")
                t = time.monotonic()
                with open(p, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    f.seek(rnd.randrange(max(1, size)))
                    f.read(65536)
                rec("read", time.monotonic() - t)
            elif op == "walk":
                for d in range(40):
                    t = time.monotonic()
                    names = os.listdir(os.path.join(base, f"d{d:02d}"))
                    for x in names: os.lstat(os.path.join(base, f"d{d:02d}", x))
                    rec("listdir", time.monotonic() - t)
            else:
                dst = os.path.join(scratch, f"cp{n}")
                t = time.monotonic()
                shutil.copytree(os.path.join(base, f"d{rnd.randrange(40):02d}"), dst, symlinks=True)
                rec("cp", time.monotonic() - t)
                shutil.rmtree(dst)
        except Exception as e:
            with lock: errors.append(f"{op}: {e}")
ts = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
def q(v, p): return sorted(v)[min(len(v) - 1, int(p * len(v)))] if v else float("nan")
for k, v in lat.items():
    print(f"{k} n={len(v)} p50_ms={q(v,0.5)*1000:.1f} p99_ms={q(v,0.99)*1000:.1f} max_ms={max(v, default=0)*1000:.1f}")
print(f"errors {len(errors)}"); [print("  " + e) for e in errors[:10]]
slow = [x for x in lat["read"] + lat["listdir"] if x > 1.0]
print(f"stalls_over_1s {len(slow)}")
PY
A1=$(rss "$AGENT"); M1=$(rss "$MOUNT")
cat "$B/readers.txt"
log "end: agent RSS $A0 -> $A1 kB, mount RSS $M0 -> $M1 kB"
kill "$AGENT" 2>/dev/null || true; wait "$AGENT" 2>/dev/null || true
c() { grep -c "$1" "$B/agent.log" || true; }
pushes=$(grep -c 'rc=0' "$B/writer.log" || true); bad_pushes=$(grep -vc 'rc=0' "$B/writer.log" || true)
log "jobs done $(c 'job done'), failed $(c 'job failed'); prunes $(c 'prune done'); WAL pushes ok $pushes, failed $bad_pushes"
fail=0
grep -q '^errors 0$' "$B/readers.txt" || fail=1
grep -q '^stalls_over_1s 0$' "$B/readers.txt" || fail=1
(( $(c 'job failed') + bad_pushes == 0 )) || fail=1
"$WB" check --read-data > /dev/null || { log "check --read-data FAILED"; fail=1; }
((fail == 0)) && log "PASS" || { log "FAIL (logs kept in $B)"; KEEP=1; }
exit $fail
