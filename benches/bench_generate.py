"""End-to-end benchmark: ferrogen vs transformers vs the model's forward pass alone.

For every (model, batch, strategy) row, in one process and one run:
- forward-only: prefill + the same number of cached decode steps, nothing else (the floor);
- ferrogen.generate and transformers' model.generate with the same settings.
Both generate exactly ``--new-tokens`` tokens: the random models have no EOS token, the
embedded model's EOS is suppressed with min_new_tokens on both sides (a logits processor, so
on a GPU its rows take ferrogen's host path rather than device candidates). Prints a Markdown table of median ms per generated token and ratios.
The contrastive rows' floor is the forward contrastive search must run: ``top_k`` candidates
per row each step, over a cache of ``rows * top_k`` rows, with hidden states.

    python benches/bench_generate.py                       # default rows
    python benches/bench_generate.py --strategies greedy --batches 1 4 --out bench.md
    python benches/bench_generate.py --strategies contrastive --models gpt2-6x512 --batches 1 8
    python benches/bench_generate.py --assisted embedded gpt2-8x512 --batches 1 8
    python benches/bench_generate.py --strategies constrained4 --models gpt2-2x128 --batches 4

Contrastive and constrained rows time transformers 4.55.4 (5.x no longer ships contrastive
or constrained beam search) in the golden venv (``scripts/golden_venv.sh``), on the same weights, in a subprocess.
Assisted rows (``--assisted``) pair a main model with a smaller assistant sharing its
vocabulary and report ferrogen greedy, ferrogen assisted (acceptance rate, speed-up over
ferrogen greedy) and transformers' assisted generate (batch size 1 only in transformers).
"""

from __future__ import annotations

import argparse
import inspect
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
    # two constraints: a two-token phrase and one of two alternatives (ids valid in every model here)
    "constrained4": dict(num_beams=4, do_sample=False, force_words_ids=[[1000, 1001], [[2000], [3000, 3001]]]),
}
# Strategies whose transformers side runs in the golden venv (transformers 4.55.4).
GOLDEN_SIDE = {"contrastive", "constrained4"}
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
    copy_floor_ms: Optional[float] = None  # forward-only plus the one logits copy to the host per step
    ours_mb: Optional[float] = None  # extra peak memory of one generate call (host RSS, or GPU on CUDA)
    theirs_mb: Optional[float] = None


def random_gpt2(layers: int, width: int, vocab: int = 50257) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    # no EOS: every row runs to --new-tokens without a min-length processor on either side
    cfg = GPT2Config(n_layer=layers, n_embd=width, n_head=max(1, width // 64), vocab_size=vocab, n_positions=512,
                     eos_token_id=None)
    return GPT2LMHeadModel(cfg).eval()


def layered_gpt2(layers: int, width: int, vocab: int = 50257, strong: int = 2) -> Any:
    """A random GPT-2 whose first ``strong`` blocks carry most of the computation (weights std
    0.05) and the others perturb it (std 0.01): cut to ``strong`` layers it is an assistant
    that agrees with it often but not always. Default-initialised random GPT-2s just repeat
    their last token, which makes any assistant look perfect."""
    model = random_gpt2(layers, width, vocab)
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


def load_models(names: list[str], device: torch.device = torch.device("cpu")) -> dict[str, tuple[Any, int]]:
    """name -> (model on ``device``, vocab size)."""
    models: dict[str, tuple[Any, int]] = {}
    for name in names:
        if name == "embedded":
            model, _ = ferrogen.text.load_model(ferrogen.embedded_model_path())
        elif name == "gpt2-2x128":
            model = random_gpt2(2, 128)
        elif name == "gpt2-6x512":
            model = random_gpt2(6, 512)
        elif name == "gpt2-8x512":
            model = layered_gpt2(8, 512)
        else:
            raise SystemExit(f"--models: unknown model {name!r}")
        models[name] = (model.to(device), model.config.vocab_size)
    return models


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_extra_mb(fn: Callable[[], Any], device: torch.device) -> Optional[float]:
    """Extra peak memory of one ``fn()`` call over what was held before it: GPU memory
    (allocator peak) on CUDA, host RSS (sampled every millisecond) on the CPU."""
    if device.type == "cuda":
        _sync()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        _sync()
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    if not os.path.exists("/proc/self/statm"):
        return None
    import threading

    before, peak, running = _rss_bytes(), [0], [True]

    def sample() -> None:
        while running[0]:
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        running[0] = False
        sampler.join()
    return max(0, max(peak[0], _rss_bytes()) - before) / 2**20


def forward_only(model: Any, ids: torch.Tensor, steps: int, copies: int, copy_logits: bool = False,
                 candidates: int = 0) -> None:
    """Prefill then ``steps - 1`` cached single-token forwards: what any decoder must pay.
    With ``copy_logits`` each step also moves the logits to the host as float32 and picks
    there, which is what a core that decides on the host must pay on top.
    With ``candidates`` (contrastive search's ``top_k``) the prefill runs the plain batch
    and every step then runs ``candidates`` tokens per row over a cache of
    ``rows * candidates`` rows, with hidden states: the candidates' forward contrastive
    search cannot avoid (its floor)."""
    from transformers import DynamicCache

    ids = ids.repeat_interleave(copies, dim=0)
    cache = DynamicCache(config=model.config)
    # transformers 5.2x names the cache argument and output ``cache``, earlier ones ``past_key_values``
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def pick(logits: torch.Tensor) -> torch.Tensor:
        if not copy_logits:
            return logits[:, -1].argmax(-1, keepdim=True)
        host = logits[:, -1].to(device="cpu", dtype=torch.float32, copy=True)
        return host.argmax(-1, keepdim=True).to(logits.device)

    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **{key: cache})
        token = pick(out.logits)
        if candidates:
            past = getattr(out, key)
            past.batch_repeat_interleave(candidates)
            token = token.repeat_interleave(candidates, dim=0)
            for _ in range(steps):
                out = model(input_ids=token, use_cache=True, output_hidden_states=True, **{key: past})
                past = getattr(out, key)
                token = pick(out.logits)
            return
        for _ in range(steps - 1):
            out = model(input_ids=token, use_cache=True, **{key: getattr(out, key)})
            token = pick(out.logits)


def bench_row(name: str, model: Any, vocab: int, batch: int, strategy: str, new_tokens: int, repeats: int) -> Row:
    device = model.device
    g = torch.Generator().manual_seed(batch)
    ids = torch.randint(3, vocab, (batch, 16), generator=g).to(device)
    mask = torch.ones_like(ids)
    settings = dict(STRATEGIES[strategy], max_new_tokens=new_tokens, pad_token_id=0)
    if model.generation_config.eos_token_id is not None:
        settings["min_new_tokens"] = new_tokens
    copies = settings.get("num_beams", 1)
    candidates = settings["top_k"] if "penalty_alpha" in settings else 0
    floor = median_ms(lambda: forward_only(model, ids, new_tokens, copies, candidates=candidates), repeats) / new_tokens
    copy_floor = None
    if device.type == "cuda":
        copy_floor = median_ms(lambda: forward_only(model, ids, new_tokens, copies, copy_logits=True), repeats) / new_tokens

    def ours() -> Any:
        return ferrogen.generate(model, input_ids=ids, attention_mask=mask, seed=0, **settings)

    def theirs() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return model.generate(input_ids=ids, attention_mask=mask, **settings)

    note = ""
    ours_mb = theirs_mb = None
    try:
        ours_ms: Optional[float] = median_ms(ours, repeats) / new_tokens
        ours_mb = peak_extra_mb(ours, device)
    except NotImplementedError as exc:
        ours_ms, note = None, str(exc).split(":")[0] + " not in this build"
    except Exception as exc:  # a failure is a row of the table, not the end of the run
        ours_ms, note = None, f"ferrogen FAILED: {type(exc).__name__}: {str(exc)[:80]}"
    if strategy in GOLDEN_SIDE:
        theirs_ms, why = golden_ms(model, ids, mask, settings, repeats)
        theirs_ms = None if theirs_ms is None else theirs_ms / new_tokens
        note = (note + "; " if note else "") + why
    else:
        try:
            theirs_ms = median_ms(theirs, repeats) / new_tokens
            theirs_mb = peak_extra_mb(theirs, device)
        except Exception as exc:  # strategies transformers 5.x no longer ships natively
            theirs_ms, note = None, (note + "; " if note else "") + f"transformers: {type(exc).__name__}"
    return Row(name, batch, strategy, floor, ours_ms, theirs_ms, note, copy_floor, ours_mb, theirs_mb)


_GOLDEN_TIMER = """
import json, statistics, sys, time, warnings
import torch, transformers
torch.set_num_threads(int(sys.argv[2]))
device = sys.argv[3]
saved = torch.load(sys.argv[1], weights_only=False, map_location="cpu")
config = getattr(transformers, saved["config_class"])(**saved["config"])
model = getattr(transformers, saved["model_class"])(config)
model.load_state_dict(saved["state"], strict=False)
model.eval().to(device)
ids, mask = saved["ids"].to(device), saved["mask"].to(device)
def sync():
    if device.startswith("cuda"):
        torch.cuda.synchronize()
def run():
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return model.generate(input_ids=ids, attention_mask=mask, **saved["settings"])
out = run()
times = []
for _ in range(saved["repeats"]):
    sync(); start = time.perf_counter(); run(); sync(); times.append((time.perf_counter() - start) * 1e3)
print(json.dumps({"ms": statistics.median(times), "version": transformers.__version__, "tokens": out.cpu().tolist()}))
"""


def golden_ms(model: Any, ids: torch.Tensor, mask: torch.Tensor, settings: dict, repeats: int) -> tuple[Optional[float], str]:
    """Median ms of transformers 4.55.4's ``generate`` on the same weights, in the golden venv."""
    if not GOLDEN_PYTHON.exists():
        return None, "transformers 4.55: golden venv missing (scripts/golden_venv.sh)"
    config = {k: v for k, v in model.config.to_diff_dict().items() if k not in ("transformers_version", "dtype")}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        torch.save({"config_class": type(model.config).__name__, "model_class": type(model).__name__,
                    "config": config, "state": {k: v.cpu() for k, v in model.state_dict().items()},
                    "ids": ids.cpu(), "mask": mask.cpu(),
                    "settings": settings, "repeats": repeats}, path)
        done = subprocess.run([str(GOLDEN_PYTHON), "-c", _GOLDEN_TIMER, str(path), str(torch.get_num_threads()),
                               str(ids.device)],
                              capture_output=True, text=True)
    if done.returncode != 0:
        return None, "transformers 4.55 failed: " + done.stderr.strip().splitlines()[-1][:80]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    ours = ferrogen.generate(model, input_ids=ids, attention_mask=mask, **settings)
    same = "same tokens" if ours.cpu().tolist() == result["tokens"] else "TOKENS DIFFER"
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
    if name == "gpt2-8x512":
        model = layered_gpt2(8, 512)
        return model, truncated(model, 2), None
    raise SystemExit(f"--assisted: unknown pair {name!r} (embedded, gpt2-8x512)")


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


def bench_assisted(name: str, batch: int, new_tokens: int, repeats: int, knobs: dict[str, Any],
                   device: torch.device = torch.device("cpu")) -> AssistedRow:
    model, assistant, tokenizer = load_assisted(name)
    model, assistant = model.to(device), assistant.to(device)
    # transformers reads these from the assistant's generation config (ferrogen too, unless
    # the call sets them), so both sides run the same schedule.
    for key, value in knobs.items():
        setattr(assistant.generation_config, key, value)
    ids, mask = (t.to(device) for t in assisted_inputs(tokenizer, model.config.vocab_size, batch))
    settings = dict(max_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    if model.generation_config.eos_token_id is not None:
        settings["min_new_tokens"] = new_tokens

    def ours(**extra: Any) -> Any:
        return ferrogen.generate(model, input_ids=ids, attention_mask=mask, **settings, **extra)

    def theirs(**extra: Any) -> Any:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            return model.generate(input_ids=ids, attention_mask=mask, **settings, **extra)

    greedy_ms = median_ms(ours, repeats) / new_tokens
    assisted_ms = median_ms(lambda: ours(assistant_model=assistant), repeats) / new_tokens
    out = ours(assistant_model=assistant, return_dict_in_generate=True)
    note = "same tokens as greedy" if torch.equal(out.sequences, ours()) else "TOKENS DIFFER FROM GREEDY"
    theirs_greedy_ms = median_ms(theirs, repeats) / new_tokens
    try:
        theirs_ms: Optional[float] = median_ms(lambda: theirs(assistant_model=assistant), repeats) / new_tokens
    except ValueError as exc:
        theirs_ms, note = None, note + f"; transformers: {str(exc)[:60]}"
    return AssistedRow(name, batch, greedy_ms, assisted_ms, out.assisted_stats.acceptance_rate, theirs_ms,
                       theirs_greedy_ms, note)


def assisted_table(rows: list[AssistedRow]) -> str:
    lines = [
        "| main / assistant | batch | ferrogen greedy ms/tok | ferrogen assisted ms/tok | acceptance "
        "| speed-up vs greedy | transformers greedy ms/tok | transformers assisted ms/tok | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    pairs = {"embedded": "kjv-gpt2 4L / its first layer", "gpt2-8x512": "random 8x512 / its first 2 layers"}
    for r in rows:
        lines.append(
            f"| {pairs.get(r.model, r.model)} | {r.batch} | {r.greedy_ms:.2f} | {r.assisted_ms:.2f} | {r.acceptance:.0%} "
            f"| {r.greedy_ms / r.assisted_ms:.2f}× | {fmt(r.theirs_greedy_ms)} | {fmt(r.theirs_ms)} | {r.note} |"
        )
    return "\n".join(lines)


def fmt(x: Optional[float], digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def machine_line() -> str:
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads{gpu}, "
            f"torch {torch.__version__}, transformers {__import__('transformers').__version__}, "
            f"load average {os.getloadavg()[0]:.1f}")


def table(rows: list[Row]) -> str:
    memory = "GPU" if any(r.copy_floor_ms is not None for r in rows) else "RSS"
    lines = [
        machine_line(),
        "",
        "| model | batch | strategy | forward-only ms/tok | forward + logits copy ms/tok | ferrogen ms/tok "
        "| transformers ms/tok | ferrogen / forward | transformers / forward | speed-up vs transformers "
        f"| ferrogen peak {memory} MB | transformers peak {memory} MB | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio_ours = None if r.ours_ms is None else r.ours_ms / r.floor_ms
        ratio_theirs = None if r.theirs_ms is None else r.theirs_ms / r.floor_ms
        speedup = None if r.ours_ms is None or r.theirs_ms is None else r.theirs_ms / r.ours_ms
        lines.append(
            f"| {r.model} | {r.batch} | {r.strategy} | {r.floor_ms:.2f} | {fmt(r.copy_floor_ms)} | {fmt(r.ours_ms)} "
            f"| {fmt(r.theirs_ms)} | {fmt(ratio_ours)} | {fmt(ratio_theirs)} | {fmt(speedup)}× "
            f"| {fmt(r.ours_mb, 1)} | {fmt(r.theirs_mb, 1)} | {r.note} |"
        )
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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


if __name__ == "__main__":
    main()
