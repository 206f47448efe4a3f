"""Per-token scores through the batch engine's refilling loop (issue 19): the Ray path's default
(``output_scores=True``) refills, and every record's ``scores`` and ``sequence_score`` are those
the static path (one ``generate`` call per length-sorted batch, what the Ray path ran before)
gives the same row, for greedy search and seeded sampling on tiny GPT-2 and T5 models.

On a machine whose GEMMs are bit-invariant to the batch's shape the values are equal bit for
bit in any batch; where they are not (this session's AMD EPYC: a row's logits move by ~1e-6
between batch shapes), rows that run alone in both paths (``batch_size=1``: each refill is
then the prompt alone) are compared bit for bit, and batches of 4 within a tolerance, their
tokens exactly.
"""

from __future__ import annotations

import json
import warnings

import pytest

import ferrogen
import ferrogen.engine
from ferrogen import distributed as fd

from architectures import build
from test_engine_continuous import LENGTHS, STOPS, DigitsTokenizer, _prompts

pa = pytest.importorskip("pyarrow", reason="pyarrow is installed with ray[data]")

SETTINGS = {
    "greedy": dict(do_sample=False),
    "sample": dict(do_sample=True, seed=5, top_k=20, temperature=1.3),
    "penalties": dict(do_sample=True, seed=5, repetition_penalty=1.3, top_p=0.9),
}
#: |engine - static| per token in batches of 4 on a machine whose GEMMs depend on the batch's
#: shape: logits move by ~1e-6 there (worst measured on the AMD EPYC: 9.5e-7); a score taken at a
#: wrong step or before the processors moves by far more than this.
ATOL = 1e-5


class _Static(fd.BatchGenerator):
    """The static path: each length-sorted batch one ``generate`` call (``engine_options``)."""

    engine_options = {"static": True}


@pytest.fixture(scope="module")
def models(one_torch_thread):
    return {name: ferrogen.TextGenerator(build(name), DigitsTokenizer()) for name in ("gpt2", "t5")}


def _generator(cls: type, text: ferrogen.TextGenerator, settings: dict, batch_size: int) -> fd.BatchGenerator:
    """A BatchGenerator (of the embedded model, swapped for the tiny ``text``) keyed by ``id``."""
    config = ferrogen.GenerationConfig(max_new_tokens=10, eos_token_id=STOPS, pad_token_id=0, **settings)
    gen = cls(generation_config=config, key_column="id", batch_size=batch_size)
    gen.text = text
    return gen


def _records(gen: fd.BatchGenerator, block: "pa.Table") -> list[dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gen(block).to_pylist()


def _watch_refills(monkeypatch) -> list[int]:
    """The rows of every run of the engine's refilling loop."""
    runs: list[int] = []
    real = ferrogen.engine.run_continuous_texts

    def counted(generator, prompts, *a, **kw):
        runs.append(len(prompts))
        return real(generator, prompts, *a, **kw)

    monkeypatch.setattr(ferrogen.engine, "run_continuous_texts", counted)
    return runs


def _block(lengths: list[int]) -> "pa.Table":
    return pa.table({"id": [f"r{i}" for i in range(len(lengths))], "prompt": _prompts(lengths)})


@pytest.mark.parametrize("strategy", list(SETTINGS))
@pytest.mark.parametrize("name", ["gpt2", "t5"])
def test_scores_of_refilled_rows_are_those_of_rows_alone_bit_for_bit(models, name, strategy, monkeypatch):
    """batch_size=1: the engine refills its one slot prompt after prompt (one refilling run for
    the block); the static path runs each prompt alone. Same rows, same shapes: equal bits."""
    block = _block(LENGTHS)
    runs = _watch_refills(monkeypatch)
    engine = _records(_generator(fd.BatchGenerator, models[name], SETTINGS[strategy], 1), block)
    assert runs == [len(LENGTHS)], runs
    static = _records(_generator(_Static, models[name], SETTINGS[strategy], 1), block)
    assert runs == [len(LENGTHS)], "the static path does not refill"
    assert [r["id"] for r in engine] == block.column("id").to_pylist(), "the block's order"
    for got, want in zip(engine, static):
        assert (got["token_ids"], got["finish_reason"]) == (want["token_ids"], want["finish_reason"]), got["id"]
        assert got["scores"] == want["scores"] and got["sequence_score"] == want["sequence_score"], got["id"]
        assert len(got["scores"]) == len(got["token_ids"]) and got["error"] is None


@pytest.mark.parametrize("strategy", list(SETTINGS))
@pytest.mark.parametrize("name", ["gpt2", "t5"])
def test_scores_of_refilled_batches_match_the_static_batches(models, name, strategy, monkeypatch):
    """batch_size=4, a quarter prefilled at a time: many refills in one run; every row's tokens
    those of the static batches, its scores theirs within the batch-shape tolerance."""
    block = _block(LENGTHS * 2)
    runs = _watch_refills(monkeypatch)
    gen = _generator(fd.BatchGenerator, models[name], SETTINGS[strategy], 4)
    gen.refill = {"refill_fraction": 0.25}
    engine = _records(gen, block)
    assert runs == [2 * len(LENGTHS)], runs
    static = _records(_generator(_Static, models[name], SETTINGS[strategy], 4), block)
    worst = 0.0
    for got, want in zip(engine, static):
        assert (got["token_ids"], got["finish_reason"]) == (want["token_ids"], want["finish_reason"]), got["id"]
        assert len(got["scores"]) == len(want["scores"]) == len(got["token_ids"]), got["id"]
        worst = max([worst, abs(got["sequence_score"] - want["sequence_score"])]
                    + [abs(a - b) for a, b in zip(got["scores"], want["scores"])])
        assert got["scores"] == pytest.approx(want["scores"], abs=ATOL), got["id"]
        assert got["sequence_score"] == pytest.approx(want["sequence_score"], abs=ATOL), got["id"]
    print(f"{name} {strategy}: worst |engine - static| {worst:.3g}")


def test_scores_come_from_the_processed_logits_of_the_right_step(models):
    """A record's scores are the log-softmax of each step's processed logits at the chosen token,
    checked against ``generate`` alone with ``output_scores`` (top-k: filtered tokens at -inf,
    so a score before the warpers differs): what the static path computes too."""
    import torch

    from ferrogen.outputs import token_logprobs

    text = models["gpt2"]
    settings = SETTINGS["sample"]
    gen = _generator(fd.BatchGenerator, text, settings, 2)
    block = _block(LENGTHS[:5])
    for record, prompt in zip(_records(gen, block), block.column("prompt").to_pylist()):
        ids = torch.tensor([[int(t) for t in prompt.split()]])
        config = gen.config.merged(seed=fd.row_seed(5, json.dumps(record["id"])))
        out = ferrogen.generate(text.model, input_ids=ids, generation_config=config, return_dict_in_generate=True,
                                output_scores=True)
        want = token_logprobs(out, ids.shape[1])[0][: len(record["token_ids"])]
        assert record["scores"] == pytest.approx(want, abs=ATOL), record["id"]


def test_refill_fraction_is_accepted_with_scores_and_checked():
    """With scores (the default) rows refill, so refill_fraction applies; blocks are 4 batches."""
    gen = fd.BatchGenerator(batch_size=8, refill_fraction=0.75)
    assert gen.output_scores and gen.refill == {"refill_fraction": 0.75}
    for bad in (0, True):
        with pytest.raises(ValueError, match="refill_fraction: expected a number"):
            fd.BatchGenerator(batch_size=8, refill_fraction=bad)
    assert fd.job.default_block_size(8) == fd.job.DEFAULT_BLOCK_BATCHES * 8
