"""What is in a data root: per-split counts, class and pair-label histograms, pixel statistics."""

from __future__ import annotations

import os
from typing import Any

import torch

from pairflow.data.mnist import MNIST_FILES, find_mnist_file, resolve_root
from pairflow.data.paired import PairedDataset

__all__ = ["summary"]


def _files(spec, root) -> dict[str, str]:
    if spec.name == "cifar10":
        from pairflow.data.cifar import CIFAR10_ARCHIVE, CIFAR10_FOLDER

        directory = root / CIFAR10_FOLDER
        source = directory if directory.is_dir() else root / CIFAR10_ARCHIVE
        return {CIFAR10_FOLDER: str(source)}
    folder = spec.folder.split("/")[0]
    return {name: str(find_mnist_file(root, name, folder)) for name in MNIST_FILES.values()}


def summary(
    root: str | os.PathLike | None = None,
    num_pairs: int | None = None,
    seed: int = 0,
    dataset: str = "mnist",
) -> dict[str, Any]:
    """Read both splits of ``dataset`` under ``root`` and describe them (``pairflow data``).

    Arguments:
        root: data root (see :func:`pairflow.data.resolve_root`).
        num_pairs: pairs drawn per split for the pair-label histogram; default the split size.
        seed: pairing seed (epoch 0).
        dataset: ``"mnist"``, ``"fashion-mnist"`` or ``"cifar10"``.

    Returns:
        A JSON-ready dict: ``dataset``, ``classes`` (10 names), ``image_shape`` (of one
        image, C, H, W), ``root``, ``files`` (name -> path read), and ``splits`` with, for
        ``"train"`` and ``"test"``: ``images`` (count), ``digit_counts`` (10 ints, per class),
        ``pixel_mean`` and ``pixel_std`` (on the 0..1 scale, over all channels),
        ``channel_mean`` and ``channel_std`` (one per channel), and ``pairs``: ``num_pairs``,
        ``seed`` and ``counts`` (10x10 list, [left][right]).

    Raises:
        MNISTNotFoundError, MNISTFormatError: as :func:`pairflow.data.read_mnist`
            (CIFARNotFoundError, CIFARFormatError for CIFAR-10).

    Example:
        >>> summary("/work/shared/data")["splits"]["train"]["images"]  # doctest: +SKIP
        60000
    """
    from pairflow.data.datasets import get_dataset

    spec = get_dataset(dataset)
    root = resolve_root(root)
    result: dict[str, Any] = {
        "dataset": spec.name,
        "classes": list(spec.classes),
        "image_shape": list(spec.image_shape("single")),
        "root": str(root),
        "files": _files(spec, root),
        "splits": {},
    }
    for split in ("train", "test"):
        images, labels = spec.read(root, split == "train")
        # Exact pixel statistics from the 256-bin histogram (no float copy of the images).
        hist = torch.bincount(images.reshape(-1), minlength=256).to(torch.float64)
        values = torch.arange(256, dtype=torch.float64) / 255
        mean = float((hist * values).sum() / hist.sum())
        std = float(((hist * (values - mean) ** 2).sum() / hist.sum()).sqrt())
        per_channel = images.reshape(len(images), spec.channels, -1).transpose(0, 1)
        channel_mean, channel_std = [], []
        for channel in per_channel:  # (N, H*W) of one channel
            h = torch.bincount(channel.reshape(-1), minlength=256).to(torch.float64)
            m = float((h * values).sum() / h.sum())
            channel_mean.append(m)
            channel_std.append(float(((h * (values - m) ** 2).sum() / h.sum()).sqrt()))
        paired = PairedDataset(
            images, labels, train=split == "train", num_pairs=num_pairs, seed=seed
        )
        result["splits"][split] = {
            "images": len(images),
            "digit_counts": torch.bincount(labels, minlength=10).tolist(),
            "pixel_mean": mean,
            "pixel_std": std,
            "channel_mean": channel_mean,
            "channel_std": channel_std,
            "pairs": {
                "num_pairs": len(paired),
                "seed": seed,
                "counts": paired.pair_label_counts().tolist(),
            },
        }
    return result
