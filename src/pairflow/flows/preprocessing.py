"""Data preprocessing that belongs to the flow: uniform dequantization and the logit transform.

Pixel values k in {0, ..., 255} are dequantized to y = (k + u) / 256 with u ~ U[0, 1)
(:func:`dequantize`); y in [0, 1) is then mapped to the real line by :class:`Logit`,
h = logit(a + (1 - 2a) y). The logit is a :class:`~pairflow.flows.base.Transform` and its
log-determinant is part of every likelihood pairflow reports; the 1/256 scaling of the
dequantization is accounted for in :meth:`pairflow.flows.PairFlow.bits_per_dim`.

References:
    Dinh, Sohl-Dickstein and Bengio, "Density estimation using Real NVP", ICLR 2017, sec. 4.1.
    Theis, van den Oord and Bethge, "A note on the evaluation of generative models", ICLR 2016.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from pairflow.flows.base import Transform
from pairflow.options import NUM_LEVELS  # y = (k + u) / NUM_LEVELS

__all__ = ["Logit", "Scale", "dequantize", "quantize", "NUM_LEVELS"]


def dequantize(
    x: Tensor, generator: torch.Generator | None = None, noise: str = "uniform"
) -> Tensor:
    """Map pixel values 0..255 to continuous y in [0, 1): y = (k + u) / 256.

    Arguments:
        x: pixel values (uint8 or float holding integers 0..255), any shape.
        generator: random generator for the noise u (reproducible dequantization).
        noise: ``"uniform"`` draws u ~ U[0, 1) (the training and evaluation convention);
            ``"center"`` uses u = 1/2, the deterministic bin centre (for encoding images to
            latents, so that :func:`quantize` recovers them exactly).

    Returns:
        Float32 tensor shaped like ``x``.

    Example:
        >>> dequantize(torch.tensor([0, 255], dtype=torch.uint8), noise="center")
        tensor([0.0020, 0.9980])
    """
    k = x.to(torch.float32)
    if noise == "uniform":
        u = torch.rand(k.shape, generator=generator, device=k.device, dtype=k.dtype)
    elif noise == "center":
        u = torch.full_like(k, 0.5)
    else:
        raise ValueError(f"unknown noise {noise!r}; valid: 'uniform', 'center'")
    return (k + u) / NUM_LEVELS


def quantize(y: Tensor) -> Tensor:
    """Map continuous y back to pixel values: floor(256 y), clamped to 0..255, as uint8.

    Arguments:
        y: values in (about) [0, 1), any shape.

    Returns:
        uint8 tensor shaped like ``y``.
    """
    y = torch.nan_to_num(y, nan=0.0)  # a NaN pixel becomes black rather than undefined
    return torch.floor(y * NUM_LEVELS).clamp_(0, NUM_LEVELS - 1).to(torch.uint8)


class Logit(Transform):
    r"""Logit transform h = logit(a + (1 - 2a) y) from [0, 1] to the real line.

    The squeeze by (1 - 2a) keeps h finite at y = 0 and y = 1. The log-determinant
    :math:`\sum_i \log(1 - 2a) - \log s_i - \log(1 - s_i)`, with s = a + (1 - 2a) y, is
    part of the likelihood.

    Arguments:
        alpha: the boundary a, 0 <= a < 0.5. Default 1e-6, the MNIST convention of FFJORD
            and Residual Flows (RealNVP used 0.05 on CIFAR-10).

    References:
        Dinh et al., "Density estimation using Real NVP", ICLR 2017, sec. 4.1.

    Example:
        >>> z, ld = Logit()(torch.full((1, 3), 0.5))
        >>> z
        tensor([[0., 0., 0.]])
    """

    def __init__(self, alpha: float = 1e-6):
        super().__init__()
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"logit alpha must be in [0, 0.5), got {alpha}")
        self.alpha = float(alpha)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        a = self.alpha
        s = a + (1 - 2 * a) * x
        # 1 - s computed from 1 - x keeps precision for pixels near 1 in float32.
        one_minus_s = a + (1 - 2 * a) * (1 - x)
        log_s, log_1ms = torch.log(s), torch.log(one_minus_s)
        z = log_s - log_1ms
        ld = (math.log1p(-2 * a) - log_s - log_1ms).flatten(1).sum(1)
        return z, ld

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        a = self.alpha
        x = (torch.sigmoid(z) - a) / (1 - 2 * a)
        # log s = -softplus(-z), log(1 - s) = -softplus(z): stable for large |z|.
        ld = (-F.softplus(-z) - F.softplus(z) - math.log1p(-2 * a)).flatten(1).sum(1)
        return x, ld

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}"


class Scale(Transform):
    r"""The affine map h = 2 y - 1 from [0, 1] to [-1, 1], TarFlow's data space.

    Where the data carries Gaussian noise (``dequantization="gaussian"``) it may leave
    [0, 1], where the logit is undefined; this map is defined everywhere. Log-determinant
    :math:`D \log 2`.

    Example:
        >>> h, ld = Scale()(torch.tensor([[0.0, 0.5, 1.0]]))
        >>> h, ld
        (tensor([[-1.,  0.,  1.]]), tensor([2.0794]))
    """

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        ld = x.new_full((x.shape[0],), x[0].numel() * math.log(2))
        return 2 * x - 1, ld

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        ld = z.new_full((z.shape[0],), -z[0].numel() * math.log(2))
        return (z + 1) / 2, ld
