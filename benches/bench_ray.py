"""Prompts per second with ferrogen.distributed on a local Ray instance: 1 vs N actors.

For each actor count, one job over the same prompts (embedded model, greedy, a fixed number
of new tokens, EOS suppressed so every prompt costs the same) and two rates:
- end to end: prompts / wall time of the whole job, actor start-up (model load) included;
- steady: the last three quarters of the prompts / the time from the first quarter's output
  to the end, i.e. with the actors loaded (what a long job converges to).
A single-process row (ferrogen.pipeline, no Ray, one torch thread like one actor) is the baseline.
Each Ray call is a block of ``--block-size`` rows (default: generate_dataset's, 4 batches; every
prompt here costs the same, so nothing finishes early and refilling gains little: for the engine's
refill across a block see bench_dataset.py's Ray rows).

    python benches/bench_ray.py                          # 1 and 2 actors, 1200 prompts
    python benches/bench_ray.py --actors 1 2 4 --prompts 2000 --out ray.md
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Optional

import torch

import ferrogen
from ferrogen import distributed as fd

HEADS = ["And God said", "In the beginning", "The LORD", "Jesus wept", "And the king", "Blessed are the",
         "Thou shalt", "And it came to pass"]
TAILS = ["unto Moses", "that", "in the land of", "and the people", "for ever", "the son of David", "saying",
         "in Jerusalem", "O Israel", "before the LORD"]


def prompts(n: int) -> list[str]:
    return [f"{HEADS[i % len(HEADS)]} {TAILS[(i // len(HEADS)) % len(TAILS)]}" for i in range(n)]


def single_process(texts: list[str], config: dict, batch: int) -> float:
    torch.set_num_threads(1)  # as one actor (several threads thrash on a small, busy machine)
    gen = ferrogen.pipeline()
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        gen(texts[i : i + batch], **config)
    return len(texts) / (time.perf_counter() - start)


def ray_job(texts: list[str], config: dict, batch: int, block: Optional[int], actors: int) -> tuple[float, float]:
    start = time.perf_counter()
    out = fd.generate_dataset(fd.from_prompts(texts), generation_config=config, batch_size=batch, block_size=block,
                              concurrency=actors, output_scores=False)
    quarter_at, quarter_rows, rows = None, 0, 0
    for block in out.iter_batches(batch_format="pyarrow", batch_size=None):
        rows += block.num_rows
        if quarter_at is None and rows >= len(texts) // 4:
            quarter_at, quarter_rows = time.perf_counter(), rows
    end = time.perf_counter()
    assert rows == len(texts), (rows, len(texts))
    steady = (rows - quarter_rows) / (end - quarter_at) if end > quarter_at else float("nan")
    return rows / (end - start), steady


def main() -> None:
    import ray

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1200)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--block-size", type=int, help="rows per Ray call (default: generate_dataset's)")
    parser.add_argument("--out", help="also write the Markdown table here")
    args = parser.parse_args()

    texts = prompts(args.prompts)
    config = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False, seed=0)
    load = os.getloadavg()[0]
    rows = [("single process (no Ray)", "1 torch thread",
             f"{single_process(texts, config, args.batch_size):.1f}", "")]
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, object_store_memory=200 * 2**20,
             log_to_driver=False, configure_logging=False, _node_ip_address="127.0.0.1")
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        for actors in args.actors:
            end_to_end, steady = ray_job(texts, config, args.batch_size, args.block_size, actors)
            rows.append((f"Ray, {actors} actor(s)", "1 CPU / torch thread each", f"{end_to_end:.1f}", f"{steady:.1f}"))
    finally:
        ray.shutdown()

    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
        f"{load:.1f} at start; {args.prompts} prompts x {args.new_tokens} new tokens, embedded GPT-2, greedy, "
        f"batch {args.batch_size}, block {args.block_size or 'default'}.",
        "",
        "| run | resources | prompts/s end to end | prompts/s steady |",
        "|---|---|---:|---:|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
    ]
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(table + "\n")


if __name__ == "__main__":
    main()
