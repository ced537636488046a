"""TensorBoard event files of a training run (``--tensorboard``): ``RUN/tensorboard/``.

The same numbers as ``metrics.jsonl``, record by record, and each epoch's sample grid as an
image. A record's numeric fields become scalars tagged ``TYPE/FIELD`` (the test fields
without their ``test_`` prefix): ``train/loss``, ``train/bpd``, ``train/lr``,
``train/grad_norm``, ``train/pairs_per_s``, ``test/bpd``, ``test/bpd_stderr``, a GAN's
``train/d_loss`` ..., ``nonfinite/consecutive``. The grids are the image ``samples``.

``tensorboard`` is an optional dependency (``pip install "pairflow[tensorboard]"``); it is
imported only when a run asks for it, never with pairflow.

A resumed run writes a new event file into the same folder, starting with a purge at the
checkpoint's step + 1: TensorBoard then hides what the interrupted run logged after its last
checkpoint, as :meth:`~pairflow.training.logger.MetricsLogger.truncate_after` drops those
records from ``metrics.jsonl``, so both show one value per step.

Example:
    >>> log = TensorBoardLog(Path("runs/a"))  # doctest: +SKIP
    >>> log.scalars({"type": "train", "step": 20, "loss": 1.9, "lr": 1e-3})  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

__all__ = ["TensorBoardLog", "require_tensorboard", "scalar_tags", "FOLDER"]

FOLDER = "tensorboard"
"""The run folder's subfolder that holds the event files."""

# Bookkeeping fields of a record, not measurements.
_NOT_SCALARS = ("type", "step", "epoch", "time")


def require_tensorboard() -> None:
    """Check that the ``tensorboard`` package is installed (without importing it).

    Raises:
        ValueError: saying how to install it, when it is not.
    """
    if importlib.util.find_spec("tensorboard") is None:
        raise ValueError(
            "--tensorboard (config key tensorboard) needs the tensorboard package, which is "
            'not installed: pip install "pairflow[tensorboard]" (or pip install tensorboard), '
            "or train without it (metrics.jsonl and curves.png are always written)"
        )


def scalar_tags(record: dict) -> dict[str, float]:
    """The scalars TensorBoard gets of a ``metrics.jsonl`` record, by tag.

    Arguments:
        record: one record, with its ``type`` and ``step``.

    Returns:
        ``{tag: value}`` for every numeric field but the bookkeeping ones (flags such as
        ``interrupted`` are not numbers); none for a ``sync`` record (a check of the
        processes under ``torchrun``, not a measurement).

    Example:
        >>> scalar_tags({"type": "test", "step": 8, "epoch": 2, "test_bpd": 1.5, "time": 0.0})
        {'test/bpd': 1.5}
        >>> scalar_tags({"type": "train", "step": 8, "loss": 1.9, "interrupted": True})
        {'train/loss': 1.9}
        >>> scalar_tags({"type": "sync", "step": 8, "ranks": 2, "in_sync": True})
        {}
    """
    kind = str(record.get("type", "record"))
    if kind == "sync":
        return {}
    tags = {}
    for key, value in record.items():
        if key in _NOT_SCALARS or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        name = key.removeprefix("test_") if kind == "test" else key
        tags[f"{kind}/{name}"] = float(value)
    return tags


class TensorBoardLog:
    """Writer of a run's TensorBoard events into ``out/tensorboard/``.

    Arguments:
        out: the run folder.
        purge_step: on resume, the first step the run will log again (the checkpoint's step
            + 1): what earlier event files hold from there on is hidden.

    Raises:
        ValueError: the ``tensorboard`` package is not installed.
    """

    def __init__(self, out: Path, purge_step: int | None = None):
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(out) / FOLDER
        self.folder.mkdir(parents=True, exist_ok=True)
        _after_earlier_files(self.folder)
        self.writer = SummaryWriter(str(self.folder), purge_step=purge_step)

    def scalars(self, record: dict) -> None:
        """Write a ``metrics.jsonl`` record's scalars (see :func:`scalar_tags`) at its step."""
        step = int(record.get("step", 0))
        wall = record.get("time")
        for tag, value in scalar_tags(record).items():
            self.writer.add_scalar(tag, value, step, walltime=wall)
        self.writer.flush()  # on disk now: a crash or a diverged run keeps what it logged

    def image(self, tag: str, path: Path, step: int) -> None:
        """Write the image file ``path`` (a sample grid) under ``tag`` at ``step``."""
        import numpy as np
        from PIL import Image

        with Image.open(path) as picture:
            pixels = np.asarray(picture.convert("RGB"))  # (H, W, 3) uint8
        self.writer.add_image(tag, pixels, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _after_earlier_files(folder: Path) -> None:
    """Wait (at most a second) until a new event file's name sorts after the folder's others.

    TensorBoard reads a folder's event files in name order, and a name starts with the
    second it was made: a resume within the same second as the last file would otherwise
    be read first, and its purge would hide nothing.
    """
    seconds = []
    for path in folder.glob("events.out.tfevents.*"):
        field = path.name.split(".")[3]
        if field.isdigit():
            seconds.append(int(field))
    if seconds:
        wait = max(seconds) + 1 - time.time()
        if 0 < wait <= 1:  # more: a clock set back since; nothing to wait for
            time.sleep(wait)
