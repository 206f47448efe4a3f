"""The beam reorder folded into the next append (ferrogen/folded_reorder.py) gives the attention
exactly the tensors an eager ``index_select`` reorder gives, in every order of operations, and
beam search gives bit-identical results with and without it."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.cache_utils import DynamicCache, DynamicLayer

import ferrogen
from conftest import left_padded_batch
from ferrogen import decoder_adapter, seq2seq_adapter
from ferrogen.folded_reorder import FoldedReorderLayer, fold_reorder, settle

ROWS = 4
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("reorder"), st.lists(st.integers(0, ROWS - 1), min_size=ROWS, max_size=ROWS)),
        st.tuples(st.just("update"), st.integers(1, 3)),
        st.tuples(st.just("crop"), st.integers(1, 2)),
    ),
    max_size=12,
)


def _cache_pair():
    eager, folded = DynamicCache(), DynamicCache()
    g = torch.Generator().manual_seed(0)
    first = torch.randn(ROWS, 2, 3, 4, generator=g), torch.randn(ROWS, 2, 3, 4, generator=g)
    eager.update(*first, 0)
    folded.update(*first, 0)
    return eager, folded, g


@settings(max_examples=60, deadline=None)
@given(ops=OPS)
def test_folded_layers_read_what_eager_layers_read(ops):
    eager, folded, g = _cache_pair()
    for op, arg in ops:
        if op == "reorder":
            rows = torch.tensor(arg)
            eager.reorder_cache(rows)
            assert fold_reorder(folded, rows)
            assert type(folded.layers[0]) is FoldedReorderLayer
        elif op == "update":
            new = torch.randn(ROWS, 2, arg, 4, generator=g), torch.randn(ROWS, 2, arg, 4, generator=g)
            for ours, theirs in zip(folded.update(*new, 0), eager.update(*new, 0)):
                assert torch.equal(ours, theirs)
        elif eager.get_seq_length() > arg:
            eager.crop(-arg)
            folded.crop(-arg)
    settle(folded)
    assert type(folded.layers[0]) is DynamicLayer and "pending" not in vars(folded.layers[0])
    assert torch.equal(folded.layers[0].keys, eager.layers[0].keys)
    assert torch.equal(folded.layers[0].values, eager.layers[0].values)


def test_only_plain_dynamic_caches_fold():
    from transformers.cache_utils import DynamicSlidingWindowLayer

    cache = DynamicCache()
    cache.layers.append(DynamicSlidingWindowLayer(sliding_window=4))
    assert not fold_reorder(cache, torch.arange(2))
    assert not fold_reorder(object(), torch.arange(2))


@pytest.mark.parametrize("name", ["gpt2", "neox", "t5"])
@pytest.mark.parametrize("kwargs", [dict(num_beams=4, num_return_sequences=2),
                                    dict(num_beams=3, do_sample=True, seed=4),
                                    dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5)])
def test_beam_search_is_bit_identical_with_and_without_folding(request, monkeypatch, name, kwargs):
    model = request.getfixturevalue(name)
    ids, mask = left_padded_batch((5, 3, 7))
    run = dict(input_ids=ids, attention_mask=mask, pad_token_id=0, max_new_tokens=8,
               return_dict_in_generate=True, output_scores=True, **kwargs)
    folds: list[bool] = []
    real = fold_reorder

    def spy(cache, rows):
        folds.append(real(cache, rows))
        return folds[-1]

    for adapter in (decoder_adapter, seq2seq_adapter):
        monkeypatch.setattr(adapter, "fold_reorder", spy)
    ours = ferrogen.generate(model, **run)
    assert folds and all(folds)
    for adapter in (decoder_adapter, seq2seq_adapter):
        monkeypatch.setattr(adapter, "folds", lambda model: False)
    eager = ferrogen.generate(model, **run)
    assert torch.equal(ours.sequences, eager.sequences)
    torch.testing.assert_close(ours.sequences_scores, eager.sequences_scores, rtol=0, atol=0)
    for a, b in zip(ours.scores, eager.scores, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
