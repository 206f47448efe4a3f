"""Drop-in paths on real transformers model objects: ``enable``/``patched``, the shipped
``custom_generate`` folders loaded by the installed transformers 5.x, transformers' own
objects as arguments, and transformers-shaped outputs.

Parity here is with :func:`ferrogen.generate` (token-identical); parity of ferrogen with
transformers itself is the other test files' job. A strategy that ``ferrogen.generate`` does
not have yet (it raises ``NotImplementedError``) is skipped, naming it, so these tests start
running by themselves once the strategy lands.
"""

from __future__ import annotations

import copy
import sys
import warnings
from dataclasses import fields

import pytest
import torch
import transformers
from transformers import (
    GenerationConfig as HFGenerationConfig,
    LogitsProcessorList,
    MaxLengthCriteria,
    RepetitionPenaltyLogitsProcessor,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

import ferrogen
from ferrogen import FallbackWarning, compat
from ferrogen.config import GenerationMode
from ferrogen.strategies import STRATEGIES

PROMPTS = ["And God said", "In the beginning God created"]
NEW = 6

# Settings that select each strategy (callables get the model, for the assistant).
MODES = {
    "greedy": {},
    "sample": dict(do_sample=True, top_k=20, seed=7),
    "beam_search": dict(num_beams=3, num_return_sequences=2),
    "beam_sample": dict(num_beams=3, do_sample=True, seed=7),
    "group_beam_search": dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0),
    "constrained_beam_search": dict(num_beams=3, force_words_ids=[[42]]),
    "contrastive_search": dict(penalty_alpha=0.6, top_k=4),
    "assisted": lambda model: dict(assistant_model=model),
    "assisted-prompt-lookup": dict(prompt_lookup_num_tokens=3),
}
# Folders: the three strategies transformers 5.x moved to the Hub, and the any-strategy folder.
FOLDER_CASES = [
    (None, "greedy"),
    (None, "beam_search"),
    ("group_beam_search", "group_beam_search"),
    ("constrained_beam_search", "constrained_beam_search"),
    ("contrastive_search", "contrastive_search"),
]


def settings(mode, model):
    value = MODES[mode]
    return dict(value(model) if callable(value) else value)


@pytest.fixture(scope="module")
def kjv():
    model, tok = ferrogen.text.load_model(ferrogen.embedded_model_path())
    tok.padding_side = "left"
    assert isinstance(model, transformers.GPT2LMHeadModel)
    return model, tok, tok(PROMPTS, return_tensors="pt", padding=True)


@pytest.fixture(scope="module")
def kjv_t5():
    model, tok = ferrogen.text.load_model(ferrogen.embedded_model_path("seq2seq"))
    return model, tok, tok(PROMPTS, return_tensors="pt", padding=True)


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    """Each test starts with no fallback warned yet."""
    monkeypatch.setattr(compat, "_warned", set())


@pytest.fixture
def modules_cache(tmp_path, monkeypatch):
    """transformers copies custom_generate code into HF_MODULES_CACHE: keep it inside the test."""
    import transformers.dynamic_module_utils as dmu

    monkeypatch.setattr(dmu, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    return tmp_path / "modules"


def reference(model, enc, kwargs):
    """ferrogen.generate's answer, or a skip naming the strategy while it has none."""
    try:
        return ferrogen.generate(model, **enc, max_new_tokens=NEW, **kwargs)
    except NotImplementedError as exc:
        pytest.skip(f"ferrogen.generate raises NotImplementedError: {exc}")


def fallbacks(record):
    return [w for w in record if issubclass(w.category, FallbackWarning)]


@pytest.mark.parametrize("mode", list(MODES))
def test_enable_matches_ferrogen_generate(kjv, mode):
    model, _, enc = kjv
    kwargs = settings(mode, model)
    assert ferrogen.GenerationConfig(**{k: v for k, v in kwargs.items() if k != "assistant_model"}).generation_mode(
        kwargs.get("assistant_model")
    ).value == mode.split("-")[0]
    expected = reference(model, enc, kwargs)
    with ferrogen.patched(model), warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        got = model.generate(**enc, max_new_tokens=NEW, **kwargs)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("mode", ["greedy", "beam_search", "group_beam_search", "contrastive_search"])
def test_enable_matches_ferrogen_generate_encoder_decoder(kjv_t5, mode):
    model, _, enc = kjv_t5
    kwargs = settings(mode, model)
    expected = reference(model, enc, kwargs)
    with ferrogen.patched(model), warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        got = model.generate(enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=NEW, **kwargs)
    assert torch.equal(got, expected)


@pytest.mark.parametrize(("folder", "mode"), FOLDER_CASES, ids=[f"{f or 'any'}-{m}" for f, m in FOLDER_CASES])
def test_custom_generate_folder_matches_ferrogen_generate(kjv, modules_cache, folder, mode):
    model, _, enc = kjv
    kwargs = settings(mode, model)
    expected = reference(model, enc, kwargs)
    path = ferrogen.custom_generate_path(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        got = model.generate(**enc, max_new_tokens=NEW, **kwargs, custom_generate=path, trust_remote_code=True)
    assert torch.equal(got, expected)
    assert any(modules_cache.rglob("generate.py")), "transformers did not load the folder through its module cache"


def test_custom_generate_folder_needs_trust_remote_code(kjv, modules_cache):
    model, _, enc = kjv
    with pytest.raises(ValueError, match="trust_remote_code"):
        model.generate(**enc, max_new_tokens=NEW, custom_generate=ferrogen.custom_generate_path())


def test_strategy_folder_refuses_other_strategies(kjv, modules_cache):
    model, _, enc = kjv
    path = ferrogen.custom_generate_path("contrastive_search")
    with pytest.raises(ValueError, match="penalty_alpha > 0 and top_k > 1; these settings select greedy"):
        model.generate(**enc, max_new_tokens=NEW, custom_generate=path, trust_remote_code=True)


def test_custom_generate_folder_returns_dict_output(kjv, modules_cache):
    model, _, enc = kjv
    out = model.generate(**enc, max_new_tokens=NEW, return_dict_in_generate=True, output_scores=True,
                         custom_generate=ferrogen.custom_generate_path(), trust_remote_code=True)
    assert torch.equal(out.sequences, reference(model, enc, {}))
    assert len(out["scores"]) == NEW


def test_custom_generate_folders_are_complete():
    for name in ("contrastive_search", "group_beam_search", "constrained_beam_search", None):
        path = ferrogen.custom_generate_path(name)
        code = (ferrogen.compat.Path(path) / "custom_generate" / "generate.py").read_text()
        assert "def generate(model" in code and "run_custom_generate(model" in code, path
        assert (ferrogen.compat.Path(path) / "README.md").is_file()
        assert str(path).startswith(str(ferrogen.compat.Path(ferrogen.__file__).parent))


def test_custom_generate_path_accepts_hub_names_and_names_choices():
    assert ferrogen.custom_generate_path("transformers-community/group-beam-search").endswith("group_beam_search")
    assert ferrogen.custom_generate_path(GenerationMode.CONTRASTIVE_SEARCH).endswith("contrastive_search")
    with pytest.raises(ValueError, match="strategy: must be one of"):
        ferrogen.custom_generate_path("beam_search")


def test_enable_with_custom_generate_goes_to_transformers_silently(kjv, modules_cache):
    model, _, enc = kjv
    with ferrogen.patched(model), warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        got = model.generate(**enc, max_new_tokens=NEW, custom_generate=ferrogen.custom_generate_path(),
                             trust_remote_code=True)
    assert torch.equal(got, reference(model, enc, {}))


@pytest.mark.falls_back
def test_unsupported_argument_falls_back_and_warns_once(kjv):
    model, _, enc = kjv
    # classifier-free guidance with prompt lookup: transformers' own
    unsupported = dict(guidance_scale=1.5, prompt_lookup_num_tokens=2)
    expected = model.generate(**enc, max_new_tokens=NEW, **unsupported)
    with ferrogen.patched(model), warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        first = model.generate(**enc, max_new_tokens=NEW, **unsupported)
        second = model.generate(**enc, max_new_tokens=NEW, **unsupported)
    assert torch.equal(first, expected) and torch.equal(second, expected)
    warned = fallbacks(record)
    assert len(warned) == 1, [str(w.message) for w in warned]
    assert "guidance_scale" in str(warned[0].message)
    assert warned[0].filename == __file__  # points at the caller's line


@pytest.mark.falls_back
@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        # every strategy collects output_attentions / output_hidden_states natively, and guidance runs
        # natively with every strategy but assisted decoding (tests/test_guidance_beams.py)
        (dict(guidance_scale=1.5, return_dict_in_generate=True, output_scores=True, prompt_lookup_num_tokens=2),
         "guidance_scale"),
    ],
)
def test_unsupported_setting_or_model_input_falls_back(kjv, extra, reason):
    model, _, enc = kjv
    expected = model.generate(**enc, max_new_tokens=NEW, **extra)
    with ferrogen.patched(model), warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = model.generate(**enc, max_new_tokens=NEW, **extra)
    sequences = (lambda out: out if isinstance(out, torch.Tensor) else out.sequences)
    assert torch.equal(sequences(got), sequences(expected))
    assert type(got) is type(expected)  # transformers' own output, attentions and all
    assert [reason in str(w.message) for w in fallbacks(record)] == [True]


def test_no_inputs_starts_from_bos_like_transformers(kjv):
    """transformers starts from [[bos_token_id]] when given no prompt; so does the enabled path, natively."""
    model = kjv[0]
    for kwargs in ({}, dict(num_beams=3)):
        expected = model.generate(max_new_tokens=NEW, **kwargs)
        with ferrogen.patched(model), warnings.catch_warnings():
            warnings.simplefilter("error", FallbackWarning)
            got = model.generate(max_new_tokens=NEW, **kwargs)
        assert torch.equal(got, expected)


def test_no_inputs_and_no_bos_raises_like_transformers(kjv):
    model = copy.deepcopy(kjv[0])
    model.generation_config.bos_token_id = model.config.bos_token_id = None
    with pytest.raises(ValueError, match="`bos_token_id` has to be defined"):
        model.generate(max_new_tokens=NEW)
    with ferrogen.patched(model), pytest.raises(ValueError, match="`bos_token_id` has to be defined"):
        model.generate(max_new_tokens=NEW)


@pytest.mark.falls_back
def test_missing_strategy_falls_back_to_transformers(kjv, monkeypatch):
    model, _, enc = kjv
    monkeypatch.delitem(STRATEGIES, GenerationMode.GREEDY)
    expected = model.generate(**enc, max_new_tokens=NEW)
    with ferrogen.patched(model), warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = model.generate(**enc, max_new_tokens=NEW)
    assert torch.equal(got, expected)
    assert [("greedy" in str(w.message)) for w in fallbacks(record)] == [True]


def test_invalid_settings_raise_instead_of_falling_back(kjv):
    model, _, enc = kjv
    with ferrogen.patched(model), pytest.raises(ValueError, match="top_p"):
        model.generate(**enc, max_new_tokens=NEW, do_sample=True, top_p=1.5)


def test_enable_is_per_object_and_undone(kjv):
    model, _, enc = kjv
    assert not ferrogen.is_enabled(model)
    assert ferrogen.enable(model) is model and ferrogen.enable(model) is model
    assert ferrogen.is_enabled(model) and "generate" in vars(model)
    with ferrogen.patched(model):
        pass
    assert ferrogen.is_enabled(model)  # patched() leaves an earlier enable() alone
    ferrogen.disable(model)
    ferrogen.disable(model)
    assert not ferrogen.is_enabled(model) and "generate" not in vars(model)
    with ferrogen.patched(model) as same:
        assert same is model and ferrogen.is_enabled(model)
    assert not ferrogen.is_enabled(model)
    with pytest.raises(RuntimeError), ferrogen.patched(model):
        raise RuntimeError
    assert not ferrogen.is_enabled(model)


def test_enabled_model_copies_stay_enabled_for_themselves(kjv):
    model, _, enc = kjv
    with ferrogen.patched(model):
        twin = copy.deepcopy(model)
    assert not ferrogen.is_enabled(model) and ferrogen.is_enabled(twin)
    assert twin.generate.model is twin
    assert torch.equal(twin.generate(**enc, max_new_tokens=NEW), reference(model, enc, {}))
    ferrogen.disable(twin)
    assert not ferrogen.is_enabled(twin)


def test_enable_keeps_generate_signature(kjv):
    import inspect

    model = kjv[0]
    before = inspect.signature(model.generate)
    with ferrogen.patched(model):
        assert inspect.signature(model.generate) == before
        assert model.generate.__doc__ == type(model).generate.__doc__


def test_enable_refuses_models_that_are_not_plain_generation_mixins(kjv):
    class OwnGenerate(transformers.GPT2LMHeadModel):
        def generate(self, *args, **kwargs):  # like Whisper, Bark, MusicGen
            return "own"

    model = kjv[0]
    own = OwnGenerate(model.config)
    with pytest.raises(TypeError, match="has its own generate"):
        ferrogen.enable(own)
    with pytest.raises(TypeError, match="transformers model"):
        ferrogen.enable(torch.nn.Linear(2, 2))


def test_enable_positional_inputs_and_ferrogen_config(kjv):
    model, _, enc = kjv
    expected = reference(model, enc, {})
    cfg = ferrogen.GenerationConfig(max_new_tokens=NEW, pad_token_id=0, eos_token_id=1)
    with ferrogen.patched(model):
        got = model.generate(enc["input_ids"], cfg, attention_mask=enc["attention_mask"])
        with pytest.raises(TypeError, match="multiple values"):
            model.generate(enc["input_ids"], inputs=enc["input_ids"])
    assert torch.equal(got, expected)


# --- transformers objects in, transformers-shaped objects out ---------------------------------


def test_transformers_generation_config_reads_like_model_generate(kjv):
    """transformers 5.x fills a passed config's unset fields from the model's generation config."""
    model, _, enc = kjv
    model = copy.deepcopy(model)
    model.generation_config.min_new_tokens = 5  # must still apply: the passed config leaves it unset
    model.generation_config.eos_token_id = [1, 298]
    hf_cfg = HFGenerationConfig(max_new_tokens=NEW)
    expected = model.generate(**enc, generation_config=hf_cfg)
    got = ferrogen.generate(model, **enc, generation_config=hf_cfg)
    assert torch.equal(got, expected)
    with ferrogen.patched(model):
        assert torch.equal(model.generate(**enc, generation_config=hf_cfg), expected)


def test_transformers_processor_and_criteria_lists(kjv):
    model, _, enc = kjv
    prompt_len = enc["input_ids"].shape[1]
    kwargs = dict(
        logits_processor=LogitsProcessorList([RepetitionPenaltyLogitsProcessor(1.5)]),
        stopping_criteria=StoppingCriteriaList([MaxLengthCriteria(max_length=prompt_len + 4)]),
        max_new_tokens=NEW,
    )
    expected = model.generate(**enc, **kwargs)
    assert expected.shape[1] == prompt_len + 4
    assert torch.equal(ferrogen.generate(model, **enc, **kwargs), expected)
    with ferrogen.patched(model), warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        assert torch.equal(model.generate(**enc, **kwargs), expected)


def test_transformers_streamers(kjv, capsys):
    model, tok, enc = kjv
    single = tok(PROMPTS[:1], return_tensors="pt")
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=0)
    with ferrogen.patched(model):
        out = model.generate(**single, max_new_tokens=NEW, streamer=streamer)
        assert "".join(streamer) == tok.decode(out[0, single["input_ids"].shape[1]:], skip_special_tokens=True)
        model.generate(**single, max_new_tokens=NEW, streamer=transformers.TextStreamer(tok, skip_prompt=True))
    assert capsys.readouterr().out.strip() == tok.decode(out[0, single["input_ids"].shape[1]:]).strip()


def test_output_has_transformers_fields_and_access(kjv):
    model, _, enc = kjv
    flags = dict(max_new_tokens=NEW, return_dict_in_generate=True, output_scores=True, output_logits=True)
    theirs = model.generate(**enc, **flags)
    ours = ferrogen.generate(model, **enc, **flags)
    for cls in (transformers.generation.GenerateDecoderOnlyOutput, transformers.generation.GenerateBeamDecoderOnlyOutput,
                transformers.generation.GenerateEncoderDecoderOutput,
                transformers.generation.GenerateBeamEncoderDecoderOutput):
        missing = [f.name for f in fields(cls) if not hasattr(ours, f.name)]
        assert not missing, (cls.__name__, missing)
    assert set(theirs.keys()) <= set(ours.keys())  # the cache included (greedy)
    assert ours[0] is ours.sequences and ours["sequences"] is ours.sequences
    assert ours.to_tuple()[: len(theirs.to_tuple())][1] is ours.scores  # same positions as transformers'
    assert dict(ours.items())["logits"] is ours.logits and "attentions" not in ours
    assert ours.get("attentions") is None and ours.past_key_values is ours.cache is not None
    assert torch.equal(ours.sequences, theirs.sequences)
    for a, b in zip(ours.scores, theirs.scores):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    with pytest.raises(KeyError):
        ours["attentions"]


def test_enable_matches_transformers_greedy(kjv):
    """The drop-in promise for the strategy main ships: same tokens as transformers itself."""
    model, _, enc = kjv
    expected = model.generate(**enc, max_new_tokens=12)
    with ferrogen.patched(model):
        assert torch.equal(model.generate(**enc, max_new_tokens=12), expected)
