"""Pieces shared by the commands that load a trained model (sample, evaluate)."""

from __future__ import annotations

import argparse
import sys

from pairflow.cli import UsageError
from pairflow.loading import dataset_of, layout_of  # noqa: F401  (sample, evaluate, the app)
from pairflow.options import (
    DEFAULT_DATASET,
    DEFAULT_LAYOUT,
    DatasetName,
    Layout,
    LoadPrecisionOption,
    choices,
)


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
        choices=choices(LoadPrecisionOption),
        default="auto",
        help="compute precision of the model's networks: auto (default: bf16 with AMX or a "
        "CUDA GPU, fp32 without AVX512-BF16, else the faster of the two, measured once and "
        "cached), fp32, bf16, or saved (the one it was trained in)",
    )


def load_model_from_args(args: argparse.Namespace):
    """(model, checkpoint dict, source path) from ``RUN`` or ``--pretrained``; UsageError else.

    Loads through :func:`pairflow.loading.load_trained` (a shipped file is checked against
    its recorded SHA-256) at ``--precision`` on ``--device``.
    """
    from pairflow.loading import load_trained

    if (args.run is None) == (args.pretrained is None):
        raise UsageError("give either a run folder / checkpoint or --pretrained NAME (one of them)")
    shipped = args.pretrained is not None
    try:
        loaded = load_trained(
            args.pretrained if shipped else args.run,
            device=args.device,
            precision=args.precision,
            shipped=shipped,
        )
    except ValueError as err:  # CheckpointError and ChecksumError are ValueErrors
        raise UsageError(str(err)) from err
    # --precision: the shipped weights were trained in bf16 or fp32; emulated bf16 on an AVX2
    # CPU is ~20x slower than fp32, native bf16 on an AVX512-BF16 CPU about 2x faster, for a
    # difference in bits/dim of ~1e-4: auto takes the faster one here. Once per machine and
    # model shape, say why; and always warn of emulated bf16.
    choice = loaded.precision
    if choice is not None and ("measured now" in choice.reason or choice.is_warning):
        print(f"precision: {choice.precision} ({choice.reason})", file=sys.stderr)
    return loaded.model, loaded.state, loaded.checkpoint if shipped else args.run


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


GUIDANCE_HELP = (
    "classifier-free guidance weight w (conditional flows trained with --set "
    "label_dropout=P): each label-reading part's output is pushed from the null label's to "
    "the label's, out_c + w (out_c - out_u); 0 is the conditional model, -1 the "
    "unconditional one, w > 0 follows the label more closely (default: off)"
)


def check_guidance_arg(guidance: float | None) -> None:
    """Refuse a ``--guidance`` that is not a finite number in range (None: off)."""
    from pairflow.flows.guidance import check_guidance

    if guidance is not None:
        try:
            check_guidance(guidance)
        except ValueError as err:
            raise UsageError(f"--{err}") from None


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
    parser.add_argument(
        "--dataset",
        choices=choices(DatasetName),
        default=DEFAULT_DATASET,
        help="which dataset: mnist (MNIST/raw/), fashion-mnist (FashionMNIST/raw/), cifar10 "
        "(cifar-10-batches-py/ or cifar-10-python.tar.gz) under the root (default mnist)",
    )
    if layout:
        parser.add_argument(
            "--layout",
            choices=choices(Layout),
            default=DEFAULT_LAYOUT,
            help="pair: two images side by side, label 10a+b (default); single: one image, "
            "its class",
        )


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: the torch CPU threads of a command that samples or evaluates."""
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's, one per core); on a shared machine also set "
        "OMP_WAIT_POLICY=PASSIVE",
    )


def check_threads(threads: int | None) -> None:
    """Refuse a ``--threads`` below 1 (exit 2) before any work."""
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be a positive number of threads, got {threads}")


def apply_threads(threads: int | None) -> None:
    """Use ``threads`` torch CPU threads (None: torch's default)."""
    if threads is not None:
        from pairflow.training.speed import set_threads

        set_threads(threads)
