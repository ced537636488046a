"""Normalizing flows from parts: transforms, couplings and their maps, architectures, the Flow.

Every transform maps data -> latent in ``forward`` (see :class:`Transform`).

Example:
    >>> from pairflow.flows import build_flow
    >>> flow = build_flow("seed")
    >>> flow.sample(4).shape
    torch.Size([4, 1, 28, 56])
"""

from pairflow.flows.actnorm import ActNorm
from pairflow.flows.base import Compose, Inverse, Transform
from pairflow.flows.build import PairFlow, build_flow, flow_parts
from pairflow.flows.clusters import PixelClusters
from pairflow.flows.config import PRESETS, FlowConfig
from pairflow.flows.coupling import AdditiveCoupling, AffineCoupling, Coupling, coupling_layer
from pairflow.flows.dequantization import (
    GaussianDequantizer,
    UniformDequantizer,
    VariationalDequantizer,
)
from pairflow.flows.distributions import (
    Distribution,
    LabelNormal,
    PairLabelNormal,
    StandardNormal,
)
from pairflow.flows.flow import Flow
from pairflow.flows.labels import LabelEmbedding, PairEmbedding
from pairflow.flows.maps import AdditiveMap, AffineMap, ElementwiseMap, RationalQuadraticSpline
from pairflow.flows.masks import (
    alternating_mask,
    channel_mask,
    checkerboard_mask,
    half_mask,
    squeezed_checkerboard_mask,
    vector_mask,
)
from pairflow.flows.multiscale import FactorOut, multiscale_flow
from pairflow.flows.nets import MLP, ConvResNet, SeparateMLPs
from pairflow.flows.noise import NoiseAugmentation
from pairflow.flows.preprocessing import Logit, Scale, dequantize, quantize
from pairflow.flows.squeeze import Squeeze

__all__ = [
    "ActNorm",
    "AdditiveCoupling",
    "AdditiveMap",
    "AffineCoupling",
    "AffineMap",
    "Coupling",
    "ElementwiseMap",
    "Flow",
    "NoiseAugmentation",
    "GaussianDequantizer",
    "Scale",
    "RationalQuadraticSpline",
    "UniformDequantizer",
    "VariationalDequantizer",
    "coupling_layer",
    "flow_parts",
    "Compose",
    "ConvResNet",
    "Distribution",
    "FactorOut",
    "FlowConfig",
    "Inverse",
    "LabelEmbedding",
    "LabelNormal",
    "Logit",
    "MLP",
    "PRESETS",
    "PairEmbedding",
    "PairFlow",
    "PairLabelNormal",
    "PixelClusters",
    "SeparateMLPs",
    "Squeeze",
    "StandardNormal",
    "Transform",
    "alternating_mask",
    "build_flow",
    "channel_mask",
    "checkerboard_mask",
    "dequantize",
    "half_mask",
    "multiscale_flow",
    "quantize",
    "squeezed_checkerboard_mask",
    "vector_mask",
]
