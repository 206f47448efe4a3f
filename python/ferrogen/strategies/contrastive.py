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
from ..models import MultiTokenAdapter, is_multi_token, logits_to_host
from ..outputs import GenerateOutput
from ..grammar import matchers_for
from .base import GenerationRequest, as_int64, core_settings
from .token_loop import run_token_loop

__all__ = ["contrastive_search"]


def contrastive_search(request: GenerationRequest) -> GenerateOutput:
    cfg = request.config
    adapter = request.adapter
    if not is_multi_token(adapter):
        raise ValueError("model: contrastive search needs a transformers model with a KV cache and hidden states")
    settings = core_settings(request, grammar=matchers_for(request, 1))
    core = _core.ContrastiveSearch(
        as_int64(request.prompt_ids), settings, cfg.top_k, float(cfg.penalty_alpha or 0.0)
    )
    stepper = _CandidateStepper(adapter, core, cfg.top_k)
    return run_token_loop(replace(request, adapter=stepper), core, stepper.step, stepper.choose)


def _chosen(outputs: tuple[Any, ...], winners: torch.Tensor) -> tuple[Any, ...]:
    """The winners' rows of every per-layer tensor of a candidates' forward call (``None`` kept)."""
    if all(part is None for part in outputs):
        return outputs
    return tuple(None if part is None else tuple(t.index_select(0, winners.to(t.device)) for t in part)
                 for part in outputs)


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
        self.device_logits = False
        self._next: Optional[torch.Tensor] = None
        self._rows = 0
        self._trimmed = False
        #: the model outputs behind the logits the next token is picked from (output_attentions /
        #: output_hidden_states): the prompt's, then the chosen candidate's, as transformers 4.55 keeps them
        self.step_outputs: tuple[Any, ...] = adapter.step_outputs if hasattr(adapter, "step_outputs") else (None,)

    @property
    def encoder_step_outputs(self) -> Any:
        return getattr(self.adapter, "encoder_step_outputs", None)

    @property
    def cache(self) -> Any:
        """The cache as transformers 4.55 returns it: one row per prompt (the chosen candidates'),
        every position but the last chosen token. Trimmed when asked for, after the loop."""
        if getattr(self.adapter, "cache", None) is None:
            return None
        if self._rows and not self._trimmed:
            self.adapter.select_rows(torch.arange(self._rows) * self.top_k)
            self.adapter.crop_rows(torch.ones(self._rows, dtype=torch.long))
            self._trimmed = True
        return getattr(self.adapter, "cache")

    def decoder_prompt(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.adapter.decoder_prompt(input_ids)

    def last_hidden_state(self) -> Optional[torch.Tensor]:
        return self.adapter.last_hidden_state()

    def reorder(self, parent_rows: torch.Tensor) -> None:
        raise NotImplementedError("contrastive search keeps its candidates' rows itself; it has no beams to reorder")

    def prefill(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor], copies: int = 1) -> torch.Tensor:
        logits = self.adapter.prefill(input_ids, attention_mask, copies)
        self.step_outputs = getattr(self.adapter, "step_outputs", (None,))
        # Decoder-only: the prompt is the context, padding excluded. Encoder-decoder: the
        # decoder start token (no padding there).
        keep = None
        if not self.adapter.is_encoder_decoder and attention_mask is not None:
            keep = np.ascontiguousarray((attention_mask.repeat_interleave(copies, dim=0) != 0).cpu().numpy())
        self.core.add_context(_host(self.adapter.hidden_states()), keep)
        rows = self._rows = logits.shape[0]
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
        self.step_outputs = _chosen(getattr(self.adapter, "step_outputs", (None,)), winners)
        return tokens

    def advance(self, tokens: torch.Tensor) -> torch.Tensor:
        assert self._next is not None
        return self._next
