"""Many prompts of varied length through the embedded model: the batch engine against static batches.

One run, one torch thread, the same prompts for every system:
- ferrogen continuous: ``ferrogen.pipeline()(prompts, batch_size=B)`` (length-sorted prompts; finished
  rows' places are taken by waiting prompts, prefilled half a batch at a time: continuous
  batching; :mod:`ferrogen.engine`);
- ferrogen shrink-only: the same with ``continuous=False`` (length-sorted batches, finished rows
  dropped, no refill: what the engine did before continuous batching);
- ferrogen static: the same batches in input order, every row kept to the batch's end (what
  ferrogen did before the engine; ``generate_texts(..., static=True)``);
- transformers' ``pipeline("text-generation", batch_size=B)``;
- transformers' ``model.generate_batch`` (continuous batching over a paged cache), once per variant
  (it schedules its own batch).
Prompts are verses' openings of the embedded KJV model's domain, of 1 to 12 clauses. The model
never emits its ``</s>``, so the natural end is the end of a verse: EOS is ``</s>`` or the newline
token (both for every system); the stop-string variant also stops at ``"."``; the uniform variant has
prompts of one token length and only ``</s>`` as EOS, so every row runs to ``max_new_tokens``. Engine and static
token ids are checked identical. Prompts/s and generated tokens/s; peak RSS per row (MB): the
largest ``VmRSS`` of ``/proc/self/status`` sampled every 20 ms while the row ran (psutil is not in the
venv; ``getrusage``'s peak only grows over the run, so it is given once, for the whole run).

    python benches/bench_dataset.py                      # 2000 prompts, batch 16 and 64
    python benches/bench_dataset.py --prompts 300 --batches 16 64 --out dataset.md
    python benches/bench_dataset.py --batches 16 --skip in_process ray_static ray_shrink-only --ray 1 --ray-block 1 2 4 8
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import threading
import time
import warnings
from typing import Any, Callable

import torch

import ferrogen
from ferrogen.engine import generate_texts

CLAUSES = ["And God said", "In the beginning God created the heaven and the earth", "And the LORD spake unto Moses",
           "Blessed are the meek", "Thou shalt love thy neighbour as thyself", "And it came to pass",
           "when the king heard these words", "that he rent his clothes", "and the people of Israel",
           "went up to Jerusalem", "And Jesus answered and said unto them", "Verily I say unto you",
           "the son of David", "in the land of Egypt", "before the LORD thy God", "for ever and ever"]


def prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [", ".join(rng.choice(CLAUSES) for _ in range(rng.choice([1, 1, 2, 2, 3, 4, 6, 9, 12]))) for _ in range(n)]


def uniform_prompts(n: int, tok: Any, seed: int = 0) -> list[str]:
    """Prompts of one token length (two clauses from those of the most common length): with
    the newline not an EOS, every row also runs to ``max_new_tokens``, so no length varies."""
    rng = random.Random(seed)
    lengths = {c: len(tok(c)["input_ids"]) for c in CLAUSES}
    common = max(set(lengths.values()), key=list(lengths.values()).count)
    pool = [c for c in CLAUSES if lengths[c] == common]
    return [f"{rng.choice(pool)} {rng.choice(pool)}" for _ in range(n)]


def rss_mb() -> float:
    """This process's resident set size now (MB), from /proc (Linux); 0 where there is none."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def timed(run: Callable[[], int], n: int) -> tuple[float, float, float]:
    """Prompts/s, generated tokens/s and the peak RSS (MB) sampled every 20 ms while ``run`` ran."""
    peak = [rss_mb()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        tokens = run()
    finally:
        elapsed = time.perf_counter() - start
        done.set()
        sampler.join()
    return n / elapsed, tokens / elapsed, max(peak[0], rss_mb())


def padded_row_steps(lengths: list[int], batch: int) -> float:
    """Row-steps that batches of ``batch`` prompts in input order run (each until its longest row
    is done: a static batch, transformers' pipeline) ÷ the row-steps the rows need (their lengths).
    The most that dropping and refilling finished rows can gain over them at the same cost per
    row-step; the engine beats it only where a step gets cheaper (narrower cache, fewer pads)."""
    needed = sum(lengths)
    run = sum(batch * max(lengths[i:i + batch]) for i in range(0, len(lengths), batch))
    return run / max(needed, 1)


def continuous(model: Any, tok: Any, texts: list[str], hf: dict[str, Any], batch: int) -> int:
    """transformers' ``generate_batch``, at most ``batch`` requests at once and a cache sized for them
    (left to itself on CPU it sizes the paged cache from the host's memory: 14 GB here)."""
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    cb = ContinuousBatchingConfig(num_blocks=2 * batch, max_batch_tokens=2048, max_requests_per_batch=batch)
    ids = [tok(t)["input_ids"] for t in texts]
    results = model.generate_batch(inputs=ids, generation_config=GenerationConfig(**hf),
                                   continuous_batching_config=cb, progress_bar=False)
    return sum(len(r.generated_tokens) for r in results.values())


def ray_rows(texts: list[str], base: dict[str, Any], batch: int, actor_counts: list[int], blocks: list[int],
             row: dict[str, Any], skip: list[str]) -> list[dict[str, Any]]:
    """The same prompts through ``ferrogen.distributed`` (local Ray, 1 CPU and torch thread per actor,
    ``output_scores=False``), each Ray call a block of ``batch`` rows (what ``generate_dataset`` did
    before blocks: one batch per call) run static or shrink-only, or through the batch engine
    (continuous batching) with blocks of ``batch`` rows (``block_size=batch_size``: nothing waits, so
    nothing refills) and of ``k * batch`` rows for each ``k`` of ``blocks`` (``generate_dataset``'s
    default is :data:`~ferrogen.distributed.job.DEFAULT_BLOCK_BATCHES` batches); ``skip`` leaves out
    ``ray_static`` and ``ray_shrink-only``. Tokens are compared with the first row's."""
    import ray

    from ferrogen import distributed as fd
    from ferrogen.distributed.generator import BatchGenerator

    class StaticBatchGenerator(BatchGenerator):
        engine_options = {"static": True}

    class ShrinkOnlyBatchGenerator(BatchGenerator):
        engine_options = {"continuous": False}

    systems = [("static", StaticBatchGenerator, batch), ("shrink-only", ShrinkOnlyBatchGenerator, batch),
               ("engine", BatchGenerator, batch), *[("engine", BatchGenerator, k * batch) for k in blocks if k > 1]]
    systems = [s for s in systems if f"ray_{s[0]}" not in skip]
    config = {k: v for k, v in base.items() if k != "stop_strings"}
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, object_store_memory=200 * 2**20,
             log_to_driver=False, configure_logging=False, _node_ip_address="127.0.0.1")
    ray.data.DataContext.get_current().enable_progress_bars = False
    out = []
    try:
        for actors in actor_counts:
            tokens: dict[str, list[tuple[str, list[int]]]] = {}  # sorted: Ray's output order is not the input's
            for name, cls, block in systems:
                label = f"{name}, block {block}"

                def job() -> int:
                    ds = fd.generate_dataset(fd.from_prompts(texts), generation_config=config, batch_size=batch,
                                             block_size=block, concurrency=actors, output_scores=False,
                                             generator_class=cls)
                    frame = ds.to_pandas()
                    tokens[label] = sorted((p, list(ids)) for p, ids in zip(frame["prompt"], frame["token_ids"]))
                    return sum(len(ids) for _, ids in tokens[label])

                out.append({**row, "system": f"Ray {actors} actor(s), {label}", "rates": timed(job, len(texts)),
                            "note": "start-up (model load) included"})
                first = next(iter(tokens))
                if label != first:
                    same = tokens[label] == tokens[first]
                    out[-1]["note"] += f"; same tokens as {first}" if same else f"; TOKENS DIFFER from {first}"
    finally:
        ray.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=2000)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--modes", nargs="+", default=["greedy", "sample"])
    parser.add_argument("--variants", nargs="+", default=["eos", "stop"],
                        help="eos, stop (stop string '.'), uniform (one prompt length, every row to max_new_tokens)")
    parser.add_argument("--skip", nargs="*", default=[],
                        help="systems to leave out (hf_pipeline, generate_batch, ray_static, ray_shrink-only; "
                             "in_process: every row without Ray)")
    parser.add_argument("--ray", type=int, nargs="*", default=[], help="actor counts for the Ray rows (greedy, eos)")
    parser.add_argument("--ray-block", type=int, nargs="+", default=[4],
                        help="the Ray engine rows' block_size, in batches (also run with blocks of one batch)")
    parser.add_argument("--out", help="also write the Markdown table here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    from transformers import GenerationConfig
    from transformers import pipeline as hf_pipeline
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    gen = ferrogen.pipeline()
    tok, model = gen.tokenizer, gen.model
    texts = prompts(args.prompts)
    eos = [tok.eos_token_id, tok.convert_tokens_to_ids(tok.tokenize("\n"))[-1]]
    generate_texts(gen, texts[:32], 16, max_new_tokens=8)  # warm-up (first calls, allocator)
    load = os.getloadavg()[0]
    rows = []
    uniform = uniform_prompts(args.prompts, tok) if "uniform" in args.variants else []
    for variant in args.variants if "in_process" not in args.skip else []:
        texts = uniform if variant == "uniform" else prompts(args.prompts)
        for mode in args.modes:
            ends = [tok.eos_token_id] if variant == "uniform" else eos  # the model never emits </s>
            base: dict[str, Any] = dict(max_new_tokens=args.new_tokens, eos_token_id=ends, pad_token_id=0,
                                        do_sample=mode == "sample", seed=0)
            if mode == "sample":
                base.update(top_k=50, temperature=0.8)
            if variant == "stop":
                base["stop_strings"] = ["."]
            hf = {k: v for k, v in base.items() if k != "seed"}
            for batch in args.batches:
                out: dict[str, Any] = {}

                def engine(name: str, **how: bool) -> int:
                    results = generate_texts(gen, texts, batch, **how, **base)
                    out[name] = [(r.token_ids, r.finish_reason) for r in results]
                    return sum(len(r.token_ids) for r in results)

                row = {"variant": variant, "mode": mode, "batch": batch}
                systems = {"continuous": {}, "shrink-only": {"continuous": False}, "static": {"static": True}}
                for name, how in systems.items():
                    rows.append({**row, "system": f"ferrogen {name}",
                                 "rates": timed(lambda: engine(name, **how), len(texts))})
                for back, name in ((3, "continuous"), (2, "shrink-only")):
                    same = out[name] == out["static"]
                    rows[-back]["note"] = "same tokens as static" if same else "TOKENS DIFFER from static"
                lengths = [len(ids) for ids, _ in out["static"]]
                rows[-1]["note"] = f"runs {padded_row_steps(lengths, batch):.2f}× the row-steps its rows need"
                if "hf_pipeline" not in args.skip:
                    pipe = hf_pipeline("text-generation", model=model, tokenizer=tok, batch_size=batch)
                    tok.padding_side = "left"

                    def run_pipe() -> int:  # tokens counted by re-tokenizing the generated text
                        extra = {"tokenizer": tok} if variant == "stop" else {}
                        results = pipe(texts, return_full_text=False, generation_config=GenerationConfig(**hf), **extra)
                        return sum(len(tok(r[0]["generated_text"])["input_ids"]) for r in results)

                    rows.append({**row, "system": "transformers pipeline", "rates": timed(run_pipe, len(texts))})
                if "generate_batch" not in args.skip and variant != "stop":
                    rows.append({**row, "system": "transformers generate_batch",
                                 "rates": timed(lambda: continuous(model, tok, texts, hf, batch), len(texts))})
    texts = prompts(args.prompts)
    for batch in args.batches if args.ray else []:
        base = dict(max_new_tokens=args.new_tokens, eos_token_id=eos, pad_token_id=0, do_sample=False, seed=0)
        row = {"variant": "eos", "mode": "greedy", "batch": batch}
        rows.extend(ray_rows(texts, base, batch, args.ray, args.ray_block, row, args.skip))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (a VM shared with other "
        f"developers' work), load average {load:.1f} at start; 1 torch thread; {len(texts)} prompts "
        f"(1-12 clauses), up to {args.new_tokens} new tokens, embedded kjv-gpt2; EOS = </s> or newline; "
        f"peak RSS of the whole run {rss:.0f} MB (getrusage); per row: sampled VmRSS.",
        "",
        "| variant | mode | batch | system | prompts/s | gen tokens/s | peak RSS MB | note |",
        "|---|---|---|---|---:|---:|---:|---|",
        *[f"| {r['variant']} | {r['mode']} | {r['batch']} | {r['system']} | {r['rates'][0]:.1f} | "
          f"{r['rates'][1]:.0f} | {r['rates'][2]:.0f} | {r.get('note', '')} |" for r in rows],
    ]
    table = "\n".join(lines)
    print(table, flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(table + "\n")


if __name__ == "__main__":
    main()
