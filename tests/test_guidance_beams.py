"""Classifier-free guidance (``guidance_scale``) with the beam family, contrastive search and DoLa.

transformers' processor is the first of its list: in the beam family it runs on the
log-softmaxed scores (and log-softmaxes them again), before the other processors, and its
unconditional cache follows row indices, never reordered with the beams. Beam search and
beam sampling are compared with transformers 5.x live; group and constrained beam search,
contrastive search and DoLa (moved out of 5.x) with the goldens of 4.55.4 written by
``scripts/make_guidance_goldens.py``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

import ferrogen
from conftest import assert_close_to_golden, left_padded_batch
from ferrogen import compat

GOLDEN = json.loads((Path(__file__).parent / "goldens" / "guidance.json").read_text())
CASES = {case["name"]: case for case in GOLDEN["cases"]}
NEW = 8


@pytest.fixture
def model(decoder):
    return decoder


def negative(rows, seed=1):
    return torch.randint(3, 50, (rows, 2), generator=torch.Generator().manual_seed(seed))


BEAMS = [
    dict(num_beams=4, guidance_scale=1.7),
    dict(num_beams=3, num_return_sequences=2, length_penalty=0.5, guidance_scale=2.5, negative=True),
    dict(num_beams=2, use_cache=False, guidance_scale=0.6, negative=True),
    dict(num_beams=4, repetition_penalty=1.3, no_repeat_ngram_size=2, guidance_scale=1.5),
    dict(num_beams=2, early_stopping=True, guidance_scale=3.0, eos_token_id=5),
]


def beam_kwargs(case, batch):
    kw = {k: v for k, v in case.items() if k != "negative"}
    if case.get("negative"):
        kw["negative_prompt_ids"] = negative(batch * case["num_beams"])
    return dict(kw, max_new_tokens=NEW, pad_token_id=0, return_dict_in_generate=True, output_scores=True)


def assert_same(got, want):
    assert torch.equal(got.sequences, want.sequences)
    torch.testing.assert_close(got.sequences_scores, want.sequences_scores, rtol=1e-5, atol=1e-5)
    for ours, theirs in zip(got.scores, want.scores, strict=True):
        finite = torch.isfinite(theirs)
        assert torch.equal(finite, torch.isfinite(ours))
        torch.testing.assert_close(ours[finite], theirs[finite], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", BEAMS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_beam_search_with_guidance_equals_transformers(model, case):
    ids, mask = left_padded_batch((5, 3, 7))
    kw = beam_kwargs(case, 3)
    want = model.generate(ids, attention_mask=mask, **kw)
    got = ferrogen.generate(model, ids, attention_mask=mask, **kw)
    assert_same(got, want)


@pytest.mark.parametrize("case", [dict(num_beams=4, guidance_scale=2.0),
                                  dict(num_beams=3, top_k=5, temperature=0.7, guidance_scale=1.5, negative=True)],
                         ids=["plain", "warped-negative"])
def test_beam_sampling_with_guidance_equals_transformers(model, case):
    """Beam sampling without ``seed`` draws its noise from torch's generator as transformers
    does; the unconditional pass draws nothing, so both sample the same beams."""
    ids, mask = left_padded_batch((5, 3, 7))
    kw = dict(beam_kwargs(case, 3), do_sample=True)
    torch.manual_seed(11)
    want = model.generate(ids, attention_mask=mask, **kw)
    torch.manual_seed(11)
    got = ferrogen.generate(model, ids, attention_mask=mask, **kw)
    assert_same(got, want)


def test_guidance_changes_beam_search(gpt2):
    """The guided search is not the plain one (the comparison above is not vacuous)."""
    ids, mask = left_padded_batch((5, 3, 7))
    plain = ferrogen.generate(gpt2, ids, attention_mask=mask, num_beams=4, max_new_tokens=NEW, pad_token_id=0)
    guided = ferrogen.generate(gpt2, ids, attention_mask=mask, num_beams=4, max_new_tokens=NEW, pad_token_id=0,
                               guidance_scale=3.0)
    assert not torch.equal(plain, guided)


@pytest.fixture(scope="module")
def stored_decoders():
    from golden_models import load_stored

    return {name: load_stored(name) for name in ("gpt2", "llama")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_guidance_matches_golden(stored_decoders, name):
    case = CASES[name]
    names = ("negative_prompt_ids", "negative_prompt_attention_mask")
    kwargs = {k: torch.tensor(v) if k in names else v for k, v in case["kwargs"].items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DoLa's advice on repetition_penalty
        out = ferrogen.generate(stored_decoders[case["model"]], input_ids=torch.tensor(case["input_ids"]),
                                attention_mask=torch.tensor(case["attention_mask"]), return_dict_in_generate=True,
                                output_scores=True, **kwargs)
    assert out.sequences.tolist() == case["sequences"]
    if case["sequences_scores"] is not None:
        assert_close_to_golden(out.sequences_scores, torch.tensor(case["sequences_scores"]))
    if "force_words_ids" in kwargs:  # 4.55.4 records them with the running beam scores added
        return
    for ours, theirs in zip(out.scores, case["scores"]):
        theirs = torch.tensor(theirs)
        finite = torch.isfinite(theirs)
        assert torch.equal(finite, torch.isfinite(ours))
        assert_close_to_golden(ours[finite], theirs[finite])


def test_group_beam_needs_one_negative_row_per_group_row(gpt2):
    ids, mask = left_padded_batch((5, 3))
    with pytest.raises(ValueError, match=r"^negative_prompt_ids: has 8 rows; it needs one per generated row \(4"):
        ferrogen.generate(gpt2, ids, attention_mask=mask, num_beams=4, num_beam_groups=2, diversity_penalty=0.5,
                          max_new_tokens=2, pad_token_id=0, guidance_scale=2.0, negative_prompt_ids=negative(8))


@pytest.mark.parametrize("kwargs", [dict(num_beams=2), dict(num_beams=2, do_sample=True),
                                    dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5),
                                    dict(num_beams=2, force_words_ids=[[7]]), dict(penalty_alpha=0.6, top_k=3)],
                         ids=["beam", "beam-sample", "group", "constrained", "contrastive"])
def test_enable_runs_guidance_natively_with_every_strategy(gpt2, kwargs):
    ids, mask = left_padded_batch((5, 3))
    before = compat.fallback_counts()
    with ferrogen.patched(gpt2), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gpt2.generate(ids, attention_mask=mask, max_new_tokens=3, pad_token_id=0, guidance_scale=1.5, **kwargs)
    assert compat.fallback_counts() == before


@pytest.mark.parametrize("kwargs", [dict(penalty_alpha=0.6, top_k=3),
                                    dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5),
                                    dict(prompt_lookup_num_tokens=2)],
                         ids=["contrastive", "group", "prompt-lookup"])
def test_enable_runs_the_green_list_watermark_natively(gpt2, kwargs):
    """The green-list watermark with contrastive, group beam and assisted decoding (goldens above,
    live transformers in test_guidance_watermark.py) no longer goes to transformers."""
    ids, mask = left_padded_batch((5,))
    before = compat.fallback_counts()
    with ferrogen.patched(gpt2), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gpt2.generate(ids, attention_mask=mask, max_new_tokens=3, pad_token_id=0,
                      watermarking_config={"greenlist_ratio": 0.25, "bias": 2.0}, **kwargs)
    assert compat.fallback_counts() == before


def test_guidance_on_encoder_decoder_is_refused_before_model_work(stored):
    t5 = stored["t5"]
    calls = []
    handle = t5.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match="^guidance_scale: classifier-free guidance needs a decoder-only model"):
            ferrogen.generate(t5, torch.tensor([[5, 6, 7]]), max_new_tokens=2, guidance_scale=1.5)
    finally:
        handle.remove()
    assert calls == []
