"""The shipped models load offline, produce text, and ferrogen matches transformers on them."""

from __future__ import annotations

import pytest
import torch

import ferrogen
from conftest import hf_generate

PROMPTS = ["And God said", "In the beginning God created the heaven and the earth.", "Jesus wept"]
OUTPUTS = dict(return_dict_in_generate=True, output_scores=True)


@pytest.fixture(scope="module", params=["causal", "seq2seq"])
def embedded(request):
    model, tok = ferrogen.text.load_model(ferrogen.embedded_model_path(request.param))
    if not model.config.is_encoder_decoder:
        tok.padding_side = "left"
    return model, tok


def test_greedy_batch_matches_transformers(embedded):
    model, tok = embedded
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    kwargs = dict(max_new_tokens=24, do_sample=False, **OUTPUTS)
    ours = ferrogen.generate(model, **enc, **kwargs)
    theirs = hf_generate(model, enc["input_ids"], enc["attention_mask"], **kwargs)
    assert torch.equal(ours.sequences, theirs.sequences)
    for a, b in zip(ours.scores, theirs.scores):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def test_generates_recognisable_text(embedded):
    model, tok = embedded
    text = ferrogen.pipeline(model, tok)("And God said unto Moses", max_new_tokens=30)[0].text
    words = text.split()
    assert len(words) >= 5
    common = {"the", "and", "of", "unto", "LORD", "shall", "he", "his", "that", "a", "to", "in", "I", "God", "my"}
    assert sum(w.strip(",.;:") in common for w in words) >= 2, text


def test_embedded_path_names_its_choices():
    with pytest.raises(ValueError, match="kind"):
        ferrogen.embedded_model_path("vision")
