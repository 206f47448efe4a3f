"""Finding the row that kills its worker.

Ray restarts a dead actor and retries its batch; a row that kills the process every time
(a segfault in a kernel, an out-of-memory kill on one huge prompt) would be retried until
the retries run out and then fail the whole job. Everything an actor knew dies with it, so
the attempts are counted outside it, in one :class:`AttemptLedger` actor per job: before
generating a range of a batch's rows the actor records that it started, and after it clears
that record. A record still standing when the batch comes back is a death. A batch that died
more than ``batch_retries`` times is split in halves, a part that died once is split again,
and a single row that died is returned with ``error`` set; every other row is generated
again and returned once (Ray keeps only the output of the attempt that completed).

The ledger keys a batch by its rows' :data:`OCCURRENCE` ids, not by their contents: a
dataset repeating a prompt (one prompt many times, for sampling) holds identical batches,
and two actors generating them at once would take each other's record for a death.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import pyarrow as pa

Results = list[list[dict[str, Any]]]


class AttemptLedger:
    """Counts, per range of a batch, the attempts that started and never finished (deaths).
    Runs as a Ray actor needing no CPU (``ray.remote(num_cpus=0)(AttemptLedger)``)."""

    def __init__(self) -> None:
        self.unfinished: Counter[str] = Counter()

    def begin(self, key: str) -> int:
        """Records an attempt at ``key``; returns how many earlier attempts died."""
        deaths = self.unfinished[key]
        self.unfinished[key] += 1
        return deaths

    def finish(self, key: str) -> None:
        self.unfinished[key] -= 1
        if self.unfinished[key] <= 0:
            del self.unfinished[key]


#: The column :func:`number_occurrences` adds: one id per row of the dataset, which the
#: ledger keys batches by; :class:`~ferrogen.distributed.BatchGenerator` drops it from its output.
OCCURRENCE = "_ferrogen_occurrence"


def number_occurrences(block: "pa.Table") -> "pa.Table":
    """``block`` with :data:`OCCURRENCE`: a random id drawn for the block and each row's place
    in it. :func:`~ferrogen.distributed.generate_dataset` runs it as a task of its own before
    the repartition, so the ids are drawn once and stored in the blocks that Ray hands the
    actor's task, and a retried task gets the same ids. (Drawn inside the actor's task, as Ray
    would if this step were fused with it, they would change at every retry and no death would
    count; a node lost with its blocks gets new ids when Ray rebuilds them, its counts restart.)"""
    import pyarrow as pa

    token = uuid.uuid4().hex
    if OCCURRENCE in block.column_names:
        block = block.drop_columns([OCCURRENCE])
    return block.append_column(OCCURRENCE, pa.array([f"{token}:{i}" for i in range(block.num_rows)], pa.string()))


def batch_id(batch: "pa.Table") -> str:
    """The ledger's key of a batch: a digest of its rows' :data:`OCCURRENCE` ids (unique to the
    batch, the same when Ray retries its task)."""
    ids = "\n".join(batch.column(OCCURRENCE).to_pylist())
    return hashlib.blake2b(ids.encode(), digest_size=16).hexdigest()


def died_alone(deaths: int) -> str:
    """The ``error`` of a row whose worker died while it was generated alone."""
    return (f"worker process died while generating this row ({deaths} time{'s' * (deaths > 1)} alone, after its "
            "batch was retried and split to isolate it)")


def isolate(ledger: Any, batch: str, count: int, batch_retries: int,
            generate: Callable[[int, int], Results], lost: Callable[[str], list[dict[str, Any]]]) -> Results:
    """``generate(0, count)``, unless earlier attempts at it died: then its halves, recursively,
    down to single rows, which come back as ``lost(error message)`` (see the module's docstring)."""
    import ray

    def run(start: int, stop: int, retries: int) -> Results:
        key = f"{batch}:{start}:{stop}"
        deaths = ray.get(ledger.begin.remote(key))
        if deaths <= retries:
            results = generate(start, stop)
            ray.get(ledger.finish.remote(key))
            return results
        ray.get(ledger.finish.remote(key))  # not run: split instead
        if stop - start == 1:
            return [lost(died_alone(deaths))]
        middle = (start + stop) // 2
        return run(start, middle, 0) + run(middle, stop, 0)

    return run(0, count, batch_retries)


def task_retries(batch_retries: int, batch_size: int) -> int:
    """Retries a task needs to isolate every row of a batch that all kill their worker: the
    whole batch dies ``batch_retries + 1`` times, then each range of the bisection at most once
    (fewer than ``2 * batch_size`` ranges)."""
    return batch_retries + 1 + 2 * batch_size
