"""Assisted decoding: greedy output is plain greedy output, sampling keeps the main model's
distribution, batches work (rows accept different numbers of drafts), errors are clear.

Models: a 4-layer random GPT-2 whose top two layers are small perturbations, so the same
model cut to 2 layers agrees with it often (~80% of drafts here), and an unrelated 1-layer
GPT-2 that agrees rarely (~2%). Random weights are drawn wide (std 0.2) so greedy
decoding does not just repeat one token. "Identical to greedy" holds up to argmax ties
(verifying several tokens in one pass may differ from single steps in the last bits);
these models have none in the tested range.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ferrogen
from conftest import VOCAB, assert_same_row, hf_generate, left_padded_batch

NEW = 14


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _gpt2(layers, seed, std=0.2, top_std=None, vocab=VOCAB, width=64, eos=2):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=layers, n_embd=width, n_head=4, vocab_size=vocab, n_positions=128,
                     bos_token_id=eos, eos_token_id=eos)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ln" in name:
                continue
            top = name.startswith("transformer.h.") and int(name.split(".")[2]) >= 2
            param.normal_(0.0, top_std if top and top_std is not None else std)
    return model.eval()


def _truncated(model, layers):
    """``model`` keeping only its first ``layers`` blocks (same embeddings, norm and head)."""
    from transformers import GPT2LMHeadModel

    cfg = model.config.__class__(**{**model.config.to_dict(), "n_layer": layers})
    small = GPT2LMHeadModel(cfg)
    keep = {k: v for k, v in model.state_dict().items()
            if not k.startswith("transformer.h.") or int(k.split(".")[2]) < layers}
    small.load_state_dict(keep)
    return small.eval()


@pytest.fixture(scope="module")
def main():
    return _gpt2(4, 0, top_std=0.06)


@pytest.fixture(scope="module")
def assistants(main):
    return {"often": _truncated(main, 2), "rarely": _gpt2(1, 7)}


def greedy(model, ids, mask, **kwargs):
    return ferrogen.generate(model, input_ids=ids, attention_mask=mask, max_new_tokens=NEW, pad_token_id=0,
                             return_dict_in_generate=True, output_scores=True, **kwargs)


@pytest.mark.parametrize("lengths", [(6,), (5, 3, 7, 1)], ids=["batch1", "batch4"])
@pytest.mark.parametrize("which", ["often", "rarely"])
def test_assisted_greedy_is_plain_greedy(main, assistants, which, lengths):
    ids, mask = left_padded_batch(lengths)
    plain = greedy(main, ids, mask)
    out = greedy(main, ids, mask, assistant_model=assistants[which], num_assistant_tokens=4,
                 assistant_confidence_threshold=0.0)
    assert torch.equal(out.sequences, plain.sequences)
    rate = out.assisted_stats.acceptance_rate
    assert (rate > 0.5) if which == "often" else (rate < 0.2), rate
    # Scores of every emitted token are the processed logits plain greedy saw.
    for ours, theirs in zip(out.scores, plain.scores):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("which", ["often", "rarely"])
def test_matches_transformers_assisted_generate(main, assistants, which):
    """transformers 5.x: batch size 1 only, its defaults (20 drafts, confidence 0.4)."""
    ids, mask = left_padded_batch((6,))
    theirs = hf_generate(main, ids, mask, max_new_tokens=NEW, do_sample=False, pad_token_id=0,
                         assistant_model=assistants[which])
    ours = ferrogen.generate(main, input_ids=ids, attention_mask=mask, max_new_tokens=NEW, pad_token_id=0,
                             assistant_model=assistants[which])
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("lengths", [(6,), (5, 3, 7, 1)], ids=["batch1", "batch4"])
def test_prompt_lookup_is_plain_greedy(main, lengths):
    ids, mask = left_padded_batch(lengths)
    plain = greedy(main, ids, mask)
    out = greedy(main, ids, mask, prompt_lookup_num_tokens=3)
    assert torch.equal(out.sequences, plain.sequences)
    assert out.assisted_stats.drafted > 0
    if len(lengths) == 1:
        theirs = hf_generate(main, ids, mask, max_new_tokens=NEW, do_sample=False, pad_token_id=0,
                             prompt_lookup_num_tokens=3)
        assert torch.equal(out.sequences, theirs)


@pytest.mark.parametrize("schedule", ["heuristic", "constant"])
def test_schedules_change_speed_not_tokens(main, assistants, schedule):
    ids, mask = left_padded_batch((5, 3, 7, 1))
    out = greedy(main, ids, mask, assistant_model=assistants["often"], num_assistant_tokens=5,
                 num_assistant_tokens_schedule=schedule)
    assert torch.equal(out.sequences, greedy(main, ids, mask).sequences)


def test_eos_mid_batch_and_min_new_tokens(main, assistants):
    ids, mask = left_padded_batch((5, 3, 7, 1))
    free = greedy(main, ids, mask).sequences
    eos = int(free[1, ids.shape[1] + 3])
    for extra in (dict(), dict(min_new_tokens=5)):
        plain = greedy(main, ids, mask, eos_token_id=eos, **extra)
        out = greedy(main, ids, mask, eos_token_id=eos, assistant_model=assistants["often"],
                     assistant_confidence_threshold=0.0, **extra)
        assert torch.equal(out.sequences, plain.sequences)
        assert out.finish_reasons == plain.finish_reasons
    assert "eos" in out.finish_reasons


def test_stopping_criteria_cut_rows_where_plain_greedy_stops(main, assistants):
    """A criterion is checked after every emitted position, not once per round."""
    ids, mask = left_padded_batch((5, 3, 7, 1))
    free = greedy(main, ids, mask).sequences
    width = ids.shape[1]
    stop_token = int(free[2, width + 4])
    criteria = [lambda seqs, scores: seqs[:, -1] == stop_token]
    plain = greedy(main, ids, mask, stopping_criteria=criteria)
    out = greedy(main, ids, mask, stopping_criteria=criteria, assistant_model=assistants["often"],
                 assistant_confidence_threshold=0.0)
    assert torch.equal(out.sequences, plain.sequences)
    assert out.finish_reasons == plain.finish_reasons
    assert out.finish_reasons[2] == "stop"


def test_rotary_positions_survive_shifted_rows():
    """GPT-NeoX: rotary positions come from position ids, so shifted rows keep them."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    cfg = GPTNeoXConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                        vocab_size=VOCAB, max_position_embeddings=128, bos_token_id=1, eos_token_id=2)
    model = GPTNeoXForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.normal_(0.0, 0.2)
    ids, mask = left_padded_batch((5, 3, 7, 1))
    plain = greedy(model, ids, mask)
    out = greedy(model, ids, mask, prompt_lookup_num_tokens=3)
    assert torch.equal(out.sequences, plain.sequences)
    assert 0 < out.assisted_stats.accepted < out.assisted_stats.drafted


def test_encoder_decoder_rows_shift(t5):
    """T5's relative attention lets rows of the decoder shift against each other."""
    from transformers import T5ForConditionalGeneration

    torch.manual_seed(3)
    assistant = T5ForConditionalGeneration(t5.config.__class__(**{**t5.config.to_dict(), "num_decoder_layers": 1}))
    assistant.load_state_dict(t5.state_dict(), strict=False)
    assistant.eval()
    ids, mask = left_padded_batch((5, 3, 7))
    plain = greedy(t5, ids, mask)
    for kwargs in (dict(assistant_model=assistant, assistant_confidence_threshold=0.0), dict(prompt_lookup_num_tokens=2)):
        out = greedy(t5, ids, mask, **kwargs)
        assert torch.equal(out.sequences, plain.sequences)


def test_absolute_position_decoders_run_in_lock_step():
    """BART's decoder positions are absolute: rows cannot shift, so every row that goes on
    takes the smallest accepted count of the round. Still plain greedy."""
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(0)
    cfg = BartConfig(vocab_size=VOCAB, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                     decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64)
    model = BartForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.normal_(0.0, 0.3)
    ids, mask = left_padded_batch((5, 3, 7))
    plain = greedy(model, ids, mask)
    out = greedy(model, ids, mask, assistant_model=model, assistant_confidence_threshold=0.0)
    assert torch.equal(out.sequences, plain.sequences)
    assert out.assisted_stats.accepted > 0


def _tiny_pair():
    """A 5-token vocabulary without EOS, and an assistant: the same weights plus noise, so
    that it agrees about half of the time."""
    main = _gpt2(1, 11, std=0.3, vocab=5, width=16, eos=None)
    assistant = _gpt2(1, 11, std=0.3, vocab=5, width=16, eos=None)
    torch.manual_seed(12)
    with torch.no_grad():
        for name, param in assistant.named_parameters():
            if "ln" not in name:
                param.add_(torch.randn_like(param) * 0.3)
    return main, assistant


def _exact(model, prompt, steps, temperature):
    """Probability of every continuation of ``steps`` tokens, by enumeration."""
    grid = torch.cartesian_prod(*[torch.arange(5)] * steps)
    seqs = torch.cat([prompt.expand(grid.shape[0], -1), grid], dim=1)
    with torch.no_grad():
        logp = torch.log_softmax(model(seqs).logits.double() / temperature, dim=-1)
    n = prompt.shape[1]
    picked = logp[:, n - 1 : -1].gather(2, grid[:, :, None]).squeeze(2)
    return grid, picked.sum(1).exp()


def _chi_square_p(counts, probs):
    from scipy.stats import chisquare

    expected = probs * counts.sum()
    small = expected < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    return chisquare(obs, exp).pvalue


def test_assisted_sampling_keeps_the_main_distribution():
    """4 tokens from a 5-token vocabulary (625 outcomes) for 16 000 rows (one batch, each
    row its own random stream), drafts of up to 2: the joint distribution matches the main
    model's, computed exactly (chi-square), and the test does see the assistant's (it
    rejects it)."""
    main, assistant = _tiny_pair()
    prompt = torch.tensor([[1, 3]])
    n, steps, temperature = 16_000, 4, 0.8
    ids = prompt.expand(n, -1).contiguous()
    out = ferrogen.generate(main, input_ids=ids, max_new_tokens=steps, do_sample=True, temperature=temperature,
                            top_k=0, seed=1234, assistant_model=assistant, num_assistant_tokens=2,
                            assistant_confidence_threshold=0.0, return_dict_in_generate=True)
    stats = out.assisted_stats
    assert 0.2 < stats.acceptance_rate < 0.9 and stats.drafted >= n, stats
    new = out.sequences[:, 2:]
    codes = (new * torch.tensor([125, 25, 5, 1])).sum(1)
    counts = np.bincount(codes.numpy(), minlength=625).astype(float)
    grid, p_main = _exact(main, prompt, steps, temperature)
    assert torch.equal((grid * torch.tensor([125, 25, 5, 1])).sum(1), torch.arange(625))
    assert _chi_square_p(counts, p_main.numpy()) > 1e-3
    _, p_assistant = _exact(assistant, prompt, steps, temperature)
    assert _chi_square_p(counts, p_assistant.numpy()) < 1e-9


def test_assisted_sampling_rows_do_not_depend_on_the_batch(main, assistants):
    """Each row samples as it does alone (up to a near tie where this CPU's kernels give the
    batch other last bits than the row alone: :func:`conftest.assert_same_row`)."""
    ids, mask = left_padded_batch((5, 3, 7, 1))
    kwargs = dict(max_new_tokens=NEW, do_sample=True, seed=5, assistant_model=assistants["often"], pad_token_id=0,
                  num_assistant_tokens=3, return_dict_in_generate=True, output_logits=True)
    batch = ferrogen.generate(main, input_ids=ids, attention_mask=mask, **kwargs)
    width = ids.shape[1]
    compared = 0
    for row, n in enumerate((5, 3, 7, 1)):
        alone = ferrogen.generate(main, input_ids=ids[row : row + 1, width - n :], **kwargs)
        compared += assert_same_row(batch.sequences[row, width:].tolist(), alone.sequences[0, n:].tolist(),
                                    [step[row] for step in batch.logits], [step[0] for step in alone.logits])
    assert compared >= 2 * NEW  # most steps compared token for token
    again = ferrogen.generate(main, input_ids=ids, attention_mask=mask, **kwargs)
    assert torch.equal(batch.sequences, again.sequences)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(num_beams=2), "assistant_model"),
        (dict(prompt_lookup_num_tokens=3), "prompt_lookup_num_tokens"),
        (dict(logits_processor=[lambda ids, scores: scores]), "logits_processor"),
    ],
)
def test_invalid_combinations_name_the_argument(main, assistants, kwargs, field):
    ids, mask = left_padded_batch((4,))
    with pytest.raises(ValueError, match=f"^{field}:"):
        ferrogen.generate(main, input_ids=ids, attention_mask=mask, max_new_tokens=3,
                          assistant_model=assistants["often"], **kwargs)


def test_mismatched_assistants_are_refused(main, t5):
    ids, mask = left_padded_batch((4,))
    other_vocab = _gpt2(1, 0, vocab=VOCAB + 8)
    for assistant, words in ((other_vocab, "vocabulary"), (t5, "encoder-decoder")):
        with pytest.raises(ValueError, match=f"^assistant_model: .*{words}"):
            ferrogen.generate(main, input_ids=ids, attention_mask=mask, max_new_tokens=3, assistant_model=assistant)


def test_streamer_needs_one_row(main):
    ids, mask = left_padded_batch((4, 2))

    class Sink:
        def put(self, value):
            pass

        def end(self):
            pass

    with pytest.raises(ValueError, match="^streamer:"):
        ferrogen.generate(main, input_ids=ids, attention_mask=mask, max_new_tokens=3, prompt_lookup_num_tokens=2,
                          pad_token_id=0, streamer=Sink())
