"""Decode steps' 4-D masks built by the adapter (:mod:`ferrogen.decode_mask`) against the masks
transformers builds itself: every step's logits bit for bit, for every listed family, with sdpa
and eager attention, in a left-padded batch and through the batch engine's refills (rows merged,
columns trimmed, the mask dropped when all ones). Each run also checks that transformers built
no decode mask when the adapter did (else the comparison would compare transformers with itself).
Encoder-decoder families get the cross-attention mask built once per change of the encoder's
mask (a refill, a row dropped, a trim) instead of per step; the same comparisons hold for it.
Sliding-window families run with their window (4, shorter than the runs: the cache's sliding
layers keep only the window) and without one, and once on a full-attention cache, where the
window masks cached positions and transformers' own mask must be used.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import pytest
import torch
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

import ferrogen
from ferrogen import decode_mask, engine_feed
from ferrogen.engine import generate_texts
from ferrogen.models import DecoderOnlyAdapter, EncoderDecoderAdapter, adapter_for
from ferrogen.strategies.running_rows import EngineHooks

from architectures import _GQA, build, padded_batch
from test_engine_continuous import STOPS, DigitsTokenizer
from test_engine_logits import MAX_NEW, _merges, _prompts

#: config keywords of the runs that are not the architecture table's own model
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "mistral-no-window": ("mistral", dict(sliding_window=None)),
    "qwen2-sliding": ("qwen2", dict(use_sliding_window=True, sliding_window=4, max_window_layers=0)),
    "qwen3_moe": ("qwen3_moe", dict(_GQA, head_dim=8, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)),
}
LISTED = decode_mask._PLAIN_CAUSAL | decode_mask._WINDOWED | decode_mask._FULL_LAYER_TYPES
FAMILIES = sorted(LISTED | set(VARIANTS) - {"qwen2-sliding"})
SEQ2SEQ = sorted(decode_mask._SEQ2SEQ)


@pytest.fixture(scope="module")
def built(one_torch_thread):
    return {}


def _model(built: dict[tuple[str, str], Any], name: str, attention: str) -> Any:
    if (name, attention) not in built:
        family, overrides = VARIANTS.get(name, (name, {}))
        model = build(family, **overrides)
        model.set_attn_implementation(attention)
        built[(name, attention)] = model
    return built[(name, attention)]


def _decode_masks(monkeypatch, attention: str, cross: bool = False) -> list[int]:
    """Counts transformers' own mask builds for one new token per row: causal ones, or
    (``cross``) the bidirectional ones of cross-attention."""
    calls: list[int] = []
    real = ALL_MASK_ATTENTION_FUNCTIONS._global_mapping[attention]

    @functools.wraps(real)
    def counting(*args: Any, **kwargs: Any) -> Any:
        bidirectional = bool(kwargs.get("allow_is_bidirectional_skip"))
        calls.append(int(kwargs.get("q_length", 0) == 1 and bidirectional == cross))
        return real(*args, **kwargs)

    monkeypatch.setitem(ALL_MASK_ATTENTION_FUNCTIONS._global_mapping, attention, counting)
    return calls


def _greedy_steps(
    model: Any, own_masks: bool, steps: int = 6, lengths: tuple[int, ...] = (5, 2, 8, 3), **inputs: Any
) -> list[torch.Tensor]:
    """Per-step logits of a left-padded batch fed its argmax tokens, with the adapter's masks
    (``own_masks``) or transformers'; ``inputs``: the adapter's model inputs (a cache)."""
    adapter = adapter_for(model, model_inputs=inputs)
    assert isinstance(adapter, DecoderOnlyAdapter)
    return _argmax_steps(adapter, own_masks, *padded_batch(False, lengths=lengths), steps)


def _argmax_steps(adapter: Any, own_masks: bool, ids: torch.Tensor, mask: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """The prompt's logits and ``steps`` more, each step fed the argmax tokens; without the
    adapter's masks unless ``own_masks``."""
    if not own_masks:
        adapter._mask_kind = None
    logits = [adapter.prefill(ids, mask)]
    for _ in range(steps):
        logits.append(adapter.advance(logits[-1].argmax(-1)))
    return logits


def _assert_same_bits(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> None:
    assert len(ours) == len(theirs)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert torch.equal(a, b), f"step {step}: max abs diff {float((a - b).abs().max()):.3g}"


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("name", FAMILIES)
def test_decode_masks_give_transformers_logits_bit_for_bit(built, name, attention, monkeypatch):
    model = _model(built, name, attention)
    calls = _decode_masks(monkeypatch, attention)
    ours = _greedy_steps(model, own_masks=True)
    assert sum(calls) == 0, "transformers built a decode mask the adapter should have built"
    theirs = _greedy_steps(model, own_masks=False)
    assert sum(calls) > 0
    _assert_same_bits(ours, theirs)


def _engine_logits(model: Any, own_masks: bool, monkeypatch) -> list[tuple[list[int], torch.Tensor]]:
    """Every step's (slots, logits) of a continuous engine run with refills."""
    seen: list[tuple[list[int], torch.Tensor]] = []
    hooks = functools.partial(EngineHooks, on_logits=lambda slots, logits: seen.append((slots, logits.clone())))
    texts = [" ".join(map(str, ids)) for ids in _prompts()]  # test_engine_logits' run: merges, trims
    with monkeypatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        patch.setattr(engine_feed, "EngineHooks", hooks)
        if not own_masks:
            for listed in ("_PLAIN_CAUSAL", "_WINDOWED", "_FULL_LAYER_TYPES", "_SEQ2SEQ"):
                patch.setattr(decode_mask, listed, frozenset())
        generate_texts(ferrogen.TextGenerator(model, DigitsTokenizer()), texts, batch_size=3, refill_fraction=0.25,
                       do_sample=False, max_new_tokens=MAX_NEW, eos_token_id=STOPS, pad_token_id=0)
    return seen


def test_families_are_listed_as_tested():
    """Every listed family runs above; the families of the windowed and per-layer-type lists
    with a window configured (the table's Mistral / Starcoder2 with 4) as well as without."""
    assert set(FAMILIES) - set(VARIANTS) <= LISTED
    windows = {name: decode_mask.decode_window(_model({}, name, "sdpa")) for name in ("mistral", "starcoder2", "mistral-no-window")}
    assert windows == {"mistral": 4, "starcoder2": 4, "mistral-no-window": None}


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("name, ours", [("mistral", 2), ("qwen2-sliding", 0)])
def test_a_window_that_masks_cached_positions_leaves_the_mask_to_transformers(built, name, ours, attention, monkeypatch):
    """Window 4 on a cache of full-attention layers (a config-less ``DynamicCache``, as a caller
    may hand one in): Mistral's first decode steps (2 and 3 cached positions) get the adapter's
    mask, the later ones, where the window masks cached positions, transformers'; Qwen2 with
    sliding layers (its mask per layer type) never gets the adapter's."""
    from transformers import DynamicCache

    model = _model(built, name, attention)
    calls = _decode_masks(monkeypatch, attention)
    steps = _greedy_steps(model, True, lengths=(2, 1, 2), past_key_values=DynamicCache())
    mine = sum(calls)
    theirs = _greedy_steps(model, False, lengths=(2, 1, 2), past_key_values=DynamicCache())
    assert sum(calls) - 2 * mine == ours, calls  # the steps whose masks the adapter built
    _assert_same_bits(steps, theirs)


@pytest.mark.parametrize("name", ["gpt2", "llama", "qwen2", "mistral-no-window"])
def test_refilled_batches_give_the_same_logits_bit_for_bit(built, name, monkeypatch):
    model = _model(built, name, "sdpa")
    calls = _decode_masks(monkeypatch, "sdpa")
    ours = _engine_logits(model, True, monkeypatch)
    built_by_transformers = sum(calls)  # steps with no padding left: transformers' own path (no mask)
    theirs = _engine_logits(model, False, monkeypatch)
    assert sum(calls) - built_by_transformers > built_by_transformers
    assert len(ours) == len(theirs) and _merges([slots for slots, _ in ours]) >= 3, [slots for slots, _ in ours]
    for step, ((slots, a), (want_slots, b)) in enumerate(zip(ours, theirs)):
        assert slots == want_slots and torch.equal(a, b), f"step {step}: slots {slots} / {want_slots}"


def _seq2seq_steps(model: Any, own_masks: bool, steps: int = 6) -> list[torch.Tensor]:
    """Per-step logits of a right-padded encoder batch with left-padded decoder prompts, fed its
    argmax tokens, with the adapter's masks (``own_masks``) or transformers'."""
    ids, mask = padded_batch(True, lengths=(5, 2, 8, 3))
    prompts, prompt_mask = padded_batch(False, lengths=(1, 3, 2, 1), seed=2)
    inputs = {"decoder_input_ids": prompts, "decoder_attention_mask": prompt_mask}
    adapter = adapter_for(model, decoder_start_token_id=model.config.decoder_start_token_id, model_inputs=inputs)
    assert isinstance(adapter, EncoderDecoderAdapter)
    return _argmax_steps(adapter, own_masks, ids, mask, steps)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("name", SEQ2SEQ)
def test_seq2seq_masks_give_transformers_logits_bit_for_bit(built, name, attention, monkeypatch):
    """The decoder's own masks and the cross-attention ones, every step after the prompt's."""
    model = _model(built, name, attention)
    cross = _decode_masks(monkeypatch, attention, cross=True)
    causal = _decode_masks(monkeypatch, attention)
    ours = _seq2seq_steps(model, own_masks=True)
    assert sum(cross) == sum(causal) == 0, "transformers built a mask the adapter should have built"
    theirs = _seq2seq_steps(model, own_masks=False)
    assert sum(cross) == sum(causal) == len(theirs) - 1  # every step after the prompt's
    _assert_same_bits(ours, theirs)


def test_refilled_seq2seq_batches_give_the_same_logits_bit_for_bit(built, monkeypatch):
    """T5 through the engine's refills: rows written into the encoder's mask in place, the
    mask widened and trimmed, rows dropped; the cross-attention mask follows every change, and
    the decoder's own masks (padded where rows were merged) are the adapter's too."""
    model = _model(built, "t5", "sdpa")
    counts = [_decode_masks(monkeypatch, "sdpa", cross=True), _decode_masks(monkeypatch, "sdpa")]
    ours = _engine_logits(model, True, monkeypatch)
    built_by_transformers = [sum(calls) for calls in counts]  # steps with no padding: transformers' own path
    theirs = _engine_logits(model, False, monkeypatch)
    for calls, mine in zip(counts, built_by_transformers):
        assert sum(calls) - mine > mine, (sum(calls), mine)
    assert len(ours) == len(theirs) and _merges([slots for slots, _ in ours]) >= 3, [slots for slots, _ in ours]
    for step, ((slots, a), (want_slots, b)) in enumerate(zip(ours, theirs)):
        assert slots == want_slots and torch.equal(a, b), f"step {step}: slots {slots} / {want_slots}"
