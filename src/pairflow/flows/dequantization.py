r"""Variational dequantization: a conditional flow q(u | x) for the dequantization noise.

Uniform dequantization scores the continuous model at y = (x + u) / 256 with u ~ U[0, 1)^D;
its bits/dim bounds the discrete model's, with a gap where the model's density is not flat
within each pixel's bin. Flow++ learns the noise instead, u ~ q(u | x), and maximises

.. math:: \log P(x) \ge \mathbb{E}_{u \sim q(u \mid x)}
    \left[\log p\left(\tfrac{x + u}{256}\right) - D \ln 256 - \log q(u \mid x)\right],

which equals log P(x) when q(u | x) is the model's own density within the bin. Uniform q is
the special case log q = 0, so the best q is never worse. The number reported is a
*variational bound* on the bits/dim, not the exact likelihood of the continuous model.

References:
    Ho, Chen, Srinivas, Duan and Abbeel, "Flow++: Improving flow-based generative models with
    variational dequantization and architecture design", ICML 2019, sec. 3.1.
"""

from __future__ import annotations

import math
from typing import get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pairflow.flows.base import Compose, Transform
from pairflow.flows.coupling import AffineCoupling
from pairflow.flows.masks import checkerboard_mask
from pairflow.flows.preprocessing import dequantize
from pairflow.options import NUM_LEVELS, Dequantization

__all__ = [
    "Dequantizer",
    "UniformDequantizer",
    "VariationalDequantizer",
    "GaussianDequantizer",
    "DEQUANTIZATIONS",
]

MODE_MARGIN = 1e-3
"""How far inside its bin :meth:`VariationalDequantizer.mode_noise` keeps a pixel."""

DEQUANTIZATIONS = get_args(Dequantization)
"""How pixels are dequantized: u ~ U[0, 1) (exact continuous likelihood) or u ~ q(u | x)."""


class Dequantizer(nn.Module):
    """A flow's dequantizer: 8-bit pixels -> continuous data y in [0, 1) and log q(u | x).

    The flow scores y; ``log_q`` is what its log-density loses to the noise: 0 for uniform
    noise (the flow's bits/dim is then the exact likelihood of the continuous model), log of
    the learned q's density otherwise (a variational bound, :attr:`is_bound`).
    """

    is_bound: bool = False
    """Whether bits/dim under this dequantizer is a bound (Flow++) rather than exact."""

    noise_sigma: float = 0.0
    """The standard deviation of Gaussian noise in the data's [-1, 1] space (0: none): a flow
    trained so models noisy data, and its bits/dim are of noisy data."""

    def dequantize(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """One draw y = (x + u) / 256, u ~ q(u | x), with log q(u | x) (B,)."""
        raise NotImplementedError

    def central(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """One deterministic y per image (where the flow was fitted), with its log q (B,)."""
        raise NotImplementedError


class UniformDequantizer(Dequantizer):
    """u ~ U[0, 1): RealNVP's and Glow's dequantization; log q = 0, bits/dim exact.

    Example:
        >>> y, log_q = UniformDequantizer().central(torch.tensor([[0, 255]], dtype=torch.uint8))
        >>> y, log_q
        (tensor([[0.0020, 0.9980]]), tensor([0.]))
    """

    def dequantize(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        return dequantize(x, generator), x.new_zeros(x.shape[0], dtype=torch.float32)

    def central(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Bin centres, u = 1/2."""
        return dequantize(x, noise="center"), x.new_zeros(x.shape[0], dtype=torch.float32)


class GaussianDequantizer(Dequantizer):
    r"""TarFlow's noise augmentation in the data's space: y = (x + 1/2) / 256 + (sigma / 2) eps.

    In the [-1, 1] space of :class:`~pairflow.flows.preprocessing.Scale` the bin centres get
    N(0, sigma^2) noise. The flow then models the noisy data: its bits/dim (log q = 0) are the
    negative log-density of noisy images on the pixel scale, reported as such, and its samples
    end with a score-based denoising step. Scored with uniform noise instead
    (:meth:`~pairflow.flows.flow.Flow.with_uniform_dequantization`), the same density gives
    the exact bits/dim of clean 8-bit data.

    Arguments:
        sigma: the noise's standard deviation in [-1, 1] units (TarFlow: 0.05 to 0.15).

    References:
        Zhai et al., "Normalizing Flows are Capable Generative Models" (TarFlow), 2024.

    Example:
        >>> q = GaussianDequantizer(0.1)
        >>> x = torch.tensor([[0, 255]], dtype=torch.uint8)
        >>> q.central(x)[0]
        tensor([[0.0020, 0.9980]])
    """

    def __init__(self, sigma: float):
        super().__init__()
        if not (isinstance(sigma, (int, float)) and 0 < sigma < 10):
            raise ValueError(f"Gaussian dequantization needs noise sigma in (0, 10), got {sigma!r}")
        self.noise_sigma = float(sigma)

    def dequantize(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        centre, log_q = self.central(x)
        device = generator.device if generator is not None else x.device
        eps = torch.randn(x.shape, generator=generator, device=device).to(x.device)
        return centre + (self.noise_sigma / 2) * eps, log_q

    def central(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Bin centres, without noise (``decode(encode(x))`` gives x back)."""
        return dequantize(x, noise="center"), x.new_zeros(x.shape[0], dtype=torch.float32)

    def extra_repr(self) -> str:
        return f"sigma={self.noise_sigma:g}"


class _ImageConditioner(nn.Module):
    """Conv net reading a coupling's masked input beside features of the image x: the context."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int, features: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels + features, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)  # start as the identity coupling
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, h: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(torch.cat([h, context], dim=1))


class _ConditionalAffine(Transform):
    """Elementwise z = (h - mu(x)) exp(-log_sigma(x)): the first map from a Gaussian eps."""

    def __init__(self, channels: int, features: int):
        super().__init__()
        self.net = nn.Conv2d(features, 2 * channels, 3, padding=1)
        nn.init.zeros_(self.net.weight)
        nn.init.zeros_(self.net.bias)

    def _params(self, context: Tensor) -> tuple[Tensor, Tensor]:
        loc, log_scale = self.net(context).chunk(2, dim=1)
        return loc, 2.0 * torch.tanh(log_scale / 2.0)

    def forward(self, h: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        loc, log_scale = self._params(context)
        return (h - loc) * torch.exp(-log_scale), -log_scale.flatten(1).sum(1)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        loc, log_scale = self._params(context)
        return z * torch.exp(log_scale) + loc, log_scale.flatten(1).sum(1)


class _Logit(Transform):
    """h = logit(u) for u in (0, 1), log|dh/du| = -log u - log(1 - u)."""

    def forward(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = torch.log(u) - torch.log1p(-u)
        return h, -(torch.log(u) + torch.log1p(-u)).flatten(1).sum(1)

    def inverse(self, h: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        # log sigmoid'(h) = -softplus(-h) - softplus(h), stable for any h.
        return torch.sigmoid(h), -(F.softplus(-h) + F.softplus(h)).flatten(1).sum(1)


class VariationalDequantizer(Dequantizer):
    r"""q(u | x): a conditional flow from eps ~ N(0, I) to noise u in (0, 1)^(C, H, W).

    In the data -> latent direction (:attr:`transform`): h = logit(u), then
    ``num_couplings`` checkerboard affine couplings and an elementwise affine map whose
    conditioner nets read features of the image x (a small CNN of x / 255), giving eps.
    Sampling runs it backwards and returns log q(u | x) = log N(eps) - log|det du/deps|.
    Every last layer starts at zero, so a fresh q is the logit-normal u = sigmoid(eps).

    Arguments:
        shape: (C, H, W) of the images.
        hidden_channels: width of the conditioner nets and of the image features.
        num_couplings: checkerboard couplings (alternating parity).

    Example:
        >>> q = VariationalDequantizer((1, 4, 8), hidden_channels=8)
        >>> x = torch.randint(0, 256, (2, 1, 4, 8), dtype=torch.uint8)
        >>> u, log_q = q(x)
        >>> bool(((u > 0) & (u < 1)).all()), log_q.shape
        (True, torch.Size([2]))
    """

    def __init__(
        self, shape: tuple[int, int, int], hidden_channels: int = 16, num_couplings: int = 2
    ):
        super().__init__()
        c, h, w = shape
        if num_couplings < 0 or hidden_channels < 1:
            raise ValueError(
                f"num_couplings must be >= 0 and hidden_channels >= 1, got {num_couplings}, "
                f"{hidden_channels}"
            )
        self.shape = (c, h, w)
        f = hidden_channels
        self.features = nn.Sequential(
            nn.Conv2d(c, f, 3, padding=1), nn.ReLU(), nn.Conv2d(f, f, 3, padding=1), nn.ReLU()
        )

        def factory(i: int, o: int) -> nn.Module:
            return _ImageConditioner(i, o, hidden_channels, f)

        layers: list[Transform] = [_Logit()]
        layers += [
            AffineCoupling(checkerboard_mask(c, h, w, parity=k % 2), factory, scale_bound=2.0)
            for k in range(num_couplings)
        ]
        layers.append(_ConditionalAffine(c, f))
        self.transform = Compose(layers)
        """u -> eps given the image features (data -> latent, as every transform)."""

    is_bound = True

    def dequantize(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        u, log_q = self(x, generator)
        return (x.to(torch.float32) + u) / NUM_LEVELS, log_q

    def central(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """At the noise q maps eps = 0 to (:meth:`mode_noise`): the body was fitted to q's
        noise, not to bin centres (most MNIST pixels are 0 or 255 and q moves their noise
        towards the bin's edge)."""
        u, log_q = self.mode_noise(x)
        return (x.to(torch.float32) + u) / NUM_LEVELS, log_q

    def context(self, x: Tensor) -> Tensor:
        """Features (B, F, H, W) of images x (pixels 0..255) that every conditioner reads."""
        return self.features(x.to(torch.float32) / 255.0 - 0.5)

    def log_prob(self, u: Tensor, x: Tensor) -> Tensor:
        """log q(u | x), (B,), for noise u in (0, 1) and images x (pixels 0..255)."""
        eps, logabsdet = self.transform(u, self.context(x))
        d = eps[0].numel()
        return -0.5 * eps.pow(2).flatten(1).sum(1) - 0.5 * d * math.log(2 * math.pi) + logabsdet

    def mode_noise(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The noise q maps eps = 0 to, and its log q(u | x): deterministic, in (0, 1).

        What bin centres are for uniform noise: one representative point per image, here
        where q (and so the flow fitted to it) puts its mass rather than at u = 1/2.
        """
        eps = torch.zeros(x.shape, device=x.device)
        u, _ = self.transform.inverse(eps, self.context(x))
        # 1e-3 inside the bin: (x + u) / 256 quantizes back to x in float32 (at u = 1 - 1e-6,
        # x + u rounds up to x + 1 above x = 16).
        u = u.clamp(MODE_MARGIN, 1 - MODE_MARGIN)
        return u, self.log_prob(u, x)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw u ~ q(u | x) for images x (B, C, H, W); returns (u in (0, 1), log q(u | x) (B,))."""
        device = generator.device if generator is not None else x.device
        eps = torch.randn(x.shape, generator=generator, device=device).to(x.device)
        u, logabsdet = self.transform.inverse(eps, self.context(x))
        d = eps[0].numel()
        log_normal = -0.5 * eps.pow(2).flatten(1).sum(1) - 0.5 * d * math.log(2 * math.pi)
        # Keep u strictly inside (0, 1): float32 sigmoid saturates to 1.0 beyond h ~ 17.
        u = u.clamp(1e-6, 1 - 1e-6)
        return u, log_normal - logabsdet
