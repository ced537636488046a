r"""A convolutional VAE for digit pairs, with a discretized-logistic likelihood on the pixels.

Model: z ~ N(0, I) (``latent_dim``), x | z ~ independent per-pixel discretized mixtures of
logistics over the 256 levels (:mod:`pairflow.baselines.logistic`); the encoder q(z | x)
is a diagonal Gaussian. Why this likelihood rather than a Bernoulli: a Bernoulli models
binarized (or [0, 1]-scaled, which is not a normalized distribution) pixels, so its ELBO
is not a bits/dim on the 256-level data; the discretized logistic is a probability mass
function on the integer pixel values, so

.. math:: \mathrm{bpd} \le \frac{-\mathrm{ELBO}(x)}{D \ln 2},
    \quad -\mathrm{ELBO} = \mathrm{KL}(q(z|x) \,\|\, p(z)) - E_{q}[\log p(x|z)],

is an upper bound on the model's own 256-level bits/dim, on the same D = C H W and the
same pixel values as the flows' numbers. A mixture (``num_mixtures`` > 1) lets a pixel be
"ink or background" at a stroke's edge, which one logistic can only cover with a wide,
costly spread.

Sampling draws z ~ N(0, T^2 I) and then the pixels from p(x | z): the model's own
distribution at T = 1, pixel noise included.

References:
    Kingma and Welling, "Auto-encoding variational Bayes", ICLR 2014.
    Sohn, Lee and Yan, "Learning structured output representation using deep conditional
    generative models", NeurIPS 2015 (the conditional VAE).
    Salimans et al., "PixelCNN++", ICLR 2017 (discretized logistic mixture).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from pairflow.baselines import logistic
from pairflow.baselines.base import BaselineConfig, PairModel, scale_pixels
from pairflow.flows.nets import label_context_map

__all__ = ["VAEConfig", "PairVAE", "build_vae"]


@dataclass
class VAEConfig(BaselineConfig):
    """Everything needed to rebuild a :class:`PairVAE`; plain Python values only.

    Arguments:
        preset: name of the preset this config came from (informational).
        channels, height, width: image shape (C, H, W); 1x28x56 for digit pairs (H and W
            multiples of 4).
        latent_dim: size of z.
        hidden_channels: c; the encoder's convolutions have c then 2c channels (at H/2,
            H/4), the decoder's mirror them.
        hidden_features: width of the fully connected layer between the feature map and z.
        num_mixtures: logistic components per pixel of p(x | z).
        conditional: condition encoder and decoder on the labels (a conditional VAE).
        embed_dim: size of each digit's embedding in a conditional model.
        layout: ``"pair"`` (labels 10 a + b in 0..99, one vector per side) or ``"single"``
            (class labels 0..9, one vector over the whole image); training sets it from
            ``--layout``.
        precision: ``"fp32"`` or ``"bf16"`` (networks under bf16 autocast; the ELBO maths in
            float32).
    """

    preset: str = "custom"
    channels: int = 1
    height: int = 28
    width: int = 56
    latent_dim: int = 32
    hidden_channels: int = 32
    hidden_features: int = 256
    num_mixtures: int = 2
    conditional: bool = False
    embed_dim: int = 8
    layout: str = "pair"
    precision: str = "fp32"

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # CPU-sized: 3.3M parameters, most in the two fully connected layers.
        "conv": dict(latent_dim=32, hidden_channels=32, hidden_features=256, num_mixtures=2),
    }
    _POSITIVE: ClassVar[tuple[str, ...]] = (
        "channels",
        "height",
        "width",
        "latent_dim",
        "hidden_channels",
        "hidden_features",
        "num_mixtures",
        "embed_dim",
    )

    def __post_init__(self) -> None:
        self._check()


class _Encoder(nn.Module):
    """x (B, C, H, W) in [-1, 1] [+ label map] -> (mean, log_var) of q(z | x), each (B, L)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        c, e = config.hidden_channels, config.embed_dim if config.conditional else 0
        self.context = e
        self.convs = nn.Sequential(
            nn.Conv2d(config.channels + e, c, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(c, c, 4, stride=2, padding=1),  # H/2
            nn.SiLU(),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1),  # H/4
            nn.SiLU(),
            nn.Flatten(),
        )
        flat = 2 * c * (config.height // 4) * (config.width // 4)
        self.fc = nn.Sequential(
            nn.Linear(flat + config.label_sides * e, config.hidden_features),
            nn.SiLU(),
            nn.Linear(config.hidden_features, 2 * config.latent_dim),
        )

    def forward(self, h: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.context:
            h = torch.cat([h, label_context_map(context.to(h.dtype), h.shape[2], h.shape[3])], 1)
        h = self.convs(h)
        if self.context:
            h = torch.cat([h, context.flatten(1).to(h.dtype)], dim=1)
        mean, log_var = self.fc(h).float().chunk(2, dim=1)
        # Bounded for stability: std between e^-6 and e^3 covers any useful posterior.
        return mean, log_var.clamp(-12.0, 6.0)


class _Decoder(nn.Module):
    """z (B, L) [+ labels] -> raw mixture parameters (B, 3 K C, H, W)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        c, e = config.hidden_channels, config.embed_dim if config.conditional else 0
        self.context = e
        self.base = (2 * c, config.height // 4, config.width // 4)
        self.fc = nn.Sequential(
            nn.Linear(config.latent_dim + config.label_sides * e, config.hidden_features),
            nn.SiLU(),
            nn.Linear(config.hidden_features, math.prod(self.base)),
            nn.SiLU(),
        )
        out = 3 * config.num_mixtures * config.channels
        self.convs = nn.Sequential(
            nn.ConvTranspose2d(2 * c + e, c, 4, stride=2, padding=1),  # H/2
            nn.SiLU(),
            nn.ConvTranspose2d(c, c, 4, stride=2, padding=1),  # H
            nn.SiLU(),
            nn.Conv2d(c, out, 3, padding=1),
        )

    def forward(self, z: Tensor, context: Tensor | None) -> Tensor:
        if self.context:
            z = torch.cat([z, context.flatten(1).to(z.dtype)], dim=1)
        h = self.fc(z).view(-1, *self.base)
        if self.context:
            h = torch.cat([h, label_context_map(context.to(h.dtype), h.shape[2], h.shape[3])], 1)
        return self.convs(h)


class PairVAE(PairModel):
    """A (conditional) convolutional VAE over digit-pair images; the ELBO bounds bits/dim.

    The pixel-level methods take and return pixel values 0..255 like
    :class:`~pairflow.flows.PairFlow`: :meth:`bits_per_dim` (here the negative ELBO, an
    upper bound), :meth:`sample`, :meth:`encode` (posterior mean) and :meth:`decode`.

    Arguments:
        config: the :class:`VAEConfig` (kept as ``.config``).

    Example:
        >>> vae = build_vae("conv", height=4, width=8, hidden_channels=4, hidden_features=8)
        >>> x = torch.randint(0, 256, (3, 1, 4, 8), dtype=torch.uint8)
        >>> vae.bits_per_dim(x).shape
        torch.Size([3])
        >>> vae.sample(2).shape, vae.sample(2).dtype
        (torch.Size([2, 1, 4, 8]), torch.uint8)
    """

    bits_per_dim_is_bound = True
    """:meth:`bits_per_dim` is an upper bound (negative ELBO), not an exact likelihood."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        if config.conditional:
            # Rows 0..9: left digit, rows 10..19: right digit; 0..9 for a single image.
            self.digit_embedding = nn.Embedding(10 * config.label_sides, config.embed_dim)
        self.encoder = _Encoder(config)
        self.decoder = _Decoder(config)

    def _context(self, cond: Tensor | None) -> Tensor | None:
        if cond is None:
            return None
        return self.digit_embedding(self._digits(cond))  # (B, S, E)

    # ----------------------------------------------------------------- the two halves
    def posterior(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """q(z | x): its mean and log-variance, each float32 (B, latent_dim).

        Arguments:
            x: pixel values 0..255, (B, C, H, W).
            cond: pair labels (B,), conditional models only.
        """
        x = self._check_pixels(x)
        cond = self._check_cond(cond, x.shape[0])
        with self._autocast():
            return self.encoder(scale_pixels(x), self._context(cond))

    def _likelihood_params(self, z: Tensor, ctx: Tensor | None) -> logistic.MixtureParams:
        with self._autocast():
            raw = self.decoder(z, ctx)
        return logistic.split_params(raw, self.config.num_mixtures, self.config.channels)

    def log_likelihood(self, x: Tensor, z: Tensor, cond: Tensor | None = None) -> Tensor:
        """log p(x | z) in nats, (B,): a probability mass on the 256-level pixels.

        Arguments:
            x: pixel values 0..255, (B, C, H, W).
            z: latents (B, latent_dim).
            cond: pair labels (B,), conditional models only.
        """
        x = self._check_pixels(x)
        cond = self._check_cond(cond, x.shape[0])
        return logistic.log_prob(x, self._likelihood_params(z, self._context(cond)))

    # ----------------------------------------------------------------- the bound
    def elbo(
        self,
        x: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """A one-sample estimate of the ELBO, in nats, (B,).

        ELBO = E_q[log p(x | z)] - KL(q(z | x) || N(0, I)): the expectation by one
        reparameterised draw z = mean + std * eps (unbiased), the KL in closed form.

        Arguments:
            x: pixel values 0..255, (B, C, H, W).
            cond: pair labels (B,), conditional models only.
            generator: random generator of eps.
        """
        log_px, mean, log_var, _, _ = self._draw(x, cond, generator)
        kl = 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).sum(1)  # (B,)
        return log_px - kl

    def _draw(self, x: Tensor, cond, generator: torch.Generator | None):
        """One reparameterised z = mean + std * eps ~ q(z | x) and log p(x | z): ``(log_px
        (B,), mean, log_var, eps, z)``, the last four (B, latent_dim), all float32."""
        x = self._check_pixels(x)
        cond = self._check_cond(cond, x.shape[0])
        ctx = self._context(cond)
        with self._autocast():
            mean, log_var = self.encoder(scale_pixels(x), ctx)  # float32 (the encoder casts)
        eps = self._normal(mean.shape, generator).to(mean.dtype)
        z = mean + torch.exp(0.5 * log_var) * eps  # (B, L)
        log_px = logistic.log_prob(x, self._likelihood_params(z, ctx))  # (B,)
        return log_px, mean, log_var, eps, z

    def log_prob(
        self,
        x: Tensor,
        cond: Tensor | int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The ELBO (B,) in nats: a lower bound on log p(x), not the likelihood itself.

        Arguments:
            x, cond, generator: as in :meth:`elbo`.
        """
        return self.elbo(x, cond, generator)

    def bits_per_dim(
        self,
        x: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        r"""Negative ELBO in bits per dimension: an upper bound on the 256-level bits/dim.

        .. math:: -\mathrm{ELBO}(x) / (D \ln 2), \quad D = C H W.

        p(x | z) is a mass function on the integer pixel values, so no dequantization term
        enters: the number compares directly with :meth:`PairFlow.bits_per_dim
        <pairflow.flows.PairFlow.bits_per_dim>` (itself a bound on its flow's discrete
        bits/dim). One latent draw per call (unbiased for -ELBO): average calls for less
        variance.

        Returns:
            (B,) float32.
        """
        return -self.elbo(x, cond, generator) / (self.config.num_dims * math.log(2))

    def log_weight(
        self,
        x: Tensor,
        cond: Tensor | int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        r"""One importance weight log w in nats, with E[w] = p(x): one draw z ~ q(z | x),

        .. math:: \log w = \log p(x \mid z) + \log \mathcal{N}(z; 0, I) - \log q(z \mid x).

        E[log w] is the ELBO (:meth:`elbo` takes the KL term in closed form instead: the same
        expectation, less variance); the log-mean-exp of K weights is the IWAE bound
        (Burda et al. 2016), tighter as K grows and equal to log p(x) in the limit.

        Arguments:
            x, cond, generator: as in :meth:`elbo`.

        Returns:
            (B,) float32.
        """
        log_px, _, log_var, eps, z = self._draw(x, cond, generator)
        log_2pi = math.log(2 * math.pi)
        log_pz = -0.5 * (z.pow(2) + log_2pi).sum(1)
        log_qz = -0.5 * (eps.pow(2) + log_var + log_2pi).sum(1)
        return log_px + log_pz - log_qz

    # ----------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        n: int | tuple[int],
        cond: Tensor | int | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        pixels: str = "sample",
    ) -> Tensor:
        """Draw n images: z ~ N(0, T^2 I), then every pixel from p(x | z).

        Arguments:
            n: number of images (>= 1), or ``(n,)`` as in ``torch.distributions``.
            temperature: T > 0, the latent's standard deviation.
            generator: random generator (latents and pixels).
            cond: pair labels (n,) or one int for all, conditional models only.
            pixels: ``"sample"`` (default) draws each pixel from p(x | z): the model's own
                distribution, whose independent pixel noise speckles stroke edges;
                ``"mean"`` takes each pixel's expected value E[x | z] instead (smoother
                images, no longer samples of the model the ELBO describes).

        Returns:
            uint8 (n, C, H, W).
        """
        n = self._check_sampling(n, temperature)
        if pixels not in ("sample", "mean"):
            raise ValueError(f"unknown pixels {pixels!r}; valid: 'sample', 'mean'")
        cond = self._check_cond(cond, n)
        z = self._normal((n, self.config.latent_dim), generator) * temperature
        params = self._likelihood_params(z, self._context(cond))
        return logistic.sample(params, generator) if pixels == "sample" else logistic.mean(params)

    @torch.no_grad()
    def encode(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """Posterior means of images x (pixels 0..255): float32 (B, latent_dim)."""
        return self.posterior(x, cond)[0]

    @torch.no_grad()
    def decode(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        """The expected image E[x | z], rounded (deterministic), uint8 (B, C, H, W)."""
        if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[1] != self.config.latent_dim:
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"expected latents of shape (B, {self.config.latent_dim}), got {got}")
        cond = self._check_cond(cond, z.shape[0])
        params = self._likelihood_params(z.to(self._device, torch.float32), self._context(cond))
        return logistic.mean(params)


def build_vae(config: VAEConfig | str = "conv", **overrides: Any) -> PairVAE:
    """Build a :class:`PairVAE` from a config, or from a preset name plus overrides.

    Example:
        >>> build_vae("conv", conditional=True).config.conditional
        True
    """
    if isinstance(config, str):
        config = VAEConfig.from_preset(config, **overrides)
    elif overrides:
        config = VAEConfig.from_dict({**config.to_dict(), **overrides})
    return PairVAE(config)
