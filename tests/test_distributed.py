"""ferrogen.distributed: per-row seeds, and generation on a local Ray instance (2 CPUs, 2 actors).

The Ray tests share one Ray instance started in this process (loopback only, no dashboard,
100 MB object store) and stopped by the fixture's finaliser. Each job runs under a deadline
so that a hang fails the test instead of the suite. They skip only when Ray cannot be
imported (``scripts/setup.sh`` installs it wherever PyPI has a wheel for the platform).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import ferrogen
import ferrogen.engine
from ferrogen import distributed as fd
from ferrogen.cli import main as cli_main

try:
    import ray
    import ray.data

    RAY_MISSING = None
except ImportError as exc:  # only where no Ray wheel exists for this platform
    RAY_MISSING = f"Ray Data cannot be imported here ({exc}); scripts/setup.sh installs it where PyPI has a wheel"

needs_ray = pytest.mark.skipif(RAY_MISSING is not None, reason=RAY_MISSING or "")

SEED = 1234
BASE = dict(max_new_tokens=8, seed=SEED)
SAMPLING = dict(do_sample=True, top_k=20, temperature=0.9)
HEADS = ["And God said", "In the beginning", "The LORD", "Jesus wept", "And the king", "Blessed are the",
         "Thou shalt", "And it came to pass"]
TAILS = ["unto Moses", "that", "in the land of", "and the people", "for ever", "the son of David", "and",
         "all the host of heaven and the earth", "in Jerusalem", "saying", "O Israel", "before the LORD",
         "and they", "of the children of", "upon the", "which is", "by the", "to the", "I am", "therefore"]
BAD_LINES = {
    201: ("not json", "invalid JSON"),
    202: ('{"prompt": ""}', "prompt: expected a non-empty string"),
    203: ('{"prompt": "Jesus wept", "top_p": 7}', "top_p"),
    204: ('{"prompt": "Jesus wept", "no_such_field": 1}', "no_such_field"),
}


def good_lines() -> list[tuple[int, str, dict]]:
    """200 prompts (the last 40 repeat earlier ones): even lines greedy, odd lines sampled,
    every fifth sampled line with two return sequences."""
    lines = []
    for i in range(200):
        j = i if i < 160 else i - 160
        prompt = f"{HEADS[j % 8]} {TAILS[j // 8]}"
        overrides = {} if i % 2 == 0 else dict(SAMPLING, **({"num_return_sequences": 2} if i % 10 == 3 else {}))
        lines.append((i + 1, prompt, overrides))
    return lines


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ray") / "prompts.jsonl"
    with open(path, "w") as out:
        for _, prompt, overrides in good_lines():
            out.write(json.dumps({"prompt": prompt, **overrides}) + "\n")
        for number in sorted(BAD_LINES):
            out.write(BAD_LINES[number][0] + "\n")
    return path


@pytest.fixture(scope="module")
def embedded():
    model, tok = ferrogen.text.load_model(ferrogen.embedded_model_path())
    tok.padding_side = "left"
    return model, tok


@pytest.fixture(scope="module")
def reference(embedded, jsonl) -> dict[tuple[int, int], dict]:
    """Single-process ferrogen.generate, one call per distinct override set, every row with its
    seed row_seed(SEED, row_key(row)): (line, sequence index) -> record."""
    model, tok = embedded
    groups: dict[str, list[tuple[int, str]]] = {}
    for number, prompt, overrides in good_lines():
        groups.setdefault(json.dumps(overrides, sort_keys=True), []).append((number, prompt))
    expected = {}
    for key, rows in groups.items():
        config = ferrogen.GenerationConfig(**BASE).merged(**json.loads(key))
        seeds = [fd.row_seed(SEED, fd.row_key({"file": jsonl.name, "line": n, "prompt": p})) for n, p in rows]
        enc = tok([p for _, p in rows], return_tensors="pt", padding=True)
        out = ferrogen.generate(model, **enc, generation_config=config, row_seeds=seeds,
                                return_dict_in_generate=True, output_scores=True)
        logp = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        width, copies = enc["input_ids"].shape[1], config.num_return_sequences
        for r, seq in enumerate(out.sequences.tolist()):
            new, reason = seq[width:], out.finish_reasons[r]
            while new and new[-1] == tok.pad_token_id and reason != "length":
                new.pop()
            expected[(rows[r // copies][0], r % copies)] = dict(
                text=tok.decode(new, skip_special_tokens=True), token_ids=new, finish_reason=reason,
                scores=logp[r, : len(new)].tolist(),
            )
    return expected


def test_row_seeds_sample_as_if_each_prompt_were_alone(embedded):
    model, tok = embedded
    prompts = ["And God said", "Jesus wept", "And God said", "In the beginning God created"]
    seeds = [5, 2**64 - 1, 7, 0]
    kwargs = dict(max_new_tokens=8, do_sample=True, top_k=20, num_return_sequences=2)
    batch = ferrogen.generate(model, **tok(prompts, return_tensors="pt", padding=True), row_seeds=seeds, **kwargs)
    width = batch.shape[1] - 8
    for i, (prompt, seed) in enumerate(zip(prompts, seeds)):
        alone = ferrogen.generate(model, **tok([prompt], return_tensors="pt"), seed=seed, **kwargs)
        assert batch[2 * i : 2 * i + 2, width:].tolist() == alone[:, -8:].tolist(), prompt
    assert batch[0].tolist() != batch[4].tolist(), "a repeated prompt with another seed samples differently"


@pytest.mark.parametrize("seeds", [[1], [1, 2, 3], [1, -1], [1, 2**64], [1, "2"]])
def test_row_seeds_are_checked(embedded, seeds):
    model, tok = embedded
    with pytest.raises(ValueError, match="row_seeds"):
        ferrogen.generate(model, **tok(["a b", "c d"], return_tensors="pt", padding=True), row_seeds=seeds,
                          do_sample=True, max_new_tokens=2)


def test_row_seed_and_key_are_stable():
    # Pinned: a change here changes every distributed sample ever drawn.
    assert fd.row_seed(7, '"q7"') == 9283207679131700299
    assert fd.row_key({"file": "a.jsonl", "line": 3, "prompt": "Jesus wept", "x": 1}) == '["a.jsonl", 3, "Jesus wept"]'
    assert fd.row_key({"id": 9, "line": 3, "prompt": "p"}, key_column="id") == "9"
    with pytest.raises(ValueError, match="key_column"):
        fd.row_key({"prompt": "p"})


def test_import_ferrogen_does_not_import_ray():
    code = "import sys, ferrogen, ferrogen.cli; assert 'ray' not in sys.modules, 'ray imported'"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_cli_ray_needs_an_input_file(capsys):
    assert cli_main(["generate", "--prompt", "a", "--ray"]) == 2
    assert "--ray" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ Ray


@contextlib.contextmanager
def deadline(seconds: int):
    """Fails the test (TimeoutError) instead of hanging when a Ray job stalls."""

    def expire(*_):
        raise TimeoutError(f"Ray job still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def ray_session():
    if RAY_MISSING:
        pytest.skip(RAY_MISSING)
    with deadline(120):
        ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20,
                 log_to_driver=False, configure_logging=False, _node_ip_address="127.0.0.1")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    yield
    ray.shutdown()


def crash_once_class(marker: Path, line: int):
    """A BatchGenerator whose process dies (after generating, before returning) on the first
    batch holding ``line``; defined in a function so Ray pickles it by value."""

    class CrashOnce(fd.BatchGenerator):
        def __call__(self, batch):
            out = super().__call__(batch)
            if line in batch.column("line").to_pylist() and not marker.exists():
                marker.write_text(str(os.getpid()))
                os._exit(1)
            return out

    return CrashOnce


@pytest.fixture(scope="module")
def job(ray_session, jsonl, tmp_path_factory):
    """One job over the 204 lines with 2 actors, blocks of 24 rows run 8 at a time (with
    scores, refilled by the batch engine), one actor dying in the middle of the block holding line 100
    (actor start-up dominates the time on a small machine, so the two tests below share it):
    (records, crash marker)."""
    marker = tmp_path_factory.mktemp("crash") / "crashed"
    with deadline(300):
        out = fd.generate_dataset(fd.read_jsonl(jsonl, rows_per_block=64), generation_config=BASE, batch_size=8,
                                  block_size=24, concurrency=2, generator_class=crash_once_class(marker, line=100))
        return list(fd.iter_records(out)), marker


def check_every_row_once(records, reference):
    keys = Counter((r["line"], r["sequence_index"]) for r in records)
    duplicated = [k for k, n in keys.items() if n > 1]
    assert not duplicated, f"rows returned more than once: {duplicated[:5]}"
    assert set(keys) == set(reference) | {(n, 0) for n in BAD_LINES}, "rows lost or invented"
    for record in records:
        key = (record["line"], record["sequence_index"])
        if record["line"] in BAD_LINES:
            assert BAD_LINES[record["line"]][1] in record["error"] and record["token_ids"] is None, record
            continue
        want = reference[key]
        assert record["error"] is None, record
        got = {name: record[name] for name in ("text", "token_ids", "finish_reason")}
        assert got == {name: want[name] for name in got}, f"line {key}: {got} != {want}"
        assert record["scores"] == pytest.approx(want["scores"], abs=1e-4)
        assert record["sequence_score"] == pytest.approx(sum(want["scores"]), abs=1e-3)


@needs_ray
def test_two_actors_return_every_row_once_as_single_process(job, reference):
    records, _ = job
    check_every_row_once(records, reference)
    assert {r["prompt"] for r in records if r["line"] <= 200} == {p for _, p, _ in good_lines()}
    sampled = {r["line"]: r["token_ids"] for r in records if r["line"] in (4, 164) and r["sequence_index"] == 0}
    assert sampled[4] != sampled[164], "one prompt on two lines: two seeds"


@needs_ray
def test_a_dead_actor_is_restarted_and_no_row_is_lost_or_repeated(job, reference):
    records, marker = job
    assert marker.exists() and int(marker.read_text()) != os.getpid(), "the injected crash did not happen"
    check_every_row_once(records, reference)


@needs_ray
def test_cli_ray_matches_the_cli_on_greedy_lines(ray_session, tmp_path, capsys, monkeypatch):
    """--ray: the records of the CLI without Ray, in input order; by default one block of 4
    batches (the 14 lines: one Ray call) through the engine's refilling loop, and with
    --block-size 4 --refill-fraction 0.75 blocks of 4 lines, 3 prefilled at a time."""
    src = tmp_path / "in.jsonl"
    lines = [json.dumps({"prompt": f"{h} {t}"}) for h in HEADS[:3] for t in TAILS[:4]]
    src.write_text("\n".join(lines[:5] + ["not json", '{"prompt": "x", "top_p": 7}'] + lines[5:]) + "\n")
    real = fd.job.generate_dataset
    outputs, calls = {}, {}
    for name, extra in (("plain", []), ("ray", ["--ray"]), ("ray-blocks", ["--ray", "--block-size", "4",
                                                                            "--refill-fraction", "0.75"])):
        log = tmp_path / f"{name}.calls"
        monkeypatch.setattr(fd.job, "generate_dataset",
                            functools.partial(real, generator_class=recording_class(log)))
        dst = tmp_path / f"{name}.jsonl"
        with deadline(240):
            code = cli_main(["generate", "--input", str(src), "--output", str(dst), "--max-new-tokens", "6",
                             "--batch-size", "4", "--strict", *extra])
        assert code == 1, capsys.readouterr().err
        outputs[name] = [json.loads(line) for line in dst.read_text().splitlines()]
        calls[name] = calls_of(log) if log.exists() else []
    by_line = {name: sorted(recs, key=lambda r: r["line"]) for name, recs in outputs.items()}
    assert by_line["ray"] == by_line["plain"] and by_line["ray-blocks"] == by_line["plain"]
    assert [r["line"] for r in outputs["ray"]] == list(range(1, 15)), "--ray writes in input order"
    assert "line 6: invalid JSON" in capsys.readouterr().err
    assert calls["plain"] == [] and calls["ray"] == [{"rows": 14, "runs": [[12, 4, engine_refill_fraction()]]}], calls
    blocks = calls["ray-blocks"]
    assert sorted(c["rows"] for c in blocks) == [2, 4, 4, 4], blocks
    assert all(run[1:] == [4, 0.75] for c in blocks for run in c["runs"]), blocks


@needs_ray
def test_parquet_reader_numbers_rows_and_writers_round_trip(ray_session, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": ["a", "b", "c", "d", "e"], "prompt": ["p1", "p2", "p3", "p4", "p5"]})
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=2)
    with deadline(120):
        rows = sorted(fd.read_parquet(tmp_path / "in.parquet").take_all(), key=lambda r: r["row"])
        assert [(r["id"], r["row"], r["file"]) for r in rows] == [(x, i, "in.parquet") for i, x in enumerate("abcde")]
        ds = ray.data.from_arrow(table)
        fd.write_parquet(ds, tmp_path / "out.parquet")
        fd.write_jsonl(ds, tmp_path / "out.jsonl")
        fd.write_parquet(ds, tmp_path / "dir")
    assert pq.read_table(tmp_path / "out.parquet").to_pylist() == table.to_pylist()
    assert [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()] == table.to_pylist()
    assert sorted(r["id"] for r in pq.read_table(tmp_path / "dir").to_pylist()) == list("abcde")


def test_batch_generator_outputs_errors_and_key_column_seeds(embedded):
    pa = pytest.importorskip("pyarrow", reason=RAY_MISSING or "pyarrow is installed with ray[data]")
    gen = fd.BatchGenerator(generation_config=ferrogen.GenerationConfig(**BASE, **SAMPLING), key_column="id",
                            overrides_column="overrides")
    batch = pa.table({
        "id": ["a", "b", "c", "d"],
        "prompt": ["Jesus wept", None, "The LORD", "Jesus wept"],
        "overrides": [None, None, '{"num_return_sequences": 2}', '{"temperature": -1}'],
        "text": ["an input column named like an output is replaced"] * 4,
    })
    out = gen(batch).to_pylist()
    assert [(r["id"], r["sequence_index"]) for r in out] == [("a", 0), ("b", 0), ("c", 0), ("c", 1), ("d", 0)]
    assert out[1]["error"].startswith("prompt") and out[4]["error"].startswith("temperature")
    model, tok = embedded
    for record, prompt, key in ((out[0], "Jesus wept", '"a"'), (out[2], "The LORD", '"c"')):
        alone = ferrogen.generate(model, **tok([prompt], return_tensors="pt"), return_dict_in_generate=True,
                                  output_scores=True, **{**BASE, **SAMPLING, "seed": fd.row_seed(SEED, key)},
                                  num_return_sequences=2 if key == '"c"' else 1)
        assert record["token_ids"] == alone.sequences[0, -len(record["token_ids"]):].tolist()
        assert record["text"] == tok.decode(record["token_ids"], skip_special_tokens=True)
        assert record["finish_reason"] == alone.finish_reasons[0] and len(record["scores"]) == len(record["token_ids"])
    assert gen(batch.slice(0, 1)).to_pylist()[0]["token_ids"] == out[0]["token_ids"], "independent of the batch"
    schema = gen(batch).schema
    assert str(schema.field("token_ids").type) == "list<item: int64>" and str(schema.field("error").type) == "string"


def test_only_sampling_needs_a_row_key(embedded):
    pa = pytest.importorskip("pyarrow", reason=RAY_MISSING or "pyarrow is installed with ray[data]")
    greedy = fd.BatchGenerator(generation_config=ferrogen.GenerationConfig(max_new_tokens=6))
    batch = pa.table({"prompt": ["Jesus wept", "The LORD"], "overrides": [None, '{"do_sample": true}']})
    out = greedy(batch).to_pylist()  # no key column, no line or row numbers
    model, tok = embedded
    alone = ferrogen.generate(model, **tok(["Jesus wept"], return_tensors="pt"), max_new_tokens=6)
    assert out[0]["error"] is None and out[0]["token_ids"] == alone[0, -6:].tolist()
    assert out[1]["error"].startswith("key_column") and "do_sample" in out[1]["error"], out[1]
    sampling = fd.BatchGenerator(generation_config=ferrogen.GenerationConfig(max_new_tokens=6, do_sample=True))
    with pytest.raises(ValueError, match="key_column: .*sampling .*greedy and beam search need no key"):
        sampling(batch)


# ------------------------------------------- a block larger than the batch, through the batch engine

BLOCK = [f"{HEADS[i % 8]} {TAILS[(7 * i) % 20]}" for i in range(11)]  # 11 rows of 3 to 12 tokens


def watch_engine(gen, monkeypatch) -> dict:
    """Records the largest batch the model ran and whether the engine took its refilling path."""
    import ferrogen.engine

    seen = {"rows": 0, "continuous": 0}
    model, forward, feed = gen.text.model, gen.text.model.forward, ferrogen.engine.run_continuous_texts

    @functools.wraps(forward)  # the adapter reads the forward's signature (position_ids, cache)
    def watched(*a, **kw):
        ids = kw.get("input_ids", a[0] if a else None)
        seen["rows"] = max(seen["rows"], int(ids.shape[0]))
        return forward(*a, **kw)

    def counted(*a, **kw):
        seen["continuous"] += 1
        return feed(*a, **kw)

    monkeypatch.setattr(model, "forward", watched)
    monkeypatch.setattr(ferrogen.engine, "run_continuous_texts", counted)
    return seen


@pytest.mark.parametrize("rows", [11, 3], ids=["block-of-11", "block-of-3"])
@pytest.mark.parametrize("sampling", [False, True], ids=["greedy", "sampled"])
def test_a_block_runs_through_the_engine_as_generate_texts(embedded, monkeypatch, sampling, rows):
    """A block of 11 rows with a running batch of 4 (and a block of 3, under the batch): the
    engine's continuous batching, each row's tokens those of generate_texts with the row's seed
    and those of the default (with scores, also refilled: tests/test_distributed_scores.py)."""
    pa = pytest.importorskip("pyarrow", reason=RAY_MISSING or "pyarrow is installed with ray[data]")
    config = ferrogen.GenerationConfig(**BASE, **(SAMPLING if sampling else {}))
    block = pa.table({"id": [f"r{i}" for i in range(rows)], "prompt": BLOCK[:rows]})
    engine = fd.BatchGenerator(generation_config=config, key_column="id", batch_size=4, output_scores=False)
    seen = watch_engine(engine, monkeypatch)
    out = engine(block).to_pylist()
    assert [r["id"] for r in out] == block.column("id").to_pylist(), "the block's order"
    assert seen["rows"] <= 4 and seen["continuous"] == 1, seen
    seeds = [fd.row_seed(SEED, f'"r{i}"') for i in range(rows)] if sampling else None
    alone = ferrogen.engine.generate_texts(engine.text, BLOCK[:rows], 4, generation_config=config,
                                           **({"row_seeds": seeds} if sampling else {}))
    assert [(r["token_ids"], r["text"], r["finish_reason"]) for r in out] == [
        (a.token_ids, a.text, a.finish_reason) for a in alone]
    assert all(r["scores"] is None and r["sequence_score"] is None and r["error"] is None for r in out)
    scored = fd.BatchGenerator(generation_config=config, key_column="id", batch_size=4)(block).to_pylist()
    assert [r["token_ids"] for r in scored] == [r["token_ids"] for r in out]
    assert all(len(r["scores"]) == len(r["token_ids"]) for r in scored)


def test_a_block_keeps_overrides_errors_and_return_sequences(embedded):
    pa = pytest.importorskip("pyarrow", reason=RAY_MISSING or "pyarrow is installed with ray[data]")
    overrides = [None, '{"num_return_sequences": 2}', '{"temperature": -1}', None, '{"do_sample": false}', None]
    block = pa.table({"id": list("abcdef"), "prompt": BLOCK[:6], "overrides": overrides})
    config = ferrogen.GenerationConfig(**BASE, **SAMPLING)
    out = fd.BatchGenerator(generation_config=config, key_column="id", batch_size=2, output_scores=False)(block)
    rows = out.to_pylist()
    assert [(r["id"], r["sequence_index"]) for r in rows] == [
        ("a", 0), ("b", 0), ("b", 1), ("c", 0), ("d", 0), ("e", 0), ("f", 0)]
    assert rows[3]["error"].startswith("temperature") and rows[3]["token_ids"] is None
    scored = fd.BatchGenerator(generation_config=config, key_column="id", batch_size=2)(block).to_pylist()
    assert [(r["token_ids"], r["finish_reason"]) for r in rows] == [(r["token_ids"], r["finish_reason"]) for r in scored]


@pytest.mark.parametrize("scored", [False, True], ids=["engine", "scored"])
@pytest.mark.parametrize("strategy", [{}, dict(num_beams=2)], ids=["greedy", "beam"])
def test_a_block_tokenizes_each_prompt_once(embedded, tokenized, scored, strategy):
    """The group's ids (read for the empty-prompt check and the length order) are the ones the
    engine (or the scored path's generate calls) runs: each prompt is tokenized once, and each
    row is what the prompt gives alone; with scores, its ``sequence_score`` is the sum of its
    per-token scores, or beam search's own (length-penalized) score."""
    pa = pytest.importorskip("pyarrow", reason=RAY_MISSING or "pyarrow is installed with ray[data]")
    config = ferrogen.GenerationConfig(**BASE, **strategy)
    block = pa.table({"id": [f"r{i}" for i in range(7)], "prompt": BLOCK[:7]})
    gen = fd.BatchGenerator(generation_config=config, key_column="id", batch_size=3, output_scores=scored)
    seen = tokenized(gen.text.tokenizer)
    rows = gen(block).to_pylist()
    assert seen == BLOCK[:7]
    for row, prompt in zip(rows, BLOCK[:7]):
        alone = gen.text(prompt, generation_config=config)[0]
        assert (row["token_ids"], row["text"], row["finish_reason"]) == (
            alone.token_ids, alone.text, alone.finish_reason), prompt
        if scored and strategy:
            model, tok = embedded
            beam = ferrogen.generate(model, **tok([prompt], return_tensors="pt"), generation_config=config,
                                     return_dict_in_generate=True, output_scores=True)
            assert row["sequence_score"] == pytest.approx(float(beam.sequences_scores[0]), abs=1e-4), prompt
            assert row["sequence_score"] != pytest.approx(sum(row["scores"]), abs=1e-3), "length-penalized"
        elif scored:
            assert row["sequence_score"] == sum(row["scores"]), prompt


@pytest.mark.parametrize("sizes, match", [
    (dict(batch_size=0), "batch_size: expected an int >= 1"),
    (dict(batch_size=None), "batch_size: expected an int >= 1"),
    (dict(batch_size=8, block_size=4), r"block_size: expected an int >= batch_size \(8\), got 4"),
    (dict(batch_size=8, block_size=16.0), "block_size"),
    (dict(batch_size=8, block_size=True), "block_size"),
    (dict(batch_size=8, refill_fraction=0), r"refill_fraction: expected a number in \(0, 1\]"),
    (dict(batch_size=8, output_scores=False, refill_fraction=0), r"refill_fraction: expected a number in \(0, 1\]"),
    (dict(batch_size=8, output_scores=False, refill_fraction=True), "refill_fraction: expected a number"),
])
@needs_ray
def test_batch_and_block_sizes_are_checked_before_ray_runs(sizes, match):
    with pytest.raises(ValueError, match=match):
        fd.generate_dataset(None, **sizes)
    if sizes["batch_size"] is not None:
        with pytest.raises(ValueError, match="batch_size"):
            fd.BatchGenerator(batch_size=0)
    if "refill_fraction" in sizes:
        with pytest.raises(ValueError, match=match):
            fd.BatchGenerator(**sizes)


def recording_class(log: Path):
    """A BatchGenerator that appends, per Ray call, the block's rows and the engine's refilling
    runs in it (rows, running batch size, refill_fraction) to ``log`` as a JSON line; defined in
    a function so that Ray pickles it by value."""

    class Recording(fd.BatchGenerator):
        def __init__(self, *args, **kwargs):
            from ferrogen import engine  # imported here: the package module does not pickle

            super().__init__(*args, **kwargs)
            self.runs: list = []
            feed = engine.run_continuous_texts

            def counted(generator, prompts, ids, order, seeds, batch_size, refill_fraction, *a, **kw):
                self.runs.append([len(prompts), batch_size, refill_fraction])
                return feed(generator, prompts, ids, order, seeds, batch_size, refill_fraction, *a, **kw)

            engine.run_continuous_texts = counted  # this actor's process only

        def __call__(self, batch):
            self.runs = []
            out = super().__call__(batch)
            with open(log, "a") as handle:
                handle.write(json.dumps({"rows": batch.num_rows, "runs": self.runs}) + "\n")
            return out

    return Recording


def calls_of(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def engine_refill_fraction() -> float:
    """The batch engine's default ``refill_fraction`` (what a Ray job without one runs with)."""
    import inspect

    return inspect.signature(ferrogen.engine.generate_texts).parameters["refill_fraction"].default


@needs_ray
def test_ray_blocks_refill_by_default_with_the_tokens_of_generate_texts(ray_session, embedded, tmp_path):
    """Through Ray with the default block and scores (4 batches of 4: blocks of 16 rows and one
    of 2, under the batch), greedy and sampled rows (overrides column): each block of 16 goes
    through the engine's refilling loop, and every row has the tokens of generate_texts alone
    with its seed, and the tokens and scores of the old default (a block of one batch per Ray
    call, each batch one generate call: equal up to the batch-shape effect on this machine's
    GEMMs, ~1e-6)."""
    prompts = [f"{HEADS[i % 8]} {TAILS[(3 * i) % 20]}" for i in range(18)]
    sampled = dict(SAMPLING, do_sample=True)
    items = [{"id": i, "prompt": p, "overrides": json.dumps(sampled) if i % 3 == 1 else None}
             for i, p in enumerate(prompts)]
    log = tmp_path / "calls.jsonl"
    with deadline(240):
        out = fd.generate_dataset(ray.data.from_items(items), generation_config=BASE, key_column="id",
                                  batch_size=4, concurrency=1, generator_class=recording_class(log))
        records = {r["id"]: r for r in out.take_all()}
    calls = calls_of(log)
    assert sorted(c["rows"] for c in calls) == [2, 16], calls
    for call in calls:  # greedy and sampled rows: a group each, each through the refilling loop
        assert sum(run[0] for run in call["runs"]) == call["rows"], call
        assert all(run[1:] == [4, engine_refill_fraction()] for run in call["runs"]), call
    assert max(run[0] for call in calls for run in call["runs"]) > 4, "no group larger than the batch"
    gen = ferrogen.text.TextGenerator(*embedded)
    for overrides in ({}, sampled):
        rows = [item for item in items if bool(item["overrides"]) == bool(overrides)]
        config = ferrogen.GenerationConfig(**BASE).merged(**overrides)
        seeds = {"row_seeds": [fd.row_seed(SEED, str(item["id"])) for item in rows]} if overrides else {}
        alone = ferrogen.engine.generate_texts(gen, [item["prompt"] for item in rows], 4, generation_config=config,
                                               **seeds)
        assert [records[item["id"]]["token_ids"] for item in rows] == [a.token_ids for a in alone], overrides
    pa = pytest.importorskip("pyarrow")
    old = StaticBatches(generation_config=ferrogen.GenerationConfig(**BASE), key_column="id", batch_size=4)
    table = pa.Table.from_pylist(items)
    before = [r for start in range(0, 18, 4) for r in old(table.slice(start, 4)).to_pylist()]
    assert [r["token_ids"] for r in before] == [records[i]["token_ids"] for i in range(18)]
    for i, want in enumerate(before):
        got = records[i]
        assert len(got["scores"]) == len(got["token_ids"]) and got["sequence_score"] == sum(got["scores"]), got
        assert got["scores"] == pytest.approx(want["scores"], abs=1e-5), i


class StaticBatches(fd.BatchGenerator):
    """The Ray path before the engine kept scores: each batch one generate call."""

    engine_options = {"static": True}
