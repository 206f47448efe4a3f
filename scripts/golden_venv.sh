#!/usr/bin/env bash
# Creates (or reuses) the venv that produces golden outputs with transformers 4.55.4, the last
# release that ships group (diverse) beam search and constrained beam search natively.
#
# torch and numpy are not downloaded again, but the main venv's site-packages is not put on the
# path either: transformers 4.55.4 imports optional packages when it finds them (kernels,
# accelerate, ...), and what the main venv gains for transformers 5.x breaks it (kernels 0.19
# needs huggingface_hub >= 1.x). So only torch, numpy and what they require (their dependency
# closure, read from the main venv's metadata) are linked into $GOLD/borrowed, which a .pth file
# puts on the path after this venv's own site-packages; transformers 4.55.4, the dependency
# versions it pins (tokenizers<0.22, huggingface_hub<1.0, ...) and pytest (the golden scripts
# import tests/conftest.py) are installed here. A venv whose check fails (an older layout, a
# main venv whose torch moved) is rebuilt. Prints the venv's python path on success.
set -euo pipefail
MAIN="${FERROGEN_VENV:-$HOME/.cache/ferrogen-ci/venv}"
GOLD="${FERROGEN_GOLDEN_VENV:-$HOME/.cache/ferrogen-ci/golden-venv}"
VERSION="4.55.4"
BORROWED_ROOTS="torch numpy"

if [ ! -x "$MAIN/bin/python" ]; then
  echo "golden_venv: main venv $MAIN not found; run scripts/setup.sh first" >&2
  exit 1
fi
check() {
  "$GOLD/bin/python" - "$VERSION" "$GOLD/borrowed" <<'PY'
import importlib.util, os, sys
import torch, transformers
from transformers import GenerationMixin, GPT2Config, GPT2LMHeadModel
assert transformers.__version__ == sys.argv[1], transformers.__version__
assert hasattr(GenerationMixin, "_group_beam_search"), "no native group beam search"
borrowed = sys.argv[2]
assert os.path.isdir(borrowed), "no borrowed packages (an older layout)"
dangling = [n for n in os.listdir(borrowed) if not os.path.exists(os.path.join(borrowed, n))]
assert not dangling, f"borrowed links that no longer resolve: {dangling}"
# importing a model runs the optional integrations (kernels, ...) that broke this venv before
model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16, n_positions=16))
model.generate(torch.tensor([[1, 2]]), max_new_tokens=2, do_sample=False, pad_token_id=0)
PY
}
if [ -x "$GOLD/bin/python" ] && check 2>/dev/null; then
  echo "$GOLD/bin/python"
  exit 0
fi

echo "golden_venv: creating $GOLD (transformers $VERSION over the main venv's $BORROWED_ROOTS)" >&2
# the main venv's interpreter, so both share one Python version and the borrowed packages load
BASE="$("$MAIN/bin/python" -c 'import sys; print(sys._base_executable)')"
"$BASE" -m venv --clear "$GOLD"
SITE_GOLD="$("$GOLD/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
mkdir -p "$GOLD/borrowed"
"$MAIN/bin/python" - "$GOLD/borrowed" $BORROWED_ROOTS <<'PY'
"""Links the files of the named distributions and of everything they require into argv[1]."""
import os, re, sys
from importlib.metadata import PackageNotFoundError, distribution
from packaging.requirements import Requirement

target, todo, seen = sys.argv[1], list(sys.argv[2:]), {}
while todo:
    name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
    if name in seen:
        continue
    try:
        seen[name] = dist = distribution(name)
    except PackageNotFoundError:
        continue  # an optional requirement the main venv does not have
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            todo.append(req.name)
for dist in seen.values():
    skip = ("..", "__pycache__")  # scripts outside site-packages; byte code of other modules
    tops = {f.parts[0] for f in dist.files or [] if f.parts[0] not in skip and not f.parts[0].endswith(".pth")}
    for top in sorted(tops):
        source, link = os.path.realpath(dist.locate_file(top)), os.path.join(target, top)
        if os.path.exists(source) and not os.path.lexists(link):
            os.symlink(source, link)
print(f"golden_venv: borrowed {', '.join(sorted(seen))}", file=sys.stderr)
PY
echo "$GOLD/borrowed" > "$SITE_GOLD/zz-ferrogen-borrowed.pth"
# pip sees the borrowed torch/numpy/... and installs only what 4.55.4 needs besides
"$GOLD/bin/python" -m pip install -q --disable-pip-version-check "transformers==$VERSION" pytest >&2
check
echo "$GOLD/bin/python"
