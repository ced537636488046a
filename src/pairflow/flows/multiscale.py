"""Multi-scale architecture: couplings, squeeze, couplings, factor out half, recurse.

The latent keeps the data's shape: each scale unsqueezes its output again, with the
factored-out channels in place, so ``z`` is (C, H, W) like ``x`` and the prior is one
standard normal over all of it (factoring out is a choice of which dimensions skip the
deeper layers, not a change of the density model).

References:
    Dinh, Sohl-Dickstein and Bengio, "Density estimation using Real NVP", ICLR 2017, sec. 3.6.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pairflow.flows.actnorm import ActNorm
from pairflow.flows.base import Compose, Inverse, Transform
from pairflow.flows.coupling import ConditionerFactory, CouplingLayer, coupling_layer
from pairflow.flows.masks import channel_mask, checkerboard_mask, squeezed_checkerboard_mask
from pairflow.flows.squeeze import Squeeze
from pairflow.options import CouplingMap

__all__ = ["FactorOut", "multiscale_flow", "CHECKERBOARD_MODES"]

CHECKERBOARD_MODES = ("squeezed", "masked")
"""How checkerboard couplings feed their conditioner (see :func:`multiscale_flow`)."""


class FactorOut(Transform):
    """Send the first ``keep`` channels through ``inner``; the rest go to the latent as they are.

    Arguments:
        inner: the transform for the kept channels (the deeper scales).
        keep: number of channels kept.

    Example:
        >>> from pairflow.flows import Squeeze
        >>> layer = FactorOut(Compose([Squeeze(), Inverse(Squeeze())]), keep=2)
        >>> layer(torch.randn(1, 4, 2, 2))[0].shape
        torch.Size([1, 4, 2, 2])
    """

    def __init__(self, inner: Transform, keep: int):
        super().__init__()
        self.inner = inner
        self.keep = keep

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z1, ld = self.inner(x[:, : self.keep], context)
        return torch.cat([z1, x[:, self.keep :]], dim=1), ld

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x1, ld = self.inner.inverse(z[:, : self.keep], context)
        return torch.cat([x1, z[:, self.keep :]], dim=1), ld


def _couplings(
    mask_fn: Callable[..., Tensor],
    shape: tuple[int, int, int],
    count: int,
    factory: ConditionerFactory,
    coupling: CouplingLayer,
    actnorm: bool,
) -> list[Transform]:
    layers: list[Transform] = []
    for i in range(count):
        if actnorm:
            layers.append(ActNorm(shape[0]))
        layers.append(coupling(mask_fn(*shape, parity=i % 2), factory))
    return layers


def _checkerboard_couplings(
    shape: tuple[int, int, int],
    count: int,
    factory: ConditionerFactory,
    coupling: CouplingLayer,
    actnorm: bool,
    mode: str,
) -> list[Transform]:
    """``count`` checkerboard couplings on (C, H, W) images, fed as ``mode`` says."""
    c, h, w = shape
    if count == 0:
        return []
    if mode == "masked" or h % 2 or w % 2:
        return _couplings(checkerboard_mask, shape, count, factory, coupling, actnorm)
    # Same masks, evaluated on the squeezed image: conditioners run at half resolution.
    squeezed = (4 * c, h // 2, w // 2)
    inner = _couplings(squeezed_checkerboard_mask, squeezed, count, factory, coupling, actnorm)
    return [Squeeze(), *inner, Inverse(Squeeze())]


def multiscale_flow(
    shape: tuple[int, int, int],
    factory: ConditionerFactory,
    num_scales: int = 2,
    checkerboard_couplings: int = 3,
    channel_couplings: int = 3,
    final_couplings: int = 4,
    scale_bound: float = 2.0,
    actnorm: bool = True,
    checkerboard: str = "squeezed",
    coupling: CouplingMap | CouplingLayer = "affine",
) -> Transform:
    """Build RealNVP's multi-scale flow for (C, H, W) images.

    Each scale but the last: ``checkerboard_couplings`` checkerboard couplings, squeeze to
    (4C, H/2, W/2), ``channel_couplings`` channel-wise couplings, then half the channels are
    factored out and the other half (2C, H/2, W/2) go on to the next scale. The last scale:
    ``final_couplings`` checkerboard couplings. Masks alternate parity within each group.

    Arguments:
        shape: (C, H, W); H and W must be divisible by 2 ** (num_scales - 1).
        factory: conditioner factory ``(in_channels, out_channels) -> net``.
        num_scales: number of scales (>= 1).
        checkerboard_couplings, channel_couplings, final_couplings: layer counts.
        scale_bound: soft bound on each affine coupling's log-scale.
        actnorm: put an :class:`ActNorm` before every coupling.
        checkerboard: ``"masked"``: RealNVP's conditioner reads the full-resolution image
            with the transformed pixels zeroed; ``"squeezed"``: the same checkerboard masks
            applied to the squeezed image (:func:`squeezed_checkerboard_mask`), so the
            conditioner reads the kept pixels at half resolution, 4x cheaper. Layers with
            odd height or width always use ``"masked"``.
        coupling: the couplings' map, ``"affine"``, ``"additive"`` or ``"spline"``, or a
            coupling layer (:func:`~pairflow.flows.coupling_layer`).

    Returns:
        A transform (B, C, H, W) -> (B, C, H, W).
    """
    c, h, w = shape
    if checkerboard not in CHECKERBOARD_MODES:
        raise ValueError(
            f"unknown checkerboard mode {checkerboard!r}; valid: {', '.join(CHECKERBOARD_MODES)}"
        )
    if num_scales < 1:
        raise ValueError(f"num_scales must be >= 1, got {num_scales}")
    coupling = coupling_layer(coupling, scale_bound)
    if num_scales == 1:
        return Compose(
            _checkerboard_couplings(
                shape, final_couplings, factory, coupling, actnorm, checkerboard
            )
        )
    if h % 2 or w % 2:
        raise ValueError(
            f"image {h}x{w} cannot be squeezed {num_scales - 1} more time(s): "
            f"height and width must be divisible by 2 ** (num_scales - 1)"
        )
    squeezed = (4 * c, h // 2, w // 2)
    inner = multiscale_flow(
        (2 * c, h // 2, w // 2),
        factory,
        num_scales - 1,
        checkerboard_couplings,
        channel_couplings,
        final_couplings,
        scale_bound,
        actnorm,
        checkerboard,
        coupling,
    )
    layers = _checkerboard_couplings(
        shape, checkerboard_couplings, factory, coupling, actnorm, checkerboard
    )
    if layers and isinstance(layers[-1], Inverse):
        layers.pop()  # unsqueeze then squeeze again: skip both
    else:
        layers.append(Squeeze())
    layers += _couplings(channel_mask, squeezed, channel_couplings, factory, coupling, actnorm)
    layers += [FactorOut(inner, keep=2 * c), Inverse(Squeeze())]
    return Compose(layers)
