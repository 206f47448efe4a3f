"""Which rows of a greedy/sampling loop still run, for a batch engine that drops finished rows.

A static batch keeps feeding rows that already ended (EOS, a stop string) through the model
until its slowest row ends. When the batch engine (:mod:`ferrogen.engine`) asks for it, the
token loop instead drops finished rows from everything that runs per row: the model's cache,
mask and positions (the adapter's ``select_rows``) and the core's history, status and sampling
keys (``Decoder.keep_rows``). A kept row's tokens and samples are unchanged: nothing a row
computes reads another row. Only what the caller cannot observe per step may be dropped, so
it is refused (the loop stays static) when the caller watches the whole batch each step:
its own logits processors or stopping criteria, a streamer, per-step outputs, the cache.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
import torch

from ..stopping import MaxTimeCriteria, StopStringCriteria
from ..watermark import is_synthid
from .base import GenerationRequest

if TYPE_CHECKING:
    from .continuous import Feed

__all__ = ["EngineHooks", "RunningRows", "keep_rows"]

# Criteria the loop evaluates row by row, whose verdict for a row does not depend on the others.
_ROW_WISE_CRITERIA = (MaxTimeCriteria, StopStringCriteria)


@dataclass
class EngineHooks:
    """What the batch engine asks of one ``generate`` call: drop finished rows, and report each
    step's running rows (``on_step(rows)``, the number of tokens that step generated)."""

    drop_finished: bool = True
    on_step: Optional[Callable[[int], None]] = None
    #: Waiting prompts to merge into the running batch (continuous batching), when the loop can.
    feed: Optional[Feed] = None
    #: Set once the run said why its rows cannot be dropped (said once per engine run).
    warned: bool = False
    #: For tests that compare the engine with a reference: called before every step's pick with
    #: the running rows' prompt slots (the engine's input order; a plain call's row numbers
    #: without a feed) and their logits ``[rows, vocab]``, before any processor. The tensor is
    #: processed in place right after: copy what you keep. Unset, it costs one check a step.
    on_logits: Optional[Callable[[list[int], torch.Tensor], None]] = None

    def slots(self, rows: np.ndarray) -> list[int]:
        """The prompt slots of a plain loop's running rows (``rows``: their row numbers)."""
        first = self.feed.first if self.feed is not None else None
        return [first[i].slot for i in rows] if first else [int(i) for i in rows]

    def can_drop(self, request: GenerationRequest, core: object) -> bool:
        """Whether this loop drops finished rows; warns once when asked to but it cannot."""
        if not self.drop_finished:
            return False
        why = why_static(request, core)
        if why is not None and not self.warned:
            self.warned = True
            warnings.warn(f"batch engine: finished rows stay in the running batch ({why})", UserWarning, stacklevel=2)
        return why is None


def why_static(request: GenerationRequest, core: object) -> Optional[str]:
    """Why this loop cannot drop finished rows (None when it can)."""
    config = request.config
    if not hasattr(request.adapter, "select_rows") or not hasattr(core, "keep_rows"):
        return f"{type(request.adapter).__name__} cannot select cache rows"
    if request.logits_processors or request.streamer is not None:
        return "logits processors or a streamer see the whole batch every step"
    if any(not isinstance(c, _ROW_WISE_CRITERIA) for c in request.criteria):
        return "custom stopping criteria see the whole batch every step"
    if request.keep_logits or config.output_attentions or config.output_hidden_states:
        return "per-step outputs are kept for the whole batch"
    if request.extras.get("grammars") is not None or request.extras.get("prefix_allowed") is not None:
        return "grammar and prefix constraints keep per-row state"
    if getattr(config, "mirostat_mode", 0):
        return "mirostat keeps per-row state"
    if is_synthid(config.watermarking_config):
        return "the SynthID watermark keeps per-row state"
    return None


class RunningRows:
    """The original row index of every running row; drops finished ones when allowed."""

    def __init__(self, rows: int, drop: bool) -> None:
        self.index = np.arange(rows)
        self.drop = drop
        self.dropped = False

    def full_scores(self, scores: torch.Tensor, rows: int) -> torch.Tensor:
        """A step's scores ``[rows, vocab]``: the running rows' own, ``-inf`` for dropped rows
        (which generated nothing that step; a static batch has the pad step's scores there)."""
        if not self.dropped:
            return scores
        full = scores.new_full((rows, scores.shape[1]), float("-inf"))
        full[torch.from_numpy(self.index)] = scores
        return full

    def to_original(self, running: np.ndarray) -> np.ndarray:
        """Original row numbers of a boolean mask over the running rows."""
        return self.index[np.flatnonzero(running)]

    def drop_finished(self, core: object, adapter: object, unfinished: np.ndarray) -> None:
        """Drops the running rows that ``unfinished`` (over the running rows) marks finished."""
        if not self.drop or bool(unfinished.all()) or not bool(unfinished.any()):
            return
        keep = np.flatnonzero(unfinished)
        keep_rows(core, adapter, keep)
        self.index = self.index[keep]
        self.dropped = True


def keep_rows(core: object, adapter: object, keep: np.ndarray) -> None:
    """Keeps only the rows ``keep`` (strictly increasing row numbers) of the core and of the
    model's state (cache, mask, positions), which must stay row for row together: row ``i``
    afterwards is row ``keep[i]``. Both loops (static and continuous) drop rows with it."""
    keep = keep.astype(np.int64)
    core.keep_rows(keep)  # type: ignore[attr-defined]
    adapter.select_rows(torch.from_numpy(keep))  # type: ignore[attr-defined]
