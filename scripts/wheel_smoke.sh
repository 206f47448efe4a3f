#!/usr/bin/env bash
# Wheel smoke test (run by scripts/test.sh, so by CI):
#   1. `maturin build --release` makes the wheel (abi3, manylinux) in target/wheels;
#   2. a fresh venv gets it with `pip install --no-deps`; torch, transformers and numpy come
#      from the main venv through a .pth file (never installed twice);
#   3. from a directory outside the source tree, it generates with the embedded model, through
#      ferrogen.generate, enable() and a custom_generate folder, and checks that ferrogen and its
#      extension were imported from the fresh venv, with py.typed, the data files and a stub
#      that names what the wheel's extension exports.
# Usage: scripts/wheel_smoke.sh [WHEEL]   (builds one when no wheel is given)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${FERROGEN_VENV:-$HOME/.cache/ferrogen-ci/venv}"
WHEELS="$ROOT/target/wheels"

if [ $# -ge 1 ]; then
  WHEEL="$1"
else
  echo "wheel: maturin build --release" >&2
  rm -f "$WHEELS"/ferrogen-*.whl
  (cd "$ROOT" && VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" "$VENV/bin/maturin" build --release -q -o "$WHEELS" >&2)
  WHEEL="$(ls "$WHEELS"/ferrogen-*.whl)"
fi
case "$(basename "$WHEEL")" in
  ferrogen-*-cp39-abi3-manylinux*.whl) ;;
  *) echo "wheel: expected an abi3 manylinux wheel, got $(basename "$WHEEL")" >&2; exit 1 ;;
esac

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$VENV/bin/python" -m venv --without-pip "$WORK/venv"
SMOKE_SITE="$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
MAIN_SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# dependencies only: a .pth line appends the main venv's site-packages after the fresh venv's own
echo "$MAIN_SITE" > "$SMOKE_SITE/_ferrogen_smoke_deps.pth"
"$VENV/bin/python" -m pip --python "$WORK/venv/bin/python" install -q --no-deps --no-index "$WHEEL"

mkdir "$WORK/elsewhere"
cd "$WORK/elsewhere"
env -u PYTHONPATH HF_MODULES_CACHE="$WORK/hf-modules" "$WORK/venv/bin/python" - "$WORK/venv" <<'PY'
import os, sys, warnings
from pathlib import Path

venv = Path(sys.argv[1]).resolve()
import ferrogen
from ferrogen import _core

for module in (ferrogen, _core):
    where = Path(module.__file__).resolve()
    assert venv in where.parents, f"{module.__name__} imported from {where}, not from the wheel in {venv}"
package = Path(ferrogen.__file__).parent
for name in ("_core.pyi", "py.typed", "_embedded/kjv-gpt2/model.safetensors",
             "custom_generate/contrastive_search/custom_generate/generate.py"):
    assert (package / name).is_file(), f"wheel lacks ferrogen/{name}"
import ast
stub = ast.parse((package / "_core.pyi").read_text())
stubbed = {n.name for n in stub.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
stubbed |= {n.target.id for n in stub.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
assert stubbed == {n for n in dir(_core) if not n.startswith("_")}, "the wheel's _core.pyi does not match its _core"

from transformers import AutoModelForCausalLM, AutoTokenizer
path = ferrogen.embedded_model_path()
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path)
ids = tok("And God said", return_tensors="pt")
out = ferrogen.generate(model, **ids, max_new_tokens=8)
text = tok.decode(out[0], skip_special_tokens=True)
assert out.shape == (1, ids["input_ids"].shape[1] + 8) and text.startswith("And God said"), text
with warnings.catch_warnings():
    warnings.simplefilter("error", ferrogen.FallbackWarning)
    with ferrogen.patched(model):
        assert model.generate(**ids, max_new_tokens=8).equal(out)
    folder = model.generate(**ids, max_new_tokens=8, custom_generate=ferrogen.custom_generate_path(),
                            trust_remote_code=True)
assert folder.equal(out)
print(f"wheel smoke: ok ({ferrogen.__version__} from {package}): {text!r}")
PY
