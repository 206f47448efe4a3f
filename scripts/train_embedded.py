#!/usr/bin/env python3
"""Train the two tiny embedded default models shipped in ``python/ferrogen/_embedded``.

* ``kjv-gpt2`` -- GPT-2 style decoder-only causal LM (``GPT2LMHeadModel``).
* ``kjv-t5``   -- T5 style encoder-decoder (``T5ForConditionalGeneration``) trained on
  "one verse -> the verse that follows it".

Both are trained from scratch on the King James Bible (public domain) as dumped by the
Debian package ``bible-kjv`` and share one byte-level BPE tokenizer (vocab 4096,
``<pad>``=0, ``</s>``=1 (EOS), ``<unk>``=2).

Usage (from the repository root)::

    python scripts/train_embedded.py --out python/ferrogen/_embedded --minutes 8 --seed 0

Training is CPU-only on a single thread.  The number of optimisation steps is
calibrated from the time budget (``--minutes``) unless fixed with ``--gpt2-steps`` /
``--t5-steps`` (use those to reproduce a previous run step-for-step).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time

BIBLE_CMD = ["bible", "-l200", "gen1:1-rev22:21"]
VOCAB_SIZE = 4096
SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]  # ids 0, 1, 2
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2

GPT2_SEQ_LEN = 128
T5_MAX_LEN = 96


# --------------------------------------------------------------------------- text


def dump_bible() -> str:
    """Run ``bible -l200 "gen1:1-rev22:21"`` and return its stdout."""
    if shutil.which("bible") is None:
        sys.exit(
            "error: the `bible` program was not found.\n"
            "The training text comes from Debian's King James Bible package; install it with\n"
            "    sudo apt-get install bible-kjv\n"
            "and re-run this script."
        )
    try:
        res = subprocess.run(BIBLE_CMD, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as e:  # pragma: no cover - depends on system
        sys.exit(
            f"error: `{' '.join(BIBLE_CMD)}` failed (exit {e.returncode}):\n{e.stderr}\n"
            "Is the package bible-kjv installed correctly? (sudo apt-get install bible-kjv)"
        )
    return res.stdout


VERSE_RE = re.compile(r"^\s+(\d+) (.*)$")
HEADING_RE = re.compile(r"^(?:[123] )?[A-Z][A-Za-z ]+ \d+$")


def parse_chapters(raw: str) -> list[list[str]]:
    """Parse the ``bible`` dump into chapters, each a list of verse strings.

    Chapter headings ("Genesis 1") and verse numbers are dropped; verses that
    wrap onto continuation lines are joined back into one line.
    """
    chapters: list[list[str]] = []
    prev_blank = True
    for line in raw.split("\n"):
        stripped = line.strip()
        if not stripped:
            prev_blank = True
            continue
        m = VERSE_RE.match(line)
        if m:
            if not chapters:
                chapters.append([])
            chapters[-1].append(m.group(2).strip())
        elif prev_blank and HEADING_RE.match(stripped):
            chapters.append([])
        else:  # continuation of the previous verse
            if not chapters or not chapters[-1]:
                raise ValueError(f"unexpected line in bible dump: {line!r}")
            chapters[-1][-1] += " " + stripped
        prev_blank = False
    chapters = [[re.sub(r"\s+", " ", v) for v in ch] for ch in chapters if ch]
    return chapters


# ---------------------------------------------------------------------- tokenizer


def train_tokenizer(chapters: list[list[str]]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Train on chapters exactly as the GPT-2 model sees them (verses joined by "\n").
    tok.train_from_iterator(("\n".join(ch) for ch in chapters), trainer=trainer)
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()
    return tok


def wrap_tokenizer(tok):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=256,
        clean_up_tokenization_spaces=False,
    )


# ------------------------------------------------------------------------ helpers


class Schedule:
    """Linear warmup then cosine decay to 10% of the peak learning rate."""

    def __init__(self, peak: float, warmup: int, total: int):
        self.peak, self.warmup, self.total = peak, warmup, max(total, warmup + 1)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.peak * (step + 1) / self.warmup
        p = min(1.0, (step - self.warmup) / (self.total - self.warmup))
        return self.peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def train_loop(name, model, next_batch, loss_fn, minutes, fixed_steps, lr, warmup, log_every=50):
    """Run AdamW for ``fixed_steps`` or as many steps as fit into ``minutes``.

    Returns (steps, final_loss) where final_loss is the mean of the last 50 steps.
    """
    import torch

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.98), eps=1e-8,
    )
    budget = minutes * 60.0
    calib = 10
    total = fixed_steps if fixed_steps else 10**9
    sched = Schedule(lr, warmup, total)
    model.train()
    losses: list[float] = []
    t0 = time.time()
    step = 0
    while step < total:
        for g in opt.param_groups:
            g["lr"] = sched(step)
        loss = loss_fn(model, next_batch())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        step += 1
        if not fixed_steps and step == calib:
            per_step = (time.time() - t0) / calib
            total = max(calib + 1, int(budget / per_step))
            sched = Schedule(lr, warmup, total)
            print(f"[{name}] {per_step:.3f} s/step -> {total} steps in {minutes:g} min", flush=True)
        if step % log_every == 0 or step == total:
            recent = sum(losses[-log_every:]) / len(losses[-log_every:])
            print(
                f"[{name}] step {step}/{total} loss {recent:.4f} lr {sched(step - 1):.2e} "
                f"elapsed {time.time() - t0:.0f}s",
                flush=True,
            )
    model.eval()
    final = sum(losses[-50:]) / len(losses[-50:])
    print(f"[{name}] done: {step} steps in {time.time() - t0:.0f}s, final train loss {final:.4f}")
    return step, final


def save_tokenizer(hf_tok, out_dir):
    """Save tokenizer.json + tokenizer_config.json.

    transformers 5 writes ``"tokenizer_class": "TokenizersBackend"``; rewrite it to the
    portable name ``PreTrainedTokenizerFast`` (understood by transformers 4 and 5).
    """
    hf_tok.save_pretrained(out_dir)
    cfg_path = os.path.join(out_dir, "tokenizer_config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    for name in os.listdir(out_dir):  # save_pretrained may create 0600 files
        os.chmod(os.path.join(out_dir, name), 0o644)


def folder_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


# -------------------------------------------------------------------------- gpt2


def train_gpt2(chapters, tok, hf_tok, out_dir, args):
    import torch
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    # One continuous stream: chapters (verses joined by "\n") separated by </s>.
    stream: list[int] = []
    for enc in tok.encode_batch(["\n".join(ch) for ch in chapters]):
        stream.extend(enc.ids)
        stream.append(EOS_ID)
    data = torch.tensor(stream, dtype=torch.long)
    print(f"[kjv-gpt2] training stream: {len(stream)} tokens")

    cfg = GPT2Config(
        vocab_size=VOCAB_SIZE, n_positions=256, n_embd=192, n_layer=4, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=EOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
        tie_word_embeddings=True,
    )
    model = GPT2LMHeadModel(cfg)
    print(f"[kjv-gpt2] {sum(p.numel() for p in model.parameters()):,} parameters")

    bs = args.gpt2_batch

    def next_batch():
        starts = [rng.randrange(0, len(stream) - GPT2_SEQ_LEN) for _ in range(bs)]
        return torch.stack([data[s : s + GPT2_SEQ_LEN] for s in starts])

    def loss_fn(m, x):
        return m(input_ids=x, labels=x).loss

    steps, final = train_loop(
        "kjv-gpt2", model, next_batch, loss_fn, args.minutes, args.gpt2_steps,
        lr=args.gpt2_lr, warmup=100,
    )
    model.generation_config = GenerationConfig(
        bos_token_id=EOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
    )
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    save_tokenizer(hf_tok, out_dir)
    return {"steps": steps, "final_loss": final, "params": sum(p.numel() for p in model.parameters()),
            "batch": bs, "tokens": len(stream)}


# ---------------------------------------------------------------------------- t5


def train_t5(chapters, tok, hf_tok, out_dir, args):
    import torch
    from transformers import GenerationConfig, T5Config, T5ForConditionalGeneration

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed + 1)
    pairs = []
    for ch in chapters:
        enc = tok.encode_batch(ch)
        ids = [e.ids for e in enc]
        for a, b in zip(ids, ids[1:]):
            pairs.append((a[:T5_MAX_LEN], b[: T5_MAX_LEN - 1] + [EOS_ID]))
    print(f"[kjv-t5] {len(pairs)} (verse -> next verse) pairs")

    cfg = T5Config(
        vocab_size=VOCAB_SIZE, d_model=128, d_ff=512, d_kv=32, num_layers=2,
        num_decoder_layers=2, num_heads=4, dropout_rate=0.0, feed_forward_proj="relu",
        pad_token_id=PAD_ID, eos_token_id=EOS_ID, decoder_start_token_id=PAD_ID,
        tie_word_embeddings=True,
    )
    model = T5ForConditionalGeneration(cfg)
    print(f"[kjv-t5] {sum(p.numel() for p in model.parameters()):,} parameters")

    bs = args.t5_batch
    order: list[int] = []

    def next_batch():
        nonlocal order
        if len(order) < bs:
            order = list(range(len(pairs)))
            rng.shuffle(order)
        idx, order = order[:bs], order[bs:]
        srcs, tgts = [], []
        for i in idx:
            s, t = pairs[i]
            # Half the time append </s> to the input, so the model works whether or not
            # the caller's tokenizer appends EOS to the encoder input.
            srcs.append(s + [EOS_ID] if rng.random() < 0.5 else s)
            tgts.append(t)
        ls, lt = max(map(len, srcs)), max(map(len, tgts))
        x = torch.full((bs, ls), PAD_ID, dtype=torch.long)
        mask = torch.zeros((bs, ls), dtype=torch.long)
        y = torch.full((bs, lt), -100, dtype=torch.long)
        for j, (s, t) in enumerate(zip(srcs, tgts)):
            x[j, : len(s)] = torch.tensor(s)
            mask[j, : len(s)] = 1
            y[j, : len(t)] = torch.tensor(t)
        return x, mask, y

    def loss_fn(m, batch):
        x, mask, y = batch
        return m(input_ids=x, attention_mask=mask, labels=y).loss

    steps, final = train_loop(
        "kjv-t5", model, next_batch, loss_fn, args.minutes, args.t5_steps,
        lr=args.t5_lr, warmup=100,
    )
    model.generation_config = GenerationConfig(
        decoder_start_token_id=PAD_ID, pad_token_id=PAD_ID, eos_token_id=EOS_ID,
    )
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    save_tokenizer(hf_tok, out_dir)
    return {"steps": steps, "final_loss": final, "params": sum(p.numel() for p in model.parameters()),
            "batch": bs, "pairs": len(pairs)}


# ------------------------------------------------------------------------ samples


def show_samples(out_root):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    samples = {}
    d = os.path.join(out_root, "kjv-gpt2")
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModelForCausalLM.from_pretrained(d).eval()
    samples["kjv-gpt2"] = []
    for prompt in ["And God said", "In the beginning", "The LORD is my shepherd", "Blessed are"]:
        with torch.no_grad():
            out = model.generate(**tok(prompt, return_tensors="pt"), max_new_tokens=20, do_sample=False)
        text = tok.decode(out[0], skip_special_tokens=True)
        samples["kjv-gpt2"].append((prompt, text))
        print(f"[kjv-gpt2] {prompt!r} -> {text!r}")

    d = os.path.join(out_root, "kjv-t5")
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModelForSeq2SeqLM.from_pretrained(d).eval()
    samples["kjv-t5"] = []
    for src in [
        "In the beginning God created the heaven and the earth.",
        "The LORD is my shepherd; I shall not want.",
        "Jesus wept.",
        "And Moses went up unto God, and the LORD called unto him out of the mountain.",
    ]:
        with torch.no_grad():
            out = model.generate(**tok(src, return_tensors="pt"), max_new_tokens=40, do_sample=False)
        text = tok.decode(out[0], skip_special_tokens=True)
        samples["kjv-t5"].append((src, text))
        print(f"[kjv-t5] {src!r} -> {text!r}")
    return samples


# --------------------------------------------------------------------------- main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="python/ferrogen/_embedded", help="output root folder")
    ap.add_argument("--minutes", type=float, default=8.0, help="training time budget per model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gpt2-lr", type=float, default=1.5e-3, help="peak LR (100-step warmup + cosine to 10%%)")
    ap.add_argument("--t5-lr", type=float, default=2e-3, help="peak LR (100-step warmup + cosine to 10%%)")
    ap.add_argument("--gpt2-steps", type=int, default=0, help="fixed step count (overrides --minutes)")
    ap.add_argument("--t5-steps", type=int, default=0, help="fixed step count (overrides --minutes)")
    ap.add_argument("--gpt2-batch", type=int, default=16)
    ap.add_argument("--t5-batch", type=int, default=32)
    ap.add_argument("--models", default="kjv-gpt2,kjv-t5", help="comma-separated subset to train")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    random.seed(args.seed)
    torch.manual_seed(args.seed)

    raw = dump_bible()
    chapters = parse_chapters(raw)
    n_verses = sum(map(len, chapters))
    print(f"parsed {len(chapters)} chapters, {n_verses} verses")
    if len(chapters) != 1189 or n_verses != 31102:
        print("warning: expected 1189 chapters / 31102 verses (KJV)", file=sys.stderr)

    tok = train_tokenizer(chapters)
    hf_tok = wrap_tokenizer(tok)
    sample = "And God said, Let there be light: and there was light.\nJesus wept."
    assert hf_tok.decode(hf_tok(sample)["input_ids"]) == sample, "tokenizer round-trip failed"

    wanted = set(args.models.split(","))
    stats = {}
    if "kjv-gpt2" in wanted:
        stats["kjv-gpt2"] = train_gpt2(chapters, tok, hf_tok, os.path.join(args.out, "kjv-gpt2"), args)
    if "kjv-t5" in wanted:
        stats["kjv-t5"] = train_t5(chapters, tok, hf_tok, os.path.join(args.out, "kjv-t5"), args)

    for name in stats:
        d = os.path.join(args.out, name)
        stats[name]["size_bytes"] = folder_size(d)
        print(f"{d}: {folder_size(d) / 1e6:.2f} MB, final train loss {stats[name]['final_loss']:.4f}")
    if wanted >= {"kjv-gpt2", "kjv-t5"}:
        stats["samples"] = show_samples(args.out)
    stats["args"] = vars(args)
    print("STATS " + json.dumps(stats))


if __name__ == "__main__":
    main()
