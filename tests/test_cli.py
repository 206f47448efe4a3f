"""`ferrogen generate`: prompts and JSONL in, JSONL out, one-line errors."""

from __future__ import annotations

import json

import pytest

import ferrogen
from ferrogen.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_prompt_to_jsonl_matches_library(capsys):
    code, out, _ = run(capsys, "generate", "--prompt", "And God said", "--max-new-tokens", "8")
    assert code == 0
    record = json.loads(out)
    expected = ferrogen.pipeline()("And God said", max_new_tokens=8)[0]
    assert record["text"] == expected.text and record["token_ids"] == expected.token_ids


def test_jsonl_file_with_overrides_and_a_bad_line(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(
        '{"prompt": "And God said"}\n'
        "not json\n"
        '{"prompt": "In the beginning", "max_new_tokens": 3}\n'
        '{"text": "no prompt key"}\n'
        '{"prompt": "The LORD", "top_p": 7}\n'
    )
    dst = tmp_path / "out.jsonl"
    code, _, err = run(capsys, "generate", "--input", str(src), "--output", str(dst), "--max-new-tokens", "5")
    assert code == 1
    records = {r["line"]: r for r in map(json.loads, dst.read_text().splitlines())}
    assert set(records) == {1, 2, 3, 4, 5}
    assert "invalid JSON" in records[2]["error"] and "line 2" in err
    assert "prompt" in records[4]["error"]
    assert records[5]["error"].startswith("top_p")
    assert len(records[1]["token_ids"]) == 5 and len(records[3]["token_ids"]) == 3


def test_stream_prints_to_stderr(capsys):
    code, out, err = run(capsys, "generate", "--prompt", "And God said", "--max-new-tokens", "6", "--stream")
    assert code == 0
    assert json.loads(out)["text"].strip() in err


def test_config_file_and_bool_flags(tmp_path, capsys):
    ferrogen.GenerationConfig(max_new_tokens=4).save_pretrained(tmp_path)
    code, out, _ = run(capsys, "generate", "--prompt", "Jesus wept", "--config", str(tmp_path / "generation_config.json"),
                       "--do-sample", "false")
    assert code == 0 and len(json.loads(out)["token_ids"]) <= 4


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--model", "/nonexistent/model"], "--model"),
        (["--input", "/nonexistent.jsonl"], "--input"),
        (["--num-beams", "0"], "num_beams"),
        (["--batch-size", "0", "--input", "x"], "--batch-size"),
        (["--stream", "--prompt", "a", "--prompt", "b"], "--stream"),
    ],
)
def test_bad_flags_give_one_line_errors(capsys, argv, needle):
    code, _, err = run(capsys, "generate", *argv)
    assert code == 2
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


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
