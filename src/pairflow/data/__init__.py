"""MNIST digit pairs: reading, downloading, pairing and batching.

Public API:

- :func:`resolve_root`, :func:`read_mnist`, :func:`read_idx`, :func:`write_idx`,
  :class:`MNISTFormatError`, :class:`MNISTNotFoundError` (files on disk);
- :func:`download_mnist`, :class:`MNISTDownloadError` (fetching the files);
- :class:`PairedMNIST`, :class:`PairedDataset` (paired datasets), :class:`PairLoader`;
- :func:`summary`, :func:`write_preview` (what ``pairflow data`` prints and draws);
- :func:`make_synthetic_mnist` (digit-like synthetic files for tests and smoke runs);
- ``TorchvisionPairedMNIST`` (a ``torchvision.datasets.MNIST`` subclass), only when
  torchvision is installed: ``from pairflow.data import TorchvisionPairedMNIST``.

Pillow is imported only when a preview is drawn.
"""

from __future__ import annotations

from typing import Any

from pairflow.data.download import (
    MNIST_MIRRORS,
    MNIST_RESOURCES,
    MNISTDownloadError,
    download_mnist,
)
from pairflow.data.idx import MNISTFormatError, read_idx, write_idx
from pairflow.data.loader import PairLoader
from pairflow.data.mnist import MNISTNotFoundError, raw_dir, read_mnist, resolve_root
from pairflow.data.paired import PairedDataset, PairedMNIST, PairingMixin
from pairflow.data.preview import write_preview
from pairflow.data.summary import summary
from pairflow.data.synthetic import make_synthetic_mnist

__all__ = [
    "MNIST_MIRRORS",
    "MNIST_RESOURCES",
    "MNISTDownloadError",
    "MNISTFormatError",
    "MNISTNotFoundError",
    "PairLoader",
    "PairedDataset",
    "PairedMNIST",
    "PairingMixin",
    "download_mnist",
    "make_synthetic_mnist",
    "raw_dir",
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
