#!/usr/bin/env bash
# The test command: set up a fresh machine, then format check, lints and the whole test suite
# (unit, property and integration tests; integration tests mount real FUSE filesystems and run
# real PostgreSQL). Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --s3
export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast
