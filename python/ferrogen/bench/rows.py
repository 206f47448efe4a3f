"""One row of the end-to-end table: the floor, ferrogen and transformers on the same inputs."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

import ferrogen

from .golden import golden_ms
from .memory import peak_extra_mb
from .settings import GOLDEN_SIDE, STRATEGIES, TORCH_RNG
from .timing import forward_only, median_ms
from .torch_samplers import transformers_side


@dataclass
class Row:
    model: str
    batch: int
    strategy: str
    floor_ms: float
    ours_ms: Optional[float]
    theirs_ms: Optional[float]
    note: str = ""
    copy_floor_ms: Optional[float] = None  # forward-only plus the one logits copy to the host per step
    ours_mb: Optional[float] = None  # extra peak memory of one generate call (host RSS, or GPU on CUDA)
    theirs_mb: Optional[float] = None


def bench_row(name: str, model: Any, vocab: int, batch: int, strategy: str, new_tokens: int, repeats: int) -> Row:
    device = model.device
    g = torch.Generator().manual_seed(batch)
    ids = torch.randint(3, vocab, (batch, 16), generator=g).to(device)
    mask = torch.ones_like(ids)
    settings = dict(STRATEGIES[strategy], max_new_tokens=new_tokens, pad_token_id=0)
    if model.generation_config.eos_token_id is not None:
        settings["min_new_tokens"] = new_tokens
    copies = settings.get("num_beams", 1)
    candidates = settings["top_k"] if "penalty_alpha" in settings else 0
    floor = median_ms(lambda: forward_only(model, ids, new_tokens, copies, candidates=candidates), repeats) / new_tokens
    copy_floor = None
    if device.type == "cuda":
        copy_floor = median_ms(lambda: forward_only(model, ids, new_tokens, copies, copy_logits=True), repeats) / new_tokens

    torch_rng = strategy in TORCH_RNG
    our_settings: dict[str, Any] = settings if torch_rng else dict(settings, seed=0)

    def ours() -> Any:
        if torch_rng:
            torch.manual_seed(0)
        return ferrogen.generate(model, input_ids=ids, attention_mask=mask, **our_settings)

    their_settings, their_processors = transformers_side(settings)

    def theirs() -> Any:
        if torch_rng:
            torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return model.generate(input_ids=ids, attention_mask=mask, logits_processor=their_processors or None,
                                  **their_settings)

    note = ""
    theirs_mb: Optional[float] = None
    try:
        ours_ms: Optional[float] = median_ms(ours, repeats) / new_tokens
    except NotImplementedError as exc:
        ours_ms, note = None, str(exc).split(":")[0] + " not in this build"
    except Exception as exc:  # a failure is a row of the table, not the end of the run
        ours_ms, note = None, f"ferrogen FAILED: {type(exc).__name__}: {str(exc)[:80]}"
    if strategy in GOLDEN_SIDE:
        theirs_ms, theirs_mb, why = golden_ms(model, ids, mask, settings, repeats)
        theirs_ms = None if theirs_ms is None else theirs_ms / new_tokens
        note = (note + "; " if note else "") + why
    else:
        try:
            theirs_ms = median_ms(theirs, repeats) / new_tokens
        except Exception as exc:  # strategies transformers 5.x no longer ships natively
            theirs_ms, note = None, (note + "; " if note else "") + f"transformers: {type(exc).__name__}"
    if torch_rng and ours_ms is not None and theirs_ms is not None:
        note = (note + "; " if note else "") + _same_tokens(ours(), theirs())
    # the sides that ran here (the golden side measured its own memory in its subprocess)
    live = {side: fn for side, fn, ms in (("ours", ours, ours_ms), ("theirs", theirs, theirs_ms))
            if ms is not None and not (side == "theirs" and strategy in GOLDEN_SIDE)}
    peaks = dict(zip(live, interleaved_peaks(list(live.values()), device)))
    ours_mb = peaks.get("ours")
    theirs_mb = peaks.get("theirs", theirs_mb)
    return Row(name, batch, strategy, floor, ours_ms, theirs_ms, note, copy_floor, ours_mb, theirs_mb)


def _same_tokens(ours: Any, theirs: Any) -> str:
    """The note of a row whose two sides draw from the same seeded torch generator."""
    ours, theirs = (getattr(out, "sequences", out) for out in (ours, theirs))
    return "same tokens as transformers" if torch.equal(ours.cpu(), theirs.cpu()) else "TOKENS DIFFER FROM TRANSFORMERS"


def interleaved_peaks(sides: list[Callable[[], Any]], device: torch.device, calls: int = 3) -> list[Optional[float]]:
    """Each side's extra peak memory, the smallest of ``calls`` readings taken in turn
    (ours, theirs, ours, ...): the host allocator keeps or returns memory depending on what
    ran just before, so one side measured after its own runs and the other after a
    different workload would not be compared fairly."""
    readings: list[list[float]] = [[] for _ in sides]
    for _ in range(calls):
        for fn, seen in zip(sides, readings):
            mb = peak_extra_mb(fn, device, calls=1)
            if mb is not None:
                seen.append(mb)
    return [min(seen) if seen else None for seen in readings]
