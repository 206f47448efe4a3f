"""ferrogen: every decoding strategy of transformers' ``generate``, with a Rust core.

    import ferrogen
    out = ferrogen.generate(model, input_ids=ids, max_new_tokens=20)

See :func:`generate`, :class:`GenerationConfig` and the README; :func:`enable` (or
``with ferrogen.patched(model):``) makes ``model.generate`` itself run ferrogen.
"""

from __future__ import annotations

from pathlib import Path

from ._core import CoreMemoryError, InvalidArgumentError, NoValidTokenError, ShapeError, TokenOutOfVocabError
from ._validation import GenerationConfigError, GenerationConfigTypeError, UnknownFieldError
from .compat import FallbackWarning, custom_generate_path, disable, enable, is_enabled, patched
from .config import GenerationConfig, GenerationMode
from .constraints import Constraint, DisjunctiveConstraint, PhrasalConstraint
from .generate import generate
from .outputs import GenerateOutput
from .processors import LogitsPipeline
from .stopping import MaxTimeCriteria, StopStringCriteria
from .streamers import TextIteratorStreamer, TextStreamer
from .text import TextGenerator, TextResult, pipeline

__version__ = "0.1.0"

_EMBEDDED = Path(__file__).parent / "_embedded"


def embedded_model_path(kind: str = "causal") -> str:
    """Directory of a model shipped with ferrogen: ``"causal"`` (GPT-2 style) or ``"seq2seq"`` (T5 style).

    >>> import os; os.path.isdir(embedded_model_path())
    True
    """
    names = {"causal": "kjv-gpt2", "seq2seq": "kjv-t5"}
    if kind not in names:
        raise ValueError(f"kind: must be one of {sorted(names)}, got {kind!r}")
    return str(_EMBEDDED / names[kind])


__all__ = [
    "Constraint",
    "CoreMemoryError",
    "DisjunctiveConstraint",
    "FallbackWarning",
    "GenerateOutput",
    "GenerationConfig",
    "GenerationConfigError",
    "GenerationConfigTypeError",
    "GenerationMode",
    "InvalidArgumentError",
    "LogitsPipeline",
    "MaxTimeCriteria",
    "NoValidTokenError",
    "PhrasalConstraint",
    "ShapeError",
    "StopStringCriteria",
    "TextIteratorStreamer",
    "TextGenerator",
    "TextResult",
    "TextStreamer",
    "TokenOutOfVocabError",
    "UnknownFieldError",
    "custom_generate_path",
    "disable",
    "embedded_model_path",
    "enable",
    "generate",
    "is_enabled",
    "patched",
    "pipeline",
]
