"""Logits-pipeline benchmark: transformers' processors vs ferrogen's, and one numpy pass.

For every (config, B, V) row, in one process on the same array:
- transformers: its processor classes in ``generate``'s order, then (``+draw``) softmax and
  ``torch.multinomial``, as ``_sample`` does;
- ferrogen: ``LogitsPipeline.sample(..., inplace=True)`` on a fresh copy of the logits
  (the copy is not timed; ``process`` out of place, which includes the copy, is shown too);
- numpy: ``logits.max(axis=1)``, one memory-bound pass over the same float32 array.
Prints a Markdown table of median (or minimum, ``--stat min``) milliseconds and the ratios.

    python benches/bench_processors.py                              # the full grid
    python benches/bench_processors.py --batches 8 --vocabs 128256  # the headline row
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Any, Callable

import numpy as np
import torch

import ferrogen
from ferrogen.bench.torch_samplers import hf_processors

CONFIGS: dict[str, dict[str, Any]] = {
    # bench_generate.py's sampling row
    "sample": dict(do_sample=True, temperature=0.8, top_k=50, top_p=0.9),
    # penalties and n-gram blocking over a 512-token history, then the warpers
    "heavy": dict(do_sample=True, temperature=0.8, top_k=50, top_p=0.9, min_p=0.02, repetition_penalty=1.2,
                  no_repeat_ngram_size=3),
    # no top-k: top-p over the whole vocabulary (ferrogen's dense path)
    "top_p_only": dict(do_sample=True, temperature=0.8, top_k=0, top_p=0.9),
    # samplers transformers lacks: its side is custom LogitsProcessors in torch (below)
    "dry+xtc+min_p": dict(do_sample=True, top_k=0, dry_multiplier=0.8, dry_sequence_breakers=[[13], [25], [1], [9]],
                          xtc_probability=0.5, xtc_threshold=0.1, min_p=0.05),
}


def make_logits(rows: int, vocab: int) -> np.ndarray:
    """Model-like logits: a normal body and a few peaked tokens per row."""
    g = np.random.default_rng(0)
    x = (g.standard_normal((rows, vocab), dtype=np.float32) * 2.5).astype(np.float32)
    for r in range(rows):
        x[r, g.integers(0, vocab, 20)] += 8 + g.random(20, dtype=np.float32) * 6
    return x


STAT = statistics.median


def median_ms(fn: Callable[[], Any], setup: Callable[[], Any] = lambda: None, budget_s: float = 0.6,
              min_reps: int = 5, max_reps: int = 200) -> float:
    """Median (``--stat min``: minimum) wall time of ``fn`` in ms; ``setup`` runs untimed before each call."""
    setup()
    fn()  # warm-up
    times: list[float] = []
    spent = 0.0
    while len(times) < min_reps or (spent < budget_s and len(times) < max_reps):
        setup()
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        times.append(elapsed * 1e3)
        spent += elapsed
    return STAT(times)


def bench_row(name: str, cfg: dict[str, Any], rows: int, vocab: int) -> dict[str, float]:
    base = make_logits(rows, vocab)
    ids = np.random.default_rng(1).integers(0, vocab, (rows, 512))
    ids_t, base_t = torch.from_numpy(ids), torch.from_numpy(base)
    procs = hf_processors(cfg)

    def hf_process() -> torch.Tensor:
        scores = base_t
        for p in procs:
            scores = p(ids_t, scores)
        return scores

    def hf_draw() -> torch.Tensor:
        return torch.multinomial(torch.softmax(hf_process(), dim=-1), num_samples=1)

    pipe = ferrogen.LogitsPipeline(prompt_length=512, **cfg)
    buf = base.copy()
    fresh = lambda: np.copyto(buf, base)  # noqa: E731
    with torch.inference_mode():
        out = {
            "hf": median_ms(hf_process),
            "hf_draw": median_ms(hf_draw),
            "ours_process": median_ms(lambda: pipe.process(ids, base)),
            "ours_draw": median_ms(lambda: pipe.sample(ids, buf, seed=0, inplace=True), setup=fresh),
            "numpy": median_ms(lambda: base.max(axis=1)),
        }
    return out


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{model}, {os.cpu_count()} logical CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"load average {load:.1f} at start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    ap.add_argument("--vocabs", nargs="+", type=int, default=[32_000, 50_257, 128_256, 256_000])
    ap.add_argument("--stat", choices=["median", "min"], default="median",
                    help="statistic of the repetitions; 'min' is robust when other jobs share the CPU")
    ap.add_argument("--out", help="also write the table to this file")
    args = ap.parse_args()
    global STAT
    STAT = min if args.stat == "min" else statistics.median

    lines = [f"Machine: {machine()}; statistic: {args.stat} of the repetitions", "",
             "| config | B × V | transformers processors | + softmax + multinomial | ferrogen process (copy incl.) "
             "| ferrogen process + draw | numpy max | speed-up (draw vs draw) | ferrogen / numpy |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    for name in args.configs:
        for rows in args.batches:
            for vocab in args.vocabs:
                t = bench_row(name, CONFIGS[name], rows, vocab)
                line = (f"| {name} | {rows} × {vocab} | {t['hf']:.2f} ms | {t['hf_draw']:.2f} ms | "
                        f"{t['ours_process']:.3f} ms | {t['ours_draw']:.3f} ms | {t['numpy']:.3f} ms | "
                        f"{t['hf_draw'] / t['ours_draw']:.0f}× | {t['ours_draw'] / t['numpy']:.1f}× |")
                print(line, flush=True)
                lines.append(line)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
