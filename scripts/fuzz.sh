#!/usr/bin/env bash
# Runs the fuzzers over everything a peer or a user can hand Remora:
#
#   scripts/fuzz.sh SECONDS [TARGET...]     # each target for SECONDS (default: all targets)
#
# Targets: frames (the frame decoder), messages (rkyv access to every network message),
# handshake (both ends), connection_file, ptx (PTX parser and lowering), fatbin (the fatbin
# reader with its LZ4 and Zstandard decoders). Their bodies live in the crates
# (`remora_protocol::fuzzing`, `remora_emulator::fuzzing`), so the committed corpora also run
# as ordinary tests in CI.
#
# Needs nightly Rust (installed with rustup if missing) and cargo-fuzz (installed if missing).
# Each target starts from its committed corpus and grows a working corpus in fuzz/corpus/TARGET
# (not committed). Anything that crashes, leaks past the memory limit or hangs is copied into
# the committed corpus under its libFuzzer name, so that CI replays it (and fails until it is
# fixed); the script then exits with 1. A summary table ends the run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECS="${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}"
shift
declare -A CORPUS=(
    [frames]=protocol/tests/corpus/frames
    [messages]=protocol/tests/corpus/messages
    [handshake]=protocol/tests/corpus/handshake
    [connection_file]=protocol/tests/corpus/connection_file
    [ptx]=emulator/tests/corpus/ptx
    [fatbin]=emulator/tests/corpus/fatbin
)
TARGETS=("$@")
if [[ ${#TARGETS[@]} -eq 0 ]]; then
    TARGETS=(frames messages handshake connection_file ptx fatbin)
fi
for t in "${TARGETS[@]}"; do
    [[ -n "${CORPUS[$t]:-}" ]] || { echo "fuzz.sh: unknown target '$t'" >&2; exit 2; }
done

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

cd "$ROOT/fuzz"
found=0
summary=()
for t in "${TARGETS[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log="artifacts/$t/last-run.log"
    echo "fuzz.sh: $t for ${SECS} s" >&2
    # A finding makes cargo fuzz exit non-zero; the artifacts say what it was.
    cargo +nightly fuzz run "$t" "corpus/$t" "$ROOT/${CORPUS[$t]}" -- \
        -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
        >"$log" 2>&1 || true
    execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)"
    n=0
    for a in artifacts/"$t"/crash-* artifacts/"$t"/oom-* artifacts/"$t"/timeout-*; do
        [[ -e "$a" ]] || continue
        cp "$a" "$ROOT/${CORPUS[$t]}/$(basename "$a")"
        echo "fuzz.sh: $t found $(basename "$a"); added to ${CORPUS[$t]}" >&2
        rm "$a"
        n=$((n + 1))
    done
    [[ $n -eq 0 ]] || found=1
    summary+=("$(printf '%-16s %8s s %14s executions %3d findings' "$t" "$SECS" "${execs:-?}" "$n")")
done
printf '%s\n' "${summary[@]}"
exit "$found"
