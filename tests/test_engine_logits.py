"""The batch engine's per-step logits against transformers (issue 19): every row of a continuous
batch (finished rows dropped, new prompts prefilled and merged, caches left-padded and trimmed)
gets, at every step, the next-token logits transformers' ``generate`` gives that prompt alone.

Tokens alone can hide a wrong position or mask: a tiny random model often picks the same tokens
from slightly wrong logits. So each row's logits (before any processor, captured through
``EngineHooks.on_logits``) are compared with ``output_logits`` of ``model.generate`` on the
prompt alone, for every architecture whose cache merges and for those that only shrink.
"""

from __future__ import annotations

import functools
import random
import warnings
from collections import defaultdict
from typing import Any

import pytest
import torch

import ferrogen
from ferrogen import engine_feed
from ferrogen.engine import generate_texts
from ferrogen.strategies.running_rows import EngineHooks

from architectures import VOCAB, build
from test_engine_continuous import STOPS, DigitsTokenizer

#: name -> how to build it. Mistral without a sliding window has full-attention layers (merges);
#: with its window of 4 it only shrinks, as Mamba (SSM state) and BART (absolute decoder positions).
MODELS: dict[str, Any] = {
    "gpt2": lambda: build("gpt2"),
    "llama": lambda: build("llama"),
    "mistral": lambda: build("mistral", sliding_window=None),
    "t5": lambda: build("t5"),
    "mistral_window": lambda: build("mistral"),
    "mamba": lambda: build("mamba"),
    "bart": lambda: build("bart"),
}
MERGING = ["gpt2", "llama", "mistral", "t5"]
SHRINKING = ["mistral_window", "mamba", "bart"]

# Prompts of very different lengths (1 to 50 tokens); the engine runs them shortest first, so a
# merged group is longer than the rows it joins, and the batch of 3 is refilled many times.
LENGTHS = [7, 1, 33, 2, 12, 50, 4, 21, 3, 9, 40, 5, 16, 2, 27]
MAX_NEW = 12

# How the tolerance was chosen: the largest |engine - transformers alone| over every step of every
# row, measured on this box (fp32, one torch thread), is 2.5e-7 (gpt2), 3.0e-7 (t5), 2.3e-6 (bart),
# 2.7e-6 (windowed mistral), 3.7e-6 (mamba), 5.3e-6 (llama, mistral), for logits up to 1-7 in size;
# transformers' own left-padded batches of 3 of these prompts differ from the prompts alone by as
# much (up to 4.4e-6): padded attention sums in another order. The tolerance is about 4x the worst.
# A wrong position or a visible padding column after a merge moves logits by 1e-3 or more.
ATOL = 2e-5


@pytest.fixture(scope="module")
def models(one_torch_thread):
    return {name: make() for name, make in MODELS.items()}


def _prompts() -> list[list[int]]:
    rng = random.Random(7)
    return [[rng.randrange(3, VOCAB) for _ in range(n)] for n in LENGTHS]


def _engine_run(model: Any, prompts: list[list[int]], settings: dict[str, Any], monkeypatch):
    """Each prompt's (tokens, per-step logits) from the continuous engine, and the running
    batch's slots at every step."""
    captured: dict[int, list[torch.Tensor]] = defaultdict(list)
    steps: list[list[int]] = []

    def on_logits(slots: list[int], logits: torch.Tensor) -> None:
        steps.append(list(slots))
        for row, slot in enumerate(slots):
            captured[slot].append(logits[row].detach().clone())

    monkeypatch.setattr(engine_feed, "EngineHooks", functools.partial(EngineHooks, on_logits=on_logits))
    generator = ferrogen.TextGenerator(model, DigitsTokenizer())
    texts = [" ".join(map(str, ids)) for ids in prompts]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = generate_texts(generator, texts, batch_size=3, refill_fraction=0.25, **settings)
    return [(r.token_ids, captured[slot]) for slot, r in enumerate(results)], steps


def _reference(model: Any, ids: list[int], settings: dict[str, Any]) -> tuple[list[int], list[torch.Tensor]]:
    """transformers' tokens and raw per-step logits for ``ids`` alone."""
    input_ids = torch.tensor([ids])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), output_logits=True,
                             return_dict_in_generate=True, **settings)
    skip = 1 if model.config.is_encoder_decoder else input_ids.shape[1]
    return out.sequences[0, skip:].tolist(), [step[0] for step in out.logits]


def _merges(steps: list[list[int]]) -> int:
    """Steps at which slots joined a batch that was still running."""
    return sum(1 for prev, cur in zip(steps, steps[1:]) if set(cur) - set(prev) and set(prev) & set(cur))


@pytest.mark.parametrize("name", MERGING + SHRINKING)
def test_every_rows_logits_match_transformers_alone(models, name, monkeypatch):
    model = models[name]
    settings = dict(do_sample=False, max_new_tokens=MAX_NEW, eos_token_id=STOPS, pad_token_id=0)
    prompts = _prompts()
    rows, steps = _engine_run(model, prompts, settings, monkeypatch)
    if name in MERGING:
        assert _merges(steps) >= 3, steps  # rows were dropped and prompts merged several times
    else:
        assert _merges(steps) == 0 and any(len(b) < len(a) for a, b in zip(steps, steps[1:])), steps
    worst = 0.0
    for prompt, (tokens, logits) in zip(prompts, rows):
        want_tokens, want_logits = _reference(model, prompt, settings)
        assert tokens == want_tokens, (len(prompt), tokens, want_tokens)
        assert len(logits) == len(want_logits) == len(tokens)
        for step, (got, want) in enumerate(zip(logits, want_logits)):
            diff = float((got - want).abs().max())
            worst = max(worst, diff)
            assert diff <= ATOL, f"prompt of {len(prompt)} tokens, step {step}: max abs diff {diff:.3g}"
    print(f"{name}: max abs logit diff {worst:.3g}, logits up to {max(float(x.abs().max()) for _, ls in rows for x in ls):.3g}")
