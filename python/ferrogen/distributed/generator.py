"""The Ray Data callable that generates a batch of rows (one model per actor)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, ClassVar, Optional, Sequence

from ..config import GenerationConfig
from .attempts import OCCURRENCE, Results, batch_id, isolate
from .keys import NO_KEY, POSITIONS, row_key, row_seed

if TYPE_CHECKING:
    import pyarrow as pa

    from ..text import TextResult

# Columns generate_dataset adds (replacing input columns of the same names).
OUTPUT_COLUMNS = ("text", "token_ids", "scores", "sequence_score", "finish_reason", "sequence_index", "error")


class BatchGenerator:
    """Ray Data callable class: loads the model and tokenizer once per actor, then turns each
    batch (a ``pyarrow.Table``) into the same rows with :data:`OUTPUT_COLUMNS` added, one
    output row per returned sequence. Usable directly with ``ds.map_batches(BatchGenerator,
    fn_constructor_kwargs=..., batch_format="pyarrow")``; :func:`generate_dataset` wires it up.

    Each call's rows (a Ray *block*) run through the batch engine as
    :func:`ferrogen.engine.generate_texts` runs them: sorted by prompt length, ``batch_size``
    rows at a time (default: the whole block at once), finished rows dropped and, for greedy
    search and sampling where the model's cache can merge, their places taken by the block's
    waiting rows, prefilled ``refill_fraction`` of the batch at a time (the engine's default
    when None; continuous batching; otherwise the batch only shrinks: the engine decides).
    Each row's tokens are those it has alone (its seed: see
    :func:`~ferrogen.distributed.generate_dataset`); output rows keep the block's order.
    With ``output_scores=True`` (the default) the refilling loop keeps each row's per-token
    log-probabilities (those a ``generate`` call with ``output_scores`` gives the row); the
    strategies the engine runs in plain batches (beam search and the others) keep their old
    path, each ``batch_size`` rows (in length order) one ``generate`` call, finished rows
    dropped, where ``generate``'s output holds the scores.

    With an :class:`~ferrogen.distributed.attempts.AttemptLedger` actor as ``ledger``, a batch
    whose worker died more than ``batch_retries`` times is split to isolate the row that kills
    it (see :mod:`ferrogen.distributed.attempts`); the batches then need the ids of
    :func:`~ferrogen.distributed.attempts.number_occurrences` (``generate_dataset`` adds them),
    which the output leaves out.
    """

    #: Extra arguments of :func:`ferrogen.engine.generate_texts` (``static``, ``continuous``,
    #: ``refill_fraction``) for a subclass, e.g. to compare the engine's ways in a benchmark.
    engine_options: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        model: Optional[str] = None,
        generation_config: Optional[GenerationConfig] = None,
        *,
        overrides: Optional[dict[str, Any]] = None,
        seed: int = 0,
        batch_size: Optional[int] = None,
        prompt_column: str = "prompt",
        key_column: Optional[str] = None,
        overrides_column: Optional[str] = "overrides",
        output_scores: bool = True,
        device: str = "cpu",
        dtype: Optional[str] = None,
        threads: Optional[int] = None,
        ledger: Any = None,
        batch_retries: int = 2,
        refill_fraction: Optional[float] = None,
    ) -> None:
        import torch
        from transformers.utils import logging as hf_logging

        from .. import embedded_model_path
        from ..engine import check_batch_size
        from ..strategies.running_rows import EngineHooks
        from ..text import TextGenerator, load_model

        if batch_size is not None:  # None: a block's rows all at once
            check_batch_size(batch_size)
        check_refill_fraction(refill_fraction)
        if threads:
            torch.set_num_threads(threads)
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        loaded, tokenizer = load_model(model or embedded_model_path(), device=device, dtype=dtype)
        self.text = TextGenerator(loaded, tokenizer)
        base = GenerationConfig.from_pretrained(loaded) if generation_config is None else generation_config
        self.config = base.merged(**(overrides or {}))
        self.seed = self.config.seed if self.config.seed is not None else int(seed)
        self.batch_size = batch_size
        self.prompt_column = prompt_column
        self.key_column = key_column
        self.overrides_column = overrides_column
        self.output_scores = output_scores
        self.ledger = ledger
        self.batch_retries = batch_retries
        self.refill = {} if refill_fraction is None else {"refill_fraction": refill_fraction}
        # Strategies the engine runs in plain batches, with output_scores: its row dropping
        # alone (finished rows leave the running batch), in one generate call per batch.
        self.hooks = EngineHooks()

    def __call__(self, batch: "pa.Table") -> "pa.Table":
        self._check_columns(batch.column_names)
        rows = batch.to_pylist()
        if self.ledger is None:
            results = self._generate_rows(rows)
        else:
            results = isolate(self.ledger, batch_id(batch), len(rows), self.batch_retries,
                              lambda start, stop: self._generate_rows(rows[start:stop]),
                              lambda message: [error_record(message)])
        return self._table(batch, results)

    def _generate_rows(self, rows: list[dict[str, Any]]) -> Results:
        """One list of output records per row: rows sharing a config are generated together."""
        results: Results = [[] for _ in rows]
        groups: dict[str, list[int]] = {}
        configs: dict[str, GenerationConfig] = {}
        seeds: list[Optional[int]] = [None] * len(rows)
        for i, row in enumerate(rows):
            try:
                line_overrides = self._row_overrides(row)
                key = json.dumps(line_overrides, sort_keys=True, default=str)
                if key not in configs:
                    configs[key] = self.config.merged(**line_overrides) if line_overrides else self.config
                config = configs[key]
                if config.do_sample:  # only sampling needs the row's key, for its seed
                    seed = config.seed if config.seed is not None else self.seed
                    seeds[i] = row_seed(seed, row_key(row, self.key_column, self.prompt_column))
            except (ValueError, TypeError) as exc:
                results[i] = [_failed(exc)]
                continue
            groups.setdefault(key, []).append(i)
        for key, members in groups.items():
            self._generate(configs[key], [rows[i][self.prompt_column] for i in members],
                           [seeds[i] for i in members], [results[i] for i in members])
        return results

    def _check_columns(self, names: Sequence[str]) -> None:
        """A missing prompt or key column fails the job (it is not a property of one row)."""
        for name in (self.prompt_column, self.key_column):
            if name is not None and name not in names:
                raise KeyError(f"{name}: no such column (columns: {', '.join(names)})")
        if self.ledger is not None and OCCURRENCE not in names:
            raise KeyError(f"ledger: the batches need the row ids of ferrogen.distributed.attempts.number_occurrences "
                           f"(a {OCCURRENCE} column, which generate_dataset adds)")
        if self.config.do_sample and self.key_column is None and not any(p in names for p in POSITIONS):
            raise ValueError(NO_KEY)

    def _row_overrides(self, row: dict[str, Any]) -> dict[str, Any]:
        """Checks the row and returns its config overrides; raises ValueError for a bad row."""
        if row.get("error"):
            raise _RowError(row["error"])
        prompt = row.get(self.prompt_column)
        if not isinstance(prompt, str) or not prompt:
            raise _RowError(f"{self.prompt_column}: expected a non-empty string, got {prompt!r}")
        raw = row.get(self.overrides_column) if self.overrides_column else None
        if raw is None or raw == "":
            return {}
        overrides = json.loads(raw) if isinstance(raw, str) else raw
        if not isinstance(overrides, dict):
            raise _RowError(f"{self.overrides_column}: expected a JSON object, got {raw!r}")
        return overrides

    def _generate(self, config: GenerationConfig, prompts: list[str], seeds: list[Optional[int]],
                  out: Results) -> None:
        """Generates a group sharing one config; when the group fails, row by row to find the bad rows."""
        try:
            for slot, produced in zip(out, self._run_group(config, prompts, seeds)):
                slot.extend(produced)
            return
        except Exception as exc:  # noqa: BLE001 - a bad row must not fail the job
            if len(prompts) == 1:
                out[0].append(_failed(exc))
                return
        for i in range(len(prompts)):
            self._generate(config, prompts[i : i + 1], seeds[i : i + 1], out[i : i + 1])

    def _run_group(self, config: GenerationConfig, prompts: list[str], seeds: list[Optional[int]]) -> Results:
        """The group through the batch engine; with ``output_scores``, unless the engine keeps
        the scores (:meth:`_engine_scores`), its length-sorted batches one ``generate`` call
        each. Each prompt is tokenized once, here."""
        from ..engine import length_order

        ids = self.text.tokenizer(prompts)["input_ids"]
        if min(len(row) for row in ids) == 0:
            raise _RowError("prompt: encodes to no tokens")
        size = self.batch_size or len(prompts)
        if not self.output_scores or self._engine_scores(config):
            return self._run_engine(config, prompts, ids, seeds, size)
        produced: Results = [[] for _ in prompts]
        order = length_order([len(row) for row in ids])
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            for i, records in zip(chunk, self._run(config, [prompts[i] for i in chunk], [ids[i] for i in chunk],
                                                   [seeds[i] for i in chunk])):
                produced[i] = records
        return produced

    def _engine_scores(self, config: GenerationConfig) -> bool:
        """Whether the engine returns this group's per-token scores: its continuous path does
        (greedy search and sampling, one sequence per prompt: refilled, or shrink-only calls)."""
        from ..engine import runs_continuous

        options = self.engine_options
        return runs_continuous(config, static=options.get("static", False), continuous=options.get("continuous", True))

    def _run_engine(self, config: GenerationConfig, prompts: list[str], ids: list[list[int]],
                    seeds: list[Optional[int]], size: int) -> Results:
        """:func:`ferrogen.engine.generate_tokenized` over the group, each row with its own seed
        (and, with ``output_scores``, its per-token scores: :meth:`_engine_scores`)."""
        from ..engine import generate_tokenized

        seeding: dict[str, Any] = {"row_seeds": seeds} if config.do_sample else {}
        results = generate_tokenized(self.text, prompts, ids, size, generation_config=config,
                                     output_scores=self.output_scores, **{**self.refill, **self.engine_options},
                                     **seeding)
        per_prompt = len(results) // len(prompts)
        return [
            [_engine_record(result, j) for j, result in enumerate(results[k * per_prompt : (k + 1) * per_prompt])]
            for k in range(len(prompts))
        ]

    def _run(self, config: GenerationConfig, prompts: list[str], ids: list[list[int]],
             seeds: list[Optional[int]]) -> Results:
        """One ``generate`` call over the prompts (``ids``: their token ids), with per-token
        scores when asked for."""
        import torch

        from ..engine_feed import pad_ids, strip_padding
        from ..generate import _NO_ROW_SEEDS, generate
        from ..outputs import token_logprobs

        tok = self.text.tokenizer
        if config.generation_mode() in _NO_ROW_SEEDS:  # one prompt at a time, seeded as if alone
            if len(prompts) > 1:
                return [self._run(config, [p], [i], [s])[0] for p, i, s in zip(prompts, ids, seeds)]
            seeding: dict[str, Any] = {"seed": seeds[0]} if config.do_sample else {}
        else:
            seeding = {"row_seeds": seeds} if config.do_sample else {}
        model = self.text.model
        input_ids, mask = pad_ids(tok, ids, getattr(model, "device", torch.device("cpu")))
        with torch.no_grad():
            output = generate(
                model, input_ids=input_ids, attention_mask=mask,
                generation_config=config, tokenizer=tok, return_dict_in_generate=True,
                output_scores=self.output_scores, _engine=self.hooks, **seeding,
            )
        skip = 1 if self.text.encoder_decoder else input_ids.shape[1]
        token_scores = token_logprobs(output, skip) if self.output_scores else None
        per_prompt = output.sequences.shape[0] // len(prompts)
        produced: Results = [[] for _ in prompts]
        pad = tok.pad_token_id
        for r, seq in enumerate(output.sequences.tolist()):
            reason = output.finish_reasons[r]
            new = strip_padding(seq[skip:], pad, reason)
            scores = token_scores[r][: len(new)] if token_scores is not None else None
            beam = None if output.sequences_scores is None else float(output.sequences_scores[r])
            produced[r // per_prompt].append(_record(tok.decode(new, skip_special_tokens=True), new, scores, reason,
                                                     r % per_prompt, beam))
        return produced

    def _table(self, batch: "pa.Table", results: Results) -> "pa.Table":
        import pyarrow as pa

        take = [i for i, produced in enumerate(results) for _ in produced]
        records = [record for produced in results for record in produced]
        inputs = batch.drop_columns([c for c in (*OUTPUT_COLUMNS, OCCURRENCE) if c in batch.column_names]).take(take)
        for name, kind in _output_types().items():
            inputs = inputs.append_column(name, pa.array([r[name] for r in records], type=kind))
        return inputs


class _RowError(ValueError):
    """A row that cannot be generated; its message goes to the ``error`` column as is."""


def _failed(exc: Exception) -> dict[str, Any]:
    """The output row of a row that failed: the message of an argument error (it names the
    argument, as the CLI prints it), else the exception type and message."""
    return error_record(str(exc) if isinstance(exc, (ValueError, TypeError)) else f"{type(exc).__name__}: {exc}")


def check_refill_fraction(refill_fraction: Optional[float]) -> None:
    """``refill_fraction``: None (the engine's default) or a number in (0, 1]."""
    from ..engine import check_refill_fraction as check_value

    if refill_fraction is not None:
        check_value(refill_fraction)


def _engine_record(result: "TextResult", index: int) -> dict[str, Any]:
    """The output record of one of the engine's results: its per-token scores when it kept them
    (a :class:`~ferrogen.text.ScoredResult`)."""
    scores: Optional[list[float]] = getattr(result, "scores", None)
    return _record(result.text, result.token_ids, scores, result.finish_reason, index)


def _record(text: str, token_ids: list[int], scores: Optional[list[float]], finish_reason: str, index: int,
            beam_score: Optional[float] = None) -> dict[str, Any]:
    """The output record of a generated sequence. Its ``sequence_score``: none without per-token
    scores, else the beam search's own score where it gave one (``beam_score``: length-penalized),
    else the sum of the per-token scores (the sequence's log-probability)."""
    if scores is None:
        total = None
    elif beam_score is not None:
        total = beam_score
    else:
        total = float(sum(scores))
    return {"text": text, "token_ids": token_ids, "scores": scores, "sequence_score": total,
            "finish_reason": finish_reason, "sequence_index": index, "error": None}


def error_record(message: str) -> dict[str, Any]:
    """The output record of a row that produced nothing: ``error`` set, the outputs empty."""
    return {"text": None, "token_ids": None, "scores": None, "sequence_score": None, "finish_reason": None,
            "sequence_index": 0, "error": message}


def _output_types() -> dict[str, Any]:
    import pyarrow as pa

    return {
        "text": pa.string(), "token_ids": pa.list_(pa.int64()), "scores": pa.list_(pa.float64()),
        "sequence_score": pa.float64(), "finish_reason": pa.string(), "sequence_index": pa.int64(),
        "error": pa.string(),
    }

