#!/usr/bin/env bash
# A 3-node Garage cluster on loopback for the S3 tests and benchmarks (replication factor 3).
#
#   scripts/garage-cluster.sh start DIR   start it under DIR; prints and writes DIR/env:
#                                         GARAGE_ENDPOINT GARAGE_REGION GARAGE_BUCKET
#                                         GARAGE_KEY_ID GARAGE_SECRET (and GARAGE_ENDPOINTS,
#                                         one S3 endpoint per node)
#   scripts/garage-cluster.sh stop DIR    stop every node started under DIR
#   scripts/garage-cluster.sh kill DIR N  SIGKILL node N (1-3): the fault tests
#   scripts/garage-cluster.sh restart DIR N  start node N again with its data
#
# Ports: GARAGE_PORTS="rpc1 s3_1 admin1 rpc2 ... admin3" (9 ports) when given (the Rust test
# helper picks free ones), else 3901.. on the first free base among a few.
set -euo pipefail
cmd=${1:?usage: garage-cluster.sh start|stop|kill DIR [N]}
dir=${2:?usage: garage-cluster.sh start|stop|kill DIR [N]}
G=${GARAGE:-garage}

stop() {
  for p in "$dir"/n*/pid; do
    [[ -f $p ]] || continue
    kill "$(cat "$p")" 2>/dev/null || true
  done
  for p in "$dir"/n*/pid; do
    [[ -f $p ]] || continue
    for _ in $(seq 50); do kill -0 "$(cat "$p")" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$(cat "$p")" 2>/dev/null || true
    rm -f "$p"
  done
}

case $cmd in
stop) stop; exit 0 ;;
kill) kill -9 "$(cat "$dir/n${3:?node number}/pid")"; exit 0 ;;
restart)
  n=${3:?node number}
  RUST_LOG=${GARAGE_LOG:-warn} setsid "$G" -c "$dir/n$n/garage.toml" server \
    >>"$dir/n$n/log" 2>&1 </dev/null &
  echo $! >"$dir/n$n/pid"
  # The others retry a dead peer only slowly: introduce it again once it answers.
  for i in $(seq 100); do
    id=$("$G" -c "$dir/n$n/garage.toml" node id -q 2>/dev/null) && break
    ((i < 100)) || { echo "garage-cluster: node $n did not restart" >&2; exit 1; }
    sleep 0.1
  done
  for m in 1 2 3; do
    [[ $m == "$n" ]] || "$G" -c "$dir/n$m/garage.toml" node connect "$id" >/dev/null 2>&1 || true
  done
  exit 0 ;;
start) ;;
*) echo "usage: garage-cluster.sh start|stop|kill|restart DIR [N]" >&2; exit 2 ;;
esac

command -v "$G" >/dev/null || { echo "garage-cluster: garage is not installed (scripts/setup.sh)" >&2; exit 3; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [[ -n ${GARAGE_PORTS:-} ]]; then
  read -r -a ports <<<"$GARAGE_PORTS"
else
  ports=()
  for i in 0 1 2; do ports+=($((3901 + 10 * i)) $((3900 + 10 * i)) $((3903 + 10 * i))); done
fi
((${#ports[@]} == 9)) || { echo "garage-cluster: GARAGE_PORTS needs 9 ports" >&2; exit 2; }
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
trap 'stop' ERR

for n in 1 2 3; do
  rpc=${ports[$(((n - 1) * 3))]} s3=${ports[$(((n - 1) * 3 + 1))]} admin=${ports[$(((n - 1) * 3 + 2))]}
  mkdir -p "$dir/n$n/meta" "$dir/n$n/data"
  cat >"$dir/n$n/garage.toml" <<TOML
metadata_dir = "$dir/n$n/meta"
data_dir = "$dir/n$n/data"
db_engine = "lmdb"
replication_factor = 3
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin"
TOML
  chmod 600 "$dir/n$n/garage.toml"
  RUST_LOG=${GARAGE_LOG:-warn} setsid "$G" -c "$dir/n$n/garage.toml" server \
    >"$dir/n$n/log" 2>&1 </dev/null &
  echo $! >"$dir/n$n/pid"
done

g() { "$G" -c "$dir/n1/garage.toml" "$@"; }
# Each node answers `node id` once its RPC is up.
ids=()
for n in 1 2 3; do
  for i in $(seq 100); do
    id=$("$G" -c "$dir/n$n/garage.toml" node id -q 2>/dev/null) && break
    ((i < 100)) || { echo "garage-cluster: node $n did not start:" >&2; tail "$dir/n$n/log" >&2; exit 1; }
    sleep 0.1
  done
  ids+=("$id")
done
g node connect "${ids[1]}" >/dev/null
g node connect "${ids[2]}" >/dev/null
for id in "${ids[@]}"; do g layout assign -z dc1 -c 1G "${id%%@*}" >/dev/null; done
g layout apply --version 1 >/dev/null
key=$(g key create wayback-test)
key_id=$(awk -F': *' '/Key ID/ {print $2; exit}' <<<"$key")
secret_key=$(awk -F': *' '/Secret key/ {print $2; exit}' <<<"$key")
[[ -n $key_id && -n $secret_key ]] || { echo "garage-cluster: cannot read the key:" >&2; echo "$key" >&2; exit 1; }
# The layout takes a moment to reach every node: retry the bucket creation until it sticks.
for i in $(seq 100); do
  g bucket create wayback >/dev/null 2>&1 && break
  ((i < 100)) || { g bucket create wayback; exit 1; }
  sleep 0.2
done
g bucket allow --read --write --owner wayback --key wayback-test >/dev/null

{
  echo "GARAGE_ENDPOINT=http://127.0.0.1:${ports[1]}"
  echo "GARAGE_ENDPOINTS=http://127.0.0.1:${ports[1]},http://127.0.0.1:${ports[4]},http://127.0.0.1:${ports[7]}"
  echo "GARAGE_REGION=garage"
  echo "GARAGE_BUCKET=wayback"
  echo "GARAGE_KEY_ID=$key_id"
  echo "GARAGE_SECRET=$secret_key"
} >"$dir/env"
chmod 600 "$dir/env"
cat "$dir/env"
