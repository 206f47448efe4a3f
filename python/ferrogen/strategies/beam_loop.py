"""The loop shared by the beam strategies (beam search, beam sampling, group beam search).

Per step: one forward pass over every running beam, one core call that processes the
scores and chooses the next token and parent row of each beam, one ``index_select`` of
the KV cache by those parents. Everything that can be decided before the loop (output
flags, whether running sequences must be kept for Python callables, streaming) is
decided before it; nothing inside the loop iterates over batch × beams in Python.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Protocol, TypeVar, Union

import numpy as np
import torch

from .._validation import GenerationConfigError
from ..outputs import GenerateOutput
from ..processors import unpadded_rows
from ..stopping import evaluate_criteria
from .. import _core
from ..grammar import grammar_finish_reasons, matchers_for
from .base import GenerationRequest, as_int64, core_settings
from .guidance import UnconditionalBranch
from .token_loop import collected_outputs

BeamCoreT = TypeVar("BeamCoreT", _core.BeamSearch, _core.GroupBeamSearch)
# The beam family's core objects; they share is_done, stop, take_settled, finalize, tree and last_step.
BeamCore = Union[_core.BeamSearch, _core.GroupBeamSearch, _core.ConstrainedBeamSearch]

__all__ = ["BeamCore", "BeamStep", "RunningSequences", "check_beam_memory", "criterion_codes", "guidance_of_request",
           "new_core", "process_scores", "run_beam_loop", "stop_when_every_row_stops"]


def _host_memory() -> Optional[int]:
    """Bytes of physical memory on this machine, or None where the platform does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def check_beam_memory(request: GenerationRequest, memory: Optional[int] = None) -> None:
    """Refuses, naming ``num_beams``, a beam width whose state cannot exist on this machine,
    before any model work: every step holds ``batch * num_beams`` rows of float32 scores over
    the vocabulary and of token history, on the host. transformers fails the same request
    later with torch's allocation error (or the process is killed); the core itself checks
    its own allocations too (an allocation it cannot make is a MemoryError, never an abort).
    ``memory`` defaults to the host's physical memory."""
    memory = _host_memory() if memory is None else memory
    beams = request.config.num_beams
    if memory is None or beams <= 1:
        return
    rows = request.batch_size * beams
    per_row = 4 * (request.vocab_size or 0) + 8 * request.max_length
    need = rows * per_row
    if need > memory:
        raise GenerationConfigError(
            "num_beams", f"{beams} beams x batch {request.batch_size} need {need / 2**30:.1f} GiB per step (scores "
            f"over a vocabulary of {request.vocab_size} and histories of up to {request.max_length} tokens), more "
            f"than this machine's {memory / 2**30:.1f} GiB; use fewer beams")


def new_core(cls: type[BeamCoreT], request: GenerationRequest) -> BeamCoreT:
    """The core search object. Beam sampling with a ``seed`` keys each batch item's noise by
    the seed and its unpadded prompt; without one, the caller draws the noise from torch."""
    seed_prompts = None
    if request.config.do_sample and request.config.seed is not None:
        seed_prompts = unpadded_rows(request.input_ids, request.attention_mask)
    grammar = matchers_for(request, request.config.num_beams)
    return cls(as_int64(request.prompt_ids), core_settings(request, seed_prompts=seed_prompts, grammar=grammar))


def guidance_of_request(request: GenerationRequest, rows: int) -> Optional[UnconditionalBranch]:
    """This call's classifier-free guidance branch, its negative prompt checked against the
    ``rows`` transformers' processor is called with (``None`` without guidance)."""
    guidance: Optional[UnconditionalBranch] = request.extras.get("guidance")
    if guidance is not None:
        guidance.check_rows(rows)
    return guidance


def process_scores(core: Any, logits: torch.Tensor, running: Optional["RunningSequences"], processors: list,
                   guidance: Optional[UnconditionalBranch], log_softmax: bool = True) -> torch.Tensor:
    """transformers' beam order over ``logits``: log-softmax, classifier-free guidance (its first
    processor, which log-softmaxes again and returns unnormalised guided scores), the config's
    processors (the core), then the user's; returns the processed scores. ``log_softmax=False``:
    ``logits`` are already log-probabilities (no guidance then)."""
    if guidance is not None:
        assert running is not None
        guidance.apply(running.ids, logits)  # log-softmaxes the conditional rows itself
    core.process(logits.numpy(), log_softmax=log_softmax and guidance is None)
    for proc in processors:
        assert running is not None
        logits = proc(running.ids, logits).to(torch.float32).contiguous()
    return logits


def criterion_codes(verdicts: list[tuple[torch.Tensor, str]], rows: int) -> np.ndarray:
    """Per row, 1 + the index of the first criterion that holds (0: none), as uint8 for the core."""
    codes = np.zeros(rows, dtype=np.uint8)
    for k, (done, _) in enumerate(verdicts, start=1):
        codes[(codes == 0) & done.numpy()] = k
    return codes


def stop_when_every_row_stops(core: BeamCore, criteria: list, running: Optional["RunningSequences"],
                              scores: torch.Tensor) -> None:
    """As transformers' group and constrained beam search: the search ends once a stopping
    criterion holds for every running row (the first such criterion names the reason)."""
    if criteria and running is not None and not core.is_done():
        codes = criterion_codes(evaluate_criteria(criteria, running.ids, scores), running.ids.shape[0])
        if bool((codes > 0).all()):
            core.stop(int(codes.min()))


class RunningSequences:
    """The running beams' token ids, kept only when Python callables need them
    (user logits processors or stopping criteria); one gather per step."""

    def __init__(self, prompt: torch.Tensor, beams: int) -> None:
        self.ids = prompt.repeat_interleave(beams, dim=0)

    def update(self, parents: torch.Tensor, tokens: torch.Tensor) -> None:
        self.ids = torch.cat([self.ids.index_select(0, parents), tokens[:, None]], dim=1)

    def candidates(self, parents: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.ids.index_select(0, parents), tokens[:, None]], dim=1)


class BeamStep(Protocol):
    """One search's step: processes ``logits`` in place (or returns the processed
    tensor) and returns ``(tokens, parent_rows, processed)``."""

    @property
    def core(self) -> BeamCore: ...

    def __call__(
        self, logits: torch.Tensor, running: Optional[RunningSequences]
    ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]: ...

    def after(self, running: Optional[RunningSequences], scores: torch.Tensor) -> None:
        """Called once the running sequences are updated (group search evaluates criteria here)."""


class SettledStream:
    """Feeds a streamer the tokens every live hypothesis agrees on, as they settle.

    ``put`` gets the prompt first (as in the greedy loop), then one ``[batch]`` tensor
    per settled position; a position is released once every batch item has settled it.
    ``finish`` sends the rest of each item's best hypothesis, then calls ``end()``.
    """

    def __init__(self, streamer: Any, prompt: torch.Tensor, pad: int) -> None:
        self.streamer = streamer
        self.pad = pad
        self.released = 0
        self.pending: list[list[int]] = [[] for _ in range(prompt.shape[0])]
        if streamer is not None:
            streamer.put(prompt.cpu())

    def advance(self, settled: list[np.ndarray]) -> None:
        if self.streamer is None:
            return
        for queue, new in zip(self.pending, settled):
            queue.extend(new.tolist())
        ready = min(len(q) for q in self.pending)
        for i in range(ready):
            self.streamer.put(torch.tensor([q[i] for q in self.pending], dtype=torch.long))
        self.pending = [q[ready:] for q in self.pending]
        self.released += ready

    def finish(self, winners: list[list[int]]) -> None:
        """``winners[b]``: the generated tokens of item ``b``'s best hypothesis (what was
        released already is a prefix of it)."""
        if self.streamer is None:
            return
        rest = [w[self.released :] for w in winners]
        for i in range(max((len(r) for r in rest), default=0)):
            self.streamer.put(torch.tensor([r[i] if i < len(r) else self.pad for r in rest], dtype=torch.long))
        self.streamer.end()


def run_beam_loop(request: GenerationRequest, step: BeamStep, track_sequences: bool) -> GenerateOutput:
    """Runs ``step`` until the search is done; returns transformers-shaped outputs."""
    cfg = request.config
    beams = cfg.num_beams
    prompt = request.prompt_ids
    prompt_len = int(prompt.shape[1])
    if request.max_length <= prompt_len:  # max_new_tokens=0: nothing to search
        return GenerateOutput(sequences=prompt.repeat_interleave(cfg.num_return_sequences, dim=0),
                              finish_reasons=["length"] * prompt.shape[0] * cfg.num_return_sequences)
    keep_scores, keep_logits = request.keep_scores, request.keep_logits
    scores: list[torch.Tensor] = []
    raw: list[torch.Tensor] = []
    running = RunningSequences(prompt, beams) if track_sequences else None
    stream = SettledStream(request.streamer, prompt, request.pad_token_id)
    core = step.core
    # per forward call: the model's (attentions, hidden_states[, cross]) of the running rows, in
    # the order the forward pass saw them, as transformers keeps them (never reordered afterwards)
    steps: list[tuple[object, ...]] = []
    collect = request.return_dict and bool(cfg.output_attentions or cfg.output_hidden_states) \
        and hasattr(request.adapter, "step_outputs")

    logits = request.adapter.prefill(request.input_ids, request.attention_mask, beams)
    while True:
        if collect:
            steps.append(getattr(request.adapter, "step_outputs"))
        if keep_logits:
            raw.append(logits.clone())
        tokens, parents, logits = step(logits, running)
        if keep_scores:
            scores.append(logits)
        parents_t, tokens_t = torch.from_numpy(parents), torch.from_numpy(tokens)
        if running is not None:
            running.update(parents_t, tokens_t)
        step.after(running, logits)
        if stream.streamer is not None:
            stream.advance(core.take_settled())
        if core.is_done():
            if request.return_dict and cfg.use_cache:  # transformers reorders once more and returns that cache
                request.adapter.reorder(parents_t)
            break
        request.adapter.reorder(parents_t)
        del logits  # not alive during the next forward pass: one [rows, vocab] tensor at a time
        logits = request.adapter.advance(tokens_t)

    final = core.finalize()
    sequences = torch.from_numpy(final.sequences)
    _flush_stream(stream, final, cfg.num_return_sequences, prompt_len)
    names = [getattr(c, "finish_reason", "stop") for c in request.criteria]
    reasons = [names[c - 1] if r == "stop" and 0 < c <= len(names) else ("length" if r == "running" else r)
               for r, c in zip(final.reasons, final.stop_codes.tolist())]
    # a placeholder row (fewer finished hypotheses than num_return_sequences: beam sampling
    # never draws a zero-probability candidate, e.g. a grammar with fewer outputs than that)
    reasons = ["no_hypothesis" if node < 0 else r for r, node in zip(reasons, final.nodes.tolist())]
    reasons = grammar_finish_reasons(request, sequences, reasons, prompt_len)
    if not request.return_dict:
        return GenerateOutput(sequences=sequences, finish_reasons=reasons)
    tree = None
    if cfg.output_beam_tree:
        from ..beam_tree import BeamTree

        tree = BeamTree.from_core(core.tree(), prompt, final.nodes, cfg.num_return_sequences, beams)
    out = GenerateOutput(
        sequences=sequences,
        scores=tuple(scores) if keep_scores else None,
        logits=tuple(raw) if keep_logits else None,
        sequences_scores=torch.from_numpy(final.scores) if keep_scores else None,
        beam_indices=torch.from_numpy(final.beam_indices).to(torch.int32),
        finish_reasons=reasons,
        beam_tree=tree,
        cache=getattr(request.adapter, "cache", None) if cfg.use_cache else None,
    )
    for name, value in collected_outputs(request.adapter, steps).items():
        setattr(out, name, value)
    return out


def _flush_stream(stream: SettledStream, final: _core.BeamResult, per_item: int, prompt_len: int) -> None:
    if stream.streamer is None:
        return
    winners = []
    for b in range(len(stream.pending)):
        generated = int((final.beam_indices[b * per_item] >= 0).sum())
        winners.append(final.sequences[b * per_item, prompt_len : prompt_len + generated].tolist())
    stream.finish(winners)
