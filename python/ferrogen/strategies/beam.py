"""Beam search and beam-search multinomial sampling (transformers 5.x semantics).

The core keeps the beams, the finished hypotheses (length penalty, early stopping) and
the tree of kept hypotheses; each step it returns the next token and the parent row of
every beam. With ``do_sample=True`` and no ``seed``, the exponential noise of the
sampling race is drawn from torch's global generator exactly as ``torch.multinomial``
draws it, so results match transformers under ``torch.manual_seed``: the core reads
the generator's state, draws the same words and hands the advanced state back, and
computes an entry's ``-log1p(-u)`` only where the race reads it (with top-k, a few
thousand of the ``batch × beams × vocab`` entries torch would transform). The draw holds
the GIL from ``get_rng_state`` to ``set_rng_state`` (the words only, a few ms), so no other
Python thread starts a torch draw in between; a torch op already running in another thread
when the step begins could still draw meanwhile and then be overwritten, where torch's own
kernel would serialise the two (concurrent draws from one global generator are unordered in
torch too). With a ``seed`` the core draws its own counter-based noise per batch item.

Device candidates: when the logits live on an accelerator, copying ``[rows, vocab]``
float32 to the host every step costs more than the forward pass of a small model. Beam
search and beam sampling then keep the scores on the device: log-softmax (then, when
sampling, temperature and top-k), each beam's running score added, ``torch.topk`` (or
``torch.multinomial`` and a sort) over ``beams * vocab`` per batch item -- transformers'
own ops, so its candidates, ties and random draws -- and only those ``K`` candidates
(score, flat index) cross to the host, where the core does the rest (EOS, finished
hypotheses, length penalty, early stopping, beam indices, the tree). The path is taken
when the model's device is not the CPU, no logits processor runs (none in the config,
no user processor), no Python stopping criterion is given and, when sampling, the only
warpers are temperature and top-k and no ``seed`` is set. Everything else runs on the
host. ``FERROGEN_DEVICE_CANDIDATES=1`` takes the path on a
CPU model too whenever it applies (the test hook); ``=0`` never takes it.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np
import torch

from .. import _core
from ..outputs import GenerateOutput
from ..stopping import evaluate_criteria
from .base import GenerationRequest
from .beam_loop import (RunningSequences, criterion_codes, guidance_of_request, new_core, process_scores,
                        run_beam_loop)

__all__ = ["beam_search", "beam_sample", "DEVICE_CANDIDATES_ENV", "use_device_candidates"]

#: Environment switch: "1" takes the device-candidates path even on CPU tensors (test
#: hook), "0" never takes it; unset, it is taken for models on an accelerator.
DEVICE_CANDIDATES_ENV = "FERROGEN_DEVICE_CANDIDATES"


def _core_draws_torch_noise() -> bool:
    """Whether this torch's CPU ``exponential_()`` is the serial MT19937 kernel the core
    reproduces (``_core.torch_exponential``): checked on a private generator, across a twist of
    its state. A torch that draws it elsewhere (through MKL's own stream) keeps torch's draws."""
    try:
        gen = torch.Generator().manual_seed(0x5EED_0019)
        state = gen.get_state().numpy().copy()
        want = torch.empty(700, dtype=torch.float32).exponential_(generator=gen).numpy()
        got = _core.torch_exponential(state, 700)
    except (ValueError, RuntimeError):  # a state layout the core does not read
        return False
    return bool(np.array_equal(got, want)) and bytes(state) == bytes(gen.get_state().numpy())


#: A fact about the installed torch, found once at import: when true, unseeded beam sampling
#: hands the core torch's generator state and the core draws the noise (see ``_BeamStep``).
CORE_DRAWS_TORCH_NOISE = _core_draws_torch_noise()


class _BeamStep:
    def __init__(self, request: GenerationRequest) -> None:
        self.core = new_core(_core.BeamSearch, request)
        self.processors = list(request.logits_processors)
        self.criteria = list(request.criteria)
        self.batch = request.batch_size
        self.width = request.config.num_beams
        self.read_scores = request.keep_scores
        self.guidance = guidance_of_request(request, request.batch_size * self.width)

    def __call__(
        self, logits: torch.Tensor, running: Optional[RunningSequences]
    ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        core = self.core
        noise = None
        if core.needs_noise:  # what torch.multinomial would draw: Exp(1) over [batch, beams * vocab]
            if CORE_DRAWS_TORCH_NOISE:  # the same draws from the same state, transformed only where read
                state = torch.get_rng_state()
                core.draw_torch_noise(state.numpy(), int(logits.shape[1]))
                torch.set_rng_state(state)
            else:
                noise = torch.empty((self.batch, self.width * logits.shape[1]), dtype=torch.float32).exponential_().numpy()
        # Unseeded sampling races on transformers' own scores: torch's log-softmax bits, since a
        # 1-ulp difference in a running score eventually flips the race (benches/README.md).
        torch_log_probs = core.needs_noise and self.guidance is None
        if torch_log_probs:
            logits = _host_log_softmax(logits)
        if not self.processors and not self.criteria and self.guidance is None:
            tokens, parents = core.step(logits.numpy(), noise, self.read_scores, not torch_log_probs)
            return tokens, parents, logits
        logits = process_scores(core, logits, running, self.processors, self.guidance,
                                log_softmax=not torch_log_probs)
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


# Warpers the device step applies itself (NaN as -inf only matters for NaN logits, which
# transformers does not clean either).
_DEVICE_WARPERS = {"NanToNegInf", "TemperatureLogitsWarper", "TopKLogitsWarper"}


class _DeviceBeamStep:
    """Beam search step from candidates chosen where the logits live (see the module doc)."""

    def __init__(self, core: _core.BeamSearch, request: GenerationRequest) -> None:
        cfg = request.config
        self.core = core
        self.batch = request.batch_size
        self.width = cfg.num_beams
        self.k = core.candidates_per_item
        self.sample = bool(cfg.do_sample)
        warpers = set(core.stage_names[1])
        # transformers' warpers, as it builds them in beam modes (min_tokens_to_keep = K / beams)
        self.temperature = (max(float(cfg.temperature), _core.TEMPERATURE_FLOOR)
                            if "TemperatureLogitsWarper" in warpers else None)
        self.top_k = max(int(cfg.top_k), self.k // self.width) if "TopKLogitsWarper" in warpers else None

    def __call__(
        self, logits: torch.Tensor, running: Optional[RunningSequences]
    ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        core, batch, k = self.core, self.batch, self.k
        vocab = int(logits.shape[1])
        log_probs = _log_softmax(logits)
        if self.temperature is not None:
            log_probs = log_probs / self.temperature
        if self.top_k is not None:
            kth = torch.topk(log_probs, min(self.top_k, vocab))[0][..., -1, None]
            log_probs = log_probs.masked_fill(log_probs < kth, -float("inf"))
        offsets = torch.from_numpy(core.running_scores).to(logits.device).view(batch, self.width, 1)
        accumulated = (log_probs.view(batch, self.width, vocab) + offsets).view(batch, self.width * vocab)
        if self.sample:  # as transformers: K draws without replacement, then sorted by score
            indices = torch.multinomial(torch.softmax(accumulated, dim=-1), num_samples=k)
            scores, order = accumulated.gather(1, indices).sort(dim=-1, descending=True)
            indices = indices.gather(-1, order)
        else:
            scores, indices = torch.topk(accumulated, k)
        # one device-to-host copy: the scores' bits and the indices side by side as int32
        packed = torch.cat([scores.view(torch.int32), indices.to(torch.int32)], dim=1).cpu().numpy()
        cand_scores = np.ascontiguousarray(packed[:, :k]).view(np.float32)
        core.propose_candidates(cand_scores, packed[:, k:].astype(np.int64), vocab)
        tokens, parents = core.commit(None)
        return tokens, parents, log_probs

    def after(self, running: Optional[RunningSequences], scores: torch.Tensor) -> None:
        pass


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """``torch.log_softmax``, except that a row holding ``+inf`` gets the softmax's limit, as
    the core defines it (torch gives NaN): ``ln(1 / k)`` at its ``k`` entries at ``+inf``, -inf
    elsewhere. Without a host sync: the rows are selected on the device."""
    log_probs = torch.log_softmax(logits, dim=-1)
    certain = torch.isposinf(logits)
    count = certain.sum(dim=-1, keepdim=True)
    limit = torch.where(certain, -torch.log(count.clamp(min=1).to(log_probs.dtype)), -float("inf"))
    return torch.where(count > 0, limit, log_probs)


def _host_log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """``torch.log_softmax`` of host logits, as transformers' beam search takes it; a batch
    holding ``+inf`` gets the core's limit for those rows (:func:`_log_softmax`)."""
    log_probs = torch.log_softmax(logits, dim=-1)
    # torch makes every entry of a row holding +inf (or NaN) NaN: one column tells, no full scan
    if bool(torch.isnan(log_probs[:, 0]).any()):
        return _log_softmax(logits)
    return log_probs


def use_device_candidates(request: GenerationRequest, core: _core.BeamSearch) -> bool:
    """Whether beam search keeps the scores on the model's device (see the module doc)."""
    switch = os.environ.get(DEVICE_CANDIDATES_ENV, "")
    adapter = request.adapter
    if switch == "0" or not hasattr(adapter, "device_logits"):
        return False
    if request.logits_processors or request.criteria or request.extras.get("guidance") is not None:
        return False
    processors, warpers = core.stage_names
    if processors:
        return False
    if request.config.do_sample:
        # the device draws from its own torch generator; a ``seed`` keys the core's noise instead
        if request.config.seed is not None or not set(warpers) <= _DEVICE_WARPERS:
            return False
    elif warpers:
        return False
    return switch == "1" or torch.device(adapter.device).type != "cpu"


def beam_search(request: GenerationRequest) -> GenerateOutput:
    step = _BeamStep(request)
    if use_device_candidates(request, step.core):
        request.adapter.device_logits = True
        return run_beam_loop(request, _DeviceBeamStep(step.core, request), track_sequences=False)
    return run_beam_loop(request, step, track_sequences=bool(step.processors or step.criteria or step.guidance))


beam_sample = beam_search  # the core reads do_sample from the config
