"""Turning the llama.cpp-style samplers' text settings into token ids (docs/samplers.md).

DRY's sequence breakers are given as strings, as in llama.cpp and text-generation-webui; the
core works on token sequences, so a call with a tokenizer resolves them here.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

from ._validation import GenerationConfigError

#: llama.cpp's and text-generation-webui's default breakers.
DEFAULT_DRY_SEQUENCE_BREAKERS = ["\n", ":", '"', "*"]


def breaker_ids(text: str, tokenizer: Any) -> list[int]:
    """The tokens of ``text`` as it appears after other text: ``text`` is encoded after an "a"
    and the tokens of "a" dropped (text-generation-webui encodes ``'a' + s`` for the same reason:
    SentencePiece tokenizers give a leading-space form to text at the start)."""
    prefix = list(tokenizer.encode("a", add_special_tokens=False))
    full = list(tokenizer.encode("a" + text, add_special_tokens=False))
    if full[: len(prefix)] == prefix and len(full) > len(prefix):
        return full[len(prefix):]
    return list(tokenizer.encode(text, add_special_tokens=False))


def dry_breaker_ids(config: Any) -> Optional[list[list[int]]]:
    """The breakers as token ids when none is a string (what the core reads), else ``None``."""
    breakers = getattr(config, "dry_sequence_breakers", None)
    if breakers is None or any(isinstance(b, str) for b in breakers):
        return None
    return [list(b) for b in breakers]


def with_resolved_breakers(config: Any, tokenizer: Optional[Any]) -> Any:
    """``config``, or a copy whose DRY breakers are token ids (strings encoded with ``tokenizer``;
    no breakers given: llama.cpp's defaults when a tokenizer is there). Raises
    ``GenerationConfigError`` for string breakers without a tokenizer."""
    if not getattr(config, "dry_multiplier", 0.0):
        return config
    breakers = config.dry_sequence_breakers
    if breakers is None:
        if tokenizer is None:
            return config
        breakers = DEFAULT_DRY_SEQUENCE_BREAKERS
    if not any(isinstance(b, str) for b in breakers):
        return config
    if tokenizer is None:
        raise GenerationConfigError("dry_sequence_breakers", "strings need a tokenizer to become token ids; "
                                    "pass tokenizer=... (or give token-id lists)")
    resolved = copy.copy(config)
    resolved.dry_sequence_breakers = [breaker_ids(b, tokenizer) if isinstance(b, str) else list(b)
                                      for b in breakers]
    return resolved
