#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for a fixed number of executions and prints the totals.
#
#   scripts/fuzz.sh                 # 1,700,000 executions per target (about 10^7 in all)
#   RUNS=20000 scripts/fuzz.sh      # a short bounded pass (seconds per target)
#   TARGETS="beam" scripts/fuzz.sh  # some targets only
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain; without a
# nightly, RUSTC_BOOTSTRAP=1 lets stable build libFuzzer's sanitizer flags.
# Known crash inputs (fuzz/regressions/<target>/) are replayed first; a crash leaves
# its input in fuzz/artifacts/<target>/ and makes the script fail.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
RUNS="${RUNS:-1700000}"
TARGETS="${TARGETS:-pipeline beam constraints config assisted constructors}"
MAX_LEN="${MAX_LEN:-4096}"
TOOLCHAIN=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  TOOLCHAIN=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
cargo "${TOOLCHAIN[@]}" fuzz build -O
BIN="target/x86_64-unknown-linux-gnu/release"
total=0
for t in $TARGETS; do
  mkdir -p "corpus/$t" "artifacts/$t"
  if [ -d "regressions/$t" ]; then
    "$BIN/$t" -runs=0 "regressions/$t" >/dev/null 2>&1 || { echo "$t: a regression input crashes again"; exit 1; }
  fi
  start=$(date +%s)
  log="artifacts/$t/last-run.log"
  if ! "$BIN/$t" "corpus/$t" -runs="$RUNS" -max_len="$MAX_LEN" -seed=1 -print_final_stats=1 \
       -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
    echo "$t: CRASH, see $log"; grep -m3 -E 'panicked|SUMMARY' "$log" || true; exit 1
  fi
  n=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
  total=$((total + n))
  printf '%-12s %12d executions  %4ds  0 crashes\n' "$t" "$n" "$(( $(date +%s) - start ))"
done
printf '%-12s %12d executions\n' total "$total"
