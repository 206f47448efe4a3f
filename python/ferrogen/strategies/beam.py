"""Beam search and beam-search multinomial sampling (transformers 5.x semantics).

The core keeps the beams, the finished hypotheses (length penalty, early stopping) and
the tree of kept hypotheses; each step it returns the next token and the parent row of
every beam. With ``do_sample=True`` and no ``seed``, the exponential noise of the
sampling race is drawn from torch's global generator exactly as ``torch.multinomial``
draws it, so results match transformers under ``torch.manual_seed``; with a ``seed``
the core draws its own counter-based noise per batch item.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .. import _core
from ..outputs import GenerateOutput
from ..stopping import evaluate_criteria
from .base import GenerationRequest
from .beam_loop import RunningSequences, criterion_codes, new_core, run_beam_loop

__all__ = ["beam_search", "beam_sample"]


class _BeamStep:
    def __init__(self, request: GenerationRequest) -> None:
        self.core = new_core(_core.BeamSearch, request)
        self.processors = list(request.logits_processors)
        self.criteria = list(request.criteria)
        self.batch = request.batch_size
        self.width = request.config.num_beams

    def __call__(
        self, logits: torch.Tensor, running: Optional[RunningSequences]
    ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        core = self.core
        noise = None
        if core.needs_noise:  # what torch.multinomial would draw: Exp(1) over [batch, beams * vocab]
            noise = torch.empty((self.batch, self.width * logits.shape[1]), dtype=torch.float32).exponential_().numpy()
        if not self.processors and not self.criteria:
            tokens, parents = core.step(logits.numpy(), noise)
            return tokens, parents, logits
        if self.processors:
            assert running is not None
            core.process(logits.numpy())
            for proc in self.processors:
                logits = proc(running.ids, logits).to(torch.float32).contiguous()
            core.warp(logits.numpy())
        else:
            core.process(logits.numpy())
            core.warp(logits.numpy())
        cand_parents, cand_tokens = core.propose(logits.numpy(), noise)
        hits = None
        if self.criteria:  # transformers evaluates them on every candidate continuation
            assert running is not None
            seqs = running.candidates(torch.from_numpy(cand_parents), torch.from_numpy(cand_tokens))
            hits = criterion_codes(evaluate_criteria(self.criteria, seqs, logits), len(cand_tokens))
        tokens, parents = core.commit(hits)
        return tokens, parents, logits

    def after(self, running: Optional[RunningSequences], scores: torch.Tensor) -> None:
        pass


def beam_search(request: GenerationRequest) -> GenerateOutput:
    step = _BeamStep(request)
    return run_beam_loop(request, step, track_sequences=bool(step.processors or step.criteria))


beam_sample = beam_search  # the core reads do_sample from the config
