"""Constrained beam search against golden outputs of transformers 4.55.4.

transformers 5.x no longer ships constrained beam search; ``scripts/make_constrained_goldens.py``
runs 4.55.4 (the last release with it built in) in a separate venv on the models stored in
``tests/data`` (the group-beam goldens' weights) and writes ``tests/goldens/constrained.json``.
While generating it compares every constraint state 4.55.4 builds with ferrogen's tracking
(``tests/constraint_reference.py``) and records where they part (``defects``), and whether each
returned row contains every constraint (``satisfied``).

Which cases are compared, and how (DESIGN.md: match transformers where it is right):
- every case where 4.55.4 satisfies every constraint: identical sequences and scores, unless
  listed in :data:`EXCLUDED`. This includes cases where 4.55.4's tracking departed from
  ferrogen's without changing the result.
- cases where 4.55.4 returns rows that miss a constraint although its tracking never departed:
  4.55.4's ``finalize`` ranks its fallback beams (which miss a constraint) by score, above the
  hypotheses that satisfy every constraint. The script also stores the same 4.55.4 search with
  the satisfying hypotheses ranked first (``sequences_satisfying_first``); ferrogen must equal it
  where every row of it satisfies the constraints. Where rows still miss them, 4.55's last steps
  kept beams that could no longer complete them, which ferrogen does not (issue 15): there every
  row ferrogen returns must satisfy them (the same holds for ``sequences_ferrogen_tracking``).
- :data:`EXCLUDED`: cases whose result 4.55.4's tracking defects changed. Each reason is checked
  against the recorded data, and ferrogen's outputs there are checked for the constraints. The
  script also stores, for each of them, the same 4.55.4 search with its ``ConstraintListState``
  replaced by the reference of ferrogen's tracking (``sequences_ferrogen_tracking``); ferrogen
  must equal it token for token, so the tracking is the whole difference.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

import ferrogen
from conftest import assert_close_to_golden
from constraint_reference import contains, satisfies
from golden_models import load_stored
from golden_processors import PROCESSORS

GOLDEN = json.loads((Path(__file__).parent / "goldens" / "constrained.json").read_text())
CASES = {case["name"]: case for case in GOLDEN["cases"]}

_PARTIAL = "drops a live partial match (issue 19070)"
_SHARED = "copy(stateful=True) shares current_seq"
# name -> (defect that changed 4.55.4's result, explanation)
EXCLUDED: dict[str, tuple[str, str]] = {
    "gpt2-phrase3": (_PARTIAL, "a repeated 50 inside [50, 51, 52] resets 4.55's progress instead of restarting it"),
    "gpt2-eos-nb4": (_PARTIAL, "'40 40' resets 4.55's progress on [40, 41]; banks differ from the first repeat on"),
    "t5-objects": (_PARTIAL, "a token that breaks one phrase cannot start the other constraints in 4.55"),
    "gpt2-multi3-nb8": (_PARTIAL, "4.55 loses partial matches of [50, 51] and misses constraints in 2 rows"),
    "gpt2-norepeat-multi-nb8": (_PARTIAL, "4.55 loses partial matches and misses constraints in 4 rows"),
    "gpt2-fallback-nrs4": (_PARTIAL, "4.55 loses a partial match and also ranks unsatisfying fallbacks first"),
    "gpt2-multi-long32": (_PARTIAL, "as the bench's 64-token run: 4.55 drops the live [40] of a repeated 40 "
                                    "(bank 1 -> 0) where ferrogen keeps it, so the banks hold other hypotheses; "
                                    "both satisfy every constraint, row 0 parts after ~20 tokens"),
    "gpt2-shared-prefix": (_SHARED, "alternatives [45, 46] / [45, 47] share 45: adding 46 to one hypothesis "
                                    "corrupts the state the 47 candidate is copied from"),
    "t5-shared-prefix": (_SHARED, "as gpt2-shared-prefix"),
    "kjv-gpt2-guide-scared": (_SHARED, "the blog's example: the three scream forms share their first three tokens "
                                       "here, so 4.55 corrupts the states of the second and third"),
}
COMPARED = sorted(n for n, c in CASES.items() if all(c["satisfied"]) and n not in EXCLUDED)
RANKED = sorted(n for n, c in CASES.items() if "sequences_satisfying_first" in c and n not in EXCLUDED)


@pytest.fixture(scope="module")
def stored():
    """Model name -> (model, tokenizer or None): the stored tiny models and the embedded ones."""
    models = {name: (load_stored(name), None) for name in ("gpt2", "t5")}
    for name, kind in (("kjv-gpt2", "causal"), ("kjv-t5", "seq2seq")):
        models[name] = ferrogen.text.load_model(ferrogen.embedded_model_path(kind))
    return models


def all_specs(case: dict) -> list:
    kwargs = case["kwargs"]
    return ([ids for _, ids in kwargs.get("objects", [])] + list(kwargs.get("force_words_ids", []))
            + list(case.get("resolved_force_words_ids", [])))


def run(stored, case):
    kwargs = dict(case["kwargs"])
    if "objects" in kwargs:
        kwargs["constraints"] = [ferrogen.PhrasalConstraint(ids) if kind == "p" else ferrogen.DisjunctiveConstraint(ids)
                                 for kind, ids in kwargs.pop("objects")]
    processor = kwargs.pop("processor", None)
    processors = [PROCESSORS[processor]()] if processor else None
    model, tokenizer = stored[case["model"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flagged rows warn; the tests check the flags
        return ferrogen.generate(model, input_ids=torch.tensor(case["input_ids"]), tokenizer=tokenizer,
                                 attention_mask=torch.tensor(case["attention_mask"]), logits_processor=processors,
                                 return_dict_in_generate=True, output_scores=True, **kwargs)


def test_golden_file_is_from_4_55_and_covers_the_issue():
    assert GOLDEN["transformers_version"] == "4.55.4"
    compared = [CASES[n] for n in COMPARED + RANKED]
    assert len(compared) >= 12
    kw = [c["kwargs"] for c in compared]
    assert {c["model"] for c in compared} == {"gpt2", "t5", "kjv-gpt2", "kjv-t5"}
    assert {k["num_beams"] for k in kw} >= {4, 8}
    assert any(k.get("num_return_sequences", 1) > 1 for k in kw)
    specs = [s for c in compared for s in all_specs(c)]
    assert any(isinstance(s[0], list) for s in specs), "a disjunctive constraint"
    assert any(not isinstance(s[0], list) and len(s) >= 2 for s in specs), "a multi-token phrase"
    assert any(len(all_specs(c)) >= 2 for c in compared), "several constraints at once"
    assert any("objects" in k for k in kw) and any("eos_token_id" in k for k in kw)
    assert any("processor" in k or "min_new_tokens" in k for k in kw), "logits processors"


@pytest.mark.parametrize("name", COMPARED)
def test_matches_transformers_4_55(stored, name):
    case = CASES[name]
    out = run(stored, case)
    assert out.sequences.tolist() == case["sequences"]
    assert all(out.constraints_satisfied)
    assert out.finish_reasons.count("constraints_unmet") == 0
    if case["sequences_scores"] is not None:
        assert_close_to_golden(out.sequences_scores, torch.tensor(case["sequences_scores"]))


@pytest.mark.parametrize("name", RANKED)
def test_matches_4_55_search_with_satisfying_hypotheses_ranked_first(stored, name):
    """4.55.4 returned rows that miss a constraint, ranked by score above ones that satisfy
    every constraint; ferrogen ranks satisfying hypotheses first and flags the others."""
    case = CASES[name]
    assert not all(case["satisfied"]) and not case["defects"]
    out = run(stored, case)
    reference = case["sequences_satisfying_first"]
    if all(_rows_satisfy(case, reference)):
        assert out.sequences.tolist() == reference
    else:
        # 4.55's last steps keep beams that can no longer complete the constraints; ferrogen's do
        # not (issue 15), so here every returned row satisfies them instead
        assert all(out.constraints_satisfied) and all(_rows_satisfy(case, out.sequences.tolist()))
    assert out.sequences.tolist() != case["sequences"]
    per_item = case["kwargs"].get("num_return_sequences", 1)
    flags = out.constraints_satisfied
    for item in range(len(flags) // per_item):
        mine = flags[item * per_item:(item + 1) * per_item]
        assert mine == sorted(mine, reverse=True), "satisfying rows first"
    assert ["constraints_unmet" if not ok else r for ok, r in zip(flags, out.finish_reasons)] == out.finish_reasons


@pytest.mark.parametrize("name", sorted(EXCLUDED))
def test_excluded_cases_are_hit_by_a_4_55_defect(stored, name):
    defect, _ = EXCLUDED[name]
    case = CASES[name]
    assert case["defects"].get(defect, 0) > 0, f"{name}: the golden run recorded no {defect!r}"
    out = run(stored, case)
    assert out.sequences.tolist() != case["sequences"], f"{name} matches 4.55 after all: compare it"
    _check_flags(case, out)
    if defect == _SHARED:  # 4.55 satisfied these too, with corrupted states; so does ferrogen, without
        assert all(out.constraints_satisfied)


@pytest.mark.parametrize("name", sorted(EXCLUDED))
def test_excluded_cases_match_4_55_with_ferrogen_tracking(stored, name):
    """4.55.4's search with only its constraint tracking swapped for ferrogen's (and satisfying
    hypotheses ranked first) gives ferrogen's output exactly: the deliberate tracking difference
    (and 4.55's copy defect) is the whole reason these cases part."""
    case = CASES[name]
    assert "sequences_ferrogen_tracking" in case, f"{name}: regenerate the goldens"
    out = run(stored, case)
    reference = case["sequences_ferrogen_tracking"]
    if all(_rows_satisfy(case, reference)):
        assert out.sequences.tolist() == reference
    else:  # as in the ranked cases: ferrogen's last steps keep every returned row satisfiable
        assert all(out.constraints_satisfied) and all(_rows_satisfy(case, out.sequences.tolist()))


def test_long_run_parts_only_through_the_tracking(stored):
    """The bench's shape (2 constraints, beams 4, min_new_tokens = max_new_tokens) over a longer
    run: 4.55.4 satisfies every constraint and so does ferrogen, yet the results part, because a
    repeated first token (40 40; also 46 46 for [46, 47]) keeps the constraint in progress for
    ferrogen (bank 1) and resets it in 4.55 (bank 0), so the banks keep other hypotheses.
    The T5 run meets the same departure without a changed result and is compared above."""
    case = CASES["gpt2-multi-long32"]
    assert all(case["satisfied"]) and case["defects"] == {_PARTIAL: case["defects"][_PARTIAL]}
    assert "t5-multi-long32" in COMPARED and CASES["t5-multi-long32"]["defects"]
    out = run(stored, case)
    assert all(out.constraints_satisfied)
    mine, theirs = out.sequences.tolist(), case["sequences"]
    assert mine != theirs and mine == case["sequences_ferrogen_tracking"]
    parted = [r for r in range(len(mine)) if mine[r] != theirs[r]]
    assert parted and out.sequences_scores[parted[0]] != pytest.approx(case["sequences_scores"][parted[0]], abs=1e-4)


def test_force_words_resolve_as_in_the_golden_run(stored):
    from ferrogen.constraints import words_to_ids

    for case in (c for c in CASES.values() if "force_words" in c["kwargs"]):
        tok = stored[case["model"]][1]
        resolved = [words_to_ids(tok, w) if isinstance(w, str) else [words_to_ids(tok, x) for x in w]
                    for w in case["kwargs"]["force_words"]]
        assert resolved == case["resolved_force_words_ids"]


def test_compared_cases_include_hypotheses_finished_by_eos():
    """Hypotheses ending on EOS before max_new_tokens are among the compared outputs."""
    ended = 0
    for case in (CASES[n] for n in COMPARED):
        eos = case["kwargs"].get("eos_token_id", 1 if case["model"].startswith("kjv") else None)
        prompt = 1 if case["model"].endswith("t5") else len(case["input_ids"][0])
        ended += sum(eos in row[prompt:] for row in case["sequences"])
    assert ended > 0


def test_ferrogen_satisfies_the_phrase_where_4_55_misses_it(stored):
    """DESIGN.md's example: [33, 34, 35] on the random GPT-2 at max_new_tokens=20. 4.55.4's best
    output misses it for every prompt; ferrogen's best output contains it for every prompt."""
    case = CASES["gpt2-issue19070"]
    per_item = case["kwargs"]["num_return_sequences"]
    width = len(case["input_ids"][0])
    theirs = case["sequences"][::per_item]
    assert not any(contains(row[width:], [33, 34, 35]) for row in theirs)
    out = run(stored, case)
    for row in out.sequences[::per_item].tolist():
        assert contains(row[width:], [33, 34, 35]), row
    assert all(out.constraints_satisfied[::per_item])


def _rows_satisfy(case: dict, rows: list) -> list:
    """Per row: whether it contains every constraint (prompt included, padding not)."""
    specs = all_specs(case)
    per_item = case["kwargs"].get("num_return_sequences", 1)
    if case["model"].endswith("t5"):
        return [satisfies(row[1:], specs) for row in rows]
    masks = [case["attention_mask"][r // per_item] for r in range(len(rows))]
    return [satisfies([t for i, t in enumerate(row) if i >= len(m) or m[i]], specs) for row, m in zip(rows, masks)]


def _check_flags(case: dict, out) -> None:
    """Every row ferrogen flags as satisfying contains every constraint (prompt included)."""
    specs = all_specs(case)
    per_item = case["kwargs"].get("num_return_sequences", 1)
    encoder_decoder = case["model"].endswith("t5")
    for r, (row, ok) in enumerate(zip(out.sequences.tolist(), out.constraints_satisfied)):
        if encoder_decoder:
            text = row[1:]
        else:
            mask = case["attention_mask"][r // per_item]
            text = [t for i, t in enumerate(row) if i >= len(mask) or mask[i]]
        assert satisfies(text, specs) or not ok, (r, row)
