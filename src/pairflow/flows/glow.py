"""Glow: ActNorm, an invertible 1x1 convolution, then a coupling; stacked in a multi-scale flow.

References:
    Kingma and Dhariwal, "Glow: Generative flow with invertible 1x1 convolutions",
    NeurIPS 2018, sec. 3.
"""

from __future__ import annotations

from typing import get_args

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pairflow.flows.actnorm import ActNorm
from pairflow.flows.base import Compose, Inverse, Transform
from pairflow.flows.coupling import (
    AdditiveCoupling,
    ConditionerFactory,
    CouplingLayer,
    coupling_layer,
)
from pairflow.flows.masks import channel_mask
from pairflow.flows.multiscale import FactorOut
from pairflow.flows.squeeze import Squeeze
from pairflow.options import CouplingMap

__all__ = ["InvertibleConv1x1", "AdditiveCoupling", "glow_step", "glow_flow", "COUPLINGS"]

COUPLINGS = get_args(CouplingMap)
"""The couplings a Glow step can end with (any map: :func:`~pairflow.flows.coupling_layer`)."""


class InvertibleConv1x1(Transform):
    r"""Invertible 1x1 convolution with an LU-parametrised weight, W = P L (U + diag(s)).

    Every pixel's channel vector is multiplied by the C x C matrix W. P is a fixed permutation,
    L lower triangular with a unit diagonal, U strictly upper triangular and
    :math:`s = \mathrm{sign} \odot \exp(\log|s|)` with fixed signs, so W stays invertible and

    .. math:: \log|\det J| = H W \sum_c \log|s_c|,

    read from the diagonal in O(C) instead of an O(C^3) determinant. Initialised from a random
    rotation (Glow's choice), so a fresh layer already mixes channels.

    Arguments:
        channels: C, the number of channels of (B, C, H, W) inputs.
        generator: random generator for the initial rotation.

    Example:
        >>> layer = InvertibleConv1x1(4)
        >>> x = torch.randn(2, 4, 3, 5)
        >>> z, ld = layer(x)
        >>> torch.allclose(layer.inverse(z)[0], x, atol=1e-5), ld.shape
        (True, torch.Size([2]))
    """

    def __init__(self, channels: int, generator: torch.Generator | None = None):
        super().__init__()
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        rotation, _ = torch.linalg.qr(torch.randn(channels, channels, generator=generator))
        p, lower, upper = torch.linalg.lu(rotation)
        s = torch.diagonal(upper)
        self.register_buffer("permutation", p)
        self.register_buffer("sign", torch.sign(s))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.register_buffer("eye", torch.eye(channels))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_abs_s = nn.Parameter(torch.log(s.abs()))

    def weight(self) -> Tensor:
        """The C x C matrix W = P L (U + diag(s))."""
        lower = self.lower * self.lower_mask + self.eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign * torch.exp(self.log_abs_s))
        return self.permutation @ lower @ upper

    def _logdet(self, x: Tensor) -> Tensor:
        pixels = x.shape[2] * x.shape[3]
        return (self.log_abs_s.sum() * pixels).to(x.dtype).expand(x.shape[0])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        w = self.weight().to(x.dtype)
        return F.conv2d(x, w[:, :, None, None]), self._logdet(x)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        # Triangular solves: W^-1 = (U + diag s)^-1 L^-1 P^T, cheaper and stabler than inv(W).
        c = z.shape[1]
        lower = (self.lower * self.lower_mask + self.eye).to(z.dtype)
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign * torch.exp(self.log_abs_s))
        eye = self.eye.to(z.dtype)
        l_inv = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
        u_inv = torch.linalg.solve_triangular(upper.to(z.dtype), eye, upper=True)
        w_inv = u_inv @ l_inv @ self.permutation.to(z.dtype).T
        x = F.conv2d(z, w_inv.reshape(c, c, 1, 1))
        return x, -self._logdet(z)

    def extra_repr(self) -> str:
        return f"channels={self.lower.shape[0]}, LU"


def glow_step(
    shape: tuple[int, int, int],
    factory: ConditionerFactory,
    coupling: CouplingMap | CouplingLayer = "affine",
    scale_bound: float = 2.0,
    parity: int = 0,
) -> Transform:
    """One step of flow: ActNorm, invertible 1x1 convolution, channel-wise coupling.

    Arguments:
        shape: (C, H, W) of the step's input, C >= 2.
        factory: conditioner factory ``(in_channels, out_channels) -> net``.
        coupling: ``"affine"``, ``"additive"``, ``"spline"`` or a coupling layer
            (:func:`~pairflow.flows.coupling_layer`).
        scale_bound: soft bound on the affine coupling's log-scale.
        parity: which half of the channels the coupling keeps (the 1x1 convolution mixes them
            anyway; alternating keeps the default rotation from having to learn a swap).

    Example:
        >>> from pairflow.flows.nets import ConvResNet
        >>> step = glow_step((4, 2, 4), lambda i, o: ConvResNet(i, o, hidden=8))
        >>> step(torch.randn(3, 4, 2, 4))[0].shape
        torch.Size([3, 4, 2, 4])
    """
    make = coupling_layer(coupling, scale_bound)
    c, h, w = shape
    if c < 2:
        raise ValueError(f"a Glow step needs >= 2 channels to split, got shape {shape}")
    mask = channel_mask(c, h, w, parity=parity)
    return Compose([ActNorm(c), InvertibleConv1x1(c), make(mask, factory)])


def glow_flow(
    shape: tuple[int, int, int],
    factory: ConditionerFactory,
    num_levels: int = 2,
    steps_per_level: int = 8,
    coupling: CouplingMap | CouplingLayer = "affine",
    scale_bound: float = 2.0,
) -> Transform:
    """Glow's multi-scale architecture for (C, H, W) images; the latent keeps the data's shape.

    Each level: squeeze to (4C, H/2, W/2), ``steps_per_level`` :func:`glow_step` s; every level
    but the last then factors out half the channels (they go to the latent as they are) and
    the other half go on to the next level. Each level is unsqueezed again on the way out, as
    in :func:`~pairflow.flows.multiscale_flow`, so one prior covers the whole latent.

    Arguments:
        shape: (C, H, W); H and W must be divisible by 2 ** num_levels.
        factory: conditioner factory ``(in_channels, out_channels) -> net``.
        num_levels: number of levels (>= 1).
        steps_per_level: Glow steps per level (>= 1).
        coupling: ``"affine"``, ``"additive"``, ``"spline"`` or a coupling layer
            (:func:`~pairflow.flows.coupling_layer`).
        scale_bound: soft bound on the affine couplings' log-scales.

    Returns:
        A transform (B, C, H, W) -> (B, C, H, W).

    Example:
        >>> from pairflow.flows.nets import ConvResNet
        >>> flow = glow_flow((1, 4, 8), lambda i, o: ConvResNet(i, o, hidden=8), 2, 2)
        >>> flow(torch.randn(3, 1, 4, 8))[0].shape
        torch.Size([3, 1, 4, 8])
    """
    c, h, w = shape
    if num_levels < 1 or steps_per_level < 1:
        raise ValueError(
            f"num_levels and steps_per_level must be >= 1, got {num_levels}, {steps_per_level}"
        )
    if h % 2 or w % 2:
        raise ValueError(
            f"image {h}x{w} cannot be squeezed {num_levels} more time(s): height and width "
            "must be divisible by 2 ** num_levels"
        )
    coupling = coupling_layer(coupling, scale_bound)
    squeezed = (4 * c, h // 2, w // 2)
    layers: list[Transform] = [Squeeze()]
    layers += [
        glow_step(squeezed, factory, coupling, scale_bound, parity=i % 2)
        for i in range(steps_per_level)
    ]
    if num_levels > 1:
        inner = glow_flow(
            (2 * c, h // 2, w // 2), factory, num_levels - 1, steps_per_level, coupling, scale_bound
        )
        layers.append(FactorOut(inner, keep=2 * c))
    layers.append(Inverse(Squeeze()))
    return Compose(layers)
