"""What every strategy receives: one request, decided once before the loop starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch

from .. import _core
from ..config import GenerationConfig
from ..models import ModelAdapter
from ..processors import encoder_ids, prompt_ignore_lengths
from ..samplers import with_resolved_breakers
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
        # A beam tree has nowhere to go but the output object, so asking for one asks for that.
        return bool(self.config.return_dict_in_generate or self.config.output_beam_tree)

    @property
    def keep_scores(self) -> bool:
        return self.return_dict and bool(self.config.output_scores)

    @property
    def keep_logits(self) -> bool:
        return self.return_dict and bool(self.config.output_logits)


def core_settings(request: GenerationRequest, *, seed: Optional[int] = None,
                  seed_prompts: Optional[list[list[int]]] = None,
                  row_seeds: Optional[list[int]] = None,
                  grammar: Optional[Any] = None) -> _core.GenerationSettings:
    """The settings of this generation as the Rust core reads them, checked once.

    The core reads the config's fields by name; this adds what the call resolved (EOS ids, the
    total lengths, the pad token, the vocabulary size) and the inputs transformers gives its
    processors (encoder input ids, left-padding lengths from the attention mask). A user logits
    processor of the same transformers class as one the config would build replaces it, as in
    transformers' ``generate`` (the user's one runs in the user-processor position).
    ``grammar``: the rows' ``GrammarMatchers`` (``ferrogen.grammar.matchers_for``), if any;
    ``prefix_allowed_tokens_fn`` comes from ``request.extras["prefix_allowed"]``.
    """
    ignore = None if request.adapter.is_encoder_decoder else prompt_ignore_lengths(request.attention_mask)
    return _core.GenerationSettings(
        with_resolved_breakers(request.config, request.tokenizer), eos_token_ids=request.eos_token_ids, min_length=request.min_length,
        max_length=request.max_length, pad_token_id=request.pad_token_id, vocab_size=request.vocab_size,
        encoder_input_ids=encoder_ids(request.input_ids), prompt_ignore_lengths=ignore, seed=seed,
        seed_prompts=seed_prompts, row_seeds=row_seeds, grammar=grammar,
        prefix_allowed=request.extras.get("prefix_allowed"),
        turned_off=[type(proc).__name__ for proc in request.logits_processors])


def as_int64(array: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(array.detach().to("cpu", torch.int64).numpy())
