"""Diverse (group) beam search with transformers 4.55 semantics.

``num_beams`` beams are split into ``num_beam_groups`` groups searched in order at each
step; a group's scores are lowered by ``diversity_penalty`` for every time an earlier
group chose the same token at this step (Hamming diversity). The core runs all groups
of a step in one call; only user logits processors (called per group, as transformers
does) split the step into one call per group.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .. import _core
from ..outputs import GenerateOutput
from .base import GenerationRequest
from .beam_loop import RunningSequences, guidance_of_request, new_core, run_beam_loop, stop_when_every_row_stops

__all__ = ["group_beam_search"]


class _GroupStep:
    def __init__(self, request: GenerationRequest) -> None:
        self.core = new_core(_core.GroupBeamSearch, request)
        self.processors = list(request.logits_processors)
        self.criteria = list(request.criteria)
        groups = request.config.num_beam_groups
        # transformers calls its processors once per group, on the group's rows, classifier-free
        # guidance first: the unconditional branch advances once per group and step, as there
        self.guidance = guidance_of_request(request, request.batch_size * (request.config.num_beams // groups))
        split = bool(self.processors) or self.guidance is not None
        self.rows = [torch.from_numpy(self.core.group_rows(g)) for g in range(groups)] if split else []
        # the criteria see the step's scores (``after``); otherwise only ``output_scores`` reads them
        self.read_scores = request.keep_scores or bool(self.criteria)

    def __call__(
        self, logits: torch.Tensor, running: Optional[RunningSequences]
    ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        core = self.core
        if not self.rows:
            tokens, parents = core.step(logits.numpy(), self.read_scores)
            return tokens, parents, logits
        assert running is not None
        for g, rows in enumerate(self.rows):
            ids = running.ids.index_select(0, rows)
            if self.guidance is not None:  # between the log-softmax and the diversity penalty
                guided = logits.index_select(0, rows)
                self.guidance.apply(ids, guided)
                logits[rows] = guided
            core.process_group(g, logits.numpy(), log_softmax=self.guidance is None)
            if self.processors:
                scores = logits.index_select(0, rows)
                for proc in self.processors:
                    scores = proc(ids, scores)
                logits[rows] = scores.to(torch.float32)
            core.select_group(g, logits.numpy())
        tokens, parents = core.last_step()
        return tokens, parents, logits

    def after(self, running: Optional[RunningSequences], scores: torch.Tensor) -> None:
        stop_when_every_row_stops(self.core, self.criteria, running, scores)


def group_beam_search(request: GenerationRequest) -> GenerateOutput:
    step = _GroupStep(request)
    return run_beam_loop(request, step, track_sequences=bool(step.processors or step.criteria or step.guidance))
