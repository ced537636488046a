"""Pieces shared by the commands that load a trained model (sample, evaluate)."""

from __future__ import annotations

import argparse
import sys

from pairflow.cli import UsageError


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", nargs="?", help="run folder (uses best.pt) or checkpoint file")
    parser.add_argument(
        "--pretrained",
        metavar="NAME",
        help="use shipped weights instead of a run (see --list-pretrained)",
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "saved"),
        default="auto",
        help="compute precision of the model's networks: auto (default: bf16 with AMX or a "
        "CUDA GPU, fp32 without AVX512-BF16, else the faster of the two, measured once and "
        "cached), fp32, bf16, or saved (the one it was trained in)",
    )


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
    # add_model_arguments' --precision. The shipped weights were trained in bf16 or fp32;
    # emulated bf16 on an AVX2 CPU is ~20x slower than fp32, native bf16 on an AVX512-BF16 CPU
    # about 2x faster, for a difference in bits/dim of ~1e-4: auto takes the faster one here.
    from pairflow.precision import choose_model_precision

    choice = choose_model_precision(model, args.precision)
    # once per machine and model shape, say why; and always warn of emulated bf16
    if "measured now" in choice.reason or choice.is_warning:
        print(f"precision: {choice.precision} ({choice.reason})", file=sys.stderr)
    model.precision = choice.precision
    return model, state, path


def check_output_path(out, folder: bool = False, flag: str = "--out") -> None:
    """Refuse an output path that cannot be written, before any work is done.

    Arguments:
        out: the file to write (or, with ``folder``, the folder to fill).
        folder: ``out`` is a folder of outputs rather than one file.
        flag: the option's name in the message.

    Raises:
        UsageError: a parent is a file, ``out`` is of the wrong kind (a folder where a file goes,
            or the reverse), or the nearest existing folder does not take new files.
    """
    import tempfile
    from pathlib import Path

    out = Path(out)
    if out.exists() and out.is_dir() != folder:
        kind = "a folder" if out.is_dir() else "a file"
        raise UsageError(f"{flag} {out} is {kind}; give {'a folder' if folder else 'a file'}")
    existing = out if folder and out.is_dir() else out.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{flag} {out}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise UsageError(f"{flag} {out}: cannot write in {existing} ({err.strerror})") from err


def check_temperature(temperature: float | None) -> None:
    """Refuse a ``--temperature`` that is not a finite number > 0 (None: the default)."""
    import math

    if temperature is not None and not (math.isfinite(temperature) and temperature > 0):
        raise UsageError(f"--temperature must be > 0 and finite, got {temperature}")


def dataset_of(state: dict) -> tuple[str, str]:
    """``(dataset, layout)`` a checkpoint's model was trained on (MNIST pairs if not recorded)."""
    config = state.get("train_config") or {}
    return config.get("dataset") or "mnist", config.get("layout") or "pair"


def layout_of(state: dict) -> str:
    """``"pair"`` or ``"single"``: the images a checkpoint's model draws and the labels it
    takes (pair labels 0..99, or class labels 0..9); the flow config says, else the run's."""
    return state["model_config"].get("layout") or dataset_of(state)[1]


def data_usage_error(err: Exception, root, download_flag: str | None = None) -> UsageError:
    """The CLI's message for a data-root error: the library's advice, in flags.

    Arguments:
        err: what reading the data root raised (``MNISTNotFoundError`` gets rephrased,
            anything else keeps its message).
        root: the data root that was resolved.
        download_flag: how this command downloads (e.g. ``"add --download"``); ``None``:
            it does not, so the message points at ``pairflow data --download``.
    """
    from pairflow.data import MNISTNotFoundError

    if not isinstance(err, MNISTNotFoundError) or err.missing is None:
        return UsageError(str(err))
    title, folder = err.title, err.folder
    fetch = (
        f"to fetch the four {title} files there, {download_flag}"
        if download_flag
        else f"to fetch the four {title} files there, run `pairflow data --root {root} --download`"
    )
    return UsageError(
        f"{title} file not found: {err.missing}[.gz].{err.hint} The data root is --data-dir, "
        f"else $PAIRFLOW_DATA, else ./data (here: {root}); {fetch}, or point --data-dir or "
        f"$PAIRFLOW_DATA at an existing copy (the directory containing {folder}/raw/)."
    )


def add_dataset_arguments(parser: argparse.ArgumentParser, layout: bool = True) -> None:
    """``--dataset`` (and ``--layout``), shared by every command that reads a dataset."""
    from pairflow.data.datasets import DATASETS, LAYOUTS

    parser.add_argument(
        "--dataset",
        choices=tuple(DATASETS),
        default="mnist",
        help="which dataset: mnist (MNIST/raw/), fashion-mnist (FashionMNIST/raw/), cifar10 "
        "(cifar-10-batches-py/ or cifar-10-python.tar.gz) under the root (default mnist)",
    )
    if layout:
        parser.add_argument(
            "--layout",
            choices=LAYOUTS,
            default="pair",
            help="pair: two images side by side, label 10a+b (default); single: one image, "
            "its class",
        )
