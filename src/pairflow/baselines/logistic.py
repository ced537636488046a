r"""A discretized mixture of logistics: a probability mass function over the 256 pixel levels.

Each pixel k in {0, ..., 255} owns the bin [k - 1/2, k + 1/2] of a mixture of K logistic
densities on the pixel scale; the two end bins take the tails, (-inf, 1/2] and
[254.5, inf), so the 256 masses sum to exactly one. With logistic CDF
:math:`F(v) = \sigma((v - \mu) / s)`, a component gives

.. math::
    P(0) = \sigma(a_0), \quad P(255) = \sigma(-b_{255}), \quad
    P(k) = \sigma(a_k) - \sigma(b_k) = \sigma(a_k)\,\sigma(-b_k)\,(1 - e^{-1/s}),

with :math:`a_k = (k + 1/2 - \mu)/s` and :math:`b_k = (k - 1/2 - \mu)/s`; the factored form
of the interior mass is exact and stays accurate in float32 where the difference of two
sigmoids would cancel.

Being a distribution over the integers 0..255 themselves (no dequantization), its negative
log-likelihood in bits per pixel is directly a 256-level bits/dim.

References:
    Salimans, Karpathy, Chen and Kingma, "PixelCNN++: improving the PixelCNN with
    discretized logistic mixture likelihood and other modifications", ICLR 2017.
    Kingma et al., "Improved variational inference with inverse autoregressive flow",
    NeurIPS 2016 (discretized logistic VAE decoder).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["MixtureParams", "split_params", "log_prob", "sample", "mean", "MIN_LOG_SCALE"]

from pairflow.options import NUM_LEVELS

MIN_LOG_SCALE = -4.0
"""Smallest log-scale on the pixel scale (s >= 0.018 pixel: one bin can hold all the mass)."""

MixtureParams = tuple[Tensor, Tensor, Tensor]
"""(logits, means, log_scales), each (B, K, C, H, W); means and scales on the pixel scale."""


def split_params(raw: Tensor, num_mixtures: int, channels: int) -> MixtureParams:
    """Network output (B, 3 K C, H, W) -> mixture parameters on the pixel scale.

    The mean's raw value m maps to 127.5 (1 + m), so m in [-1, 1] spans the pixel range (it
    may go beyond, to pile mass into an end bin); the log-scale is offset by log 127.5 to
    the same scale and floored at :data:`MIN_LOG_SCALE`.

    Example:
        >>> logits, means, log_scales = split_params(torch.zeros(2, 6, 4, 8), 2, 1)
        >>> means.shape, float(means[0, 0, 0, 0, 0])
        (torch.Size([2, 2, 1, 4, 8]), 127.5)
    """
    b, _, h, w = raw.shape
    raw = raw.float().view(b, 3, num_mixtures, channels, h, w)
    logits = raw[:, 0]
    means = 127.5 * (1.0 + raw[:, 1])
    log_scales = (raw[:, 2] + math.log(127.5)).clamp(min=MIN_LOG_SCALE)
    return logits, means, log_scales


def _component_log_mass(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """log P_k(x) of each component, (B, K, C, H, W), for pixel values x (B, 1, C, H, W)."""
    inv_s = torch.exp(-log_scales)
    upper = (x + 0.5 - means) * inv_s  # a_k
    lower = (x - 0.5 - means) * inv_s  # b_k
    log_cdf_upper = F.logsigmoid(upper)  # log F(k + 1/2)
    log_sf_lower = F.logsigmoid(-lower)  # log (1 - F(k - 1/2))
    log_width = torch.log(-torch.expm1(-inv_s))  # log (1 - e^{-1/s}); a_k - b_k = 1/s
    interior = log_cdf_upper + log_sf_lower + log_width
    return torch.where(
        x <= 0, log_cdf_upper, torch.where(x >= NUM_LEVELS - 1, log_sf_lower, interior)
    )


def log_prob(x: Tensor, params: MixtureParams) -> Tensor:
    """Log-probability of whole images under independent per-pixel mixtures, in nats.

    Arguments:
        x: pixel values 0..255 (any dtype holding integers), (B, C, H, W).
        params: ``(logits, means, log_scales)``, each (B, K, C, H, W).

    Returns:
        (B,) float: sum over pixels of log P(x_pixel).

    Example:
        >>> x = torch.tensor([0, 7, 255]).view(1, 1, 1, 3)
        >>> params = split_params(torch.zeros(1, 3, 1, 3), 1, 1)
        >>> log_prob(x, params).shape
        torch.Size([1])
    """
    logits, means, log_scales = params
    x = x.to(means.dtype).unsqueeze(1)  # (B, 1, C, H, W)
    log_mass = _component_log_mass(x, means, log_scales)  # (B, K, C, H, W)
    per_pixel = torch.logsumexp(F.log_softmax(logits, dim=1) + log_mass, dim=1)  # (B, C, H, W)
    return per_pixel.flatten(1).sum(1)


def sample(params: MixtureParams, generator: torch.Generator | None = None) -> Tensor:
    """Draw pixel values from the mixtures: a component by Gumbel-max, then a logistic draw
    v = mu + s log(u / (1 - u)), rounded to its bin and clamped to 0..255 (the end bins).

    Returns:
        uint8 (B, C, H, W).
    """
    logits, means, log_scales = params

    def uniform(shape):
        device = generator.device if generator is not None else means.device
        u = torch.rand(shape, generator=generator, device=device, dtype=means.dtype)
        return u.to(means.device).clamp_(1e-6, 1.0 - 1e-6)

    gumbel = -torch.log(-torch.log(uniform(logits.shape)))
    k = (logits + gumbel).argmax(dim=1, keepdim=True)  # (B, 1, C, H, W)
    mu = means.gather(1, k).squeeze(1)
    log_s = log_scales.gather(1, k).squeeze(1)
    u = uniform(mu.shape)
    v = mu + torch.exp(log_s) * (torch.log(u) - torch.log1p(-u))
    v = torch.nan_to_num(v, nan=0.0)
    return torch.round(v).clamp_(0, NUM_LEVELS - 1).to(torch.uint8)


def mean(params: MixtureParams, chunk: int = 64) -> Tensor:
    """The expected value of each pixel, sum_k k P(k) over all 256 levels, rounded.

    Deterministic; where a pixel is "ink or background" it is gray, like a Bernoulli
    decoder's mean (the most probable value would be the background there).

    Returns:
        uint8 (B, C, H, W).
    """
    logits, means, log_scales = params
    out = []
    levels = torch.arange(NUM_LEVELS, device=means.device, dtype=means.dtype)
    for lo in range(0, means.shape[0], chunk):
        lg, mu, ls = (t[lo : lo + chunk].unsqueeze(1) for t in (logits, means, log_scales))
        x = levels.view(1, NUM_LEVELS, 1, 1, 1, 1)  # (1, L, 1, 1, 1, 1) against (b, 1, K, ...)
        log_mass = _component_log_mass(x, mu, ls)  # (b, L, K, C, H, W)
        per_level = torch.logsumexp(F.log_softmax(lg, dim=2) + log_mass, dim=2)  # (b, L, ...)
        expected = (per_level.exp() * levels.view(1, NUM_LEVELS, 1, 1, 1)).sum(1)
        out.append(torch.round(expected).clamp_(0, NUM_LEVELS - 1).to(torch.uint8))
    return torch.cat(out)
