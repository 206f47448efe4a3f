"""The engine's side of continuous batching: the waiting prompts, the generate calls, the results.

:func:`run_continuous_texts` puts every prompt (in length order) in a :class:`Feed` and calls
``generate`` with the first ``batch_size`` of them; the token loop merges the rest into its
batch as rows finish (:mod:`ferrogen.strategies.continuous`) and leaves every row's tokens in
the feed. When the loop cannot merge (it said why, once), it returns its batch as usual and
the next ``generate`` call takes the next ``batch_size`` prompts: shrink-only batches.
With ``output_scores=True`` each result is a :class:`~ferrogen.text.ScoredResult`: the loop
kept every row's per-token log-probabilities (the shrink-only calls' come from their output).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import torch

from .strategies.continuous import Feed, Waiting
from .strategies.running_rows import EngineHooks

if TYPE_CHECKING:
    from .engine import EngineProgress
    from .outputs import GenerateOutput
    from .text import TextGenerator, TextResult

__all__ = ["pad_ids", "run_continuous_texts", "strip_padding"]


def run_continuous_texts(
    generator: TextGenerator, prompts: Sequence[str], ids: Sequence[Sequence[int]], order: Sequence[int],
    seeds: Optional[Sequence[int]], batch_size: int, refill_fraction: float, progress: EngineProgress,
    on_progress: Optional[Callable[[EngineProgress], None]], kwargs: dict[str, Any],
) -> list[TextResult]:
    """Every prompt's :class:`~ferrogen.TextResult`, in input order (see the module)."""
    from .generate import generate
    from .outputs import token_logprobs
    from .text import ScoredResult, TextResult

    tokenizer, model = generator.tokenizer, generator.model
    device = getattr(model, "device", torch.device("cpu"))
    waiting = deque(Waiting(i, list(ids[i]), None if seeds is None else seeds[i]) for i in order)
    feed = Feed(waiting, batch_size, _collate(tokenizer, device), refill_fraction)

    def on_step(rows: int) -> None:
        progress.tokens += rows
        progress.running = rows
        progress.prompts_done = len(feed.done)
        if on_progress is not None:
            on_progress(progress)

    hooks = EngineHooks(drop_finished=True, on_step=on_step, feed=feed)
    kwargs.setdefault("tokenizer", tokenizer)
    skip_encoder = bool(generator.encoder_decoder)
    scored = bool(kwargs.get("output_scores"))
    while feed.waiting:
        feed.first, feed.merged = feed.take(batch_size), False
        input_ids, mask = feed.collate([w.ids for w in feed.first])
        seeding: dict[str, Any] = {} if seeds is None else {"row_seeds": [w.seed for w in feed.first]}
        out = generate(model, input_ids=input_ids, attention_mask=mask, return_dict_in_generate=True,
                       _engine=hooks, **seeding, **kwargs)
        if not feed.merged:  # shrink-only: this batch's rows are in the output
            skip = 1 if skip_encoder else int(input_ids.shape[1])
            logprobs = token_logprobs(out, skip) if scored else None
            for row, w in enumerate(feed.first):
                feed.done[w.slot] = _row_of(out, row, skip)
                if logprobs is not None:
                    feed.scores[w.slot] = logprobs[row]
        progress.prompts_done = len(feed.done)
        if on_progress is not None:
            on_progress(progress)
    pad = tokenizer.pad_token_id
    results = []
    for slot, prompt in enumerate(prompts):
        new, reason = feed.done[slot]
        new = strip_padding(new, pad, reason)
        text = tokenizer.decode(new, skip_special_tokens=True)
        # Scores of the kept tokens (a static output's rows have one per step of their batch).
        results.append(ScoredResult(prompt, text, new, reason, feed.scores[slot][: len(new)]) if scored
                       else TextResult(prompt, text, new, reason))
    return results


def strip_padding(new: list[int], pad: Optional[int], reason: str) -> list[int]:
    """A row's new tokens without the trailing pad tokens (as :class:`~ferrogen.TextGenerator`)."""
    new = list(new)
    while new and pad is not None and new[-1] == pad and reason != "length":
        new.pop()
    return new


def _row_of(out: GenerateOutput, row: int, skip: int) -> tuple[list[int], str]:
    assert out.finish_reasons is not None  # the token loop always gives them
    return out.sequences[row, skip:].tolist(), out.finish_reasons[row]


def pad_ids(tokenizer: Any, group: Sequence[Sequence[int]], device: Optional[torch.device] = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of a group of prompts' ids, padded as the tokenizer pads
    a batch it tokenizes (its padding side), on ``device`` (default: where the tokenizer puts them)."""
    enc = tokenizer.pad({"input_ids": [list(ids) for ids in group]}, return_tensors="pt")
    input_ids, mask = enc["input_ids"], enc["attention_mask"]
    return (input_ids, mask) if device is None else (input_ids.to(device), mask.to(device))


def _collate(tokenizer: Any, device: torch.device) -> Callable[[list[list[int]]], tuple[torch.Tensor, torch.Tensor]]:
    """Pads a group of prompts' ids on ``device`` (see :func:`pad_ids`)."""
    return lambda group: pad_ids(tokenizer, group, device)
