"""What differs between transformers model families, in one place: each step's forward inputs,
the beam reorder of their caches, and the families (or modes) ferrogen refuses because it
cannot run them exactly, and the families whose calls on one model must not overlap.

The adapters in :mod:`ferrogen.models` keep the state ``generate`` keeps between steps (cache,
2D attention mask, position ids) and turn it into forward inputs here, with the model's own
``prepare_inputs_for_generation``, so that no family gets a recipe written for another.
tests/test_architectures.py runs every family listed there against transformers' ``generate``.
"""

from __future__ import annotations

import functools
import inspect
import threading
import weakref
from typing import Any, Callable, Optional, TypeVar, cast

import torch

__all__ = ["accepts", "check_supported", "one_call_at_a_time", "prepares_own_steps", "reorder_cache", "step_inputs"]

_F = TypeVar("_F", bound=Callable[..., Any])

#: model_type -> the state it keeps in the model's modules between forward calls, outside the
#: cache that each ``generate`` call holds: two calls at once on one model would run on each
#: other's state, so they take turns (:func:`one_call_at_a_time`). (tests/test_concurrency.py
#: looks for module attributes that ``generate`` changes in every family of tests/architectures.py.)
STATE_IN_MODULES = {"recurrent_gemma": "its recurrent (RG-LRU and convolution) state"}

#: Modes that move, copy or crop rows of the model's state between forward calls.
ROW_MOVING_MODES = frozenset(
    {"beam_search", "beam_sample", "group_beam_search", "constrained_beam_search", "contrastive_search", "assisted"}
)

#: model_type -> why part of its state cannot follow rows when beam search reorders the cache
#: (transformers' own beam search leaves that part in place: its ``sequences_scores`` disagree
#: with one uncached forward over the returned tokens). Greedy and sampling (rows never move)
#: run exactly.
ROWS_CANNOT_MOVE = {
    "recurrent_gemma": f"{STATE_IN_MODULES['recurrent_gemma']} lives in the model's modules, outside the cache",
    "minimax": "MiniMaxCache.reorder_cache leaves its linear-attention state in place",
}


def accepts(fn: Any, name: str) -> bool:
    """Whether callable ``fn`` takes a parameter called ``name``."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _model_type(model: Any) -> Optional[str]:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None)


def check_supported(model: Any, mode: str) -> None:
    """Raises ``ValueError`` naming the model type when ferrogen cannot run ``model`` exactly in
    ``mode`` (a :class:`~ferrogen.config.GenerationMode` value); called before any forward pass."""
    model_type = _model_type(model)
    if model_type is None:  # a plain torch module: no family rules
        return
    name = type(model).__name__
    try:
        from transformers import GenerationMixin
    except ImportError:  # pragma: no cover - transformers is a dependency
        return
    own_update = getattr(type(model), "_update_model_kwargs_for_generation", None)
    if own_update is not None and own_update is not GenerationMixin._update_model_kwargs_for_generation:
        raise ValueError(
            f"model: ferrogen cannot run model_type '{model_type}' ({name}) exactly: transformers carries "
            f"generation state for it in {name}._update_model_kwargs_for_generation (beyond the cache, "
            "attention mask and position ids ferrogen keeps); use the model's own generate"
        )
    mode_name = str(getattr(mode, "value", mode))
    if mode_name == "assisted" and _has_recurrent_layers(model):
        raise ValueError(
            f"model: ferrogen cannot run model_type '{model_type}' ({name}) with assisted decoding: its cache has "
            "recurrent (SSM / linear-attention) layers, which cannot roll back rejected draft tokens row by row; "
            "greedy decoding, sampling and beam search work"
        )
    if model_type in ROWS_CANNOT_MOVE and mode_name in ROW_MOVING_MODES:
        raise ValueError(
            f"model: ferrogen cannot run model_type '{model_type}' ({name}) exactly with {mode_name}: "
            f"{ROWS_CANNOT_MOVE[model_type]}, so it cannot follow beams or candidate rows (transformers' "
            "own beam search returns scores a fresh forward disagrees with); greedy decoding and sampling work"
        )


def _has_recurrent_layers(model: Any) -> bool:
    """Whether the cache transformers makes for ``model`` has a recurrent (SSM, linear-attention,
    convolution) layer: ``DynamicCache`` picks layer types from the config, before any forward."""
    try:
        from transformers import DynamicCache

        cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    except Exception:  # older transformers, or a config it cannot read: no recurrent layers known
        return False
    return any(getattr(cache, "is_linear", ()))


def prepares_own_steps(model: Any) -> bool:
    """Whether :func:`step_inputs` must ask ``model``'s ``prepare_inputs_for_generation`` for
    every step: with transformers 5.x (whose generic method takes ``next_sequence_length``;
    overrides such as Mamba's pass it on in ``**kwargs``) when the model's class overrides that
    method or is remote code. A model on the generic method gets the same inputs from the
    recipe in :func:`step_inputs`, without the generic method's cost (about 0.2 ms a step on
    this project's 2-core box, mostly looking up ``model.device``: as much as a tiny model's
    forward pass)."""
    try:
        from transformers import GenerationMixin
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    generic = GenerationMixin.prepare_inputs_for_generation
    if not (isinstance(model, GenerationMixin) and accepts(generic, "next_sequence_length")):
        return False
    remote = getattr(model, "is_remote_code", None)
    overridden = getattr(type(model), "prepare_inputs_for_generation", generic) is not generic
    return overridden or (callable(remote) and bool(remote()))


def step_inputs(
    model: Any, input_ids: torch.Tensor, state: dict[str, Any], first: bool, own: bool
) -> dict[str, Any]:
    """The forward keywords for feeding ``input_ids`` (the new tokens) with generation ``state``
    (cache, 2D attention mask or none, position ids of every position so far, use_cache, ...).

    transformers 5.x asks each model's own ``prepare_inputs_for_generation`` for its step inputs,
    and families differ there: Mamba and FalconMamba take the attention mask only on the first
    call (their mixers multiply hidden states by it, so a longer mask broadcasts into wrong
    states), others build 4D masks or slice extra inputs. Asking the same method, with
    ``next_sequence_length`` for the new tokens, gives every family exactly what ``generate``
    gives it. Models on transformers' generic method, and older transformers (no
    ``next_sequence_length``), get the generic decoder-only recipe here: the whole 2D mask (none
    when it is all ones), the new tokens' position ids. ``own`` is :func:`prepares_own_steps` of
    the model (looked up once per adapter); ``first`` marks the prompt's call.
    """
    if own:
        length = None if first else input_ids.shape[1]
        inputs: dict[str, Any] = model.prepare_inputs_for_generation(
            input_ids, next_sequence_length=length, is_first_iteration=first, **state
        )
        return inputs
    inputs = dict(state, input_ids=input_ids)
    if inputs.get("inputs_embeds") is not None:  # the prompt's embeddings stand for its ids
        inputs["input_ids"] = None
    for name in ("position_ids", "token_type_ids"):  # per-position inputs: the new tokens' part
        if inputs.get(name) is not None:
            inputs[name] = inputs[name][:, -input_ids.shape[1] :]
    return inputs


def reorder_cache(model: Any, cache: Any, rows: torch.Tensor) -> Any:
    """``cache`` keeping, for row ``i``, the state of row ``rows[i]``, as transformers' beam search
    does it: the model's own ``_reorder_cache`` where it has one, else the cache's
    ``reorder_cache`` (which covers attention, sliding-window and SSM / linear-attention layers)."""
    own = getattr(model, "_reorder_cache", None)
    if callable(own):
        return own(cache, rows)
    cache.reorder_cache(rows)
    return cache


class _Turns:
    """The lock of one model whose state lives in its modules; a call on the model from inside
    a call on it in the same thread (a logits processor or streamer generating) is refused:
    waiting for the lock would never end, sharing the state would corrupt the outer call."""

    def __init__(self, model_type: str) -> None:
        self.model_type = model_type
        self.lock = threading.Lock()
        self.owner: Optional[int] = None

    def __enter__(self) -> None:
        if self.owner == threading.get_ident():
            raise RuntimeError(
                f"model: a generate call on this {self.model_type} model is already running in this thread; "
                f"{STATE_IN_MODULES[self.model_type]} lives in the model's modules, so its calls take turns"
            )
        self.lock.acquire()
        self.owner = threading.get_ident()

    def __exit__(self, *exc: Any) -> None:
        self.owner = None
        self.lock.release()


_TURNS: "weakref.WeakKeyDictionary[Any, _Turns]" = weakref.WeakKeyDictionary()
_TURNS_GUARD = threading.Lock()


def one_call_at_a_time(generate: _F) -> _F:
    """Wraps a ``generate`` function taking the model first: on a model of a family in
    :data:`STATE_IN_MODULES`, calls from several threads run one after the other (each gets its
    serial result); other models run them at once."""

    @functools.wraps(generate)
    def serialized(model: Any, *args: Any, **kwargs: Any) -> Any:
        model_type = _model_type(model)
        if model_type not in STATE_IN_MODULES:
            return generate(model, *args, **kwargs)
        with _TURNS_GUARD:
            turns = _TURNS.get(model)
            if turns is None:
                turns = _TURNS[model] = _Turns(model_type)
        with turns:
            return generate(model, *args, **kwargs)

    return cast(_F, serialized)
