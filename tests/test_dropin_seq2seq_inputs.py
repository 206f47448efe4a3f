"""Encoder-decoder model inputs run natively under ``ferrogen.enable`` (a test_dropin module:
tests/fallback_counter.py fails any call handed to transformers), token-identical to transformers
5.x on tiny random T5 (relative attention) and BART (learned positions) from tests/architectures.py:
``inputs_embeds`` (the encoder runs on them; with or without attention_mask), ``decoder_input_ids``
(with the start token in front or without, which transformers then adds), ``decoder_attention_mask``
(left padding in the decoder prompt); greedy, beam search and prompt lookup (one row, as
transformers only runs one). Bad values are refused before any model work, naming the argument.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from architectures import build, padded_batch

import ferrogen
from ferrogen import FallbackWarning

NEW = 6
DECODER_IDS = torch.tensor([[5, 6, 7], [8, 9, 10], [11, 12, 13]])
DECODER_MASK = torch.tensor([[1, 1, 1], [0, 1, 1], [0, 0, 1]])

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=["t5", "bart"])
def tiny(request):
    model = build(request.param)
    ids, mask = padded_batch(True)
    with torch.no_grad():  # not the ids' own embeddings: they must be what runs
        embeds = model.get_input_embeddings()(ids)
    embeds = embeds + 0.5 * torch.randn(embeds.shape, generator=torch.Generator().manual_seed(0))
    return model, ids, mask, embeds


def _start(model: Any) -> int:
    return int(model.generation_config.decoder_start_token_id)


def _inputs(case: str, model: Any, ids: Any, mask: Any, embeds: Any) -> dict[str, Any]:
    with_start = torch.cat([torch.full((3, 1), _start(model)), DECODER_IDS], dim=1)
    return {
        "embeds": dict(inputs_embeds=embeds, attention_mask=mask),
        "embeds-no-mask": dict(inputs_embeds=embeds),
        "decoder-ids": dict(input_ids=ids, attention_mask=mask, decoder_input_ids=DECODER_IDS),
        "decoder-ids-with-start": dict(input_ids=ids, attention_mask=mask, decoder_input_ids=with_start),
        "decoder-mask": dict(input_ids=ids, attention_mask=mask, decoder_input_ids=DECODER_IDS,
                             decoder_attention_mask=DECODER_MASK),
        "embeds-and-decoder": dict(inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=DECODER_IDS,
                                   decoder_attention_mask=DECODER_MASK),
    }[case]


def hf(model: Any, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.generate(**kwargs)


def enabled(model: Any, **kwargs: Any) -> Any:
    with ferrogen.patched(model), warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        return model.generate(**kwargs)


CASES = ["embeds", "embeds-no-mask", "decoder-ids", "decoder-ids-with-start", "decoder-mask", "embeds-and-decoder"]
STRATEGIES = {"greedy": dict(), "beam": dict(num_beams=3, num_return_sequences=2), "lookup": dict(prompt_lookup_num_tokens=2)}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("case", CASES)
def test_inputs_run_natively_as_transformers_runs_them(tiny, case, strategy):
    model, ids, mask, embeds = tiny
    inputs = _inputs(case, model, ids, mask, embeds)
    if strategy == "lookup":  # transformers refuses assisted decoding of a batch
        inputs = {name: value[:1] for name, value in inputs.items()}
    kwargs = dict(inputs, max_new_tokens=NEW, pad_token_id=0, **STRATEGIES[strategy])
    expected = hf(model, **kwargs)
    if case.startswith("embeds") and strategy == "greedy":  # the embeddings, not the ids, ran
        plain = {k: v for k, v in kwargs.items() if k != "inputs_embeds"}
        assert not torch.equal(expected, hf(model, input_ids=ids, **plain))
    got = enabled(model, **kwargs)
    assert torch.equal(got, expected)
    assert torch.equal(ferrogen.generate(model, **kwargs), expected)


def test_decoder_prompt_is_kept_in_the_sequences(tiny):
    model, ids, mask, embeds = tiny
    got = ferrogen.generate(model, ids, mask, decoder_input_ids=DECODER_IDS, max_new_tokens=NEW, pad_token_id=0)
    assert got[:, 0].tolist() == [_start(model)] * 3 and torch.equal(got[:, 1:4], DECODER_IDS)
    assert got.shape[1] == 4 + NEW


def test_collected_outputs_with_a_decoder_prompt(tiny):
    """output_hidden_states with decoder_input_ids: the prompt pass covers the decoder prompt."""
    model, ids, mask, embeds = tiny
    kwargs = dict(inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=DECODER_IDS, max_new_tokens=3,
                  pad_token_id=0, return_dict_in_generate=True, output_hidden_states=True)
    got, expected = enabled(model, **kwargs), hf(model, **kwargs)
    assert torch.equal(got.sequences, expected.sequences)
    for name in ("encoder_hidden_states", "decoder_hidden_states"):
        ours, theirs = got[name], expected[name]
        flat_ours = [t for step in ours for t in (step if isinstance(step, tuple) else (step,))]
        flat_theirs = [t for step in theirs for t in (step if isinstance(step, tuple) else (step,))]
        assert [t.shape for t in flat_ours] == [t.shape for t in flat_theirs]
        for a, b in zip(flat_ours, flat_theirs):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (dict(inputs_embeds="ids"), "^inputs_embeds: an encoder-decoder model's encoder takes"),
        (dict(decoder_input_ids=DECODER_IDS[:2]), r"^decoder_input_ids: expected an integer tensor \[batch 3"),
        (dict(decoder_input_ids=DECODER_IDS.float()), "^decoder_input_ids: expected an integer tensor"),
        (dict(decoder_input_ids=DECODER_IDS, decoder_attention_mask=DECODER_MASK[:, :2]),
         r"^decoder_attention_mask: expected 0/1 values of shape \[3, 3\]"),
        (dict(decoder_attention_mask=torch.ones(3, 2, dtype=torch.long)),
         r"^decoder_attention_mask: expected 0/1 values of shape \[3, 1\]"),
        (dict(decoder_input_ids=DECODER_IDS, decoder_attention_mask=DECODER_MASK * 2), "^decoder_attention_mask"),
        (dict(position_ids=torch.zeros(3, 7, dtype=torch.long)), "^position_ids: ferrogen feeds it to decoder-only"),
    ],
)
def test_bad_inputs_are_refused_before_model_work(tiny, extra, needle, monkeypatch):
    model, ids, mask, embeds = tiny
    extra = {k: (embeds if v == "ids" else v) for k, v in extra.items()}
    calls = []
    monkeypatch.setattr(type(model), "forward", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match=needle):
        ferrogen.generate(model, ids, mask, max_new_tokens=2, pad_token_id=0, **extra)
    assert not calls


@pytest.mark.parametrize("setting", [dict(encoder_repetition_penalty=1.3), dict(encoder_no_repeat_ngram_size=2)])
def test_encoder_processors_ignore_embeddings(tiny, setting):
    """transformers applies the encoder_* processors to encoder token ids only: none with inputs_embeds."""
    model, ids, mask, embeds = tiny
    kwargs = dict(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=NEW, pad_token_id=0, **setting)
    assert torch.equal(enabled(model, **kwargs), hf(model, **kwargs))


@pytest.mark.parametrize("strategy", [dict(do_sample=True), dict(do_sample=True, num_beams=2)])
def test_sampling_from_embeddings_only(tiny, strategy):
    """No token ids to seed rows from (the mask covers the embeddings): it samples, reproducibly."""
    model, ids, mask, embeds = tiny
    kwargs = dict(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=NEW, pad_token_id=0, seed=3, **strategy)
    first = ferrogen.generate(model, **kwargs)
    assert first.shape == (3, 1 + NEW) and torch.equal(first, ferrogen.generate(model, **kwargs))
