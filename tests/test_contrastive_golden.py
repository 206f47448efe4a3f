"""Contrastive search against golden outputs of transformers 4.55.4, plus its errors.

transformers 5.x moved contrastive search to the Hub; ``scripts/make_contrastive_goldens.py``
runs 4.55.4 (the last release with it built in) in a separate venv on the models stored in
``tests/data`` and writes ``tests/goldens/contrastive.json``. Both sides load the same
weights; this test needs only the JSON. Grid: GPT-2 and T5, alpha 0.4 / 0.6, top_k 2 / 4 / 6,
batch 1 and a left-padded batch of 3, plus EOS mid-batch, min_new_tokens, n-gram and
repetition processors, and processed scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import ferrogen
from conftest import assert_close_to_golden, left_padded_batch

GOLDEN = json.loads((Path(__file__).parent / "goldens" / "contrastive.json").read_text())
CASES = {case["name"]: case for case in GOLDEN["cases"]}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(stored, case, **extra):
    ids = torch.tensor(case["input_ids"])
    mask = torch.tensor(case["attention_mask"])
    kwargs = dict(case["kwargs"], return_dict_in_generate=True, **extra)
    return ferrogen.generate(stored[case["model"]], input_ids=ids, attention_mask=mask, **kwargs)


@pytest.mark.parametrize("name", sorted(CASES))
def test_contrastive_matches_golden(stored, name):
    case = CASES[name]
    out = run(stored, case)
    assert out.sequences.tolist() == case["sequences"]
    for ours, theirs in zip(out.scores or (), case.get("scores", [])):
        theirs = torch.tensor(theirs)
        finite = torch.isfinite(theirs)
        assert torch.equal(finite, torch.isfinite(ours))
        assert_close_to_golden(ours[finite], theirs[finite])


def test_grid_is_complete():
    for model in ("gpt2", "t5"):
        for batch in ("b1", "b3"):
            for alpha in (0.4, 0.6):
                for k in (2, 4, 6):
                    assert f"{model}-{batch}-a{alpha}-k{k}" in CASES


def test_eos_row_pads_and_reports(stored):
    case = CASES["gpt2-b3-eos-mid"]
    out = run(stored, case)
    eos = case["kwargs"]["eos_token_id"]
    row = out.sequences[1].tolist()
    after = row[row.index(eos, len(case["input_ids"][1])) + 1 :]
    assert after and all(t == 0 for t in after)
    assert out.finish_reasons[1] == "eos"


def test_rows_do_not_depend_on_batch_companions(stored):
    """A row alone gives what it gives in the padded batch (up to float noise, which these
    models do not hit)."""
    ids, mask = left_padded_batch((5, 3, 7))
    kwargs = dict(penalty_alpha=0.6, top_k=4, max_new_tokens=8, pad_token_id=0)
    batch = ferrogen.generate(stored["gpt2"], input_ids=ids, attention_mask=mask, **kwargs)
    width = ids.shape[1]
    for row, n in enumerate((5, 3, 7)):
        alone = ferrogen.generate(stored["gpt2"], input_ids=ids[row : row + 1, width - n :], **kwargs)
        assert batch[row, width:].tolist() == alone[0, n:].tolist()


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(penalty_alpha=0.6, top_k=4, do_sample=True), "penalty_alpha"),
        (dict(penalty_alpha=0.6, top_k=4, num_beams=2), "penalty_alpha"),
        (dict(penalty_alpha=0.6, top_k=1), "top_k"),
        (dict(penalty_alpha=1.5, top_k=4), "penalty_alpha"),
        (dict(penalty_alpha=-0.1, top_k=4), "penalty_alpha"),
    ],
)
def test_invalid_settings_name_the_argument(stored, kwargs, field):
    ids, mask = left_padded_batch((4,))
    with pytest.raises(ValueError, match=f"^{field}:"):
        ferrogen.generate(stored["gpt2"], input_ids=ids, attention_mask=mask, max_new_tokens=3, **kwargs)


def test_plain_torch_module_is_refused(stored):
    class Bare(torch.nn.Module):
        def forward(self, input_ids):
            return torch.zeros(input_ids.shape[0], input_ids.shape[1], 8)

    with pytest.raises(ValueError, match="^model:"):
        ferrogen.generate(Bare(), input_ids=torch.tensor([[3, 4]]), max_new_tokens=2, penalty_alpha=0.5, top_k=3)
