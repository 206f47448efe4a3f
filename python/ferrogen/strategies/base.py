"""What every strategy receives: one request, decided once before the loop starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..config import GenerationConfig
from ..models import ModelAdapter
from ..processors import config_settings, encoder_ids, prompt_ignore_lengths
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
    """The processor settings the Rust core reads (names as in ``GenerationConfig``).

    Besides the config: the inputs transformers gives its processors (encoder input ids,
    left-padding lengths from the attention mask, ``max_length``). A user logits processor
    of the same transformers class as one the config would build replaces it, as in
    transformers' ``generate`` (the user's one runs in the user-processor position).
    """
    cfg = request.config
    settings = config_settings(
        cfg, eos_token_ids=request.eos_token_ids, min_length=request.min_length, max_length=request.max_length
    )
    settings["encoder_input_ids"] = encoder_ids(request.input_ids)
    settings["vocab_size"] = request.vocab_size
    if not request.adapter.is_encoder_decoder:
        settings["prompt_ignore_lengths"] = prompt_ignore_lengths(request.attention_mask)
    for proc in request.logits_processors:
        settings.update(_REPLACED_BY.get(type(proc).__name__, {}))
    return settings


# transformers processor class -> the settings that turn ferrogen's own copy off.
_REPLACED_BY: dict[str, dict[str, Any]] = {
    "SequenceBiasLogitsProcessor": {"sequence_bias": None},
    "EncoderRepetitionPenaltyLogitsProcessor": {"encoder_repetition_penalty": 1.0},
    "RepetitionPenaltyLogitsProcessor": {"repetition_penalty": 1.0},
    "NoRepeatNGramLogitsProcessor": {"no_repeat_ngram_size": 0},
    "EncoderNoRepeatNGramLogitsProcessor": {"encoder_no_repeat_ngram_size": 0},
    "NoBadWordsLogitsProcessor": {"bad_words_ids": None},
    "MinLengthLogitsProcessor": {"min_length": 0},
    "MinNewTokensLengthLogitsProcessor": {"min_new_tokens": 0},
    "ForcedBOSTokenLogitsProcessor": {"forced_bos_token_id": None},
    "ForcedEOSTokenLogitsProcessor": {"forced_eos_token_id": None},
    "InfNanRemoveLogitsProcessor": {"remove_invalid_values": False},
    "ExponentialDecayLengthPenalty": {"exponential_decay_length_penalty": None},
    "SuppressTokensLogitsProcessor": {"suppress_tokens": None},
    "SuppressTokensAtBeginLogitsProcessor": {"begin_suppress_tokens": None},
    "TemperatureLogitsWarper": {"temperature": 1.0},
    "TopHLogitsWarper": {"top_h": None},
    "TopKLogitsWarper": {"top_k": 0},
    "TopPLogitsWarper": {"top_p": 1.0},
    "MinPLogitsWarper": {"min_p": None},
    "TypicalLogitsWarper": {"typical_p": 1.0},
    "EpsilonLogitsWarper": {"epsilon_cutoff": 0.0},
    "EtaLogitsWarper": {"eta_cutoff": 0.0},
    "LogitNormalization": {"renormalize_logits": False},
}


def as_int64(array: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(array.detach().to("cpu", torch.int64).numpy())
