"""The KV cache growing into spare room (ferrogen/growing_cache.py) against transformers' ``torch.cat``
per step, in one process, interleaved rounds, one torch thread, CPU time (the box is shared):

- step: the embedded model's forward pass alone at a fixed batch (a prefill, then cached one-token
  steps), with a plain ``DynamicCache`` and with the same cache growing; ms per step;
- engine: ``generate_texts`` over many prompts (continuous batching, shrink-only and static
  batches), the growth on and off (off: the adapters' ``growing`` / ``select_rows`` replaced by
  no-ops, i.e. transformers' layers); prompts/s, tokens checked identical.

    python benches/bench_cache_growth.py [--batch 64 --rounds 5 --prompts 200]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).parent))

import ferrogen  # noqa: E402
from ferrogen import decoder_adapter, seq2seq_adapter  # noqa: E402
from ferrogen.engine import generate_texts  # noqa: E402
from ferrogen.growing_cache import growing  # noqa: E402

GROWTH = (decoder_adapter.growing, decoder_adapter.select_rows)


def set_growth(on: bool) -> None:
    for adapter in (decoder_adapter, seq2seq_adapter):
        adapter.growing, adapter.select_rows = GROWTH if on else (lambda cache: contextlib.nullcontext(),
                                                                  lambda cache, rows: False)


def step_ms(model: Any, batch: int, prompt: int, steps: int, grow: bool) -> float:
    """CPU ms per cached one-token step of ``model`` alone."""
    from transformers import DynamicCache

    ids = torch.randint(5, model.config.vocab_size, (batch, prompt), generator=torch.Generator().manual_seed(0))
    cache = DynamicCache(config=model.config)
    scope: Callable[[Any], Any] = growing if grow else (lambda c: contextlib.nullcontext())
    with torch.inference_mode():
        with scope(cache):
            out = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        start = time.process_time()
        for _ in range(steps):
            with scope(cache):
                out = model(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
    return (time.process_time() - start) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--prompt", type=int, default=60, help="prompt tokens of the step bench")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--prompts", type=int, default=200, help="prompts of the engine bench")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    from bench_dataset import prompts

    gen = ferrogen.pipeline()
    tok, model = gen.tokenizer, gen.model
    load = os.getloadavg()[0]
    steps: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.rounds):
        for grow in (False, True):
            steps[grow].append(step_ms(model, args.batch, args.prompt, args.steps, grow))
    texts = prompts(args.prompts)
    eos = [tok.eos_token_id, tok.convert_tokens_to_ids(tok.tokenize("\n"))[-1]]
    base = dict(max_new_tokens=64, eos_token_id=eos, pad_token_id=0, do_sample=False)
    generate_texts(gen, texts[:32], 16, max_new_tokens=8)  # warm-up
    systems = {"continuous": {}, "shrink-only": {"continuous": False}, "static": {"static": True}}
    rates: dict[tuple[str, bool], list[float]] = {}
    tokens: dict[tuple[str, bool], list[list[int]]] = {}
    for _ in range(args.rounds):
        for name, how in systems.items():
            for grow in (False, True):
                set_growth(grow)
                start = time.process_time()
                results = generate_texts(gen, texts, args.batch, **how, **base)
                rates.setdefault((name, grow), []).append(len(texts) / (time.process_time() - start))
                tokens[(name, grow)] = [r.token_ids for r in results]
    set_growth(True)
    med = statistics.median
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {load:.1f} at "
        f"start; 1 torch thread; embedded model; CPU time; medians of {args.rounds} interleaved rounds.",
        "",
        "| what | batch | torch.cat per step | growing | growing ÷ cat (speed) | note |",
        "|---|---:|---:|---:|---:|---|",
        f"| forward step, {args.prompt}-token prompts, {args.steps} steps (ms/step) | {args.batch} | "
        f"{med(steps[False]):.2f} | {med(steps[True]):.2f} | {med(steps[False]) / med(steps[True]):.2f}× | |",
    ]
    for name in systems:
        off, on = med(rates[(name, False)]), med(rates[(name, True)])
        same = "same tokens" if tokens[(name, False)] == tokens[(name, True)] else "TOKENS DIFFER"
        lines.append(f"| engine {name}, {args.prompts} prompts (prompts/s) | {args.batch} | {off:.1f} | {on:.1f} | "
                     f"{on / off:.2f}× | {same} |")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
