"""Elementwise monotone maps: what a coupling applies to each transformed feature.

A coupling (:class:`~pairflow.flows.coupling.Coupling`) is a mask, a conditioner network and
one of these maps, in the manner of zuko's ``CouplingTransform(meta, mask)`` with a
univariate transform: the conditioner reads the kept features and returns ``num_params``
numbers for every transformed feature; the map bends each feature with its own numbers.

Every map has

- ``num_params``: P, the conditioner outputs per transformed feature;
- ``forward(x, params) -> (z, logabsdet)`` and ``inverse(z, params) -> (x, logabsdet)``,
  elementwise: ``params`` is a sequence of P tensors shaped like ``x`` (the conditioner's
  output cut into P blocks), ``logabsdet`` is shaped like ``x`` (the coupling sums it over
  the transformed features).

A conditioner whose last layer starts at zero returns all-zero parameters, and every map
here is the identity there, so a fresh coupling starts as the identity.

Example:
    >>> spline = RationalQuadraticSpline(bins=4, bound=3.0)
    >>> x, params = torch.randn(5), torch.randn(spline.num_params, 5)
    >>> z, ld = spline(x, params)
    >>> torch.allclose(spline.inverse(z, params)[0], x, atol=1e-5)
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["ElementwiseMap", "AffineMap", "AdditiveMap", "RationalQuadraticSpline"]


class ElementwiseMap(nn.Module):
    """A monotone map of each feature, parametrised per feature; see the module docstring.

    Maps hold no weights: their parameters come from the coupling's conditioner.
    """

    num_params: int

    def forward(self, x: Tensor, params: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """z = f(x; params) and log|f'(x)|, both shaped like ``x``."""
        raise NotImplementedError

    def inverse(self, z: Tensor, params: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """x = f^-1(z; params) and log|(f^-1)'(z)|, both shaped like ``z``."""
        raise NotImplementedError


class AffineMap(ElementwiseMap):
    r"""z = x exp(s) + t, with the log-scale bounded softly: s = b tanh(s~ / b).

    Parameters per feature: (s~, t). The bound keeps ``exp`` from overflowing (|s| < b).

    Arguments:
        scale_bound: b > 0 (b = 1 gives s = tanh(s~), the specification's bounded scale).

    References:
        Dinh, Sohl-Dickstein and Bengio, "Density estimation using Real NVP", ICLR 2017.
    """

    num_params = 2

    def __init__(self, scale_bound: float = 2.0):
        super().__init__()
        if not scale_bound > 0:
            raise ValueError(f"scale_bound must be > 0, got {scale_bound}")
        self.scale_bound = float(scale_bound)

    def _scale_shift(self, params: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        raw, shift = params
        b = self.scale_bound
        return b * torch.tanh(raw / b), shift

    def forward(self, x: Tensor, params: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        s, t = self._scale_shift(params)
        return x * torch.exp(s) + t, s

    def inverse(self, z: Tensor, params: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        s, t = self._scale_shift(params)
        return (z - t) * torch.exp(-s), -s

    def extra_repr(self) -> str:
        return f"scale_bound={self.scale_bound:g}"


class AdditiveMap(ElementwiseMap):
    """z = x + t: volume preserving (log-determinant 0), NICE's coupling.

    References:
        Dinh, Krueger and Bengio, "NICE: Non-linear independent components estimation",
        ICLR 2015 workshop.
    """

    num_params = 1

    def forward(self, x: Tensor, params: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        return x + params[0], torch.zeros_like(x)

    def inverse(self, z: Tensor, params: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        return z - params[0], torch.zeros_like(z)


class RationalQuadraticSpline(ElementwiseMap):
    r"""Monotone rational-quadratic spline on [-B, B], the identity (linear tails) outside.

    K bins with learned widths and heights (softmax, each at least ``min_bin`` of the
    interval) and K - 1 learned derivatives at the inner knots (softplus, at least
    ``min_derivative``); the derivative at -B and B is 1, so the spline joins its identity
    tails with a continuous first derivative. Within bin k, with
    :math:`\xi = (x - x_k) / w_k` and slope :math:`s_k = h_k / w_k`,

    .. math:: f(x) = y_k + \frac{h_k (s_k \xi^2 + d_k \xi (1 - \xi))}
              {s_k + (d_{k+1} + d_k - 2 s_k) \xi (1 - \xi)},

    strictly increasing, with an analytic derivative and an inverse by the root of a
    quadratic. Parameters per feature: 3K - 1 (widths, heights, inner derivatives), all zero
    giving the identity (equal bins, unit derivatives).

    Arguments:
        bins: K >= 1.
        bound: B > 0, the half-width of the interval where the spline bends.
        min_bin: smallest width and height of a bin, as a fraction of the interval's 2B.
        min_derivative: smallest derivative at a knot.

    References:
        Durkan, Bekasov, Murray and Papamakarios, "Neural Spline Flows", NeurIPS 2019.
        Gregory and Delbourgo, "Piecewise rational quadratic interpolation to monotonic
        data", IMA Journal of Numerical Analysis, 1982.

    Example:
        >>> spline = RationalQuadraticSpline(bins=8, bound=5.0)
        >>> x = torch.linspace(-7, 7, 9)
        >>> z, ld = spline(x, torch.zeros(spline.num_params, 9))  # zero parameters: identity
        >>> torch.allclose(z, x), torch.allclose(ld, torch.zeros(9), atol=1e-6)
        (True, True)
    """

    def __init__(
        self,
        bins: int = 8,
        bound: float = 5.0,
        min_bin: float = 1e-3,
        min_derivative: float = 1e-3,
    ):
        super().__init__()
        if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
            raise ValueError(f"spline bins must be an int >= 1, got {bins!r}")
        if not (isinstance(bound, (int, float)) and math.isfinite(bound) and bound > 0):
            raise ValueError(f"spline bound must be a finite number > 0, got {bound!r}")
        if not 0 < min_bin * bins < 1:
            raise ValueError(f"min_bin * bins must be in (0, 1), got {min_bin} * {bins}")
        if not 0 < min_derivative < 1:
            raise ValueError(f"min_derivative must be in (0, 1), got {min_derivative}")
        self.bins = bins
        self.bound = float(bound)
        self.min_bin = float(min_bin)
        self.min_derivative = float(min_derivative)
        # softplus(raw + offset) + min_derivative is 1 at raw = 0: zero parameters, identity.
        self._offset = math.log(math.expm1(1 - min_derivative))

    @property
    def num_params(self) -> int:  # type: ignore[override]
        return 3 * self.bins - 1

    def _knots(self, params: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Knot positions xs, ys (..., K + 1) from -B to B, and derivatives d (..., K + 1)."""
        k, b = self.bins, self.bound
        if len(params) != self.num_params:
            raise ValueError(
                f"a spline of {k} bins takes {self.num_params} parameters, got {len(params)}"
            )
        params = torch.stack(tuple(params), dim=-1)  # (..., 3K - 1)
        raw_w, raw_h, raw_d = params[..., :k], params[..., k : 2 * k], params[..., 2 * k :]

        def edges(raw: Tensor) -> Tensor:
            sizes = self.min_bin + (1 - self.min_bin * k) * torch.softmax(raw, dim=-1)
            cum = F.pad(torch.cumsum(sizes, dim=-1), (1, 0))  # (..., K + 1), 0 .. 1
            cum = 2 * b * cum - b
            # Pin the ends exactly (cumsum rounding must not leave a gap at the tails).
            return torch.cat([cum.new_full(cum[..., :1].shape, -b), cum[..., 1:-1],
                              cum.new_full(cum[..., :1].shape, b)], dim=-1)  # fmt: skip

        inner = self.min_derivative + F.softplus(raw_d + self._offset)
        ones = torch.ones_like(inner[..., :1])
        return edges(raw_w), edges(raw_h), torch.cat([ones, inner, ones], dim=-1)

    def _bin(self, knots: Tensor, v: Tensor) -> Tensor:
        """Index (..., 1) of the bin holding v in knots (..., K + 1), clamped to 0..K-1."""
        idx = torch.searchsorted(knots.contiguous(), v[..., None].contiguous(), right=True) - 1
        return idx.clamp(0, self.bins - 1)

    def _gather(self, xs, ys, ds, idx):
        """Bin start, width, start height, height, and the derivatives at both ends."""
        x0, x1 = xs.gather(-1, idx), xs.gather(-1, idx + 1)
        y0, y1 = ys.gather(-1, idx), ys.gather(-1, idx + 1)
        d0, d1 = ds.gather(-1, idx), ds.gather(-1, idx + 1)
        return [t[..., 0] for t in (x0, x1 - x0, y0, y1 - y0, d0, d1)]

    def forward(self, x: Tensor, params: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        xs, ys, ds = self._knots(params)
        inside = (x > -self.bound) & (x < self.bound)
        xc = x.clamp(-self.bound, self.bound)
        x0, w, y0, h, d0, d1 = self._gather(xs, ys, ds, self._bin(xs, xc))
        s = h / w
        xi = ((xc - x0) / w).clamp(0, 1)
        t = xi * (1 - xi)
        denom = s + (d1 + d0 - 2 * s) * t
        z = y0 + h * (s * xi.pow(2) + d0 * t) / denom
        deriv = s.pow(2) * (d1 * xi.pow(2) + 2 * s * t + d0 * (1 - xi).pow(2)) / denom.pow(2)
        z = torch.where(inside, z, x)
        return z, torch.where(inside, torch.log(deriv), torch.zeros_like(x))

    def inverse(self, z: Tensor, params: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        xs, ys, ds = self._knots(params)
        inside = (z > -self.bound) & (z < self.bound)
        zc = z.clamp(-self.bound, self.bound)
        x0, w, y0, h, d0, d1 = self._gather(xs, ys, ds, self._bin(ys, zc))
        s = h / w
        dz = zc - y0
        # xi solves a xi^2 + b xi + c = 0; the root below is the one in [0, 1], written so
        # it does not cancel (Durkan et al. 2019, appendix A).
        mix = d1 + d0 - 2 * s
        a = h * (s - d0) + dz * mix
        b = h * d0 - dz * mix
        c = -s * dz
        disc = (b.pow(2) - 4 * a * c).clamp_min(0)
        xi = ((2 * c) / (-b - torch.sqrt(disc))).clamp(0, 1)
        x = x0 + xi * w
        t = xi * (1 - xi)
        denom = s + mix * t
        deriv = s.pow(2) * (d1 * xi.pow(2) + 2 * s * t + d0 * (1 - xi).pow(2)) / denom.pow(2)
        x = torch.where(inside, x, z)
        return x, torch.where(inside, -torch.log(deriv), torch.zeros_like(z))

    def extra_repr(self) -> str:
        return f"bins={self.bins}, bound={self.bound:g}"
