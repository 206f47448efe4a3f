"""``prefix_allowed_tokens_fn`` natively: token-identical to transformers 5.x (live) with
every strategy it has built in, called exactly as transformers calls it (same batch ids,
same rows, same order), errors raised as transformers raises them, and ``enable()`` runs
it without falling back.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import ferrogen
from conftest import VOCAB, hf_generate, left_padded_batch
from ferrogen import compat

NEW = 6


class Recorder:
    """A deterministic rule that depends on the batch id and the row's last token; records
    every call as (batch_id, row)."""

    def __init__(self, width: int = 3):
        self.width = width
        self.calls: list[tuple[int, list[int]]] = []

    def __call__(self, batch_id: int, input_ids: torch.Tensor) -> list[int]:
        assert isinstance(input_ids, torch.Tensor) and input_ids.dim() == 1
        self.calls.append((batch_id, input_ids.tolist()))
        last = int(input_ids[-1])
        return [t for t in range(VOCAB) if (t + last + batch_id) % self.width == 0]


def both(model, ids, mask, **kw):
    ours_fn, theirs_fn = Recorder(), Recorder()
    theirs = hf_generate(model, ids, mask, prefix_allowed_tokens_fn=theirs_fn, pad_token_id=0, **kw)
    ours = ferrogen.generate(model, ids, mask, prefix_allowed_tokens_fn=ours_fn, pad_token_id=0, **kw)
    return ours, theirs, ours_fn.calls, theirs_fn.calls


STRATEGIES = {
    "greedy": dict(),
    "greedy_scores": dict(return_dict_in_generate=True, output_scores=True),
    "beam": dict(num_beams=3, num_return_sequences=2),
    "beam_scores": dict(num_beams=3, return_dict_in_generate=True, output_scores=True),
    # top_k=1: the draw is the best allowed token whatever the generator, so transformers'
    # torch draws and ferrogen's own agree token for token; batch ids cover the return sequences
    "sample_top1": dict(do_sample=True, top_k=1, num_return_sequences=2),
}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_matches_transformers_and_calls_it_the_same_way(gpt2, name):
    ids, mask = left_padded_batch()
    ours, theirs, our_calls, their_calls = both(gpt2, ids, mask, max_new_tokens=NEW, **STRATEGIES[name])
    if isinstance(theirs, torch.Tensor):
        assert torch.equal(ours, theirs)
    else:
        assert torch.equal(ours.sequences, theirs.sequences)
        for a, b in zip(ours.scores, theirs.scores):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    if name.startswith("greedy") or name == "sample_top1":
        # beam search may ask in a different order of its rows' steps but not for other rows
        assert our_calls == their_calls
    else:
        assert sorted(map(str, our_calls)) == sorted(map(str, their_calls))


def test_beam_sample_matches_transformers_with_torch_generator(gpt2):
    ids, mask = left_padded_batch()
    kw = dict(max_new_tokens=NEW, do_sample=True, num_beams=2, pad_token_id=0)
    torch.manual_seed(11)
    theirs = hf_generate(gpt2, ids, mask, prefix_allowed_tokens_fn=Recorder(), **kw)
    torch.manual_seed(11)
    ours = ferrogen.generate(gpt2, ids, mask, prefix_allowed_tokens_fn=Recorder(), **kw)
    assert torch.equal(ours, theirs)


def test_sampling_draws_only_allowed_tokens(gpt2):
    ids, mask = left_padded_batch()
    fn = Recorder()
    out = ferrogen.generate(gpt2, ids, mask, prefix_allowed_tokens_fn=fn, do_sample=True, seed=5,
                            num_return_sequences=2, max_new_tokens=NEW, pad_token_id=0)
    again = ferrogen.generate(gpt2, ids, mask, prefix_allowed_tokens_fn=Recorder(), do_sample=True, seed=5,
                              num_return_sequences=2, max_new_tokens=NEW, pad_token_id=0)
    assert torch.equal(out, again)
    width = ids.shape[1]
    for row in range(out.shape[0]):
        batch_id = row // 2  # transformers 5.x: row // max(num_beams, num_return_sequences)
        for cur in range(width, out.shape[1]):
            token, last = int(out[row, cur]), int(out[row, cur - 1])
            assert (token + last + batch_id) % 3 == 0 or token == 0  # 0: padding after EOS


def test_constrained_group_beam_and_contrastive_draw_only_allowed_tokens(gpt2):
    """Rows are prompts here (one sequence returned per prompt): the batch id is the row. The
    forced word (9) of constrained beam search enters as transformers' constraint does, whatever
    the mask says (the constraint's advance tokens are candidates of their own)."""
    ids, mask = left_padded_batch(lengths=(4, 2))
    width = ids.shape[1]
    for kw in [dict(num_beams=3, force_words_ids=[[9]]), dict(penalty_alpha=0.6, top_k=4),
               dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0)]:
        out = ferrogen.generate(gpt2, ids, mask, prefix_allowed_tokens_fn=Recorder(), max_new_tokens=NEW,
                                pad_token_id=0, **kw)
        for row in range(out.shape[0]):
            for cur in range(width, out.shape[1]):
                token, last = int(out[row, cur]), int(out[row, cur - 1])
                assert (token + last + row) % 3 == 0 or token in (0, 9), kw


def test_group_beam_batch_ids_are_per_group_rows(gpt2):
    """4.55.4 (group beam's last built-in release) gives the processor num_beams // num_beam_groups."""
    ids, mask = left_padded_batch(lengths=(4, 2))
    fn = Recorder()
    ferrogen.generate(gpt2, ids, mask, prefix_allowed_tokens_fn=fn, max_new_tokens=2, pad_token_id=0,
                      num_beams=4, num_beam_groups=2, diversity_penalty=1.0)
    first_step = fn.calls[:8]  # 2 groups x 2 prompts x 2 beams per group
    assert [b for b, _ in first_step] == [0, 0, 1, 1, 0, 0, 1, 1]


def test_assisted_greedy_matches_greedy(gpt2):
    ids, mask = left_padded_batch(lengths=(5,))
    kw = dict(max_new_tokens=NEW, pad_token_id=0)
    plain = ferrogen.generate(gpt2, ids, mask, prefix_allowed_tokens_fn=Recorder(), **kw)
    assisted = ferrogen.generate(gpt2, ids, mask, prefix_allowed_tokens_fn=Recorder(), prompt_lookup_num_tokens=3, **kw)
    assert torch.equal(plain, assisted)


@pytest.mark.parametrize(("answer", "error", "match"), [
    ([], ValueError, "returned an empty list for batch ID 0"),
    ([VOCAB], ValueError, f"token id {VOCAB}"),
    ([-1], ValueError, "token id -1"),
])
def test_bad_answers_raise(gpt2, answer, error, match):
    ids, mask = left_padded_batch(lengths=(3,))
    with pytest.raises(error, match=match):
        ferrogen.generate(gpt2, ids, mask, prefix_allowed_tokens_fn=lambda b, x: answer, max_new_tokens=NEW,
                          pad_token_id=0)


def test_the_callables_exception_is_raised_and_the_rows_end_at_once(gpt2):
    ids, mask = left_padded_batch(lengths=(3, 2))
    calls = []

    def failing(batch_id, input_ids):
        calls.append(batch_id)
        if len(calls) == 3:
            raise KeyError("mine")
        return list(range(VOCAB))

    with pytest.raises(KeyError, match="mine"):
        ferrogen.generate(gpt2, ids, mask, prefix_allowed_tokens_fn=failing, max_new_tokens=50, pad_token_id=0)
    assert len(calls) == 3  # not called again after it failed


def test_not_a_callable_is_refused(gpt2):
    ids, mask = left_padded_batch(lengths=(3,))
    with pytest.raises(TypeError, match="prefix_allowed_tokens_fn"):
        ferrogen.generate(gpt2, ids, mask, prefix_allowed_tokens_fn=[1, 2], max_new_tokens=2, pad_token_id=0)


@pytest.mark.parametrize("kw", [dict(), dict(num_beams=3)], ids=["greedy", "beam"])
def test_enable_no_longer_falls_back(gpt2, kw, monkeypatch):
    monkeypatch.setattr(compat, "_warned", set())
    ids, mask = left_padded_batch()
    expected = hf_generate(gpt2, ids, mask, prefix_allowed_tokens_fn=Recorder(), max_new_tokens=NEW, pad_token_id=0, **kw)
    ran = []
    real = compat.ferrogen_generate
    monkeypatch.setattr(compat, "ferrogen_generate", lambda *a, **k: ran.append(1) or real(*a, **k))
    with ferrogen.patched(gpt2), warnings.catch_warnings():
        warnings.simplefilter("error", ferrogen.FallbackWarning)
        got = gpt2.generate(input_ids=ids, attention_mask=mask, prefix_allowed_tokens_fn=Recorder(),
                            max_new_tokens=NEW, pad_token_id=0, **kw)
    assert ran and torch.equal(got, expected)
