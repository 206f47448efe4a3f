"""Constrained beam search: beam search whose outputs must contain given phrases.

The Rust core keeps every beam's progress through the constraints and, each step, adds
the tokens that advance an unsatisfied beam to the usual top-k candidates, then deals
the candidates out over "banks" (levels of constraint progress) so that progress is not
crowded out by score (transformers 4.55 semantics, with its constraint tracking fixed).
Only beams that satisfy every constraint may finish on EOS, and in the last steps only
beams that can still complete them within ``max_length`` are kept, so every returned
sequence contains every constraint whenever they fit. When ``max_new_tokens`` is too
short for that, the best beams are returned anyway, flagged in
``GenerateOutput.constraints_satisfied`` and ``finish_reasons`` (``"constraints_unmet"``),
with a warning.
"""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
import torch

from .. import _core
from ..constraints import resolve_constraints
from ..outputs import GenerateOutput
from ..grammar import matchers_for
from .base import GenerationRequest, as_int64, core_settings
from .beam_loop import RunningSequences, guidance_of_request, process_scores, run_beam_loop, stop_when_every_row_stops

__all__ = ["constrained_beam_search"]


class _ConstrainedStep:
    def __init__(self, request: GenerationRequest) -> None:
        specs = resolve_constraints(request.config, request.tokenizer, request.vocab_size)
        mask = None
        if not request.adapter.is_encoder_decoder and request.attention_mask is not None:
            mask = np.ascontiguousarray(request.attention_mask.detach().cpu().numpy() != 0)
        settings = core_settings(request, grammar=matchers_for(request, request.config.num_beams))
        self.core = _core.ConstrainedBeamSearch(as_int64(request.prompt_ids), settings, specs, mask)
        self.processors = list(request.logits_processors)
        self.criteria = list(request.criteria)
        self.guidance = guidance_of_request(request, request.batch_size * request.config.num_beams)

    def __call__(
        self, logits: torch.Tensor, running: Optional[RunningSequences]
    ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        core = self.core
        if not self.processors and self.guidance is None:
            tokens, parents = core.step(logits.numpy())
            return tokens, parents, logits
        logits = process_scores(core, logits, running, self.processors, self.guidance)
        tokens, parents = core.select(logits.numpy())
        return tokens, parents, logits

    def after(self, running: Optional[RunningSequences], scores: torch.Tensor) -> None:
        stop_when_every_row_stops(self.core, self.criteria, running, scores)


def constrained_beam_search(request: GenerationRequest) -> GenerateOutput:
    step = _ConstrainedStep(request)
    out = run_beam_loop(request, step, track_sequences=bool(step.processors or step.criteria or step.guidance))
    satisfied = list(step.core.finalize().constraints_satisfied or [])
    out.constraints_satisfied = satisfied
    stopped = False
    if out.finish_reasons is not None:
        stopped = any(r != "length" for r, ok in zip(out.finish_reasons, satisfied) if not ok)
        out.finish_reasons = [r if ok else "constraints_unmet" for r, ok in zip(out.finish_reasons, satisfied)]
    missing = satisfied.count(False)
    if missing:
        # The search keeps every beam able to complete the constraints while they fit (each in its
        # shortest form, one after another) in the new tokens, so a row misses them only when they
        # do not fit, fewer distinct sequences holding them fit than were asked for, or a stopping
        # criterion ended the search first.
        why = ("a stopping criterion ended the search before they fit" if stopped else
               f"too few new tokens ({request.max_length - int(request.prompt_ids.shape[1])}) to fit them in "
               f"{len(satisfied)} distinct sequences")
        warnings.warn(
            f"constraints: {missing} of {len(satisfied)} returned sequences do not contain every constraint "
            f"({why}); they are the best beams found, ranked after any that do, "
            "and flagged in GenerateOutput.constraints_satisfied", UserWarning, stacklevel=3)
    return out
