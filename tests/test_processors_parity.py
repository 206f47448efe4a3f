"""ferrogen's processed logits equal transformers' (same -inf/NaN mask, values allclose).

The reference is transformers' own list, built by ``model._get_logits_processor`` (so the
order of application is checked too) or, for ``min_tokens_to_keep``, the warper classes.
Inputs: random logits at several scales and adversarial ones (ties, all -inf but one,
huge and tiny magnitudes, vocab 1). torch's CPU sort is unstable beyond 16 elements, so
for ties at the top-p / typical boundary transformers' result is arbitrary; the reference
runs with ``torch.sort(stable=True)``, which is the tie order ferrogen defines.
"""

from __future__ import annotations

import contextlib
import random
import warnings

import numpy as np
import pytest
import torch
import transformers
from transformers.generation import logits_process as lp

import ferrogen

VOCAB = 96  # the vocab of the conftest models


@contextlib.contextmanager
def stable_sort():
    original = torch.sort

    def stable(*args, **kwargs):
        kwargs["stable"] = True
        return original(*args, **kwargs)

    torch.sort = stable
    try:
        yield
    finally:
        torch.sort = original


def hf_list(model, prompt_len, attention_mask=None, encoder_input_ids=None, **fields):
    """transformers' processor list for ``fields``, as ``generate`` builds it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gc = transformers.GenerationConfig(**fields)
        model._prepare_special_tokens(gc, attention_mask is not None, device="cpu")
        kwargs = {} if attention_mask is None else {"attention_mask": attention_mask}
        return model._get_logits_processor(
            gc, input_ids_seq_length=prompt_len, encoder_input_ids=encoder_input_ids, logits_processor=[],
            device="cpu", model_kwargs=kwargs,
        )


def run_hf(procs, ids, logits):
    """transformers' result, or ``None`` where it raises (``Categorical`` refuses a row
    with nothing left, e.g. in the eta warper)."""
    with stable_sort(), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = logits.clone()
        try:
            for proc in procs:
                scores = proc(ids, scores)
        except ValueError as err:
            assert "invalid values" in str(err), err
            return None
        return scores


def assert_same_scores(ours, theirs, what=""):
    """Same -inf/+inf/NaN masks and close finite values.

    Where transformers' arithmetic turns a row into NaN (softmax of a row with +inf, or
    with no finite value left), ferrogen returns a defined row instead (see the module
    docstring of ``ferrogen.processors``): such rows only need to be NaN-free. Where
    transformers raises for a row with nothing left, ferrogen must leave a dead row
    (all -inf), which its sampler then refuses with ``NoValidTokenError``.
    """
    ours = torch.as_tensor(ours)
    if theirs is None:
        dead = ~(ours > float("-inf")).any(dim=-1)
        assert dead.any(), f"{what}: transformers raised but no row is dead"
        return
    theirs = torch.as_tensor(theirs)
    assert ours.shape == theirs.shape
    undefined = torch.isnan(theirs).any(dim=-1) & ~torch.isnan(ours).any(dim=-1)
    ours, theirs = ours[~undefined], theirs[~undefined]
    for name, mask in [("-inf", torch.isneginf), ("+inf", torch.isposinf), ("nan", torch.isnan)]:
        bad = mask(ours) != mask(theirs)
        assert not bad.any(), f"{what}: {name} masks differ at {bad.nonzero()[:5].tolist()}"
    finite = torch.isfinite(theirs)
    torch.testing.assert_close(ours[finite], theirs[finite], rtol=1e-5, atol=1e-5, msg=what)


# --------------------------------------------------------------------------- inputs


def logits_cases(rows, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    randn = lambda: torch.randn(rows, vocab, generator=g)  # noqa: E731
    cases = {
        "normal": randn() * 2,
        "peaked": randn() * 8,
        "flat": randn() * 0.05,
        "ties": torch.randint(0, 3, (rows, vocab), generator=g).float(),
        "huge": randn() * 1e30,
        "tiny": randn() * 1e-30,
    }
    one = torch.full((rows, vocab), float("-inf"))
    one[torch.arange(rows), torch.randint(0, vocab, (rows,), generator=g)] = 1.5
    cases["one_finite"] = one
    partial = randn()
    partial[torch.rand(rows, vocab, generator=g) < 0.5] = float("-inf")
    partial[:, 0] = 0.0
    cases["half_neg_inf"] = partial
    return cases


def history(rows, prompt_len, new, seed, pad_rows=()):
    """Token history [rows, prompt_len + new] with left padding (id 0) on ``pad_rows``."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 12, (rows, prompt_len + new), generator=g)  # few ids: repeats and n-grams
    mask = torch.ones(rows, prompt_len, dtype=torch.long)
    for r in pad_rows:
        ids[r, :2] = 0
        mask[r, :2] = 0
    return ids, mask


# --------------------------------------------------------------------------- single processors

SINGLE = {
    "temperature": dict(do_sample=True, temperature=0.37),
    "temperature_hot": dict(do_sample=True, temperature=3.0),
    "top_k": dict(do_sample=True, top_k=5),
    "top_k_1": dict(do_sample=True, top_k=1),
    "top_k_big": dict(do_sample=True, top_k=1000),
    "top_p": dict(do_sample=True, top_p=0.8),
    "top_p_small": dict(do_sample=True, top_p=0.05),
    "top_p_one": dict(do_sample=True, top_p=1.0),
    "typical": dict(do_sample=True, typical_p=0.7),
    "typical_small": dict(do_sample=True, typical_p=0.1),
    "min_p": dict(do_sample=True, min_p=0.2),
    "min_p_zero": dict(do_sample=True, min_p=0.0),
    "top_h": dict(do_sample=True, top_h=0.6),
    "epsilon": dict(do_sample=True, epsilon_cutoff=0.02),
    "eta": dict(do_sample=True, eta_cutoff=0.05),
    "repetition_penalty": dict(repetition_penalty=1.7),
    "repetition_reward": dict(repetition_penalty=0.6),
    "encoder_repetition_penalty": dict(encoder_repetition_penalty=1.5),
    "no_repeat_ngram_1": dict(no_repeat_ngram_size=1),
    "no_repeat_ngram_3": dict(no_repeat_ngram_size=3),
    "encoder_no_repeat_ngram_2": dict(encoder_no_repeat_ngram_size=2),
    "bad_words": dict(bad_words_ids=[[4], [5, 6], [7, 7, 8], [2]], eos_token_id=2),
    "sequence_bias": dict(sequence_bias={(4,): 2.5, (5, 6): -3.0, (6, 6): 1.0, (3, 4, 6): 0.5}),
    "min_length": dict(min_length=30, eos_token_id=[2, 9]),
    "min_new_tokens": dict(min_new_tokens=10, eos_token_id=2),
    "forced_bos": dict(forced_bos_token_id=7),
    "forced_eos": dict(forced_eos_token_id=[2, 3], max_length=11),
    "remove_invalid": dict(remove_invalid_values=True),
    "exponential_decay": dict(exponential_decay_length_penalty=(1, 1.3), eos_token_id=[2, 5]),
    "suppress": dict(suppress_tokens=[1, 4, 90]),
    "begin_suppress": dict(begin_suppress_tokens=[3, 8], forced_bos_token_id=None),
    "renormalize": dict(renormalize_logits=True),
}

# history shapes: (prompt_len, generated) chosen so that every step-dependent processor fires
STEPS = {"forced_bos": (1, 0), "forced_eos": (6, 4), "begin_suppress": (6, 0)}


# configured token ids that a vocabulary of 1 cannot hold (ferrogen raises for those)
WITH_TOKEN_IDS = {"bad_words", "sequence_bias", "min_length", "min_new_tokens", "forced_bos", "forced_eos",
                  "exponential_decay", "suppress", "begin_suppress"}


def ours(fields, prompt_len, ids, logits, mask=None, encoder=None, keep=1):
    if fields.get("do_sample"):
        fields = {"top_k": 0, **fields}  # ferrogen's default top_k is 50, transformers' None
    pipe = ferrogen.LogitsPipeline(
        prompt_length=prompt_len, attention_mask=mask, encoder_input_ids=encoder, min_tokens_to_keep=keep,
        max_length=fields.pop("max_length", None), **fields,
    )
    return pipe.process(ids, logits)


@pytest.mark.parametrize("name", sorted(SINGLE))
def test_each_processor_matches_transformers(gpt2, name):
    fields = SINGLE[name]
    prompt_len, new = STEPS.get(name, (6, 3))
    for vocab, rows in [(VOCAB, 4), (1, 2), (300, 3)]:
        if vocab == 1 and name in WITH_TOKEN_IDS:
            continue
        ids, mask = history(rows, prompt_len, new, seed=len(name), pad_rows=(1,) if prompt_len > 2 else ())
        ids = ids.clamp(max=vocab - 1) if vocab < 12 else ids
        encoder = ids[:, :prompt_len]
        hf_fields = {"top_k": None, **fields}
        procs = hf_list(gpt2, prompt_len, attention_mask=mask, encoder_input_ids=encoder, **hf_fields)
        assert procs or name == "top_p_one", f"{name}: transformers built no processor"
        for case, logits in logits_cases(rows, vocab, seed=vocab).items():
            if name == "top_h" and case in ("ties", "tiny"):
                # tied tokens (or equal probabilities, whose cumulative entropy meets the
                # bound exactly): transformers' pick depends on torch.topk's order and rounding
                continue
            theirs = run_hf(procs, ids, logits)
            mine = ours(dict(fields), prompt_len, ids, logits, mask=mask, encoder=encoder)
            assert_same_scores(mine, theirs, f"{name} vocab={vocab} {case}")


WARPERS_WITH_KEEP = {
    "top_k": lambda k: lp.TopKLogitsWarper(3, min_tokens_to_keep=k),
    "top_p": lambda k: lp.TopPLogitsWarper(0.3, min_tokens_to_keep=k),
    "typical_p": lambda k: lp.TypicalLogitsWarper(0.3, min_tokens_to_keep=k),
    "min_p": lambda k: lp.MinPLogitsWarper(0.5, min_tokens_to_keep=k),
    "epsilon_cutoff": lambda k: lp.EpsilonLogitsWarper(0.1, min_tokens_to_keep=k),
    "eta_cutoff": lambda k: lp.EtaLogitsWarper(0.1, min_tokens_to_keep=k),
}
KEEP_FIELDS = {"top_k": 3, "top_p": 0.3, "typical_p": 0.3, "min_p": 0.5, "epsilon_cutoff": 0.1, "eta_cutoff": 0.1}


@pytest.mark.parametrize("name", sorted(WARPERS_WITH_KEEP))
@pytest.mark.parametrize("keep", [1, 3, 8])
def test_min_tokens_to_keep_matches_transformers(name, keep):
    ids, _ = history(3, 4, 0, seed=3)
    for case, logits in logits_cases(3, 50, seed=keep).items():
        if name == "min_p" and keep > 1:
            top = torch.softmax(logits, -1).sort(descending=True).values
            if (top[:, keep - 1] == top[:, keep]).any():
                continue  # transformers protects an arbitrary one of tied probabilities (torch.topk)
        theirs = run_hf([WARPERS_WITH_KEEP[name](keep)], ids, logits)
        fields = {"do_sample": True, "top_k": 0, name: KEEP_FIELDS[name]}
        mine = ferrogen.LogitsPipeline(prompt_length=4, min_tokens_to_keep=keep, **fields).process(ids, logits)
        assert_same_scores(mine, theirs, f"{name} keep={keep} {case}")


# --------------------------------------------------------------------------- combinations


def random_fields(rng: random.Random) -> dict:
    fields: dict = {"do_sample": rng.random() < 0.8, "top_k": 0}
    options = {
        "temperature": lambda: rng.choice([0.5, 0.9, 1.3]),
        "top_k": lambda: rng.choice([1, 4, 20, 200]),
        "top_p": lambda: rng.choice([0.3, 0.9, 0.99]),
        "min_p": lambda: rng.choice([0.05, 0.3]),
        "typical_p": lambda: rng.choice([0.5, 0.95]),
        "epsilon_cutoff": lambda: rng.choice([0.001, 0.03]),
        "eta_cutoff": lambda: rng.choice([0.001, 0.03]),
        "repetition_penalty": lambda: rng.choice([0.7, 1.3]),
        "encoder_repetition_penalty": lambda: rng.choice([0.8, 1.4]),
        "no_repeat_ngram_size": lambda: rng.choice([1, 2, 3]),
        "encoder_no_repeat_ngram_size": lambda: rng.choice([2, 3]),
        "bad_words_ids": lambda: [[rng.randrange(3, 12)], [rng.randrange(3, 12), rng.randrange(3, 12)]],
        "sequence_bias": lambda: {(rng.randrange(3, 12),): rng.uniform(-2, 2), (4, rng.randrange(3, 12)): -1.5},
        "min_length": lambda: rng.choice([5, 40]),
        "min_new_tokens": lambda: rng.choice([1, 6]),
        "exponential_decay_length_penalty": lambda: (rng.randrange(0, 3), rng.choice([1.1, 2.0])),
        "suppress_tokens": lambda: [rng.randrange(0, 20) for _ in range(3)],
        "begin_suppress_tokens": lambda: [rng.randrange(0, 20)],
        "renormalize_logits": lambda: True,
        "remove_invalid_values": lambda: True,
    }
    for key in rng.sample(sorted(options), rng.randrange(2, 7)):
        fields[key] = options[key]()
    if any(k in fields for k in ("min_length", "min_new_tokens", "exponential_decay_length_penalty")):
        fields["eos_token_id"] = rng.choice([2, [2, 5]])
    return fields


@pytest.mark.filterwarnings("ignore:.*has no effect")
@pytest.mark.parametrize("seed", range(40))
def test_random_combinations_match_transformers(gpt2, seed):
    rng = random.Random(seed)
    fields = random_fields(rng)
    prompt_len, new = rng.choice([(6, 0), (6, 3), (4, 8)])
    ids, mask = history(4, prompt_len, new, seed=seed, pad_rows=(0, 2))
    encoder = ids[:, :prompt_len]
    procs = hf_list(gpt2, prompt_len, attention_mask=mask, encoder_input_ids=encoder, **{**fields, "top_k": fields["top_k"] or None})
    pipe = ferrogen.LogitsPipeline(prompt_length=prompt_len, attention_mask=mask, encoder_input_ids=encoder, **fields)
    names = [type(p).__name__ for p in procs]
    assert [n for n in pipe.names if n != "NanToNegInf"] == names, "same processors in the same order"
    for case, logits in logits_cases(4, VOCAB, seed=seed).items():
        theirs = run_hf(procs, ids, logits)
        assert_same_scores(pipe.process(ids, logits), theirs, f"{fields} {case}")


# --------------------------------------------------------------------------- NaN and ±inf


def test_nan_and_infinities_have_defined_results():
    """Processors follow torch on NaN/±inf; warpers and the draw treat NaN as -inf, and a
    row with +inf entries is uniform over them; nothing left → NoValidTokenError."""
    nan, inf = float("nan"), float("inf")
    ids = np.array([[3, 4]])
    logits = np.array([[nan, 1.0, 2.0, -inf, 0.5]], dtype=np.float32)
    # processors: NaN stays NaN like in torch
    pen = ferrogen.LogitsPipeline(repetition_penalty=2.0, prompt_length=2).process(ids, logits)
    assert np.isnan(pen[0, 0]) and pen[0, 4] == 0.25
    # warpers: NaN is -inf and never drawn
    warp = ferrogen.LogitsPipeline(do_sample=True, top_k=2, prompt_length=2)
    assert_same_scores(warp.process(ids, logits), np.array([[-inf, 1.0, 2.0, -inf, -inf]], dtype=np.float32))
    assert set(warp.sample(np.repeat(ids, 200, 0), np.repeat(logits, 200, 0), seed=1).tolist()) <= {1, 2}
    # +inf shares all the mass
    hot = np.array([[inf, 1.0, inf, 3.0]], dtype=np.float32)
    plain = ferrogen.LogitsPipeline(do_sample=True, top_k=0, prompt_length=2)
    draws = plain.sample(np.repeat(ids, 2000, 0), np.repeat(hot, 2000, 0), seed=2)
    assert set(draws.tolist()) == {0, 2} and 800 < (draws == 0).sum() < 1200
    renorm = ferrogen.LogitsPipeline(renormalize_logits=True, prompt_length=2).process(ids, hot)
    np.testing.assert_allclose(renorm, [[-np.log(2), -inf, -np.log(2), -inf]])
    # nothing left
    dead = np.full((2, 5), -inf, dtype=np.float32)
    dead[1, 0] = nan
    with pytest.raises(ferrogen.NoValidTokenError, match="row 0"):
        plain.sample(np.repeat(ids, 2, 0), dead, seed=0)
    # empty inputs
    assert plain.sample(np.zeros((0, 2), np.int64), np.zeros((0, 5), np.float32), seed=0).shape == (0,)
    assert plain.process(np.zeros((0, 2), np.int64), np.zeros((0, 5), np.float32)).shape == (0, 5)
    with pytest.raises(ferrogen.NoValidTokenError):
        plain.sample(ids, np.zeros((1, 0), np.float32), seed=0)


def test_remove_invalid_values_matches_transformers_on_nan_and_inf(gpt2):
    logits = torch.tensor([[float("nan"), float("inf"), -float("inf"), 1.0, 0.0]])
    ids = torch.tensor([[3, 4]])
    procs = hf_list(gpt2, 2, remove_invalid_values=True, repetition_penalty=1.5)
    mine = ferrogen.LogitsPipeline(prompt_length=2, remove_invalid_values=True, repetition_penalty=1.5).process(ids, logits)
    assert_same_scores(mine, run_hf(procs, ids, logits))


# --------------------------------------------------------------------------- bad config


@pytest.mark.parametrize(
    "fields, name",
    [
        (dict(top_k=-1), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(typical_p=0.0), "typical_p"),
        (dict(typical_p=1.01), "typical_p"),
        (dict(do_sample=True, temperature=0.0), "temperature"),
        (dict(do_sample=True, temperature=-1.0), "temperature"),
        (dict(repetition_penalty=0.0), "repetition_penalty"),
        (dict(repetition_penalty=-2.0), "repetition_penalty"),
        (dict(bad_words_ids=[[]]), "bad_words_ids"),
        (dict(bad_words_ids=[]), "bad_words_ids"),
        (dict(bad_words_ids=[[1, -3]]), "bad_words_ids"),
        (dict(bad_words_ids=[1, 2]), "bad_words_ids"),
    ],
)
def test_bad_config_raises_value_error_naming_the_field(fields, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        ferrogen.LogitsPipeline(**fields)


@pytest.mark.parametrize(
    "fields, name",
    [
        (dict(bad_words_ids=[[3, 200]]), "bad_words_ids"),
        (dict(sequence_bias={(150,): 1.0}), "sequence_bias"),
        (dict(suppress_tokens=[100]), "suppress_tokens"),
        (dict(begin_suppress_tokens=[96]), "begin_suppress_tokens"),
        (dict(forced_bos_token_id=1000), "forced_bos_token_id"),
        (dict(forced_eos_token_id=[1, 99]), "forced_eos_token_id"),
    ],
)
def test_token_ids_outside_the_vocab_name_the_field(fields, name):
    pipe = ferrogen.LogitsPipeline(prompt_length=2, **fields)
    with pytest.raises(ferrogen.TokenOutOfVocabError, match=f"^{name}"):
        pipe.process(np.array([[3, 4]]), np.zeros((1, VOCAB), np.float32))


def test_core_rejects_bad_settings_that_bypass_the_config():
    """The core checks its settings itself (any object with the config's field names reaches it
    without GenerationConfig)."""
    from types import SimpleNamespace

    from ferrogen import _core

    for settings, name in [
        ({"top_p": 2.0}, "top_p"),
        ({"top_k": -3}, "top_k"),
        ({"do_sample": True, "temperature": 0.0}, "temperature"),
        ({"repetition_penalty": float("nan")}, "repetition_penalty"),
        ({"bad_words_ids": [[1], []]}, "bad_words_ids"),
        ({"bad_words_ids": "oops"}, "bad_words_ids"),
        ({"sequence_bias": {(): 1.0}}, "sequence_bias"),
        ({"min_p": 1.5}, "min_p"),
        ({"epsilon_cutoff": 1.0}, "epsilon_cutoff"),
    ]:
        with pytest.raises(ferrogen.InvalidArgumentError, match=f"^{name}"):
            _core.LogitsPipeline(_core.GenerationSettings(SimpleNamespace(**settings)), 0, 1)
    with pytest.raises(ferrogen.InvalidArgumentError, match="^min_tokens_to_keep"):
        _core.LogitsPipeline(_core.GenerationSettings(SimpleNamespace()), 0, 0)


def test_pipeline_accepts_torch_and_numpy_and_works_in_place():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    pipe = ferrogen.LogitsPipeline(do_sample=True, top_k=2, prompt_length=1)
    out = pipe.process(torch.tensor([[1]]), logits)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert torch.equal(out, torch.tensor([[-float("inf"), -float("inf"), 2.0, 3.0]]))
    assert logits[0, 0] == 0.0, "not in place by default"
    pipe.process(torch.tensor([[1]]), logits, inplace=True)
    assert torch.equal(logits, out)
    arr = np.array([[0.0, 1.0, 2.0, 3.0]], np.float32)
    pipe.process([[1]], arr, inplace=True)
    assert np.array_equal(arr, out.numpy())
    half = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float16)
    out = pipe(torch.tensor([1]), half)
    assert out.dtype == torch.float16 and out.shape == (4,)
    with pytest.raises(ferrogen.ShapeError):
        pipe.process(torch.tensor([[1], [2]]), logits)


LONG_ROW_WARPERS = {
    "top_p": dict(top_p=0.9),
    "top_p_small": dict(top_p=0.2),
    "typical": dict(typical_p=0.9),
    "min_p": dict(min_p=0.1),
    "epsilon": dict(epsilon_cutoff=3e-5),
    "eta": dict(eta_cutoff=3e-4),
    "top_k+top_p": dict(top_k=100, top_p=0.8, temperature=0.7),
    "top_p+typical+min_p": dict(top_p=0.95, typical_p=0.9, min_p=0.01),
}


@pytest.mark.parametrize("name", sorted(LONG_ROW_WARPERS))
def test_warpers_on_long_rows_match_transformers(gpt2, name):
    """A vocabulary of 50k takes the dense (no candidate list) paths of the warpers."""
    fields = {"do_sample": True, **LONG_ROW_WARPERS[name]}
    ids, mask = history(2, 4, 0, seed=1)
    procs = hf_list(gpt2, 4, **{"top_k": None, **fields})
    pipe = ferrogen.LogitsPipeline(prompt_length=4, **{"top_k": 0, **fields})
    for case, logits in logits_cases(2, 50_257, seed=7).items():
        if case not in ("normal", "ties", "half_neg_inf"):
            continue  # the other cases are covered at small vocabularies
        assert_same_scores(pipe.process(ids, logits), run_hf(procs, ids, logits), f"{name} {case}")
