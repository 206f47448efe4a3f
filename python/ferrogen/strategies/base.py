"""What every strategy receives: one request, decided once before the loop starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..config import GenerationConfig
from ..models import ModelAdapter
from ..stopping import StoppingCriterion

__all__ = ["GenerationRequest", "core_settings"]


@dataclass
class GenerationRequest:
    """Inputs and settings of one ``generate`` call, resolved and validated.

    ``prompt_ids`` is what the core's history starts from: the prompt for decoder-only
    models, the decoder start tokens for encoder-decoder ones. ``max_length`` and
    ``min_length`` are totals over that history, as in transformers.
    """

    adapter: ModelAdapter
    config: GenerationConfig
    input_ids: torch.Tensor
    attention_mask: Optional[torch.Tensor]
    prompt_ids: torch.Tensor
    max_length: int
    min_length: int
    pad_token_id: int
    eos_token_ids: list[int]
    criteria: Sequence[StoppingCriterion] = ()
    logits_processors: Sequence[Any] = ()
    streamer: Optional[Any] = None
    tokenizer: Optional[Any] = None
    vocab_size: Optional[int] = None
    model: Any = None
    assistant_model: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def return_dict(self) -> bool:
        return bool(self.config.return_dict_in_generate)

    @property
    def keep_scores(self) -> bool:
        return self.return_dict and bool(self.config.output_scores)

    @property
    def keep_logits(self) -> bool:
        return self.return_dict and bool(self.config.output_logits)


def core_settings(request: GenerationRequest) -> dict[str, Any]:
    """The processor settings the Rust core reads (names as in ``GenerationConfig``)."""
    cfg = request.config
    return {
        "eos_token_ids": request.eos_token_ids,
        "min_length": request.min_length,
        "min_new_tokens": cfg.min_new_tokens or 0,
    }


def as_int64(array: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(array.detach().to("cpu", torch.int64).numpy())
