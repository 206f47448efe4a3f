#!/usr/bin/env python3
"""Writes golden outputs of contrastive search produced by transformers 4.55.4 (the last
release that ships it; 5.x moved it to the Hub) on the models stored in ``tests/data``.

    python scripts/make_contrastive_goldens.py    # re-runs itself in the golden venv if needed

Writes ``tests/goldens/contrastive.json``: for every case its inputs, the ``generate``
keyword arguments and transformers' ``sequences`` (and the processed ``scores`` for the
cases that ask for them). The test (``tests/test_contrastive_golden.py``) only reads the JSON.
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
OUT = ROOT / "tests" / "goldens" / "contrastive.json"

MODELS = ("gpt2", "t5")
ALPHAS = (0.4, 0.6)
TOP_KS = (2, 4, 6)
BATCHES = {"b1": (6,), "b3": (5, 3, 7)}  # prompt lengths; b3 is left-padded
MAX_NEW = 10
# (name, generate kwargs) beyond the grid; "eos": "mid" makes a token row 1 emits at step 2 the EOS
EXTRA: list[tuple[str, dict[str, Any]]] = [
    ("eos-mid", dict(penalty_alpha=0.6, top_k=4, eos="mid")),
    ("min-new", dict(penalty_alpha=0.6, top_k=4, min_new_tokens=6, eos="first")),
    ("no-repeat", dict(penalty_alpha=0.5, top_k=5, no_repeat_ngram_size=2, repetition_penalty=1.3)),
    ("scores", dict(penalty_alpha=0.6, top_k=4, output_scores=True)),
]
SCORE_STEPS = 4



def _generate(model: Any, ids: Any, mask: Any, kwargs: dict[str, Any]) -> Any:
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW, pad_token_id=0,
                              do_sample=False, return_dict_in_generate=True, **kwargs)


def _first_new(model: Any, ids: Any) -> int:
    return 1 if model.config.is_encoder_decoder else ids.shape[1]


def _case(name: str, model_name: str, model: Any, lengths: tuple[int, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    from conftest import left_padded_batch

    ids, mask = left_padded_batch(lengths)
    kwargs = dict(kwargs)
    how = kwargs.pop("eos", None)
    if how is not None:
        free = _generate(model, ids, mask, kwargs).sequences
        start = _first_new(model, ids)
        row, step = (1, 2) if how == "mid" else (0, 0)
        kwargs["eos_token_id"] = int(free[row, start + step])
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
    return case


def main() -> None:
    reexec_in_golden_venv(__file__)
    import transformers
    from golden_models import load_stored

    cases = []
    for model_name in MODELS:
        model = load_stored(model_name)
        for batch, lengths in BATCHES.items():
            for alpha in ALPHAS:
                for k in TOP_KS:
                    kwargs = dict(penalty_alpha=alpha, top_k=k)
                    cases.append(_case(f"{batch}-a{alpha}-k{k}", model_name, model, lengths, kwargs))
        for name, kwargs in EXTRA:
            cases.append(_case(f"b3-{name}", model_name, model, BATCHES["b3"], kwargs))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    data = {"transformers": transformers.__version__, "max_new_tokens": MAX_NEW, "cases": cases}
    OUT.write_text(json.dumps(data, indent=None, separators=(",", ":")) + "\n")
    print(f"wrote {len(cases)} cases to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
