"""Extra peak memory of one call. Self-contained (torch and the standard library only):
the transformers 4.55 subprocess runs this file's source too, in a venv without ferrogen."""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Optional

import torch


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_extra_mb(fn: Callable[[], Any], device: torch.device, calls: int = 3) -> Optional[float]:
    """Extra peak memory of one ``fn()`` call over what was held before it, the smallest of
    ``calls`` calls (the allocator's caching makes single readings noisy): GPU memory
    (allocator peak) on CUDA, host RSS (sampled every millisecond) on the CPU."""
    readings = [_one(fn, device) for _ in range(calls)]
    known = [r for r in readings if r is not None]
    return min(known) if known else None


def _one(fn: Callable[[], Any], device: torch.device) -> Optional[float]:
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    if not os.path.exists("/proc/self/statm"):
        return None
    before, peak, running = _rss_bytes(), [0], [True]

    def sample() -> None:
        while running[0]:
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        running[0] = False
        sampler.join()
    return max(0, max(peak[0], _rss_bytes()) - before) / 2**20
