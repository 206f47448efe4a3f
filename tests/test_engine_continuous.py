"""Continuous batching in the batch engine (issue 19): freed slots are refilled with waiting
prompts, merged into the running batch, and every row's result stays the one it has alone and in
a static batch, for greedy search and seeded sampling, over architectures with each kind of cache
(DynamicCache: GPT-2, Llama; EncoderDecoderCache: T5) and those that only shrink (sliding
window: Mistral; SSM state: Mamba; absolute decoder positions: BART)."""

from __future__ import annotations

import random
import warnings
from typing import Any

import pytest
import torch
from hypothesis import given, settings as hsettings, strategies as st

import ferrogen
from ferrogen.engine import generate_texts

from architectures import VOCAB, build

STOPS = list(range(3, 96, 6))
MERGING = ["gpt2", "llama", "t5"]
SHRINKING = ["mistral", "mamba", "bart"]
STRATEGIES: dict[str, dict[str, Any]] = {
    "greedy": dict(do_sample=False),
    "sample": dict(do_sample=True, seed=5, top_k=20, temperature=1.3),
    "penalties": dict(do_sample=True, seed=5, repetition_penalty=1.3, top_p=0.9),
    "stop string": dict(do_sample=True, seed=5, stop_strings=["9"]),
}


class DigitsTokenizer:
    """Token ids written as space-separated numbers: enough of a tokenizer for the engine."""

    pad_token_id, pad_token, eos_token = 0, "0", "2"
    padding_side = "right"

    def __call__(self, prompts: list[str], return_tensors: Any = None, padding: bool = False) -> dict[str, Any]:
        ids = [[int(t) for t in p.split()] for p in prompts]
        return self.pad({"input_ids": ids}) if return_tensors else {"input_ids": ids}

    def pad(self, batch: dict[str, list[list[int]]], return_tensors: str = "pt") -> dict[str, torch.Tensor]:
        rows = batch["input_ids"]
        width = max(len(r) for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            cols = slice(width - len(r), width) if self.padding_side == "left" else slice(0, len(r))
            ids[i, cols], mask[i, cols] = torch.tensor(r), 1
        return {"input_ids": ids, "attention_mask": mask}

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return " ".join(str(i) for i in ids)


@pytest.fixture(scope="module")
def generators(one_torch_thread):
    return {name: ferrogen.TextGenerator(build(name), DigitsTokenizer()) for name in MERGING + SHRINKING}


def _prompts(lengths: list[int], seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(str(rng.randrange(3, VOCAB)) for _ in range(n)) for n in lengths]


def _run(generator, prompts, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [(r.token_ids, r.finish_reason) for r in generate_texts(generator, prompts, **kwargs)]


def _alone(generator, prompt, settings):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = generator(prompt, **settings)[0]
    return result.token_ids, result.finish_reason


LENGTHS = [5, 3, 9, 2, 6, 4, 11, 7, 3, 8]


def _count_generate_calls(monkeypatch) -> list[int]:
    """Counts the engine's generate calls (the batch sizes they were called with)."""
    import sys

    module = sys.modules["ferrogen.generate"]
    calls: list[int] = []
    real = module.generate

    def counting(model, input_ids=None, **kwargs):
        calls.append(int(input_ids.shape[0]))
        return real(model, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(module, "generate", counting)
    return calls


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("name", MERGING + SHRINKING)
def test_refilled_rows_match_static_batches_and_prompts_alone(generators, name, strategy, monkeypatch):
    generator = generators[name]
    settings = dict(STRATEGIES[strategy], max_new_tokens=10, eos_token_id=STOPS, pad_token_id=0)
    prompts = _prompts(LENGTHS)
    calls = _count_generate_calls(monkeypatch)
    continuous = _run(generator, prompts, batch_size=4, refill_fraction=0.25, **settings)
    # One generate call took every prompt when rows were merged; one per batch of 4 when not.
    assert len(calls) == (1 if name in MERGING else 3)
    static = _run(generator, prompts, batch_size=4, static=True, **settings)
    assert continuous == static
    if name == "mamba" and strategy == "penalties":
        return  # left padding enters an SSM's state: static batches differ from alone there (as in transformers)
    for prompt, got in zip(prompts, continuous):
        assert got == _alone(generator, prompt, settings), prompt


def _record_encoder_widths(monkeypatch) -> list[tuple[int, int, int, set[int]]]:
    """Around every trim of an encoder-decoder adapter: (encoder width before, after, the last
    column any row uses, widths of the encoder outputs and of every cross-attention layer)."""
    from ferrogen.models import EncoderDecoderAdapter

    seen: list[tuple[int, int, int, set[int]]] = []
    real = EncoderDecoderAdapter.trim_padding

    def recording(adapter):
        before = int(adapter._encoder_mask.shape[1])
        real(adapter)
        mask, cross = adapter._encoder_mask, adapter._cache.cross_attention_cache.layers
        used = int(mask.bool().any(dim=0).nonzero().max()) + 1
        widths = {int(adapter._encoder_outputs.last_hidden_state.shape[1])}
        widths |= {int(t.shape[2]) for layer in cross for t in (layer.keys, layer.values)}
        seen.append((before, int(mask.shape[1]), used, widths))

    monkeypatch.setattr(EncoderDecoderAdapter, "trim_padding", recording)
    return seen


def test_encoder_side_shrinks_after_a_long_prompt_leaves(generators, monkeypatch):
    """The merge pads encoder outputs, mask and cross-attention on the right to the longest source
    merged so far; once the rows that needed it have left, those columns go again, and every row
    still decodes as it does alone (BART's batches only shrink, with no merge to pad them)."""
    generator = generators["t5"]
    settings = dict(max_new_tokens=8, eos_token_id=STOPS, pad_token_id=0)
    prompts = _prompts([14, 2, 3, 2, 4, 3, 2, 3, 2, 4])
    seen = _record_encoder_widths(monkeypatch)
    continuous = _run(generator, prompts, batch_size=3, refill_fraction=0.34, **settings)
    assert all(after == used and widths == {after} for _, after, used, widths in seen), seen
    assert any(before == 14 and after < 14 for before, after, _, _ in seen), seen  # the long prompt left first
    for prompt, got in zip(prompts, continuous):
        assert got == _alone(generator, prompt, settings), prompt


@pytest.mark.parametrize("name", MERGING)
def test_a_refill_moves_no_running_row(generators, name, monkeypatch):
    """New prompts are written into the places of finished rows: while prompts wait, no row is
    gathered out of the cache (``select_rows``, a copy of every layer); only the run's tail
    drops rows, when more rows end than prompts are left (one step may take the last prompts
    and drop the rest). Rows still decode as they do alone (the other tests here)."""
    from ferrogen.models import DecoderOnlyAdapter, EncoderDecoderAdapter

    adapter = EncoderDecoderAdapter if name == "t5" else DecoderOnlyAdapter
    events: list[str] = []
    for method in ("select_rows", "replace_rows"):
        real = getattr(adapter, method)

        def spy(self, *args, _real=real, _method=method):
            events.append(_method)
            return _real(self, *args)

        monkeypatch.setattr(adapter, method, spy)
    settings = dict(max_new_tokens=10, eos_token_id=STOPS, pad_token_id=0)
    _run(generators[name], _prompts(LENGTHS * 3), batch_size=4, **settings)
    refills = [i for i, event in enumerate(events) if event == "replace_rows"]
    assert len(refills) >= 10, events
    assert events[: refills[-1]].count("select_rows") <= 1, " ".join(events)


def test_a_given_cache_is_not_refilled(generators):
    """Refills write into the cache's tensors: a cache the caller handed in is never one of them."""
    from transformers import DynamicCache

    from ferrogen.models import DecoderOnlyAdapter

    model = generators["gpt2"].model
    assert DecoderOnlyAdapter(model).merge_refusal() is not None  # no cache yet: nothing to merge
    adapter = DecoderOnlyAdapter(model, model_inputs={"past_key_values": DynamicCache()})
    adapter.prefill(torch.tensor([[5, 6, 7]]), None)
    assert "cache was given" in (adapter.merge_refusal() or "")


@pytest.mark.parametrize("name", SHRINKING)
def test_unmergeable_caches_shrink_only_said_once(generators, name):
    settings = dict(max_new_tokens=6, eos_token_id=STOPS, pad_token_id=0)
    with pytest.warns(UserWarning, match="not refilled with new prompts") as said:
        generate_texts(generators[name], _prompts(LENGTHS), batch_size=3, **settings)
    assert len([w for w in said if "not refilled" in str(w.message)]) == 1


def test_mergeable_caches_refill_quietly(generators):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        generate_texts(generators["llama"], _prompts(LENGTHS), batch_size=3, max_new_tokens=6, eos_token_id=STOPS,
                       pad_token_id=0)


@pytest.mark.parametrize("setting", [dict(min_new_tokens=2), dict(no_repeat_ngram_size=2), dict(max_time=60.0)])
def test_settings_reading_the_shared_length_or_padding_fall_back(generators, setting, monkeypatch):
    """min_new_tokens counts the batch's steps; a T5 row's n-grams would include the merge's
    padding (its decoder start token is the pad token): both only shrink, with the same results."""
    settings = dict(max_new_tokens=6, eos_token_id=STOPS, pad_token_id=0, **setting)
    calls = _count_generate_calls(monkeypatch)
    with pytest.warns(UserWarning, match=next(iter(setting))):
        out = _run_warned(generators["t5"], _prompts(LENGTHS), batch_size=3, **settings)
    assert len(calls) == 4
    assert out == _run(generators["t5"], _prompts(LENGTHS), batch_size=3, static=True, **settings)


def _run_warned(generator, prompts, **kwargs):
    return [(r.token_ids, r.finish_reason) for r in generate_texts(generator, prompts, **kwargs)]


@hsettings(max_examples=8, deadline=None)
@given(lengths=st.lists(st.integers(1, 12), min_size=2, max_size=9), batch=st.integers(1, 4),
       fraction=st.sampled_from([0.25, 0.5, 1.0]))
def test_any_length_mix_matches_the_static_batches(generators, lengths, batch, fraction):
    settings = dict(do_sample=True, seed=3, repetition_penalty=1.2, max_new_tokens=7, eos_token_id=STOPS,
                    pad_token_id=0)
    prompts = _prompts(lengths, seed=len(lengths))
    for name in ("gpt2", "t5"):
        continuous = _run(generators[name], prompts, batch_size=batch, refill_fraction=fraction, **settings)
        assert continuous == _run(generators[name], prompts, batch_size=batch, static=True, **settings), name


def test_refill_fraction_is_checked(generators):
    for bad in (0, 1.5, "half"):
        with pytest.raises(ValueError, match="refill_fraction"):
            generate_texts(generators["gpt2"], ["3 4"], batch_size=2, refill_fraction=bad)
        with pytest.raises(ValueError, match="refill_fraction"):
            generators["gpt2"](["3 4"], batch_size=2, refill_fraction=bad)


def test_pipeline_call_takes_refill_fraction_with_batch_size(generators):
    settings = dict(max_new_tokens=6, eos_token_id=STOPS, pad_token_id=0)
    prompts = _prompts(LENGTHS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = generators["t5"](prompts, batch_size=3, refill_fraction=0.5, **settings)
    assert [(r.token_ids, r.finish_reason) for r in got] == _run(generators["t5"], prompts, batch_size=3, **settings)
    with pytest.raises(TypeError, match="refill_fraction: works with batch_size"):
        generators["gpt2"](["3 4"], refill_fraction=0.5, **settings)
