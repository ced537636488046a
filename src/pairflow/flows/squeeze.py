"""Squeeze: trade spatial resolution for channels, (C, H, W) -> (4C, H/2, W/2).

Each 2x2 block of pixels becomes four channels, ordered (top-left, top-right, bottom-left,
bottom-right) within each input channel. A half/half channel mask after a squeeze then keeps
the top row of every block, which crosses the checkerboard pattern used before it.

References:
    Dinh et al., "Density estimation using Real NVP", ICLR 2017, sec. 3.6, fig. 3.
"""

from __future__ import annotations

from torch import Tensor

from pairflow.flows.base import Transform, _zeros

__all__ = ["Squeeze"]


class Squeeze(Transform):
    """Space-to-depth permutation (B, C, H, W) -> (B, 4C, H/2, W/2); log-determinant 0.

    Example:
        >>> import torch
        >>> x = torch.arange(8.0).view(1, 1, 2, 4)
        >>> Squeeze()(x)[0].flatten().tolist()
        [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]
    """

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"squeeze needs even height and width, got {h}x{w}")
        z = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return z.reshape(b, 4 * c, h // 2, w // 2), _zeros(x)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, c, h, w = z.shape
        if c % 4:
            raise ValueError(f"unsqueeze needs a multiple of 4 channels, got {c}")
        x = z.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(b, c // 4, 2 * h, 2 * w), _zeros(z)
