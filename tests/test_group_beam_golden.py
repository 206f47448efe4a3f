"""Diverse (group) beam search against golden outputs of transformers 4.55.4.

transformers 5.x no longer ships group beam search; ``scripts/make_goldens.py`` runs 4.55.4
(the last release with it built in) in a separate venv on the models stored in
``tests/data`` and writes ``tests/goldens/group_beam.json``. Both sides load the same
weights; this test needs only the JSON.

Where 4.55.4 is wrong, ferrogen follows the intent and the check says so:
- ``beam_indices``: 4.55.4 records group-local indices and reads the wrong group's history
  for hypotheses ended by EOS, so they cannot index ``scores``. ferrogen returns the row
  (``batch × num_beams + beam``) of the parent beam at every step, as transformers' beam
  search does; :func:`test_beam_indices_reproduce_sequence_scores` checks that meaning.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import ferrogen
from conftest import assert_close_to_golden

GOLDEN = json.loads((Path(__file__).parent / "goldens" / "group_beam.json").read_text())
CASES = {case["name"]: case for case in GOLDEN["cases"]}


def run(stored, case, **extra):
    ids = torch.tensor(case["input_ids"])
    mask = torch.tensor(case["attention_mask"])
    kwargs = dict(case["kwargs"], return_dict_in_generate=True, output_scores=True, **extra)
    return ferrogen.generate(stored[case["model"]], input_ids=ids, attention_mask=mask, **kwargs)


@pytest.mark.parametrize("name", sorted(CASES))
def test_group_beam_matches_golden(stored, name):
    case = CASES[name]
    out = run(stored, case)
    assert out.sequences.tolist() == case["sequences"]
    assert_close_to_golden(out.sequences_scores, torch.tensor(case["sequences_scores"]))
    for ours, theirs in zip(out.scores, case.get("scores", [])):
        theirs = torch.tensor(theirs)
        finite = torch.isfinite(theirs)
        assert torch.equal(finite, torch.isfinite(ours))
        assert_close_to_golden(ours[finite], theirs[finite])


@pytest.mark.parametrize("name", sorted(CASES))
def test_unread_scores_path_matches_golden(stored, name):
    """Without ``output_scores`` the core never writes the processed scores (log-softmax and
    Hamming penalty inside the top-k scan, when no processor runs): the same sequences."""
    case = CASES[name]
    ids, mask = torch.tensor(case["input_ids"]), torch.tensor(case["attention_mask"])
    out = ferrogen.generate(stored[case["model"]], input_ids=ids, attention_mask=mask, **case["kwargs"])
    assert out.tolist() == case["sequences"]


@pytest.mark.parametrize("name", ["gpt2-eos-g4x2", "t5-eos-g6x3-early-true", "t5-g8x4-all"])
def test_beam_indices_reproduce_sequence_scores(stored, name):
    """Summing each step's processed score at ``beam_indices`` gives the sequence score."""
    case = CASES[name]
    out = run(stored, case)
    lp = case["kwargs"].get("length_penalty", 1.0)
    start = 1 if case["model"] == "t5" else len(case["input_ids"][0])
    for r in range(out.sequences.shape[0]):
        steps = [int(i) for i in out.beam_indices[r] if i >= 0]
        total = sum(float(out.scores[t][row, out.sequences[r, start + t]]) for t, row in enumerate(steps))
        assert math.isclose(total / len(steps) ** lp, float(out.sequences_scores[r]), rel_tol=1e-4, abs_tol=1e-4)


def test_golden_file_is_from_4_55():
    assert GOLDEN["transformers_version"] == "4.55.4"
    assert any("eos_token_id" in c["kwargs"] for c in GOLDEN["cases"])
