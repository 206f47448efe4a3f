"""The Ray job: :func:`generate_dataset` over a pool of actors, and the CLI's ``--ray``."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from ..config import GenerationConfig
from ._ray import need_ray
from .attempts import AttemptLedger, number_occurrences, task_retries
from .generator import BatchGenerator, check_refill_fraction
from .io import PathLike, iter_records, read_jsonl

if TYPE_CHECKING:
    from ray.data import Dataset

#: ``generate_dataset``'s default ``block_size`` in batches; see :func:`generate_dataset`.
DEFAULT_BLOCK_BATCHES = 4


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


def default_block_size(batch_size: int) -> int:
    """The rows of one Ray call when ``block_size`` is None: :data:`DEFAULT_BLOCK_BATCHES`
    batches, for the refilling engine to refill from."""
    return DEFAULT_BLOCK_BATCHES * batch_size


def _block_size(batch_size: Any, block_size: Any) -> int:
    """The rows of one Ray call: ``block_size``, else its default (both sizes checked)."""
    from ..engine import check_batch_size  # (not at import: the engine loads torch, the CLI's parser must not)

    check_batch_size(batch_size)  # here None is refused too
    if block_size is None:
        return default_block_size(int(batch_size))
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < batch_size:
        raise ValueError(f"block_size: expected an int >= batch_size ({batch_size}), got {block_size!r}")
    return block_size


def generate_dataset(
    ds: "Dataset",
    model: Optional[PathLike] = None,
    generation_config: Any = None,
    *,
    prompt_column: str = "prompt",
    key_column: Optional[str] = None,
    overrides_column: Optional[str] = "overrides",
    batch_size: int = 16,
    block_size: Optional[int] = None,
    concurrency: Union[int, tuple[int, int], None] = None,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    device: Optional[str] = None,
    dtype: Optional[str] = None,
    output_scores: bool = True,
    refill_fraction: Optional[float] = None,
    batch_retries: int = 2,
    max_restarts: int = -1,
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
    - Seeds: a row that samples does so as if generated alone with
      ``seed=row_seed(seed, row_key(row))``; ``seed`` is the config's, else one drawn here from
      torch's global generator. Only sampling (``do_sample=True``) needs a row key: rows of a
      dataset that the readers did not number need ``key_column`` then, greedy and beam search
      run on any dataset.
    - Batches: each Ray call (a block of ``block_size`` rows) runs its rows through the batch
      engine as :func:`ferrogen.engine.generate_texts` does: sorted by prompt length,
      ``batch_size`` at a time, finished rows dropped and (greedy search and sampling, a model
      whose cache can merge) their places taken by the block's waiting rows, prefilled
      ``refill_fraction`` (in (0, 1], the engine's default when None) of the batch at a time:
      continuous batching, which needs a block larger than the batch. A block is
      :data:`DEFAULT_BLOCK_BATCHES` (4) batches by default:
      the running batch refills until the block's last rows start, then drains. On the
      embedded model with prompts of varied length (1 actor, docs/distributed.md) blocks of 2,
      4 and 8 batches ran 1.46x, 1.70x and 1.76x blocks of one batch; 4 takes most of the gain
      while a block stays a small unit of work: a block is what Ray retries when its worker
      dies (and what the attempt ledger splits), what is shared among actors (fewer, larger
      blocks share out less evenly at the end of a job) and what an actor holds in memory as
      output until it ends (the model's memory depends on ``batch_size`` alone).
      ``block_size=batch_size`` gives the old behaviour (one batch per Ray call, finished rows
      dropped, nothing refills). With ``output_scores=True`` (the default) the refilling loop
      keeps each row's per-token log-probabilities (those of a ``generate`` call with
      ``output_scores`` on its batch); strategies the engine does not refill (beam search and
      the others) run each ``batch_size`` rows of a block (in length order) as one ``generate``
      call, finished rows dropped.
    - Output: the input columns plus :data:`OUTPUT_COLUMNS` (``text``, ``token_ids``,
      ``scores``: per-token log-probabilities, ``sequence_score``, ``finish_reason``,
      ``sequence_index`` among ``num_return_sequences``, ``error``). A malformed row gets one
      output row with ``error`` set and the job goes on.
    - Resources: ``concurrency`` actors (an int, a ``(min, max)`` pair, or ``None``: 1 up to
      what the cluster holds) with ``num_cpus`` / ``num_gpus`` each (``device`` defaults to
      ``"cuda"`` when ``num_gpus > 0``).
    - Dead workers: a dead actor is restarted (``max_restarts`` times, -1: always) and its batch
      retried on it. A batch whose worker died more than ``batch_retries`` times is split in
      halves, and a part whose worker died again is split again, until the row that kills its
      worker is alone: it comes back with ``error`` set and every other row completes
      (:mod:`ferrogen.distributed.attempts`). ``max_task_retries`` (default: enough to isolate
      every row of a batch) bounds the retries of one batch; past it the job fails.
    - When the pool can take every CPU, the input is materialized first: Ray Data cannot run
      the reading tasks while actors hold all CPUs.
    """
    ray = need_ray()
    block_size = _block_size(batch_size, block_size)
    check_refill_fraction(refill_fraction)
    if batch_retries < 0:
        raise ValueError(f"batch_retries: must be >= 0, got {batch_retries}")
    if model is not None and not (Path(model) / "config.json").is_file():
        raise FileNotFoundError(f"model: {model} is not a model directory (no config.json)")
    config = _config(generation_config)
    (config or GenerationConfig()).merged(**overrides)  # bad fields raise here, before Ray runs anything
    if config is not None and config.seed is not None:
        seed = config.seed
    elif overrides.get("seed") is not None:
        seed = int(overrides["seed"])
    else:
        from ..processors import draw_seed

        seed = draw_seed()
    resources = ray.cluster_resources()
    low, high = _pool_size(concurrency, num_cpus, num_gpus, resources)
    ledger = ray.remote(num_cpus=0)(AttemptLedger).remote()
    # The ledger's row ids, drawn in a task before the repartition (which Ray does not fuse with
    # the actors' stage): a retried batch must carry the ids of its first attempt.
    ds = ds.map_batches(number_occurrences, batch_format="pyarrow")
    ds = ds.repartition(target_num_rows_per_block=block_size)
    if high * num_cpus >= resources.get("CPU", 0):
        ds = ds.materialize()
    retries = task_retries(batch_retries, block_size) if max_task_retries is None else max_task_retries
    with warnings.catch_warnings():
        # Ray 2.60 deprecates **ray_remote_args but names no parameter for max_restarts and
        # max_task_retries yet; the warning would ask the user for a change they cannot make.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return ds.map_batches(
            generator_class,
            batch_size=block_size,
            batch_format="pyarrow",
            zero_copy_batch=True,
            compute=ray.data.ActorPoolStrategy(min_size=low, max_size=high),
            num_cpus=num_cpus,
            num_gpus=num_gpus or None,
            max_restarts=max_restarts,
            max_task_retries=retries,
            fn_constructor_kwargs=dict(
                model=str(model) if model is not None else None, generation_config=config, overrides=overrides,
                seed=seed, batch_size=batch_size, prompt_column=prompt_column, key_column=key_column, overrides_column=overrides_column,
                output_scores=output_scores, device=device or ("cuda" if num_gpus else "cpu"), dtype=dtype,
                threads=max(1, int(num_cpus)), ledger=ledger, batch_retries=batch_retries,
                refill_fraction=refill_fraction,
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
    block_size: Optional[int] = None,
    refill_fraction: Optional[float] = None,
    device: str = "cpu",
    address: Optional[str] = None,
) -> int:
    """``ferrogen generate --input ... --ray``: the CLI's JSONL job on Ray Data, through the
    refilling batch engine (``output_scores=False``; ``block_size`` and ``refill_fraction`` as
    in :func:`generate_dataset`, its defaults when None).

    Joins the cluster at ``address``, else starts a Ray instance on this machine (unless this
    process is already connected to one). Writes the CLI's records to ``out`` in input order
    and returns its exit status: 1 when a line failed, else 0.
    """
    import logging

    from tqdm import tqdm

    ray = need_ray()
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
            read_jsonl(input_path), model, config, batch_size=batch_size, block_size=block_size,
            output_scores=False, refill_fraction=refill_fraction, device=device,
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

