"""What ``ferrogen.generate`` says about a transformers ``generate()`` argument it does not take:
the argument, whether ``model.generate`` under ``ferrogen.enable(model)`` runs it (by handing the
call to transformers, with a ``FallbackWarning``), and what to use instead.
"""

from __future__ import annotations

from typing import Any, Iterable

from ._validation import UnknownFieldError, did_you_mean

__all__ = ["refuse_transformers_arguments"]

_ENABLE = ("under ferrogen.enable(model), model.generate(...) runs it by handing the call to transformers' "
           "generate (one ferrogen.FallbackWarning)")

# argument -> what to do instead (each also works under enable(), through transformers)
_ADVICE = {
    "assistant_tokenizer": (
        "drafts from a model with another tokenizer are not native; use a draft model with the same tokenizer "
        "(assistant_model=) or prompt_lookup_num_tokens=, or " + _ENABLE),
    "synced_gpus": ("ferrogen does not synchronise DeepSpeed ZeRO-3 ranks; for many GPUs use "
                    "ferrogen.distributed (data parallel), or " + _ENABLE),
    "custom_generate": ("it runs the folder's own decoding code: call model.generate(..., custom_generate=...) "
                        "(ferrogen.custom_generate_path() gives folders that run ferrogen); " + _ENABLE.replace(
                            "by handing the call to transformers' generate (one ferrogen.FallbackWarning)",
                            "through transformers, silently")),
    "trust_remote_code": "it only matters with custom_generate (model.generate); leave it out",
}
_INPUTS = ("decoder_input_ids", "encoder_outputs", "use_model_defaults")


def refuse_transformers_arguments(kwargs: dict[str, Any], fields: Iterable[str]) -> None:
    """Raises ``TypeError`` (an ``UnknownFieldError``) for the first keyword that is not a setting of
    ``fields`` and that ferrogen.generate does not take, saying what to do; before any model work."""
    known = set(fields)
    for name in kwargs:
        if name in known:
            continue
        if name in _ADVICE:
            raise UnknownFieldError([name], f"{name}: a transformers generate() argument that ferrogen.generate "
                                            f"does not take; {_ADVICE[name]}")
        if name in _INPUTS:
            raise UnknownFieldError([name], f"{name}: not supported by ferrogen.generate; pass input_ids (and "
                                            f"attention_mask); {_ENABLE}")
        raise UnknownFieldError([name], f"{name}: not a generation setting nor an argument of ferrogen.generate"
                                        f"{did_you_mean(name, known)}; if it is a model input or a transformers-only "
                                        f"argument, {_ENABLE}")
