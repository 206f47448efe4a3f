#!/usr/bin/env bash
# Creates (or reuses) the venv that produces golden outputs with transformers 4.55.4, the last
# release that ships group (diverse) beam search and constrained beam search natively.
#
# torch and numpy are not downloaded again: a .pth file puts the main venv's site-packages on
# the path *after* this venv's own, so transformers 4.55.4 and the dependency versions it pins
# (tokenizers<0.22, huggingface_hub<1.0, requests, ...) win while torch comes from the main venv.
# Prints the venv's python path on success.
set -euo pipefail
MAIN="${FERROGEN_VENV:-$HOME/.cache/ferrogen-ci/venv}"
GOLD="${FERROGEN_GOLDEN_VENV:-$HOME/.cache/ferrogen-ci/golden-venv}"
VERSION="4.55.4"

if [ ! -x "$MAIN/bin/python" ]; then
  echo "golden_venv: main venv $MAIN not found; run scripts/setup.sh first" >&2
  exit 1
fi
check() {
  "$GOLD/bin/python" - "$VERSION" <<'PY'
import sys
import torch, transformers
from transformers import GenerationMixin
assert transformers.__version__ == sys.argv[1], transformers.__version__
assert hasattr(GenerationMixin, "_group_beam_search"), "no native group beam search"
PY
}
if [ -x "$GOLD/bin/python" ] && check 2>/dev/null; then
  echo "$GOLD/bin/python"
  exit 0
fi

echo "golden_venv: creating $GOLD (transformers $VERSION over the main venv's torch)" >&2
# the main venv's interpreter, so both share one Python version and its site-packages load
BASE="$("$MAIN/bin/python" -c 'import sys; print(sys._base_executable)')"
"$BASE" -m venv --clear "$GOLD"
SITE_GOLD="$("$GOLD/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
SITE_MAIN="$("$MAIN/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$SITE_MAIN" > "$SITE_GOLD/zz-ferrogen-main-venv.pth"
# pip sees torch/numpy/... through the .pth and installs only what 4.55.4 needs in other versions
"$GOLD/bin/python" -m pip install -q --disable-pip-version-check "transformers==$VERSION" >&2
check
echo "$GOLD/bin/python"
