"""Greedy decoding is token-identical to transformers' generate, scores within float tolerance."""

from __future__ import annotations

import pytest
import torch

import ferrogen
from conftest import hf_generate, left_padded_batch

OUTPUTS = dict(return_dict_in_generate=True, output_scores=True, output_logits=True)


def assert_same(ours, theirs):
    assert torch.equal(ours.sequences, theirs.sequences), (ours.sequences, theirs.sequences)
    assert len(ours.scores) == len(theirs.scores)
    for a, b in zip(ours.scores, theirs.scores):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, equal_nan=True)
    for a, b in zip(ours.logits, theirs.logits):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lengths", [(6,), (5, 3, 7, 1)], ids=["batch1", "padded4"])
def test_greedy_matches_transformers(any_model, lengths):
    ids, mask = left_padded_batch(lengths)
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=0, **OUTPUTS)
    theirs = hf_generate(any_model, ids, mask, **kwargs)
    ours = ferrogen.generate(any_model, input_ids=ids, attention_mask=mask, **kwargs)
    assert_same(ours, theirs)


def first_new(model, ids):
    """Index of the first generated token in ``sequences``."""
    return 1 if model.config.is_encoder_decoder else ids.shape[1]


def test_eos_mid_batch_pads_finished_rows(any_model):
    ids, mask = left_padded_batch((5, 3, 7, 1))
    free = hf_generate(any_model, ids, mask, max_new_tokens=10, do_sample=False, pad_token_id=0)
    start = first_new(any_model, ids)
    # Make a token that row 1 produced early (not the pad id) the EOS, so it stops mid-batch.
    eos = next(int(t) for t in free[1, start + 2 :] if int(t) != 0)
    kwargs = dict(max_new_tokens=10, do_sample=False, pad_token_id=0, eos_token_id=eos, **OUTPUTS)
    theirs = hf_generate(any_model, ids, mask, **kwargs)
    ours = ferrogen.generate(any_model, input_ids=ids, attention_mask=mask, **kwargs)
    assert_same(ours, theirs)
    assert ours.finish_reasons[1] == "eos"
    row = ours.sequences[1].tolist()
    after = row[row.index(eos, start) + 1 :]
    assert after and all(t == 0 for t in after), "rows pad after their EOS"


def test_min_new_tokens_delays_eos(any_model):
    ids, mask = left_padded_batch((4, 2))
    free = hf_generate(any_model, ids, mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    eos = int(free[0, first_new(any_model, ids)])  # the very first token of row 0 becomes EOS
    kwargs = dict(max_new_tokens=6, min_new_tokens=3, do_sample=False, pad_token_id=0, eos_token_id=eos, **OUTPUTS)
    theirs = hf_generate(any_model, ids, mask, **kwargs)
    ours = ferrogen.generate(any_model, input_ids=ids, attention_mask=mask, **kwargs)
    assert_same(ours, theirs)
    assert torch.isinf(ours.scores[0][:, eos]).all()


def test_eos_list_and_max_length(gpt2):
    ids, mask = left_padded_batch((5, 3))
    free = hf_generate(gpt2, ids, mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
    eos = [int(free[0, -3]), int(free[1, -5])]
    kwargs = dict(max_length=12, do_sample=False, pad_token_id=0, eos_token_id=eos, **OUTPUTS)
    assert_same(ferrogen.generate(gpt2, input_ids=ids, attention_mask=mask, **kwargs), hf_generate(gpt2, ids, mask, **kwargs))


def test_returns_tensor_without_return_dict(gpt2):
    ids, mask = left_padded_batch((4,))
    out = ferrogen.generate(gpt2, input_ids=ids, attention_mask=mask, max_new_tokens=5)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 9)
    assert torch.equal(out, hf_generate(gpt2, ids, mask, max_new_tokens=5, do_sample=False))


def test_plain_torch_module_matches_cached_model(gpt2):
    """A bare module returning logits (no cache) gives the same greedy tokens."""

    class Bare(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids):
            return self.inner(input_ids=input_ids).logits

    ids, _ = left_padded_batch((5,))
    ours = ferrogen.generate(Bare(gpt2), input_ids=ids, max_new_tokens=6, eos_token_id=2, pad_token_id=0)
    assert torch.equal(ours, hf_generate(gpt2, ids, None, max_new_tokens=6, do_sample=False, pad_token_id=0))


def test_config_object_and_override_do_not_mutate(gpt2):
    cfg = ferrogen.GenerationConfig(max_new_tokens=3)
    ids, mask = left_padded_batch((4,))
    out = ferrogen.generate(gpt2, input_ids=ids, attention_mask=mask, generation_config=cfg, max_new_tokens=5)
    assert out.shape[1] == 9 and cfg.max_new_tokens == 3


def test_bfloat16_model_logits_upcast_once(gpt2):
    import copy

    half = copy.deepcopy(gpt2).to(torch.bfloat16)
    ids, mask = left_padded_batch((5, 3))
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, **OUTPUTS)
    ours = ferrogen.generate(half, input_ids=ids, attention_mask=mask, **kwargs)
    assert_same(ours, hf_generate(half, ids, mask, **kwargs))
    assert ours.scores[0].dtype == torch.float32


def test_borrowed_logits_are_ordinary_tensors(gpt2):
    """CPU logits are taken from the model's head without a copy; a user processor may still
    update them in place, and the returned scores are not inference tensors."""
    seen = []

    def in_place(input_ids, scores):
        scores[:, 0] = -float("inf")  # would raise on an inference tensor
        seen.append(scores.is_inference())
        return scores

    ids = torch.tensor([[5, 6, 7]])
    out = ferrogen.generate(gpt2, input_ids=ids, max_new_tokens=3, do_sample=False, pad_token_id=0,
                            logits_processor=[in_place], return_dict_in_generate=True, output_scores=True)
    assert seen == [False] * 3
    assert not any(s.is_inference() for s in out.scores)
    assert all(s[0, 0] == -float("inf") for s in out.scores)
