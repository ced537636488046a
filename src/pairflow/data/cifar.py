"""CIFAR-10 on disk: the pickled Python batches, from their directory or straight from the archive.

The layout is torchvision's: ``<root>/cifar-10-batches-py/`` holds ``data_batch_1`` ..
``data_batch_5`` (10,000 training images each), ``test_batch`` (10,000 test images) and
``batches.meta``, as extracted from ``<root>/cifar-10-python.tar.gz``. When the directory is
absent the archive itself is read (no extraction needed). Each batch is a pickled dict:
``data`` a uint8 array (N, 3072) whose rows are one 32x32 image as three 1024-byte planes
R, G, B (each row-major), ``labels`` a list of N ints 0..9, ``batch_label`` and
``filenames``. The batches were pickled by Python 2, so their keys read as bytes
(``b"data"``) or, with ``encoding="latin1"``, as str: both are accepted.

Pickles can run code when loaded, so batches are read with an unpickler that admits only
what CIFAR-10's batches hold (dicts, lists, strings, numbers and numpy arrays): anything else
is refused as a format error rather than executed.

References:
    Krizhevsky. Learning Multiple Layers of Features from Tiny Images. Tech. report, 2009.
    https://www.cs.toronto.edu/~kriz/cifar.html (section "Dataset layout")
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pairflow.data.idx import MNISTFormatError
from pairflow.data.mnist import ENV_VAR, resolve_root
from pairflow.utils import atomic_write_bytes

__all__ = [
    "CIFAR10_ARCHIVE",
    "CIFAR10_CLASSES",
    "CIFAR10_FOLDER",
    "CIFAR10_TRAIN_BATCHES",
    "CIFAR10_TEST_BATCH",
    "CIFARFormatError",
    "CIFARNotFoundError",
    "extract_cifar10",
    "read_cifar10",
]

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
CIFAR10_META = "batches.meta"
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_ROW = 3 * 32 * 32

# What CIFAR-10's pickles may reference: numpy's array reconstruction, nothing else
# (_codecs.encode and bytes: how protocol 2 spells a Python 3 bytes object, non-empty and
# empty, as in batches rewritten by Python 3; pure functions).
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("__builtin__", "bytes"),
    ("builtins", "bytes"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"),
    ("__builtin__", "object"),
    ("builtins", "object"),
}


class CIFARFormatError(MNISTFormatError):
    """A CIFAR-10 file exists but is not what it should be (not a batch, bad shape, ...)."""


class CIFARNotFoundError(FileNotFoundError):
    """Neither ``cifar-10-batches-py/`` nor the archive is in the root; says what to do."""


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing {module}.{name}: a CIFAR-10 batch holds only numpy arrays, "
                "lists, strings and numbers"
            )
        return super().find_class(module, name)


def _str_keys(obj: dict) -> dict[str, Any]:
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _unpickle(data: bytes, where: str) -> dict[str, Any]:
    try:
        obj = _BatchUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise CIFARFormatError(
            where, f"not a CIFAR-10 batch ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(obj, dict):
        raise CIFARFormatError(where, f"not a CIFAR-10 batch: a pickled {type(obj).__name__}")
    return _str_keys(obj)


def _parse_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(data, where)
    missing = [key for key in ("data", "labels") if key not in batch]
    if missing:
        raise CIFARFormatError(where, f"not a CIFAR-10 batch: no {missing} (keys {sorted(batch)})")
    images = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"])
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != _ROW:
        raise CIFARFormatError(
            where,
            f"data must be uint8 of shape (N, 3072) (32x32 R, G, B planes), got "
            f"{images.dtype} of shape {images.shape}",
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise CIFARFormatError(
            where, f"{labels.size} labels for {len(images)} images (must be one per image)"
        )
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        bad = int(np.argmax((labels < 0) | (labels > 9)))
        raise CIFARFormatError(where, f"label {int(labels[bad])} at index {bad} is outside 0..9")
    return images, labels.astype(np.int64)


class _Source:
    """The batches directory, or the archive when there is no directory."""

    def __init__(self, root: Path) -> None:
        self.directory = root / CIFAR10_FOLDER
        self.archive = root / CIFAR10_ARCHIVE
        if self.directory.is_dir():
            self.tar = None
        elif self.archive.is_file():
            try:
                self.tar = tarfile.open(self.archive, "r:gz")
            except (tarfile.TarError, OSError, EOFError) as err:
                raise CIFARFormatError(
                    self.archive,
                    f"cannot open the archive ({err}); it is truncated or "
                    "corrupt, delete it and download it again",
                ) from err
        else:
            raise CIFARNotFoundError(
                f"CIFAR-10 not found in {root}: neither {self.directory}/ nor {self.archive}. "
                f"To fetch it there, use download=True (CLI: --download); or point the root "
                f"at an existing copy (the directory containing {CIFAR10_FOLDER}/ or "
                f"{CIFAR10_ARCHIVE}) with the root argument, --root / --data-dir, or the "
                f"{ENV_VAR} environment variable."
            )

    def read(self, name: str) -> tuple[bytes, str]:
        if self.tar is None:
            path = self.directory / name
            if not path.is_file():
                raise CIFARFormatError(path, f"missing: {self.directory} has no {name}")
            return path.read_bytes(), str(path)
        where = f"{self.archive}:{CIFAR10_FOLDER}/{name}"
        try:
            member = self.tar.extractfile(f"{CIFAR10_FOLDER}/{name}")
            if member is None:
                raise KeyError(name)
            return member.read(), where
        except KeyError as err:
            raise CIFARFormatError(
                self.archive, f"the archive has no {CIFAR10_FOLDER}/{name}"
            ) from err
        except (tarfile.TarError, OSError, EOFError) as err:
            raise CIFARFormatError(
                self.archive, f"cannot read {name} ({err}); the archive is truncated or corrupt"
            ) from err

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()


def read_cifar10(
    root: str | os.PathLike | None = None, train: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one CIFAR-10 split from ``<root>/cifar-10-batches-py/`` or the archive in ``root``.

    Arguments:
        root: the data root (see :func:`pairflow.data.resolve_root`).
        train: the five training batches (50,000 images) if ``True``, else the test batch
            (10,000).

    Returns:
        ``(images, labels)``: images a uint8 tensor (N, 3, 32, 32), values 0..255, channels
        R, G, B; labels an int64 tensor (N,) with values 0..9 (:data:`CIFAR10_CLASSES`).

    Raises:
        CIFARNotFoundError: neither the directory nor the archive is there.
        CIFARFormatError: a batch is missing or is not a CIFAR-10 batch, or the split's
            batches hold no images.

    Example:
        >>> images, labels = read_cifar10("data", train=False)  # doctest: +SKIP
        >>> images.shape  # doctest: +SKIP
        torch.Size([10000, 3, 32, 32])
    """
    source = _Source(resolve_root(root))
    try:
        names = CIFAR10_TRAIN_BATCHES if train else (CIFAR10_TEST_BATCH,)
        parts = [_parse_batch(*source.read(name)) for name in names]
    finally:
        source.close()
    if not sum(len(p[0]) for p in parts):
        split = "train" if train else "test"
        where = source.archive if source.tar is not None else source.directory
        raise CIFARFormatError(
            where,
            f"{', '.join(names)} {'holds' if len(names) == 1 else 'hold'} 0 images: valid "
            f"CIFAR-10 batches, but the {split} split needs images",
        )
    images = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)  # R, G, B planes
    labels = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(images.copy()), torch.from_numpy(labels)


def read_cifar10_classes(root: str | os.PathLike | None = None) -> tuple[str, ...]:
    """The class names from ``batches.meta`` (``label_names``)."""
    source = _Source(resolve_root(root))
    try:
        data, where = source.read(CIFAR10_META)
    finally:
        source.close()
    meta = _unpickle(data, where)
    names = meta.get("label_names")
    if not isinstance(names, list) or len(names) != 10:
        raise CIFARFormatError(where, f"label_names must be a list of 10 names, got {names!r}")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def extract_cifar10(root: str | os.PathLike | None = None) -> Path:
    """Write the batches of ``<root>/cifar-10-python.tar.gz`` into ``cifar-10-batches-py/``.

    Only the known batch files are written (never paths the archive names otherwise), each
    atomically. Used when a broken directory must be repaired from a fresh archive.

    Returns:
        The batches directory.
    """
    root = resolve_root(root)
    archive = root / CIFAR10_ARCHIVE
    directory = root / CIFAR10_FOLDER
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for name in (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH, CIFAR10_META):
                member = tar.extractfile(f"{CIFAR10_FOLDER}/{name}")
                if member is None:
                    raise KeyError(name)
                atomic_write_bytes(directory / name, member.read())
    except KeyError as err:
        raise CIFARFormatError(archive, f"the archive has no {CIFAR10_FOLDER}/{err}") from err
    except (tarfile.TarError, OSError, EOFError) as err:
        raise CIFARFormatError(archive, f"cannot extract ({err}); truncated or corrupt") from err
    return directory
