"""Device check: every strategy runs on CUDA, and the deterministic ones match transformers there.

Run by ``benches/gpu.sh`` on a lent GPU machine before the timings; prints one line per
strategy (``ok``, ``same tokens as transformers`` / ``TOKENS DIFFER``, or the error) and
exits 1 if any strategy failed to run.

    python benches/gpu_check.py [--device cuda]
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings

import torch

import ferrogen

CASES = {
    "greedy": dict(do_sample=False),
    "sample": dict(do_sample=True, top_k=50, top_p=0.9, seed=0),
    "beam4": dict(num_beams=4, num_return_sequences=2),
    "beam_sample4": dict(num_beams=4, do_sample=True, seed=0),
    "group4x2": dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5),
    "constrained4": dict(num_beams=4, force_words_ids=[[100, 101]]),
    "contrastive": dict(penalty_alpha=0.6, top_k=4),
    "prompt_lookup": dict(prompt_lookup_num_tokens=3),
}
# transformers 5.x runs these natively on the same device: tokens must be identical.
COMPARE = {"greedy", "beam4"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=128, n_head=2, vocab_size=1000, n_positions=128,
                                      bos_token_id=1, eos_token_id=2))
    model = model.eval().to(args.device)
    ids = torch.randint(3, 1000, (3, 8), generator=torch.Generator().manual_seed(1))
    ids[:, :4] = ids[:, 4:]  # repeated n-grams give prompt lookup something to draft
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # one left-padded row
    ids, mask = ids.to(args.device), mask.to(args.device)
    failed = 0
    for name, settings in CASES.items():
        common = dict(max_new_tokens=12, pad_token_id=0, **settings)
        try:
            ours = ferrogen.generate(model, input_ids=ids, attention_mask=mask, **common)
            line = f"{name}: ok, shape {tuple(ours.shape)}, device {ours.device}"
            if name in COMPARE:
                with warnings.catch_warnings(), torch.no_grad():
                    warnings.simplefilter("ignore")
                    theirs = model.generate(input_ids=ids, attention_mask=mask, **common)
                same = torch.equal(ours.cpu(), theirs.cpu())
                line += ", same tokens as transformers" if same else ", TOKENS DIFFER from transformers"
                failed += not same
        except Exception:
            failed += 1
            line = f"{name}: FAILED\n" + traceback.format_exc(limit=6)
        print(line, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
