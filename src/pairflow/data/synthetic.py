"""Synthetic MNIST, Fashion-MNIST and CIFAR-10 files, for tests and offline smoke runs.

Each class 0..9 is drawn as a fixed stroke pattern (seven-segment style, with a diagonal
for 7 and a flag for 1), then jittered per image: endpoints moved, slant, shift, stroke
width and brightness varied, a little noise on the ink. The classes are distinct enough
for a small classifier to learn and varied enough for a flow to have something to model.
The files are written as gzipped IDX in torchvision's layout, like the real MNIST.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pairflow.data.idx import write_idx
from pairflow.data.mnist import MNIST_FILES, raw_dir

__all__ = [
    "make_synthetic_cifar10",
    "make_synthetic_fashion_mnist",
    "make_synthetic_mnist",
    "synthetic_cifar10_images",
    "synthetic_digits",
]

# Segment endpoints (x, y) in the 28x28 frame: a 10-wide, 18-tall box centred at (14, 14).
_A, _B, _C, _D = ((9, 5), (19, 5)), ((19, 5), (19, 14)), ((19, 14), (19, 23)), ((9, 23), (19, 23))
_E, _F, _G = ((9, 14), (9, 23)), ((9, 5), (9, 14)), ((9, 14), (19, 14))
_STROKES: dict[int, tuple] = {
    0: (_A, _B, _C, _D, _E, _F),
    1: (((14, 5), (14, 23)), ((10, 9), (14, 5))),
    2: (_A, _B, _G, _E, _D),
    3: (_A, _B, _G, _C, _D),
    4: (_F, _G, _B, _C),
    5: (_A, _F, _G, _C, _D),
    6: (_A, _F, _G, _E, _D, _C),
    7: (_A, ((19, 5), (12, 23))),
    8: (_A, _B, _C, _D, _E, _F, _G),
    9: (_A, _B, _C, _D, _F, _G),
}
_GRID = np.stack(np.meshgrid(np.arange(28), np.arange(28), indexing="xy"), -1).reshape(-1, 2) + 0.5


def _render(segments: np.ndarray, width: float) -> np.ndarray:
    """Anti-aliased strokes: pixel ink = clip(width - distance to nearest segment, 0, 1)."""
    a, b = segments[:, 0], segments[:, 1]  # (k, 2) each
    ab = b - a
    t = ((_GRID[:, None] - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-9)
    nearest = a + np.clip(t, 0, 1)[..., None] * ab  # (784, k, 2)
    distance = np.linalg.norm(_GRID[:, None] - nearest, axis=-1).min(1)
    return np.clip(width + 0.5 - distance, 0.0, 1.0).reshape(28, 28)


def synthetic_digits(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Render one jittered digit per label.

    Arguments:
        labels: int array (N,) of digit classes 0..9.
        seed: random seed; the same labels and seed give the same images.

    Returns:
        uint8 array (N, 28, 28), bright ink on black like MNIST.
    """
    rng = np.random.default_rng(seed)
    images = np.empty((len(labels), 28, 28), dtype=np.uint8)
    for i, label in enumerate(np.asarray(labels)):
        segments = np.asarray(_STROKES[int(label)], dtype=np.float64)  # (k, 2, 2)
        segments = segments + rng.normal(0.0, 0.6, segments.shape)  # wobbly endpoints
        slant = rng.uniform(-0.25, 0.25)
        segments[..., 0] += slant * (14.0 - segments[..., 1])  # shear around the centre
        segments += rng.integers(-1, 2, size=2)  # shift
        ink = _render(segments, width=rng.uniform(0.9, 1.8))
        ink = ink * rng.uniform(0.8, 1.0) + rng.normal(0.0, 0.05, ink.shape) * (ink > 0)
        images[i] = np.clip(np.round(ink * 255), 0, 255).astype(np.uint8)
    return images


def make_synthetic_mnist(
    root: str | os.PathLike, num_train: int = 256, num_test: int = 128, seed: int = 0
) -> Path:
    """Write synthetic MNIST files (gzipped IDX) to ``<root>/MNIST/raw/``.

    Every class appears (labels cycle through 0..9, shuffled), so ``num_train >= 10`` gives
    all ten digits.

    Arguments:
        root: the data root to create.
        num_train: training images.
        num_test: test images.
        seed: random seed.

    Returns:
        ``root`` as a Path, ready for :func:`pairflow.data.read_mnist` and ``PairedMNIST``.

    Example:
        >>> root = make_synthetic_mnist(tmp_path / "data")  # doctest: +SKIP
        >>> PairedMNIST(root, num_pairs=64)  # doctest: +SKIP
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", num_train), ("test", num_test)):
        labels = rng.permutation(np.arange(count) % 10).astype(np.uint8)
        images = synthetic_digits(labels, seed=int(rng.integers(2**31)))
        write_idx(raw_dir(root) / f"{MNIST_FILES[(split, 'images')]}.gz", images)
        write_idx(raw_dir(root) / f"{MNIST_FILES[(split, 'labels')]}.gz", labels)
    return root


def make_synthetic_fashion_mnist(
    root: str | os.PathLike, num_train: int = 256, num_test: int = 128, seed: int = 0
) -> Path:
    """Write synthetic files in Fashion-MNIST's layout, ``<root>/FashionMNIST/raw/``.

    The images are :func:`synthetic_digits` (not clothes): the point is the layout and the
    format, so that every Fashion-MNIST code path runs in tests without the real files.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", num_train), ("test", num_test)):
        labels = rng.permutation(np.arange(count) % 10).astype(np.uint8)
        images = 255 - synthetic_digits(labels, seed=int(rng.integers(2**31)))  # dark on light
        write_idx(raw_dir(root, "FashionMNIST") / f"{MNIST_FILES[(split, 'images')]}.gz", images)
        write_idx(raw_dir(root, "FashionMNIST") / f"{MNIST_FILES[(split, 'labels')]}.gz", labels)
    return root


# A colour per class (R, G, B) for the synthetic CIFAR-10 images.
_PALETTE = np.array(
    [
        [200, 60, 60],
        [60, 200, 60],
        [60, 60, 200],
        [200, 200, 60],
        [200, 60, 200],
        [60, 200, 200],
        [230, 140, 40],
        [120, 120, 120],
        [240, 240, 240],
        [30, 30, 30],
    ],
    dtype=np.float64,
)


def synthetic_cifar10_images(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Colour images, one per label: a class colour, a class-oriented stripe, noise.

    Returns:
        uint8 array (N, 3, 32, 32), channels R, G, B.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float64)
    images = np.empty((len(labels), 3, 32, 32), dtype=np.uint8)
    for i, label in enumerate(np.asarray(labels)):
        angle = np.pi * int(label) / 10 + rng.normal(0, 0.1)
        phase = rng.uniform(0, 2 * np.pi)
        stripe = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / 3 + phase)
        colour = _PALETTE[int(label)] * rng.uniform(0.8, 1.1)
        image = colour[:, None, None] * (0.5 + 0.5 * stripe) + rng.normal(0, 12, (3, 32, 32))
        images[i] = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return images


def make_synthetic_cifar10(
    root: str | os.PathLike,
    num_train: int = 250,
    num_test: int = 50,
    seed: int = 0,
    archive: bool = False,
) -> Path:
    """Write synthetic CIFAR-10 in exactly the real format, in torchvision's layout.

    Six batches as in the real distribution: ``data_batch_1`` .. ``data_batch_5`` (the
    ``num_train`` images split among them) and ``test_batch``, each a dict pickled with
    protocol 2 and bytes keys (as Python 2 wrote them): ``b"data"`` uint8 (N, 3072) whose
    rows are the R, G and B planes of a 32x32 image, each row-major; ``b"labels"`` a list of
    ints; ``b"batch_label"`` and ``b"filenames"``; and ``batches.meta`` with
    ``b"label_names"``, ``b"num_cases_per_batch"`` and ``b"num_vis"``.

    Arguments:
        root: the data root.
        num_train: training images (at least 5: one batch each).
        num_test: test images.
        seed: random seed.
        archive: write ``<root>/cifar-10-python.tar.gz`` (the directory inside it, as
            published) instead of ``<root>/cifar-10-batches-py/``.

    Returns:
        ``root`` as a Path, ready for :func:`pairflow.data.read_cifar10`.
    """
    import io
    import pickle
    import tarfile

    from pairflow.data.cifar import CIFAR10_ARCHIVE, CIFAR10_CLASSES, CIFAR10_FOLDER
    from pairflow.utils import atomic_write_bytes

    if num_train < 5:
        raise ValueError(f"num_train must be at least 5 (one per training batch), got {num_train}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    files: dict[str, bytes] = {}
    train_sizes = [len(part) for part in np.array_split(np.arange(num_train), 5)]
    batches = [
        (f"data_batch_{i + 1}", n, f"training batch {i + 1} of 5")
        for i, n in enumerate(train_sizes)
    ]
    batches.append(("test_batch", num_test, "testing batch 1 of 1"))
    for name, count, batch_label in batches:
        labels = rng.permutation(np.arange(count) % 10)
        images = synthetic_cifar10_images(labels, seed=int(rng.integers(2**31)))
        batch = {
            b"batch_label": batch_label.encode(),
            b"labels": [int(v) for v in labels],
            b"data": images.reshape(count, 3 * 32 * 32),  # R plane, G plane, B plane
            b"filenames": [f"synthetic_{name}_{i}.png".encode() for i in range(count)],
        }
        files[name] = pickle.dumps(batch, protocol=2)
    meta = {
        b"num_cases_per_batch": max(train_sizes),
        b"label_names": [name.encode() for name in CIFAR10_CLASSES],
        b"num_vis": 3072,
    }
    files["batches.meta"] = pickle.dumps(meta, protocol=2)
    if archive:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(f"{CIFAR10_FOLDER}/{name}")
                info.size, info.mtime = len(data), 0
                tar.addfile(info, io.BytesIO(data))
        atomic_write_bytes(root / CIFAR10_ARCHIVE, buffer.getvalue())
    else:
        for name, data in files.items():
            atomic_write_bytes(root / CIFAR10_FOLDER / name, data)
    return root
