"""Noise augmentation of a flow's input and the score-based denoising step that undoes it.

A flow trained on noisy data h~ = h + sigma eps models the noisy density; its samples are of
noisy data too, so sampling ends with one denoising step by Tweedie's formula,
E[h | h~] = h~ + sigma^2 grad log p(h~), with the flow's own score. The noise is added in the
logit space of the body's input (``noise_sigma`` with uniform or variational
dequantization: this part adds it) or in the data's [-1, 1] space (``dequantization=
"gaussian"``: the dequantizer adds it, and this part only denoises).

References:
    Zhai et al., "Normalizing Flows are Capable Generative Models" (TarFlow), 2024.
    Efron, "Tweedie's formula and selection bias", JASA 2011.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["NoiseAugmentation"]


class NoiseAugmentation(nn.Module):
    """Gaussian noise N(0, sigma^2) on the body's input h, and the denoising step after sampling.

    Arguments:
        sigma: the noise's standard deviation in h's units (> 0).
        in_training: whether this part adds the noise in training (False where the
            dequantizer already did, in the data's space).

    Example:
        >>> noise = NoiseAugmentation(0.1)
        >>> h = torch.zeros(2, 1, 4, 8)
        >>> eps = noise.draw(h, torch.Generator().manual_seed(0))
        >>> noise.perturb(h, eps).std() > 0
        tensor(True)
    """

    def __init__(self, sigma: float, in_training: bool = True):
        super().__init__()
        if not sigma > 0:
            raise ValueError(f"noise sigma must be > 0, got {sigma!r}")
        self.sigma = float(sigma)
        self.in_training = in_training

    def draw(self, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """eps ~ N(0, I) shaped like ``like`` (the training noise, drawn once per batch)."""
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)

    def perturb(self, h: Tensor, eps: Tensor) -> Tensor:
        """h + sigma eps."""
        return h + self.sigma * eps

    def denoise(self, h: Tensor, log_density: Callable[[Tensor], Tensor]) -> Tensor:
        """One denoising step h + sigma^2 grad_h log p(h), with ``log_density`` (B,) of h.

        Tweedie's formula: for data observed with N(0, sigma^2) noise, the posterior mean of
        the clean data given the noisy h is h + sigma^2 times the score of the noisy density,
        which is what the flow models.
        """
        with torch.enable_grad():
            h = h.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(log_density(h).sum(), h)
        return (h + self.sigma**2 * grad).detach()

    def extra_repr(self) -> str:
        return f"sigma={self.sigma:g}, in_training={self.in_training}"
