"""decoder_start_token_id as a list: one start token per prompt, as transformers takes it."""

import pytest
import torch

import ferrogen
from conftest import hf_generate, left_padded_batch


@pytest.mark.parametrize("kwargs", [
    {"do_sample": False},
    {"num_beams": 3, "num_return_sequences": 2},
])
def test_start_token_per_prompt_matches_transformers(t5, kwargs):
    ids, mask = left_padded_batch(lengths=(5, 3))
    starts = [0, 7]
    ours = ferrogen.generate(t5, ids, mask, max_new_tokens=6, decoder_start_token_id=starts, **kwargs)
    theirs = hf_generate(t5, ids, mask, max_new_tokens=6, decoder_start_token_id=starts, **kwargs)
    copies = kwargs.get("num_return_sequences", 1)
    assert ours[:, 0].tolist() == torch.tensor(starts).repeat_interleave(copies).tolist()
    assert torch.equal(ours, theirs)


def test_start_token_list_of_the_wrong_length_is_refused(t5):
    ids, mask = left_padded_batch(lengths=(5, 3))
    with pytest.raises(ferrogen.GenerationConfigError, match=r"^decoder_start_token_id: .*one start token per prompt \(2\), got 3"):
        ferrogen.generate(t5, ids, mask, max_new_tokens=3, decoder_start_token_id=[0, 1, 2])
