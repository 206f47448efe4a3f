"""End-to-end benchmark: ferrogen vs transformers vs the model's forward pass alone.

For every (model, batch, strategy) row, in one process and one run:
- forward-only: prefill + the same number of cached decode steps, nothing else (the floor);
- ferrogen.generate and transformers' model.generate with the same settings.
Both generate exactly ``--new-tokens`` tokens (EOS is suppressed with min_new_tokens on both
sides). Prints a Markdown table of median ms per generated token and ratios.

    python benches/bench_generate.py                       # default rows
    python benches/bench_generate.py --strategies greedy --batches 1 4 --out bench.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

import ferrogen

# Settings of each strategy row; rows whose mode this build lacks are reported as skipped.
STRATEGIES: dict[str, dict[str, Any]] = {
    "greedy": dict(do_sample=False),
    "sample": dict(do_sample=True, top_k=50, top_p=0.9, temperature=0.8),
    "beam4": dict(num_beams=4, do_sample=False),
    "beam8": dict(num_beams=8, do_sample=False),
    "beam_sample4": dict(num_beams=4, do_sample=True, top_k=50),
    "group8x4": dict(num_beams=8, num_beam_groups=4, diversity_penalty=0.5, do_sample=False),
}


@dataclass
class Row:
    model: str
    batch: int
    strategy: str
    floor_ms: float
    ours_ms: Optional[float]
    theirs_ms: Optional[float]
    note: str = ""


def random_gpt2(layers: int, width: int, vocab: int = 50257) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=layers, n_embd=width, n_head=max(1, width // 64), vocab_size=vocab, n_positions=512)
    return GPT2LMHeadModel(cfg).eval()


def load_models(names: list[str]) -> dict[str, tuple[Any, int]]:
    """name -> (model, vocab size)."""
    models: dict[str, tuple[Any, int]] = {}
    for name in names:
        if name == "embedded":
            model, _ = ferrogen.text.load_model(ferrogen.embedded_model_path())
        elif name == "gpt2-2x128":
            model = random_gpt2(2, 128)
        elif name == "gpt2-6x512":
            model = random_gpt2(6, 512)
        else:
            raise SystemExit(f"--models: unknown model {name!r}")
        models[name] = (model, model.config.vocab_size)
    return models


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def forward_only(model: Any, ids: torch.Tensor, steps: int, copies: int) -> None:
    """Prefill then ``steps - 1`` cached single-token forwards: what any decoder must pay."""
    from transformers import DynamicCache

    ids = ids.repeat_interleave(copies, dim=0)
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        out = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(steps - 1):
            out = model(input_ids=token, cache=out.cache, use_cache=True)
            token = out.logits[:, -1].argmax(-1, keepdim=True)


def bench_row(name: str, model: Any, vocab: int, batch: int, strategy: str, new_tokens: int, repeats: int) -> Row:
    g = torch.Generator().manual_seed(batch)
    ids = torch.randint(3, vocab, (batch, 16), generator=g)
    mask = torch.ones_like(ids)
    settings = dict(STRATEGIES[strategy], max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0)
    copies = settings.get("num_beams", 1)
    floor = median_ms(lambda: forward_only(model, ids, new_tokens, copies), repeats) / new_tokens

    def ours() -> Any:
        return ferrogen.generate(model, input_ids=ids, attention_mask=mask, seed=0, **settings)

    def theirs() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return model.generate(input_ids=ids, attention_mask=mask, **settings)

    note = ""
    try:
        ours_ms: Optional[float] = median_ms(ours, repeats) / new_tokens
    except NotImplementedError as exc:
        ours_ms, note = None, str(exc).split(":")[0] + " not in this build"
    try:
        theirs_ms: Optional[float] = median_ms(theirs, repeats) / new_tokens
    except Exception as exc:  # strategies transformers 5.x no longer ships natively
        theirs_ms, note = None, (note + "; " if note else "") + f"transformers: {type(exc).__name__}"
    return Row(name, batch, strategy, floor, ours_ms, theirs_ms, note)


def fmt(x: Optional[float], digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def table(rows: list[Row]) -> str:
    lines = [
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"transformers {__import__('transformers').__version__}, {platform.processor() or platform.platform()}",
        "",
        "| model | batch | strategy | forward-only ms/tok | ferrogen ms/tok | transformers ms/tok "
        "| ferrogen / forward | transformers / forward | speed-up vs transformers | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio_ours = None if r.ours_ms is None else r.ours_ms / r.floor_ms
        ratio_theirs = None if r.theirs_ms is None else r.theirs_ms / r.floor_ms
        speedup = None if r.ours_ms is None or r.theirs_ms is None else r.theirs_ms / r.ours_ms
        lines.append(
            f"| {r.model} | {r.batch} | {r.strategy} | {r.floor_ms:.2f} | {fmt(r.ours_ms)} | {fmt(r.theirs_ms)} "
            f"| {fmt(ratio_ours)} | {fmt(ratio_theirs)} | {fmt(speedup)}× | {r.note} |"
        )
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["embedded", "gpt2-2x128"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--strategies", nargs="+", default=["greedy"], choices=sorted(STRATEGIES))
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    rows = []
    for name, (model, vocab) in load_models(args.models).items():
        for batch in args.batches:
            for strategy in args.strategies:
                rows.append(bench_row(name, model, vocab, batch, strategy, args.new_tokens, args.repeats))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    text = table(rows)
    print("\n" + text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
