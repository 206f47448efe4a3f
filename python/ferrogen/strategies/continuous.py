"""Continuous batching: the slots of finished rows are refilled with waiting prompts.

The batch engine (:mod:`ferrogen.engine`) hands the token loop a :class:`Feed`: the prompts
still waiting, in the order they should run, and a place for every finished row's tokens.
Waiting prompts are prefilled in groups (``refill_fraction`` of the batch at a time: one
prefill call per prompt would pay the model's per-call cost each time) and kept in a pool,
with one core built for the group; as soon as rows finish, prompts from the pool are written
into their places: the model's cache, mask and positions (the adapter's ``replace_rows``), the
core's per-row state (``Decoder.replace_rows`` takes the rows of the group's core: history,
penalties' padding, seeded keys and each row's own step) and the next logits (the new row's
prefill logits). The rows still running are never moved:
moving them (gathering them out of the cache, concatenating the new rows in) copied every
layer's cache at every refill, a fifth of a batch-64 run. A finished row runs one more step
before its place is taken (its logits are then replaced). Every row goes on exactly as it
would alone: nothing a row computes reads another row, and each prompt samples with its own seed.

With ``output_scores`` (``return_dict_in_generate``), every running row keeps the log-probability
of each token it picks under that step's processed scores (what the static loop returns as
``scores``), computed by the rule :func:`ferrogen.outputs.token_logprobs` applies to a static
output, so a row's scores are those it has there; nothing is computed without it.

Only the run's tail, when more rows finish than prompts are left, drops rows from the batch.
Where the cache cannot be refilled (sliding-window layers, SSM/hybrid states, BART's absolute
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

from ..outputs import chosen_logprobs
from ..stopping import StopStringCriteria
from .base import GenerationRequest
from .running_rows import keep_rows

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
    refill_fraction: float
    first: list[Waiting] = field(default_factory=list)
    done: dict[int, tuple[list[int], str]] = field(default_factory=dict)
    #: With ``output_scores``: each finished row's log-probability of every token in ``done``.
    scores: dict[int, list[float]] = field(default_factory=dict)
    #: Whether a loop merged rows (the engine then takes no results from generate's output).
    merged: bool = False
    #: Set once the run said why it only shrinks.
    warned: bool = False

    @property
    def group_size(self) -> int:
        """Prompts prefilled together for refills (at least one)."""
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
    if merge is None or not hasattr(core, "replace_rows"):
        return f"{type(request.adapter).__name__} cannot merge batches"
    why: Optional[str] = merge() or core.merge_refusal()
    return why


@dataclass
class _Row:
    slot: int
    new: list[int] = field(default_factory=list)
    reason: str = ""
    scores: list[float] = field(default_factory=list)


@dataclass
class _Pool:
    """Prompts prefilled ahead of the slots they will take: the adapter that holds their cache,
    their first logits, their core (built once; each refill takes its rows from it), and how
    many of them already took a slot."""

    group: list[Waiting]
    adapter: Any
    logits: torch.Tensor
    core: Any
    taken: int = 0

    @property
    def left(self) -> int:
        return len(self.group) - self.taken


def run_continuous(request: GenerationRequest, core: Any, pick: str, logits: torch.Tensor, feed: Feed,
                   make_core: Callable[[GenerationRequest], Any], on_step: Optional[Callable[[int], None]],
                   on_logits: Optional[Callable[[list[int], torch.Tensor], None]] = None) -> None:
    """Runs the batch, refilling it from ``feed`` until no prompt waits and every row ended;
    each row's new tokens and finish reason go to ``feed.done`` (with ``output_scores``, their
    log-probabilities to ``feed.scores``). ``pick`` names the core's step (``step_greedy`` /
    ``step_sample``), ``make_core`` builds the core of a prefilled group;
    ``on_logits`` is :attr:`~ferrogen.strategies.running_rows.EngineHooks.on_logits`."""
    feed.merged = True
    adapter: Any = request.adapter  # a merging adapter (why_no_refill checked it)
    next_logits: Optional[torch.Tensor] = logits
    rows = [_Row(w.slot) for w in feed.first]
    assert request.config.max_new_tokens is not None  # why_no_refill checked it
    budget = int(request.config.max_new_tokens)
    keep_scores = request.keep_scores
    stops = [c for c in request.criteria if isinstance(c, StopStringCriteria)]
    others = [c for c in request.criteria if not isinstance(c, StopStringCriteria)]
    pool: Optional[_Pool] = None
    while True:
        assert next_logits is not None
        before = core.unfinished()
        if on_logits is not None:
            on_logits([row.slot for row in rows], next_logits)
        tokens = getattr(core, pick)(next_logits.numpy())  # processes next_logits in place
        running = np.flatnonzero(before)
        if keep_scores:
            _keep_logprobs(rows, running, next_logits, tokens)
        next_logits = None  # not alive during the next forward pass
        if on_step is not None:
            on_step(int(before.sum()))
        for i in running:
            rows[i].new.append(int(tokens[i]))
        _mark(rows, before & ~core.unfinished(), "eos")
        _finish(core, rows, _stop_verdicts(stops, others, rows, request.pad_token_id), budget)
        unfinished = core.unfinished()
        for i in np.flatnonzero(~unfinished):
            feed.done[rows[i].slot] = (rows[i].new, rows[i].reason or "length")
            if keep_scores:
                feed.scores[rows[i].slot] = rows[i].scores
        ended = np.flatnonzero(~unfinished)
        refills = min(ended.size, len(feed.waiting) + (pool.left if pool is not None else 0))
        if refills == 0 and ended.size == len(rows):
            return
        if refills < ended.size:  # the run's tail: no prompt will take these rows' slots
            keep = np.union1d(np.flatnonzero(unfinished), ended[:refills])
            keep_rows(core, adapter, keep)
            adapter.trim_padding()
            rows, tokens = [rows[i] for i in keep], tokens[keep]
            ended = np.flatnonzero(np.isin(keep, ended[:refills]))
        next_logits = adapter.advance(torch.from_numpy(np.ascontiguousarray(tokens)))
        if refills:
            pool = _refill(request, core, adapter, rows, next_logits, ended, pool, feed, make_core)


def _keep_logprobs(rows: list[_Row], running: np.ndarray, scores: torch.Tensor, tokens: np.ndarray) -> None:
    """Appends to each running row the log-probability of the token it picked under ``scores``
    (this step's processed logits), by the static output's rule (:func:`chosen_logprobs`)."""
    index = torch.from_numpy(running.astype(np.int64))
    picked = chosen_logprobs(scores, index, torch.from_numpy(tokens.astype(np.int64))[index]).tolist()
    for i, value in zip(running, picked):
        rows[i].scores.append(value)


def _refill(request: GenerationRequest, core: Any, adapter: Any, rows: list[_Row], logits: torch.Tensor,
            slots: np.ndarray, pool: Optional[_Pool], feed: Feed,
            make_core: Callable[[GenerationRequest], Any]) -> Optional[_Pool]:
    """Writes waiting prompts into the rows ``slots`` of finished ones, in place (the adapter's
    cache, the core's row state, ``logits`` and ``rows``), prefilling the next group of
    prompts whenever the pool runs out; returns the pool for the next refill."""
    while slots.size:
        if pool is None or pool.left == 0:
            pool = _prefill(request, adapter, feed.take(feed.group_size), feed, make_core)
        n = min(int(slots.size), pool.left)
        taken = torch.arange(pool.taken, pool.taken + n)
        into = torch.from_numpy(slots[:n].astype(np.int64))
        adapter.replace_rows(into, pool.adapter, taken)
        core.replace_rows(into.numpy(), pool.core, taken.numpy())
        logits[into] = pool.logits[taken]
        for slot, waiting in zip(slots[:n], pool.group[pool.taken : pool.taken + n]):
            rows[slot] = _Row(waiting.slot)
        pool.taken += n
        slots = slots[n:]
    adapter.trim_padding()
    return pool


def _prefill(request: GenerationRequest, adapter: Any, group: list[Waiting], feed: Feed,
             make_core: Callable[[GenerationRequest], Any]) -> _Pool:
    """``group`` prefilled as its own batch, on a shallow copy of the running adapter
    (``prefill`` replaces every piece of its state), with its core (its prompts, its seeds)."""
    input_ids, mask = feed.collate([w.ids for w in group])
    fresh = copy.copy(adapter)
    logits = fresh.prefill(input_ids, mask)
    extras = dict(request.extras)
    if group[0].seed is not None:
        extras["row_seeds"] = [w.seed for w in group]
    own = dataclasses.replace(request, adapter=fresh, input_ids=input_ids, attention_mask=mask,
                              prompt_ids=fresh.decoder_prompt(input_ids).cpu(), extras=extras)
    return _Pool(group, fresh, logits, make_core(own))


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
