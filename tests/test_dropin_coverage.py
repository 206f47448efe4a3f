"""Every parameter of transformers' ``generate`` and every ``GenerationConfig`` attribute runs
natively under ``ferrogen.enable`` — except the reasons in ``FALLS_BACK`` below, each with why
(the same table is in the README's drop-in section).

Each name is set to a value that asks for its feature (on the embedded GPT-2 and T5 models, two
new tokens); transformers' own ``generate`` is replaced by a recorder, so a fallback is seen
without running it. An entry of ``FALLS_BACK`` that stops falling back fails the test too: the
list cannot go stale. A name transformers adds fails ``test_every_name_has_a_value`` until it
gets a value here.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable

import pytest
import torch
from transformers import (
    GenerationConfig as HFGenerationConfig,
    GenerationMixin,
    LogitsProcessorList,
    MaxLengthCriteria,
    RepetitionPenaltyLogitsProcessor,
    StoppingCriteriaList,
)
from transformers.generation import CompileConfig, WatermarkingConfig

import ferrogen
from ferrogen import FallbackWarning, compat
from ferrogen.constraints import PhrasalConstraint  # transformers 5.x dropped its own

PROMPTS = ["And God said", "In the beginning God created"]

# transformers' bookkeeping fields: not settings.
NOT_SETTINGS = {"self", "kwargs", "transformers_version", "_from_model_config"}

# Why each remaining reason still falls back; "decoder"/"seq2seq": only for that kind of model.
FALLS_BACK: dict[str, tuple[tuple[str, ...], str]] = {
    "synced_gpus": (("decoder", "seq2seq"),
                    "multi-process (FSDP/DeepSpeed ZeRO-3) lockstep generation: no ferrogen counterpart"),
    "custom_generate": (("decoder", "seq2seq"), "the caller chose the decoding code: transformers runs it, silently"),
    "use_mtp": (("decoder", "seq2seq"), "multi-token-prediction heads: no ferrogen adapter for them"),
    "continuous_batching_config": (("decoder", "seq2seq"), "continuous batching is transformers' serving loop"),
    "decoder_input_ids": (("decoder",), "a decoder-only model has no decoder prompt (transformers refuses it too)"),
    "decoder_attention_mask": (("decoder",), "a decoder-only model has no decoder prompt (transformers refuses it too)"),
    "position_ids": (("seq2seq",), "T5's forward takes no position_ids (transformers refuses it too)"),
    "token_type_ids": (("seq2seq",), "T5's forward takes no token_type_ids (transformers refuses it too)"),
}
# Names ferrogen refuses for a kind of model, before any model work, with a ValueError naming the
# name, where transformers has nothing to run either (DoLa: a Hub repository in 5.x, decoder-only
# in 4.55.4; guidance: transformers fails on an encoder-decoder model; early exit: transformers fails with an IndexError on a decoder that runs all its
# layers whatever config.num_hidden_layers says, GPT-2 here, and T5 has no such field; token
# healing rewrites a decoder-only prompt).
REFUSED: dict[str, tuple[tuple[str, ...], str]] = {
    "dola_layers": (("seq2seq",), "DoLa contrasts a decoder-only model's layers"),
    "assistant_early_exit": (("decoder", "seq2seq"), "neither decoder exits early when num_hidden_layers is lowered"),
    "token_healing": (("seq2seq",), "heals a decoder-only prompt"),
    # transformers' processor runs the model on the negative prompt alone: T5 fails on it
    "guidance_scale": (("seq2seq",), "classifier-free guidance runs a decoder-only unconditional pass"),
    "negative_prompt_ids": (("seq2seq",), "classifier-free guidance runs a decoder-only unconditional pass"),
    "negative_prompt_attention_mask": (("seq2seq",), "classifier-free guidance runs a decoder-only unconditional pass"),
}
# The fallback's reason (or the refusal) names the setting that asked for the feature.
REASON_OF = {"negative_prompt_ids": "guidance_scale", "negative_prompt_attention_mask": "guidance_scale"}
# output_attentions / output_hidden_states are collected for these strategies (decoder-only and
# encoder-decoder models) by every strategy: test_collected_outputs_by_strategy.
COLLECTING = {"greedy", "sample", "beam_search", "beam_sample", "group_beam_search", "constrained_beam_search",
              "contrastive_search", "assisted"}

Value = Callable[[Any, Any], dict[str, Any]]  # (model, tokenizer) -> the call's keywords


class _Streamer:
    def put(self, value: Any) -> None:
        pass

    def end(self) -> None:
        pass


def _healing_tokenizer(tok: Any) -> Any:
    """Token healing needs a BOS and a pad token (transformers' heal_tokens reads both); the
    embedded tokenizer has neither, so a copy gets its EOS as both, as in test_token_healing."""
    import copy

    tok = copy.deepcopy(tok)
    tok.bos_token = tok.eos_token
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _kw(**kwargs: Any) -> Value:
    return lambda model, tok: kwargs


SAMPLE = dict(do_sample=True)
BEAMS = dict(num_beams=2)
# One value per name that asks for its feature, with what the feature needs alongside.
VALUES: dict[str, Value] = {
    "inputs": lambda model, tok: {},  # every call passes the prompt positionally
    "generation_config": _kw(generation_config=HFGenerationConfig(max_new_tokens=2)),
    "logits_processor": _kw(logits_processor=LogitsProcessorList([RepetitionPenaltyLogitsProcessor(1.3)])),
    "stopping_criteria": _kw(stopping_criteria=StoppingCriteriaList([MaxLengthCriteria(64)])),
    "prefix_allowed_tokens_fn": _kw(prefix_allowed_tokens_fn=lambda batch, ids: list(range(50))),
    "synced_gpus": _kw(synced_gpus=True),
    "assistant_model": lambda model, tok: dict(assistant_model=model),
    "streamer": _kw(streamer=_Streamer()),
    "negative_prompt_ids": lambda model, tok: dict(negative_prompt_ids=tok(["God"] * 2, return_tensors="pt").input_ids,
                                                   guidance_scale=1.5),
    "negative_prompt_attention_mask": lambda model, tok: dict(
        negative_prompt_ids=tok(["God"] * 2, return_tensors="pt").input_ids, guidance_scale=1.5,
        negative_prompt_attention_mask=torch.ones(2, 1, dtype=torch.long)),
    "custom_generate": _kw(custom_generate=ferrogen.custom_generate_path(), trust_remote_code=True),
    "max_length": _kw(max_length=12, max_new_tokens=None),
    "max_new_tokens": _kw(max_new_tokens=3),
    "min_length": _kw(min_length=4),
    "min_new_tokens": _kw(min_new_tokens=1),
    "early_stopping": _kw(early_stopping=True, **BEAMS),
    "max_time": _kw(max_time=30.0),
    "stop_strings": lambda model, tok: dict(stop_strings=["God"], tokenizer=tok),
    "do_sample": _kw(**SAMPLE),
    "num_beams": _kw(**BEAMS),
    "use_mtp": _kw(use_mtp=True),
    "use_cache": _kw(use_cache=False),
    "cache_implementation": _kw(cache_implementation="dynamic"),
    "cache_config": _kw(cache_config={}),
    "max_cache_len": _kw(max_cache_len=64),
    "temperature": _kw(temperature=0.7, **SAMPLE),
    "top_k": _kw(top_k=5, **SAMPLE),
    "top_p": _kw(top_p=0.9, **SAMPLE),
    "min_p": _kw(min_p=0.1, **SAMPLE),
    "top_h": _kw(top_h=0.5, **SAMPLE),
    "typical_p": _kw(typical_p=0.9, **SAMPLE),
    "epsilon_cutoff": _kw(epsilon_cutoff=3e-4, **SAMPLE),
    "eta_cutoff": _kw(eta_cutoff=3e-4, **SAMPLE),
    "repetition_penalty": _kw(repetition_penalty=1.3),
    "encoder_repetition_penalty": _kw(encoder_repetition_penalty=1.3),
    "length_penalty": _kw(length_penalty=0.5, **BEAMS),
    "no_repeat_ngram_size": _kw(no_repeat_ngram_size=2),
    "bad_words_ids": _kw(bad_words_ids=[[5]]),
    "renormalize_logits": _kw(renormalize_logits=True),
    "forced_bos_token_id": _kw(forced_bos_token_id=5),
    "forced_eos_token_id": _kw(forced_eos_token_id=5),
    "remove_invalid_values": _kw(remove_invalid_values=True),
    "exponential_decay_length_penalty": _kw(exponential_decay_length_penalty=(1, 1.1)),
    "suppress_tokens": _kw(suppress_tokens=[5]),
    "begin_suppress_tokens": _kw(begin_suppress_tokens=[5]),
    "sequence_bias": _kw(sequence_bias={(5,): -1.0}),
    "token_healing": lambda model, tok: dict(token_healing=True, tokenizer=_healing_tokenizer(tok)),
    "guidance_scale": _kw(guidance_scale=1.5),
    "watermarking_config": _kw(watermarking_config=WatermarkingConfig(greenlist_ratio=0.25)),
    "num_return_sequences": _kw(num_return_sequences=2, **SAMPLE),
    "output_attentions": _kw(output_attentions=True, return_dict_in_generate=True),
    "output_hidden_states": _kw(output_hidden_states=True, return_dict_in_generate=True),
    "output_scores": _kw(output_scores=True, return_dict_in_generate=True),
    "output_logits": _kw(output_logits=True, return_dict_in_generate=True),
    "return_dict_in_generate": _kw(return_dict_in_generate=True),
    "pad_token_id": _kw(pad_token_id=3),
    "bos_token_id": _kw(bos_token_id=4),
    "eos_token_id": _kw(eos_token_id=[5, 6]),
    "encoder_no_repeat_ngram_size": _kw(encoder_no_repeat_ngram_size=2),
    "decoder_start_token_id": _kw(decoder_start_token_id=4),
    "is_assistant": _kw(is_assistant=True),
    "num_assistant_tokens": lambda model, tok: dict(assistant_model=model, num_assistant_tokens=3),
    "num_assistant_tokens_schedule": lambda model, tok: dict(assistant_model=model,
                                                             num_assistant_tokens_schedule="constant"),
    "assistant_confidence_threshold": lambda model, tok: dict(assistant_model=model,
                                                              assistant_confidence_threshold=0.2),
    "prompt_lookup_num_tokens": _kw(prompt_lookup_num_tokens=3),
    "max_matching_ngram_size": _kw(prompt_lookup_num_tokens=3, max_matching_ngram_size=1),
    "assistant_early_exit": _kw(assistant_early_exit=1),
    "assistant_lookbehind": lambda model, tok: dict(assistant_model=model, assistant_lookbehind=5),
    "target_lookbehind": lambda model, tok: dict(assistant_model=model, target_lookbehind=5),
    "assistant_ensemble_weight": lambda model, tok: dict(assistant_model=model, assistant_ensemble_weight=0.5),
    "speculation_type": lambda model, tok: dict(assistant_model=model, speculation_type="draft"),
    "compile_config": _kw(compile_config=CompileConfig()),
    "disable_compile": _kw(disable_compile=True),
    "continuous_batching_config": _kw(continuous_batching_config={}),
    "low_memory": _kw(low_memory=True, penalty_alpha=0.6, top_k=4),
    "penalty_alpha": _kw(penalty_alpha=0.6, top_k=4),
    "dola_layers": _kw(dola_layers="low"),
    "diversity_penalty": _kw(diversity_penalty=1.0, num_beams=4, num_beam_groups=2),
    "num_beam_groups": _kw(num_beam_groups=2, num_beams=4, diversity_penalty=0.5),
    "constraints": _kw(constraints=[PhrasalConstraint([5, 6])], num_beams=2),
    "force_words_ids": _kw(force_words_ids=[[5]], num_beams=2),
    "prefill_chunk_size": _kw(prefill_chunk_size=4),
    # model inputs (generate's **kwargs); an encoder-decoder model takes inputs_embeds instead of input_ids
    "inputs_embeds": lambda model, tok: dict(inputs_embeds=_embeddings(model, tok)),
    "decoder_input_ids": _kw(decoder_input_ids=torch.tensor([[5, 6], [7, 8]])),
    "decoder_attention_mask": _kw(decoder_input_ids=torch.tensor([[5, 6], [7, 8]]),
                                  decoder_attention_mask=torch.tensor([[1, 1], [0, 1]])),
    "position_ids": lambda model, tok: dict(position_ids=tok(PROMPTS, return_tensors="pt", padding=True)
                                            .attention_mask.cumsum(-1).clamp(min=1) - 1),
    "token_type_ids": lambda model, tok: dict(token_type_ids=torch.zeros_like(
        tok(PROMPTS, return_tensors="pt", padding=True).input_ids)),
}


def _embeddings(model: Any, tok: Any) -> torch.Tensor:
    with torch.no_grad():
        return model.get_input_embeddings()(tok(PROMPTS, return_tensors="pt", padding=True).input_ids)


def transformers_names() -> list[str]:
    """transformers' generate parameters and GenerationConfig attributes, in their order."""
    names = list(inspect.signature(GenerationMixin.generate).parameters) + list(HFGenerationConfig().to_dict())
    return [n for n in dict.fromkeys(names) if n not in NOT_SETTINGS]


def test_every_name_has_a_value():
    assert [n for n in transformers_names() if n not in VALUES] == []
    assert set(FALLS_BACK) <= set(VALUES)


@pytest.fixture(scope="module", params=["decoder", "seq2seq"])
def loaded(request):
    kind = request.param
    model, tok = ferrogen.text.load_model(ferrogen.embedded_model_path("causal" if kind == "decoder" else "seq2seq"))
    tok.padding_side = "left"
    return kind, model, tok, tok(PROMPTS, return_tensors="pt", padding=True)


def run_enabled(model: Any, enc: Any, kwargs: dict[str, Any], monkeypatch: Any) -> tuple[bool, list[str]]:
    """Runs ``model.generate`` under ``patched``; returns (whether transformers ran, fallback warnings)."""
    ran: list[bool] = []
    monkeypatch.setattr(compat, "_warned", set())
    with ferrogen.patched(model), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monkeypatch.setattr(type(model), "generate", lambda *a, **k: ran.append(True))  # after enable's check
        # transformers takes an encoder-decoder model's inputs_embeds instead of its input_ids, not beside them
        ids = None if "inputs_embeds" in kwargs and model.config.is_encoder_decoder else enc.input_ids
        try:
            model.generate(ids, attention_mask=enc.attention_mask, **kwargs)
        finally:
            monkeypatch.undo()
    return bool(ran), [str(w.message) for w in caught if issubclass(w.category, FallbackWarning)]


@pytest.mark.falls_back  # FALLS_BACK / COLLECTING say which, and the test checks them
@pytest.mark.parametrize("name", [n for n in VALUES if n != "inputs"])
def test_name_runs_natively_unless_listed(loaded, name, monkeypatch):
    kind, model, tok, enc = loaded
    kwargs = {"max_new_tokens": 2, **VALUES[name](model, tok)}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if kind in REFUSED.get(name, ((), ""))[0]:
        with pytest.raises(ValueError, match=REASON_OF.get(name, name)):
            run_enabled(model, enc, kwargs, monkeypatch)
        return
    ran_transformers, fallbacks = run_enabled(model, enc, kwargs, monkeypatch)
    listed = kind in FALLS_BACK.get(name, ((), ""))[0]
    assert ran_transformers == listed, (name, kind, fallbacks)
    if listed and name != "custom_generate":
        reason = REASON_OF.get(name, name)
        assert any(reason in message for message in fallbacks), fallbacks


STRATEGY_SETTINGS: dict[str, Value] = {
    "greedy": _kw(),
    "sample": _kw(**SAMPLE),
    "beam_search": _kw(**BEAMS),
    "beam_sample": _kw(**BEAMS, **SAMPLE),
    "group_beam_search": _kw(num_beams=4, num_beam_groups=2, diversity_penalty=1.0),
    "constrained_beam_search": _kw(force_words_ids=[[5]], **BEAMS),
    "contrastive_search": _kw(penalty_alpha=0.6, top_k=4),
    "assisted": lambda model, tok: dict(assistant_model=model),
}


@pytest.mark.falls_back  # FALLS_BACK / COLLECTING say which, and the test checks them
@pytest.mark.parametrize("strategy", list(STRATEGY_SETTINGS))
@pytest.mark.parametrize("flag", ["output_attentions", "output_hidden_states"])
def test_collected_outputs_by_strategy(loaded, flag, strategy, monkeypatch):
    kind, model, tok, enc = loaded
    kwargs = {"max_new_tokens": 2, "return_dict_in_generate": True, flag: True,
              **STRATEGY_SETTINGS[strategy](model, tok)}
    ran_transformers, fallbacks = run_enabled(model, enc, kwargs, monkeypatch)
    assert ran_transformers == (strategy not in COLLECTING), fallbacks


@pytest.mark.falls_back("synced_gpus")
def test_fallback_counter_counts_every_call(loaded, monkeypatch):
    """tests/fallback_counter.py reads compat.fallback_counts(): every call, not once per reason."""
    kind, model, tok, enc = loaded
    before = compat.fallback_counts().get("synced_gpus", 0)
    for _ in range(2):
        run_enabled(model, enc, dict(max_new_tokens=2, synced_gpus=True), monkeypatch)
    run_enabled(model, enc, dict(max_new_tokens=2), monkeypatch)
    assert compat.fallback_counts()["synced_gpus"] == before + 2
