"""llama.cpp / vLLM / text-generation-webui samplers: parity with the references written from
their source (tests/sampler_reference.py), distributions, per-row seeding, config round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import stats

import ferrogen
from ferrogen import GenerationConfig, LogitsPipeline
from sampler_reference import (LlamaMirostat, llama_dry, llama_dynatemp, llama_mirostat_v2_keep,
                               llama_top_n_sigma, llama_xtc, tgw_dry, vllm_penalties)

NEG = -np.inf


def _logits(rng: np.random.Generator, rows: int, vocab: int, scale: float = 3.0) -> np.ndarray:
    return (rng.standard_normal((rows, vocab)) * scale).astype(np.float32)


@pytest.mark.parametrize("seed", range(5))
def test_presence_frequency_match_vllm(seed):
    rng = np.random.default_rng(seed)
    rows, vocab, prompt, new = 4, 64, 5, 12
    ids = rng.integers(0, vocab, (rows, prompt + new))
    logits = _logits(rng, rows, vocab)
    presence, frequency = float(rng.uniform(-1, 2)), float(rng.uniform(-1, 2))
    pipe = LogitsPipeline(presence_penalty=presence, frequency_penalty=frequency, prompt_length=prompt)
    got = pipe.process(ids, logits)
    want = vllm_penalties(torch.from_numpy(logits), ids[:, prompt:].tolist(), presence, frequency).numpy()
    np.testing.assert_array_equal(got, want)


def test_logit_bias_and_allowed_token_ids():
    logits = np.zeros((2, 6), dtype=np.float32)
    got = LogitsPipeline(logit_bias={1: 2.5, 4: -1.0}, allowed_token_ids=[1, 2, 4]).process([[0], [3]], logits)
    np.testing.assert_array_equal(got, [[NEG, 2.5, 0.0, NEG, -1.0, NEG]] * 2)


@pytest.mark.parametrize("seed", range(20))
def test_dry_matches_llama_cpp(seed):
    rng = np.random.default_rng(seed)
    vocab, n = 6, int(rng.integers(2, 80))
    tokens = rng.integers(0, 4, n).tolist()  # a small alphabet: many repeats
    breakers = [[5], [4, 3]] if seed % 2 else [[3]]
    multiplier, base, allowed = float(rng.uniform(0.1, 2)), float(rng.uniform(1.0, 3)), int(rng.integers(1, 4))
    logits = _logits(rng, 1, vocab)
    pipe = LogitsPipeline(dry_multiplier=multiplier, dry_base=base, dry_allowed_length=allowed,
                          dry_sequence_breakers=breakers)
    got = pipe.process([tokens], logits)[0]
    pen = llama_dry(tokens, vocab, multiplier, base, allowed, breakers)
    want = (logits[0].astype(np.float64) - pen).astype(np.float32)
    np.testing.assert_array_equal(got, want)
    if all(len(b) == 1 for b in breakers) and n < 50:  # text-generation-webui agrees here
        tgw = tgw_dry(tokens, vocab, multiplier, base, allowed, {b[0] for b in breakers})
        np.testing.assert_allclose(pen, tgw)


def test_dry_references_disagree_past_50_tokens():
    """text-generation-webui caps a match at 50 tokens; llama.cpp only clamps the exponent."""
    tokens = [0, 1, 2] * 30
    ll = llama_dry(tokens, 3, 1.0, 1.1, 2, [])
    tgw = tgw_dry(tokens, 3, 1.0, 1.1, 2, set())
    assert ll[0] > tgw[0]
    got = LogitsPipeline(dry_multiplier=1.0, dry_base=1.1, dry_allowed_length=2).process(
        [tokens], np.zeros((1, 3), dtype=np.float32))
    np.testing.assert_allclose(-got[0], ll, rtol=1e-6)


@pytest.mark.parametrize("seed", range(10))
def test_top_n_sigma_matches_llama_cpp(seed):
    rng = np.random.default_rng(seed)
    logits = _logits(rng, 3, 500)
    n = float(rng.uniform(0.3, 3))
    got = LogitsPipeline(do_sample=True, top_k=0, top_n_sigma=n).process([[0]] * 3, logits)
    for r in range(3):
        want = llama_top_n_sigma(logits[r], n)
        np.testing.assert_array_equal(got[r] > NEG, want > NEG)


@pytest.mark.parametrize("seed", range(10))
def test_xtc_matches_llama_cpp_when_it_fires(seed):
    rng = np.random.default_rng(seed)
    logits = _logits(rng, 4, 50, scale=2.0)
    threshold = float(rng.uniform(0.01, 0.3))
    got = LogitsPipeline(do_sample=True, top_k=0, xtc_probability=1.0, xtc_threshold=threshold).process(
        [[0]] * 4, logits)
    for r in range(4):
        np.testing.assert_array_equal(got[r] > NEG, llama_xtc(logits[r], threshold) > NEG)


@pytest.mark.parametrize("seed", range(10))
def test_dynatemp_matches_llama_cpp(seed):
    rng = np.random.default_rng(seed)
    logits = _logits(rng, 2, 100)
    t, r, e = float(rng.uniform(0.5, 1.5)), float(rng.uniform(0.1, 0.5)), float(rng.uniform(0.5, 2))
    got = LogitsPipeline(do_sample=True, top_k=0, temperature=t, dynatemp_range=r, dynatemp_exponent=e).process(
        [[0]] * 2, logits)
    for row in range(2):
        np.testing.assert_allclose(got[row], llama_dynatemp(logits[row], t, r, e), rtol=1e-5)


@pytest.mark.parametrize("seed", range(10))
def test_mirostat_v2_first_step_matches_llama_cpp(seed):
    rng = np.random.default_rng(seed)
    logits = _logits(rng, 1, 200)
    tau = float(rng.uniform(1, 6))
    got = LogitsPipeline(do_sample=True, mirostat_mode=2, mirostat_tau=tau).process([[0]], logits)
    np.testing.assert_array_equal(got[0] > NEG, llama_mirostat_v2_keep(logits[0], 2 * tau))


@pytest.mark.parametrize("mode", [1, 2])
@pytest.mark.parametrize("seed", range(6))
def test_mirostat_over_many_steps_matches_llama_cpp(mode, seed):
    """mu's feedback: each step's kept set equals llama.cpp's after the previous choices."""
    rng = np.random.default_rng(seed)
    vocab = 300
    tau, eta = float(rng.uniform(1.5, 5.0)), float(rng.uniform(0.05, 0.5))
    pipe = LogitsPipeline(do_sample=True, mirostat_mode=mode, mirostat_tau=tau, mirostat_eta=eta)
    ref = LlamaMirostat(mode, tau, eta, vocab)
    ids = [0]
    sizes = set()
    for _ in range(15):
        logits = _logits(rng, 1, vocab, scale=float(rng.uniform(1.0, 4.0)))
        want = ref.keep(logits[0])
        got = pipe.process([ids], logits)[0] > NEG
        np.testing.assert_array_equal(got, want)
        # A low-probability choice sometimes, so mu moves both ways.
        kept = np.flatnonzero(want)
        token = int(kept[-1] if rng.random() < 0.3 else rng.choice(kept))
        ref.accept(token)
        ids = ids + [token]
        sizes.add(int(want.sum()))
    assert len(sizes) > 1, "mu never changed the kept set: the test would not see the feedback"


def test_xtc_draws_follow_the_reference_distribution():
    """XTC (probability 1) then the draw: chi-square against llama.cpp's kept distribution."""
    logits = np.array([[2.0, 1.8, 1.0, 0.5, 0.0, -1.0]], dtype=np.float32)
    pipe = LogitsPipeline(do_sample=True, top_k=0, xtc_probability=1.0, xtc_threshold=0.1)
    n = 4000
    draws = [int(pipe.sample([[7, s]], logits, seed=123)[0]) for s in range(n)]
    kept = llama_xtc(logits[0], 0.1)
    p = np.exp(kept.astype(np.float64) - kept[kept > NEG].max())
    p /= p.sum()
    counts = np.bincount(draws, minlength=6)
    assert counts[p == 0].sum() == 0
    live = p > 0
    expected = p[live] / p[live].sum() * counts[live].sum()
    assert stats.chisquare(counts[live], expected).pvalue > 1e-6


def test_xtc_coin_rate_chi_square():
    """With probability 0.5 the top choices are excluded on about half of the steps."""
    logits = np.array([[1.0, 1.0, -5.0]], dtype=np.float32)
    pipe = LogitsPipeline(do_sample=True, top_k=0, xtc_probability=0.5, xtc_threshold=0.3)
    n = 4000
    removed = sum(pipe.process([[9, s]], logits)[0, 0] == NEG for s in range(n))
    assert stats.chisquare([removed, n - removed], [n / 2, n / 2]).pvalue > 1e-6


def test_per_row_seeds_give_the_same_draws_whatever_the_batch():
    rng = np.random.default_rng(0)
    logits = _logits(rng, 6, 40)
    ids = rng.integers(0, 40, (6, 8))
    cfg = dict(do_sample=True, top_k=0, xtc_probability=0.5, xtc_threshold=0.05, dry_multiplier=0.8,
               top_n_sigma=2.0, presence_penalty=0.3)
    batch = LogitsPipeline(**cfg, prompt_length=4).sample(ids, logits.copy(), seed=11)
    for r in range(6):
        alone = LogitsPipeline(**cfg, prompt_length=4).sample(ids[r:r + 1], logits[r:r + 1].copy(), seed=11)
        assert alone[0] == batch[r]



def test_config_round_trips_through_json(tmp_path):
    cfg = GenerationConfig(presence_penalty=0.5, frequency_penalty=0.25, penalty_last_n=64,
                           logit_bias={3: -2.0, 10: 1.5}, allowed_token_ids=[1, 2, 3], dry_multiplier=0.8,
                           dry_base=1.5, dry_allowed_length=3, dry_sequence_breakers=["\n", [5, 6]],
                           dry_penalty_last_n=128, xtc_probability=0.5, xtc_threshold=0.2, top_n_sigma=1.5,
                           dynatemp_range=0.3, dynatemp_exponent=1.2, mirostat_mode=2, mirostat_tau=4.0,
                           mirostat_eta=0.2)
    cfg.save_pretrained(tmp_path)
    back = GenerationConfig.from_pretrained(tmp_path)
    assert back.to_dict() == cfg.to_dict()
    assert back.logit_bias == {3: -2.0, 10: 1.5}


@pytest.mark.parametrize("field,value", [
    ("xtc_probability", 1.5), ("xtc_threshold", -0.1), ("top_n_sigma", 0.0), ("dry_base", 0.5),
    ("dry_multiplier", -1.0), ("mirostat_mode", 3), ("dynatemp_range", -0.1), ("allowed_token_ids", []),
    ("logit_bias", {"x": 1.0}), ("dry_allowed_length", 0),
])
def test_bad_values_name_the_field(field, value):
    with pytest.raises((ValueError, TypeError), match=field):
        GenerationConfig(**{field: value})


def test_string_breakers_need_a_tokenizer():
    from ferrogen.samplers import with_resolved_breakers

    cfg = GenerationConfig(dry_multiplier=1.0, dry_sequence_breakers=["\n"])
    assert cfg.dry_sequence_breaker_ids is None
    with pytest.raises(ValueError, match="dry_sequence_breakers"):
        with_resolved_breakers(cfg, None)

    class Tok:
        def encode(self, text, add_special_tokens=False):
            return [ord(c) % 50 for c in text]

    resolved = with_resolved_breakers(cfg, Tok())
    assert resolved.dry_sequence_breaker_ids == [[ord("\n") % 50]]
    assert cfg.dry_sequence_breakers == ["\n"], "the caller's config is left alone"


def test_sampler_order_presets_and_lists():
    cfg = dict(do_sample=True, temperature=0.7, top_k=40, top_p=0.9, min_p=0.05, xtc_probability=0.5)
    assert LogitsPipeline(**cfg, sampler_order="llama.cpp").names == [
        "NanToNegInf", "TopKLogitsWarper", "TopPLogitsWarper", "MinPLogitsWarper", "XTC", "TemperatureLogitsWarper"]
    assert LogitsPipeline(**cfg, sampler_order=["min_p", "temperature"]).names == [
        "NanToNegInf", "MinPLogitsWarper", "TemperatureLogitsWarper"]
    assert GenerationConfig(sampler_order=["top_k", "temperature"]).sampler_order == "top_k,temperature"
    with pytest.raises(ValueError, match="sampler_order"):
        GenerationConfig(sampler_order="top_k,warmth")
    # the order matters: top-p after a temperature of 0.5 keeps fewer tokens than before it
    logits = np.array([[2.0, 1.5, 1.0, 0.5, 0.0]], dtype=np.float32)
    before = LogitsPipeline(do_sample=True, top_k=0, temperature=0.5, top_p=0.8,
                            sampler_order="top_p,temperature").process([[0]], logits)
    after = LogitsPipeline(do_sample=True, top_k=0, temperature=0.5, top_p=0.8).process([[0]], logits)
    assert (before > NEG).sum() > (after > NEG).sum()


def test_sampler_fields_as_jsonl_per_line_overrides(tmp_path, capsys):
    """Issue 18: each sampler field works as a per-line override of `ferrogen generate --input`,
    with the library's result, and a bad value fails only its own line, naming the field."""
    from ferrogen.cli import main

    prompt = "And God said"
    cases = [
        {"do_sample": True, "seed": 3, "dry_multiplier": 0.8, "dry_allowed_length": 1, "xtc_probability": 0.5,
         "xtc_threshold": 0.05, "min_p": 0.05},
        {"do_sample": True, "seed": 4, "mirostat_mode": 2, "mirostat_tau": 3.0},
        {"presence_penalty": 1.5, "frequency_penalty": 0.5},
        {"do_sample": True, "seed": 5, "top_n_sigma": 1.0, "dynatemp_range": 0.5},
        {"logit_bias": {"17": 100.0}},  # JSON keys are strings: read back as token ids
    ]
    lines = [{"prompt": prompt, **case} for case in cases] + [{"prompt": prompt, "xtc_probability": 2.0}]
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main(["generate", "--input", str(src), "--output", str(dst), "--max-new-tokens", "6"]) == 0
    capsys.readouterr()
    records = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [r["line"] for r in records] == list(range(1, len(lines) + 1))
    pipe = ferrogen.pipeline()
    for case, record in zip(cases, records):
        kwargs = {k: ({int(t): b for t, b in v.items()} if k == "logit_bias" else v) for k, v in case.items()}
        expected = pipe(prompt, max_new_tokens=6, **kwargs)[0]
        assert record["token_ids"] == expected.token_ids, case
    assert set(records[4]["token_ids"]) == {17}, "the bias forces token 17"
    assert "xtc_probability" in records[-1]["error"]
