"""User logits processors that golden cases use on both sides (transformers 4.55.4 in
``scripts/make_constrained_goldens.py`` and ferrogen in ``tests/test_constrained_golden.py``).

Each is a plain callable ``(input_ids, scores) -> scores``, which transformers'
``LogitsProcessorList`` and ferrogen's ``logits_processor`` both accept.
"""

from __future__ import annotations

from typing import Any

import torch

BANNED = list(range(10, 20))


class BanTokens:
    """Tokens ``BANNED`` can never be chosen."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.clone()
        scores[:, BANNED] = float("-inf")
        return scores


class NoRepeatLast:
    """A row may not repeat its last token (tiny random models otherwise repeat one token)."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.clone()
        scores[torch.arange(scores.shape[0]), input_ids[:, -1]] = float("-inf")
        return scores


PROCESSORS: dict[str, Any] = {"ban": BanTokens, "norepeat": NoRepeatLast}
