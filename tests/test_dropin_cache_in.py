"""Continuing from a cache the caller gives (``past_key_values=`` / ``cache=``), issue 23: token-identical
to transformers 5.x live, under ``ferrogen.enable`` (no fallback) and through ``ferrogen.generate``, on
tiny random GPT-2 and Llama, with left padding; the caller's cache grows in place as transformers grows
it; what is not covered is refused (``ValueError`` naming ``past_key_values``) or falls back.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch
from transformers import DynamicCache

import ferrogen
from ferrogen import FallbackWarning, compat

from architectures import build

IDS = torch.tensor([[5, 6, 7, 8, 9, 10, 11], [0, 0, 12, 13, 14, 15, 16]])
MASK = (torch.arange(7)[None] >= torch.tensor([[0], [2]])).long()
PREFIX = 4


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model(request):
    return build(request.param)


def _prefix_cache(model: Any, copies: int = 1) -> DynamicCache:
    """``model(prefix)``'s cache, each row repeated ``copies`` times (beams need one row per beam)."""
    ids, mask = IDS[:, :PREFIX].repeat_interleave(copies, 0), MASK[:, :PREFIX].repeat_interleave(copies, 0)
    with torch.no_grad():
        return model(ids, attention_mask=mask, use_cache=True).past_key_values


def _transformers(model: Any, cache: Any, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return type(model).generate(model, IDS, attention_mask=MASK, past_key_values=cache, **kwargs)


def _same_cache(a: Any, b: Any) -> bool:
    return a.get_seq_length() == b.get_seq_length() and all(
        torch.equal(x.keys, y.keys) and torch.equal(x.values, y.values) for x, y in zip(a.layers, b.layers))


@pytest.mark.parametrize("settings", [dict(do_sample=False), dict(num_beams=3), dict(num_beams=2, do_sample=False,
                                                                                      num_return_sequences=2)])
def test_enabled_generate_continues_from_the_given_cache(model, settings):
    copies = max(settings.get("num_beams", 1), settings.get("num_return_sequences", 1))
    prefix = _prefix_cache(model, copies)
    theirs, ours = copy.deepcopy(prefix), copy.deepcopy(prefix)
    expected = _transformers(model, theirs, max_new_tokens=6, **settings)
    counts = dict(compat.fallback_counts())
    with ferrogen.patched(model):
        got = model.generate(IDS, attention_mask=MASK, past_key_values=ours, max_new_tokens=6, **settings)
    assert compat.fallback_counts() == counts  # ran natively
    assert torch.equal(got, expected)
    assert ours.get_seq_length() == theirs.get_seq_length() > PREFIX  # grown in place, as transformers grows it
    if copies == 1:  # beams: the rows' order after the last step is not compared (see the report of issue 23)
        assert _same_cache(ours, theirs)


def test_cache_keyword_of_transformers_5(model):
    prefix = _prefix_cache(model)
    expected = _transformers(model, copy.deepcopy(prefix), max_new_tokens=5, do_sample=False)
    with ferrogen.patched(model):
        got = model.generate(IDS, attention_mask=MASK, cache=copy.deepcopy(prefix), max_new_tokens=5, do_sample=False)
    assert torch.equal(got, expected)


def test_sampling_scores_follow_the_given_cache(model):
    """Seeded sampling draws its own way: each step's logits must be the model's own given the cache
    and the tokens drawn, replayed through transformers (a forward over the new tokens from the cache)."""
    prefix = _prefix_cache(model)
    out = ferrogen.generate(model, IDS, MASK, past_key_values=copy.deepcopy(prefix), do_sample=True, max_new_tokens=5,
                            return_dict_in_generate=True, output_logits=True, seed=3)
    sequences = out.sequences
    mask = torch.cat([MASK, torch.ones(2, sequences.shape[1] - IDS.shape[1], dtype=torch.long)], 1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        replay = model(sequences[:, PREFIX:-1], attention_mask=mask[:, :-1], position_ids=positions[:, PREFIX:-1],
                       past_key_values=copy.deepcopy(prefix)).logits
    steps = torch.stack(out.logits, 1)
    torch.testing.assert_close(steps, replay[:, IDS.shape[1] - PREFIX - 1:].float(), rtol=1e-4, atol=1e-4)


def test_continues_from_a_generate_result_and_again(model):
    """The cache of ``generate(return_dict_in_generate=True)`` (transformers' and ferrogen's, the same),
    continued with more ids; then the grown cache continued once more, both as transformers does."""
    kwargs = dict(attention_mask=MASK, max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
    first = ferrogen.generate(model, IDS, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = type(model).generate(model, IDS, **kwargs)
    assert torch.equal(first.sequences, reference.sequences) and _same_cache(first.cache, reference.cache)
    ids = torch.cat([first.sequences, torch.tensor([[20, 21], [22, 23]])], 1)
    mask = torch.cat([MASK, torch.ones(2, ids.shape[1] - MASK.shape[1], dtype=torch.long)], 1)
    ours, theirs = first.cache, reference.cache
    for _ in range(2):
        got = ferrogen.generate(model, ids, mask, past_key_values=ours, max_new_tokens=4, do_sample=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = type(model).generate(model, ids, attention_mask=mask, past_key_values=theirs, max_new_tokens=4,
                                            do_sample=False)
        assert torch.equal(got, expected) and _same_cache(ours, theirs)
        ids = torch.cat([got, torch.tensor([[24], [25]])], 1)  # the returned ids plus one, from the grown cache
        mask = torch.cat([mask, torch.ones(2, ids.shape[1] - mask.shape[1], dtype=torch.long)], 1)


@pytest.mark.parametrize("case, match", [
    ("tuple", "tuple"), ("long", "holds 7 positions"), ("rows", "transformers does not expand"),
    ("contrastive", "contrastive_search"), ("both", "once"), ("other", "expected a transformers Cache"),
])
def test_refusals_name_past_key_values(model, case, match):
    cache: Any = _prefix_cache(model)
    kwargs: dict[str, Any] = dict(max_new_tokens=2)
    if case == "tuple":
        cache = tuple((layer.keys, layer.values) for layer in cache.layers)
    elif case == "long":
        with torch.no_grad():
            cache = model(IDS, attention_mask=MASK, use_cache=True).past_key_values
    elif case == "rows":
        kwargs["num_beams"] = 2
    elif case == "contrastive":
        kwargs.update(penalty_alpha=0.6, top_k=4)
    elif case == "both":
        kwargs["cache"] = cache
    elif case == "other":
        cache = {"keys": 1}
    with pytest.raises(ValueError, match=f"past_key_values: .*{match}"):
        ferrogen.generate(model, IDS, MASK, past_key_values=cache, **kwargs)


@pytest.mark.falls_back("past_key_values")
def test_enable_falls_back_with_the_reason(model, monkeypatch):
    monkeypatch.setattr(compat, "_warned", set())
    with ferrogen.patched(model), pytest.warns(FallbackWarning, match="past_key_values .*does not expand"):
        with pytest.raises(RuntimeError):  # transformers' own failure: the cache has a row per prompt, not per beam
            model.generate(IDS, attention_mask=MASK, past_key_values=_prefix_cache(model), num_beams=2,
                           max_new_tokens=2)


def test_encoder_decoder_refused(t5):
    from transformers import EncoderDecoderCache

    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    with pytest.raises(ValueError, match="past_key_values: .*decoder-only"):
        ferrogen.generate(t5, torch.tensor([[5, 6, 7]]), past_key_values=cache, max_new_tokens=2)


@pytest.mark.falls_back("past_key_values")
def test_enable_falls_back_for_only_the_new_ids(model, monkeypatch):
    """transformers also takes only the uncached ids with the whole mask; ferrogen hands that to it."""
    prefix = _prefix_cache(model)
    expected = _transformers(model, copy.deepcopy(prefix), max_new_tokens=3, do_sample=False)
    monkeypatch.setattr(compat, "_warned", set())
    with ferrogen.patched(model), pytest.warns(FallbackWarning, match="past_key_values .*pass the whole ids"):
        got = model.generate(IDS[:, PREFIX:], attention_mask=MASK, past_key_values=copy.deepcopy(prefix),
                             max_new_tokens=3, do_sample=False)
    assert torch.equal(got[:, -3:], expected[:, -3:])


def test_empty_cache_is_filled_in_place(model):
    theirs, ours = DynamicCache(config=model.config), DynamicCache(config=model.config)
    expected = _transformers(model, theirs, max_new_tokens=4, num_beams=2)
    with ferrogen.patched(model):
        got = model.generate(IDS, attention_mask=MASK, past_key_values=ours, max_new_tokens=4, num_beams=2)
    assert torch.equal(got, expected)
    assert ours.get_seq_length() == theirs.get_seq_length() > 0
