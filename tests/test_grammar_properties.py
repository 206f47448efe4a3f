"""Property tests of structured output: random small JSON schemas and random regexes,
greedy / sampling / beam search, on the embedded model and on a tiny random model over the
same tokenizer (random weights pick odd tokens, which the grammar must still keep in line);
beam sampling and diverse group beam search too.

Properties, for every returned row:
- finish reason ``"eos"``: the text is a complete output (``json.loads`` + ``jsonschema``;
  ``re.fullmatch``);
- finish reason ``"length"`` (the token budget ran out first): no EOS, and the tokens are a
  live prefix of the constraint (it can still be completed: not ``dead_after``), as
  documented in docs/strategies.md "Structured output";
- ``"no_hypothesis"`` only in beam sampling (a placeholder row: the constraint allows fewer
  outputs than ``num_return_sequences`` and a zero-probability candidate is never drawn);
- no other reason (no user processor overrides the mask here, so no constraint dies).

Derandomized with few examples (CI-stable, bounded time); ``FERROGEN_GRAMMAR_EXAMPLES``
scales them.
"""

from __future__ import annotations

import json
import os
import re

import jsonschema
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ferrogen
from ferrogen import _core

pytestmark = [pytest.mark.skipif(not hasattr(_core, "GrammarVocab"), reason="built without the grammar feature"),
              pytest.mark.usefixtures("one_torch_thread")]

EXAMPLES = int(os.environ.get("FERROGEN_GRAMMAR_EXAMPLES", "6"))
SETTINGS = dict(
    max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
NEW_TOKENS = 40
MODES = {
    "greedy": dict(),
    "sample": dict(do_sample=True, seed=11, num_return_sequences=2, temperature=1.5),
    "beam": dict(num_beams=3, num_return_sequences=2),
    "beam_sample": dict(num_beams=3, do_sample=True, seed=5, num_return_sequences=2),
    "group_beam": dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5, num_return_sequences=2),
}
PROMPTS = ["And God said", "The king of Babylon"]

# ---- random JSON schemas ------------------------------------------------------------------

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=6)
words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ", min_size=1, max_size=6)


@st.composite
def bounded_int(draw):
    lo = draw(st.integers(-50, 50))
    return {"type": "integer", "minimum": lo, "maximum": lo + draw(st.integers(0, 200))}


@st.composite
def bounded_number(draw):
    lo = draw(st.integers(-10, 10))
    return {"type": "number", "minimum": lo, "maximum": lo + draw(st.integers(1, 100))}


leaf_schemas = st.one_of(
    st.builds(lambda n: {"type": "string", "maxLength": n}, st.integers(0, 8)),
    st.builds(lambda lo, extra: {"type": "string", "minLength": lo, "maxLength": lo + extra},
              st.integers(1, 3), st.integers(0, 4)),
    bounded_int(),
    bounded_number(),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.builds(lambda vs: {"enum": vs}, st.lists(words, min_size=1, max_size=4, unique=True)),
    st.builds(lambda vs: {"enum": vs}, st.lists(st.integers(-9, 99), min_size=1, max_size=3, unique=True)),
)


def _object(children):
    @st.composite
    def build(draw):
        keys = draw(st.lists(names, min_size=1, max_size=3, unique=True))
        props = {k: draw(children) for k in keys}
        required = [k for k in keys if draw(st.booleans())]
        return {"type": "object", "properties": props, "required": required, "additionalProperties": False}

    return build()


def _array(children):
    return st.builds(lambda items, lo, extra: {"type": "array", "items": items, "minItems": lo, "maxItems": lo + extra},
                     children, st.integers(0, 1), st.integers(0, 2))


schemas = st.recursive(leaf_schemas, lambda children: st.one_of(_object(children), _array(children)), max_leaves=5)


@st.composite
def top_schemas(draw):
    schema = dict(draw(schemas))
    # mostly compact output (fits the token budget more often); sometimes llguidance's default
    schema["x-guidance"] = {"whitespace_flexible": draw(st.sampled_from([False, False, True]))}
    return schema


# ---- random regexes (an AST rendered in the syntax Rust's regex and Python's re share) ------

ATOMS = st.one_of(
    st.sampled_from(list("abcdefxyz0123 ,")),
    st.sampled_from(["[a-z]", "[0-9]", "[aeiou]", "[A-Z]", "[a-c0-2]", "[ ,]"]),
)


def _regex_nodes(children):
    return st.one_of(
        st.builds(lambda xs: "".join(xs), st.lists(children, min_size=2, max_size=4)),
        st.builds(lambda xs: "(?:" + "|".join(xs) + ")", st.lists(children, min_size=2, max_size=3)),
        st.builds(lambda x: "(?:" + x + ")?", children),
        st.builds(lambda x, lo, extra: "(?:" + x + "){" + f"{lo},{lo + extra}" + "}",
                  children, st.integers(0, 2), st.integers(0, 3)),
    )


regexes = st.recursive(ATOMS, _regex_nodes, max_leaves=8)

# ---- models --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded():
    return ferrogen.text.load_model(ferrogen.embedded_model_path("causal"))


@pytest.fixture(scope="module")
def tiny_random(embedded):
    """A 2-layer random GPT-2 over the embedded tokenizer's vocabulary (same EOS/pad)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    model, tok = embedded
    gen = model.generation_config
    cfg = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=model.config.vocab_size, n_positions=128,
                     bos_token_id=gen.bos_token_id, eos_token_id=gen.eos_token_id, pad_token_id=gen.pad_token_id)
    torch.manual_seed(0)
    return GPT2LMHeadModel(cfg).eval(), tok


def _run(model, tok, mode, **constraint):
    tok.padding_side = "left"
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    out = ferrogen.generate(model, enc["input_ids"], enc["attention_mask"], tokenizer=tok, max_new_tokens=NEW_TOKENS,
                            eos_token_id=model.generation_config.eos_token_id, pad_token_id=0,
                            return_dict_in_generate=True, **MODES[mode], **constraint)
    return out, enc["input_ids"].shape[1]


def _check_rows(tok, out, prompt_len, grammar, complete, mode):
    """The properties of the module docstring; ``complete(text)`` checks a finished output."""
    eos = tok.eos_token_id
    for row, reason in enumerate(out.finish_reasons):
        new = out.sequences[row, prompt_len:].tolist()
        assert reason in ("eos", "length", "no_hypothesis"), (row, reason)
        if reason == "no_hypothesis":  # beam sampling: fewer outputs than rows were asked for
            assert mode == "beam_sample" and set(new) <= {0}, (row, new)
        elif reason == "eos":
            generated = new[: new.index(eos)]
            text = tok.decode(generated, clean_up_tokenization_spaces=False)
            complete(text)
        else:
            assert eos not in new and len(new) == NEW_TOKENS, (row, new)
            assert not grammar.dead_after(new, [eos]), (row, new)


def _compiled(tok, kind, spec):
    return _core.Grammar(ferrogen.grammar.grammar_vocab(tok, None), kind, spec)


@pytest.mark.parametrize("which", ["embedded", "tiny_random"])
@pytest.mark.parametrize("mode", sorted(MODES))
def test_json_schema_outputs_validate(request, which, mode):
    model, tok = request.getfixturevalue(which)

    @settings(**SETTINGS)
    @given(schema=top_schemas())
    def check(schema):
        out, prompt_len = _run(model, tok, mode, json_schema=schema)

        def complete(text):
            jsonschema.validate(json.loads(text), schema)

        _check_rows(tok, out, prompt_len, _compiled(tok, "json_schema", json.dumps(schema)), complete, mode)

    check()


@pytest.mark.parametrize("which", ["embedded", "tiny_random"])
@pytest.mark.parametrize("mode", sorted(MODES))
def test_regex_outputs_match(request, which, mode):
    model, tok = request.getfixturevalue(which)

    @settings(**SETTINGS)
    @given(pattern=regexes)
    def check(pattern):
        out, prompt_len = _run(model, tok, mode, regex=pattern)

        def complete(text):
            assert re.fullmatch(pattern, text), (pattern, text)

        _check_rows(tok, out, prompt_len, _compiled(tok, "regex", pattern), complete, mode)

    check()
