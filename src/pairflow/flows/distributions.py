"""Base distributions of a flow: the density of the latent z, optionally given the pair label.

A flow is ``PairFlow(transform, distribution, embedding)`` in the nflows sense: the transform
maps data to z, the distribution scores and draws z. Each distribution here has

- ``log_prob(z, cond=None) -> (B,)``: log density of z (summed over its dimensions);
- ``sample(n, cond=None, temperature=1.0, generator=None) -> (n, C, H, W)``: z at
  temperature T (Glow's: the standard deviation scaled by T).

``cond`` is the label (B,) int64 where a distribution uses it: 10 * left + right for pairs,
the class 0..9 for single images.

Example:
    >>> prior = LabelNormal((1, 4, 8))  # pairs: labels 0..99
    >>> z = prior.sample(3, cond=torch.tensor([37, 5, 99]))
    >>> prior.log_prob(z, cond=torch.tensor([37, 5, 99])).shape
    torch.Size([3])
    >>> LabelNormal((3, 4, 4), sides=1).loc.shape  # single images: a mean per class
    torch.Size([1, 10, 3, 4, 4])
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pairflow.flows.guidance import NULL_DIGIT, Guided, label_digits
from pairflow.options import CLASSES_PER_SIDE, NUM_PAIR_CLASSES

__all__ = [
    "label_frequencies",
    "draw_labels",
    "Distribution",
    "StandardNormal",
    "LabelNormal",
    "PairLabelNormal",
    "label_digits",
    "log_standard_normal",
]


def log_standard_normal(z: Tensor) -> Tensor:
    """Log density of a standard normal with diagonal covariance, summed per sample: (B,)."""
    d = z[0].numel()
    return -0.5 * z.pow(2).flatten(1).sum(1) - 0.5 * d * math.log(2 * math.pi)


def log_diagonal_normal(z: Tensor, loc: Tensor, log_scale: Tensor) -> Tensor:
    """Log density of N(loc, diag exp(2 log_scale)) at z, summed per sample: (B,)."""
    d = z[0].numel()
    u = (z - loc) * torch.exp(-log_scale)
    return (-0.5 * u.pow(2) - log_scale).flatten(1).sum(1) - 0.5 * d * math.log(2 * math.pi)


def label_frequencies(counts: Tensor, num_classes: int = NUM_PAIR_CLASSES) -> Tensor:
    """p(y) (K,) float64 from label counts: K = 100 pair labels (100 counts, or 10 x 10
    [left, right]) or K = 10 classes of single images."""
    counts = torch.as_tensor(counts, dtype=torch.float64).reshape(-1)
    if counts.numel() != num_classes or bool((counts < 0).any()) or counts.sum() <= 0:
        raise ValueError(
            f"class counts must be {num_classes} non-negative numbers, not all zero; "
            f"got {counts.numel()} values summing to {float(counts.sum())}"
        )
    return counts / counts.sum()


def draw_labels(probs: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """n labels y ~ probs (K,), int64 (n,) on probs' device (drawn on the generator's)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    device = probs.device
    if generator is not None:
        probs = probs.to(generator.device)
    return torch.multinomial(probs.float(), n, replacement=True, generator=generator).to(device)


class Distribution(nn.Module):
    """A density over latents of shape ``shape`` (C, H, W); see the module docstring.

    A conditional flow's distribution is of the latent and the label together: it also holds
    p(y), the buffer ``class_probs`` (K,) (uniform until training sets it from the training
    labels' counts, :meth:`set_class_counts`), so the label may be left out: sampling draws
    y ~ p(y) first (:meth:`sample_labels`), and log p(x) sums over the labels.

    Arguments:
        shape: the latent's shape (C, H, W).
        num_classes: K, the labels p(y) is over (100 pair labels, 10 single-image classes);
            0 for an unconditional flow (no p(y)).
    """

    uses_label: bool = False
    """Whether :meth:`log_prob` and :meth:`sample` need the pair label ``cond``."""

    label_optional: bool = False
    """Whether :meth:`log_prob` without a label is the marginal over labels (a mixture)."""

    follows_guidance: bool = False
    """Whether its label-dependent parameters take a :class:`~pairflow.flows.guidance.Guided`
    label (classifier-free guidance); a distribution that ignores the label needs not."""

    @property
    def null_label(self) -> bool:
        """Whether it learns a null label (label dropout; see :class:`LabelNormal`)."""
        return False

    def __init__(self, shape: tuple[int, int, int], num_classes: int = 0):
        super().__init__()
        self.shape = tuple(shape)
        self.num_classes = num_classes
        # Not saved: it only tells sample() which device to draw on.
        self.register_buffer("_device_marker", torch.zeros(0), persistent=False)
        if num_classes:
            self.register_buffer("class_probs", torch.full((num_classes,), 1 / num_classes))

    # ----------------------------------------------------------------- p(y)
    @torch.no_grad()
    def set_class_counts(self, counts: Tensor) -> None:
        """Set p(y) to the frequencies ``counts``: one count per label (pairs: 100, or
        10 x 10 [left, right]; single images: 10)."""
        self._labelled()
        probs = label_frequencies(counts, self.num_classes)
        self.class_probs.copy_(probs.to(self.class_probs))

    def log_class_probs(self) -> Tensor:
        """log p(y), (K,); -inf for labels never seen in training."""
        probs = self._labelled().class_probs
        return torch.log(probs / probs.sum())  # normalised again: exact after an fp16 export

    def sample_labels(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n labels y ~ p(y), int64 (n,) on the distribution's device."""
        return draw_labels(self._labelled().class_probs, n, generator)

    def _labelled(self) -> Distribution:
        if not self.num_classes:
            raise ValueError(f"{type(self).__name__} has no p(y): it was built without labels")
        return self

    def log_prob(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        """log p(z) (B,), or log p(z | cond) for a label-dependent distribution."""
        raise NotImplementedError

    def sample(
        self,
        n: int,
        cond: Tensor | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw n latents (n, C, H, W) at temperature T (> 0)."""
        raise NotImplementedError

    def _noise(self, n: int, temperature: float, generator: torch.Generator | None) -> Tensor:
        """T eps with eps ~ N(0, I), drawn on the generator's device, returned on ours."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if not math.isfinite(temperature):
            raise ValueError(f"temperature must be finite, got {temperature!r}")
        device = self._device_marker.device
        draw_on = generator.device if generator is not None else device
        eps = torch.randn((n, *self.shape), generator=generator, device=draw_on)
        return eps.to(device) * temperature


class StandardNormal(Distribution):
    """N(0, I) over latents of shape (C, H, W): RealNVP's and Glow's unconditional prior.

    Given ``num_classes``, the prior of a flow whose couplings read the label: z ~ N(0, I)
    whatever y, with p(y) beside it.
    """

    def log_prob(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        return log_standard_normal(z)

    def sample(self, n, cond=None, temperature=1.0, generator=None) -> Tensor:
        return self._noise(n, temperature, generator)


class LabelNormal(Distribution):
    r"""Label prior N(mu_y, diag sigma_y^2): class-conditional Glow's, position-aware for pairs.

    The latent's width is cut into ``sides`` strips, one per digit of the label: for a pair
    label y = 10 a + b (``sides=2``) the mean and log-scale over the left half of the latent
    are learned per left digit a, over the right half per right digit b, so a rare pair is
    built from what is known of its two digits; for a single image (``sides=1``, y in 0..9)
    they are one mean and scale per class over the whole latent (Glow's prior exactly). Both
    start at zero: the prior begins as the standard normal.

    .. math:: \log p(z \mid y) = \sum_i \log \mathcal{N}(z_i;\ \mu_{y,i},\ \sigma_{y,i}^2)

    With ``null_label`` (a flow trained with label dropout) each side also has a learned
    null mean and scale, used where the side's digit is null (-1, in labels written as
    digits (B, S)); under guidance (:class:`~pairflow.flows.guidance.Guided` in place of the
    label) the mean and log-scale are extrapolated from the null label's to the label's.

    Arguments:
        shape: the latent's shape (C, H, W); W must be divisible by ``sides``.
        sides: digits per label: 2 for pairs (100 labels), 1 for single images (10).
        null_label: learn a null mean and scale per side (parameters ``null_loc`` and
            ``null_log_scale``, only then: weights saved without them load unchanged).
        base: B, the values of a digit: 10, or a flow's own clusters per side where there
            are more (:attr:`~pairflow.flows.FlowConfig.label_base`); B ** sides labels.

    References:
        Kingma and Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
        NeurIPS 2018 (the class-conditional prior).
    """

    uses_label = True
    follows_guidance = True
    """Its mean and scale follow classifier-free guidance (:mod:`pairflow.flows.guidance`)."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        sides: int = 2,
        null_label: bool = False,
        base: int = CLASSES_PER_SIDE,
    ):
        if sides not in (1, 2):
            raise ValueError(f"sides must be 1 (single images) or 2 (pairs), got {sides!r}")
        super().__init__(shape, num_classes=base**sides)
        c, h, w = self.shape
        if w % sides:
            raise ValueError(f"{type(self).__name__} splits the width in halves; got odd width {w}")
        self.sides, self.base = sides, base
        # [side, digit]: side 0 is the left strip (left digit), side 1 the right one.
        k = base
        self.loc = nn.Parameter(torch.zeros(sides, k, c, h, w // sides))
        self.log_scale = nn.Parameter(torch.zeros(sides, k, c, h, w // sides))
        if null_label:  # [side]: what a side without its digit gets (start: N(0, I))
            self.null_loc = nn.Parameter(torch.zeros(sides, c, h, w // sides))
            self.null_log_scale = nn.Parameter(torch.zeros(sides, c, h, w // sides))
        else:  # None: not in state_dict, so weights saved before it load unchanged
            self.register_parameter("null_loc", None)
            self.register_parameter("null_log_scale", None)

    def _strips(self, z: Tensor) -> list[Tensor]:
        """z (B, C, H, W) cut along the width into one strip per side."""
        if self.sides == 1:
            return [z]
        w = self.shape[2] // self.sides
        return [z[..., s * w : (s + 1) * w] for s in range(self.sides)]

    @property
    def null_label(self) -> bool:
        """Whether it has a null mean and scale per side (a flow trained with label dropout)."""
        return self.null_loc is not None

    def params(self, cond: Tensor | Guided) -> tuple[Tensor, Tensor]:
        """Mean and log-scale (B, C, H, W) for labels ``cond``: (B,), digits (B, S) with -1
        for a null side, or a :class:`~pairflow.flows.guidance.Guided` pair of them."""
        if isinstance(cond, Guided):  # (1 + w) params(label) - w params(null label)
            return cond.apply(self.params)
        if cond is None:
            top = self.num_classes - 1
            raise ValueError(f"this prior depends on the label: pass cond, labels in 0..{top}")
        if cond.dim() == 1 and self.sides == 1:
            return self.loc[0, cond], self.log_scale[0, cond]
        locs, log_scales = [], []
        for s, d in enumerate(label_digits(cond, self.sides, self.base)):
            loc, log_scale = self.loc[s, d.clamp(min=0)], self.log_scale[s, d.clamp(min=0)]
            if cond.dim() == 2:  # digits, some maybe null
                if not self.null_label and bool((d == NULL_DIGIT).any()):
                    raise ValueError("this prior has no null label (trained without dropout)")
                if self.null_label:
                    null = (d == NULL_DIGIT).view(-1, 1, 1, 1)
                    loc = torch.where(null, self.null_loc[s], loc)
                    log_scale = torch.where(null, self.null_log_scale[s], log_scale)
            locs.append(loc)
            log_scales.append(log_scale)
        return torch.cat(locs, dim=-1), torch.cat(log_scales, dim=-1)

    def log_prob(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        return log_diagonal_normal(z, *self.params(cond))

    def log_prob_components(self, z: Tensor) -> Tensor:
        """log N(z; mu_y, sigma_y^2) for every label y: (B, base ** sides), column y.

        Each component factorises over the strips, so all of them cost ``base`` strip
        Gaussians per side: for pairs, column base * a + b is L[a] + R[b].
        """
        total = None
        for side, part in enumerate(self._strips(z)):  # (B, C, H, W / sides) each
            u = (part[:, None] - self.loc[side]) * torch.exp(-self.log_scale[side])
            terms = -0.5 * u.pow(2) - self.log_scale[side]  # (B, base, C, H, W / sides)
            strip = terms.flatten(2).sum(2)  # (B, base)
            total = strip if total is None else (total[:, :, None] + strip[:, None, :]).flatten(1)
        d = z[0].numel()
        return total - 0.5 * d * math.log(2 * math.pi)

    def sample(self, n, cond=None, temperature=1.0, generator=None) -> Tensor:
        eps = self._noise(n, temperature, generator)  # (n, C, H, W), T eps
        loc, log_scale = self.params(cond)
        return loc + torch.exp(log_scale) * eps


PairLabelNormal = LabelNormal
"""The label prior's name from before single images had one (``sides=2``, the default)."""
