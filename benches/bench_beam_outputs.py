"""Beam search with ``output_attentions`` + ``output_hidden_states``: ferrogen vs transformers in
one process, on the embedded GPT-2 and T5 (eager attention, which returns the weights), with the
flags off and on, runs interleaved. Prints median ms per generated token.

    python benches/bench_beam_outputs.py [--batch 4] [--beams 4] [--new-tokens 16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

import torch  # noqa: E402

import ferrogen  # noqa: E402


def _timed(run, new_tokens: int) -> float:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1000 / new_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| model | flags | ferrogen ms/tok | transformers ms/tok | transformers ÷ ferrogen |")
    print("|---|---|---|---|---|")
    for kind in ("causal", "seq2seq"):
        model, tok = ferrogen.text.load_model(ferrogen.embedded_model_path(kind))
        model.set_attn_implementation("eager")
        tok.padding_side = "right" if model.config.is_encoder_decoder else "left"
        prompts = ["In the beginning God created", "And the earth was", "Let there be light", "And God saw"]
        enc = tok((prompts * args.batch)[: args.batch], return_tensors="pt", padding=True)
        for flags in (False, True):
            kwargs = dict(num_beams=args.beams, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                          return_dict_in_generate=True, output_attentions=flags, output_hidden_states=flags)
            ours, theirs = [], []
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for _ in range(args.repeats + 1):  # the first round warms up
                    ours.append(_timed(lambda: ferrogen.generate(model, **enc, **kwargs), args.new_tokens))
                    theirs.append(_timed(lambda: model.generate(**enc, **kwargs), args.new_tokens))
            mine, ref = statistics.median(ours[1:]), statistics.median(theirs[1:])
            label = "attentions + hidden states" if flags else "off"
            print(f"| embedded {kind} | {label} | {mine:.2f} | {ref:.2f} | {ref / mine:.2f}× |")


if __name__ == "__main__":
    main()
