"""Coupling layers: a mask, a conditioner network and an elementwise map.

The kept features (mask True) pass unchanged; a conditioner reads them and returns the map's
parameters for every transformed feature; the map (:mod:`pairflow.flows.maps`: affine,
additive, rational-quadratic spline) bends each transformed feature with its own parameters.
So the same coupling serves vectors and images and any map, as zuko's
``CouplingTransform(meta, mask)`` does.

References:
    Dinh, Sohl-Dickstein and Bengio, "Density estimation using Real NVP", ICLR 2017, sec. 3.3.
    Durkan, Bekasov, Murray and Papamakarios, "Neural Spline Flows", NeurIPS 2019.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from pairflow.flows.base import Transform
from pairflow.flows.guidance import Guided
from pairflow.flows.maps import AdditiveMap, AffineMap, ElementwiseMap, RationalQuadraticSpline
from pairflow.options import CouplingMap, check_choice

__all__ = [
    "Coupling",
    "AffineCoupling",
    "AdditiveCoupling",
    "ConditionerFactory",
    "CouplingLayer",
    "coupling_layer",
]

ConditionerFactory = Callable[[int, int], nn.Module]
"""``factory(in_features, out_features) -> net`` with ``net(h, context=None)``.

``in_features`` counts the features (vectors) or channels (images) the net reads and
``out_features`` the ones it returns: P times the number of transformed features, for a map
of P parameters per feature, in P blocks along dim 1 (the affine map's raw log-scales
first, then its shifts). Its last layer should start at zero, so the coupling starts as the
identity.
"""


class Coupling(Transform):
    r"""Coupling layer: a binary mask, a conditioner and an elementwise monotone map.

    With mask m (True = pass through), forward (data -> latent) computes

    .. math:: z_m = x_m, \quad z_{\bar m} = f(x_{\bar m};\ \theta(x_m)),

    with log-determinant :math:`\sum \log |f'|` over the transformed features.

    The same layer serves vectors and images, choosing how to feed the conditioner from the
    mask's shape:

    - mask constant over all but dim 0 (vector masks (D,), channel-wise masks (C, H, W)):
      the conditioner reads only the kept features or channels and returns parameters only
      for the transformed ones (no wasted work);
    - spatial masks (checkerboard (C, H, W)): the conditioner reads the whole image with the
      transformed pixels zeroed and returns parameters for every pixel, of which only the
      transformed ones are used (RealNVP's masked convolution).

    The conditioner runs under ``torch.autocast`` in bfloat16 when :attr:`autocast_dtype` is
    set (the flow's precision sets it on every part that declares
    :attr:`~pairflow.flows.base.Transform.runs_in_low_precision`); its output is cast back,
    so the map and the log-determinant stay in the input's precision. It follows
    classifier-free guidance (:attr:`~pairflow.flows.base.Transform.follows_guidance`):
    given a :class:`~pairflow.flows.guidance.Guided` context its conditioner's output is
    extrapolated from the null label's to the label's.

    Arguments:
        mask: bool tensor shaped like one sample, True for features passed unchanged.
        conditioner: factory ``(in_features, out_features) -> net``, see
            :data:`ConditionerFactory`.
        transform: the elementwise map (:mod:`pairflow.flows.maps`).

    Example:
        >>> from pairflow.flows.maps import RationalQuadraticSpline
        >>> from pairflow.flows.masks import alternating_mask
        >>> from pairflow.flows.nets import MLP
        >>> layer = Coupling(alternating_mask(6), lambda i, o: MLP(i, o, hidden=8),
        ...                  RationalQuadraticSpline(bins=4))
        >>> z, ld = layer(torch.randn(2, 6))
        >>> z.shape, ld.shape
        (torch.Size([2, 6]), torch.Size([2]))
    """

    runs_in_low_precision = True
    follows_guidance = True
    parity: int | None = None  # alternating vector masks: index of the first kept feature

    def __init__(self, mask: Tensor, conditioner: ConditionerFactory, transform: ElementwiseMap):
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if bool(mask.all()) or not bool(mask.any()):
            raise ValueError("a coupling mask must keep some features and transform others")
        self.map = transform
        p = transform.num_params
        flat = mask.reshape(mask.shape[0], -1)
        self.gather = bool((flat == flat[:, :1]).all())
        if self.gather:
            keep = flat[:, 0]
            kept = torch.nonzero(keep).flatten()
            moved = torch.nonzero(~keep).flatten()
            self.register_buffer("kept", kept, persistent=False)
            self.register_buffer("moved", moved, persistent=False)
            # Positions of [kept, moved] in the original order, to put z back together.
            self.register_buffer("order", torch.argsort(torch.cat([kept, moved])), False)
            # Alternating masks (kept = every other feature) split and merge by strided views:
            # cheaper than index_select forward and its scatter_add backward.
            n = flat.shape[0]
            alternating = len(kept) == n // 2 and bool((kept[1:] - kept[:-1] == 2).all())
            if mask.dim() == 1 and n % 2 == 0 and alternating:
                self.parity = int(kept[0])
            self.net = conditioner(len(kept), p * len(moved))
        else:
            self.register_buffer("mask", mask.to(torch.float32), persistent=False)
            self.net = conditioner(mask.shape[0], p * mask.shape[0])

    def _params(
        self, h: Tensor, context: Tensor | Guided | None, dtype: torch.dtype
    ) -> list[Tensor]:
        """The map's P parameter tensors for the transformed features, from the kept ones.

        Under classifier-free guidance (``context`` a :class:`Guided`) the conditioner runs
        under the label and under the null label and its output is extrapolated,
        (1 + w) out_c - w out_u, before the map reads it: for a fixed w still a coupling.
        """
        if isinstance(context, Guided):
            return list(context.apply(lambda c: self._conditioner(h, c, dtype)))
        return list(self._conditioner(h, context, dtype))

    def _conditioner(self, h: Tensor, context: Tensor | None, dtype: torch.dtype):
        """The conditioner's output in ``dtype``, as P chunks along dim 1."""
        if self.autocast_dtype is not None:
            with torch.autocast(h.device.type, dtype=self.autocast_dtype):
                out = self.net(h, context)
        else:
            out = self.net(h, context)
        return out.to(dtype).chunk(self.map.num_params, dim=1)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(kept, moved) features of x (B, ...), flattened to (B, n_kept) and (B, n_moved)."""
        if self.parity is not None:
            pairs = x.reshape(x.shape[0], -1, 2)
            return pairs[:, :, self.parity], pairs[:, :, 1 - self.parity]
        return x.index_select(1, self.kept), x.index_select(1, self.moved)

    def _merge(self, a: Tensor, b: Tensor, like: Tensor) -> Tensor:
        """Inverse of :meth:`_split`: put kept features a and moved ones b back in place."""
        if self.parity is not None:
            pair = (a, b) if self.parity == 0 else (b, a)
            return torch.stack(pair, dim=2).reshape(like.shape)
        return torch.cat([a, b], dim=1).index_select(1, self.order)

    def _couple(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        bend = self.map.inverse if inverse else self.map.forward
        if self.gather:
            xa, xb = self._split(x)
            zb, ld = bend(xb, self._params(xa, context, x.dtype))
            return self._merge(xa, zb, x), ld.flatten(1).sum(1)
        m = self.mask.to(x.dtype)
        z, ld = bend(x, self._params(x * m, context, x.dtype))
        # Kept pixels pass exactly (m x + 0 z) and add nothing to the log-determinant.
        z = m * x + (1 - m) * z
        return z, (ld * (1 - m)).flatten(1).sum(1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(x, context, inverse=False)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(z, context, inverse=True)

    def extra_repr(self) -> str:
        return "gather" if self.gather else "masked"


class AffineCoupling(Coupling):
    r"""Affine coupling, RealNVP's: :math:`z_{\bar m} = x_{\bar m} \exp(s) + t`.

    A :class:`Coupling` with the :class:`~pairflow.flows.maps.AffineMap`; the log-scale is
    bounded softly, :math:`s = b \tanh(\tilde s / b)`, so ``exp`` cannot overflow.

    Arguments:
        mask: bool tensor shaped like one sample, True for features passed unchanged.
        conditioner: factory ``(in_features, out_features) -> net``.
        scale_bound: the bound b on the log-scale (b = 1 gives s = tanh(s~)).

    Example:
        >>> from pairflow.flows.masks import alternating_mask
        >>> from pairflow.flows.nets import MLP
        >>> layer = AffineCoupling(alternating_mask(6), lambda i, o: MLP(i, o, hidden=8))
        >>> z, ld = layer(torch.randn(2, 6))
        >>> z.shape, ld.shape
        (torch.Size([2, 6]), torch.Size([2]))
    """

    def __init__(self, mask: Tensor, conditioner: ConditionerFactory, scale_bound: float = 2.0):
        super().__init__(mask, conditioner, AffineMap(scale_bound))

    @property
    def scale_bound(self) -> float:
        return self.map.scale_bound


class AdditiveCoupling(Coupling):
    r"""Additive coupling (NICE): z_b = x_b + t(x_a), z_a = x_a; log-determinant 0.

    Volume-preserving: the conditioner returns only shifts, so it is cheaper than the
    affine coupling's (half the output channels) and cannot blow up a scale.

    Arguments:
        mask: bool tensor shaped like one sample, True for features passed unchanged.
        conditioner: factory ``(in_features, out_features) -> net``; ``out_features`` is the
            number of transformed features (no log-scales).

    References:
        Dinh, Krueger and Bengio, "NICE: Non-linear independent components estimation",
        ICLR 2015 workshop.

    Example:
        >>> from pairflow.flows.masks import alternating_mask
        >>> from pairflow.flows.nets import MLP
        >>> layer = AdditiveCoupling(alternating_mask(6), lambda i, o: MLP(i, o, hidden=8))
        >>> layer(torch.randn(2, 6))[1]
        tensor([0., 0.])
    """

    def __init__(self, mask: Tensor, conditioner: ConditionerFactory):
        super().__init__(mask, conditioner, AdditiveMap())


CouplingLayer = Callable[[Tensor, ConditionerFactory], Transform]
"""``layer(mask, conditioner_factory) -> coupling``: how an architecture makes its couplings,
so that one architecture takes any map (see :func:`coupling_layer`)."""

MAPS: dict[str, Callable[..., ElementwiseMap]] = {
    "affine": lambda scale_bound, **_: AffineMap(scale_bound),
    "additive": lambda **_: AdditiveMap(),
    "spline": lambda spline_bins, spline_bound, **_: RationalQuadraticSpline(
        spline_bins, spline_bound
    ),
}
"""``FlowConfig.coupling`` (:data:`~pairflow.options.CouplingMap`) -> the builder of its map,
from the map settings (``scale_bound``, ``spline_bins``, ``spline_bound``). A new map is a
class in :mod:`pairflow.flows.maps`, a row here and its name in the ``Literal``."""


def coupling_layer(
    kind: CouplingMap | CouplingLayer = "affine",
    scale_bound: float = 2.0,
    spline_bins: int = 8,
    spline_bound: float = 5.0,
) -> CouplingLayer:
    """The coupling layer of the map named by ``kind`` (a callable is returned as it is).

    Arguments:
        kind: a key of :data:`MAPS`: ``"affine"`` (RealNVP's), ``"additive"`` (NICE's) or
            ``"spline"`` (:class:`~pairflow.flows.maps.RationalQuadraticSpline`).
        scale_bound: the affine map's soft bound on its log-scale.
        spline_bins, spline_bound: the spline's bins K and interval [-B, B].

    Example:
        >>> from pairflow.flows.masks import alternating_mask
        >>> from pairflow.flows.nets import MLP
        >>> make = coupling_layer("spline", spline_bins=4)
        >>> make(alternating_mask(6), lambda i, o: MLP(i, o, hidden=8)).map
        RationalQuadraticSpline(bins=4, bound=5)
    """
    if callable(kind):
        return kind
    check_choice("coupling", kind, CouplingMap)
    settings = dict(scale_bound=scale_bound, spline_bins=spline_bins, spline_bound=spline_bound)
    MAPS[kind](**settings)  # checks the settings now, not at every layer
    return lambda mask, factory: Coupling(mask, factory, MAPS[kind](**settings))
