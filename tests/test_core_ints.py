"""Every integer argument of ``ferrogen._core`` with an int its Rust type cannot hold.

pyo3 turns such an int (2**64 for a u64, -1 for a usize, 2**63 for an int64) into a bare
``OverflowError`` ("int too big to convert") that names no argument. The bindings take such
arguments through one extractor (``src/py/ints.rs``) and refuse the value by name with the
allowed range: a ``ValueError`` (``GenerationConfigError`` for a setting) whose message starts
with the argument's name. Not an int at all stays pyo3's ``TypeError``.
"""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import pytest
from test_core_boundary import BEAM, GROUP, IDS, S, assisted, f32, refused

from ferrogen import _core

# An int just outside each Rust type on either side, and the range the message states.
OUTSIDE = {"u64": (-1, 2**64), "i64": (-(2**63) - 1, 2**63), "u8": (-1, 256)}
ALLOWED = {"u64": "in [0, 2**64)", "i64": "in [-2**63, 2**63)", "u8": "in [0, 256)"}
HAS_GRAMMAR = hasattr(_core, "GrammarVocab")

Call = Callable[[int], Any]


def _grammar_objects() -> tuple[Any, Any, Any]:
    """A vocabulary, a grammar and its matchers over the embedded model's tokenizer."""
    import ferrogen
    from ferrogen.grammar import _tokenizer_json

    _, tok = ferrogen.text.load_model(ferrogen.embedded_model_path("causal"))
    vocab = _core.GrammarVocab(_tokenizer_json(tok), None)
    grammar = _core.Grammar(vocab, "regex", "(yea|nay)")
    return vocab, grammar, _core.GrammarMatchers([grammar], 1, [0])


def _settings_rows() -> list[tuple[str, Call, str, str]]:
    """GenerationSettings: its keyword arguments, and config attributes of every kind it reads."""
    def kw(name: str, wrap: Callable[[int], Any]) -> Call:
        return lambda v: _core.GenerationSettings(SimpleNamespace(), **{name: wrap(v)})

    def attr(name: str, wrap: Callable[[int], Any]) -> Call:
        return lambda v: _core.GenerationSettings(SimpleNamespace(**{name: wrap(v)}))

    one, listed, nested = (lambda v: v), (lambda v: [v]), (lambda v: [[v]])
    rows = [(f"GenerationSettings({name})", kw(name, wrap), name, kind) for name, wrap, kind in [
        ("eos_token_ids", listed, "i64"), ("min_length", one, "u64"), ("max_length", one, "u64"),
        ("pad_token_id", one, "i64"), ("vocab_size", one, "u64"), ("encoder_input_ids", nested, "i64"),
        ("prompt_ignore_lengths", listed, "u64"), ("seed", one, "u64"), ("seed_prompts", nested, "i64"),
        ("row_seeds", listed, "u64")]]
    rows += [(f"GenerationSettings(config.{name})", attr(name, wrap), name, kind) for name, wrap, kind in [
        ("num_beams", one, "u64"), ("seed", one, "u64"), ("forced_bos_token_id", one, "i64"),
        ("suppress_tokens", listed, "i64"), ("suppress_tokens", one, "i64"), ("bad_words_ids", nested, "i64"),
        ("sequence_bias", lambda v: {(v,): 1.0}, "i64"), ("sequence_bias", lambda v: [([1, v], 1.0)], "i64"),
        ("exponential_decay_length_penalty", lambda v: (v, 1.5), "u64")]]
    return rows


def _int_walk() -> list[tuple[str, Call, str, str]]:
    """(label, call taking the int, argument name, Rust type) for every integer argument."""
    asd = assisted([[0, 0, 5, 6]], [2])
    beam = _core.BeamSearch(IDS, S(**BEAM))
    sample = _core.BeamSearch(IDS, S(do_sample=True, **BEAM))
    group = _core.GroupBeamSearch(IDS, S(**GROUP))
    cbs = _core.ConstrainedBeamSearch(IDS, S(vocab_size=10, **BEAM), [[1]])
    tracker = _core.ConstraintTracker([[1, 2]])
    pipe = _core.LogitsPipeline(S())
    k = beam.candidates_per_item
    state = np.zeros(5056, np.uint8)
    rows = _settings_rows() + [
        ("ContrastiveSearch", lambda v: _core.ContrastiveSearch(IDS, S(), v, 0.5), "top_k", "u64"),
        ("AssistedDecoder.lookup_drafts", lambda v: asd.lookup_drafts(v, 3), "max_matching_ngram_size", "u64"),
        ("AssistedDecoder.lookup_drafts", lambda v: asd.lookup_drafts(2, v), "prompt_lookup_num_tokens", "u64"),
        ("AssistedDecoder.tails", lambda v: asd.tails(v), "n", "u64"),
        ("BeamSearch.draw_torch_noise", lambda v: sample.draw_torch_noise(state, v), "vocab", "u64"),
        ("BeamSearch.propose_candidates",
         lambda v: beam.propose_candidates(f32(1, k), np.zeros((1, k), np.int64), v), "vocab", "u64"),
        ("BeamSearch.stop", lambda v: beam.stop(v), "code", "u8"),
        ("GroupBeamSearch.stop", lambda v: group.stop(v), "code", "u8"),
        ("ConstrainedBeamSearch.stop", lambda v: cbs.stop(v), "code", "u8"),
        ("GroupBeamSearch.group_rows", lambda v: group.group_rows(v), "g", "u64"),
        ("GroupBeamSearch.process_group", lambda v: group.process_group(v, f32(4, 4)), "g", "u64"),
        ("GroupBeamSearch.select_group", lambda v: group.select_group(v, f32(4, 4)), "g", "u64"),
        ("ConstrainedBeamSearch", lambda v: _core.ConstrainedBeamSearch(IDS, S(vocab_size=10, **BEAM), [[v]]),
         "force_words_ids", "i64"),
        ("ConstraintTracker", lambda v: _core.ConstraintTracker([[1, v]]), "force_words_ids", "i64"),
        ("ConstraintTracker", lambda v: _core.ConstraintTracker([[[1], [v]]], None, "constraints"),
         "constraints", "i64"),
        ("ConstraintTracker", lambda v: _core.ConstraintTracker([[1]], v), "vocab", "u64"),
        ("ConstraintTracker.add", lambda v: tracker.add(v), "token", "i64"),
        ("ConstraintTracker.reset", lambda v: tracker.reset([1, v]), "tokens", "i64"),
        ("ConstraintTracker.does_advance", lambda v: tracker.does_advance(v), "token", "i64"),
        ("LogitsPipeline", lambda v: _core.LogitsPipeline(S(), v), "prompt_length", "u64"),
        ("LogitsPipeline", lambda v: _core.LogitsPipeline(S(), 0, v), "min_tokens_to_keep", "u64"),
        ("LogitsPipeline.sample", lambda v: pipe.sample(IDS, f32(1, 4), v), "seed", "u64"),
        ("LogitsPipeline.sample", lambda v: pipe.sample(IDS, f32(1, 4), 1, v), "key_length", "u64"),
        ("PrefixAllowedTokens", lambda v: _core.PrefixAllowedTokens(lambda *_: [1], v), "rows_per_batch", "u64"),
        ("torch_exponential", lambda v: _core.torch_exponential(state, v), "n", "u64"),
        ("synthid_eos_token_mask", lambda v: _core.synthid_eos_token_mask(IDS, v), "eos_token_id", "i64"),
    ]
    if HAS_GRAMMAR:
        vocab, grammar, matchers = _grammar_objects()
        rows += [
            ("GrammarVocab", lambda v: _core.GrammarVocab("{}", v), "vocab_size", "u64"),
            ("Grammar.allowed_after", lambda v: grammar.allowed_after([v], [0], 10), "generated", "i64"),
            ("Grammar.allowed_after", lambda v: grammar.allowed_after([], [v], 10), "eos_token_ids", "i64"),
            ("Grammar.allowed_after", lambda v: grammar.allowed_after([], [0], v), "vocab_size", "u64"),
            ("Grammar.dead_after", lambda v: grammar.dead_after([v], [0]), "generated", "i64"),
            ("Grammar.dead_after", lambda v: grammar.dead_after([], [v]), "eos_token_ids", "i64"),
            ("GrammarMatchers", lambda v: _core.GrammarMatchers([grammar], v, [0]), "rows_per_prompt", "u64"),
            ("GrammarMatchers", lambda v: _core.GrammarMatchers([grammar], 1, [v]), "eos_token_ids", "i64"),
            ("GrammarMatchers.accepting", lambda v: matchers.accepting(v), "row", "u64"),
            ("GrammarMatchers.valid_prefix", lambda v: matchers.valid_prefix(v, []), "row", "u64"),
            ("GrammarMatchers.valid_prefix", lambda v: matchers.valid_prefix(0, [v]), "tokens", "i64"),
        ]
    return rows


INT_WALK = _int_walk()
CASES = [(f"{label}:{name}={v}", call, name, kind, v)
         for label, call, name, kind in INT_WALK for v in OUTSIDE[kind]]


@pytest.mark.parametrize("label, call, name, kind, value", CASES, ids=[c[0] for c in CASES])
def test_an_int_outside_the_rust_type_is_refused_by_name(label: str, call: Call, name: str, kind: str,
                                                         value: int) -> None:
    err = refused(lambda: call(value), name)
    assert ALLOWED[kind] in str(err), str(err)
    assert str(value) in str(err), str(err)


def test_a_huge_int_is_shown_by_its_digit_count() -> None:
    err = refused(lambda: _core.torch_exponential(np.zeros(5056, np.uint8), 10**100), "n")
    assert str(err) == "n: must be in [0, 2**64), got an int of 101 digits"


def test_an_int_too_long_to_write_out_is_shown_by_its_bits() -> None:
    """Python refuses ``str()`` of an int over ``sys.get_int_max_str_digits()`` (4,300 digits)."""
    err = refused(lambda: _core.torch_exponential(np.zeros(5056, np.uint8), 2**20000), "n")
    assert str(err) == "n: must be in [0, 2**64), got an int of 20001 bits"


def test_a_list_item_outside_says_every_item() -> None:
    err = refused(lambda: S(row_seeds=[1, 2**64]), "row_seeds")
    assert str(err) == f"row_seeds: every item must be in [0, 2**64), got {2**64}"


def test_not_an_int_is_still_a_type_error() -> None:
    with pytest.raises(TypeError):
        assisted([[5, 6]], [0]).tails("3")  # type: ignore[arg-type]


def test_the_int_walk_covers_every_integer_argument_of_the_stub() -> None:
    """Every parameter the stub types as an int (or a list of them) has a row in the walk."""
    tree = ast.parse(Path(_core.__file__).with_name("_core.pyi").read_text())
    wanted = set()
    for owner, fn in _functions(tree):
        if owner.startswith("Grammar") and not HAS_GRAMMAR:
            continue
        for arg in fn.args.args + fn.args.kwonlyargs:
            hint = ast.unparse(arg.annotation) if arg.annotation else ""
            if "int" in hint and "NDArray" not in hint and "Callable" not in hint:
                label = owner if fn.name == "__new__" else f"{owner}.{fn.name}" if owner else fn.name
                wanted.add(f"{label}:{arg.arg}")
    walked = {f"{label.split('(')[0]}:{name}" for label, _, name, _ in INT_WALK}
    assert wanted - walked == set(), "integer arguments not walked"


def _functions(tree: ast.Module) -> list[tuple[str, ast.FunctionDef]]:
    out = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            out.append(("", node))
        elif isinstance(node, ast.ClassDef):
            out += [(node.name, f) for f in node.body if isinstance(f, ast.FunctionDef)]
    return out
