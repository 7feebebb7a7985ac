#!/usr/bin/env bash
# Fuzzes the parsers of hostile input with cargo-fuzz (libFuzzer + AddressSanitizer):
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   (default 60 s each; targets: dockerfile expand
#                                            dockerignore tar)
#
# Each target starts from its committed seeds (fuzz/seeds/<target>/) and a scratch corpus
# (fuzz/corpus/<target>/, not committed). A crash stops that target, leaves the input in
# fuzz/artifacts/<target>/ and makes the script exit 1: fix it, and keep the input as a unit
# test in the module concerned. Prints executions and coverage per target at the end.
#
# Toolchain: cargo-fuzz needs nightly-only flags (-Zsanitizer). Only the stable toolchain is
# installed here, so the script sets RUSTC_BOOTSTRAP=1, which lets stable rustc accept them
# (the same compiler; libfuzzer-sys builds libFuzzer with the host C++ compiler). Installs
# cargo-fuzz when missing (`cargo install cargo-fuzz`).
set -euo pipefail

SECONDS_EACH="${1:-60}"
shift || true
TARGETS=("$@")
[ "${#TARGETS[@]}" -gt 0 ] || TARGETS=(dockerfile expand dockerignore tar)
ROOT_DIR="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT_DIR/fuzz"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz

cargo fuzz build
failed=0
summary=()
for target in "${TARGETS[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    log="$(mktemp)"
    status=0
    # -rss_limit_mb: the unpacker writes files; -max_len keeps inputs near real sizes.
    cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=1024 -max_len=65536 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
    cov=$(grep -E '^#[0-9]+' "$log" | tail -1 | grep -oE 'cov: [0-9]+' || true)
    if [ "$status" != 0 ]; then
        failed=1
        summary+=("$target: FAILED (exit $status) after ${execs:-?} runs; see fuzz/artifacts/$target/")
        tail -30 "$log" >&2
    else
        summary+=("$target: ${execs:-?} runs in ${SECONDS_EACH} s, ${cov:-cov: ?}, corpus $(ls "corpus/$target" | wc -l) inputs, no crash")
    fi
    rm -f "$log"
done
printf '%s\n' "${summary[@]}"
exit "$failed"
