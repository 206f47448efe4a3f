"""Command line: ``ferrogen generate`` over prompts or a JSONL file.

    ferrogen generate --prompt "And God said" --max-new-tokens 20
    ferrogen generate --input prompts.jsonl --output out.jsonl --num-beams 4
    ferrogen generate --input prompts.jsonl --output out.jsonl --resume   # after an interruption
    ferrogen generate --model ./my-model --prompt "Hello" --stream
    ferrogen generate --prompt "And God said" --num-beams 4 --beam-tree tree.html
    ferrogen generate --input prompts.jsonl --output out.jsonl --ray      # on Ray Data (local or --ray-address)

Each input line is a JSON object with ``prompt`` and, optionally, any config field as an
override for that line. Every non-blank line gets one record, in input order: the result or
``{"line": N, "error": "line N: ..."}``; the other lines still run. The exit status is in
:data:`EXIT_STATUS` (and ``ferrogen generate --help``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, TextIO

from ._cli_flags import add_config_flags, overrides, unknown_options_message
from ._cli_io import CliError, OutputFile, count_lines, prompt_lines, read_lines
from ._cli_ray import BLOCK_SIZE_HELP, check_ray_args, on_ray, run_on_ray

__all__ = ["main", "EXIT_STATUS"]

EXIT_STATUS = """\
exit status (line errors are recorded, not fatal, as in vLLM's run_batch, which writes a failed
request's error into its output line):
  0        every line was answered: a result or its error record
  1        --strict (implied by --prompt): some line got an error record; also an unexpected
           failure, with its traceback
  2        bad arguments, unreadable input, a model that does not load: nothing was generated
           and an existing --output is left as it was
  130/143  stopped by SIGINT/SIGTERM: every finished line is in --output (--resume continues)
"""

RECORDS = """\
records: one JSON object per non-blank input line (or per --prompt), in input order:
  {"line": N, "prompt": ..., "text": ..., "token_ids": [...], "finish_reason": ...}
  {"line": N, "error": "line N: ..."}   (bad JSON, not UTF-8, empty or over-long prompt, bad override, ...)
  With num_return_sequences > 1 a line has that many records, with "sequence_index".
  --output is written to a temporary file beside it and renamed into place when the run ends
  (also on SIGINT/SIGTERM); a file that exists is refused unless --overwrite or --resume is given.
"""


def build_parser(field_docs: bool = True) -> argparse.ArgumentParser:
    """The argument parser; ``field_docs=False`` skips reading the config fields' help text (only
    ``--help`` shows it)."""
    parser = argparse.ArgumentParser(prog="ferrogen", description="Fast text generation with transformer models.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("bench", add_help=False,
                   help="time ferrogen against transformers and the forward pass (ferrogen bench --help)")
    gen = sub.add_parser(
        "generate", help="generate text from a prompt or a JSONL file",
        usage="ferrogen generate [--model DIR] [--prompt TEXT ... | --input FILE] [--output FILE] [options]",
        description="Generate text from --prompt (repeatable) or a JSONL --input file. Every GenerationConfig "
                    "field is a flag; values are parsed as JSON when they parse (--eos-token-id [1,2]).",
        epilog=RECORDS + "\n" + EXIT_STATUS, formatter_class=argparse.RawDescriptionHelpFormatter)
    gen.add_argument("--model", metavar="DIR", help="local model directory (default: the embedded model)")
    src = gen.add_mutually_exclusive_group()
    src.add_argument("--prompt", action="append", metavar="TEXT", help="a prompt (repeat for a batch)")
    src.add_argument("--input", metavar="FILE", help="JSONL file, one {\"prompt\": ...} object per line")
    gen.add_argument("--output", metavar="FILE", help="JSONL output file (default: stdout)")
    existing = gen.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    existing.add_argument("--resume", action="store_true",
                          help="keep the records of an existing --output and generate only the --input lines "
                               "it lacks (a line with an error record counts as answered)")
    gen.add_argument("--format", choices=("auto", "json", "text"), default="auto",
                     help="json: one record per line; text: the prompt and its continuation, as llama.cpp's "
                          "llama-cli prints them. auto (default): text for one --prompt on a terminal, else json")
    gen.add_argument("--strict", action="store_true",
                     help="exit 1 when any line gets an error record (default for --prompt)")
    gen.add_argument("--config", metavar="FILE", help="a generation_config.json to start from")
    gen.add_argument("--batch-size", type=int, default=8, metavar="N", help="lines per batch (default 8)")
    gen.add_argument("--refill-fraction", type=float, metavar="F",
                     help="prefill waiting lines this fraction of the running batch, in (0, 1], at a time; "
                          "they take the places of finished rows (continuous batching, also with --ray; default 0.5)")
    gen.add_argument("--device", default="cpu", help="torch device (default cpu)")
    gen.add_argument("--stream", action="store_true",
                     help="print text as it is generated (one prompt; to stderr when the output is JSON)")
    gen.add_argument("--beam-tree", metavar="PATH",
                     help="with --prompt and a beam mode: write the tree of kept hypotheses "
                          "(.html, .svg, .dot or .json, by suffix)")
    gen.add_argument("--ray", action="store_true", help="run --input on Ray Data: a local Ray instance on this machine")
    gen.add_argument("--ray-address", metavar="ADDRESS",
                     help="run --input on the Ray cluster at this address (implies --ray)")
    gen.add_argument("--block-size", type=int, metavar="N", help=BLOCK_SIZE_HELP)
    add_config_flags(gen, with_docs=field_docs)
    return parser


def _check_args(args: argparse.Namespace) -> None:
    """Checks that need no model; a failure is a :class:`CliError` (exit status 2)."""
    if args.batch_size < 1:
        raise CliError(f"--batch-size: must be >= 1, got {args.batch_size}")
    if args.refill_fraction is not None and not 0 < args.refill_fraction <= 1:
        raise CliError(f"--refill-fraction: must be in (0, 1], got {args.refill_fraction}")
    if args.refill_fraction is not None and (args.stream or args.beam_tree):
        raise CliError("--refill-fraction: works with the batch engine, not with --stream or --beam-tree")
    if args.model is not None and not Path(args.model).is_dir():
        raise CliError(f"--model: {args.model} is not a directory")
    if args.input is not None and not Path(args.input).is_file():
        raise CliError(f"--input: {args.input} is not a file")
    if args.input is not None:
        try:
            open(args.input, "rb").close()
        except OSError as exc:
            raise CliError(f"--input: cannot read {args.input}: {exc.strerror}") from None
    if args.stream and args.prompt and len(args.prompt) > 1:
        raise CliError("--stream: works with one prompt")
    if args.stream and args.input is not None:
        raise CliError("--stream: works with --prompt, not --input")
    if args.resume and (args.input is None or args.output is None):
        raise CliError("--resume: works with --input and --output")
    if args.format == "text" and (args.input is not None or args.output is not None):
        raise CliError("--format text: prints --prompt results to stdout; --input and --output take JSON records")
    _check_beam_tree(args)
    check_ray_args(args)


def _text_format(args: argparse.Namespace, stdout: TextIO) -> bool:
    if args.format != "auto":
        return bool(args.format == "text")
    isatty = getattr(stdout, "isatty", None)
    one_prompt = args.input is None and len(args.prompt or [None]) == 1
    return one_prompt and args.output is None and bool(isatty and isatty())


class _Sink:
    """Where records go: ``--output`` (through :class:`OutputFile`) or stdout, as JSON or as text
    (a decoder-only model's prompt and continuation, as llama-cli prints them; a seq2seq model's output)."""

    def __init__(self, output: Optional[OutputFile], stdout: TextIO, text: bool, streamed: bool,
                 echo_prompt: bool) -> None:
        self.output, self.stdout, self.text, self.streamed, self.echo = output, stdout, text, streamed, echo_prompt
        if output is not None:
            output.open()

    def __call__(self, records: list[dict[str, Any]], lines: int) -> None:
        if self.text:
            if not self.streamed:
                self.stdout.write("".join(r["prompt"] * self.echo + r["text"] + "\n" for r in records if "text" in r))
        else:
            payload = "".join(json.dumps(r) + "\n" for r in records)
            if self.output is not None:
                self.output.write(payload, lines)
            else:
                self.stdout.write(payload)
        self.stdout.flush()


def _loaded_config(args: argparse.Namespace, fields: dict[str, Any], model: Any = None) -> Any:
    """``--config`` (else the model's own generation config) with the command line's fields on top;
    settings ferrogen refuses are an error here, before any line runs."""
    from ._cli_flags import flag_name
    from .config import GenerationConfig

    base = GenerationConfig.from_pretrained(args.config) if args.config else \
        GenerationConfig() if model is None else GenerationConfig.from_pretrained(model)
    config = base.merged(**fields)
    refused = config.unsupported_settings()
    if refused:
        raise CliError(f"{', '.join(map(flag_name, refused))}: ferrogen reads this setting but does not carry "
                       f"it out (see docs/transformers-differences.md)")
    return config


def _run(args: argparse.Namespace, stdout: TextIO) -> int:
    _check_args(args)
    fields = overrides(args)
    config = _loaded_config(args, fields)  # flags and --config are checked before the model loads
    output = OutputFile(args.output, args.overwrite, args.resume) if args.output else None
    complete = False
    try:
        code = _generate_all(args, fields, config, output, stdout)
        complete = True
        return code
    finally:
        if output is not None:
            kept = output.close(complete)
            if not complete and output.opened:
                print(f"ferrogen: stopped: {output.lines_written} lines written to {output.path}" +
                      (f" (with the {len(output.answered)} it had)" if output.answered else "") +
                      ("; --resume adds the rest" if kept else "; the file is left as it was"), file=sys.stderr)


def _generate_all(args: argparse.Namespace, fields: dict[str, Any], config: Any, output: Optional[OutputFile],
                  stdout: TextIO) -> int:
    if on_ray(args):
        return run_on_ray(args, fields, output, stdout)
    with _quiet_transformers():
        return _generate_here(args, fields, config, output, stdout)


def _generate_here(args: argparse.Namespace, fields: dict[str, Any], config: Any, output: Optional[OutputFile],
                   stdout: TextIO) -> int:
    from tqdm import tqdm

    from ._cli_run import Limits, run
    from .text import pipeline

    generator = pipeline(args.model, device=args.device)
    if args.config is None:  # start from the model's own generation config
        config = _loaded_config(args, fields, generator.model)
    text = _text_format(args, stdout)
    echo = not generator.encoder_decoder
    streamer = None
    if args.stream:
        from .streamers import TextStreamer

        streamer = TextStreamer(generator.tokenizer, skip_prompt=not text, skip_special_tokens=True,
                                file=stdout if text else sys.stderr)
    if args.beam_tree:
        prompts = args.prompt or ["And God said"]
        results = _generate_with_tree(generator, prompts, config, streamer, args.beam_tree)
        _Sink(output, stdout, text, streamer is not None, echo)(_records(results, len(prompts)), len(prompts))
        return 0
    limits = Limits.of(generator)
    if args.input is not None:
        lines = read_lines(args.input, limits.line_bytes, output.answered if output else frozenset())
        total: Optional[int] = count_lines(args.input)
    else:
        lines, total = prompt_lines(args.prompt or ["And God said"]), None
    sink = _Sink(output, stdout, text, streamer is not None, echo)
    with tqdm(total=total, unit="line", file=sys.stderr, disable=None if total else True) as bar, \
            _warnings_above(bar):
        def emit(records: list[dict[str, Any]], last: int) -> None:
            sink(records, len({r["line"] for r in records}))
            for record in records:
                if "error" in record:
                    tqdm.write(f"ferrogen: {record['error']}", file=sys.stderr)
            bar.update(last - bar.n)

        def progress(state: Any) -> None:  # the engine's tokens/s and running batch size
            bar.set_postfix_str(state.describe(), refresh=False)

        errors = run(lines, generator, config, limits, batch_size=args.batch_size, emit=emit, streamer=streamer,
                     on_progress=progress, refill_fraction=args.refill_fraction)
        bar.update((total or 0) - bar.n)
    return 1 if errors and (args.strict or args.input is None) else 0


@contextlib.contextmanager
def _warnings_above(bar: Any) -> Iterator[None]:
    """Warnings raised during the run are printed above the progress bar, not glued to it."""
    import warnings

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        bar.write(warnings.formatwarning(message, category, filename, lineno, line).rstrip("\n"), file=sys.stderr)

    previous = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def _records(results: list[Any], prompts: int) -> list[dict[str, Any]]:
    per = len(results) // prompts
    return [{"line": i // per + 1, "prompt": r.prompt, "text": r.text, "token_ids": r.token_ids,
             "finish_reason": r.finish_reason, **({"sequence_index": i % per} if per > 1 else {})}
            for i, r in enumerate(results)]


def _check_beam_tree(args: argparse.Namespace) -> None:
    """``--beam-tree`` checks that need no model."""
    if not args.beam_tree:
        return
    if args.input is not None:
        raise CliError("--beam-tree: works with --prompt, not --input")
    suffix = Path(args.beam_tree).suffix.lower()
    if suffix not in (".html", ".htm", ".svg", ".dot", ".gv", ".json"):
        raise CliError(f"--beam-tree: {args.beam_tree}: use a .html, .svg, .dot or .json file")
    if suffix == ".svg" and args.prompt and len(args.prompt) > 1:
        raise CliError("--beam-tree: an .svg file holds one tree; use .html, .dot or .json for several prompts")


def _generate_with_tree(generator: Any, prompts: list[str], config: Any, streamer: Any, path: str) -> list[Any]:
    """Generates like ``generator(prompts)`` and writes ``output.beam_tree`` to ``path``."""
    from .config import GenerationMode
    from .generate import generate
    from .text import TextResult

    if config.generation_mode() not in (GenerationMode.BEAM_SEARCH, GenerationMode.BEAM_SAMPLE,
                                        GenerationMode.GROUP_BEAM_SEARCH):
        raise CliError("--beam-tree: needs a beam mode (--num-beams > 1)")
    tok = generator.tokenizer
    enc = tok(prompts, return_tensors="pt", padding=True)
    device = getattr(generator.model, "device", None)
    out = generate(generator.model, input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
                   generation_config=config.merged(output_beam_tree=True), return_dict_in_generate=True,
                   streamer=streamer, tokenizer=tok)
    assert out.beam_tree is not None and out.finish_reasons is not None  # asked for above
    out.beam_tree.save(path, tok)
    skip = 1 if generator.encoder_decoder else enc["input_ids"].shape[1]
    per_prompt = out.sequences.shape[0] // len(prompts)
    results = []
    for row, seq in enumerate(out.sequences):
        new = seq[skip:].tolist()
        while new and new[-1] == tok.pad_token_id and out.finish_reasons[row] != "length":
            new.pop()
        results.append(TextResult(prompts[row // per_prompt], tok.decode(new, skip_special_tokens=True), new,
                                  out.finish_reasons[row]))
    return results


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """The CLI's stderr carries ferrogen's messages; transformers' load bars would bury them.
    Restored on the way out: ``main`` may be called inside a program (tests, an embedding
    application) whose transformers logging is its own."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


class _Stopped(KeyboardInterrupt):
    """SIGTERM, delivered as SIGINT is: the run unwinds and every finished line stays written."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    stopping: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if not stopping:  # the first one stops the run; later ones must not cut the clean-up short
            stopping.append(signum)
            raise _Stopped(signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # the harness has its own options
        from .bench import main as bench_main

        bench_main(argv[1:])
        return 0
    parser = build_parser(field_docs=any(a in ("-h", "--help") for a in argv))
    args, extras = parser.parse_known_args(argv)
    if extras:
        generate = _subparser(parser, args.command)
        generate.error(unknown_options_message(extras, generate))
    with _sigterm_as_interrupt():
        try:
            return _run(args, sys.stdout)
        except (CliError, ValueError, TypeError, OSError) as exc:
            print(f"ferrogen: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as exc:
            return 128 + getattr(exc, "signum", signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
