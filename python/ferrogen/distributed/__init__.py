"""ferrogen on Ray Data: many prompts over the cores of one machine or the nodes of a cluster.

    import ferrogen.distributed as fd
    ds = fd.read_jsonl("prompts.jsonl")              # numbers the lines before Ray splits them
    out = fd.generate_dataset(ds, model="./my-model", generation_config={"do_sample": True, "seed": 7},
                              batch_size=16, concurrency=4)
    fd.write_jsonl(out, "out.jsonl")

Install with ``pip install 'ferrogen[ray]'``; ``import ferrogen`` never imports Ray.

Every row that samples gets a key (an explicit ``key_column``, else its file, line or row
number and prompt, which the readers attach before Ray splits the data) and a seed
``row_seed(global seed, key)``; it samples exactly as if generated alone with that seed, so
its output depends neither on how Ray cut the data into blocks and batches nor on the number
of workers. A malformed row comes back with a message in the ``error`` column; a worker that
dies is restarted by Ray and its batch retried, and Ray keeps only the output of the attempt
that completed, so every row comes back exactly once; a row that kills its worker every time
is isolated and comes back with ``error`` set (:mod:`.attempts`).

Modules: :mod:`.keys` (row keys and seeds), :mod:`.io` (readers and writers),
:mod:`.generator` (the per-actor :class:`BatchGenerator`), :mod:`.attempts` (isolating a row
that kills its worker), :mod:`.job` (:func:`generate_dataset`, the CLI's job).
"""

from __future__ import annotations

from .generator import OUTPUT_COLUMNS, BatchGenerator
from .io import from_prompts, iter_records, read_jsonl, read_parquet, write_jsonl, write_parquet
from .job import generate_dataset, run_jsonl_job
from .keys import row_key, row_seed

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
