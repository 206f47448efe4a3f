"""Writing new prompts' KV caches into a running batch's (continuous batching, :mod:`ferrogen.engine`).

A group of new prompts is prefilled on its own; as rows of the running batch finish, rows of
the group are written into their places, in place: every layer's keys and values right-aligned
with the running batch's columns (padded with zeros on the left, masked out, or their own
leading padding cut), the attention masks and positions likewise. Positions are per row
(position ids from the mask, as transformers computes them), so a row sees exactly what it
saw alone. The rows still running are not moved; only a new row longer than the cache widens
it (a copy). Columns that are padding in every row are trimmed from the front (and, for an
encoder-decoder model, encoder columns from the back), so the cache does not grow without
bound as rows come and go.

Only caches whose every layer keeps all positions can be written this way: transformers'
``DynamicCache`` (and ``EncoderDecoderCache`` of two of them) of ``DynamicLayer`` layers.
A sliding-window layer keeps a window per batch, and an SSM or hybrid model keeps a state
that left padding changes: those batches only shrink (:func:`why_unmergeable`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Optional

import torch

from .folded_reorder import settle

if TYPE_CHECKING:
    from .models import DecoderOnlyAdapter, EncoderDecoderAdapter

__all__ = ["Side", "fit_columns", "padding_columns", "replace_decoder_rows", "replace_seq2seq_rows",
           "trim_decoder_padding", "trim_encoder_padding", "trim_layers", "trim_seq2seq_padding", "widen_layers",
           "why_unmergeable", "write_layers", "zero_pad"]

Side = Literal["left", "right"]
"""Which end of a dimension padding goes to."""


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


def zero_pad(tensor: torch.Tensor, width: int, dim: int, side: Side) -> torch.Tensor:
    """``tensor`` with zeros on ``side`` along ``dim`` up to ``width`` (itself when it is that wide)."""
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    zeros = tensor.new_zeros(shape)
    return torch.cat([zeros, tensor] if side == "left" else [tensor, zeros], dim=dim)


def fit_columns(tensor: torch.Tensor, width: int, dim: int, side: Side) -> torch.Tensor:
    """``tensor`` cut or zero-padded on ``side`` to ``width`` along ``dim`` (what is cut must be
    padding)."""
    length = int(tensor.shape[dim])
    if length > width:
        return tensor.narrow(dim, length - width if side == "left" else 0, width)
    return zero_pad(tensor, width, dim, side)


def widen_layers(cache: Any, width: int, side: Side) -> None:
    """Pads every layer of a dynamic cache with zeros on ``side`` up to ``width`` positions."""
    for layer in cache.layers:
        layer.keys = zero_pad(layer.keys, width, 2, side)
        layer.values = zero_pad(layer.values, width, 2, side)


def write_layers(cache: Any, slots: torch.Tensor, other: Any, rows: torch.Tensor, width: int, side: Side) -> None:
    """Writes rows ``rows`` of dynamic cache ``other`` into rows ``slots`` of ``cache``, in place,
    every layer fitted to ``width`` positions on ``side``."""
    for mine, theirs in zip(cache.layers, other.layers):
        for name in ("keys", "values"):
            block = fit_columns(getattr(theirs, name).index_select(0, rows), width, 2, side)
            getattr(mine, name).index_copy_(0, slots, block)


def padding_columns(mask: torch.Tensor, side: Side = "left") -> int:
    """How many columns of ``mask`` ([rows, length]) on ``side`` are padding in every row."""
    real = mask.bool().any(dim=0)
    if not bool(real.any()):
        return 0
    return int((real if side == "left" else real.flip(0)).long().argmax())


def trim_layers(cache: Any, columns: int, side: Side = "left") -> None:
    """Drops ``columns`` positions on ``side`` of every layer of a dynamic cache."""
    if columns <= 0:
        return
    for layer in cache.layers:
        kept = slice(columns, None) if side == "left" else slice(None, layer.keys.shape[2] - columns)
        layer.keys = layer.keys[:, :, kept]
        layer.values = layer.values[:, :, kept]


def _ones(rows: int, length: int, device: torch.device) -> torch.Tensor:
    return torch.ones((rows, length), dtype=torch.long, device=device)


def _rows(mask: Optional[torch.Tensor], rows: int, length: int, device: torch.device) -> torch.Tensor:
    """A mask ``[rows, length]`` as a tensor (None: all ones)."""
    return mask if mask is not None else _ones(rows, length, device)


def _write_rows(cache: Any, other: Any, slots: torch.Tensor, rows: torch.Tensor, side: Side,
                pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """Writes rows ``rows`` of dynamic cache ``other`` into rows ``slots`` of ``cache`` in place,
    with the per-row tensors that go with it: ``pairs`` of ``(ours, theirs)``, ``[rows, columns,
    ...]`` each, the attention masks first. The new rows are aligned on the side away from
    ``side`` (padded or cut on ``side``); when one is longer than ``cache``, ``cache`` and ours
    are widened on ``side`` first. Returns ours (the widened ones where they were)."""
    theirs_mask = pairs[0][1].index_select(0, rows)
    width = int(pairs[0][0].shape[1])
    need = int(theirs_mask.shape[1]) - padding_columns(theirs_mask, side)
    ours = [mine for mine, _ in pairs]
    if need > width:
        widen_layers(cache, need, side)
        ours, width = [zero_pad(mine, need, 1, side) for mine in ours], need
    write_layers(cache, slots, other, rows, width, side)
    for mine, (_, theirs) in zip(ours, pairs):
        mine.index_copy_(0, slots, fit_columns(theirs.index_select(0, rows), width, 1, side))
    return ours


def replace_decoder_rows(a: DecoderOnlyAdapter, slots: torch.Tensor, b: DecoderOnlyAdapter, rows: torch.Tensor) -> None:
    """Writes rows ``rows`` of decoder-only adapter ``b`` (prefilled, not advanced) into rows
    ``slots`` of ``a``, in place: cache, mask and positions, right-aligned with ``a``'s columns
    (padded, or their leading padding cut, on the left); then all-padding columns go."""
    settle(a._cache)
    settle(b._cache)
    assert a._positions is not None and b._positions is not None
    masks = [_rows(x._mask, int(p.shape[0]), x._cache.get_seq_length(), x.device)
             for x, p in ((a, a._positions), (b, b._positions))]
    a._mask, a._positions = _write_rows(a._cache, b._cache, slots, rows, "left",
                                        [(masks[0], masks[1]), (a._positions, b._positions)])
    trim_decoder_padding(a)


def trim_decoder_padding(a: DecoderOnlyAdapter) -> None:
    """Drops leading positions that are padding in every row (and the mask when none is left,
    as transformers drops an all-ones mask)."""
    if a._mask is None:
        return
    columns = padding_columns(a._mask)
    settle(a._cache)
    trim_layers(a._cache, columns)
    a._mask = a._mask[:, columns:]
    if a._positions is not None:
        a._positions = a._positions[:, columns:]
    if bool((a._mask == 1).all()):
        a._mask = None


def replace_seq2seq_rows(a: EncoderDecoderAdapter, slots: torch.Tensor, b: EncoderDecoderAdapter,
                         rows: torch.Tensor) -> None:
    """Writes rows ``rows`` of encoder-decoder adapter ``b`` (prefilled, not advanced) into rows
    ``slots`` of ``a``, in place: the decoder's cache and mask right-aligned (padded on the
    left), the encoder's outputs, mask and cross-attention cache left-aligned (padded after:
    cross-attention has no positions, so the side does not matter); then all-padding columns go."""
    settle(a._cache)
    settle(b._cache)
    encoded = [x._encoder_outputs.last_hidden_state for x in (a, b)]
    caches = [x._cache for x in (a, b)]
    decoder = [_rows(x._decoder_mask, int(e.shape[0]), c.self_attention_cache.get_seq_length(), x.device)
               for x, e, c in zip((a, b), encoded, caches)]
    (a._decoder_mask,) = _write_rows(caches[0].self_attention_cache, caches[1].self_attention_cache, slots, rows,
                                     "left", [(decoder[0], decoder[1])])
    encoder = [_rows(x._encoder_mask, int(e.shape[0]), int(e.shape[1]), x.device) for x, e in zip((a, b), encoded)]
    a._encoder_mask, hidden = _write_rows(caches[0].cross_attention_cache, caches[1].cross_attention_cache, slots,
                                          rows, "right", [(encoder[0], encoder[1]), (encoded[0], encoded[1])])
    a._encoder_outputs["last_hidden_state"] = hidden
    trim_seq2seq_padding(a)


def trim_seq2seq_padding(a: EncoderDecoderAdapter) -> None:
    """Drops leading decoder positions and trailing encoder positions that are padding in every
    row, so neither side stays as wide as the longest prompt ever merged once it has left."""
    trim_encoder_padding(a)
    if a._decoder_mask is None:
        return
    columns = padding_columns(a._decoder_mask)
    settle(a._cache)
    trim_layers(a._cache.self_attention_cache, columns)
    a._decoder_mask = a._decoder_mask[:, columns:]
    if bool((a._decoder_mask == 1).all()):
        a._decoder_mask = None


def trim_encoder_padding(a: EncoderDecoderAdapter) -> None:
    """Drops the encoder positions after the last real one of every row (the side the merge
    pads): from the encoder's outputs, its mask and every cross-attention layer. A masked
    position adds nothing to cross-attention, so the rows attend to what they did before."""
    cross = getattr(a._cache, "cross_attention_cache", None)
    if a._encoder_mask is None or cross is None or why_unmergeable(cross) is not None:
        return
    columns = padding_columns(a._encoder_mask, "right")
    if columns <= 0:
        return
    width = int(a._encoder_mask.shape[1]) - columns
    settle(a._cache)
    trim_layers(cross, columns, "right")
    a._encoder_mask = a._encoder_mask[:, :width]
    a._encoder_outputs["last_hidden_state"] = a._encoder_outputs.last_hidden_state[:, :width]
