"""The batch loop of ``ferrogen generate``: lines in, one record per line out, in input order.

Lines are taken ``POOL_BATCHES * batch_size`` at a time (a window); within a window, lines with
the same overrides generate together through the batch engine (:mod:`ferrogen.engine`: batches of
``batch_size`` prompts of similar length, finished rows dropped), records still in input order.
With a streamer, windows are ``batch_size`` lines in input order (the stream follows the input). Every line gets its own record: a result, or ``{"line": N, "error":
"line N: ..."}``. A prompt that cannot fit the model (empty, or over its context) is refused before
tokenizing the batch, and a batch that fails is retried one line at a time, so one bad line never
takes its neighbours down. Memory is bounded by the window, not by the longest line: the reader
caps a line's bytes and a prompt is tokenized alone only when its bytes could fit the context.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional

from ._cli_io import Line, error_text

Record = dict[str, Any]

# Bytes a prompt may have when the model states no context size (memory bound, not a model limit).
UNBOUNDED_PROMPT_BYTES = 8 << 20
# Bytes one line may add around its prompt: JSON quoting and per-line overrides.
LINE_OVERHEAD_BYTES = 64 << 10
# Batches of lines a window holds, so that the engine can sort them by length (memory: the window's text).
POOL_BATCHES = 8
_CONTEXT_ATTRIBUTES = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")


@dataclass(frozen=True)
class Limits:
    """How long a prompt can be for this model, in tokens and (as a bound before tokenizing) bytes."""

    context: Optional[int]  # positions of a decoder-only model; None when unbounded or encoder-decoder
    prompt_bytes: int
    line_bytes: int

    @classmethod
    def of(cls, generator: Any) -> Limits:
        """A prompt of ``b`` bytes has at least ``b / longest`` tokens, ``longest`` being the longest
        vocabulary entry in UTF-8 bytes (typical text runs at a few bytes a token, far below it);
        the byte bound keeps a 2x margin over that for normalizers and unknown-token pieces that
        pack more text into a token, and a line may be twice its prompt (JSON escapes)."""
        config = getattr(generator.model, "config", None)
        sizes = (getattr(config, name, None) for name in _CONTEXT_ATTRIBUTES)
        context = next((s for s in sizes if isinstance(s, int) and s > 0), None)
        vocab = generator.tokenizer.get_vocab()
        longest = max((len(str(token).encode("utf-8")) for token in vocab), default=16)
        prompt_bytes = UNBOUNDED_PROMPT_BYTES if context is None else context * longest * 2
        line_bytes = 2 * prompt_bytes + LINE_OVERHEAD_BYTES
        return cls(None if generator.encoder_decoder else context, prompt_bytes, line_bytes)


def _describe(exc: Exception) -> str:
    return str(exc) if isinstance(exc, (ValueError, TypeError)) else f"{type(exc).__name__}: {exc}"


def _error(number: int, message: str) -> Record:
    return {"line": number, "error": error_text(number, message)}


def _prompt_problem(line: Line, generator: Any, limits: Limits) -> Optional[str]:
    """Why this prompt cannot run on this model (same answer alone or in a batch), else None."""
    size = len(line.prompt.encode("utf-8"))
    if size > limits.prompt_bytes:
        return f"the prompt is {size} bytes, over the limit of {limits.prompt_bytes} bytes for this model"
    tokens = len(generator.tokenizer(line.prompt)["input_ids"])
    if tokens == 0:
        return "the prompt is empty (0 tokens); give at least one token"
    if limits.context is not None and tokens >= limits.context:
        return (f"the prompt is {tokens} tokens long but the model's context is {limits.context} positions "
                f"(room is needed for at least one new token)")
    return None


def _generate(generator: Any, group: list[Line], config: Any, streamer: Any, batching: dict[str, Any]
              ) -> dict[int, list[Record]]:
    """Records for a group of lines sharing one config; a failing group is retried line by line."""
    try:
        results = generator([line.prompt for line in group], generation_config=config, streamer=streamer, **batching)
    except Exception as exc:  # noqa: BLE001 - any failure of a line becomes that line's record
        if len(group) == 1:
            return {group[0].number: [_error(group[0].number, _describe(exc))]}
        out: dict[int, list[Record]] = {}
        for line in group:
            out.update(_generate(generator, [line], config, streamer, batching))
        return out
    per = len(results) // len(group)
    records: dict[int, list[Record]] = {}
    for i, result in enumerate(results):
        number = group[i // per].number
        record: Record = {"line": number, "prompt": result.prompt, "text": result.text,
                          "token_ids": result.token_ids, "finish_reason": result.finish_reason}
        if per > 1:
            record["sequence_index"] = i % per
        records.setdefault(number, []).append(record)
    return records


def _window(window: list[Line], generator: Any, base: Any, limits: Limits, streamer: Any,
            batching: dict[str, Any]) -> list[Record]:
    records: dict[int, list[Record]] = {}
    configs: dict[str, Any] = {}
    groups: dict[str, list[Line]] = {}
    for line in window:
        if line.error is not None:
            records[line.number] = [{"line": line.number, "error": line.error}]
            continue
        key = json.dumps(line.overrides, sort_keys=True)
        if key not in configs:
            try:
                configs[key] = base.merged(**line.overrides)
            except (ValueError, TypeError) as exc:
                configs[key] = exc
        problem = str(configs[key]) if isinstance(configs[key], Exception) else None
        problem = problem or _prompt_problem(line, generator, limits)
        if problem is not None:
            records[line.number] = [_error(line.number, problem)]
            continue
        groups.setdefault(key, []).append(line)
    for key, group in groups.items():
        records.update(_generate(generator, group, configs[key], streamer, batching))
    return [record for line in window for record in records[line.number]]


def _windows(lines: Iterable[Line], size: int) -> Iterator[list[Line]]:
    iterator = iter(lines)
    while window := list(itertools.islice(iterator, size)):
        yield window


def run(lines: Iterable[Line], generator: Any, base: Any, limits: Limits, *, batch_size: int,
        emit: Callable[[list[Record], int], None], streamer: Any = None,
        on_progress: Optional[Callable[[Any], None]] = None, refill_fraction: Optional[float] = None) -> int:
    """Generates every line; ``emit(records, last_line_number)`` once per window, in input order;
    ``on_progress`` gets the engine's :class:`~ferrogen.engine.EngineProgress` as it runs;
    ``refill_fraction`` is the engine's (its default when None).

    Returns the number of lines whose record is an error.
    """
    errors = 0
    engine = streamer is None
    batching: dict[str, Any] = {"batch_size": batch_size, "on_progress": on_progress} if engine else {}
    if engine and refill_fraction is not None:
        batching["refill_fraction"] = refill_fraction
    for window in _windows(lines, batch_size * POOL_BATCHES if engine else batch_size):
        records = _window(window, generator, base, limits, streamer, batching)
        errors += len({r["line"] for r in records if "error" in r})
        emit(records, window[-1].number)
    return errors
