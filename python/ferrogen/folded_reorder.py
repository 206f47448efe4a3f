"""Beam search's cache reorder folded into the next append: one copy per layer per step, not two.

transformers' beam search reorders a ``DynamicCache`` with an ``index_select`` of every layer
(a full copy of the cache), and the next forward pass appends the new position with a
``torch.cat`` (another full copy). Here the reorder only records the parent rows; the layer's
next ``update`` gathers the parents straight into the buffer it appends to, so the step copies
the cache once, as a step without a reorder does. The values the attention reads are the same
ones, in the same layout, as after an eager reorder (``tests/test_folded_reorder.py``).

Only plain layers of a plain ``DynamicCache`` fold (every position kept, nothing else per row);
any other cache is reordered eagerly as before. :func:`settle` applies a pending reorder and gives
the layers their class back, before anything else than the forward pass reads the cache.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from .layer_class import retype

__all__ = ["fold_reorder", "settle"]


def _gather_then_append(past: torch.Tensor, rows: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """``torch.cat([past.index_select(0, rows), new], dim=-2)`` with one copy of ``past``."""
    length = past.shape[-2]
    shape = (rows.numel(), *past.shape[1:-2], length + new.shape[-2], past.shape[-1])
    out = past.new_empty(shape)
    torch.index_select(past, 0, rows, out=out[..., :length, :])
    out[..., length:, :] = new
    return out


class FoldedReorderLayer(DynamicLayer):
    """A ``DynamicLayer`` whose reorder waits for the next append (see the module)."""

    pending: Optional[torch.Tensor] = None

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self.keys is None or self.get_seq_length() == 0:
            return
        rows = beam_idx.to(self.keys.device)
        # Two reorders without an append between them compose (row i takes pending[rows[i]]).
        self.pending = rows if self.pending is None else self.pending.index_select(0, rows)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows, keys, values = self.pending, self.keys, self.values
        if rows is None or keys is None or values is None or self.get_seq_length() == 0:
            return super().update(key_states, value_states, *args, **kwargs)
        self.pending = None
        self.keys = keys = _gather_then_append(keys, rows, key_states)
        self.values = values = _gather_then_append(values, rows, value_states)
        return keys, values

    def settle(self) -> None:
        """Applies a pending reorder now."""
        rows, self.pending = self.pending, None
        if rows is not None and self.keys is not None and self.values is not None:
            self.keys = self.keys.index_select(0, rows)
            self.values = self.values.index_select(0, rows)

    # Whatever else reads or reshapes the rows sees them in their new order.
    def crop(self, tokens_to_remove: int) -> None:
        self.settle()
        super().crop(tokens_to_remove)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.settle()
        super().batch_repeat_interleave(repeats)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.settle()
        super().batch_select_indices(indices)


def fold_reorder(cache: Any, rows: torch.Tensor) -> bool:
    """Records the reorder of ``cache`` by ``rows`` for its next append; False (nothing done)
    where the cache is not a plain ``DynamicCache`` of plain layers."""
    layers = getattr(cache, "layers", None)
    if type(cache) is not DynamicCache or not layers:
        return False
    if not all(type(layer) in (DynamicLayer, FoldedReorderLayer) for layer in layers):
        return False
    for layer in layers:
        retype(layer, FoldedReorderLayer)
        # The gather makes new tensors: a growing layer's room (growing_cache.py) is of no more use.
        layer.__dict__.pop("room_keys", None)
        layer.__dict__.pop("room_values", None)
        layer.reorder_cache(rows)
    return True


def settle(cache: Any) -> None:
    """Applies the pending reorders of ``cache`` (a no-op for any other cache) and turns its
    layers back into transformers' ``DynamicLayer``, so that the caller gets its own type. An
    ``EncoderDecoderCache`` settles its self-attention half (the only one that folds)."""
    cache = getattr(cache, "self_attention_cache", cache)
    for layer in getattr(cache, "layers", None) or ():
        if type(layer) is FoldedReorderLayer:
            layer.settle()
            retype(layer, DynamicLayer)
            layer.__dict__.pop("pending", None)
