"""Assisted decoding's ``output_attentions`` / ``output_hidden_states``: one entry per generated
token, each the model's per-layer tuple, in greedy decoding's layout.

A verification pass feeds ``[last token, drafts...]`` of every row at once; transformers'
``_split_model_outputs`` cuts such a pass into one entry per accepted token. Here too: query ``i``
of a row gives the entry of the row's token it produced, its self attention cut to the keys that
token's greedy step has (the prompt's width plus the tokens so far, the newest last), its cross
attention whole, its hidden state at its position. Rows advance by different amounts per round
(transformers refuses a batch), so entries are kept per row and stacked per step at the end; a row
that already ended has zeros at the later steps (greedy runs finished rows on padding instead).
The first entry is the prompt pass itself, as in every strategy.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

__all__ = ["SplitOutputs"]

# What each part of an adapter's ``step_outputs`` holds: (self attentions, hidden states[, cross attentions]).
_KINDS = ("self", "hidden", "cross")
Parts = tuple[Optional[tuple[torch.Tensor, ...]], ...]


class SplitOutputs:
    """Collects the main model's outputs round by round (``add``), per row and token."""

    def __init__(self, rows: int, prompt_width: int) -> None:
        self.prompt_width = prompt_width
        self.first: Parts = ()
        self.rows: list[list[Parts]] = [[] for _ in range(rows)]

    def add(self, outputs: Parts, kept: np.ndarray, first: bool) -> None:
        """The pass that produced this round's ``kept[r]`` tokens of every row ``r``."""
        if first:
            self.first = outputs
            return
        for row in map(int, np.flatnonzero(kept)):
            done = self.rows[row]
            for i in range(int(kept[row])):
                step = len(done) + 1  # the prompt pass is step 0
                done.append(tuple(None if part is None else
                                  tuple(_cut(t, row, i, _KINDS[k], self.prompt_width + step) for t in part)
                                  for k, part in enumerate(outputs)))

    def steps(self, count: int) -> list[Parts]:
        """``count`` entries (the generated tokens), each with every row stacked."""
        if count <= 0:
            return []
        return [self.first] + [self._stacked(j) for j in range(count - 1)]

    def _stacked(self, j: int) -> Parts:
        entries = [done[j] if j < len(done) else None for done in self.rows]
        template = next(e for e in entries if e is not None)
        return tuple(None if part is None else
                     tuple(torch.cat([torch.zeros_like(layer) if e is None else _layers(e[k])[n] for e in entries])
                           for n, layer in enumerate(part))
                     for k, part in enumerate(template))


def _layers(part: Optional[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    assert part is not None  # every row's entry has the parts the template has
    return part


def _cut(layer: torch.Tensor, row: int, i: int, kind: str, keys_seen: int) -> torch.Tensor:
    """Row ``row``, query ``i`` of a per-layer output ``[rows, heads, queries, keys]`` (attentions)
    or ``[rows, queries, hidden]``; a self attention keeps the ``keys_seen`` keys up to the query's
    own position (rows are right-aligned: earlier keys are padding this row was shifted behind)."""
    if kind == "hidden":
        return layer[row : row + 1, i : i + 1]
    if kind == "cross":
        return layer[row : row + 1, :, i : i + 1]
    queries, keys = layer.shape[-2], layer.shape[-1]
    end = keys - queries + 1 + i
    return layer[row : row + 1, :, i : i + 1, end - keys_seen : end]
