"""Median wall time of a call, and the forward-only floor every decoder pays."""

from __future__ import annotations

import inspect
import statistics
import time
from typing import Any, Callable

import torch


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def forward_only(model: Any, ids: torch.Tensor, steps: int, copies: int, copy_logits: bool = False,
                 candidates: int = 0) -> None:
    """Prefill then ``steps - 1`` cached single-token forwards: what any decoder must pay.
    With ``copy_logits`` each step also moves the logits to the host as float32 and picks
    there, which is what a core that decides on the host must pay on top.
    With ``candidates`` (contrastive search's ``top_k``) the prefill runs the plain batch
    and every step then runs ``candidates`` tokens per row over a cache of
    ``rows * candidates`` rows, with hidden states: the candidates' forward contrastive
    search cannot avoid (its floor)."""
    from transformers import DynamicCache

    ids = ids.repeat_interleave(copies, dim=0)
    cache = DynamicCache(config=model.config)
    # transformers 5.2x names the cache argument and output ``cache``, earlier ones ``past_key_values``
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def pick(logits: torch.Tensor) -> torch.Tensor:
        if not copy_logits:
            return logits[:, -1].argmax(-1, keepdim=True)
        host = logits[:, -1].to(device="cpu", dtype=torch.float32, copy=True)
        return host.argmax(-1, keepdim=True).to(logits.device)

    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **{key: cache})
        token = pick(out.logits)
        if candidates:
            past = getattr(out, key)
            past.batch_repeat_interleave(candidates)
            token = token.repeat_interleave(candidates, dim=0)
            for _ in range(steps):
                out = model(input_ids=token, use_cache=True, output_hidden_states=True, **{key: past})
                past = getattr(out, key)
                token = pick(out.logits)
            return
        for _ in range(steps - 1):
            out = model(input_ids=token, use_cache=True, **{key: getattr(out, key)})
            token = pick(out.logits)
