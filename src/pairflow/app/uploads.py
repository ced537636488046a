"""The images a user gives the page: an uploaded picture, or a drawing on the canvas.

Both become uint8 pixels (1, C, H, W) of the model's image shape, or raise
:class:`AppInputError` saying what size and kind of picture the model takes.

Example:
    >>> import numpy as np
    >>> image_from_array(np.zeros((56, 112), np.uint8)).shape  # a 2x upscale is averaged down
    torch.Size([1, 1, 28, 56])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from pairflow.app.inputs import AppInputError
from pairflow.app.model import MNIST_PAIR, LoadedModel, shape_text

__all__ = ["image_from_array", "image_from_drawing", "check_drawable"]


def _alpha_on_black(a: np.ndarray) -> np.ndarray:
    """(H, W, 3|4) -> float (H, W, 3): RGBA composited on black (transparent = black)."""
    alpha = a[..., 3:4].astype(np.float64) / 255 if a.shape[2] == 4 else 1.0
    return a[..., :3].astype(np.float64) * alpha


def image_from_array(
    array: Any, shape: tuple[int, int, int] = MNIST_PAIR, what: str = "an MNIST pair"
) -> Tensor:
    """An uploaded picture -> pixels uint8 (1, C, H, W) of a model's image ``shape``.

    Accepts grayscale (H, W), RGB or RGBA (H, W, 3|4) arrays of exactly H x W pixels, or an
    exact whole-number upscale of it (2H x 2W from this app's grids, ...), which is averaged
    back down. For one channel (MNIST: white digits on black) colour is turned to gray; for
    three (CIFAR-10) the colours are kept and a grayscale picture counts as gray in colour.
    Transparent pixels count as black.

    Arguments:
        array: the picture.
        shape: (C, H, W) the model takes (:attr:`LoadedModel.image_shape`).
        what: what the model's images are, for the message (``"a CIFAR-10 pair"``).

    Raises:
        AppInputError: no image, or a size other than H x W (or a multiple of it).
    """
    c, height, width = shape
    size = f"{height}x{width}"
    if array is None:
        raise AppInputError(f"no image: upload a {size} picture ({what})")
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        rgb = _alpha_on_black(a)
    elif a.ndim == 3 and a.shape[2] == 1:
        rgb = np.repeat(a.astype(np.float64), 3, axis=2)
    elif a.ndim == 2:
        rgb = np.repeat(a.astype(np.float64)[..., None], 3, axis=2)
    else:
        raise AppInputError(
            f"expected a grayscale or colour image, got an array of shape {a.shape}"
        )
    h, w = rgb.shape[:2]
    k = h // height
    if k < 1 or (h, w) != (k * height, k * width):
        colour = "colour " if c == 3 else ""
        raise AppInputError(
            f"the image is {h}x{w} pixels (height x width); this model takes {what}: a "
            f"{colour}image of {size} pixels (or an exact multiple such as "
            f"{2 * height}x{2 * width})"
        )
    if k > 1:
        rgb = rgb.reshape(height, k, width, k, 3).mean(axis=(1, 3))
    pixels = rgb.mean(axis=2, keepdims=True) if c == 1 else rgb  # (H, W, C)
    pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]


def check_drawable(loaded: LoadedModel) -> None:
    """Raise AppInputError unless the drawing canvas (one channel, 28x56) fits the model."""
    if not loaded.drawable:
        c, h, w = loaded.image_shape
        colour = "colour " if c == 3 else ""
        raise AppInputError(
            f"the canvas draws 1-channel 28x56 pairs; {loaded.name} models {loaded.items}s "
            f"({shape_text(loaded.image_shape)}): upload a {h}x{w} {colour}image instead"
        )


def image_from_drawing(value: Any) -> Tensor:
    """The drawing canvas's value -> pixels uint8 (1, 1, 28, 56) (1-channel pair models).

    ``value`` is an image array (H, W[, C]) of a canvas with a 1:2 aspect ratio, or gradio's
    editor dict with a ``"composite"`` array. White strokes on a black (or transparent)
    canvas; the canvas is averaged down to 28x56 with area weights.

    Raises:
        AppInputError: nothing drawn, or a canvas that is not 1:2.
    """
    if isinstance(value, dict):
        value = value.get("composite")
    if value is None:
        raise AppInputError("the drawing is empty: draw a digit in each half of the canvas")
    a = np.asarray(value)
    gray = _alpha_on_black(a).mean(axis=2) if a.ndim == 3 else a.astype(np.float64)
    h, w = gray.shape
    if h < 28 or abs(w / h - 2) > 0.02:
        raise AppInputError(f"the canvas is {h}x{w}; expected a 1:2 canvas of at least 28x56")
    from PIL import Image

    small = Image.fromarray(gray.astype(np.float32)).resize((56, 28), Image.BOX)
    pixels = np.clip(np.rint(np.asarray(small)), 0, 255).astype(np.uint8)
    if pixels.max() < 32:
        raise AppInputError("the drawing is empty: draw a digit in each half of the canvas")
    return torch.from_numpy(pixels).view(1, *MNIST_PAIR)
