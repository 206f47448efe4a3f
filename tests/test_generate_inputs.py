"""generate() rejects bad inputs before running the model, naming the argument."""

from __future__ import annotations

import pytest
import torch

import ferrogen
from conftest import left_padded_batch


class CountingModel(torch.nn.Module):
    """A plain module that records whether it ever ran."""

    def __init__(self, vocab=8):
        super().__init__()
        self.calls = 0
        self.vocab = vocab

    def forward(self, input_ids):
        self.calls += 1
        return torch.zeros(input_ids.shape[0], input_ids.shape[1], self.vocab)


@pytest.mark.parametrize(
    "kwargs, exc, needle",
    [
        (dict(input_ids=None), ValueError, "input_ids"),
        (dict(input_ids=torch.zeros(2, 3, 4, dtype=torch.long)), ValueError, "input_ids"),
        (dict(input_ids=torch.zeros(0, 3, dtype=torch.long)), ValueError, "input_ids"),
        (dict(input_ids=torch.zeros(1, 3)), ValueError, "input_ids"),
        (dict(attention_mask=torch.ones(1, 5)), ValueError, "attention_mask"),
        (dict(max_new_tokens=-1), ValueError, "max_new_tokens"),
        (dict(max_length=2), ValueError, "max_length"),
        (dict(num_beams=0), ValueError, "num_beams"),
        (dict(top_p=0.0, do_sample=True), ValueError, "top_p"),
        (dict(not_a_field=1), TypeError, "not_a_field"),
        (dict(decoder_input_ids=torch.zeros(1, 1, dtype=torch.long)), TypeError, "decoder_input_ids"),
        (dict(generation_config=42), TypeError, "generation_config"),
        # accepted in a config, but not carried out: refused rather than silently ignored
        # native in greedy / sampling only
        (dict(guidance_scale=1.5, prompt_lookup_num_tokens=2), ValueError, "^guidance_scale: 1.5 asks for a feature"),
        # SynthID's settings, checked before the model runs
        (dict(watermarking_config={"ngram_len": 5, "keys": []}), ValueError, "^watermarking_config.keys: "),
        (dict(watermarking_config={"ngram_len": 5}), ValueError, "^watermarking_config.keys: is required"),
        (dict(watermarking_config={"ngram_len": 5, "keys": ["a"]}), ValueError, "^watermarking_config.keys: must be"),
        (dict(watermarking_config={"ngram_len": 0, "keys": [1]}), ValueError, "^watermarking_config.ngram_len: "),
        (dict(watermarking_config={"ngram_len": 2, "keys": [1], "sampling_table_size": 0}), ValueError,
         "^watermarking_config.sampling_table_size: "),
        (dict(watermarking_config={"ngram_len": 2, "keys": [1], "sampling_table_size": 2**24 + 1}), ValueError,
         "^watermarking_config.sampling_table_size: "),
        (dict(watermarking_config={"ngram_len": 2, "keys": [1], "sampling_table_seed": 2**64}), ValueError,
         "^watermarking_config.sampling_table_seed: "),
        (dict(watermarking_config={"ngram_len": 2, "keys": [1], "context_history_size": -1}), ValueError,
         "^watermarking_config.context_history_size: "),
        (dict(watermarking_config={"ngram_len": 2, "keys": [2**63]}), ValueError, "^watermarking_config.keys: "),
        (dict(watermarking_config={"greenlist_ratio": 1.5}), ValueError, "watermarking_config.greenlist_ratio"),
        (dict(watermarking_config={"seeding_scheme": "x"}), ValueError, "^watermarking_config: .*'lefthash'"),
        (dict(guidance_scale=2.0, negative_prompt_ids=torch.zeros(2, 2, dtype=torch.long)), ValueError,
         "^negative_prompt_ids: has 2 rows"),
        (dict(forced_decoder_ids=[[1, 5]]), ValueError, "^forced_decoder_ids: .* prefix_allowed_tokens_fn"),
        (dict(token_healing=True), ValueError, "^token_healing"),
        (dict(output_attentions=True), ValueError, "^output_attentions"),
        (dict(output_hidden_states=True), ValueError, "^output_hidden_states"),
        (dict(dola_layers="low", num_beams=2), ValueError, "^dola_layers: DoLa decoding works only"),
        (dict(prefix_allowed_tokens_fn=[1]), TypeError, "^prefix_allowed_tokens_fn: must be a callable"),
    ],
)
def test_rejected_before_the_model_runs(kwargs, exc, needle):
    model = CountingModel()
    args = dict(input_ids=torch.zeros(1, 3, dtype=torch.long), eos_token_id=1, pad_token_id=0)
    args.update(kwargs)
    with pytest.raises(exc, match=needle):
        ferrogen.generate(model, **args)
    assert model.calls == 0


def test_no_op_values_of_unsupported_fields_run(gpt2):
    ids = torch.tensor([[5, 6, 7]])
    plain = ferrogen.generate(gpt2, input_ids=ids, max_new_tokens=4, pad_token_id=0)
    same = ferrogen.generate(gpt2, input_ids=ids, max_new_tokens=4, pad_token_id=0, guidance_scale=1.0,
                             forced_decoder_ids=[], cache_implementation="static")
    assert torch.equal(plain, same)


def test_token_ids_outside_vocab(gpt2):
    ids = torch.tensor([[1, 2, 500]])
    with pytest.raises(ValueError, match="input_ids"):
        ferrogen.generate(gpt2, input_ids=ids)


@pytest.mark.parametrize("mode", [
    dict(),
    dict(num_beams=2),
    dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5),
    dict(num_beams=2, force_words_ids=[[5, 6]]),
], ids=["greedy", "beam", "group_beam", "constrained"])
def test_configured_ids_outside_vocab_are_refused_before_the_model_runs(gpt2, mode):
    calls = []
    handle = gpt2.register_forward_hook(lambda *_: calls.append(1))
    try:
        with pytest.raises(ferrogen.TokenOutOfVocabError, match="^eos_token_id: token id"):
            ferrogen.generate(gpt2, input_ids=torch.tensor([[1, 2, 3]]), max_new_tokens=3, pad_token_id=0,
                              eos_token_id=gpt2.config.vocab_size + 5, **mode)
    finally:
        handle.remove()
    assert not calls


def test_encoder_decoder_needs_a_start_token(t5):
    ids, mask = left_padded_batch((3,))
    cfg = ferrogen.GenerationConfig.from_pretrained(t5)
    with pytest.raises(ValueError, match="decoder_start_token_id"):
        t5_config_start = t5.config.decoder_start_token_id
        try:
            t5.config.decoder_start_token_id = None
            ferrogen.generate(t5, input_ids=ids, generation_config=cfg.merged(decoder_start_token_id=None, bos_token_id=None))
        finally:
            t5.config.decoder_start_token_id = t5_config_start


def test_max_new_tokens_zero_is_refused_as_in_transformers(gpt2):
    ids, mask = left_padded_batch((3, 2))
    with pytest.raises(ValueError, match=r"^max_new_tokens: must be in \[1, "):
        ferrogen.generate(gpt2, input_ids=ids, attention_mask=mask, max_new_tokens=0, return_dict_in_generate=True)


def test_unimplemented_strategy_says_so(gpt2, monkeypatch):
    from ferrogen.config import GenerationMode
    from ferrogen.strategies import STRATEGIES

    monkeypatch.delitem(STRATEGIES, GenerationMode.CONTRASTIVE_SEARCH)  # as in a build without it
    ids, _ = left_padded_batch((3,))
    with pytest.raises(NotImplementedError, match="contrastive_search"):
        ferrogen.generate(gpt2, input_ids=ids, penalty_alpha=0.6, top_k=4)


def test_all_filtered_logits_raise_a_named_error():
    class NanModel(CountingModel):
        def forward(self, input_ids):
            return torch.full((input_ids.shape[0], input_ids.shape[1], self.vocab), float("nan"))

    with pytest.raises(ferrogen.NoValidTokenError, match="row 0"):
        ferrogen.generate(NanModel(), input_ids=torch.zeros(1, 2, dtype=torch.long), eos_token_id=1, pad_token_id=0)


# What transformers 5.x generate does with each input is the reference: what it takes ferrogen
# takes (same tokens); what it fails on (with a bare AttributeError or IndexError) ferrogen
# refuses before the model runs, naming the argument and the fix.


@pytest.fixture(scope="module")
def embedded():
    return ferrogen.text.load_model(ferrogen.embedded_model_path())


def _hf_fails(model, *args, **kwargs):
    with pytest.raises(Exception):
        model.generate(*args, max_new_tokens=2, **kwargs)


@pytest.mark.parametrize("tensors", ["pt", None])
def test_tokenizer_output_passed_positionally_names_input_ids(embedded, tensors):
    model, tok = embedded
    enc = tok("And God said", return_tensors=tensors)
    _hf_fails(model, enc)
    with pytest.raises(TypeError, match=r"^input_ids: got a BatchEncoding .*\*\*tok\("):
        ferrogen.generate(model, enc, max_new_tokens=2)


def test_one_dimensional_input_ids_are_refused_as_transformers_does(embedded):
    model, tok = embedded
    ids = tok("And God said", return_tensors="pt")["input_ids"][0]
    _hf_fails(model, input_ids=ids)
    with pytest.raises(ValueError, match=r"^input_ids: expected shape \[batch, length\], got the 1-D shape"):
        ferrogen.generate(model, input_ids=ids, max_new_tokens=2)


def test_a_dict_generation_config_is_refused_as_transformers_does(embedded):
    model, tok = embedded
    enc = tok("And God said", return_tensors="pt")
    _hf_fails(model, **enc, generation_config={"max_new_tokens": 2})
    with pytest.raises(TypeError, match="^generation_config: expected a GenerationConfig, got a dict"):
        ferrogen.generate(model, **enc, generation_config={"max_new_tokens": 2})


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_a_float_or_bool_mask_of_zeros_and_ones_is_taken_as_transformers_takes_it(embedded, dtype):
    model, tok = embedded
    tok.padding_side = "left"
    tok.pad_token = tok.pad_token or tok.eos_token
    enc = tok(["And God said", "In the beginning God created"], return_tensors="pt", padding=True)
    mask = enc["attention_mask"].to(dtype)
    theirs = model.generate(input_ids=enc["input_ids"], attention_mask=mask, max_new_tokens=6, do_sample=False)
    ours = ferrogen.generate(model, input_ids=enc["input_ids"], attention_mask=mask, max_new_tokens=6, do_sample=False)
    assert torch.equal(ours, theirs)
    assert torch.equal(ours, ferrogen.generate(model, **enc, max_new_tokens=6, do_sample=False))


def test_a_mask_with_other_values_names_attention_mask(embedded):
    model, tok = embedded
    enc = tok("And God said", return_tensors="pt")
    with pytest.raises(ValueError, match=r"^attention_mask: values must be 0 \(padding\) or 1"):
        ferrogen.generate(model, input_ids=enc["input_ids"], attention_mask=enc["attention_mask"] * 0.5)


@pytest.mark.parametrize(
    ("name", "value", "advice"),
    [
        ("assistant_tokenizer", object(), "prompt_lookup_num_tokens"),
        ("synced_gpus", True, "ferrogen.distributed"),
        ("custom_generate", "a/folder", "custom_generate_path"),
        ("decoder_input_ids", torch.zeros(1, 1, dtype=torch.long), "pass input_ids"),
        ("pixel_values", torch.zeros(1, 3, dtype=torch.long), "model input"),
        ("max_new_tokenz", 3, "did you mean 'max_new_tokens'"),
    ],
)
def test_transformers_arguments_it_does_not_take_say_what_to_do(name, value, advice):
    model = CountingModel()
    with pytest.raises(TypeError, match=f"^{name}: ") as caught:
        ferrogen.generate(model, input_ids=torch.zeros(1, 3, dtype=torch.long), eos_token_id=1, pad_token_id=0,
                          **{name: value})
    message = str(caught.value)
    assert advice in message
    if name != "custom_generate":
        assert "ferrogen.enable(model)" in message and "FallbackWarning" in message
    assert model.calls == 0
