"""Readers that number rows before Ray splits them, and writers (JSONL, Parquet)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence, Union

from ._ray import need_ray
from .keys import plain

if TYPE_CHECKING:
    import pyarrow as pa
    from ray.data import Dataset

PathLike = Union[str, os.PathLike]


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
    ray = need_ray()
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

    ray = need_ray()
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
    ray = need_ray()
    rows: list[dict[str, Any]] = [{prompt_column: p} if isinstance(p, str) else dict(p) for p in prompts]
    for number, row in enumerate(rows):
        row["row"] = number
    return ray.data.from_items(rows)


# ------------------------------------------------------------------------------------- writers


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return plain(value)


def _arrow_batches(ds: "Dataset") -> Iterator["pa.Table"]:
    """The blocks of ``ds`` as Arrow tables (Ray types the batches of every format as one union)."""
    import pyarrow as pa

    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        if not isinstance(batch, pa.Table):
            raise TypeError(f"dataset: expected Arrow batches, got {type(batch).__name__}")
        yield batch


def iter_records(ds: "Dataset") -> Iterator[dict[str, Any]]:
    """The rows of ``ds`` as plain Python dicts (lists, ints, floats, strings, None)."""
    for batch in _arrow_batches(ds):
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
        for batch in _arrow_batches(ds):
            if writer is None:
                writer = pq.ParquetWriter(str(path), batch.schema)
            writer.write_table(batch.cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()
