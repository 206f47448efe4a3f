"""transformers' ``prefix_allowed_tokens_fn``: the caller's function names the tokens each
row may take next; the Rust core asks it once per row per step (at transformers'
``PrefixConstrainedLogitsProcessor`` position, with the GIL) and masks the rest.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch

from . import _core
from .config import GenerationConfig

__all__ = ["PrefixAllowedTokensFn", "prefix_constraint"]

# (batch_id, input_ids of the row) -> the token ids the row may take next
PrefixAllowedTokensFn = Callable[[int, torch.Tensor], Any]


def prefix_constraint(fn: Optional[PrefixAllowedTokensFn], config: GenerationConfig) -> Optional[Any]:
    """The core's ``PrefixAllowedTokens`` for ``fn`` (None without one).

    Rows map to batch ids as in transformers: ``row // max(num_beams, num_return_sequences)``
    (5.x), and within one beam group ``row // (num_beams // num_beam_groups)`` (4.55.4, the
    last release with group beam search built in). ``fn`` gets the row's whole history
    (padding and prompt included) as a 1-D int64 CPU tensor and returns a list of ints (or
    anything ``torch.as_tensor`` reads, such as a tensor or a range).
    """
    if fn is None:
        return None
    if not callable(fn):
        raise TypeError(f"prefix_allowed_tokens_fn: must be a callable (batch_id, input_ids) -> list[int], "
                        f"got {type(fn).__name__}")
    groups = config.num_beam_groups or 1
    if groups > 1:
        rows_per_batch = max(config.num_beams // groups, 1)
    else:
        rows_per_batch = max(config.num_beams or 1, config.num_return_sequences or 1)

    def call(batch_id: int, row: np.ndarray) -> list[int]:
        allowed = fn(batch_id, torch.from_numpy(row))
        if isinstance(allowed, list) and all(type(t) is int for t in allowed):
            return allowed
        return [int(t) for t in torch.as_tensor(allowed).reshape(-1).tolist()]

    return _core.PrefixAllowedTokens(call, rows_per_batch)
