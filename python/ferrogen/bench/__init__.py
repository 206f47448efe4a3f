"""End-to-end benchmark: ferrogen vs transformers vs the model's forward pass alone.

For every (model, batch, strategy) row, in one process and one run:
- forward-only: prefill + the same number of cached decode steps, nothing else (the floor), with
  transformers' ``DynamicCache`` (a ``torch.cat`` of every layer per step; ferrogen's growing
  cache layers skip that copy, so greedy search and sampling can read below 1.0× of it);
- ferrogen.generate and transformers' model.generate with the same settings.
Both generate exactly ``--new-tokens`` tokens: the random models have no EOS token, the
embedded model's EOS is suppressed with min_new_tokens on both sides (a logits processor, so
on a GPU its rows take ferrogen's host path rather than device candidates). Prints a Markdown table of median ms per generated token and ratios.
Sampling rows pass ``seed=0`` to ferrogen (its own counter-based noise), except
``beam_sample4_torchrng``: no seed, ferrogen draws transformers' noise from torch's global
generator; both sides run after ``torch.manual_seed(0)`` and the note says whether the tokens agree.
The contrastive rows' floor is the forward contrastive search must run: ``top_k`` candidates
per row each step, over a cache of ``rows * top_k`` rows, with hidden states.

    ferrogen bench                       # default rows
    ferrogen bench --strategies greedy --batches 1 4 --out bench.md
    ferrogen bench --strategies contrastive --models gpt2-6x512 --batches 1 8
    ferrogen bench --assisted embedded gpt2-8x512 --batches 1 8
    ferrogen bench --strategies constrained4 --models gpt2-2x128 --batches 4
    ferrogen bench --strategies greedy beam4 --models gpt2-2x128 --plot bench.png
    ferrogen bench --startup --repeats 5  # start-up: fresh processes vs import torch + load the model

Contrastive, constrained, group beam and DoLa (``dola-high``) rows time transformers 4.55.4 (5.x
moved those strategies to Hub repositories) in the golden venv (``scripts/golden_venv.sh``), on the same
weights, in a subprocess. ``python benches/bench_generate.py`` runs the same from a checkout.
Assisted rows (``--assisted``) pair a main model with a smaller assistant sharing its
vocabulary and report ferrogen greedy, ferrogen assisted (acceptance rate, speed-up over
ferrogen greedy) and transformers' assisted generate (batch size 1 only in transformers).
"""


from __future__ import annotations

import argparse
import importlib
from typing import Any, Optional

from .settings import ASSISTED_PAIRS, MODELS, STRATEGIES

__all__ = ["main", "bench_row", "forward_only", "median_ms", "random_gpt2", "Row", "STRATEGIES"]

# torch and the models load after the arguments parse: --help and a bad flag answer at once
_LAZY = {"bench_row": "rows", "Row": "rows", "forward_only": "timing", "median_ms": "timing",
         "random_gpt2": "models"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _names(table: dict[str, str]) -> str:
    return "; ".join(f"{name}: {what}" for name, what in table.items())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ferrogen bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["embedded", "gpt2-2x128"], choices=list(MODELS),
                        metavar="MODEL", help=f"models to time (default: embedded gpt2-2x128). {_names(MODELS)}")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--strategies", nargs="+", default=["greedy"], choices=sorted(STRATEGIES),
                        metavar="STRATEGY", help=f"rows to time (default: greedy): {', '.join(sorted(STRATEGIES))}")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row, or rounds of --startup (default 5)")
    parser.add_argument("--assisted", nargs="*", default=[], choices=list(ASSISTED_PAIRS), metavar="PAIR",
                        help=f"assisted pairs instead of the strategy rows. {_names(ASSISTED_PAIRS)}")
    parser.add_argument("--assistant-tokens", type=int, help="num_assistant_tokens (default: transformers' 20)")
    parser.add_argument("--schedule", choices=["constant", "heuristic"], help="num_assistant_tokens_schedule")
    parser.add_argument("--confidence", type=float, help="assistant_confidence_threshold (default 0.4)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="torch device of the models (cpu, cuda)")
    parser.add_argument("--out", help="also write the table to this file")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="also draw the table: ms per token of forward-only, ferrogen and transformers per "
                             "row, one panel per strategy (needs matplotlib: pip install 'ferrogen[plot]')")
    parser.add_argument("--startup", action="store_true",
                        help="time start-up instead: fresh processes importing ferrogen, torch, transformers, "
                             "loading the model and `ferrogen generate --max-new-tokens 1` (--repeats rounds)")
    parser.add_argument("--startup-baseline", metavar="DIR",
                        help="with --startup: also run the ferrogen cases from DIR (another checkout's python/ "
                             "directory) in the same rounds, to compare before and after a change")
    return parser


def main(argv: Optional[list[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    if args.plot:
        if args.startup or args.assisted:
            raise SystemExit("--plot: draws the strategy table; leave out --startup and --assisted")
        from .plot import require_matplotlib

        require_matplotlib()
    if args.startup:
        _startup(args)
        return
    import torch

    from .report import machine_line

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.assisted:
        _assisted(args)
        return
    from .models import load_models
    from .report import table
    from .rows import bench_row

    rows = []
    for name, (model, vocab) in load_models(args.models, torch.device(args.device)).items():
        for batch in args.batches:
            for strategy in args.strategies:
                rows.append(bench_row(name, model, vocab, batch, strategy, args.new_tokens, args.repeats))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    text = table(rows)
    print("\n" + text)
    _write(args.out, text)
    if args.plot:
        from .plot import plot

        plot(rows, args.plot, title=f"{machine_line()}, {args.new_tokens} new tokens, median of {args.repeats}")
        print(f"plot: {args.plot}")


def _write(path: Optional[str], text: str) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text + "\n")


def _startup(args: argparse.Namespace) -> None:
    from .report import machine_line
    from .startup import measure, startup_table

    text = machine_line() + "\n\n" + startup_table(measure(args.repeats, args.startup_baseline), args.repeats)
    print(text)
    _write(args.out, text)


def _assisted(args: argparse.Namespace) -> None:
    import torch

    from .assisted import assisted_table, bench_assisted
    from .report import machine_line

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
    _write(args.out, text)
