"""A brute-force reference of ferrogen's constraint tracking (plain Python, no ferrogen import).

Used by the property tests (the Rust tracker must agree with it) and by
``scripts/make_constrained_goldens.py``, which runs it next to transformers 4.55.4's
``ConstraintListState`` to find the cases where 4.55 tracks progress differently (its
defects: a mismatch forgets a partial match that is still alive, the token that broke
one attempt cannot start another, and ``DisjunctiveConstraint.copy(stateful=True)``
shares ``current_seq`` between hypotheses).

A spec is a phrase ``list[int]`` or alternatives ``list[list[int]]``. Progress through one
constraint is the longest suffix of the text read so far that is a prefix of one of its
alternatives, found by trying every suffix; the constraint is complete once the progress
ends with a whole alternative. One constraint is in progress at a time, as in transformers.
"""

from __future__ import annotations

from typing import Optional, Sequence


def alternatives(spec: Sequence) -> list[list[int]]:
    return [list(a) for a in spec] if spec and isinstance(spec[0], (list, tuple)) else [list(spec)]


class RefConstraint:
    def __init__(self, spec: Sequence) -> None:
        self.alts = alternatives(spec)
        self.phrase = not (spec and isinstance(spec[0], (list, tuple)))
        self.seqlen = max(len(a) for a in self.alts)

    def step(self, matched: list[int], token: int) -> list[int]:
        text = matched + [token]
        for k in range(len(text), 0, -1):
            suffix = text[-k:]
            if any(a[:k] == suffix for a in self.alts):
                return suffix
        return []

    def complete(self, matched: list[int]) -> bool:
        return any(len(matched) >= len(a) and matched[len(matched) - len(a):] == a for a in self.alts)

    def next_tokens(self, matched: list[int]) -> list[int]:
        out: list[int] = []
        k = len(matched)
        for a in self.alts:
            if len(a) > k and a[:k] == matched and a[k] not in out:
                out.append(a[k])
        return out

    def remaining(self, matched: list[int]) -> int:
        if not self.phrase and self.complete(matched):
            return 0
        return self.seqlen - len(matched)


class RefState:
    """Progress of one hypothesis through every constraint."""

    def __init__(self, specs: Sequence[Sequence]) -> None:
        self.constraints = [RefConstraint(s) for s in specs]
        self.max_seqlen = max(c.seqlen for c in self.constraints)
        self.completed: list[int] = []
        self.pending: list[int] = list(range(len(specs)))
        self.in_progress: Optional[tuple[int, list[int]]] = None

    def is_complete(self) -> bool:
        return not self.pending and self.in_progress is None

    def bank(self) -> int:
        partial = 0
        if self.in_progress is not None:
            c, m = self.in_progress
            partial = self.max_seqlen - self.constraints[c].remaining(m)
        return len(self.completed) * self.max_seqlen + partial

    def advance(self) -> list[int]:
        if self.in_progress is not None:
            c, m = self.in_progress
            return self.constraints[c].next_tokens(m)
        out: list[int] = []
        for c in self.pending:
            out.extend(self.constraints[c].next_tokens([]))
        return out

    def add(self, token: int) -> None:
        if self.is_complete():
            return
        if self.in_progress is not None:
            c, m = self.in_progress
            nxt = self.constraints[c].step(m, token)
            if self.constraints[c].complete(nxt):
                self.completed.append(c)
                self.in_progress = None
            elif nxt:
                self.in_progress = (c, nxt)
            else:
                self.in_progress = None
                self.pending.append(c)
                self._start(token)
        else:
            self._start(token)

    def _start(self, token: int) -> None:
        for i, c in enumerate(self.pending):
            m = self.constraints[c].step([], token)
            if m:
                del self.pending[i]
                if self.constraints[c].complete(m):
                    self.completed.append(c)
                else:
                    self.in_progress = (c, m)
                return

    @classmethod
    def from_tokens(cls, specs: Sequence[Sequence], tokens: Sequence[int]) -> "RefState":
        state = cls(specs)
        for t in tokens:
            state.add(int(t))
        return state


def contains(text: Sequence[int], phrase: Sequence[int]) -> bool:
    text, phrase = list(text), list(phrase)
    return any(text[i:i + len(phrase)] == phrase for i in range(len(text) - len(phrase) + 1))


def satisfies(text: Sequence[int], specs: Sequence[Sequence]) -> bool:
    """Every constraint occurs somewhere in ``text`` (overlaps allowed)."""
    return all(any(contains(text, a) for a in alternatives(s)) for s in specs)
