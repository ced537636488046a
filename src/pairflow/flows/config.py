"""The flow's configuration (:class:`FlowConfig`) and its presets.

A config is a dataclass of plain Python values: checkpoints store it as a dict, so sampling
needs nothing but the checkpoint (``FlowConfig.from_dict``).

Presets (``FlowConfig.from_preset``):

- ``"seed"``: the model pairflow was specified with. The image flattened to a 1568-vector,
  6 affine couplings with alternating (even/odd) masks, separate scale and translation MLPs
  (2 hidden layers of 512, LeakyReLU, tanh-bounded scale), standard normal prior.
  Each MLP reads only the 784 kept values and writes only the 784 transformed ones (the
  masked-input MLP of the original computes the same family of functions at twice the cost).
- ``"multiscale"``: the multi-scale RealNVP of Dinh et al. (2017) adapted to 1x28x56, two
  scales: 3 checkerboard couplings, squeeze to 4x14x28, 3 channel-wise couplings, factor out
  half (2x14x28 go on), 4 checkerboard couplings; ActNorm before each coupling; conditioners
  are residual CNNs (64 channels, one residual block, weight normalisation). Checkerboard
  couplings read their kept pixels as a squeezed half-resolution image (same masks, 4x
  cheaper conditioners). About 0.79M parameters.
- ``"glow"``: Glow (Kingma and Dhariwal 2018) on 1x28x56: squeeze to 4x14x28, 6 steps of
  ActNorm, LU-parametrised invertible 1x1 convolution and channel-wise affine coupling,
  factor out half, squeeze to 8x7x14, 6 more steps; the same conditioner CNNs as
  ``"multiscale"`` (``--set coupling=additive`` for NICE's additive couplings).
- ``"tarflow"``: TarFlow (Zhai et al. 2024, :mod:`pairflow.flows.tarflow`): 4x4 patches
  (7x14 = 98 tokens for a pair, the left digit's 49 first), 4 affine autoregressive blocks
  of 2 causal transformer layers (width 128, 4 heads), the token order reversed between
  blocks, an ActNorm on the tokens before the first. About 1.7M parameters.

References:
    Dinh, Sohl-Dickstein and Bengio, "Density estimation using Real NVP", ICLR 2017.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

from pairflow.flows.masks import VECTOR_MASKS
from pairflow.flows.multiscale import CHECKERBOARD_MODES
from pairflow.options import (
    CLASSES_PER_SIDE,
    DEFAULT_LAYOUT,
    Arch,
    Conditioning,
    CouplingMap,
    Dequantization,
    Layout,
    Precision,
    Prior,
    check_choice,
)
from pairflow.utils import ModelConfig

MAX_CLUSTERS = 80
"""A flow's own clusters per side at most (``FlowConfig.clusters``): its exact density sums
over k ** 2 cluster pairs, one pass each (:mod:`pairflow.flows.clusters`)."""


def label_base(clusters: int) -> int:
    """B, the values a label's digit takes per side: 10, or a flow's own k clusters per side
    where there are more (up to 10 they are written like pair labels, 10 a + b)."""
    return max(CLASSES_PER_SIDE, clusters)


PRIORS = get_args(Prior)
"""Base distributions of an unconditional flow (:attr:`FlowConfig.prior`)."""

__all__ = ["FlowConfig", "PRESETS"]


@dataclass
class FlowConfig(ModelConfig):
    """Everything needed to rebuild a :class:`PairFlow`; plain Python values only.

    ``dataclasses.asdict(config)`` is what checkpoints store, so they load with
    ``torch.load(..., weights_only=True)`` and ``FlowConfig.from_dict``. ``from_preset``,
    ``from_dict``, ``to_dict``, ``shape`` and ``num_dims`` come from
    :class:`~pairflow.utils.ModelConfig`, shared with the baselines' configs.

    Example:
        >>> FlowConfig.from_preset("multiscale", height=4, width=8).shape
        (1, 4, 8)

    Arguments:
        preset: name of the preset this config came from (informational).
        arch: ``"mlp"`` (flattened-vector RealNVP), ``"multiscale"`` (convolutional RealNVP),
            ``"glow"`` (:func:`~pairflow.flows.glow.glow_flow`) or ``"tarflow"``
            (:class:`~pairflow.flows.tarflow.TransformerFlow`).
        channels, height, width: image shape (C, H, W); 1x28x56 for digit pairs.
        layout: ``"pair"`` (two images side by side, labels 10 a + b in 0..99) or
            ``"single"`` (one image, class labels 0..9): what a conditional model's label is
            (:attr:`label_sides`, :attr:`num_classes`). Training sets it from ``--layout``;
            configs saved without it are pairs.
        logit_alpha: boundary a of the logit preprocessing (:class:`Logit`).
        scale_bound: soft bound b on each coupling's log-scale, s = b tanh(s~ / b).
        num_couplings: couplings of the ``mlp`` arch.
        hidden_features: hidden width of the ``mlp`` arch's scale and translation nets.
        num_hidden_layers: hidden layers of those nets.
        mask: vector mask of the ``mlp`` arch: ``"alternate"``, ``"half"``, ``"checkerboard"``.
        num_scales: scales of the ``multiscale`` arch.
        hidden_channels: conditioner CNN width of the ``multiscale`` arch.
        num_blocks: residual blocks per conditioner CNN.
        checkerboard_couplings, channel_couplings, final_couplings: per-scale layer counts.
        actnorm: ActNorm before each coupling (``multiscale`` arch).
        glow_levels: levels of the ``glow`` arch (each squeezes; all but the last factor out
            half the channels); H and W must be divisible by 2 ** glow_levels.
        glow_steps: Glow steps (ActNorm, invertible 1x1 convolution, coupling) per level.
        patch_size: p of the ``tarflow`` arch: its tokens are p x p patches (H divisible by
            p, W by p times the sides: 2 p for pairs).
        tar_blocks: autoregressive blocks of the ``tarflow`` arch (order reversed in every
            second one).
        tar_width, tar_layers, tar_heads: width, layers and attention heads of each block's
            causal transformer (``tar_width`` divisible by ``tar_heads``); ``scale_bound``
            bounds each block's log-scales.
        coupling: the couplings' elementwise map, for every arch: ``"affine"`` (RealNVP's,
            log-scale bounded by ``scale_bound``), ``"additive"`` (NICE's, volume
            preserving) or ``"spline"`` (a monotone rational-quadratic spline, Durkan et al.
            2019, :class:`~pairflow.flows.maps.RationalQuadraticSpline`).
        spline_bins: the spline's bins K (K + 1 knots; 3K - 1 conditioner outputs per
            transformed feature).
        spline_bound: the spline bends on [-B, B] and is the identity outside (linear tails);
            0 (default): 5 where an ActNorm precedes each coupling (``multiscale``, ``glow``), 15 on
            the raw logit-space image (``mlp``), see :func:`~pairflow.flows.build.couplings_of`.
        checkerboard: ``"squeezed"`` or ``"masked"``: how checkerboard couplings feed their
            conditioner (same masks; see :func:`~pairflow.flows.multiscale_flow`).
        conditional: condition on labels (``cond`` = 10 * left + right for pairs, the class
            0..9 for single images).
        clusters: k > 0 (2..80) makes an unconditional flow whose couplings and prior read,
            in place of a label, each side's nearest of k pixel centres that k-means finds in
            the training images (:mod:`pairflow.flows.clusters`; ``conditioning`` says how
            they are read, as for a label). Its users never give a label; its bits/dim is the
            bound at the image's own clusters. 0 (default): none. Cluster labels are
            written a * B + b with B = max(10, k) (:attr:`label_base`): like pair labels
            up to 10 clusters per side.
        conditioning: how a conditional model uses the label (or a ``clusters`` flow its
            clusters). ``"embedding"``: each digit's
            learned embedding (left and right digits have separate tables; a single image
            has one class table) is fed to every coupling's conditioner, each side's vector
            over its half of the image (a single image's over all of it). ``"prior"``: a
            label-dependent base distribution, N(mu, diag sigma^2) whose mean and scale over
            the left half of the latent are learned per left digit and over the right half
            per right digit (class-conditional Glow's prior, made position-aware; for single
            images Glow's prior itself, one mean and scale per class over the whole latent).
            ``"both"``: the two together. ``"mixture"``: FlowGMM's class-mixture prior
            (:class:`~pairflow.flows.mixture.ClassMixture`): the label prior's 100 (single
            images: 10) Gaussians weighted by the training labels' frequencies; the body
            never sees the label, so one pass gives log p(x | y) for every y, log p(x) and
            p(y | x), and the model samples with or without a label.
        prior: an unconditional flow's base distribution: ``"normal"`` (N(0, I), RealNVP's
            and Glow's) or ``"mixture"`` (:class:`~pairflow.flows.mixture.ClusterMixture`:
            the class mixture's 100 position-aware Gaussians, single images 10, learned
            without labels from k-means clusters of the training images; samples draw a
            component first). Conditional flows choose theirs with ``conditioning``.
        embed_dim: size of each digit's embedding in a conditional model.
        dequantization: ``"uniform"`` (u ~ U[0, 1): bits/dim is the exact likelihood of the
            continuous model), ``"variational"`` (Flow++'s u ~ q(u | x), a conditional flow
            trained with the model: bits/dim is then a variational bound, reported as such) or
            ``"gaussian"`` (TarFlow's: the image in [-1, 1] with N(0, noise_sigma^2) noise, no
            logit; the flow models noisy data, its samples end with a denoising step, and
            ``evaluate --dequantization uniform`` gives its exact bits/dim of clean data).
        dequant_channels, dequant_couplings: width and coupling count of that q(u | x).
        noise_sigma: TarFlow's Gaussian noise augmentation (Zhai et al. 2024). With
            ``dequantization="gaussian"`` the noise's sigma in the data's [-1, 1] space
            (required). Otherwise sigma > 0 adds
            N(0, sigma^2) noise to the logit-space image h before the body, so the flow models
            the noisy h~ = h + sigma eps (its bits/dim are of noisy data: reported apart), and
            sampling ends with one score-based denoising step h = h~ + sigma^2 grad log p(h~)
            (Tweedie's formula). 0 (default): off.
        label_dropout: classifier-free guidance's label dropout (conditional flows, or flows
            reading their own ``clusters``, with ``conditioning`` ``"embedding"``, ``"prior"``
            or ``"both"``): in training each side of a label (or of the image's clusters) is
            replaced by a learned null label with this probability, so the one model is also
            one without labels (or clusters) and samples with ``guidance=w``
            (:mod:`pairflow.flows.guidance`). A model field, not a training one: it creates
            the null label's parameters. 0 (default): no null label.
        precision: ``"fp32"`` or ``"bf16"`` (conditioner nets under bf16 autocast; the affine
            maths, log-determinants and prior stay in fp32).
    """

    preset: str = "custom"
    arch: Arch = "multiscale"
    channels: int = 1
    height: int = 28
    width: int = 56
    layout: Layout = DEFAULT_LAYOUT
    logit_alpha: float = 1e-6
    scale_bound: float = 2.0
    # arch "mlp"
    num_couplings: int = 6
    hidden_features: int = 512
    num_hidden_layers: int = 2
    mask: str = "alternate"
    # arch "multiscale"
    num_scales: int = 2
    hidden_channels: int = 64
    num_blocks: int = 2
    checkerboard_couplings: int = 3
    channel_couplings: int = 3
    final_couplings: int = 4
    actnorm: bool = True
    checkerboard: str = "squeezed"
    # arch "glow" (hidden_channels, num_blocks and scale_bound as for "multiscale")
    glow_levels: int = 2
    glow_steps: int = 6
    # arch "tarflow" (scale_bound as for the others)
    patch_size: int = 4
    tar_blocks: int = 4
    tar_width: int = 128
    tar_layers: int = 2
    tar_heads: int = 4
    # the couplings' map, every arch
    coupling: CouplingMap = "affine"
    spline_bins: int = 8
    spline_bound: float = 0.0
    # conditioning and speed
    conditional: bool = False
    clusters: int = 0
    conditioning: Conditioning = "embedding"
    prior: Prior = "normal"
    embed_dim: int = 8
    dequantization: Dequantization = "uniform"
    dequant_channels: int = 16
    dequant_couplings: int = 2
    noise_sigma: float = 0.0
    label_dropout: float = 0.0
    precision: Precision = "fp32"

    def __post_init__(self) -> None:
        check_choice("arch", self.arch, Arch)
        check_choice("layout", self.layout, Layout)
        check_choice("mask", self.mask, VECTOR_MASKS)
        check_choice("precision", self.precision, Precision)
        check_choice("checkerboard", self.checkerboard, CHECKERBOARD_MODES)
        check_choice("conditioning", self.conditioning, Conditioning)
        check_choice("coupling", self.coupling, CouplingMap)
        check_choice("dequantization", self.dequantization, Dequantization)
        check_choice("prior", self.prior, Prior)
        if self.prior != "normal" and self.conditional:
            raise ValueError(
                f"FlowConfig.prior={self.prior!r} is for unconditional flows; a conditional "
                "flow's base distribution is its conditioning (conditioning='mixture': the "
                "class mixture over labels)"
            )
        for name in (
            "channels",
            "height",
            "width",
            "num_couplings",
            "hidden_features",
            "num_scales",
            "hidden_channels",
            "embed_dim",
            "glow_levels",
            "glow_steps",
            "dequant_channels",
            "spline_bins",
            "patch_size",
            "tar_blocks",
            "tar_width",
            "tar_layers",
            "tar_heads",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"FlowConfig.{name} must be a positive int, got {value!r}")
        if self.arch == "tarflow":
            self._check_tarflow()
        # alpha = 0 maps a dequantised 0 to logit(0) = -inf: every bits/dim would be NaN.
        if not 0 < self.logit_alpha < 0.5:
            raise ValueError(f"FlowConfig.logit_alpha must be in (0, 0.5), got {self.logit_alpha}")
        if not (isinstance(self.noise_sigma, (int, float)) and 0 <= self.noise_sigma < 10):
            raise ValueError(f"FlowConfig.noise_sigma must be in [0, 10), got {self.noise_sigma!r}")
        if self.dequantization == "gaussian" and not self.noise_sigma:
            raise ValueError(
                "FlowConfig.dequantization='gaussian' adds N(0, noise_sigma^2) noise in the "
                "data's [-1, 1] space: set noise_sigma > 0 (TarFlow: 0.05 to 0.15)"
            )
        self._check_label_dropout()
        self._check_clusters()
        if self.scale_bound <= 0:
            raise ValueError(f"FlowConfig.scale_bound must be > 0, got {self.scale_bound}")
        bound = self.spline_bound
        if not (isinstance(bound, (int, float)) and 0 <= bound < 1e4):
            raise ValueError(
                f"FlowConfig.spline_bound must be >= 0 (0: chosen by the arch), got {bound!r}"
            )
        if (self.label_prior or self.label_mixture or self.cluster_mixture) and (
            self.width % self.label_sides
        ):
            raise ValueError(
                f"FlowConfig: conditioning={self.conditioning!r} splits the latent into left "
                f"and right halves; the width must be even, got {self.width}"
            )

    def _check_label_dropout(self) -> None:
        p = self.label_dropout
        if not (isinstance(p, (int, float)) and not isinstance(p, bool) and 0 <= p < 1):
            raise ValueError(f"FlowConfig.label_dropout must be in [0, 1), got {p!r}")
        if p and not (self.label_embedding or self.label_prior):
            what = "conditioning='mixture'" if self.conditional else "an unconditional flow"
            raise ValueError(
                f"FlowConfig.label_dropout={p!r} needs a conditional flow (or one reading its "
                "own clusters) whose couplings or prior read the label (conditioning "
                f"'embedding', 'prior' or 'both'); {what} has no label to drop"
            )

    def _check_clusters(self) -> None:
        k = self.clusters
        top = MAX_CLUSTERS
        if not isinstance(k, int) or isinstance(k, bool) or not (k == 0 or 2 <= k <= top):
            raise ValueError(
                f"FlowConfig.clusters must be 0 (none) or 2..{top} per side, got {k!r}"
            )
        if not k:
            return
        if self.conditional:
            raise ValueError(
                "FlowConfig.clusters gives an unconditional flow clusters of its own to read in "
                "place of a label; a conditional flow reads its labels: leave one of them out"
            )
        if self.conditioning == "mixture" or self.prior != "normal":
            raise ValueError(
                "FlowConfig.clusters: the couplings or the prior read the clusters "
                "(conditioning 'embedding', 'prior' or 'both', prior 'normal'), got "
                f"conditioning={self.conditioning!r}, prior={self.prior!r}"
            )

    @property
    def reads_labels(self) -> bool:
        """Whether the flow's parts read a label: a conditional flow's, or its own clusters'."""
        return self.conditional or bool(self.clusters)

    @property
    def label_base(self) -> int:
        """B, the values a label's digit takes per side (labels are written a * B + b):
        10 for digits, max(10, k) for a flow's own k clusters per side (up to 10 clusters
        are written like pair labels, so models saved with them load unchanged)."""
        return label_base(self.clusters)

    @property
    def num_classes(self) -> int:
        """Labels the flow knows: B ** sides (:attr:`label_base`): 100 pairs (10 a + b) or
        10 single-image classes, or a cluster flow's cluster labels."""
        return self.label_base**self.label_sides

    @property
    def null_label(self) -> bool:
        """Whether the flow learns a null label (label dropout), so it can be guided."""
        return bool(self.label_dropout) and (self.label_embedding or self.label_prior)

    def _check_tarflow(self) -> None:
        p, sides = self.patch_size, self.label_sides
        if self.height % p or self.width % (sides * p):
            raise ValueError(
                f"FlowConfig: arch='tarflow' cuts each of the {sides} side(s) into "
                f"{p}x{p} patches: the height must be divisible by {p} and the width by "
                f"{sides * p}, got {self.height}x{self.width} (set patch_size)"
            )
        if self.tar_width % self.tar_heads:
            raise ValueError(
                f"FlowConfig.tar_width ({self.tar_width}) must be divisible by tar_heads "
                f"({self.tar_heads})"
            )
        if self.coupling != "affine":
            raise ValueError(
                f"FlowConfig: arch='tarflow' has affine autoregressive blocks, not couplings; "
                f"coupling must be 'affine', got {self.coupling!r}"
            )

    @property
    def label_embedding(self) -> bool:
        """Whether the couplings' conditioners read the label (conditional models)."""
        return self.reads_labels and self.conditioning in ("embedding", "both")

    @property
    def label_prior(self) -> bool:
        """Whether the base distribution depends on the label (conditional models)."""
        return self.reads_labels and self.conditioning in ("prior", "both")

    @property
    def cluster_mixture(self) -> bool:
        """Whether the base distribution is the label-free mixture (``prior="mixture"``)."""
        return not self.conditional and self.prior == "mixture"

    @property
    def label_mixture(self) -> bool:
        """Whether the base distribution is the class mixture (the label optional everywhere)."""
        return self.conditional and self.conditioning == "mixture"


PRESETS: dict[str, dict[str, Any]] = {
    "seed": dict(
        arch="mlp",
        num_couplings=6,
        hidden_features=512,
        num_hidden_layers=2,
        mask="alternate",
        scale_bound=1.0,  # s = tanh(s~): the seed's tanh-bounded scale
        conditioning="both",
    ),
    # Sizes chosen by measured bits/dim at equal wall-clock on the 2 CPU cores (BENCHMARKS.md,
    # "Flows"): one residual block of 64 channels beat two blocks and beat 96 channels.
    "multiscale": dict(
        arch="multiscale",
        num_scales=2,
        hidden_channels=64,
        num_blocks=1,
        checkerboard_couplings=3,
        channel_couplings=3,
        final_couplings=4,
        actnorm=True,
        checkerboard="squeezed",
        scale_bound=2.0,
        # Conditional models: label embeddings in the couplings and a label-dependent prior.
        # Fine-tuned from the same run for the same time, "both" matched or beat "embedding"
        # on every measured number (BENCHMARKS.md, "Conditioning"); "embedding" stays the
        # dataclass default so that configs saved without the field load as they were.
        conditioning="both",
    ),
    # Glow (Kingma and Dhariwal 2018) at about the multiscale preset's cost per step: two
    # levels (4x14x28, then 8x7x14) of 6 steps each, the same conditioner CNNs.
    "glow": dict(
        arch="glow",
        glow_levels=2,
        glow_steps=6,
        coupling="affine",
        hidden_channels=64,
        num_blocks=1,
        scale_bound=2.0,
        conditioning="both",
    ),
    # TarFlow (Zhai et al. 2024) sized for a CPU: a train step at batch 64 about 1.2x the
    # multiscale preset's, and 100 pairs sampled, token by token, in 3 to 5 s on 2 shared
    # cores (docs/tarflow.md, benchmarks/tarflow_sampling.py).
    "tarflow": dict(
        arch="tarflow",
        patch_size=4,
        tar_blocks=4,
        tar_width=128,
        tar_layers=2,
        tar_heads=4,
        scale_bound=2.0,
        conditioning="both",
    ),
}
FlowConfig.PRESETS = PRESETS
