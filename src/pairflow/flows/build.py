"""Build a flow's parts from its config: tables of builders keyed by the config's options.

Each choice of :class:`FlowConfig` is one table: ``ARCHITECTURES`` (``arch``),
``CONDITIONAL_DISTRIBUTIONS`` (``conditioning``) and ``UNCONDITIONAL_DISTRIBUTIONS``
(``prior``), ``DEQUANTIZERS`` (``dequantization``); the couplings' map (``coupling``) is
:func:`~pairflow.flows.coupling.coupling_layer`'s. A new choice is a new row: a builder
``config -> part`` and the value in the option's ``Literal``.

Example:
    >>> flow = build_flow("seed", coupling="spline", hidden_features=8)
    >>> type(flow.body.transform.transforms[0].map).__name__
    'RationalQuadraticSpline'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from pairflow.flows.base import Compose, Transform
from pairflow.flows.clusters import PixelClusters
from pairflow.flows.config import FlowConfig
from pairflow.flows.coupling import CouplingLayer, coupling_layer
from pairflow.flows.dequantization import (
    GaussianDequantizer,
    UniformDequantizer,
    VariationalDequantizer,
)
from pairflow.flows.distributions import Distribution, LabelNormal, StandardNormal
from pairflow.flows.flow import Flow
from pairflow.flows.glow import glow_flow
from pairflow.flows.labels import LabelEmbedding
from pairflow.flows.masks import vector_mask
from pairflow.flows.mixture import ClassMixture, ClusterMixture
from pairflow.flows.multiscale import multiscale_flow
from pairflow.flows.nets import ConvResNet, SeparateMLPs
from pairflow.flows.noise import NoiseAugmentation
from pairflow.flows.preprocessing import Logit, Scale
from pairflow.flows.tarflow import TransformerFlow

__all__ = [
    "PairFlow",
    "build_flow",
    "flow_parts",
    "couplings_of",
    "ARCHITECTURES",
    "CONDITIONAL_DISTRIBUTIONS",
    "UNCONDITIONAL_DISTRIBUTIONS",
    "DEQUANTIZERS",
]


def couplings_of(config: FlowConfig) -> CouplingLayer:
    """The coupling layer the config's ``coupling`` names (affine, additive or spline).

    The spline's interval is ``config.spline_bound``, or where that is 0: [-15, 15]
    where couplings read the logit-space image as it is (``mlp``, or ``actnorm=False``:
    logit(1e-6) is about -13.8, outside a narrower spline pixels would pass unchanged), and
    [-5, 5] where an ActNorm before each coupling keeps its input near unit scale.
    """
    bound = config.spline_bound
    if not bound:
        normalised = config.arch == "glow" or (config.arch == "multiscale" and config.actnorm)
        bound = 5.0 if normalised else 15.0
    return coupling_layer(config.coupling, config.scale_bound, config.spline_bins, bound)


def _context_size(config: FlowConfig) -> int:
    return config.embed_dim if config.label_embedding else 0


def _mlp(config: FlowConfig) -> Transform:
    """RealNVP on the flattened vector: alternating masks, separate scale and shift MLPs."""
    context = config.label_sides * _context_size(config)  # the flattened label embedding

    def factory(i: int, o: int) -> nn.Module:
        return SeparateMLPs(i, o, config.hidden_features, config.num_hidden_layers, 2, context)

    coupling = couplings_of(config)
    layers = [
        coupling(vector_mask(config.mask, config.shape, k % 2), factory)
        for k in range(config.num_couplings)
    ]
    return Flatten(Compose(layers))


def _conv_factory(config: FlowConfig) -> Callable[[int, int], nn.Module]:
    def factory(i: int, o: int) -> nn.Module:
        return ConvResNet(i, o, config.hidden_channels, config.num_blocks, _context_size(config))

    return factory


def _multiscale(config: FlowConfig) -> Transform:
    return multiscale_flow(
        config.shape,
        _conv_factory(config),
        num_scales=config.num_scales,
        checkerboard_couplings=config.checkerboard_couplings,
        channel_couplings=config.channel_couplings,
        final_couplings=config.final_couplings,
        actnorm=config.actnorm,
        checkerboard=config.checkerboard,
        coupling=couplings_of(config),
    )


def _glow(config: FlowConfig) -> Transform:
    return glow_flow(
        config.shape,
        _conv_factory(config),
        num_levels=config.glow_levels,
        steps_per_level=config.glow_steps,
        coupling=couplings_of(config),
    )


def _tarflow(config: FlowConfig) -> Transform:
    return TransformerFlow(
        config.shape,
        config.patch_size,
        sides=config.label_sides,  # a pair's tokens: the left digit's, then the right's
        blocks=config.tar_blocks,
        width=config.tar_width,
        depth=config.tar_layers,
        heads=config.tar_heads,
        context_features=config.label_sides * _context_size(config),
        scale_bound=config.scale_bound,
    )


ARCHITECTURES: dict[str, Callable[[FlowConfig], Transform]] = {
    "mlp": _mlp,
    "multiscale": _multiscale,
    "glow": _glow,
    "tarflow": _tarflow,
}
"""``config.arch`` -> the builder of the flow body (h -> z)."""

CONDITIONAL_DISTRIBUTIONS: dict[str, Callable[[FlowConfig], Distribution]] = {
    # The couplings read the label; z ~ N(0, I) whatever it is, p(y) beside it.
    "embedding": lambda c: StandardNormal(c.shape, num_classes=c.num_classes),
    "prior": lambda c: LabelNormal(c.shape, c.label_sides, c.null_label, c.label_base),
    "both": lambda c: LabelNormal(c.shape, c.label_sides, c.null_label, c.label_base),
    "mixture": lambda c: ClassMixture(c.shape, c.label_sides),
}
"""``config.conditioning`` -> the base distribution of a conditional flow (with p(y))."""

UNCONDITIONAL_DISTRIBUTIONS: dict[str, Callable[[FlowConfig], Distribution]] = {
    "normal": lambda c: StandardNormal(c.shape),
    "mixture": lambda c: ClusterMixture(c.shape, c.label_sides),
}
"""``config.prior`` -> the base distribution of an unconditional flow."""

DEQUANTIZERS: dict[str, Callable[[FlowConfig], nn.Module]] = {
    "uniform": lambda c: UniformDequantizer(),
    "variational": lambda c: VariationalDequantizer(
        c.shape, c.dequant_channels, c.dequant_couplings
    ),
    "gaussian": lambda c: GaussianDequantizer(c.noise_sigma),
}
"""``config.dequantization`` -> the dequantizer."""


def _noise(config: FlowConfig) -> NoiseAugmentation | None:
    """TarFlow's noise: in the data's space the dequantizer adds it (this part denoises), in
    logit space this part adds it too; None without noise."""
    if config.dequantization == "gaussian":
        return NoiseAugmentation(config.noise_sigma, in_training=False)  # h = 2y - 1: sigma
    return NoiseAugmentation(config.noise_sigma) if config.noise_sigma else None


def flow_parts(config: FlowConfig) -> dict[str, Any]:
    """The parts of a :class:`~pairflow.flows.flow.Flow` for ``config``, by the tables above."""
    # Built in the order the flow registers them (each draws its initial weights from the
    # global generator), so that a seeded build gives the same flow as ever.
    parts: dict[str, Any] = {}
    parts["embedding"] = (
        LabelEmbedding(config.embed_dim, config.label_sides, config.null_label, config.label_base)
        if config.label_embedding
        else None
    )
    if config.reads_labels:  # a label, or the flow's own clusters
        parts["distribution"] = CONDITIONAL_DISTRIBUTIONS[config.conditioning](config)
    else:
        parts["distribution"] = UNCONDITIONAL_DISTRIBUTIONS[config.prior](config)
    parts["dequantizer"] = DEQUANTIZERS[config.dequantization](config)
    parts["body"] = ARCHITECTURES[config.arch](config)
    parts["noise"] = _noise(config)
    # Noisy data may leave [0, 1]: an affine map to [-1, 1] there, the logit elsewhere.
    gaussian = config.dequantization == "gaussian"
    parts["preprocessing"] = Scale() if gaussian else Logit(config.logit_alpha)
    if config.clusters:  # a buffer: no draw from the generator
        parts["clusters"] = PixelClusters(config.clusters, config.shape, config.label_sides)
    return parts


class PairFlow(Flow):
    """The :class:`~pairflow.flows.flow.Flow` a :class:`FlowConfig` describes (its parts from
    :func:`flow_parts`): the model kind ``"flow"`` of :mod:`pairflow.models`.

    Example:
        >>> PairFlow(FlowConfig.from_preset("seed", hidden_features=8)).config.arch
        'mlp'
    """

    def __init__(self, config: FlowConfig):
        super().__init__(config, **flow_parts(config))


def build_flow(config: FlowConfig | str, **overrides: Any) -> PairFlow:
    """Build a flow from a config, or from a preset name plus overrides.

    Example:
        >>> build_flow("seed").config.arch
        'mlp'
    """
    if isinstance(config, str):
        config = FlowConfig.from_preset(config, **overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    return PairFlow(config)


class Flatten(Transform):
    """Run a vector transform on images flattened to (B, C*H*W), then restore the shape."""

    def __init__(self, transform: Transform):
        super().__init__()
        self.transform = transform

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z, ld = self.transform(x.flatten(1), cond)
        return z.view_as(x), ld

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, ld = self.transform.inverse(z.flatten(1), cond)
        return x.view_as(z), ld
