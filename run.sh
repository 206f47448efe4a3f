#!/usr/bin/env bash
# Sets up (or reuses) the environment, then generates from the embedded model:
#   ./run.sh "And God said"            # extra flags go to `ferrogen generate`
set -euo pipefail
ROOT="$(cd "$(dirname "$0")" && pwd)"
VENV="${FERROGEN_VENV:-$HOME/.cache/ferrogen-ci/venv}"
"$ROOT/scripts/setup.sh"
PROMPT="${1:-And God said}"
shift || true
exec "$VENV/bin/ferrogen" generate --prompt "$PROMPT" "$@"
