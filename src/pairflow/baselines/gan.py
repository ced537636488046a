"""A DCGAN-style GAN for digit pairs: spectral-norm discriminator, hinge loss; no likelihood.

The recipe is SNGAN's (Miyato et al. 2018) on a DCGAN-shaped pair of networks:

- generator: z ~ N(0, I) -> fully connected -> (4c, H/4, W/4) -> two stride-2 transposed
  convolutions with batch norm and ReLU -> 3x3 convolution -> tanh -> pixels;
- discriminator: five convolutions (two of stride 2) with LeakyReLU(0.1), every weight
  spectrally normalised (one power iteration per training forward), then a linear output;
- hinge loss, one discriminator step per generator step, Adam with beta1 = 0 and
  beta2 = 0.9 (SNGAN's and BigGAN's setting; with DCGAN's beta1 = 0.5 a tiny conditional
  model on synthetic pairs collapsed at learning rate 1e-3, with beta1 = 0 it did not).

Spectral normalisation was chosen over WGAN-GP because it costs one power iteration per
layer instead of a second backward pass through the discriminator (the gradient penalty),
which matters on a CPU budget, and it is stable with the same settings across datasets.

The conditional GAN feeds the pair labels to the generator as PairFlow does (each digit's
embedding concatenated to z, and spread over the image, left digit's vector on the left
half, as extra channels of the first convolution), and to the discriminator by projection:
a per-position inner product of the last feature map with the digit embeddings spread the
same way, so the left half's features are scored against the left label.

References:
    Radford, Metz and Chintala, "Unsupervised representation learning with deep
    convolutional generative adversarial networks", ICLR 2016.
    Miyato, Kataoka, Koyama and Yoshida, "Spectral normalization for generative adversarial
    networks", ICLR 2018.
    Miyato and Koyama, "cGANs with projection discriminator", ICLR 2018.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from pairflow.baselines.base import BaselineConfig, PairModel, scale_pixels
from pairflow.flows.nets import label_context_map

__all__ = ["GANConfig", "PairGAN", "build_gan"]


@dataclass
class GANConfig(BaselineConfig):
    """Everything needed to rebuild a :class:`PairGAN`; plain Python values only.

    Arguments:
        preset: name of the preset this config came from (informational).
        channels, height, width: image shape (C, H, W); 1x28x56 for digit pairs (H and W
            multiples of 4).
        latent_dim: size of z.
        generator_channels: c_g; the generator's maps have 4 c_g, 2 c_g, c_g channels at
            H/4, H/2, H.
        discriminator_channels: c_d; the discriminator's have c_d, 2 c_d, 4 c_d at H, H/2, H/4.
        beta1, beta2: Adam's moment decay rates for both networks.
        discriminator_steps: discriminator updates per generator update.
        conditional: condition both networks on the labels.
        embed_dim: size of each digit's embedding in the conditional generator.
        layout: ``"pair"`` (labels 10 a + b in 0..99, one vector per side) or ``"single"``
            (class labels 0..9, one vector over the whole image); training sets it from
            ``--layout``.
        precision: ``"fp32"`` or ``"bf16"`` (both networks under bf16 autocast).
    """

    preset: str = "custom"
    channels: int = 1
    height: int = 28
    width: int = 56
    latent_dim: int = 64
    generator_channels: int = 32
    discriminator_channels: int = 16
    beta1: float = 0.0
    beta2: float = 0.9
    discriminator_steps: int = 1
    conditional: bool = False
    embed_dim: int = 8
    layout: str = "pair"
    precision: str = "fp32"

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # CPU-sized DCGAN: 0.98M generator and 0.09M discriminator parameters. The
        # discriminator is the costlier network here (it runs at full resolution, three
        # passes and their backward per step), hence its narrower maps.
        "dcgan": dict(latent_dim=64, generator_channels=32, discriminator_channels=16),
    }
    _POSITIVE: ClassVar[tuple[str, ...]] = (
        "channels",
        "height",
        "width",
        "latent_dim",
        "generator_channels",
        "discriminator_channels",
        "discriminator_steps",
        "embed_dim",
    )

    def __post_init__(self) -> None:
        self._check()
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"GANConfig.{name} must be in [0, 1), got {value!r}")


class Generator(nn.Module):
    """z (B, L) [+ label embedding (B, S, E)] -> images in [-1, 1], (B, C, H, W)."""

    def __init__(self, config: GANConfig):
        super().__init__()
        c, e = config.generator_channels, config.embed_dim if config.conditional else 0
        self.context = e
        self.base = (4 * c, config.height // 4, config.width // 4)
        if e:
            self.digit_embedding = nn.Embedding(10 * config.label_sides, e)
        self.fc = nn.Linear(config.latent_dim + config.label_sides * e, math.prod(self.base))
        self.bn0 = nn.BatchNorm2d(4 * c)
        self.convs = nn.Sequential(
            nn.ConvTranspose2d(4 * c + e, 2 * c, 4, stride=2, padding=1),  # H/2
            nn.BatchNorm2d(2 * c),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1),  # H
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.Conv2d(c, config.channels, 3, padding=1),
            nn.Tanh(),
        )

    def forward(self, z: Tensor, digits: Tensor | None = None) -> Tensor:
        ctx = self.digit_embedding(digits) if self.context else None  # (B, S, E)
        if ctx is not None:
            z = torch.cat([z, ctx.flatten(1)], dim=1)
        h = F.relu(self.bn0(self.fc(z).view(-1, *self.base)))
        if ctx is not None:
            h = torch.cat([h, label_context_map(ctx.to(h.dtype), h.shape[2], h.shape[3])], 1)
        return self.convs(h)


class Discriminator(nn.Module):
    """Images in [-1, 1] (B, C, H, W) [+ digit rows (B, S)] -> real/fake scores (B,)."""

    def __init__(self, config: GANConfig):
        super().__init__()
        c = config.discriminator_channels
        self.convs = nn.Sequential(
            spectral_norm(nn.Conv2d(config.channels, c, 3, padding=1)),
            nn.LeakyReLU(0.1),
            spectral_norm(nn.Conv2d(c, 2 * c, 4, stride=2, padding=1)),  # H/2
            nn.LeakyReLU(0.1),
            spectral_norm(nn.Conv2d(2 * c, 2 * c, 3, padding=1)),
            nn.LeakyReLU(0.1),
            spectral_norm(nn.Conv2d(2 * c, 4 * c, 4, stride=2, padding=1)),  # H/4
            nn.LeakyReLU(0.1),
            spectral_norm(nn.Conv2d(4 * c, 4 * c, 3, padding=1)),
            nn.LeakyReLU(0.1),
        )
        flat = 4 * c * (config.height // 4) * (config.width // 4)
        self.out = spectral_norm(nn.Linear(flat, 1))
        if config.conditional:
            # Projection: one vector per digit and side, in the last feature map's space.
            self.projection = spectral_norm(nn.Embedding(10 * config.label_sides, 4 * c))
        self.conditional = config.conditional

    def forward(self, x: Tensor, digits: Tensor | None = None) -> Tensor:
        h = self.convs(x)  # (B, 4c, H/4, W/4)
        score = self.out(h.flatten(1)).squeeze(1)
        if self.conditional:
            spread = label_context_map(self.projection(digits).to(h.dtype), h.shape[2], h.shape[3])
            score = score + (spread * h).flatten(1).sum(1)
        return score.float()


class PairGAN(PairModel):
    """A (conditional) spectral-norm DCGAN over digit-pair images; samples, no likelihood.

    It trains through :func:`pairflow.training.train` with its own update
    (:meth:`make_optimizers`, :meth:`train_step`) and reports discriminator losses on the test
    pairs (:meth:`test_metrics`) in place of bits/dim.

    Arguments:
        config: the :class:`GANConfig` (kept as ``.config``).

    Example:
        >>> gan = build_gan("dcgan", height=4, width=8, generator_channels=4,
        ...                 discriminator_channels=4)
        >>> gan.sample(2).shape, gan.sample(2).dtype
        (torch.Size([2, 1, 4, 8]), torch.uint8)
    """

    def __init__(self, config: GANConfig):
        super().__init__()
        self.config = config
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)

    def _digits_of(self, cond: Tensor | None) -> Tensor | None:
        return None if cond is None else self._digits(cond)

    def _generate(self, z: Tensor, digits: Tensor | None) -> Tensor:
        """Generator output in [-1, 1], float32 (B, C, H, W)."""
        with self._autocast():
            return self.generator(z, digits).float()

    def _score(self, h: Tensor, digits: Tensor | None) -> Tensor:
        with self._autocast():
            return self.discriminator(h, digits)

    # ----------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        n: int | tuple[int],
        cond: Tensor | int | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw n images: z ~ N(0, T^2 I), x = round(127.5 (G(z) + 1)).

        Arguments:
            n: number of images (>= 1), or ``(n,)`` as in ``torch.distributions``.
            temperature: T > 0, the latent's standard deviation (T < 1 truncates towards
                the mode: cleaner, less varied).
            generator: random generator for z.
            cond: pair labels (n,) or one int for all, conditional models only.

        Returns:
            uint8 (n, C, H, W).
        """
        n = self._check_sampling(n, temperature)
        cond = self._check_cond(cond, n)
        z = self._normal((n, self.config.latent_dim), generator) * temperature
        y = self._generate(z, self._digits_of(cond))
        y = torch.nan_to_num(y, nan=-1.0)  # a NaN pixel becomes black rather than undefined
        return torch.round(127.5 * (y + 1.0)).clamp_(0, 255).to(torch.uint8)

    # ----------------------------------------------------------------- training
    def make_optimizers(self, config) -> dict[str, torch.optim.Optimizer]:
        """One Adam per network, at ``config.lr`` (a :class:`~pairflow.training.TrainConfig`)
        with this model's betas; the training loop checkpoints and schedules both."""
        betas = (self.config.beta1, self.config.beta2)
        kw = dict(lr=config.lr, betas=betas, weight_decay=config.weight_decay)
        return {
            "generator": torch.optim.Adam(self.generator.parameters(), **kw),
            "discriminator": torch.optim.Adam(self.discriminator.parameters(), **kw),
        }

    def hinge_losses(self, x: Tensor, fake: Tensor, digits: Tensor | None) -> dict[str, Tensor]:
        """The discriminator's hinge loss on real x (pixels 0..255) and generated ``fake``
        (in [-1, 1]), with the mean scores: ``{"d_loss", "d_real", "d_fake"}``."""
        d_real = self._score(scale_pixels(x), digits)  # (B,)
        d_fake = self._score(fake, digits)
        d_loss = F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
        return {"d_loss": d_loss, "d_real": d_real.mean(), "d_fake": d_fake.mean()}

    def train_step(
        self,
        x: Tensor,
        cond: Tensor | None,
        optimizers: dict[str, torch.optim.Optimizer],
        generator: torch.Generator | None = None,
        grad_clip: float = math.inf,
    ) -> dict[str, Tensor]:
        """One training step: ``discriminator_steps`` discriminator updates, then one of the
        generator, each on fresh latents; the fakes carry the batch's own labels.

        An update whose loss or gradient norm is not finite is not applied, and the step then
        returns a non-finite ``loss`` or ``grad_norm`` so that the training loop counts it as
        skipped (a discriminator update made before a failed generator update stays).

        Arguments:
            x: real pixel values 0..255, (B, C, H, W).
            cond: their pair labels (B,), conditional models only.
            optimizers: from :meth:`make_optimizers`.
            generator: random generator for the latents.
            grad_clip: gradient-norm clip of each network.

        Returns:
            ``{"loss": discriminator hinge loss, "grad_norm": sum of both networks'
            gradient norms, "d_loss", "g_loss", "d_real", "d_fake"}``, scalar tensors.
        """
        x = self._check_pixels(x)
        cond = self._check_cond(cond, x.shape[0])
        digits = self._digits_of(cond)
        opt_d, opt_g = optimizers["discriminator"], optimizers["generator"]
        n = x.shape[0]
        for _ in range(self.config.discriminator_steps):
            with torch.no_grad():
                fake = self._generate(self._normal((n, self.config.latent_dim), generator), digits)
            d = self.hinge_losses(x, fake, digits)
            opt_d.zero_grad(set_to_none=True)
            d["d_loss"].backward()
            d_norm = torch.nn.utils.clip_grad_norm_(self.discriminator.parameters(), grad_clip)
            if not (torch.isfinite(d["d_loss"]) and torch.isfinite(d_norm)):
                opt_d.zero_grad(set_to_none=True)
                nan = torch.tensor(math.nan)
                return {"loss": d["d_loss"].detach(), "grad_norm": d_norm, "g_loss": nan}
            opt_d.step()
        fake = self._generate(self._normal((n, self.config.latent_dim), generator), digits)
        g_loss = -self._score(fake, digits).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_d.zero_grad(set_to_none=True)  # the generator's loss also reached D's weights
        g_norm = torch.nn.utils.clip_grad_norm_(self.generator.parameters(), grad_clip)
        if torch.isfinite(g_loss) and torch.isfinite(g_norm):
            opt_g.step()
        else:
            opt_g.zero_grad(set_to_none=True)
        return {
            "loss": d["d_loss"].detach(),
            "grad_norm": d_norm + g_norm if torch.isfinite(g_loss) else g_loss.detach(),
            "d_loss": d["d_loss"].detach(),
            "g_loss": g_loss.detach(),
            "d_real": d["d_real"].detach(),
            "d_fake": d["d_fake"].detach(),
        }

    @torch.no_grad()
    def test_metrics(
        self,
        dataset,
        device: torch.device | str = "cpu",
        conditional: bool = False,
        batch_size: int = 500,
        seed: int = 1234,
    ) -> dict[str, float]:
        """The discriminator's hinge loss and mean scores on every pair of ``dataset`` against
        as many samples (fixed latents from ``seed``, the pairs' own labels), in eval mode.

        Not a quality measure on its own (the two networks move together); it shows whether
        the discriminator separates held-out real pairs from samples, and a diverged run.

        Returns:
            ``{"test_d_loss", "test_d_real", "test_d_fake"}``.
        """
        was_training = self.training
        self.eval()
        gen = torch.Generator(device=device).manual_seed(seed)
        totals = {"d_loss": 0.0, "d_real": 0.0, "d_fake": 0.0}
        n = len(dataset)
        for lo in range(0, n, batch_size):
            idx = torch.arange(lo, min(lo + batch_size, n))
            x, y = dataset.get_batch(idx)
            x = x.to(device)
            digits = self._digits(y.to(device)) if conditional else None
            fake = self._generate(self._normal((len(idx), self.config.latent_dim), gen), digits)
            for key, value in self.hinge_losses(x, fake, digits).items():
                totals[key] += float(value) * len(idx)
        self.train(was_training)
        return {f"test_{k}": v / n for k, v in totals.items()}


def build_gan(config: GANConfig | str = "dcgan", **overrides: Any) -> PairGAN:
    """Build a :class:`PairGAN` from a config, or from a preset name plus overrides.

    Example:
        >>> build_gan("dcgan", conditional=True).config.conditional
        True
    """
    if isinstance(config, str):
        config = GANConfig.from_preset(config, **overrides)
    elif overrides:
        config = GANConfig.from_dict({**config.to_dict(), **overrides})
    return PairGAN(config)
