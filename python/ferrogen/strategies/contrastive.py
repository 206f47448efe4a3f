"""Contrastive search (``penalty_alpha > 0``, ``top_k > 1``): candidates re-ranked in the core.

Per step, for all rows at once: the core processes the logits and returns each row's
``top_k`` candidates; the model runs every row × candidate in one forward pass over a
cache kept at ``rows * top_k`` rows; the core scores each candidate as
``(1 - alpha) * p - alpha * max cosine(candidate hidden state, context hidden states)``
and keeps the best; the cache takes the winners' rows, whose logits are the next step's.
The context is the prompt's last-layer hidden states (padding left out) plus those of
every chosen token, kept unit-normalised in the core.

Parity: transformers 4.55's ``_contrastive_search`` (removed from the library in 5.x).
As there, the last step's candidates are run although their logits go unused.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

import numpy as np
import torch

from .. import _core
from ..models import MultiTokenAdapter, logits_to_host
from ..outputs import GenerateOutput
from ..grammar import matchers_for
from .base import GenerationRequest, as_int64, core_settings
from .token_loop import run_token_loop

__all__ = ["contrastive_search"]


def contrastive_search(request: GenerationRequest) -> GenerateOutput:
    cfg = request.config
    adapter = request.adapter
    if not hasattr(adapter, "advance_many"):
        raise ValueError("model: contrastive search needs a transformers model with a KV cache and hidden states")
    settings = core_settings(request, grammar=matchers_for(request, 1))
    core = _core.ContrastiveSearch(
        as_int64(request.prompt_ids), settings, cfg.top_k, float(cfg.penalty_alpha or 0.0)
    )
    stepper = _CandidateStepper(adapter, core, cfg.top_k)  # type: ignore[arg-type]
    return run_token_loop(replace(request, adapter=stepper), core, stepper.step, stepper.choose)


def _host(hidden: Optional[torch.Tensor]) -> np.ndarray:
    if hidden is None:
        raise RuntimeError("contrastive search: the model adapter returned no hidden states")
    return np.ascontiguousarray(hidden.detach().to("cpu", torch.float32).numpy())


class _CandidateStepper:
    """Stands in for the adapter inside the shared token loop: picking a token runs the
    candidates' forward pass, so ``advance`` only hands over the winners' logits."""

    def __init__(self, adapter: MultiTokenAdapter, core: _core.ContrastiveSearch, top_k: int) -> None:
        self.adapter = adapter
        self.core = core
        self.top_k = top_k
        self.is_encoder_decoder = adapter.is_encoder_decoder
        self.device = adapter.device
        self._next: Optional[torch.Tensor] = None

    def prefill(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor], copies: int = 1) -> torch.Tensor:
        logits = self.adapter.prefill(input_ids, attention_mask, copies)
        # Decoder-only: the prompt is the context, padding excluded. Encoder-decoder: the
        # decoder start token (no padding there).
        keep = None
        if not self.adapter.is_encoder_decoder and attention_mask is not None:
            keep = np.ascontiguousarray((attention_mask.repeat_interleave(copies, dim=0) != 0).cpu().numpy())
        self.core.add_context(_host(self.adapter.hidden_states()), keep)
        rows = logits.shape[0]
        self.adapter.select_rows(torch.arange(rows).repeat_interleave(self.top_k))
        return logits

    def step(self, logits: np.ndarray) -> np.ndarray:
        """Processors in place, candidates, their forward pass, the choice."""
        return self._pick(self.core.step(logits))

    def choose(self, logits: np.ndarray) -> np.ndarray:
        """Same after the user's processors ran on already processed logits."""
        return self._pick(self.core.choose(logits))

    def _pick(self, candidates: np.ndarray) -> np.ndarray:
        rows, k = candidates.shape
        # The candidates' logits stay on the model's device: only the winners' are copied.
        candidate_logits = self.adapter.advance_many(torch.from_numpy(candidates).reshape(-1, 1), on_host=False)
        tokens, chosen = self.core.select(_host(self.adapter.last_hidden_state()))
        winners = torch.arange(rows) * k + torch.from_numpy(chosen)
        self.adapter.select_rows(winners.repeat_interleave(k))
        self._next = logits_to_host(candidate_logits[winners.to(candidate_logits.device), -1])
        return tokens

    def advance(self, tokens: torch.Tensor) -> torch.Tensor:
        assert self._next is not None
        return self._next
