"""End-to-end benchmark: ferrogen vs transformers vs the model's forward pass alone.

For every (model, batch, strategy) row, in one process and one run:
- forward-only: prefill + the same number of cached decode steps, nothing else (the floor);
- ferrogen.generate and transformers' model.generate with the same settings.
Both generate exactly ``--new-tokens`` tokens (EOS is suppressed with min_new_tokens on both
sides). Prints a Markdown table of median ms per generated token and ratios.

    python benches/bench_generate.py                       # default rows
    python benches/bench_generate.py --strategies greedy --batches 1 4 --out bench.md
    python benches/bench_generate.py --strategies contrastive --models gpt2-6x512 --batches 1 8
    python benches/bench_generate.py --assisted embedded gpt2-8x1024 --batches 1 8

Contrastive rows time transformers 4.55.4 (5.x no longer ships contrastive search) in the
golden venv (``scripts/golden_venv.sh``), on the same weights, in a subprocess.
Assisted rows (``--assisted``) pair a main model with a smaller assistant sharing its
vocabulary and report ferrogen greedy, ferrogen assisted (acceptance rate, speed-up over
ferrogen greedy) and transformers' assisted generate (batch size 1 only in transformers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
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
    "contrastive": dict(penalty_alpha=0.6, top_k=4, do_sample=False),
}
# Strategies whose transformers side runs in the golden venv (transformers 4.55.4).
GOLDEN_SIDE = {"contrastive"}
GOLDEN_PYTHON = Path(os.environ.get("FERROGEN_GOLDEN_VENV", Path.home() / ".cache/ferrogen-ci/golden-venv")) / "bin/python"


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


def layered_gpt2(layers: int, width: int, vocab: int = 50257, strong: int = 2) -> Any:
    """A random GPT-2 whose first ``strong`` blocks carry most of the computation (weights std
    0.05) and the others perturb it (std 0.01): cut to ``strong`` layers it is an assistant
    that agrees with it often but not always. Default-initialised random GPT-2s just repeat
    their last token, which makes any assistant look perfect."""
    model = random_gpt2(layers, width, vocab)
    for config in (model.config, model.generation_config):
        config.bos_token_id = config.eos_token_id = 1  # GPT-2's 50256 is outside a small vocabulary
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ln" in name:
                continue
            weak = name.startswith("transformer.h.") and int(name.split(".")[2]) >= strong
            param.normal_(0.0, 0.01 if weak else 0.05)
    return model


def truncated(model: Any, layers: int) -> Any:
    """``model`` keeping its first ``layers`` blocks (same embeddings, final norm, head)."""
    cfg = model.config.__class__(**{**model.config.to_dict(), "n_layer": layers})
    small = type(model)(cfg)
    keep = {k: v for k, v in model.state_dict().items()
            if not k.startswith("transformer.h.") or int(k.split(".")[2]) < layers}
    small.load_state_dict(keep)
    return small.eval()


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
    if strategy in GOLDEN_SIDE:
        theirs_ms, why = golden_ms(model, ids, mask, settings, repeats)
        theirs_ms = None if theirs_ms is None else theirs_ms / new_tokens
        note = (note + "; " if note else "") + why
        return Row(name, batch, strategy, floor, ours_ms, theirs_ms, note)
    try:
        theirs_ms: Optional[float] = median_ms(theirs, repeats) / new_tokens
    except Exception as exc:  # strategies transformers 5.x no longer ships natively
        theirs_ms, note = None, (note + "; " if note else "") + f"transformers: {type(exc).__name__}"
    return Row(name, batch, strategy, floor, ours_ms, theirs_ms, note)


_GOLDEN_TIMER = """
import json, statistics, sys, time, warnings
import torch, transformers
torch.set_num_threads(int(sys.argv[2]))
saved = torch.load(sys.argv[1], weights_only=False)
config = getattr(transformers, saved["config_class"])(**saved["config"])
model = getattr(transformers, saved["model_class"])(config)
model.load_state_dict(saved["state"], strict=False)
model.eval()
def run():
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return model.generate(input_ids=saved["ids"], attention_mask=saved["mask"], **saved["settings"])
out = run()
times = []
for _ in range(saved["repeats"]):
    start = time.perf_counter(); run(); times.append((time.perf_counter() - start) * 1e3)
print(json.dumps({"ms": statistics.median(times), "version": transformers.__version__, "tokens": out.tolist()}))
"""


def golden_ms(model: Any, ids: torch.Tensor, mask: torch.Tensor, settings: dict, repeats: int) -> tuple[Optional[float], str]:
    """Median ms of transformers 4.55.4's ``generate`` on the same weights, in the golden venv."""
    if not GOLDEN_PYTHON.exists():
        return None, "transformers 4.55: golden venv missing (scripts/golden_venv.sh)"
    config = {k: v for k, v in model.config.to_diff_dict().items() if k not in ("transformers_version", "dtype")}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        torch.save({"config_class": type(model.config).__name__, "model_class": type(model).__name__,
                    "config": config, "state": model.state_dict(), "ids": ids, "mask": mask,
                    "settings": settings, "repeats": repeats}, path)
        done = subprocess.run([str(GOLDEN_PYTHON), "-c", _GOLDEN_TIMER, str(path), str(torch.get_num_threads())],
                              capture_output=True, text=True)
    if done.returncode != 0:
        return None, "transformers 4.55 failed: " + done.stderr.strip().splitlines()[-1][:80]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    ours = ferrogen.generate(model, input_ids=ids, attention_mask=mask, **settings)
    same = "same tokens" if ours.tolist() == result["tokens"] else "TOKENS DIFFER"
    return result["ms"], f"transformers {result['version']} (golden venv), {same}"


@dataclass
class AssistedRow:
    model: str
    batch: int
    greedy_ms: float
    assisted_ms: float
    acceptance: float
    theirs_ms: Optional[float]
    theirs_greedy_ms: Optional[float]
    note: str = ""


def load_assisted(name: str) -> tuple[Any, Any, Optional[Any]]:
    """(main, assistant, tokenizer or None) of an assisted row."""
    if name == "embedded":
        model, tokenizer = ferrogen.text.load_model(ferrogen.embedded_model_path())
        return model, truncated(model, 1), tokenizer
    if name == "gpt2-8x1024":
        # A small vocabulary, so that the output projection (as costly for the assistant as
        # for the main model) does not dominate: the assistant costs about a third of the main.
        model = layered_gpt2(8, 1024, vocab=8192)
        return model, truncated(model, 2), None
    raise SystemExit(f"--assisted: unknown pair {name!r} (embedded, gpt2-8x1024)")


_KJV = ["In the beginning God created the heaven and the earth.",
        "And God said, Let there be light: and there was light.",
        "The LORD is my shepherd; I shall not want.",
        "And the earth was without form, and void; and darkness was upon",
        "Blessed are the meek: for they shall inherit the earth.",
        "For God so loved the world, that he gave his only begotten Son,",
        "And Jesus answered and said unto them,",
        "Now the serpent was more subtil than any beast of the field"]


def assisted_inputs(tokenizer: Any, vocab: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded real text for a trained model, random ids for a random one."""
    if tokenizer is None:
        ids = torch.randint(3, vocab, (batch, 16), generator=torch.Generator().manual_seed(batch))
        return ids, torch.ones_like(ids)
    rows = [tokenizer(_KJV[i % len(_KJV)])["input_ids"] for i in range(batch)]
    width = max(map(len, rows))
    ids = torch.zeros((batch, width), dtype=torch.long)
    mask = torch.zeros((batch, width), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, width - len(row):] = torch.tensor(row)
        mask[r, width - len(row):] = 1
    return ids, mask


def bench_assisted(name: str, batch: int, new_tokens: int, repeats: int, knobs: dict[str, Any]) -> AssistedRow:
    model, assistant, tokenizer = load_assisted(name)
    # transformers reads these from the assistant's generation config (ferrogen too, unless
    # the call sets them), so both sides run the same schedule.
    for key, value in knobs.items():
        setattr(assistant.generation_config, key, value)
    ids, mask = assisted_inputs(tokenizer, model.config.vocab_size, batch)
    settings = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)

    def ours(**extra: Any) -> Any:
        return ferrogen.generate(model, input_ids=ids, attention_mask=mask, **settings, **extra)

    def theirs(**extra: Any) -> Any:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            return model.generate(input_ids=ids, attention_mask=mask, **settings, **extra)

    out = ours(assistant_model=assistant, return_dict_in_generate=True)
    note = "same tokens as greedy" if torch.equal(out.sequences, ours()) else "TOKENS DIFFER FROM GREEDY"
    runs: dict[str, Callable[[], Any]] = {
        "greedy": ours, "assisted": lambda: ours(assistant_model=assistant), "theirs_greedy": theirs,
        "theirs": lambda: theirs(assistant_model=assistant),
    }
    try:
        runs["theirs"]()
    except ValueError as exc:  # transformers refuses batches
        del runs["theirs"]
        note += f"; transformers: {str(exc)[:60]}"
    ms = {key: value / new_tokens for key, value in interleaved_ms(runs, repeats).items()}
    return AssistedRow(name, batch, ms["greedy"], ms["assisted"], out.assisted_stats.acceptance_rate, ms.get("theirs"),
                       ms["theirs_greedy"], note)


def interleaved_ms(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median ms of each run, the runs taking turns, so that load changes hit them alike."""
    times: dict[str, list[float]] = {key: [] for key in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(repeats):
        for key, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[key].append((time.perf_counter() - start) * 1e3)
    return {key: statistics.median(values) for key, values in times.items()}


def assisted_table(rows: list[AssistedRow]) -> str:
    lines = [
        "| main / assistant | batch | ferrogen greedy ms/tok | ferrogen assisted ms/tok | acceptance "
        "| speed-up vs greedy | transformers greedy ms/tok | transformers assisted ms/tok | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    pairs = {"embedded": "kjv-gpt2 4L / its first layer", "gpt2-8x1024": "random 8x1024 (vocab 8192) / its first 2 layers"}
    for r in rows:
        lines.append(
            f"| {pairs.get(r.model, r.model)} | {r.batch} | {r.greedy_ms:.2f} | {r.assisted_ms:.2f} | {r.acceptance:.0%} "
            f"| {r.greedy_ms / r.assisted_ms:.2f}× | {fmt(r.theirs_greedy_ms)} | {fmt(r.theirs_ms)} | {r.note} |"
        )
    return "\n".join(lines)


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
    parser.add_argument("--assisted", nargs="*", default=[], help="assisted pairs: embedded, gpt2-8x1024")
    parser.add_argument("--assistant-tokens", type=int, help="num_assistant_tokens (default: transformers' 20)")
    parser.add_argument("--schedule", choices=["constant", "heuristic"], help="num_assistant_tokens_schedule")
    parser.add_argument("--confidence", type=float, help="assistant_confidence_threshold (default 0.4)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
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
                assisted_rows.append(bench_assisted(name, batch, args.new_tokens, args.repeats, knobs))
                print(assisted_table(assisted_rows[-1:]).splitlines()[-1], flush=True)
        settings = ", ".join(f"{k}={v}" for k, v in knobs.items()) or "transformers' defaults (20 drafts, constant, 0.4)"
        text = table([]).split("\n\n")[0] + f"\nAssistant settings: {settings}\n\n" + assisted_table(assisted_rows)
        print("\n" + text)
        if args.out:
            with open(args.out, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        return
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
