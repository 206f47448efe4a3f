"""Greedy search: the most probable token at every step, chosen by the core."""

from __future__ import annotations

from .. import _core
from ..outputs import GenerateOutput
from ..grammar import matchers_for
from .base import GenerationRequest, as_int64, core_settings
from .token_loop import run_token_loop

__all__ = ["greedy_search"]


def greedy_search(request: GenerationRequest) -> GenerateOutput:
    decoder = greedy_core(request)
    copies = request.config.num_return_sequences
    return run_token_loop(request, decoder, decoder.step_greedy, decoder.choose_greedy, copies, make_core=greedy_core)


def greedy_core(request: GenerationRequest) -> _core.Decoder:
    """The core of a greedy generation of ``request`` (the batch engine builds one per merged group)."""
    copies = request.config.num_return_sequences
    prompt = request.prompt_ids.repeat_interleave(copies, dim=0)
    return _core.Decoder(as_int64(prompt), core_settings(request, grammar=matchers_for(request, copies)))
