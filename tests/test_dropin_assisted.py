"""Assisted decoding and prompt lookup collect ``output_attentions`` / ``output_hidden_states``
natively (a test_dropin module: tests/fallback_counter.py fails any call ``ferrogen.enable`` hands
to transformers), on tiny random GPT-2 / Llama and T5 / BART (tests/architectures.py).

Greedy assisted decoding gives greedy decoding's tokens, and its collected outputs are greedy's:
per generated token, the model's per-layer tuple of the query that produced it, shapes identical and
values close to transformers 5.x's greedy search, for a left-padded batch too (rows shifted against
each other, GPT-2 / Llama / T5, or in lock step, BART). transformers' own ``_assisted_decoding``
refuses a batch and, for one row, splits the cross attentions along the head axis and gives the
first round's later tokens the prompt's rows (docs/transformers-differences.md;
test_transformers_assisted_split_differs_from_its_greedy pins that down).
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch
from architectures import build, padded_batch

import ferrogen
from ferrogen import FallbackWarning

MODELS = ["gpt2", "llama", "t5", "bart"]
FLAGS = dict(return_dict_in_generate=True, output_attentions=True, output_hidden_states=True, pad_token_id=0)
COLLECTED = ("encoder_attentions", "encoder_hidden_states", "decoder_attentions", "cross_attentions",
             "decoder_hidden_states", "attentions", "hidden_states")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=MODELS)
def tiny(request):
    model = build(request.param)
    model.set_attn_implementation("eager")  # sdpa returns no attention weights
    assistant = build(request.param, std=0.3)
    ids, mask = padded_batch(model.config.is_encoder_decoder)
    return model, assistant, ids, mask


def _drafts(kind: str, model: Any, assistant: Any) -> dict[str, Any]:
    return {"assistant": dict(assistant_model=assistant), "itself": dict(assistant_model=copy.deepcopy(model)),
            "lookup": dict(prompt_lookup_num_tokens=2)}[kind]


def hf(model: Any, ids: Any, mask: Any, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.generate(ids, attention_mask=mask, **kwargs)


def enabled(model: Any, ids: Any, mask: Any, **kwargs: Any) -> Any:
    with ferrogen.patched(model), warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        return model.generate(ids, attention_mask=mask, **kwargs)


def assert_same_outputs(got: Any, expected: Any, rows: Any = slice(None)) -> None:
    names = [name for name in COLLECTED if name in expected]
    assert names and [n for n in COLLECTED if n in got] == names
    for name in names:
        ours, theirs = got[name], expected[name]
        assert len(ours) == len(theirs), name
        if "encoder" in name:
            ours, theirs = (ours,), (theirs,)
        for step, (a, b) in enumerate(zip(ours, theirs)):
            assert len(a) == len(b), (name, step)
            for layer, (x, y) in enumerate(zip(a, b)):
                assert x.shape == y.shape, (name, step, layer, x.shape, y.shape)
                torch.testing.assert_close(x[rows], y[rows], rtol=1e-5, atol=1e-5, msg=f"{name}[{step}][{layer}]")


@pytest.mark.parametrize("drafts", ["assistant", "itself", "lookup"])
def test_outputs_are_greedy_outputs(tiny, drafts):
    """A left-padded batch of three (ferrogen runs batches; transformers only one row)."""
    model, assistant, ids, mask = tiny
    got = enabled(model, ids, mask, max_new_tokens=8, **FLAGS, **_drafts(drafts, model, assistant))
    expected = hf(model, ids, mask, max_new_tokens=8, **FLAGS)
    assert type(got) is type(expected)
    assert torch.equal(got.sequences, expected.sequences)
    assert_same_outputs(got, expected)


def test_one_row_has_transformers_assisted_keys(tiny):
    model, assistant, ids, mask = tiny
    kwargs = dict(max_new_tokens=6, assistant_model=assistant, **FLAGS)
    got, expected = enabled(model, ids[2:], mask[2:], **kwargs), hf(model, ids[2:], mask[2:], **kwargs)
    assert type(got) is type(expected)
    assert list(got.keys()) == list(expected.keys())
    assert torch.equal(got.sequences, expected.sequences)
    assert_same_outputs(got, hf(model, ids[2:], mask[2:], max_new_tokens=6, **FLAGS))


def test_sampling_outputs_are_those_of_its_tokens(tiny):
    """Assisted sampling draws ferrogen's numbers: transformers' greedy search forced onto its
    tokens gives the outputs to meet."""
    model, assistant, ids, mask = tiny
    got = enabled(model, ids, mask, max_new_tokens=6, do_sample=True, top_k=5, assistant_model=assistant, **FLAGS)
    start = 1 if model.config.is_encoder_decoder else ids.shape[1]
    forced = got.sequences[:, start:]
    expected = hf(model, ids, mask, max_new_tokens=6, **FLAGS,
                  prefix_allowed_tokens_fn=lambda row, seq: [int(forced[row, seq.shape[0] - start])])
    assert torch.equal(got.sequences, expected.sequences)
    assert_same_outputs(got, expected)


def test_a_row_that_ended_has_zeros_after_its_end(tiny):
    """Greedy runs a finished row on padding; assisted decoding drops it: zeros there, the other
    rows' entries unchanged."""
    model, assistant, ids, mask = tiny
    free = hf(model, ids, mask, max_new_tokens=8, pad_token_id=0, do_sample=False)
    start = 1 if model.config.is_encoder_decoder else ids.shape[1]
    row = free[1, start:].tolist()
    at = next((k for k in range(1, 6) if row[k] not in row[:k]), None)
    if at is None:
        pytest.skip("row 1 repeats its first tokens: no token ends it mid-way")
    eos = row[at]
    ended = [r for r in range(ids.shape[0]) if eos in free[r, start:].tolist()]
    kwargs = dict(max_new_tokens=8, eos_token_id=eos, **FLAGS)
    got = enabled(model, ids, mask, assistant_model=assistant, **kwargs)
    expected = hf(model, ids, mask, **kwargs)
    assert torch.equal(got.sequences, expected.sequences)
    running = [r for r in range(ids.shape[0]) if r not in ended]
    if running:
        assert_same_outputs(got, expected, rows=running)
    name = "decoder_hidden_states" if model.config.is_encoder_decoder else "hidden_states"
    assert all(bool((step[-1][1] == 0).all()) for step in got[name][at + 1:])  # row 1 ended at step `at`
    assert all(bool((step[-1][1] != 0).any()) for step in got[name][: at + 1])
    assert len(got[name]) > at + 1


def test_transformers_assisted_split_differs_from_its_greedy():
    """Why ferrogen returns greedy's layout (docs/transformers-differences.md): transformers 5.x's
    ``_split_model_outputs`` narrows a cross attention ``[batch, heads, queries, keys]`` on axis 1
    (one head, every query of the round), and in the first round (prompt and drafts in one pass)
    takes the rows of the prompt for the accepted drafts. Fails once transformers changes that."""
    model = build("t5")
    model.set_attn_implementation("eager")
    ids, mask = padded_batch(True)
    ids, mask = ids[2:], mask[2:]
    kwargs = dict(max_new_tokens=6, **FLAGS)
    theirs = hf(model, ids, mask, assistant_model=copy.deepcopy(model), **kwargs)  # every draft accepted
    greedy = hf(model, ids, mask, **kwargs)
    assert torch.equal(theirs.sequences, greedy.sequences)
    heads = model.config.num_heads
    assert greedy.cross_attentions[1][0].shape[1] == heads and theirs.cross_attentions[1][0].shape[1] == 1
    ours = enabled(model, ids, mask, assistant_model=copy.deepcopy(model), **kwargs)
    first_round = theirs.decoder_hidden_states[1][-1]
    assert not torch.allclose(first_round, greedy.decoder_hidden_states[1][-1], atol=1e-3)
    assert_same_outputs(ours, greedy)
