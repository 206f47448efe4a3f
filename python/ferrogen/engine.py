"""The batch engine: many prompts through one model at full speed, each row's result exact.

A static batch wastes work three ways: short prompts are padded to the longest one, rows that
already finished (EOS, a stop string) keep running, and the batch waits for its slowest row.
The engine sorts the prompts by length (batches of similar length, results back in input
order) and runs each batch with finished rows dropped from the running batch (cache rows,
masks, the core's row state: :mod:`ferrogen.strategies.running_rows`), for greedy search and
sampling; the other strategies get the length order only. A row's result does not depend on
the batch it ran in: greedy and beam rows do not read other rows, and every sampled prompt gets
its own seed (``row_seeds``), the seed it would have alone: the run's ``seed`` (or one draw of
torch's generator), derived per occurrence for a prompt repeated in the input (see
:func:`prompt_seeds`). ``static=True`` runs the same batches in input order with no rows
dropped (what ferrogen did before), for comparison.

Continuous batching: for greedy search and sampling (one sequence per prompt), the prompts not
yet started wait in a queue, are prefilled in groups (``refill_fraction`` of the batch at a
time) and take the places of finished rows as soon as they finish, so the batch stays full
(:mod:`ferrogen.strategies.continuous`). Models whose cache cannot be merged (sliding-window
layers, SSM/hybrid states, absolute decoder positions) and settings that read the batch's
shared length fall back to shrinking only, said once per run; ``continuous=False`` asks for
that. Every row's tokens and seeded samples stay those it has alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from .config import GenerationConfig
from .engine_feed import pad_ids, run_continuous_texts
from .strategies.running_rows import EngineHooks

if TYPE_CHECKING:
    from .text import TextGenerator, TextResult

__all__ = ["EngineProgress", "generate_texts", "length_order", "prompt_seeds"]

_GOLDEN = 0x9E3779B97F4A7C15  # odd 64-bit constant: distinct seeds for repeated prompts
#: The default ``refill_fraction`` of :func:`generate_texts` and :func:`generate_tokenized`.
REFILL_FRACTION = 0.5


@dataclass
class EngineProgress:
    """Where a run stands: prompts done, tokens generated, the running batch size right now."""

    prompts: int
    prompts_done: int = 0
    tokens: int = 0
    running: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def tokens_per_s(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.tokens / elapsed if elapsed > 0 else 0.0

    def describe(self) -> str:
        return f"{self.tokens_per_s:.0f} tok/s, batch {self.running}"


def length_order(lengths: Sequence[int]) -> list[int]:
    """Indices of the prompts, shortest first; equal lengths keep their input order."""
    return sorted(range(len(lengths)), key=lambda i: lengths[i])


def prompt_seeds(seed: int, prompts: Sequence[Sequence[int]]) -> list[int]:
    """One seed per prompt: ``seed`` for a prompt's first occurrence in the input (so it samples
    as it does alone with ``seed``); its ``k``-th repetition gets ``seed + k * 0x9E37...`` (mod
    2**64), so repeated prompts sample differently, whatever batch each lands in."""
    seen: dict[tuple[int, ...], int] = {}
    seeds = []
    for ids in prompts:
        k = seen.get(tuple(ids), 0)
        seen[tuple(ids)] = k + 1
        seeds.append((seed + k * _GOLDEN) % 2**64)
    return seeds


def check_batch_size(batch_size: Any) -> None:
    """``batch_size``: an int >= 1 (not a bool). The one check of the engine and the Ray path."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")


def check_refill_fraction(refill_fraction: Any) -> None:
    """``refill_fraction``: a number in (0, 1] (the share of the batch prefilled at a time from the
    waiting prompts)."""
    if isinstance(refill_fraction, bool) or not isinstance(refill_fraction, (int, float)) \
            or not 0 < refill_fraction <= 1:
        raise ValueError(f"refill_fraction: expected a number in (0, 1], got {refill_fraction!r}")


def generate_texts(
    generator: TextGenerator, prompts: Sequence[str], batch_size: int, *, static: bool = False,
    continuous: bool = True, refill_fraction: float = REFILL_FRACTION,
    on_progress: Optional[Callable[[EngineProgress], None]] = None, **kwargs: Any,
) -> list[TextResult]:
    """Generates every prompt, ``batch_size`` at a time; results in input order (each prompt's
    ``num_return_sequences`` results together), as one :class:`~ferrogen.TextGenerator` call
    with ``row_seeds`` would give them. ``on_progress`` is called after every decoding step.
    ``continuous``: waiting prompts take finished rows' places (greedy and sampling), prefilled
    ``refill_fraction`` (in (0, 1]) of the batch at a time; ``static`` runs plain batches."""
    prompts = list(prompts)
    ids = generator.tokenizer(prompts)["input_ids"] if prompts else []
    return generate_tokenized(generator, prompts, ids, batch_size, static=static, continuous=continuous,
                              refill_fraction=refill_fraction, on_progress=on_progress, **kwargs)


def generate_tokenized(
    generator: TextGenerator, prompts: Sequence[str], ids: Sequence[Sequence[int]], batch_size: int, *,
    static: bool = False, continuous: bool = True, refill_fraction: float = REFILL_FRACTION,
    on_progress: Optional[Callable[[EngineProgress], None]] = None, **kwargs: Any,
) -> list[TextResult]:
    """:func:`generate_texts` for prompts already tokenized (``ids``: each prompt's token ids,
    unpadded), so a caller that read the ids (the Ray path's empty-prompt check and length
    order) does not tokenize them again."""
    check_batch_size(batch_size)
    check_refill_fraction(refill_fraction)
    prompts = list(prompts)
    if not prompts:
        return []
    config = _config_of(generator.model, kwargs)
    per_prompt = _sampling_seeds(config, generator, ids, kwargs)
    alone = config.do_sample and _one_at_a_time(config)
    order = list(range(len(prompts))) if static else length_order([len(i) for i in ids])
    progress = EngineProgress(len(prompts))
    if runs_continuous(config, static=static, continuous=continuous):
        return run_continuous_texts(generator, prompts, ids, order, per_prompt, batch_size, refill_fraction,
                                    progress, on_progress, kwargs)

    def on_step(rows: int) -> None:
        progress.tokens += rows
        progress.running = rows
        if on_progress is not None:
            on_progress(progress)

    hooks = EngineHooks(drop_finished=not static, on_step=on_step)
    out: list[list[TextResult]] = [[] for _ in prompts]
    size = 1 if alone else batch_size
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        seeding: dict[str, Any] = {}
        if per_prompt is not None:
            seeding = {"seed": per_prompt[chunk[0]]} if alone else {"row_seeds": [per_prompt[i] for i in chunk]}
        input_ids, mask = pad_ids(generator.tokenizer, [ids[i] for i in chunk])
        results = generator._generate_padded([prompts[i] for i in chunk], input_ids, mask, _engine=hooks,
                                             **seeding, **kwargs)
        per = len(results) // len(chunk)
        for j, i in enumerate(chunk):
            out[i] = results[j * per : (j + 1) * per]
        progress.prompts_done += len(chunk)
        if on_progress is not None:
            on_progress(progress)
    return [result for produced in out for result in produced]


def _config_of(model: Any, kwargs: dict[str, Any]) -> GenerationConfig:
    """The config the call will run with (to know whether it samples, and its seed)."""
    from .generate import _resolve_config

    names = {f.name for f in fields(GenerationConfig)}
    overrides = {k: v for k, v in kwargs.items() if k in names}
    return _resolve_config(model, kwargs.get("generation_config"), overrides)


def runs_continuous(config: GenerationConfig, *, static: bool = False, continuous: bool = True) -> bool:
    """Whether :func:`generate_tokenized` runs ``config`` through the continuous loop (the one
    path that keeps per-token scores with ``output_scores``): asked for, and refillable."""
    return continuous and not static and refillable(config)


def refillable(config: GenerationConfig) -> bool:
    """Whether the run may merge new prompts into its batch: greedy or sampling, one sequence each."""
    from .config import GenerationMode

    mode = config.generation_mode()
    return mode in (GenerationMode.GREEDY, GenerationMode.SAMPLE) and config.num_return_sequences == 1


def _one_at_a_time(config: GenerationConfig) -> bool:
    """Strategies that sample without a seed per prompt run one prompt per call, seeded as if alone."""
    from .generate import _NO_ROW_SEEDS

    return config.generation_mode() in _NO_ROW_SEEDS


def _sampling_seeds(config: GenerationConfig, generator: TextGenerator, ids: Sequence[Sequence[int]],
                    kwargs: dict[str, Any]) -> Optional[list[int]]:
    """Each prompt's seed when the run samples (the caller's ``row_seeds`` when given), else None."""
    given = kwargs.pop("row_seeds", None)
    if not config.do_sample:
        return None if given is None else list(given)
    if given is not None:
        return list(given)
    from .processors import draw_seed

    return prompt_seeds(config.seed if config.seed is not None else draw_seed(), ids)
