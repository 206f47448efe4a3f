"""``ferrogen generate``'s files: JSONL input read lazily line by line, output that never destroys
what was there.

Input: every physical line is numbered; a line that is blank is skipped, any other line becomes a
:class:`Line` holding either a prompt with its overrides or the ``line N: ...`` error that line
gets (not UTF-8, not JSON, no string ``prompt``, longer than the byte cap). A line over the cap is
skipped over in chunks, so memory stays bounded by the cap whatever the file holds.

Output: :class:`OutputFile` writes to a temporary file next to the destination and renames it into
place at the end, so a run that fails before writing anything leaves an existing file as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, TextIO


class CliError(Exception):
    """An error reported as one line, without a traceback (exit status 2)."""


@dataclass
class Line:
    """One non-blank input line: a prompt and its per-line overrides, or its error."""

    number: int
    prompt: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None


def error_text(number: int, message: str) -> str:
    """The one error format of every record and message: ``line N: message``."""
    prefix = f"line {number}: "
    return message if message.startswith(prefix) else prefix + message


def count_lines(path: str) -> int:
    """Physical lines in the file (a last line without a newline counts), in bounded memory."""
    count, last = 0, b"\n"
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def _parse(number: int, raw: bytes) -> Optional[Line]:
    try:
        text = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a byte-order mark may open the file
    except UnicodeDecodeError as exc:
        return Line(number, error=error_text(number, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at byte "
                                                     f"{exc.start + 1} of the line)"))
    if not text.strip():
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return Line(number, error=error_text(number, f"invalid JSON ({exc.msg})"))
    except RecursionError:
        return Line(number, error=error_text(number, "invalid JSON (nested too deeply)"))
    if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
        return Line(number, error=error_text(number, 'expected an object with a string "prompt"'))
    return Line(number, obj.pop("prompt"), obj)


def read_lines(path: str, max_line_bytes: int, skip: frozenset[int] = frozenset()) -> Iterator[Line]:
    """The file's non-blank lines in order, read lazily; lines numbered in ``skip`` are passed over."""
    with open(path, "rb") as handle:
        number = 0
        while raw := handle.readline(max_line_bytes + 1):
            number += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                total = len(raw)
                while not raw.endswith(b"\n") and (raw := handle.readline(1 << 20)):
                    total += len(raw)
                if number not in skip:
                    yield Line(number, error=error_text(number, f"the line is {total} bytes, over the limit of "
                                                                f"{max_line_bytes} bytes for this model "
                                                                f"(far more than its context holds)"))
                continue
            if number in skip:
                continue
            line = _parse(number, raw)
            if line is not None:
                yield line


def prompt_lines(prompts: list[str]) -> Iterator[Line]:
    """``--prompt`` values as lines numbered from 1."""
    for number, prompt in enumerate(prompts, start=1):
        yield Line(number, prompt)


def _answered(path: Path) -> tuple[frozenset[int], int, bool]:
    """Line numbers already in a previous output, the byte length of its records, and whether the
    last record lacks its newline.

    A last line cut short (a run killed while writing) is not a record and is dropped; any other
    line that is not a record means the file is not a ferrogen output, and resuming is refused.
    """
    numbers: set[int] = set()
    keep, newline = 0, False
    with open(path, "rb") as handle:
        for raw in handle:
            try:
                record = json.loads(raw)
                number = record["line"]
                if not isinstance(number, int):
                    raise TypeError
            except (ValueError, TypeError, KeyError):
                if raw.endswith(b"\n"):
                    raise CliError(f"--resume: {path} has a line that is not a ferrogen record "
                                   f"(after byte {keep}); not resuming into it") from None
                print(f"ferrogen: --resume: dropping the cut-off last line of {path}", file=sys.stderr)
                break
            numbers.add(number)
            keep += len(raw)
            newline = not raw.endswith(b"\n")
    return frozenset(numbers), keep, newline


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Holds SIGINT and SIGTERM back (delivered on exit from the block) where the OS allows it."""
    held = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class OutputFile:
    """The ``--output`` file, replaced atomically: records go to a temporary file in the same folder,
    flushed after each batch, which :meth:`close` renames over the destination.

    Checked before any model work: an existing non-empty file is refused unless ``overwrite``
    (replace it) or ``resume`` (keep its records and skip their lines) is given.
    """

    def __init__(self, path: str, overwrite: bool, resume: bool) -> None:
        self.path = Path(path)
        self.resume = resume
        self.answered: frozenset[int] = frozenset()
        self._keep, self._newline = 0, False
        self._handle: Optional[TextIO] = None
        self._temp: Optional[Path] = None
        self.lines_written = 0  # lines answered by this run
        if self.path.is_dir():
            raise CliError(f"--output: {path} is a directory")
        if not self.path.parent.is_dir():
            raise CliError(f"--output: folder {self.path.parent} does not exist")
        exists = self.path.exists() and self.path.stat().st_size > 0
        if exists and resume:
            self.answered, self._keep, self._newline = _answered(self.path)
        elif exists and not overwrite:
            raise CliError(f"--output: {path} exists; pass --overwrite to replace it or --resume to add "
                           f"the lines it lacks")

    def open(self) -> TextIO:
        """Creates the temporary file (with the records kept by ``resume``) and returns it."""
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self._temp = Path(name)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(fd, 0o666 & ~umask)  # mkstemp makes it private; the output gets a normal file's mode
        self._handle = os.fdopen(fd, "w", encoding="utf-8")
        if self._keep:
            with open(self.path, "rb") as old:
                self._handle.buffer.write(old.read(self._keep) + b"\n" * self._newline)
        return self._handle

    @property
    def opened(self) -> bool:
        return self._temp is not None

    def write(self, text: str, lines: int) -> None:
        """Writes the whole records of ``lines`` lines and pushes them to the OS, with SIGINT and
        SIGTERM held back meanwhile: a signal cannot cut a record, and ``lines_written`` counts
        exactly what is in the file."""
        assert self._handle is not None
        with _signals_held():
            self._handle.write(text)
            self._handle.flush()
            self.lines_written += lines

    def close(self, complete: bool) -> bool:
        """Renames the temporary file over the destination when the run completed or wrote a record
        (else deletes it and the destination stays as it was); returns whether it did."""
        if self._handle is None or self._temp is None:
            return False
        keep = complete or self.lines_written > 0
        try:
            if keep:
                self._handle.flush()
                os.fsync(self._handle.fileno())
            self._handle.close()
            if keep:
                os.replace(self._temp, self.path)
            else:
                self._temp.unlink()
        finally:
            self._handle = None
        return keep
