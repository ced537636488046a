"""Training curves: train and test bits/dim against optimiser steps, as a PNG."""

from __future__ import annotations

import io
from pathlib import Path

from pairflow.utils import atomic_write_bytes

__all__ = ["plot_curves"]


def plot_curves(records: list[dict], path: str | Path, title: str | None = None) -> Path | None:
    """Plot ``metrics.jsonl`` records (``type`` train/test) to ``path``; None if nothing to plot.

    matplotlib is imported here, not at package import, and uses the Agg backend.
    """
    train = [(r["step"], r["bpd"]) for r in records if r.get("type") == "train"]
    test = [(r["step"], r["test_bpd"]) for r in records if r.get("type") == "test"]
    if not train and not test:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=False), label="train (batch)", alpha=0.6, linewidth=1)
    if test:
        ax.plot(*zip(*test, strict=False), "o-", label="test (fixed pairs)", linewidth=2)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("bits / dim")
    finite = [v for _, v in train + test if v == v and abs(v) != float("inf")]
    if finite:
        low = min(finite)
        ax.set_ylim(low - 0.05, min(max(finite), low + 4.0) + 0.05)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
