"""Beam search from device candidates is the same search as the host path and as transformers.

With logits on an accelerator, beam search keeps the scores there and hands the core only
the top ``K`` candidates per batch item (see ``ferrogen.strategies.beam``). There is no GPU
in CI, so ``FERROGEN_DEVICE_CANDIDATES=1`` (the test hook) takes that path on CPU tensors;
the torch ops are the same ones that run on the device. Compared with the host path and
with transformers 5.x: ``sequences``, ``beam_indices``, ``sequences_scores`` and the
per-step ``scores``, over num_beams ∈ {2, 4}, early_stopping ∈ {True, False, "never"},
length_penalty ∈ {0.5, 2.0}, num_return_sequences ∈ {1, num_beams}, a left-padded batch
and EOS in mid-search, on the stored random GPT-2 and T5.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import ferrogen
from conftest import hf_generate, left_padded_batch
from ferrogen.strategies import beam as beam_strategy
from test_beam_parity import LENGTHS, MID_EOS, NEW, OUTPUTS, assert_beam_same, hf_fill, prompt_len

ENV = beam_strategy.DEVICE_CANDIDATES_ENV


@pytest.fixture
def device_steps(monkeypatch):
    """Counts the steps taken by the device-candidates path."""
    calls = [0]
    original = beam_strategy._DeviceBeamStep.__call__

    def counted(self, logits, running):
        calls[0] += 1
        return original(self, logits, running)

    monkeypatch.setattr(beam_strategy._DeviceBeamStep, "__call__", counted)
    return calls


def run(model, ids, mask, monkeypatch, device, **kwargs):
    monkeypatch.setenv(ENV, "1" if device else "0")
    kwargs = dict(kwargs, pad_token_id=0)
    kwargs.setdefault("max_new_tokens", NEW)
    return ferrogen.generate(model, input_ids=ids, attention_mask=mask, **kwargs)


def assert_host_same(dev, host):
    assert torch.equal(dev.sequences, host.sequences)
    assert torch.equal(dev.beam_indices, host.beam_indices)
    assert dev.finish_reasons == host.finish_reasons
    torch.testing.assert_close(dev.sequences_scores, host.sequences_scores, rtol=1e-5, atol=1e-5)
    assert len(dev.scores) == len(host.scores)
    for a, b in zip(dev.scores, host.scores):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


GRID = [
    (model, beams, early, lp, nrs, MID_EOS.get((model, beams)) if i % 2 else None)
    for model in ("gpt2", "t5")
    for i, (beams, early, lp, nrs) in enumerate(
        itertools.product((2, 4), (True, False, "never"), (0.5, 2.0), ("one", "all"))
    )
]


@pytest.mark.parametrize("model,beams,early,lp,nrs,eos", GRID)
def test_device_candidates_match_host_and_transformers(stored, monkeypatch, device_steps, model, beams, early, lp,
                                                       nrs, eos):
    ids, mask = left_padded_batch(LENGTHS)
    kwargs = dict(num_beams=beams, early_stopping=early, length_penalty=lp,
                  num_return_sequences=1 if nrs == "one" else beams, **OUTPUTS)
    if eos is not None:
        kwargs["eos_token_id"] = eos
    m = stored[model]
    dev = run(m, ids, mask, monkeypatch, True, **kwargs)
    assert device_steps[0] == len(dev.scores) > 0, "the device-candidates path ran every step"
    host = run(m, ids, mask, monkeypatch, False, **kwargs)
    assert device_steps[0] == len(dev.scores), "the host path took no device step"
    assert_host_same(dev, host)
    theirs = hf_generate(m, ids, mask, max_new_tokens=NEW, pad_token_id=0, **kwargs)
    assert_beam_same(dev, theirs, prompt_len(m, ids), 0, hf_fill(dict(kwargs, pad_token_id=0), m))


SAMPLE_GRID = [
    (model, beams, early, lp, warp, MID_EOS.get((model, beams)) if i % 2 else None)
    for model in ("gpt2", "t5")
    for i, (beams, early, lp, warp) in enumerate(
        itertools.product((2, 4), (True, False, "never"), (0.5, 2.0), ("default", "temp-topk", "none"))
    )
    if i % 3 == 0 or (beams, early) == (4, "never")
]
WARP = {"default": {}, "temp-topk": dict(temperature=0.7, top_k=10), "none": dict(top_k=0)}


@pytest.mark.parametrize("model,beams,early,lp,warp,eos", SAMPLE_GRID)
def test_device_beam_sample_matches_host_and_transformers(stored, monkeypatch, device_steps, model, beams, early, lp,
                                                          warp, eos):
    """Beam sampling draws with ``torch.multinomial`` where the scores live, as transformers does;
    on CPU that is the same draw as the host path's noise, under the same ``torch.manual_seed``."""
    ids, mask = left_padded_batch(LENGTHS)
    kwargs = dict(do_sample=True, num_beams=beams, early_stopping=early, length_penalty=lp, num_return_sequences=beams,
                  **WARP[warp], **OUTPUTS)
    if eos is not None:
        kwargs["eos_token_id"] = eos
    m = stored[model]
    seed = beams * 7 + len(str(early)) + len(warp)
    torch.manual_seed(seed)
    dev = run(m, ids, mask, monkeypatch, True, **kwargs)
    assert device_steps[0] == len(dev.scores) > 0
    torch.manual_seed(seed)
    host = run(m, ids, mask, monkeypatch, False, **kwargs)
    assert_host_same(dev, host)
    torch.manual_seed(seed)
    theirs = hf_generate(m, ids, mask, max_new_tokens=NEW, pad_token_id=0, **kwargs)
    assert_beam_same(dev, theirs, prompt_len(m, ids), 0, hf_fill(dict(kwargs, pad_token_id=0), m))


@pytest.mark.parametrize("model,beams", [k for k in sorted(MID_EOS) if k[1] in (2, 4)])
def test_eos_mid_search(stored, monkeypatch, device_steps, model, beams):
    ids, mask = left_padded_batch(LENGTHS)
    kwargs = dict(num_beams=beams, num_return_sequences=beams, eos_token_id=MID_EOS[model, beams], **OUTPUTS)
    dev = run(stored[model], ids, mask, monkeypatch, True, **kwargs)
    assert device_steps[0] > 0
    generated = (dev.beam_indices >= 0).sum(dim=1).tolist()
    assert any(r == "eos" and 3 <= n < NEW for r, n in zip(dev.finish_reasons, generated))
    assert_host_same(dev, run(stored[model], ids, mask, monkeypatch, False, **kwargs))


def test_logits_tree_plain_and_tensor_outputs(stored, monkeypatch, device_steps):
    model = stored["gpt2"]
    ids, mask = left_padded_batch(LENGTHS)
    kwargs = dict(num_beams=4, output_logits=True, output_beam_tree=True, eos_token_id=MID_EOS["gpt2", 4], **OUTPUTS)
    dev = run(model, ids, mask, monkeypatch, True, **kwargs)
    host = run(model, ids, mask, monkeypatch, False, **kwargs)
    assert device_steps[0] > 0
    assert_host_same(dev, host)
    for a, b in zip(dev.logits, host.logits):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    shape = lambda forest: [[(n.parent, n.token, n.step, n.status, n.end, n.rank, n.beam) for n in t.nodes] for t in forest]
    assert shape(dev.beam_tree) == shape(host.beam_tree)
    tensor = run(model, ids, mask, monkeypatch, True, num_beams=4)
    assert isinstance(tensor, torch.Tensor) and torch.equal(tensor, run(model, ids, mask, monkeypatch, False, num_beams=4))


@pytest.mark.parametrize("kwargs", [
    dict(num_beams=4, repetition_penalty=1.3),
    dict(num_beams=4, min_new_tokens=3, eos_token_id=76),
    dict(num_beams=4, do_sample=True, top_p=0.8),
    dict(num_beams=4, do_sample=True, seed=3),
    dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5),
    dict(num_beams=4, force_words_ids=[[40]]),
], ids=["core-processor", "min-length", "sample-top-p", "sample-seed", "groups", "constrained"])
def test_falls_back_to_the_host_path(stored, monkeypatch, device_steps, kwargs):
    ids, mask = left_padded_batch(LENGTHS)
    torch.manual_seed(0)
    out = run(stored["gpt2"], ids, mask, monkeypatch, True, **kwargs)
    assert device_steps[0] == 0 and out.shape[0] == len(LENGTHS) * 1


def test_user_processor_or_criterion_falls_back(stored, monkeypatch, device_steps):
    from transformers import LogitsProcessorList, StoppingCriteriaList

    class Stop:
        def __call__(self, input_ids, scores, **kwargs):
            return input_ids[:, -1] == 62

    ids, mask = left_padded_batch(LENGTHS)
    run(stored["t5"], ids, mask, monkeypatch, True, num_beams=2, stopping_criteria=StoppingCriteriaList([Stop()]))
    run(stored["t5"], ids, mask, monkeypatch, True, num_beams=2,
        logits_processor=LogitsProcessorList([lambda i, s: s]))
    assert device_steps[0] == 0


def test_cpu_model_uses_the_host_path_unless_forced(stored, monkeypatch, device_steps):
    monkeypatch.delenv(ENV, raising=False)
    ids, mask = left_padded_batch(LENGTHS)
    ferrogen.generate(stored["gpt2"], input_ids=ids, attention_mask=mask, num_beams=2, max_new_tokens=3, pad_token_id=0)
    assert device_steps[0] == 0
