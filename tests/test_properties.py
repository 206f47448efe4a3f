"""Property tests of the public API (issue 10): random valid GenerationConfigs on a tiny
random GPT-2 always return outputs that satisfy the contract, and random invalid ones
always raise ValueError/TypeError naming the field before the model runs.

The contract checked on every valid example:
- ``sequences`` is ``[batch * num_return_sequences, L]`` with the prompt unchanged and
  ``prompt_len < L <= prompt_len + max_new_tokens``;
- a row that contains EOS has only pad tokens after its first EOS, and that EOS comes
  after at least ``min_new_tokens`` tokens; its finish reason is ``"eos"``;
- a row with finish reason ``"length"`` has no EOS and is ``max_new_tokens`` long;
- beam modes: ``sequences_scores`` is sorted best first within each batch entry;
- constrained beam search: a row reported as satisfying its constraints contains every
  forced phrase (one alternative of every disjunctive constraint), and with room enough
  every row does.

Runs are derandomized (fixed examples, CI-stable); ``FERROGEN_PROPERTY_EXAMPLES`` scales them.
"""

from __future__ import annotations

import math
import os
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ferrogen
from conftest import VOCAB, left_padded_batch

EXAMPLES = int(os.environ.get("FERROGEN_PROPERTY_EXAMPLES", "150"))
PAD = 0
SETTINGS = dict(
    max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
MODES = ["greedy", "sample", "beam", "beam_sample", "group_beam", "constrained", "contrastive"]
BEAM_MODES = {"beam", "beam_sample", "group_beam", "constrained"}

tokens = st.integers(3, VOCAB - 1)


@st.composite
def valid_case(draw):
    mode = draw(st.sampled_from(MODES))
    lengths = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    max_new = draw(st.integers(1, 6))
    eos = draw(st.lists(tokens, min_size=1, max_size=2, unique=True))
    kw = dict(
        max_new_tokens=max_new,
        min_new_tokens=draw(st.integers(0, max_new)),
        eos_token_id=eos if len(eos) > 1 else eos[0],
        pad_token_id=PAD,
    )
    # a bias on EOS makes rows end early often enough to exercise padding
    bias = draw(st.sampled_from([0.0, 0.0, 3.0, 8.0]))
    if bias:
        kw["sequence_bias"] = {(eos[0],): bias}
    if draw(st.booleans()):
        kw["repetition_penalty"] = draw(st.floats(0.5, 2.0))
    if draw(st.booleans()):
        kw["no_repeat_ngram_size"] = draw(st.integers(1, 3))
    if mode in ("sample", "beam_sample"):
        kw.update(do_sample=True, seed=draw(st.integers(0, 2**32)),
                  temperature=draw(st.floats(0.2, 2.0)), top_k=draw(st.sampled_from([0, 1, 5, 50])),
                  top_p=draw(st.floats(0.05, 1.0)))
    if mode in BEAM_MODES:
        beams = draw(st.integers(2, 4))
        kw.update(num_beams=beams, output_scores=True, length_penalty=draw(st.floats(-1.0, 2.0)),
                  early_stopping=draw(st.sampled_from([True, False, "never"])))
    if mode == "group_beam":
        groups = draw(st.sampled_from([g for g in (2, 3, 4) if g <= kw["num_beams"]]))
        kw.update(num_beams=groups * draw(st.integers(1, 2)), num_beam_groups=groups,
                  diversity_penalty=draw(st.floats(0.0, 2.0)))
    if mode in BEAM_MODES:
        kw["num_return_sequences"] = draw(st.integers(1, kw["num_beams"]))
    if mode == "constrained":
        # forced tokens avoid EOS and the pad so "present" is unambiguous
        word = st.integers(3, VOCAB - 1).filter(lambda t: t not in eos)
        phrase = st.lists(word, min_size=1, max_size=2)
        constraint = st.one_of(phrase, st.lists(st.lists(word, min_size=1, max_size=1), min_size=2, max_size=3,
                                                unique_by=lambda p: p[0]))
        kw["force_words_ids"] = draw(st.lists(constraint, min_size=1, max_size=2))
        kw.pop("no_repeat_ngram_size", None)  # could make a forced phrase impossible
        kw["max_new_tokens"] = max_new + 4
        kw["min_new_tokens"] = min(kw["min_new_tokens"], kw["max_new_tokens"])
    if mode == "contrastive":
        kw.update(penalty_alpha=draw(st.floats(0.1, 0.9)), top_k=draw(st.integers(2, 4)))
        kw.pop("no_repeat_ngram_size", None)
    seed = draw(st.integers(0, 1000))
    return mode, lengths, seed, kw


def _first(row: list[int], eos: set[int]) -> int | None:
    return next((i for i, t in enumerate(row) if t in eos), None)


def _forced(constraint) -> list[list[int]]:
    return constraint if isinstance(constraint[0], list) else [constraint]


def _contains(seq: list[int], phrase: list[int]) -> bool:
    return any(seq[i:i + len(phrase)] == phrase for i in range(len(seq) - len(phrase) + 1))


@settings(**SETTINGS)
@given(case=valid_case())
def test_valid_configs_satisfy_the_output_contract(gpt2, case):
    mode, lengths, seed, kw = case
    ids, mask = left_padded_batch(lengths, pad_id=PAD, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = ferrogen.generate(gpt2, input_ids=ids, attention_mask=mask, return_dict_in_generate=True, **kw)
    nrs = kw.get("num_return_sequences", 1)
    rows, width = out.sequences.shape
    prompt_len, max_new = ids.shape[1], kw["max_new_tokens"]
    assert rows == len(lengths) * nrs
    assert prompt_len < width <= prompt_len + max_new
    assert torch.equal(out.sequences[:, :prompt_len], ids.repeat_interleave(nrs, dim=0))
    assert len(out.finish_reasons) == rows
    eos = {kw["eos_token_id"]} if isinstance(kw["eos_token_id"], int) else set(kw["eos_token_id"])
    for r in range(rows):
        gen = out.sequences[r, prompt_len:].tolist()
        reason = out.finish_reasons[r]
        first = _first(gen, eos)
        if first is not None:
            assert all(t == PAD for t in gen[first + 1:]), f"row {r}: tokens after EOS: {gen}"
            assert first + 1 >= kw["min_new_tokens"], f"row {r}: EOS before min_new_tokens: {gen}"
            assert reason in ("eos", "constraints_unmet"), (reason, gen)
        else:
            assert reason in ("length", "constraints_unmet"), (reason, gen)
        if reason == "length":
            assert first is None and len(gen) == max_new, (reason, gen)
    if mode in BEAM_MODES:
        scores = out.sequences_scores.view(len(lengths), nrs).tolist()
        # constrained: rows that satisfy every constraint come first, each part best first
        ok = out.constraints_satisfied or [True] * rows
        for b, row_scores in enumerate(scores):
            keys = [(ok[b * nrs + j], x) for j, x in enumerate(row_scores)]
            assert keys == sorted(keys, reverse=True), keys
    if mode == "constrained":
        assert len(out.constraints_satisfied) == rows
        for r, ok in enumerate(out.constraints_satisfied):
            seq = out.sequences[r].tolist()
            present = all(any(_contains(seq, p) for p in _forced(c)) for c in kw["force_words_ids"])
            if ok:
                assert present, (r, seq, kw["force_words_ids"])
            if r % nrs == 0:
                # 4 tokens beyond the longest forced text (<= 4 tokens): the best row makes it
                assert ok, f"row {r} misses a satisfiable constraint: {seq} {kw['force_words_ids']}"


# --------------------------------------------------------------------------- invalid configs

BEAMS = dict(num_beams=4)
GROUPS = dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5)
bad_prob = st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0, exclude_min=True), st.just(math.nan))


def _float_str():
    return st.text(min_size=1, max_size=4)


# field -> strategy of (kwargs that make exactly that field invalid)
INVALID = {
    "max_new_tokens": st.one_of(st.integers(max_value=-1).map(lambda v: dict(max_new_tokens=v)),
                                st.floats(0, 10).map(lambda v: dict(max_new_tokens=v)),
                                _float_str().map(lambda v: dict(max_new_tokens=v))),
    "min_new_tokens": st.integers(max_value=-1).map(lambda v: dict(min_new_tokens=v)),
    "num_beams": st.one_of(st.integers(max_value=0).map(lambda v: dict(num_beams=v)),
                           st.just(dict(num_beams=True)), st.floats(1, 5).map(lambda v: dict(num_beams=v))),
    "num_return_sequences": st.one_of(
        st.integers(2, 8).map(lambda v: dict(num_beams=1, num_return_sequences=v)),
        st.integers(1, 4).map(lambda b: dict(num_beams=b, num_return_sequences=b + 1)),
        st.integers(max_value=0).map(lambda v: dict(num_return_sequences=v))),
    "num_beam_groups": st.one_of(
        st.integers(max_value=0).map(lambda v: dict(num_beam_groups=v)),
        st.sampled_from([(4, 3), (6, 4), (5, 2), (3, 2)]).map(
            lambda bg: dict(num_beams=bg[0], num_beam_groups=bg[1], diversity_penalty=0.5)),
        st.just(dict(GROUPS, do_sample=True))),
    "diversity_penalty": st.one_of(st.floats(max_value=0.0, exclude_max=True).map(lambda v: dict(GROUPS, diversity_penalty=v)),
                                   st.floats(0.1, 3.0).map(lambda v: dict(BEAMS, diversity_penalty=v))),
    "temperature": st.one_of(st.floats(max_value=0.0).map(lambda v: dict(do_sample=True, temperature=v)),
                             st.just(dict(temperature=math.nan)),
                             _float_str().map(lambda v: dict(temperature=v))),
    "top_p": bad_prob.map(lambda v: dict(do_sample=True, top_p=v)),
    "typical_p": bad_prob.map(lambda v: dict(do_sample=True, typical_p=v)),
    "min_p": st.one_of(st.floats(max_value=0.0, exclude_max=True), st.floats(min_value=1.0, exclude_min=True)).map(
        lambda v: dict(do_sample=True, min_p=v)),
    "top_k": st.integers(max_value=-1).map(lambda v: dict(do_sample=True, top_k=v)),
    "repetition_penalty": st.floats(max_value=0.0).map(lambda v: dict(repetition_penalty=v)),
    "no_repeat_ngram_size": st.integers(max_value=-1).map(lambda v: dict(no_repeat_ngram_size=v)),
    "length_penalty": _float_str().map(lambda v: dict(BEAMS, length_penalty=v)),
    "early_stopping": st.one_of(st.text(max_size=6).filter(lambda s: s.lower() not in ("never", "true", "false")),
                                     st.integers(2, 9)).map(
        lambda v: dict(BEAMS, early_stopping=v)),
    "eos_token_id": st.one_of(st.integers(max_value=-1).map(lambda v: dict(eos_token_id=v)),
                              st.just(dict(eos_token_id=[])), _float_str().map(lambda v: dict(eos_token_id=v))),
    "pad_token_id": st.integers(max_value=-1).map(lambda v: dict(pad_token_id=v)),
    "bad_words_ids": st.one_of(st.just(dict(bad_words_ids=[[1], []])),
                               st.integers(max_value=-1).map(lambda v: dict(bad_words_ids=[[v]])),
                               st.lists(tokens, min_size=1, max_size=3).map(lambda w: dict(bad_words_ids=w))),
    "suppress_tokens": st.one_of(st.integers(3, 50).map(lambda v: dict(suppress_tokens=v)),
                                 st.just(dict(suppress_tokens=[1, "a"]))),
    "force_words_ids": st.one_of(
        st.just(dict(BEAMS, force_words_ids=[])),
        st.just(dict(BEAMS, force_words_ids=[[]])),
        st.integers(max_value=-1).map(lambda v: dict(BEAMS, force_words_ids=[[5, v]])),
        st.integers(VOCAB, VOCAB + 100).map(lambda v: dict(BEAMS, force_words_ids=[[5, v]])),
        st.just(dict(BEAMS, force_words_ids=[[5]], do_sample=True)),
        st.just(dict(force_words_ids=[[5]], num_beams=1))),
    "penalty_alpha": st.one_of(st.floats(min_value=1.0, exclude_min=True).map(lambda v: dict(penalty_alpha=v, top_k=4)),
                               st.just(dict(penalty_alpha=0.6, top_k=4, do_sample=True))),
    "max_time": st.floats(max_value=0.0).map(lambda v: dict(max_time=v)),
    "seed": st.one_of(st.integers(max_value=-1), st.integers(min_value=2**64)).map(lambda v: dict(seed=v)),
}


class ModelRan(Exception):
    """Raised by the forward hook: the model must not run for an invalid config."""


@pytest.fixture
def raising_gpt2(gpt2):
    def hook(*args):
        raise ModelRan("the model ran")

    handle = gpt2.register_forward_pre_hook(hook)
    yield gpt2
    handle.remove()


@st.composite
def invalid_case(draw):
    field = draw(st.sampled_from(sorted(INVALID)))
    bad = draw(INVALID[field])
    extra = draw(st.fixed_dictionaries({}, optional={"max_new_tokens": st.integers(1, 5),
                                                      "seed": st.integers(0, 100)}))
    extra = {k: v for k, v in extra.items() if k not in bad and k != field}
    return field, {**extra, **bad}


@settings(**{**SETTINGS, "max_examples": EXAMPLES * 4})
@given(case=invalid_case())
def test_invalid_configs_name_the_field_before_the_model_runs(raising_gpt2, case):
    field, kwargs = case
    ids, mask = left_padded_batch((3, 2), pad_id=PAD)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises((ValueError, TypeError)) as excinfo:
            ferrogen.generate(raising_gpt2, input_ids=ids, attention_mask=mask, **{"pad_token_id": PAD, **kwargs})
    message = str(excinfo.value)
    assert message.startswith(f"{field}:"), f"{kwargs} -> {message!r}"


def test_the_raising_fixture_really_raises(raising_gpt2):
    """Guards the test above: with a valid config the hook fires."""
    ids, mask = left_padded_batch((3,), pad_id=PAD)
    with pytest.raises(ModelRan):
        ferrogen.generate(raising_gpt2, input_ids=ids, attention_mask=mask, max_new_tokens=2, pad_token_id=PAD)
