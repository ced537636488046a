"""Pieces shared by the commands that load a trained model (sample, evaluate)."""

from __future__ import annotations

import argparse

from pairflow.cli import UsageError


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", nargs="?", help="run folder (uses best.pt) or checkpoint file")
    parser.add_argument(
        "--pretrained",
        metavar="NAME",
        help="use shipped weights instead of a run (see --list-pretrained)",
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")


def load_model_from_args(args: argparse.Namespace):
    """(model, checkpoint dict, source path) from ``RUN`` or ``--pretrained``; UsageError else."""
    from pairflow.pretrained import pretrained_path
    from pairflow.training import CheckpointError, load_model
    from pairflow.utils import resolve_device

    if (args.run is None) == (args.pretrained is None):
        raise UsageError("give either a run folder / checkpoint or --pretrained NAME (one of them)")
    try:
        device = resolve_device(args.device)
        path = pretrained_path(args.pretrained) if args.pretrained else args.run
        model, state = load_model(path, map_location=device)
    except (ValueError, CheckpointError) as err:
        raise UsageError(str(err)) from err
    return model, state, path
