"""``pairflow evaluate``: test bits/dim of a trained or shipped flow, as JSON."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pairflow.cli import UsageError
from pairflow.commands._common import add_model_arguments, load_model_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--split", default="test", help="test (default) or train")
    parser.add_argument("--data-dir", help="MNIST root (default $PAIRFLOW_DATA or ./data)")
    parser.add_argument("--num-pairs", type=int, help="evaluate only the first N pairs")
    parser.add_argument(
        "--draws", type=int, default=1, help="dequantisation draws averaged per pair (default 1)"
    )
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--out", help="JSON file (default: RUN/eval_SPLIT.json, or stdout only)")


def run(args: argparse.Namespace) -> int:
    from pairflow.data import PairedMNIST, resolve_root
    from pairflow.training import evaluate_bpd

    if args.split not in ("test", "train"):
        raise UsageError(f"unknown --split {args.split!r}; valid: test, train")
    if args.draws < 1 or args.batch_size < 1:
        raise UsageError("--draws and --batch-size must be >= 1")
    if args.num_pairs is not None and args.num_pairs < 1:
        raise UsageError(f"--num-pairs must be >= 1, got {args.num_pairs}")
    model, state, source = load_model_from_args(args)
    try:
        dataset = PairedMNIST(
            resolve_root(args.data_dir), train=args.split == "test", num_pairs=args.num_pairs
        )
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from err
    device = next(model.parameters()).device
    conditional = bool(state["model_config"].get("conditional", False))
    start = time.perf_counter()
    result = evaluate_bpd(
        model,
        dataset,
        batch_size=args.batch_size,
        device=device,
        draws=args.draws,
        conditional=conditional,
    )
    report = {
        "source": str(source),
        "preset": state["model_config"].get("preset"),
        "conditional": conditional,
        "split": args.split,
        "bits_per_dim": result["bpd"],
        "bits_per_dim_stderr": result["bpd_stderr"],
        "num_pairs": result["num_pairs"],
        "dequantization_draws": result["draws"],
        "seconds": time.perf_counter() - start,
        "step": state.get("step"),
    }
    text = json.dumps(report, indent=2)
    print(text)
    out = args.out
    if out is None and args.run is not None and Path(args.run).is_dir():
        out = Path(args.run) / f"eval_{args.split}.json"
    if out is not None:
        from pairflow.utils import atomic_write_text

        atomic_write_text(out, text + "\n")
        print(f"wrote {out}")
    return 0
