#!/usr/bin/env python3
"""Writes transformers 4.55.4's ``output_attentions`` / ``output_hidden_states`` of the beam
strategies that transformers 5.x no longer ships (diverse group beam search, constrained beam
search), on the models stored in ``tests/data`` (so both sides load identical weights).

    python scripts/make_beam_output_goldens.py    # re-runs itself in the golden venv if needed

Writes ``tests/goldens/beam_outputs.json`` (per case: inputs, ``generate`` keywords, the
sequences, and the shape of every collected tuple) and ``tests/goldens/beam_outputs.safetensors``
(the tensors, float32, keyed ``case/field/step/layer``; the encoder's ``case/field/layer``).
Every case pads a batch of three prompts, returns fewer sequences than beams and picks an EOS
that the free search emits at step 2, so that beams finish early (and, in one case, a whole group
of a batch item while other rows run on: ``dead_rows``, see :class:`_DeadRows`). CI only reads the two files.
"""

from __future__ import annotations

import inspect
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from golden_reexec import reexec_in_golden_venv

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
OUT = ROOT / "tests" / "goldens" / "beam_outputs"
MAX_NEW = 6
LENGTHS = (5, 3, 7)
# (name, generate kwargs); every case also gets an EOS the free search emits at step 2 of item 1's best row
CASES: list[tuple[str, dict[str, Any]]] = [
    ("group-g4x2", dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0, num_return_sequences=2)),
    # the constraint is the token the free search emits at step 1: beams can end on the EOS at step 2
    ("constrained-early-nb4", dict(num_beams=4, num_return_sequences=2, force_words_ids="step 1")),
]
MODELS = ("gpt2", "t5")
#: transformers' per-step fields and the encoder's (once per call)
PER_STEP = ("attentions", "hidden_states", "decoder_attentions", "cross_attentions", "decoder_hidden_states")
ENCODER = ("encoder_attentions", "encoder_hidden_states")


def _generate(model: Any, ids: Any, mask: Any, kwargs: dict[str, Any], collect: bool) -> Any:
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW, pad_token_id=0,
                              do_sample=False, return_dict_in_generate=True, output_attentions=collect,
                              output_hidden_states=collect, **kwargs)


def _tensors(case: str, out: Any) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """The collected tensors under their keys, and each field's nested shapes."""
    tensors: dict[str, Any] = {}
    shapes: dict[str, list[Any]] = {}
    for field in PER_STEP:
        steps = getattr(out, field, None)
        if steps is None:
            continue
        shapes[field] = [[list(t.shape) for t in layers] for layers in steps]
        for s, layers in enumerate(steps):
            for k, t in enumerate(layers):
                tensors[f"{case}/{field}/{s}/{k}"] = t.detach().float().contiguous()
    for field in ENCODER:
        layers = getattr(out, field, None)
        if layers is None:
            continue
        shapes[field] = [list(t.shape) for t in layers]
        for k, t in enumerate(layers):
            tensors[f"{case}/{field}/{k}"] = t.detach().float().contiguous()
    return tensors, shapes


class _DeadRows:
    """Records, per forward call, the rows 4.55.4 feeds padding because their batch item (or its
    group) is done: ``BeamSearchScorer.process`` / ``ConstrainedBeamSearchScorer.process`` give
    them ``pad_token_id`` and parent ``0`` (row 0 of batch item 0, not of their own item), so
    those rows run on another item's history. ferrogen keeps them on their own item's first beam;
    nothing of them reaches the result (docs/transformers-differences.md)."""

    def __init__(self) -> None:
        from transformers.generation import beam_search

        self.classes = (beam_search.BeamSearchScorer, beam_search.ConstrainedBeamSearchScorer)
        self.saved = [cls.process for cls in self.classes]
        self.per_step: list[list[int]] = [[]]  # forward call 0 (the prompt) has none

    def __enter__(self) -> "_DeadRows":
        for cls, process in zip(self.classes, self.saved):
            cls.process = self._wrap(process)  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: Any) -> None:
        for cls, process in zip(self.classes, self.saved):
            cls.process = process  # type: ignore[method-assign]

    def _wrap(self, process: Any) -> Any:
        def wrapped(scorer: Any, *args: Any, group_index: Any = 0, **kwargs: Any) -> Any:
            if not group_index:  # a step's first call: no group of this step has been processed yet
                groups = getattr(scorer, "num_beam_groups", 1)
                size = scorer.num_beams // groups
                self.per_step.append([item // groups * scorer.num_beams + item % groups * size + r
                                      for item, done in enumerate(scorer._done.tolist()) if done
                                      for r in range(size)])
            if "group_index" in inspect.signature(process).parameters:
                kwargs["group_index"] = group_index
            return process(scorer, *args, **kwargs)

        return wrapped


def make_cases() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from conftest import left_padded_batch
    from golden_models import load_stored

    cases, tensors = [], {}
    ids, mask = left_padded_batch(LENGTHS)
    for model_name in MODELS:
        model = load_stored(model_name)
        model.set_attn_implementation("eager")  # sdpa returns no attention weights
        start = 1 if model.config.is_encoder_decoder else ids.shape[1]
        for name, spec in CASES:
            free_spec = dict(spec, force_words_ids=[[40]]) if spec.get("force_words_ids") == "step 1" else spec
            free = _generate(model, ids, mask, free_spec, collect=False).sequences
            row = spec["num_return_sequences"]
            kwargs = dict(free_spec, eos_token_id=int(free[row, start + 2]))
            if spec.get("force_words_ids") == "step 1":
                kwargs["force_words_ids"] = [[int(free[row, start + 1])]]
            with _DeadRows() as dead:
                out = _generate(model, ids, mask, kwargs, collect=True)
            case = f"{model_name}-{name}"
            found, shapes = _tensors(case, out)
            tensors.update(found)
            cases.append({
                "name": case, "model": model_name, "input_ids": ids.tolist(), "attention_mask": mask.tolist(),
                "kwargs": dict(kwargs, max_new_tokens=MAX_NEW, pad_token_id=0),
                "sequences": out.sequences.tolist(), "shapes": shapes,
                "dead_rows": dead.per_step[:len(next(iter(shapes.values())))],
            })
            print(f"{case}: {tuple(out.sequences.shape)}, {len(found)} tensors", file=sys.stderr)
    return cases, tensors


def main() -> None:
    reexec_in_golden_venv(__file__)
    import transformers
    from safetensors.torch import save_file

    cases, tensors = make_cases()
    data = {"transformers_version": transformers.__version__, "max_new_tokens": MAX_NEW, "cases": cases}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.with_suffix(".json").write_text(json.dumps(data, separators=(",", ":")) + "\n")
    save_file(tensors, str(OUT.with_suffix(".safetensors")))
    print(f"wrote {OUT.relative_to(ROOT)}.json/.safetensors ({len(cases)} cases)", file=sys.stderr)


if __name__ == "__main__":
    main()
