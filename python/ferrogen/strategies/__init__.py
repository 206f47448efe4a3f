"""One module per decoding strategy; :data:`STRATEGIES` maps a mode to its function."""

from __future__ import annotations

from typing import Callable

from ..config import GenerationMode
from ..outputs import GenerateOutput
from .base import GenerationRequest
from .greedy import greedy_search
from .sample import sample

Strategy = Callable[[GenerationRequest], GenerateOutput]

STRATEGIES: dict[GenerationMode, Strategy] = {
    GenerationMode.GREEDY: greedy_search,
    GenerationMode.SAMPLE: sample,
}

__all__ = ["STRATEGIES", "GenerationRequest", "Strategy"]
