"""Degenerate models and inputs (issue 10): each has a defined outcome and a clear message.

Already covered elsewhere: all-NaN logits with greedy on a plain module and max_new_tokens=0
with greedy (test_generate_inputs.py), a bfloat16 GPT-2 (test_greedy_parity.py).
"""

from __future__ import annotations

import warnings

import pytest
import torch

import ferrogen
from conftest import VOCAB, left_padded_batch

MODES = {
    "greedy": dict(),
    "sample": dict(do_sample=True, seed=1),
    "beam": dict(num_beams=2),
    "beam_sample": dict(num_beams=2, do_sample=True, seed=1),
    "group_beam": dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5),
    "constrained": dict(num_beams=2, force_words_ids=[[7]]),
    "contrastive": dict(penalty_alpha=0.6, top_k=3),
}
BEAM_MODES = ["beam", "beam_sample", "group_beam", "constrained"]


def gen(model, ids, mask=None, **kwargs):
    kwargs = {"pad_token_id": 0, "eos_token_id": 2, "max_new_tokens": 3, **kwargs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ferrogen.generate(model, input_ids=ids, attention_mask=mask, return_dict_in_generate=True, **kwargs)


class Hooked:
    """Temporarily rewrites the model's output logits, or counts its forwards."""

    def __init__(self, model, rewrite=None):
        self.model, self.rewrite, self.calls = model, rewrite, 0

    def __enter__(self):
        def hook(module, args, kwargs, output):
            self.calls += 1
            if self.rewrite is not None:
                output.logits = self.rewrite(output.logits)
            return output

        self.handle = self.model.register_forward_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


class Plain(torch.nn.Module):
    """A plain module: fixed pseudo-random logits of any dtype and (per call) vocab size."""

    def __init__(self, vocab=16, dtype=torch.float32, later_vocab=None):
        super().__init__()
        self.vocab, self.dtype, self.later_vocab, self.calls = vocab, dtype, later_vocab, 0

    def forward(self, input_ids):
        self.calls += 1
        vocab = self.vocab if self.later_vocab is None or self.calls == 1 else self.later_vocab
        g = torch.Generator().manual_seed(int(input_ids.sum()) + input_ids.shape[1])
        x = torch.randn(input_ids.shape[0], input_ids.shape[1], vocab, generator=g) * 3
        return x.to(self.dtype)


# --------------------------------------------------------------------------- NaN logits

@pytest.mark.parametrize("mode", list(MODES))
def test_all_nan_logits_raise_no_valid_token_in_every_mode(gpt2, mode):
    ids, mask = left_padded_batch((3, 2))
    with Hooked(gpt2, rewrite=lambda x: torch.full_like(x, float("nan"))):
        with pytest.raises(ferrogen.NoValidTokenError, match=r"^logits row \d+ has no finite value"):
            gen(gpt2, ids, mask, **MODES[mode])
    assert gen(gpt2, ids, mask, **MODES[mode]).sequences.shape[0] >= 2, "usable afterwards"


def some_nan(x):
    x = x.clone()
    x[..., ::2] = float("nan")
    return x


@pytest.mark.parametrize("mode", ["greedy", "sample"])
def test_nan_in_some_entries_is_skipped_by_token_modes(gpt2, mode):
    """Greedy and sampling treat NaN as -inf and pick among the other entries."""
    ids, mask = left_padded_batch((3, 2))
    with Hooked(gpt2, rewrite=some_nan):
        out = gen(gpt2, ids, mask, **MODES[mode])
    assert out.sequences[:, ids.shape[1]:].remainder(2).eq(1).all(), "only odd (non-NaN) ids"


@pytest.mark.parametrize("mode", BEAM_MODES)
def test_nan_in_some_entries_is_an_error_for_beams(gpt2, mode):
    """Beam modes take log_softmax first, which (as in torch) turns a row with any NaN into all
    NaN: the defined outcome is the same named error as all-NaN logits."""
    ids, mask = left_padded_batch((3, 2))
    with Hooked(gpt2, rewrite=some_nan):
        with pytest.raises(ferrogen.NoValidTokenError):
            gen(gpt2, ids, mask, **MODES[mode])


# --------------------------------------------------------------------------- vocab size

def test_logits_narrower_than_the_config_vocab_still_index_correctly(gpt2):
    """A model whose logits cover fewer ids than its config: tokens come from the logits' width."""
    ids, mask = left_padded_batch((3, 2))
    with Hooked(gpt2, rewrite=lambda x: x[..., :50]):
        for mode in ("greedy", "beam"):
            out = gen(gpt2, ids, mask, **MODES[mode])
            assert int(out.sequences[:, ids.shape[1]:].max()) < 50


def test_a_configured_token_outside_the_logits_is_named(gpt2):
    ids, mask = left_padded_batch((3,))
    with Hooked(gpt2, rewrite=lambda x: x[..., :50]):
        with pytest.raises(ferrogen.TokenOutOfVocabError, match=r"^eos_token_id: token id 60 is outside the vocabulary \[0, 50\)"):
            gen(gpt2, ids, mask, eos_token_id=60)


@pytest.mark.parametrize("mode", ["greedy", "sample"])
def test_vocab_changing_between_steps_is_checked_again(mode):
    """Greedy and sampling re-check configured ids when the logits' width changes: named error."""
    ids = torch.tensor([[3, 4]])
    with pytest.raises(ferrogen.TokenOutOfVocabError, match="^eos_token_id: token id 12"):
        gen(Plain(vocab=16, later_vocab=8), ids, eos_token_id=12, **MODES[mode])
    out = gen(Plain(vocab=16, later_vocab=20), ids, eos_token_id=12, **MODES[mode])
    assert out.sequences.shape[1] == ids.shape[1] + 3


@pytest.mark.parametrize("mode", ["beam", "group_beam"])
def test_vocab_changing_between_steps_with_beams_stays_in_range(mode):
    """Beam modes rank whatever width each step has; an EOS outside it simply never occurs."""
    ids = torch.tensor([[3, 4]])
    out = gen(Plain(vocab=16, later_vocab=8), ids, eos_token_id=12, **MODES[mode])
    assert out.sequences.shape[1] == ids.shape[1] + 3
    assert int(out.sequences[:, ids.shape[1] + 1:].max()) < 8


# --------------------------------------------------------------------------- prompt lengths

@pytest.mark.parametrize("model_name", ["gpt2", "t5"])
def test_empty_prompt_is_refused_before_the_model_runs(request, model_name):
    model = request.getfixturevalue(model_name)
    with Hooked(model) as h:
        with pytest.raises(ValueError, match="^input_ids: the prompt is empty"):
            gen(model, torch.zeros(1, 0, dtype=torch.long))
    assert h.calls == 0


def test_prompt_longer_than_the_context_names_input_ids(gpt2):
    ids = torch.randint(3, VOCAB, (1, 130), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"^input_ids: the prompt is 130 tokens long but the model's context is 128"):
        gen(gpt2, ids)
    with pytest.raises(ValueError, match="^max_length: the input is 130 tokens long"):
        gen(gpt2, ids, max_new_tokens=None)  # default max_length is capped at the context


def test_new_tokens_past_the_context_name_max_new_tokens(gpt2):
    ids = torch.randint(3, VOCAB, (1, 126), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"^max_new_tokens: prompt \(126\) plus new tokens reach 131 positions"):
        gen(gpt2, ids, max_new_tokens=5, eos_token_id=None)
    out = gen(gpt2, ids, max_new_tokens=2, eos_token_id=None)
    assert out.sequences.shape[1] == 128, "up to the context is fine"


# --------------------------------------------------------------------------- max_new_tokens=0

@pytest.mark.parametrize("mode", list(MODES))
def test_zero_new_tokens_names_max_new_tokens(gpt2, mode):
    """As transformers (``max_new_tokens`` must be greater than 0), in every mode, before the model runs."""
    ids, mask = left_padded_batch((3, 2))
    with Hooked(gpt2) as h:
        with pytest.raises(ValueError, match=r"^max_new_tokens: must be in \[1, "):
            gen(gpt2, ids, mask, max_new_tokens=0, **MODES[mode])
    assert h.calls == 0


# --------------------------------------------------------------------------- pad_token_id

def test_missing_pad_token_warns_and_pads_with_eos(gpt2):
    ids, mask = left_padded_batch((3, 2))
    bias = {(5,): 20.0}  # token 5 is EOS here and wins at once
    with pytest.warns(UserWarning, match="^pad_token_id: not set, using eos_token_id 5"):
        out = ferrogen.generate(gpt2, input_ids=ids, attention_mask=mask, max_new_tokens=3, eos_token_id=5,
                                pad_token_id=None, sequence_bias=bias, min_new_tokens=0, return_dict_in_generate=True)
    assert out.sequences[:, ids.shape[1]:].eq(5).all()
    assert out.finish_reasons == ["eos", "eos"]


def test_missing_pad_and_eos_pads_with_zero(gpt2):
    ids, mask = left_padded_batch((3, 2))
    out = gen(gpt2, ids, mask, pad_token_id=None, eos_token_id=None)
    assert out.finish_reasons == ["length", "length"]


# --------------------------------------------------------------------------- dtypes and layouts

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("mode", ["greedy", "sample", "beam"])
def test_low_and_high_precision_logits_are_upcast_once(dtype, mode):
    """The result equals that of the same logits rounded to ``dtype`` and handed over as float32."""

    class Rounded(Plain):
        def forward(self, input_ids):
            return super().forward(input_ids).to(dtype).to(torch.float32)

    ids = torch.tensor([[3, 4, 5], [6, 7, 8]])
    got = gen(Plain(dtype=dtype), ids, eos_token_id=1, max_new_tokens=5, **MODES[mode])
    want = gen(Rounded(), ids, eos_token_id=1, max_new_tokens=5, **MODES[mode])
    assert torch.equal(got.sequences, want.sequences)


def test_non_contiguous_inputs_give_the_contiguous_result(gpt2):
    ids, mask = left_padded_batch((3, 2, 4))
    wide_ids = torch.stack([ids, torch.zeros_like(ids)], dim=-1).reshape(ids.shape[0], -1)
    strided_ids = wide_ids[:, ::2]
    strided_mask = mask.t().contiguous().t()
    assert not strided_ids.is_contiguous() and not strided_mask.is_contiguous()
    for mode in ("greedy", "beam", "contrastive"):
        want = gen(gpt2, ids, mask, **MODES[mode])
        got = gen(gpt2, strided_ids, strided_mask, **MODES[mode])
        assert torch.equal(got.sequences, want.sequences)


def test_int32_input_ids_are_accepted(gpt2):
    ids, mask = left_padded_batch((3, 2))
    assert torch.equal(gen(gpt2, ids.int(), mask).sequences, gen(gpt2, ids, mask).sequences)


# --------------------------------------------------------------------------- devices

@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_requested_without_cuda_names_device():
    with pytest.raises(ValueError, match="^device: 'cuda' requested but CUDA is not available"):
        ferrogen.text.load_model(ferrogen.embedded_model_path(), device="cuda")
    with pytest.raises(ValueError, match="^device: 'cuda:1' requested"):
        ferrogen.pipeline(device="cuda:1")


def test_unknown_device_names_device():
    with pytest.raises(ValueError, match="^device: 'gpu' is not a torch device"):
        ferrogen.text.load_model(ferrogen.embedded_model_path(), device="gpu")


def test_meta_input_ids_are_refused(gpt2):
    with pytest.raises(ValueError, match="^input_ids: a meta tensor"):
        gen(gpt2, torch.zeros(1, 3, dtype=torch.long, device="meta"))


# --------------------------------------------------------------------------- +inf logits (issue 15)

def one_inf(x):
    x = x.clone()
    x[..., -1, 40] = float("inf")
    return x


def two_inf(x):
    x = x.clone()
    x[..., -1, 40] = float("inf")
    x[..., -1, 50] = float("inf")
    return x


@pytest.mark.parametrize("mode", list(MODES))
def test_inf_logits_are_certain_in_every_mode(gpt2, mode):
    """A logit of +inf is certain: the +inf tokens of a row share its probability, in every mode
    (before, beam modes and contrastive search raised NoValidTokenError; transformers gives NaN
    scores in beam search and fails in torch.multinomial when sampling)."""
    ids, mask = left_padded_batch((3, 2))
    kwargs = dict(MODES[mode])
    if mode == "constrained":
        kwargs["force_words_ids"] = [[40]]
    with Hooked(gpt2, rewrite=one_inf):
        out = gen(gpt2, ids, mask, **kwargs)
    assert out.sequences[:, ids.shape[1]:].eq(40).all()
    with Hooked(gpt2, rewrite=two_inf):
        out = gen(gpt2, ids, mask, **{**kwargs, "force_words_ids": [[50]]} if mode == "constrained" else kwargs)
    new = out.sequences[:, ids.shape[1]:]
    assert ((new == 40) | (new == 50)).all()


@pytest.mark.parametrize("mode", ["beam", "beam_sample", "group_beam"])
def test_inf_logits_give_beams_the_limit_log_probability(gpt2, mode):
    """With two tokens at +inf each step, each has log-probability ln(1/2): the scores stay finite."""
    ids, mask = left_padded_batch((3, 2))
    with Hooked(gpt2, rewrite=two_inf):
        out = gen(gpt2, ids, mask, output_scores=True, length_penalty=0.0, **MODES[mode])
    assert torch.allclose(out.sequences_scores, torch.full_like(out.sequences_scores, 3 * -0.6931472))


def test_inf_logits_on_the_device_candidates_path(gpt2, monkeypatch):
    monkeypatch.setenv("FERROGEN_DEVICE_CANDIDATES", "1")
    ids, mask = left_padded_batch((3, 2))
    with Hooked(gpt2, rewrite=two_inf):
        out = gen(gpt2, ids, mask, output_scores=True, length_penalty=0.0, num_beams=2)
    assert torch.allclose(out.sequences_scores, torch.full_like(out.sequences_scores, 3 * -0.6931472))


# --------------------------------------------------------------------------- tiny temperatures (issue 15)

@pytest.mark.parametrize("temperature", [1e-30, 1e-40, 1e-45, 5e-324])
def test_a_vanishing_temperature_samples_the_most_likely_token(gpt2, temperature):
    """T -> 0 is argmax (what transformers gives down to about 1e-37; below, its float32 division
    overflows and torch.multinomial fails). Before, 1e-40 sampled random tokens."""
    ids, mask = left_padded_batch((3, 2))
    greedy = gen(gpt2, ids, mask, max_new_tokens=6)
    for seed in (1, 2):
        for extra in ({}, {"top_k": 0}, {"top_k": 0, "top_p": 0.9}):
            out = gen(gpt2, ids, mask, max_new_tokens=6, do_sample=True, seed=seed, temperature=temperature, **extra)
            assert torch.equal(out.sequences, greedy.sequences), extra
