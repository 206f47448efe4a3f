"""End-to-end benchmark from a source checkout: the same as ``ferrogen bench`` (the harness
lives in ``python/ferrogen/bench/``; ``--help`` lists the options and rows)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from ferrogen.bench import main  # noqa: E402

if __name__ == "__main__":
    main()
