"""Renders docs/beam_tree.svg by running the README's beam-tree code block, so the picture
is exactly what that block makes (tests/test_docs.py checks it is current).

    python scripts/render_beam_tree.py                 # rewrites docs/beam_tree.svg
    python scripts/render_beam_tree.py --out-dir DIR   # writes DIR/beam_tree.svg
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PICTURE = "beam_tree.svg"


def readme_block() -> str:
    """The README's python block that saves the picture."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M) if f'"{PICTURE}"' in b]
    if len(blocks) != 1:
        raise SystemExit(f"README.md: expected one python block saving {PICTURE}, found {len(blocks)}")
    return blocks[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    out_dir = parser.parse_args().out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    code = compile(readme_block(), "README.md (beam tree block)", "exec")
    cwd = os.getcwd()
    os.chdir(out_dir)
    try:
        exec(code, {"__name__": "__readme__"})
    finally:
        os.chdir(cwd)
    print(out_dir / PICTURE)


if __name__ == "__main__":
    main()
