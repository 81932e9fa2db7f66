#!/usr/bin/env bash
# wayback on S3 next to restic on S3, in one run, against the same 3-node Garage cluster on
# loopback (replication factor 3, scripts/garage-cluster.sh), plus both on local disk for
# reference. Data: a copy of real system directories (small files, symlinks) and a 300 MB
# dump-like file (hex text rows, ~3:1 compressible). Rows: first backup, restore of everything,
# and a cold sequential read of the large file through each tool's mount (page cache dropped,
# fresh mount process: nothing cached). Prints a markdown table with restic/wayback ratios.
#
#   scripts/bench-s3.sh        BENCH_DIR=/tmp/wayback-bench-s3  WB=path/to/wayback (else built)
#                              SYS=DIR reuses a tree instead of copying system directories
#                              TOOLS="wayback restic"  TARGETS="local s3"
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --bench
scripts/setup.sh --s3
if [[ -z "${WB:-}" ]]; then
  cargo build --release --quiet --bin wayback
  WB="${CARGO_TARGET_DIR:-$PWD/target}/release/wayback"
fi
B=${BENCH_DIR:-/tmp/wayback-bench-s3}
TOOLS=${TOOLS:-wayback restic}
TARGETS=${TARGETS:-local s3}
export WAYBACK_PASSWORD=bench RESTIC_PASSWORD=bench
export RESTIC_CACHE_DIR="$B/restic-cache" WAYBACK_CACHE_DIR="$B/wayback-cache"

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>"$B/last.err" || { cat "$B/last.err" >&2; return 1; }
         t1=$(date +%s.%N); awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}'; }
mbs() { awk -v s="$1" -v m="$2" 'BEGIN{ if (s>0) printf "%.0f", m/s; else print "-"}'; }

cleanup() {
  for m in "$B"/mnt-*; do fusermount3 -uz "$m" 2>/dev/null || true; done
  scripts/garage-cluster.sh stop "$B/garage" >/dev/null 2>&1 || true
}
trap cleanup EXIT

rm -rf "$B"; mkdir -p "$B"/{data/db,out}
# ---------- data ----------
if [[ -n "${SYS:-}" ]]; then
  cp -a "$SYS" "$B/data/sys"
else
  mkdir -p "$B/data/sys"
  for d in /usr/share/doc /usr/include /usr/share/locale /usr/lib/python3; do
    [[ -d $d ]] && cp -a "$d" "$B/data/sys/$(echo "${d#/}" | tr / _)"
  done
fi
python3 - "$B/data/db/app.dump" <<'PY'
import os, random, sys
rnd = random.Random(7)
with open(sys.argv[1], "wb") as f:
    n = 0
    while n < 300_000_000:
        row = b"%d\t%d\t%s\n" % (n, rnd.randrange(10**6), os.urandom(24).hex().encode() * 2)
        f.write(row); n += len(row)
PY
DATA_MB=$(du -sm "$B/data" | cut -f1)
DUMP_MB=$(awk -v b="$(stat -c %s "$B/data/db/app.dump")" 'BEGIN{printf "%.1f", b/1e6}')
NFILES=$(find "$B/data" -type f | wc -l)

# ---------- Garage ----------
scripts/garage-cluster.sh start "$B/garage" >/dev/null
# shellcheck disable=SC1091
source "$B/garage/env"
export AWS_ACCESS_KEY_ID=$GARAGE_KEY_ID AWS_SECRET_ACCESS_KEY=$GARAGE_SECRET AWS_DEFAULT_REGION=garage

repo_of() { # tool target
  case $1.$2 in
    wayback.local) echo "$B/repo-wayback" ;;
    wayback.s3) echo "s3://$GARAGE_BUCKET/wayback?endpoint=$GARAGE_ENDPOINT&region=garage" ;;
    restic.local) echo "$B/repo-restic" ;;
    restic.s3) echo "s3:$GARAGE_ENDPOINT/$GARAGE_BUCKET/restic" ;;
  esac
}

declare -A R
run_one() { # tool target
  local tool=$1 t=$2 repo; repo=$(repo_of "$1" "$2")
  local mp="$B/mnt-$tool-$t" out="$B/out/$tool-$t" file
  mkdir -p "$mp"
  echo "$tool on $t..." >&2
  case $tool in
    wayback)
      "$WB" --repo "$repo" init >/dev/null 2>&1
      drop_caches
      R[$tool.$t.backup]=$(secs "$WB" --repo "$repo" backup "$B/data" --source bench)
      drop_caches
      R[$tool.$t.restore]=$(secs "$WB" --repo "$repo" restore latest --source bench --target "$out")
      "$WB" --repo "$repo" mount "$mp" --daemon >/dev/null
      file="$mp/latest/bench/db/app.dump" ;;
    restic)
      restic -r "$repo" init >/dev/null 2>&1
      drop_caches
      R[$tool.$t.backup]=$(secs restic -r "$repo" backup "$B/data")
      drop_caches
      R[$tool.$t.restore]=$(secs restic -r "$repo" restore latest --target "$out")
      restic -r "$repo" mount "$mp" >/dev/null 2>&1 &
      until [[ -d "$mp/snapshots/latest" ]]; do sleep 0.1; done
      file="$mp/snapshots/latest$B/data/db/app.dump" ;;
  esac
  diff -rq --no-dereference "$B/data" "$out$( [[ $tool == restic ]] && echo "$B/data")" >/dev/null \
    || echo "WARNING: $tool restore from $t differs" >&2
  rm -rf "$out"
  drop_caches
  R[$tool.$t.read]=$(secs cat "$file")
  fusermount3 -u "$mp" 2>/dev/null || umount -l "$mp" || true
  sleep 0.5
}

for t in $TARGETS; do for tool in $TOOLS; do run_one "$tool" "$t"; done; done

echo
echo "Data: $DATA_MB MB, $NFILES files (system directories + a $DUMP_MB MB dump-like file); Garage $(garage --version 2>/dev/null | head -1 | awk '{print $2}') 3 nodes, replication 3, loopback; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| step | wayback local | restic local | wayback S3 | restic S3 | restic/wayback on S3 |"
echo "| --- | --- | --- | --- | --- | --- |"
row() { # label key unit(s|MBs) size_mb
  local l=$1 k=$2 u=$3 size=$4 cells=() v
  for c in wayback.local restic.local wayback.s3 restic.s3; do
    v=${R[$c.$k]:-}
    if [[ -z $v ]]; then cells+=("-"); elif [[ $u == MBs ]]; then cells+=("$(mbs "$v" "$size") MB/s ($v s)"); else cells+=("$v s ($(mbs "$v" "$size") MB/s)"); fi
  done
  local ratio="-"
  [[ -n ${R[wayback.s3.$k]:-} && -n ${R[restic.s3.$k]:-} ]] \
    && ratio=$(awk -v w="${R[wayback.s3.$k]}" -v r="${R[restic.s3.$k]}" 'BEGIN{ if (w>0) printf "%.2fx", r/w; else print "-"}')
  echo "| $l | ${cells[0]} | ${cells[1]} | ${cells[2]} | ${cells[3]} | $ratio |"
}
row "first backup" backup s "$DATA_MB"
row "restore of everything" restore s "$DATA_MB"
row "mount: cold sequential read of the dump" read MBs "$DUMP_MB"
echo
echo "(ratio = restic time / wayback time: above 1 means wayback is faster)"
