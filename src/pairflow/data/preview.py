"""A preview PNG of labelled pairs: a grid of upscaled pair images, each with its label."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from pairflow.utils import atomic_write_bytes

__all__ = ["write_preview", "render_preview", "preview_size"]

PAD = 6  # pixels between cells and around the grid
LABEL_HEIGHT = 22  # pixels of the label strip above each pair


def preview_size(
    n: int, cols: int, scale: int, image_hw: tuple[int, int] = (28, 56)
) -> tuple[int, int]:
    """``(width, height)`` in pixels of a preview of ``n`` pairs (see :func:`render_preview`)."""
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    h, w = image_hw
    return (cols * (w * scale + PAD) + PAD, rows * (h * scale + LABEL_HEIGHT + PAD) + PAD)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable default font, Pillow >= 10.1
    except TypeError:
        return ImageFont.load_default()


def render_preview(images: torch.Tensor, targets: Sequence[int], cols: int = 8, scale: int = 3):
    """Draw pairs in a grid, each upscaled ``scale`` times under its label (white on grey).

    Arguments:
        images: uint8 tensor (n, 1, H, W) of pair images, values 0..255.
        targets: n pair labels; drawn as "37  (3|7)".
        cols: pairs per row.
        scale: integer upscaling factor (nearest neighbour: pixels stay crisp).

    Returns:
        A ``PIL.Image.Image`` of mode "L", size :func:`preview_size`.
    """
    from PIL import Image, ImageDraw

    n, _, h, w = images.shape
    if n == 0:
        raise ValueError("nothing to preview: the dataset has no pairs")
    width, height = preview_size(n, cols, scale, (h, w))
    cols = max(1, min(cols, n))
    canvas = Image.new("L", (width, height), color=64)
    draw = ImageDraw.Draw(canvas)
    font = _font(16)
    for i in range(n):
        row, col = divmod(i, cols)
        x = PAD + col * (w * scale + PAD)
        y = PAD + row * (h * scale + LABEL_HEIGHT + PAD)
        target = int(targets[i])
        draw.text(
            (x + 2, y + 2), f"{target:d}  ({target // 10}|{target % 10})", fill=255, font=font
        )
        pair = Image.fromarray(images[i, 0].numpy())  # uint8 (H, W) -> mode "L"
        canvas.paste(pair.resize((w * scale, h * scale), Image.NEAREST), (x, y + LABEL_HEIGHT))
    return canvas


def write_preview(
    dataset, path: str | os.PathLike, n: int = 32, cols: int = 8, scale: int = 3
) -> Path:
    """Write a PNG of the first ``n`` pairs of ``dataset`` with their labels, atomically.

    Arguments:
        dataset: a paired dataset (``get_batch``), or any dataset of (uint8 image
            (1, H, W), int target) items.
        path: the PNG file to write.
        n: number of pairs shown (fewer if the dataset is smaller).
        cols: pairs per row.
        scale: upscaling factor; 3 makes a 28x56 pair 84x168 pixels.

    Returns:
        The path written. The image is :func:`preview_size` ``(n, cols, scale)`` pixels.

    Example:
        >>> write_preview(PairedMNIST(root, train=False), "pairs.png", n=16)  # doctest: +SKIP
    """
    n = min(int(n), len(dataset))
    if n <= 0:
        raise ValueError(
            f"n must be positive and the dataset non-empty (n={n}, len={len(dataset)})"
        )
    if hasattr(dataset, "get_batch"):
        images, targets = dataset.get_batch(torch.arange(n))
    else:
        items = [dataset[i] for i in range(n)]
        images = torch.stack([torch.as_tensor(image) for image, _ in items])
        targets = torch.tensor([int(t) for _, t in items])
    canvas = render_preview(images, targets.tolist(), cols=cols, scale=scale)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())
