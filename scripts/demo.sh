#!/usr/bin/env bash
# A quick demo on an embedded default: a local repository in a temp dir, no server needed.
# Backs up a generated tree twice, lists, browses through the FUSE mount (when available),
# restores and checks. Usage: scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [[ ! -x target/debug/wayback ]]; then
  echo "demo: building wayback; the first build compiles RocksDB (librocksdb-sys, C++), about 15 minutes" >&2
  echo "demo: on 2 cores; later builds take seconds to minutes" >&2
fi
cargo build --quiet --bin wayback
WB="$PWD/target/debug/wayback"
work=$(mktemp -d /tmp/wayback-demo.XXXXXX)
mnt="$work/mnt"
cleanup() { "$WB" umount "$mnt" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
export WAYBACK_REPO="$work/repo" WAYBACK_PASSWORD="demo passphrase"
echo "demo: generating $work/etc (200 small files, a 20 MB blob, a symlink)"
mkdir -p "$work/etc/nginx/sites" "$work/etc/app"
for i in $(seq 1 200); do echo "server $i { listen $((8000 + i)); }" > "$work/etc/nginx/sites/site$i.conf"; done
head -c 20000000 /dev/urandom > "$work/etc/app/blob.bin"
ln -s ../app/blob.bin "$work/etc/nginx/blob-link"
# Each command is shown once, as `+ command`, before its output.
PS4='+ '
# `| head` cuts some listings short; the writer then gets EPIPE, which is not a demo failure.
set +o pipefail
set -x
"$WB" init
"$WB" backup "$work/etc" --source etc --tag demo
echo "worker_processes 4;" > "$work/etc/nginx/nginx.conf"
"$WB" backup "$work/etc" --source etc
"$WB" backup "$work/etc" --source etc          # nothing changed: nothing added
"$WB" backup --command "seq 1 200000" --stdin-name numbers.txt --source app-db
seq 1 1000 | "$WB" backup --stdin --stdin-name numbers.txt --source piped
"$WB" snapshots
"$WB" snapshots --source etc --json | head -5
"$WB" ls "etc@$(date -u +%Y-%m-%dT%H:%M:%S):/nginx" --json | head -2
"$WB" key list
first=$("$WB" snapshots --source etc --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["short_id"])')
"$WB" diff "$first" latest --source etc --name-status || [ $? -eq 1 ]   # exit 1: they differ
"$WB" diff "$first" latest --source etc --stat --ignore-meta || [ $? -eq 1 ]
"$WB" log --source etc /nginx/nginx.conf
"$WB" ls latest --source etc -l
"$WB" cat latest:/nginx/nginx.conf --source etc
"$WB" restore latest --source etc --target "$work/restored"
diff -r "$work/etc" "$work/restored"
if [[ -e /dev/fuse ]] && command -v fusermount3 >/dev/null; then
  mkdir -p "$mnt"
  "$WB" mount "$mnt" --daemon
  ls "$mnt/at/"
  ls "$mnt/latest/etc/nginx" | head -3
  first=$(ls "$mnt/snapshots/etc" | head -1)
  test ! -e "$mnt/snapshots/etc/$first/nginx/nginx.conf"   # did not exist in the first snapshot
  diff -r "$work/etc" "$mnt/latest/etc"
  head -3 "$mnt/at/now/app-db/numbers.txt"
  ls "$mnt/history/etc/nginx/nginx.conf"
  "$WB" umount "$mnt"
fi
"$WB" check --read-data --subset 1/2
rm -rf "$WAYBACK_REPO/index" && "$WB" index rebuild
"$WB" check --read-data
"$WB" repair index && "$WB" repair packs && "$WB" repair snapshots   # nothing damaged: no change
"$WB" drill                                    # restore each source into scratch, verify every byte
"$WB" status                                   # exit 16 if a source were LATE or FAILING
"$WB" audit                                    # who restored and mounted what, when
WAYBACK_PASSWORD="offsite passphrase" "$WB" --repo "$work/offsite" init   # a second repository, its own key
WAYBACK_TO_PASSWORD="offsite passphrase" "$WB" copy --to "$work/offsite"
WAYBACK_TO_PASSWORD="offsite passphrase" "$WB" copy --to "$work/offsite" --source etc --json   # nothing new
WAYBACK_PASSWORD="offsite passphrase" "$WB" --repo "$work/offsite" check --read-data
WAYBACK_PASSWORD="offsite passphrase" "$WB" --repo "$work/offsite" restore latest --source etc --target "$work/offsite-restored"
diff -r "$work/etc" "$work/offsite-restored"
set +x
echo "demo finished: repository, backup, restore, mount, check, drill and copy all worked"
