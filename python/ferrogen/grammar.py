"""Structured output: the ``json_schema`` / ``regex`` / ``grammar`` / ``choices`` settings.

The constraint is compiled once per call (in the Rust core, by llguidance) against the
tokenizer's vocabulary, before the model runs; each strategy then hands the core one
matcher per row (per beam), which masks the logits where transformers applies
``PrefixConstrainedLogitsProcessor`` and follows the rows' histories (beam reorders,
rejected draft tokens) on its own.
"""

from __future__ import annotations

import json
import os
import weakref
from typing import Any, Optional

from . import _core
from ._validation import GRAMMAR_FIELDS, GenerationConfigError
from .config import GenerationConfig

__all__ = ["GRAMMAR_FIELDS", "compile_grammars", "grammar_finish_reasons", "grammar_vocab", "matchers_for"]

_VOCABS: "weakref.WeakKeyDictionary[Any, dict[Optional[int], Any]]" = weakref.WeakKeyDictionary()


def _has_core() -> bool:
    return hasattr(_core, "GrammarVocab")


def requested(config: GenerationConfig) -> Optional[str]:
    """The constraint field that is set, if any."""
    return next((name for name in GRAMMAR_FIELDS if getattr(config, name) is not None), None)


def _tokenizer_json(tokenizer: Any) -> str:
    """The ``tokenizer.json`` text of a transformers tokenizer, a ``tokenizers.Tokenizer``,
    or a path to a ``tokenizer.json`` file or to a directory holding one."""
    if isinstance(tokenizer, (str, os.PathLike)):
        path = os.fspath(tokenizer)
        if os.path.isdir(path):
            path = os.path.join(path, "tokenizer.json")
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read()
        except OSError as err:
            raise ValueError(f"tokenizer: cannot read {path}: {err}") from None
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    for candidate in (backend, tokenizer):
        to_str = getattr(candidate, "to_str", None)
        if callable(to_str):
            return str(to_str())
    raise ValueError(
        f"tokenizer: a {type(tokenizer).__name__} cannot be bridged to the grammar engine; it needs a fast "
        "(tokenizers-backed) tokenizer with a tokenizer.json, or the path of one")


def grammar_vocab(tokenizer: Any, vocab_size: Optional[int] = None) -> Any:
    """llguidance's view of ``tokenizer`` (cached per tokenizer object: building it walks the vocabulary)."""
    try:
        cache = _VOCABS.setdefault(tokenizer, {})
    except TypeError:  # not weak-referenceable (a str path): no cache
        cache = {}
    if vocab_size not in cache:
        cache[vocab_size] = _core.GrammarVocab(_tokenizer_json(tokenizer), vocab_size)
    return cache[vocab_size]


def compile_grammars(config: GenerationConfig, tokenizer: Any, batch: int, vocab_size: Optional[int]) -> Optional[list[Any]]:
    """One compiled constraint per prompt, or None when the config asks for none.

    Raises ``ValueError`` naming the field (and llguidance's position of the problem) for an
    invalid schema / regex / grammar, before any model work.
    """
    name = requested(config)
    if name is None:
        return None
    if not _has_core():
        raise GenerationConfigError(name, "this ferrogen build has no grammar support (cargo feature 'grammar')")
    if tokenizer is None:
        raise GenerationConfigError(name, "needs tokenizer= (the model's tokenizer) to map the constraint onto tokens")
    if not config.eos_token_ids:
        raise GenerationConfigError(name, "needs eos_token_id: a row ends when its grammar accepts and it picks EOS")
    value = getattr(config, name)
    per_prompt = isinstance(value, list) and (name != "choices" or isinstance(value[0], list))
    values = value if per_prompt else [value] * batch
    if len(values) != batch:
        raise GenerationConfigError(name, f"got {len(values)} constraints for {batch} prompts; give one, or one per prompt")
    vocab = grammar_vocab(tokenizer, vocab_size)
    compiled: dict[str, Any] = {}
    out = []
    for v in values:
        spec = json.dumps(v) if name == "json_schema" and not isinstance(v, str) else v
        key = json.dumps(spec)
        if key not in compiled:
            compiled[key] = _core.Grammar(vocab, name, spec)
        out.append(compiled[key])
    return out


def matchers_for(request: Any, rows_per_prompt: int) -> Optional[Any]:
    """The per-row matchers for a strategy with ``rows_per_prompt`` rows per prompt (also
    remembered on the request, for finish reasons), or None without a constraint."""
    grammars = request.extras.get("grammars")
    if grammars is None:
        return None
    matchers = _core.GrammarMatchers(grammars, rows_per_prompt, list(request.eos_token_ids))
    request.extras["grammar_matchers"] = matchers
    return matchers


def grammar_finish_reasons(request: Any, sequences: Any, reasons: list[str], prompt_len: int) -> list[str]:
    """``reasons`` with ``"grammar"`` for every returned row that ended on EOS because its
    constraint had reached a state no token continues (or had received a token it rejects):
    such a row may only end, so EOS was its one allowed token. Decided by replaying the row's
    generated tokens on a fresh matcher, so it holds alike for every strategy, whichever beam
    row a returned hypothesis ended on; rows ``i`` belong to prompt ``i // (rows / prompts)``."""
    grammars = request.extras.get("grammars")
    if grammars is None or "eos" not in reasons:
        return reasons
    eos = [int(e) for e in request.eos_token_ids]
    per_prompt = max(len(reasons) // len(grammars), 1)
    out = list(reasons)
    for row, reason in enumerate(reasons):
        if reason != "eos":
            continue
        generated = [int(t) for t in sequences[row, prompt_len:].tolist()]
        end = next((i for i, t in enumerate(generated) if t in eos), len(generated))
        if grammars[min(row // per_prompt, len(grammars) - 1)].dead_after(generated[:end], eos):
            out[row] = "grammar"
    return out
