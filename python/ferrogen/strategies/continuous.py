"""Continuous batching: the slots of finished rows are refilled with waiting prompts.

The batch engine (:mod:`ferrogen.engine`) hands the token loop a :class:`Feed`: the prompts
still waiting, in the order they should run, and a place for every finished row's tokens.
When enough rows finished (``refill_fraction`` of the batch, a knob: one prefill of a small
batch costs about what a step of the running batch costs, so refilling one row at a time does
not pay), the next prompts are prefilled as their own small padded batch and merged into the
running one: the model's cache, mask and positions (the adapter's ``append_rows``), the core's
per-row state (``Decoder.append_rows``: history, penalties' padding, seeded keys and each row's
own step). Every row then goes on exactly as it would alone: nothing a row computes reads
another row, and each prompt samples with its own seed.

Where the cache cannot be merged (sliding-window layers, SSM/hybrid states, BART's absolute
decoder positions) or a setting reads the batch's shared length (:func:`why_no_refill`), the
loop only drops finished rows and the engine runs the next batch after it; it says so once.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..stopping import StopStringCriteria
from .base import GenerationRequest

__all__ = ["Feed", "Waiting", "run_continuous", "why_no_refill"]


@dataclass
class Waiting:
    """A prompt waiting for a slot: its output slot, token ids and seed (when sampling)."""

    slot: int
    ids: list[int]
    seed: Optional[int] = None


@dataclass
class Feed:
    """The prompts waiting to run, and each finished row's ``(new tokens, finish reason)``.

    ``collate(ids)`` pads a group of prompts as the engine's tokenizer does (``input_ids``,
    ``attention_mask``); ``first`` are the slots of the batch ``generate`` was called with.
    """

    waiting: deque[Waiting]
    batch_size: int
    collate: Callable[[list[list[int]]], tuple[torch.Tensor, torch.Tensor]]
    refill_fraction: float = 0.25
    first: list[Waiting] = field(default_factory=list)
    done: dict[int, tuple[list[int], str]] = field(default_factory=dict)
    #: Whether a loop merged rows (the engine then takes no results from generate's output).
    merged: bool = False
    #: Set once the run said why it only shrinks.
    warned: bool = False

    @property
    def min_free(self) -> int:
        """Free slots needed before a refill (at least one)."""
        return max(1, math.ceil(self.refill_fraction * self.batch_size))

    def take(self, n: int) -> list[Waiting]:
        return [self.waiting.popleft() for _ in range(min(n, len(self.waiting)))]

    def say_shrink_only(self, why: str) -> None:
        if not self.warned:
            self.warned = True
            warnings.warn(f"batch engine: finished rows are not refilled with new prompts ({why}); the batch "
                          "only shrinks", UserWarning, stacklevel=3)


def why_no_refill(request: GenerationRequest, core: Any, copies: int) -> Optional[str]:
    """Why this loop cannot merge new prompts into its batch (None when it can)."""
    config = request.config
    if copies != 1:
        return "num_return_sequences > 1"
    if config.max_new_tokens is None:
        return "max_length without max_new_tokens counts the batch's padding"
    if request.extras.get("guidance") is not None:
        return "classifier-free guidance keeps a second batch"
    if config.max_time is not None:
        return "max_time counts from the start of the batch, which would then never end"
    if config.token_healing:
        return "token_healing rewrites the prompts of each generate call"
    if config.watermarking_config is not None:
        return "the watermark's context would reach into the merge's padding"
    merge = getattr(request.adapter, "merge_refusal", None)
    if merge is None or not hasattr(core, "append_rows"):
        return f"{type(request.adapter).__name__} cannot merge batches"
    why: Optional[str] = merge() or core.merge_refusal()
    return why


@dataclass
class _Row:
    slot: int
    new: list[int] = field(default_factory=list)
    reason: str = ""


def run_continuous(request: GenerationRequest, core: Any, pick: str, logits: torch.Tensor, feed: Feed,
                   make_core: Callable[[GenerationRequest], Any], on_step: Optional[Callable[[int], None]],
                   on_logits: Optional[Callable[[list[int], torch.Tensor], None]] = None) -> None:
    """Runs the batch, refilling it from ``feed`` until no prompt waits and every row ended;
    each row's new tokens and finish reason go to ``feed.done``. ``pick`` names the core's
    step (``step_greedy`` / ``step_sample``), ``make_core`` builds a core for a new group;
    ``on_logits`` is :attr:`~ferrogen.strategies.running_rows.EngineHooks.on_logits`."""
    feed.merged = True
    adapter: Any = request.adapter  # a merging adapter (why_no_refill checked it)
    next_logits: Optional[torch.Tensor] = logits
    rows = [_Row(w.slot) for w in feed.first]
    assert request.config.max_new_tokens is not None  # why_no_refill checked it
    budget = int(request.config.max_new_tokens)
    stops = [c for c in request.criteria if isinstance(c, StopStringCriteria)]
    others = [c for c in request.criteria if not isinstance(c, StopStringCriteria)]
    while True:
        assert next_logits is not None
        before = core.unfinished()
        if on_logits is not None:
            on_logits([row.slot for row in rows], next_logits)
        tokens = getattr(core, pick)(next_logits.numpy())
        next_logits = None  # not alive during the next forward pass
        if on_step is not None:
            on_step(int(before.sum()))
        for i in np.flatnonzero(before):
            rows[i].new.append(int(tokens[i]))
        _mark(rows, before & ~core.unfinished(), "eos")
        _finish(core, rows, _stop_verdicts(stops, others, rows, request.pad_token_id), budget)
        unfinished = core.unfinished()
        for i in np.flatnonzero(~unfinished):
            feed.done[rows[i].slot] = (rows[i].new, rows[i].reason or "length")
        keep = np.flatnonzero(unfinished)
        if keep.size == 0 and not feed.waiting:
            return
        if 0 < keep.size < len(rows):
            core.keep_rows(keep.astype(np.int64))
            adapter.select_rows(torch.from_numpy(keep.astype(np.int64)))
            adapter.trim_padding()
        rows = [rows[i] for i in keep]
        next_logits = adapter.advance(torch.from_numpy(np.ascontiguousarray(tokens[keep]))) if rows else None
        free = feed.batch_size - len(rows)
        if feed.waiting and (free >= feed.min_free or not rows):
            group = feed.take(free)
            new_core, new_adapter, new_logits = _prefill(request, adapter, group, feed, make_core)
            rows += [_Row(w.slot) for w in group]
            if next_logits is None:
                core, adapter, next_logits = new_core, new_adapter, new_logits
            else:
                adapter.append_rows(new_adapter)
                core.append_rows(new_core)
                next_logits = torch.cat([next_logits, new_logits])


def _prefill(request: GenerationRequest, adapter: Any, group: list[Waiting], feed: Feed,
             make_core: Callable[[GenerationRequest], Any]) -> tuple[Any, Any, torch.Tensor]:
    """A core, an adapter and the first logits for ``group``, prefilled as its own batch (a
    shallow copy of the running adapter: ``prefill`` replaces every piece of its state)."""
    feed_ids, mask = feed.collate([w.ids for w in group])
    fresh = copy.copy(adapter)
    extras = dict(request.extras)
    if group[0].seed is not None:
        extras["row_seeds"] = [w.seed for w in group]
    sub = dataclasses.replace(request, adapter=fresh, input_ids=feed_ids, attention_mask=mask,
                              prompt_ids=fresh.decoder_prompt(feed_ids).cpu(), extras=extras)
    logits = fresh.prefill(feed_ids, mask)
    return make_core(sub), fresh, logits


def _stop_verdicts(stops: list[StopStringCriteria], others: list[Any], rows: list[_Row],
                   pad: int) -> list[tuple[np.ndarray, str]]:
    """Each criterion's verdict per row: stop strings on each row's own new tokens (as the
    static loop sees them: its tokens after the prompt), the rest (max_time) on the batch."""
    verdicts = []
    for crit in stops:
        done = np.array(crit.rows_done([row.new for row in rows]), dtype=bool)
        verdicts.append((done, getattr(crit, "finish_reason", "stop")))
    for crit in others:
        width = max(len(row.new) for row in rows)
        seen = torch.tensor([[pad] * (width - len(row.new)) + row.new for row in rows])
        done = torch.as_tensor(crit(seen, None)).reshape(-1).bool().expand(len(rows)).numpy().copy()
        verdicts.append((done, getattr(crit, "finish_reason", "stop")))
    return verdicts


def _finish(core: Any, rows: list[_Row], verdicts: list[tuple[np.ndarray, str]], budget: int) -> None:
    """Finishes the rows the criteria stopped, then those that reached ``budget`` new tokens."""
    for done, why in verdicts:
        before = core.unfinished()
        core.finish_rows(np.ascontiguousarray(done))
        _mark(rows, before & ~core.unfinished(), why)
    full = np.array([len(row.new) >= budget for row in rows])
    if full.any():
        core.finish_rows(full)


def _mark(rows: list[_Row], ended: np.ndarray, why: str) -> None:
    for i in np.flatnonzero(ended):
        if not rows[i].reason:
            rows[i].reason = why
