#!/usr/bin/env python3
"""Writes the golden outputs of strategies that transformers 5.x no longer ships, produced by
transformers 4.55.4 (the last release with them built in) on the models stored in
``tests/data`` (so both sides load identical weights).

    python scripts/make_goldens.py             # re-runs itself in the golden venv if needed
    python scripts/make_goldens.py --weights   # also re-create tests/data/* (main venv first)

Writes ``tests/goldens/group_beam.json``: for every case its inputs, the ``generate``
keyword arguments and transformers' ``sequences`` / ``sequences_scores`` (and the processed
``scores`` for the cases that ask for them). CI only reads the JSON; it never needs 4.55.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any
from golden_reexec import reexec_in_golden_venv

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
GOLDEN_VERSION = "4.55.4"
OUT = ROOT / "tests" / "goldens" / "group_beam.json"

# (name, model, generate kwargs); "eos": "mid" picks an EOS that the free search emits at step 2
GROUP_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("g4x2", "{m}", dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5)),
    ("g4x4-early-true", "{m}", dict(num_beams=4, num_beam_groups=4, diversity_penalty=1.0, length_penalty=0.5,
                                    early_stopping=True, num_return_sequences=4)),
    ("g6x3-never", "{m}", dict(num_beams=6, num_beam_groups=3, diversity_penalty=2.0, length_penalty=2.0,
                               early_stopping="never", num_return_sequences=2)),
    ("g8x4-all", "{m}", dict(num_beams=8, num_beam_groups=4, diversity_penalty=0.5, num_return_sequences=8)),
    ("g8x2-never", "{m}", dict(num_beams=8, num_beam_groups=2, diversity_penalty=1.0, early_stopping="never")),
    ("eos-g4x2", "{m}", dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5, num_return_sequences=4, eos="mid")),
    ("eos-g6x3-early-true", "{m}", dict(num_beams=6, num_beam_groups=3, diversity_penalty=1.0, length_penalty=2.0,
                                        early_stopping=True, num_return_sequences=6, eos="mid")),
    ("eos-g8x4-never", "{m}", dict(num_beams=8, num_beam_groups=4, diversity_penalty=0.5, length_penalty=0.5,
                                   early_stopping="never", num_return_sequences=2, eos="mid")),
    ("eos-min-new", "{m}", dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5, min_new_tokens=4,
                                num_return_sequences=4, eos="first")),
    ("scores-g4x2", "{m}", dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.7, output_scores=True)),
    # processors that run after the Hamming penalty and keep per-row state across reorders
    ("processors-g4x2", "{m}", dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0, repetition_penalty=1.4,
                                    no_repeat_ngram_size=2, num_return_sequences=2)),
]
MODELS = ("gpt2", "t5")
LENGTHS = (5, 3, 7)
MAX_NEW = 8
SCORE_STEPS = 3



def _generate(model: Any, ids: Any, mask: Any, kwargs: dict[str, Any]) -> Any:
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        kwargs = dict(kwargs, output_scores=True)  # for sequences_scores; it changes no token
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW, pad_token_id=0,
                              do_sample=False, return_dict_in_generate=True, **kwargs)


def _pick_eos(model: Any, ids: Any, mask: Any, kwargs: dict[str, Any], how: str) -> int:
    """A token the free search emits (step 2 of item 1's best, or step 0 of item 0's)."""
    free = _generate(model, ids, mask, kwargs).sequences
    start = 1 if model.config.is_encoder_decoder else ids.shape[1]
    per_item = kwargs.get("num_return_sequences", 1)
    row, col = (per_item, start + 2) if how == "mid" else (0, start)
    return int(free[row, col])


def make_cases() -> list[dict[str, Any]]:
    import torch
    from conftest import left_padded_batch
    from golden_models import load_stored

    cases = []
    ids, mask = left_padded_batch(LENGTHS)
    for model_name in MODELS:
        model = load_stored(model_name)
        for name, _, spec in GROUP_CASES:
            kwargs = dict(spec)
            how = kwargs.pop("eos", None)
            if how is not None:
                kwargs["eos_token_id"] = _pick_eos(model, ids, mask, {k: v for k, v in kwargs.items()
                                                                       if k != "min_new_tokens"}, how)
            out = _generate(model, ids, mask, kwargs)
            case = {
                "name": f"{model_name}-{name}", "model": model_name, "input_ids": ids.tolist(),
                "attention_mask": mask.tolist(), "kwargs": dict(kwargs, max_new_tokens=MAX_NEW, pad_token_id=0),
                "sequences": out.sequences.tolist(),
                "sequences_scores": out.sequences_scores.tolist(),
            }
            if kwargs.get("output_scores"):  # the processed scores of the first steps, Hamming penalty included
                case["scores"] = [[[round(v, 5) for v in row] for row in s.tolist()] for s in out.scores[:SCORE_STEPS]]
            cases.append(case)
            print(f"{case['name']}: {tuple(out.sequences.shape)}", file=sys.stderr)
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", action="store_true", help="re-create the stored models first (main venv)")
    args = parser.parse_args()
    if args.weights:
        from golden_models import STORED, write_stored

        for name in STORED:
            print(f"wrote {write_stored(name)}", file=sys.stderr)
    reexec_in_golden_venv(__file__, [a for a in sys.argv[1:] if a != "--weights"])
    import transformers

    data = {"transformers_version": transformers.__version__, "max_new_tokens": MAX_NEW,
            "cases": make_cases()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} ({len(data['cases'])} cases)", file=sys.stderr)


if __name__ == "__main__":
    main()
