"""`ferrogen generate`: prompts and JSONL in, JSONL out, one record per line, nothing lost.

Most tests call ``main`` in-process; the SIGTERM test runs the real command (``python -m ferrogen``)
with this checkout first on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ferrogen
from ferrogen.cli import build_parser, main

CHECKOUT_PYTHON = str(Path(ferrogen.__file__).resolve().parent.parent)


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def records_of(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_prompt_to_jsonl_matches_library(capsys):
    code, out, _ = run(capsys, "generate", "--prompt", "And God said", "--max-new-tokens", "8")
    assert code == 0
    record = json.loads(out)
    expected = ferrogen.pipeline()("And God said", max_new_tokens=8)[0]
    assert record["text"] == expected.text and record["token_ids"] == expected.token_ids and record["line"] == 1


def test_one_prompt_on_a_terminal_prints_the_text(capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, out, _ = run(capsys, "generate", "--prompt", "And God said", "--max-new-tokens", "6")
    expected = ferrogen.pipeline()("And God said", max_new_tokens=6)[0]
    assert code == 0 and out == "And God said" + expected.text + "\n"
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, out, _ = run(capsys, "generate", "--prompt", "And God said", "--max-new-tokens", "6", "--format", "json")
    assert code == 0 and json.loads(out)["text"] == expected.text
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, out, _ = run(capsys, "generate", "--prompt", "And God said", "--prompt", "Jesus wept",
                       "--max-new-tokens", "2")
    assert code == 0 and [json.loads(line)["line"] for line in out.splitlines()] == [1, 2]  # several: records


def test_bad_lines_each_get_their_record_in_input_order(tmp_path, capsys, monkeypatch):
    """Issue 15: one non-UTF-8 byte, an over-long line, an over-long or empty prompt inside a batch
    each fail only their own line; records keep input order with one error format; exit 0 unless
    --strict; messages are not glued to the progress bar."""
    src = tmp_path / "in.jsonl"
    lines = [
        b'\xef\xbb\xbf{"prompt": "And God said"}',  # a byte-order mark opens the file
        b"not json",
        b'{"prompt": "In the \xff beginning"}',
        b'{"prompt": ""}',
        b'{"prompt": "In the beginning", "max_new_tokens": 3}',
        b"",
        b'{"prompt": "The LORD", "top_p": 7}',
        b'{"prompt": "' + b"x " * 1_000_000 + b'"}',  # 2 MB: refused without tokenizing
        b'{"prompt": "' + b"x " * 300 + b'"}',  # 300 tokens: over the embedded model's 256 positions
        b'{"text": "no prompt key"}',
        b'{"prompt": "Jesus wept"}',
    ]
    src.write_bytes(b"\n".join(lines) + b"\n")
    dst = tmp_path / "out.jsonl"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # draw the progress bar
    from transformers import PreTrainedTokenizerBase

    tokenize, longest = PreTrainedTokenizerBase.__call__, [0]

    def measured(self, text=None, *args, **kwargs):
        longest[0] = max([longest[0]] + [len(t) for t in ([text] if isinstance(text, str) else text or [])])
        return tokenize(self, text, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerBase, "__call__", measured)
    code, _, err = run(capsys, "generate", "--input", str(src), "--output", str(dst), "--max-new-tokens", "5",
                       "--batch-size", "16")
    assert code == 0
    records = records_of(dst)
    assert [r["line"] for r in records] == [1, 2, 3, 4, 5, 7, 8, 9, 10, 11]
    errors = {r["line"]: r["error"] for r in records if "error" in r}
    assert set(errors) == {2, 3, 4, 7, 8, 9, 10}
    assert all(message.startswith(f"line {n}: ") for n, message in errors.items())
    assert "invalid JSON" in errors[2] and "not UTF-8" in errors[3] and "empty" in errors[4]
    assert errors[7].startswith("line 7: top_p") and "bytes" in errors[8] and "context" in errors[9]
    assert "prompt" in errors[10]
    by_line = {r["line"]: r for r in records}
    assert len(by_line[1]["token_ids"]) == 5 and len(by_line[5]["token_ids"]) == 3
    assert len(by_line[11]["token_ids"]) == 5
    assert 0 < longest[0] < 10_000  # the 2 MB line was never tokenized
    for segment in err.split("\n"):  # each message starts its own line, after the bar is cleared
        if "ferrogen: line" in segment:
            assert segment.split("\r")[-1].startswith("ferrogen: line")
    code, _, _ = run(capsys, "generate", "--input", str(src), "--output", str(dst), "--max-new-tokens", "2",
                     "--overwrite", "--strict")
    assert code == 1 and len(records_of(dst)) == 10


def test_existing_output_survives_a_failed_run(tmp_path, capsys):
    """Issue 15: a typo in --input (or any failure before generating) leaves --output as it was."""
    dst = tmp_path / "out.jsonl"
    dst.write_text("earlier results\n")
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "And God said"}\n')
    for argv in (["--input", str(tmp_path / "typo.jsonl"), "--overwrite"],
                 ["--input", str(src)],  # exists: refused without --overwrite or --resume
                 ["--input", str(src), "--overwrite", "--model", str(tmp_path / "no-model")],
                 ["--input", str(src), "--overwrite", "--num-beams", "0"]):
        code, _, err = run(capsys, "generate", *argv, "--output", str(dst))
        assert code == 2 and err.startswith("ferrogen: ")
        assert dst.read_text() == "earlier results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]  # no temporary left


def test_resume_generates_only_the_missing_lines(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in
                           ["And God said", "In the beginning", "The LORD", "Jesus wept"]))
    full = tmp_path / "full.jsonl"
    assert run(capsys, "generate", "--input", str(src), "--output", str(full), "--max-new-tokens", "4")[0] == 0
    kept = records_of(full)[:2]
    kept[0]["text"] = "kept as it was"  # a regenerated line 1 would not say this
    dst = tmp_path / "out.jsonl"
    cut = json.dumps(records_of(full)[2])[:25]  # the last line of a run killed mid-write
    dst.write_text("".join(json.dumps(r) + "\n" for r in kept) + cut)
    code, _, err = run(capsys, "generate", "--input", str(src), "--output", str(dst), "--max-new-tokens", "4",
                       "--resume")
    assert code == 0 and "cut-off last line" in err
    assert records_of(dst) == kept + records_of(full)[2:]
    dst.write_text("not a record\n" + json.dumps(kept[0]) + "\n")
    code, _, err = run(capsys, "generate", "--input", str(src), "--output", str(dst), "--resume")
    assert code == 2 and "not a ferrogen record" in err and dst.read_text().startswith("not a record\n")


def _default_signals() -> None:
    """SIGINT and SIGTERM at their default dispositions in the child: a run started in the
    background by a non-interactive shell (``nohup``, ``cmd &``) inherits SIGINT ignored, and
    Python then rightly leaves it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_keeps_every_counted_line(tmp_path, signum):
    """Issue 15: SIGTERM mid-run behaves as SIGINT: the lines reported written are all on disk,
    whole and in order, and the exit status is 128 + the signal."""
    src = tmp_path / "in.jsonl"
    # Enough lines that the run is still going when the signal comes (the batch engine is fast).
    src.write_text("".join(json.dumps({"prompt": f"And God said {i}"}) + "\n" for i in range(4000)))
    dst = tmp_path / "out.jsonl"
    env = dict(os.environ, PYTHONPATH=CHECKOUT_PYTHON + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "ferrogen", "generate", "--input", str(src), "--output", str(dst),
                             "--max-new-tokens", "6", "--batch-size", "2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_signals)  # as a terminal's Ctrl-C finds it
    seen = 0
    deadline = time.monotonic() + 300
    while seen < 4 and proc.poll() is None and time.monotonic() < deadline:
        temps = list(tmp_path.glob(".out.jsonl.*.tmp"))
        seen = len(temps[0].read_text().splitlines()) if temps else 0
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the signal could interrupt it"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    counted = int(err.split("stopped: ")[1].split(" lines")[0])
    records = records_of(dst)
    assert seen >= 4 and counted >= seen and [r["line"] for r in records] == list(range(1, counted + 1))
    assert all(r["prompt"] == f"And God said {r['line'] - 1}" for r in records)


def test_python_dash_m_runs_the_command(tmp_path):
    env = dict(os.environ, PYTHONPATH=CHECKOUT_PYTHON + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-m", "ferrogen", "generate", "--top-pp", "0.5"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "usage: ferrogen generate" in out.stderr and "(did you mean '--top-p'?)" in out.stderr


def test_unknown_flag_suggests_the_closest(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--top-pp", "0.5"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.startswith("usage: ferrogen generate") and "--top-pp 0.5 (did you mean '--top-p'?)" in err
    with pytest.raises(SystemExit):
        main(["generate", "--ouptut", "x.jsonl"])
    assert "(did you mean '--output'?)" in capsys.readouterr().err


def test_help_groups_and_documents_every_field(capsys):
    from ferrogen import _cli_flags

    generate = next(a for a in build_parser()._actions if a.dest == "command").choices["generate"]
    groups = {g.title: [a.dest[len(_cli_flags.PREFIX):] for a in g._group_actions] for g in generate._action_groups}
    fields = [f for names in groups.values() for f in names if f in ferrogen.GenerationConfig().to_dict()]
    assert sorted(fields) == sorted(ferrogen.GenerationConfig().to_dict())  # every field, once
    for title in ("length", "strategy", "sampling", "penalties and token rules", "beams", "output"):
        assert f"generation config: {title}" in groups
    refused = groups["generation config: " + _cli_flags.REFUSED_TITLE]
    assert "use_mtp" in refused and "watermarking_config" not in refused  # both watermarks are native
    assert set(refused) == set(_cli_flags.refused_fields())
    helps = {a.dest: a.help for a in generate._actions if a.dest.startswith(_cli_flags.PREFIX)}
    assert all(helps.values()), [d for d, h in helps.items() if not h]
    assert helps["cfg_top_k"].startswith("The number of highest probability vocabulary tokens")  # transformers'
    assert helps["cfg_seed"].startswith("Seed of the per-row sampling generator")  # ferrogen's docstring
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = capsys.readouterr().out
    assert "exit status" in out and "--strict" in out and "--resume" in out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--model", "/nonexistent/model"], "--model"),
        (["--input", "/nonexistent.jsonl"], "--input"),
        (["--num-beams", "0"], "num_beams"),
        (["--batch-size", "0", "--input", "x"], "--batch-size"),
        (["--refill-fraction", "0", "--input", "x"], "--refill-fraction: must be in (0, 1]"),
        (["--refill-fraction", "1.5", "--input", "x"], "--refill-fraction: must be in (0, 1]"),
        (["--refill-fraction", "nan", "--input", "x"], "--refill-fraction: must be in (0, 1]"),
        (["--refill-fraction", "0.5", "--prompt", "a", "--stream"], "--refill-fraction"),
        (["--stream", "--prompt", "a", "--prompt", "b"], "--stream"),
        (["--dola-layers", "middle"], "dola_layers"),
        (["--prompt", "a", "--resume"], "--resume"),
        (["--format", "text", "--output", "x.jsonl"], "--format"),
    ],
)
def test_bad_flags_give_one_line_errors(capsys, argv, needle):
    code, _, err = run(capsys, "generate", *argv)
    assert code == 2
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--ray", "--block-size", "4"], "--block-size: must be an int >= --batch-size (8), got 4"),
        (["--ray", "--batch-size", "2", "--block-size", "-1"], "--block-size: must be an int >= --batch-size (2), got -1"),
        (["--ray-address", "auto", "--block-size", "0"], "--block-size: must be an int >= --batch-size (8), got 0"),
        (["--block-size", "32"], "--block-size: works with --ray"),
        (["--ray", "--refill-fraction", "0"], "--refill-fraction: must be in (0, 1]"),
        (["--ray", "--refill-fraction", "1.5", "--block-size", "32"], "--refill-fraction: must be in (0, 1]"),
    ],
)
def test_ray_flags_are_refused_by_name_before_any_model_work(tmp_path, capsys, monkeypatch, argv, needle):
    import ferrogen.distributed

    def no_job(*args, **kwargs):
        raise AssertionError("the Ray job started")

    monkeypatch.setattr(ferrogen.distributed, "run_jsonl_job", no_job)
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "Jesus wept"}\n')
    code, _, err = run(capsys, "generate", "--input", str(src), *argv)
    assert code == 2
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as stopped:
        main(["generate", "--input", str(src), "--ray", "--block-size", "many"])
    assert stopped.value.code == 2 and "--block-size: invalid int value" in capsys.readouterr().err


def test_ray_flags_reach_the_ray_job(tmp_path, capsys, monkeypatch):
    """--block-size and --refill-fraction go to the Ray job (None: the library's defaults)."""
    import ferrogen.distributed

    seen = []

    def job(input_path, out, **kwargs):
        seen.append({k: kwargs[k] for k in ("batch_size", "block_size", "refill_fraction")})
        return 0

    monkeypatch.setattr(ferrogen.distributed, "run_jsonl_job", job)
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "Jesus wept"}\n')
    for extra in (["--block-size", "24", "--refill-fraction", "0.5"], ["--block-size", "3"], []):
        code, _, err = run(capsys, "generate", "--input", str(src), "--ray", "--batch-size", "3", *extra)
        assert code == 0, err
    assert seen == [dict(batch_size=3, block_size=24, refill_fraction=0.5),
                    dict(batch_size=3, block_size=3, refill_fraction=None),
                    dict(batch_size=3, block_size=None, refill_fraction=None)]


def test_refill_fraction_reaches_the_engine(tmp_path, capsys, monkeypatch):
    """--refill-fraction is the batch engine's refill_fraction; the records are those of the default."""
    import ferrogen.engine

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["And God said", "Jesus wept", "In the beginning"]))
    real, fractions = ferrogen.engine.generate_texts, []

    def recording(*args, **kwargs):
        fractions.append(kwargs.get("refill_fraction"))
        return real(*args, **kwargs)

    monkeypatch.setattr(ferrogen.engine, "generate_texts", recording)
    outputs = []
    for extra in (["--refill-fraction", "0.5"], []):
        dst = tmp_path / f"out{len(extra)}.jsonl"
        code, _, _ = run(capsys, "generate", "--input", str(src), "--output", str(dst), "--max-new-tokens", "4",
                         "--batch-size", "2", *extra)
        assert code == 0
        outputs.append(records_of(dst))
    assert fractions == [0.5, None] and outputs[0] == outputs[1]


def test_a_failing_prompt_exits_1(capsys):
    code, out, err = run(capsys, "generate", "--prompt", "", "--prompt", "And God said", "--max-new-tokens", "3")
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and "line 1: the prompt is empty" in err
    assert [r["line"] for r in records] == [1, 2] and "error" in records[0] and len(records[1]["token_ids"]) == 3


@pytest.mark.parametrize("extra, expected", [([], 0), (["--beam-tree", "tree.json"], 2)],
                         ids=["returns", "fails after the model loaded"])
def test_transformers_logging_is_left_as_it_was(tmp_path, capsys, monkeypatch, extra, expected):
    """The command quiets transformers' logging and load bars for its own run only: a program that
    calls ``main`` (a test, an embedding application) keeps its settings, also when the run fails."""
    from transformers.utils import logging as hf_logging

    monkeypatch.chdir(tmp_path)
    before = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_info()
    hf_logging.enable_progress_bar()
    try:
        code, _, _ = run(capsys, "generate", "--prompt", "And God said", "--max-new-tokens", "2", *extra)
        assert code == expected
        assert (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()) == (hf_logging.INFO, True)
    finally:
        hf_logging.set_verbosity(before[0])
        (hf_logging.enable_progress_bar if before[1] else hf_logging.disable_progress_bar)()


def test_stream_prints_to_stderr(capsys):
    code, out, err = run(capsys, "generate", "--prompt", "And God said", "--max-new-tokens", "6", "--stream")
    assert code == 0
    assert json.loads(out)["text"].strip() in err


def test_config_file_and_bool_flags(tmp_path, capsys):
    ferrogen.GenerationConfig(max_new_tokens=4).save_pretrained(tmp_path)
    code, out, _ = run(capsys, "generate", "--prompt", "Jesus wept",
                       "--config", str(tmp_path / "generation_config.json"), "--do-sample", "false")
    assert code == 0 and len(json.loads(out)["token_ids"]) <= 4


def test_bench_writes_a_table_row_per_strategy(tmp_path, capsys):
    """`ferrogen bench` (the harness in ferrogen.bench) on a tiny run: one row per strategy,
    the floor, both sides and their ratios filled in (no timing is asserted)."""
    out = tmp_path / "bench.md"
    code = main(["bench", "--models", "gpt2-2x128", "--batches", "2", "--strategies", "greedy", "beam4",
                 "--new-tokens", "3", "--repeats", "1", "--out", str(out)])
    assert code == 0
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if line.startswith("| gpt2")]
    assert [r[2].strip() for r in rows] == ["greedy", "beam4"]
    for r in rows:
        floor, ours, theirs, ratio = (float(r[i]) for i in (3, 5, 6, 7))
        assert floor > 0 and ours > 0 and theirs > 0
        assert ratio == pytest.approx(ours / floor, abs=0.01)
    capsys.readouterr()


def test_bench_unseeded_beam_sample_row_draws_what_transformers_draws(tmp_path, capsys):
    """The ``beam_sample4_torchrng`` row passes no seed: ferrogen draws the noise from torch's
    global generator, both sides start from torch.manual_seed(0), and the row says their tokens
    agree (the seeded ``beam_sample4`` row, the core's own noise, makes no such claim)."""
    out = tmp_path / "bench.md"
    code = main(["bench", "--models", "gpt2-2x128", "--batches", "2", "--strategies", "beam_sample4_torchrng",
                 "beam_sample4", "--new-tokens", "4", "--repeats", "1", "--out", str(out)])
    assert code == 0
    rows = {r[2].strip(): r for r in (line.split("|")[1:-1] for line in out.read_text().splitlines()
                                      if line.startswith("| gpt2"))}
    assert set(rows) == {"beam_sample4_torchrng", "beam_sample4"}
    unseeded = rows["beam_sample4_torchrng"]
    assert float(unseeded[5]) > 0 and float(unseeded[6]) > 0
    assert unseeded[-1].strip() == "same tokens as transformers"
    assert "tokens" not in rows["beam_sample4"][-1]
    capsys.readouterr()
