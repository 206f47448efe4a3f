"""Beam sampling without a ``seed`` draws torch's ``exponential_()`` noise in the core.

The core reads ``torch.get_rng_state()``, generates the same MT19937 words torch's serial CPU
kernel would, hands the advanced state back and transforms an entry (``-log1p(-u)``) only
where the sampling race reads it. Every draw must be torch's to the bit, and the global
generator must end where torch's own ``exponential_()`` leaves it (the transformers parity
tests in ``test_beam_parity.py`` compare the generated tokens).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ferrogen
from ferrogen import _core
from ferrogen.strategies import beam as beam_strategy


def _state_after(seed: int, words: int) -> torch.Tensor:
    """The global generator's state after ``manual_seed(seed)`` and ``words`` 32-bit draws."""
    torch.manual_seed(seed)
    if words:
        torch.empty(words).uniform_()  # float uniform_: one 32-bit word per entry
    return torch.get_rng_state()


@pytest.mark.parametrize("words", [0, 1, 3, 623, 624, 625, 1247])
@pytest.mark.parametrize("n", [0, 1, 311, 312, 313, 5000])
def test_draws_and_state_are_torchs(words, n):
    state = _state_after(7 + words, words)
    mine = state.numpy().copy()
    got = _core.torch_exponential(mine, n)
    torch.set_rng_state(state)
    want = torch.empty(n).exponential_().numpy()
    assert got.dtype == np.float32 and got.tobytes() == want.tobytes()
    assert mine.tobytes() == torch.get_rng_state().numpy().tobytes()


def test_this_torch_takes_the_core_path():
    # torch builds whose CPU exponential_ samples through MKL keep torch's draws (slower,
    # same results); the CI torch must not fall back silently
    assert beam_strategy.CORE_DRAWS_TORCH_NOISE


def test_bad_states_are_refused_by_name():
    with pytest.raises(_core.InvalidArgumentError, match="torch_rng_state"):
        _core.torch_exponential(np.zeros(100, dtype=np.uint8), 4)
    state = torch.get_rng_state().numpy().copy()
    state[8:12] = 0  # left = 0: torch never writes it
    with pytest.raises(_core.InvalidArgumentError, match="torch_rng_state"):
        _core.torch_exponential(state, 4)


@pytest.mark.parametrize("kwargs", [dict(top_k=50), dict(top_k=0), dict(top_k=5, temperature=0.7)])
def test_generation_matches_torch_drawn_noise(stored, monkeypatch, kwargs):
    """The core's draws against torch's own (the path taken before): same sequences and
    scores, and the global generator left in the same state."""
    model = stored["gpt2"]
    ids = torch.randint(3, 96, (3, 5), generator=torch.Generator().manual_seed(2))

    def run():
        torch.manual_seed(11)
        out = ferrogen.generate(model, input_ids=ids, num_beams=4, do_sample=True, max_new_tokens=6,
                                pad_token_id=0, return_dict_in_generate=True, output_scores=True, **kwargs)
        return out, torch.get_rng_state()

    fast, fast_state = run()
    monkeypatch.setattr(beam_strategy, "CORE_DRAWS_TORCH_NOISE", False)
    slow, slow_state = run()
    assert torch.equal(fast.sequences, slow.sequences)
    assert torch.equal(fast.sequences_scores, slow.sequences_scores)
    assert torch.equal(fast_state, slow_state)
