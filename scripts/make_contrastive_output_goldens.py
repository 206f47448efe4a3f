#!/usr/bin/env python3
"""Writes what transformers 4.55.4's contrastive search (the last release that ships it; 5.x
moved it to the Hub) returns beside the tokens: per-step ``output_attentions`` /
``output_hidden_states`` and the returned cache, on the models stored in ``tests/data`` (GPT-2, Llama, T5, BART).

    python scripts/make_contrastive_output_goldens.py    # re-runs itself in the golden venv if needed

Writes ``tests/goldens/contrastive_outputs.pt`` (``torch.load(..., weights_only=True)``): per case
its inputs, keyword arguments, ``sequences``, every collected field (one tuple of per-layer
tensors per generated token, transformers' layout) and the cache's per-layer keys and values.
``tests/test_dropin_contrastive.py`` only reads the file.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

from golden_reexec import reexec_in_golden_venv

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
OUT = ROOT / "tests" / "goldens" / "contrastive_outputs.pt"
MAX_NEW = 6
FIELDS = ("attentions", "hidden_states", "encoder_attentions", "encoder_hidden_states", "decoder_attentions",
          "decoder_hidden_states", "cross_attentions")
# (name, stored model, prompt lengths (left-padded), generate kwargs)
CASES: list[tuple[str, str, tuple[int, ...], dict[str, Any]]] = [
    ("gpt2-b3", "gpt2", (5, 3, 7), dict(penalty_alpha=0.6, top_k=4)),
    ("gpt2-b1", "gpt2", (6,), dict(penalty_alpha=0.4, top_k=3)),
    ("llama-b3", "llama", (5, 3, 7), dict(penalty_alpha=0.6, top_k=4)),
    ("t5-b3", "t5", (5, 3, 7), dict(penalty_alpha=0.6, top_k=4)),
    ("t5-b1", "t5", (6,), dict(penalty_alpha=0.4, top_k=3)),
    ("bart-b3", "bart", (5, 3, 7), dict(penalty_alpha=0.6, top_k=4)),
    # encoder-decoder inputs: the caller's decoder prompt (with a padded decoder_attention_mask), and the
    # encoder run on inputs_embeds (the embeddings of the ids, moved) instead of input_ids
    ("t5-decoder-prompt", "t5", (5, 3, 7), dict(penalty_alpha=0.6, top_k=4, decoder_input_ids=[[5, 6], [7, 8], [9, 10]],
                                                decoder_attention_mask=[[1, 1], [0, 1], [1, 1]])),
    ("bart-embeds", "bart", (5, 3, 7), dict(penalty_alpha=0.6, top_k=4, inputs_embeds=0.5)),
]


def _layers(cache: Any) -> list[list[Any]]:
    """Per layer [keys, values] (and, encoder-decoder, the cross-attention keys and values)."""
    return [[t.clone() for t in layer] for layer in cache.to_legacy_cache()]


def _inputs(model: Any, ids: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``input_ids``, or ``inputs_embeds`` (the ids' embeddings plus ``kwargs["inputs_embeds"]`` times
    seeded noise); list-valued decoder inputs become tensors. Moves them out of ``kwargs``."""
    import torch

    inputs: dict[str, Any] = {}
    for name in ("decoder_input_ids", "decoder_attention_mask"):
        if name in kwargs:
            inputs[name] = torch.tensor(kwargs.pop(name))
    scale = kwargs.pop("inputs_embeds", None)
    if scale is None:
        inputs["input_ids"] = ids
        return inputs
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
    inputs["inputs_embeds"] = embeds + scale * torch.randn(embeds.shape, generator=torch.Generator().manual_seed(0))
    return inputs


def main() -> None:
    reexec_in_golden_venv(__file__)
    import torch
    import transformers
    from conftest import left_padded_batch
    from golden_models import load_stored

    cases = {}
    for name, model_name, lengths, kwargs in CASES:
        model = load_stored(model_name)
        model.set_attn_implementation("eager")  # sdpa returns no attention weights
        ids, mask = left_padded_batch(lengths)
        kwargs = dict(kwargs, max_new_tokens=MAX_NEW, pad_token_id=0, do_sample=False)
        inputs = _inputs(model, ids, kwargs)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            out = model.generate(attention_mask=mask, return_dict_in_generate=True, output_attentions=True,
                                 output_hidden_states=True, **inputs, **kwargs)
        case: dict[str, Any] = {"model": model_name, "attention_mask": mask, "kwargs": kwargs, **inputs,
                                "sequences": out.sequences, "cache": _layers(out.past_key_values)}
        for field in FIELDS:
            value = getattr(out, field, None)
            if value is not None:
                case[field] = [list(step) for step in value] if "encoder" not in field else list(value)
        cases[name] = case
    OUT.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"transformers": transformers.__version__, "cases": cases}, OUT)
    print(f"wrote {len(cases)} cases to {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
