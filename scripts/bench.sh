#!/usr/bin/env bash
# Side-by-side benchmark: wayback vs restic vs borg on the same data, in one run.
# Data: a pg_dump -Fc -Z0 of a pgbench database (scale $SCALE, ~15 MB per scale unit... see the
# printed size) plus a tree of $NFILES small files. Prints a markdown table with ratios.
# Usage: scripts/bench.sh            (SCALE=30 NFILES=30000 BENCH_DIR=/tmp/wayback-bench;
#                                     WB=path/to/wayback measures that binary instead of building;
#                                     TOOLS="wayback" runs only those tools; REUSE_DATA=1 keeps the
#                                     data of the previous run, e.g. to compare two wayback builds;
#                                     ONLY_SYS=1 runs only the system-tree mount rows at the end)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --bench
if [[ -z "${WB:-}" ]]; then
  cargo build --release --quiet --bin wayback
  WB="${CARGO_TARGET_DIR:-$PWD/target}/release/wayback"
fi
SCALE=${SCALE:-30}
NFILES=${NFILES:-30000}
B=${BENCH_DIR:-/tmp/wayback-bench}
PGBIN=/usr/lib/postgresql/15/bin
export WAYBACK_PASSWORD=bench RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export BORG_BASE_DIR="$B/borg-home" RESTIC_CACHE_DIR="$B/restic-cache" XDG_CACHE_HOME="$B/cache"

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
if [[ "${ONLY_SYS:-0}" == 1 ]]; then
  mkdir -p "$B"
elif [[ "${ONLY_MOUNT:-0}" == 1 ]]; then
  DATA_MB=$(du -sm "$B/data" | cut -f1)
elif [[ "${REUSE_DATA:-0}" == 1 && -f "$B/dump2" ]]; then
  rm -rf "$B"/repo-* "$B/out" "$B"/mnt-*; mkdir -p "$B/out"
  DATA_MB=$(du -sm "$B/data" | cut -f1)
else
rm -rf "$B"; mkdir -p "$B"/{data/db,data/files,pg,out}
chown postgres "$B/pg"
# ---------- data ----------
pg() { runuser -u postgres -- "$@"; }
pg "$PGBIN/initdb" -D "$B/pg/data" -A trust -U postgres --no-sync >/dev/null
pg "$PGBIN/pg_ctl" -D "$B/pg/data" -l "$B/pg/log" -o "-k $B/pg -c listen_addresses='' -c fsync=off" -w start >/dev/null
trap 'pg "$PGBIN/pg_ctl" -D "$B/pg/data" -m immediate stop >/dev/null 2>&1 || true; for m in "$B"/mnt-*; do fusermount3 -uz "$m" 2>/dev/null || true; done' EXIT
export PGHOST="$B/pg" PGUSER=postgres
"$PGBIN/createdb" app
"$PGBIN/pgbench" -i -s "$SCALE" -q app 2>/dev/null
"$PGBIN/pg_dump" -Fc -Z0 app > "$B/dump1"
# A clustered ~1% change: one contiguous range of accounts.
rows=$((SCALE * 100000 / 100))
"$PGBIN/psql" -q -d app -c "UPDATE pgbench_accounts SET abalance = abalance + 7 WHERE aid <= $rows"
"$PGBIN/pg_dump" -Fc -Z0 app > "$B/dump2"
cp "$B/dump1" "$B/data/db/app.dump"
python3 - "$B/data/files" "$NFILES" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(42)
words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(3, 9))) for _ in range(2000)]
for i in range(n):
    d = os.path.join(root, f"d{i // 100:04d}")
    if i % 100 == 0: os.makedirs(d, exist_ok=True)
    size = rnd.randint(200, 8000)
    body = b" ".join(rnd.choice(words) for _ in range(size // 6))
    with open(os.path.join(d, f"f{i:06d}.txt"), "wb") as f: f.write(body[:size])
PY
DATA_MB=$(du -sm "$B/data" | cut -f1)
echo "data: $(du -sh "$B/data/db/app.dump" | cut -f1) dump + $NFILES small files ($(du -sh "$B/data/files" | cut -f1)); total ${DATA_MB} MB" >&2
fi
if [[ "${ONLY_MOUNT:-0}" != 1 && "${ONLY_SYS:-0}" != 1 ]]; then

# ---------- helpers ----------
# t CMD...: runs CMD, prints "seconds peakRSS_MB"
t() { /usr/bin/time -f "%e %M" -o "$B/time.txt" "$@" >/dev/null 2>"$B/last.err" || { cat "$B/last.err" >&2; return 1; }; awk '{printf "%s %.0f\n", $1, $2/1024}' "$B/time.txt"; }
# Repository bytes; wayback's index/ is a local cache (like restic's and borg's caches, which
# live outside their repositories), so it is not counted.
size() { du -sb --exclude=index --exclude=locks --exclude=tmp "$1" | cut -f1; }

declare -A R
run_tool() {
  local tool=$1 repo="$B/repo-$1" out="$B/out/$1"
  case $tool in
    wayback) init() { "$WB" --repo "$repo" init >/dev/null; }
             bk() { (cd "$B" && t "$WB" --repo "$repo" backup data --source bench); }
             rs() { t "$WB" --repo "$repo" restore latest --source bench --target "$out"; } ;;
    restic)  init() { restic -r "$repo" init >/dev/null 2>&1; }
             bk() { (cd "$B" && t restic -r "$repo" backup data); }
             rs() { t restic -r "$repo" restore latest --target "$out"; } ;;
    borg)    init() { borg init -e repokey "$repo" >/dev/null 2>&1; }
             bk() { (cd "$B" && t borg create --compression zstd,3 "$repo::s$(date +%s%N)" data); }
             rs() { mkdir -p "$out" && (cd "$out" && t borg extract "$repo::$(borg list --last 1 --short "$repo")"); } ;;
  esac
  cp "$B/dump1" "$B/data/db/app.dump"; touch -d '2025-01-01' "$B/data/db/app.dump"
  init; drop_caches
  read -r R[$tool.first] R[$tool.first_rss] < <(bk)
  local s0; s0=$(size "$repo")
  read -r R[$tool.unchanged] _ < <(bk)
  cp "$B/dump2" "$B/data/db/app.dump"
  local s1; s1=$(size "$repo")
  read -r R[$tool.changed] _ < <(bk)
  R[$tool.added]=$(( ($(size "$repo") - s1) / 1024 ))
  R[$tool.repo]=$(( s0 / 1024 / 1024 ))
  drop_caches
  read -r R[$tool.restore] R[$tool.restore_rss] < <(rs)
  diff -rq "$B/data" "$out/data" >/dev/null 2>&1 || diff -rq "$B/data" "$out" >/dev/null || echo "WARNING: $tool restore differs" >&2
  rm -rf "$out"
}
TOOLS=${TOOLS:-wayback restic borg}
has() { [[ " $TOOLS " == *" $1 "* ]]; }
for tool in $TOOLS; do echo "running $tool..." >&2; run_tool $tool; done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0) printf "%.2fx", b / a; else print "-" }'; }
mbps() { awk -v s="$1" -v m="$DATA_MB" 'BEGIN { if (s > 0) printf "%.0f", m / s; else print "-" }'; }
echo
echo "| metric | wayback | restic | borg | restic/wayback | borg/wayback |"
echo "| --- | --- | --- | --- | --- | --- |"
row() { echo "| $1 | ${R[wayback.$2]} | ${R[restic.$2]:-} | ${R[borg.$2]:-} | $(ratio "${R[wayback.$2]}" "${R[restic.$2]:-}") | $(ratio "${R[wayback.$2]}" "${R[borg.$2]:-}") |"; }
row "first backup (s)" first
echo "| first backup MB/s | $(mbps "${R[wayback.first]}") | $(mbps "${R[restic.first]:-}") | $(mbps "${R[borg.first]:-}") | | |"
row "unchanged 2nd backup (s)" unchanged
row "backup after 1% dump change (s)" changed
row "bytes added by 1% change (KiB)" added
row "repository size after first (MiB)" repo
row "restore (s)" restore
row "peak RSS backup (MB)" first_rss
row "peak RSS restore (MB)" restore_rss
echo "(ratios > 1 mean wayback is faster/smaller; data ${DATA_MB} MB, scale $SCALE, $NFILES files)"

# ---------- diff ----------
# First vs last snapshot: the dump changed (1%), the small-file tree did not.
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1 || true; t1=$(date +%s.%N); awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}'; }
wids=$("$WB" --repo "$B/repo-wayback" snapshots --json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s[0]["id"], s[-1]["id"])')
if has restic; then
rids=$(restic -r "$B/repo-restic" snapshots --json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s[0]["id"], s[-1]["id"])')
fi
D_WB=$(secs "$WB" --repo "$B/repo-wayback" diff ${wids} --name-status)
TREES=$("$WB" --repo "$B/repo-wayback" diff ${wids} --stat | grep -o '[0-9]* tree blocks read' || true)
D_RESTIC=-; has restic && D_RESTIC=$(secs restic -r "$B/repo-restic" diff ${rids})
mkdir -p "$B/mnt-diff"; "$WB" --repo "$B/repo-wayback" mount "$B/mnt-diff" --daemon >/dev/null
read -r n1 n3 < <(ls "$B/mnt-diff/snapshots/bench" | sed -n '1p;$p' | tr '\n' ' '; echo)
D_RQ=$(secs diff -rq "$B/mnt-diff/snapshots/bench/$n1" "$B/mnt-diff/snapshots/bench/$n3")
"$WB" umount "$B/mnt-diff"
echo
echo "| diff of first vs last snapshot ($NFILES small files + dump) | seconds |"
echo "| --- | --- |"
echo "| wayback diff ($TREES) | $D_WB |"
echo "| restic diff | $D_RESTIC ($(ratio "$D_WB" "$D_RESTIC") slower than wayback) |"
echo "| diff -rq through the wayback mount | $D_RQ |"

fi  # ONLY_MOUNT

if [[ "${ONLY_SYS:-0}" != 1 ]]; then
# ---------- mount ----------
echo >&2; echo "mount benchmarks..." >&2
declare -A M
mount_tool() {
  local tool=$1 repo="$B/repo-$1" mp="$B/mnt-$1" root
  mkdir -p "$mp"
  local t0; t0=$(date +%s.%N)
  case $tool in
    wayback) "$WB" --repo "$repo" mount "$mp" --daemon >/dev/null; root="$mp/latest/bench" ;;
    restic)  restic -r "$repo" mount "$mp" >/dev/null 2>&1 & sleep 0.2
             until [ -d "$mp/snapshots/latest" ]; do sleep 0.1; done; root="$mp/snapshots/latest/data" ;;
    borg)    borg mount "$repo::$(borg list --last 1 --short "$repo")" "$mp"; root="$mp/data" ;;
  esac
  ls "$root" >/dev/null
  M[$tool.first_ls]=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')
  drop_caches
  local s; s=$( { /usr/bin/time -f "%e" cat "$root/db/app.dump" > /dev/null; } 2>&1 | tail -1)
  M[$tool.seq]=$(awk -v s="$s" -v f="$(stat -c %s "$B/dump2")" 'BEGIN{ if (s>0) printf "%.0f", f/1e6/s; else print "-"}')
  M[$tool.walk_cold]=$( { /usr/bin/time -f "%e" ls -lR "$root/files" > /dev/null; } 2>&1 | tail -1)
  M[$tool.walk_warm]=$( { /usr/bin/time -f "%e" ls -lR "$root/files" > /dev/null; } 2>&1 | tail -1)
  local pid; pid=$(pgrep -f "$mp" | head -1 || true)
  M[$tool.rss]=$([ -n "$pid" ] && awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$pid/status" || echo -)
  M[$tool.rss_now]=$([ -n "$pid" ] && awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$pid/status" || echo -)
  fusermount3 -u "$mp" 2>/dev/null || umount -l "$mp" || true
  sleep 0.5
}
TOOLS=${TOOLS:-wayback restic borg}
for tool in $TOOLS; do mount_tool $tool; done
catsecs=$( { /usr/bin/time -f "%e" "$WB" --repo "$B/repo-wayback" cat latest:/db/app.dump --source bench > /dev/null; } 2>&1 | tail -1)
catmb=$(awk -v s="$catsecs" -v f="$(stat -c %s "$B/dump2")" 'BEGIN{printf "%.0f", f/1e6/s}')
echo
echo "| mount metric | wayback | restic | borg |"
echo "| --- | --- | --- | --- |"
for k in "first ls after mount (s):first_ls" "sequential read of the dump (MB/s):seq" "ls -lR small-file tree, cold (s):walk_cold" "ls -lR small-file tree, warm (s):walk_warm" "mount peak RSS (MB):rss" "mount RSS after these (MB):rss_now"; do
  n=${k%%:*}; m=${k##*:}
  echo "| $n | ${M[wayback.$m]} | ${M[restic.$m]:-} | ${M[borg.$m]:-} |"
done
echo "(wayback cat of the same dump to /dev/null: ${catmb} MB/s)"
fi  # ONLY_SYS

# ---------- mount: a tree of real system directories ----------
# Small files, many small directories and symlinks, as admins browse them; what `ls -l` asks
# for (ACLs, security labels) costs round trips a synthetic tree does not show. Two snapshots
# (the second after 1% of the files changed) in a repository of their own per tool.
echo >&2; echo "system-tree mount benchmarks..." >&2
SYS="$B/sys"
if [[ ! -d "$SYS" || "${REUSE_DATA:-0}" != 1 ]]; then
  rm -rf "$SYS" "$B/sys.v1"; mkdir -p "$SYS"
  for d in /usr/share/doc /usr/include /usr/share/locale /usr/lib/python3 /usr/lib/python3.11 /usr/share/man /usr/share/perl; do
    if [[ -d "$d" ]]; then cp -a "$d" "$SYS/$(echo "${d#/}" | tr / _)"; fi
    if [[ $(find "$SYS" | wc -l) -gt 50000 ]]; then break; fi
  done
fi
echo "system tree: $(find "$SYS" -type f | wc -l) files, $(find "$SYS" -type l | wc -l) symlinks, $(du -sh "$SYS" | cut -f1)" >&2
# One large file read sequentially through the mount: rows of hex text, ~3:1 compressible
# (zstd -3), like a dump's table data; backed up first, as its own snapshot in the same repo.
BIG="$B/big"
if [[ ! -f "$BIG/big.bin" || "${REUSE_DATA:-0}" != 1 ]]; then
  rm -rf "$BIG"; mkdir -p "$BIG"
  python3 - "$BIG/big.bin" <<'PY'
import os, sys
pad = b'\tstatus=active region=eu-west-1\n'
with open(sys.argv[1], 'wb') as f:
    for k in range(290):
        f.write(b''.join(b'%d\t%s%s' % (k * 10000 + i, os.urandom(24).hex().encode(), pad) for i in range(10000)))
PY
fi
BIG_MB=$(du -m --apparent-size "$BIG/big.bin" | cut -f1)
echo "large file: $BIG_MB MB" >&2
declare -A S
sys_tool() {
  local tool=$1 repo="$B/repo-sys-$1" mp="$B/mnt-sys-$1" a b root big bigsnap
  rm -rf "$repo"; mkdir -p "$mp"
  # Restore the tree to v1 (undo a previous run's change), back it up, change 1%, back up again.
  find "$SYS" -type f -name '*.wbchg' -delete
  sysbk() {
    case $tool in
      wayback) (cd "$B" && "$WB" --repo "$repo" backup sys --source sys >/dev/null) ;;
      restic)  (cd "$B" && restic -r "$repo" backup sys >/dev/null 2>&1) ;;
      borg)    (cd "$B" && borg create --compression zstd,3 "$repo::s$(date +%s%N)" sys) ;;
    esac
  }
  case $tool in
    wayback) "$WB" --repo "$repo" init >/dev/null
             (cd "$B" && "$WB" --repo "$repo" backup big --source big >/dev/null) ;;
    restic)  restic -r "$repo" init >/dev/null 2>&1
             (cd "$B" && restic -r "$repo" backup --tag big big >/dev/null 2>&1) ;;
    borg)    borg init -e repokey "$repo" >/dev/null 2>&1
             (cd "$B" && borg create --compression zstd,3 "$repo::0big" big) ;;
  esac
  sysbk
  find "$SYS" -type f | awk 'NR % 100 == 0' | while read -r f; do echo x > "$f.wbchg"; done
  sysbk
  case $tool in
    wayback) "$WB" --repo "$repo" mount "$mp" --daemon >/dev/null
             read -r a b < <(ls "$mp/snapshots/sys" | sed -n '1p;$p' | tr '\n' ' '; echo)
             a="$mp/snapshots/sys/$a"; b="$mp/snapshots/sys/$b"; root="$mp/latest/sys"
             big="$mp/latest/big/big.bin" ;;
    restic)  restic -r "$repo" mount "$mp" >/dev/null 2>&1 & sleep 0.2
             until [ -d "$mp/snapshots/latest" ]; do sleep 0.1; done
             # The first snapshot is the large file's.
             read -r bigsnap a b < <(ls "$mp/snapshots" | grep -v latest | sed -n '1p;2p;$p' | tr '\n' ' '; echo)
             a="$mp/snapshots/$a/sys"; b="$mp/snapshots/$b/sys"; root="$mp/snapshots/latest/sys"
             big="$mp/snapshots/$bigsnap/big/big.bin" ;;
    borg)    borg mount "$repo" "$mp"
             read -r a b < <(ls "$mp" | grep -v '^0big$' | sed -n '1p;$p' | tr '\n' ' '; echo)
             a="$mp/$a/sys"; b="$mp/$b/sys"; root="$b"; big="$mp/0big/big/big.bin" ;;
  esac
  drop_caches
  S[$tool.lslr]=$(secs ls -lR "$root")
  S[$tool.lslr_warm]=$(secs ls -lR "$root")
  S[$tool.find]=$(secs sh -c "find '$root' -type f | wc -l")
  S[$tool.diffrq]=$(secs diff -rq "$a" "$b")
  drop_caches
  local t; t=$(secs cat "$big")
  S[$tool.cat]=$(awk -v mb="$BIG_MB" -v t="$t" 'BEGIN { if (t > 0) printf "%.0f", mb / t; else print "-" }')
  local pid; pid=$(pgrep -f "$mp" | head -1 || true)
  S[$tool.rss]=$([ -n "$pid" ] && awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$pid/status" || echo -)
  S[$tool.rss_now]=$([ -n "$pid" ] && awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$pid/status" || echo -)
  fusermount3 -u "$mp" 2>/dev/null || umount -l "$mp" || true
  sleep 0.5
  find "$SYS" -type f -name '*.wbchg' -delete
}
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1 || true; t1=$(date +%s.%N); awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b != "") printf "%.2fx", b / a; else print "-" }'; }
for tool in ${TOOLS:-wayback restic borg}; do echo "sys: $tool..." >&2; sys_tool $tool; done
echo
echo "| system-tree mount metric | wayback | restic | borg | restic/wayback | borg/wayback |"
echo "| --- | --- | --- | --- | --- | --- |"
for k in "ls -lR, cold (s):lslr" "ls -lR, warm (s):lslr_warm" "find -type f | wc -l (s):find" "diff -rq of two snapshots (s):diffrq" "cat of the large file, cold (MB/s):cat" "mount peak RSS after these (MB):rss" "mount RSS after these (MB):rss_now"; do
  n=${k%%:*}; m=${k##*:}
  if [[ $m == cat ]]; then  # a rate: the ratio is wayback's over the other's, so > 1 is better too
    echo "| $n | ${S[wayback.$m]} | ${S[restic.$m]:-} | ${S[borg.$m]:-} | $(ratio "${S[restic.$m]:-}" "${S[wayback.$m]}") | $(ratio "${S[borg.$m]:-}" "${S[wayback.$m]}") |"
  else
    echo "| $n | ${S[wayback.$m]} | ${S[restic.$m]:-} | ${S[borg.$m]:-} | $(ratio "${S[wayback.$m]}" "${S[restic.$m]:-}") | $(ratio "${S[wayback.$m]}" "${S[borg.$m]:-}") |"
  fi
done
echo "(peak RSS includes each tool's key derivation at mount: wayback's argon2id takes 64 MiB for a"
echo " moment and frees it; 'RSS after these' is what walking and reading hold)"
# Restore of the tree against cp -a of it, both from a cold page cache and followed by sync
# (the restore's target: no slower than copying the tree, 1.1x at most).
if [[ " ${TOOLS:-wayback restic borg} " == *" wayback "* ]]; then
  rm -rf "$B/sys-restore" "$B/sys-cpa"; drop_caches
  rs=$(secs sh -c "'$WB' --repo '$B/repo-sys-wayback' restore latest --source sys --target '$B/sys-restore' && sync")
  drop_caches
  cpa=$(secs sh -c "cp -a '$SYS' '$B/sys-cpa' && sync")
  echo "(restore of the system tree + sync: $rs s; cp -a of it + sync: $cpa s; restore/cp -a $(ratio "$cpa" "$rs"), goal <= 1.10x)"
  rm -rf "$B/sys-restore" "$B/sys-cpa"
fi
