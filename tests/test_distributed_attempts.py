"""The attempt ledger (ferrogen.distributed.attempts): a row that kills its worker every time is
isolated and comes back with an error, and identical batches running at once (a dataset that
repeats a prompt) are not taken for each other's deaths. On a local Ray instance, as in
test_distributed.py (whose fixtures and helpers these tests share).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

import ferrogen
from ferrogen import distributed as fd
from ferrogen.distributed.attempts import OCCURRENCE, AttemptLedger, number_occurrences

from test_distributed import BASE, HEADS, RAY_MISSING, TAILS, deadline, embedded, needs_ray, ray_session  # noqa: F401

if RAY_MISSING is None:
    import ray
    import ray.data


def poisoned_class(marker: str, deaths: Path):
    """A BatchGenerator whose model kills its process (``os._exit``) whenever its input holds
    the prompt ``marker``, writing the dead process's id to ``deaths``; defined in a function
    so that Ray pickles it by value."""

    class Poisoned(fd.BatchGenerator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            model, poison = self.text.model, self.text.tokenizer(marker)["input_ids"]
            forward = model.forward

            @functools.wraps(forward)  # the adapter reads the forward's signature (position_ids, cache)
            def forward_or_die(*a, **kw):
                ids = kw.get("input_ids", a[0] if a else None)
                if ids is not None and any(row[-len(poison):] == poison for row in ids.tolist()):
                    with open(deaths, "a") as out:
                        out.write(f"{os.getpid()}\n")
                    os._exit(1)
                return forward(*a, **kw)

            model.forward = forward_or_die

    return Poisoned


@needs_ray
def test_a_row_that_kills_its_worker_every_time_comes_back_with_an_error(ray_session, embedded, tmp_path):
    """Ray's defaults retry such a batch forever (and bounded retries fail the whole job): the
    batch is retried batch_retries times, then bisected down to the row, which gets ``error``.
    The dataset is a plain Ray dataset without keys or row numbers (greedy needs no key) holding
    4 prompts twice: two identical blocks of 4 rows, each on its own actor at the same time,
    through the batch engine, 2 running at a time (the poisoned row may come in by a refill).
    Each block's deaths are its own: the ledger keys the blocks by their row ids, which a
    retried block keeps (keyed by contents, each block's records would count as the other's
    deaths)."""
    prompts = [f"{HEADS[i]} {TAILS[i]}" for i in range(4)] * 2
    marker = prompts[3]
    deaths = tmp_path / "deaths"
    with deadline(300):
        ds = ray.data.from_items([{"prompt": p} for p in prompts], override_num_blocks=2)
        out = fd.generate_dataset(ds, generation_config=BASE, batch_size=2, block_size=4, output_scores=False,
                                  concurrency=2, batch_retries=1, generator_class=poisoned_class(marker, deaths))
        records = list(fd.iter_records(out))
    assert sorted(r["prompt"] for r in records) == sorted(prompts), "every row exactly once"
    assert all(OCCURRENCE not in r for r in records), "the ledger's row ids are not output"
    model, tok = embedded
    for record in records:
        if record["prompt"] == marker:
            assert "worker process died" in record["error"] and record["token_ids"] is None, record
            continue
        ids = tok([record["prompt"]], return_tensors="pt")
        alone = ferrogen.generate(model, **ids, max_new_tokens=8)[0, ids["input_ids"].shape[1]:]
        assert record["error"] is None and record["text"] == tok.decode(alone, skip_special_tokens=True), record
    # each block of 4 died twice (first try, one retry), then its poisoned half, then the row alone
    assert len(deaths.read_text().split()) == 2 * (2 + 1 + 1)


@needs_ray
@pytest.mark.parametrize("rows", [1, 2], ids=["one-row", "two-rows"])
def test_identical_batches_at_once_are_not_each_others_deaths(ray_session, rows):
    """Two actors generating identical batches at the same time (deterministically: the second
    batch runs while the first one's attempt is in flight), with ``batch_retries=0``. Keyed by
    the batches' contents, the second took the first's record for a death: its two rows were
    split (each generated alone), its single row came back with ``error``."""
    pa = pytest.importorskip("pyarrow", reason="pyarrow is installed with ray[data]")
    ledger = ray.remote(num_cpus=0)(AttemptLedger).remote()
    # two blocks of the dataset, each a table of its own as Ray hands an actor its block
    first, second = (number_occurrences(pa.table({"prompt": ["Jesus wept"] * rows})) for _ in range(2))
    calls: list[int] = []
    inner: list = []

    class Recording(fd.BatchGenerator):
        def _generate_rows(self, rows):
            calls.append(len(rows))
            if len(calls) == 1:  # the first batch: the other actor's identical batch runs meanwhile
                inner.append(other(second))
            return super()._generate_rows(rows)

    options = dict(generation_config=ferrogen.GenerationConfig(**BASE), ledger=ledger, batch_retries=0)
    other = Recording(**options)
    outer = Recording(**options)(first).to_pylist()
    assert calls == [rows, rows], "each batch generated whole (neither split, nor lost as a death)"
    for out in (outer, inner[0].to_pylist()):
        assert [r["error"] for r in out] == [None] * rows and OCCURRENCE not in out[0]
        assert out[0]["token_ids"] == outer[0]["token_ids"]
    with pytest.raises(KeyError, match=f"ledger: .*number_occurrences .*{OCCURRENCE}"):
        other(first.drop_columns([OCCURRENCE]))
