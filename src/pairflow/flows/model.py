"""PairFlow: a RealNVP flow over digit-pair (or single) images, assembled from parts.

``PairFlow(config)`` is, in the nflows sense, ``Flow(transform, distribution, embedding)``:

- the transform: the logit preprocessing (:class:`~pairflow.flows.Logit`) then the flow body
  (the ``mlp`` or ``multiscale`` architecture of :mod:`pairflow.flows.config`), data -> z;
- the base distribution (:mod:`pairflow.flows.distributions`): the standard normal, or for
  ``conditioning="prior"``/``"both"`` the position-aware label prior;
- the label embedding (:class:`LabelEmbedding`) that conditional couplings read, for
  ``conditioning="embedding"``/``"both"``.

Names: ``cond`` is the label (B,) at the model level: a pair label 10 * left + right in
0..99, or for single images (``config.layout="single"``) a class label in 0..9; the
transforms receive ``context``, the embedding of it (B, S, E), one vector per side
(S = ``config.label_sides``: 2 for pairs, 1 for single images).

References:
    Dinh, Sohl-Dickstein and Bengio, "Density estimation using Real NVP", ICLR 2017.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor, nn

from pairflow.flows.actnorm import ActNorm
from pairflow.flows.base import Compose, Transform
from pairflow.flows.config import PRESETS, FlowConfig
from pairflow.flows.coupling import AffineCoupling
from pairflow.flows.dequantization import VariationalDequantizer
from pairflow.flows.distributions import Distribution, LabelNormal, StandardNormal, label_digits
from pairflow.flows.glow import glow_flow
from pairflow.flows.masks import vector_mask
from pairflow.flows.mixture import ClassMixture, ClusterMixture, draw_labels, label_frequencies
from pairflow.flows.multiscale import multiscale_flow
from pairflow.flows.nets import ConvResNet, SeparateMLPs
from pairflow.flows.preprocessing import Logit, dequantize, quantize
from pairflow.options import NUM_LEVELS, check_choice
from pairflow.options import Precision as _Precision
from pairflow.validation import as_pixel_batch, check_pair_labels

__all__ = [
    "FlowConfig",
    "PairFlow",
    "LabelEmbedding",
    "PairEmbedding",
    "build_flow",
    "PRESETS",
]


class LabelEmbedding(nn.Embedding):
    """Learned vectors for the digits of a label, one per side: (B,) labels -> (B, S, E).

    For a pair label (``sides=2``) rows 0..9 embed the left digit, rows 10..19 the right digit
    (position-specific), so a conditioner can tell "3 on the left" from "3 on the right"; a
    single image's class label (``sides=1``) has the one table of rows 0..9.

    Arguments:
        embed_dim: E, the size of each digit's vector.
        sides: S, digits per label: 2 for pairs, 1 for single images.

    Example:
        >>> LabelEmbedding(4)(torch.tensor([37, 5])).shape
        torch.Size([2, 2, 4])
        >>> LabelEmbedding(4, sides=1)(torch.tensor([3, 5])).shape
        torch.Size([2, 1, 4])
    """

    def __init__(self, embed_dim: int, sides: int = 2):
        super().__init__(10 * sides, embed_dim)
        self.sides = sides

    def forward(self, cond: Tensor) -> Tensor:
        rows = [10 * s + d for s, d in enumerate(label_digits(cond, self.sides))]
        return super().forward(torch.stack(rows, dim=1))  # (B, S, E)


PairEmbedding = LabelEmbedding
"""The embedding's name from before single images had one (``sides=2``, the default)."""


class PairFlow(Transform):
    """A RealNVP normalizing flow for digit-pair images, with exact likelihoods.

    As a :class:`~pairflow.flows.base.Transform`, ``forward(y, cond)`` maps continuous data
    y in [0, 1]^(C,H,W) (dequantized pixels / 256) through the logit preprocessing and the
    flow body to the latent z (same shape), with the total log-determinant; ``inverse`` goes
    back. ``.distribution`` is the base distribution of z (the standard normal, or the
    position-aware label prior for ``conditioning="prior"``/``"both"``), ``.embedding`` the
    label embedding the couplings read (``"embedding"``/``"both"``; None otherwise).

    The image-level methods (:meth:`log_prob`, :meth:`bits_per_dim`, :meth:`sample`,
    :meth:`encode`, :meth:`decode`) speak in images: uint8 pixels 0..255, or float images in
    [0, 1] holding 8-bit levels k / 255 (what torchvision's ``ToTensor`` gives), of shape
    (B, C, H, W), one image (C, H, W) or, for one channel, (H, W). Samples are uint8.

    Arguments:
        config: the :class:`FlowConfig` (kept as ``.config``).

    Example:
        >>> flow = build_flow(FlowConfig.from_preset("multiscale", height=4, width=8,
        ...                                          hidden_channels=4, num_blocks=1))
        >>> x = torch.randint(0, 256, (3, 1, 4, 8), dtype=torch.uint8)
        >>> flow.bits_per_dim(x).shape
        torch.Size([3])
        >>> flow.sample((2,)).shape, flow.sample(2).dtype
        (torch.Size([2, 1, 4, 8]), torch.uint8)
    """

    @property
    def bits_per_dim_is_bound(self) -> bool:
        """False with uniform dequantization: bits/dim is the exact likelihood of the continuous
        model (an upper bound of the discrete one, as every flow paper reports). True with
        variational dequantization: a variational bound (Flow++), and every output says so."""
        return self.config.dequantization == "variational"

    def __init__(self, config: FlowConfig):
        super().__init__()
        self.config = config
        self.logit = Logit(config.logit_alpha)
        context = config.embed_dim if config.label_embedding else 0
        sides, k = config.label_sides, config.num_classes
        self.embedding = LabelEmbedding(config.embed_dim, sides) if config.label_embedding else None
        self.distribution: Distribution
        if config.label_mixture:
            self.distribution = ClassMixture(config.shape, sides)
        elif config.label_prior:
            self.distribution = LabelNormal(config.shape, sides)
        elif config.cluster_mixture:
            self.distribution = ClusterMixture(config.shape, sides)
        else:
            self.distribution = StandardNormal(config.shape)
        if config.conditional and not config.label_mixture:
            # p(y), the training labels' frequencies (set by training; uniform until then):
            # with it the label is optional, as for the class mixture. Sampling without one
            # draws y ~ p(y); log p(x) without one sums over the K labels (100 or 10).
            self.register_buffer("label_probs", torch.full((k,), 1 / k))
        self.dequantizer = None
        if config.dequantization == "variational":
            self.dequantizer = VariationalDequantizer(
                config.shape, config.dequant_channels, config.dequant_couplings
            )
        if config.arch == "mlp":
            self.body = self._build_mlp(config, sides * context)
        elif config.arch == "glow":
            self.body = self._build_glow(config, context)
        else:
            self.body = self._build_multiscale(config, context)
        self._apply_precision()

    @staticmethod
    def _build_mlp(config: FlowConfig, context: int) -> Transform:
        # context: the flattened label embedding's size, S * E.
        def factory(i: int, o: int) -> nn.Module:
            return SeparateMLPs(i, o, config.hidden_features, config.num_hidden_layers, 2, context)

        layers: list[Transform] = [
            AffineCoupling(
                vector_mask(config.mask, config.shape, k % 2), factory, config.scale_bound
            )
            for k in range(config.num_couplings)
        ]
        return _Flatten(Compose(layers))

    @staticmethod
    def _build_multiscale(config: FlowConfig, context: int) -> Transform:
        def factory(i: int, o: int) -> nn.Module:
            return ConvResNet(i, o, config.hidden_channels, config.num_blocks, context)

        return multiscale_flow(
            config.shape,
            factory,
            num_scales=config.num_scales,
            checkerboard_couplings=config.checkerboard_couplings,
            channel_couplings=config.channel_couplings,
            final_couplings=config.final_couplings,
            scale_bound=config.scale_bound,
            actnorm=config.actnorm,
            checkerboard=config.checkerboard,
        )

    @staticmethod
    def _build_glow(config: FlowConfig, context: int) -> Transform:
        def factory(i: int, o: int) -> nn.Module:
            return ConvResNet(i, o, config.hidden_channels, config.num_blocks, context)

        return glow_flow(
            config.shape,
            factory,
            num_levels=config.glow_levels,
            steps_per_level=config.glow_steps,
            coupling=config.coupling,
            scale_bound=config.scale_bound,
        )

    def with_uniform_dequantization(self) -> PairFlow:
        """This flow scored with uniform noise u ~ U[0, 1): its exact continuous likelihood.

        A flow trained with variational dequantization still defines an exact density p on
        [0, 1]^D; only its reported bits/dim is Flow++'s bound. Scored with uniform noise, the
        same density gives the exact bits/dim of RealNVP and Glow's convention, comparable
        with theirs. The copy shares every parameter of the body, the base distribution and
        p(label) (no dequantizer); a flow already uniform is returned as it is.

        Example:
            >>> flow = build_flow("multiscale", height=4, width=8, hidden_channels=4,
            ...                   dequantization="variational")
            >>> exact = flow.with_uniform_dequantization()
            >>> flow.bits_per_dim_is_bound, exact.bits_per_dim_is_bound
            (True, False)
            >>> exact.body is flow.body
            True
        """
        if self.dequantizer is None:
            return self
        config = dataclasses.replace(self.config, dequantization="uniform")
        flow = PairFlow(config)  # a small build; its modules are replaced by this flow's
        for name, module in self.named_children():
            if name != "dequantizer":
                setattr(flow, name, module)
        for name, buffer in self.named_buffers(recurse=False):
            setattr(flow, name, buffer)
        return flow.train(self.training)

    # ----------------------------------------------------------------- precision
    @property
    def precision(self) -> str:
        """``"fp32"`` or ``"bf16"``; setting it switches every coupling's conditioner."""
        return self.config.precision

    @precision.setter
    def precision(self, value: str) -> None:
        check_choice("precision", value, _Precision)
        self.config.precision = value
        self._apply_precision()

    def _apply_precision(self) -> None:
        dtype = torch.bfloat16 if self.config.precision == "bf16" else None
        for module in self.modules():
            if isinstance(module, AffineCoupling):
                module.autocast_dtype = dtype

    # ----------------------------------------------------------------- transform
    def _context(self, cond: Tensor | None) -> Tensor | None:
        """The couplings' context: the label embedding (B, S, E), or None."""
        if self.embedding is None:
            return None  # the body never sees the label (the class mixture relies on it)
        if cond is None:
            pairs = self.config.label_sides == 2
            what = "pair labels (B,) in 0..99" if pairs else "class labels (B,) in 0..9"
            raise ValueError(f"this model is conditional: pass cond, {what}")
        return self.embedding(cond)

    def prior_params(self, cond: Tensor | None) -> tuple[Tensor, Tensor] | None:
        """Mean and log-scale (B, C, H, W) of the label prior for labels ``cond``.

        None when the prior is the standard normal (unconditional models and
        ``conditioning="embedding"``). For pairs the left half of each comes from the left
        digit's parameters, the right half from the right digit's; for single images both are
        the class's, over the whole latent.
        """
        if not (isinstance(self.distribution, LabelNormal) and self.distribution.uses_label):
            return None  # N(0, I), or the label-free mixture (no single component)
        if cond is None and self.config.label_mixture:
            return None  # the mixture without a label: no single component
        return self.distribution.params(cond)

    def log_prior(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        """log p(z) (B,) under the base distribution (label-dependent where configured)."""
        return self.distribution.log_prob(z, cond if self.distribution.uses_label else None)

    def forward(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map continuous data y in [0, 1] (B, C, H, W) to latent z; returns (z, logabsdet).

        ``logabsdet`` includes the logit preprocessing. ``cond`` are labels (B,): pair
        labels 10 * left + right, or class labels 0..9 for single images.
        """
        ctx = self._context(cond)
        h, ld_logit = self.logit(y)
        z, ld_body = self.body(h, ctx)
        return z, ld_logit + ld_body

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map latent z (B, C, H, W) back to continuous data y; returns (y, logabsdet)."""
        ctx = self._context(cond)
        h, ld_body = self.body.inverse(z, ctx)
        y, ld_logit = self.logit.inverse(h)
        return y, ld_body + ld_logit

    # ----------------------------------------------------------------- validation
    @property
    def device(self) -> torch.device:
        """The device the model's parameters live on."""
        return next(self.parameters()).device

    _device = device

    def _check_cond(
        self, cond: Tensor | int | None, batch: int, optional: bool = True
    ) -> Tensor | None:
        if cond is None and self.config.conditional and optional:
            return None  # a conditional model takes a label or marginalises over it
        return check_pair_labels(
            cond, batch, self.config.conditional, self.device, self.config.num_classes
        )

    # ----------------------------------------------------------------- likelihood
    def log_prob(
        self,
        x: Tensor,
        cond: Tensor | int | None = None,
        generator: torch.Generator | None = None,
        draws: int = 1,
    ) -> Tensor:
        """Log density log p(y) of the dequantized images y = (x + u) / 256, in nats.

        Arguments:
            x: images: uint8 pixels 0..255, or floats in [0, 1] holding levels k / 255;
                (B, C, H, W), (C, H, W) or (H, W).
            cond: labels (B,) int64 (or one int), conditional models only: pair labels
                0..99, or class labels 0..9 for single images (``config.layout="single"``);
                optional there: with labels log p(y | label), without them the exact
                marginal log p(y) = logsumexp over the K labels (100, or 10) of
                log p(label) + log p(y | label) (one pass for the class mixture, K where the
                couplings read the label: :attr:`label_passes`).
            generator: random generator for the dequantization noise u ~ U[0, 1): the same
                seed gives the same value.
            draws: number of dequantization draws averaged (lower variance; each draw is
                a full pass through the flow).

        Returns:
            (B,) float32 (a 0-d tensor for one unbatched image): log p(z) + log|det dz/dy|,
            where p is the base distribution and the log-determinant includes the logit
            preprocessing and every flow layer. This is a density on [0, 1]^D; see
            :meth:`bits_per_dim` for the discrete 256-level scale. With variational
            dequantization (``config.dequantization="variational"``) u ~ q(u | x) and
            log q(u | x) is subtracted: a one-sample variational lower bound (Flow++), so
            :attr:`bits_per_dim_is_bound` is True.
        """
        x, unbatched = as_pixel_batch(x, self.config.shape, self.device)
        cond = self._check_cond(cond, x.shape[0])
        if not isinstance(draws, int) or isinstance(draws, bool) or draws < 1:
            raise ValueError(f"draws must be an int >= 1, got {draws!r}")
        marginal = cond is None and self.config.conditional and not self.config.label_mixture
        total = 0
        for _ in range(draws):
            if marginal:  # log p(x) = logsumexp_y [log p(y) + log p(x | y)]
                log_lik = self.class_log_likelihoods(x, generator)
                total = total + torch.logsumexp(self.log_label_probs() + log_lik, dim=1)
                continue
            y, log_q = self._dequantize(x, generator)  # (B, C, H, W) in [0, 1), (B,)
            z, logabsdet = self._latent(y, cond, self._noise(y, generator))
            total = total + self.log_prior(z, cond) + logabsdet - log_q
        out = total / draws if draws > 1 else total
        return out[0] if unbatched else out

    def _dequantize(self, x: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """y = (x + u) / 256 and log q(u | x): 0 for uniform u, the learned q's otherwise."""
        if self.dequantizer is None:
            return dequantize(x, generator), x.new_zeros(x.shape[0], dtype=torch.float32)
        u, log_q = self.dequantizer(x, generator)
        return (x.to(torch.float32) + u) / NUM_LEVELS, log_q

    def _central(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """One deterministic dequantized y per image, and its log q(u | x) (B,).

        Bin centres for uniform noise. With variational dequantization the body was fitted
        to q's noise, not to bin centres (most MNIST pixels are 0 or 255 and q moves their
        noise towards the bin's edge): the noise q maps eps = 0 to, as bin centres are
        uniform noise's middle.
        """
        if self.dequantizer is None:
            return dequantize(x, noise="center"), x.new_zeros(x.shape[0], dtype=torch.float32)
        u, log_q = self.dequantizer.mode_noise(x)
        return (x.to(torch.float32) + u) / NUM_LEVELS, log_q

    def _noise(self, y: Tensor, generator: torch.Generator | None) -> Tensor | None:
        """TarFlow's training noise eps ~ N(0, I) of y's shape (None when noise_sigma is 0)."""
        if not self.config.noise_sigma:
            return None
        return torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)

    def _latent(self, y: Tensor, cond: Tensor | None, eps: Tensor | None) -> tuple[Tensor, Tensor]:
        """``forward(y, cond)`` with the noise ``noise_sigma * eps`` added in logit space."""
        if eps is None:
            return self(y, cond)
        ctx = self._context(cond)
        h, ld_logit = self.logit(y)
        z, ld_body = self.body(h + self.config.noise_sigma * eps, ctx)
        return z, ld_logit + ld_body

    def denoise_logits(self, h: Tensor, cond: Tensor | None = None) -> Tensor:
        """One score-based denoising step in logit space: h + sigma^2 grad_h log p(h).

        Tweedie's formula, for a model trained on noisy h~ = h + sigma eps
        (``config.noise_sigma``): E[h | h~] = h~ + sigma^2 grad log p(h~), with log p(h~)
        the flow's own density of h~ (base log-density plus the body's log-determinant).
        ``cond``: labels where the model is conditional (the class mixture may omit them).
        """
        sigma = self.config.noise_sigma
        ctx = self._context(cond)
        with torch.enable_grad():
            h = h.detach().requires_grad_(True)
            z, ld_body = self.body(h, ctx)
            log_p = self.log_prior(z, cond) + ld_body
            (grad,) = torch.autograd.grad(log_p.sum(), h)
        return (h + sigma**2 * grad).detach()

    def class_log_likelihoods(
        self,
        x: Tensor,
        generator: torch.Generator | None = None,
        noise: str = "uniform",
    ) -> Tensor:
        """log p(x | label) for all K labels: (B, K), in nats, from one dequantization draw.

        Conditional models only. Add :meth:`log_label_probs` and log-sum-exp over labels for
        log p(x); normalise over labels for p(label | x). Where the body never sees the label
        (the class mixture, ``conditioning="prior"``) this is one pass through the flow; where
        the couplings read it (``"embedding"``, ``"both"``) it is K passes, one per label,
        all on the same dequantized y, so the marginal is exact but costs K times a
        conditional evaluation (:attr:`label_passes`). K = ``config.num_classes``: 100 pair
        labels, or 10 classes for single images.

        Arguments:
            x: images, as in :meth:`log_prob`, batched (B, C, H, W).
            generator: random generator for the dequantization noise.
            noise: ``"uniform"`` (a random draw: u ~ U[0, 1), or u ~ q(u | x) with variational
                dequantization) or ``"center"`` (deterministic: bin centres, or with
                variational dequantization the noise q maps its base distribution's mode to,
                where the body was fitted).
        """
        self._require_conditional("class_log_likelihoods")
        x, _ = as_pixel_batch(x, self.config.shape, self.device)
        if noise == "uniform":
            y, log_q = self._dequantize(x, generator)  # log q(u | x): variational only
        elif noise == "center":
            y, log_q = self._central(x)
        else:
            raise ValueError(f"unknown noise {noise!r}; valid: 'uniform', 'center'")
        eps = self._noise(y, generator)  # the same for every label
        if self.embedding is None:  # one pass: the body is the same for every label
            z, logabsdet = self._latent(y, None, eps)
            return self.distribution.log_prob_components(z) + (logabsdet - log_q)[:, None]
        columns = []
        for label in range(self.config.num_classes):
            cond = torch.full((x.shape[0],), label, dtype=torch.int64, device=x.device)
            z, logabsdet = self._latent(y, cond, eps)
            columns.append(self.log_prior(z, cond) + logabsdet - log_q)
        return torch.stack(columns, dim=1)

    @property
    def label_mixture(self) -> bool:
        """Whether the base distribution is the class mixture (conditioning="mixture")."""
        return self.config.label_mixture

    @property
    def label_passes(self) -> int:
        """Passes through the flow body that :meth:`class_log_likelihoods` (hence log p(x)
        without a label, and p(label | x)) costs: 1 where the body never sees the label, K
        (100 pair labels, 10 single-image classes) where the couplings read it; 0 for an
        unconditional model."""
        if not self.config.conditional:
            return 0
        return 1 if self.embedding is None else self.config.num_classes

    # ----------------------------------------------------------------- labels
    def log_label_probs(self) -> Tensor:
        """log p(label) (K,): the training labels' frequencies (conditional models);
        -inf for labels never seen. Uniform in a model that was never trained."""
        self._require_conditional("log_label_probs")
        probs = self.distribution.class_probs if self.config.label_mixture else self.label_probs
        return torch.log(probs / probs.sum())  # normalised again: exact after an fp16 export

    @torch.no_grad()
    def set_label_counts(self, counts: Tensor) -> None:
        """Set p(label) to the frequencies ``counts``: one count per label (pairs: 100, or
        10 x 10 [left, right]; single images: 10)."""
        self._require_conditional("set_label_counts")
        probs = self.distribution.class_probs if self.config.label_mixture else self.label_probs
        probs.copy_(label_frequencies(counts, self.config.num_classes).to(probs))

    def sample_labels(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n labels y ~ p(label), int64 (n,) on the model's device (conditional models)."""
        self._require_conditional("sample_labels")
        probs = self.distribution.class_probs if self.config.label_mixture else self.label_probs
        return draw_labels(probs, n, generator)

    @torch.no_grad()
    def class_posterior(self, x: Tensor) -> Tensor:
        """p(label | x) (B, K) by Bayes, dequantized deterministically; rows sum to one.

        At bin centres, or for a flow with variational dequantization at the noise its q maps
        eps = 0 to (bin centres lie off what such a body was fitted to, and misread labels).

        Conditional models: the flow as a classifier of pairs (K = 100) or of single images
        (K = 10) (argmax: :meth:`classify`); costs :attr:`label_passes` passes through the flow.
        """
        log_lik = self.class_log_likelihoods(x, noise="center")
        return torch.softmax(self.log_label_probs() + log_lik, dim=1)

    def classify(self, x: Tensor) -> Tensor:
        """The most probable label of each image, int64 (B,) (conditional models)."""
        return self.class_posterior(x).argmax(dim=1)

    def _require_conditional(self, what: str) -> None:
        if not self.config.conditional:
            raise ValueError(
                f"{what} needs a conditional model (one trained with labels); this one is "
                "unconditional (config.conditional=False)"
            )

    def bits_per_dim(
        self,
        x: Tensor,
        cond: Tensor | int | None = None,
        generator: torch.Generator | None = None,
        draws: int = 1,
    ) -> Tensor:
        r"""Bits per dimension on the 256-level pixel scale, one value per image.

        .. math:: \mathrm{bpd} = \frac{-\log p(y) + D \ln 256}{D \ln 2}, \quad D = C H W,

        with log p(y) from :meth:`log_prob` (dequantized y = (x + u) / 256 in [0, 1], every
        log-determinant included). The D ln 256 term is the change of variables from the
        0..256 pixel scale to [0, 1]; the result is the negative log-likelihood, in bits, of
        the continuous density on the pixel scale, an upper bound (in expectation over u) of
        the discrete model's bits/dim (Theis et al. 2016). Convention of Dinh et al. 2017,
        FFJORD and Residual Flows. ``draws`` averages several dequantization draws.

        Arguments:
            x, cond, generator, draws: as in :meth:`log_prob`.

        Returns:
            (B,) float32 (0-d for one unbatched image).
        """
        d = self.config.num_dims
        log_p = self.log_prob(x, cond, generator, draws)
        return (-log_p + d * math.log(NUM_LEVELS)) / (d * math.log(2))

    def log_weight(
        self,
        x: Tensor,
        cond: Tensor | int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        r"""One importance weight of the discrete model, log w in nats, with E[w] = P(x).

        P(x) is the probability the flow gives the 256-level pixels x: the integral of its
        density over x's bin. One draw of the dequantization noise u ~ q(u | x) (uniform
        noise: q = 1) gives

        .. math:: w = \frac{p\left((x + u) / 256\right)}{256^D \, q(u \mid x)},
            \qquad \mathbb{E}_q[w] = P(x),

        so :meth:`bits_per_dim` is -E[log w] / (D ln 2) and the log-mean-exp of K weights
        is the importance-weighted bound on log P(x) (Burda et al. 2016), tighter as K grows
        and equal to log P(x) in the limit
        (:func:`pairflow.evaluation.evaluate_importance_weighted`). Without a label, a
        conditional flow's weight is its marginal over the labels (all on the same u), still
        unbiased.

        Arguments:
            x, cond, generator: as in :meth:`log_prob`.

        Returns:
            (B,) float32 (0-d for one unbatched image).
        """
        return self.log_prob(x, cond, generator) - self.config.num_dims * math.log(NUM_LEVELS)

    # ----------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        sample_shape: int | tuple[int, ...] | torch.Size = (),
        cond: Tensor | int | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        denoise: bool = True,
    ) -> Tensor:
        """Draw images: z from the base distribution at temperature T, x = inverse(z).

        z ~ N(0, T^2 I), or with the label prior z = mu + T sigma eps (Glow's temperature);
        x = floor(256 * inverse(z)) clamped to 0..255.

        Arguments:
            sample_shape: as in ``torch.distributions``: ``()`` one image (C, H, W),
                ``(n,)`` or ``n`` a batch (n, C, H, W), ``(a, b)`` -> (a, b, C, H, W).
            cond: labels (n,) or one int for all (pairs 0..99, single images 0..9),
                conditional models only; optional there: without them each image's label is
                drawn from p(label) first, the training labels' frequencies
                (:meth:`sample_labels`).
            temperature: T > 0, the latent's standard deviation (T < 1: cleaner, less varied).
            generator: random generator for z (reproducible samples).
            denoise: for a model trained with noise (``config.noise_sigma`` > 0), end with
                the denoising step :meth:`denoise_logits` (TarFlow); ignored otherwise.

        Returns:
            uint8 images of shape ``sample_shape + (C, H, W)``.
        """
        shape = torch.Size([sample_shape] if isinstance(sample_shape, int) else sample_shape)
        n = math.prod(shape) if len(shape) else 1
        if len(shape) and (n < 1 or isinstance(sample_shape, bool)):
            raise ValueError(f"n must be an int >= 1, got {sample_shape!r}")
        cond = self._check_cond(cond, n)
        if cond is None and self.config.conditional:
            cond = self.sample_labels(n, generator)  # the label-free sampler: y ~ p(y) first
        z = self.distribution.sample(n, cond, temperature=temperature, generator=generator)
        h, _ = self.body.inverse(z, self._context(cond))
        if self.config.noise_sigma and denoise:
            h = self.denoise_logits(h, cond)  # the model's samples are of noisy data
        y, _ = self.logit.inverse(h)
        return quantize(y).reshape(*shape, *self.config.shape)

    @torch.no_grad()
    def encode(self, x: Tensor, cond: Tensor | int | None = None) -> Tensor:
        """Latent of images x at one deterministic dequantization: bin centres, or for a flow
        with variational dequantization the noise q maps eps = 0 to (where its body was
        fitted; its bf16 round trip errs far less there than at bin centres, BENCHMARKS.md).

        ``decode(encode(x))`` returns ``x`` (as uint8 pixels; exactly in fp32).

        Returns:
            float32 (B, C, H, W) ((C, H, W) for one unbatched image).
        """
        x, unbatched = as_pixel_batch(x, self.config.shape, self.device)
        cond = self._check_cond(cond, x.shape[0], optional=self.embedding is None)
        z, _ = self(self._central(x)[0], cond)
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
        cond = self._check_cond(cond, z.shape[0], optional=self.embedding is None)
        y, _ = self.inverse(z.to(self.device, torch.float32), cond)
        return quantize(y)

    @torch.no_grad()
    def data_init(self, x: Tensor, cond: Tensor | None = None) -> None:
        """Initialise every ActNorm layer from a batch of images (pixels 0..255).

        Training initialises them on the first forward pass anyway; call this explicitly
        to control which batch is used (e.g. before wrapping the model for distributed
        training, so every rank starts from the same parameters).
        """
        layers = [m for m in self.modules() if isinstance(m, ActNorm)]
        for m in layers:
            m.reset()
        was_training = self.training
        self.train()
        try:
            self.log_prob(x, cond)
        finally:
            self.train(was_training)


class _Flatten(Transform):
    """Run a vector transform on images flattened to (B, C*H*W), then restore the shape."""

    def __init__(self, transform: Transform):
        super().__init__()
        self.transform = transform

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z, ld = self.transform(x.flatten(1), cond)
        return z.view_as(x), ld

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, ld = self.transform.inverse(z.flatten(1), cond)
        return x.view_as(z), ld


def build_flow(config: FlowConfig | str, **overrides: Any) -> PairFlow:
    """Build a :class:`PairFlow` from a config, or from a preset name plus overrides.

    Example:
        >>> build_flow("seed").config.arch
        'mlp'
    """
    if isinstance(config, str):
        config = FlowConfig.from_preset(config, **overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    return PairFlow(config)
