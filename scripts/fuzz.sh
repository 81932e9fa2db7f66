#!/usr/bin/env bash
# Fuzzes every decoder of bytes from disk or a socket (fuzz/, cargo-fuzz on nightly) for
# SECONDS_PER_TARGET seconds each (default 120), then prints executions and crashes per target.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]
#   TARGETS="tree snapshot" scripts/fuzz.sh 600    # only these targets
#   FUZZ_ARGS="-fork=2 -ignore_crashes=1" scripts/fuzz.sh   # extra libFuzzer flags
#
# Not run by CI (it needs nightly and minutes per target): CI replays fuzz/corpus and
# fuzz/regressions through the same entry points instead (tests/it/fuzz_corpus.rs).
# Each target evolves its corpus in fuzz/corpus-run/<target> (git-ignored), seeded from the
# committed fuzz/corpus/<target>; crashes land in fuzz/artifacts/<target>/. A crash is fixed
# in the library, and its input copied to fuzz/regressions/<target>/ so the test replays it.
# Exit status: 0 when no target crashed.
set -uo pipefail

secs=${1:-120}
cd "$(dirname "$0")/../fuzz"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: needs the nightly toolchain (rustup toolchain install nightly)" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz || exit 2
fi

targets=${TARGETS:-$(cargo +nightly fuzz list)}
cargo +nightly fuzz build || exit 2

mkdir -p logs
rows=()
crashed=0
for t in $targets; do
    mkdir -p "corpus-run/$t" "artifacts/$t"
    before=$(find "artifacts/$t" -type f | wc -l)
    log="logs/$t.log"
    echo "== $t: ${secs}s" >&2
    # shellcheck disable=SC2086
    cargo +nightly fuzz run "$t" "corpus-run/$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
        -print_final_stats=1 ${FUZZ_ARGS:-} >"$log" 2>&1
    rc=$?
    execs=$(grep -h 'stat::number_of_executed_units' "$log" | awk '{s += $2} END {print s + 0}')
    after=$(find "artifacts/$t" -type f | wc -l)
    new=$((after - before))
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | awk '{print $2}')
    units=$(find "corpus-run/$t" -type f | wc -l)
    if [ "$new" -gt 0 ] || [ "$rc" -ne 0 ]; then
        crashed=1
    fi
    rows+=("$(printf '%-14s %12s %8s %7s %8s %4s' "$t" "$execs" "${cov:-?}" "$units" "$new" "$rc")")
done

printf '\n%-14s %12s %8s %7s %8s %4s\n' target executions coverage corpus crashes rc
for r in "${rows[@]}"; do
    echo "$r"
done
echo "(${secs}s per target; logs in fuzz/logs/, crash inputs in fuzz/artifacts/<target>/)"
exit "$crashed"
