"""``generate``: validate, pick the strategy from a table, run it, return one output type."""

from __future__ import annotations

import operator
import warnings
from dataclasses import fields
from typing import Any, Iterable, Literal, Mapping, Optional, Sequence, Union, overload

import torch

from ._validation import GenerationConfigError
from .config import GenerationConfig, GenerationMode
from ._transformers_args import refuse_transformers_arguments
from .strategies.guidance import guidance_of
from .families import check_supported, one_call_at_a_time
from .grammar import compile_grammars
from .prefix_constraint import PrefixAllowedTokensFn, prefix_constraint
from .seq2seq_inputs import SEQ2SEQ_INPUTS, check_seq2seq_inputs
from .models import adapter_for, is_encoder_decoder, vocab_size_of
from .cache_in import cache_refusal, pop_given_cache
from .folded_reorder import settle
from .growing_cache import release
from .outputs import GenerateOutput
from .stopping import MaxTimeCriteria, StopStringCriteria, StoppingCriterion
from .strategies import STRATEGIES, GenerationRequest
from .strategies.beam_loop import check_beam_memory
from .strategies.running_rows import EngineHooks
from .streamers import ends_stream_on_error
from .token_healing import check_healing, heal_tokens
from .watermark import is_synthid

__all__ = ["generate"]

# Per-position model inputs fed to a decoder-only model's forward as transformers' generate feeds them.
MODEL_INPUTS = ("position_ids", "token_type_ids")


# ``return_dict_in_generate=True`` given here always returns a GenerateOutput (it overrides the
# config); otherwise the result depends on the config, so callers that ask for it get the type.
@overload
def generate(
    model: Any,
    input_ids: Optional[torch.Tensor] = None,
    attention_mask: Optional[torch.Tensor] = None,
    generation_config: Optional[Union[GenerationConfig, Any]] = None,
    *,
    return_dict_in_generate: Literal[True],
    logits_processor: Optional[Iterable[Any]] = None,
    stopping_criteria: Optional[Iterable[StoppingCriterion]] = None,
    streamer: Optional[Any] = None,
    tokenizer: Optional[Any] = None,
    assistant_model: Optional[Any] = None,
    row_seeds: Optional[Sequence[int]] = None,
    negative_prompt_ids: Optional[torch.Tensor] = None,
    negative_prompt_attention_mask: Optional[torch.Tensor] = None,
    **kwargs: Any,
) -> GenerateOutput: ...


@overload
def generate(
    model: Any,
    input_ids: Optional[torch.Tensor] = None,
    attention_mask: Optional[torch.Tensor] = None,
    generation_config: Optional[Union[GenerationConfig, Any]] = None,
    *,
    logits_processor: Optional[Iterable[Any]] = None,
    stopping_criteria: Optional[Iterable[StoppingCriterion]] = None,
    streamer: Optional[Any] = None,
    tokenizer: Optional[Any] = None,
    assistant_model: Optional[Any] = None,
    row_seeds: Optional[Sequence[int]] = None,
    negative_prompt_ids: Optional[torch.Tensor] = None,
    negative_prompt_attention_mask: Optional[torch.Tensor] = None,
    **kwargs: Any,
) -> Union[torch.Tensor, GenerateOutput]: ...


@ends_stream_on_error
@one_call_at_a_time
def generate(
    model: Any,
    input_ids: Optional[torch.Tensor] = None,
    attention_mask: Optional[torch.Tensor] = None,
    generation_config: Optional[Union[GenerationConfig, Any]] = None,
    *,
    logits_processor: Optional[Iterable[Any]] = None,
    stopping_criteria: Optional[Iterable[StoppingCriterion]] = None,
    streamer: Optional[Any] = None,
    tokenizer: Optional[Any] = None,
    assistant_model: Optional[Any] = None,
    row_seeds: Optional[Sequence[int]] = None,
    prefix_allowed_tokens_fn: Optional[PrefixAllowedTokensFn] = None,
    _engine: Optional[EngineHooks] = None,
    negative_prompt_ids: Optional[torch.Tensor] = None,
    negative_prompt_attention_mask: Optional[torch.Tensor] = None,
    **kwargs: Any,
) -> Union[torch.Tensor, GenerateOutput]:
    """Generates token ids with ``model``, as ``model.generate`` would, with the core in Rust.

    ``generation_config`` defaults to the model's own; a transformers ``GenerationConfig``
    is read as ``model.generate`` reads it (its unset fields come from the model's config);
    keyword arguments override fields for this call only. ``logits_processor`` and
    ``stopping_criteria`` take transformers' ``LogitsProcessorList`` / ``StoppingCriteriaList``
    (or any iterable of callables ``(input_ids, scores)``), ``streamer`` any object with
    ``put``/``end`` (transformers' streamers included). Returns the ``sequences`` tensor, or a
    :class:`~ferrogen.GenerateOutput` (transformers' attribute names, key and index access)
    when ``return_dict_in_generate=True``. ``row_seeds`` (one int in [0, 2**64) per prompt) makes each
    prompt sample as if generated alone with ``seed=row_seeds[i]``.
    ``prefix_allowed_tokens_fn(batch_id, input_ids)`` returns the token ids a row may take next,
    as in transformers (called once per row per step, ``input_ids`` a 1-D CPU tensor).
    ``_engine`` is :mod:`ferrogen.engine`'s (its hooks: drop finished rows, count steps).
    ``negative_prompt_ids`` / ``negative_prompt_attention_mask``: the unconditional prompt of
    classifier-free guidance (``guidance_scale`` != 1; default: each row's last prompt token),
    as in transformers (one row per generated row); ignored without guidance.
    ``past_key_values`` / ``cache``: a ``DynamicCache`` over the first tokens of ``input_ids`` to continue
    from (greedy, sampling, beams; decoder-only models), grown in place as transformers grows it
    (:mod:`ferrogen.cache_in`).

    Example::

        from transformers import AutoModelForCausalLM, AutoTokenizer
        import ferrogen
        tok = AutoTokenizer.from_pretrained(ferrogen.embedded_model_path())
        model = AutoModelForCausalLM.from_pretrained(ferrogen.embedded_model_path())
        ids = tok("And God said", return_tensors="pt")
        out = ferrogen.generate(model, **ids, max_new_tokens=10)
        print(tok.decode(out[0]))
    """
    if input_ids is None:
        input_ids = kwargs.pop("inputs", None)
    given = {name: kwargs.pop(name) for name in MODEL_INPUTS if kwargs.get(name) is not None}
    embeds = kwargs.pop("inputs_embeds", None)
    given_cache = pop_given_cache(kwargs)
    decoder_inputs = {name: kwargs.pop(name) for name in SEQ2SEQ_INPUTS
                      if is_encoder_decoder(model) and kwargs.get(name) is not None}
    refuse_transformers_arguments(kwargs, [f.name for f in fields(GenerationConfig)])
    config = _resolve_config(model, generation_config, kwargs)
    if embeds is not None:
        input_ids, embeds = _check_embeds(model, input_ids, embeds)
    input_ids, attention_mask = _check_inputs(input_ids, attention_mask, None if embeds is None else embeds.shape[:2])
    model_inputs = _check_model_inputs(model, input_ids, given)
    model_inputs.update(check_seq2seq_inputs(int(input_ids.shape[0]), decoder_inputs))
    if embeds is not None:
        model_inputs["inputs_embeds"] = embeds
    mode = config.generation_mode(assistant_model)
    _refuse_unsupported(config, unsupported_settings(config, mode, model))
    if given_cache is not None:
        refusal = cache_refusal(model, given_cache, input_ids, config, mode, embeds is not None, attention_mask)
        if refusal is not None:
            raise ValueError(f"past_key_values: {refusal}")
        model_inputs["past_key_values"] = given_cache
    if config.token_healing:
        input_ids = _healed(model, config, input_ids, attention_mask, tokenizer)
    strategy = STRATEGIES.get(mode)
    if strategy is None:
        raise NotImplementedError(f"{mode.value}: this decoding strategy is not available in this ferrogen build yet")
    request = _build_request(
        model, config, input_ids, attention_mask, logits_processor, stopping_criteria, streamer, tokenizer,
        assistant_model, model_inputs,
    )
    request.extras["grammars"] = compile_grammars(config, tokenizer, request.batch_size, request.vocab_size)
    prefix = prefix_constraint(prefix_allowed_tokens_fn, config)
    request.extras["prefix_allowed"] = prefix
    request.extras["guidance"] = guidance_of(model, config, negative_prompt_ids, negative_prompt_attention_mask)
    if row_seeds is not None:
        request.extras["row_seeds"] = _check_row_seeds(row_seeds, request.batch_size, mode)
    if _engine is not None:  # ferrogen.engine's run: finished rows may leave the batch
        request.extras["engine"] = _engine
    prompt_len = int(request.prompt_ids.shape[1])
    if mode in BEAM_MODES and request.max_length <= prompt_len:
        raise GenerationConfigError(
            "max_new_tokens", f"{mode.value} needs at least one new token (max_length {request.max_length} does "
            f"not exceed the prompt length {prompt_len}); greedy and sampling return the prompt instead")
    if mode in BEAM_MODES:
        check_beam_memory(request)
    try:
        output = strategy(request)
    except (IndexError, RuntimeError) as err:
        _explain_context_overflow(model, prompt_len, request.max_length, err)
        raise
    if given_cache is not None:  # the caller's object: no beam reorder left pending in it
        settle(given_cache)
        release(given_cache)
    if prefix is not None:  # what prefix_allowed_tokens_fn raised (the rows ended at once)
        prefix.raise_pending()
    if input_ids.device.type != "cpu":  # the core works on the host; hand back where the inputs live
        output = output.to(input_ids.device)
    return output if request.return_dict else output.sequences


BEAM_MODES = frozenset({
    GenerationMode.BEAM_SEARCH, GenerationMode.BEAM_SAMPLE, GenerationMode.GROUP_BEAM_SEARCH,
    GenerationMode.CONSTRAINED_BEAM_SEARCH,
})


def _explain_context_overflow(model: Any, prompt_len: int, max_length: int, err: BaseException) -> None:
    """A model with learned positions (GPT-2 and kin) fails with a bare IndexError past its
    context; when the generation asked for more positions than the model has, say so."""
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if is_encoder_decoder(model) or not isinstance(positions, int) or max_length <= positions:
        return
    if prompt_len > positions:
        raise GenerationConfigError(
            "input_ids", f"the prompt is {prompt_len} tokens long but the model's context is {positions} "
            f"positions (max_position_embeddings); the model failed with: {err}") from err
    raise GenerationConfigError(
        "max_new_tokens", f"prompt ({prompt_len}) plus new tokens reach {max_length} positions but the model's "
        f"context is {positions} (max_position_embeddings); the model failed with: {err}") from err


def _healed(model: Any, config: GenerationConfig, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
            tokenizer: Any) -> torch.Tensor:
    """``token_healing``: the prompt with its last token healed (:mod:`ferrogen.token_healing`)."""
    check_healing(tokenizer, is_encoder_decoder(model))

    def one_token(prompt: torch.Tensor, mask: Optional[torch.Tensor], bias: dict[tuple[int, ...], float]) -> torch.Tensor:
        out = generate(model, prompt, attention_mask=mask, max_new_tokens=1, do_sample=False, num_beams=1,
                       pad_token_id=tokenizer.pad_token_id, sequence_bias=bias, return_dict_in_generate=False)
        assert isinstance(out, torch.Tensor)
        return out

    healed = heal_tokens(input_ids, tokenizer, one_token, config.eos_token_ids)
    if attention_mask is not None and attention_mask.shape != healed.shape:
        raise GenerationConfigError(
            "token_healing", f"re-tokenizing the prompts changed their shape from {list(input_ids.shape)} to "
            f"{list(healed.shape)}, so attention_mask no longer fits them (transformers would run with the stale "
            "mask); pass prompts as the tokenizer encodes their stripped text")
    return healed


# Per-step model outputs ferrogen collects: every strategy.
_COLLECTED = ("output_attentions", "output_hidden_states")
_COLLECTING_MODES = frozenset({GenerationMode.GREEDY, GenerationMode.SAMPLE, GenerationMode.DOLA,
                               GenerationMode.BEAM_SEARCH, GenerationMode.BEAM_SAMPLE,
                               GenerationMode.GROUP_BEAM_SEARCH, GenerationMode.CONSTRAINED_BEAM_SEARCH,
                               GenerationMode.CONTRASTIVE_SEARCH, GenerationMode.ASSISTED})


def unsupported_settings(config: GenerationConfig, mode: GenerationMode, model: Any) -> list[str]:
    """``config.unsupported_settings()`` less what this call's ``mode`` and ``model`` carry out."""
    collects = mode in _COLLECTING_MODES and hasattr(model, "get_output_embeddings")
    refused = [name for name in config.unsupported_settings() if not (collects and name in _COLLECTED)]
    guided = config.guidance_scale is not None and config.guidance_scale != 1
    if guided and mode not in _GUIDED_MODES:
        refused.append("guidance_scale")
    watermark = config.watermarking_config
    if watermark is not None and "watermarking_config" not in refused:
        modes = _SYNTHID_MODES if is_synthid(watermark) else _GREEN_LIST_MODES
        if mode not in modes:
            refused.append("watermarking_config")
    return refused


# Modes where classifier-free guidance and the watermarks (green-list and SynthID) run natively;
# elsewhere they are refused (and ferrogen.enable hands the call to transformers). Guidance with assisted decoding
# is left to transformers: there one stateful processor is called by the assistant's drafting and
# by the check of every candidate position, so its unconditional cache advances past rejected
# tokens. An encoder-decoder model is refused by guidance_of (transformers fails there).
_GUIDED_MODES = frozenset({
    GenerationMode.GREEDY, GenerationMode.SAMPLE, GenerationMode.BEAM_SEARCH, GenerationMode.BEAM_SAMPLE,
    GenerationMode.GROUP_BEAM_SEARCH, GenerationMode.CONSTRAINED_BEAM_SEARCH, GenerationMode.CONTRASTIVE_SEARCH,
    GenerationMode.DOLA,
})
# SynthID keeps per-row state that transformers' processor indexes by the rows of each call, so
# it is native where every call sees every row once per step; the stateless green list also with
# contrastive search, group beam search (per group) and assisted decoding (per candidate
# position), where it equals transformers (tests/test_guidance_watermark.py). With constrained
# beam search 4.55.4 chose other beams in the one case tried: left to transformers.
_SYNTHID_MODES = frozenset({
    GenerationMode.GREEDY, GenerationMode.SAMPLE, GenerationMode.BEAM_SEARCH, GenerationMode.BEAM_SAMPLE,
})
_GREEN_LIST_MODES = _SYNTHID_MODES | {
    GenerationMode.CONTRASTIVE_SEARCH, GenerationMode.GROUP_BEAM_SEARCH, GenerationMode.ASSISTED,
}


def _refuse_unsupported(config: GenerationConfig, unsupported: list[str]) -> None:
    if unsupported:
        name = unsupported[0]
        raise GenerationConfigError(
            name, f"{getattr(config, name)!r} asks for a feature ferrogen does not implement; "
            + _UNSUPPORTED_ADVICE.get(name, "leave it unset (or run model.generate under ferrogen.enable(model), "
                                            "which hands such calls to transformers)")
        )


# Settings whose refusal says more than "leave it unset".
_UNSUPPORTED_ADVICE = {
    "forced_decoder_ids": (
        "transformers' generate no longer applies it either (4.55.4 and 5.x raise 'model_kwargs are not used' "
        "for it; only Whisper's own generate reads it, as task= / language=). To force token t at decoder "
        "position p, pass prefix_allowed_tokens_fn returning [t] when len(input_ids) == p"),
}


# Modes that draw random numbers but do not take one seed per prompt (yet).
_NO_ROW_SEEDS = frozenset({GenerationMode.BEAM_SAMPLE, GenerationMode.ASSISTED})


def _check_row_seeds(row_seeds: Sequence[int], batch: int, mode: GenerationMode) -> list[int]:
    try:
        seeds = [operator.index(s) for s in row_seeds]
    except TypeError:
        seeds = []
    if len(seeds) != batch or any(not 0 <= s < 2**64 for s in seeds):
        raise ValueError(f"row_seeds: expected {batch} ints in [0, 2**64), one per prompt, got {list(row_seeds)[:8]}")
    if mode in _NO_ROW_SEEDS:
        raise ValueError(f"row_seeds: not supported with {mode.value} yet")
    return seeds


def _resolve_config(
    model: Any, generation_config: Any, overrides: dict[str, Any], base: Optional[GenerationConfig] = None
) -> GenerationConfig:
    """The call's config: ``generation_config`` (else the model's) with ``overrides``; ``base``, when
    given, stands for the model's own config (``ferrogen.enable`` reads it leniently)."""
    if generation_config is None:
        base = base if base is not None else _model_config(model)
    elif isinstance(generation_config, GenerationConfig):
        base = generation_config
    elif isinstance(generation_config, Mapping):  # transformers' generate fails on one (AttributeError)
        raise TypeError(
            "generation_config: expected a GenerationConfig, got a dict; pass its fields as keyword arguments "
            "(ferrogen.generate(model, **ids, **fields)) or ferrogen.GenerationConfig(**fields)"
        )
    elif type(generation_config).__name__ == "GenerationConfig":
        base = _from_transformers_config(model, generation_config, base)
    else:
        raise TypeError(
            "generation_config: expected a ferrogen or transformers GenerationConfig, "
            f"got {type(generation_config).__name__}"
        )
    config = base.merged(**overrides) if overrides else base.copy()
    _fill_special_tokens(model, config)
    return config


def _model_config(model: Any) -> GenerationConfig:
    return GenerationConfig.from_pretrained(model) if hasattr(model, "generation_config") else GenerationConfig()


def _from_transformers_config(model: Any, hf_config: Any, base: Optional[GenerationConfig] = None) -> GenerationConfig:
    """A transformers ``GenerationConfig`` read as ``model.generate`` reads it (5.x): the fields
    it leaves unset (``None``) come from the model's own generation config (``base``)."""
    given = {k: v for k, v in hf_config.to_dict().items() if v is not None}
    converted = GenerationConfig.from_dict(given)  # validates; warns about keys it does not know
    base = base if base is not None else _model_config(model)
    known = {f.name for f in fields(GenerationConfig)}
    return base.merged(**{k: getattr(converted, k) for k in given if k in known})


def _fill_special_tokens(model: Any, config: GenerationConfig) -> None:
    """Takes missing special tokens from the model config, as transformers does."""
    model_config = getattr(model, "config", None)
    for name in ("eos_token_id", "pad_token_id", "bos_token_id", "decoder_start_token_id"):
        if getattr(config, name) is None and model_config is not None:
            value = getattr(model_config, name, None)
            if value is not None:
                setattr(config, name, value)
    if config.decoder_start_token_id is None and is_encoder_decoder(model):
        config.decoder_start_token_id = config.bos_token_id


def _check_embeds(model: Any, input_ids: Any, embeds: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``inputs_embeds`` ``[batch, length, hidden]``: for a decoder-only model with the ``input_ids``
    they stand for or none (transformers then returns only the new tokens: ``[batch, 0]`` prompt);
    for an encoder-decoder model the encoder's input, instead of ``input_ids`` (as transformers)."""
    if not isinstance(embeds, torch.Tensor) or embeds.dim() != 3 or not embeds.dtype.is_floating_point:
        raise ValueError("inputs_embeds: expected a float tensor [batch, length, hidden], got "
                         f"{getattr(embeds, 'dtype', type(embeds).__name__)} {list(getattr(embeds, 'shape', []))}")
    if not hasattr(model, "get_output_embeddings"):
        raise ValueError("inputs_embeds: ferrogen feeds them to transformers models only")
    if is_encoder_decoder(model) and input_ids is not None:
        raise ValueError("inputs_embeds: an encoder-decoder model's encoder takes inputs_embeds or input_ids, not "
                         "both (transformers: 'You passed `inputs_embeds` and `input_ids` to `.generate()`')")
    if input_ids is None:
        input_ids = torch.zeros((embeds.shape[0], 0), dtype=torch.long, device=embeds.device)
    elif isinstance(input_ids, torch.Tensor) and input_ids.shape != embeds.shape[:2]:
        raise ValueError(f"inputs_embeds: shape {list(embeds.shape)} does not match input_ids {list(input_ids.shape)}")
    return input_ids, embeds


def _check_inputs(
    input_ids: Any, attention_mask: Any, embeds_shape: Optional[tuple[int, ...]] = None
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The inputs transformers 5.x ``generate`` takes, as ``[batch, length]`` int64 tensors: a
    tokenizer's whole output, a 1-D tensor or a dict config make it fail, so they are refused
    here with the fix; a float or bool 0/1 mask (which it takes) becomes int64."""
    if input_ids is None:
        raise ValueError("input_ids: required (a [batch, length] int64 tensor)")
    input_ids = _as_tensor("input_ids", input_ids)
    if input_ids.dim() == 1:
        raise ValueError(
            f"input_ids: expected shape [batch, length], got the 1-D shape {list(input_ids.shape)}; add the batch "
            "dimension (input_ids[None]) or tokenize with return_tensors='pt', as model.generate needs")
    if input_ids.dim() != 2 or input_ids.shape[0] == 0:
        raise ValueError(f"input_ids: expected shape [batch >= 1, length], got {list(input_ids.shape)}")
    if input_ids.shape[1] == 0 and embeds_shape is None:
        raise ValueError("input_ids: the prompt is empty (length 0); give at least one token, e.g. the BOS token")
    if input_ids.device.type == "meta":
        raise ValueError("input_ids: a meta tensor has no values; pass a CPU (or model-device) tensor")
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids: expected an integer tensor, got {input_ids.dtype}")
    if attention_mask is not None:
        attention_mask = _as_tensor("attention_mask", attention_mask)
        if attention_mask.shape != (embeds_shape or input_ids.shape):
            raise ValueError(
                f"attention_mask: shape {list(attention_mask.shape)} does not match input_ids {list(input_ids.shape)}"
            )
        if attention_mask.dtype != torch.long:
            if attention_mask.device.type != "meta" and not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
                raise ValueError("attention_mask: values must be 0 (padding) or 1 (a token), got "
                                 f"{sorted(set(attention_mask.flatten().tolist()))[:6]}")
            attention_mask = attention_mask.long()
    return input_ids.long(), attention_mask


def _check_model_inputs(model: Any, input_ids: torch.Tensor, given: dict[str, Any]) -> dict[str, torch.Tensor]:
    """``position_ids`` / ``token_type_ids``: ``[batch, length]`` integer tensors like ``input_ids``,
    for a decoder-only transformers model whose forward takes them (transformers refuses the rest)."""
    from .families import accepts

    checked: dict[str, torch.Tensor] = {}
    for name, value in given.items():
        value = _as_tensor(name, value)
        if value.shape != input_ids.shape or value.dtype.is_floating_point or value.dtype == torch.bool:
            raise ValueError(f"{name}: expected an integer tensor of the shape of input_ids {list(input_ids.shape)}, "
                             f"got {value.dtype} {list(value.shape)}")
        if is_encoder_decoder(model) or not hasattr(model, "get_output_embeddings"):
            raise ValueError(f"{name}: ferrogen feeds it to decoder-only transformers models only")
        if not accepts(model.forward, name):
            raise ValueError(f"{name}: {type(model).__name__}.forward does not take it (transformers refuses it too: "
                             "'The following `model_kwargs` are not used by the model')")
        checked[name] = value.long()
    return checked


def _as_tensor(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, Mapping):  # a tokenizer's BatchEncoding passed positionally
        keys = ", ".join(map(str, value))
        raise TypeError(
            f"{name}: got a {type(value).__name__} (keys {keys}), a tokenizer's whole output; unpack it as "
            "model.generate takes it: ferrogen.generate(model, **tok(text, return_tensors='pt'))")
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name}: expected a [batch, length] tensor of token ids, got {type(value).__name__} "
                        f"({err})") from None


def _build_request(
    model: Any,
    config: GenerationConfig,
    input_ids: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    logits_processor: Optional[Iterable[Any]],
    stopping_criteria: Optional[Iterable[StoppingCriterion]],
    streamer: Optional[Any],
    tokenizer: Optional[Any],
    assistant_model: Optional[Any],
    model_inputs: Optional[dict[str, torch.Tensor]] = None,
) -> GenerationRequest:
    vocab = vocab_size_of(model)
    if vocab is not None and input_ids.numel() and (int(input_ids.max()) >= vocab or int(input_ids.min()) < 0):
        raise ValueError(f"input_ids: token ids must be in [0, {vocab}), got {int(input_ids.min())}..{int(input_ids.max())}")
    eos = config.eos_token_ids
    pad = config.pad_token_id
    if pad is None:
        if eos and input_ids.shape[0] > 1:
            warnings.warn(f"pad_token_id: not set, using eos_token_id {eos[0]} to pad finished rows", UserWarning)
        pad = eos[0] if eos else 0
    mode = config.generation_mode(assistant_model)
    for checked in (model, assistant_model):
        if checked is not None:
            check_supported(checked, mode)
    output_hidden = mode == GenerationMode.CONTRASTIVE_SEARCH
    collect = (config.return_dict_in_generate and config.output_attentions,
               config.return_dict_in_generate and config.output_hidden_states)
    adapter = adapter_for(
        model, config.decoder_start_token_id, output_hidden_states=output_hidden, rollback=mode == GenerationMode.ASSISTED,
        model_inputs=model_inputs, collect=(bool(collect[0]), bool(collect[1])),
    )
    prompt = adapter.decoder_prompt(input_ids)
    prompt_len = int(prompt.shape[1])
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    max_length = config.resolved_max_length(prompt_len, positions if isinstance(positions, int) else None)
    criteria: list[StoppingCriterion] = []
    if config.max_time is not None:
        criteria.append(MaxTimeCriteria(config.max_time))
    if config.stop_strings:
        criteria.append(StopStringCriteria(tokenizer, config.stop_strings, prompt_length=prompt_len))
    criteria.extend(stopping_criteria or ())
    return GenerationRequest(
        adapter=adapter,
        config=config,
        input_ids=input_ids,
        attention_mask=attention_mask,
        prompt_ids=prompt.cpu(),
        max_length=max_length,
        min_length=config.resolved_min_length(prompt_len),
        pad_token_id=int(pad),
        eos_token_ids=eos,
        criteria=criteria,
        logits_processors=list(logits_processor or ()),
        streamer=streamer,
        tokenizer=tokenizer,
        vocab_size=vocab,
        model=model,
        assistant_model=assistant_model,
    )
