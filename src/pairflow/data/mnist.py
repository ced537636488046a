"""MNIST on disk: where the root is, which files it holds, and reading them into tensors.

The layout is torchvision's, ``<root>/MNIST/raw/<name>[.gz]``, so an existing torchvision
download is reused as is. Nothing is cached on disk: the IDX files are parsed with
``numpy.frombuffer`` straight into one uint8 tensor per split (about 0.3 s for the training set).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from pairflow.data.idx import MNISTFormatError, read_idx

__all__ = [
    "MNISTNotFoundError",
    "MNIST_FILES",
    "IMAGE_SIZE",
    "resolve_root",
    "raw_dir",
    "find_mnist_file",
    "read_mnist",
]

ENV_VAR = "PAIRFLOW_DATA"
IMAGE_SIZE = (28, 28)

# (split, kind) -> file name without .gz, as on the public mirrors.
MNIST_FILES: dict[tuple[str, str], str] = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
_MAGIC = {"images": 0x00000803, "labels": 0x00000801}


class MNISTNotFoundError(FileNotFoundError):
    """An MNIST file is missing from the root; the message says which and what to do.

    ``missing`` is the path looked for (without ``.gz``), ``hint`` where the file was found
    misplaced (or ``""``), ``title`` and ``folder`` the data set's name and folder: the
    command line rephrases the advice in flags from them.
    """

    def __init__(
        self,
        message: str,
        missing: Path | None = None,
        hint: str = "",
        title: str = "MNIST",
        folder: str = "MNIST",
    ) -> None:
        super().__init__(message)
        self.missing = missing
        self.hint = hint
        self.title = title  # the data set's name, e.g. "Fashion-MNIST"
        self.folder = folder  # its folder under the root, e.g. "FashionMNIST"


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``$PAIRFLOW_DATA``, else ``./data``.

    The root is the directory that contains ``MNIST/raw/`` (torchvision's convention).

    Arguments:
        root: an explicit root, or ``None``.

    Returns:
        The root as a ``Path`` (``~`` expanded; the directory need not exist yet).

    Example:
        >>> resolve_root("/data/torchvision")
        PosixPath('/data/torchvision')
    """
    if root is None or str(root) == "":
        root = os.environ.get(ENV_VAR) or "data"
    return Path(root).expanduser()


def raw_dir(root: str | os.PathLike | None = None, folder: str = "MNIST") -> Path:
    """``<root>/MNIST/raw`` (or ``<root>/<folder>/raw``), where the four IDX files live.

    ``folder`` is torchvision's class name: ``"MNIST"``, ``"FashionMNIST"``.
    """
    return resolve_root(root) / folder / "raw"


def _split(train: bool) -> str:
    return "train" if train else "test"


def find_mnist_file(root: str | os.PathLike | None, name: str, folder: str = "MNIST") -> Path:
    """The path of IDX file ``name`` under ``root``: the raw file if present, else ``.gz``.

    ``folder`` is ``"MNIST"`` or ``"FashionMNIST"`` (torchvision's layout, same file names).

    Raises:
        MNISTNotFoundError: neither exists; the message lists where it looked and what to do.
    """
    directory = raw_dir(root, folder)
    title = {"FashionMNIST": "Fashion-MNIST"}.get(folder, folder)
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_dir():
            raise MNISTFormatError(
                candidate, "is a directory, not an MNIST file; remove it and put the file there"
            )
    hint = ""
    root_path = resolve_root(root)
    for misplaced in (root_path, root_path / "raw"):
        if (misplaced / f"{name}.gz").is_file() or (misplaced / name).is_file():
            hint = (
                f" Found it in {misplaced} instead: the root is the directory that contains "
                f"{folder}/raw/, so move the files to {directory}."
            )
    raise MNISTNotFoundError(
        f"{title} file not found: {directory / name}[.gz].{hint} To fetch the four {title} "
        f"files there, use download=True (CLI: --download); or point the root at an existing "
        f"copy (the directory containing {folder}/raw/) with the root argument, --root / "
        f"--data-dir, or the {ENV_VAR} environment variable.",
        missing=directory / name,
        hint=hint,
        title=title,
        folder=folder,
    )


def _read_checked(path: Path, kind: str) -> np.ndarray:
    array = read_idx(path)
    # read_idx accepted the header; check it is the right kind of IDX file for MNIST.
    expected_ndim = 3 if kind == "images" else 1
    if array.dtype != np.uint8 or array.ndim != expected_ndim:
        magic = (0x08 if array.dtype == np.uint8 else 0) << 8 | array.ndim
        raise MNISTFormatError(
            path,
            f"wrong magic number 0x{magic:08X} (expected 0x{_MAGIC[kind]:08X} for MNIST "
            f"{kind}: uint8 with {expected_ndim} dimension(s)); got {array.dtype} of shape "
            f"{array.shape}. Is this the {'labels' if kind == 'images' else 'images'} file?",
        )
    return array


def read_mnist(
    root: str | os.PathLike | None = None, train: bool = True, folder: str = "MNIST"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one MNIST split from ``<root>/MNIST/raw/`` (raw or gzipped IDX files).

    Arguments:
        root: the data root (see :func:`resolve_root`).
        train: the 60,000-image training split if ``True``, else the 10,000-image test split.
        folder: ``"MNIST"``, or ``"FashionMNIST"`` for Fashion-MNIST (the same IDX format
            and file names under ``<root>/FashionMNIST/raw/``).

    Returns:
        ``(images, labels)``: images a uint8 tensor (N, 28, 28) with values 0..255 (ink is
        bright), labels an int64 tensor (N,) with values 0..9.

    Raises:
        MNISTNotFoundError: a file is missing (the message says which and what to do).
        MNISTFormatError: a file is corrupt: wrong magic number, truncated, image/label count
            mismatch, images not 28x28, labels outside 0..9.

    Example:
        >>> images, labels = read_mnist("/work/shared/data", train=False)  # doctest: +SKIP
        >>> images.shape, labels[:5].tolist()  # doctest: +SKIP
        (torch.Size([10000, 28, 28]), [7, 2, 1, 0, 4])
    """
    split = _split(train)
    image_path = find_mnist_file(root, MNIST_FILES[(split, "images")], folder)
    label_path = find_mnist_file(root, MNIST_FILES[(split, "labels")], folder)
    images = _read_checked(image_path, "images")
    labels = _read_checked(label_path, "labels")
    if tuple(images.shape[1:]) != IMAGE_SIZE:
        raise MNISTFormatError(
            image_path,
            f"images are {images.shape[1]}x{images.shape[2]}, {folder} images are 28x28",
        )
    if len(images) == 0:
        raise MNISTFormatError(
            image_path, f"holds 0 images: a valid IDX file, but the {split} split needs images"
        )
    if len(images) != len(labels):
        raise MNISTFormatError(
            label_path,
            f"image/label count mismatch: {len(labels)} labels but {image_path.name} holds "
            f"{len(images)} images",
        )
    if len(labels) and labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise MNISTFormatError(
            label_path, f"label {int(labels[bad])} at index {bad} is outside 0..9"
        )
    # np.frombuffer arrays are read-only views of the file's bytes: copy into torch-owned memory.
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))
