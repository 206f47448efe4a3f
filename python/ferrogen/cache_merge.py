"""Merging the KV caches of two batches into one (continuous batching, :mod:`ferrogen.engine`).

A batch of new prompts is prefilled on its own, then joined to the running batch: every
layer's keys and values are padded on the left to the common length (zeros, masked out) and
concatenated along the rows; the attention masks get the same padding (zeros). Positions are
per row (position ids from the mask, as transformers computes them), so a row sees exactly
what it saw before the merge. Columns that are padding in every row are trimmed from the
front, so the cache does not grow without bound as rows come and go.

Only caches whose every layer keeps all positions can be merged this way: transformers'
``DynamicCache`` (and ``EncoderDecoderCache`` of two of them) of ``DynamicLayer`` layers.
A sliding-window layer keeps a window per batch, and an SSM or hybrid model keeps a state
that left padding changes: those batches only shrink (:func:`why_unmergeable`).
"""

from __future__ import annotations

from typing import Any, Optional

import torch

__all__ = ["why_unmergeable", "merge_layers", "left_pad", "padding_columns", "trim_layers"]


def why_unmergeable(cache: Any) -> Optional[str]:
    """Why ``cache`` cannot be merged with another batch's (None when it can)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer, EncoderDecoderCache

    if type(cache) is EncoderDecoderCache:
        return why_unmergeable(cache.self_attention_cache) or why_unmergeable(cache.cross_attention_cache)
    if type(cache) is not DynamicCache:
        return f"its cache is a {type(cache).__name__}, not a DynamicCache of full-attention layers"
    for layer in cache.layers:
        if type(layer) is not DynamicLayer:
            return f"its cache has {type(layer).__name__} layers (only full-attention DynamicLayer ones merge)"
    return None


def left_pad(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """``tensor`` with zeros in front along ``dim`` up to ``width`` (itself when it is that wide)."""
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def right_pad(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """``tensor`` with zeros after it along ``dim`` up to ``width``."""
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor, tensor.new_zeros(shape)], dim=dim)


def merge_layers(a: Any, b: Any, width: int, right: bool = False) -> None:
    """Appends the rows of dynamic cache ``b`` to ``a``, every layer padded to ``width``
    positions (on the left; on the right with ``right``, for cross-attention over encoder
    outputs, whose padding side is the tokenizer's)."""
    pad = right_pad if right else left_pad
    for mine, theirs in zip(a.layers, b.layers):
        mine.keys = torch.cat([pad(mine.keys, width, 2), pad(theirs.keys, width, 2)], dim=0)
        mine.values = torch.cat([pad(mine.values, width, 2), pad(theirs.values, width, 2)], dim=0)


def padding_columns(mask: torch.Tensor) -> int:
    """How many leading columns of ``mask`` ([rows, length]) are padding in every row."""
    real = mask.bool().any(dim=0)
    if not bool(real.any()):
        return 0
    return int(real.long().argmax())


def trim_layers(cache: Any, columns: int) -> None:
    """Drops the first ``columns`` positions of every layer of a dynamic cache."""
    if columns <= 0:
        return
    for layer in cache.layers:
        layer.keys = layer.keys[:, :, columns:]
        layer.values = layer.values[:, :, columns:]
