"""A decode step's 4-D attention mask, built by the adapter instead of by transformers.

Every forward call of a transformers decoder-only model turns the 2-D padding mask into the 4-D
mask its attention takes (``create_causal_mask`` / ``create_sliding_window_causal_mask``): about
0.25 ms of Python and small tensor ops per step, a twentieth of a batch-16 decode step of the
embedded model, for a mask that is, when one token per row is fed, just the padding mask over
the positions the cache hands attention: the new token sits after every cached position, so
causality masks nothing. transformers takes a 4-D mask as it is given (its documented "already
prepared" mask), so the adapter hands it that mask.

It must be the mask transformers would build, value for value, or the attention would differ.
For one new token after ``c`` cached positions, transformers sizes the mask from the cache layer
(``get_mask_sizes``: ``kv_length`` columns from ``kv_offset``; a full-attention layer gives
``c + 1`` from 0, a sliding-window layer, which keeps at most ``window - 1`` past positions,
``min(c, window - 1) + 1`` ending at the new one) and keeps column ``j`` where the 2-D mask is 1
and, for a sliding-window mask of ``window``, ``j > c - window``. That overlay masks nothing
unless ``kv_offset <= c - window``, which a sliding-window layer never reaches (its columns start
at ``c - window + 1``) and a full-attention layer does once ``c >= window``: then transformers'
own path runs. ``sdpa`` gets the boolean mask ``[rows, 1, 1, kv_length]``, or none where
transformers passes none (no column is padding and, for a window, ``kv_length < window``);
``eager`` the additive mask (0, or the dtype's minimum where masked).

Only families whose model builds its mask from the 2-D mask with those functions alone are
listed (chunked or ALiBi attention, or a mask per layer type over layers of different kinds,
build something else), only for a plain ``DynamicCache`` whose layers are all alike, and only
with the generic step inputs (a model with its own ``prepare_inputs_for_generation`` may build
its mask there).

An encoder-decoder decoder also turns the encoder's 2-D mask into a 4-D cross-attention mask
(``create_bidirectional_mask``) every step, though it only changes when the encoder's rows do
(a refill, a dropped row, a trim): the adapter builds it once per change (:func:`cross_mask`);
the decoder's own mask, where merged rows left it padding, as above.
``tests/test_decode_mask.py`` compares every step's logits, bit for bit, with transformers' own
masks.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

__all__ = ["cross_mask", "decode_mask", "decode_mask_kind", "decode_window", "seq2seq_mask_kind"]

#: Families whose decoder builds every layer's mask with ``create_causal_mask`` from the 2-D
#: mask and nothing else (checked against transformers 5.x's modeling files).
_PLAIN_CAUSAL = frozenset({
    "gpt2", "llama", "gpt_neox", "gemma", "granite", "olmo", "olmoe", "stablelm", "cohere", "phi",
})
#: Families whose decoder builds one mask for every layer: ``create_causal_mask``, or
#: ``create_sliding_window_causal_mask`` of ``config.sliding_window`` when that is set (and
#: whose attention only passes the window on to the attention function, which sdpa and eager
#: ignore: the mask carries it).
_WINDOWED = frozenset({"mistral", "mixtral", "starcoder2", "qwen3_moe"})
#: Families that build a mask per layer type (``config.layer_types``) unless handed a prepared
#: mask, which then serves every layer: listed for configs whose every layer is full attention
#: (Qwen's ``use_sliding_window=False``, as their released checkpoints have it).
_FULL_LAYER_TYPES = frozenset({"qwen2", "qwen3", "qwen2_moe"})
#: Encoder-decoder families whose decoder builds its own mask with ``create_causal_mask`` (of
#: its self-attention cache) and its cross-attention mask with ``create_bidirectional_mask``,
#: from the 2-D masks and nothing else.
_SEQ2SEQ = frozenset({"t5", "bart", "mbart", "pegasus", "marian"})


def decode_mask_kind(model: Any, own_steps: bool) -> Optional[str]:
    """``"sdpa"`` / ``"eager"`` when the adapter may build ``model``'s decode masks (see the
    module), None otherwise. ``own_steps``: the model has its own step inputs."""
    config = getattr(model, "config", None)
    if own_steps or config is None or not getattr(config, "is_causal", True):
        return None
    family = getattr(config, "model_type", None)
    if family in _PLAIN_CAUSAL:
        listed = getattr(config, "sliding_window", None) is None
    elif family in _FULL_LAYER_TYPES:
        listed = all(kind == "full_attention" for kind in getattr(config, "layer_types", None) or ["?"])
    else:
        listed = family in _WINDOWED
    kind = getattr(config, "_attn_implementation", None)
    return kind if listed and kind in ("sdpa", "eager") else None


def decode_window(model: Any) -> Optional[int]:
    """The sliding window of the mask ``model`` builds for every layer (None: a causal mask)."""
    config = model.config
    return getattr(config, "sliding_window", None) if config.model_type in _WINDOWED else None


def decode_mask(
    kind: str, mask: torch.Tensor, cache: Any, dtype: torch.dtype, window: Optional[int] = None
) -> Optional[torch.Tensor]:
    """The 4-D mask transformers builds for one new token per row from the 2-D ``mask`` (which
    covers the cached positions and the new one), with a sliding ``window`` or none, or None
    where transformers' own path must run: ``sdpa`` where it passes no mask, a window that masks
    cached positions, or a cache that is not a plain ``DynamicCache`` of like layers (sliding
    ones of ``window`` only) holding ``mask``'s columns less the new one."""
    from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

    if type(cache) is not DynamicCache or not cache.layers:
        return None
    layer = cache.layers[0]
    if type(layer) is DynamicSlidingWindowLayer:
        if window is None or any(type(other) is not type(layer) or other.sliding_window != window for other in cache.layers):
            return None
    elif type(layer) is not DynamicLayer or any(type(other) is not DynamicLayer for other in cache.layers):
        return None
    cached = layer.get_seq_length()
    kv_length, kv_offset = layer.get_mask_sizes(1)
    if cached + 1 != mask.shape[-1] or kv_offset + kv_length != mask.shape[-1]:
        return None
    if window is not None and kv_offset <= cached - window:  # the window masks cached positions
        return None
    padding = mask[:, kv_offset:].to(dtype=torch.bool).contiguous()[:, None, None, :]
    if kind == "sdpa":
        skip = window is None or kv_length < window
        return None if skip and bool(padding.all()) else padding
    return torch.where(padding, torch.zeros((), device=mask.device, dtype=dtype), torch.finfo(dtype).min)


def seq2seq_mask_kind(model: Any) -> Optional[str]:
    """``"sdpa"`` / ``"eager"`` when the adapter may build an encoder-decoder ``model``'s decode
    masks (its decoder's own, with :func:`decode_mask`, and the cross-attention ones)."""
    config = getattr(model, "config", None)
    kind = getattr(config, "_attn_implementation", None)
    listed = getattr(config, "model_type", None) in _SEQ2SEQ and getattr(config, "is_causal", True)
    return kind if listed and kind in ("sdpa", "eager") else None


def cross_mask(kind: str, mask: torch.Tensor, dtype: torch.dtype) -> Optional[torch.Tensor]:
    """The 4-D cross-attention mask transformers builds from the encoder's 2-D ``mask`` for one
    new token per row (every encoder position where ``mask`` is 1; ``dtype``: the encoder
    outputs'), or None where it builds none (no padding: sdpa and eager then take no mask)."""
    padding = mask.to(dtype=torch.bool).contiguous()[:, None, None, :]
    if bool(padding.all()):
        return None
    if kind == "sdpa":
        return padding
    return torch.where(padding, torch.zeros((), device=mask.device, dtype=dtype), torch.finfo(dtype).min)
