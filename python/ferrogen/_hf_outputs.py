"""The result of ``model.generate`` under :func:`ferrogen.enable` as transformers' own types.

A :class:`~ferrogen.GenerateOutput` carries transformers' field names; user code that checks
``isinstance(out, GenerateDecoderOnlyOutput)`` (or reads ``out.cache``, ``out["scores"]``,
``out.to_tuple()``) needs transformers' class itself. transformers 5.x picks the class by two
questions (``GenerationMixin._sample`` / ``_beam_search`` return statements): beam search or
not, encoder-decoder or not. ferrogen's own fields (``finish_reasons``, ``beam_tree``,
``constraints_satisfied``) ride along as plain attributes: they are not keys, so ``keys()``,
``to_tuple()`` and positions stay those of transformers' result.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from .outputs import GenerateOutput

__all__ = ["FERROGEN_ONLY", "as_transformers_output", "transformers_output_class"]

#: ferrogen's fields that transformers' output classes do not have; kept as attributes.
FERROGEN_ONLY = ("finish_reasons", "beam_tree", "constraints_satisfied")


def transformers_output_class(encoder_decoder: bool, beams: bool) -> type:
    """transformers' result class for a decoder-only / encoder-decoder model, beam search or not."""
    from transformers.generation import (
        GenerateBeamDecoderOnlyOutput,
        GenerateBeamEncoderDecoderOutput,
        GenerateDecoderOnlyOutput,
        GenerateEncoderDecoderOutput,
    )

    cls: type
    if beams:
        cls = GenerateBeamEncoderDecoderOutput if encoder_decoder else GenerateBeamDecoderOnlyOutput
    else:
        cls = GenerateEncoderDecoderOutput if encoder_decoder else GenerateDecoderOnlyOutput
    return cls


def as_transformers_output(output: GenerateOutput, encoder_decoder: bool, beams: bool) -> Any:
    """``output`` as an instance of the class transformers' ``generate`` returns for the same call.

    Every field of that class is filled from ``output``'s field of the same name (the model's
    cache under transformers 5.x's name ``cache``, 4.x's ``past_key_values``); a decoder-only
    result's ``attentions`` / ``hidden_states`` are the per-step tuples ferrogen collected.
    """
    cls = transformers_output_class(encoder_decoder, beams)
    values = {f.name: _field(output, f.name) for f in fields(cls)}
    result = cls(**values)
    for name in FERROGEN_ONLY:
        value = getattr(output, name, None)
        if value is not None:  # not a key: ModelOutput only indexes its dataclass fields
            object.__setattr__(result, name, value)
    return result


def _field(output: GenerateOutput, name: str) -> Any:
    if name in ("cache", "past_key_values"):
        return output.cache
    return getattr(output, name)
