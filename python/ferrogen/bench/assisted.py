"""Assisted-generation rows: a main model with a smaller assistant sharing its vocabulary."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Optional

import torch

import ferrogen

from .models import layered_gpt2, truncated
from .report import fmt
from .settings import ASSISTED_PAIRS
from .timing import median_ms


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
    raise SystemExit(f"--assisted: unknown pair {name!r} (one of {', '.join(ASSISTED_PAIRS)})")


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
    settings: dict[str, Any] = dict(max_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
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
