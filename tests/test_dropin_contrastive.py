"""Contrastive search's ``output_attentions`` / ``output_hidden_states`` and returned cache against
transformers 4.55.4 (``scripts/make_contrastive_output_goldens.py`` wrote them, on the stored GPT-2,
Llama, T5 and BART models: ``tests/goldens/contrastive_outputs.pt``): per generated token the chosen
candidate's per-layer tensors (the prompt's at the first step), shapes identical and values close;
the cache one row per prompt, every position but the last token. Also: generation continued from
that cache gives transformers' tokens, and ``ferrogen.enable`` runs these calls itself (a test_dropin
module: tests/fallback_counter.py fails any call handed to transformers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import ferrogen
from conftest import assert_close_to_golden
from golden_models import load_stored

GOLDEN = torch.load(Path(__file__).parent / "goldens" / "contrastive_outputs.pt", weights_only=True)
CASES = GOLDEN["cases"]
FIELDS = ("attentions", "hidden_states", "decoder_attentions", "decoder_hidden_states", "cross_attentions")
ENCODER_FIELDS = ("encoder_attentions", "encoder_hidden_states")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def eager_models() -> dict[str, Any]:
    models = {}
    for name in ("gpt2", "llama", "t5", "bart"):
        models[name] = load_stored(name)
        models[name].set_attn_implementation("eager")  # sdpa returns no attention weights
    return models


INPUTS = ("input_ids", "inputs_embeds", "decoder_input_ids", "decoder_attention_mask")


def _inputs(case: dict[str, Any]) -> dict[str, Any]:
    return {name: case[name] for name in INPUTS if name in case}


def _run(model: Any, case: dict[str, Any], **extra: Any) -> Any:
    return ferrogen.generate(model, attention_mask=case["attention_mask"], return_dict_in_generate=True,
                             **_inputs(case), **case["kwargs"], **extra)


def _same(ours: Any, theirs: Any, what: str, real: Any = None) -> None:
    """Same nesting, shapes and values. ``real`` ([batch, length] bool): the prompt's real positions;
    the padding's own query rows are left out (transformers 4.55.4 and 5.x mask them differently, and
    nothing reads them)."""
    assert ours is not None, what
    assert len(ours) == len(theirs), what
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if isinstance(b, (list, tuple)):
            _same(a, b, f"{what}[{i}]", real if i == 0 and "cache" not in what else None)
            continue
        assert a.shape == b.shape, (what, i, a.shape, b.shape)
        if real is not None and a.dim() == 4 and a.shape[2] == real.shape[1]:  # [batch, heads, query, key]
            a, b = a.transpose(1, 2)[real], b.transpose(1, 2)[real]
        elif real is not None and a.dim() == 3 and a.shape[1] == real.shape[1]:  # [batch, position, hidden]
            a, b = a[real], b[real]
        assert_close_to_golden(a, b, msg=f"{what}[{i}]")


@pytest.mark.parametrize("name", sorted(CASES))
def test_collected_outputs_match_transformers(eager_models, name):
    case = CASES[name]
    out = _run(eager_models[case["model"]], case, output_attentions=True, output_hidden_states=True)
    assert out.sequences.tolist() == case["sequences"].tolist()
    for field in FIELDS + ENCODER_FIELDS:
        if field in case:
            real = case["attention_mask"].bool() if field in ("attentions", "hidden_states") or "encoder" in field else None
            _same(getattr(out, field), case[field], field, real)
        else:
            assert getattr(out, field, None) is None, field


@pytest.mark.parametrize("flag", ["output_attentions", "output_hidden_states"])
def test_one_flag_collects_only_its_field(eager_models, flag):
    case = CASES["gpt2-b3"]
    out = _run(eager_models["gpt2"], case, **{flag: True})
    wanted, other = ("attentions", "hidden_states") if flag == "output_attentions" else ("hidden_states", "attentions")
    _same(getattr(out, wanted), case[wanted], wanted, case["attention_mask"].bool())
    assert getattr(out, other) is None


def _cache_layers(cache: Any) -> list[list[torch.Tensor]]:
    if hasattr(cache, "self_attention_cache"):
        own, cross = cache.self_attention_cache.layers, cache.cross_attention_cache.layers
        return [[a.keys, a.values, c.keys, c.values] for a, c in zip(own, cross)]
    return [[layer.keys, layer.values] for layer in cache.layers]


@pytest.mark.parametrize("name", sorted(CASES))
def test_returned_cache_matches_transformers(eager_models, name):
    case = CASES[name]
    out = _run(eager_models[case["model"]], case)
    assert out.cache is not None
    ours, theirs = _cache_layers(out.cache), case["cache"]
    if not eager_models[case["model"]].config.is_encoder_decoder:  # the prompt's padding left out, as above
        mask = case["attention_mask"].bool()
        real = torch.cat([mask, mask.new_ones((mask.shape[0], out.sequences.shape[1] - 1 - mask.shape[1]))], dim=1)
        ours = [[t.transpose(1, 2)[real] for t in layer] for layer in ours]
        theirs = [[t.transpose(1, 2)[real] for t in layer] for layer in theirs]
    _same(ours, theirs, "cache")


@pytest.mark.parametrize("name", ["gpt2-b1", "gpt2-b3", "llama-b3"])
def test_generation_continues_from_the_returned_cache(eager_models, name):
    """transformers' greedy continuation fed the cache gives the tokens it gives without it. (Not
    T5: transformers 5.25 continuing from the cache of its own greedy search gives other tokens
    than without it, so there is no reference to meet; the cache's values are checked above.)"""
    case = CASES[name]
    model = eager_models[case["model"]]
    out = _run(model, case)
    sequences, mask = out.sequences, case["attention_mask"]
    assert out.cache.get_seq_length() == sequences.shape[1] - 1
    more = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    grown = torch.cat([mask, mask.new_ones((mask.shape[0], sequences.shape[1] - mask.shape[1]))], dim=1)
    inputs = dict(input_ids=sequences, attention_mask=grown)
    with torch.no_grad():
        fresh = model.generate(**inputs, **more)
        continued = model.generate(**inputs, past_key_values=out.cache, **more)
    assert continued.tolist() == fresh.tolist()


@pytest.mark.parametrize("name", ["t5-b3", "t5-decoder-prompt", "bart-embeds"])
def test_enable_collects_without_falling_back(eager_models, name):
    from transformers.generation import GenerateEncoderDecoderOutput

    case = CASES[name]
    model = eager_models[case["model"]]
    with ferrogen.patched(model):  # the fallback counter (tests/fallback_counter.py) fails a fallback
        out = model.generate(attention_mask=case["attention_mask"], return_dict_in_generate=True,
                             output_attentions=True, output_hidden_states=True, **_inputs(case), **case["kwargs"])
    assert isinstance(out, GenerateEncoderDecoderOutput)
    assert out.sequences.tolist() == case["sequences"].tolist()
    _same(out.cross_attentions, case["cross_attentions"], "cross_attentions")
    _same(out.decoder_hidden_states, case["decoder_hidden_states"], "decoder_hidden_states")
    assert out.past_key_values is not None or out.get("cache") is not None
