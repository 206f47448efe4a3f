#!/usr/bin/env bash
# Creates (or reuses) the Python environment and builds ferrogen's Rust core into it.
# The venv lives outside the clone (torch from PyPI is several GB) and is reused when present.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${FERROGEN_VENV:-$HOME/.cache/ferrogen-ci/venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV" >&2
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV"
fi
# One import check decides whether anything needs installing.
if ! "$VENV/bin/python" -c "import torch, transformers, numpy, tqdm, safetensors, pytest, hypothesis, scipy, maturin, mypy" 2>/dev/null; then
  echo "setup: installing dependencies into $VENV (first run downloads torch, several minutes)" >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "torch>=2.2" "transformers>=5.0" "numpy>=1.24" "tqdm>=4.60" safetensors \
    "pytest>=7" "hypothesis>=6" "scipy>=1.10" "maturin>=1.8,<2" "mypy>=1.18"
fi
# Ray Data (the optional extra ferrogen[ray]) on its own: where PyPI has no wheel for this
# platform the install fails, setup goes on and tests/test_distributed.py skips, saying why.
if ! "$VENV/bin/python" -c "import ray.data, pyarrow" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q "ray[data]>=2.50" || echo "setup: Ray Data cannot be installed here; the Ray tests will skip" >&2
fi
# jsonschema (grammar tests validate outputs) and xgrammar (the transformers-side grammar
# processor benches/bench_grammar.py compares against); optional: tests and bench skip without.
if ! "$VENV/bin/python" -c "import jsonschema, xgrammar" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q "jsonschema>=4" "xgrammar>=0.2" || echo "setup: jsonschema/xgrammar not installed; grammar benches skip xgrammar" >&2
fi
# matplotlib (the optional extra ferrogen[plot], for `ferrogen bench --plot`), on its own as Ray:
# only new packages, nothing already installed changes (checked with pip install --dry-run)
if ! "$VENV/bin/python" -c "import matplotlib" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q "matplotlib>=3.5" || echo "setup: matplotlib cannot be installed here; the --plot test will skip" >&2
fi
# The gates in scripts/test.sh need rustfmt and clippy (rustup's default profile has both).
if ! cargo clippy --version >/dev/null 2>&1 || ! cargo fmt --version >/dev/null 2>&1; then
  rustup component add clippy rustfmt >&2
fi
cd "$ROOT"
echo "setup: building the Rust core (release)" >&2
VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" "$VENV/bin/maturin" develop --release -q >&2
