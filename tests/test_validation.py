"""GenerationConfig validation: each invalid input raises, naming its field; sampling knobs only warn."""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest

from ferrogen import config

GenerationConfig = config.GenerationConfig
GenerationConfigError = config.GenerationConfigError

BEAMS = {"num_beams": 4}
GROUPS = {"num_beams": 4, "num_beam_groups": 2, "diversity_penalty": 0.5}

# (id, kwargs, exception type, field the message must start with)
INVALID = [
    # wrong types
    ("max_new_tokens-str", {"max_new_tokens": "5"}, TypeError, "max_new_tokens"),
    ("max_new_tokens-float", {"max_new_tokens": 5.0}, TypeError, "max_new_tokens"),
    ("num_beams-bool", {"num_beams": True}, TypeError, "num_beams"),
    ("do_sample-str", {"do_sample": "yes"}, TypeError, "do_sample"),
    ("use_cache-int", {"use_cache": 1}, TypeError, "use_cache"),
    ("output_beam_tree-str", {"output_beam_tree": "yes"}, TypeError, "output_beam_tree"),
    ("temperature-str", {"temperature": "hot"}, TypeError, "temperature"),
    ("length_penalty-str", {"length_penalty": "long"}, TypeError, "length_penalty"),
    ("top_p-bool", {"top_p": True}, TypeError, "top_p"),
    ("seed-str", {"seed": "0"}, TypeError, "seed"),
    ("seed-float", {"seed": 1.0}, TypeError, "seed"),
    # lengths and counts
    ("max_new_tokens-negative", {"max_new_tokens": -1}, ValueError, "max_new_tokens"),
    ("max_length-negative", {"max_length": -1}, ValueError, "max_length"),
    ("min_length-negative", {"min_length": -1}, ValueError, "min_length"),
    ("min_new_tokens-negative", {"min_new_tokens": -2}, ValueError, "min_new_tokens"),
    ("num_beams-zero", {"num_beams": 0}, ValueError, "num_beams"),
    ("num_return_sequences-zero", {"num_return_sequences": 0}, ValueError, "num_return_sequences"),
    ("num_return_sequences-over-beams", {"num_beams": 2, "num_return_sequences": 3}, ValueError,
     "num_return_sequences"),
    ("num_return_sequences-greedy", {"num_return_sequences": 2}, ValueError, "num_return_sequences"),
    ("max_time-zero", {"max_time": 0}, ValueError, "max_time"),
    ("seed-negative", {"seed": -1}, ValueError, "seed"),
    ("seed-too-large", {"seed": 2**64}, ValueError, "seed"),
    # beam groups
    ("num_beam_groups-zero", {"num_beam_groups": 0}, ValueError, "num_beam_groups"),
    ("num_beam_groups-indivisible", {"num_beams": 4, "num_beam_groups": 3, "diversity_penalty": 0.5}, ValueError,
     "num_beam_groups"),
    ("num_beam_groups-sampling", {**GROUPS, "do_sample": True}, ValueError, "num_beam_groups"),
    ("diversity_penalty-negative", {"diversity_penalty": -0.5}, ValueError, "diversity_penalty"),
    ("diversity_penalty-without-groups", {"num_beams": 4, "diversity_penalty": 0.5}, ValueError,
     "diversity_penalty"),
    # sampling knobs
    ("temperature-zero-sampling", {"do_sample": True, "temperature": 0.0}, ValueError, "temperature"),
    ("temperature-nan", {"temperature": math.nan}, ValueError, "temperature"),
    ("top_k-negative", {"top_k": -1}, ValueError, "top_k"),
    ("top_p-above-one", {"top_p": 1.5}, ValueError, "top_p"),
    ("top_p-zero", {"top_p": 0.0}, ValueError, "top_p"),
    ("typical_p-zero", {"typical_p": 0}, ValueError, "typical_p"),
    ("min_p-above-one", {"min_p": 1.5}, ValueError, "min_p"),
    ("min_p-negative", {"min_p": -0.1}, ValueError, "min_p"),
    ("top_h-zero", {"top_h": 0.0}, ValueError, "top_h"),
    ("epsilon_cutoff-one", {"epsilon_cutoff": 1.0}, ValueError, "epsilon_cutoff"),
    ("eta_cutoff-negative", {"eta_cutoff": -0.1}, ValueError, "eta_cutoff"),
    # penalties
    ("repetition_penalty-zero", {"repetition_penalty": 0}, ValueError, "repetition_penalty"),
    ("encoder_repetition_penalty-negative", {"encoder_repetition_penalty": -1.0}, ValueError,
     "encoder_repetition_penalty"),
    ("no_repeat_ngram_size-negative", {"no_repeat_ngram_size": -1}, ValueError, "no_repeat_ngram_size"),
    ("early_stopping-str", {**BEAMS, "early_stopping": "always"}, ValueError, "early_stopping"),
    ("early_stopping-int", {**BEAMS, "early_stopping": 1}, ValueError, "early_stopping"),
    ("exp_decay-short", {"exponential_decay_length_penalty": (5,)}, TypeError, "exponential_decay_length_penalty"),
    ("exp_decay-negative-start", {"exponential_decay_length_penalty": (-1, 1.5)}, ValueError,
     "exponential_decay_length_penalty"),
    ("exp_decay-factor-below-one", {"exponential_decay_length_penalty": (5, 0.5)}, ValueError,
     "exponential_decay_length_penalty"),
    ("sequence_bias-empty", {"sequence_bias": {}}, ValueError, "sequence_bias"),
    ("sequence_bias-empty-key", {"sequence_bias": {(): 1.0}}, ValueError, "sequence_bias"),
    ("sequence_bias-str-bias", {"sequence_bias": {(1,): "x"}}, TypeError, "sequence_bias"),
    ("sequence_bias-not-mapping", {"sequence_bias": 3.0}, TypeError, "sequence_bias"),
    # token lists
    ("bad_words_ids-flat", {"bad_words_ids": [1, 2]}, TypeError, "bad_words_ids"),
    ("bad_words_ids-empty-word", {"bad_words_ids": [[1], []]}, ValueError, "bad_words_ids"),
    ("bad_words_ids-negative", {"bad_words_ids": [[-1]]}, ValueError, "bad_words_ids"),
    ("suppress_tokens-str-id", {"suppress_tokens": [1, "a"]}, TypeError, "suppress_tokens"),
    ("suppress_tokens-int", {"suppress_tokens": 5}, TypeError, "suppress_tokens"),
    ("forced_bos-suppressed", {"forced_bos_token_id": 3, "suppress_tokens": [3]}, ValueError,
     "forced_bos_token_id"),
    ("forced_decoder_ids-not-pairs", {"forced_decoder_ids": [[1]]}, ValueError, "forced_decoder_ids"),
    # constrained beam search
    ("force_words_ids-empty", {**BEAMS, "force_words_ids": []}, ValueError, "force_words_ids"),
    ("force_words_ids-mixed", {**BEAMS, "force_words_ids": [[1, [2]]]}, ValueError, "force_words_ids"),
    ("force_words_ids-negative", {**BEAMS, "force_words_ids": [[1, -2]]}, ValueError, "force_words_ids"),
    ("force_words_ids-empty-alternative", {**BEAMS, "force_words_ids": [[[1], []]]}, ValueError,
     "force_words_ids"),
    ("force_words_ids-not-list", {**BEAMS, "force_words_ids": "hello"}, TypeError, "force_words_ids"),
    ("force_words_ids-sampling", {**BEAMS, "force_words_ids": [[1]], "do_sample": True}, ValueError,
     "force_words_ids"),
    ("force_words_ids-one-beam", {"force_words_ids": [[1]]}, ValueError, "force_words_ids"),
    ("constraints-groups", {**GROUPS, "constraints": [object()]}, ValueError, "constraints"),
    ("constraints-not-list", {**BEAMS, "constraints": "x"}, TypeError, "constraints"),
    ("force_words-empty-str", {**BEAMS, "force_words": [""]}, ValueError, "force_words"),
    # contrastive search
    ("penalty_alpha-above-one", {"penalty_alpha": 1.5}, ValueError, "penalty_alpha"),
    ("penalty_alpha-sampling", {"penalty_alpha": 0.6, "do_sample": True}, ValueError, "penalty_alpha"),
    ("penalty_alpha-beams", {"penalty_alpha": 0.6, "num_beams": 2}, ValueError, "penalty_alpha"),
    ("contrastive-top_k-one", {"penalty_alpha": 0.6, "top_k": 1}, ValueError, "top_k"),
    # special tokens
    ("eos_token_id-negative", {"eos_token_id": -1}, ValueError, "eos_token_id"),
    ("eos_token_id-str", {"eos_token_id": "2"}, TypeError, "eos_token_id"),
    ("eos_token_id-list-with-str", {"eos_token_id": [1, "2"]}, TypeError, "eos_token_id"),
    ("eos_token_id-empty-list", {"eos_token_id": []}, ValueError, "eos_token_id"),
    ("pad_token_id-negative", {"pad_token_id": -1}, ValueError, "pad_token_id"),
    # stop strings
    ("stop_strings-int", {"stop_strings": 5}, TypeError, "stop_strings"),
    ("stop_strings-empty-item", {"stop_strings": ["ok", ""]}, ValueError, "stop_strings"),
    # assisted decoding and others
    ("num_assistant_tokens-zero", {"num_assistant_tokens": 0}, ValueError, "num_assistant_tokens"),
    ("num_assistant_tokens_schedule-unknown", {"num_assistant_tokens_schedule": "linear"}, ValueError,
     "num_assistant_tokens_schedule"),
    ("assistant_ensemble_weight-one", {"assistant_ensemble_weight": 1.0}, ValueError, "assistant_ensemble_weight"),
    ("dola_layers-unknown", {"dola_layers": "middle"}, ValueError, "dola_layers"),
]


def test_matrix_is_large_and_has_no_duplicates():
    assert len(INVALID) >= 30
    assert len({case_id for case_id, *_ in INVALID}) == len(INVALID)
    assert len({repr(sorted(kwargs.items())) for _, kwargs, _, _ in INVALID}) == len(INVALID)


def _check(excinfo: pytest.ExceptionInfo, field: str) -> None:
    assert str(excinfo.value).startswith(f"{field}:"), str(excinfo.value)
    assert isinstance(excinfo.value, GenerationConfigError) and excinfo.value.field == field


@pytest.mark.parametrize("kwargs,exc,field", [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_invalid_on_construction(kwargs, exc, field):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some cases also carry knobs that only warn
        with pytest.raises(exc) as excinfo:
            GenerationConfig(**kwargs)
    _check(excinfo, field)


@pytest.mark.parametrize("kwargs,exc,field", [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_invalid_on_update_leaves_the_config_unchanged(kwargs, exc, field):
    cfg = GenerationConfig(max_new_tokens=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(exc) as excinfo:
            cfg.update(**kwargs)
        with pytest.raises(exc):
            cfg.merged(**kwargs)
    _check(excinfo, field)
    assert cfg == GenerationConfig(max_new_tokens=3)


@pytest.mark.parametrize("kwargs,exc,field", [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_invalid_after_direct_assignment_is_caught_by_validate(kwargs, exc, field):
    cfg = GenerationConfig()
    for name, value in kwargs.items():
        setattr(cfg, name, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(exc) as excinfo:
            cfg.validate()
    _check(excinfo, field)


def test_type_errors_are_also_value_errors():
    with pytest.raises(ValueError):
        GenerationConfig(num_beams="4")


def test_every_checked_field_rejects_an_arbitrary_object():
    opaque = {"cache_config", "watermarking_config", "compile_config", "continuous_batching_config"}
    for f in dataclasses.fields(GenerationConfig):
        if f.name in opaque:
            continue
        with pytest.raises(GenerationConfigError, match=f"^{f.name}:"):
            GenerationConfig(**{f.name: object()})


@pytest.mark.parametrize("kwargs", [
    {"max_new_tokens": 1},
    {"max_new_tokens": 2**63 - 1, "max_length": 2**63 - 1, "min_length": 2**63 - 1, "min_new_tokens": 2**63 - 1},
    {"top_k": 0, "do_sample": True},
    {"top_p": 1.0, "do_sample": True},
    {"min_p": 0.0, "do_sample": True},
    {"eos_token_id": [0, 5]},
    {"num_beams": 4, "num_return_sequences": 4, "early_stopping": "never"},
    {"num_beams": 6, "num_beam_groups": 3, "diversity_penalty": 1.0},
    {"num_beams": 2, "force_words_ids": [[1, 2], [[3], [4, 5]]]},
    {"num_beams": 2, "force_words": ["hello", ["big", "large"]]},
    {"penalty_alpha": 0.6, "top_k": 4},
    {"stop_strings": "###"},
    {"exponential_decay_length_penalty": (0, 1.0)},
    {"seed": 2**64 - 1},
    {"num_assistant_tokens_schedule": "heuristic_transient"},
    {"dola_layers": [0, 2]},
])
def test_valid_edge_values_are_accepted_silently(kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GenerationConfig(**kwargs)


@pytest.mark.parametrize("kwargs,field", [
    ({"temperature": 0.7}, "temperature"),
    ({"temperature": 0.0}, "temperature"),  # a common "greedy" spelling: warn, never raise
    ({"top_p": 0.9}, "top_p"),
    ({"top_k": 10}, "top_k"),
    ({"typical_p": 0.9}, "typical_p"),
    ({"min_p": 0.1}, "min_p"),
    ({"top_h": 0.5}, "top_h"),
    ({"epsilon_cutoff": 3e-4}, "epsilon_cutoff"),
    ({"eta_cutoff": 3e-4}, "eta_cutoff"),
    ({"length_penalty": 2.0}, "length_penalty"),
    ({"early_stopping": True}, "early_stopping"),
    ({"num_beams": 4, "num_beam_groups": 2}, "diversity_penalty"),
])
def test_ignored_knobs_warn_naming_the_field(kwargs, field):
    with pytest.warns(UserWarning, match=f"^{field}:"):
        GenerationConfig(**kwargs)


def test_top_k_does_not_warn_for_contrastive_search():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GenerationConfig(penalty_alpha=0.5, top_k=6)


def test_none_assigned_to_a_field_with_a_default_is_caught_by_validate():
    cfg = GenerationConfig()
    cfg.top_k = None
    with pytest.raises(TypeError, match="^top_k: must not be None"):
        cfg.validate()


@pytest.mark.parametrize("field, value", [
    ("max_new_tokens", 0), ("max_new_tokens", -1), ("max_new_tokens", 2**63), ("max_length", 2**63),
    ("min_new_tokens", 2**63), ("min_length", 2**64),
])
def test_length_fields_outside_their_range_name_the_field(gpt2, field, value):
    """Issue 15: max_new_tokens=0 returned the prompt (transformers raises) and 2**63 failed inside
    torch without naming the field. Every mode, before the model runs."""
    import torch

    import ferrogen

    calls = []
    handle = gpt2.register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        for mode in ({}, {"num_beams": 2}, {"do_sample": True}):
            with pytest.raises(ValueError, match=rf"^{field}: must be in \[[01], 9223372036854775808\), got {value}"):
                ferrogen.generate(gpt2, input_ids=torch.tensor([[5, 6]]), **{field: value}, **mode)
    finally:
        handle.remove()
    assert not calls


def test_a_prompt_plus_max_new_tokens_past_int64_names_max_new_tokens():
    with pytest.raises(ValueError, match=r"^max_new_tokens: the input \(5 tokens\) plus"):
        GenerationConfig(max_new_tokens=2**63 - 3).resolved_max_length(5)


# Ints the Python layer hands the Rust core. The core refuses an int that does not fit its type by
# name (tests/test_core_ints.py); every public entry still checks its ints first, with the config's
# messages and limits: the config's int fields and token ids (< 2**63, the
# core's int64; seeds < 2**64), the constraints' token ids, LogitsPipeline's lengths, seed and
# key_length, the SynthID scorer's eos_token_id. The rest of what reaches the core is either read
# from tensors (shapes, ids as int64 arrays) or from the config, checked here.
def _core_ints() -> list[tuple[str, object, str]]:
    import numpy as np
    import torch

    from ferrogen import LogitsPipeline
    from ferrogen.constraints import DisjunctiveConstraint, PhrasalConstraint
    from ferrogen.watermark import synthid_eos_token_mask

    ids, scores = np.array([[1, 2]]), np.zeros((1, 8), np.float32)
    cases = []
    for v in (-1, 2**64):
        for field in ("top_k", "prompt_lookup_num_tokens", "max_matching_ngram_size", "no_repeat_ngram_size",
                      "pad_token_id", "forced_bos_token_id", "penalty_last_n"):
            cases.append((f"{field}={v}", lambda f=field, v=v: GenerationConfig(**{f: v}), field))
        cases += [
            (f"suppress_tokens=[{v}]", lambda v=v: GenerationConfig(suppress_tokens=[v]), "suppress_tokens"),
            (f"exponential_decay=({v}, 1.5)",
             lambda v=v: GenerationConfig(exponential_decay_length_penalty=(v, 1.5)),
             "exponential_decay_length_penalty"),
            (f"PhrasalConstraint([{v}])", lambda v=v: PhrasalConstraint([v]), "token_ids"),
            (f"DisjunctiveConstraint([[{v}]])", lambda v=v: DisjunctiveConstraint([[v]]), "nested_token_ids"),
            (f"LogitsPipeline(prompt_length={v})", lambda v=v: LogitsPipeline(prompt_length=v), "prompt_length"),
            (f"LogitsPipeline(max_length={v})", lambda v=v: LogitsPipeline(prompt_length=2, max_length=v),
             "max_length"),
            (f"LogitsPipeline(min_tokens_to_keep={v})", lambda v=v: LogitsPipeline(min_tokens_to_keep=v),
             "min_tokens_to_keep"),
            (f"LogitsPipeline.sample(seed={v})", lambda v=v: LogitsPipeline().sample(ids, scores, seed=v), "seed"),
            (f"LogitsPipeline.sample(key_length={v})",
             lambda v=v: LogitsPipeline().sample(ids, scores, seed=0, key_length=v), "key_length"),
        ]
    cases.append(("synthid_eos_token_mask(2**64)", lambda: synthid_eos_token_mask(torch.tensor([[1, 2]]), 2**64),
                  "eos_token_id"))
    return cases


CORE_INTS = _core_ints()


@pytest.mark.parametrize("call, name", [c[1:] for c in CORE_INTS], ids=[c[0] for c in CORE_INTS])
def test_ints_outside_what_the_core_takes_are_refused_by_name(call, name):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value).startswith(f"{name}:"), str(info.value)
