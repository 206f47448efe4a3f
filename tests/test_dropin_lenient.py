"""What transformers' ``generate`` takes with a warning, ``model.generate`` under
``ferrogen.enable`` takes too: same tokens as transformers 5.x live, transformers' warning, no
fallback; ``ferrogen.generate`` itself refuses the same settings, naming the flag.

Tiny random GPT-2 / Llama (decoder-only) and T5 / BART (encoder-decoder) from tests/architectures.py.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from architectures import EOS, build, padded_batch
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging as hf_logging

import ferrogen
from ferrogen import FallbackWarning, GenerationConfigError, compat

MODELS = ["gpt2", "llama", "t5", "bart"]
NEW = 6


@pytest.fixture(scope="module", params=MODELS)
def tiny(request):
    model = build(request.param)
    ids, mask = padded_batch(model.config.is_encoder_decoder)
    return model, ids, mask


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    monkeypatch.setattr(compat, "_warned", set())
    hf_logging.warning_once.cache_clear()  # transformers warns once per message and process
    # Another test may have lowered transformers' verbosity (the CLI sets it to errors in-process).
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    yield
    hf_logging.set_verbosity(level)


def hf(model, ids, mask, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.generate(ids, attention_mask=mask, **kwargs)


def enabled(model, ids, mask, logger="transformers.generation.configuration_utils", **kwargs):
    """``model.generate`` under ``patched``: the result and what it logged on ``logger``; fails on a fallback."""
    hf_logging.warning_once.cache_clear()  # transformers' own run may have logged the message already
    with ferrogen.patched(model), warnings.catch_warnings(), CaptureLogger(hf_logging.get_logger(logger)) as log:
        warnings.simplefilter("error", FallbackWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="ferrogen")
        out = model.generate(ids, attention_mask=mask, **kwargs)
    hf_logging.warning_once.cache_clear()
    return out, log.out


CASES = {
    "top_p=1.5 greedy": dict(top_p=1.5),
    "typical_p=2 greedy": dict(typical_p=2.0),
    "top_p=1.5 beam": dict(top_p=1.5, num_beams=2),
    "penalty_alpha with beams": dict(penalty_alpha=0.6, top_k=4, num_beams=2),
}


@pytest.mark.parametrize("case", list(CASES))
def test_unread_invalid_flags_run_like_transformers(tiny, case):
    model, ids, mask = tiny
    kwargs = dict(CASES[case], max_new_tokens=NEW)
    got, log = enabled(model, ids, mask, **kwargs)
    assert torch.equal(got, hf(model, ids, mask, **kwargs))
    if "top_p" in case or "typical_p" in case:
        flag = case.split("=")[0]
        assert f"The following generation flags are not valid and may be ignored: ['{flag}']" in log


def test_penalty_alpha_with_sampling_samples(tiny):
    """transformers picks sampling and never reads penalty_alpha; so does the enabled path."""
    model, ids, mask = tiny
    got, _ = enabled(model, ids, mask, penalty_alpha=0.6, top_k=4, do_sample=True, seed=3, max_new_tokens=NEW)
    assert torch.equal(got, ferrogen.generate(model, ids, mask, top_k=4, do_sample=True, seed=3, max_new_tokens=NEW))


def test_negative_pad_token_id_pads_with_it(tiny):
    """Beam search pads the shorter finished beams with pad_token_id: -1 in transformers' output too."""
    model, ids, mask = tiny
    kwargs = dict(num_beams=3, num_return_sequences=3, max_new_tokens=NEW, pad_token_id=-1, length_penalty=-5.0)
    greedy = hf(model, ids, mask, max_new_tokens=NEW)[:, -NEW:]
    for eos in greedy.flatten().tolist():  # an eos that some beam reaches early, so that -1 pads it
        expected = hf(model, ids, mask, eos_token_id=eos, **kwargs)
        if (expected == -1).any():
            break
    assert (expected == -1).any()
    got, log = enabled(model, ids, mask, eos_token_id=eos, **kwargs)
    assert torch.equal(got, expected)
    assert "['pad_token_id']" in log


def test_negative_pad_token_id_in_the_models_config(tiny):
    model, ids, mask = tiny
    model = copy.deepcopy(model)
    model.generation_config.pad_token_id = -1
    got, log = enabled(model, ids, mask, max_new_tokens=NEW)
    assert torch.equal(got, hf(model, ids, mask, max_new_tokens=NEW))
    assert "['pad_token_id']" in log


def test_negative_eos_token_id_never_stops(tiny):
    """eos_token_id=-1 overrides the model's eos: generation runs to max_new_tokens, as in transformers."""
    model, ids, mask = tiny
    model = copy.deepcopy(model)
    first = hf(model, ids, mask, max_new_tokens=2)[0, -1].item()  # a token greedy does produce
    model.generation_config.eos_token_id = model.config.eos_token_id = first
    kwargs = dict(max_new_tokens=NEW, eos_token_id=-1)
    got, log = enabled(model, ids, mask, logger="transformers.generation.utils", **kwargs)
    expected = hf(model, ids, mask, **kwargs)
    assert torch.equal(got, expected)
    assert got.shape[1] == (1 if model.config.is_encoder_decoder else ids.shape[1]) + NEW
    assert "`eos_token_id` should consist of positive integers, but is tensor([-1])" in log


def test_negative_bos_token_id_is_unread_with_a_prompt(tiny):
    model, ids, mask = tiny
    kwargs = dict(max_new_tokens=NEW, bos_token_id=-1)
    got, _ = enabled(model, ids, mask, **kwargs)
    assert torch.equal(got, hf(model, ids, mask, **kwargs))


def test_transformers_generation_config_with_negative_ids_is_left_unchanged(tiny):
    from transformers import GenerationConfig as HFGenerationConfig

    model, ids, mask = tiny
    config = HFGenerationConfig(pad_token_id=-1, top_p=1.5, max_new_tokens=NEW)
    got, _ = enabled(model, ids, mask, generation_config=config)
    assert config.pad_token_id == -1 and config.top_p == 1.5
    assert torch.equal(got, hf(model, ids, mask, generation_config=config))


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        (dict(pad_token_id=-1), "pad_token_id"),
        (dict(eos_token_id=-1), "eos_token_id"),
        (dict(top_p=1.5), "top_p"),
        (dict(penalty_alpha=0.6, top_k=4, do_sample=True), "penalty_alpha"),
    ],
)
def test_ferrogen_generate_stays_strict(tiny, kwargs, flag):
    model, ids, mask = tiny
    with pytest.raises(GenerationConfigError, match=f"^{flag}: "):
        ferrogen.generate(model, ids, mask, max_new_tokens=NEW, **kwargs)


def test_right_padded_decoder_only_batch_warns_and_generates(tiny):
    model, ids, mask = tiny
    if model.config.is_encoder_decoder:
        pytest.skip("transformers checks the padding side of decoder-only models only")
    ids, mask = padded_batch(True)  # padded on the right, as an encoder's batch is
    got, log = enabled(model, ids, mask, logger="transformers.generation.utils", max_new_tokens=NEW)
    assert torch.equal(got, hf(model, ids, mask, max_new_tokens=NEW))
    assert "right-padding was detected" in log


@pytest.mark.parametrize("kwargs", [dict(), dict(num_beams=3, num_return_sequences=2)], ids=["greedy", "beam"])
def test_no_inputs_starts_from_bos(tiny, kwargs):
    """No prompt: transformers' [[bos_token_id]] (encoder input for T5/BART), run natively."""
    model = tiny[0]
    got, _ = enabled(model, None, None, max_new_tokens=NEW, **kwargs)
    assert torch.equal(got, hf(model, None, None, max_new_tokens=NEW, **kwargs))


@pytest.mark.parametrize("kwargs", [dict(use_cache=False), dict(logits_to_keep=1), dict(logits_to_keep=0)],
                         ids=["use_cache=False", "logits_to_keep=1", "logits_to_keep=0"])
@pytest.mark.parametrize("strategy", [dict(), dict(num_beams=3)], ids=["greedy", "beam"])
def test_cache_and_logits_flags_run_natively(tiny, kwargs, strategy):
    model, ids, mask = tiny
    if "logits_to_keep" in kwargs and not ferrogen.families.accepts(model.forward, "logits_to_keep"):
        pytest.skip(f"{type(model).__name__} does not take logits_to_keep (transformers refuses it)")
    got, _ = enabled(model, ids, mask, max_new_tokens=NEW, **kwargs, **strategy)
    assert torch.equal(got, hf(model, ids, mask, max_new_tokens=NEW, **kwargs, **strategy))


def _model_inputs(model, ids, mask, name):
    if name == "token_type_ids":
        return torch.randint(0, 2, ids.shape, generator=torch.Generator().manual_seed(0))
    return (mask.cumsum(-1) - 1).clamp(min=0) * 2  # spread-out positions: not what the mask gives


@pytest.mark.parametrize("name", ["token_type_ids", "position_ids"])
@pytest.mark.parametrize("strategy", [dict(), dict(num_beams=3, num_return_sequences=2)], ids=["greedy", "beam"])
def test_model_inputs_are_fed_like_transformers(tiny, name, strategy):
    """Decoder-only models get position_ids / token_type_ids each step as transformers' generate feeds them."""
    model, ids, mask = tiny
    if model.config.is_encoder_decoder or not ferrogen.families.accepts(model.forward, name):
        pytest.skip(f"{type(model).__name__} does not take {name} (transformers refuses it / falls back)")
    extra = {name: _model_inputs(model, ids, mask, name)}
    kwargs = dict(max_new_tokens=NEW, **strategy)
    expected = hf(model, ids, mask, **extra, **kwargs)
    assert not torch.equal(expected, hf(model, ids, mask, **kwargs))  # the input matters
    got, _ = enabled(model, ids, mask, **extra, **kwargs)
    assert torch.equal(got, expected)
    assert torch.equal(ferrogen.generate(model, ids, mask, **extra, **kwargs), expected)


def test_model_inputs_checked_by_ferrogen_generate(tiny):
    model, ids, mask = tiny
    with pytest.raises(ValueError, match="^position_ids: expected an integer tensor of the shape of input_ids"):
        ferrogen.generate(model, ids, mask, position_ids=torch.zeros(1, 2, dtype=torch.long), max_new_tokens=NEW)
    if model.config.is_encoder_decoder:
        with pytest.raises(ValueError, match="^token_type_ids: ferrogen feeds it to decoder-only"):
            ferrogen.generate(model, ids, mask, token_type_ids=torch.zeros_like(ids), max_new_tokens=NEW)
    elif not ferrogen.families.accepts(model.forward, "token_type_ids"):
        with pytest.raises(ValueError, match="^token_type_ids: .*forward does not take it"):
            ferrogen.generate(model, ids, mask, token_type_ids=torch.zeros_like(ids), max_new_tokens=NEW)


@pytest.mark.parametrize("strategy", [dict(), dict(num_beams=3, num_return_sequences=2), dict(repetition_penalty=1.3)],
                         ids=["greedy", "beam", "processed"])
def test_scores_and_logits_match_transformers(tiny, strategy):
    """Guard: output_scores (processed) and output_logits (raw) per step, beam scores and indices."""
    model, ids, mask = tiny
    kwargs = dict(max_new_tokens=NEW, return_dict_in_generate=True, output_scores=True, output_logits=True, **strategy)
    got, _ = enabled(model, ids, mask, **kwargs)
    expected = hf(model, ids, mask, **kwargs)
    assert torch.equal(got.sequences, expected.sequences)
    for name in ("scores", "logits"):
        assert len(getattr(got, name)) == len(getattr(expected, name)) == NEW
        for ours, theirs in zip(getattr(got, name), getattr(expected, name)):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)
    if "num_beams" in strategy:
        torch.testing.assert_close(got.sequences_scores, expected.sequences_scores, rtol=1e-5, atol=1e-5)
        assert torch.equal(got.beam_indices, expected.beam_indices)


@pytest.mark.parametrize("strategy", [dict(), dict(do_sample=True, top_k=5)], ids=["greedy", "sample"])
def test_attentions_and_hidden_states_match_transformers(tiny, strategy):
    """Greedy and sampling on decoder-only models: transformers' per-step per-layer tuples, run natively."""
    model, ids, mask = tiny
    if model.config.is_encoder_decoder:
        pytest.skip("encoder-decoder fields: test_dropin_outputs.py::test_attentions_and_hidden_states_match_transformers")
    model = copy.deepcopy(model)
    model.set_attn_implementation("eager")  # sdpa returns no attention weights
    kwargs = dict(max_new_tokens=4, return_dict_in_generate=True, output_attentions=True, output_hidden_states=True)
    got, _ = enabled(model, ids, mask, **kwargs, **strategy)
    if strategy.get("do_sample"):  # ferrogen's sampler draws its own numbers: replay its tokens greedily
        forced = got.sequences[:, ids.shape[1]:]
        expected = hf(model, got.sequences[:, :ids.shape[1]], mask, **kwargs,
                      prefix_allowed_tokens_fn=lambda row, seq: [int(forced[row, seq.shape[0] - ids.shape[1]])])
    else:
        expected = hf(model, ids, mask, **kwargs)
    assert torch.equal(got.sequences, expected.sequences)
    for name in ("attentions", "hidden_states"):
        ours, theirs = getattr(got, name), getattr(expected, name)
        assert len(ours) == len(theirs) == 4
        for step_ours, step_theirs in zip(ours, theirs):
            assert len(step_ours) == len(step_theirs) > 0
            for a, b in zip(step_ours, step_theirs):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _layers(cache):
    return getattr(cache, "self_attention_cache", cache).layers


@pytest.mark.parametrize("strategy", [dict(), dict(do_sample=True, top_k=5, seed=1)], ids=["greedy", "sample"])
def test_returned_cache_continues_generation(tiny, strategy):
    """Greedy / sampling results carry the model's cache, as transformers' do: same length and
    contents as transformers' for the same tokens, and generation continues from it."""
    model, ids, mask = tiny
    kwargs = dict(max_new_tokens=4, return_dict_in_generate=True)
    got, _ = enabled(model, ids, mask, **kwargs, **strategy)
    expected = hf(model, ids, mask, **kwargs) if not strategy else None
    if expected is not None:
        assert torch.equal(got.sequences, expected.sequences)
        assert type(got.cache) is type(expected.cache)
        assert got.cache.get_seq_length() == expected.cache.get_seq_length()
        for ours, theirs in zip(_layers(got.cache), _layers(expected.cache), strict=True):
            torch.testing.assert_close(ours.keys, theirs.keys, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(ours.values, theirs.values, rtol=1e-5, atol=1e-5)
    if model.config.is_encoder_decoder:
        return
    # continue by 3 tokens from the returned cache; the same as a fresh run on the whole sequence
    sequences = got.sequences
    longer = torch.cat([mask, torch.ones((mask.shape[0], sequences.shape[1] - mask.shape[1]), dtype=mask.dtype)], -1)
    assert got.cache.get_seq_length() == sequences.shape[1] - 1
    resumed = hf(model, sequences, longer, cache=got.cache, max_new_tokens=3)
    assert torch.equal(resumed, hf(model, sequences, longer, max_new_tokens=3))


def test_no_cache_with_use_cache_false(tiny):
    model, ids, mask = tiny
    got, _ = enabled(model, ids, mask, max_new_tokens=3, return_dict_in_generate=True, use_cache=False)
    assert got.cache is None and hf(model, ids, mask, max_new_tokens=3, return_dict_in_generate=True,
                                    use_cache=False).cache is None


@pytest.mark.parametrize("with_ids", [False, True], ids=["embeds-only", "embeds-and-ids"])
@pytest.mark.parametrize("strategy", [dict(), dict(num_beams=3, num_return_sequences=2)], ids=["greedy", "beam"])
def test_inputs_embeds_decoder_only(tiny, with_ids, strategy):
    """Decoder-only: the prompt's embeddings feed the first forward call; with no input_ids the
    result holds only the new tokens, as transformers returns it."""
    model, ids, mask = tiny
    if model.config.is_encoder_decoder:
        pytest.skip("encoder-decoder inputs_embeds: tests/test_dropin_seq2seq_inputs.py")
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
    # not the ids' own embeddings: they must be what runs
    embeds = embeds + 0.5 * torch.randn(embeds.shape, generator=torch.Generator().manual_seed(0))
    kwargs = dict(max_new_tokens=NEW, inputs_embeds=embeds, **strategy)
    given = ids if with_ids else None
    expected = hf(model, given, mask, **kwargs)
    assert not torch.equal(expected[:, -NEW:], hf(model, ids, mask, max_new_tokens=NEW, **strategy)[:, -NEW:])
    got, _ = enabled(model, given, mask, **kwargs)
    assert torch.equal(got, expected)
    assert got.shape[1] == NEW + (ids.shape[1] if with_ids else 0)
