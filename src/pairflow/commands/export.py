"""``pairflow export``: a compact weights-only checkpoint (fp32, fp16 or int8 weights)."""

from __future__ import annotations

import argparse

from pairflow.cli import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run folder (uses best.pt) or checkpoint file")
    parser.add_argument("--out", required=True, help="the exported checkpoint file")
    parser.add_argument("--dtype", default="fp16", help="weights as fp32, fp16 (default), int8")


def run(args: argparse.Namespace) -> int:
    import os

    from pairflow.training import CheckpointError
    from pairflow.training.export import DTYPES, export_checkpoint

    if args.dtype not in DTYPES:
        raise UsageError(f"unknown --dtype {args.dtype!r}; valid: {', '.join(DTYPES)}")
    try:
        path = export_checkpoint(args.run, args.out, dtype=args.dtype)
    except CheckpointError as err:
        raise UsageError(str(err)) from err
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB, {args.dtype} weights)")
    return 0
