"""The batch engine (issue 19): finished rows leave the running batch, prompts run in length
order, and every row's result is the one it has in a static batch and alone."""

from __future__ import annotations

import warnings

import pytest
import torch

import ferrogen
from ferrogen.engine import length_order, prompt_seeds
from ferrogen.strategies.running_rows import EngineHooks

from architectures import build, padded_batch

# EOS ids of the tests that do not pick them from a model's own output.
STOPS = list(range(3, 96, 6))
LENGTHS = (5, 3, 7, 2, 6, 4)
MODELS = ["gpt2", "llama", "mistral", "mamba", "t5", "bart"]
STRATEGIES = {
    "greedy": dict(do_sample=False),
    "sample": dict(do_sample=True, top_k=20, temperature=1.3),
    "penalties": dict(do_sample=True, repetition_penalty=1.3, no_repeat_ngram_size=2, top_p=0.9),
}


@pytest.fixture(scope="module")
def models(one_torch_thread):
    return {name: build(name) for name in MODELS}


def _run(model, ids, mask, settings, hooks=None, seeds=None, eos=STOPS):
    seeding = {"row_seeds": seeds} if settings.get("do_sample") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = ferrogen.generate(model, input_ids=ids, attention_mask=mask, max_new_tokens=12, eos_token_id=eos,
                                pad_token_id=0, return_dict_in_generate=True, _engine=hooks, **seeding, **settings)
    return out


def _ending_tokens(out, start):
    """EOS ids that end rows at different steps: every other row's token at step 1 + row % 5 (its
    tokens before that are the same with these EOS ids: no processor here reads them)."""
    return sorted({int(out.sequences[row, start + 1 + row % 5]) for row in range(0, out.sequences.shape[0], 2)})


def _new_tokens(out, row, prompt_width, encoder_decoder):
    new = out.sequences[row, 1 if encoder_decoder else prompt_width:].tolist()
    while new and new[-1] == 0 and out.finish_reasons[row] != "length":
        new.pop()
    return new


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("name", MODELS)
def test_dropping_finished_rows_keeps_every_row_exact(models, name, strategy):
    model = models[name]
    enc_dec = model.config.is_encoder_decoder
    ids, mask = padded_batch(enc_dec, LENGTHS)
    settings = STRATEGIES[strategy]
    seeds = [11 + r for r in range(len(LENGTHS))]
    running: list[int] = []
    eos = _ending_tokens(_run(model, ids, mask, settings, seeds=seeds, eos=[1]), 1 if enc_dec else ids.shape[1])
    static = _run(model, ids, mask, settings, seeds=seeds, eos=eos)
    engine = _run(model, ids, mask, settings, EngineHooks(on_step=running.append), seeds=seeds, eos=eos)
    assert torch.equal(engine.sequences, static.sequences)
    assert engine.finish_reasons == static.finish_reasons
    assert min(running) < len(LENGTHS), "some rows finished early and left the batch"
    assert running == sorted(running, reverse=True)
    if name == "mamba" and strategy == "penalties":
        return  # left padding enters an SSM's state: static batches differ from alone there (as in transformers)
    for row, n in enumerate(LENGTHS):  # the row alone, unpadded, with its own seed
        alone_mask = mask[row : row + 1].bool()
        alone_ids = ids[row : row + 1][alone_mask].view(1, n)
        alone = _run(model, alone_ids, torch.ones_like(alone_ids), settings, seeds=seeds[row : row + 1], eos=eos)
        assert _new_tokens(engine, row, ids.shape[1], enc_dec) == _new_tokens(alone, 0, n, enc_dec), row


def test_rows_stay_when_the_caller_watches_the_batch_said_once(models):
    ids, mask = padded_batch(False, LENGTHS)
    hooks = EngineHooks(on_step=[].append)
    seen = []

    def watch(input_ids, scores):
        seen.append(input_ids.shape[0])
        return scores

    with pytest.warns(UserWarning, match="finished rows stay in the running batch"):
        ferrogen.generate(models["gpt2"], input_ids=ids, attention_mask=mask, max_new_tokens=6, eos_token_id=STOPS,
                          pad_token_id=0, logits_processor=[watch], _engine=hooks)
    assert set(seen) == {len(LENGTHS)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per run: the second batch is quiet
        ferrogen.generate(models["gpt2"], input_ids=ids, attention_mask=mask, max_new_tokens=6, eos_token_id=STOPS,
                          pad_token_id=0, logits_processor=[watch], _engine=hooks)


def test_the_core_refuses_bad_row_lists():
    import numpy as np

    from ferrogen import _core

    settings = _core.GenerationSettings(ferrogen.GenerationConfig(), eos_token_ids=[2], min_length=0, max_length=8,
                                        pad_token_id=0, vocab_size=16)
    decoder = _core.Decoder(np.array([[1, 2], [3, 4]], dtype=np.int64), settings)
    for bad in ([], [1, 0], [0, 0], [2], [-1]):
        with pytest.raises(ValueError, match="rows"):
            decoder.keep_rows(np.array(bad, dtype=np.int64))
    decoder.keep_rows(np.array([1], dtype=np.int64))
    assert decoder.unfinished().tolist() == [True]


def test_length_order_and_seeds():
    assert length_order([3, 1, 2, 1]) == [1, 3, 2, 0]
    seeds = prompt_seeds(5, [[1, 2], [3], [1, 2], [1, 2]])
    assert seeds[0] == seeds[1] == 5 and len({seeds[0], seeds[2], seeds[3]}) == 3


PROMPTS = ["And God said", "In the beginning God created the heaven and the earth. And the earth was",
           "Blessed are", "And God said", "The LORD is my shepherd; I shall not", "Jesus wept. Then said the Jews"]


@pytest.fixture(scope="module")
def kjv(one_torch_thread):
    return ferrogen.pipeline()


@pytest.mark.parametrize("settings", [dict(do_sample=False), dict(do_sample=True, seed=7, top_k=30),
                                      dict(do_sample=True, seed=7, stop_strings=[","])])
def test_pipeline_engine_matches_static_batches_and_prompts_alone(kjv, settings):
    kwargs = dict(max_new_tokens=16, **settings)
    progress = []
    engine = kjv(PROMPTS, batch_size=4, on_progress=lambda p: progress.append((p.prompts_done, p.running)), **kwargs)
    static = ferrogen.engine.generate_texts(kjv, PROMPTS, 4, static=True, **kwargs)
    assert [r.prompt for r in engine] == PROMPTS
    assert [(r.token_ids, r.finish_reason) for r in engine] == [(r.token_ids, r.finish_reason) for r in static]
    assert progress[-1][0] == len(PROMPTS) and max(p[1] for p in progress) <= 4
    for i, prompt in enumerate(PROMPTS):
        if prompt in PROMPTS[:i]:  # a repeated prompt gets its own seed (prompt_seeds), not seed's keys
            continue
        alone = kjv(prompt, **kwargs)[0]
        assert (engine[i].token_ids, engine[i].finish_reason) == (alone.token_ids, alone.finish_reason), prompt
    if settings["do_sample"]:
        assert engine[0].token_ids != engine[3].token_ids or engine[0].finish_reason == "stop"


@pytest.mark.parametrize("kwargs", [dict(), dict(static=True), dict(num_beams=2), dict(do_sample=True, seed=3)],
                         ids=["continuous", "static", "beam", "sampled"])
def test_the_engine_tokenizes_each_prompt_once(kjv, tokenized, kwargs):
    """The ids the engine reads for the length order are the ones it runs (padded per batch),
    on every path: the tokenizer sees each prompt once, and each row is the prompt's alone."""
    seen = tokenized(kjv.tokenizer)
    engine = ferrogen.engine.generate_texts(kjv, PROMPTS, 4, max_new_tokens=8, **kwargs)
    assert seen == PROMPTS
    settings = {k: v for k, v in kwargs.items() if k != "static"}
    for i, prompt in enumerate(PROMPTS):
        if prompt in PROMPTS[:i] and "seed" in settings:  # a repeat samples with its own seed
            continue
        alone = kjv(prompt, max_new_tokens=8, **settings)[0]
        assert (engine[i].token_ids, engine[i].text, engine[i].finish_reason) == (
            alone.token_ids, alone.text, alone.finish_reason), prompt


def test_cli_input_runs_through_the_engine_in_input_order(tmp_path, capsys, kjv):
    """``ferrogen generate --input``: a window sorted by length, finished rows dropped, records in
    input order and each the prompt's own (as generated alone with the run's seed)."""
    import json

    from ferrogen.cli import main

    lines = PROMPTS[:3] + PROMPTS[4:]  # distinct prompts
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in lines))
    dst = tmp_path / "out.jsonl"
    assert main(["generate", "--input", str(src), "--output", str(dst), "--max-new-tokens", "12", "--batch-size", "2",
                 "--do-sample", "--seed", "3", "--stop-strings", ","]) == 0
    capsys.readouterr()
    records = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [r["line"] for r in records] == list(range(1, len(lines) + 1))
    for record, prompt in zip(records, lines):
        alone = kjv(prompt, max_new_tokens=12, do_sample=True, seed=3, stop_strings=[","])[0]
        assert (record["prompt"], record["token_ids"], record["finish_reason"]) == (
            prompt, alone.token_ids, alone.finish_reason)
