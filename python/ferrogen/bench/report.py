"""The Markdown tables."""

from __future__ import annotations

import os
import platform
from typing import Optional

import torch

from .rows import Row


def fmt(x: Optional[float], digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def machine_line() -> str:
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads{gpu}, "
            f"torch {torch.__version__}, transformers {__import__('transformers').__version__}, "
            f"load average {os.getloadavg()[0]:.1f}")


def overhead_ratio(r: Row) -> str:
    """Time above the floor, transformers' over ferrogen's: what the issue's end-to-end
    speed-up targets measure once the forward pass, which both pay, is taken out.
    "—" when either side is missing or ferrogen is within 1% of the floor (noise)."""
    if r.ours_ms is None or r.theirs_ms is None or r.ours_ms - r.floor_ms <= 0.01 * r.floor_ms:
        return "—"
    return f"{(r.theirs_ms - r.floor_ms) / (r.ours_ms - r.floor_ms):.1f}×"


def table(rows: list[Row]) -> str:
    memory = "GPU" if any(r.copy_floor_ms is not None for r in rows) else "RSS"
    lines = [
        machine_line(),
        "",
        "| model | batch | strategy | forward-only ms/tok | forward + logits copy ms/tok | ferrogen ms/tok "
        "| transformers ms/tok | ferrogen / forward | transformers / forward | speed-up vs transformers "
        "| overhead, transformers ÷ ferrogen "
        f"| ferrogen peak {memory} MB | transformers peak {memory} MB | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio_ours = None if r.ours_ms is None else r.ours_ms / r.floor_ms
        ratio_theirs = None if r.theirs_ms is None else r.theirs_ms / r.floor_ms
        speedup = None if r.ours_ms is None or r.theirs_ms is None else r.theirs_ms / r.ours_ms
        lines.append(
            f"| {r.model} | {r.batch} | {r.strategy} | {r.floor_ms:.2f} | {fmt(r.copy_floor_ms)} | {fmt(r.ours_ms)} "
            f"| {fmt(r.theirs_ms)} | {fmt(ratio_ours)} | {fmt(ratio_theirs)} | {fmt(speedup)}× "
            f"| {overhead_ratio(r)} | {fmt(r.ours_mb, 1)} | {fmt(r.theirs_mb, 1)} | {r.note} |"
        )
    return "\n".join(lines)
