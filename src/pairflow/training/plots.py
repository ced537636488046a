"""Training curves: train and test bits/dim against optimiser steps, as a PNG.

A VAE's curves are its bound (``bpd_bound``, ``test_bpd_bound``), as are those of a flow
with variational dequantization; a GAN, without a
likelihood, gets its discriminator and generator losses (``d_loss``, ``g_loss``,
``test_d_loss``).
"""

from __future__ import annotations

import io
from pathlib import Path

from pairflow.utils import atomic_write_bytes

__all__ = ["plot_curves"]


def plot_curves(records: list[dict], path: str | Path, title: str | None = None) -> Path | None:
    """Plot ``metrics.jsonl`` records (``type`` train/test) to ``path``; None if nothing to plot.

    matplotlib is imported here, not at package import, and uses the Agg backend.
    """
    key, ylabel = "bpd", "bits / dim"
    if any("bpd_bound" in r or "test_bpd_bound" in r for r in records):
        # A VAE's negative ELBO, or a flow's with variational dequantization (Flow++).
        key, ylabel = "bpd_bound", "bits / dim, upper bound (ELBO or variational)"
    elif any("d_loss" in r or "test_d_loss" in r for r in records):
        return _plot_gan(records, path, title)
    train = [(r["step"], r[key]) for r in records if r.get("type") == "train" and key in r]
    test = [(r["step"], r["test_" + key]) for r in records if "test_" + key in r]
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
    ax.set_ylabel(ylabel)
    finite = [v for _, v in train + test if v == v and abs(v) != float("inf")]
    if finite:
        low = min(finite)
        ax.set_ylim(low - 0.05, min(max(finite), low + 4.0) + 0.05)
    return _finish(fig, ax, path, title)


def _plot_gan(records: list[dict], path: str | Path, title: str | None) -> Path | None:
    """A GAN's discriminator and generator losses (train) and discriminator loss (test)."""
    train = [r for r in records if r.get("type") == "train" and "d_loss" in r]
    test = [(r["step"], r["test_d_loss"]) for r in records if "test_d_loss" in r]
    if not train and not test:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    steps = [r["step"] for r in train]
    for key, label in (("d_loss", "discriminator (batch)"), ("g_loss", "generator (batch)")):
        if train:
            ax.plot(steps, [r.get(key) for r in train], label=label, alpha=0.6, linewidth=1)
    if test:
        ax.plot(*zip(*test, strict=False), "o-", label="discriminator (test pairs)", linewidth=2)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("hinge loss")
    return _finish(fig, ax, path, title)


def _finish(fig, ax, path: str | Path, title: str | None) -> Path:
    """Grid, legend and title on ``ax``, then write ``fig`` as a PNG atomically and close it."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
