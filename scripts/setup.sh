#!/usr/bin/env bash
# Installs everything wayback needs to build and test on a fresh Debian machine (idempotent).
# Usage: scripts/setup.sh [--bench|--s3]   (--bench adds restic and borg for scripts/bench.sh;
#        --s3 builds Garage for scripts/garage-cluster.sh)
set -euo pipefail

# prometheus: promtool validates the agent's /metrics and the example alert rules in the tests.
need=(fuse3 libfuse3-dev clang libclang-dev pkg-config attr prometheus)
[[ -x /usr/lib/postgresql/15/bin/postgres ]] || need+=(postgresql-15)
command -v pg_dump >/dev/null || need+=(postgresql-client-15)
if [[ "${1:-}" == "--bench" ]]; then
  # python3-pyfuse3: `borg mount` (bench.sh mounts all three tools side by side).
  need+=(restic borgbackup python3-pyfuse3 hyperfine time)
fi

missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# /dev/fuse must exist for the mount tests.
[[ -e /dev/fuse ]] || { echo "setup: /dev/fuse is missing; FUSE mounts will fail" >&2; }
command -v cargo >/dev/null || { echo "setup: cargo not found (install Rust with rustup)" >&2; exit 1; }
# Garage (a Rust distributed object store): scripts/garage-cluster.sh starts a 3-node cluster of
# it for the S3 integration tests (tests/it/s3.rs), so scripts/test.sh passes --s3. Built from
# crates.io, ~13 minutes on 2 cores; skipped when present.
if [[ "${1:-}" == "--s3" ]] && ! command -v garage >/dev/null; then
  echo "setup: building garage 2.5.0 (about 13 minutes)" >&2
  cargo install garage --version 2.5.0 --locked --no-default-features --features bundled-libs,lmdb \
    --root /usr/local >&2
fi
