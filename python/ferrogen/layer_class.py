"""The class swap that the growing cache (:mod:`ferrogen.growing_cache`) and the folded beam
reorder (:mod:`ferrogen.folded_reorder`) make of transformers' ``DynamicLayer``.

Their layer classes are ``DynamicLayer`` subclasses that add behaviour and class-level defaults
only, no fields of their own in ``__init__``, so a layer changes class in place: the cache and its
tensors stay as they are, and swapping back gives the caller transformers' own type.
"""

from __future__ import annotations

from typing import Any

__all__ = ["retype"]


def retype(layer: Any, cls: type) -> None:
    """Gives ``layer`` (a ``DynamicLayer`` or one of the subclasses above) the class ``cls``."""
    layer.__class__ = cls
