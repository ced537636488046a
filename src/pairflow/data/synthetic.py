"""Synthetic digit-like MNIST files, for tests and offline smoke runs.

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

__all__ = ["synthetic_digits", "make_synthetic_mnist"]

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
