"""Concurrent generate calls on one model give exactly the serial results."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import ferrogen
from conftest import left_padded_batch
from ferrogen.families import STATE_IN_MODULES
from test_architectures import GREEDY


def test_eight_threads_match_serial_results(gpt2):
    jobs = []
    for i in range(8):
        ids, mask = left_padded_batch((3 + i % 3, 2 + i % 4), seed=i)
        jobs.append((ids, mask, dict(max_new_tokens=4 + i, min_new_tokens=i % 3, pad_token_id=0)))

    assert_threads_match_serial(gpt2, jobs)


def assert_threads_match_serial(model, jobs) -> None:
    """Each job ``(input_ids, attention_mask, kwargs)`` of ``generate`` on ``model``, run by 8
    threads at once, 3 rounds: every result equals the job's serial one."""

    def run(job):
        ids, mask, kwargs = job
        return ferrogen.generate(model, input_ids=ids, attention_mask=mask, **kwargs)

    serial = [run(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            for got, want in zip(pool.map(run, jobs), serial):
                assert torch.equal(got, want)


def test_rust_work_releases_the_gil():
    """A second Python thread runs while one thread is inside a long core call.

    The interpreter's switch interval is raised to 5 s, so the main thread does not give the
    GIL up on its own while it runs, and the counter thread hands the GIL back after every
    increment, so the main thread never waits on it: the counter can only move during
    ``process`` if the core released the GIL (with a pure-Python loop in its place it stays put).
    """
    import sys
    import threading
    import time

    import numpy as np

    pipe = ferrogen.LogitsPipeline(do_sample=True, top_p=0.9, typical_p=0.95, temperature=0.7,
                                   repetition_penalty=1.2, no_repeat_ngram_size=3)
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((64, 128_256), dtype=np.float32)
    history = rng.integers(0, 128_256, (64, 256))
    pipe.process(history, logits)  # warm-up: the counter thread must not race a first-call setup

    count, stop, running = [0], threading.Event(), threading.Event()

    def counter():
        running.set()
        while not stop.is_set():
            count[0] += 1
            time.sleep(0)  # hand the GIL back at once

    old = sys.getswitchinterval()
    sys.setswitchinterval(5.0)
    worker = threading.Thread(target=counter, daemon=True)
    try:
        worker.start()
        running.wait()
        moved = 0
        for _ in range(3):  # a few long calls; the counter must move during at least one
            before = count[0]
            pipe.process(history, logits)
            moved += count[0] - before
    finally:
        stop.set()
        sys.setswitchinterval(old)
        worker.join()
    assert moved > 0, "the counter thread never ran during a core call: the GIL was held"


def test_threads_on_a_recurrent_gemma_match_serial_results():
    """RecurrentGemma keeps its recurrent state (RG-LRU and convolution) in the model's modules,
    set up again at each call's first step: threads generating with one such model at once
    would run on each other's state (or on a state of another batch size). The only family of
    tests/architectures.py whose modules change during ``generate``; 8 threads with prompts of
    different lengths and batch sizes, greedy and sampled, 3 rounds."""
    from architectures import build, padded_batch

    model = build("recurrent_gemma")
    jobs = []
    for i in range(8):
        ids, mask = padded_batch(False, lengths=tuple(2 + (i + r) % 5 for r in range(1 + i % 3)), seed=i)
        sampled = dict(do_sample=True, seed=i, top_k=20) if i % 2 else {}
        jobs.append((ids, mask, dict(max_new_tokens=6 + i, pad_token_id=0, **sampled)))
    assert_threads_match_serial(model, jobs)


def test_a_recurrent_gemma_call_inside_its_own_call_is_refused():
    """A logits processor generating with the model that is generating: waiting for the model's
    turn would never end (and sharing its modules' state would corrupt the outer call), so the
    inner call raises; the lock is released and the next call gives the serial result."""
    from architectures import build, padded_batch

    model = build("recurrent_gemma")
    ids, mask = padded_batch(False)
    want = ferrogen.generate(model, input_ids=ids, attention_mask=mask, max_new_tokens=4, pad_token_id=0)

    def nested(input_ids, scores):
        ferrogen.generate(model, input_ids=ids, attention_mask=mask, max_new_tokens=1, pad_token_id=0)
        return scores

    with pytest.raises(RuntimeError, match="model: a generate call on this recurrent_gemma model is already running"):
        ferrogen.generate(model, input_ids=ids, attention_mask=mask, max_new_tokens=4, pad_token_id=0,
                          logits_processor=[nested])
    got = ferrogen.generate(model, input_ids=ids, attention_mask=mask, max_new_tokens=4, pad_token_id=0)
    assert torch.equal(got, want)


def _module_state(model) -> dict:
    """Every plain attribute of the model's modules (tensors as shape and values)."""
    state = {}
    for name, module in model.named_modules():
        for key, value in vars(module).items():
            if isinstance(value, torch.Tensor):
                state[f"{name}.{key}"] = (tuple(value.shape), value.detach().clone())
            elif value is None or isinstance(value, (int, float, str)):
                state[f"{name}.{key}"] = value
    return state


def _same(a, b) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple):
        return a[0] == b[0] and torch.equal(a[1], b[1])
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("model_type", GREEDY)
def test_families_that_keep_state_in_their_modules_are_listed(model_type):
    """A family whose modules change during ``generate`` (state outside the call's cache) is in
    ferrogen.families.STATE_IN_MODULES, whose calls take turns; the others' modules stay as
    they were (their calls run at once). Greedy search: every family of tests/architectures.py
    that ferrogen runs."""
    from architectures import build, padded_batch

    model = build(model_type)
    ids, mask = padded_batch(model.config.is_encoder_decoder)
    before = _module_state(model)
    ferrogen.generate(model, input_ids=ids, attention_mask=mask, max_new_tokens=2, pad_token_id=0)
    after = _module_state(model)
    changed = sorted(k for k in before.keys() | after.keys() if not _same(before.get(k), after.get(k)))
    assert bool(changed) == (model_type in STATE_IN_MODULES), changed
