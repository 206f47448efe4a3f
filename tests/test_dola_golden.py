"""DoLa decoding against golden outputs of transformers 4.55.4, plus its errors and enable().

transformers 5.x moved DoLa to the Hub; ``scripts/make_dola_goldens.py`` runs 4.55.4 (the last
release with it built in) in a separate venv on the decoder-only models stored in ``tests/data``
(GPT-2 with tied embeddings and 2 layers, Llama with 4 untied layers, Qwen2 with 6 tied layers)
and writes ``tests/goldens/dola.json``. Grid: ``"low"`` / ``"high"`` / a layer list (several
candidates: the Jensen-Shannon choice), batch 1 and a left-padded batch of 3, plus repetition
penalty, EOS mid-batch, min_new_tokens, and processed scores / raw logits. Greedy only: 4.55.4
samples with torch.multinomial, which ferrogen's seeded sampler does not reproduce.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

import ferrogen
from ferrogen import FallbackWarning, compat
from ferrogen.strategies.dola import candidate_layers
from conftest import assert_close_to_golden, left_padded_batch
from golden_models import load_stored

GOLDEN = json.loads((Path(__file__).parent / "goldens" / "dola.json").read_text())
CASES = {case["name"]: case for case in GOLDEN["cases"]}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models():
    return {name: load_stored(name) for name in ("gpt2", "llama", "qwen2")}


def run(models, case, **extra):
    ids = torch.tensor(case["input_ids"])
    mask = torch.tensor(case["attention_mask"])
    kwargs = dict(case["kwargs"], return_dict_in_generate=True, **extra)
    return ferrogen.generate(models[case["model"]], input_ids=ids, attention_mask=mask, **kwargs)


def close(ours, theirs, skip=None):
    theirs = torch.tensor(theirs)
    if skip is not None:  # entries 4.55.4 computes by another rule; compared as equal
        theirs = torch.where(skip, ours, theirs)
    finite = torch.isfinite(theirs)
    assert torch.equal(finite, torch.isfinite(ours))
    assert_close_to_golden(ours[finite], theirs[finite])


@pytest.mark.parametrize("name", sorted(CASES))
def test_dola_matches_golden(models, name):
    case = CASES[name]
    out = run(models, case)
    assert out.sequences.tolist() == case["sequences"]
    for ours, theirs in zip(out.scores or (), case.get("scores", [])):
        close(ours, theirs, padding_penalised(case, ours.shape))
    for ours, theirs in zip(out.logits or (), case.get("logits", [])):
        close(ours, theirs)


def padding_penalised(case, shape):
    """4.55.4's repetition penalty also penalises the pad token of left-padded prompts; 5.x (and
    ferrogen) leave padding out. That pad-token score of the padded rows is not DoLa's to match."""
    if case["kwargs"].get("repetition_penalty", 1.0) == 1.0:
        return None
    skip = torch.zeros(shape, dtype=torch.bool)
    for row, mask in enumerate(case["attention_mask"]):
        skip[row, case["kwargs"]["pad_token_id"]] = mask[0] == 0
    return skip


def test_grid_is_complete():
    for model in ("gpt2", "llama", "qwen2"):
        for batch in ("b1", "b3"):
            for layers in ("low", "high", "list"):
                assert f"{model}-{batch}-{layers}" in CASES
    assert len(CASES["qwen2-b3-scores"]["scores"]) == 3 and len(CASES["qwen2-b3-scores"]["logits"]) == 3


def test_dola_changes_the_output(models):
    """The contrast is not a no-op on these models (else the goldens would prove little)."""
    differs = 0
    for case in CASES.values():
        if case["name"].endswith(("-low", "-high", "-list")):
            plain = dict(case["kwargs"])
            plain.pop("dola_layers")
            out = ferrogen.generate(models[case["model"]], input_ids=torch.tensor(case["input_ids"]),
                                    attention_mask=torch.tensor(case["attention_mask"]), **plain)
            differs += out.tolist() != case["sequences"]
    assert differs >= 6


@pytest.mark.parametrize(
    ("layers", "tied", "dola_layers", "expected"),
    [
        (2, True, "low", [1]), (2, True, "high", [1]), (4, False, "low", [0]), (4, False, "high", [2]),
        (6, True, "low", [2]), (6, True, "high", [3, 5]), (1, True, "low", [0]), (48, False, "low", list(range(0, 20, 2))),
        (48, True, "high", list(range(28, 48, 2))), (4, False, [0, 3, 4, 9], [0, 3]),
    ],
)
def test_candidate_layers_follow_transformers(layers, tied, dola_layers, expected):
    config = transformers_config(layers, tied)
    assert candidate_layers(config, dola_layers) == expected


def transformers_config(layers, tied):
    import transformers

    return transformers.LlamaConfig(num_hidden_layers=layers, tie_word_embeddings=tied, hidden_size=8,
                                    num_attention_heads=2, intermediate_size=8, vocab_size=16)


def test_sampling_with_one_candidate_token_is_greedy_dola(models):
    """DoLa with sampling draws from the contrasted logits: top_k=1 leaves only greedy DoLa's pick."""
    case = CASES["llama-b3-list"]
    out = run(models, dict(case, kwargs=dict(case["kwargs"], do_sample=True, top_k=1, seed=3)))
    assert out.sequences.tolist() == case["sequences"]


def test_sampling_is_reproducible_with_a_seed(models):
    case = CASES["qwen2-b3-high"]
    first = run(models, dict(case, kwargs=dict(case["kwargs"], do_sample=True, seed=11)))
    again = run(models, dict(case, kwargs=dict(case["kwargs"], do_sample=True, seed=11)))
    assert torch.equal(first.sequences, again.sequences)


def test_hidden_states_only_when_asked(models):
    case = CASES["llama-b1-high"]
    assert run(models, case).hidden_states is None
    out = run(models, case, output_hidden_states=True)
    assert len(out.hidden_states) == case["kwargs"]["max_new_tokens"]
    assert len(out.hidden_states[0]) == 5  # embeddings + 4 layers


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(dola_layers="low", num_beams=2), "dola_layers"),
        (dict(dola_layers="high", penalty_alpha=0.6, top_k=4), "dola_layers"),
        (dict(dola_layers="high", prompt_lookup_num_tokens=2), "dola_layers"),
        (dict(dola_layers=[7, 9]), "dola_layers"),
        (dict(dola_layers="middle"), "dola_layers"),
        (dict(dola_layers=[-1]), "dola_layers"),
    ],
)
def test_invalid_settings_name_the_argument(models, kwargs, field):
    ids, mask = left_padded_batch((4,))
    with pytest.raises(ValueError, match=f"^{field}:"):
        ferrogen.generate(models["llama"], input_ids=ids, attention_mask=mask, max_new_tokens=3, **kwargs)


def test_encoder_decoder_and_plain_modules_are_refused(stored):
    class Bare(torch.nn.Module):
        def forward(self, input_ids):
            return torch.zeros(input_ids.shape[0], input_ids.shape[1], 8)

    for model in (stored["t5"], Bare()):
        with pytest.raises(ValueError, match="^model: DoLa"):
            ferrogen.generate(model, input_ids=torch.tensor([[3, 4]]), max_new_tokens=2, dola_layers="low",
                              decoder_start_token_id=0)


@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(compat, "_warned", set())


def test_enable_runs_dola_natively(models, fresh_warnings):
    """Before: dola_layers made model.generate fall back to transformers (which 5.x sends to the Hub)."""
    case = CASES["llama-b3-rep-high"]
    model = models["llama"]
    kwargs = {k: v for k, v in case["kwargs"].items()}
    ids, mask = torch.tensor(case["input_ids"]), torch.tensor(case["attention_mask"])
    with ferrogen.patched(model), warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        got = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
    assert got.tolist() == case["sequences"]


def test_custom_generate_folder_runs_dola(models, fresh_warnings, tmp_path, monkeypatch):
    import sys

    import transformers.dynamic_module_utils as dmu

    monkeypatch.setattr(dmu, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    case = CASES["gpt2-b3-list"]
    ids, mask = torch.tensor(case["input_ids"]), torch.tensor(case["attention_mask"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        got = models["gpt2"].generate(input_ids=ids, attention_mask=mask, **case["kwargs"], trust_remote_code=True,
                                      custom_generate=ferrogen.custom_generate_path("transformers-community/dola"))
    assert got.tolist() == case["sequences"]
