"""Token healing (``token_healing=True``, ``tokenizer=``) against transformers 5.x live, on the
embedded model (its tokenizer gets a BOS token: transformers' ``heal_tokens`` needs one)."""

from __future__ import annotations

import warnings

import pytest
import torch

import ferrogen
from ferrogen import FallbackWarning, compat

# prompts cut inside a word ("Mo", "Isra", "Jeru") get healed; whole words are left alone
PROMPTS = ["And God said unto Mo", "In the begin", "And the children of Isra", "Jeru", "The LORD is my shep"]
NEW = 6


@pytest.fixture(scope="module")
def kjv():
    model, tok = ferrogen.text.load_model(ferrogen.embedded_model_path())
    tok.bos_token = tok.eos_token
    return model, tok


def reference(model, tok, enc):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.generate(**enc, token_healing=True, tokenizer=tok, max_new_tokens=NEW, do_sample=False)


@pytest.mark.parametrize("text", PROMPTS)
def test_healing_matches_transformers(kjv, text):
    model, tok = kjv
    enc = tok(text, return_tensors="pt")
    ours = ferrogen.generate(model, **enc, token_healing=True, tokenizer=tok, max_new_tokens=NEW)
    assert ours.tolist() == reference(model, tok, enc).tolist()


def test_healing_changes_cut_words(kjv):
    """Not a no-op: the prompts cut inside a word continue differently once healed."""
    model, tok = kjv
    changed = []
    for text in PROMPTS:
        enc = tok(text, return_tensors="pt")
        healed = ferrogen.generate(model, **enc, token_healing=True, tokenizer=tok, max_new_tokens=NEW)
        changed.append(healed.tolist() != ferrogen.generate(model, **enc, max_new_tokens=NEW).tolist())
    assert changed == [True, False, True, True, False]


def test_enable_heals_natively(kjv, monkeypatch):
    """Before: token_healing made model.generate fall back to transformers."""
    monkeypatch.setattr(compat, "_warned", set())
    model, tok = kjv
    enc = tok(PROMPTS[0], return_tensors="pt")
    expected = reference(model, tok, enc)
    with ferrogen.patched(model), warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        got = model.generate(**enc, token_healing=True, tokenizer=tok, max_new_tokens=NEW)
    assert got.tolist() == expected.tolist()


def test_refusals_name_the_argument(kjv, stored):
    model, tok = kjv
    enc = tok(PROMPTS[0], return_tensors="pt")
    with pytest.raises(ValueError, match="^token_healing: needs the model's tokenizer"):
        ferrogen.generate(model, **enc, token_healing=True, max_new_tokens=2)
    _, plain = ferrogen.text.load_model(ferrogen.embedded_model_path())  # no BOS token
    with pytest.raises(ValueError, match="^token_healing: the tokenizer has no bos_token_id"):
        ferrogen.generate(model, **enc, token_healing=True, tokenizer=plain, max_new_tokens=2)
    with pytest.raises(ValueError, match="^token_healing: .*encoder-decoder"):
        ferrogen.generate(stored["t5"], input_ids=torch.tensor([[3, 4]]), token_healing=True, tokenizer=tok,
                          max_new_tokens=2)
    padded = {"input_ids": torch.cat([torch.zeros(1, 2, dtype=torch.long), enc["input_ids"]], dim=1)}
    padded["attention_mask"] = (padded["input_ids"] != 0).long()
    padded["input_ids"][0, :2] = 0
    with pytest.raises(ValueError, match="^token_healing: re-tokenizing"):
        ferrogen.generate(model, **padded, token_healing=True, tokenizer=tok, max_new_tokens=2)
