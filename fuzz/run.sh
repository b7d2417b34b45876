#!/usr/bin/env bash
# Runs every fuzz target for SECS seconds each, one after the other (never in
# parallel: the machines have 2 cores and other builds share them), and
# prints a markdown table: target | seconds | executions | exec/s | crashes.
#
#   fuzz/run.sh [SECS]          default 60
#   FUZZ_TARGETS="frame_decoder root_resolver" fuzz/run.sh 30
#
# Targets: frame_decoder, request_parser, root_resolver, upload_session
# (every one `cargo fuzz list` names).
#
# cargo-fuzz needs nightly compiler flags (-Z sanitizer, sancov passes); the
# machines have only a stable toolchain, so RUSTC_BOOTSTRAP=1 unlocks them.
# cargo-fuzz is installed if missing.
#
# Corpus: fuzz/corpus/<target> (gitignored; grows across runs), seeded from
# the committed fuzz/seeds/<target>. Crashes: fuzz/artifacts/<target>
# (gitignored). libFuzzer stops at the first crash of a run, so "crashes" is
# 0 or 1 per target per run; reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>
# (from the repository root). Logs: fuzz/target/run-logs/<target>.log.
#
# Exit status: 0 if no target crashed, 1 if one did, 2 on a setup failure.

set -euo pipefail

secs="${1:-60}"
case "$secs" in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS]" >&2
    exit 2
    ;;
esac

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(dirname "$fuzz_dir")"
cd "$repo_dir"

export RUSTC_BOOTSTRAP=1
# The fuzz crate is its own workspace and builds into fuzz/target; make sure
# an inherited CARGO_TARGET_DIR does not send it into the shared target/.
unset CARGO_TARGET_DIR

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz not found; installing it (a few minutes)..." >&2
    cargo install --locked cargo-fuzz >&2 || {
        echo "error: could not install cargo-fuzz" >&2
        exit 2
    }
fi

targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"

echo "building fuzz targets..." >&2
# shellcheck disable=SC2086 # one word per target
for t in $targets; do
    cargo fuzz build "$t" >&2 || {
        echo "error: building $t failed" >&2
        exit 2
    }
done

logs="$fuzz_dir/target/run-logs"
# root_resolver builds its fixture tree in a temp dir it cannot remove
# (it lives as long as the process); keep those under fuzz/target.
# (upload_session keeps its root in /dev/shm, or $FERRY_FUZZ_TMPDIR, and
# removes those of dead processes itself.)
export TMPDIR="$fuzz_dir/target/fuzz-tmp"
mkdir -p "$logs"

rows=()
total_crashes=0
for t in $targets; do
    corpus="$fuzz_dir/corpus/$t"
    artifacts="$fuzz_dir/artifacts/$t"
    seeds="$fuzz_dir/seeds/$t"
    mkdir -p "$corpus" "$artifacts"
    corpora=("$corpus")
    [ -d "$seeds" ] && corpora+=("$seeds")
    libfuzzer_args=(-max_total_time="$secs" -print_final_stats=1)
    [ -f "$fuzz_dir/dicts/$t.dict" ] && libfuzzer_args+=(-dict="$fuzz_dir/dicts/$t.dict")
    # upload_session runs a whole server per input, and one that hangs is a
    # finding: report it after 30 s rather than libFuzzer's default 1200 s,
    # which outlasts the run. (Its inputs take milliseconds.)
    [ "$t" = upload_session ] && libfuzzer_args+=(-timeout=30)

    rm -rf "$TMPDIR" && mkdir -p "$TMPDIR"
    before="$(find "$artifacts" -maxdepth 1 -type f | wc -l)"
    log="$logs/$t.log"
    echo "fuzzing $t for ${secs}s (log: $log)..." >&2
    start=$(date +%s.%N)
    # A crash makes cargo fuzz exit non-zero; that is a result, not a failure
    # of this script.
    cargo fuzz run "$t" "${corpora[@]}" -- "${libfuzzer_args[@]}" >"$log" 2>&1 || true
    end=$(date +%s.%N)
    after="$(find "$artifacts" -maxdepth 1 -type f | wc -l)"
    crashes=$((after - before))
    total_crashes=$((total_crashes + crashes))

    # libFuzzer's own figures: executions and exec/s from its final stats,
    # seconds from its "Done N runs in S second(s)" line (absent after a
    # crash: then the wall-clock time of the run).
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)"
    elapsed="$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)"
    if [ -z "$elapsed" ]; then
        elapsed="$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.0f", e - s }')"
    fi
    if [ -z "$execs" ]; then
        execs="?" rate="?"
        echo "warning: no final stats in $log (did the target fail to start?)" >&2
        tail -n 20 "$log" >&2
    fi
    if [ "$crashes" -gt 0 ]; then
        echo "CRASH in $t; newest artifact(s):" >&2
        ls -t "$artifacts" | head -n "$crashes" | sed "s|^|  $artifacts/|" >&2
        grep -m 1 -A 5 -E "panicked at|ERROR: (libFuzzer|AddressSanitizer)" "$log" >&2 || true
    fi
    rows+=("| $t | $elapsed | $execs | $rate | $crashes |")
done

echo "| target | seconds | executions | exec/s | crashes |"
echo "|---|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"

[ "$total_crashes" -eq 0 ] || exit 1
