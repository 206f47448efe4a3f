"""Ray is imported only when a distributed function runs (``import ferrogen`` never imports it)."""

from __future__ import annotations

import sys
from typing import Any


def need_ray() -> Any:
    """The ``ray`` module with Ray Data loaded, or an ImportError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"ferrogen.distributed needs Ray Data: pip install 'ferrogen[ray]' ({exc})") from None
    # Ship this package's functions by value: a worker that only parses JSONL then never
    # imports ferrogen (and torch); actors still import what BatchGenerator uses.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__.rpartition(".")[0]])
    return ray
