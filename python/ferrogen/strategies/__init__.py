"""One module per decoding strategy; :data:`STRATEGIES` maps a mode to its function."""

from __future__ import annotations

from typing import Callable

from ..config import GenerationMode
from ..outputs import GenerateOutput
from .assisted import assisted_decoding
from .base import GenerationRequest
from .beam import beam_sample, beam_search
from .constrained import constrained_beam_search
from .contrastive import contrastive_search
from .dola import dola_decoding
from .greedy import greedy_search
from .group_beam import group_beam_search
from .sample import sample

Strategy = Callable[[GenerationRequest], GenerateOutput]

STRATEGIES: dict[GenerationMode, Strategy] = {
    GenerationMode.GREEDY: greedy_search,
    GenerationMode.SAMPLE: sample,
    GenerationMode.CONTRASTIVE_SEARCH: contrastive_search,
    GenerationMode.ASSISTED: assisted_decoding,
    GenerationMode.DOLA: dola_decoding,
    GenerationMode.BEAM_SEARCH: beam_search,
    GenerationMode.BEAM_SAMPLE: beam_sample,
    GenerationMode.GROUP_BEAM_SEARCH: group_beam_search,
    GenerationMode.CONSTRAINED_BEAM_SEARCH: constrained_beam_search,
}

__all__ = ["STRATEGIES", "GenerationRequest", "Strategy"]
