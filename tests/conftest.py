"""Small models built in-process with fixed seeds (random weights are enough for parity)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from fallback_counter import count_fallbacks, pytest_configure, pytest_terminal_summary  # noqa: F401 (hooks)

VOCAB = 96


def _seeded(build, std=None):
    """Builds with a fixed seed; ``std`` re-draws every non-norm weight, for models whose
    default init is so flat that greedy decoding repeats one token (T5)."""
    torch.manual_seed(0)
    model = build()
    if std is not None:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "norm" not in name:
                    param.normal_(0.0, std)
    model.eval()
    return model


@pytest.fixture(scope="session")
def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=128, bos_token_id=1, eos_token_id=2)
    return _seeded(lambda: GPT2LMHeadModel(cfg))


@pytest.fixture(scope="session")
def neox():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cfg = GPTNeoXConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        vocab_size=VOCAB, max_position_embeddings=128, bos_token_id=1, eos_token_id=2,
    )
    return _seeded(lambda: GPTNeoXForCausalLM(cfg))


@pytest.fixture(scope="session")
def t5():
    from transformers import T5Config, T5ForConditionalGeneration

    cfg = T5Config(
        vocab_size=VOCAB, d_model=64, d_ff=128, d_kv=16, num_layers=2, num_decoder_layers=2, num_heads=4,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )
    return _seeded(lambda: T5ForConditionalGeneration(cfg), std=0.3)


@pytest.fixture(scope="session")
def tiny_llama():
    """A tiny random Llama (tests/architectures.py), the parity tests' second decoder beside ``gpt2``."""
    from architectures import build

    return build("llama")


@pytest.fixture(params=["gpt2", "llama"])
def decoder(request, gpt2, tiny_llama):
    """The tiny GPT-2, then the tiny Llama."""
    return gpt2 if request.param == "gpt2" else tiny_llama


@pytest.fixture(scope="session")
def stored():
    """The tiny GPT-2 and T5 stored under tests/data, which the goldens were made with."""
    from golden_models import load_stored

    return {name: load_stored(name) for name in ("gpt2", "t5")}


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny models: one torch thread is faster than several spinning ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=["gpt2", "neox", "t5"])
def any_model(request):
    return request.getfixturevalue(request.param)


def left_padded_batch(lengths=(5, 3, 7, 1), pad_id=0, seed=1):
    """A left-padded batch of random prompts of the given lengths (ids 3..VOCAB-1)."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.full((len(lengths), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, width - n :] = torch.randint(3, VOCAB, (n,), generator=g)
        mask[row, width - n :] = 1
    return ids, mask


def prompts(rows=2, length=6, seed=3):
    """A ``[rows, length]`` batch of random prompts without padding (ids 3..VOCAB-1)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (rows, length), generator=g)


def hf_generate(model, ids, mask, **kwargs):
    """transformers' own generate, quiet."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            return model.generate(input_ids=ids, attention_mask=mask, **kwargs)


@pytest.fixture
def tokenized(monkeypatch):
    """``tokenized(tok)``: a list that collects every text ``tok`` is called on from now on (in
    order, one entry per prompt), for tests that count tokenizations; undone after the test."""

    def watch(tok):
        seen = []
        call = type(tok).__call__

        def counting(self, text=None, *args, **kwargs):
            if self is tok:
                seen.extend([text] if isinstance(text, str) else list(text))
            return call(self, text, *args, **kwargs)

        monkeypatch.setattr(type(tok), "__call__", counting)
        return seen

    return watch


def assert_close_to_golden(ours: torch.Tensor, theirs: torch.Tensor, msg: Any = None) -> None:
    """``ours`` (computed here) against a value recorded in a golden file on another machine.

    Goldens are recorded once, on one CPU; another CPU's matrix kernels round differently in the
    last bits. Measured (2026-12-07): transformers 4.55.4 itself, rerun on an AMD EPYC, differs
    from the goldens recorded on an Intel Xeon by up to 2.5e-4 in T5 hidden states (largest
    magnitude 33), 1.2e-4 in attention probabilities and 5e-5 in log-prob scores, while ferrogen
    equals transformers on the same machine bit for bit (batch-3 contrastive cases). The tolerance
    covers that (2e-4 plus 2e-5 of the tensor's largest magnitude, and 1e-4 relative); a real
    defect (a wrong mask, position or processor) moves values by 1e-2 or more. Comparisons
    against transformers run live in the same process keep their own, tighter tolerances."""
    scale = float(theirs.abs().max()) if theirs.numel() else 0.0
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=2e-4 + 2e-5 * scale, msg=msg)


def assert_same_row(tokens: list[int], other: list[int], logits: Any, other_logits: Any, atol: float = 1e-4) -> int:
    """One row run two ways (alone and in a batch, say): the same tokens, up to a near tie.

    torch's matrix kernels are not bit-invariant to the batch's shape on every CPU (an AMD EPYC
    gives a row's logits ~2e-6 apart alone and in a batch; an Intel Xeon gives the same bits).
    So: every step's logits (``[vocab]`` per step) agree within ``atol``, and the tokens are equal
    up to the first step where they part, which must be a step whose logits did differ in their
    bits (with the same logits, the same seeded choice must follow). Returns the steps compared
    with equal tokens."""
    steps = min(len(tokens), len(other), len(logits), len(other_logits))
    for step in range(steps):
        torch.testing.assert_close(logits[step], other_logits[step], rtol=0, atol=atol, msg=f"logits at step {step}")
        if tokens[step] != other[step]:
            assert not torch.equal(logits[step], other_logits[step]), (
                f"step {step}: tokens {tokens[step]} != {other[step]} from bit-identical logits")
            return step
    assert tokens == other, (tokens, other)
    return steps
