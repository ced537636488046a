"""A preview PNG of labelled pairs: a grid of upscaled pair images, each with its label.

One-channel images give a grayscale PNG, three-channel (R, G, B) images a colour one.
"""

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


def _label_text(target: int, layout: str, classes: Sequence[str] | None) -> str:
    if layout == "single":
        return f"{target:d}  {classes[target]}" if classes else f"{target:d}"
    # Pairs keep the digits (class names of two images would not fit above a 56-pixel pair).
    return f"{target:d}  ({target // 10}|{target % 10})"


def render_preview(
    images: torch.Tensor,
    targets: Sequence[int],
    cols: int = 8,
    scale: int = 3,
    layout: str = "pair",
    classes: Sequence[str] | None = None,
):
    """Draw pairs in a grid, each upscaled ``scale`` times under its label (white on grey).

    Arguments:
        images: uint8 tensor (n, C, H, W) of pair images, values 0..255; C is 1 (grayscale)
            or 3 (R, G, B).
        targets: n labels; pair labels drawn as "37  (3|7)" (or with class names).
        cols: pairs per row.
        scale: integer upscaling factor (nearest neighbour: pixels stay crisp).
        layout: ``"pair"`` (labels 10a + b) or ``"single"`` (class labels).
        classes: class names, drawn beside single images' labels.

    Returns:
        A ``PIL.Image.Image`` of mode "L" (one channel) or "RGB", size :func:`preview_size`.
    """
    from PIL import Image, ImageDraw

    n, c, h, w = images.shape
    if n == 0:
        raise ValueError("nothing to preview: the dataset has no pairs")
    if c not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {c} (shape {tuple(images.shape)})")
    width, height = preview_size(n, cols, scale, (h, w))
    cols = max(1, min(cols, n))
    mode, grey, white = ("L", 64, 255) if c == 1 else ("RGB", (64, 64, 64), (255, 255, 255))
    canvas = Image.new(mode, (width, height), color=grey)
    draw = ImageDraw.Draw(canvas)
    font = _font(16)
    for i in range(n):
        row, col = divmod(i, cols)
        x = PAD + col * (w * scale + PAD)
        y = PAD + row * (h * scale + LABEL_HEIGHT + PAD)
        text = _label_text(int(targets[i]), layout, classes)
        draw.text((x + 2, y + 2), text, fill=white, font=font)
        if c == 1:
            pair = Image.fromarray(images[i, 0].numpy())  # uint8 (H, W) -> mode "L"
        else:
            pair = Image.fromarray(images[i].permute(1, 2, 0).contiguous().numpy())  # "RGB"
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
    layout = getattr(dataset, "layout", "pair")
    classes = None
    if getattr(dataset, "dataset_name", None):
        from pairflow.data.datasets import get_dataset

        classes = get_dataset(dataset.dataset_name).classes
    canvas = render_preview(
        images, targets.tolist(), cols=cols, scale=scale, layout=layout, classes=classes
    )
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())
