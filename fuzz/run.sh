#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30) on the kept corpus
# under fuzz/corpus/, with libFuzzer (cargo-fuzz, installed when missing;
# stable Rust: --sanitizer none). New inputs go to a scratch directory, so
# the kept corpus changes only when someone adds to it; a crash stops the
# run, with the input under fuzz/artifacts/TARGET/ and the command that
# replays it.
#
#   fuzz/run.sh            # 30 s each: what CI runs, with 20
#   fuzz/run.sh 3600       # an hour each
#   fuzz/run.sh 600 config # one target
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(config proxy_header sched_trace ipvsadm_rules keepalived_conf ldirectord_cf admin_body admin_request check_answers client_hello quic_initial sync_message)
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
cargo fuzz build --sanitizer none
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t"
    echo "== fuzz $t: ${secs}s"
    if ! cargo fuzz run --sanitizer none "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$scratch/$t.log" 2>&1; then
        tail -n 60 "$scratch/$t.log" >&2
        echo "fuzz/run.sh: $t found a failure: see fuzz/artifacts/$t/" >&2
        exit 1
    fi
    grep -E "^stat::(number_of_executed_units|peak_rss_mb)|^Done" "$scratch/$t.log" || true
    echo "   corpus: $(ls "fuzz/corpus/$t" | wc -l) kept, $(ls "$scratch/$t" | wc -l) new this run"
done
