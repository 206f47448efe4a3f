"""ferrogen: every decoding strategy of transformers' ``generate``, with a Rust core.

    import ferrogen
    out = ferrogen.generate(model, input_ids=ids, max_new_tokens=20)

See :func:`generate`, :class:`GenerationConfig` and the README; :func:`enable` (or
``with ferrogen.patched(model):``) makes ``model.generate`` itself run ferrogen.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The public names load on first use (PEP 562, as scipy and transformers do): `import ferrogen`,
# `ferrogen --help` and the command line's argument errors do not pay for importing torch.
_LAZY = {
    "_core": ("CoreMemoryError", "InvalidArgumentError", "NoValidTokenError", "ShapeError", "TokenOutOfVocabError"),
    "_validation": ("GenerationConfigError", "GenerationConfigTypeError", "UnknownFieldError"),
    "compat": ("FallbackWarning", "custom_generate_path", "disable", "enable", "is_enabled", "patched"),
    "config": ("GenerationConfig", "GenerationMode"),
    "constraints": ("Constraint", "DisjunctiveConstraint", "PhrasalConstraint"),
    "generate": ("generate",),
    "outputs": ("GenerateOutput",),
    "processors": ("LogitsPipeline",),
    "stopping": ("MaxTimeCriteria", "StopStringCriteria"),
    "streamers": ("TextIteratorStreamer", "TextStreamer"),
    "text": ("TextGenerator", "TextResult", "pipeline"),
}
_HOME = {name: module for module, names in _LAZY.items() for name in names}

if TYPE_CHECKING:
    from ._core import (CoreMemoryError, InvalidArgumentError, NoValidTokenError, ShapeError,
                        TokenOutOfVocabError)
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


def __getattr__(name: str) -> Any:
    """A public name from its module, or a submodule (``ferrogen.text``), imported on first use."""
    if name in _HOME:
        value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
        globals()[name] = value
        return value
    if not name.startswith("__"):
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Importing the submodule ``ferrogen.generate`` sets the package's ``generate`` attribute
    to that module; the function of the same name must stay what ``ferrogen.generate`` is."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "generate" and isinstance(value, types.ModuleType):
            value = value.generate
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

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
