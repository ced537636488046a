"""Input checks shared by every pairflow model (flows and baselines): pixels and pair labels."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pairflow.options import NUM_LEVELS, NUM_PAIR_CLASSES

__all__ = ["NUM_LEVELS", "NUM_PAIR_CLASSES", "check_pixels", "as_pixel_batch", "check_pair_labels"]


def check_pixels(x: Tensor, shape: tuple[int, int, int], device: torch.device) -> Tensor:
    """Images of shape (B, *shape) as pixel values 0..255 on ``device``.

    Two conventions, told apart by dtype: uint8 tensors hold pixel values 0..255; float
    tensors hold images in [0, 1] whose values are 8-bit levels k / 255 (what torchvision's
    ``ToTensor`` makes of an 8-bit image). Floats come back as float pixel values
    ``round(255 x)``; uint8 comes back as it is.

    Raises:
        TypeError, ValueError: naming the shape, dtype or value range that was wrong.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a tensor of images, got {type(x).__name__}")
    if x.dim() != 4 or tuple(x.shape[1:]) != tuple(shape) or x.shape[0] < 1:
        raise ValueError(
            f"expected images of shape (B, {shape[0]}, {shape[1]}, {shape[2]}) with B >= 1, "
            f"got {tuple(x.shape)}"
        )
    if x.dtype == torch.uint8:
        return x.to(device)
    if not x.is_floating_point():
        raise TypeError(
            f"expected uint8 pixels 0..255 or float images in [0, 1], got dtype {x.dtype}"
        )
    lo, hi = float(x.min()), float(x.max())
    if math.isnan(lo) or math.isnan(hi) or lo < 0 or hi > 1:
        raise ValueError(
            f"float images must be scaled to [0, 1] (x / 255 of 8-bit pixels, as torchvision's "
            f"ToTensor gives), got min {lo:g}, max {hi:g}; pass uint8 for pixel values 0..255"
        )
    levels = x.double() * (NUM_LEVELS - 1)
    if bool(((levels - levels.round()).abs() > 1e-3).any()):
        raise ValueError(
            "float images must hold 8-bit levels k / 255 for whole numbers 0..255 "
            "(dequantization happens inside; continuous data is not a pixel image)"
        )
    return levels.round().to(device, torch.float32)


def as_pixel_batch(
    x: Tensor, shape: tuple[int, int, int], device: torch.device
) -> tuple[Tensor, bool]:
    """:func:`check_pixels` that also takes one image: (C, H, W), or (H, W) for C = 1.

    Returns:
        ``(pixels (B, C, H, W), unbatched)``; ``unbatched`` says a single image was given.
    """
    if isinstance(x, Tensor) and x.dim() == 3 and tuple(x.shape) == tuple(shape):
        return check_pixels(x[None], shape, device), True
    if isinstance(x, Tensor) and x.dim() == 2 and shape[0] == 1 and tuple(x.shape) == shape[1:]:
        return check_pixels(x[None, None], shape, device), True
    return check_pixels(x, shape, device), False


def check_pair_labels(
    cond: Tensor | int | None,
    batch: int,
    conditional: bool,
    device: torch.device,
    num_classes: int = NUM_PAIR_CLASSES,
) -> Tensor | None:
    """Labels (batch,) int64 for a conditional model; None for an unconditional one.

    Pair labels 10 * left + right are 0..99 (``num_classes=100``, the default); a model of
    single images has class labels 0..9 (``num_classes=10``). An int or a 0-d tensor is
    broadcast to the batch.
    """
    pairs = num_classes == NUM_PAIR_CLASSES
    what = "pair labels" if pairs else "class labels"
    valid = "10 * left + right in 0..99" if pairs else f"0..{num_classes - 1} (single images)"
    if not conditional:
        if cond is not None:
            raise ValueError(
                "this model is unconditional (config.conditional=False): pass cond=None"
            )
        return None
    if cond is None:
        raise ValueError(f"this model is conditional: pass cond, {what} {valid}")
    if isinstance(cond, int):
        cond = torch.full((batch,), cond, dtype=torch.int64)
    if not isinstance(cond, Tensor) or cond.dtype.is_floating_point or cond.dtype == torch.bool:
        raise TypeError(f"cond must be an integer tensor of {what}, got {cond!r}")
    if cond.dim() == 0:
        cond = cond.expand(batch)
    if tuple(cond.shape) != (batch,):
        raise ValueError(f"cond must have shape ({batch},), got {tuple(cond.shape)}")
    lo, hi = int(cond.min()), int(cond.max())
    if lo < 0 or hi >= num_classes:
        hint = "" if pairs else "; this model draws single images, one class label each"
        raise ValueError(f"{what} must be in 0..{num_classes - 1}, got min {lo}, max {hi}{hint}")
    return cond.to(device, torch.int64)
