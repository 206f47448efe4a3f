"""Multinomial sampling: processors, warpers and a seeded per-row draw, all in the core."""

from __future__ import annotations

from .. import _core
from ..outputs import GenerateOutput
from ..processors import draw_seed, unpadded_rows
from ..grammar import matchers_for
from .base import GenerationRequest, as_int64, core_settings
from .token_loop import run_token_loop

__all__ = ["sample"]


def sample(request: GenerationRequest) -> GenerateOutput:
    """``do_sample=True, num_beams=1``; ``num_return_sequences`` rows per prompt.

    The seed is the config's ``seed``, else one 63-bit draw from torch's global generator
    (so ``torch.manual_seed`` makes runs reproducible). Each row's draws depend only on the
    seed, its unpadded prompt, its occurrence among identical prompts and its return index.
    """
    decoder = sample_core(request)
    copies = request.config.num_return_sequences
    return run_token_loop(request, decoder, decoder.step_sample, decoder.choose_sample, copies, make_core=sample_core)


def sample_core(request: GenerationRequest) -> _core.Decoder:
    """The core of a sampled generation of ``request`` (the batch engine builds one per merged group)."""
    copies = request.config.num_return_sequences
    prompt = request.prompt_ids.repeat_interleave(copies, dim=0)
    settings = core_settings(
        request, seed=request.config.seed if request.config.seed is not None else draw_seed(),
        seed_prompts=unpadded_rows(request.input_ids, request.attention_mask),
        row_seeds=request.extras.get("row_seeds"),  # one seed per prompt: as if generated alone
        grammar=matchers_for(request, copies))
    return _core.Decoder(as_int64(prompt), settings)
