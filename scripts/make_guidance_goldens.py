#!/usr/bin/env python3
"""Writes the golden outputs of classifier-free guidance (``guidance_scale``), and of the green-list
watermark (``watermarking_config``), with the strategies
transformers 5.x no longer ships (group beam search, constrained beam search, contrastive search, DoLa),
produced by transformers 4.55.4 on the decoder-only models stored in ``tests/data``.

    python scripts/make_guidance_goldens.py    # re-runs itself in the golden venv if needed

Writes ``tests/goldens/guidance.json``: per case its inputs, the ``generate`` keyword arguments
(``negative_prompt_ids`` / ``negative_prompt_attention_mask`` as lists, ``watermarking_config`` as a dict), transformers'
``sequences`` (with ``sequences_scores`` for beams) and the ``scores`` of the first steps
(4.55.4's constrained beam search records them with the running beam scores added). CI only reads the JSON.
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
OUT = ROOT / "tests" / "goldens" / "guidance.json"
LENGTHS = (5, 3, 7)
MAX_NEW = 8
SCORE_STEPS = 2

# (name, generate kwargs, rows of the negative prompt or 0 for none, whether it is masked).
# The unconditional branch is called with the rows transformers' processor sees: every row for
# contrastive search and DoLa (batch) and constrained beam search (batch x beams), one group's rows for
# group beam search (batch x beams / groups), once per group and step.
CASES: list[tuple[str, dict[str, Any], int, bool]] = [
    ("group-g4x2", dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5, guidance_scale=1.5), 0, False),
    ("group-g6x3-negative", dict(num_beams=6, num_beam_groups=3, diversity_penalty=1.0, guidance_scale=2.5,
                                 num_return_sequences=2), 6, True),
    ("group-g4x2-processors", dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0, guidance_scale=0.7,
                                   no_repeat_ngram_size=2, min_new_tokens=3), 6, False),
    ("constrained", dict(num_beams=4, force_words_ids=[[7, 8]], guidance_scale=1.5), 0, False),
    ("constrained-negative", dict(num_beams=3, force_words_ids=[[20]], guidance_scale=0.5,
                                  num_return_sequences=2), 9, True),
    ("constrained-returns-2", dict(num_beams=3, force_words_ids=[[9]], guidance_scale=2.0,
                                   num_return_sequences=2), 9, True),
    ("contrastive", dict(penalty_alpha=0.6, top_k=4, guidance_scale=1.5), 0, False),
    ("contrastive-negative", dict(penalty_alpha=0.4, top_k=3, guidance_scale=3.0, no_repeat_ngram_size=2), 3, True),
    ("dola-high", dict(dola_layers="high", no_repeat_ngram_size=3, guidance_scale=1.5), 0, False),
    ("dola-low-negative", dict(dola_layers="low", guidance_scale=2.0), 3, True),
    # the green-list watermark (stateless: a function of each row's previous token), last processor
    ("watermark-contrastive", dict(penalty_alpha=0.6, top_k=4, watermarking_config=dict(
        greenlist_ratio=0.25, bias=2.5, seeding_scheme="lefthash")), 0, False),
    ("watermark-group-selfhash", dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5, watermarking_config=dict(
        greenlist_ratio=0.25, bias=2.5, seeding_scheme="selfhash")), 0, False),
    ("group-g4x2-no-cache", dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5, guidance_scale=2.0,
                                 use_cache=False), 6, False),
]
MODELS = ("gpt2", "llama")
# No case uses repetition_penalty: on a left-padded batch 4.55.4 penalises the pad token (0, in
# every padded row's input_ids) where 5.x and ferrogen do not, a difference of its own that
# guidance only magnifies. Each constrained case is one where 4.55.4 returns the forced words in
# every row and its phrase tracking does not go astray (tests/test_constrained_golden.py lists
# where it does: with the phrase [9, 10] here, it did).


def negative_prompt(rows: int, masked: bool) -> dict[str, Any]:
    import torch

    if rows == 0:
        return {}
    ids = torch.randint(3, 60, (rows, 3), generator=torch.Generator().manual_seed(rows)).tolist()
    out: dict[str, Any] = {"negative_prompt_ids": ids}
    if masked:
        mask = [[1, 1, 1] for _ in range(rows)]
        mask[0][0] = 0
        out["negative_prompt_attention_mask"] = mask
    return out


def as_tensors(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The stored keyword arguments as generate takes them (the negative prompt as tensors)."""
    import torch

    from transformers import WatermarkingConfig

    names = ("negative_prompt_ids", "negative_prompt_attention_mask")
    out = {k: torch.tensor(v) if k in names else v for k, v in kwargs.items()}
    if "watermarking_config" in out:  # 4.55.4 ignores a plain dict here ("not valid")
        out["watermarking_config"] = WatermarkingConfig(**out["watermarking_config"])
    return out


def make_cases() -> list[dict[str, Any]]:
    import torch
    from conftest import left_padded_batch
    from golden_models import load_stored

    cases = []
    ids, mask = left_padded_batch(LENGTHS)
    for model_name in MODELS:
        model = load_stored(model_name)
        for name, spec, rows, masked in CASES:
            kwargs = dict(spec, **negative_prompt(rows, masked), max_new_tokens=MAX_NEW, pad_token_id=0)
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, output_scores=True,
                                     return_dict_in_generate=True, **as_tensors(kwargs))
            cases.append({
                "name": f"{model_name}-{name}", "model": model_name, "input_ids": ids.tolist(),
                "attention_mask": mask.tolist(), "kwargs": kwargs, "sequences": out.sequences.tolist(),
                "scores": [[[round(v, 5) for v in row] for row in s.tolist()] for s in out.scores[:SCORE_STEPS]],
                "sequences_scores": None if out.get("sequences_scores") is None else out.sequences_scores.tolist(),
            })
            print(f"{cases[-1]['name']}: {tuple(out.sequences.shape)}", file=sys.stderr)
    return cases


def main() -> None:
    reexec_in_golden_venv(__file__, sys.argv[1:])
    import transformers

    data = {"transformers_version": transformers.__version__, "max_new_tokens": MAX_NEW, "cases": make_cases()}
    OUT.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} ({len(data['cases'])} cases)", file=sys.stderr)


if __name__ == "__main__":
    main()
