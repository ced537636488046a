"""The pictures the page shows and offers for download: grids, PNG and ``.npz`` bytes.

Example:
    >>> import torch
    >>> images = torch.zeros(6, 1, 28, 56, dtype=torch.uint8)
    >>> grid_nrow(6), grid_image(images).shape  # 3 per row, 2 rows, upscaled 2x
    (3, (124, 352))
"""

from __future__ import annotations

import io
import math

import numpy as np
from torch import Tensor

__all__ = ["GRID_SCALE", "GRID_PADDING", "grid_nrow", "grid_image", "png_bytes", "npz_bytes"]

GRID_SCALE = 2  # nearest-neighbour upscaling of grids and strips, so digits stay legible
GRID_PADDING = 2  # pixels between tiles before upscaling (pairflow.images.make_grid)


def grid_nrow(n: int) -> int:
    """Tiles per row of a grid of n pairs: squarish in tiles, at most 8 (pairs are 2:1)."""
    return max(1, min(8, math.ceil(math.sqrt(n))))


def grid_image(images: Tensor, nrow: int | None = None) -> np.ndarray:
    """Images (N, C, H, W) uint8 -> one grid, upscaled by GRID_SCALE: uint8 (H', W') for one
    channel, (H', W', 3) RGB for three.

    Tiles are GRID_PADDING pixels apart (gray 64) before upscaling, row-major.
    """
    from pairflow.images import make_grid

    nrow = grid_nrow(len(images)) if nrow is None else nrow
    grid = make_grid(images, nrow=nrow, padding=GRID_PADDING).numpy()
    return grid.repeat(GRID_SCALE, axis=0).repeat(GRID_SCALE, axis=1)


def png_bytes(array: np.ndarray) -> bytes:
    """A uint8 (H, W) array as grayscale PNG bytes, (H, W, 3) as RGB."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def npz_bytes(images: Tensor, labels: Tensor | None) -> bytes:
    """Images (N, C, H, W) and labels (N,) as ``.npz``, as ``pairflow sample`` writes it:
    ``images`` uint8 (N, H, W) for one channel, (N, C, H, W) for colour; ``labels`` int64."""
    arrays = {"images": (images[:, 0] if images.shape[1] == 1 else images).numpy()}
    if labels is not None:
        arrays["labels"] = labels.numpy().astype(np.int64)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()
