"""Where a batch-engine run spends its work: process time, decode steps, row-steps and cache width.

Runs ``generate_texts`` (greedy, continuous batching) over the dataset bench's prompts with the
adapter's ``advance`` wrapped to count what each decode step feeds the model: rows, the cache's
width (columns every row's attention reads) and the rows' real lengths (unmasked columns). It
imports ferrogen from ``PYTHONPATH``, so two checkouts compare with one command each, in turns
(process time: the VM's wall clock moves with its neighbours):

    git worktree add /tmp/old <commit>   # and copy python/ferrogen/_core.abi3.so into it
    for tree in $PWD /tmp/old; do PYTHONPATH=$tree/python python benches/bench_engine_steps.py 1000 64; done
"""

from __future__ import annotations

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ferrogen  # noqa: E402
import ferrogen.models as models  # noqa: E402
from bench_dataset import prompts  # noqa: E402
from ferrogen.engine import generate_texts  # noqa: E402


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    torch.set_num_threads(1)
    gen = ferrogen.pipeline()
    tok = gen.tokenizer
    eos = [tok.eos_token_id, tok.convert_tokens_to_ids(tok.tokenize("\n"))[-1]]
    seen = dict(steps=0, rows=0, width=0, real=0, seconds=0.0)
    advance = models.DecoderOnlyAdapter.advance

    def counted(self: models.DecoderOnlyAdapter, tokens: torch.Tensor) -> torch.Tensor:
        start = time.process_time()
        logits = advance(self, tokens)
        seen["seconds"] += time.process_time() - start
        rows, width = int(tokens.shape[0]), int(self._cache.get_seq_length())
        seen["steps"] += 1
        seen["rows"] += rows
        seen["width"] += rows * width
        seen["real"] += int(self._mask.sum()) if self._mask is not None else rows * width
        return logits

    models.DecoderOnlyAdapter.advance = counted  # type: ignore[method-assign]
    texts = prompts(n)
    settings = dict(max_new_tokens=64, eos_token_id=eos, pad_token_id=0, do_sample=False)
    generate_texts(gen, texts[:32], 16, max_new_tokens=8)  # warm-up
    seen.update(steps=0, rows=0, width=0, real=0, seconds=0.0)
    start = time.process_time()
    results = generate_texts(gen, texts, batch, **settings)
    total = time.process_time() - start
    rows = max(int(seen["rows"]), 1)
    print(f"{ferrogen.__file__}: batch {batch}, {n} prompts, process time {total:.2f} s, "
          f"{sum(len(r.token_ids) for r in results)} tokens; decode steps {seen['steps']}, row-steps {rows}, "
          f"width {seen['width'] / rows:.1f} (real {seen['real'] / rows:.1f}), decode time {seen['seconds']:.2f} s "
          f"({1e3 * seen['seconds'] / rows:.3f} ms per row-step)")


if __name__ == "__main__":
    main()
