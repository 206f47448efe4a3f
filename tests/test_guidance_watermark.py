"""Classifier-free guidance (``guidance_scale``) and the green-list watermark
(``watermarking_config``) against transformers 5.x, live: greedy and beam token-identical,
sampling compared step by step (ferrogen's seeding differs from torch's, so each sampled
path is replayed through transformers' own processor), the green lists bit for bit, and
transformers' ``WatermarkDetector`` on ferrogen's output."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from transformers import WatermarkDetector, WatermarkingConfig
from transformers.generation.logits_process import (
    UnbatchedClassifierFreeGuidanceLogitsProcessor,
    WatermarkLogitsProcessor,
)

import ferrogen
from ferrogen import FallbackWarning
from conftest import prompts

NEW = 10


@pytest.fixture
def model(decoder):
    return decoder


GUIDANCE = [
    dict(guidance_scale=1.5),
    dict(guidance_scale=3.0, negative=True),
    dict(guidance_scale=0.5, negative=True, masked=True),
    dict(guidance_scale=2.0, use_cache=False, negative=True),
]


def guidance_kwargs(case, rows):
    kw = {k: v for k, v in case.items() if k not in ("negative", "masked")}
    if case.get("negative"):
        kw["negative_prompt_ids"] = prompts(rows, 3, seed=7)
    if case.get("masked"):
        mask = torch.ones(rows, 3, dtype=torch.long)
        mask[0, 0] = 0
        kw["negative_prompt_attention_mask"] = mask
    return kw


@pytest.mark.parametrize("case", GUIDANCE, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_guidance_greedy_equals_transformers(model, case):
    ids = prompts()
    kw = dict(guidance_kwargs(case, 2), max_new_tokens=NEW, do_sample=False, pad_token_id=0,
              return_dict_in_generate=True, output_scores=True)
    want = model.generate(ids, **kw)
    got = ferrogen.generate(model, ids, **kw)
    assert torch.equal(got.sequences, want.sequences)
    for ours, theirs in zip(got.scores, want.scores, strict=True):  # the guided scores themselves
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def replay(model, sequences, prompt_len, processor):
    """transformers' processed scores along ``sequences``: the model's logits of every prefix,
    through ``processor`` (called once per step, in order, as generate does)."""
    out = []
    with torch.no_grad():
        for cur in range(prompt_len, sequences.shape[1]):
            prefix = sequences[:, :cur]
            logits = model(prefix).logits[:, -1].float()
            out.append(processor(prefix, logits))
    return out


def test_guidance_sampling_scores_equal_transformers_processor(model):
    """Sampling: ferrogen's seeding is its own, so the sampled path is replayed through
    transformers' processor, whose scores must be what ferrogen sampled from."""
    ids = prompts()
    neg = prompts(2, 3, seed=7)
    out = ferrogen.generate(model, ids, max_new_tokens=NEW, do_sample=True, top_k=0, seed=5, pad_token_id=0,
                            guidance_scale=2.5, negative_prompt_ids=neg, return_dict_in_generate=True,
                            output_scores=True)
    proc = UnbatchedClassifierFreeGuidanceLogitsProcessor(2.5, model, unconditional_ids=neg)
    want = replay(model, out.sequences, ids.shape[1], proc)
    assert len(want) == len(out.scores) == NEW
    for got, ref in zip(out.scores, want):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_guidance_needs_one_negative_row_per_generated_row(gpt2):
    with pytest.raises(ValueError, match="^negative_prompt_ids: has 1 rows"):
        ferrogen.generate(gpt2, prompts(), max_new_tokens=2, pad_token_id=0, guidance_scale=2.0,
                          negative_prompt_ids=prompts(1, 3))
    with pytest.raises(ValueError, match="^negative_prompt_attention_mask: must have the shape"):
        ferrogen.generate(gpt2, prompts(), max_new_tokens=2, pad_token_id=0, guidance_scale=2.0,
                          negative_prompt_ids=prompts(2, 3), negative_prompt_attention_mask=torch.ones(2, 2, dtype=torch.long))


def test_guidance_arithmetic_equals_torch_on_random_rows():
    g = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(5, 300, generator=g) * 4, torch.randn(5, 300, generator=g) * 4
    for scale in (0.0, 0.5, 1.5, 7.0):
        want = scale * (cond.log_softmax(-1) - uncond.log_softmax(-1)) + uncond.log_softmax(-1)
        got = cond.clone()
        ferrogen._core.apply_guidance(got.numpy(), uncond.numpy(), scale)
        # float32 log-softmax on both sides (the core's exp is vectorised): the difference of two
        # of them is amplified by the scale
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * max(1.0, scale))
    one = cond.clone()
    ferrogen._core.apply_guidance(one.numpy(), uncond[:1].numpy(), 2.0)  # one shared row, as torch broadcasts
    want = 2.0 * (cond.log_softmax(-1) - uncond[:1].log_softmax(-1)) + uncond[:1].log_softmax(-1)
    torch.testing.assert_close(one, want, rtol=1e-5, atol=2e-5)


WATERMARKS = [
    dict(),
    dict(greenlist_ratio=0.5, bias=1.0, hashing_key=7),
    dict(seeding_scheme="selfhash", context_width=1),
    dict(seeding_scheme="selfhash", context_width=3, hashing_key=2**40 + 3, bias=3.0),
    dict(context_width=2, hashing_key=123456789),
]


@pytest.mark.parametrize("settings", WATERMARKS, ids=str)
def test_green_lists_equal_transformers_on_random_inputs(settings):
    """The per-token arithmetic and the hashing against transformers' processor itself."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 5000, (6, 4), generator=g)
    scores = torch.randn(6, 5000, generator=g)
    want = WatermarkLogitsProcessor(5000, "cpu", **settings)(ids, scores)
    got = ferrogen.LogitsPipeline(watermarking_config=WatermarkingConfig(**settings)).process(ids, scores)
    assert torch.equal(got, want)
    assert not torch.equal(got, scores)


@pytest.mark.parametrize("settings", WATERMARKS[:3], ids=str)
@pytest.mark.parametrize("beams", [1, 3])
def test_watermark_greedy_and_beams_equal_transformers(model, settings, beams):
    ids = prompts()
    wm = WatermarkingConfig(**settings)
    kw = dict(max_new_tokens=NEW, do_sample=False, num_beams=beams, pad_token_id=0)
    want = model.generate(ids, watermarking_config=wm, **kw)
    got = ferrogen.generate(model, ids, watermarking_config=wm, **kw)
    assert torch.equal(got, want)


@pytest.mark.parametrize("scheme", ["lefthash", "selfhash"])
@pytest.mark.parametrize("assist", ["prompt_lookup", "assistant_model"])
def test_watermark_with_assisted_decoding_equals_transformers(model, scheme, assist):
    """transformers applies the processors at every candidate position it checks; the green
    list is a function of each prefix, so ferrogen's assisted core equals it."""
    ids = prompts(1)
    wm = WatermarkingConfig(greenlist_ratio=0.25, bias=2.5, seeding_scheme=scheme)
    extra = dict(prompt_lookup_num_tokens=2) if assist == "prompt_lookup" else dict(assistant_model=model)
    kw = dict(max_new_tokens=NEW, do_sample=False, pad_token_id=0, watermarking_config=wm, **extra)
    want = model.generate(ids, **kw)
    got = ferrogen.generate(model, ids, **kw)
    assert torch.equal(got, want)
    plain = ferrogen.generate(model, ids, **{k: v for k, v in kw.items() if k != "watermarking_config"})
    assert not torch.equal(got, plain)  # the bias changed the path: the comparison is not vacuous


def test_watermark_sampling_scores_equal_transformers_processor(model):
    ids = prompts()
    wm = WatermarkingConfig(bias=2.5)
    out = ferrogen.generate(model, ids, max_new_tokens=NEW, do_sample=True, top_k=0, seed=3, pad_token_id=0,
                            watermarking_config=wm, return_dict_in_generate=True, output_scores=True)
    proc = WatermarkLogitsProcessor(model.config.vocab_size, "cpu", bias=2.5)
    for got, ref in zip(out.scores, replay(model, out.sequences, ids.shape[1], proc)):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_detector_agrees_on_ferrogen_and_transformers_output(gpt2):
    """transformers' WatermarkDetector: the same verdicts and z-scores on ferrogen's greedy output
    as on transformers', and ferrogen's sampled output is detected as watermarked."""
    ids = prompts(3, 4)
    wm = WatermarkingConfig(bias=6.0)
    kw = dict(max_new_tokens=40, pad_token_id=0, watermarking_config=wm)
    detector = WatermarkDetector(gpt2.config, "cpu", wm)
    ours = detector(ferrogen.generate(gpt2, ids, do_sample=False, **kw), return_dict=True)
    theirs = detector(gpt2.generate(ids, do_sample=False, **kw), return_dict=True)
    np.testing.assert_array_equal(ours.z_score, theirs.z_score)
    np.testing.assert_array_equal(ours.prediction, theirs.prediction)
    # min_new_tokens: a row that ended early would be scored on its padding
    sampled = detector(ferrogen.generate(gpt2, ids, do_sample=True, seed=1, min_new_tokens=40, **kw),
                       return_dict=True)
    plain = detector(ferrogen.generate(gpt2, ids, do_sample=True, seed=1, min_new_tokens=40, max_new_tokens=40,
                                       pad_token_id=0), return_dict=True)
    assert sampled.prediction.all() and (sampled.z_score > plain.z_score).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(guidance_scale=1.5),
        dict(guidance_scale=2.0, negative_prompt_ids="negative"),
        dict(guidance_scale=2.0, negative_prompt_ids="negative", negative_prompt_attention_mask="mask"),
        dict(watermarking_config=WatermarkingConfig()),
        dict(watermarking_config=WatermarkingConfig(seeding_scheme="selfhash"), num_beams=2),
    ],
    ids=["guidance", "negative_prompt_ids", "negative_prompt_attention_mask", "watermark", "watermark-beams"],
)
def test_enable_runs_them_natively(gpt2, kwargs):
    ids = prompts()
    kwargs = dict(kwargs)
    if kwargs.get("negative_prompt_ids") == "negative":
        kwargs["negative_prompt_ids"] = prompts(2, 3, seed=7)
    if kwargs.get("negative_prompt_attention_mask") == "mask":
        kwargs["negative_prompt_attention_mask"] = torch.tensor([[0, 1, 1], [1, 1, 1]])
    want = gpt2.generate(ids, max_new_tokens=NEW, pad_token_id=0, **kwargs)
    with ferrogen.patched(gpt2), warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        got = gpt2.generate(ids, max_new_tokens=NEW, pad_token_id=0, **kwargs)
    assert torch.equal(got, want)


def test_enable_falls_back_for_guidance_with_assisted_decoding(gpt2):
    ids = prompts(1, 5)
    kwargs = dict(guidance_scale=1.5, prompt_lookup_num_tokens=2)
    with ferrogen.patched(gpt2), warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        gpt2.generate(ids, max_new_tokens=3, pad_token_id=0, **kwargs)
    assert any(issubclass(w.category, FallbackWarning) and "guidance_scale" in str(w.message) for w in record)
    with pytest.raises(ValueError, match="^guidance_scale: "):
        ferrogen.generate(gpt2, ids, max_new_tokens=3, pad_token_id=0, **kwargs)
