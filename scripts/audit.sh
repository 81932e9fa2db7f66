#!/usr/bin/env bash
# Security audit of a wayback build, as root. Two parts, each printing its findings; exit 0 only
# when both report zero.
#  1. Scripted attack: a repository owned by an unprivileged user (the documented PostgreSQL
#     setup), whose owner keeps swapping every path a root writer opens (files and directories)
#     for symlinks to root-owned canaries, while root backs up, pushes WAL, reads and checks.
#     A finding is any change to a canary (content, owner, mode, a new entry in a directory).
#  2. Plaintext: file names, file contents, command output and WAL bytes with unique markers go
#     into a fresh repository; a finding is any marker found anywhere under the repository.
# Usage: scripts/audit.sh [SECONDS]   (attack duration, default 20; WAYBACK_BIN overrides the binary)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
[[ $(id -u) -eq 0 ]] || { echo "audit: run as root" >&2; exit 2; }
owner=${AUDIT_OWNER:-postgres}
id "$owner" >/dev/null 2>&1 || owner=nobody
if [[ -z "${WAYBACK_BIN:-}" ]]; then
  cargo build -q --bin wayback
  WAYBACK_BIN=$PWD/target/debug/wayback
fi
bin=$WAYBACK_BIN
work=$(mktemp -d /tmp/wayback-audit.XXXXXX)
chmod 755 "$work"
attacker=""
cleanup() { [[ -n "$attacker" ]] && kill "$attacker" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
export WAYBACK_PASSWORD=audit-pass WAYBACK_INSECURE_FAST_KDF=1 WAYBACK_CACHE_DIR=$work/cache
export TMPDIR=$work/tmp
mkdir -p "$TMPDIR"

# ---- part 1: the owner attacks a root writer ----
repo=$work/repo
"$bin" --repo "$repo" init >/dev/null
src=$work/src
mkdir -p "$src/etc"
head -c 3000000 /dev/urandom >"$src/data"
cp -a /etc/hostname /etc/passwd "$src/etc/" 2>/dev/null || true
seg=$work/000000010000000000000001
head -c 16777216 /dev/urandom >"$seg"
chown -R "$owner:" "$repo"

canary_file=$work/canary-file
canary_dir=$work/canary-dir
printf 'root-only secret\n' >"$canary_file"
chmod 600 "$canary_file"
mkdir -m 700 "$canary_dir"
canary_sum=$(sha256sum "$canary_file" | cut -d' ' -f1)

# Every path a root writer, wal-push, reader or check opens, as files or directories.
targets=(locks/writer locks tmp snapshots packs keys wal wal/main wal/main/.system index
  config wal-push.sock agent.sock)
for i in $(seq 0 15); do targets+=("packs/$(printf %02x $((i * 17)))"); done
# The attacker: runs as the owner, swapping one path at a time for a symlink and back.
cat >"$work/attack.sh" <<EOF
#!/usr/bin/env bash
cd "$repo" || exit 1
end=\$((SECONDS + $secs))
while ((SECONDS < end)); do
  for t in ${targets[*]}; do
    for victim in "$canary_file" "$canary_dir"; do
      [[ -e "\$t" || -L "\$t" ]] && mv -T "\$t" "\$t.audit-bak" 2>/dev/null
      ln -sfn "\$victim" "\$t" 2>/dev/null
      sleep 0.01
      rm -f "\$t" 2>/dev/null
      [[ -e "\$t.audit-bak" || -L "\$t.audit-bak" ]] && mv -T "\$t.audit-bak" "\$t" 2>/dev/null
    done
  done
done
EOF
chmod 755 "$work/attack.sh"
runuser -u "$owner" -- "$work/attack.sh" &
attacker=$!
ops=0 failed=0
end=$((SECONDS + secs))
while ((SECONDS < end)); do
  for cmd in "backup $src --source files" "wal-push --cluster main $seg" "snapshots --json" \
    "check" "ls latest --source files"; do
    ops=$((ops + 1))
    # shellcheck disable=SC2086
    timeout 60 "$bin" --repo "$repo" $cmd >/dev/null 2>&1 || failed=$((failed + 1))
  done
done
wait "$attacker" || true
attacker=""
findings1=0
[[ $(sha256sum "$canary_file" | cut -d' ' -f1) == "$canary_sum" ]] || { echo "FINDING: canary file content changed"; findings1=$((findings1 + 1)); }
[[ $(stat -c %u:%g:%a "$canary_file") == 0:0:600 ]] || { echo "FINDING: canary file now $(stat -c %U:%G:%a "$canary_file")"; findings1=$((findings1 + 1)); }
[[ $(stat -c %u:%g:%a "$canary_dir") == 0:0:700 ]] || { echo "FINDING: canary dir now $(stat -c %U:%G:%a "$canary_dir")"; findings1=$((findings1 + 1)); }
if [[ -n $(ls -A "$canary_dir") ]]; then
  echo "FINDING: created in the canary dir: $(ls -A "$canary_dir" | head -5 | tr '\n' ' ')"
  findings1=$((findings1 + 1))
fi
# Nothing of the owner's may appear outside the repository either.
stray=$(find "$work" -path "$repo" -prune -o -user "$owner" -print | grep -v "^$work/attack.sh$" || true)
if [[ -n "$stray" ]]; then echo "FINDING: owner's files outside the repository: $stray"; findings1=$((findings1 + 1)); fi
echo "attack: $ops root operations in ${secs}s against symlink swaps of ${#targets[@]} paths ($failed failed, as they may); findings: $findings1"

# ---- part 2: plaintext in a repository ----
repo2=$work/repo2
"$bin" --repo "$repo2" init >/dev/null
tag=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
m_name="wbcanary-name-$tag" m_content="wbcanary-content-$tag" m_cmd="wbcanary-cmd-$tag"
m_wal="wbcanary-wal-$tag" m_stdin="wbcanary-stdinname-$tag"
src2=$work/src2
mkdir -p "$src2/dir-$m_name"
{ head -c 100000 /dev/urandom; printf '%s' "$m_content"; head -c 100000 /dev/urandom; } >"$src2/dir-$m_name/$m_name.txt"
printf '%s\n' "$m_content" >"$src2/plain.txt"
"$bin" --repo "$repo2" backup "$src2" --source files >/dev/null
"$bin" --repo "$repo2" backup --command "echo $m_cmd" --stdin-name "$m_stdin" --source dump >/dev/null
wal=$work/walsrc/000000010000000000000002
mkdir -p "$(dirname "$wal")"
{ head -c 1000000 /dev/urandom; for _ in $(seq 100); do printf '%s' "$m_wal"; done; head -c 1000000 /dev/urandom; } >"$wal"
"$bin" --repo "$repo2" wal-push --cluster main "$wal" >/dev/null
findings2=0
for m in "$m_name" "$m_content" "$m_cmd" "$m_wal" "$m_stdin"; do
  hits=$(grep -r -a -l -F "$m" "$repo2" 2>/dev/null || true)
  if [[ -n "$hits" ]]; then
    echo "FINDING: plaintext ${m%%-"$tag"} in: $hits"
    findings2=$((findings2 + 1))
  fi
done
echo "plaintext: 5 markers (file and directory names, contents, command output, a stdin name, WAL bytes) searched in $(find "$repo2" -type f | wc -l) repository files; findings: $findings2"
total=$((findings1 + findings2))
echo "audit: $total findings"
((total == 0))
