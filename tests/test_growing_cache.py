"""KV cache layers that grow into spare room (ferrogen/growing_cache.py): the attention reads
exactly what transformers' ``torch.cat`` layers give it, through every order of appends, crops,
row selections and trims; appends in room copy nothing; generate's logits stay bit-identical."""

from __future__ import annotations

import contextlib

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.cache_utils import DynamicCache, DynamicLayer

import ferrogen
from conftest import hf_generate, left_padded_batch
from ferrogen import decoder_adapter, growing_cache, seq2seq_adapter
from ferrogen.growing_cache import GrowingLayer, growing, release, select_rows

ROWS = 4
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("update"), st.integers(1, 70)),
        st.tuples(st.just("crop"), st.integers(1, 3)),
        st.tuples(st.just("trim"), st.integers(1, 3)),
        st.tuples(st.just("select"), st.lists(st.integers(0, ROWS - 1), min_size=1, max_size=ROWS)),
    ),
    max_size=14,
)


def _one_layer() -> DynamicCache:
    """A cache whose layer exists before the first update (as the adapters' caches, built from
    the model's config, have theirs), so the growth applies from the first append."""
    cache = DynamicCache()
    cache.layers.append(DynamicLayer())
    return cache


def _new(g: torch.Generator, rows: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(rows, 2, n, 4, generator=g), torch.randn(rows, 2, n, 4, generator=g)


@settings(max_examples=80, deadline=None)
@given(ops=OPS)
def test_growing_layers_read_what_cat_layers_read(ops):
    g = torch.Generator().manual_seed(0)
    eager, ours = DynamicCache(), _one_layer()
    first = _new(g, ROWS, 3)
    eager.update(*first, 0)
    with growing(ours):
        ours.update(*first, 0)
    for op, arg in ops:
        rows = eager.layers[0].keys.shape[0]
        if op == "update":
            new = _new(g, rows, arg)
            with growing(ours):
                got = ours.update(*new, 0)
                assert type(ours.layers[0]) is GrowingLayer
            for mine, theirs in zip(got, eager.update(*new, 0)):
                assert torch.equal(mine, theirs)
        elif op == "select":
            index = torch.tensor([i % rows for i in arg])
            eager.reorder_cache(index)
            assert select_rows(ours, index)
        elif eager.get_seq_length() > arg:
            for cache in (eager, ours):
                layer = cache.layers[0]
                if op == "crop":
                    cache.crop(-arg)
                else:  # what cache_merge.trim_layers does with leading padding
                    layer.keys, layer.values = layer.keys[:, :, arg:], layer.values[:, :, arg:]
        assert type(ours.layers[0]) is DynamicLayer  # outside a forward call: transformers' type
        assert torch.equal(ours.layers[0].keys, eager.layers[0].keys)
        assert torch.equal(ours.layers[0].values, eager.layers[0].values)
    release(ours)
    layer = ours.layers[0]
    assert "room_keys" not in vars(layer) and "room_values" not in vars(layer)
    for tensor, theirs in ((layer.keys, eager.layers[0].keys), (layer.values, eager.layers[0].values)):
        # compact: no buffer with room behind them (a crop keeps its storage, as transformers' does)
        size = max(tensor.numel() * tensor.element_size(), theirs.untyped_storage().nbytes())
        assert tensor.untyped_storage().nbytes() <= size
    assert torch.equal(layer.keys, eager.layers[0].keys)


def test_appends_in_room_copy_nothing():
    """The point of the module: a step writes one position into the buffer it already has."""
    g = torch.Generator().manual_seed(1)
    cache = _one_layer()
    with growing(cache):
        cache.update(*_new(g, 2, 5), 0)
    buffer = cache.layers[0].room_keys
    assert buffer is not None and buffer.shape[-2] == 5 + growing_cache.MIN_ROOM
    for _ in range(growing_cache.MIN_ROOM):
        with growing(cache):
            cache.update(*_new(g, 2, 1), 0)
        assert cache.layers[0].room_keys is buffer
    with growing(cache):  # full: one copy into a larger buffer
        cache.update(*_new(g, 2, 1), 0)
    assert cache.layers[0].room_keys is not buffer
    assert cache.get_seq_length() == 5 + growing_cache.MIN_ROOM + 1


def test_other_layers_are_left_alone():
    from transformers.cache_utils import DynamicSlidingWindowLayer

    layer = DynamicSlidingWindowLayer(sliding_window=4)
    cache = DynamicCache()
    cache.layers = [layer]
    with growing(cache):
        assert type(cache.layers[0]) is DynamicSlidingWindowLayer
    assert not select_rows(cache, torch.tensor([0]))


def _counting(monkeypatch) -> list[int]:
    """Counts the appends of growing layers (so a test knows they ran)."""
    appends: list[int] = []
    original = GrowingLayer.update

    def counted(self, *args, **kwargs):
        appends.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GrowingLayer, "update", counted)
    return appends


def _released(out) -> bool:
    layers = getattr(out.past_key_values, "self_attention_cache", out.past_key_values).layers
    return all(type(layer) is DynamicLayer and "room_keys" not in vars(layer) for layer in layers)


def test_greedy_logits_bit_identical_to_transformers(any_model, monkeypatch):
    """Greedy through growing layers: every step's logits equal transformers' bit for bit."""
    appends = _counting(monkeypatch)
    ids, mask = left_padded_batch((5, 3, 7, 1))
    kwargs = dict(max_new_tokens=12, output_logits=True, return_dict_in_generate=True, pad_token_id=0,
                  eos_token_id=None, do_sample=False)
    theirs = hf_generate(any_model, ids, mask, **kwargs)
    ours = ferrogen.generate(any_model, input_ids=ids, attention_mask=mask, **kwargs)
    assert appends
    assert torch.equal(ours.sequences, theirs.sequences)
    for mine, ref in zip(ours.logits, theirs.logits, strict=True):
        assert torch.equal(mine, ref)
    assert _released(ours)


def test_sampling_same_with_and_without_growth(any_model, monkeypatch):
    """Seeded sampling (ferrogen's own draws): the same tokens and logits, bit for bit, as with
    transformers' ``torch.cat`` layers (growth switched off)."""
    ids, mask = left_padded_batch((5, 3, 7, 1))
    kwargs = dict(max_new_tokens=12, output_logits=True, return_dict_in_generate=True, pad_token_id=0,
                  eos_token_id=None, do_sample=True, top_k=20, seed=5)
    appends = _counting(monkeypatch)
    ours = ferrogen.generate(any_model, input_ids=ids, attention_mask=mask, **kwargs)
    assert appends
    for adapter in (decoder_adapter, seq2seq_adapter):
        monkeypatch.setattr(adapter, "growing", lambda cache: contextlib.nullcontext())
        monkeypatch.setattr(adapter, "select_rows", lambda cache, rows: False)
    appends.clear()
    plain = ferrogen.generate(any_model, input_ids=ids, attention_mask=mask, **kwargs)
    assert not appends
    assert torch.equal(ours.sequences, plain.sequences)
    for mine, ref in zip(ours.logits, plain.logits, strict=True):
        assert torch.equal(mine, ref)
