"""Beam search and beam-search sampling are token-identical to transformers 5.x ``generate``.

Compared: ``sequences``, ``sequences_scores``, ``beam_indices`` and the processed ``scores``
(float tolerance), over num_beams ∈ {2, 4, 8}, length_penalty ∈ {0.5, 1, 2},
early_stopping ∈ {True, False, "never"}, num_return_sequences ∈ {1, num_beams}, EOS in
mid-search, a batch of 3 left-padded prompts, GPT-2 and T5 (the models stored in
``tests/data``). Beam sampling without a ``seed`` draws its noise from torch's global
generator exactly as ``torch.multinomial`` does, so it is compared token for token
under the same ``torch.manual_seed``.

One transformers 5.x defect is not reproduced: positions after a hypothesis ends are filled
with ``pad_token_id or eos_token_id[0]`` (so ``pad_token_id=0`` pads with EOS, and no EOS
pads with -1). ferrogen pads with ``pad_token_id`` like every other mode and like
transformers 4.x; :func:`assert_beam_same` checks exactly that mapping.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from transformers import LogitsProcessor, StoppingCriteria

import ferrogen
from conftest import hf_generate, left_padded_batch

LENGTHS = (5, 3, 7)
NEW = 8
OUTPUTS = dict(return_dict_in_generate=True, output_scores=True)
# EOS ids that make some returned hypothesis end by EOS after 3..7 tokens (found once by a scan;
# the stored weights make them stable, and test_eos_mid_search asserts it still holds)
MID_EOS = {("t5", 2): 72, ("t5", 4): 62, ("t5", 8): 62, ("gpt2", 4): 76, ("gpt2", 8): 76}


def prompt_len(model, ids):
    return 1 if model.config.is_encoder_decoder else ids.shape[1]


def hf_fill(kwargs, model):
    """What transformers 5.x writes after a beam hypothesis ends: ``pad or eos[0]`` (falsy pad 0 -> EOS)."""
    eos = kwargs.get("eos_token_id", model.generation_config.eos_token_id)
    eos = [eos] if isinstance(eos, int) else eos
    return (kwargs.get("pad_token_id") or eos[0]) if eos else -1


def assert_beam_same(ours, theirs, start, pad, fill, scores=True):
    assert ours.sequences.shape == theirs.sequences.shape, (ours.sequences, theirs.sequences)
    assert torch.equal(ours.beam_indices, theirs.beam_indices), (ours.beam_indices, theirs.beam_indices)
    generated = (theirs.beam_indices >= 0).sum(dim=1)
    for row, n in enumerate(generated.tolist()):
        end = start + n
        assert ours.sequences[row, :end].tolist() == theirs.sequences[row, :end].tolist(), row
        assert (ours.sequences[row, end:] == pad).all() and (theirs.sequences[row, end:] == fill).all()
    if scores:
        torch.testing.assert_close(ours.sequences_scores, theirs.sequences_scores, rtol=1e-5, atol=1e-5)
        assert len(ours.scores) == len(theirs.scores)
        for a, b in zip(ours.scores, theirs.scores):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def compare(model, ids, mask, seed=None, **kwargs):
    kwargs = dict(kwargs, pad_token_id=0)
    kwargs.setdefault("max_new_tokens", NEW)
    if seed is not None:
        torch.manual_seed(seed)
    theirs = hf_generate(model, ids, mask, **kwargs)
    if seed is not None:
        torch.manual_seed(seed)
    ours = ferrogen.generate(model, input_ids=ids, attention_mask=mask, **kwargs)
    if kwargs.get("return_dict_in_generate"):
        assert_beam_same(ours, theirs, prompt_len(model, ids), 0, hf_fill(kwargs, model),
                         scores=kwargs.get("output_scores", False))
    return ours, theirs


# Every value of every axis, each paired with every value of the others at least once per
# model; half of the cases use an EOS that ends hypotheses in mid-search.
GRID = [
    (model, beams, early, (0.5, 1.0, 2.0)[i % 3], beams if i % 2 else 1, MID_EOS.get((model, beams)) if i % 2 else None)
    for model in ("gpt2", "t5")
    for i, (beams, early) in enumerate(itertools.product((2, 4, 8), (True, False, "never")))
]
WARPERS = [{}, dict(temperature=0.7, top_k=10), dict(top_p=0.8, temperature=1.3)]


def _eos(eos):
    return {} if eos is None else {"eos_token_id": eos}


@pytest.mark.parametrize("model,beams,early,lp,nrs,eos", GRID)
def test_beam_search_matches_transformers(stored, model, beams, early, lp, nrs, eos):
    ids, mask = left_padded_batch(LENGTHS)
    compare(stored[model], ids, mask, num_beams=beams, early_stopping=early, length_penalty=lp,
            num_return_sequences=nrs, **_eos(eos), **OUTPUTS)


@pytest.mark.parametrize("model,beams,early,lp,nrs,eos", GRID)
def test_beam_sample_matches_transformers_under_torch_seed(stored, model, beams, early, lp, nrs, eos):
    ids, mask = left_padded_batch(LENGTHS)
    warp = WARPERS[GRID.index((model, beams, early, lp, nrs, eos)) % 3]
    compare(stored[model], ids, mask, seed=beams * 10 + len(str(early)), do_sample=True, num_beams=beams,
            early_stopping=early, length_penalty=lp, num_return_sequences=nrs, **_eos(eos), **warp, **OUTPUTS)


@pytest.mark.parametrize("model,beams,early,lp,nrs,eos", GRID)
def test_unread_scores_paths_match_transformers(stored, model, beams, early, lp, nrs, eos):
    """Without ``output_scores`` the core leaves the scores unwritten (plain beam search, and
    beam sampling whose only warper is top-k): the same sequences and beam indices."""
    ids, mask = left_padded_batch(LENGTHS)
    common = dict(num_beams=beams, early_stopping=early, length_penalty=lp, num_return_sequences=nrs,
                  return_dict_in_generate=True, **_eos(eos))
    compare(stored[model], ids, mask, **common)
    compare(stored[model], ids, mask, seed=beams * 10 + len(str(early)), do_sample=True, top_k=10,
            temperature=0.7, **common)


@pytest.mark.parametrize("model,beams", sorted(MID_EOS))
def test_eos_mid_search(stored, model, beams):
    """Some returned hypotheses end by EOS well before max length; the rest match too."""
    ids, mask = left_padded_batch(LENGTHS)
    early = (True, False, "never")[beams % 3]
    ours, _ = compare(stored[model], ids, mask, num_beams=beams, early_stopping=early, num_return_sequences=beams,
                      eos_token_id=MID_EOS[model, beams], **OUTPUTS)
    generated = (ours.beam_indices >= 0).sum(dim=1).tolist()
    assert any(r == "eos" and 3 <= n < NEW for r, n in zip(ours.finish_reasons, generated))


def test_outputs_flags_logits_and_tensor_return(stored):
    model = stored["gpt2"]
    ids, mask = left_padded_batch(LENGTHS)
    ours, theirs = compare(model, ids, mask, num_beams=4, output_logits=True, **OUTPUTS)
    for a, b in zip(ours.logits, theirs.logits):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert set(ours.keys()) >= {"sequences", "sequences_scores", "scores", "beam_indices", "logits"}
    plain, _ = compare(model, ids, mask, num_beams=4, return_dict_in_generate=True)
    assert plain.sequences_scores is None and plain.scores is None and plain.beam_indices is not None
    tensor = ferrogen.generate(model, input_ids=ids, attention_mask=mask, num_beams=4, max_new_tokens=NEW, pad_token_id=0)
    assert isinstance(tensor, torch.Tensor) and torch.equal(tensor, plain.sequences)


def test_pipeline_processors_lengths_and_eos_lists(stored):
    ids, mask = left_padded_batch(LENGTHS)
    t5 = stored["t5"]
    compare(t5, ids, mask, num_beams=4, min_new_tokens=5, eos_token_id=62, num_return_sequences=4, **OUTPUTS)
    compare(t5, ids, mask, num_beams=4, eos_token_id=[62, 72, 1], num_return_sequences=2, **OUTPUTS)
    compare(stored["gpt2"], ids, mask, num_beams=2, max_length=12, max_new_tokens=None, **OUTPUTS)
    compare(t5, ids, mask, seed=3, do_sample=True, num_beams=4, eos_token_id=[62, 72], top_k=5, **OUTPUTS)


@pytest.mark.parametrize("model,kwargs", [
    ("gpt2", dict(num_beams=4, repetition_penalty=1.3, no_repeat_ngram_size=2, num_return_sequences=2)),
    ("t5", dict(num_beams=4, bad_words_ids=[[62], [76, 83]], suppress_tokens=[5], renormalize_logits=True)),
    ("gpt2", dict(num_beams=3, do_sample=True, typical_p=0.9, min_p=0.05, repetition_penalty=1.2)),
], ids=["penalty-ngram", "bad-words-suppress-renormalize", "sample-typical-min-p"])
def test_shared_pipeline_in_beam_modes(stored, model, kwargs):
    """The shared processors (stateful ones reordered with the beams) act on log-probabilities."""
    ids, mask = left_padded_batch(LENGTHS)
    compare(stored[model], ids, mask, seed=5 if kwargs.get("do_sample") else None, **kwargs, **OUTPUTS)


class _Penalise(LogitsProcessor):
    """A user processor: lowers tokens 10..19 (works on both sides)."""

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, 10:20] -= 1.5
        return scores


class _StopOn(StoppingCriteria):
    def __init__(self, token):
        self.token = token

    def __call__(self, input_ids, scores, **kwargs):
        return input_ids[:, -1] == self.token


@pytest.mark.parametrize("sample", [False, True], ids=["beam", "sample"])
def test_user_processors_and_stopping_criteria(stored, sample):
    ids, mask = left_padded_batch(LENGTHS)
    model = stored["t5"]
    kwargs = dict(num_beams=4, num_return_sequences=4, do_sample=sample, **OUTPUTS)
    torch.manual_seed(11)
    theirs = hf_generate(model, ids, mask, max_new_tokens=NEW, pad_token_id=0, logits_processor=[_Penalise()],
                         stopping_criteria=[_StopOn(62)], **kwargs)
    torch.manual_seed(11)
    ours = ferrogen.generate(model, input_ids=ids, attention_mask=mask, max_new_tokens=NEW, pad_token_id=0,
                             logits_processor=[_Penalise()], stopping_criteria=[_StopOn(62)], **kwargs)
    assert_beam_same(ours, theirs, 1, 0, hf_fill({"pad_token_id": 0}, model))
    assert "stop" in ours.finish_reasons


class _Recorder:
    """A streamer that remembers how many forward passes had run at each ``put``."""

    def __init__(self, counter):
        self.counter = counter
        self.puts = []
        self.ended = False

    def put(self, value):
        self.puts.append((self.counter[0], value.clone()))

    def end(self):
        self.ended = True


@pytest.mark.parametrize("name,kwargs", [
    ("gpt2", dict(num_beams=4)),
    ("t5", dict(num_beams=4, do_sample=True, seed=2)),
    ("t5", dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5)),
])
def test_streaming_releases_the_agreed_prefix_early(stored, name, kwargs):
    model = stored[name]
    ids, mask = left_padded_batch((6,))
    calls = [0]
    hook = model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        streamer = _Recorder(calls)
        out = ferrogen.generate(model, input_ids=ids, attention_mask=mask, max_new_tokens=12, pad_token_id=0,
                                streamer=streamer, return_dict_in_generate=True, **kwargs)
    finally:
        hook.remove()
    start = prompt_len(model, ids)
    assert torch.equal(streamer.puts[0][1], out.sequences[:1, :start]) and streamer.ended
    streamed = [int(v) for _, v in streamer.puts[1:]]
    generated = int((out.beam_indices[0] >= 0).sum())
    assert streamed == out.sequences[0, start : start + generated].tolist()
    if "num_beam_groups" not in kwargs:  # diverse groups rarely agree before the end
        assert any(seen < calls[0] for seen, _ in streamer.puts[1:]), "some text settled before the search ended"


def test_streaming_a_batch_puts_one_column_per_position(stored):
    ids, mask = left_padded_batch(LENGTHS)
    streamer = _Recorder([0])
    out = ferrogen.generate(stored["gpt2"], input_ids=ids, attention_mask=mask, num_beams=2, max_new_tokens=6,
                            pad_token_id=0, streamer=streamer)
    columns = torch.stack([v for _, v in streamer.puts[1:]], dim=1)
    assert torch.equal(columns, out[:, ids.shape[1]:])


def test_seeded_beam_sample_is_reproducible_and_per_item(stored):
    """With ``seed`` the core draws its own noise per batch item: same seed, same result,
    whatever else is in the batch (same-length prompts, so no padding changes the logits)."""
    model = stored["gpt2"]
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(3, 96, (3, 5), generator=g)
    run = lambda x, seed: ferrogen.generate(model, input_ids=x, num_beams=4, do_sample=True, seed=seed,
                                            max_new_tokens=NEW, pad_token_id=0, top_k=0)
    first = run(ids, 5)
    assert torch.equal(first, run(ids, 5))
    alone = run(ids[:1], 5)[0]
    assert torch.equal(first[0, : alone.shape[0]], alone) and (first[0, alone.shape[0] :] == 0).all()
    assert any(not torch.equal(run(ids, s), first) for s in (6, 7, 8))


@pytest.mark.parametrize("kwargs,field", [
    (dict(num_beams=0), "num_beams"),
    (dict(num_beams=2, num_return_sequences=3), "num_return_sequences"),
    (dict(num_beams=8, num_beam_groups=3, diversity_penalty=0.5), "num_beam_groups"),
    (dict(num_beams=4, diversity_penalty=0.5), "diversity_penalty"),
    (dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5, do_sample=True), "num_beam_groups"),
])
def test_invalid_beam_settings_name_the_field(stored, kwargs, field):
    ids, mask = left_padded_batch((4,))
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        ferrogen.generate(stored["gpt2"], input_ids=ids, attention_mask=mask, max_new_tokens=3, **kwargs)


# --------------------------------------------------------------------------- degenerate scores (issue 15)

class _InjectAt:
    """A logits processor that sets ``token`` to ``value`` on the first row at one step."""

    def __init__(self, prompt_len, step, token, value=float("inf")):
        self.at, self.token, self.value = prompt_len + step, token, value

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] == self.at:
            scores = scores.clone()
            scores[0, self.token] = self.value
        return scores


@pytest.mark.parametrize("length_penalty", [-10.0, -20.0, -50.0])
def test_length_penalty_far_below_zero_returns_finished_hypotheses(gpt2, length_penalty):
    """Finished scores below -1e9 used to lose to transformers' -1e9 empty-slot placeholder: the
    search returned the bare prompt (transformers: a running beam's one-token prefix, whichever
    torch.topk's tie order picks). Now the slots hold the finished hypotheses, scored as such."""
    import warnings

    ids = torch.tensor([[5, 6, 7, 8]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = ferrogen.generate(gpt2, input_ids=ids, num_beams=3, num_return_sequences=3, max_new_tokens=6,
                                length_penalty=length_penalty, eos_token_id=None, pad_token_id=0,
                                return_dict_in_generate=True, output_scores=True)
    assert out.sequences.shape == (3, 10)
    assert out.finish_reasons == ["length"] * 3
    assert (out.sequences_scores < -1e9).all()
    assert bool((out.sequences_scores[:-1] >= out.sequences_scores[1:]).all())


def test_an_inf_score_on_eos_finishes_that_hypothesis(gpt2):
    """A processor puts +inf on EOS at the first step: that hypothesis ends there with score +inf,
    as in transformers, and no beam continues past its EOS (transformers 5.x keeps extending it:
    its -1e9 "finished" penalty does not move +inf)."""
    import warnings

    ids = torch.tensor([[5, 6, 7, 8]])
    kwargs = dict(num_beams=3, num_return_sequences=3, max_new_tokens=6, eos_token_id=2, pad_token_id=0,
                  return_dict_in_generate=True, output_scores=True)
    hf = gpt2.generate(ids, attention_mask=torch.ones_like(ids), logits_processor=[_InjectAt(4, 0, 2)], **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = ferrogen.generate(gpt2, input_ids=ids, logits_processor=[_InjectAt(4, 0, 2)], **kwargs)
    assert hf.sequences[0, 4] == 2 and hf.sequences[0, 5:].ne(0).any(), "transformers extends it past EOS"
    assert out.sequences[0, 4:].tolist() == [2] + [0] * 5
    assert out.sequences_scores[0] == hf.sequences_scores[0] == float("inf")
    assert out.finish_reasons[0] == "eos"
    for row in out.sequences[1:, 4:].tolist():  # the other hypotheses: nothing after an EOS
        assert 2 not in row or set(row[row.index(2) + 1:]) <= {0}


def _tiny_bart():
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(0)
    cfg = BartConfig(vocab_size=96, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                     decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                     pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=2,
                     forced_bos_token_id=None, forced_eos_token_id=None)
    return BartForConditionalGeneration(cfg).eval()


@pytest.mark.parametrize("name", ["t5", "bart"])
@pytest.mark.parametrize("kwargs", [dict(num_beams=4, num_return_sequences=2),
                                    dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5),
                                    dict(num_beams=3, do_sample=True, seed=5)])
def test_encoder_decoder_beams_leave_the_cross_attention_half_in_place(stored, monkeypatch, name, kwargs):
    """Beams move rows only among one prompt's copies, whose cross-attention states are the same
    repeated encoder output, so only the decoder's self-attention half is reordered. The result is
    the one of reordering both halves as transformers does (the reference here: group beam search
    has no live transformers 5.x counterpart; the other tests tie that path to transformers)."""
    from transformers.cache_utils import DynamicLayer

    from ferrogen import seq2seq_adapter
    from ferrogen.folded_reorder import FoldedReorderLayer

    model = stored["t5"] if name == "t5" else _tiny_bart()
    ids, mask = left_padded_batch(LENGTHS)
    run = dict(input_ids=ids, attention_mask=mask, pad_token_id=0, max_new_tokens=NEW, **OUTPUTS, **kwargs)
    moved: set[int] = set()  # the cache layers whose rows moved (eagerly or folded into the next append)
    for cls in (DynamicLayer, FoldedReorderLayer):
        def spy(self, beam_idx, real=cls.reorder_cache):
            moved.add(id(self))
            return real(self, beam_idx)

        monkeypatch.setattr(cls, "reorder_cache", spy)
    decoder_layers = model.config.get_text_config(decoder=True).num_hidden_layers
    ours = ferrogen.generate(model, **run)
    assert len(moved) == decoder_layers  # the self-attention layers only
    moved.clear()
    monkeypatch.setattr(seq2seq_adapter, "splits_cross_attention", lambda model, cache: False)
    both = ferrogen.generate(model, **run)
    assert len(moved) == 2 * decoder_layers
    assert torch.equal(ours.sequences, both.sequences)
    torch.testing.assert_close(ours.sequences_scores, both.sequences_scores, rtol=0, atol=0)
    for a, b in zip(ours.scores, both.scores, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_unseeded_beam_sample_takes_torchs_log_softmax_bits():
    """Unseeded beam sampling races on transformers' own scores: ``torch.log_softmax``'s bits.
    The core's log-softmax rounds 1 ulp apart from torch's in some rows of this model (step 4,
    row 4), and the running scores carry the difference into the race (benches/README.md,
    "Beam sampling at batch 16"). The bench's gpt2-2x128, built from a config."""
    from ferrogen.bench.models import random_gpt2

    model = random_gpt2(2, 128)
    ids = torch.randint(3, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(2))
    kwargs = dict(num_beams=4, do_sample=True, top_k=50, max_new_tokens=12, output_logits=True, **OUTPUTS)
    torch.manual_seed(0)
    ours = ferrogen.generate(model, input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
    torch.manual_seed(0)
    ref = hf_generate(model, ids, torch.ones_like(ids), **kwargs)
    assert torch.equal(ours.sequences, ref.sequences)
    assert torch.equal(ours.sequences_scores, ref.sequences_scores)
    assert torch.equal(ours.beam_indices, ref.beam_indices)
    for step, (a, b) in enumerate(zip(ours.scores, ref.scores, strict=True)):
        assert torch.equal(a, b), step


def test_unseeded_log_softmax_keeps_the_limit_of_an_inf_row():
    """The torch log-softmax of the unseeded path: torch's bits for finite rows, and the core's
    limit (``ln(1 / k)`` at the ``k`` entries at +inf, -inf elsewhere) where torch gives NaN."""
    from ferrogen.strategies.beam import _host_log_softmax

    logits = torch.randn(3, 37, generator=torch.Generator().manual_seed(4))
    assert torch.equal(_host_log_softmax(logits), torch.log_softmax(logits, dim=-1))
    logits[1, [5, 9]] = float("inf")
    out = _host_log_softmax(logits)
    assert torch.equal(out[[0, 2]], torch.log_softmax(logits[[0, 2]], dim=-1))
    want = torch.full((37,), -float("inf"))
    want[[5, 9]] = -torch.log(torch.tensor(2.0))
    assert torch.equal(out[1], want)


class _Coarse(LogitsProcessor):
    """Rounds the scores to quarters: many candidates of a step tie exactly, as running scores
    near -500 do after ~50 steps (float32's spacing there is 6e-5)."""

    def __call__(self, input_ids, scores):
        return torch.round(scores * 4) / 4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unseeded_beam_sample_ranks_tied_candidates_as_torch_topk(stored, seed):
    """transformers picks the running beams among the ``2 * num_beams`` candidates with
    ``torch.topk``, whose CPU kernel (``std::nth_element``) is not stable: of two tied
    candidates the later one can become the first beam. Which beam is first decides which
    ``Exp(1)`` draws each beam's tokens meet next step, so a stable order parted from
    transformers' tokens a step after a tie (gpt2-2x128, batch 2, 64 new tokens: step 54;
    benches/README.md). Tied scores here from the first steps on."""
    ids, mask = left_padded_batch(LENGTHS)
    compare(stored["gpt2"], ids, mask, seed=seed, do_sample=True, num_beams=4, top_k=20,
            logits_processor=[_Coarse()], **OUTPUTS)
