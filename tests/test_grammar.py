"""Structured output (json_schema / regex / grammar / choices) with every strategy.

Parity: a grammar call equals transformers' own ``generate`` with a
``prefix_allowed_tokens_fn`` that allows exactly the grammar's tokens (computed by
replaying each prefix on a fresh matcher, so the cloned / rolled-back matchers of the
generation are checked against replay). Validity: every returned sequence parses.
"""

from __future__ import annotations

import json
import re
import warnings

import jsonschema
import pytest
import torch

import ferrogen
from ferrogen import _core

pytestmark = [pytest.mark.skipif(not hasattr(_core, "GrammarVocab"), reason="built without the grammar feature"),
              pytest.mark.usefixtures("one_torch_thread")]

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "kind": {"enum": ["lamb", "ox", "dove"]},
        "age": {"type": "integer", "minimum": 0, "maximum": 99},
        "place": {
            "type": "object",
            "properties": {"city": {"enum": ["Zion", "Babylon"]}, "holy": {"type": "boolean"}},
            "required": ["city", "holy"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "kind", "age", "place"],
    "additionalProperties": False,
    "x-guidance": {"whitespace_flexible": False},
}
REGEX = r"(yea|nay), (the )?(lord|king) (said|spake) [a-z]{1,6}\."


@pytest.fixture(scope="module")
def embedded():
    model, tok = ferrogen.text.load_model(ferrogen.embedded_model_path("causal"))
    return model, tok


def _prompts(tok, texts):
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


def _texts(tok, out, prompt_len):
    return [tok.decode(row[prompt_len:], skip_special_tokens=True) for row in out]


def _prefix_fn(grammar, prompt_len, eos, vocab):
    """transformers' prefix_allowed_tokens_fn allowing exactly the grammar's tokens."""
    cache: dict = {}

    def allowed(batch_id, ids):
        key = tuple(ids[prompt_len:].tolist())
        if key not in cache:
            cache[key] = grammar.allowed_after(list(key), eos, vocab)
        return cache[key]

    return allowed


def _compiled(tok, kind, spec):
    return _core.Grammar(ferrogen.grammar.grammar_vocab(tok, None), kind, spec)


def _hf(model, ids, mask, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            return model.generate(input_ids=ids, attention_mask=mask, **kwargs)


@pytest.mark.parametrize("beams", [1, 4])
def test_matches_transformers_prefix_allowed_tokens(embedded, beams):
    model, tok = embedded
    ids, mask = _prompts(tok, ["And God said", "In the beginning the"])
    eos = [model.generation_config.eos_token_id]
    fn = _prefix_fn(_compiled(tok, "json_schema", json.dumps(SCHEMA)), ids.shape[1], eos, model.config.vocab_size)
    kw = dict(max_new_tokens=40, num_beams=beams, num_return_sequences=min(beams, 2), do_sample=False,
              return_dict_in_generate=True, output_scores=True, pad_token_id=0)
    ref = _hf(model, ids, mask, prefix_allowed_tokens_fn=fn, **kw)
    got = ferrogen.generate(model, ids, mask, tokenizer=tok, json_schema=SCHEMA, **kw)
    assert torch.equal(got.sequences, ref.sequences)
    for a, b in zip(got.scores, ref.scores):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    if beams > 1:
        torch.testing.assert_close(got.sequences_scores, ref.sequences_scores)


@pytest.mark.parametrize("beam_kw", [dict(num_beams=3), dict(num_beams=3, do_sample=True, seed=4)])
def test_item_whose_beams_can_only_end_closes(embedded, beam_kw):
    """Every beam of the second prompt completes a short string at once (only EOS allowed):
    its running beams fall to -inf. The item is closed, not an error (NoValidTokenError was
    raised here), and greedy-beam equals transformers' prefix_allowed_tokens_fn reference."""
    model, tok = embedded
    schema = {"type": "string", "maxLength": 5, "x-guidance": {"whitespace_flexible": False}}
    ids, mask = _prompts(tok, ["And God said", "The king of Babylon"])
    eos = [model.generation_config.eos_token_id]
    kw = dict(max_new_tokens=12, num_return_sequences=2, return_dict_in_generate=True, pad_token_id=0, **beam_kw)
    got = ferrogen.generate(model, ids, mask, tokenizer=tok, json_schema=schema, **kw)
    for text in _texts(tok, got.sequences, ids.shape[1]):
        jsonschema.validate(json.loads(text), schema)
    if not beam_kw.get("do_sample"):
        fn = _prefix_fn(_compiled(tok, "json_schema", json.dumps(schema)), ids.shape[1], eos, model.config.vocab_size)
        ref = _hf(model, ids, mask, prefix_allowed_tokens_fn=fn, do_sample=False, **kw).sequences.clone()
        for row in ref:  # transformers 5.x pads with EOS when pad_token_id is 0 (transformers-differences.md)
            ends = (row[ids.shape[1]:] == eos[0]).nonzero()
            if len(ends):
                row[ids.shape[1] + int(ends[0]) + 1:] = 0
        assert torch.equal(got.sequences, ref)


def _valid_json(text):
    value = json.loads(text)
    jsonschema.validate(value, SCHEMA)
    return value


STRATEGIES = {
    "greedy": dict(),
    "sample": dict(do_sample=True, seed=3, num_return_sequences=2, top_k=20, temperature=1.3),
    "beam": dict(num_beams=4, num_return_sequences=3),
    "beam_sample": dict(num_beams=3, do_sample=True, seed=5, num_return_sequences=2),
    "group_beam": dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5, num_return_sequences=2),
    "contrastive": dict(penalty_alpha=0.6, top_k=4),
    "prompt_lookup": dict(prompt_lookup_num_tokens=3),
}


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_returns_valid_json(embedded, strategy):
    model, tok = embedded
    ids, mask = _prompts(tok, ["And God said", "The king of Babylon"])
    out = ferrogen.generate(model, ids, mask, tokenizer=tok, json_schema=SCHEMA, max_new_tokens=80,
                            return_dict_in_generate=True, **STRATEGIES[strategy])
    for text in _texts(tok, out.sequences, ids.shape[1]):
        _valid_json(text)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_matches_the_regex(embedded, strategy):
    model, tok = embedded
    ids, mask = _prompts(tok, ["And God said", "The king of Babylon"])
    out = ferrogen.generate(model, ids, mask, tokenizer=tok, regex=REGEX, max_new_tokens=40,
                            **STRATEGIES[strategy])
    for text in _texts(tok, out, ids.shape[1]):
        assert re.fullmatch(REGEX, text), text


def test_assistant_model_drafts_are_checked(embedded):
    model, tok = embedded
    ids, mask = _prompts(tok, ["And God said"])
    out = ferrogen.generate(model, ids, mask, tokenizer=tok, json_schema=SCHEMA, max_new_tokens=80,
                            assistant_model=model)
    _valid_json(_texts(tok, out, ids.shape[1])[0])
    ref = ferrogen.generate(model, ids, mask, tokenizer=tok, json_schema=SCHEMA, max_new_tokens=80)
    assert torch.equal(out, ref)  # greedy assisted decoding is greedy decoding


def test_constrained_beam_meets_forced_words_and_grammar(embedded):
    model, tok = embedded
    ids, mask = _prompts(tok, ["And God said"])
    out = ferrogen.generate(model, ids, mask, tokenizer=tok, regex=REGEX, force_words=[" king"], num_beams=4,
                            num_return_sequences=2, max_new_tokens=30)
    for text in _texts(tok, out, ids.shape[1]):
        assert re.fullmatch(REGEX, text), text
        assert " king" in text


def test_grammar_allowing_everything_changes_nothing(embedded):
    model, tok = embedded
    ids, mask = _prompts(tok, ["And God said", "In the beginning the"])
    for kw in (dict(), dict(num_beams=3, num_return_sequences=2)):
        plain = ferrogen.generate(model, ids, mask, max_new_tokens=25, pad_token_id=0, **kw)
        free = ferrogen.generate(model, ids, mask, tokenizer=tok, regex=r"(?s:.*)", max_new_tokens=25,
                                 pad_token_id=0, **kw)
        assert torch.equal(plain, free)


def test_rows_with_different_constraints(embedded):
    model, tok = embedded
    ids, mask = _prompts(tok, ["And God said", "The king", "Behold"])
    out = ferrogen.generate(model, ids, mask, tokenizer=tok, max_new_tokens=60,
                            choices=[["yea", "nay"], ["Zion", "Babylon", "Egypt"], ["amen"]])
    texts = _texts(tok, out, ids.shape[1])
    assert texts[0] in ("yea", "nay") and texts[1] in ("Zion", "Babylon", "Egypt") and texts[2] == "amen"
    schemas = [SCHEMA, {"type": "array", "items": {"type": "boolean"}, "maxItems": 3,
                         "x-guidance": {"whitespace_flexible": False}}]
    out = ferrogen.generate(model, ids[:2], mask[:2], tokenizer=tok, json_schema=schemas, max_new_tokens=80)
    first, second = _texts(tok, out, ids.shape[1])
    _valid_json(first)
    jsonschema.validate(json.loads(second), schemas[1])


def test_grammar_and_lark(embedded):
    model, tok = embedded
    ids, mask = _prompts(tok, ["And God said"])
    grammar = 'start: "The " animal " is " colour "."\nanimal: "lamb" | "ox"\ncolour: "white" | "red"'
    out = ferrogen.generate(model, ids, mask, tokenizer=tok, grammar=grammar, max_new_tokens=30, num_beams=2)
    assert re.fullmatch(r"The (lamb|ox) is (white|red)\.", _texts(tok, out, ids.shape[1])[0])


def test_finish_reason_and_streaming(embedded):
    model, tok = embedded
    ids, mask = _prompts(tok, ["And God said"])
    seen = []

    class Collect:
        def put(self, t):
            seen.append(t.reshape(-1).tolist())

        def end(self):
            pass

    out = ferrogen.generate(model, ids, mask, tokenizer=tok, choices=["amen"], max_new_tokens=20,
                            return_dict_in_generate=True, streamer=Collect())
    assert out.finish_reasons == ["eos"]
    assert sum(seen[1:], []) == out.sequences[0, ids.shape[1]:].tolist()


class _NoModel(torch.nn.Module):
    """Fails if the model runs: errors must come before any model work."""

    def __init__(self, model):
        super().__init__()
        self.config = model.config
        self.generation_config = model.generation_config

    def forward(self, *a, **k):
        raise AssertionError("the model ran")


@pytest.mark.parametrize("kwargs, name, where", [
    (dict(json_schema='{"type": "object", "properties": {"a": {"type": "strin'), "json_schema", "column"),
    (dict(json_schema={"type": "object", "properties": {"a": {"type": "nosuchtype"}}}), "json_schema", "nosuchtype"),
    (dict(regex="(ab"), "regex", ""),
    (dict(grammar='start: "a" missing_rule'), "grammar", "missing_rule"),
    (dict(choices=[]), "choices", ""),
    (dict(regex="a", choices=["b"]), "choices", "regex"),
])
def test_invalid_constraints_raise_before_the_model_runs(embedded, kwargs, name, where):
    model, tok = embedded
    ids, mask = _prompts(tok, ["And God said"])
    with pytest.raises(ValueError, match=rf"^{name}") as err:
        ferrogen.generate(_NoModel(model), ids, mask, tokenizer=tok, max_new_tokens=5, **kwargs)
    assert where in str(err.value)


def test_tokenizer_is_required_and_bridged(embedded):
    model, tok = embedded
    ids, mask = _prompts(tok, ["And God said"])
    with pytest.raises(ValueError, match="^regex: needs tokenizer"):
        ferrogen.generate(_NoModel(model), ids, mask, regex="a", max_new_tokens=5)
    with pytest.raises(ValueError, match="^tokenizer: .*cannot be bridged"):
        ferrogen.generate(_NoModel(model), ids, mask, regex="a", tokenizer=object(), max_new_tokens=5)


def test_config_round_trip(tmp_path):
    cfg = ferrogen.GenerationConfig(json_schema=SCHEMA, max_new_tokens=7)
    cfg.save_pretrained(tmp_path)
    back = ferrogen.GenerationConfig.from_pretrained(tmp_path)
    assert back.json_schema == SCHEMA and back == cfg
    assert ferrogen.GenerationConfig(regex="a+").regex == "a+"


def test_cli_flags_and_jsonl_overrides(tmp_path, capsys):
    from ferrogen.cli import main

    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    assert main(["generate", "--prompt", "And God said", "--json-schema", str(schema), "--max-new-tokens", "80"]) == 0
    _valid_json(json.loads(capsys.readouterr().out)["text"])
    assert main(["generate", "--prompt", "And God said", "--regex", "[0-9]{3}", "--max-new-tokens", "10"]) == 0
    assert re.fullmatch("[0-9]{3}", json.loads(capsys.readouterr().out)["text"])
    lines = tmp_path / "in.jsonl"
    lines.write_text(json.dumps({"prompt": "Behold", "choices": ["Selah", "Amen"]}) + "\n")
    assert main(["generate", "--input", str(lines), "--max-new-tokens", "10"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["text"] in ("Selah", "Amen")


def test_row_seeds_and_beam_tree_keep_working(embedded):
    model, tok = embedded
    ids, mask = _prompts(tok, ["And God said", "The king of Babylon"])
    kw = dict(tokenizer=tok, regex=REGEX, max_new_tokens=30, do_sample=True, pad_token_id=0)
    both = ferrogen.generate(model, ids, mask, row_seeds=[5, 7], **kw)
    for row, seed in enumerate((5, 7)):
        alone_ids, alone_mask = _prompts(tok, [["And God said", "The king of Babylon"][row]])
        alone = ferrogen.generate(model, alone_ids, alone_mask, seed=seed, **kw)
        got = both[row, ids.shape[1]:]
        assert got[: alone.shape[1] - alone_ids.shape[1]].tolist() == alone[0, alone_ids.shape[1]:].tolist()
    out = ferrogen.generate(model, ids, mask, tokenizer=tok, regex=REGEX, max_new_tokens=30, num_beams=3,
                            output_beam_tree=True)
    assert out.beam_tree is not None
    for text in _texts(tok, out.sequences, ids.shape[1]):
        assert re.fullmatch(REGEX, text), text


BEAM_STRATEGIES = {k: STRATEGIES[k] for k in ("beam", "beam_sample", "group_beam")}


@pytest.mark.parametrize("strategy", ["greedy", "sample", "contrastive", *sorted(BEAM_STRATEGIES)])
def test_finish_reason_grammar_when_the_constraint_dies(embedded, strategy):
    """A user processor (which runs after the grammar mask) makes a token the schema forbids
    the best first token: a row that takes it has a dead grammar from then on, may only end
    (EOS), and says so ("grammar"), in beam modes too, where the returned hypotheses are
    replayed rather than tracked per beam row. Rows that did not take it stay valid."""
    model, tok = embedded
    ids, mask = _prompts(tok, ["And God said", "The king of Babylon"])
    forced = tok(" the", add_special_tokens=False).input_ids[0]
    eos = model.generation_config.eos_token_id
    prompt_len = ids.shape[1]

    def favour_first(input_ids, scores):
        if input_ids.shape[1] == prompt_len:
            scores = scores.clone()
            scores[:, forced] = scores.max() + 50.0
        return scores

    out = ferrogen.generate(model, ids, mask, tokenizer=tok, json_schema=SCHEMA, max_new_tokens=12, pad_token_id=0,
                            logits_processor=[favour_first], return_dict_in_generate=True, **STRATEGIES[strategy])
    took = out.sequences[:, prompt_len] == forced
    assert bool(took.any())
    for row, reason in enumerate(out.finish_reasons):
        if took[row]:
            assert reason == "grammar"
            assert out.sequences[row, prompt_len + 1] == eos
        else:
            assert reason in ("eos", "length")
            text = _texts(tok, out.sequences[row : row + 1], prompt_len)[0]
            if reason == "eos":
                _valid_json(text)


@pytest.mark.parametrize("strategy", ["greedy", *sorted(BEAM_STRATEGIES)])
def test_finish_reason_eos_when_the_constraint_completes(embedded, strategy):
    model, tok = embedded
    ids, mask = _prompts(tok, ["And God said", "Behold"])
    out = ferrogen.generate(model, ids, mask, tokenizer=tok, choices=["amen", "Selah"], max_new_tokens=20,
                            pad_token_id=0, return_dict_in_generate=True, **STRATEGIES[strategy])
    assert out.finish_reasons == ["eos"] * out.sequences.shape[0]
    assert set(_texts(tok, out.sequences, ids.shape[1])) <= {"amen", "Selah"}


def test_beam_sampling_with_fewer_outputs_than_rows_says_so(embedded):
    """Only one output exists, beam sampling never draws a zero-probability candidate: the
    second returned row is a placeholder, reported as such (it was "length", with no token)."""
    model, tok = embedded
    ids, mask = _prompts(tok, ["And God said"])
    out = ferrogen.generate(model, ids, mask, tokenizer=tok, choices=["amen"], max_new_tokens=20, num_beams=3,
                            do_sample=True, seed=2, num_return_sequences=2, pad_token_id=0,
                            return_dict_in_generate=True, output_scores=True)
    assert out.finish_reasons == ["eos", "no_hypothesis"]
    assert _texts(tok, out.sequences, ids.shape[1]) == ["amen", ""]
    assert float(out.sequences_scores[1]) == -1e9


def test_finish_reason_grammar_in_constrained_beam_search(embedded):
    """As test_finish_reason_grammar_when_the_constraint_dies, with forced words: the second
    prompt already holds " king" (transformers counts the prompt toward constraints), so its
    dead row may finish and is reported as "grammar"."""
    model, tok = embedded
    ids, mask = _prompts(tok, ["And God said", "The king of Babylon"])
    forced = tok(" the", add_special_tokens=False).input_ids[0]
    prompt_len = ids.shape[1]

    def favour_first(input_ids, scores):
        if input_ids.shape[1] == prompt_len:
            scores = scores.clone()
            scores[:, forced] = scores.max() + 50.0
        return scores

    out = ferrogen.generate(model, ids, mask, tokenizer=tok, regex=REGEX, force_words=[" king"], num_beams=4,
                            num_return_sequences=2, max_new_tokens=30, pad_token_id=0,
                            logits_processor=[favour_first], return_dict_in_generate=True)
    took = (out.sequences[:, prompt_len] == forced).tolist()
    assert any(took)
    for row, (reason, text) in enumerate(zip(out.finish_reasons, _texts(tok, out.sequences, prompt_len))):
        if took[row]:
            assert reason == "grammar" and text == " the"
        else:
            assert reason == "eos" and re.fullmatch(REGEX, text), (reason, text)
