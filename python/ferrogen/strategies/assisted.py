"""Assisted (speculative) decoding for whole batches: greedy or sampling, drafts from an
assistant model or from prompt lookup (``prompt_lookup_num_tokens``).

A round: the draft source proposes up to ``k`` tokens per row; the main model runs
``[last token, drafts...]`` of every row in one forward pass; the core keeps per row the
drafts the main model agrees with (greedy) or accepts by the speculative rejection rule
(sampling) plus one token of the main model's own. Rows accept different numbers of
tokens: both models' caches drop each row's rejected positions and shift the shorter rows
right behind masked left padding, so no row waits for another. Models whose positions
cannot be shifted (absolute decoder positions, e.g. BART) run in lock step instead: every
row that goes on takes the smallest count of the round (still exact, only slower).

Greedy output equals plain greedy decoding of the main model token for token (up to
argmax ties: verifying k tokens in one pass may differ from k single steps in the last
bits). Sampling output follows the main model's sampling distribution exactly.

``GenerateOutput.assisted_stats`` (set on the returned object) counts drafts and
acceptances. Not supported: user ``logits_processor`` objects (they see one step of a
whole batch at a time) and streamers with more than one row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from .. import _core
from ..models import is_multi_token
from ..outputs import GenerateOutput
from ..processors import draw_seed, unpadded_rows
from ..stopping import evaluate_criteria
from ..grammar import grammar_finish_reasons, matchers_for
from .base import GenerationRequest, as_int64, core_settings
from .assisted_outputs import SplitOutputs
from .drafts import draft_source
from .token_loop import collected_outputs

__all__ = ["AssistedStats", "assisted_decoding"]


@dataclass
class AssistedStats:
    """How assisted decoding went: ``rounds`` main-model verification passes (after the
    first token), ``drafted`` tokens proposed, ``accepted`` of them kept, ``emitted`` tokens
    produced in the rounds."""

    rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    emitted: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


def assisted_decoding(request: GenerationRequest) -> GenerateOutput:
    cfg = request.config
    main = request.adapter
    if not is_multi_token(main):
        raise ValueError("model: assisted decoding needs a transformers model with a KV cache")
    if request.logits_processors:
        raise ValueError("logits_processor: user logits processors are not supported with assisted decoding; "
                         "use the GenerationConfig fields")
    source = draft_source(request)
    copies = cfg.num_return_sequences if cfg.do_sample else 1
    prompt = request.prompt_ids.repeat_interleave(copies, dim=0)
    rows = prompt.shape[0]
    if request.streamer is not None and rows > 1:
        raise ValueError("streamer: assisted decoding streams one row only (rows advance by different amounts)")
    # each row's matcher follows its drafts
    core = _core.AssistedDecoder(as_int64(prompt), _starts(request, copies),
                                 _settings(request, matchers_for(request, copies)))
    run = _Run(request, core, rows, int(prompt.shape[1]))

    logits = main.prefill(request.input_ids, request.attention_mask, copies)
    run.round(logits.unsqueeze(1).contiguous(), lockstep=False)  # one token per row
    if core.any_active():
        source.start(request, copies)
    # Decided once both caches exist (their layer types matter).
    lockstep = rows > 1 and not (main.supports_ragged and source.supports_ragged)
    while core.any_active():
        source.propose(core)
        drafts, drafted = core.drafts()
        width = drafts.shape[1]
        feed = torch.from_numpy(np.concatenate([core.tails(1), drafts], axis=1))
        logits = main.advance_many(feed)
        emitted, accepted = run.round(logits, lockstep, drafted)
        active = core.active()
        if lockstep:
            going = emitted[active]
            drop = np.full_like(emitted, width + 1 - (int(going.max()) if going.size else 0))
        else:
            drop = width + 1 - emitted
        if active.any():
            main.crop_rows(torch.from_numpy(drop))
            source.update(emitted, accepted, drafted, active, lockstep)
    return run.output(_final_cache(request, main, core))


def _final_cache(request: GenerationRequest, main: Any, core: _core.AssistedDecoder) -> Any:
    """The main model's cache as transformers returns it for one row: every position but the
    last token (the last round's rejected drafts dropped). ``None`` for a batch, whose rows end
    at different lengths (transformers refuses batched assisted decoding)."""
    if not request.return_dict or not request.config.use_cache or getattr(main, "cache", None) is None:
        return None
    length = core.sequences().shape[1]
    if core.sequences().shape[0] != 1:
        return None
    extra = main.cache.get_seq_length() - (length - 1)
    if extra > 0:
        main.crop_rows(torch.tensor([extra], dtype=torch.long))
    return main.cache


def _settings(request: GenerationRequest, grammar: Optional[Any]) -> _core.GenerationSettings:
    if not request.config.do_sample:
        return core_settings(request, grammar=grammar)
    return core_settings(request, seed=request.config.seed if request.config.seed is not None else draw_seed(),
                         seed_prompts=unpadded_rows(request.input_ids, request.attention_mask), grammar=grammar)


def _starts(request: GenerationRequest, copies: int) -> np.ndarray:
    """First non-padding position of every row of the decoder's history."""
    rows = request.input_ids.shape[0]
    if request.adapter.is_encoder_decoder or request.attention_mask is None:
        starts = torch.zeros(rows, dtype=torch.long)
    else:
        starts = (request.attention_mask.cpu() != 0).int().argmax(dim=1).long()
    return as_int64(starts.repeat_interleave(copies))


class _Run:
    """Everything a round leaves behind: finish reasons, scores, stream, statistics."""

    def __init__(self, request: GenerationRequest, core: _core.AssistedDecoder, rows: int, prompt_len: int) -> None:
        self.request = request
        self.core = core
        self.rows = rows
        self.prompt_len = prompt_len
        self.reasons = [""] * rows
        self.stats = AssistedStats()
        # [rows, steps, vocab] buffers, allocated at the first round (when the vocab is known)
        self.scores: Optional[list] = [None] if request.keep_scores else None
        self.raw: Optional[list] = [None] if request.keep_logits else None
        cfg = request.config
        #: per generated token, the model outputs of the query that produced it (output_attentions /
        #: output_hidden_states), as transformers' ``_split_model_outputs`` splits a round's
        self.split: Optional[SplitOutputs] = (
            SplitOutputs(rows, prompt_len) if request.return_dict and (cfg.output_attentions or cfg.output_hidden_states)
            else None)
        if request.streamer is not None:
            request.streamer.put(request.prompt_ids.cpu())

    def round(self, logits: torch.Tensor, lockstep: bool, drafted: Optional[np.ndarray] = None):
        """Verifies one round from the main model's logits ``[rows, width + 1, vocab]``;
        returns the tokens emitted and the drafts accepted per row."""
        core = self.core
        before = core.lengths()
        was_unfinished = core.unfinished()
        raw = logits.clone() if self.raw is not None else None
        emitted_ids, emitted, accepted = core.verify(logits.numpy(), lockstep)
        ended = was_unfinished & ~core.unfinished()
        kept, why = self._check_criteria(before, emitted) if self.request.criteria else (emitted, {})
        self._mark(ended & (kept == emitted), "eos")
        for row, reason in why.items():
            self.reasons[row] = self.reasons[row] or reason
        self._keep(self.scores, logits, before, kept)
        self._keep(self.raw, raw, before, kept)
        if self.split is not None:
            self.split.add(getattr(self.request.adapter, "step_outputs", (None,)), kept, first=drafted is None)
        if drafted is not None:
            self.stats.rounds += 1
            self.stats.drafted += int(drafted.sum())
            self.stats.accepted += int(accepted.sum())
            self.stats.emitted += int(emitted.sum())
        if self.request.streamer is not None and kept[0] > 0:
            self.request.streamer.put(torch.from_numpy(emitted_ids[0, : kept[0]].copy()))
        return emitted, accepted

    def _check_criteria(self, before: np.ndarray, emitted: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
        """Evaluates the stopping criteria after every emitted position, as single steps
        would (one call per position, each row right-aligned so that its newest token is
        the last column). A row that stops is cut right after the token that stopped it.
        Returns the tokens kept per row and the reason of every stopped row."""
        core = self.core
        sequences = torch.from_numpy(core.sequences())
        width = sequences.shape[1]
        columns = torch.arange(width)[None, :]
        kept = emitted.copy()
        live = emitted > 0
        why: dict[int, str] = {}
        for j in range(int(emitted.max(initial=0))):
            live &= j < emitted
            length = torch.from_numpy(before + np.minimum(j + 1, emitted))  # rows done with the round: as they are
            source = columns - (width - length)[:, None]
            view = sequences.gather(1, source.clamp(min=0)).masked_fill(source < 0, self.request.pad_token_id)
            for done, reason in evaluate_criteria(self.request.criteria, view, None):
                for row in np.flatnonzero(done.numpy() & live):
                    why[int(row)] = reason
                    kept[row] = j + 1
                    live[row] = False
        if why:
            core.truncate(before + kept)
            core.finish_rows(np.isin(np.arange(self.rows), list(why)))
        return kept, why

    def _keep(self, store: Optional[list], logits: Optional[torch.Tensor], before: np.ndarray, emitted: np.ndarray) -> None:
        """Puts the logits of every emitted token at its row's step, in one indexed copy."""
        if store is None or logits is None:
            return
        if store[0] is None:
            new_tokens = max(self.request.max_length - self.prompt_len, 0)
            store[0] = torch.full((self.rows, new_tokens, logits.shape[-1]), float("-inf"))
        positions = torch.arange(logits.shape[1])[None, :]
        rows, cols = (positions < torch.from_numpy(emitted)[:, None]).nonzero(as_tuple=True)
        steps = torch.from_numpy(before - self.prompt_len)[rows] + cols
        store[0][rows, steps] = logits[rows, cols]

    def _mark(self, newly: np.ndarray, why: str) -> None:
        for row in np.flatnonzero(newly):
            if not self.reasons[row]:
                self.reasons[row] = why

    def output(self, cache: Any = None) -> GenerateOutput:
        if self.request.streamer is not None:
            self.request.streamer.end()
        sequences = torch.from_numpy(self.core.sequences())
        steps = sequences.shape[1] - self.prompt_len
        reasons = grammar_finish_reasons(self.request, sequences, [r or "length" for r in self.reasons],
                                         self.prompt_len)

        def per_step(store: Optional[list]) -> Optional[tuple[torch.Tensor, ...]]:
            if store is None or store[0] is None:
                return None
            return tuple(store[0][:, j] for j in range(steps))

        if self.request.return_dict:
            out = GenerateOutput(sequences=sequences, scores=per_step(self.scores), logits=per_step(self.raw),
                                 finish_reasons=reasons, cache=cache)
            if self.split is not None:
                for name, value in collected_outputs(self.request.adapter, self.split.steps(steps)).items():
                    setattr(out, name, value)
        else:
            out = GenerateOutput(sequences=sequences, finish_reasons=reasons)
        out.assisted_stats = self.stats  # type: ignore[attr-defined]
        return out

