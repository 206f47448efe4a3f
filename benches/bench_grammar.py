"""End to end: JSON-schema-constrained generation, ferrogen with vs without the grammar,
and transformers with xgrammar's logits processor (greedy and sampling only: xgrammar's
transformers processor refuses beams), in the same run.

    python benches/bench_grammar.py [--batches 1 8 32] [--repeats 3] [--models embedded gpt2-6x512] [--out FILE.json]

Per row of the table: seconds per call (median of the repeats) and generated tokens per
second (non-padding new tokens / time). Each grammar row also reports the ratio to the
same ferrogen call without a grammar. One torch thread (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

import ferrogen  # noqa: E402
from ferrogen import text  # noqa: E402

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "kind": {"enum": ["lamb", "ox", "dove", "goat"]},
        "age": {"type": "integer", "minimum": 0, "maximum": 999},
        "place": {
            "type": "object",
            "properties": {
                "city": {"enum": ["Zion", "Babylon", "Jericho"]},
                "holy": {"type": "boolean"},
                "gate": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 12}},
                         "required": ["n"], "additionalProperties": False},
            },
            "required": ["city", "holy", "gate"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "kind", "age", "place"],
    "additionalProperties": False,
    "x-guidance": {"whitespace_flexible": False},
}
MODES = {"greedy": dict(), "sample": dict(do_sample=True, top_k=0, seed=1), "beam4": dict(num_beams=4)}
NEW = 64


def random_gpt2(vocab: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=6, n_embd=512, n_head=8, vocab_size=vocab, n_positions=256, bos_token_id=1,
                     eos_token_id=1, pad_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def new_tokens(out, prompt_len, pad):
    return int((out[:, prompt_len:] != pad).sum())


def run(args):
    torch.set_num_threads(1)
    embedded, tok = text.load_model(ferrogen.embedded_model_path("causal"))
    tok.padding_side = "left"
    models = {"embedded 4x192": embedded}
    if "gpt2-6x512" in args.models:
        models["random gpt2 6x512"] = random_gpt2(embedded.config.vocab_size)
    if "embedded" not in args.models:
        del models["embedded 4x192"]
    xgr_proc = None
    try:
        import xgrammar as xgr

        info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=embedded.config.vocab_size, stop_token_ids=[1])
        compiled = xgr.GrammarCompiler(info).compile_json_schema(json.dumps(SCHEMA), any_whitespace=False)
        xgr_proc = lambda: xgr.contrib.hf.LogitsProcessor(compiled)  # noqa: E731  (stateful: one per call)
    except ImportError:
        print("xgrammar not installed: its rows are skipped", file=sys.stderr)
    rows = []
    for name, model in models.items():
        for batch in args.batches:
            prompts = ["And God said unto Moses, describe the offering as JSON:"] * batch
            enc = tok(prompts, return_tensors="pt", padding=True)
            plen = enc["input_ids"].shape[1]
            for mode, kw in MODES.items():
                base = dict(max_new_tokens=NEW, pad_token_id=0, eos_token_id=1, **kw)
                sec_plain, out = timed(lambda: ferrogen.generate(model, **enc, **base), args.repeats)
                sec_gram, gout = timed(lambda: ferrogen.generate(model, **enc, tokenizer=tok, json_schema=SCHEMA, **base),
                                       args.repeats)
                entry = dict(model=name, batch=batch, mode=mode,
                             ferrogen_s=sec_plain, ferrogen_tok_s=new_tokens(out, plen, 0) / sec_plain,
                             grammar_s=sec_gram, grammar_tok_s=new_tokens(gout, plen, 0) / sec_gram,
                             grammar_tokens=new_tokens(gout, plen, 0))
                entry["grammar_per_token_ratio"] = entry["ferrogen_tok_s"] / entry["grammar_tok_s"]
                if xgr_proc is not None and mode != "beam4":
                    hkw = {k: v for k, v in base.items() if k != "seed"}
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        torch.manual_seed(1)
                        sec_x, xout = timed(lambda: model.generate(**enc, logits_processor=[xgr_proc()], **hkw),
                                            args.repeats)
                    entry.update(transformers_xgrammar_s=sec_x, transformers_xgrammar_tok_s=new_tokens(xout, plen, 0) / sec_x)
                rows.append(entry)
                print(json.dumps(entry), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--models", nargs="+", choices=["embedded", "gpt2-6x512"], default=["embedded", "gpt2-6x512"])
    p.add_argument("--out")
    run(p.parse_args())
