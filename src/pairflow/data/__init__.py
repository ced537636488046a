"""Image pairs (MNIST, Fashion-MNIST, CIFAR-10): reading, downloading, pairing and batching.

Public API:

- :data:`DATASETS`, :func:`get_dataset`, :class:`DatasetSpec` (the datasets by name: shape,
  classes, files, reader, downloader);
- :func:`resolve_root`, :func:`read_mnist`, :func:`read_cifar10`, :func:`read_idx`,
  :func:`write_idx`, :class:`MNISTFormatError`, :class:`MNISTNotFoundError`,
  :class:`CIFARFormatError`, :class:`CIFARNotFoundError` (files on disk);
- :func:`download_mnist`, :func:`download_fashion_mnist`, :func:`download_cifar10`,
  :class:`DownloadError` (also named :class:`MNISTDownloadError`) (fetching the files);
- :class:`PairedDataset` (``PairedDataset("cifar10", root, layout="pair"|"single")``, or
  tensors), :class:`PairedMNIST` (the MNIST case), :class:`PairLoader`;
- :func:`summary`, :func:`write_preview` (what ``pairflow data`` prints and draws);
- :func:`make_synthetic_mnist` (digit-like synthetic files for tests and smoke runs);
- ``TorchvisionPairedMNIST`` (a ``torchvision.datasets.MNIST`` subclass), only when
  torchvision is installed: ``from pairflow.data import TorchvisionPairedMNIST``.

Pillow is imported only when a preview is drawn.
"""

from __future__ import annotations

from typing import Any

from pairflow.data.cifar import CIFARFormatError, CIFARNotFoundError, read_cifar10
from pairflow.data.datasets import DATASETS, LAYOUTS, DatasetSpec, get_dataset
from pairflow.data.download import (
    CIFAR10_MD5,
    CIFAR10_URL,
    FASHION_MNIST_MIRRORS,
    FASHION_MNIST_RESOURCES,
    MNIST_MIRRORS,
    MNIST_RESOURCES,
    DownloadError,
    MNISTDownloadError,
    download_cifar10,
    download_fashion_mnist,
    download_mnist,
)
from pairflow.data.idx import MNISTFormatError, read_idx, write_idx
from pairflow.data.loader import PairLoader
from pairflow.data.mnist import MNISTNotFoundError, raw_dir, read_mnist, resolve_root
from pairflow.data.paired import PairedDataset, PairedMNIST, PairingMixin
from pairflow.data.preview import write_preview
from pairflow.data.summary import summary
from pairflow.data.synthetic import (
    make_synthetic_cifar10,
    make_synthetic_fashion_mnist,
    make_synthetic_mnist,
)

__all__ = [
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "CIFARFormatError",
    "CIFARNotFoundError",
    "DATASETS",
    "DatasetSpec",
    "DownloadError",
    "FASHION_MNIST_MIRRORS",
    "FASHION_MNIST_RESOURCES",
    "LAYOUTS",
    "MNIST_MIRRORS",
    "MNIST_RESOURCES",
    "MNISTDownloadError",
    "MNISTFormatError",
    "MNISTNotFoundError",
    "PairLoader",
    "PairedDataset",
    "PairedMNIST",
    "PairingMixin",
    "download_cifar10",
    "download_fashion_mnist",
    "download_mnist",
    "get_dataset",
    "make_synthetic_cifar10",
    "make_synthetic_fashion_mnist",
    "make_synthetic_mnist",
    "raw_dir",
    "read_cifar10",
    "read_idx",
    "read_mnist",
    "resolve_root",
    "summary",
    "write_idx",
    "write_preview",
]


def __getattr__(name: str) -> Any:
    if name == "TorchvisionPairedMNIST":  # imports torchvision: only on demand
        from pairflow.data.tvmnist import TorchvisionPairedMNIST

        return TorchvisionPairedMNIST
    raise AttributeError(f"module 'pairflow.data' has no attribute {name!r}")
