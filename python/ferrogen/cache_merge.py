"""Merging the KV caches of two batches into one (continuous batching, :mod:`ferrogen.engine`).

A batch of new prompts is prefilled on its own, then joined to the running batch: every
layer's keys and values are padded on the left to the common length (zeros, masked out) and
concatenated along the rows; the attention masks get the same padding (zeros). Positions are
per row (position ids from the mask, as transformers computes them), so a row sees exactly
what it saw before the merge. Columns that are padding in every row are trimmed from the
front (and, for an encoder-decoder model, encoder columns from the back), so the cache does
not grow without bound as rows come and go.

Only caches whose every layer keeps all positions can be merged this way: transformers'
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

__all__ = ["Side", "append_decoder_rows", "append_seq2seq_rows", "merge_layers", "padding_columns",
           "trim_decoder_padding", "trim_encoder_padding", "trim_layers", "trim_seq2seq_padding", "why_unmergeable",
           "zero_pad"]

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


def merge_layers(a: Any, b: Any, width: int, side: Side = "left") -> None:
    """Appends the rows of dynamic cache ``b`` to ``a``, every layer padded to ``width``
    positions on ``side`` (the right for cross-attention over encoder outputs, whose padding
    side is the tokenizer's)."""
    for mine, theirs in zip(a.layers, b.layers):
        mine.keys = torch.cat([zero_pad(t.keys, width, 2, side) for t in (mine, theirs)], dim=0)
        mine.values = torch.cat([zero_pad(t.values, width, 2, side) for t in (mine, theirs)], dim=0)


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


def append_decoder_rows(a: DecoderOnlyAdapter, b: DecoderOnlyAdapter) -> None:
    """Appends the rows of decoder-only adapter ``b`` (prefilled on its own) after those of ``a``:
    cache and mask padded on the left, positions per row, then all-padding columns trimmed."""
    settle(a._cache)
    settle(b._cache)
    assert a._positions is not None and b._positions is not None
    lengths = [x._cache.get_seq_length() for x in (a, b)]
    width = max(lengths)
    # Before the merge: a missing mask covers the cache as it was.
    rows = [int(a._positions.shape[0]), int(b._positions.shape[0])]
    masks = [x._mask if x._mask is not None else _ones(r, n, a.device) for x, r, n in zip((a, b), rows, lengths)]
    merge_layers(a._cache, b._cache, width)
    a._mask = torch.cat([zero_pad(m, width, 1, "left") for m in masks], dim=0)
    a._positions = torch.cat([zero_pad(p, width, 1, "left") for p in (a._positions, b._positions)], dim=0)
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


def append_seq2seq_rows(a: EncoderDecoderAdapter, b: EncoderDecoderAdapter) -> None:
    """Appends the rows of encoder-decoder adapter ``b`` after those of ``a``: the decoder's cache
    and mask padded on the left; the encoder's outputs, mask and cross-attention cache padded
    after (cross-attention has no positions, so the side does not matter)."""
    settle(a._cache)
    settle(b._cache)
    lengths = [x._cache.get_seq_length() for x in (a, b)]
    width = max(lengths)
    encoded = [x._encoder_outputs.last_hidden_state for x in (a, b)]
    masks = [x._decoder_mask if x._decoder_mask is not None else _ones(int(e.shape[0]), n, a.device)
             for x, e, n in zip((a, b), encoded, lengths)]  # before the merge
    merge_layers(a._cache.self_attention_cache, b._cache.self_attention_cache, width)
    a._decoder_mask = torch.cat([zero_pad(m, width, 1, "left") for m in masks], dim=0)
    source = max(int(e.shape[1]) for e in encoded)
    merge_layers(a._cache.cross_attention_cache, b._cache.cross_attention_cache, source, side="right")
    enc_masks = [x._encoder_mask if x._encoder_mask is not None else _ones(int(e.shape[0]), int(e.shape[1]), a.device)
                 for x, e in zip((a, b), encoded)]
    a._encoder_mask = torch.cat([zero_pad(m, source, 1, "right") for m in enc_masks], dim=0)
    a._encoder_outputs["last_hidden_state"] = torch.cat([zero_pad(e, source, 1, "right") for e in encoded], dim=0)
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
