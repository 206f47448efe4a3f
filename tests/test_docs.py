"""Every code block of the README and the guides in docs/ runs, so the documentation cannot rot.

Per document, the ``python`` blocks run in order in one namespace (as doctest runs the examples
of one docstring), in a scratch directory. ``bash`` blocks may hold ``ferrogen ...`` commands,
which run through the CLI's ``main``. A block that must not run says so, with the reason, in an
HTML comment right above it::

    <!-- docs-test: skip (needs the network: downloads a Hub model) -->

A block is skipped, naming the strategy, while it uses one this build does not have yet
(``ferrogen.generate`` raises ``NotImplementedError``, or ``enable()`` would fall back for it).
Blocks without a language (directory trees, output) are text, not code.
"""

from __future__ import annotations

import re
import shlex
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest

import ferrogen
from ferrogen import FallbackWarning

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON = {"python", "py"}
SHELL = {"bash", "sh", "shell", "console"}
TEXT = {"", "text", "toml", "json", "yaml", "jsonl", "svg", "dot"}
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)[^\n]*$")
_DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(.*?)\s*-->")
_MISSING = "not in this ferrogen build"


@dataclass
class Block:
    doc: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    directive: Optional[str]

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks_of(doc: Path) -> list[Block]:
    lines = doc.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, language = match.group(1), match.group(2), match.group(3).lower()
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1
        above = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        directive = _DIRECTIVE.search(above)
        found.append(Block(doc, start + 1, language, "\n".join(body) + "\n", directive and directive.group(1)))
    return found


BLOCKS = [b for doc in DOCS for b in blocks_of(doc)]
CODE = [b for b in BLOCKS if b.language not in TEXT]


class _DocRun:
    """The namespace of one document and how far through its blocks it has run."""

    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {"__name__": "__docs__"}
        self.done = 0


_runs: dict[Path, _DocRun] = {}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("docs")


@pytest.fixture
def isolated(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Scratch space for the blocks; transformers' copies of custom_generate code stay there too."""
    import transformers.dynamic_module_utils as dmu

    monkeypatch.setattr(dmu, "HF_MODULES_CACHE", str(scratch / "hf-modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(ferrogen.compat, "_warned", set())
    return scratch


def _skip_reason(block: Block) -> Optional[str]:
    if block.directive is None:
        return None
    match = re.fullmatch(r"skip\s*\((.+)\)", block.directive)
    assert match, f"{block.id}: directive must read 'docs-test: skip (reason)', got {block.directive!r}"
    return match.group(1)


def _run_python(block: Block, namespace: dict[str, Any]) -> None:
    code = compile(block.code, block.id, "exec")
    with warnings.catch_warnings():
        # a documented example must run on ferrogen: a fallback is only allowed for a strategy
        # this build lacks (then the block is skipped, below)
        warnings.simplefilter("error", FallbackWarning)
        exec(code, namespace)


def _run_shell(block: Block) -> None:
    from ferrogen.cli import main

    for raw in block.code.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        argv = shlex.split(line, comments=True)
        assert argv[0] == "ferrogen", (
            f"{block.id}: only `ferrogen ...` commands run here; mark the block "
            f"'<!-- docs-test: skip (reason) -->' (got {line!r})"
        )
        assert main(argv[1:]) == 0, f"{block.id}: {line!r} failed"


def _run(block: Block) -> None:
    state = _runs.setdefault(block.doc, _DocRun())
    doc_blocks = [b for b in CODE if b.doc == block.doc]
    index = doc_blocks.index(block)
    # blocks before this one (normally already run by their own tests) set up the namespace
    for earlier in doc_blocks[state.done : index]:
        if earlier.language in PYTHON and _skip_reason(earlier) is None:
            try:
                _run_python(earlier, state.namespace)
            except (NotImplementedError, FallbackWarning):
                pass
    state.done = max(state.done, index + 1)
    try:
        if block.language in PYTHON:
            _run_python(block, state.namespace)
        else:
            _run_shell(block)
    except NotImplementedError as exc:
        _disable_all(state.namespace)
        pytest.skip(f"ferrogen.generate raises NotImplementedError: {exc}")
    except FallbackWarning as exc:
        _disable_all(state.namespace)
        if _MISSING not in str(exc):
            raise
        pytest.skip(f"strategy missing, enable() would fall back: {exc}")


def _disable_all(namespace: dict[str, Any]) -> None:
    """A block stopped half-way may have left ``enable()`` on; later blocks expect it off."""
    for value in list(namespace.values()):
        if ferrogen.is_enabled(value):
            ferrogen.disable(value)


# a block that shows a FallbackWarning sends its call to transformers on purpose (tests/fallback_counter.py)
@pytest.mark.parametrize("block", [
    pytest.param(b, id=b.id, marks=[pytest.mark.falls_back] if "FallbackWarning" in b.code else []) for b in CODE
])
def test_code_block_runs(block: Block, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workdir = isolated / block.doc.stem  # one scratch directory per document
    workdir.mkdir(exist_ok=True)
    monkeypatch.chdir(workdir)
    reason = _skip_reason(block)
    if reason is not None:
        pytest.skip(f"not run: {reason}")
    assert block.language in PYTHON | SHELL, (
        f"{block.id}: code in {block.language!r} cannot run here; mark it '<!-- docs-test: skip (reason) -->'"
    )
    _run(block)


def test_documents_have_code_and_no_unexplained_skips() -> None:
    assert {b.doc.name for b in CODE} >= {"README.md", "strategies.md"}
    for block in BLOCKS:
        if block.directive is not None:
            assert _skip_reason(block), f"{block.id}: a skipped block needs its reason"


def test_readme_quick_start_is_first_and_unchanged() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_two = [b.code.strip() for b in blocks_of(ROOT / "README.md")][:2]
    assert first_two == ['./run.sh "And God said"', "./scripts/test.sh"]
    assert readme.index("## Quick start") < readme.index("```")


def test_local_links_and_pictures_resolve() -> None:
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for target in re.findall(r"!?\[[^\]]*\]\(([^)#\s]+)[^)]*\)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (doc.parent / target).exists(), f"{doc.relative_to(ROOT)}: broken link {target}"


def test_every_strategy_has_a_guide_section() -> None:
    guide = (ROOT / "docs" / "strategies.md").read_text(encoding="utf-8")
    for mode in ferrogen.GenerationMode:
        assert f"<a id=\"{mode.value}\"></a>" in guide, f"docs/strategies.md has no section for {mode.value}"


def test_readme_beam_tree_picture_is_current(scratch: Path) -> None:
    """Runs after the README's blocks: the picture in docs/ is what the README's block makes."""
    made = scratch / "README" / "beam_tree.svg"
    if not made.is_file():
        pytest.skip("the README's beam-tree block did not run (beam search missing, or run on its own)")
    assert made.read_bytes() == (ROOT / "docs" / "beam_tree.svg").read_bytes(), (
        "docs/beam_tree.svg is stale: run `python scripts/render_beam_tree.py`"
    )
