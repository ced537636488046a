"""What is in a data root: per-split counts, digit and pair-label histograms, pixel statistics."""

from __future__ import annotations

import os
from typing import Any

import torch

from pairflow.data.mnist import MNIST_FILES, find_mnist_file, read_mnist, resolve_root
from pairflow.data.paired import PairedDataset

__all__ = ["summary"]


def summary(
    root: str | os.PathLike | None = None, num_pairs: int | None = None, seed: int = 0
) -> dict[str, Any]:
    """Read both MNIST splits under ``root`` and describe them (used by ``pairflow data``).

    Arguments:
        root: data root (see :func:`pairflow.data.resolve_root`).
        num_pairs: pairs drawn per split for the pair-label histogram; default the split size.
        seed: pairing seed (epoch 0).

    Returns:
        A JSON-ready dict: ``root``, ``files`` (name -> path read), and ``splits`` with, for
        ``"train"`` and ``"test"``: ``images`` (count), ``digit_counts`` (10 ints),
        ``pixel_mean`` and ``pixel_std`` (on the 0..1 scale), and ``pairs``: ``num_pairs``,
        ``seed`` and ``counts`` (10x10 list, [left][right]).

    Raises:
        MNISTNotFoundError, MNISTFormatError: as :func:`pairflow.data.read_mnist`.

    Example:
        >>> summary("/work/shared/data")["splits"]["train"]["images"]  # doctest: +SKIP
        60000
    """
    root = resolve_root(root)
    result: dict[str, Any] = {"root": str(root), "files": {}, "splits": {}}
    for name in MNIST_FILES.values():
        result["files"][name] = str(find_mnist_file(root, name))
    for split in ("train", "test"):
        images, labels = read_mnist(root, train=split == "train")
        # Exact pixel statistics from the 256-bin histogram (no float copy of the images).
        hist = torch.bincount(images.reshape(-1), minlength=256).to(torch.float64)
        values = torch.arange(256, dtype=torch.float64) / 255
        mean = float((hist * values).sum() / hist.sum())
        std = float(((hist * (values - mean) ** 2).sum() / hist.sum()).sqrt())
        paired = PairedDataset(
            images, labels, train=split == "train", num_pairs=num_pairs, seed=seed
        )
        result["splits"][split] = {
            "images": len(images),
            "digit_counts": torch.bincount(labels, minlength=10).tolist(),
            "pixel_mean": mean,
            "pixel_std": std,
            "pairs": {
                "num_pairs": len(paired),
                "seed": seed,
                "counts": paired.pair_label_counts().tolist(),
            },
        }
    return result
