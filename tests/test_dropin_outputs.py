"""``model.generate(..., return_dict_in_generate=True)`` under ``ferrogen.enable`` returns
transformers' own result classes (``GenerateDecoderOnlyOutput``, ``GenerateEncoderDecoderOutput``,
``GenerateBeamDecoderOnlyOutput``, ``GenerateBeamEncoderDecoderOutput``) with the keys transformers
5.x live sets for the same call, beam search's reordered cache included.

Tiny random GPT-2 / Llama (decoder-only) and T5 / BART (encoder-decoder) from tests/architectures.py.
"""

from __future__ import annotations

import copy
import sys
import warnings

import pytest
import torch
from architectures import build, padded_batch
from transformers.generation import (
    GenerateBeamDecoderOnlyOutput,
    GenerateBeamEncoderDecoderOutput,
    GenerateDecoderOnlyOutput,
    GenerateEncoderDecoderOutput,
)
from transformers.utils import ModelOutput

import ferrogen
from ferrogen import FallbackWarning, compat

MODELS = ["gpt2", "llama", "t5", "bart"]
NEW = 5
FLAGS = dict(return_dict_in_generate=True, output_scores=True, output_logits=True)


@pytest.fixture(scope="module", params=MODELS)
def tiny(request):
    model = build(request.param)
    ids, mask = padded_batch(model.config.is_encoder_decoder)
    return model, ids, mask


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    monkeypatch.setattr(compat, "_warned", set())


def hf(model, ids, mask, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.generate(ids, attention_mask=mask, **kwargs)


def enabled(model, ids, mask, **kwargs):
    """``model.generate`` under ``patched``; fails on a fallback to transformers."""
    with ferrogen.patched(model), warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="ferrogen")
        return model.generate(ids, attention_mask=mask, **kwargs)


def _expected_class(model, beams):
    if model.config.is_encoder_decoder:
        return GenerateBeamEncoderDecoderOutput if beams else GenerateEncoderDecoderOutput
    return GenerateBeamDecoderOnlyOutput if beams else GenerateDecoderOnlyOutput


def _layers(cache):
    return getattr(cache, "self_attention_cache", cache).layers


def _assert_same_cache(ours, theirs):
    assert type(ours) is type(theirs)
    assert ours.get_seq_length() == theirs.get_seq_length()
    for a, b in zip(_layers(ours), _layers(theirs), strict=True):
        torch.testing.assert_close(a.keys, b.keys, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a.values, b.values, rtol=1e-5, atol=1e-5)


STRATEGIES = {
    "greedy": dict(),
    "beam": dict(num_beams=3, num_return_sequences=2),
    "greedy, no scores": dict(output_scores=False, output_logits=False),
    "beam, no scores": dict(num_beams=2, output_scores=False, output_logits=False),
    "beam, no cache": dict(num_beams=2, use_cache=False),
}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_result_is_transformers_class_with_its_keys(tiny, strategy):
    """Same class, same keys in the same order (so positions and to_tuple() agree), same values."""
    model, ids, mask = tiny
    kwargs = {**FLAGS, "max_new_tokens": NEW, **STRATEGIES[strategy]}
    got, expected = enabled(model, ids, mask, **kwargs), hf(model, ids, mask, **kwargs)
    beams = "num_beams" in kwargs
    assert type(got) is type(expected) is _expected_class(model, beams)
    assert isinstance(got, ModelOutput)
    assert list(got.keys()) == list(expected.keys())
    assert torch.equal(got.sequences, expected.sequences) and got[0] is got["sequences"] is got.sequences
    for name in ("scores", "logits"):
        if name in expected:
            assert len(got[name]) == len(expected[name])
            for ours, theirs in zip(got[name], expected[name]):
                torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)
    if beams:
        assert torch.equal(got.beam_indices, expected.beam_indices)
        assert got.beam_indices.dtype == expected.beam_indices.dtype
        if "sequences_scores" in expected:
            torch.testing.assert_close(got.sequences_scores, expected.sequences_scores, rtol=1e-5, atol=1e-5)
    if not beams and "cache" in expected:
        _assert_same_cache(got.cache, expected.cache)
    # ferrogen's own fields ride along as attributes, not keys
    assert len(got.finish_reasons) == got.sequences.shape[0] and "finish_reasons" not in got


def test_sampling_result_is_transformers_class(tiny):
    """Sampling draws ferrogen's own numbers (other tokens than transformers): same class and keys."""
    model, ids, mask = tiny
    for extra in (dict(do_sample=True, top_k=5), dict(do_sample=True, num_beams=2)):
        kwargs = {**FLAGS, "max_new_tokens": NEW, **extra}
        got, expected = enabled(model, ids, mask, **kwargs), hf(model, ids, mask, **kwargs)
        assert type(got) is type(expected) is _expected_class(model, "num_beams" in extra)
        assert list(got.keys()) == list(expected.keys())


def test_assisted_result_is_transformers_class_with_its_cache(tiny):
    """Assisted decoding (one row: transformers refuses a batch): class, keys and the main model's
    cache (rejected drafts dropped) as transformers returns them."""
    model, ids, mask = tiny
    assistant = build(model.config.model_type, std=0.3)
    kwargs = dict(FLAGS, max_new_tokens=NEW + 4, assistant_model=assistant)
    got, expected = enabled(model, ids[2:], mask[2:], **kwargs), hf(model, ids[2:], mask[2:], **kwargs)
    assert type(got) is type(expected) is _expected_class(model, False)
    assert list(got.keys()) == list(expected.keys())
    assert torch.equal(got.sequences, expected.sequences)
    _assert_same_cache(got.cache, expected.cache)


@pytest.mark.parametrize("mode", ["group", "constrained", "contrastive"])
def test_moved_strategies_return_transformers_classes(tiny, mode):
    """transformers 5.x runs these from Hub repos (no network here); 4.x returned the beam classes
    for group / constrained beam search and the plain ones for contrastive search."""
    model, ids, mask = tiny
    extra = {
        "group": dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0),
        "constrained": dict(num_beams=3, force_words_ids=[[5]]),
        "contrastive": dict(penalty_alpha=0.6, top_k=4),
    }[mode]
    got = enabled(model, ids, mask, **FLAGS, max_new_tokens=NEW, **extra)
    assert type(got) is _expected_class(model, mode != "contrastive")
    assert torch.equal(got.sequences, ferrogen.generate(model, ids, mask, max_new_tokens=NEW, **extra))


def _assert_nested_close(ours, theirs, path):
    if isinstance(theirs, torch.Tensor):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5, msg=path)
        return
    assert isinstance(ours, tuple) and isinstance(theirs, tuple) and len(ours) == len(theirs) > 0, path
    for i, (a, b) in enumerate(zip(ours, theirs)):
        _assert_nested_close(a, b, f"{path}[{i}]")


COLLECTED = ("encoder_attentions", "encoder_hidden_states", "decoder_attentions", "cross_attentions",
             "decoder_hidden_states", "attentions", "hidden_states")


@pytest.mark.parametrize("strategy", [dict(), dict(do_sample=True, top_k=5)], ids=["greedy", "sample"])
def test_attentions_and_hidden_states_match_transformers(tiny, strategy):
    """Greedy and sampling, decoder-only and encoder-decoder: transformers' fields (encoder's once,
    decoder's and cross-attentions per step, per layer), allclose, run natively."""
    model, ids, mask = tiny
    model = copy.deepcopy(model)
    model.set_attn_implementation("eager")  # sdpa returns no attention weights
    kwargs = dict(max_new_tokens=4, return_dict_in_generate=True, output_attentions=True, output_hidden_states=True)
    got = enabled(model, ids, mask, **kwargs, **strategy)
    if strategy:  # ferrogen's sampler draws its own numbers: replay its tokens greedily
        start = 1 if model.config.is_encoder_decoder else ids.shape[1]
        forced = got.sequences[:, start:]
        expected = hf(model, ids, mask, **kwargs,
                      prefix_allowed_tokens_fn=lambda row, seq: [int(forced[row, seq.shape[0] - start])])
    else:
        expected = hf(model, ids, mask, **kwargs)
    assert torch.equal(got.sequences, expected.sequences)
    assert list(got.keys()) == list(expected.keys())
    names = [name for name in COLLECTED if name in expected]
    assert len(names) == (5 if model.config.is_encoder_decoder else 2)
    for name in names:
        _assert_nested_close(got[name], expected[name], name)


def test_plain_tensor_without_return_dict(tiny):
    model, ids, mask = tiny
    got = enabled(model, ids, mask, max_new_tokens=NEW, num_beams=2)
    assert type(got) is torch.Tensor and torch.equal(got, hf(model, ids, mask, max_new_tokens=NEW, num_beams=2))


def _early_eos(model, ids, mask):
    """An eos id that ends every batch item's beam search before max_new_tokens, where ferrogen and
    transformers agree on the sequences (transformers' last step ranks tied -1e9 scores otherwise)."""
    # pad_token_id 3: transformers 5.x's beam search pads with eos_token_id[0] when pad_token_id is 0,
    # these models' pad (docs/transformers-differences.md)
    kwargs = dict(max_new_tokens=20, return_dict_in_generate=True, num_beams=2, early_stopping=True, pad_token_id=3)
    for eos in hf(model, ids, mask, max_new_tokens=3).flatten().tolist():
        expected = hf(model, ids, mask, eos_token_id=eos, **kwargs)
        if expected.sequences.shape[1] < (1 if model.config.is_encoder_decoder else ids.shape[1]) + 20:
            return dict(kwargs, eos_token_id=eos), expected
    pytest.skip("no eos id among the greedy tokens ends the search early")


def test_beam_cache_is_transformers_reordered_cache(tiny):
    """transformers reorders the cache by the running beams after every step, the last included,
    and returns it; a search that ends early (every item done) leaves the same cache here."""
    model, ids, mask = tiny
    kwargs, expected = _early_eos(model, ids, mask)
    got = enabled(model, ids, mask, **kwargs)
    assert torch.equal(got.sequences, expected.sequences)
    _assert_same_cache(got.cache, expected.cache)


def test_beam_cache_at_max_length_has_transformers_shape(tiny):
    """At max_length every candidate stops, so transformers' last reorder ranks scores tied at -1e9
    in torch.topk's order (its CPU kernel is not stable); ferrogen ranks them in that order too, so
    the returned cache is transformers' own."""
    model, ids, mask = tiny
    kwargs = dict(max_new_tokens=NEW, return_dict_in_generate=True, num_beams=2, eos_token_id=None)
    got, expected = enabled(model, ids, mask, **kwargs), hf(model, ids, mask, **kwargs)
    assert torch.equal(got.sequences, expected.sequences)
    assert type(got.cache) is type(expected.cache)
    assert got.cache.get_seq_length() == expected.cache.get_seq_length()
    for a, b in zip(_layers(got.cache), _layers(expected.cache), strict=True):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


def test_custom_generate_folder_returns_transformers_class(tiny, tmp_path, monkeypatch):
    model, ids, mask = tiny
    import transformers.dynamic_module_utils as dmu

    monkeypatch.setattr(dmu, "HF_MODULES_CACHE", str(tmp_path / "modules"))  # keep the copied code inside the test
    monkeypatch.setattr(sys, "path", list(sys.path))
    got = hf(model, ids, mask, max_new_tokens=NEW, **FLAGS, trust_remote_code=True,
             custom_generate=ferrogen.custom_generate_path())
    assert type(got) is _expected_class(model, False)


BEAM_FAMILY = {
    "beam_search": dict(num_beams=3, num_return_sequences=2),
    "beam_sample": dict(num_beams=3, do_sample=True),
    "group_beam_search": dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0),
    "constrained_beam_search": dict(num_beams=3, force_words_ids=[[5]]),
}


@pytest.mark.parametrize("strategy", list(BEAM_FAMILY))
def test_beam_family_collects_natively(tiny, strategy):
    """The beam family under enable(): no fallback (the counter does not move, and the session's
    counter fails any fallback here), transformers' beam class with the collected tuples, one
    per step of ``batch × num_beams`` rows (values: tests/test_beam_outputs.py)."""
    model, ids, mask = tiny
    model = copy.deepcopy(model)
    model.set_attn_implementation("eager")
    kwargs = dict(max_new_tokens=3, return_dict_in_generate=True, output_attentions=True, output_hidden_states=True)
    before = dict(compat.fallback_counts())
    got = enabled(model, ids, mask, **kwargs, **BEAM_FAMILY[strategy])
    assert dict(compat.fallback_counts()) == before
    assert type(got) is _expected_class(model, True)
    seq2seq = model.config.is_encoder_decoder
    names = ("decoder_attentions", "cross_attentions", "decoder_hidden_states") if seq2seq else ("attentions", "hidden_states")
    rows = ids.shape[0] * BEAM_FAMILY[strategy]["num_beams"]
    for name in names:
        assert got.sequences.shape[1] - (1 if seq2seq else ids.shape[1]) <= len(got[name]) <= 3, name
        assert all(t.shape[0] == rows for step in got[name] for t in step), name
    if seq2seq:
        assert got.encoder_attentions[0].shape[0] == ids.shape[0]
