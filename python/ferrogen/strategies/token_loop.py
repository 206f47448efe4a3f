"""The loop shared by the one-sequence-per-row strategies (greedy, sampling).

Per step: one forward pass, the caller's Python processors (if any), one core call that
processes the logits in place and picks the tokens, then the Python stopping criteria.
Everything that can be decided before the loop is decided before it.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

from .. import _core
from ..grammar import grammar_finish_reasons
from ..outputs import GenerateOutput
from ..stopping import evaluate_criteria
from .base import GenerationRequest
from .continuous import run_continuous, why_no_refill
from .running_rows import EngineHooks, RunningRows

__all__ = ["collected_outputs", "run_token_loop"]

# Takes logits [rows, vocab] and returns the next token of each row.
PickTokens = Callable[[np.ndarray], np.ndarray]
# The one-sequence-per-row cores; they share the row status (unfinished, finish_rows, all_finished).
RowCore = Union[_core.Decoder, _core.ContrastiveSearch]


def run_token_loop(
    request: GenerationRequest, core: RowCore, step: PickTokens, choose: PickTokens, copies: int = 1,
    make_core: Optional[Callable[[GenerationRequest], RowCore]] = None,
) -> GenerateOutput:
    """Runs a decoding loop until every row finished or ``max_length`` is reached.

    ``step`` processes the logits in place and picks; when the caller gave Python logits
    processors, the core's ``process`` runs first, then theirs, then ``choose`` (which
    picks without processing again), which is transformers' order of application.
    """
    prompt = request.prompt_ids.repeat_interleave(copies, dim=0) if copies > 1 else request.prompt_ids
    rows, prompt_len = prompt.shape
    total = max(request.max_length, prompt_len)
    hooks: Optional[EngineHooks] = request.extras.get("engine")
    running = RunningRows(rows, hooks is not None and hooks.can_drop(request, core))
    # Dropped rows are padded as the core pads a finished row that stays in the batch.
    sequences = torch.full((rows, total), request.pad_token_id, dtype=torch.long)
    sequences[:, :prompt_len] = prompt
    keep_scores, keep_logits = request.keep_scores, request.keep_logits
    scores: list[torch.Tensor] = []
    raw: list[torch.Tensor] = []
    reasons = [""] * rows
    streamer = request.streamer
    if streamer is not None:
        streamer.put(prompt.cpu())
    steps: list[tuple[object, ...]] = []  # per forward call: (attentions, hidden_states[, cross]), when collected
    collect = getattr(request.adapter, "step_outputs", None) is not None

    guidance = request.extras.get("guidance")
    if guidance is not None:
        guidance.check_rows(rows)
    cur = prompt_len
    if cur < total:
        logits = request.adapter.prefill(request.input_ids, request.attention_mask, copies)
        if running.drop and hooks is not None and hooks.feed is not None and make_core is not None:
            why = why_no_refill(request, core, copies)
            if why is None:  # continuous batching: the engine's waiting prompts join this batch
                run_continuous(request, core, step.__name__, logits, hooks.feed, make_core, hooks.on_step,
                               hooks.on_logits)
                return GenerateOutput(sequences=prompt, finish_reasons=["merged"] * rows)
            hooks.feed.say_shrink_only(why)
    while cur < total:
        if collect:
            steps.append(getattr(request.adapter, "step_outputs"))
        if keep_logits:  # an adapter that transforms the logits (DoLa) keeps the model's own
            own = getattr(request.adapter, "raw_logits", None)
            raw.append((logits if own is None else own).clone())
        before = core.unfinished()
        if hooks is not None and hooks.on_logits is not None:
            hooks.on_logits(hooks.slots(running.index), logits)
        if guidance is not None:  # transformers' first processor
            guidance.apply(sequences[:, :cur], logits)
        if request.logits_processors:
            core.process(logits.numpy())
            for proc in request.logits_processors:
                logits = proc(sequences[:, :cur], logits).to(torch.float32).contiguous()
            next_tokens = torch.from_numpy(choose(logits.numpy()))
        else:
            next_tokens = torch.from_numpy(step(logits.numpy()))
        if running.dropped:
            sequences[torch.from_numpy(running.index), cur] = next_tokens
        else:
            sequences[:, cur] = next_tokens
        cur += 1
        if hooks is not None and hooks.on_step is not None:
            hooks.on_step(int(before.sum()))
        if keep_scores:
            scores.append(running.full_scores(logits, rows))
        if streamer is not None:
            streamer.put(next_tokens)
        ended = before & ~core.unfinished()
        _mark(reasons, running.to_original(ended), "eos")
        seen = sequences[torch.from_numpy(running.index), :cur] if running.dropped else sequences[:, :cur]
        for done, why in evaluate_criteria(request.criteria, seen, logits):
            before = core.unfinished()
            core.finish_rows(done.numpy())
            _mark(reasons, running.to_original(before & ~core.unfinished()), why)
        if core.all_finished() or cur >= total:
            break
        del logits  # not alive during the next forward pass: one [rows, vocab] tensor at a time
        unfinished = core.unfinished()
        if running.drop and not unfinished.all():
            running.drop_finished(core, request.adapter, unfinished)
            next_tokens = next_tokens[torch.from_numpy(np.flatnonzero(unfinished))]
        logits = request.adapter.advance(next_tokens)

    if streamer is not None:
        streamer.end()
    sequences = sequences[:, :cur]
    reasons = grammar_finish_reasons(request, sequences, [r or "length" for r in reasons], prompt_len)
    if not request.return_dict:
        return GenerateOutput(sequences=sequences, finish_reasons=reasons)
    out = GenerateOutput(
        sequences=sequences,
        scores=tuple(scores) if keep_scores else None,
        logits=tuple(raw) if keep_logits else None,
        finish_reasons=reasons,
        # A cache that dropped rows no longer covers the batch: none rather than a partial one.
        cache=getattr(request.adapter, "cache", None) if request.config.use_cache and not running.dropped else None,
    )
    for name, value in collected_outputs(request.adapter, steps).items():
        setattr(out, name, value)
    return out


def collected_outputs(adapter: object, steps: Sequence[tuple[object, ...]]) -> dict[str, Optional[tuple[object, ...]]]:
    """The per-step model outputs under transformers' names: ``attentions`` / ``hidden_states``
    for a decoder-only model; ``decoder_*``, ``cross_attentions`` and the encoder's once for an
    encoder-decoder model."""
    if not getattr(adapter, "is_encoder_decoder", False):
        return dict(attentions=_per_step(steps, 0), hidden_states=_per_step(steps, 1))
    encoder = getattr(adapter, "encoder_step_outputs", None) or (None, None)
    return dict(decoder_attentions=_per_step(steps, 0), decoder_hidden_states=_per_step(steps, 1),
                cross_attentions=_per_step(steps, 2), encoder_attentions=encoder[0],
                encoder_hidden_states=encoder[1])


def _per_step(steps: Sequence[tuple[object, ...]], which: int) -> Optional[tuple[object, ...]]:
    """transformers' layout: one entry per generated token, each the model's per-layer tuple."""
    if not steps or steps[0][which] is None:
        return None
    return tuple(step[which] for step in steps)


def _mark(reasons: list[str], rows: np.ndarray, why: str) -> None:
    for row in rows:
        if not reasons[row]:
            reasons[row] = why
