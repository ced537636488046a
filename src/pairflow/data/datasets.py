"""The datasets pairflow reads: MNIST, Fashion-MNIST and CIFAR-10, by name.

Each entry says where the files live under a data root (torchvision's layout, so an
existing torchvision download is reused), how to read a split into a uint8 tensor, how to
download it, and the image shape. Everything downstream (pairing, batching, models,
evaluation) takes the shape from here: a pair is two images side by side, ``(C, H, 2W)``,
labelled ``10 * left + right``; a single image is ``(C, H, W)``, labelled with its class.

========================  ============  =============  =====================================
name                      single        pair           files under the root
========================  ============  =============  =====================================
``mnist``                 1x28x28       1x28x56        ``MNIST/raw/`` (IDX, raw or .gz)
``fashion-mnist``         1x28x28       1x28x56        ``FashionMNIST/raw/`` (IDX, as MNIST)
``cifar10``               3x32x32       3x32x64        ``cifar-10-batches-py/`` or
                                                       ``cifar-10-python.tar.gz``
========================  ============  =============  =====================================

Example:
    >>> get_dataset("cifar10").image_shape("pair")
    (3, 32, 64)
    >>> get_dataset("fashion-mnist").classes[0]
    'T-shirt/top'
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from pairflow.data.cifar import CIFAR10_CLASSES, CIFAR10_FOLDER
from pairflow.options import Layout, choices

__all__ = ["DATASETS", "DatasetSpec", "LAYOUTS", "get_dataset", "check_layout"]

LAYOUTS = choices(Layout)
"""The layouts (``--layout``), from :data:`pairflow.options.Layout`."""

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: its name, image shape, classes and how to read and download it.

    Attributes:
        name: the name on the command line (``--dataset``) and in configs.
        title: the name in messages ("Fashion-MNIST").
        channels, height, width: the shape of one image.
        classes: the ten class names, index = label.
        folder: the directory under the root that holds the files.
        read: ``read(root, train) -> (images, labels)``: uint8 (N, H, W) for one channel or
            (N, C, H, W), and int64 (N,).
        download: ``download(root, verbose) -> Path``, fetching what is missing.
    """

    name: str
    title: str
    channels: int
    height: int
    width: int
    classes: tuple[str, ...]
    folder: str
    read: Callable[[Path, bool], tuple[torch.Tensor, torch.Tensor]]
    download: Callable[..., Path]

    def image_shape(self, layout: str = "pair") -> tuple[int, int, int]:
        """``(C, H, W)`` of one item: two images side by side (``"pair"``) or one (``"single"``)."""
        check_layout(layout)
        return (self.channels, self.height, self.width * (2 if layout == "pair" else 1))

    def dims(self, layout: str = "pair") -> int:
        """D = C x H x W of one item, the denominator of bits/dim."""
        c, h, w = self.image_shape(layout)
        return c * h * w

    def require_files(self, root: str | os.PathLike | None) -> None:
        """Raise the dataset's not-found error (which says what to do) if files are missing.

        A cheap check of presence, not of content (reading comes later).
        """
        if self.name == "cifar10":
            from pairflow.data.cifar import _Source

            _Source(self.location(root).parent).close()
            return
        from pairflow.data.mnist import MNIST_FILES, find_mnist_file

        for name in MNIST_FILES.values():
            find_mnist_file(root, name, self.folder.split("/")[0])

    def location(self, root: str | os.PathLike | None) -> Path:
        """Where this dataset's files are looked for under ``root``."""
        from pairflow.data.mnist import resolve_root

        return resolve_root(root) / self.folder


def check_layout(layout: str) -> str:
    """``layout`` if it is ``"pair"`` or ``"single"``; else a ValueError naming the valid ones."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    return layout


def _read_mnist(root: Path, train: bool):
    from pairflow.data.mnist import read_mnist

    return read_mnist(root, train=train)


def _read_fashion_mnist(root: Path, train: bool):
    from pairflow.data.mnist import read_mnist

    return read_mnist(root, train=train, folder="FashionMNIST")


def _read_cifar10(root: Path, train: bool):
    from pairflow.data.cifar import read_cifar10

    return read_cifar10(root, train=train)


def _download_mnist(root, verbose: bool = False) -> Path:
    from pairflow.data.download import download_mnist

    return download_mnist(root, verbose=verbose)


def _download_fashion_mnist(root, verbose: bool = False) -> Path:
    from pairflow.data.download import download_fashion_mnist

    return download_fashion_mnist(root, verbose=verbose)


def _download_cifar10(root, verbose: bool = False) -> Path:
    from pairflow.data.download import download_cifar10

    return download_cifar10(root, verbose=verbose)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "mnist", "MNIST", 1, 28, 28, MNIST_CLASSES, "MNIST/raw", _read_mnist, _download_mnist
        ),
        DatasetSpec(
            "fashion-mnist",
            "Fashion-MNIST",
            1,
            28,
            28,
            FASHION_MNIST_CLASSES,
            "FashionMNIST/raw",
            _read_fashion_mnist,
            _download_fashion_mnist,
        ),
        DatasetSpec(
            "cifar10",
            "CIFAR-10",
            3,
            32,
            32,
            CIFAR10_CLASSES,
            CIFAR10_FOLDER,
            _read_cifar10,
            _download_cifar10,
        ),
    )
}


def get_dataset(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` called ``name``; a ValueError naming the valid ones otherwise."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}") from None
