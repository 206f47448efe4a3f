"""The result of :func:`ferrogen.generate` when ``return_dict_in_generate=True``.

Attribute and key access both work, as with transformers' ``ModelOutput``::

    out = ferrogen.generate(model, input_ids=ids, return_dict_in_generate=True, output_scores=True)
    out.sequences.shape, len(out["scores"])
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Iterator, Optional

import torch

__all__ = ["GenerateOutput"]


@dataclass
class GenerateOutput:
    """Fields are ``None`` unless the matching ``output_*`` flag asked for them.

    - ``sequences``: int64 ``[batch * num_return_sequences, length]`` (prompt included for
      decoder-only models, decoder ids for encoder-decoder models).
    - ``scores``: one float32 ``[rows, vocab]`` tensor per step, after logits processing.
    - ``logits``: one float32 ``[rows, vocab]`` tensor per step, as the model returned them.
    - ``sequences_scores``: beam modes, the final length-normalised score per sequence.
    - ``beam_indices``: beam modes, ``[rows, generated_length]`` beam index per step (-1 padded).
    - ``finish_reasons``: per row, ``"eos"``, ``"length"``, ``"stop"`` (a stopping criterion) or ``"time"``;
      constrained beam search reports ``"constraints_unmet"`` for a row that misses a constraint.
    - ``constraints_satisfied``: constrained beam search, per row whether it contains every constraint.
    """

    sequences: torch.Tensor
    scores: Optional[tuple[torch.Tensor, ...]] = None
    logits: Optional[tuple[torch.Tensor, ...]] = None
    sequences_scores: Optional[torch.Tensor] = None
    beam_indices: Optional[torch.Tensor] = None
    finish_reasons: Optional[list[str]] = None
    beam_tree: Optional[Any] = None
    constraints_satisfied: Optional[list[bool]] = None

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def keys(self) -> list[str]:
        """Names of the fields that are set (as ``ModelOutput.keys()``)."""
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())
