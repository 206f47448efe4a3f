"""GenerationConfig: defaults, repr, JSON round trips, transformers interop, updates, mode selection."""

from __future__ import annotations

import json
import re
import warnings

import pytest

from ferrogen import config

GenerationConfig = config.GenerationConfig
GenerationMode = config.GenerationMode

transformers = pytest.importorskip("transformers")


# ---------------------------------------------------------------------------- defaults and repr

CLASSIC_DEFAULTS = {
    "max_length": 20, "max_new_tokens": None, "min_length": 0, "min_new_tokens": None, "do_sample": False,
    "num_beams": 1, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "typical_p": 1.0, "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0, "repetition_penalty": 1.0, "length_penalty": 1.0, "no_repeat_ngram_size": 0,
    "num_return_sequences": 1, "early_stopping": False, "num_beam_groups": 1, "diversity_penalty": 0.0,
    "penalty_alpha": None, "use_cache": True, "min_p": None, "eos_token_id": None, "seed": None,
    "output_beam_tree": False, "force_words": None, "force_words_ids": None, "constraints": None,
}


@pytest.mark.parametrize("name,expected", sorted(CLASSIC_DEFAULTS.items()))
def test_classic_defaults(name, expected):
    value = getattr(GenerationConfig(), name)
    assert value == expected and type(value) is type(expected)


def test_defaults_match_transformers_effective_defaults():
    hf_defaults = transformers.GenerationConfig._get_default_generation_params()
    ours = GenerationConfig().to_dict()
    assert {k: ours[k] for k in hf_defaults} == hf_defaults


def test_every_transformers_field_is_known():
    hf_fields = set(transformers.GenerationConfig().to_dict()) - {"transformers_version", "_from_model_config"}
    moved_out_in_5x = {"penalty_alpha", "num_beam_groups", "diversity_penalty", "constraints", "force_words_ids",
                       "low_memory", "dola_layers"}
    assert hf_fields | moved_out_in_5x <= set(GenerationConfig().to_dict())


def test_none_means_default():
    assert GenerationConfig(top_k=None, max_length=None, do_sample=None) == GenerationConfig()


def test_unknown_keyword_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="top_q.*did you mean 'top_p'"):
        GenerationConfig(top_q=0.5)


def test_repr_shows_only_non_default_fields():
    assert repr(GenerationConfig()) == "GenerationConfig()"
    assert repr(GenerationConfig(max_new_tokens=5, num_beams=4, top_k=50)) == \
        "GenerationConfig(max_new_tokens=5, num_beams=4)"


def test_diff_dict_keeps_bool_and_int_apart():
    cfg = GenerationConfig(num_beams=2, early_stopping="never")
    assert cfg.to_diff_dict() == {"num_beams": 2, "early_stopping": "never"}


def test_equality_copy_and_hash():
    cfg = GenerationConfig(num_beams=2, bad_words_ids=[[1, 2]])
    twin = cfg.copy()
    assert twin == cfg and twin is not cfg
    twin.bad_words_ids[0].append(3)
    assert cfg.bad_words_ids == [[1, 2]] and twin != cfg
    assert GenerationConfig() != "GenerationConfig()"
    with pytest.raises(TypeError):
        hash(cfg)


def test_canonical_forms():
    cfg = GenerationConfig(temperature=1, exponential_decay_length_penalty=[4, 2], suppress_tokens=(1, 2),
                           sequence_bias=[[[1, 2], 0.5]])
    assert type(cfg.temperature) is float
    assert cfg.exponential_decay_length_penalty == (4, 2.0)
    assert cfg.suppress_tokens == [1, 2]
    assert cfg.sequence_bias == {(1, 2): 0.5}


# ---------------------------------------------------------------------------- JSON round trips

RICH = dict(max_new_tokens=9, num_beams=4, num_return_sequences=2, length_penalty=0.8, early_stopping="never",
            eos_token_id=[2, 3], pad_token_id=0, no_repeat_ngram_size=2, bad_words_ids=[[5], [6, 7]],
            sequence_bias={(1, 2): -1.5, (4,): 2.0}, exponential_decay_length_penalty=(5, 1.2),
            stop_strings=["\n\n"], seed=1234, output_beam_tree=True, suppress_tokens=[9])


@pytest.mark.parametrize("file_name", [None, "beam_config.json"])
def test_save_then_load_is_equal(tmp_path, file_name):
    cfg = GenerationConfig(**RICH)
    target = tmp_path / "nested" / "dir"
    kwargs = {} if file_name is None else {"config_file_name": file_name}
    written = cfg.save_pretrained(target, **kwargs)
    assert written == target / (file_name or "generation_config.json")
    assert set(json.loads(written.read_text())) == set(RICH)  # only non-default fields
    assert GenerationConfig.from_pretrained(target, **kwargs) == cfg
    assert GenerationConfig.from_pretrained(written) == cfg  # a path to the file itself


def test_custom_file_name_is_not_found_under_the_default_name(tmp_path):
    GenerationConfig(num_beams=2).save_pretrained(tmp_path, config_file_name="other.json")
    with pytest.raises(FileNotFoundError, match="generation_config.json"):
        GenerationConfig.from_pretrained(tmp_path)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "absent.json")):
        GenerationConfig.from_pretrained(tmp_path / "absent.json")


def test_json_string_use_diff():
    cfg = GenerationConfig(num_beams=3)
    assert json.loads(cfg.to_json_string()) == {"num_beams": 3}
    full = json.loads(cfg.to_json_string(use_diff=False))
    assert full["top_k"] == 50 and full["num_beams"] == 3 and "constraints" not in full


def test_constraints_are_left_out_of_json_with_a_warning():
    cfg = GenerationConfig(num_beams=2, constraints=[object()])
    with pytest.warns(UserWarning, match="constraints"):
        assert json.loads(cfg.to_json_string()) == {"num_beams": 2}


def test_load_json_written_by_transformers(tmp_path):
    hf = transformers.GenerationConfig(max_new_tokens=7, num_beams=3, num_return_sequences=3, early_stopping=True,
                                       no_repeat_ngram_size=2, eos_token_id=[1, 2], length_penalty=0.5)
    hf.save_pretrained(tmp_path)
    assert "transformers_version" in json.loads((tmp_path / "generation_config.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # bookkeeping keys must not warn
        cfg = GenerationConfig.from_pretrained(tmp_path)
    assert cfg == GenerationConfig(max_new_tokens=7, num_beams=3, num_return_sequences=3, early_stopping=True,
                                   no_repeat_ngram_size=2, eos_token_id=[1, 2], length_penalty=0.5)


def test_load_full_transformers_json_with_explicit_nulls(tmp_path):
    path = tmp_path / "full.json"
    transformers.GenerationConfig(top_k=7, do_sample=True).to_json_file(path, use_diff=False)
    data = json.loads(path.read_text())
    assert data["max_length"] is None and data["_from_model_config"] is None
    assert GenerationConfig.from_pretrained(path) == GenerationConfig(top_k=7, do_sample=True)


def test_transformers_tuple_key_sequence_bias_is_read(tmp_path):
    hf = transformers.GenerationConfig(sequence_bias={(1, 2): 1.5, (3,): -2.0})
    hf.save_pretrained(tmp_path)  # transformers 5.x writes the keys as "(1, 2)"
    cfg = GenerationConfig.from_pretrained(tmp_path)
    assert cfg.sequence_bias == {(1, 2): 1.5, (3,): -2.0}


def test_unknown_keys_in_files_warn_and_are_ignored(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps({"num_beams": 2, "vendor_knob": 1}))
    with pytest.warns(UserWarning, match="vendor_knob"):
        cfg = GenerationConfig.from_pretrained(tmp_path)
    assert cfg == GenerationConfig(num_beams=2)


def test_hub_style_whisper_config_loads(tmp_path):
    data = {"forced_decoder_ids": [[1, None], [2, 50359]], "suppress_tokens": [1, 2, 7],
            "begin_suppress_tokens": [220, 50257], "decoder_start_token_id": 50258, "max_length": 448,
            "no_timestamps_token_id": 50363, "lang_to_id": {"<|en|>": 50259}, "_from_model_config": False,
            "transformers_version": "4.31.0.dev0"}
    (tmp_path / "generation_config.json").write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="lang_to_id, no_timestamps_token_id: not generation config"):
        cfg = GenerationConfig.from_pretrained(tmp_path)
    assert cfg.forced_decoder_ids == [[1, None], [2, 50359]] and cfg.max_length == 448


def test_invalid_values_in_files_raise(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps({"top_p": 2.0}))
    with pytest.raises(ValueError, match="top_p"):
        GenerationConfig.from_pretrained(tmp_path)


def test_transformers_reads_what_we_save(tmp_path):
    cfg = GenerationConfig(max_new_tokens=6, num_beams=4, length_penalty=1.5, sequence_bias={(1, 2): 0.5},
                           seed=3)
    cfg.save_pretrained(tmp_path)
    hf = transformers.GenerationConfig.from_pretrained(tmp_path)
    assert (hf.max_new_tokens, hf.num_beams, hf.length_penalty, hf.seed) == (6, 4, 1.5, 3)
    assert hf.sequence_bias == [[[1, 2], 0.5]]


# ---------------------------------------------------------------------------- transformers objects


def test_from_pretrained_model():
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    model.generation_config.num_beams = 2
    model.generation_config.max_new_tokens = 11
    cfg = GenerationConfig.from_pretrained(model)
    assert cfg.eos_token_id == model.config.eos_token_id and cfg.bos_token_id == model.config.bos_token_id
    assert (cfg.num_beams, cfg.max_new_tokens, cfg.top_k) == (2, 11, 50)


def test_to_transformers_round_trip():
    cfg = GenerationConfig(max_new_tokens=4, num_beams=6, num_beam_groups=3, diversity_penalty=0.7,
                           num_return_sequences=3, eos_token_id=[1, 5], seed=7, output_beam_tree=True)
    hf = cfg.to_transformers()
    assert isinstance(hf, transformers.GenerationConfig)
    assert (hf.num_beams, hf.num_beam_groups, hf.diversity_penalty, hf.seed) == (6, 3, 0.7, 7)
    assert hf.top_k is None  # unset there means the same effective default
    assert GenerationConfig.from_transformers(hf) == cfg
    assert GenerationConfig.from_pretrained(hf) == cfg


# ---------------------------------------------------------------------------- update / merged


def test_update_sets_known_fields_and_returns_the_rest():
    cfg = GenerationConfig()
    unused = cfg.update(max_new_tokens=3, do_sample=True, attention_mask="mask", foo=1)
    assert unused == {"attention_mask": "mask", "foo": 1}
    assert (cfg.max_new_tokens, cfg.do_sample) == (3, True)


def test_update_is_all_or_nothing():
    cfg = GenerationConfig(num_beams=4)
    with pytest.raises(ValueError, match="num_return_sequences"):
        cfg.update(max_new_tokens=3, num_return_sequences=5)
    assert cfg == GenerationConfig(num_beams=4)


def test_merged_returns_a_new_config_and_leaves_the_original():
    base = GenerationConfig(max_new_tokens=8, num_beams=4)
    snapshot = base.to_dict()
    out = base.merged(num_beams=2, max_new_tokens=None)
    assert out == GenerationConfig(num_beams=2) and out is not base
    assert base.to_dict() == snapshot


def test_merged_rejects_unknown_keys():
    with pytest.raises(TypeError, match="attention_mask"):
        GenerationConfig().merged(attention_mask=None)


# ---------------------------------------------------------------------------- mode selection

MODES = [
    ({}, GenerationMode.GREEDY),
    ({"do_sample": True}, GenerationMode.SAMPLE),
    ({"num_beams": 3}, GenerationMode.BEAM_SEARCH),
    ({"num_beams": 3, "do_sample": True}, GenerationMode.BEAM_SAMPLE),
    ({"num_beams": 4, "num_beam_groups": 2, "diversity_penalty": 0.5}, GenerationMode.GROUP_BEAM_SEARCH),
    ({"num_beams": 3, "force_words_ids": [[4, 5]]}, GenerationMode.CONSTRAINED_BEAM_SEARCH),
    ({"penalty_alpha": 0.6, "top_k": 4}, GenerationMode.CONTRASTIVE_SEARCH),
    ({"prompt_lookup_num_tokens": 3}, GenerationMode.ASSISTED),
    ({"dola_layers": "low", "do_sample": True}, GenerationMode.DOLA),
]
HF_NAMES = {"greedy": "greedy_search", "assisted": "assisted_generation"}


@pytest.mark.parametrize("kwargs,mode", MODES, ids=[m.value for _, m in MODES])
def test_generation_mode_matches_transformers(kwargs, mode):
    assert GenerationConfig(**kwargs).generation_mode() is mode
    hf_mode = transformers.GenerationConfig(**kwargs).get_generation_mode()
    assert str(hf_mode.value) == HF_NAMES.get(mode.value, mode.value)


def test_every_mode_is_covered_by_the_table():
    assert {m for _, m in MODES} == set(GenerationMode)


@pytest.mark.parametrize("kwargs,mode", [
    ({}, GenerationMode.ASSISTED),
    ({"do_sample": True}, GenerationMode.ASSISTED),
    ({"penalty_alpha": 0.0}, GenerationMode.ASSISTED),
])
def test_assistant_model_turns_greedy_and_sampling_into_assisted(kwargs, mode):
    assert GenerationConfig(**kwargs).generation_mode(assistant_model=object()) is mode


@pytest.mark.parametrize("kwargs", [{"num_beams": 2}, {"num_beams": 2, "do_sample": True},
                                    {"penalty_alpha": 0.6, "top_k": 4}])
def test_assistant_model_with_other_modes_is_refused(kwargs):
    with pytest.raises(ValueError, match="^assistant_model"):
        GenerationConfig(**kwargs).generation_mode(assistant_model=object())


def test_prompt_lookup_with_beams_names_the_trigger():
    with pytest.raises(ValueError, match="^prompt_lookup_num_tokens"):
        GenerationConfig(num_beams=2, prompt_lookup_num_tokens=3).generation_mode()


def test_mode_is_a_string_enum():
    assert GenerationMode.BEAM_SEARCH == "beam_search" and GenerationMode("greedy") is GenerationMode.GREEDY


# ---------------------------------------------------------------------------- helpers


@pytest.mark.parametrize("eos,expected", [(None, []), (7, [7]), ([1, 2], [1, 2])])
def test_eos_token_ids(eos, expected):
    assert GenerationConfig(eos_token_id=eos).eos_token_ids == expected


@pytest.mark.parametrize("kwargs,input_len,max_pos,expected", [
    ({"max_new_tokens": 5}, 7, None, 12),
    ({"max_new_tokens": 5, "max_length": 9}, 7, None, 12),  # max_new_tokens wins
    ({"max_new_tokens": 1}, 7, None, 8),
    ({}, 7, None, 27),  # default max_length: 20 new tokens
    ({}, 7, 16, 16),  # ... capped by the model's positions
    ({"max_length": 30}, 7, 16, 30),  # an explicit max_length is used as given
])
def test_resolved_max_length(kwargs, input_len, max_pos, expected):
    assert GenerationConfig(**kwargs).resolved_max_length(input_len, max_pos) == expected


def test_resolved_max_length_refuses_a_prompt_that_fills_it():
    with pytest.raises(ValueError, match="^max_length"):
        GenerationConfig(max_length=8).resolved_max_length(8)


@pytest.mark.parametrize("kwargs,expected", [({}, 0), ({"min_length": 9}, 9), ({"min_new_tokens": 3}, 10),
                                             ({"min_new_tokens": 3, "min_length": 50}, 10)])
def test_resolved_min_length(kwargs, expected):
    assert GenerationConfig(**kwargs).resolved_min_length(7) == expected


@pytest.mark.parametrize("content, exc, needle", [
    ('{"max_new_tokens": "x"}', TypeError, r"^max_new_tokens: must be an int, got str 'x' \(in .*generation_config.json\)"),
    ('{"top_p": 7}', ValueError, r"^top_p: must be in \(0, 1\], got 7 \(in .*generation_config.json\)"),
    ('{"top_p": 0.5,,}', ValueError, r"generation_config.json: not valid JSON"),
])
def test_a_bad_generation_config_file_is_named(tmp_path, content, exc, needle):
    (tmp_path / "generation_config.json").write_text(content)
    with pytest.raises(exc, match=needle):
        GenerationConfig.from_pretrained(tmp_path)


def test_a_bad_generation_config_of_a_model_names_its_file(tmp_path):
    """A model whose directory held a bad value: transformers loads it, ferrogen names the file."""
    import transformers

    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=8, n_head=1, vocab_size=16,
                                                                       bos_token_id=0, eos_token_id=0))
    model.name_or_path = str(tmp_path)
    model.generation_config.top_p = 7.0
    with pytest.raises(ValueError, match=rf"^top_p: must be in \(0, 1\], got 7(\.0)? \(in the model's generation config "
                                         rf"\({re.escape(str(tmp_path))}/generation_config.json\)\)"):
        GenerationConfig.from_pretrained(model)
