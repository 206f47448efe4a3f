"""Command line: ``ferrogen generate`` over a prompt or a JSONL file.

    ferrogen generate --prompt "And God said" --max-new-tokens 20
    ferrogen generate --input prompts.jsonl --output out.jsonl --num-beams 4
    ferrogen generate --model ./my-model --prompt "Hello" --stream
    ferrogen generate --prompt "And God said" --num-beams 4 --beam-tree tree.html
    ferrogen generate --input prompts.jsonl --output out.jsonl --ray      # on Ray Data (local or --ray-address)

Each input line is a JSON object with ``prompt`` and, optionally, any config field as an
override for that line. A bad line is reported with its line number; the others still run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, TextIO

__all__ = ["main"]


class CliError(Exception):
    """An error reported as one line, without a traceback."""


def _config_fields() -> dict[str, Any]:
    from .config import GenerationConfig

    return GenerationConfig().to_dict()


def _parse_value(text: str) -> Any:
    """Flag values are JSON when they parse as JSON (numbers, lists, true/false/null), else strings."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ferrogen", description="Fast text generation with transformer models.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("bench", add_help=False,
                   help="time ferrogen against transformers and the forward pass (ferrogen bench --help)")
    gen = sub.add_parser("generate", help="generate text from a prompt or a JSONL file")
    gen.add_argument("--model", help="local model directory (default: the embedded model)")
    src = gen.add_mutually_exclusive_group()
    src.add_argument("--prompt", action="append", help="a prompt (repeat for a batch)")
    src.add_argument("--input", help="JSONL file, one {\"prompt\": ...} object per line")
    gen.add_argument("--output", help="JSONL output file (default: stdout)")
    gen.add_argument("--config", help="a generation_config.json to start from")
    gen.add_argument("--batch-size", type=int, default=8, help="prompts per batch for --input (default 8)")
    gen.add_argument("--device", default="cpu", help="torch device (default cpu)")
    gen.add_argument("--stream", action="store_true", help="print text as it is generated (batch size 1)")
    gen.add_argument("--beam-tree", metavar="PATH",
                     help="with --prompt and a beam mode: write the tree of kept hypotheses "
                          "(.html, .svg, .dot or .json, by suffix)")
    gen.add_argument("--ray", action="store_true", help="run --input on Ray Data: a local Ray instance on this machine")
    gen.add_argument("--ray-address", help="run --input on the Ray cluster at this address (implies --ray)")
    fields = gen.add_argument_group("generation config fields (values are parsed as JSON when possible)")
    for name, default in sorted(_config_fields().items()):
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            fields.add_argument(flag, dest=f"cfg_{name}", nargs="?", const="true", metavar="BOOL")
        else:
            fields.add_argument(flag, dest=f"cfg_{name}", metavar="VALUE")
    return parser


# Fields whose flag may name a file holding the value (--json-schema FILE, --grammar FILE).
_FILE_FIELDS = {"json_schema", "grammar"}


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out = {}
    for key, text in vars(args).items():
        if key.startswith("cfg_") and text is not None:
            name = key[4:]
            if name in _FILE_FIELDS and Path(text).is_file():
                text = Path(text).read_text(encoding="utf-8")
            out[name] = text if name in ("grammar", "regex") else _parse_value(text)
    return out


def _read_jsonl(path: str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object or the error message) for every non-blank line."""
    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"--input: cannot read {path}: {exc.strerror}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, f"line {number}: invalid JSON ({exc.msg})"
                continue
            if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
                yield number, f"line {number}: expected an object with a string \"prompt\""
                continue
            yield number, obj


def _batches(items: list[tuple[int, dict]], size: int) -> Iterator[list[tuple[int, dict]]]:
    """Consecutive lines with the same overrides, at most ``size`` at a time."""
    batch: list[tuple[int, dict]] = []
    key: Optional[str] = None
    for number, obj in items:
        this = json.dumps({k: v for k, v in obj.items() if k != "prompt"}, sort_keys=True)
        if batch and (this != key or len(batch) >= size):
            yield batch
            batch = []
        batch.append((number, obj))
        key = this
    if batch:
        yield batch


def _run(args: argparse.Namespace, out: TextIO) -> int:
    from .config import GenerationConfig
    from .text import pipeline

    if args.batch_size < 1:
        raise CliError(f"--batch-size: must be >= 1, got {args.batch_size}")
    if args.model is not None and not Path(args.model).is_dir():
        raise CliError(f"--model: {args.model} is not a directory")
    if args.input is not None and not Path(args.input).is_file():
        raise CliError(f"--input: {args.input} is not a file")
    if args.stream and args.prompt and len(args.prompt) > 1:
        raise CliError("--stream: works with one prompt")
    _check_beam_tree(args)
    if (args.ray or args.ray_address) and (args.input is None or args.stream):
        raise CliError("--ray: works with --input (a JSONL file) and without --stream")
    overrides = _overrides(args)
    if args.config is None:
        GenerationConfig(**overrides)  # flags are checked before the model loads
    if args.ray or args.ray_address:
        try:
            from .distributed import run_jsonl_job

            return run_jsonl_job(args.input, out, model=args.model, config=args.config, overrides=overrides,
                                 batch_size=args.batch_size, device=args.device, address=args.ray_address)
        except ImportError as exc:
            raise CliError(f"--ray: {exc}") from None
    _quiet_transformers()
    generator = pipeline(args.model, device=args.device)
    base = GenerationConfig.from_pretrained(args.config or generator.model)
    config = base.merged(**overrides)
    call = dict(generation_config=config)

    if args.input is None:
        prompts = args.prompt or ["And God said"]
        streamer = None
        if args.stream:
            from .streamers import TextStreamer

            streamer = TextStreamer(generator.tokenizer, skip_prompt=True, skip_special_tokens=True, file=sys.stderr)
        if args.beam_tree:
            results = _generate_with_tree(generator, prompts, config, streamer, args.beam_tree)
        else:
            results = generator(prompts, streamer=streamer, **call)
        for result in results:
            out.write(json.dumps({"prompt": result.prompt, "text": result.text, "token_ids": result.token_ids,
                                  "finish_reason": result.finish_reason}) + "\n")
        return 0

    from tqdm import tqdm

    rows = list(_read_jsonl(args.input))
    good = [(n, obj) for n, obj in rows if isinstance(obj, dict)]
    failures = 0
    for n, message in rows:
        if isinstance(message, str):
            failures += 1
            print(f"ferrogen: {message}", file=sys.stderr)
            out.write(json.dumps({"line": n, "error": message}) + "\n")
    with tqdm(total=len(good), unit="prompt", file=sys.stderr, disable=None) as bar:
        for batch in _batches(good, args.batch_size):
            line_kwargs = {k: v for k, v in batch[0][1].items() if k != "prompt"}
            try:
                results = generator([obj["prompt"] for _, obj in batch], generation_config=config.merged(**line_kwargs))
            except (ValueError, TypeError) as exc:
                for n, _ in batch:
                    failures += 1
                    print(f"ferrogen: line {n}: {exc}", file=sys.stderr)
                    out.write(json.dumps({"line": n, "error": str(exc)}) + "\n")
                bar.update(len(batch))
                continue
            per = len(results) // len(batch)
            for i, result in enumerate(results):
                n = batch[i // per][0]
                out.write(json.dumps({"line": n, "prompt": result.prompt, "text": result.text,
                                      "token_ids": result.token_ids, "finish_reason": result.finish_reason}) + "\n")
            bar.update(len(batch))
    return 1 if failures else 0


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
def _quiet_transformers() -> None:
    """The CLI's stderr carries ferrogen's messages; transformers' load bars would bury them."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # the harness has its own options
        from .bench import main as bench_main

        bench_main(argv[1:])
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.output:
            with open(args.output, "w", encoding="utf-8") as out:
                return _run(args, out)
        return _run(args, sys.stdout)
    except CliError as exc:
        print(f"ferrogen: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"ferrogen: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
