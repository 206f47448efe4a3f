"""ferrogen's DoLa decoding as a transformers 5.x ``custom_generate`` function.

Loaded by ``model.generate(..., custom_generate=ferrogen.custom_generate_path("dola"),
trust_remote_code=True)``; runs :func:`ferrogen.generate` (see ``ferrogen.compat``).
"""

from typing import Any

from ferrogen.compat import run_custom_generate


def generate(model: Any, **kwargs: Any) -> Any:
    """Same arguments and result as ``model.generate``, decoded by ferrogen."""
    return run_custom_generate(model, "dola", **kwargs)
