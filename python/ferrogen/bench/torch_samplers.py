"""The transformers side of the sampler rows: transformers has no DRY or XTC, so its side runs
them as custom ``LogitsProcessor``s in torch, written after text-generation-webui's
(``modules/sampler_hijack.py``), the way a transformers user adds them today."""

from __future__ import annotations

from typing import Any

import torch
from transformers.generation import logits_process as lp

__all__ = ["TorchDry", "TorchXtc", "hf_processors", "transformers_side"]

# Fields only ferrogen reads: the transformers side gets their processors instead.
_OURS_ONLY = ("dry_multiplier", "dry_base", "dry_allowed_length", "dry_sequence_breakers", "dry_penalty_last_n",
              "xtc_probability", "xtc_threshold")


class TorchDry(lp.LogitsProcessor):
    """text-generation-webui's DRYLogitsProcessor (modules/sampler_hijack.py): Python over each row."""

    def __init__(self, multiplier: float, base: float, allowed_length: int, breakers: set[int]) -> None:
        self.multiplier, self.base, self.allowed, self.breakers = multiplier, base, allowed_length, breakers

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.clone()
        for row, score_row in zip(input_ids.tolist(), scores):
            last = row[-1]
            if last in self.breakers:
                continue
            lengths: dict[int, int] = {}
            for i in [i for i, v in enumerate(row[:-1]) if v == last]:
                nxt = row[i + 1]
                if nxt in self.breakers:
                    continue
                n = 1
                while n < 50 and i - n >= 0 and row[i - n] == row[-(n + 1)] and row[-(n + 1)] not in self.breakers:
                    n += 1
                lengths[nxt] = max(n, lengths.get(nxt, 0))
            for t, n in lengths.items():
                if n >= self.allowed:
                    score_row[t] -= self.multiplier * self.base ** (n - self.allowed)
        return scores


class TorchXtc(lp.LogitsProcessor):
    """XTC in torch, as text-generation-webui's XTCLogitsWarper: sort, mask all above the threshold but the last."""

    def __init__(self, probability: float, threshold: float) -> None:
        self.probability, self.threshold = probability, threshold

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) >= self.probability:
            return scores
        sorted_logits, sorted_idx = torch.sort(scores, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        remove = torch.zeros_like(probs, dtype=torch.bool)
        remove[..., :-1] = probs[..., 1:] >= self.threshold
        mask = remove.scatter(1, sorted_idx, remove)
        return scores.masked_fill(mask, -float("inf"))


def hf_processors(cfg: dict[str, Any]) -> list:
    """transformers' processors for ``cfg``, in ``_get_logits_processor``'s order."""
    procs: list = []
    if cfg.get("dry_multiplier", 0.0):
        procs.append(TorchDry(cfg["dry_multiplier"], 1.75, 2, {b[0] for b in cfg["dry_sequence_breakers"]}))
    if cfg.get("repetition_penalty", 1.0) != 1.0:
        procs.append(lp.RepetitionPenaltyLogitsProcessor(cfg["repetition_penalty"]))
    if cfg.get("no_repeat_ngram_size", 0):
        procs.append(lp.NoRepeatNGramLogitsProcessor(cfg["no_repeat_ngram_size"]))
    if cfg.get("temperature", 1.0) != 1.0:
        procs.append(lp.TemperatureLogitsWarper(cfg["temperature"]))
    if cfg.get("top_k", 0):
        procs.append(lp.TopKLogitsWarper(cfg["top_k"]))
    if cfg.get("top_p", 1.0) < 1.0:
        procs.append(lp.TopPLogitsWarper(cfg["top_p"]))
    if cfg.get("min_p") is not None:
        procs.append(lp.MinPLogitsWarper(cfg["min_p"]))
    if cfg.get("xtc_probability", 0.0):
        procs.append(TorchXtc(cfg["xtc_probability"], cfg["xtc_threshold"]))
    return procs


def transformers_side(settings: dict[str, Any]) -> tuple[dict[str, Any], list]:
    """``settings`` for transformers' ``generate``: its own fields, plus the torch processors
    standing in for the samplers it lacks (appended after its processors, as ``generate`` does)."""
    theirs = {k: v for k, v in settings.items() if k not in _OURS_ONLY}
    procs: list = []
    if settings.get("dry_multiplier", 0.0):
        procs.append(TorchDry(settings["dry_multiplier"], settings.get("dry_base", 1.75),
                              settings.get("dry_allowed_length", 2), {b[0] for b in settings["dry_sequence_breakers"]}))
    if settings.get("xtc_probability", 0.0):
        procs.append(TorchXtc(settings["xtc_probability"], settings["xtc_threshold"]))
    return theirs, procs
