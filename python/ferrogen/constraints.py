"""Constraints for constrained beam search: token sequences the output must contain.

Three equivalent ways to ask for them (they can be combined; the order is ``constraints``,
then ``force_words_ids``, then ``force_words``)::

    import ferrogen
    from ferrogen import PhrasalConstraint, DisjunctiveConstraint

    ferrogen.generate(model, ids, num_beams=4, force_words_ids=[[33, 34], [[40], [41, 42]]])
    ferrogen.generate(model, ids, num_beams=4,
                      constraints=[PhrasalConstraint([33, 34]), DisjunctiveConstraint([[40], [41, 42]])])
    ferrogen.generate(model, ids, num_beams=4, force_words=["rain", ["sunny", "cloudy"]], tokenizer=tok)

A phrase must appear as given; of a disjunctive set, one alternative must appear. The
prompt counts (as in transformers): a phrase already in a decoder-only prompt is satisfied.
Tracking runs in the Rust core; :meth:`Constraint.tracker` exposes its state machine.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence, Union

from . import _core
from ._validation import INT_LIMIT, GenerationConfigError, GenerationConfigTypeError, _is_int

__all__ = ["Constraint", "DisjunctiveConstraint", "PhrasalConstraint", "resolve_constraints", "words_to_ids"]

Spec = Union[list[int], list[list[int]]]


def _phrase(name: str, value: Any, what: str = "a non-empty list of token ids") -> list[int]:
    if not isinstance(value, (list, tuple)):
        raise GenerationConfigTypeError(name, f"must be {what}, got {type(value).__name__} {value!r}")
    if not value:
        raise GenerationConfigError(name, f"must be {what}, got an empty list")
    for token in value:
        if isinstance(token, (list, tuple)):
            raise GenerationConfigError(name, f"must be {what} (nested one level too deep), got {value!r}")
        if not _is_int(token):
            raise GenerationConfigTypeError(name, f"token ids must be ints, got {type(token).__name__} {token!r}")
        if token < 0:
            raise GenerationConfigError(name, f"token ids must be >= 0, got {token}")
        if token >= INT_LIMIT:
            raise GenerationConfigError(name, f"token ids must be < 2**63 (an int64), got {token}")
    return [int(t) for t in value]


def _check_no_prefix(name: str, alternatives: Sequence[Sequence[int]]) -> None:
    for i, a in enumerate(alternatives):
        for j, b in enumerate(alternatives):
            if i != j and len(a) <= len(b) and list(b[: len(a)]) == list(a) and (len(a) < len(b) or i > j):
                raise GenerationConfigError(
                    name, f"alternative {i} {list(a)} is a prefix of (or equal to) alternative {j} {list(b)}; "
                    "one of them could never be told apart from the other")


class Constraint:
    """A requirement on the output; see :class:`PhrasalConstraint` and :class:`DisjunctiveConstraint`."""

    token_ids: Any

    def spec(self) -> Spec:
        """The plain-list form the core reads (a phrase, or a list of alternative phrases)."""
        raise NotImplementedError

    def tracker(self, vocab_size: Optional[int] = None) -> _core.ConstraintTracker:
        """A fresh state machine for this constraint alone (``add``, ``advance``, ``does_advance``,
        ``reset``, ``is_complete``, ``bank``), as each hypothesis of a search keeps one.

        Example:
            >>> t = PhrasalConstraint([5, 6]).tracker()
            >>> t.advance(), t.add(5), t.advance(), t.add(6), t.is_complete()
            ([5], None, [6], None, True)
        """
        return _core.ConstraintTracker([self.spec()], vocab_size, "constraints")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.spec() == self.spec()

    def __hash__(self) -> int:
        return hash(repr(self))


class PhrasalConstraint(Constraint):
    """The output must contain ``token_ids``, contiguously and in order.

    Example:
        >>> PhrasalConstraint([33, 34, 35])
        PhrasalConstraint([33, 34, 35])
        >>> PhrasalConstraint([])
        Traceback (most recent call last):
        ...
        ferrogen._validation.GenerationConfigError: token_ids: must be a non-empty list of token ids, got an empty list
    """

    def __init__(self, token_ids: Sequence[int]) -> None:
        self.token_ids = _phrase("token_ids", token_ids)

    def spec(self) -> list[int]:
        return list(self.token_ids)

    def __repr__(self) -> str:
        return f"PhrasalConstraint({self.token_ids!r})"


class DisjunctiveConstraint(Constraint):
    """The output must contain one of the phrases in ``nested_token_ids``.

    No alternative may be a prefix of another (transformers refuses that too: the shorter
    one would always win). Alternatives are matched with a token trie in the core.

    Example:
        >>> DisjunctiveConstraint([[40], [41, 42]]).token_ids
        [[40], [41, 42]]
        >>> DisjunctiveConstraint([[41], [41, 42]])
        Traceback (most recent call last):
        ...
        ferrogen._validation.GenerationConfigError: nested_token_ids: alternative 0 [41] is a prefix of (or equal to) alternative 1 [41, 42]; one of them could never be told apart from the other
    """

    def __init__(self, nested_token_ids: Sequence[Sequence[int]]) -> None:
        name = "nested_token_ids"
        if not isinstance(nested_token_ids, (list, tuple)) or not nested_token_ids:
            raise GenerationConfigError(name, f"must be a non-empty list of phrases (lists of token ids), "
                                        f"got {nested_token_ids!r}")
        if not all(isinstance(p, (list, tuple)) for p in nested_token_ids):
            raise GenerationConfigError(name, f"must be a list of lists of token ids (nested one level too "
                                        f"shallow?), got {nested_token_ids!r}")
        alternatives = [_phrase(name, p, "a list of non-empty lists of token ids") for p in nested_token_ids]
        _check_no_prefix(name, alternatives)
        self.token_ids = alternatives

    def spec(self) -> list[list[int]]:
        return [list(p) for p in self.token_ids]

    def __repr__(self) -> str:
        return f"DisjunctiveConstraint({self.token_ids!r})"


def _object_spec(item: Any) -> Spec:
    """A ferrogen constraint, or any object with ``token_ids`` (transformers 4.x's classes)."""
    if isinstance(item, Constraint):
        return item.spec()
    ids = getattr(item, "token_ids", None)
    if ids is None:
        raise GenerationConfigTypeError("constraints", f"expected PhrasalConstraint or DisjunctiveConstraint "
                                        f"objects, got {type(item).__name__}")
    nested = isinstance(ids, (list, tuple)) and bool(ids) and isinstance(ids[0], (list, tuple))
    return (DisjunctiveConstraint(ids) if nested else PhrasalConstraint(ids)).spec()


def words_to_ids(tokenizer: Any, word: str) -> list[int]:
    """Token ids of ``word`` as it appears after a space in running text.

    Encodes ``"a " + word`` and drops the tokens of ``"a"`` (so byte-level BPE gets ``Ġword``
    and SentencePiece ``▁word``); falls back to encoding ``word`` alone when the tokens of
    ``"a"`` are not a prefix. Special tokens are never added.
    """
    def encode(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    anchor = encode("a")
    both = encode("a " + word.lstrip())
    if anchor and both[: len(anchor)] == anchor and len(both) > len(anchor):
        return both[len(anchor):]
    return encode(word)


def _force_words_specs(words: Iterable[Any], tokenizer: Any) -> list[Spec]:
    if tokenizer is None:
        raise GenerationConfigError("force_words", "needs a tokenizer to turn words into token ids; pass "
                                    "tokenizer=... to generate (or give force_words_ids)")
    specs: list[Spec] = []
    for i, word in enumerate(words):
        if isinstance(word, str):
            specs.append(words_to_ids(tokenizer, word))
        else:
            alternatives = [words_to_ids(tokenizer, w) for w in word]
            try:
                _check_no_prefix("force_words", alternatives)
            except GenerationConfigError as err:
                raise GenerationConfigError("force_words", f"entry {i} {list(word)!r} tokenizes to {alternatives}: "
                                            f"{str(err).split(': ', 1)[1]}") from None
            specs.append(alternatives)
    return specs


def resolve_constraints(config: Any, tokenizer: Any = None, vocab_size: Optional[int] = None) -> list[Spec]:
    """Every constraint of ``config`` in core form, validated against ``vocab_size``.

    Raises a ``ValueError`` naming the field (``constraints``, ``force_words_ids`` or
    ``force_words``) for empty phrases, wrong nesting, an alternative that is a prefix of
    another, or a token id outside the vocabulary.

    Example:
        >>> from ferrogen import GenerationConfig
        >>> cfg = GenerationConfig(num_beams=2, force_words_ids=[[3, 4], [[5], [6, 7]]])
        >>> resolve_constraints(cfg, vocab_size=8)
        [[3, 4], [[5], [6, 7]]]
        >>> resolve_constraints(cfg, vocab_size=6)
        Traceback (most recent call last):
        ...
        ferrogen._core.TokenOutOfVocabError: force_words_ids: token id 6 is outside the vocabulary [0, 6)
    """
    parts: list[tuple[str, list[Spec]]] = []
    if config.constraints is not None:
        parts.append(("constraints", [_object_spec(c) for c in config.constraints]))
    if config.force_words_ids is not None:
        parts.append(("force_words_ids", list(config.force_words_ids)))
    if config.force_words is not None:
        parts.append(("force_words", _force_words_specs(config.force_words, tokenizer)))
    specs: list[Spec] = []
    for field, part in parts:
        _core.ConstraintTracker(part, vocab_size, field)  # validates; errors name the field
        specs.extend(part)
    if not specs:
        raise GenerationConfigError("force_words_ids", "constrained beam search needs at least one constraint")
    return specs
