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
