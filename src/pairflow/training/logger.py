"""The run's metrics log: ``metrics.jsonl`` (one JSON record a line) and ``curves.png``, and
with ``--tensorboard`` the same records as TensorBoard events."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from pairflow.utils import atomic_write_text

__all__ = ["MetricsLogger", "read_metrics"]


def read_metrics(path: Path) -> list[dict]:
    """The records of a ``metrics.jsonl``.

    A torn last line (a crash or ``kill -9`` in the middle of an append) is the expected
    result of a crash: it is dropped with a warning. A bad line elsewhere raises.

    Raises:
        ValueError: naming the file and line of a malformed record that is not the last, or
            of bytes that are not text.
    """
    records: list[dict] = []
    raw = path.read_bytes()
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as err:  # JSON records are text: this is not a metrics log
        number = raw[: err.start].count(b"\n") + 1
        raise ValueError(
            f"{path}: line {number} is not text (byte 0x{raw[err.start]:02x} at offset "
            f"{err.start}), so the file is not a log of JSON records; move it aside to go on "
            "without the records it held"
        ) from err
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines):
                warnings.warn(
                    f"{path}: line {number} is torn (a crash during an append); dropped",
                    stacklevel=2,
                )
                break
            raise ValueError(f"{path}: line {number} is not a JSON record ({err})") from err
    return records


class MetricsLogger:
    """Rank-0 writer of metrics.jsonl and curves.png (a no-op on other ranks).

    Arguments:
        out: the run folder.
        enabled: whether this process writes (rank 0).

    ``tensorboard``: a :class:`~pairflow.training.tensorboard.TensorBoardLog` that gets every
    record and image too, or None.
    """

    def __init__(self, out: Path, enabled: bool):
        self.path = out / "metrics.jsonl"
        self.enabled = enabled
        self.records: list[dict] = []
        self.tensorboard = None
        if enabled and self.path.exists():
            self.records = read_metrics(self.path)

    def truncate_after(self, step: int) -> None:
        """On resume, forget records logged after the checkpoint's step."""
        self.records = [r for r in self.records if r.get("step", 0) <= step]
        if self.enabled:
            text = "".join(json.dumps(r) + "\n" for r in self.records)
            atomic_write_text(self.path, text)

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        self.records.append(record)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            self.tensorboard.scalars(record)

    def image(self, tag: str, path: Path, step: int) -> None:
        """An image file the run wrote (a sample grid), for TensorBoard when it logs."""
        if self.enabled and self.tensorboard is not None:
            self.tensorboard.image(tag, path, step)

    def close(self) -> None:
        """Close the TensorBoard writer, if any (metrics.jsonl is closed after each record)."""
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None

    def plot(self, path: Path) -> None:
        if not self.enabled:
            return
        from pairflow.training.plots import plot_curves

        plot_curves(self.records, path)
