"""Runs a golden-making script under transformers 4.55.4: the scripts in this folder that write
goldens call :func:`reexec_in_golden_venv` first, which returns when this interpreter already has
that version and otherwise runs the same script again in the golden venv (``golden_venv.sh``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

GOLDEN_VERSION = "4.55.4"
ROOT = Path(__file__).resolve().parents[1]


def reexec_in_golden_venv(script: str, args: Sequence[str] | None = None) -> None:
    """Returns under transformers 4.55.4; else exits with ``script`` run again, with ``args``
    (default: this process's arguments), in the golden venv."""
    import transformers

    name = Path(script).stem
    if transformers.__version__ == GOLDEN_VERSION:
        return
    if os.environ.get("FERROGEN_GOLDEN_CHILD"):
        raise SystemExit(f"{name}: expected transformers {GOLDEN_VERSION}, got {transformers.__version__}")
    python = subprocess.run([str(ROOT / "scripts" / "golden_venv.sh")], check=True, capture_output=True,
                            text=True).stdout.strip().splitlines()[-1]
    env = dict(os.environ, FERROGEN_GOLDEN_CHILD="1")
    argv = list(sys.argv[1:] if args is None else args)
    raise SystemExit(subprocess.run([python, str(Path(script).resolve()), *argv], env=env).returncode)
