"""Binary masks for coupling layers: True marks the features that pass unchanged.

A coupling layer leaves the masked (True) features as they are and transforms the others
with scale and shift computed from the masked ones; alternating layers flip the mask
(``parity``) so every feature is transformed.

References:
    Dinh et al., "Density estimation using Real NVP", ICLR 2017, sec. 3.4 (spatial
    checkerboard and channel-wise masks).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "half_mask",
    "alternating_mask",
    "checkerboard_mask",
    "channel_mask",
    "squeezed_checkerboard_mask",
    "vector_mask",
    "VECTOR_MASKS",
]


def half_mask(features: int, parity: int = 0) -> Tensor:
    """Vector mask keeping the first half of the features (or the second, ``parity=1``).

    Arguments:
        features: vector length D.
        parity: 0 or 1, which half is kept.

    Returns:
        Bool tensor (D,).

    Example:
        >>> half_mask(4)
        tensor([ True,  True, False, False])
    """
    mask = torch.arange(features) < features // 2
    return mask if parity % 2 == 0 else ~mask


def alternating_mask(features: int, parity: int = 0) -> Tensor:
    """Vector mask keeping the even-indexed features (or the odd ones, ``parity=1``).

    Example:
        >>> alternating_mask(4)
        tensor([ True, False,  True, False])
    """
    return torch.arange(features) % 2 == parity % 2


def checkerboard_mask(channels: int, height: int, width: int, parity: int = 0) -> Tensor:
    """Spatial checkerboard mask for (C, H, W) images: keep pixels with (i + j) % 2 == parity.

    Every channel gets the same pattern.

    Returns:
        Bool tensor (C, H, W).

    Example:
        >>> checkerboard_mask(1, 2, 3).int()
        tensor([[[1, 0, 1],
                 [0, 1, 0]]], dtype=torch.int32)
    """
    i = torch.arange(height)[:, None]
    j = torch.arange(width)[None, :]
    board = (i + j) % 2 == parity % 2
    return board.expand(channels, height, width).clone()


def channel_mask(channels: int, height: int, width: int, parity: int = 0) -> Tensor:
    """Channel-wise mask for (C, H, W) images: keep the first C/2 channels (or the last).

    Returns:
        Bool tensor (C, H, W).

    Example:
        >>> channel_mask(4, 1, 1, parity=1).flatten()
        tensor([False, False,  True,  True])
    """
    if channels < 2:
        raise ValueError(f"a channel-wise mask needs at least 2 channels, got {channels}")
    keep = half_mask(channels, parity)
    return keep[:, None, None].expand(channels, height, width).clone()


def squeezed_checkerboard_mask(channels: int, height: int, width: int, parity: int = 0) -> Tensor:
    """The checkerboard mask of an image, seen after a :class:`~pairflow.flows.Squeeze`.

    For a squeezed image (4C, H, W), channel 4c + 2di + dj holds pixel (2i + di, 2j + dj) of
    input channel c, whose checkerboard colour is (di + dj) % 2. Keeping channels with
    (di + dj) % 2 == parity is therefore exactly :func:`checkerboard_mask` on the unsqueezed
    image, but the coupling can read the kept pixels as a half-resolution image with 2C
    channels instead of a full-resolution image with half its pixels zeroed (4x less work
    for a convolutional conditioner).

    Returns:
        Bool tensor (4C, H, W) (constant over H, W: a channel mask).

    Example:
        >>> squeezed_checkerboard_mask(4, 1, 1).flatten()
        tensor([ True, False, False,  True])
    """
    if channels % 4:
        raise ValueError(f"a squeezed image has a multiple of 4 channels, got {channels}")
    offset = torch.arange(channels) % 4
    colour = (offset // 2 + offset % 2) % 2
    keep = colour == parity % 2
    return keep[:, None, None].expand(channels, height, width).clone()


def _flat_checkerboard(shape: tuple[int, int, int], parity: int) -> Tensor:
    return checkerboard_mask(*shape, parity=parity).flatten()


VECTOR_MASKS = ("alternate", "half", "checkerboard")
"""Mask kinds for flattened images (see :func:`vector_mask`)."""


def vector_mask(kind: str, image_shape: tuple[int, int, int], parity: int = 0) -> Tensor:
    """Mask for an image flattened to a vector of length C*H*W.

    Arguments:
        kind: ``"alternate"`` (even/odd index), ``"half"`` (first/second half) or
            ``"checkerboard"`` (the spatial checkerboard, flattened).
        image_shape: (C, H, W) of the image before flattening.
        parity: 0 or 1; alternating layers use alternating parity.

    Returns:
        Bool tensor (C*H*W,).
    """
    d = image_shape[0] * image_shape[1] * image_shape[2]
    if kind == "alternate":
        return alternating_mask(d, parity)
    if kind == "half":
        return half_mask(d, parity)
    if kind == "checkerboard":
        return _flat_checkerboard(image_shape, parity)
    raise ValueError(f"unknown vector mask {kind!r}; valid: {', '.join(VECTOR_MASKS)}")
