"""Baselines beside the flows: a VAE (likelihood bound) and a GAN (samples only).

Both take and return what :class:`~pairflow.flows.PairFlow` does (pixel values 0..255,
shape (B, 1, 28, 56), pair labels 0..99 as ``cond`` for their conditional variants) and
train, sample and evaluate through the same machinery: ``pairflow train --model vae|gan``.

Example:
    >>> from pairflow.baselines import build_vae
    >>> build_vae("conv").sample(4).shape
    torch.Size([4, 1, 28, 56])
"""

from pairflow.baselines.gan import GANConfig, PairGAN, build_gan
from pairflow.baselines.vae import PairVAE, VAEConfig, build_vae

__all__ = ["GANConfig", "PairGAN", "PairVAE", "VAEConfig", "build_gan", "build_vae"]
