"""PairFlow: a RealNVP flow over 1x28x56 digit-pair images, its config and its presets.

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

References:
    Dinh, Sohl-Dickstein and Bengio, "Density estimation using Real NVP", ICLR 2017.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pairflow.flows.actnorm import ActNorm
from pairflow.flows.base import Compose, Transform
from pairflow.flows.coupling import AffineCoupling
from pairflow.flows.masks import VECTOR_MASKS, vector_mask
from pairflow.flows.multiscale import CHECKERBOARD_MODES, multiscale_flow
from pairflow.flows.nets import ConvResNet, SeparateMLPs
from pairflow.flows.preprocessing import NUM_LEVELS, Logit, dequantize, quantize
from pairflow.utils import ModelConfig
from pairflow.validation import check_pair_labels, check_pixels

__all__ = [
    "FlowConfig",
    "PairFlow",
    "build_flow",
    "PRESETS",
    "ARCHS",
    "PRECISIONS",
    "NUM_PAIR_CLASSES",
    "resolve_precision",
]

ARCHS = ("mlp", "multiscale")
PRECISIONS = ("fp32", "bf16")
CONDITIONINGS = ("embedding", "prior", "both")
NUM_PAIR_CLASSES = 100
"""Pair labels are 10 * left digit + right digit, 0..99."""


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
        arch: ``"mlp"`` (flattened-vector RealNVP) or ``"multiscale"`` (convolutional).
        channels, height, width: image shape (C, H, W); 1x28x56 for digit pairs.
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
        checkerboard: ``"squeezed"`` or ``"masked"``: how checkerboard couplings feed their
            conditioner (same masks; see :func:`~pairflow.flows.multiscale_flow`).
        conditional: condition on pair labels (``cond`` = 10 * left + right).
        conditioning: how a conditional model uses the label. ``"embedding"``: each digit's
            learned embedding (left and right digits have separate tables) is fed to every
            coupling's conditioner. ``"prior"``: a label-dependent base distribution,
            N(mu, diag sigma^2) whose mean and scale over the left half of the latent are
            learned per left digit and over the right half per right digit (class-conditional
            Glow's prior, made position-aware). ``"both"``: the two together.
        embed_dim: size of each digit's embedding in a conditional model.
        precision: ``"fp32"`` or ``"bf16"`` (conditioner nets under bf16 autocast; the affine
            maths, log-determinants and prior stay in fp32).
    """

    preset: str = "custom"
    arch: str = "multiscale"
    channels: int = 1
    height: int = 28
    width: int = 56
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
    # conditioning and speed
    conditional: bool = False
    conditioning: str = "embedding"
    embed_dim: int = 8
    precision: str = "fp32"

    def __post_init__(self) -> None:
        _check_choice("arch", self.arch, ARCHS)
        _check_choice("mask", self.mask, VECTOR_MASKS)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("checkerboard", self.checkerboard, CHECKERBOARD_MODES)
        _check_choice("conditioning", self.conditioning, CONDITIONINGS)
        for name in (
            "channels",
            "height",
            "width",
            "num_couplings",
            "hidden_features",
            "num_scales",
            "hidden_channels",
            "embed_dim",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"FlowConfig.{name} must be a positive int, got {value!r}")
        if not 0 <= self.logit_alpha < 0.5:
            raise ValueError(f"FlowConfig.logit_alpha must be in [0, 0.5), got {self.logit_alpha}")
        if self.scale_bound <= 0:
            raise ValueError(f"FlowConfig.scale_bound must be > 0, got {self.scale_bound}")
        if self.label_prior and self.width % 2:
            raise ValueError(
                f"FlowConfig: conditioning={self.conditioning!r} splits the latent into left "
                f"and right halves; the width must be even, got {self.width}"
            )

    @property
    def label_embedding(self) -> bool:
        """Whether the couplings' conditioners read the label (conditional models)."""
        return self.conditional and self.conditioning in ("embedding", "both")

    @property
    def label_prior(self) -> bool:
        """Whether the base distribution depends on the label (conditional models)."""
        return self.conditional and self.conditioning in ("prior", "both")


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
}
FlowConfig.PRESETS = PRESETS


def _check_choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """Turn ``"auto"`` into ``"bf16"`` where the hardware has fast bfloat16, else ``"fp32"``.

    Fast bfloat16 means: a CUDA GPU with bf16 support, or a CPU with AVX512-BF16 or AMX.

    Arguments:
        precision: ``"fp32"``, ``"bf16"`` or ``"auto"``.
        device: the device the model runs on.
    """
    if precision in PRECISIONS:
        return precision
    if precision != "auto":
        raise ValueError(f"unknown precision {precision!r}; valid: fp32, bf16, auto")
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        cpu = torch.cpu
        fast = (
            getattr(cpu, "_is_amx_tile_supported", lambda: False)()
            or getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
        )
        return "bf16" if fast else "fp32"
    return "fp32"


def _log_standard_normal(z: Tensor) -> Tensor:
    """Log density of a standard normal with diagonal covariance, summed per sample: (B,)."""
    d = z[0].numel()
    return -0.5 * z.pow(2).flatten(1).sum(1) - 0.5 * d * math.log(2 * math.pi)


def _log_diagonal_normal(z: Tensor, loc: Tensor, log_scale: Tensor) -> Tensor:
    """Log density of N(loc, diag exp(2 log_scale)) at z, summed per sample: (B,)."""
    d = z[0].numel()
    u = (z - loc) * torch.exp(-log_scale)
    return (-0.5 * u.pow(2) - log_scale).flatten(1).sum(1) - 0.5 * d * math.log(2 * math.pi)


class PairFlow(Transform):
    """A RealNVP normalizing flow for digit-pair images, with exact likelihoods.

    As a :class:`~pairflow.flows.base.Transform`, ``forward(y, cond)`` maps continuous data
    y in [0, 1]^(C,H,W) (dequantized pixels / 256) through the logit preprocessing and the
    flow body to the latent z (same shape), with the total log-determinant; ``inverse`` goes
    back. The prior on z is a standard normal (diagonal), or for ``conditioning="prior"`` or
    ``"both"`` a diagonal normal whose mean and scale depend on the label. The pixel-level methods
    (:meth:`log_prob`, :meth:`bits_per_dim`, :meth:`sample`, :meth:`encode`,
    :meth:`decode`) take and return pixel values 0..255.

    Arguments:
        config: the :class:`FlowConfig` (kept as ``.config``).

    Example:
        >>> flow = build_flow(FlowConfig.from_preset("multiscale", height=4, width=8,
        ...                                          hidden_channels=4, num_blocks=1))
        >>> x = torch.randint(0, 256, (3, 1, 4, 8), dtype=torch.uint8)
        >>> flow.bits_per_dim(x).shape
        torch.Size([3])
        >>> flow.sample(2).shape, flow.sample(2).dtype
        (torch.Size([2, 1, 4, 8]), torch.uint8)
    """

    def __init__(self, config: FlowConfig):
        super().__init__()
        self.config = config
        self.logit = Logit(config.logit_alpha)
        context = config.embed_dim if config.label_embedding else 0
        if config.label_embedding:
            # Rows 0..9: left digit, rows 10..19: right digit (position-specific embeddings).
            self.digit_embedding = nn.Embedding(20, config.embed_dim)
        if config.label_prior:
            # [side, digit]: the prior's mean and log-scale over one half of the latent. Zero
            # initialised: the prior starts as the standard normal.
            half = (config.channels, config.height, config.width // 2)
            self.prior_loc = nn.Parameter(torch.zeros(2, 10, *half))
            self.prior_log_scale = nn.Parameter(torch.zeros(2, 10, *half))
        if config.arch == "mlp":
            self.body = self._build_mlp(config, context)
        else:
            self.body = self._build_multiscale(config, context)
        self._apply_precision()

    @staticmethod
    def _build_mlp(config: FlowConfig, context: int) -> Transform:
        def factory(i: int, o: int) -> nn.Module:
            return SeparateMLPs(
                i, o, config.hidden_features, config.num_hidden_layers, 2, 2 * context
            )

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

    # ----------------------------------------------------------------- precision
    @property
    def precision(self) -> str:
        """``"fp32"`` or ``"bf16"``; setting it switches every coupling's conditioner."""
        return self.config.precision

    @precision.setter
    def precision(self, value: str) -> None:
        _check_choice("precision", value, PRECISIONS)
        self.config.precision = value
        self._apply_precision()

    def _apply_precision(self) -> None:
        dtype = torch.bfloat16 if self.config.precision == "bf16" else None
        for module in self.modules():
            if isinstance(module, AffineCoupling):
                module.autocast_dtype = dtype

    # ----------------------------------------------------------------- transform
    def _context(self, cond: Tensor | None) -> Tensor | None:
        if not self.config.conditional:
            return None
        if cond is None:
            raise ValueError("this model is conditional: pass cond, pair labels (B,) in 0..99")
        if not self.config.label_embedding:
            return None
        digits = torch.stack([cond // 10, 10 + cond % 10], dim=1)  # (B, 2)
        return self.digit_embedding(digits)  # (B, 2, E)

    def prior_params(self, cond: Tensor | None) -> tuple[Tensor, Tensor] | None:
        """Mean and log-scale (B, C, H, W) of the base distribution for labels ``cond``.

        None when the prior is the standard normal (unconditional models and
        ``conditioning="embedding"``). The left half of each comes from the left digit's
        parameters, the right half from the right digit's.
        """
        if not self.config.label_prior:
            return None
        if cond is None:
            raise ValueError("this model is conditional: pass cond, pair labels (B,) in 0..99")
        left, right = cond // 10, cond % 10
        loc = torch.cat([self.prior_loc[0, left], self.prior_loc[1, right]], dim=-1)
        log_scale = torch.cat([self.prior_log_scale[0, left], self.prior_log_scale[1, right]], -1)
        return loc, log_scale

    def log_prior(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        """log p(z) (B,) under the base distribution (label-dependent where configured)."""
        params = self.prior_params(cond)
        if params is None:
            return _log_standard_normal(z)
        return _log_diagonal_normal(z, *params)

    def forward(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map continuous data y in [0, 1] (B, C, H, W) to latent z; returns (z, logabsdet).

        ``logabsdet`` includes the logit preprocessing. ``cond`` are pair labels (B,).
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
    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _check_pixels(self, x: Tensor) -> Tensor:
        return check_pixels(x, self.config.shape, self._device)

    def _check_cond(self, cond: Tensor | int | None, batch: int) -> Tensor | None:
        return check_pair_labels(cond, batch, self.config.conditional, self._device)

    # ----------------------------------------------------------------- likelihood
    def log_prob(
        self,
        x: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Log density log p(y) of the dequantized images y = (x + u) / 256, in nats.

        Arguments:
            x: pixel values 0..255, uint8 or float, (B, C, H, W).
            cond: pair labels (B,) int64 in 0..99, for conditional models only.
            generator: random generator for the dequantization noise u ~ U[0, 1).

        Returns:
            (B,) float32: log p(z) + log|det dz/dy|, where p is the base distribution
            (:meth:`log_prior`) and the log-determinant includes the logit preprocessing and
            every flow layer. This is a density on [0, 1]^D; see
            :meth:`bits_per_dim` for the discrete 256-level scale.
        """
        x = self._check_pixels(x)
        cond = self._check_cond(cond, x.shape[0])
        y = dequantize(x, generator)  # (B, C, H, W) in [0, 1)
        z, logabsdet = self(y, cond)
        return self.log_prior(z, cond) + logabsdet

    def bits_per_dim(
        self,
        x: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        r"""Bits per dimension on the 256-level pixel scale, one value per image.

        .. math:: \mathrm{bpd} = \frac{-\log p(y) + D \ln 256}{D \ln 2}, \quad D = C H W,

        with log p(y) from :meth:`log_prob` (dequantized y = (x + u) / 256 in [0, 1], every
        log-determinant included). The D ln 256 term is the change of variables from the
        0..256 pixel scale to [0, 1]; the result is the negative log-likelihood, in bits, of
        the continuous density on the pixel scale, an upper bound (in expectation over u) of
        the discrete model's bits/dim (Theis et al. 2016). Convention of Dinh et al. 2017,
        FFJORD and Residual Flows. One dequantization draw per call: average several calls
        for a lower-variance estimate.

        Arguments:
            x, cond, generator: as in :meth:`log_prob`.

        Returns:
            (B,) float32.
        """
        d = self.config.num_dims
        return (-self.log_prob(x, cond, generator) + d * math.log(NUM_LEVELS)) / (d * math.log(2))

    # ----------------------------------------------------------------- sampling
    def _latent(self, n: int, temperature: float, generator: torch.Generator | None) -> Tensor:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        shape = (n, *self.config.shape)
        device = generator.device if generator is not None else self._device
        z = torch.randn(shape, generator=generator, device=device)
        return z.to(self._device) * temperature

    @torch.no_grad()
    def sample(
        self,
        n: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        cond: Tensor | int | None = None,
    ) -> Tensor:
        """Draw n images: z ~ N(0, T^2 I), x = floor(256 * inverse(z)) clamped to 0..255.

        With a label-dependent prior N(mu, diag sigma^2), z = mu + T sigma eps (Glow's
        temperature).

        Arguments:
            n: number of images (>= 1).
            temperature: T > 0, the latent's standard deviation (T < 1: cleaner, less varied).
            generator: random generator for z (reproducible samples).
            cond: pair labels (n,) or one int for all, conditional models only.

        Returns:
            uint8 (n, C, H, W).
        """
        z = self._latent(n, temperature, generator)
        cond = self._check_cond(cond, n)
        params = self.prior_params(cond)
        if params is not None:
            loc, log_scale = params
            z = loc + torch.exp(log_scale) * z
        y, _ = self.inverse(z, cond)
        return quantize(y)

    @torch.no_grad()
    def encode(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """Latent of images x (pixels 0..255), dequantized at bin centres (deterministic).

        ``decode(encode(x))`` returns ``x``.

        Returns:
            float32 (B, C, H, W).
        """
        x = self._check_pixels(x)
        cond = self._check_cond(cond, x.shape[0])
        z, _ = self(dequantize(x, noise="center"), cond)
        return z

    @torch.no_grad()
    def decode(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        """Images (uint8 pixels) from latents z (B, C, H, W), e.g. interpolated ones."""
        shape = self.config.shape
        if not isinstance(z, Tensor) or z.dim() != 4 or tuple(z.shape[1:]) != shape:
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(
                f"expected latents of shape (B, {', '.join(map(str, shape))}), got {got}"
            )
        cond = self._check_cond(cond, z.shape[0])
        y, _ = self.inverse(z.to(self._device, torch.float32), cond)
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
