"""Input checks shared by every pairflow model (flows and baselines): pixels and pair labels."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["NUM_LEVELS", "NUM_PAIR_CLASSES", "check_pixels", "check_pair_labels"]

NUM_LEVELS = 256
NUM_PAIR_CLASSES = 100


def check_pixels(x: Tensor, shape: tuple[int, int, int], device: torch.device) -> Tensor:
    """Pixel values 0..255 (uint8, or float holding whole numbers) of shape (B, *shape).

    Returns:
        ``x`` on ``device``.

    Raises:
        TypeError, ValueError: naming the shape, dtype or value range that was wrong.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a tensor of pixel values, got {type(x).__name__}")
    if x.dim() != 4 or tuple(x.shape[1:]) != tuple(shape) or x.shape[0] < 1:
        raise ValueError(
            f"expected images of shape (B, {shape[0]}, {shape[1]}, {shape[2]}) with B >= 1, "
            f"got {tuple(x.shape)}"
        )
    if x.dtype != torch.uint8:
        if not x.is_floating_point():
            raise TypeError(f"expected uint8 or float pixel values, got dtype {x.dtype}")
        lo, hi = float(x.min()), float(x.max())
        if math.isnan(lo) or math.isnan(hi) or lo < 0 or hi > NUM_LEVELS - 1:
            raise ValueError(
                f"pixel values must be in 0..255, got min {lo:g}, max {hi:g} "
                "(pass raw pixel values, not images scaled to [0, 1])"
            )
        if bool((x != x.floor()).any()):
            raise ValueError(
                "pixel values must be whole numbers 0..255 (dequantization happens inside)"
            )
    return x.to(device)


def check_pair_labels(
    cond: Tensor | int | None, batch: int, conditional: bool, device: torch.device
) -> Tensor | None:
    """Pair labels (batch,) int64 in 0..99 for a conditional model; None for an unconditional one.

    An int or a 0-d tensor is broadcast to the batch.
    """
    if not conditional:
        if cond is not None:
            raise ValueError(
                "this model is unconditional (config.conditional=False): pass cond=None"
            )
        return None
    if cond is None:
        raise ValueError(
            "this model is conditional: pass cond, pair labels 10 * left + right in 0..99"
        )
    if isinstance(cond, int):
        cond = torch.full((batch,), cond, dtype=torch.int64)
    if not isinstance(cond, Tensor) or cond.dtype.is_floating_point or cond.dtype == torch.bool:
        raise TypeError(f"cond must be an integer tensor of pair labels, got {cond!r}")
    if cond.dim() == 0:
        cond = cond.expand(batch)
    if tuple(cond.shape) != (batch,):
        raise ValueError(f"cond must have shape ({batch},), got {tuple(cond.shape)}")
    lo, hi = int(cond.min()), int(cond.max())
    if lo < 0 or hi >= NUM_PAIR_CLASSES:
        raise ValueError(f"pair labels must be in 0..99, got min {lo}, max {hi}")
    return cond.to(device, torch.int64)
