#!/usr/bin/env bash
# The unattended soak (issue 14): a root agent on a postgres-owned repository runs short
# schedules for $DUR seconds (default 1800) while a real PostgreSQL 15 under pgbench archives
# WAL through it and the mount stays open and is read:
#   files  (paths)      every 5s, drill every 20s, keep last 10  (a directory changed every 2 s)
#   dump   (command)    pg_dump -Fc every 15s, drill every 30s, keep last 10
#   base   (basebackup) pg_basebackup every 5m, drill (PostgreSQL recovery + query) every 10m
#   main   (postgres-wal) archive_command = wayback wal-push (through the agent), archive_timeout 10s
#   check every 60s reading 1/10 of the packs, prune every 2m with a 30 s grace.
# Every 60 s it records the agent's and the mount's RSS and reads through the mount (ls -lR of
# the newest snapshot, cat of the newest dump, the WAL listing). At the end: job, drill, check
# and prune counts, failures (must be 0), status, check --read-data, and a restore of every
# snapshot. Usage: sudo scripts/soak.sh [DUR_SECONDS]   (needs root, PostgreSQL 15, FUSE)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-${DUR:-1800}}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
WB=${WB:-$PWD/target/release/wayback}
[[ -x "$WB" ]] || cargo build --release --quiet
[[ $(id -u) -eq 0 ]] || { echo "soak: run as root (a root agent on a postgres-owned repository)" >&2; exit 2; }

B=$(mktemp -d /var/tmp/wayback-soak.XXXXXX)
chmod 755 "$B"
mkdir -p "$B/bin"; cp "$WB" "$B/bin/wayback"; WB="$B/bin/wayback"
PW="$B/password"; echo soak > "$PW"; chmod 600 "$PW"; chown postgres: "$PW"
REPO="$B/repo"; MNT="$B/mnt"; PGD="$B/pgdata"; SOCK="$B/sock"; SRC="$B/src"
mkdir -p "$REPO" "$MNT" "$SOCK" "$SRC" "$PGD"; chown postgres: "$REPO" "$SOCK" "$PGD" ; touch "$PGD.log"; chown postgres: "$PGD.log"; chmod 700 "$PGD"
export WAYBACK_CACHE_DIR="$B/cache"
log() { printf '%s soak: %s\n' "$(date -u +%H:%M:%S)" "$*"; }
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
  [[ -f "$PGD/postmaster.pid" ]] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGD" -m immediate stop >/dev/null 2>&1
  [[ -n "${KEEP:-}" ]] || rm -rf "$B"
}
trap cleanup EXIT
rss() { awk '/VmRSS/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

runuser -u postgres -- "$WB" --repo "$REPO" --password-file "$PW" init >/dev/null
for i in $(seq 1 300); do head -c $((RANDOM * 10)) /dev/urandom > "$SRC/f$i"; done

# PostgreSQL: WAL through the agent's socket (wal-push finds it beside the repository).
runuser -u postgres -- "$PGBIN/initdb" -D "$PGD" -A trust -U postgres --no-sync >/dev/null
cat >> "$PGD/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$SOCK'
wal_level = replica
archive_mode = on
archive_timeout = 10
archive_command = '$WB --repo $REPO wal-push --cluster main %p'
EOF
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGD" -l "$PGD.log" -w start >/dev/null
"$PGBIN/createdb" -h "$SOCK" -U postgres app
"$PGBIN/pgbench" -h "$SOCK" -U postgres -i -s 5 -q app 2>/dev/null

cat > "$B/agent.toml" <<EOF
repo = "$REPO"
password_file = "$PW"
check = { every = "60s", read_data_subset = "1/10" }
prune_every = "2m"
prune_grace = "30s"
wal_late = "2m"

[[source]]
name = "files"
type = "paths"
paths = ["$SRC"]
every = "5s"
drill = "20s"
keep = { last = 10 }

[[source]]
name = "dump"
type = "command"
command = "runuser -u postgres -- $PGBIN/pg_dump -h $SOCK -Fc app"
file = "app.dump"
every = "15s"
drill = "30s"
keep = { last = 10 }

[[source]]
name = "base"
type = "basebackup"
command = "runuser -u postgres -- $PGBIN/pg_basebackup -h $SOCK -U postgres -D - -Ft -X none -c fast"
cluster = "main"
every = "5m"
drill = "10m"
drill_query = "SELECT count(*) > 0 FROM pgbench_accounts"
drill_expect = "t"
drill_database = "app"
keep = { last = 3 }

[[source]]
name = "main"
type = "postgres-wal"
cluster = "main"
EOF
RUST_LOG=info "$WB" agent --config "$B/agent.toml" 2> "$B/agent.log" &
AGENT=$!; PIDS+=("$AGENT")
for _ in $(seq 1 100); do [[ -S "$REPO/wal-push.sock" ]] && break; sleep 0.2; done
kill -0 "$AGENT" 2>/dev/null || { tail -5 "$B/agent.log"; log "the agent did not start"; exit 1; }
"$WB" --repo "$REPO" --password-file "$PW" mount "$MNT" --daemon --log-file "$B/mount.log"
MOUNT=$(pgrep -n -f "mount $MNT" || true)
"$PGBIN/pgbench" -h "$SOCK" -U postgres -c 2 -j 1 -R 50 -T "$DUR" app > "$B/pgbench.log" 2>&1 &
PIDS+=("$!")
sleep 20
A0=$(rss "$AGENT"); M0=$(rss "$MOUNT")
log "start: agent RSS $A0 kB, mount RSS $M0 kB, ${DUR}s"
END=$((SECONDS + DUR)); N=0; READS=0; READ_FAIL=0
while ((SECONDS < END)); do
  N=$((N + 1))
  echo x >> "$SRC/f$((RANDOM % 300 + 1))"
  if ((N % 30 == 0)); then
    # Reads through the mount: the newest snapshot's tree, the newest dump, the WAL listing.
    if ls -lR "$MNT/at/latest/files" > /dev/null && cat "$MNT/at/latest/dump/app.dump" > /dev/null \
      && ls "$MNT/wal/main" > /dev/null; then READS=$((READS + 1)); else READ_FAIL=$((READ_FAIL + 1)); fi
    log "t=${SECONDS}s agent RSS $(rss "$AGENT") kB, mount RSS $(rss "$MOUNT") kB"
  fi
  sleep 2
done
A1=$(rss "$AGENT"); M1=$(rss "$MOUNT")
kill "$AGENT" 2>/dev/null || log "the agent had died"; wait "$AGENT" 2>/dev/null || true
fail=0
c() { grep -c "$1" "$B/agent.log" || true; }
log "end: agent RSS $A0 -> $A1 kB, mount RSS $M0 -> $M1 kB"
log "jobs done $(c 'job done'), failed $(c 'job failed'); drills passed $(c 'restore drill passed'), failed $(c 'restore drill FAILED'); checks passed $(c 'scheduled check passed'), failed $(c 'scheduled check FAILED'); prunes $(c 'prune done'); mount reads ok $READS, failed $READ_FAIL"
log "pgbench: $(grep -E '^tps' "$B/pgbench.log" | head -1)"
(( $(c 'job failed') + $(c 'FAILED') + READ_FAIL == 0 )) || fail=1
grep -E 'ERROR|panicked' "$B/agent.log" "$B/mount.log" | head -5 && fail=1 || true
"$WB" --repo "$REPO" --password-file "$PW" status || fail=1
"$WB" --repo "$REPO" --password-file "$PW" check --read-data > /dev/null || { log "check --read-data FAILED"; fail=1; }
ids=$("$WB" --repo "$REPO" --password-file "$PW" snapshots --json | python3 -c 'import json,sys; [print(s["id"]) for s in json.load(sys.stdin)]')
n=0
for id in $ids; do
  "$WB" --repo "$REPO" --password-file "$PW" restore "$id" --target "$B/r" > /dev/null || { log "restore of $id FAILED"; fail=1; }
  rm -rf "$B/r"; n=$((n + 1))
done
log "restored $n snapshots; WAL segments archived: $(ls "$MNT/wal/main" | wc -l)"
((fail == 0)) && log "PASS" || log "FAIL (logs kept in $B)"
((fail == 0)) || KEEP=1
exit $fail
