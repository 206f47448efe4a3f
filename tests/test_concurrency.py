"""Concurrent generate calls on one model give exactly the serial results."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

import ferrogen
from conftest import left_padded_batch


def test_eight_threads_match_serial_results(gpt2):
    jobs = []
    for i in range(8):
        ids, mask = left_padded_batch((3 + i % 3, 2 + i % 4), seed=i)
        jobs.append((ids, mask, dict(max_new_tokens=4 + i, min_new_tokens=i % 3, pad_token_id=0)))

    def run(job):
        ids, mask, kwargs = job
        return ferrogen.generate(gpt2, input_ids=ids, attention_mask=mask, **kwargs)

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
