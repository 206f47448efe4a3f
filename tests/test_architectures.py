"""The architecture matrix: every model family in tests/architectures.py (dense, GQA, MQA, sliding
window, MoE, ALiBi, SSM, hybrid, recurrent, encoder-decoder) against transformers' own
``generate`` on a padded batch (left padding for decoder-only models, a padded encoder batch for
seq2seq).

Greedy compares the raw logits of every step (``output_logits``), not only tokens: random models
repeat tokens, so equal tokens alone prove little. Beam search compares sequences, beam indices,
processed scores and ``sequences_scores`` with transformers, and (decoder-only) the scores with
one uncached forward over the returned tokens, which catches a cache that did not follow its
beam even where transformers would share the mistake. A family or mode ferrogen cannot run
exactly is refused with a ``ValueError`` naming its ``model_type`` before any forward pass
(:data:`REFUSED`; README "Model families" lists them).
"""

from __future__ import annotations

import functools
import inspect

import pytest
import torch

import ferrogen
from architectures import ARCHITECTURES, PAD, build, padded_batch
from conftest import hf_generate
from test_beam_parity import assert_beam_same, hf_fill

NEW = 8
#: model_type -> the matrix modes ferrogen refuses for it, with a fragment of the reason.
REFUSED: dict[str, dict[str, str]] = {
    "rwkv": {"greedy": "_update_model_kwargs_for_generation", "beam": "_update_model_kwargs_for_generation"},
    "recurrent_gemma": {"beam": "lives in the model's modules"},
    "minimax": {"beam": "leaves its linear-attention state in place"},
}
GREEDY = [name for name in ARCHITECTURES if "greedy" not in REFUSED.get(name, {})]
BEAM = [name for name in ARCHITECTURES if "beam" not in REFUSED.get(name, {})]
MODES = {
    "greedy": dict(do_sample=False),
    "beam": dict(num_beams=3, num_return_sequences=2, do_sample=False, length_penalty=0.0),
}


@functools.lru_cache(maxsize=None)
def tiny(model_type: str):
    return build(model_type)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    yield
    tiny.cache_clear()


def _prompt_len(model, ids):
    return 1 if model.config.is_encoder_decoder else ids.shape[1]


@pytest.mark.parametrize("model_type", GREEDY)
def test_greedy_logits_match_transformers(model_type):
    model = tiny(model_type)
    ids, mask = padded_batch(model.config.is_encoder_decoder)
    kwargs = dict(MODES["greedy"], max_new_tokens=NEW, pad_token_id=PAD, return_dict_in_generate=True,
                  output_logits=True, output_scores=True)
    theirs = hf_generate(model, ids, mask, **kwargs)
    ours = ferrogen.generate(model, input_ids=ids, attention_mask=mask, **kwargs)
    assert torch.equal(ours.sequences, theirs.sequences), (ours.sequences, theirs.sequences)
    assert len(ours.logits) == len(theirs.logits)
    for step, (a, b) in enumerate(zip(ours.logits, theirs.logits)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m: f"step {step}: {m}")


def uncached_log_probs(model, ids, mask, out):
    """Sum of the log-probabilities of each returned row's generated tokens, from one forward
    pass over the whole returned sequence without a cache (the prompt's left padding masked)."""
    rows, width = out.sequences.shape
    prompt_mask = mask.repeat_interleave(rows // ids.shape[0], dim=0)
    full_mask = torch.cat([prompt_mask, torch.ones((rows, width - ids.shape[1]), dtype=torch.long)], dim=1)
    kwargs = dict(attention_mask=full_mask, use_cache=False)
    if "position_ids" in inspect.signature(model.forward).parameters:
        kwargs["position_ids"] = (full_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        log_probs = model(input_ids=out.sequences, **kwargs).logits.float().log_softmax(-1)
    start = ids.shape[1]
    generated = (out.beam_indices >= 0).sum(dim=1).tolist()
    return torch.tensor([
        sum(float(log_probs[r, start + i - 1, out.sequences[r, start + i]]) for i in range(n))
        for r, n in enumerate(generated)
    ])


@pytest.mark.parametrize("model_type", BEAM)
def test_beam_scores_match_transformers(model_type):
    """length_penalty=0 makes ``sequences_scores`` the plain sum of the tokens' log-probabilities."""
    model = tiny(model_type)
    ids, mask = padded_batch(model.config.is_encoder_decoder)
    kwargs = dict(MODES["beam"], max_new_tokens=NEW, pad_token_id=PAD, return_dict_in_generate=True,
                  output_scores=True)
    theirs = hf_generate(model, ids, mask, **kwargs)
    ours = ferrogen.generate(model, input_ids=ids, attention_mask=mask, **kwargs)
    assert_beam_same(ours, theirs, _prompt_len(model, ids), PAD, hf_fill(kwargs, model))
    if not model.config.is_encoder_decoder:
        fresh = uncached_log_probs(model, ids, mask, ours)
        torch.testing.assert_close(ours.sequences_scores, fresh, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model_type,mode", [(name, mode) for name, modes in REFUSED.items() for mode in modes])
def test_refused_before_any_forward(model_type, mode):
    model = tiny(model_type)
    ids, mask = padded_batch(model.config.is_encoder_decoder)

    def no_forward(*_):
        raise AssertionError("the model ran before the refusal")

    hook = model.register_forward_pre_hook(no_forward)
    try:
        with pytest.raises(ValueError, match=f"model_type '{model_type}'") as raised:
            ferrogen.generate(model, input_ids=ids, attention_mask=mask, max_new_tokens=NEW, pad_token_id=PAD,
                              **MODES[mode])
    finally:
        hook.remove()
    assert REFUSED[model_type][mode] in str(raised.value)


@pytest.mark.parametrize("model_type", ["mamba", "falcon_mamba", "mamba2", "jamba", "bamba", "llama", "bloom"])
def test_row_does_not_depend_on_its_neighbours_padding(model_type):
    """The longest (unpadded) row of a left-padded batch gets the logits it gets alone. Mamba and
    FalconMamba broke this when every decode step was given the whole attention mask."""
    model = tiny(model_type)
    ids, mask = padded_batch(False)
    kwargs = dict(max_new_tokens=NEW, do_sample=False, pad_token_id=PAD, return_dict_in_generate=True,
                  output_logits=True)
    batch = ferrogen.generate(model, input_ids=ids, attention_mask=mask, **kwargs)
    alone = ferrogen.generate(model, input_ids=ids[2:], attention_mask=mask[2:], **kwargs)
    assert torch.equal(batch.sequences[2:], alone.sequences)
    for a, b in zip(batch.logits, alone.logits):
        torch.testing.assert_close(a[2:], b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model_type", [name for name, modes in REFUSED.items() if "beam" in modes and "greedy" not in modes])
def test_refused_beam_families_are_inconsistent_in_transformers(model_type):
    """Why beam modes are refused for these families: transformers' own beam search returns
    ``sequences_scores`` that one uncached forward over the returned tokens disagrees with (part
    of the state stays where it was when beams move). When this starts failing, transformers has
    fixed it and the refusal in ferrogen/families.py can go."""
    model = tiny(model_type)
    ids, mask = padded_batch(False)
    kwargs = dict(MODES["beam"], max_new_tokens=NEW, pad_token_id=PAD, return_dict_in_generate=True,
                  output_scores=True)
    theirs = hf_generate(model, ids, mask, **kwargs)
    fresh = uncached_log_probs(model, ids, mask, theirs)
    assert float((theirs.sequences_scores - fresh).abs().max()) > 1e-2


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "mistral", "jamba", "bloom"])
def test_generic_step_recipe_equals_transformers_generic_method(model_type):
    """Families on transformers' generic ``prepare_inputs_for_generation`` get their step inputs
    from ferrogen's recipe (cheaper); it must give exactly what the generic method gives."""
    from ferrogen.families import prepares_own_steps, step_inputs
    from ferrogen.adapter_common import new_cache

    model = tiny(model_type)
    assert not prepares_own_steps(model)
    ids, mask = padded_batch(False)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    _, cache = new_cache(model, encoder_decoder=False)
    for first, tokens in ((True, ids), (False, ids[:, -1:])):
        state = dict(cache=cache, use_cache=True, attention_mask=mask, position_ids=positions, logits_to_keep=1)
        ours = step_inputs(model, tokens, state, first, own=False)
        theirs = step_inputs(model, tokens, state, first, own=True)
        assert sorted(ours) == sorted(theirs)
        for key, value in theirs.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(ours[key], value), key
            else:
                assert ours[key] is value or ours[key] == value, key


@pytest.mark.parametrize("main_type,assistant_type", [("mistral", "llama"), ("gemma2", "llama"), ("llama", "gemma2")])
def test_assisted_with_sliding_window_cache_matches_transformers(main_type, assistant_type):
    """Assisted decoding crops rejected drafts; a sliding-window layer that already dropped what
    fell out of its window (4 here) raised mid-generation until the adapters made the cache
    record past states for rollback, as transformers' assisted decoding does."""
    main, assistant = tiny(main_type), tiny(assistant_type)
    ids, mask = padded_batch(False, (7,))
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=PAD, return_dict_in_generate=True,
                  output_logits=True)
    theirs = hf_generate(main, ids, mask, assistant_model=assistant, **kwargs)
    ours = ferrogen.generate(main, input_ids=ids, attention_mask=mask, assistant_model=assistant, **kwargs)
    assert torch.equal(ours.sequences, theirs.sequences)
    for a, b in zip(ours.logits, theirs.logits):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("main_type,assistant_type", [("mamba", "llama"), ("llama", "mamba"), ("jamba", "jamba")])
def test_assisted_with_recurrent_cache_refused_before_any_forward(main_type, assistant_type):
    main, assistant = tiny(main_type), tiny(assistant_type)
    recurrent = main_type if main_type != "llama" else assistant_type
    ids, mask = padded_batch(False, (7,))

    def no_forward(*_):
        raise AssertionError("a model ran before the refusal")

    hooks = [m.register_forward_pre_hook(no_forward) for m in (main, assistant)]
    try:
        with pytest.raises(ValueError, match=f"model_type '{recurrent}'.*assisted decoding"):
            ferrogen.generate(main, input_ids=ids, attention_mask=mask, assistant_model=assistant, max_new_tokens=4,
                              pad_token_id=PAD)
    finally:
        for hook in hooks:
            hook.remove()


def test_readme_lists_every_family_of_the_matrix():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Model families", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in ARCHITECTURES if f"`{name}`" not in section]
    assert not missing, f"README 'Model families' does not list {missing}"
