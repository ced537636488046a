"""A normalizing flow over images, composed of parts: ``Flow(config, body, distribution, ...)``.

In the nflows sense a flow is ``Flow(transform, distribution, embedding)``; here its parts are

- the dequantizer (:mod:`pairflow.flows.dequantization`): 8-bit pixels -> y in [0, 1) and
  log q(u | x) (uniform noise, or Flow++'s learned q);
- the preprocessing (:class:`~pairflow.flows.Logit`) and the body (couplings and the rest,
  :mod:`pairflow.flows.build`'s architectures): y -> h -> z, data -> latent;
- optionally noise augmentation and its denoising step (:mod:`pairflow.flows.noise`);
- the base distribution (:mod:`pairflow.flows.distributions`), which for a conditional flow
  also holds p(y);
- the label embedding (:class:`~pairflow.flows.labels.LabelEmbedding`) that conditional
  couplings read, or None;
- optionally the flow's own clusters (:class:`~pairflow.flows.clusters.PixelClusters`),
  which an unconditional flow's couplings and prior read in place of a label.

:func:`~pairflow.flows.build_flow` makes the parts from a :class:`FlowConfig`.

References:
    Dinh, Sohl-Dickstein and Bengio, "Density estimation using Real NVP", ICLR 2017.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn

from pairflow.flows import guidance as guidance_module
from pairflow.flows.actnorm import ActNorm
from pairflow.flows.base import Transform, set_autocast
from pairflow.flows.clusters import PixelClusters
from pairflow.flows.config import FlowConfig
from pairflow.flows.dequantization import Dequantizer, UniformDequantizer
from pairflow.flows.distributions import Distribution
from pairflow.flows.guidance import Guided
from pairflow.flows.labels import LabelledFlow
from pairflow.flows.noise import NoiseAugmentation
from pairflow.flows.preprocessing import Logit, quantize
from pairflow.options import NUM_LEVELS, Precision, check_choice
from pairflow.validation import as_pixel_batch, check_pair_labels

__all__ = ["Flow"]


class Flow(LabelledFlow, Transform):
    """A normalizing flow for 8-bit images with exact likelihoods, from its parts.

    As a :class:`~pairflow.flows.base.Transform`, ``forward(y, cond)`` maps continuous data
    y in [0, 1]^(C,H,W) (dequantized pixels / 256) through the preprocessing and the body to
    the latent z, with the total log-determinant; ``inverse`` goes back. The image-level
    methods (:meth:`log_prob`, :meth:`bits_per_dim`, :meth:`sample`, :meth:`encode`,
    :meth:`decode`) speak in images: uint8 pixels 0..255, or float images in [0, 1] holding
    levels k / 255, (B, C, H, W), (C, H, W) or (H, W). Samples are uint8. ``cond`` is the
    label (B,): pair labels 10 * left + right, or class labels 0..9 for single images;
    optional for a conditional flow (y ~ p(y), or the marginal over labels).

    Arguments:
        config: the :class:`FlowConfig` the parts were built from (kept as ``.config``).
        body: the transform h -> z.
        distribution: the base distribution of z (with p(y) for a conditional flow).
        embedding: the label embedding the couplings read, or None.
        dequantizer: pixels -> y (default: uniform noise).
        preprocessing: y -> h (default: ``Logit(config.logit_alpha)``).
        noise: noise augmentation of h during training, or None.
        clusters: the pixel clusters an unconditional flow reads as its label, or None
            (:mod:`pairflow.flows.clusters`).

    Example:
        >>> from pairflow.flows import build_flow
        >>> flow = build_flow("multiscale", height=4, width=8, hidden_channels=4, num_blocks=1)
        >>> x = torch.randint(0, 256, (3, 1, 4, 8), dtype=torch.uint8)
        >>> flow.bits_per_dim(x).shape, flow.sample((2,)).shape
        (torch.Size([3]), torch.Size([2, 1, 4, 8]))
    """

    def __init__(
        self,
        config: FlowConfig,
        body: Transform,
        distribution: Distribution,
        embedding: nn.Module | None = None,
        dequantizer: Dequantizer | None = None,
        preprocessing: Transform | None = None,
        noise: NoiseAugmentation | None = None,
        clusters: PixelClusters | None = None,
    ):
        super().__init__()
        self.config = config
        # Registration order fixes parameters() and so optimiser states: keep it.
        self.logit = preprocessing if preprocessing is not None else Logit(config.logit_alpha)
        self.embedding = embedding
        self.distribution = distribution
        self.dequantizer = dequantizer if dequantizer is not None else UniformDequantizer()
        self.body = body
        self.noise = noise
        self.clusters = clusters
        self._register_load_state_dict_pre_hook(_label_probs_moved, with_module=True)
        set_autocast(self, torch.bfloat16 if config.precision == "bf16" else None)

    # ----------------------------------------------------------------- parts
    @property
    def bits_per_dim_is_bound(self) -> bool:
        """False with uniform dequantization (the exact likelihood of the continuous model,
        an upper bound of the discrete one, as every flow paper reports); True with a learned
        q (Flow++'s variational bound), or for a flow that reads its own clusters (the
        mixture's term at the image's clusters, :mod:`pairflow.flows.clusters`); every
        output says so."""
        return self.dequantizer.is_bound or self.clusters is not None

    @property
    def bound_over(self) -> tuple[str, ...]:
        """What the reported bits/dim is a bound over, in words (empty where it is exact):
        ``"variational dequantization"`` (Flow++'s bound over the noise q draws) and ``"the
        images' own cluster pair"`` (a cluster flow's term at the clusters an image falls in,
        :mod:`pairflow.flows.clusters`).

        Example:
            >>> from pairflow.flows import build_flow
            >>> build_flow("multiscale", hidden_channels=4, num_blocks=1).bound_over
            ()
            >>> build_flow("multiscale", hidden_channels=4, num_blocks=1,
            ...            dequantization="variational").bound_over
            ('variational dequantization',)
        """
        over = ("variational dequantization",) if self.dequantizer.is_bound else ()
        return over + (("the images' own cluster pair",) if self.clusters is not None else ())

    def with_uniform_dequantization(self) -> Flow:
        """This flow scored with uniform noise: its exact continuous likelihood of clean data.

        A flow trained with variational dequantization still defines an exact density on
        [0, 1]^D; only its reported bits/dim is Flow++'s bound. One trained on Gaussian-noised
        data models noisy data; scored on uniformly dequantized clean pixels, the same density
        gives an exact bits/dim of clean 8-bit data. Noise added in logit space is left out
        of the scoring too (the copy still denoises its samples). The copy shares every other
        part; a flow already uniform and without that noise is returned as it is.
        """
        logit_noise = self.noise is not None and self.noise.in_training
        if self.config.dequantization == "uniform" and not logit_noise:
            return self
        flow = type(self).__new__(type(self))
        config = dataclasses.replace(self.config, dequantization="uniform")
        names = ("body", "distribution", "embedding", "clusters")
        parts = {name: getattr(self, name) for name in names}
        # Clean data in, so no noise in the score; the denoising step of samples stays.
        noise = self.noise
        if logit_noise:
            noise = NoiseAugmentation(self.noise.sigma, in_training=False)
        Flow.__init__(flow, config, preprocessing=self.logit, noise=noise, **parts)
        return flow.train(self.training)

    @property
    def denoises(self) -> bool:
        """Whether :meth:`sample` ends with the denoising step by default (a flow trained
        with noise: its samples are of noisy data until denoised)."""
        return self.noise is not None

    @property
    def precision(self) -> str:
        """``"fp32"`` or ``"bf16"``; setting it switches every part that may run in bf16."""
        return self.config.precision

    @precision.setter
    def precision(self, value: str) -> None:
        check_choice("precision", value, Precision)
        self.config.precision = value
        set_autocast(self, torch.bfloat16 if value == "bf16" else None)

    @property
    def device(self) -> torch.device:
        """The device the model's parameters live on."""
        return next(self.parameters()).device

    # ----------------------------------------------------------------- transform
    def context(self, cond: Tensor | Guided | None) -> Tensor | Guided | None:
        """The couplings' context: the label embedding (B, S, E), or None (a guided label
        gives the :class:`~pairflow.flows.guidance.Guided` pair of embeddings)."""
        if self.embedding is None:
            return None  # the body never sees the label (the class mixture relies on it)
        if cond is None:
            top = self.config.num_classes - 1
            what = f"{'pair' if self.config.label_sides == 2 else 'class'} labels (B,) in 0..{top}"
            raise ValueError(f"this model is conditional: pass cond, {what}")
        if isinstance(cond, Guided):
            return cond.map(self.embedding)
        return self.embedding(cond)

    def forward(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Continuous data y in [0, 1] (B, C, H, W) -> (z, logabsdet), preprocessing included."""
        return self.latent(y, cond)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Latent z (B, C, H, W) -> continuous data y; returns (y, logabsdet)."""
        h, ld_body = self.body.inverse(z, self.context(cond))
        y, ld_logit = self.logit.inverse(h)
        return y, ld_body + ld_logit

    def latent(
        self, y: Tensor, cond: Tensor | None, eps: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``forward(y, cond)``, with the training noise ``eps`` added in logit space."""
        ctx = self.context(cond)
        h, ld_logit = self.logit(y)
        if eps is not None:
            h = self.noise.perturb(h, eps)
        z, ld_body = self.body(h, ctx)
        return z, ld_logit + ld_body

    def training_noise(self, y: Tensor, generator: torch.Generator | None) -> Tensor | None:
        """The noise augmentation's eps ~ N(0, I) of y's shape, or None without one."""
        if self.noise is None or not self.noise.in_training:
            return None
        return self.noise.draw(y, generator)

    def log_prior(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        """log p(z) (B,) under the base distribution (label-dependent where configured)."""
        return self.distribution.log_prob(z, cond if self.distribution.uses_label else None)

    def prior_params(self, cond: Tensor | None) -> tuple[Tensor, Tensor] | None:
        """Mean and log-scale (B, C, H, W) of the label prior for ``cond``; None where the
        prior names no single Gaussian (N(0, I), a mixture without a label)."""
        if not self.distribution.uses_label or (cond is None and self.label_mixture):
            return None
        return self.distribution.params(cond)

    def denoise_logits(self, h: Tensor, cond: Tensor | None = None) -> Tensor:
        """One score-based denoising step in logit space, h + sigma^2 grad_h log p(h), with
        the flow's own density of h (base log-density plus the body's log-determinant)."""
        ctx = self.context(cond)

        def log_density(v: Tensor) -> Tensor:
            z, ld_body = self.body(v, ctx)
            return self.log_prior(z, cond) + ld_body

        return self.noise.denoise(h, log_density)

    def own_labels(self, x: Tensor) -> Tensor | None:
        """The labels a flow that reads its own clusters gives images (B, C, H, W) of pixels
        (their sides' nearest centres, :class:`~pairflow.flows.clusters.PixelClusters`);
        None for every other flow."""
        if self.clusters is None:
            return None
        x, _ = as_pixel_batch(x, self.config.shape, self.device)
        return self.clusters(x)

    def _cluster_cond(self, cond, batch: int, x: Tensor | None = None) -> Tensor:
        """A cluster flow's labels for encode/decode: ``cond`` checked, else those of ``x``."""
        if cond is None:
            if x is None:
                raise ValueError(
                    "this flow reads its own clusters: decode a latent under the cluster "
                    "labels it was encoded with (cond=flow.own_labels(x))"
                )
            return self.clusters(x)
        return check_pair_labels(cond, batch, True, self.device, self.config.num_classes)

    def check_cond(self, cond: Tensor | int | None, batch: int, optional: bool = True):
        """Labels as a (batch,) tensor on the model's device, checked; None where allowed."""
        if cond is None and self.config.conditional and optional:
            return None  # a conditional model takes a label or marginalises over it
        return check_pair_labels(
            cond, batch, self.config.conditional, self.device, self.config.num_classes
        )

    # ----------------------------------------------------------------- likelihood
    def log_prob(self, x, cond=None, generator=None, draws: int = 1) -> Tensor:
        """Log density log p(y) of the dequantized images y = (x + u) / 256, in nats (B,).

        Without a label, a conditional flow's exact marginal over the K labels (one pass
        where the body never sees the label, K where the couplings read it). With a learned
        dequantizer log q(u | x) is subtracted: a one-sample variational bound. A flow that
        reads its own clusters gives log p(c) + log p(y | c) at the image's clusters c, a
        lower bound of its log p(y) (:meth:`marginal_log_prob` is exact).
        ``draws`` averages several dequantization draws; ``generator`` seeds them.
        """
        x, unbatched = as_pixel_batch(x, self.config.shape, self.device)
        cond = self.check_cond(cond, x.shape[0])
        if not isinstance(draws, int) or isinstance(draws, bool) or draws < 1:
            raise ValueError(f"draws must be an int >= 1, got {draws!r}")
        marginal = cond is None and self.config.conditional and not self.label_mixture
        total = 0
        own, log_own = cond, 0
        if self.clusters is not None and not marginal:  # the bound at the image's clusters c
            own = self.clusters(x)  # a function of the pixels: the same for every draw
            log_own = self.log_label_probs()[own]  # log p(c)
        for _ in range(draws):
            if marginal:  # log p(x) = logsumexp_y [log p(y) + log p(x | y)]
                total = total + self.marginal_log_prob(x, generator)
                continue
            y, log_q = self.dequantizer.dequantize(x, generator)  # (B, C, H, W), (B,)
            label = own
            if self.training and own is not None and self.config.null_label:
                label = guidance_module.train_labels(self, own, generator)  # some sides null
            z, logabsdet = self.latent(y, label, self.training_noise(y, generator))
            total = total + log_own + self.log_prior(z, label) + logabsdet - log_q
        out = total / draws if draws > 1 else total
        return out[0] if unbatched else out

    def bits_per_dim(self, x, cond=None, generator=None, draws: int = 1) -> Tensor:
        r"""Bits per dimension on the 256-level scale, (B,):
        :math:`(-\log p(y) + D \ln 256) / (D \ln 2)`, Dinh et al.'s convention (an upper
        bound, in expectation over u, of the discrete model's; Theis et al. 2016)."""
        d = self.config.num_dims
        log_p = self.log_prob(x, cond, generator, draws)
        return (-log_p + d * math.log(NUM_LEVELS)) / (d * math.log(2))

    def log_weight(self, x, cond=None, generator=None) -> Tensor:
        r"""One importance weight of the discrete model, log w with E[w] = P(x):
        :math:`w = p((x + u) / 256) / (256^D q(u \mid x))`; the log-mean-exp of K of them is
        the importance-weighted bound (Burda et al. 2016)."""
        return self.log_prob(x, cond, generator) - self.config.num_dims * math.log(NUM_LEVELS)

    # ----------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(self, sample_shape=(), cond=None, temperature: float = 1.0, generator=None,
               denoise: bool = True, guidance: float | None = None) -> Tensor:  # fmt: skip
        """Draw uint8 images of shape ``sample_shape + (C, H, W)``: z from the base
        distribution at temperature T, x = floor(256 inverse(z)). Without ``cond`` a
        conditional flow draws y ~ p(y) first (a flow reading its own clusters draws them
        from their frequencies). ``denoise``: a flow trained with noise ends
        with its denoising step (:meth:`denoise_logits`). ``guidance``: the weight w of
        classifier-free guidance (a flow trained with label dropout, :attr:`guidable`;
        :mod:`pairflow.flows.guidance`): 0 is the conditional model, -1 the unconditional
        one, w > 0 follows the label more closely; None (default): off."""
        if guidance is not None:
            guidance = self.check_guidance(guidance)
        shape = torch.Size([sample_shape] if isinstance(sample_shape, int) else sample_shape)
        n = math.prod(shape) if len(shape) else 1
        if len(shape) and (n < 1 or isinstance(sample_shape, bool)):
            raise ValueError(f"n must be an int >= 1, got {sample_shape!r}")
        cond = self.check_cond(cond, n)
        if cond is None and self.config.reads_labels:
            cond = self.sample_labels(n, generator)  # the label-free sampler: y ~ p(y) first
        if guidance is not None:
            cond = guidance_module.guide(self, cond, guidance)
        z = self.distribution.sample(n, cond, temperature=temperature, generator=generator)
        h, _ = self.body.inverse(z, self.context(cond))
        if self.noise is not None and denoise:
            h = self.denoise_logits(h, cond)  # the model's samples are of noisy data
        y, _ = self.logit.inverse(h)
        return quantize(y).reshape(*shape, *self.config.shape)

    @torch.no_grad()
    def encode(self, x: Tensor, cond: Tensor | int | None = None) -> Tensor:
        """Latents (B, C, H, W) of images at the dequantizer's central point (bin centres,
        or a learned q's mode); ``decode(encode(x))`` returns x (exactly in fp32). A flow
        reading its own clusters encodes under the images' clusters unless ``cond`` names
        others; decode under the same (:meth:`own_labels`)."""
        x, unbatched = as_pixel_batch(x, self.config.shape, self.device)
        if self.clusters is not None:
            cond = self._cluster_cond(cond, x.shape[0], x)
        else:
            cond = self.check_cond(cond, x.shape[0], optional=self.embedding is None)
        z, _ = self(self.dequantizer.central(x)[0], cond)
        return z[0] if unbatched else z

    @torch.no_grad()
    def decode(self, z: Tensor, cond: Tensor | int | None = None) -> Tensor:
        """Images (uint8 pixels) from latents z (B, C, H, W), e.g. interpolated ones."""
        shape = self.config.shape
        if not isinstance(z, Tensor) or z.dim() != 4 or tuple(z.shape[1:]) != shape:
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(
                f"expected latents of shape (B, {', '.join(map(str, shape))}), got {got}"
            )
        if self.clusters is not None:
            cond = self._cluster_cond(cond, z.shape[0])
        else:
            cond = self.check_cond(cond, z.shape[0], optional=self.embedding is None)
        y, _ = self.inverse(z.to(self.device, torch.float32), cond)
        return quantize(y)

    @torch.no_grad()
    def data_init(self, x: Tensor, cond: Tensor | None = None) -> None:
        """Initialise every ActNorm layer from a batch of images (pixels 0..255), e.g. before
        distributed wrapping, so that every rank starts from the same parameters."""
        for m in self.modules():
            if isinstance(m, ActNorm):
                m.reset()
        was_training = self.training
        self.train()
        try:
            self.log_prob(x, cond)
        finally:
            self.train(was_training)


def _label_probs_moved(module, state_dict, prefix, *args) -> None:
    """Weights saved before p(y) moved into the distribution kept it as ``label_probs``."""
    old = state_dict.pop(prefix + "label_probs", None)
    if old is not None:
        state_dict.setdefault(prefix + "distribution.class_probs", old)
