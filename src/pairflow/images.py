"""Image grids: pack uint8 pair images into one picture and write it as PNG.

One-channel images (N, 1, H, W) give grayscale grids (H', W'); three-channel images
(N, 3, H, W), channels R, G, B, give colour grids (H', W', 3), the layout PIL writes.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from pairflow.utils import atomic_write_bytes

__all__ = ["grid_columns", "make_grid", "save_grid", "save_png"]


def grid_columns(n: int) -> int:
    """Images per row for ``n`` images: a near-square count, with as few empty cells as can be.

    Starts at ``ceil(sqrt(n))`` columns and tries up to half again as many, keeping the
    fewest empty cells in the last row (ties: fewer columns), so 16 -> 4x4, 64 -> 8x8,
    100 -> 10x10, 10 -> 5x2, 12 -> 4x3.

    Example:
        >>> [grid_columns(n) for n in (1, 2, 8, 10, 12, 16, 64, 100)]
        [1, 2, 4, 5, 4, 4, 8, 10]
    """
    if n < 1:
        raise ValueError(f"need at least one image, got {n}")
    start = math.ceil(math.sqrt(n))
    candidates = range(start, max(start, math.ceil(1.5 * start)) + 1)
    return min(candidates, key=lambda c: (-n % c, c)) if n > 2 else n


def make_grid(
    images: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: int = 64
) -> torch.Tensor:
    """Tile images into one grid.

    Arguments:
        images: uint8 tensor of shape (N, 1, H, W) (or (N, H, W)), or (N, 3, H, W) (RGB).
        nrow: images per row; default :func:`grid_columns` (16 images: 4x4).
        padding: pixels between images.
        pad_value: gray level of the padding.

    Returns:
        A uint8 tensor of shape (rows * (H + p) + p, nrow * (W + p) + p), with a trailing
        channel axis of 3 for RGB images.
    """
    if images.dim() == 3:
        images = images[:, None]
    if images.dim() != 4 or images.shape[0] == 0 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"expected a non-empty (N, H, W), (N, 1, H, W) or (N, 3, H, W) batch, got shape "
            f"{tuple(images.shape)}"
        )
    images = images.detach().to("cpu", torch.uint8).permute(0, 2, 3, 1)  # (N, H, W, C)
    n, h, w, channels = images.shape
    if nrow is None:
        nrow = grid_columns(n)
    nrow = min(nrow, n)
    rows = math.ceil(n / nrow)
    grid = torch.full(
        (rows * (h + padding) + padding, nrow * (w + padding) + padding, channels),
        pad_value,
        dtype=torch.uint8,
    )
    for i in range(n):
        r, c = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[top : top + h, left : left + w] = images[i]
    return grid[..., 0] if channels == 1 else grid


def save_png(array: torch.Tensor, path: str | os.PathLike, scale: int = 1) -> Path:
    """Write a uint8 (H, W) tensor as a grayscale PNG (or (H, W, 3) as RGB), atomically,
    upscaled by ``scale``."""
    from PIL import Image

    img = Image.fromarray(array.contiguous().numpy())  # (H, W): mode "L"; (H, W, 3): "RGB"
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def save_grid(
    images: torch.Tensor,
    path: str | os.PathLike,
    nrow: int | None = None,
    scale: int = 2,
    labels: Sequence[str] | None = None,
) -> Path:
    """Write a grid of uint8 images (N, C, H, W) as PNG; optional text label under each image.

    C = 1 gives a grayscale PNG, C = 3 (R, G, B) a colour one.

    Arguments:
        images: uint8 images, pixel values 0..255.
        path: the PNG file to write (atomically).
        nrow: images per row (default :func:`grid_columns`).
        scale: nearest-neighbour upscaling so 28-pixel digits stay legible.
        labels: one string per image, drawn under it.
    """
    grid = make_grid(images, nrow=nrow)
    if labels is None:
        return save_png(grid, path, scale=scale)
    from PIL import Image, ImageDraw

    n, h, w = images.shape[0], images.shape[-2], images.shape[-1]
    if len(labels) != n:
        raise ValueError(f"got {len(labels)} labels for {n} images")
    nrow = min(nrow or grid_columns(n), n)
    rows = math.ceil(n / nrow)
    text_h = 12
    cell_h = (h + 2) * scale + text_h
    tiles = Image.fromarray(grid.contiguous().numpy())
    canvas = Image.new(tiles.mode, (grid.shape[1] * scale, rows * cell_h + 2 * scale), "white")
    draw = ImageDraw.Draw(canvas)
    tiles = tiles.resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    for i, text in enumerate(labels):
        r, c = divmod(i, nrow)
        x0, y0 = (2 + c * (w + 2)) * scale, (2 + r * (h + 2)) * scale
        tile = tiles.crop((x0, y0, x0 + w * scale, y0 + h * scale))
        ty = 2 * scale + r * cell_h
        canvas.paste(tile, (x0, ty))
        draw.text((x0 + 2, ty + h * scale + 1), str(text), fill="black")
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())
