"""SynthID text watermarking (``SynthIDTextWatermarkingConfig``) against transformers 5.x, live:
the processor's scores step by step on random inputs (state, repeated contexts, every setting),
greedy and beam search token-identical on GPT-2 and a tiny Llama, sampling replayed through
transformers' processor, the detector's inputs (g-values and masks) equal to transformers', a
statistical check that the watermark is there, and transformers' Bayesian detector scoring
ferrogen's output as it scores its own."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from transformers import BayesianDetectorConfig, BayesianDetectorModel, SynthIDTextWatermarkingConfig
from transformers.generation.logits_process import SynthIDTextWatermarkLogitsProcessor

import ferrogen
from conftest import prompts
from ferrogen import FallbackWarning
from ferrogen.watermark import (
    synthid_context_repetition_mask,
    synthid_eos_token_mask,
    synthid_g_values,
    synthid_mean_g_value,
)

NEW = 10
FIELDS = ("ngram_len", "keys", "sampling_table_size", "sampling_table_seed", "context_history_size",
          "skip_first_ngram_calls", "debug_mode")


def processor(config: SynthIDTextWatermarkingConfig) -> SynthIDTextWatermarkLogitsProcessor:
    return SynthIDTextWatermarkLogitsProcessor(**{f: getattr(config, f) for f in FIELDS}, device="cpu")


@pytest.fixture
def model(decoder):
    return decoder


def random_config(seed: int) -> SynthIDTextWatermarkingConfig:
    g = torch.Generator().manual_seed(seed)

    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=g))]

    depth = pick([1, 2, 5, 12])
    keys = torch.randint(-(2**62), 2**62, (depth,), generator=g).tolist()
    return SynthIDTextWatermarkingConfig(
        ngram_len=pick([1, 2, 3, 5]), keys=keys, sampling_table_size=pick([1, 2, 97, 1000, 2**16]),
        sampling_table_seed=pick([0, 5, -1, 2**63 + 11]), context_history_size=pick([0, 1, 3, 1024]),
        skip_first_ngram_calls=pick([False, True]), debug_mode=pick([False, False, True]))


@pytest.mark.parametrize("seed", range(24))
def test_processor_scores_equal_transformers_step_by_step(seed):
    """The same processor object called step after step on both sides (its state carries over);
    rows that repeat a token make repeated contexts, short prompts of one token included."""
    config = random_config(seed)
    well_conditioned = len(config.keys) <= 5 and config.sampling_table_size >= 97
    ours, theirs = ferrogen.LogitsPipeline(watermarking_config=config), processor(config)
    g = torch.Generator().manual_seed(100 + seed)
    ids = torch.randint(0, 400, (4, 1 + seed % 3), generator=g)
    for step in range(9):
        scores = torch.randn(4, 400, generator=g) * 4
        scores[1, :7] = float("-inf")
        if step == 4:
            scores[2, 3] = float("nan")
            scores[3] = float("-inf")
        want = theirs(ids, scores.clone())
        got = ours.process(ids, scores.clone())
        # Compared as probabilities: each depth multiplies by 1 - mass or 2 - mass, so with many
        # keys over a tiny table (mass near 1) float32 rounding in the mass is amplified in the
        # log of the tokens it pushes towards 0 (a -33.24 against -33.23, a -93 against 0
        # probability: both sides round differently, neither is more right).
        torch.testing.assert_close(got.exp(), want.exp(), rtol=1e-4, atol=1e-6, equal_nan=True)
        if well_conditioned:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-5, equal_nan=True)
        new = torch.randint(0, 400, (4, 1), generator=g)
        new[0] = 7  # row 0 repeats one token: its contexts repeat
        ids = torch.cat([ids, new], dim=1)


def test_processor_changes_scores_and_only_its_own_way():
    """A sanity check of the comparison above: without the watermark the scores differ."""
    config = SynthIDTextWatermarkingConfig(keys=[1, 2, 3], ngram_len=2)
    scores = torch.randn(2, 300, generator=torch.Generator().manual_seed(0))
    got = ferrogen.LogitsPipeline(watermarking_config=config).process(prompts(), scores.clone())
    assert not torch.allclose(got, scores.log_softmax(-1), atol=1e-3)


@pytest.mark.parametrize("size, seed", [(1, 0), (2, 5), (97, -1), (4096, 2**63 + 11), (2**16, 0)])
def test_g_values_and_masks_equal_transformers(size, seed):
    """The sampling table (torch's randint, through g-values that visit all of a small table), the
    n-gram hashing with int64 wrap-around, and the detector's masks."""
    g = torch.Generator().manual_seed(size)
    ids = torch.randint(0, 50_000, (6, 700), generator=g)
    ids[1, 100:200] = 9  # repeated contexts
    for ngram_len in (1, 2, 5):
        config = SynthIDTextWatermarkingConfig(keys=[2**62 + 3, -17, 654, 0], ngram_len=ngram_len,
                                               sampling_table_size=size, sampling_table_seed=seed,
                                               context_history_size=64)
        proc = processor(config)
        assert torch.equal(synthid_g_values(ids, config), proc.compute_g_values(ids))
        assert torch.equal(synthid_context_repetition_mask(ids, config), proc.compute_context_repetition_mask(ids))
    assert torch.equal(synthid_eos_token_mask(ids, 9), proc.compute_eos_token_mask(ids, 9))


@pytest.mark.parametrize("case", [
    dict(ngram_len=5), dict(ngram_len=1), dict(ngram_len=2, context_history_size=2),
    dict(ngram_len=3, skip_first_ngram_calls=True),
], ids=str)
@pytest.mark.parametrize("beams", [1, 3])
def test_greedy_and_beams_equal_transformers(model, case, beams):
    config = SynthIDTextWatermarkingConfig(keys=[654, 400, 836, 123, 340], **case)
    kw = dict(max_new_tokens=NEW, do_sample=False, num_beams=beams, pad_token_id=0, watermarking_config=config)
    want = model.generate(prompts(), **kw)
    got = ferrogen.generate(model, prompts(), **kw)
    assert torch.equal(got, want)
    if beams == 1:  # the watermark changes greedy's choices
        plain = ferrogen.generate(model, prompts(), max_new_tokens=NEW, do_sample=False, pad_token_id=0)
        assert not torch.equal(plain, got) or case["ngram_len"] == 1


def test_beam_search_returns_and_scores_equal_transformers(gpt2):
    config = SynthIDTextWatermarkingConfig(keys=[5, 6, 7], ngram_len=3)
    kw = dict(max_new_tokens=8, num_beams=4, num_return_sequences=2, pad_token_id=0, watermarking_config=config,
              return_dict_in_generate=True, output_scores=True)
    want, got = gpt2.generate(prompts(), **kw), ferrogen.generate(gpt2, prompts(), **kw)
    assert torch.equal(got.sequences, want.sequences)
    torch.testing.assert_close(got.sequences_scores, want.sequences_scores, rtol=1e-5, atol=1e-5)


def replay(model, sequences, prompt_len, proc):
    """transformers' processed scores along ``sequences``, one processor call per step in order."""
    out = []
    with torch.no_grad():
        for cur in range(prompt_len, sequences.shape[1]):
            prefix = sequences[:, :cur]
            out.append(proc(prefix, model(prefix).logits[:, -1].float()))
    return out


@pytest.mark.parametrize("returns", [1, 2])
def test_sampling_scores_equal_transformers_processor(model, returns):
    """Sampling: ferrogen's seeding is its own (docs/transformers-differences.md), so the sampled
    path is replayed through transformers' processor, whose scores must be what ferrogen sampled
    from."""
    config = SynthIDTextWatermarkingConfig(keys=[654, 400, 836, 123], ngram_len=3, context_history_size=4)
    out = ferrogen.generate(model, prompts(), max_new_tokens=NEW, do_sample=True, top_k=0, seed=5, pad_token_id=0,
                            num_return_sequences=returns, watermarking_config=config,
                            return_dict_in_generate=True, output_scores=True)
    want = replay(model, out.sequences, prompts().shape[1], processor(config))
    assert len(want) == len(out.scores) == NEW
    for got, ref in zip(out.scores, want):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=2e-5)


def test_watermarked_text_has_a_higher_mean_g_value(gpt2):
    """Unwatermarked g-values are fair coin flips: over n counted values their mean is within
    4 standard deviations (0.5 / sqrt(n)) of 0.5 except with probability 6e-5. Watermarked
    sampling must be above that bound; the unwatermarked text of the same seed must be inside it."""
    config = SynthIDTextWatermarkingConfig(keys=[654, 400, 836, 123, 340, 443, 597, 160], ngram_len=3)
    kw = dict(max_new_tokens=60, min_new_tokens=60, do_sample=True, top_k=0, seed=11, pad_token_id=0)
    ids = prompts(4, 4)
    marked = ferrogen.generate(gpt2, ids, watermarking_config=config, **kw)[:, 4:]
    plain = ferrogen.generate(gpt2, ids, **kw)[:, 4:]
    counted = synthid_context_repetition_mask(marked, config).sum().item() * len(config.keys)
    bound = 4 * 0.5 / math.sqrt(counted)
    mean_marked = synthid_mean_g_value(marked, config).mean().item()
    mean_plain = synthid_mean_g_value(plain, config).mean().item()
    assert abs(mean_plain - 0.5) < 4 * 0.5 / math.sqrt(
        synthid_context_repetition_mask(plain, config).sum().item() * len(config.keys))
    assert mean_marked > 0.5 + bound, (mean_marked, mean_plain, bound)


def test_bayesian_detector_scores_ferrogen_output_as_transformers_output(gpt2):
    """transformers' own pipeline (untrained detector from a fixed torch seed): the same
    posterior on ferrogen's greedy output as on transformers' (the same tokens), and the same
    with ferrogen's g-values and masks in place of the processor's."""
    from transformers import SynthIDTextWatermarkDetector

    config = SynthIDTextWatermarkingConfig(keys=[654, 400, 836, 123, 340], ngram_len=4)
    torch.manual_seed(0)
    detector_model = BayesianDetectorModel(BayesianDetectorConfig(watermarking_depth=5)).eval()

    class Tok:
        eos_token_id = 1

    detector = SynthIDTextWatermarkDetector(detector_model, processor(config), Tok())
    kw = dict(max_new_tokens=30, do_sample=False, pad_token_id=0, watermarking_config=config)
    ours, theirs = ferrogen.generate(gpt2, prompts(3, 4), **kw), gpt2.generate(prompts(3, 4), **kw)
    assert torch.equal(ours, theirs)
    with torch.no_grad():
        want = detector(theirs)[0]
        mask = synthid_context_repetition_mask(ours, config) & synthid_eos_token_mask(ours, 1)[:, 3:]
        native = detector_model(synthid_g_values(ours, config), mask)[0]
    torch.testing.assert_close(detector(ours)[0], want, rtol=0, atol=0)
    torch.testing.assert_close(native, want, rtol=0, atol=0)


def test_enable_runs_synthid_natively(gpt2):
    """No fallback to transformers (the fallback counter does not move) and the same tokens."""
    from ferrogen import compat

    config = SynthIDTextWatermarkingConfig(keys=[3, 5, 7, 11], ngram_len=3)
    for kwargs in (dict(do_sample=False), dict(num_beams=2), dict(watermarking_config=config.to_dict())):
        kwargs = {"watermarking_config": config, **kwargs}
        want = gpt2.generate(prompts(), max_new_tokens=NEW, pad_token_id=0, **kwargs)
        before = compat.fallback_counts()
        with ferrogen.patched(gpt2), warnings.catch_warnings():
            warnings.simplefilter("error", FallbackWarning)
            got = gpt2.generate(prompts(), max_new_tokens=NEW, pad_token_id=0, **kwargs)
        assert compat.fallback_counts() == before
        assert torch.equal(got, want)


def test_bad_detector_inputs_raise_clear_errors():
    config = SynthIDTextWatermarkingConfig(keys=[1, 2], ngram_len=4)
    with pytest.raises(ValueError, match="^input_ids"):
        synthid_g_values(torch.tensor([[1, 2]]), config)  # shorter than an n-gram
    with pytest.raises(ValueError, match="^input_ids"):
        synthid_g_values(torch.tensor([1, 2, 3, 4]), config)
    with pytest.raises(ValueError, match="^watermarking_config.keys"):
        synthid_g_values(torch.tensor([[1, 2, 3, 4]]), {"ngram_len": 4, "keys": []})
