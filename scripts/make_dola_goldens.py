#!/usr/bin/env python3
"""Writes golden outputs of DoLa decoding produced by transformers 4.55.4 (the last release that
ships it; 5.x moved it to the Hub) on the decoder-only models stored in ``tests/data``.

    python scripts/make_dola_goldens.py    # re-runs itself in the golden venv if needed

Writes ``tests/goldens/dola.json``: for every case its inputs, the ``generate`` keyword arguments
and transformers' ``sequences`` (and the processed ``scores`` / raw ``logits`` of the first steps
for the cases that ask for them). The test (``tests/test_dola_golden.py``) only reads the JSON.
Greedy only: 4.55.4 samples with ``torch.multinomial``, ferrogen with its own seeded generator.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any
from golden_reexec import reexec_in_golden_venv

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
GOLDEN_VERSION = "4.55.4"
OUT = ROOT / "tests" / "goldens" / "dola.json"

# model -> its explicit layer list (indices at or past the last layer are dropped, as in 4.55.4)
MODELS = {"gpt2": [0, 1], "llama": [0, 1, 2, 3], "qwen2": [0, 2, 4, 5, 9]}
BATCHES = {"b1": (6,), "b3": (5, 3, 7)}  # prompt lengths; b3 is left-padded
MAX_NEW = 10
# (name, generate kwargs) beyond the grid; "eos": "mid" makes a token row 1 emits at step 2 the EOS
EXTRA: list[tuple[str, dict[str, Any]]] = [
    ("rep-high", dict(dola_layers="high", repetition_penalty=1.2)),
    ("rep-list", dict(dola_layers="list", repetition_penalty=1.5, no_repeat_ngram_size=2)),
    ("eos-mid", dict(dola_layers="low", eos="mid")),
    ("min-new", dict(dola_layers="high", min_new_tokens=6, eos="first")),
    ("scores", dict(dola_layers="list", output_scores=True, output_logits=True, repetition_penalty=1.2)),
]
SCORE_STEPS = 3



def _generate(model: Any, ids: Any, mask: Any, kwargs: dict[str, Any]) -> Any:
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW, pad_token_id=0,
                              do_sample=False, return_dict_in_generate=True, trust_remote_code=True, **kwargs)


def _case(name: str, model_name: str, model: Any, lengths: tuple[int, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    from conftest import left_padded_batch

    ids, mask = left_padded_batch(lengths)
    kwargs = dict(kwargs)
    if kwargs.get("dola_layers") == "list":
        kwargs["dola_layers"] = MODELS[model_name]
    how = kwargs.pop("eos", None)
    if how is not None:
        free = _generate(model, ids, mask, kwargs).sequences
        row, step = (1, 2) if how == "mid" else (0, 0)
        kwargs["eos_token_id"] = int(free[row, ids.shape[1] + step])
    out = _generate(model, ids, mask, kwargs)
    case = {
        "name": f"{model_name}-{name}",
        "model": model_name,
        "input_ids": ids.tolist(),
        "attention_mask": mask.tolist(),
        "kwargs": dict(kwargs, max_new_tokens=MAX_NEW, pad_token_id=0),
        "sequences": out.sequences.tolist(),
    }
    if kwargs.get("output_scores"):
        case["scores"] = [s.tolist() for s in out.scores[:SCORE_STEPS]]
    if kwargs.get("output_logits"):
        case["logits"] = [s.tolist() for s in out.logits[:SCORE_STEPS]]
    return case


def main() -> None:
    reexec_in_golden_venv(__file__)
    import torch
    import transformers
    from golden_models import load_stored

    torch.set_num_threads(1)
    cases = []
    for model_name in MODELS:
        model = load_stored(model_name)
        for batch, lengths in BATCHES.items():
            for layers in ("low", "high", "list"):
                cases.append(_case(f"{batch}-{layers}", model_name, model, lengths, dict(dola_layers=layers)))
        for name, kwargs in EXTRA:
            cases.append(_case(f"b3-{name}", model_name, model, BATCHES["b3"], kwargs))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    data = {"transformers": transformers.__version__, "max_new_tokens": MAX_NEW, "cases": cases}
    OUT.write_text(json.dumps(data, indent=None, separators=(",", ":")) + "\n")
    print(f"wrote {len(cases)} cases to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
