"""ferrogen on Ray Data: many prompts over the cores of one machine or the nodes of a cluster.

    import ferrogen.distributed as fd
    ds = fd.read_jsonl("prompts.jsonl")              # numbers the lines before Ray splits them
    out = fd.generate_dataset(ds, model="./my-model", generation_config={"do_sample": True, "seed": 7},
                              batch_size=16, concurrency=4)
    fd.write_jsonl(out, "out.jsonl")

Install with ``pip install 'ferrogen[ray]'``; ``import ferrogen`` never imports Ray.

Every row gets a key (an explicit ``key_column``, else its file, line or row number and
prompt, which the readers attach before Ray splits the data) and a seed
``row_seed(global seed, key)``; it samples exactly as if generated alone with that seed, so
its output depends neither on how Ray cut the data into blocks and batches nor on the number
of workers. A malformed row comes back with a message in the ``error`` column; a worker that
dies is restarted by Ray and its batch retried, and Ray keeps only the output of the attempt
that completed, so every row comes back exactly once.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional, Sequence, Union

from .config import GenerationConfig

if TYPE_CHECKING:
    import pyarrow as pa
    from ray.data import Dataset

__all__ = [
    "BatchGenerator",
    "OUTPUT_COLUMNS",
    "from_prompts",
    "generate_dataset",
    "iter_records",
    "read_jsonl",
    "read_parquet",
    "row_key",
    "row_seed",
    "run_jsonl_job",
    "write_jsonl",
    "write_parquet",
]

# Columns generate_dataset adds (replacing input columns of the same names).
OUTPUT_COLUMNS = ("text", "token_ids", "scores", "sequence_score", "finish_reason", "sequence_index", "error")

# Position columns the readers attach; with `file` they key rows that have no key column.
_POSITIONS = ("line", "row")

PathLike = Union[str, os.PathLike]


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"ferrogen.distributed needs Ray Data: pip install 'ferrogen[ray]' ({exc})") from None
    # Ship this module's functions by value: a worker that only parses JSONL then never
    # imports ferrogen (and torch); actors still import what BatchGenerator uses.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return ray


# ---------------------------------------------------------------------------------------- keys


def row_key(row: dict[str, Any], key_column: Optional[str] = None, prompt_column: str = "prompt") -> str:
    """The text a row's seed is derived from: ``key_column``'s value when given, else the row's
    file, position (``line`` or ``row``) and prompt. Raises ``ValueError`` when neither exists.

    >>> row_key({"file": "a.jsonl", "line": 3, "prompt": "Jesus wept"})
    '["a.jsonl", 3, "Jesus wept"]'
    >>> row_key({"id": "q7", "prompt": "x"}, key_column="id")
    '"q7"'
    """
    if key_column is not None:
        return json.dumps(_plain(row[key_column]), sort_keys=True, default=str)
    for position in _POSITIONS:
        if position in row:
            return json.dumps([row.get("file"), _plain(row[position]), _plain(row.get(prompt_column))], default=str)
    raise ValueError(
        "key_column: rows have no key; pass key_column= (e.g. an id column) or number the rows with "
        "ferrogen.distributed.read_jsonl, read_parquet or from_prompts"
    )


def row_seed(seed: int, key: str) -> int:
    """A row's sampling seed in [0, 2**64): BLAKE2b of the global seed and the row key (stable
    across processes and machines, unlike ``hash()``).

    >>> row_seed(7, '"q7"') == row_seed(7, '"q7"') != row_seed(8, '"q7"')
    True
    """
    digest = hashlib.blake2b(f"{int(seed)}\x00{key}".encode(), digest_size=8, person=b"ferrogen-row").digest()
    return int.from_bytes(digest, "little")


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as Python values (so keys and JSON do not depend on the batch format)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


# ------------------------------------------------------------------------------------- readers


def _files(paths: Union[PathLike, Sequence[PathLike]], suffixes: tuple[str, ...]) -> list[Path]:
    """Files of ``paths`` (directories expand to their files with one of ``suffixes``, sorted)."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            files.extend(sorted(p for p in item.iterdir() if p.is_file() and p.name.endswith(suffixes)))
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"paths: {item} is neither a file nor a directory")
    if not files:
        raise FileNotFoundError(f"paths: no {'/'.join(suffixes)} files in {items}")
    return files


def _line_chunks(path: Path, rows_per_block: int) -> list[dict[str, Any]]:
    """Byte ranges of ``rows_per_block`` consecutive lines each, with their first line number
    (one pass over the file in the driver, counting newlines with numpy)."""
    import numpy as np

    ends: list[Any] = []
    size = 0
    with open(path, "rb") as handle:
        while piece := handle.read(1 << 24):
            ends.append(np.flatnonzero(np.frombuffer(piece, np.uint8) == 10) + (size + 1))
            size += len(piece)
    line_ends = np.concatenate(ends) if ends else np.zeros(0, np.int64)
    if size and (not len(line_ends) or line_ends[-1] != size):
        line_ends = np.append(line_ends, size)  # a last line without a newline
    cuts = [int(c) for c in line_ends[rows_per_block - 1 :: rows_per_block]]
    if size and (not cuts or cuts[-1] != size):
        cuts.append(size)
    starts = [0, *cuts[:-1]]
    return [
        {"path": str(path), "start": s, "end": e, "first_line": 1 + i * rows_per_block}
        for i, (s, e) in enumerate(zip(starts, cuts))
    ]


def _parse_jsonl_line(number: int, raw: bytes, prompt_column: str, keep: Sequence[str]) -> dict[str, Any]:
    """One JSONL line as a row: ``prompt``, the kept keys, the other keys as JSON ``overrides``,
    or an ``error`` (same messages as ``ferrogen generate --input``)."""
    row: dict[str, Any] = {"line": number, prompt_column: None, "overrides": None, "error": None}
    row.update(dict.fromkeys(keep))
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        row["error"] = f"line {number}: not UTF-8"
        return row
    except json.JSONDecodeError as exc:
        row["error"] = f"line {number}: invalid JSON ({exc.msg})"
        return row
    if not isinstance(obj, dict) or not isinstance(obj.get(prompt_column), str):
        row["error"] = f"line {number}: expected an object with a string \"{prompt_column}\""
        return row
    row[prompt_column] = obj.pop(prompt_column)
    for key in keep:
        row[key] = obj.pop(key, None)
    row["overrides"] = json.dumps(obj, sort_keys=True)
    return row


def _read_jsonl_chunks(chunks: "pa.Table", prompt_column: str, keep: Sequence[str]) -> "pa.Table":
    import pyarrow as pa

    rows = []
    for chunk in chunks.to_pylist():
        with open(chunk["path"], "rb") as handle:
            handle.seek(chunk["start"])
            data = handle.read(chunk["end"] - chunk["start"])
        name = os.path.basename(chunk["path"])
        for i, raw in enumerate(data.split(b"\n")):
            if raw.strip():
                rows.append({"file": name, **_parse_jsonl_line(chunk["first_line"] + i, raw, prompt_column, keep)})
    fixed = {"file": pa.string(), "line": pa.int64(), prompt_column: pa.string(), "overrides": pa.string(),
             "error": pa.string()}
    columns = {name: pa.array([r[name] for r in rows], type=fixed.get(name)) for name in [*fixed, *keep]}
    return pa.table(columns)


def read_jsonl(
    paths: Union[PathLike, Sequence[PathLike]],
    *,
    columns: Sequence[str] = (),
    prompt_column: str = "prompt",
    rows_per_block: int = 256,
) -> "Dataset":
    """JSONL files (or directories of ``*.jsonl``) as a Ray Dataset, one row per non-blank line.

    Columns: ``file`` (base name), ``line`` (1-based, as ``ferrogen generate`` reports it),
    ``prompt``, one column per key named in ``columns`` (e.g. ``["id"]``), ``overrides``
    (the line's other keys as a JSON object: per-line config overrides, as in the CLI) and
    ``error`` (set for a line that is not a JSON object with a string prompt). The driver
    counts newlines once to cut the files into blocks of ``rows_per_block`` lines; Ray
    workers parse the blocks, so the paths must be readable on every node (shared storage).
    """
    ray = _ray()
    if rows_per_block < 1:
        raise ValueError(f"rows_per_block: must be >= 1, got {rows_per_block}")
    keep = [c for c in columns if c != prompt_column]
    chunks = [c for path in _files(paths, (".jsonl", ".json")) for c in _line_chunks(path, rows_per_block)]
    if not chunks:
        raise ValueError(f"paths: {paths} holds no lines")
    items = ray.data.from_items(chunks, override_num_blocks=len(chunks))
    return items.map_batches(
        _read_jsonl_chunks, batch_size=1, batch_format="pyarrow",
        fn_kwargs={"prompt_column": prompt_column, "keep": keep},
    )


def _read_parquet_chunks(chunks: "pa.Table") -> "pa.Table":
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for chunk in chunks.to_pylist():
        table = pq.ParquetFile(chunk["path"]).read_row_group(chunk["group"])
        positions = pa.array(range(chunk["first_row"], chunk["first_row"] + table.num_rows), pa.int64())
        names = pa.array([os.path.basename(chunk["path"])] * table.num_rows, pa.string())
        tables.append(table.append_column("file", names).append_column("row", positions))
    return pa.concat_tables(tables)


def read_parquet(paths: Union[PathLike, Sequence[PathLike]]) -> "Dataset":
    """Parquet files (or directories of ``*.parquet``) as a Ray Dataset with two more columns:
    ``file`` (base name) and ``row`` (0-based position in its file). One block per row group;
    :func:`generate_dataset` splits blocks to its batch size."""
    import pyarrow.parquet as pq

    ray = _ray()
    chunks = []
    for path in _files(paths, (".parquet",)):
        meta = pq.ParquetFile(path).metadata
        first = 0
        for group in range(meta.num_row_groups):
            chunks.append({"path": str(path), "group": group, "first_row": first})
            first += meta.row_group(group).num_rows
    if not chunks:
        raise ValueError(f"paths: {paths} holds no rows")
    items = ray.data.from_items(chunks, override_num_blocks=len(chunks))
    return items.map_batches(_read_parquet_chunks, batch_size=1, batch_format="pyarrow")


def from_prompts(prompts: Iterable[Union[str, dict[str, Any]]], *, prompt_column: str = "prompt") -> "Dataset":
    """An in-memory Ray Dataset of prompts (strings, or dicts holding ``prompt`` and any other
    columns) with a ``row`` column numbering them."""
    ray = _ray()
    rows = [{prompt_column: p} if isinstance(p, str) else dict(p) for p in prompts]
    for number, row in enumerate(rows):
        row["row"] = number
    return ray.data.from_items(rows)


# ------------------------------------------------------------------------------------- writers


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return _plain(value)


def iter_records(ds: "Dataset") -> Iterator[dict[str, Any]]:
    """The rows of ``ds`` as plain Python dicts (lists, ints, floats, strings, None)."""
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        yield from batch.to_pylist()


def write_jsonl(ds: "Dataset", path: PathLike) -> None:
    """Writes ``ds`` as JSON lines: to one file through the driver when ``path`` ends in
    ``.jsonl`` (in the dataset's order), else to a directory, one file per block, by the workers."""
    if str(path).endswith(".jsonl"):
        with open(path, "w", encoding="utf-8") as out:
            for record in iter_records(ds):
                out.write(json.dumps(_jsonable(record)) + "\n")
    else:
        ds.write_json(str(path))


def write_parquet(ds: "Dataset", path: PathLike) -> None:
    """Writes ``ds`` as Parquet: one file through the driver when ``path`` ends in
    ``.parquet``, else a directory, one file per block, by the workers."""
    if not str(path).endswith(".parquet"):
        ds.write_parquet(str(path))
        return
    import pyarrow.parquet as pq

    writer = None
    try:
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            if writer is None:
                writer = pq.ParquetWriter(str(path), batch.schema)
            writer.write_table(batch.cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()


# -------------------------------------------------------------------------------- the generator


class BatchGenerator:
    """Ray Data callable class: loads the model and tokenizer once per actor, then turns each
    batch (a ``pyarrow.Table``) into the same rows with :data:`OUTPUT_COLUMNS` added, one
    output row per returned sequence. Usable directly with ``ds.map_batches(BatchGenerator,
    fn_constructor_kwargs=..., batch_format="pyarrow")``; :func:`generate_dataset` wires it up.
    """

    def __init__(
        self,
        model: Optional[str] = None,
        generation_config: Optional[GenerationConfig] = None,
        *,
        overrides: Optional[dict[str, Any]] = None,
        seed: int = 0,
        prompt_column: str = "prompt",
        key_column: Optional[str] = None,
        overrides_column: Optional[str] = "overrides",
        output_scores: bool = True,
        device: str = "cpu",
        dtype: Optional[str] = None,
        threads: Optional[int] = None,
    ) -> None:
        import torch
        from transformers.utils import logging as hf_logging

        from . import embedded_model_path
        from .text import TextGenerator, load_model

        if threads:
            torch.set_num_threads(threads)
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        loaded, tokenizer = load_model(model or embedded_model_path(), device=device, dtype=dtype)
        self.text = TextGenerator(loaded, tokenizer)
        base = GenerationConfig.from_pretrained(loaded) if generation_config is None else generation_config
        self.config = base.merged(**(overrides or {}))
        self.seed = self.config.seed if self.config.seed is not None else int(seed)
        self.prompt_column = prompt_column
        self.key_column = key_column
        self.overrides_column = overrides_column
        self.output_scores = output_scores

    def __call__(self, batch: "pa.Table") -> "pa.Table":
        self._check_columns(batch.column_names)
        rows = batch.to_pylist()
        results: list[list[dict[str, Any]]] = [[] for _ in rows]
        groups: dict[str, list[int]] = {}
        configs: dict[str, GenerationConfig] = {}
        seeds: list[int] = [0] * len(rows)
        for i, row in enumerate(rows):
            try:
                line_overrides = self._row_overrides(row)
                key = json.dumps(line_overrides, sort_keys=True, default=str)
                if key not in configs:
                    configs[key] = self.config.merged(**line_overrides) if line_overrides else self.config
                seed = configs[key].seed if configs[key].seed is not None else self.seed
                seeds[i] = row_seed(seed, row_key(row, self.key_column, self.prompt_column))
            except (ValueError, TypeError) as exc:
                results[i] = [_failed(exc)]
                continue
            groups.setdefault(key, []).append(i)
        for key, members in groups.items():
            self._generate(configs[key], [rows[i][self.prompt_column] for i in members],
                           [seeds[i] for i in members], [results[i] for i in members])
        return self._table(batch, results)

    def _check_columns(self, names: Sequence[str]) -> None:
        """A missing prompt or key column fails the job (it is not a property of one row)."""
        for name in (self.prompt_column, self.key_column):
            if name is not None and name not in names:
                raise KeyError(f"{name}: no such column (columns: {', '.join(names)})")
        if self.key_column is None and not any(p in names for p in _POSITIONS):
            row_key({}, None, self.prompt_column)  # raises the ValueError that says what to do

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

    def _generate(self, config: GenerationConfig, prompts: list[str], seeds: list[int],
                  out: list[list[dict[str, Any]]]) -> None:
        """Generates a group sharing one config; when the group fails, row by row to find the bad rows."""
        try:
            for slot, produced in zip(out, self._run(config, prompts, seeds)):
                slot.extend(produced)
            return
        except Exception as exc:  # noqa: BLE001 - a bad row must not fail the job
            if len(prompts) == 1:
                out[0].append(_failed(exc))
                return
        for i in range(len(prompts)):
            self._generate(config, prompts[i : i + 1], seeds[i : i + 1], out[i : i + 1])

    def _run(self, config: GenerationConfig, prompts: list[str], seeds: list[int]) -> list[list[dict[str, Any]]]:
        import torch

        from .generate import _NO_ROW_SEEDS, generate

        tok = self.text.tokenizer
        if min(len(ids) for ids in tok(prompts)["input_ids"]) == 0:
            raise _RowError("prompt: encodes to no tokens")
        if config.generation_mode() in _NO_ROW_SEEDS:  # one prompt at a time, seeded as if alone
            if len(prompts) > 1:
                return [self._run(config, [p], [s])[0] for p, s in zip(prompts, seeds)]
            seeding: dict[str, Any] = {"seed": seeds[0]}
        else:
            seeding = {"row_seeds": seeds}
        enc = tok(prompts, return_tensors="pt", padding=True)
        model = self.text.model
        device = getattr(model, "device", torch.device("cpu"))
        with torch.no_grad():
            output = generate(
                model, input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
                generation_config=config, tokenizer=tok, return_dict_in_generate=True,
                output_scores=self.output_scores, **seeding,
            )
        skip = 1 if self.text.encoder_decoder else enc["input_ids"].shape[1]
        token_scores = _token_logprobs(output, skip) if self.output_scores else None
        per_prompt = output.sequences.shape[0] // len(prompts)
        produced: list[list[dict[str, Any]]] = [[] for _ in prompts]
        pad = tok.pad_token_id
        for r, seq in enumerate(output.sequences.tolist()):
            reason = output.finish_reasons[r]
            new = seq[skip:]
            while new and pad is not None and new[-1] == pad and reason != "length":
                new.pop()
            scores = token_scores[r][: len(new)] if token_scores is not None else None
            if scores is None:
                total = None
            elif output.sequences_scores is not None:
                total = float(output.sequences_scores[r])
            else:
                total = float(sum(scores))
            produced[r // per_prompt].append({
                "text": tok.decode(new, skip_special_tokens=True), "token_ids": new, "scores": scores,
                "sequence_score": total, "finish_reason": reason, "sequence_index": r % per_prompt, "error": None,
            })
        return produced

    def _table(self, batch: "pa.Table", results: list[list[dict[str, Any]]]) -> "pa.Table":
        import pyarrow as pa

        take = [i for i, produced in enumerate(results) for _ in produced]
        records = [record for produced in results for record in produced]
        inputs = batch.drop_columns([c for c in OUTPUT_COLUMNS if c in batch.column_names]).take(take)
        for name, kind in _output_types().items():
            inputs = inputs.append_column(name, pa.array([r[name] for r in records], type=kind))
        return inputs


class _RowError(ValueError):
    """A row that cannot be generated; its message goes to the ``error`` column as is."""


def _failed(exc: Exception) -> dict[str, Any]:
    """The output row of a row that failed: the message of an argument error (it names the
    argument, as the CLI prints it), else the exception type and message."""
    message = str(exc) if isinstance(exc, (ValueError, TypeError)) else f"{type(exc).__name__}: {exc}"
    return {"text": None, "token_ids": None, "scores": None, "sequence_score": None, "finish_reason": None,
            "sequence_index": 0, "error": message}


def _token_logprobs(output: Any, skip: int) -> list[list[float]]:
    """Log-probability of every generated token under the processed scores of its step (as
    transformers' ``compute_transition_scores(..., normalize_logits=True)``)."""
    import torch

    rows = output.sequences.shape[0]
    steps = len(output.scores)
    chosen = output.sequences[:, skip : skip + steps].cpu()
    columns = []
    for t, scores in enumerate(output.scores):
        source = output.beam_indices[:, t].clamp(min=0).cpu() if output.beam_indices is not None else torch.arange(rows)
        logp = torch.log_softmax(scores.float().cpu(), dim=-1)
        columns.append(logp[source, chosen[:, t]])
    if not columns:
        return [[] for _ in range(rows)]
    return torch.stack(columns, dim=1).tolist()


def _output_types() -> dict[str, Any]:
    import pyarrow as pa

    return {
        "text": pa.string(), "token_ids": pa.list_(pa.int64()), "scores": pa.list_(pa.float64()),
        "sequence_score": pa.float64(), "finish_reason": pa.string(), "sequence_index": pa.int64(),
        "error": pa.string(),
    }


# -------------------------------------------------------------------------------- the entry point


def _config(generation_config: Any) -> Optional[GenerationConfig]:
    if generation_config is None or isinstance(generation_config, GenerationConfig):
        return generation_config
    if isinstance(generation_config, dict):
        return GenerationConfig.from_dict(generation_config)
    if isinstance(generation_config, (str, os.PathLike)):
        return GenerationConfig.from_pretrained(generation_config)
    if type(generation_config).__name__ == "GenerationConfig":
        return GenerationConfig.from_transformers(generation_config)
    raise TypeError(
        f"generation_config: expected a GenerationConfig, a dict or a path, got {type(generation_config).__name__}"
    )


def _pool_size(concurrency: Any, num_cpus: float, num_gpus: float, resources: dict[str, float]) -> tuple[int, int]:
    """(min, max) actors: ``concurrency`` as given, else 1 up to what the cluster holds."""
    if isinstance(concurrency, int):
        sizes = (concurrency, concurrency)
    elif isinstance(concurrency, (tuple, list)) and len(concurrency) == 2:
        sizes = (int(concurrency[0]), int(concurrency[1]))
    elif concurrency is None:
        fits = resources.get("GPU", 0) / num_gpus if num_gpus else resources.get("CPU", 1) / max(num_cpus, 1e-9)
        sizes = (1, max(1, int(fits)))
    else:
        raise ValueError(f"concurrency: expected an int or a (min, max) pair, got {concurrency!r}")
    if not 1 <= sizes[0] <= sizes[1]:
        raise ValueError(f"concurrency: need 1 <= min <= max, got {concurrency!r}")
    return sizes


def generate_dataset(
    ds: "Dataset",
    model: Optional[PathLike] = None,
    generation_config: Any = None,
    *,
    prompt_column: str = "prompt",
    key_column: Optional[str] = None,
    overrides_column: Optional[str] = "overrides",
    batch_size: int = 16,
    concurrency: Union[int, tuple[int, int], None] = None,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    device: Optional[str] = None,
    dtype: Optional[str] = None,
    output_scores: bool = True,
    max_restarts: Optional[int] = None,
    max_task_retries: Optional[int] = None,
    generator_class: type = BatchGenerator,
    **overrides: Any,
) -> "Dataset":
    """Generates a continuation of every row's prompt with a pool of Ray actors; lazy like any
    Ray Dataset (write it, iterate it or ``materialize()`` it to run).

    - ``model``: a local model directory readable on every node (default: the embedded model);
      each actor loads it and its tokenizer once. ``generation_config`` (a config, a dict or a
      ``generation_config.json`` path; default: the model's own) and keyword ``overrides``
      apply to every row; a row's ``overrides_column`` (a JSON object, as :func:`read_jsonl`
      makes) overrides them for that row. Any strategy ferrogen supports works.
    - Seeds: a row samples as if generated alone with ``seed=row_seed(seed, row_key(row))``;
      ``seed`` is the config's, else one drawn here from torch's global generator.
    - Output: the input columns plus :data:`OUTPUT_COLUMNS` (``text``, ``token_ids``,
      ``scores``: per-token log-probabilities, ``sequence_score``, ``finish_reason``,
      ``sequence_index`` among ``num_return_sequences``, ``error``). A malformed row gets one
      output row with ``error`` set and the job goes on.
    - Resources: ``concurrency`` actors (an int, a ``(min, max)`` pair, or ``None``: 1 up to
      what the cluster holds) with ``num_cpus`` / ``num_gpus`` each (``device`` defaults to
      ``"cuda"`` when ``num_gpus > 0``). A dead actor is restarted and its batch retried on
      it; ``None`` keeps Ray Data's defaults for ``max_restarts`` and ``max_task_retries``
      (-1 and -1, no limit, as of Ray 2.60); give ints to bound them.
    - When the pool can take every CPU, the input is materialized first: Ray Data cannot run
      the reading tasks while actors hold all CPUs.
    """
    ray = _ray()
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    if model is not None and not (Path(model) / "config.json").is_file():
        raise FileNotFoundError(f"model: {model} is not a model directory (no config.json)")
    config = _config(generation_config)
    (config or GenerationConfig()).merged(**overrides)  # bad fields raise here, before Ray runs anything
    if config is not None and config.seed is not None:
        seed = config.seed
    elif overrides.get("seed") is not None:
        seed = int(overrides["seed"])
    else:
        from .processors import draw_seed

        seed = draw_seed()
    resources = ray.cluster_resources()
    low, high = _pool_size(concurrency, num_cpus, num_gpus, resources)
    ds = ds.repartition(target_num_rows_per_block=batch_size)
    if high * num_cpus >= resources.get("CPU", 0):
        ds = ds.materialize()
    return ds.map_batches(
        generator_class,
        batch_size=batch_size,
        batch_format="pyarrow",
        zero_copy_batch=True,
        compute=ray.data.ActorPoolStrategy(min_size=low, max_size=high),
        num_cpus=num_cpus,
        num_gpus=num_gpus or None,
        **{name: value for name, value in (("max_restarts", max_restarts), ("max_task_retries", max_task_retries))
           if value is not None},
        fn_constructor_kwargs=dict(
            model=str(model) if model is not None else None, generation_config=config, overrides=overrides,
            seed=seed, prompt_column=prompt_column, key_column=key_column, overrides_column=overrides_column,
            output_scores=output_scores, device=device or ("cuda" if num_gpus else "cpu"), dtype=dtype,
            threads=max(1, int(num_cpus)),
        ),
    )


# ------------------------------------------------------------------------------------- the CLI


def run_jsonl_job(
    input_path: PathLike,
    out: Any,
    *,
    model: Optional[PathLike] = None,
    config: Optional[PathLike] = None,
    overrides: Optional[dict[str, Any]] = None,
    batch_size: int = 8,
    device: str = "cpu",
    address: Optional[str] = None,
) -> int:
    """``ferrogen generate --input ... --ray``: the CLI's JSONL job on Ray Data.

    Joins the cluster at ``address``, else starts a Ray instance on this machine (unless this
    process is already connected to one). Writes the CLI's records to ``out`` in input order
    and returns its exit status: 1 when a line failed, else 0.
    """
    import logging

    from tqdm import tqdm

    ray = _ray()
    started = not ray.is_initialized()
    if started:
        local = dict(address="local", include_dashboard=False) if address is None else dict(address=address)
        if address is None:
            local["_node_ip_address"] = "127.0.0.1"  # a local instance listens on loopback only
        ray.init(**local, log_to_driver=False, logging_level=logging.WARNING)
    context = ray.data.DataContext.get_current()
    saved = (context.execution_options.preserve_order, context.enable_progress_bars)
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    try:
        rows = generate_dataset(
            read_jsonl(input_path), model, config, batch_size=batch_size, output_scores=False, device=device,
            num_gpus=1 if str(device).startswith("cuda") else 0, **(overrides or {}),
        )
        failures = 0
        with tqdm(unit="prompt", file=sys.stderr, disable=None) as bar:
            for record in iter_records(rows):
                line, error = record["line"], record["error"]
                if error:
                    failures += 1
                    print(f"ferrogen: {error if error.startswith(f'line {line}:') else f'line {line}: {error}'}",
                          file=sys.stderr)
                    out.write(json.dumps({"line": line, "error": error}) + "\n")
                else:
                    out.write(json.dumps({"line": line, "prompt": record["prompt"], "text": record["text"],
                                          "token_ids": record["token_ids"],
                                          "finish_reason": record["finish_reason"]}) + "\n")
                bar.update(record["sequence_index"] == 0)
        return 1 if failures else 0
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
        if started:
            ray.shutdown()
