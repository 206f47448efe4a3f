"""``ferrogen generate --input ... --ray``: the checks of the Ray flags and the run on Ray Data
(:func:`ferrogen.distributed.run_jsonl_job`, imported only when a run asks for Ray)."""

from __future__ import annotations

import argparse
import json
from typing import Optional, TextIO

from ._cli_io import CliError, OutputFile, error_text
from .distributed.job import DEFAULT_BLOCK_BATCHES  # imports no Ray

BLOCK_SIZE_HELP = (f"with --ray: lines per Ray call, >= --batch-size (default {DEFAULT_BLOCK_BATCHES} x --batch-size: "
                   "the running batch refills from the block's waiting lines; = --batch-size: nothing refills)")


def on_ray(args: argparse.Namespace) -> bool:
    return bool(args.ray or args.ray_address)


def check_ray_args(args: argparse.Namespace) -> None:
    """The Ray flags' checks, before any model work (:class:`CliError`, exit status 2)."""
    if not on_ray(args):
        if args.block_size is not None:
            raise CliError("--block-size: works with --ray (the rows of each Ray call)")
        return
    if args.input is None or args.stream:
        raise CliError("--ray: works with --input (a JSONL file) and without --stream")
    if args.resume:
        raise CliError("--resume: not available with --ray")
    if args.block_size is not None and args.block_size < args.batch_size:
        raise CliError(f"--block-size: must be an int >= --batch-size ({args.batch_size}), got {args.block_size}")


class RayRecords:
    """The stream the Ray job writes its records to: each error gets the ``line N: ...`` form of
    every other record, and each record goes to :meth:`OutputFile.write` (or stdout)."""

    def __init__(self, output: Optional[OutputFile], stdout: TextIO) -> None:
        self.output, self.stdout = output, stdout

    def write(self, text: str) -> int:
        records = [json.loads(line) for line in text.splitlines()]
        for record in records:
            if record.get("error"):
                record["error"] = error_text(record["line"], record["error"])
        payload = "".join(json.dumps(r) + "\n" for r in records)
        if self.output is not None:
            self.output.write(payload, len(records))
        else:
            self.stdout.write(payload)
        return len(text)

    def flush(self) -> None:
        pass


def run_on_ray(args: argparse.Namespace, fields: dict, output: Optional[OutputFile], stdout: TextIO) -> int:
    """The JSONL job on Ray: a block of ``--block-size`` rows per Ray call (default: the
    library's, a few batches, so the running batch refills from the block's waiting rows)."""
    try:
        from .distributed import run_jsonl_job
    except ImportError as exc:
        raise CliError(f"--ray: {exc}") from None
    if output is not None:
        output.open()
    code = run_jsonl_job(args.input, RayRecords(output, stdout), model=args.model, config=args.config,
                         overrides=fields, batch_size=args.batch_size, block_size=args.block_size,
                         refill_fraction=args.refill_fraction, device=args.device, address=args.ray_address)
    return code if args.strict else 0
