"""Each stopping criterion stops the rows it should, and agrees with transformers."""

from __future__ import annotations

import time

import pytest
import torch

import ferrogen
from conftest import hf_generate, left_padded_batch


def test_user_callable_stops_only_its_rows(gpt2):
    ids, mask = left_padded_batch((4, 2))
    free = ferrogen.generate(gpt2, input_ids=ids, attention_mask=mask, max_new_tokens=8, pad_token_id=0)
    target = int(free[0, ids.shape[1] + 2])

    def row0_hits_target(input_ids, scores):
        return input_ids[:, -1] == target

    out = ferrogen.generate(
        gpt2, input_ids=ids, attention_mask=mask, max_new_tokens=8, pad_token_id=0,
        stopping_criteria=[row0_hits_target], return_dict_in_generate=True,
    )
    assert out.finish_reasons[0] == "stop"
    row0 = out.sequences[0, ids.shape[1] :].tolist()
    stop_at = row0.index(target)
    assert all(t == 0 for t in row0[stop_at + 1 :])


def test_transformers_stopping_criteria_instance_matches(gpt2):
    from transformers import StoppingCriteria, StoppingCriteriaList

    class LongerThan(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), input_ids.shape[1] >= 9, dtype=torch.bool)

    ids, mask = left_padded_batch((5, 3))
    kwargs = dict(max_new_tokens=10, pad_token_id=0, stopping_criteria=StoppingCriteriaList([LongerThan()]))
    ours = ferrogen.generate(gpt2, input_ids=ids, attention_mask=mask, **kwargs)
    assert ours.shape[1] == 9
    assert torch.equal(ours, hf_generate(gpt2, ids, mask, do_sample=False, **kwargs))


def test_bool_returning_criterion_stops_everything(gpt2):
    ids, mask = left_padded_batch((3,))
    out = ferrogen.generate(gpt2, input_ids=ids, attention_mask=mask, max_new_tokens=10,
                            stopping_criteria=[lambda i, s: True])
    assert out.shape[1] == ids.shape[1] + 1


@pytest.mark.parametrize("verdict", [False, True])
@pytest.mark.parametrize("mode", [dict(), dict(do_sample=True, seed=1), dict(penalty_alpha=0.6, top_k=3), dict(num_beams=2)])
def test_plain_bool_criterion_on_a_batch(gpt2, verdict, mode):
    # a scalar verdict broadcast over a batch used to reach the core as a non-contiguous
    # array ("done: array must be contiguous")
    ids, mask = left_padded_batch((3, 2))
    out = ferrogen.generate(gpt2, input_ids=ids, attention_mask=mask, max_new_tokens=3, pad_token_id=0,
                            stopping_criteria=[lambda i, s: verdict], return_dict_in_generate=True, **mode)
    assert out.sequences.shape[1] == ids.shape[1] + (1 if verdict else 3)
    assert out.finish_reasons == ["stop" if verdict else "length"] * 2


def test_max_time_stops_early_and_reports_time(gpt2):
    ids, mask = left_padded_batch((3,))
    slow = lambda i, s: (time.sleep(0.02), False)[1]  # noqa: E731
    out = ferrogen.generate(gpt2, input_ids=ids, attention_mask=mask, max_new_tokens=100, max_time=0.1,
                            stopping_criteria=[slow], return_dict_in_generate=True)
    assert out.sequences.shape[1] < ids.shape[1] + 100
    assert out.finish_reasons == ["time"]


def test_max_time_alone_is_reported_as_time(gpt2):
    ids, mask = left_padded_batch((3,))
    out = ferrogen.generate(gpt2, input_ids=ids, attention_mask=mask, max_new_tokens=40, max_time=1e-9,
                            return_dict_in_generate=True)
    assert out.sequences.shape[1] == ids.shape[1] + 1
    assert out.finish_reasons == ["time"]


def test_stop_strings_match_transformers():
    model, tok = ferrogen.text.load_model(ferrogen.embedded_model_path())
    ids = tok("And God said", return_tensors="pt")
    free = ferrogen.generate(model, **ids, max_new_tokens=30)
    text = tok.decode(free[0, ids["input_ids"].shape[1] :])
    stop = text.split()[3]  # a word from the middle of the continuation
    kwargs = dict(max_new_tokens=30, stop_strings=[stop], tokenizer=tok)
    ours = ferrogen.generate(model, **ids, **kwargs, return_dict_in_generate=True)
    theirs = hf_generate(model, ids["input_ids"], ids["attention_mask"], do_sample=False, **kwargs)
    assert torch.equal(ours.sequences, theirs)
    assert tok.decode(ours.sequences[0, ids["input_ids"].shape[1] :]).rstrip().endswith(stop) or stop in tok.decode(
        ours.sequences[0, -2:]
    )
    assert ours.finish_reasons == ["stop"]


def test_stop_strings_need_a_tokenizer(gpt2):
    ids, mask = left_padded_batch((3,))
    with pytest.raises(ValueError, match="stop_strings"):
        ferrogen.generate(gpt2, input_ids=ids, attention_mask=mask, stop_strings=["x"])


def test_stop_string_criteria_spans_tokens():
    class CharTok:
        def decode(self, ids):
            return "".join(chr(96 + i) for i in ids)

    crit = ferrogen.StopStringCriteria(CharTok(), ["cd"], prompt_length=1)
    seqs = torch.tensor([[1, 2, 3, 4], [1, 3, 4, 5], [3, 4, 1, 1]])  # "abcd", "acde", prompt "c" + "dаа"
    assert crit(seqs, None).tolist() == [True, False, False]
