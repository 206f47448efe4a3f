#!/usr/bin/env bash
# The project's test command: set up (or reuse) the environment, then run the Rust and Python tests,
# then (without arguments) the wheel smoke test, the docs build and a short fuzz pass.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${FERROGEN_VENV:-$HOME/.cache/ferrogen-ci/venv}"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
echo "== cargo test" >&2
cargo test --quiet
echo "== cargo fmt --check" >&2
cargo fmt --check
echo "== cargo clippy -D warnings" >&2
cargo clippy --quiet --all-targets --features python -- -D warnings
echo "== stubtest: _core.pyi against the built extension" >&2
"$VENV/bin/python" -m mypy.stubtest ferrogen._core --mypy-config-file "$ROOT/scripts/mypy-package.ini"
echo "== mypy over the ferrogen package" >&2
(cd "$ROOT/python" && "$VENV/bin/python" -m mypy --config-file "$ROOT/scripts/mypy-package.ini" -p ferrogen)
echo "== pytest" >&2
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
# The full run (no pytest arguments, as CI runs it) also checks the packaging and the docs.
if [ $# -eq 0 ]; then
  echo "== wheel smoke test" >&2
  "$ROOT/scripts/wheel_smoke.sh"     # maturin build --release reuses setup's release build
  echo "== docs" >&2
  "$ROOT/scripts/build_docs.sh"
  echo "== fuzz: a short bounded pass (RELIABILITY.md has the long runs)" >&2
  FUZZ_BIN="${FERROGEN_CARGO_ROOT:-$HOME/.cache/ferrogen-ci/cargo}/bin"
  if ! command -v cargo-fuzz >/dev/null 2>&1 && [ ! -x "$FUZZ_BIN/cargo-fuzz" ]; then
    cargo install -q --locked cargo-fuzz --root "$(dirname "$FUZZ_BIN")"
  fi
  PATH="$FUZZ_BIN:$PATH" RUNS="${FERROGEN_CI_FUZZ_RUNS:-20000}" "$ROOT/scripts/fuzz.sh"
fi
