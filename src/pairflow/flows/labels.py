"""A conditional flow's labels: their embedding, and the flow as a classifier by Bayes.

Names: ``cond`` is the label (B,) at the model level: a pair label 10 * left + right in
0..99, or for single images a class label in 0..9; the transforms receive ``context``, the
embedding of it (B, S, E), one vector per side (S = 2 for pairs, 1 for single images).
p(y) lives in the flow's distribution (``class_probs``); the functions here combine it with
the flow's conditional likelihoods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from pairflow.flows import guidance as guidance_module
from pairflow.flows.guidance import NULL_DIGIT, label_digits
from pairflow.validation import as_pixel_batch

if TYPE_CHECKING:
    from pairflow.flows.flow import Flow

__all__ = [
    "LabelEmbedding",
    "PairEmbedding",
    "LabelledFlow",
    "class_log_likelihoods",
    "class_posterior",
]


class LabelEmbedding(nn.Embedding):
    """Learned vectors for the digits of a label, one per side: (B,) labels -> (B, S, E).

    For a pair label (``sides=2``) rows 0..9 embed the left digit, rows 10..19 the right digit
    (position-specific), so a conditioner can tell "3 on the left" from "3 on the right"; a
    single image's class label (``sides=1``) has the one table of rows 0..9. With ``base`` B
    (a flow's own clusters, more than 10 per side) side s's rows are B s .. B s + B - 1.

    With ``null_label`` (a flow trained with label dropout, :mod:`pairflow.flows.guidance`)
    each side also has a learned null vector, the parameter ``null`` (S, E), which a side
    gets where its digit is null: labels then come as digits (B, S), -1 for a null side.

    Arguments:
        embed_dim: E, the size of each digit's vector.
        sides: S, digits per label: 2 for pairs, 1 for single images.
        null_label: learn a null vector per side (only then: weights saved without it load
            unchanged).
        base: B, the values of a digit (rows B * side + digit): 10, or a flow's own clusters
            per side where there are more (:attr:`~pairflow.flows.FlowConfig.label_base`).

    Example:
        >>> LabelEmbedding(4)(torch.tensor([37, 5])).shape
        torch.Size([2, 2, 4])
        >>> LabelEmbedding(4, sides=1)(torch.tensor([3, 5])).shape
        torch.Size([2, 1, 4])
        >>> embed = LabelEmbedding(4, null_label=True)
        >>> bool((embed(torch.tensor([[3, -1]]))[0, 1] == embed.null[1]).all())
        True
    """

    def __init__(self, embed_dim: int, sides: int = 2, null_label: bool = False, base: int = 10):
        super().__init__(base * sides, embed_dim)
        self.sides, self.base = sides, base
        # Zeros: no draw from the global generator, so a seeded build keeps its other weights.
        null = nn.Parameter(torch.zeros(sides, embed_dim)) if null_label else None
        self.register_parameter("null", null)

    def forward(self, cond: Tensor) -> Tensor:
        digits = label_digits(cond, self.sides, self.base)
        rows = [self.base * s + d.clamp(min=0) for s, d in enumerate(digits)]
        out = super().forward(torch.stack(rows, dim=1))  # (B, S, E)
        if cond.dim() == 2:  # digits, null where -1
            null = torch.stack(digits, dim=1) == NULL_DIGIT  # (B, S)
            if self.null is None:
                if bool(null.any()):
                    raise ValueError("this embedding has no null label (trained without dropout)")
            else:
                out = torch.where(null[..., None], self.null.to(out.dtype), out)
        return out


PairEmbedding = LabelEmbedding
"""The embedding's name from before single images had one (``sides=2``, the default)."""


def class_log_likelihoods(
    flow: Flow, x: Tensor, generator: torch.Generator | None = None, noise: str = "uniform"
) -> Tensor:
    """log p(x | y) for all K labels: (B, K), in nats, from one dequantization draw.

    Where the body never sees the label (the class mixture, ``conditioning="prior"``) this is
    one pass through the flow; where the couplings read it (``"embedding"``, ``"both"``) it
    is K passes, one per label, all on the same dequantized y, so the marginal is exact but
    costs K times a conditional evaluation (:attr:`Flow.label_passes`).

    Arguments:
        flow: a conditional flow.
        x: images, as in :meth:`Flow.log_prob`, batched (B, C, H, W).
        generator: random generator for the dequantization noise.
        noise: ``"uniform"`` (a random draw: u ~ U[0, 1), or u ~ q(u | x) with variational
            dequantization) or ``"center"`` (deterministic: bin centres, or with variational
            dequantization the noise q maps its base distribution's mode to, where the body
            was fitted).
    """
    flow.require_conditional("class_log_likelihoods")
    x, _ = as_pixel_batch(x, flow.config.shape, flow.device)
    if noise == "uniform":
        y, log_q = flow.dequantizer.dequantize(x, generator)
    elif noise == "center":
        y, log_q = flow.dequantizer.central(x)
    else:
        raise ValueError(f"unknown noise {noise!r}; valid: 'uniform', 'center'")
    eps = flow.training_noise(y, generator)  # the same for every label
    if flow.embedding is None:  # one pass: the body is the same for every label
        z, logabsdet = flow.latent(y, None, eps)
        return flow.distribution.log_prob_components(z) + (logabsdet - log_q)[:, None]
    columns = []
    for label in range(flow.config.num_classes):
        cond = torch.full((x.shape[0],), label, dtype=torch.int64, device=x.device)
        z, logabsdet = flow.latent(y, cond, eps)
        columns.append(flow.log_prior(z, cond) + logabsdet - log_q)
    return torch.stack(columns, dim=1)


@torch.no_grad()
def class_posterior(flow: Flow, x: Tensor) -> Tensor:
    """p(y | x) (B, K) by Bayes, dequantized deterministically; rows sum to one.

    At bin centres, or for a flow with variational dequantization at the noise its q maps
    eps = 0 to (bin centres lie off what such a body was fitted to, and misread labels).
    """
    log_lik = class_log_likelihoods(flow, x, noise="center")
    return torch.softmax(flow.log_label_probs() + log_lik, dim=1)


class LabelledFlow:
    """What a :class:`~pairflow.flows.flow.Flow` does with its labels: p(y) (kept by its
    distribution), the marginal's cost, Bayes classification and classifier-free guidance.

    A mixin of the flow (it reads ``config``, ``distribution`` and ``embedding``), so that
    :class:`~pairflow.models.PairClassifier`'s methods sit beside the functions they call.
    """

    @property
    def guidable(self) -> bool:
        """Whether ``sample`` takes ``guidance``: a conditional flow trained with label
        dropout (it has a null label) whose label-reading parts follow guidance."""
        return guidance_module.why_not_guidable(self) is None

    def check_guidance(self, weight: float) -> float:
        """``weight`` as a float if this flow can be guided by it, else ValueError saying why."""
        why = guidance_module.why_not_guidable(self)
        if why is not None:
            raise ValueError(f"guidance needs a flow trained with label dropout: {why}")
        return guidance_module.check_guidance(weight)

    @property
    def label_mixture(self) -> bool:
        """Whether the base distribution marginalises the label itself (the class mixture)."""
        return self.config.conditional and self.distribution.label_optional

    @property
    def label_passes(self) -> int:
        """Passes through the body that the marginal over labels costs: 1 where the body never
        sees the label, K where the couplings read it; 0 for an unconditional flow."""
        if not self.config.reads_labels:
            return 0
        return 1 if self.embedding is None else self.config.num_classes

    def require_conditional(self, what: str) -> None:
        """Raise, naming ``what``, unless this flow reads a label (a conditional flow, or one
        that reads its own clusters, whose labels are those clusters)."""
        if not self.config.reads_labels:
            raise ValueError(
                f"{what} needs a conditional model (one trained with labels); this one is "
                "unconditional (config.conditional=False)"
            )

    def log_label_probs(self) -> Tensor:
        """log p(y) (K,), the training labels' frequencies; -inf for labels never seen."""
        self.require_conditional("log_label_probs")
        return self.distribution.log_class_probs()

    def set_label_counts(self, counts: Tensor) -> None:
        """Set p(y) to the frequencies ``counts`` (pairs: 100, or 10 x 10; singles: 10)."""
        self.require_conditional("set_label_counts")
        self.distribution.set_class_counts(counts)

    def sample_labels(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n labels y ~ p(y), int64 (n,) on the model's device."""
        self.require_conditional("sample_labels")
        return self.distribution.sample_labels(n, generator)

    def marginal_log_prob(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The exact log p(x) = logsumexp_y [log p(y) + log p(x | y)] (B,) in nats, from one
        dequantization draw: K passes where the couplings read the label (a conditional
        flow's marginal, or the exact density of a flow that reads its own clusters)."""
        log_lik = self.class_log_likelihoods(x, generator)
        return torch.logsumexp(self.log_label_probs() + log_lik, dim=1)

    def class_log_likelihoods(self, x, generator=None, noise: str = "uniform") -> Tensor:
        """log p(x | y) (B, K) for every label (:func:`~pairflow.flows.labels` module)."""
        return class_log_likelihoods(self, x, generator, noise)

    def class_posterior(self, x: Tensor) -> Tensor:
        """p(y | x) (B, K) by Bayes: :func:`pairflow.flows.labels.class_posterior`."""
        return class_posterior(self, x)

    def classify(self, x: Tensor) -> Tensor:
        """The most probable label of each image, int64 (B,)."""
        return self.class_posterior(x).argmax(dim=1)
