"""A decode step's 4-D attention mask, built by the adapter instead of by transformers.

Every forward call of a transformers decoder-only model turns the 2-D padding mask into the 4-D
mask its attention takes (``create_causal_mask``): about 0.25 ms of Python and small tensor ops
per step, a twentieth of a batch-16 decode step of the embedded model, for a mask that is, when
one token per row is fed against a full-attention cache, just the padding mask: the new token
sits after every cached position, so causality masks nothing. transformers takes a 4-D mask
as it is given (its documented "already prepared" mask), so the adapter hands it that mask.

It must be the mask transformers would build, value for value, or the attention would differ:
``sdpa`` gets the boolean padding mask ``[rows, 1, 1, columns]`` (and transformers' own path
when no column is padding, where it passes no mask at all), ``eager`` the additive mask (0, or
the dtype's minimum where masked). Only families whose model builds its mask with plain
``create_causal_mask`` for every layer are listed (a family with sliding-window, chunked or
ALiBi attention builds something else from the 2-D mask), only for a plain ``DynamicCache``
of full-attention layers, and only with the generic step inputs (a model with its own
``prepare_inputs_for_generation`` may build its mask there). ``tests/test_decode_mask.py``
compares every step's logits, bit for bit, with transformers' own masks.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

__all__ = ["decode_mask", "decode_mask_kind"]

#: Families whose decoder builds every layer's mask with ``create_causal_mask`` from the 2-D
#: mask and nothing else (checked against transformers 5.x's modeling files).
_PLAIN_CAUSAL = frozenset({"gpt2", "llama", "gpt_neox", "gemma", "granite", "olmo", "stablelm", "cohere", "phi"})


def decode_mask_kind(model: Any, own_steps: bool) -> Optional[str]:
    """``"sdpa"`` / ``"eager"`` when the adapter may build ``model``'s decode masks (see the
    module), None otherwise. ``own_steps``: the model has its own step inputs."""
    config = getattr(model, "config", None)
    if own_steps or config is None or getattr(config, "model_type", None) not in _PLAIN_CAUSAL:
        return None
    if not getattr(config, "is_causal", True) or getattr(config, "sliding_window", None) is not None:
        return None
    kind = getattr(config, "_attn_implementation", None)
    return kind if kind in ("sdpa", "eager") else None


def decode_mask(kind: str, mask: torch.Tensor, cache: Any, dtype: torch.dtype) -> Optional[torch.Tensor]:
    """The 4-D mask transformers builds for one new token per row from the 2-D ``mask`` (which
    covers the cached positions and the new one), or None where transformers' own path must
    run: ``sdpa`` with no padding (it then passes no mask), or a cache that is not a plain
    ``DynamicCache`` of full-attention layers as wide as ``mask`` less the new column."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    if type(cache) is not DynamicCache or any(type(layer) is not DynamicLayer for layer in cache.layers):
        return None
    if cache.get_seq_length() + 1 != mask.shape[-1]:
        return None
    padding = mask.to(dtype=torch.bool)[:, None, None, :]
    if kind == "sdpa":
        return None if bool(padding.all()) else padding
    return torch.where(padding, torch.zeros((), device=mask.device, dtype=dtype), torch.finfo(dtype).min)
