#!/usr/bin/env bash
# Builds the documentation artefacts (run by scripts/test.sh, so by CI; nothing is published):
#   - target/docs/api/: the API reference, generated from the docstrings by pdoc;
#   - target/docs/beam_tree.svg: the README's beam-tree picture, drawn again by the README's block;
#   - mypy --strict on examples/typed_usage.py, a small program using the public API.
# pdoc and mypy live in their own small venv (FERROGEN_TOOLS_VENV), which sees torch and
# transformers through a .pth file pointing at the main venv (never installed twice).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${FERROGEN_VENV:-$HOME/.cache/ferrogen-ci/venv}"
TOOLS="${FERROGEN_TOOLS_VENV:-$HOME/.cache/ferrogen-ci/tools-venv}"
OUT="$ROOT/target/docs"

if ! "$TOOLS/bin/python" -c "import pdoc, mypy" 2>/dev/null; then
  echo "docs: setting up $TOOLS (pdoc, mypy)" >&2
  "$VENV/bin/python" -m venv "$TOOLS"
  "$TOOLS/bin/python" -m pip install -q "pdoc>=15" "mypy>=1.10"
fi
TOOLS_SITE="$("$TOOLS/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
"$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$TOOLS_SITE/_ferrogen_main_venv.pth"

cd "$ROOT"
export PYTHONPATH="$ROOT/python${PYTHONPATH:+:$PYTHONPATH}"
echo "== mypy --strict examples/typed_usage.py" >&2
"$TOOLS/bin/mypy" --cache-dir "$ROOT/target/mypy-cache"   # files and options: [tool.mypy] in pyproject.toml

echo "== pdoc -> target/docs/api" >&2
rm -rf "$OUT/api"
"$TOOLS/bin/pdoc" --docformat google --no-search -o "$OUT/api" ferrogen 2> "$OUT.pdoc.log" || { cat "$OUT.pdoc.log" >&2; exit 1; }
for name in enable patched custom_generate_path GenerationConfig GenerateOutput generate; do
  grep -q "id=\"$name\"" "$OUT/api/ferrogen.html" || { echo "docs: API reference lacks $name" >&2; exit 1; }
done

echo "== beam-tree picture -> target/docs/beam_tree.svg" >&2
if "$VENV/bin/python" -c "import sys, ferrogen.strategies as s; sys.exit(s.GenerationMode.BEAM_SEARCH not in s.STRATEGIES)"; then
  "$VENV/bin/python" scripts/render_beam_tree.py --out-dir "$OUT" > /dev/null
else
  echo "docs: beam search is not in this build yet; picture not drawn" >&2
fi
echo "docs: built $OUT/api/index.html" >&2
