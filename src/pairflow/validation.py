"""Input checks shared by every pairflow model (flows and baselines): pixels and pair labels."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pairflow.options import NUM_LEVELS, NUM_PAIR_CLASSES, Layout, check_choice

__all__ = [
    "NUM_LEVELS",
    "NUM_PAIR_CLASSES",
    "check_pixels",
    "as_pixel_batch",
    "check_pair_labels",
    "parse_label",
]


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
    single images has class labels 0..9 (``num_classes=10``); a flow with more than 10
    clusters of its own per side has cluster labels (``num_classes`` past 100). An int or a
    0-d tensor is broadcast to the batch.
    """
    pairs = num_classes == NUM_PAIR_CLASSES
    clusters = num_classes > NUM_PAIR_CLASSES
    what = "pair labels" if pairs else "cluster labels" if clusters else "class labels"
    valid = (
        "10 * left + right in 0..99"
        if pairs
        else f"0..{num_classes - 1}" + ("" if clusters else " (single images)")
    )
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
        hint = "" if pairs or clusters else "; this model draws single images, one class label each"
        raise ValueError(f"{what} must be in 0..{num_classes - 1}, got min {lo}, max {hi}{hint}")
    return cond.to(device, torch.int64)


def parse_label(text: str, layout: str = "pair") -> int:
    """A label as a user types it -> int: a pair label is two digits, left then right (``"37"``
    -> 37, ``"05"`` -> 5); a single image's class is one digit (``"7"`` -> 7).

    The one rule for ``pairflow sample --pair/--label`` and the app's label fields. A single
    digit for a pair is refused rather than guessed: ``"3"`` could mean 03 or 30.

    Arguments:
        text: what was typed (spaces around it are ignored); ASCII digits only.
        layout: ``"pair"`` (labels 00..99) or ``"single"`` (classes 0..9).

    Raises:
        ValueError: naming the text and what to give instead (callers add the field's name).

    Example:
        >>> parse_label("37"), parse_label(" 05 "), parse_label("7", "single")
        (37, 5, 7)
        >>> parse_label("3x")
        Traceback (most recent call last):
        ...
        ValueError: '3x' is not a digit pair; give two digits 00..99 (e.g. 37 or 05)
    """
    check_choice("layout", layout, Layout)
    item = str(text).strip()
    digits = item.isascii() and item.isdigit()
    if layout == "single":
        if not (digits and len(item) == 1):
            pair = digits and len(item) == 2
            hint = f"; {item} looks like a pair label" if pair else ""
            raise ValueError(f"{item!r} is not a class label; give one digit 0..9 (e.g. 7){hint}")
        return int(item)
    if digits and len(item) == 1:
        raise ValueError(
            f"{item!r} is one digit, but a pair label has two, left then right: give 0{item} "
            f"(a left 0 and a right {item}) or {item}0"
        )
    if not (digits and len(item) == 2):
        raise ValueError(f"{item!r} is not a digit pair; give two digits 00..99 (e.g. 37 or 05)")
    return int(item)
