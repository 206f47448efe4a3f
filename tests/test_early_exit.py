"""Self-speculative decoding (``assistant_early_exit=n``): drafts from the model's own first ``n``
layers, verified by the whole model; against transformers 5.x live on the stored tiny Llama
(4 layers; Llama's decoder loop reads ``config.num_hidden_layers``, which transformers'
``EarlyExitCandidateGenerator`` lowers while drafting)."""

from __future__ import annotations

import warnings

import pytest
import torch

import ferrogen
from ferrogen import FallbackWarning, compat
from golden_models import load_stored

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PROMPT = torch.tensor([[5, 9, 13, 20, 33, 41]])


@pytest.fixture(scope="module")
def llama():
    return load_stored("llama")


def reference(model, ids, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.generate(ids, do_sample=False, pad_token_id=0, **kwargs)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_early_exit_matches_transformers(llama, layers):
    expected = reference(llama, PROMPT, max_new_tokens=12, assistant_early_exit=layers)
    got = ferrogen.generate(llama, input_ids=PROMPT, max_new_tokens=12, assistant_early_exit=layers, pad_token_id=0)
    assert got.tolist() == expected.tolist()
    assert got.tolist() == reference(llama, PROMPT, max_new_tokens=12).tolist()  # greedy: the model's own output


def test_drafts_run_only_the_first_layers(llama):
    calls = {0: 0, 3: 0}
    hooks = [llama.model.layers[i].register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
             for i in calls]
    try:
        ferrogen.generate(llama, input_ids=PROMPT, max_new_tokens=10, assistant_early_exit=2, pad_token_id=0)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls[0] > calls[3] > 0  # layer 0 also ran every draft step, layer 3 only the verifications
    assert llama.config.num_hidden_layers == 4  # restored


def test_a_left_padded_batch_decodes_as_plain_greedy(llama):
    ids = torch.tensor([[5, 9, 13, 20], [0, 0, 7, 8]])
    mask = (ids != 0).long()
    kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=8, pad_token_id=0)
    assert torch.equal(ferrogen.generate(llama, assistant_early_exit=1, **kwargs), ferrogen.generate(llama, **kwargs))


def test_enable_runs_early_exit_natively(llama, monkeypatch):
    """Before: assistant_early_exit made model.generate fall back to transformers."""
    monkeypatch.setattr(compat, "_warned", set())
    expected = reference(llama, PROMPT, max_new_tokens=8, assistant_early_exit=2)
    with ferrogen.patched(llama), warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        got = llama.generate(PROMPT, max_new_tokens=8, assistant_early_exit=2, pad_token_id=0)
    assert got.tolist() == expected.tolist()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (dict(assistant_early_exit=5), "^assistant_early_exit: 5 is more than the model's 4 layers"),
        (dict(assistant_early_exit=2, prompt_lookup_num_tokens=2), "^assistant_early_exit: drafts come from"),
        (dict(assistant_early_exit=0), "^assistant_early_exit"),
        (dict(assistant_early_exit=2, num_beams=2), "^assistant_early_exit: assisted decoding works only"),
    ],
)
def test_bad_settings_name_the_argument(llama, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        ferrogen.generate(llama, input_ids=PROMPT, max_new_tokens=3, pad_token_id=0, **kwargs)
