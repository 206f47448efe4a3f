"""What a new user meets first: `import ferrogen` and `--help` without torch, the pipeline's
text against transformers' `generated_text`, and `ferrogen bench`'s flags, run as real commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import ferrogen

PYTHON_DIR = str(Path(ferrogen.__file__).resolve().parents[1])


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": PYTHON_DIR + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout)


def _ferrogen(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """The `ferrogen` command (its entry point, ferrogen.cli:main) in a fresh process."""
    return _run("-m", "ferrogen.cli", *args, timeout=timeout)


@pytest.mark.parametrize("code", [
    "import ferrogen",
    "import ferrogen; ferrogen.GenerationConfig(num_beams=2); ferrogen.embedded_model_path()",
    "import ferrogen.cli; ferrogen.cli.build_parser()",
    "import ferrogen.bench; ferrogen.bench.build_parser()",
])
def test_torch_loads_only_when_a_command_needs_it(code):
    done = _run("-c", code + "; import sys; print('torch' in sys.modules, 'transformers' in sys.modules)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("argv", [["--help"], ["generate", "--help"], ["bench", "--help"]])
def test_help_answers_without_importing_torch(argv):
    code = ("import sys, runpy; sys.argv = ['ferrogen', *%r]\n"
            "try:\n    runpy.run_module('ferrogen.cli', run_name='__main__')\n"
            "except SystemExit as e:\n    print('exit', e.code, 'torch' in sys.modules)" % (argv,))
    done = _run("-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "exit 0 False"


def test_lazy_names_are_the_public_api():
    """Every public name resolves, `generate` stays the function after its module is imported,
    and an unknown name is an AttributeError."""
    import ferrogen.generate as module_or_function
    from ferrogen.text import pipeline  # noqa: F401  (imports the submodule ferrogen.generate too)

    assert callable(ferrogen.generate) and ferrogen.generate.__name__ == "generate"
    assert module_or_function is ferrogen.generate
    for name in ferrogen.__all__:
        assert getattr(ferrogen, name) is not None
    assert ferrogen.text.load_model is not None
    with pytest.raises(AttributeError, match="no_such_name"):
        ferrogen.no_such_name  # noqa: B018


def test_pipeline_text_and_full_text_match_transformers_generated_text():
    """transformers' text-generation pipeline includes the prompt (return_full_text=True, its
    default): that is `full_text`; with return_full_text=False it is `text`."""
    import transformers

    model, tok = ferrogen.text.load_model(ferrogen.embedded_model_path())
    prompt = "And God said"
    ours = ferrogen.pipeline(model, tok)(prompt, max_new_tokens=8, do_sample=False)[0]
    hf = transformers.pipeline("text-generation", model=model, tokenizer=tok)
    full = hf(prompt, max_new_tokens=8, do_sample=False)[0]["generated_text"]
    new = hf(prompt, max_new_tokens=8, do_sample=False, return_full_text=False)[0]["generated_text"]
    assert ours.full_text == full and ours.text == new and ours.prompt == prompt
    assert not ours.text.startswith(prompt)
    with pytest.raises(TypeError, match="^return_full_text: .*full_text"):
        ferrogen.pipeline(model, tok)(prompt, max_new_tokens=2, return_full_text=True)


def test_bench_help_names_the_models_and_a_bad_one_lists_them():
    from ferrogen.bench.settings import MODELS

    done = _ferrogen("bench", "--help")
    assert done.returncode == 0
    for name in MODELS:
        assert name in done.stdout
    assert "--plot" in done.stdout and "--startup" in done.stdout
    bad = _ferrogen("bench", "--models", "gpt3")
    assert bad.returncode == 2 and all(name in bad.stderr for name in MODELS)


def test_bench_plot_draws_the_table(tmp_path):
    pytest.importorskip("matplotlib")
    png, table = tmp_path / "bench.png", tmp_path / "bench.md"
    done = _ferrogen("bench", "--models", "gpt2-2x128", "--batches", "1", "--strategies", "greedy", "beam4",
                     "--new-tokens", "2", "--repeats", "1", "--out", str(table), "--plot", str(png))
    assert done.returncode == 0, done.stderr[-2000:]
    from matplotlib.image import imread

    image = imread(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.shape[0] > 100 and image.shape[1] > 300
    assert [line.split("|")[3].strip() for line in table.read_text().splitlines() if line.startswith("| gpt2")] == [
        "greedy", "beam4"]


def test_bench_plot_without_matplotlib_says_how_to_get_it(tmp_path):
    """Refused before any timing, naming the flag and the extra."""
    code = ("import sys, builtins\nreal = builtins.__import__\n"
            "def fake(name, *a, **k):\n    if name.startswith('matplotlib'): raise ImportError(name)\n"
            "    return real(name, *a, **k)\nbuiltins.__import__ = fake\n"
            "from ferrogen.cli import main\n"
            f"main(['bench', '--models', 'gpt2-2x128', '--plot', {str(tmp_path / 'x.png')!r}])")
    done = _run("-c", code)
    assert done.returncode != 0 and "--plot: needs matplotlib" in done.stderr and "ferrogen[plot]" in done.stderr
    assert not (tmp_path / "x.png").exists()


def test_startup_bench_times_fresh_processes(monkeypatch):
    """The start-up table's arithmetic on two cheap cases (the real cases are the bench's job)."""
    from ferrogen.bench import startup

    monkeypatch.setattr(startup, "CASES", [("python (interpreter only)", ["-c", "pass"]),
                                           (startup.FLOOR, ["-c", "import json"])])
    rows = startup.measure(2)
    assert [r.case for r in rows] == ["python (interpreter only)", startup.FLOOR]
    assert all(r.wall_s > 0 and r.cpu_s >= 0 and r.min_wall_s <= r.wall_s for r in rows)
    text = startup.startup_table(rows, 2)
    floor_line = next(line for line in text.splitlines() if line.startswith(f"| {startup.FLOOR}"))
    assert floor_line.split("|")[4].strip() == "+0.00"
