"""Drop-in paths for transformers users: :func:`enable`, :func:`patched` and the
``custom_generate`` folders.

Example::

    ferrogen.enable(model)              # from now on model.generate(...) runs ferrogen
    with ferrogen.patched(model):       # ... or only inside the block
        model.generate(**ids, num_beams=4)

    # transformers 5.x moved contrastive, group beam and constrained beam search to the Hub;
    # ferrogen ships local folders that transformers loads the same way:
    model.generate(**ids, penalty_alpha=0.6, top_k=4, trust_remote_code=True,
                   custom_generate=ferrogen.custom_generate_path("contrastive_search"))

A call ferrogen cannot run as transformers would (an argument or setting ferrogen does not
implement, a strategy missing from this build) runs transformers' own ``generate`` instead,
with one :class:`FallbackWarning` per reason and process.
"""

from __future__ import annotations

import contextlib
from collections import Counter
import inspect
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar, Union

import torch

from .config import GenerationConfig, GenerationMode
from .families import accepts
from ._lenient import resolve_config, warn_right_padding
from ._hf_outputs import as_transformers_output
from .generate import BEAM_MODES, MODEL_INPUTS, unsupported_settings
from .generate import generate as ferrogen_generate
from .models import is_encoder_decoder
from .seq2seq_inputs import SEQ2SEQ_INPUTS
from .outputs import GenerateOutput
from .strategies import STRATEGIES

__all__ = [
    "FallbackWarning", "custom_generate_path", "disable", "enable", "fallback_counts", "is_enabled", "patched",
]

M = TypeVar("M")

# transformers' generate() parameters before **kwargs, in order (4.46 ... 5.x).
_GENERATE_PARAMS = (
    "inputs", "generation_config", "logits_processor", "stopping_criteria", "prefix_allowed_tokens_fn",
    "synced_gpus", "assistant_model", "streamer", "negative_prompt_ids", "negative_prompt_attention_mask",
    "custom_generate",
)
# Arguments handed to ferrogen.generate unchanged.
_PASSED = ("logits_processor", "stopping_criteria", "streamer", "tokenizer", "assistant_model", "prefix_allowed_tokens_fn",
           "negative_prompt_ids", "negative_prompt_attention_mask")
# Arguments ferrogen has no counterpart for: any value sends the call to transformers.
_TRANSFORMERS_ONLY = frozenset({"assistant_tokenizer", "custom_generate"})
_FIELDS = frozenset(f.name for f in fields(GenerationConfig))

_FOLDERS = Path(__file__).parent / "custom_generate"
# custom_generate folder name -> the mode it runs (None: whatever the settings select)
_FOLDER_MODES: dict[str, Optional[GenerationMode]] = {
    "ferrogen": None,
    "contrastive_search": GenerationMode.CONTRASTIVE_SEARCH,
    "group_beam_search": GenerationMode.GROUP_BEAM_SEARCH,
    "constrained_beam_search": GenerationMode.CONSTRAINED_BEAM_SEARCH,
    "dola": GenerationMode.DOLA,
}
_MODE_NEEDS = {
    GenerationMode.CONTRASTIVE_SEARCH: "penalty_alpha > 0 and top_k > 1",
    GenerationMode.GROUP_BEAM_SEARCH: "num_beams > 1 and num_beam_groups > 1 (dividing num_beams)",
    GenerationMode.CONSTRAINED_BEAM_SEARCH: "force_words_ids (or constraints) and num_beams > 1",
    GenerationMode.DOLA: "dola_layers with greedy search or sampling",
}
_warned: set[str] = set()
_counts: Counter[str] = Counter()  # fallback calls per reason, for fallback_counts()


class FallbackWarning(UserWarning):
    """A ``model.generate`` call went to transformers because ferrogen cannot run it as asked."""


def custom_generate_path(strategy: Optional[Union[str, GenerationMode]] = None) -> str:
    """Local folder for transformers 5.x's ``model.generate(..., custom_generate=path, trust_remote_code=True)``.

    ``strategy`` is ``"contrastive_search"``, ``"group_beam_search"``, ``"constrained_beam_search"`` or
    ``"dola"`` (the strategies transformers 5.x moved to ``transformers-community/...`` Hub repos; those names
    work too), or ``None`` for a folder that runs whatever strategy the arguments select. The folder's
    ``custom_generate/generate.py`` runs :func:`ferrogen.generate`, so no network is needed; a
    strategy folder raises ``ValueError`` when the settings select another strategy.

    Example:
        >>> import os
        >>> path = custom_generate_path("transformers-community/contrastive-search")
        >>> os.path.basename(path), os.path.isfile(os.path.join(path, "custom_generate", "generate.py"))
        ('contrastive_search', True)
    """
    if strategy is None:
        name = "ferrogen"
    else:
        name = strategy.value if isinstance(strategy, GenerationMode) else str(strategy)
        name = name.removeprefix("transformers-community/").replace("-", "_")
        name = "dola" if name == GenerationMode.DOLA.value else name
    if name not in _FOLDER_MODES or (strategy is not None and name == "ferrogen"):
        choices = sorted(n for n in _FOLDER_MODES if n != "ferrogen")
        raise ValueError(f"strategy: must be one of {choices} or None (any strategy), got {strategy!r}")
    return str(_FOLDERS / name)


def enable(model: M) -> M:
    """Route ``model.generate(...)`` through ferrogen, for this model object; returns the model.

    Same arguments, same results as transformers' ``generate`` for every strategy ferrogen has,
    the moved ones included (contrastive, group beam, constrained beam need no ``custom_generate``
    and no network). Calls ferrogen cannot run exactly go to transformers' ``generate``, with one
    :class:`FallbackWarning` per reason; a call with ``custom_generate`` goes to transformers
    silently (the caller chose the decoding code). Undo with :func:`disable`; calling it twice
    is harmless. A ``copy.deepcopy`` of an enabled model is enabled for the copy.

    Raises ``TypeError`` for a model without transformers' ``GenerationMixin.generate`` (a model
    class or object with its own ``generate``, such as Whisper's, is left alone).
    """
    if not is_enabled(model):
        _check_patchable(model)
        vars(model)["generate"] = _FerrogenGenerate(model)
    return model


def disable(model: Any) -> None:
    """Undo :func:`enable`: ``model.generate`` is transformers' again. No-op when not enabled."""
    if is_enabled(model):
        del vars(model)["generate"]


def is_enabled(model: Any) -> bool:
    """Whether :func:`enable` routes this model's ``generate`` through ferrogen."""
    return isinstance(getattr(model, "__dict__", {}).get("generate"), _FerrogenGenerate)


class _FerrogenGenerate:
    """``model.generate`` while :func:`enable` is on: transformers' signature, ferrogen underneath.

    An object rather than a closure, so that ``copy.deepcopy(model)`` rebinds it to the copy.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        transformers_generate = type(model).generate.__get__(model)
        self.__signature__ = inspect.signature(transformers_generate)
        self.__doc__ = transformers_generate.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        model = self.model
        transformers_generate = type(model).generate.__get__(model)
        arguments = _bind(args, kwargs)
        if arguments.get("custom_generate") is not None:  # the caller chose the decoding code
            return transformers_generate(*args, **kwargs)
        return _dispatch(model, arguments, lambda: transformers_generate(**_for_transformers(arguments)))

    def __repr__(self) -> str:
        return f"<ferrogen.enable generate of {type(self.model).__name__}>"


@contextlib.contextmanager
def patched(model: M) -> Iterator[M]:
    """``with ferrogen.patched(model):`` :func:`enable` for the block only (left on if it was on before).

    Example::

        with ferrogen.patched(model):
            out = model.generate(**ids, num_beams=4, num_beam_groups=2, diversity_penalty=1.0)
    """
    was_enabled = is_enabled(model)
    enable(model)
    try:
        yield model
    finally:
        if not was_enabled:
            disable(model)


def run_custom_generate(model: Any, strategy: Optional[str] = None, **arguments: Any) -> Any:
    """Entry point of the ``custom_generate/generate.py`` files that ferrogen ships.

    transformers calls the folder's ``generate(model=..., **generate_arguments)``; this runs it
    with ferrogen (checking that the settings select the folder's ``strategy``), or with
    transformers' own ``generate`` for calls ferrogen cannot run (one warning per reason).
    """
    mode = _FOLDER_MODES[strategy] if strategy is not None else None

    def fallback() -> Any:
        # the user passed trust_remote_code=True to reach this folder; transformers needs it
        # again for the strategies it moved to the Hub
        return type(model).generate(model, **{**_for_transformers(arguments), "trust_remote_code": True})

    return _dispatch(model, arguments, fallback, mode)


@dataclass
class _Call:
    """One ``generate`` call, sorted into what ferrogen takes and what keeps it from running."""

    input_ids: Any = None
    attention_mask: Any = None
    generation_config: Any = None
    settings: dict[str, Any] = field(default_factory=dict)
    passed: dict[str, Any] = field(default_factory=dict)
    blockers: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # model inputs, by name


def _bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    if len(args) > len(_GENERATE_PARAMS):
        raise TypeError(f"generate() takes at most {len(_GENERATE_PARAMS)} positional arguments, got {len(args)}")
    arguments = dict(zip(_GENERATE_PARAMS, args))
    for name in kwargs.keys() & arguments.keys():
        raise TypeError(f"generate() got multiple values for argument {name!r}")
    arguments.update(kwargs)
    return arguments


def _sort(arguments: dict[str, Any]) -> _Call:
    args = {k: v for k, v in arguments.items() if v is not None and k != "trust_remote_code"}
    call = _Call(attention_mask=args.pop("attention_mask", None), generation_config=args.pop("generation_config", None))
    inputs, call.input_ids = args.pop("inputs", None), args.pop("input_ids", None)
    if inputs is not None and call.input_ids is not None:
        call.blockers.append("inputs")  # both given: transformers explains the conflict
    call.input_ids = inputs if call.input_ids is None else call.input_ids
    if call.input_ids is None and "encoder_outputs" in args:
        call.blockers.append("inputs")  # encoder states instead of token ids
    elif isinstance(call.input_ids, torch.Tensor) and (call.input_ids.is_floating_point() or call.input_ids.dim() > 2):
        call.blockers.append("inputs")  # features or embeddings, not token ids
    for name in _PASSED:
        if name in args:
            call.passed[name] = args.pop(name)
    if args.pop("synced_gpus", False):
        call.blockers.append("synced_gpus")
    for name, value in args.items():
        if name in _FIELDS and name not in _TRANSFORMERS_ONLY:
            call.settings[name] = value
        else:  # a transformers-only argument or a model input (inputs_embeds, token_type_ids, ...)
            call.blockers.append(name)
            call.extra[name] = value
    return call


def _dispatch(
    model: Any, arguments: dict[str, Any], fallback: Callable[[], Any], mode: Optional[GenerationMode] = None
) -> Any:
    call = _sort(arguments)
    _keep_last_logits(model, arguments, call)
    _feed_model_inputs(model, call)
    config = resolve_config(model, call.generation_config, call.settings)
    chosen = config.generation_mode(call.passed.get("assistant_model"))
    if mode is not None and chosen is not mode:
        raise ValueError(
            f"custom_generate: this folder runs {mode.value}, which needs {_MODE_NEEDS[mode]}; "
            f"these settings select {chosen.value} (use ferrogen.custom_generate_path() for any strategy)"
        )
    blockers = call.blockers + unsupported_settings(config, chosen, model)
    if chosen not in STRATEGIES:
        blockers.append(f"{chosen.value} (not in this ferrogen build)")
    if blockers:
        _warn_once(blockers)
        return fallback()
    if call.input_ids is None and "inputs_embeds" not in call.passed:
        call.input_ids = _bos_prompt(model, config, call.attention_mask)
    pad = config.pad_token_id if config.pad_token_id is not None else next(iter(config.eos_token_ids), None)
    warn_right_padding(model, call.input_ids, call.attention_mask, pad)
    result = ferrogen_generate(model, call.input_ids, call.attention_mask, config, **call.passed)
    if isinstance(result, GenerateOutput):  # transformers' own class, for isinstance checks in user code
        return as_transformers_output(result, is_encoder_decoder(model), chosen in BEAM_MODES)
    return result


def _keep_last_logits(model: Any, arguments: dict[str, Any], call: _Call) -> None:
    """``logits_to_keep=n`` (an int, 0 for all) always keeps the last position, the only one
    generation reads: ferrogen's adapters keep just that one, so the result is the same. A model
    whose forward does not take it goes to transformers, which refuses it."""
    keep = arguments.get("logits_to_keep")
    if "logits_to_keep" in call.blockers and isinstance(keep, int) and not isinstance(keep, bool) and keep >= 0:
        if accepts(model.forward, "logits_to_keep"):
            call.blockers.remove("logits_to_keep")


def _feed_model_inputs(model: Any, call: _Call) -> None:
    """``inputs_embeds``, ``position_ids``, ``token_type_ids`` run natively where ``ferrogen.generate``
    feeds them (decoder-only models that take them), as do an encoder-decoder model's ``inputs_embeds``
    (without input_ids), ``decoder_input_ids`` and ``decoder_attention_mask``; elsewhere transformers
    runs the call."""
    if is_encoder_decoder(model):
        _feed_seq2seq_inputs(model, call)
        return
    embeds = call.extra.get("inputs_embeds")
    if isinstance(embeds, torch.Tensor) and embeds.dim() == 3 and embeds.is_floating_point() and accepts(
        model.prepare_inputs_for_generation, "inputs_embeds"
    ):
        call.blockers.remove("inputs_embeds")
        call.passed["inputs_embeds"] = embeds
    if not isinstance(call.input_ids, torch.Tensor):
        return
    for name in MODEL_INPUTS:
        value = call.extra.get(name)
        if isinstance(value, torch.Tensor) and value.shape == call.input_ids.shape and accepts(model.forward, name):
            call.blockers.remove(name)
            call.passed[name] = value


def _feed_seq2seq_inputs(model: Any, call: _Call) -> None:
    embeds = call.extra.get("inputs_embeds")
    if isinstance(embeds, torch.Tensor) and embeds.dim() == 3 and embeds.is_floating_point() and call.input_ids is None:
        call.blockers.remove("inputs_embeds")
        call.passed["inputs_embeds"] = embeds
    for name in SEQ2SEQ_INPUTS:
        if isinstance(call.extra.get(name), torch.Tensor) and call.extra[name].dim() == 2:
            call.blockers.remove(name)
            call.passed[name] = call.extra[name]


def _bos_prompt(model: Any, config: GenerationConfig, attention_mask: Any) -> torch.Tensor:
    """No prompt: ``[[bos_token_id]]`` per row, as transformers' ``_maybe_initialize_input_ids_for_generation``
    builds it (one row, or as many as a given ``attention_mask`` has)."""
    if config.bos_token_id is None:
        raise ValueError("`bos_token_id` has to be defined when no `input_ids` are provided.")
    batch = attention_mask.shape[0] if isinstance(attention_mask, torch.Tensor) else 1
    device = getattr(model, "device", None) or "cpu"
    return torch.full((batch, 1), config.bos_token_id, dtype=torch.long, device=device)


def _for_transformers(arguments: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments as transformers' ``generate`` takes them."""
    out = {k: v for k, v in arguments.items() if v is not None}
    if isinstance(out.get("generation_config"), GenerationConfig):
        out["generation_config"] = out["generation_config"].to_transformers()
    return out


def fallback_counts() -> dict[str, int]:
    """How many ``model.generate`` calls went to transformers in this process, per reason (a copy;
    the :class:`FallbackWarning` itself shows once per reason).

    Example:
        >>> isinstance(fallback_counts(), dict)
        True
    """
    return dict(_counts)


def _warn_once(blockers: list[str]) -> None:
    _counts.update(dict.fromkeys(blockers, 1))
    new = [b for b in dict.fromkeys(blockers) if b not in _warned]
    if new:
        _warned.update(new)
        warnings.warn(
            f"ferrogen cannot run {', '.join(new)}; this call runs transformers' generate "
            "(warned once per reason)",
            FallbackWarning,
            stacklevel=4,
        )


def _check_patchable(model: Any) -> None:
    from transformers import GenerationMixin

    if not isinstance(model, GenerationMixin):
        raise TypeError(f"model: expected a transformers model with generate(), got {type(model).__name__}")
    own = "generate" in vars(model) or getattr(type(model), "generate", None) is not GenerationMixin.generate
    if own:
        raise TypeError(
            f"model: {type(model).__name__} has its own generate(); ferrogen.enable stands in for "
            "transformers' GenerationMixin.generate only"
        )
