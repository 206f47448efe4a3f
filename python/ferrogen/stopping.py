"""Stopping criteria evaluated in Python between steps (EOS and length live in the core).

A criterion is any callable ``(input_ids, scores) -> bool tensor [rows]`` (or a bool for
every row), so transformers' ``StoppingCriteria`` instances work unchanged::

    stop_at_newline = lambda ids, scores: ids[:, -1] == newline_id
    ferrogen.generate(model, input_ids=ids, stopping_criteria=[stop_at_newline])
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import torch

__all__ = ["StoppingCriterion", "MaxTimeCriteria", "StopStringCriteria", "evaluate_criteria"]

StoppingCriterion = Callable[[torch.Tensor, Optional[torch.Tensor]], Union[torch.Tensor, bool]]


class MaxTimeCriteria:
    """Stops every row once ``max_time`` seconds have passed since ``start``.

    >>> crit = MaxTimeCriteria(max_time=0.0, start=0.0)
    >>> bool(crit(torch.zeros(2, 1, dtype=torch.long), None).all())
    True
    """

    finish_reason = "time"

    def __init__(self, max_time: float, start: Optional[float] = None) -> None:
        self.max_time = max_time
        self.start = time.monotonic() if start is None else start

    def __call__(self, input_ids: torch.Tensor, scores: Optional[torch.Tensor] = None) -> torch.Tensor:
        expired = time.monotonic() - self.start >= self.max_time
        return torch.full((input_ids.shape[0],), expired, dtype=torch.bool)


class StopStringCriteria:
    """Stops a row when its newest token completes one of ``stop_strings``.

    The text is decoded from a short tail of tokens, so the cost per step does not grow
    with the sequence; a stop string may span several tokens, and the newest token may
    carry characters past its end (as in transformers).

    >>> # crit = StopStringCriteria(tokenizer, ["\\n\\n", "The end"])
    """

    def __init__(self, tokenizer: Any, stop_strings: Union[str, Sequence[str]], prompt_length: int = 0) -> None:
        if tokenizer is None:
            raise ValueError("stop_strings: a tokenizer is needed to match stop strings; pass tokenizer=...")
        self.tokenizer = tokenizer
        self.stop_strings = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings)
        self.prompt_length = prompt_length
        # Each token carries at least one character, so this many tokens cover any stop string.
        self._tail = max(len(s) for s in self.stop_strings) + 1

    def __call__(self, input_ids: torch.Tensor, scores: Optional[torch.Tensor] = None) -> torch.Tensor:
        start = max(self.prompt_length, input_ids.shape[1] - self._tail)
        return torch.tensor(self.rows_done(input_ids[:, start:].tolist()), dtype=torch.bool)

    def rows_done(self, rows: Sequence[Sequence[int]]) -> list[bool]:
        """Whether each row's newest token completes a stop string (each row: its tokens after
        the prompt, or any tail of them of at least ``max(len(stop)) + 1`` tokens)."""
        tails = [list(ids[-self._tail:]) for ids in rows]
        # One batched decode for every row's tail with and without its newest token.
        pieces = [t[:-1] for t in tails] + tails
        batch = getattr(self.tokenizer, "batch_decode", None)  # any object with ``decode`` will do
        texts = list(batch(pieces)) if callable(batch) and pieces else [self.tokenizer.decode(p) for p in pieces]
        done = []
        for tail, before, text in zip(tails, texts[: len(tails)], texts[len(tails):]):
            # A match must end inside the newest token's text, else it stopped the row earlier.
            done.append(bool(tail) and any(text.find(s, max(0, len(before) - len(s) + 1)) >= 0
                                           for s in self.stop_strings))
        return done


def evaluate_criteria(
    criteria: Iterable[StoppingCriterion], input_ids: torch.Tensor, scores: Optional[torch.Tensor]
) -> list[tuple[torch.Tensor, str]]:
    """Each criterion's verdict as a bool ``[rows]`` CPU tensor with its finish reason
    (``finish_reason`` attribute of the criterion, ``"stop"`` when it has none)."""
    verdicts = []
    rows = input_ids.shape[0]
    for crit in criteria:
        result = crit(input_ids, scores)
        result = torch.as_tensor(result).to(device="cpu", dtype=torch.bool).reshape(-1)
        if result.numel() == 1 and rows > 1:
            result = result.repeat(rows)  # a real copy: the core takes contiguous arrays only
        if result.numel() != rows:
            raise ValueError(f"stopping_criteria: a criterion returned {result.numel()} values for {rows} rows")
        verdicts.append((result, getattr(crit, "finish_reason", "stop")))
    return verdicts
