"""Start-up time: what a fresh process pays before its first token, against importing torch
and loading the model with transformers (the floor no command line can go under).

Every case is a new Python process (``sys.executable``, this environment); the rounds run
the cases in turn (case 1, 2, ..., then again), so a machine whose load changes during the
run slows every case alike. Reports the median wall time and the median CPU time (user +
system of the child: steadier than wall time on a loaded machine).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .. import embedded_model_path

PROMPT = "And God said"

# what transformers itself pays: torch, the model and its tokenizer from the embedded model
_LOAD = ("import torch\n"
         "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
         f"path = {embedded_model_path()!r}\n"
         "model = AutoModelForCausalLM.from_pretrained(path)\n"
         "tok = AutoTokenizer.from_pretrained(path)\n")
_HF_GENERATE = _LOAD + f"model.generate(**tok({PROMPT!r}, return_tensors='pt'), max_new_tokens=1)\n"

# (name, arguments after the interpreter); the floor is "torch + load the model"
CASES: list[tuple[str, list[str]]] = [
    ("python (interpreter only)", ["-c", "pass"]),
    ("import torch", ["-c", "import torch"]),
    ("import torch, transformers", ["-c", "import torch, transformers"]),
    ("import ferrogen", ["-c", "import ferrogen"]),
    ("ferrogen --help", ["-m", "ferrogen.cli", "--help"]),
    ("torch + load the model (floor)", ["-c", _LOAD]),
    ("transformers: load + generate 1 token", ["-c", _HF_GENERATE]),
    ("ferrogen generate --max-new-tokens 1", ["-m", "ferrogen.cli", "generate", "--prompt", PROMPT,
                                              "--max-new-tokens", "1"]),
]
FLOOR = "torch + load the model (floor)"


@dataclass
class StartupRow:
    case: str
    wall_s: float
    cpu_s: float
    min_wall_s: float


def _run_once(args: list[str], pythonpath: Optional[str] = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one fresh process; raises when it fails."""
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)[:60]} failed ({done.returncode}): {done.stderr.strip()[-300:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measure(rounds: int, baseline: Optional[str] = None) -> list[StartupRow]:
    """Every case ``rounds`` times; with ``baseline`` (another checkout's ``python/`` directory)
    the ferrogen cases also run from there, in the same rounds: before and after a change."""
    cases: list[tuple[str, list[str], Optional[str]]] = [(name, args, None) for name, args in CASES]
    if baseline is not None:
        cases += [(f"{name} (baseline)", args, str(Path(baseline).resolve()))
                  for name, args in CASES if "ferrogen" in name]
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in cases}
    _run_once(["-c", "import torch, transformers"])  # warm the file cache for every case alike
    for _ in range(rounds):
        for name, args, path in cases:
            runs[name].append(_run_once(args, path))
    return [StartupRow(name, statistics.median(w for w, _ in r), statistics.median(c for _, c in r),
                       min(w for w, _ in r)) for name, r in runs.items()]


def startup_table(rows: list[StartupRow], rounds: int) -> str:
    floor = next(r for r in rows if r.case == FLOOR)
    lines = [f"Start-up, {rounds} rounds of fresh processes (median; the cases alternate within each round)",
             "",
             "| case | wall s | CPU s | wall − floor s | CPU − floor s | fastest wall s |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.case} | {r.wall_s:.2f} | {r.cpu_s:.2f} | {r.wall_s - floor.wall_s:+.2f} "
                     f"| {r.cpu_s - floor.cpu_s:+.2f} | {r.min_wall_s:.2f} |")
    return "\n".join(lines)
