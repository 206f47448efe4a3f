#!/usr/bin/env python3
"""Writes the golden outputs of constrained beam search, produced by transformers 4.55.4 (the
last release with it built in) on the models stored in ``tests/data`` (the same weights as the
group-beam goldens of ``scripts/make_goldens.py``).

    python scripts/make_constrained_goldens.py     # re-runs itself in the golden venv if needed

Writes ``tests/goldens/constrained.json``: for every case its inputs, the ``generate`` keyword
arguments, transformers' ``sequences`` / ``sequences_scores`` and two verdicts the test uses to
decide whether the case can be compared:

- ``satisfied``: per returned row, whether it contains every constraint (prompt included, as
  transformers counts it);
- ``defects``: where 4.55.4's constraint tracking departed from ferrogen's. While generating,
  every ``ConstraintListState`` transformers builds (by ``reset`` from a sequence, or by
  ``copy(stateful=True)`` + ``add``) is compared with the brute-force reference of ferrogen's
  tracking in ``tests/constraint_reference.py`` (completion, bank, advancing tokens). A
  departure after ``reset`` is the "forgets a live partial match / the breaking token cannot
  restart" defect (transformers issue 19070); after ``copy`` + ``add`` it is the
  ``DisjunctiveConstraint.copy(stateful=True)`` defect, which shares ``current_seq`` between
  hypotheses so that adding one advancing token corrupts the next one's state.

When some returned row misses a constraint although the search tracked progress correctly,
the case is generated a second time with 4.55.4's ``finalize`` ranking every hypothesis that
satisfies the constraints before those that do not (ferrogen's rule; 4.55.4 ranks its fallback
beams by score alone) and stored as ``sequences_satisfying_first``: the same search, only the
final ranking changed.

When 4.55.4's tracking departed from ferrogen's and that changed the result, the case is also
generated with 4.55.4's ``ConstraintListState`` replaced by the reference of ferrogen's tracking
(:class:`FerrogenTracking`, satisfying hypotheses ranked first) and stored as
``sequences_ferrogen_tracking``: ferrogen must equal it, so the tracking is the whole difference.

CI only reads the JSON; it never needs 4.55.
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
OUT = ROOT / "tests" / "goldens" / "constrained.json"
MODELS = ("gpt2", "t5")
LENGTHS = (5, 3, 7)
MAX_NEW = 12

# (name, models, generate kwargs). Extra keys: "objects" -> constraints=[Phrasal/Disjunctive ...]
# ("p" phrase, "d" alternatives); "eos": "mid"/"first" picks an EOS the free beam search emits;
# "processor": a user logits processor of tests/golden_processors.py.
CASES: list[tuple[str, tuple[str, ...], dict[str, Any]]] = [
    ("phrase1", MODELS, dict(num_beams=4, force_words_ids=[[40]])),
    ("phrase2-nb8", MODELS, dict(num_beams=8, num_return_sequences=2, force_words_ids=[[40, 41]])),
    ("phrase3", MODELS, dict(num_beams=4, max_new_tokens=16, force_words_ids=[[50, 51, 52]])),
    ("disj-nb8", MODELS, dict(num_beams=8, num_return_sequences=2, force_words_ids=[[[45], [46, 47], [60, 61, 62]]])),
    ("multi-nb8", MODELS, dict(num_beams=8, force_words_ids=[[40, 41], [[45], [46, 47]]])),
    ("multi3-nb8", MODELS, dict(num_beams=8, num_return_sequences=2, max_new_tokens=16,
                                force_words_ids=[[40], [50, 51], [[45], [46, 47]]])),
    ("objects", MODELS, dict(num_beams=4, objects=[("p", [40, 41]), ("d", [[45], [46, 47]])], force_words_ids=[[55]])),
    ("eos-nb4", MODELS, dict(num_beams=4, num_return_sequences=2, force_words_ids=[[40, 41]], eos="mid")),
    ("eos-lp2-early", MODELS, dict(num_beams=4, num_return_sequences=2, length_penalty=2.0, early_stopping=True,
                                   force_words_ids=[[[45], [46, 47]]], eos="mid")),
    ("eos-lp05-never", MODELS, dict(num_beams=4, length_penalty=0.5, early_stopping="never",
                                    force_words_ids=[[40, 41]], eos="mid")),
    ("eos-min-new", MODELS, dict(num_beams=4, num_return_sequences=2, min_new_tokens=6, force_words_ids=[[40]],
                                 eos="first")),
    ("processor-nb8", MODELS, dict(num_beams=8, num_return_sequences=2, processor="ban",
                                   force_words_ids=[[40, 41], [[45], [46, 47]]])),
    ("norepeat-multi-nb8", MODELS, dict(num_beams=8, num_return_sequences=2, processor="norepeat", max_new_tokens=16,
                                        force_words_ids=[[40, 41], [50, 51, 52], [[45], [46, 47]]])),
    ("norepeat-phrase3", MODELS, dict(num_beams=4, processor="norepeat", max_new_tokens=16,
                                      force_words_ids=[[50, 51, 52]])),
    # expected to be excluded, kept to show 4.55.4's defects:
    # alternatives sharing a prefix: 4.55's shared current_seq corrupts the second advancing token
    ("shared-prefix", MODELS, dict(num_beams=4, num_return_sequences=2, force_words_ids=[[[45, 46], [45, 47]]])),
    # more returned sequences than satisfying beams: 4.55 ranks the unsatisfying fallbacks by score
    ("fallback-nrs4", MODELS, dict(num_beams=4, num_return_sequences=4, force_words_ids=[[[45], [46, 47]]])),
    # a long run, as the bench's: 4.55 drops the live [40] of a repeated 40 (bank 1 -> 0), ferrogen
    # keeps it, so the banks keep other hypotheses and the gpt2 result parts after ~20 tokens
    ("multi-long32", MODELS, dict(num_beams=4, max_new_tokens=32, min_new_tokens=32,
                                  force_words_ids=[[40, 41], [[45], [46, 47]]])),
    # DESIGN.md: 4.55.4 misses the phrase in its best output (transformers issue 19070)
    ("issue19070", ("gpt2",), dict(num_beams=4, num_return_sequences=2, max_new_tokens=20,
                                   force_words_ids=[[33, 34, 35]])),
]


# The guide's examples on the embedded models (python/ferrogen/_embedded), which load the same in
# 4.55.4 and 5.x. "words" are resolved as ferrogen's ``force_words`` resolves them (see
# ``_word_ids``); the case keeps ``force_words`` for ferrogen and the ids it resolved to.
EMBEDDED_PROMPTS = {
    "kjv-gpt2": ["And God said", "The LORD is my shepherd"],
    "kjv-t5": ["In the beginning God created the heaven and the earth.", "The LORD is my shepherd; I shall not want."],
}
EMBEDDED_CASES: list[tuple[str, tuple[str, ...], dict[str, Any]]] = [
    ("guide-words", ("kjv-gpt2", "kjv-t5"), dict(num_beams=6, max_new_tokens=24, words=["rain", ["sunny", "cloudy"]])),
    ("guide-nrs2", ("kjv-t5",), dict(num_beams=4, num_return_sequences=2, max_new_tokens=30,
                                    words=["light", ["heaven", "earth"]])),
    ("guide-eos", ("kjv-t5",), dict(num_beams=4, num_return_sequences=2, max_new_tokens=30, words=["LORD"])),
    ("guide-eos-disj-early", ("kjv-t5",), dict(num_beams=4, num_return_sequences=2, max_new_tokens=30,
                                              length_penalty=1.5, early_stopping=True,
                                              words=[["king", "people"], "God"])),
    ("guide-objects-nb8", ("kjv-t5",), dict(num_beams=8, max_new_tokens=30, objects=[("p", [298, 311, 390]),
                                                                                   ("d", [[2079], [1045]])])),
    # transformers' blog example; "scream" is left out: its tokens are a prefix of "screams" here
    ("guide-scared", ("kjv-gpt2",), dict(num_beams=10, max_new_tokens=30,
                                        words=[["scared"], ["screams", "screaming", "screamed"]])),
]


def _word_ids(tokenizer: Any, word: str) -> list[int]:
    """ferrogen.constraints.words_to_ids: the ids of ``word`` after a space in running text."""
    anchor = tokenizer("a", add_special_tokens=False)["input_ids"]
    both = tokenizer("a " + word.lstrip(), add_special_tokens=False)["input_ids"]
    if anchor and both[: len(anchor)] == anchor and len(both) > len(anchor):
        return both[len(anchor):]
    return tokenizer(word, add_special_tokens=False)["input_ids"]



class DefectWatch:
    """Compares every constraint state 4.55.4 builds with ferrogen's reference tracking."""

    def __init__(self) -> None:
        from transformers.generation import beam_constraints as bc

        self.cls = bc.ConstraintListState
        self.found: dict[str, int] = {}
        self._orig = (self.cls.reset, self.cls.add, self.cls.copy)

    def __enter__(self) -> "DefectWatch":
        from constraint_reference import RefState

        watch, (reset, add, copy) = self, self._orig

        def specs(state: Any) -> list:
            return [c.token_ids for c in state.constraints]

        def check(state: Any, kind: str) -> None:
            ref = RefState.from_tokens(specs(state), state._ref_tokens)
            theirs = (bool(state.completed), state.get_bank(), state.advance() or [])
            ours = (ref.is_complete(), ref.bank(), ref.advance())
            if theirs != ours:
                watch.found[kind] = watch.found.get(kind, 0) + 1

        def p_reset(state: Any, token_ids: Any) -> None:
            state._in_reset = True
            try:
                reset(state, token_ids)
            finally:
                state._in_reset = False
            state._ref_tokens = [int(t) for t in (token_ids or [])]
            check(state, "drops a live partial match (issue 19070)")

        def p_add(state: Any, token_id: int) -> Any:
            result = add(state, token_id)
            if not getattr(state, "_in_reset", False) and hasattr(state, "_ref_tokens"):
                state._ref_tokens = state._ref_tokens + [int(token_id)]
                check(state, "copy(stateful=True) shares current_seq")
            return result

        def p_copy(state: Any, stateful: bool = True) -> Any:
            new = copy(state, stateful)
            if stateful and hasattr(state, "_ref_tokens"):
                new._ref_tokens = list(state._ref_tokens)
            return new

        self.cls.reset, self.cls.add, self.cls.copy = p_reset, p_add, p_copy
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cls.reset, self.cls.add, self.cls.copy = self._orig


class SatisfyingFirst:
    """Patches 4.55.4's ``ConstrainedBeamSearchScorer.finalize`` to rank every hypothesis that
    satisfies the constraints before the running beams that do not (which fill up only when
    fewer than ``num_return_sequences`` satisfy them); nothing else changes."""

    def __enter__(self) -> "SatisfyingFirst":
        from transformers.generation.beam_search import ConstrainedBeamSearchScorer

        self.cls = ConstrainedBeamSearchScorer
        self.orig = self.cls.finalize
        self.cls.finalize = _finalize_satisfying_first
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cls.finalize = self.orig


class FerrogenTracking:
    """Patches 4.55.4's ``ConstrainedBeamSearchScorer`` to track constraint progress with the
    reference of ferrogen's tracking (``tests/constraint_reference.py``) instead of its
    ``ConstraintListState``, and to rank satisfying hypotheses first (:class:`SatisfyingFirst`);
    the rest of 4.55.4's search (candidates, banks, scores, finalize) runs unchanged. Where the
    result differs from plain 4.55.4, the difference is the tracking alone."""

    def __enter__(self) -> "FerrogenTracking":
        from transformers.generation.beam_search import ConstrainedBeamSearchScorer

        self.cls = ConstrainedBeamSearchScorer
        self.orig = self.cls.make_constraint_states
        self.cls.make_constraint_states = _ref_constraint_states
        self.ranking = SatisfyingFirst().__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.ranking.__exit__(*exc)
        self.cls.make_constraint_states = self.orig


class _RefListState:
    """The part of 4.55.4's ``ConstraintListState`` its scorer uses, backed by ``RefState``."""

    def __init__(self, specs: list) -> None:
        from constraint_reference import RefState

        self.specs, self.ref = specs, RefState(specs)

    @property
    def completed(self) -> bool:
        return self.ref.is_complete()

    def reset(self, token_ids: Any) -> None:
        from constraint_reference import RefState

        self.ref = RefState.from_tokens(self.specs, [int(t) for t in (token_ids or [])])

    def advance(self) -> Any:
        return self.ref.advance() or None

    def add(self, token_id: int) -> None:
        self.ref.add(int(token_id))

    def get_bank(self) -> int:
        return self.ref.bank()

    def copy(self, stateful: bool = True) -> "_RefListState":
        import copy

        new = _RefListState(self.specs)
        if stateful:
            new.ref = copy.deepcopy(self.ref)
        return new


def _ref_constraint_states(self: Any, n: int) -> list:
    specs = [c.token_ids for c in self.constraints]
    return [_RefListState(specs) for _ in range(n)]


def _finalize_satisfying_first(self: Any, input_ids: Any, final_beam_scores: Any, final_beam_tokens: Any,
                               final_beam_indices: Any, max_length: int, pad_token_id: Any = None,
                               eos_token_id: Any = None, beam_indices: Any = None, decoder_prompt_len: int = 0) -> Any:
    from collections import UserDict

    import torch

    eos = [eos_token_id] if isinstance(eos_token_id, int) else list(torch.as_tensor(eos_token_id).tolist())
    best, best_scores = [], []
    for batch_idx, beam_hyp in enumerate(self._beam_hyps):
        unmet = []
        if not self._done[batch_idx]:
            for beam_id in range(self.num_beams):
                row = batch_idx * self.num_beams + beam_id
                score, tokens = final_beam_scores[row].item(), input_ids[row]
                generated_len = tokens.shape[-1] - decoder_prompt_len
                if self.check_completes_constraints(tokens.tolist()):
                    beam_hyp.add(tokens, score, generated_len=generated_len)
                else:
                    unmet.append((score / generated_len ** self.length_penalty, tokens))
        # sorted() is stable; popping from the end (as 4.55 does) puts later equal scores first
        ranked = sorted(beam_hyp.beams, key=lambda x: x[0])[::-1] + sorted(unmet, key=lambda x: x[0])[::-1]
        for score, hyp, *_ in ranked[: self.num_beam_hyps_to_keep]:
            best.append(hyp)
            best_scores.append(score)
    lengths = [len(h) for h in best]
    width = min(max(lengths) + 1, max_length) if max_length is not None else max(lengths) + 1
    decoded = input_ids.new_full((len(best), width), pad_token_id)
    for i, hyp in enumerate(best):
        decoded[i, : len(hyp)] = hyp
        if len(hyp) < width:
            decoded[i, len(hyp)] = eos[0]
    return UserDict({"sequences": decoded, "sequence_scores": torch.tensor(best_scores), "beam_indices": None})


def _hf_kwargs(spec: dict[str, Any]) -> dict[str, Any]:
    from transformers import DisjunctiveConstraint, LogitsProcessorList, PhrasalConstraint

    kwargs = {k: v for k, v in spec.items() if k not in ("objects", "eos", "processor")}
    if "objects" in spec:
        kwargs["constraints"] = [PhrasalConstraint(ids) if kind == "p" else DisjunctiveConstraint(ids)
                                 for kind, ids in spec["objects"]]
    if "processor" in spec:
        from golden_processors import PROCESSORS

        kwargs["logits_processor"] = LogitsProcessorList([PROCESSORS[spec["processor"]]()])
    return kwargs


def _generate(model: Any, ids: Any, mask: Any, kwargs: dict[str, Any]) -> Any:
    import torch

    kwargs = dict(kwargs)
    kwargs.setdefault("max_new_tokens", MAX_NEW)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:  # output_scores for sequences_scores; it changes no token
            return model.generate(input_ids=ids, attention_mask=mask, pad_token_id=0, do_sample=False,
                                  return_dict_in_generate=True, output_scores=True, **kwargs)
        except RuntimeError:
            # 4.55.4's finalize crashes with output_scores when it falls back to beams that miss
            # a constraint (they carry no beam_indices); generate again without scores
            return model.generate(input_ids=ids, attention_mask=mask, pad_token_id=0, do_sample=False,
                                  return_dict_in_generate=True, **kwargs)


def _pick_eos(model: Any, ids: Any, mask: Any, spec: dict[str, Any], how: str) -> int:
    """A token the unconstrained beam search emits (step 2 of item 1's best, or step 0 of item 0's)."""
    free = {k: v for k, v in _hf_kwargs(spec).items()
            if k not in ("force_words_ids", "constraints", "min_new_tokens", "logits_processor")}
    seqs = _generate(model, ids, mask, free).sequences
    start = 1 if model.config.is_encoder_decoder else ids.shape[1]
    per_item = spec.get("num_return_sequences", 1)
    row, col = (per_item, start + 2) if how == "mid" else (0, start)
    return int(seqs[row, col])


def _all_specs(spec: dict[str, Any]) -> list:
    return [ids for _, ids in spec.get("objects", [])] + list(spec.get("force_words_ids", []))


def _run_case(name: str, model_name: str, model: Any, ids: Any, mask: Any, spec: dict[str, Any],
              resolved: Any = None) -> dict[str, Any]:
    from constraint_reference import satisfies

    start = 1 if model.config.is_encoder_decoder else 0
    spec = dict(spec)
    if "eos" in spec:
        spec["eos_token_id"] = _pick_eos(model, ids, mask, spec, spec.pop("eos"))
    hf_spec = {k: v for k, v in spec.items() if k != "force_words"}
    if resolved is not None:
        hf_spec["force_words_ids"] = resolved
    with DefectWatch() as watch:
        out = _generate(model, ids, mask, _hf_kwargs(hf_spec))
    specs = _all_specs(hf_spec)
    per_item = spec.get("num_return_sequences", 1)
    rows = out.sequences.tolist()
    satisfied = []
    for r, row in enumerate(rows):
        prompt_mask = [] if start else mask[r // per_item].tolist()
        text = [t for i, t in enumerate(row) if i >= len(prompt_mask) or prompt_mask[i]][start:]
        satisfied.append(satisfies(text, specs))
    case = {
        "name": f"{model_name}-{name}", "model": model_name, "input_ids": ids.tolist(),
        "attention_mask": mask.tolist(), "kwargs": dict(spec, max_new_tokens=spec.get("max_new_tokens", MAX_NEW),
                                                        pad_token_id=0),
        "sequences": rows,
        "sequences_scores": None if out.sequences_scores is None else out.sequences_scores.tolist(),
        "satisfied": satisfied, "defects": watch.found,
    }
    if resolved is not None:
        case["resolved_force_words_ids"] = resolved
    if not all(satisfied) and not watch.found:
        with SatisfyingFirst():
            case["sequences_satisfying_first"] = _generate(model, ids, mask, _hf_kwargs(hf_spec)).sequences.tolist()
    if watch.found:
        with FerrogenTracking():
            tracked = _generate(model, ids, mask, _hf_kwargs(hf_spec))
        if tracked.sequences.tolist() != rows:
            case["sequences_ferrogen_tracking"] = tracked.sequences.tolist()
    verdict = "ok" if all(satisfied) and not watch.found else f"unsatisfied={satisfied.count(False)} {watch.found}"
    print(f"{case['name']}: {tuple(out.sequences.shape)} {verdict}", file=sys.stderr)
    return case


def make_cases() -> list[dict[str, Any]]:
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from conftest import left_padded_batch
    from golden_models import load_stored

    ids, mask = left_padded_batch(LENGTHS)
    cases = []
    for model_name in MODELS:
        model = load_stored(model_name)
        for name, models, spec in CASES:
            if model_name in models:
                cases.append(_run_case(name, model_name, model, ids, mask, spec))
    for model_name, prompts in EMBEDDED_PROMPTS.items():
        path = ROOT / "python" / "ferrogen" / "_embedded" / model_name
        auto = AutoModelForSeq2SeqLM if model_name.endswith("t5") else AutoModelForCausalLM
        model = auto.from_pretrained(path).eval()
        tok = AutoTokenizer.from_pretrained(path)
        tok.padding_side = "right" if model.config.is_encoder_decoder else "left"
        enc = tok(prompts, return_tensors="pt", padding=True)
        for name, models, spec in EMBEDDED_CASES:
            if model_name not in models:
                continue
            spec = dict(spec)
            resolved = None
            if "words" in spec:
                spec["force_words"] = spec.pop("words")
                resolved = [_word_ids(tok, w) if isinstance(w, str) else [_word_ids(tok, x) for x in w]
                            for w in spec["force_words"]]
            cases.append(_run_case(name, model_name, model, enc.input_ids, enc.attention_mask, spec, resolved))
    return cases


def main() -> None:
    reexec_in_golden_venv(__file__)
    import transformers

    data = {"transformers_version": transformers.__version__, "cases": make_cases()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} ({len(data['cases'])} cases)", file=sys.stderr)


if __name__ == "__main__":
    main()
