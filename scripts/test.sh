#!/usr/bin/env bash
# The project's test command: set up (or reuse) the environment, then run the Rust and Python tests.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${FERROGEN_VENV:-$HOME/.cache/ferrogen-ci/venv}"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
echo "== cargo test" >&2
cargo test --quiet
echo "== pytest" >&2
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
