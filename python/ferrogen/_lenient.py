"""Settings transformers' ``generate`` takes with a warning and :func:`ferrogen.generate` refuses.

Under :func:`ferrogen.enable` / :func:`ferrogen.patched` a call must go on as transformers'
would, so these are read here as transformers reads them (``GenerationConfig.validate`` and
``GenerationMixin._prepare_special_tokens`` of transformers 5.x), with transformers' own warning
on transformers' own logger; :func:`ferrogen.generate` stays strict and its errors name the flag.

- A negative special token id (``pad_token_id=-1`` is transformers' "no padding", an
  ``eos_token_id`` of ``-1`` "never stop") is kept as it is: no token matches it, and a finished
  row padded with it fails in the model as it does in transformers.
- Sampling-only flags out of range while not sampling (``top_p=1.5`` with greedy) are never
  read, so they are dropped.
- ``penalty_alpha`` with ``do_sample=True`` or ``num_beams > 1`` selects sampling or beam
  search in transformers, which never reads it: dropped.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Optional

import torch

from . import _validation as _v
from .config import GenerationConfig
from .generate import _resolve_config

__all__ = ["resolve_config", "warn_right_padding"]

SPECIAL_TOKENS = ("pad_token_id", "eos_token_id", "bos_token_id", "decoder_start_token_id")
SAMPLING_ONLY = ("temperature", "top_p", "min_p", "top_h", "typical_p", "top_k", "epsilon_cutoff", "eta_cutoff")


class _Layer:
    """One source of settings (the model's config, the call's config, the call's keywords), lowest first."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def get(self, name: str) -> Any:
        if isinstance(self.source, dict):
            return self.source.get(name)
        return getattr(self.source, name, None)

    def drop(self, name: str) -> None:
        if isinstance(self.source, dict):
            self.source.pop(name, None)
        elif not isinstance(self.source, GenerationConfig):  # a validated ferrogen config holds no such value
            setattr(self.source, name, None)


def resolve_config(model: Any, generation_config: Any, settings: dict[str, Any]) -> GenerationConfig:
    """The call's :class:`GenerationConfig` as transformers' ``generate`` reads it, leniencies included."""
    given_is_ours = isinstance(generation_config, GenerationConfig)
    model_config = None if given_is_ours else copy.deepcopy(getattr(model, "generation_config", None))
    if generation_config is not None and not given_is_ours and hasattr(generation_config, "to_dict"):
        generation_config = copy.deepcopy(generation_config)  # the caller's object stays as it was
    settings = dict(settings)
    layers = [_Layer(s) for s in (model_config, generation_config, settings) if s is not None]
    negative = _take_negative_ids(layers)
    issues = [name for name in ("pad_token_id",) if name in negative]
    issues += _drop_unread(layers)
    base = GenerationConfig.from_transformers(model_config) if model_config is not None else None
    config = _resolve_config(model, generation_config, settings, base=base)
    for name, value in negative.items():  # transformers keeps them; ferrogen's checks would refuse them
        setattr(config, name, value)
    if "eos_token_id" in negative:
        eos = negative["eos_token_id"]
        eos = eos if isinstance(eos, list) else [eos]
        if config.pad_token_id is None:  # transformers pads with eos_token_id[0], negative or not
            config.pad_token_id = eos[0]
        config.eos_token_id = [i for i in eos if i >= 0]  # a negative id never matches a token
    if "bos_token_id" in negative and "decoder_start_token_id" not in negative and _effective(
        layers, "decoder_start_token_id"
    ) is None and getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        config.decoder_start_token_id = negative["bos_token_id"]
    _warn_like_transformers(issues, negative.get("eos_token_id"))
    return config


def _effective(layers: list[_Layer], name: str) -> Any:
    for layer in reversed(layers):
        value = layer.get(name)
        if value is not None:
            return value
    return None


def _is_negative(value: Any) -> bool:
    ids = value if isinstance(value, (list, tuple)) else [value]
    return any(_v._is_int(i) and i < 0 for i in ids)


def _take_negative_ids(layers: list[_Layer]) -> dict[str, Any]:
    """Negative special token ids, taken out of every layer; a later layer's valid id wins."""
    negative: dict[str, Any] = {}
    for layer in layers:
        for name in SPECIAL_TOKENS:
            value = layer.get(name)
            if value is None:
                continue
            if _is_negative(value):
                negative[name] = list(value) if isinstance(value, tuple) else value
                layer.drop(name)
            else:
                negative.pop(name, None)
    return negative


def _drop_unread(layers: list[_Layer]) -> list[str]:
    """Drops what transformers never reads in the mode it picks; returns the flags it warns about."""
    sampling = _effective(layers, "do_sample") is True
    beams = (_effective(layers, "num_beams") or 1) > 1
    alpha = _effective(layers, "penalty_alpha")
    issues: list[str] = []
    if alpha is not None and (sampling or beams):
        for layer in layers:
            layer.drop("penalty_alpha")
        alpha = None
    if sampling:
        return issues
    contrastive = alpha is not None and _v._is_real(alpha) and alpha > 0
    for name in SAMPLING_ONLY:
        if name == "top_k" and contrastive:
            continue  # contrastive search reads top_k: ferrogen's check stands
        for layer in layers:
            value = layer.get(name)
            if value is not None and not _valid(name, value):
                layer.drop(name)
                issues.append(name)
    return list(dict.fromkeys(issues))


def _valid(name: str, value: Any) -> bool:
    """Whether ferrogen takes ``name=value`` (its field check and the core's range check)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            GenerationConfig(**{name: value})
    except (TypeError, ValueError):
        return False
    return True


def _warn_like_transformers(issues: list[str], eos: Optional[Any]) -> None:
    from transformers.utils import logging

    if issues:
        logging.get_logger("transformers.generation.configuration_utils").warning_once(
            f"The following generation flags are not valid and may be ignored: {issues}. "
            "Set `TRANSFORMERS_VERBOSITY=info` for more details."
        )
    if eos is not None:
        eos_tensor = torch.tensor(eos if isinstance(eos, list) else [eos], dtype=torch.long)
        logging.get_logger("transformers.generation.utils").warning(
            f"`eos_token_id` should consist of positive integers, but is {eos_tensor}. Your generation will not "
            "stop until the maximum length is reached. Depending on other flags, it may even crash."
        )


def warn_right_padding(model: Any, input_ids: Any, attention_mask: Any, pad_token_id: Optional[int]) -> None:
    """transformers' warning for a decoder-only batch padded on the right (it generates anyway)."""
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False) or not isinstance(input_ids, torch.Tensor):
        return
    if input_ids.dim() != 2 or input_ids.shape[0] <= 1 or pad_token_id is None:
        return
    if isinstance(attention_mask, torch.Tensor) and attention_mask.shape == input_ids.shape:
        right_padded = bool((attention_mask[:, -1] == 0).any())
    else:
        right_padded = bool((input_ids[:, -1] == pad_token_id).any())
    if right_padded:
        from transformers.utils import logging

        logging.get_logger("transformers.generation.utils").warning(
            "A decoder-only architecture is being used, but right-padding was detected! For correct "
            "generation results, please set `padding_side='left'` when initializing the tokenizer."
        )
