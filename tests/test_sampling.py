"""Sampling: distributions, seeds, and generate with processors (greedy and sampling).

Distribution tests draw 20k tokens per (config, seed) in one vectorised core call (20k
identical rows: their keys differ by occurrence index) and run Pearson's chi-square
against the softmax of transformers' processed scores; a filtered token must never be
drawn. Significance: p > 1e-4. The seeds are fixed, so the tests are deterministic and
cannot flake; alpha = 1e-4 is the rate at which a correct sampler would fail for a new
seed (so re-seeding is never needed). At 20k draws the test catches a wrong mask, a
wrong warper order or a biased inverse CDF; a 3% error in temperature gives p between
1e-5 and 0.5 on these rows: biases that small need more draws than a unit test should take.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from transformers.generation import logits_process as lp

import ferrogen
from conftest import VOCAB, hf_generate, left_padded_batch

N_DRAWS = 20_000

# transformers' order of the warpers: temperature, top_k, top_p, min_p, typical
DISTRIBUTIONS = {
    "temperature": dict(temperature=0.6),
    "top_k": dict(top_k=5),
    "top_k+temperature": dict(top_k=7, temperature=1.7),
    "top_p": dict(top_p=0.7),
    "top_p+temperature": dict(top_p=0.8, temperature=0.5),
    "typical": dict(typical_p=0.6),
    "min_p": dict(min_p=0.15),
    "min_p+top_k+temperature": dict(min_p=0.05, temperature=1.4, top_k=10),
    "all": dict(temperature=0.8, top_k=12, top_p=0.9, min_p=0.02, typical_p=0.95),
}


def hf_warpers(fields):
    out = []
    if "temperature" in fields:
        out.append(lp.TemperatureLogitsWarper(fields["temperature"]))
    if "top_k" in fields:
        out.append(lp.TopKLogitsWarper(fields["top_k"]))
    if "top_p" in fields:
        out.append(lp.TopPLogitsWarper(fields["top_p"]))
    if "min_p" in fields:
        out.append(lp.MinPLogitsWarper(fields["min_p"]))
    if "typical_p" in fields:
        out.append(lp.TypicalLogitsWarper(fields["typical_p"]))
    return out


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_draws_follow_the_processed_softmax(name):
    fields = DISTRIBUTIONS[name]
    vocab = 24
    row = torch.randn(1, vocab, generator=torch.Generator().manual_seed(len(name))) * 1.5
    scores = row.clone()
    for warper in hf_warpers(fields):
        scores = warper(None, scores)
    probs = torch.softmax(scores, -1)[0].double().numpy()
    pipe = ferrogen.LogitsPipeline(do_sample=True, **{"top_k": 0, **fields})
    ids = np.zeros((N_DRAWS, 1), np.int64)
    for seed in (1, 2):
        draws = pipe.sample(ids, np.repeat(row.numpy(), N_DRAWS, 0), seed=seed)
        counts = np.bincount(draws, minlength=vocab)
        assert counts[probs == 0].sum() == 0, "a filtered token was drawn"
        live = probs > 0
        assert live.sum() >= 2, "the test needs a real distribution"
        expected = probs[live] / probs[live].sum() * counts.sum()
        p = chisquare(counts[live], expected).pvalue
        assert p > 1e-4, f"{name} seed {seed}: chi-square p = {p:.2e}, counts {counts[live]}"


def test_same_seed_same_tokens_whatever_the_batch():
    vocab = 500
    g = torch.Generator().manual_seed(0)
    a_ids, b_ids = [5, 6, 7], [9, 9, 1]
    a_logits, b_logits = torch.randn(vocab, generator=g), torch.randn(vocab, generator=g)
    pipe = ferrogen.LogitsPipeline(do_sample=True, top_k=100, temperature=1.5)

    def draw(rows, seed=3):
        ids = torch.tensor([r[0] for r in rows])
        logits = torch.stack([r[1] for r in rows])
        return pipe.sample(ids, logits, seed=seed).tolist()

    a, b = (a_ids, a_logits), (b_ids, b_logits)
    alone = draw([a])[0]
    results = [draw([a] * 1 + [b])[0], draw([b, a])[1], draw([b, b, a, b])[2]]
    assert all(t == alone for t in results)
    many = [draw([a], seed=s)[0] for s in range(30)]
    assert len(set(many)) > 5, "different seeds give different tokens"
    dup = draw([a] * 40)
    assert dup[0] == alone and len(set(dup)) > 5, "duplicated prompts differ (occurrence index)"


def test_draws_do_not_depend_on_the_thread_count():
    code = (
        "import json, numpy as np, ferrogen;"
        "rng = np.random.default_rng(0);"
        "logits = rng.standard_normal((64, 4096)).astype(np.float32);"
        "ids = rng.integers(0, 4096, (64, 5));"
        "pipe = ferrogen.LogitsPipeline(do_sample=True, top_k=0, top_p=0.95, temperature=0.9);"
        "print(json.dumps(pipe.sample(ids, logits, seed=11).tolist()))"
    )
    env = {**os.environ, "RAYON_NUM_THREADS": "1"}
    src = os.path.join(os.path.dirname(ferrogen.__file__), "..")
    env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(src), env.get("PYTHONPATH", "")])
    one_thread = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                           text=True, check=True).stdout)
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((64, 4096)).astype(np.float32)
    ids = rng.integers(0, 4096, (64, 5))
    pipe = ferrogen.LogitsPipeline(do_sample=True, top_k=0, top_p=0.95, temperature=0.9)
    assert pipe.sample(ids, logits, seed=11).tolist() == one_thread


# --------------------------------------------------------------------------- generate


def sample(model, ids, mask, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ferrogen.generate(model, input_ids=ids, attention_mask=mask, do_sample=True, pad_token_id=0, **kwargs)


def new_tokens(model, out, ids):
    start = 1 if model.config.is_encoder_decoder else ids.shape[1]
    return out[:, start:]


def test_generate_sampling_is_seeded_and_batch_invariant(gpt2):
    ids, mask = left_padded_batch((5, 5, 5))
    kw = dict(max_new_tokens=8, seed=42, top_k=20)
    full = sample(gpt2, ids, mask, **kw)
    assert torch.equal(full, sample(gpt2, ids, mask, **kw)), "same seed, same tokens"
    alone = sample(gpt2, ids[1:2], mask[1:2], **kw)
    assert torch.equal(new_tokens(gpt2, alone, ids)[0], new_tokens(gpt2, full, ids)[1])
    flipped = sample(gpt2, ids.flip(0), mask.flip(0), **kw)
    assert torch.equal(new_tokens(gpt2, flipped, ids).flip(0), new_tokens(gpt2, full, ids))
    other = sample(gpt2, ids, mask, **{**kw, "seed": 43})
    assert not torch.equal(other, full)


@pytest.mark.parametrize("model_name", ["gpt2", "t5"])
def test_without_seed_torch_manual_seed_reproduces(request, model_name):
    any_model = request.getfixturevalue(model_name)
    ids, mask = left_padded_batch((4, 2))
    torch.manual_seed(123)
    first = sample(any_model, ids, mask, max_new_tokens=6)
    torch.manual_seed(123)
    assert torch.equal(first, sample(any_model, ids, mask, max_new_tokens=6))
    torch.manual_seed(124)
    runs = [sample(any_model, ids, mask, max_new_tokens=6) for _ in range(3)]
    assert any(not torch.equal(first, r) for r in runs)


def test_num_return_sequences_and_duplicated_prompts(any_model):
    ids, mask = left_padded_batch((3, 3))
    ids[1], mask[1] = ids[0], mask[0]  # the same prompt twice
    out = sample(any_model, ids, mask, max_new_tokens=10, num_return_sequences=3, seed=7, top_k=0,
                 return_dict_in_generate=True, output_scores=True)
    assert out.sequences.shape[0] == 6 and out.scores[0].shape == (6, VOCAB)
    rows = [tuple(r) for r in new_tokens(any_model, out.sequences, ids).tolist()]
    assert len(set(rows)) == 6, "copies and duplicated prompts all differ"
    one = sample(any_model, ids[:1], mask[:1], max_new_tokens=10, num_return_sequences=3, seed=7, top_k=0)
    assert torch.equal(new_tokens(any_model, one, ids), new_tokens(any_model, out.sequences, ids)[:3])


SAMPLE_SETTINGS = [
    dict(temperature=0.7, top_k=10, top_p=0.9, repetition_penalty=1.3, no_repeat_ngram_size=2),
    dict(top_k=0, typical_p=0.8, min_p=0.05, bad_words_ids=[[5], [6, 7]], renormalize_logits=True),
    dict(top_k=30, epsilon_cutoff=0.01, eta_cutoff=0.01, suppress_tokens=[3, 4], min_new_tokens=2, eos_token_id=2),
]


@pytest.mark.parametrize("settings", SAMPLE_SETTINGS, ids=["rep+ngram", "typical+minp", "eps+eta"])
def test_sampling_scores_match_transformers_at_the_first_step(any_model, settings):
    """The first step's logits are the same in both, so the processed scores must be."""
    ids, mask = left_padded_batch((5, 3))
    kw = dict(max_new_tokens=3, do_sample=True, pad_token_id=0, return_dict_in_generate=True, output_scores=True)
    theirs = hf_generate(any_model, ids, mask, **kw, **settings)
    ours = sample(any_model, ids, mask, seed=0, **{k: v for k, v in kw.items() if k not in ("do_sample", "pad_token_id")},
                  **settings)
    a, b = ours.scores[0], theirs.scores[0]
    assert torch.equal(torch.isneginf(a), torch.isneginf(b))
    torch.testing.assert_close(a[torch.isfinite(b)], b[torch.isfinite(b)], rtol=1e-5, atol=1e-5)


def test_user_processors_run_between_processors_and_warpers(gpt2):
    ids, mask = left_padded_batch((4, 4))
    banned = 17
    calls = []

    def ban(input_ids, scores):
        calls.append(scores.clone())
        scores[:, banned] = -float("inf")
        return scores

    out = sample(gpt2, ids, mask, max_new_tokens=12, seed=3, top_k=0, temperature=0.5, repetition_penalty=1.4,
                 logits_processor=[ban], return_dict_in_generate=True, output_scores=True)
    assert banned not in new_tokens(gpt2, out.sequences, ids).tolist()
    # the user saw processed (repetition penalty) but not warped (temperature) scores:
    raw = ferrogen.LogitsPipeline(repetition_penalty=1.4, attention_mask=mask, prompt_length=4, do_sample=True,
                                  top_k=0, temperature=0.5)
    with torch.no_grad():
        logits = gpt2(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits[:, -1]
    torch.testing.assert_close(calls[0], raw.process(ids, logits, part="processors"), rtol=1e-4, atol=1e-4)
    assert torch.isneginf(out.scores[0][:, banned]).all()

    # a transformers warper of the same class as a configured one replaces it
    theirs = hf_generate(gpt2, ids, mask, max_new_tokens=2, do_sample=True, pad_token_id=0, top_k=50,
                         logits_processor=[lp.TopKLogitsWarper(3)], return_dict_in_generate=True, output_scores=True)
    ours = sample(gpt2, ids, mask, max_new_tokens=2, seed=1, top_k=50, logits_processor=[lp.TopKLogitsWarper(3)],
                  return_dict_in_generate=True, output_scores=True)
    assert torch.equal(torch.isneginf(ours.scores[0]), torch.isneginf(theirs.scores[0]))
    assert (torch.isfinite(ours.scores[0]).sum(-1) == 3).all()


def test_token_ids_outside_the_vocab_are_refused_before_the_model_runs(gpt2):
    ids, mask = left_padded_batch((3,))
    calls = []
    hook = gpt2.register_forward_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(ferrogen.TokenOutOfVocabError, match="^bad_words_ids"):
            sample(gpt2, ids, mask, max_new_tokens=2, bad_words_ids=[[VOCAB + 3]], seed=0)
        with pytest.raises(ferrogen.TokenOutOfVocabError, match="^suppress_tokens"):
            ferrogen.generate(gpt2, input_ids=ids, attention_mask=mask, max_new_tokens=2, suppress_tokens=[VOCAB])
    finally:
        hook.remove()
    assert not calls


def test_sampling_a_row_with_nothing_left_raises(gpt2):
    ids, mask = left_padded_batch((3,))
    with pytest.raises(ferrogen.NoValidTokenError):
        sample(gpt2, ids, mask, max_new_tokens=2, suppress_tokens=list(range(VOCAB)), seed=0)


# --------------------------------------------------------------------------- greedy + processors

GREEDY_SETTINGS = {
    "repetition": dict(repetition_penalty=1.5),
    "ngram": dict(no_repeat_ngram_size=2),
    "bad_words+bias": dict(bad_words_ids=[[5], [7, 8], [9]], sequence_bias={(10,): 3.0, (11, 12): -2.0}),
    "encoder": dict(encoder_repetition_penalty=1.6, encoder_no_repeat_ngram_size=2),
    "suppress": dict(suppress_tokens=[3, 4, 6], begin_suppress_tokens=[8, 9]),
    "forced": dict(forced_bos_token_id=11, forced_eos_token_id=2),
    "decay": dict(exponential_decay_length_penalty=(2, 1.8), eos_token_id=2),
    "min+renorm": dict(min_length=9, renormalize_logits=True, remove_invalid_values=True, eos_token_id=2),
}


@pytest.mark.parametrize("name", sorted(GREEDY_SETTINGS))
@pytest.mark.parametrize("model_name", ["gpt2", "t5"])
def test_greedy_with_processors_matches_transformers(request, model_name, name):
    model = request.getfixturevalue(model_name)
    ids, mask = left_padded_batch((6, 3, 5))
    kw = dict(max_new_tokens=10, do_sample=False, pad_token_id=0, return_dict_in_generate=True, output_scores=True,
              **GREEDY_SETTINGS[name])
    theirs = hf_generate(model, ids, mask, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = ferrogen.generate(model, input_ids=ids, attention_mask=mask, **kw)
    assert torch.equal(ours.sequences, theirs.sequences), (ours.sequences, theirs.sequences)
    for a, b in zip(ours.scores, theirs.scores):
        assert torch.equal(torch.isneginf(a), torch.isneginf(b))
        torch.testing.assert_close(a[torch.isfinite(b)], b[torch.isfinite(b)], rtol=1e-5, atol=1e-5)


def test_greedy_with_a_custom_transformers_processor_matches(gpt2):
    ids, mask = left_padded_batch((5, 2))
    custom = [lp.RepetitionPenaltyLogitsProcessor(1.8), lambda i, s: s - 0.5 * (torch.arange(s.shape[-1]) % 3 == 0)]
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0, repetition_penalty=1.2, logits_processor=custom)
    theirs = hf_generate(gpt2, ids, mask, **kw)
    ours = ferrogen.generate(gpt2, input_ids=ids, attention_mask=mask, **kw)
    assert torch.equal(ours, theirs)
