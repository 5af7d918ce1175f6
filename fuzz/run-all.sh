#!/usr/bin/env bash
# Runs every fuzz target in turn for SECONDS_EACH seconds (default 240), one process, one job,
# seeded from corpus/ (see `cargo run --bin make-seeds`). Logs go to target/fuzz-logs/.
set -u
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_BUILD_JOBS=1
secs="${SECONDS_EACH:-240}"
mkdir -p target/fuzz-logs
for t in ${TARGETS:-frame xml session tlog ndjson}; do
    dict=()
    [ -f "dict/$t.dict" ] && dict=("-dict=dict/$t.dict")
    mkdir -p "corpus/$t"
    cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=8192 \
        -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" > "target/fuzz-logs/$t.log" 2>&1
    echo "$t exit=$? $(grep -E 'stat::number_of_executed_units' "target/fuzz-logs/$t.log")"
done
