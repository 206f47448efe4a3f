#!/usr/bin/env bash
# Builds the Rust extension into this checkout's python/ferrogen/ without touching the shared venv,
# so several checkouts (git worktrees) can be developed side by side on one machine. Run the tests with
#   PYTHONPATH="$PWD/python" "$VENV/bin/python" -m pytest ...
# so that this checkout's package is imported first. A faster, non-LTO release build (same code,
# same optimisation level); scripts/setup.sh keeps the shipped profile for CI and the wheel.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_INCREMENTAL=true \
  cargo build --release --features python --lib --quiet
cp -f target/release/libferrogen_core.so python/ferrogen/_core.abi3.so
echo "dev_build: python/ferrogen/_core.abi3.so built; use PYTHONPATH=$ROOT/python" >&2
