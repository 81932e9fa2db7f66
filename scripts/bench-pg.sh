#!/usr/bin/env bash
# PostgreSQL benchmark, two parts, results as markdown tables on stdout (progress on stderr).
#
# A. WAL archiving (issue 4): archive_command runs `wayback wal-push` through a wrapper that logs
#    each call's wall time. pgbench -c 4 -j 2 -T $PGBENCH_SECS on a scale-$WAL_SCALE database, first
#    with archive_command='true' (baseline), then archiving to wayback. Reports wal-push latency
#    per 16 MiB segment (median, p99; target median < 100 ms), segments/s archived vs generated,
#    the most .ready files seen in pg_wal/archive_status (sampled every 0.5 s), the archiver's lag
#    when pgbench ends, tps with and without archiving, WAL bytes and repository growth. A third
#    run repeats the wayback one with the key cached by `wayback key unlock` (no KDF per call),
#    a fourth pushes through a running `wayback agent` (wal-push hands it the open segment).
#    synchronous_commit=off so pgbench produces as much WAL as the machine allows.
# B. Query the past without restoring (issue 6) and PITR vs cp -a (issue 4), per pgbench scale in
#    $SIZES: base backup into wayback, writes, target time T, more writes, WAL past T archived;
#    then (page cache dropped before each) `wayback pg-at` to the first query answering as of T,
#    `wayback pitr` + PostgreSQL recovery to the first query, and `cp -a` of the data directory.
#
# Usage: scripts/bench-pg.sh   (SIZES="14 70 200" PGBENCH_SECS=60 WAL_SCALE=50 ONLY=wal|pitr
#                               RUNS="base wb wbk wba" (part A's columns; base is always run)
#                               WRITE_SECS=10 BENCH_DIR=/tmp/wayback-bench-pg KEEP=1 WB=/path/to/wayback)
# Needs root (pg-at mounts FUSE and overlayfs; drop_caches), PostgreSQL 15 and a `postgres` user.
set -euo pipefail
cd "$(dirname "$0")/.."
WB=${WB:-}
if [[ -z "$WB" ]]; then
  scripts/setup.sh --bench
  cargo build --release --quiet --bin wayback
  WB="${CARGO_TARGET_DIR:-$PWD/target}/release/wayback"
fi
SIZES=${SIZES:-14 70 200}
PGBENCH_SECS=${PGBENCH_SECS:-60}
WAL_SCALE=${WAL_SCALE:-50}
ONLY=${ONLY:-}
RUNS=${RUNS:-base wb wbk wba}
# Seconds of pgbench writes between the base backup and T (the WAL every recovery replays).
WRITE_SECS=${WRITE_SECS:-10}
B=${BENCH_DIR:-/tmp/wayback-bench-pg}
PGBIN=/usr/lib/postgresql/15/bin
export WAYBACK_PASSWORD=bench PGOPTIONS="-c client_min_messages=warning"
[[ $(id -u) -eq 0 ]] || { echo "bench-pg: run as root" >&2; exit 1; }
[[ -z "$ONLY" || "$ONLY" == wal || "$ONLY" == pitr ]] || { echo "bench-pg: ONLY must be wal or pitr" >&2; exit 1; }

# ---------- cleanup: every server, pg-at and mount we started, even on failure ----------
CLUSTERS=() PGATS=() BGPIDS=() UNLOCKED=""
cleanup() {
  set +e
  local p d m i
  for p in "${BGPIDS[@]}"; do kill "$p" 2>/dev/null; done
  [[ -n "${UNLOCKED:-}" ]] && runuser -u postgres -- "$WB" --repo "$UNLOCKED" key lock >/dev/null 2>&1
  for p in "${PGATS[@]}"; do
    kill -0 "$p" 2>/dev/null || continue
    kill -TERM "$p" 2>/dev/null
    for ((i = 0; i < 300; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && { echo "bench-pg: pg-at $p ignored SIGTERM; killing" >&2; kill -KILL "$p"; }
  done
  for d in "${CLUSTERS[@]}"; do
    [[ -f "$d/postmaster.pid" ]] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1
  done
  # Deepest first: overlays, then the FUSE mounts under them.
  awk -v b="$B/" 'index($2, b) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    echo "bench-pg: unmounting leftover $m" >&2
    umount -l "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null
  done
  [[ "${KEEP:-0}" == 1 ]] || rm -rf "$B"/s*/pitr "$B"/s*/cpa 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------- helpers ----------
log() { echo "[$(date +%T)] $*" >&2; }
die() { echo "bench-pg: $*" >&2; exit 1; }
pg() { runuser -u postgres -- "$@"; }
now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", (b - a) / 1e9}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }
mb() { awk -v a="$1" 'BEGIN{printf "%.0f MB", a / 1e6}'; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
# Repository bytes without the local index cache, lock and tmp directories (as in bench.sh).
size() { du -sb --exclude=index --exclude=locks --exclude=tmp "$1" | cut -f1; }
# sql SOCKDIR QUERY [PORT]: one value, from database app.
sql() { "$PGBIN/psql" -X -A -t -q -h "$1" -p "${3:-5432}" -U postgres -d app -c "$2"; }
# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.1 s.
wait_for() {
  local limit=$1 what=$2 t0; shift 2; t0=$(now)
  until "$@"; do
    (( ($(now) - t0) / 1000000000 < limit )) || die "timed out after ${limit}s waiting for $what"
    sleep 0.1
  done
}
ready_count() { { find "$1/pg_wal/archive_status" -name '*.ready' 2>/dev/null || true; } | wc -l; }
no_ready() { (( $(ready_count "$1") == 0 )); }
mounts_under() { awk -v b="$1/" 'index($2, b) == 1' /proc/mounts | wc -l; }
# Root-owned files in a repository the postgres user writes to would break wal-push later.
check_owner() {
  local bad; bad=$(find "$1" -not -user postgres 2>/dev/null | head -5)
  [[ -z "$bad" ]] || echo "bench-pg: WARNING after $2: files in $1 not owned by postgres: $(echo $bad)" >&2
}

rm -rf "$B"; mkdir -p "$B/bin"
# A private link to the binary: a rebuild during the run does not change what is measured, and
# `pitr` writes its own path into restore_command.
ln -f "$WB" "$B/bin/wayback" 2>/dev/null || cp "$WB" "$B/bin/wayback"
WB="$B/bin/wayback"
PW="$B/password"; echo bench > "$PW"; chmod 600 "$PW"
# archive.sh REPO LOG %p: wal-push, then "<microseconds> <exit status> <end ns> <path>" to LOG.
# Times come from bash's $EPOCHREALTIME, not two forks of date: under pgbench each fork cost
# several ms, which the table then reported as wal-push time.
cat > "$B/archive.sh" <<EOF
#!/bin/bash
t0=\${EPOCHREALTIME/./}
$WB --repo "\$1" --password-file $PW wal-push --cluster main "\$3"
rc=\$?
t1=\${EPOCHREALTIME/./}
echo "\$(( t1 - t0 )) \$rc \${t1}000 \$3" >> "\$2"
exit \$rc
EOF
chmod 755 "$B/archive.sh" "$B"
chown -R postgres: "$B"

# new_cluster DIR SOCKDIR ARCHIVE_COMMAND: initdb + start, unix socket only.
new_cluster() {
  local d=$1 sock=$2
  mkdir -p "$sock"; chown postgres: "$sock"
  pg "$PGBIN/initdb" -D "$d" -A trust -U postgres --no-sync >/dev/null
  cat >> "$d/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$sock'
wal_level = replica
archive_mode = on
archive_command = '$3'
synchronous_commit = off
EOF
  CLUSTERS+=("$d")
  pg "$PGBIN/pg_ctl" -D "$d" -l "$d.log" -w start >/dev/null
  "$PGBIN/createdb" -h "$sock" -U postgres app
}

# stats FILE: median, p99 (nearest rank), max and count of the first column (microseconds) -> ms.
stats() {
  python3 - "$1" <<'PY'
import math, sys
v = sorted(int(l.split()[0]) / 1000 for l in open(sys.argv[1]) if l.strip())
if not v: print("n/a n/a n/a 0"); sys.exit()
rank = lambda p: v[max(0, math.ceil(p / 100 * len(v)) - 1)]
print(f"{rank(50):.0f} {rank(99):.0f} {v[-1]:.0f} {len(v)}")
PY
}

# ================= A. WAL archiving =================
part_wal() {
  local D="$B/wal" sock="$B/wal/sock"
  mkdir -p "$D"; chown postgres: "$D"
  local repo="$D/repo"
  pg "$WB" --repo "$repo" --password-file "$PW" init >/dev/null
  log "A: initdb + pgbench -i -s $WAL_SCALE"
  new_cluster "$D/data" "$sock" true
  "$PGBIN/pgbench" -h "$sock" -U postgres -i -s "$WAL_SCALE" -q app 2>/dev/null
  declare -gA R=()

  # measure LABEL ARCHIVE_COMMAND: one pgbench run with that archive_command, then until the
  # archiver has caught up (the segment in use when pgbench ended included). Results in R[LABEL.*].
  measure() {
    local l=$1 cmd=$2 wlog="$D/wal-push.$1.log"
    pg touch "$wlog"
    sql "$sock" "ALTER SYSTEM SET archive_command = '${cmd//@LOG@/$wlog}'" >/dev/null
    sql "$sock" "SELECT pg_reload_conf()" >/dev/null
    reloaded() { [[ "$(sql "$sock" "SHOW archive_command")" == "${cmd//@LOG@/$wlog}" ]]; }
    wait_for 10 "archive_command reload" reloaded
    sql "$sock" "CHECKPOINT" >/dev/null
    local repo0 fail0 lsn0 lsn1 run0 run1 sampler drain0
    repo0=$(size "$repo")
    fail0=$(sql "$sock" "SELECT failed_count FROM pg_stat_archiver")
    lsn0=$(sql "$sock" "SELECT pg_current_wal_lsn()")
    rm -f "$D/ready.$l"
    (while :; do ready_count "$D/data" >> "$D/ready.$l"; sleep 0.5; done) &
    sampler=$!; BGPIDS+=("$sampler")
    log "A: pgbench -c 4 -j 2 -T $PGBENCH_SECS ($l)"
    run0=$(now)
    "$PGBIN/pgbench" -h "$sock" -U postgres -c 4 -j 2 -T "$PGBENCH_SECS" app > "$D/pgbench.$l" 2>&1 \
      || { cat "$D/pgbench.$l" >&2; die "pgbench failed"; }
    run1=$(now)
    lsn1=$(sql "$sock" "SELECT pg_current_wal_lsn()")
    kill "$sampler"; wait "$sampler" 2>/dev/null || true
    R[$l.ready_end]=$(ready_count "$D/data")
    drain0=$(now)
    wait_for 1800 "the archiver to catch up" no_ready "$D/data"
    R[$l.drain]=$(secs "$drain0" "$(now)")
    local seg; seg=$(sql "$sock" "SELECT pg_walfile_name('$lsn1')")
    sql "$sock" "SELECT pg_switch_wal()" >/dev/null
    [[ "$cmd" == true ]] || wait_for 120 "segment $seg to be archived" test -e "$repo/wal/main/$seg"
    wait_for 120 "the archiver to catch up" no_ready "$D/data"
    R[$l.tps]=$(awk '/^tps = / {printf "%.0f", $3; exit}' "$D/pgbench.$l")
    R[$l.maxready]=$(sort -n "$D/ready.$l" | tail -1)
    R[$l.fails]=$(( $(sql "$sock" "SELECT failed_count FROM pg_stat_archiver") - fail0 ))
    R[$l.secs]=$(secs "$run0" "$run1")
    R[$l.wal]=$(sql "$sock" "SELECT pg_wal_lsn_diff('$lsn1', '$lsn0')::bigint")
    R[$l.growth]=$(( $(size "$repo") - repo0 ))
    # Segments only (24 hex digits), successful pushes; "during" = those that ended in the run.
    awk '$2 == 0 { n = split($4, a, "/"); if (length(a[n]) == 24 && a[n] !~ /[^0-9A-F]/) print }' \
      "$wlog" > "$D/segments.$l"
    R[$l.during]=$(awk -v a="$run0" -v b="$run1" '$3 >= a && $3 <= b' "$D/segments.$l" | wc -l)
    R[$l.total]=$(wc -l < "$D/segments.$l")
    read -r "R[$l.p50]" "R[$l.p99]" "R[$l.max]" _ < <(stats "$D/segments.$l")
  }

  local wrap="$B/archive.sh $repo @LOG@ %p"
  runs() { [[ " $RUNS " == *" $1 "* ]]; }
  measure base true
  runs wb && measure wb "$wrap"
  # The same with the key cached in postgres's kernel keyring (`wayback key unlock`): no KDF.
  if runs wbk; then
    pg "$WB" --repo "$repo" --password-file "$PW" key unlock --timeout $((PGBENCH_SECS + 1800)) >/dev/null
    UNLOCKED="$repo"
    measure wbk "$wrap"
    pg "$WB" --repo "$repo" key lock >/dev/null 2>&1 || true
    UNLOCKED=""
  fi
  # Through a running agent (as root, key unlocked once at its start): wal-push hands the open
  # segment to it over <repo>/wal-push.sock; no KDF and no repository open per segment.
  # Its log (RUST_LOG=wayback::wal=debug adds each push's phase times) is $B/wal/agent.log.
  if runs wba; then
    printf 'repo = "%s"\n\n[[source]]\nname = "main"\ntype = "postgres-wal"\ncluster = "main"\n' "$repo" > "$D/agent.toml"
    # In its own session, as a service manager runs it: with the kernel's autogroup scheduling
    # a session is one CPU share, and sharing this script's session would make the agent
    # compete inside pgbench's share instead of beside the database's.
    setsid "$WB" --password-file "$PW" -v agent --config "$D/agent.toml" 2> "$D/agent.log" &
    local agent=$!
    BGPIDS+=("$agent")
    wait_for 30 "the agent's wal-push socket" test -S "$repo/wal-push.sock"
    measure wba "$wrap"
    kill "$agent"; wait "$agent" 2>/dev/null || true
    check_owner "$repo" "pushes through a root agent"
  fi
  local status; status=$(pg "$WB" --repo "$repo" --password-file "$PW" wal status 2>&1 || true)
  log "A: wal status: $status"

  local l row
  per_s() { awk -v a="$1" -v s="$2" 'BEGIN{printf "%.2f", a / s}'; }
  echo
  echo "### WAL archiving: pgbench -c 4 -j 2 -T $PGBENCH_SECS, scale $WAL_SCALE, synchronous_commit=off"
  echo
  local cols="" hdr="| measure | archive_command='true' |" sep="| --- | --- |"
  declare -A title=([wb]="wayback wal-push" [wbk]="wal-push, key cached (\`key unlock\`)" [wba]="wal-push through the agent")
  for l in wb wbk wba; do runs "$l" && { cols+=" $l"; hdr+=" ${title[$l]} |"; sep+=" --- |"; }; done
  echo "$hdr target |"
  echo "$sep --- |"
  row="| wal-push wall time per 16 MiB segment, median |"
  for l in base $cols; do [[ $l == base ]] && row+=" - |" || row+=" ${R[$l.p50]} ms |"; done; echo "$row < 100 ms |"
  row="| wal-push p99 / max |"
  for l in base $cols; do [[ $l == base ]] && row+=" - |" || row+=" ${R[$l.p99]} / ${R[$l.max]} ms |"; done; echo "$row |"
  row="| segments archived during the run |"
  for l in base $cols; do [[ $l == base ]] && row+=" - |" || row+=" ${R[$l.during]} ($(per_s "${R[$l.during]}" "${R[$l.secs]}")/s) |"; done; echo "$row |"
  row="| WAL generated during the run |"
  for l in base $cols; do row+=" $(mb "${R[$l.wal]}") ($(per_s "$(awk -v a="${R[$l.wal]}" 'BEGIN{print a / 16777216}')" "${R[$l.secs]}") segments/s) |"; done; echo "$row |"
  row="| most .ready files seen (every 0.5 s) |"
  for l in base $cols; do row+=" ${R[$l.maxready]} |"; done; echo "$row small, not growing |"
  row="| archiver lag when pgbench ended |"
  for l in base $cols; do row+=" ${R[$l.ready_end]} .ready, caught up in ${R[$l.drain]} s |"; done; echo "$row 0-1 .ready |"
  row="| failed archive_command calls |"
  for l in base $cols; do row+=" ${R[$l.fails]} |"; done; echo "$row 0 |"
  row="| pgbench tps |"
  for l in base $cols; do row+=" ${R[$l.tps]} ($(ratio "${R[$l.tps]}" "${R[base.tps]}")x) |"; done; echo "$row ~1x |"
  row="| repository growth / WAL archived |"
  for l in base $cols; do
    [[ $l == base ]] && { row+=" - |"; continue; }
    row+=" $(mb "${R[$l.growth]}") / $(mb $(( ${R[$l.total]} * 16777216 ))) ($(awk -v a="${R[$l.growth]}" -v b=$(( ${R[$l.total]} * 16777216 )) 'BEGIN{if (b > 0) printf "%.0f", 100 * a / b; else print "n/a"}')%) |"
  done; echo "$row |"
  echo
  echo "wal status: $status"
  pg "$PGBIN/pg_ctl" -D "$D/data" -m fast -w stop >/dev/null
  [[ "${KEEP:-0}" == 1 ]] || rm -rf "$D/data" "$repo"
}

# ================= B. pg-at, pitr, cp -a =================
PITR_HEADER=0
part_pitr() {
  local scale=$1 idx=$2
  local D="$B/s$scale" sock="$B/s$scale/sock"
  mkdir -p "$D"; chown postgres: "$D"
  local repo="$D/repo" port=$((55400 + 2 * idx)) port2=$((55401 + 2 * idx))
  pg "$WB" --repo "$repo" --password-file "$PW" init >/dev/null
  pg touch "$D/wal-push.log"
  log "B[$scale]: initdb + pgbench -i -s $scale"
  new_cluster "$D/data" "$sock" "$B/archive.sh $repo $D/wal-push.log %p"
  "$PGBIN/pgbench" -h "$sock" -U postgres -i -s "$scale" -q app 2>/dev/null
  sql "$sock" "CREATE TABLE marker(id int)"
  log "B[$scale]: base backup into wayback"
  local t0 t1 bb_s
  t0=$(now)
  pg "$WB" --repo "$repo" --password-file "$PW" backup \
    --basebackup "$PGBIN/pg_basebackup -h $sock -U postgres -D - -Ft -X none -c fast" \
    --source pgdata --cluster main >"$D/backup.out" 2>&1 || { cat "$D/backup.out" >&2; die "base backup failed"; }
  bb_s=$(secs "$t0" "$(now)")
  log "B[$scale]: writes, T, more writes"
  if (( WRITE_SECS > 0 )); then
    "$PGBIN/pgbench" -h "$sock" -U postgres -c 2 -T "$WRITE_SECS" app >"$D/pgbench.out" 2>&1 \
      || { cat "$D/pgbench.out" >&2; die "pgbench failed"; }
  fi
  sql "$sock" "INSERT INTO marker VALUES (1)"
  sleep 1.1
  local T; T=$(sql "$sock" "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
  sleep 1.1
  sql "$sock" "INSERT INTO marker VALUES (2)"
  local i seg
  for i in 1 2; do
    sql "$sock" "CREATE TABLE IF NOT EXISTS filler(x int); INSERT INTO filler VALUES ($i)"
    seg=$(sql "$sock" "SELECT pg_walfile_name(pg_current_wal_lsn())")
    sql "$sock" "SELECT pg_switch_wal()" >/dev/null
    wait_for 300 "segment $seg to be archived" test -e "$repo/wal/main/$seg"
  done
  pg "$PGBIN/pg_ctl" -D "$D/data" -m fast -w stop >/dev/null
  local data_bytes data_wal; data_bytes=$(du -sb "$D/data" | cut -f1)
  data_wal=$(du -sb "$D/data/pg_wal" | cut -f1)
  log "B[$scale]: T=$T, data directory $(mb "$data_bytes"), repository $(mb "$(size "$repo")")"

  # --- 1. pg-at: start to the first query answering as of T ---
  local S="$D/pgat" out="$D/pgat.out" pid v ready_t="" first_t="" now_t
  drop_caches
  log "B[$scale]: pg-at"
  CLUSTERS+=("$S/data")
  t0=$(now)
  "$WB" --repo "$repo" --password-file "$PW" pg-at --source pgdata --to "$T" --scratch "$S" --port "$port" \
    >"$out" 2>"$D/pgat.err" &
  pid=$!; PGATS+=("$pid")
  while [[ -z "$first_t" || -z "$ready_t" ]]; do
    now_t=$(now)
    [[ -z "$ready_t" ]] && grep -q '^connect:' "$out" && ready_t=$now_t
    if [[ -z "$first_t" ]]; then
      v=$(sql "$S/sock" "SELECT count(*) FROM marker" "$port" 2>/dev/null || true)
      [[ "$v" == 1 ]] && first_t=$(now)
    fi
    kill -0 "$pid" 2>/dev/null || { cat "$out" "$D/pgat.err" >&2; die "pg-at exited early"; }
    (( (now_t - t0) / 1000000000 < 1800 )) || die "pg-at: no answer after 30 min"
    [[ -n "$first_t" && -n "$ready_t" ]] || sleep 0.05
  done
  v=$(sql "$S/sock" "SELECT count(*) FROM marker" "$port")
  [[ "$v" == 1 ]] || die "pg-at at T sees $v marker rows, expected 1"
  local pgat_first pgat_ready scratch_bytes scratch_wal scratch_cache
  pgat_first=$(secs "$t0" "$first_t"); pgat_ready=$(secs "$t0" "$ready_t")
  # Allocated bytes: the copy-on-write delta and cache files are sparse.
  scratch_bytes=$(( $(du -s -B1 "$S/upper" | cut -f1) + $(du -s -B1 "$S/cow-delta" 2>/dev/null | cut -f1 || echo 0) ))
  scratch_wal=$(du -s -B1 "$S/upper/pg_wal" 2>/dev/null | cut -f1 || echo 0)
  scratch_cache=$(du -s -B1 "$S/cow-cache" 2>/dev/null | cut -f1 || echo 0)
  log "B[$scale]: pg-at: $(head -1 "$out")"
  cp "$S/postgres.log" "$D/pgat-postgres.log" 2>/dev/null || true
  t1=$(now)
  "$WB" pg-at --stop --scratch "$S" >"$D/pgat-stop.out" 2>&1 || { cat "$D/pgat-stop.out" >&2; die "pg-at --stop failed"; }
  local rc=0; wait "$pid" || rc=$?
  local stop_s clean; stop_s=$(secs "$t1" "$(now)")
  clean="exit $rc"
  [[ -e "$S" ]] && clean+=", scratch left"
  (( $(mounts_under "$S") == 0 )) || clean+=", mounts left"
  [[ "$clean" == "exit 0" ]] && clean="clean" || echo "bench-pg: pg-at did not stop cleanly: $clean" >&2
  check_owner "$repo" "pg-at (run as root)"

  # --- 2. pitr: restore + recovery to the first query ---
  local N="$D/pitr" pitr_copy pitr_first pitr_promoted="" promoted=""
  drop_caches
  log "B[$scale]: pitr"
  t0=$(now)
  "$WB" --repo "$repo" --password-file "$PW" pitr --source pgdata --to "$T" --target "$N" >"$D/pitr.out" 2>&1 \
    || { cat "$D/pitr.out" >&2; die "pitr failed"; }
  t1=$(now); pitr_copy=$(secs "$t0" "$t1")
  local notowned; notowned=$(find "$N" -not -user postgres -printf '%p (%u:%g) ' | head -c 300)
  [[ -z "$notowned" ]] || log "B[$scale]: pitr restored, not owned by postgres: $notowned; chown -R (timed)"
  chown -R postgres: "$N"
  mkdir -p "$D/sock2"; chown postgres: "$D/sock2"
  printf "unix_socket_directories = '%s'\nport = %s\nlisten_addresses = ''\narchive_mode = off\n" \
    "$D/sock2" "$port2" >> "$N/postgresql.auto.conf"
  CLUSTERS+=("$N")
  pg "$PGBIN/pg_ctl" -D "$N" -l "$D/pitr.log" -W start >/dev/null
  local started; started=$(now)
  first_t=""
  while [[ -z "$first_t" || -z "$promoted" ]]; do
    now_t=$(now)
    if [[ -z "$first_t" ]]; then
      v=$(sql "$D/sock2" "SELECT count(*) FROM marker" "$port2" 2>/dev/null || true)
      [[ "$v" == 1 ]] && first_t=$(now)
    fi
    if [[ -z "$promoted" ]]; then
      v=$(sql "$D/sock2" "SELECT pg_is_in_recovery()" "$port2" 2>/dev/null || true)
      [[ "$v" == f ]] && promoted=$(now)
    fi
    [[ -f "$N/postmaster.pid" ]] || (( (now_t - started) / 1000000000 < 10 )) \
      || { tail -20 "$D/pitr.log" >&2; die "recovered server is not running"; }
    (( (now_t - t0) / 1000000000 < 3600 )) || die "pitr: no answer after 60 min"
    [[ -n "$first_t" && -n "$promoted" ]] || sleep 0.05
  done
  v=$(sql "$D/sock2" "SELECT count(*) FROM marker" "$port2")
  [[ "$v" == 1 ]] || die "pitr to T sees $v marker rows, expected 1"
  pitr_first=$(secs "$t0" "$first_t"); pitr_promoted=$(secs "$t0" "$promoted")
  pg "$PGBIN/pg_ctl" -D "$N" -m fast -w stop >/dev/null
  check_owner "$repo" "pitr (run as root) and wal-fetch"

  # --- 3. cp -a of the original data directory ---
  drop_caches
  log "B[$scale]: cp -a"
  t0=$(now)
  cp -a "$D/data" "$D/cpa"
  local cp_s; cp_s=$(secs "$t0" "$(now)")

  if (( PITR_HEADER == 0 )); then
    PITR_HEADER=1
    echo
    echo "### Point in time: pg-at vs pitr vs cp -a (page cache dropped before each; \`pgbench -c 2 -T $WRITE_SECS\` between base backup and T)"
    echo
    echo "| pgbench scale | data dir | pg-at: first query | pg-at scratch written (of it restored WAL) + decrypted-chunk cache | pitr: restore | pitr: first query | cp -a | pitr restore / cp -a (≤ 1.5) | pitr first query / pg-at first query (≥ 5 at the largest) |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  fi
  echo "| $scale | $(mb "$data_bytes") ($(mb $((data_bytes - data_wal))) without pg_wal) | $pgat_first s | $(mb "$scratch_bytes") ($(mb "$scratch_wal")) + $(mb "$scratch_cache") | $pitr_copy s | $pitr_first s | $cp_s s | $(ratio "$pitr_copy" "$cp_s") | $(ratio "$pitr_first" "$pgat_first") |"
  NOTES+=("scale $scale: base backup $bb_s s, repository $(mb "$(size "$repo")"); pg-at printed connect: after $pgat_ready s, stop $stop_s s ($clean); pitr server promoted after $pitr_promoted s")
  [[ "${KEEP:-0}" == 1 ]] || rm -rf "$N" "$D/cpa" "$D/data" "$repo"
}

[[ "$ONLY" == pitr ]] || part_wal
if [[ "$ONLY" != wal ]]; then
  NOTES=()
  idx=0
  for s in $SIZES; do part_pitr "$s" "$idx"; idx=$((idx + 1)); done
  echo
  for n in "${NOTES[@]}"; do echo "- $n"; done
fi
log "done"
