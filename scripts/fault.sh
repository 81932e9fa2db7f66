#!/bin/sh
# The long crash matrix: every writer through every durability barrier (power loss, EIO,
# EIO after the change, disk full) with more data and history than CI uses
# (tests/it/fault.rs; the fault model is in src/repo/fault.rs). Prints one line per writer:
# barriers, points tried, failures (must be 0). Then the kill -9 matrix (below).
set -eu
cd "$(dirname "$0")/.."
WAYBACK_FAULT_LONG=1 cargo test --test it fault:: -- --nocapture --test-threads=2 2>&1 |
    grep -E '^fault matrix|^test |test result|panicked|failing|power loss|EIO|disk full'
# Real crashes: every writer killed with SIGKILL at 25 points of a measured run
# (tests/it/killmatrix.rs; CI uses 5).
WAYBACK_KILL_POINTS=${WAYBACK_KILL_POINTS:-25} cargo test --test it killmatrix -- --nocapture 2>&1 |
    grep -E '^kill matrix|^test |test result|panicked'
