"""End-to-end benchmark: ferrogen vs transformers vs the model's forward pass alone.

For every (model, batch, strategy) row, in one process and one run:
- forward-only: prefill + the same number of cached decode steps, nothing else (the floor);
- ferrogen.generate and transformers' model.generate with the same settings.
Both generate exactly ``--new-tokens`` tokens: the random models have no EOS token, the
embedded model's EOS is suppressed with min_new_tokens on both sides (a logits processor, so
on a GPU its rows take ferrogen's host path rather than device candidates). Prints a Markdown table of median ms per generated token and ratios.
The contrastive rows' floor is the forward contrastive search must run: ``top_k`` candidates
per row each step, over a cache of ``rows * top_k`` rows, with hidden states.

    ferrogen bench                       # default rows
    ferrogen bench --strategies greedy --batches 1 4 --out bench.md
    ferrogen bench --strategies contrastive --models gpt2-6x512 --batches 1 8
    ferrogen bench --assisted embedded gpt2-8x512 --batches 1 8
    ferrogen bench --strategies constrained4 --models gpt2-2x128 --batches 4

Contrastive, constrained and group beam rows time transformers 4.55.4 (5.x moved those
strategies to Hub repositories) in the golden venv (``scripts/golden_venv.sh``), on the same
weights, in a subprocess. ``python benches/bench_generate.py`` runs the same from a checkout.
Assisted rows (``--assisted``) pair a main model with a smaller assistant sharing its
vocabulary and report ferrogen greedy, ferrogen assisted (acceptance rate, speed-up over
ferrogen greedy) and transformers' assisted generate (batch size 1 only in transformers).
"""


from __future__ import annotations

import argparse
from typing import Any, Optional

import torch

from .assisted import assisted_table, bench_assisted
from .models import load_models, random_gpt2
from .report import machine_line, table
from .rows import STRATEGIES, Row, bench_row
from .timing import forward_only, median_ms

__all__ = ["main", "bench_row", "forward_only", "median_ms", "random_gpt2", "Row", "STRATEGIES"]


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="ferrogen bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["embedded", "gpt2-2x128"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--strategies", nargs="+", default=["greedy"], choices=sorted(STRATEGIES))
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--assisted", nargs="*", default=[], help="assisted pairs: embedded, gpt2-8x512")
    parser.add_argument("--assistant-tokens", type=int, help="num_assistant_tokens (default: transformers' 20)")
    parser.add_argument("--schedule", choices=["constant", "heuristic"], help="num_assistant_tokens_schedule")
    parser.add_argument("--confidence", type=float, help="assistant_confidence_threshold (default 0.4)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="torch device of the models (cpu, cuda)")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.assisted:
        knobs = {key: value for key, value in (("num_assistant_tokens", args.assistant_tokens),
                                               ("num_assistant_tokens_schedule", args.schedule),
                                               ("assistant_confidence_threshold", args.confidence))
                 if value is not None}
        assisted_rows = []
        for name in args.assisted:
            for batch in args.batches:
                assisted_rows.append(bench_assisted(name, batch, args.new_tokens, args.repeats, knobs,
                                                    torch.device(args.device)))
                print(assisted_table(assisted_rows[-1:]).splitlines()[-1], flush=True)
        settings = ", ".join(f"{k}={v}" for k, v in knobs.items()) or "transformers' defaults (20 drafts, constant, 0.4)"
        text = machine_line() + f"\nAssistant settings: {settings}\n\n" + assisted_table(assisted_rows)
        print("\n" + text)
        if args.out:
            with open(args.out, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        return
    rows = []
    for name, (model, vocab) in load_models(args.models, torch.device(args.device)).items():
        for batch in args.batches:
            for strategy in args.strategies:
                rows.append(bench_row(name, model, vocab, batch, strategy, args.new_tokens, args.repeats))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    text = table(rows)
    print("\n" + text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
