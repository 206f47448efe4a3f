"""One module per decoding strategy; :data:`STRATEGIES` maps a mode to its function."""

from __future__ import annotations

from typing import Callable

from ..config import GenerationMode
from ..outputs import GenerateOutput
from .assisted import assisted_decoding
from .base import GenerationRequest
from .contrastive import contrastive_search
from .greedy import greedy_search
from .sample import sample

Strategy = Callable[[GenerationRequest], GenerateOutput]

STRATEGIES: dict[GenerationMode, Strategy] = {
    GenerationMode.GREEDY: greedy_search,
    GenerationMode.SAMPLE: sample,
    GenerationMode.CONTRASTIVE_SEARCH: contrastive_search,
    GenerationMode.ASSISTED: assisted_decoding,
}

__all__ = ["STRATEGIES", "GenerationRequest", "Strategy"]
