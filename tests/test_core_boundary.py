"""Every ``ferrogen._core`` entry point with bad arguments (issue 15).

The core never panics or aborts across the boundary: a bad argument is a named exception
(``ValueError`` subclasses, ``CoreMemoryError`` for an allocation the machine refuses),
never pyo3's ``PanicException`` and never the end of the process. Calls that used to
abort run in a child process, which must exit normally having caught the named error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import pytest

from ferrogen import _core

PYTHON_DIR = str(Path(_core.__file__).resolve().parents[1])
IDS = np.array([[1, 2, 3]], dtype=np.int64)
BEAM = {"num_beams": 2, "max_length": 6}
GROUP = {"num_beams": 4, "num_beam_groups": 2, "max_length": 6, "diversity_penalty": 0.5}


# Values a strategy resolves per call (keyword arguments of GenerationSettings), not config fields.
_RESOLVED = {"eos_token_ids", "min_length", "max_length", "pad_token_id", "vocab_size", "encoder_input_ids",
             "prompt_ignore_lengths", "seed", "seed_prompts", "row_seeds"}


def S(**fields: Any) -> _core.GenerationSettings:
    """Settings as the strategies build them: config fields by name plus the call's resolved values."""
    resolved = {k: fields.pop(k) for k in list(fields) if k in _RESOLVED}
    return _core.GenerationSettings(SimpleNamespace(**fields), **resolved)


def f32(*shape: int) -> np.ndarray:
    return np.zeros(shape, dtype=np.float32)


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def refused(call: Callable[[], Any], name: str) -> BaseException:
    """``call`` raises a ValueError or MemoryError whose message starts with ``name``."""
    with pytest.raises(BaseException) as info:
        call()
    err = info.value
    assert type(err).__name__ != "PanicException", f"panic: {err}"
    assert isinstance(err, (ValueError, MemoryError)), f"{type(err).__name__}: {err}"
    assert str(err).startswith(f"{name}:"), str(err)
    return err


def assisted(prompt: list[list[int]], starts: list[int], max_length: int = 10) -> Any:
    return _core.AssistedDecoder(np.array(prompt, dtype=np.int64), i64(*starts), S(max_length=max_length))


# ---------------------------------------------------------------- the reported crashes


def test_truncate_into_the_padding_then_lookup_is_refused() -> None:
    d = assisted([[0, 0, 5, 6]], [2])
    refused(lambda: d.truncate(i64(1)), "lengths")
    d.lookup_drafts(2, 3)  # used to panic: the row was shorter than its padding start
    assert d.lengths().tolist() == [4]
    refused(lambda: d.truncate(i64(-1)), "lengths")
    refused(lambda: d.truncate(i64(5, 5)), "lengths")


@pytest.mark.parametrize("n", [21, 2**63])  # 2**40 aborted the process: see the child test below
def test_tails_longer_than_a_row_can_be_is_refused(n: int) -> None:
    d = assisted([[5, 6]], [0], max_length=20)
    refused(lambda: d.tails(n), "n")
    assert d.tails(20).shape == (1, 20)


@pytest.mark.parametrize("make", ["decoder", "contrastive", "assisted"])
@pytest.mark.parametrize("count", [0, 1, 3])
def test_finish_rows_needs_one_value_per_row(make: str, count: int) -> None:
    ids = np.array([[1, 2], [3, 4]], dtype=np.int64)
    core = {
        "decoder": lambda: _core.Decoder(ids, S()),
        "contrastive": lambda: _core.ContrastiveSearch(ids, S(), 2, 0.5),
        "assisted": lambda: _core.AssistedDecoder(ids, i64(0, 0), S(max_length=10)),
    }[make]()
    refused(lambda: core.finish_rows(np.ones(count, dtype=bool)), "done")
    assert core.unfinished().tolist() == [True, True], "a refused call changes nothing"
    core.finish_rows(np.array([True, False]))
    assert core.unfinished().tolist() == [False, True]


def test_group_rows_outside_the_groups_is_refused() -> None:
    g = _core.GroupBeamSearch(IDS, S(**GROUP))
    assert g.group_rows(1).tolist() == [2, 3]
    refused(lambda: g.group_rows(2), "g")
    refused(lambda: g.group_rows(5), "g")


def test_propose_candidates_with_an_overflowing_vocab_is_refused() -> None:
    b = _core.BeamSearch(IDS, S(**BEAM))
    k = b.candidates_per_item
    refused(lambda: b.propose_candidates(f32(1, k), np.zeros((1, k), np.int64), 2**64 - 1), "vocab")
    refused(lambda: b.propose_candidates(f32(1, k), np.zeros((1, k), np.int64), 2**63), "vocab")


@pytest.mark.parametrize("beams", [2**62, 2**63])
def test_beam_widths_whose_sizes_overflow_are_refused(beams: int) -> None:
    for cls, extra in [(_core.BeamSearch, {}), (_core.GroupBeamSearch, {"num_beam_groups": 1})]:
        refused(lambda: cls(np.zeros((4, 3), np.int64), S(num_beams=beams, max_length=6, **extra)),
                "num_beams")
    refused(lambda: _core.ConstrainedBeamSearch(IDS, S(num_beams=beams, max_length=6, vocab_size=10), [[1]]),
            "num_beams")


# ---------------------------------------------------------------- aborts, in a child process


# Prints what a call raised: class name, whether it is a ValueError/MemoryError, message.
CATCH = """
def named(call):
    try:
        call()
    except BaseException as err:
        print(type(err).__name__, isinstance(err, (ValueError, MemoryError)), str(err))
    else:
        print("accepted")
"""

def run_child(body: str, memory_gib: float | None = None) -> str:
    """Runs ``body`` in a child interpreter (under an address-space limit of ``memory_gib`` GiB
    above what it holds after its imports) and returns its stdout; it must exit normally."""
    limit = ""
    if memory_gib is not None:
        limit = textwrap.dedent(f"""
            import resource
            with open("/proc/self/status") as f:
                held = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
            cap = held + int({memory_gib} * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        """)
    code = "import numpy as np, torch, ferrogen\nfrom ferrogen import _core\n" + limit + CATCH + textwrap.dedent(body)
    env = {**os.environ, "PYTHONPATH": PYTHON_DIR + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"child exited with {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc.stdout


needs_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="address-space limit needs /proc")


@needs_proc
@pytest.mark.parametrize("beams", [2**40, 10**8])
def test_huge_beam_widths_are_a_memory_error_not_an_abort(beams: int) -> None:
    out = run_child(f"""
        ids = np.zeros((1, 5), np.int64)
        from types import SimpleNamespace
        cfg = SimpleNamespace(num_beams={beams}, max_length=8)
        named(lambda: _core.BeamSearch(ids, _core.GenerationSettings(cfg)))
        named(lambda: _core.GroupBeamSearch(ids, _core.GenerationSettings(cfg)))
        named(lambda: _core.ConstrainedBeamSearch(ids, _core.GenerationSettings(cfg, vocab_size=10), [[1]]))
    """, memory_gib=1.5)
    lines = out.strip().splitlines()
    assert len(lines) == 3, out
    for line in lines:
        assert line.startswith("CoreMemoryError True num_beams:"), line


@needs_proc
def test_tails_of_a_huge_length_is_an_error_not_an_abort() -> None:
    out = run_child("""
        from types import SimpleNamespace
        settings = _core.GenerationSettings(SimpleNamespace(), max_length=2**62)
        d = _core.AssistedDecoder(np.array([[5, 6]], np.int64), np.array([0], np.int64), settings)
        named(lambda: d.tails(2**40))
        named(lambda: d.tails(2**63))
        named(lambda: d.tails(3))
    """, memory_gib=1.5)
    first, second, third = out.strip().splitlines()
    assert first.startswith("CoreMemoryError True n:"), first
    assert second.startswith("InvalidArgumentError True n:"), second
    assert third == "accepted"


@needs_proc
def test_generate_with_a_huge_beam_width_raises_naming_num_beams() -> None:
    out = run_child("""
        from transformers import GPT2Config, GPT2LMHeadModel
        torch.manual_seed(0)
        cfg = GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=64, bos_token_id=0, eos_token_id=0)
        model = GPT2LMHeadModel(cfg).eval()
        named(lambda: ferrogen.generate(model, torch.tensor([[1, 2, 3, 4, 5]]), max_new_tokens=3, num_beams=10**8))
    """, memory_gib=3)
    kind, is_named, message = out.strip().split(" ", 2)
    assert is_named == "True" and message.startswith("num_beams:"), out


def test_torch_noise_draws_of_a_huge_size_are_refused_before_any_twist() -> None:
    """A direct call with an absurd ``vocab`` (or ``n``) passed the size check (the product fits a
    ``usize``) and then twisted torch's generator through two words an entry, with the GIL held:
    hours for 2**40. A draw is capped at 2**32 entries (a 16 GiB float32 logits tensor), refused
    by name with the allowed range, torch's state untouched. In a child, so that a regression
    fails (the child's timeout) rather than hanging the run."""
    out = run_child("""
        from types import SimpleNamespace
        cfg = SimpleNamespace(do_sample=True, num_beams=2, max_length=6)
        sample = _core.BeamSearch(np.array([[1, 2, 3]], np.int64), _core.GenerationSettings(cfg))
        state = torch.get_rng_state().numpy()
        before = state.copy()
        for vocab in (2**31 + 1, 2**40, 2**62, 2**64 - 1):
            named(lambda: sample.draw_torch_noise(state, vocab))
        named(lambda: _core.torch_exponential(state, 2**32 + 1))
        print("untouched", bool((state == before).all()))
    """)
    lines = out.strip().splitlines()
    assert len(lines) == 6, out
    for line in lines[:4]:
        assert line.startswith("InvalidArgumentError True vocab: expected 0 to 2147483648 for 1 prompts × 2 beams"), line
    assert lines[4].startswith("InvalidArgumentError True n: one draw of torch's noise takes at most 2^32"), lines[4]
    assert lines[5] == "untouched True"


def test_beam_memory_check_runs_before_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a machine too small for the beams' per-step state, ``generate`` names ``num_beams``
    before the model's forward runs (a hook that raises would fire first otherwise)."""
    import ferrogen
    import torch
    from ferrogen.strategies import beam_loop
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=64, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg).eval()

    def forward_ran(*_: Any) -> None:
        raise AssertionError("the model ran")

    model.register_forward_pre_hook(forward_ran)
    ids = torch.tensor([[1, 2, 3]])
    # 2 x 4 beams x (64 x 4 + 8 x 8) bytes = 2,560 bytes of state per step.
    monkeypatch.setattr(beam_loop, "_host_memory", lambda: 2_000)
    for kwargs in [{}, {"num_beam_groups": 2, "diversity_penalty": 0.5}, {"force_words_ids": [[5]]}]:
        err = refused(lambda: ferrogen.generate(model, torch.cat([ids, ids]), max_new_tokens=5, num_beams=4,
                                                pad_token_id=0, **kwargs), "num_beams")
        assert "use fewer beams" in str(err)
    monkeypatch.setattr(beam_loop, "_host_memory", lambda: 3_000)
    with pytest.raises(AssertionError, match="the model ran"):
        ferrogen.generate(model, torch.cat([ids, ids]), max_new_tokens=5, num_beams=4, pad_token_id=0)


# ---------------------------------------------------------------- every entry point


def _walk() -> list[tuple[str, Callable[[], Any], str]]:
    """(label, call, argument name) for bad arguments to every ``#[pymethods]`` entry point."""
    two = np.array([[1, 2], [3, 4]], dtype=np.int64)
    dec = _core.Decoder(IDS, S())
    dec2 = _core.Decoder(IDS, S())  # a source of rows for dec.replace_rows
    con = _core.ContrastiveSearch(IDS, S(), 2, 0.5)
    asd = assisted([[0, 0, 5, 6]], [2])
    beam = _core.BeamSearch(IDS, S(**BEAM))
    sample = _core.BeamSearch(IDS, S(do_sample=True, **BEAM))
    group = _core.GroupBeamSearch(IDS, S(**GROUP))
    cbs = _core.ConstrainedBeamSearch(IDS, S(vocab_size=10, **BEAM), [[1]])
    pipe = _core.LogitsPipeline(S())
    k = beam.candidates_per_item
    not_contiguous = np.zeros((2, 8), np.float32)[:, ::2]
    return [
        # Decoder
        ("Decoder()", lambda: _core.Decoder(np.zeros((0, 3), np.int64), S()), "input_ids"),
        ("Decoder.step_greedy", lambda: dec.step_greedy(f32(2, 5)), "logits"),
        ("Decoder.step_sample", lambda: dec.step_sample(f32(2, 5)), "logits"),
        ("Decoder.process", lambda: dec.process(not_contiguous), "logits"),
        ("Decoder.choose_greedy", lambda: dec.choose_greedy(f32(1, 0)), "logits"),
        ("Decoder.choose_sample", lambda: dec.choose_sample(f32(3, 4)), "logits"),
        ("Decoder.finish_rows", lambda: dec.finish_rows(np.ones(2, bool)), "done"),
        ("Decoder.keep_rows", lambda: dec.keep_rows(np.array([0, 99], np.int64)), "rows"),
        ("Decoder.keep_rows(negative)", lambda: dec.keep_rows(np.array([-1], np.int64)), "rows"),
        ("Decoder.keep_rows(empty)", lambda: dec.keep_rows(np.zeros(0, np.int64)), "rows"),
        ("Decoder.replace_rows", lambda: dec.replace_rows(np.array([0, 0], np.int64), dec2, np.array([0, 1], np.int64)),
         "slots"),
        ("Decoder.replace_rows(negative)",
         lambda: dec.replace_rows(np.array([-1], np.int64), dec2, np.array([0], np.int64)), "slots"),
        ("Decoder.replace_rows(source_rows)",
         lambda: dec.replace_rows(np.array([0], np.int64), dec2, np.array([2], np.int64)), "source_rows"),
        ("Decoder.replace_rows(negative source_rows)",
         lambda: dec.replace_rows(np.array([0], np.int64), dec2, np.array([-1], np.int64)), "source_rows"),
        ("Decoder.replace_rows(settings)", lambda: dec.replace_rows(
            np.array([0], np.int64), _core.Decoder(IDS, S(repetition_penalty=2.0)), np.array([0], np.int64)), "source"),
        ("Decoder.replace_rows(min_length)", lambda: _core.Decoder(IDS, S(min_new_tokens=2)).replace_rows(
            np.array([0], np.int64), _core.Decoder(IDS, S(min_new_tokens=2)), np.array([0], np.int64)), "source"),
        # ContrastiveSearch
        ("ContrastiveSearch()", lambda: _core.ContrastiveSearch(IDS, S(), 0, 0.5), "top_k"),
        ("ContrastiveSearch(alpha)", lambda: _core.ContrastiveSearch(IDS, S(), 2, 1.5), "penalty_alpha"),
        ("ContrastiveSearch.add_context", lambda: con.add_context(f32(2, 1, 4)), "hidden_states"),
        ("ContrastiveSearch.add_context(keep)",
         lambda: con.add_context(f32(1, 2, 4), np.ones((1, 3), bool)), "attention_mask"),
        ("ContrastiveSearch.step", lambda: con.step(f32(2, 4)), "logits"),
        ("ContrastiveSearch.process", lambda: con.process(f32(2, 4)), "logits"),
        ("ContrastiveSearch.choose", lambda: con.choose(f32(1, 1)), "top_k"),
        ("ContrastiveSearch.select", lambda: con.select(f32(3, 4)), "candidates"),
        ("ContrastiveSearch.finish_rows", lambda: con.finish_rows(np.ones(3, bool)), "done"),
        # AssistedDecoder
        ("AssistedDecoder(starts<0)", lambda: _core.AssistedDecoder(IDS, i64(-1), S(max_length=10)), "starts"),
        ("AssistedDecoder(starts)", lambda: _core.AssistedDecoder(IDS, i64(0, 0), S(max_length=10)), "input_ids"),
        ("AssistedDecoder(start past)", lambda: _core.AssistedDecoder(IDS, i64(4), S(max_length=10)), "attention_mask"),
        ("AssistedDecoder(seed)", lambda: _core.AssistedDecoder(IDS, i64(0), S(do_sample=True, max_length=10)), "seed"),
        ("AssistedDecoder.draft", lambda: asd.draft(f32(2, 4)), "logits"),
        ("AssistedDecoder.lookup_drafts", lambda: asd.lookup_drafts(0, 3), "max_matching_ngram_size"),
        ("AssistedDecoder.lookup_drafts(n)", lambda: asd.lookup_drafts(2, 0), "prompt_lookup_num_tokens"),
        ("AssistedDecoder.verify", lambda: asd.verify(np.zeros((1, 2, 4), np.float32)), "logits"),
        ("AssistedDecoder.tails", lambda: asd.tails(11), "n"),
        ("AssistedDecoder.truncate", lambda: asd.truncate(i64(1)), "lengths"),
        ("AssistedDecoder.finish_rows", lambda: asd.finish_rows(np.ones(0, bool)), "done"),
        # BeamSearch
        ("BeamSearch()", lambda: _core.BeamSearch(IDS, S(num_beams=0)), "num_beams"),
        ("BeamSearch(max_length)", lambda: _core.BeamSearch(IDS, S(num_beams=2, max_length=3)),
         "max_length"),
        ("BeamSearch(groups)", lambda: _core.BeamSearch(IDS, S(**GROUP)), "num_beam_groups"),
        ("BeamSearch(seed_prompts)", lambda: _core.BeamSearch(
            IDS, S(do_sample=True, seed=1, seed_prompts=[[1], [2]], **BEAM)), "seed_prompts"),
        ("BeamSearch.process", lambda: beam.process(f32(3, 4)), "logits"),
        ("BeamSearch.warp", lambda: beam.warp(not_contiguous), "logits"),
        ("BeamSearch.propose", lambda: beam.propose(f32(2, 0)), "logits"),
        ("BeamSearch.propose(noise)", lambda: sample.propose(f32(2, 4), f32(1, 3)), "noise"),
        ("BeamSearch.propose(vocab)", lambda: beam.propose(f32(2, 1)), "num_beams"),
        ("BeamSearch.propose_candidates",
         lambda: beam.propose_candidates(f32(1, k + 1), np.zeros((1, k + 1), np.int64), 4), "candidate scores"),
        ("BeamSearch.propose_candidates(index)",
         lambda: beam.propose_candidates(f32(1, k), np.full((1, k), 8, np.int64), 4), "candidate indices"),
        ("BeamSearch.commit", lambda: beam.commit(), "beam_step"),
        ("BeamSearch.step", lambda: beam.step(f32(1, 4)), "logits"),
        ("BeamSearch.step(unread)", lambda: beam.step(f32(1, 4), None, False), "logits"),
        ("BeamSearch.step(log_probs)", lambda: sample.step(f32(1, 4), f32(1, 8), True, False), "logits"),
        ("BeamSearch.draw_torch_noise", lambda: sample.draw_torch_noise(np.zeros(10, np.uint8), 4), "torch_rng_state"),
        # GroupBeamSearch
        ("GroupBeamSearch()", lambda: _core.GroupBeamSearch(IDS, S(**{**GROUP, "num_beam_groups": 3})),
         "num_beam_groups"),
        ("GroupBeamSearch.group_rows", lambda: group.group_rows(2), "g"),
        ("GroupBeamSearch.process_group", lambda: group.process_group(1, f32(4, 4)), "beam_group"),
        ("GroupBeamSearch.process_group(shape)", lambda: group.process_group(0, f32(3, 4)), "logits"),
        ("GroupBeamSearch.select_group", lambda: group.select_group(1, f32(4, 4)), "beam_group"),
        ("GroupBeamSearch.step", lambda: group.step(f32(3, 4)), "logits"),
        # ConstrainedBeamSearch
        ("ConstrainedBeamSearch()", lambda: _core.ConstrainedBeamSearch(IDS, S(vocab_size=10, **BEAM), [[12]]),
         "force_words_ids"),
        ("ConstrainedBeamSearch(mask)",
         lambda: _core.ConstrainedBeamSearch(IDS, S(vocab_size=10, **BEAM), [[1]], np.ones((1, 2), bool)), "attention_mask"),
        ("ConstrainedBeamSearch(beams)",
         lambda: _core.ConstrainedBeamSearch(IDS, S(num_beams=1, max_length=6, vocab_size=10), [[1]]), "num_beams"),
        ("ConstrainedBeamSearch.process", lambda: cbs.process(f32(3, 4)), "logits"),
        ("ConstrainedBeamSearch.select", lambda: cbs.select(f32(2, 0)), "logits"),
        ("ConstrainedBeamSearch.step", lambda: cbs.step(not_contiguous), "logits"),
        # LogitsPipeline
        ("LogitsPipeline()", lambda: _core.LogitsPipeline(S(), 0, 0), "min_tokens_to_keep"),
        ("LogitsPipeline(settings)", lambda: _core.LogitsPipeline(S(top_p=2.0)), "top_p"),
        ("LogitsPipeline.names", lambda: pipe.names("some"), "part"),
        ("LogitsPipeline.process", lambda: pipe.process(two, f32(3, 4)), "input_ids"),
        ("LogitsPipeline.sample", lambda: pipe.sample(two, f32(1, 4), 1), "input_ids"),
        # ConstraintTracker
        ("ConstraintTracker()", lambda: _core.ConstraintTracker([[1, -2]]), "force_words_ids"),
        ("ConstraintTracker(field)", lambda: _core.ConstraintTracker([[]], None, "constraints"), "constraints"),
    ]


WALK = _walk()


@pytest.mark.parametrize("label, call, name", WALK, ids=[w[0] for w in WALK])
def test_every_entry_point_refuses_bad_arguments_by_name(label: str, call: Callable[[], Any], name: str) -> None:
    refused(call, name)


def test_the_walk_covers_every_entry_point() -> None:
    """A new ``#[pymethods]`` entry point that takes arguments needs a row in the walk."""
    no_arguments = {"any_open", "any_active", "all_finished", "begin_round", "drafts", "finalize", "is_done",
                    "lengths", "sequences", "take_settled", "tree", "unfinished", "active", "last_step", "advance",
                    "is_complete", "completed_count", "bank", "beams_satisfied", "merge_refusal",
                    # scalar arguments whose every in-range value is valid (tests/test_core_ints.py walks the rest)
                    "add", "reset", "does_advance", "stop"}
    covered = {label.split("(")[0] for label, _, _ in WALK}
    for cls in [_core.Decoder, _core.ContrastiveSearch, _core.AssistedDecoder, _core.BeamSearch,
                _core.GroupBeamSearch, _core.ConstrainedBeamSearch, _core.LogitsPipeline, _core.ConstraintTracker]:
        assert f"{cls.__name__}" in covered, cls.__name__
        for method in vars(cls):
            if method.startswith("_") or method in no_arguments:
                continue
            if not callable(getattr(cls, method)):
                continue  # getters
            assert f"{cls.__name__}.{method}" in covered, f"{cls.__name__}.{method} is not walked"
