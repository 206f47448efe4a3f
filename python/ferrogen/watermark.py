"""Scoring text for the SynthID watermark, natively.

transformers' ``SynthIDTextWatermarkDetector`` scores tokens through three methods of
``SynthIDTextWatermarkLogitsProcessor``: ``compute_g_values``, ``compute_context_repetition_mask``
and ``compute_eos_token_mask``. The functions here compute the same tensors (same shapes and
dtypes) in ferrogen's Rust core from the ``SynthIDTextWatermarkingConfig`` (or its dict) the text
was generated with, and :func:`synthid_mean_g_value` gives the simplest score built on them, the
mean g-value (0.5 expected on unwatermarked text, above it on watermarked text).

Example:
    >>> import torch
    >>> from transformers import SynthIDTextWatermarkingConfig
    >>> config = SynthIDTextWatermarkingConfig(keys=[654, 400, 836], ngram_len=3)
    >>> synthid_g_values(torch.tensor([[5, 6, 7, 8]]), config).shape
    torch.Size([1, 2, 3])
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from . import _core

__all__ = [
    "is_synthid",
    "synthid_context_repetition_mask",
    "synthid_eos_token_mask",
    "synthid_g_values",
    "synthid_mean_g_value",
]


def is_synthid(watermarking_config: object) -> bool:
    """Whether a ``watermarking_config`` (object or dict) is SynthID's rather than the green
    list's (transformers tells them apart by ``ngram_len``, as here)."""
    if isinstance(watermarking_config, dict):
        return "ngram_len" in watermarking_config
    return hasattr(watermarking_config, "ngram_len")


def _ids(input_ids: Any) -> np.ndarray:
    ids = torch.as_tensor(input_ids).detach().cpu()
    if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"input_ids: must be integer token ids of shape [rows, length], got {ids.dtype} "
                         f"{list(ids.shape)}")
    return np.ascontiguousarray(ids.to(torch.int64).numpy())


def synthid_g_values(input_ids: Any, watermarking_config: Any) -> torch.Tensor:
    """transformers' ``compute_g_values``: int64 ``[rows, length - ngram_len + 1, depth]``, the
    g-value of every n-gram of every row at every depth (one per key)."""
    return torch.from_numpy(_core.synthid_g_values(watermarking_config, _ids(input_ids)))


def synthid_context_repetition_mask(input_ids: Any, watermarking_config: Any) -> torch.Tensor:
    """transformers' ``compute_context_repetition_mask``: bool ``[rows, length - ngram_len + 1]``,
    False where the n-gram's context was among the row's last ``context_history_size``."""
    return torch.from_numpy(_core.synthid_context_repetition_mask(watermarking_config, _ids(input_ids)))


def synthid_eos_token_mask(input_ids: Any, eos_token_id: int) -> torch.Tensor:
    """transformers' ``compute_eos_token_mask``: bool ``[rows, length]``, False from each row's first
    ``eos_token_id`` on."""
    return torch.from_numpy(_core.synthid_eos_token_mask(_ids(input_ids), _eos_id(eos_token_id)))


def _eos_id(eos_token_id: Any) -> int:
    """``eos_token_id`` as the core's int64 (checked here too: a numpy or torch int is converted first)."""
    value = int(eos_token_id)
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"eos_token_id: expected an int64 (in [-2**63, 2**63)), got {value}")
    return value


def synthid_mean_g_value(input_ids: Any, watermarking_config: Any,
                         eos_token_id: Optional[int] = None) -> torch.Tensor:
    """Per row, the mean g-value over every depth of the n-grams transformers' detector counts
    (context not repeated, before the first ``eos_token_id``): float64 ``[rows]``, NaN for a row
    with none. Unwatermarked text has g-values that are fair coin flips (mean 0.5)."""
    ids = _ids(input_ids)
    g = synthid_g_values(ids, watermarking_config).double()
    mask = synthid_context_repetition_mask(ids, watermarking_config)
    if eos_token_id is not None:
        ngram_len = ids.shape[1] - g.shape[1] + 1
        mask = mask & synthid_eos_token_mask(ids, eos_token_id)[:, ngram_len - 1:]
    weights = mask.double().unsqueeze(-1).expand_as(g)
    return (g * weights).sum(dim=(1, 2)) / weights.sum(dim=(1, 2))
