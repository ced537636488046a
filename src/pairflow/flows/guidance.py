"""Classifier-free guidance for conditional flows: label dropout and the guided label.

A conditional flow trained with label dropout (``FlowConfig.label_dropout`` = p > 0) sees,
for a fraction p of its training examples and independently per side of a pair, a learned
**null label** in place of the digit, so one model is both conditional (every side labelled)
and unconditional (every side null). At sampling, each part that reads the label (a
coupling's conditioner, a label prior's mean and scale) computes its output under the label
and under the null label and extrapolates,

.. math:: o = o_c + w\\,(o_c - o_u) = (1 + w)\\,o_c - w\\,o_u,

so that w = 0 is the conditional model and w = -1 the unconditional one, both exactly (the
second form is used: it gives o_c and o_u bit for bit at those two weights). For a fixed w
the guided flow is still a flow: every coupling stays invertible with its log-determinant.

Inside the flow a label with null sides is written as digits (B, S), -1 for a null side; a
part that reads the label receives a :class:`Guided` in its place when sampling is guided,
and declares that it follows guidance (``follows_guidance``), as parts declare bf16.

References:
    Ho and Salimans, "Classifier-Free Diffusion Guidance", 2022.
    Zhai et al., "Normalizing Flows are Capable Generative Models" (TarFlow), 2024.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from pairflow.flows.base import Transform

if TYPE_CHECKING:
    from pairflow.flows.flow import Flow

__all__ = [
    "NULL_DIGIT",
    "MAX_GUIDANCE",
    "Guided",
    "check_guidance",
    "drop_labels",
    "null_labels",
    "label_digits",
    "guide",
    "train_labels",
    "why_not_guidable",
    "start_null_label",
]

NULL_DIGIT = -1
"""The digit of a null side in a label written as digits (B, S)."""

MAX_GUIDANCE = 20.0
"""Largest |w| accepted: beyond it the extrapolated log-scales leave any trained range."""


@dataclass(frozen=True)
class Guided:
    """What a part that reads the label receives under guidance: both inputs and the weight.

    Arguments:
        cond: the conditional input (the label, or its embedding).
        uncond: the unconditional one (the null label, or its embedding).
        weight: the guidance weight w (0: conditional, -1: unconditional).

    Example:
        >>> g = Guided(torch.tensor([37]), null_labels(1, 2), 1.5)
        >>> g.mix(torch.tensor([2.0]), torch.tensor([1.0]))  # 2 + 1.5 (2 - 1)
        tensor([3.5000])
    """

    cond: Any
    uncond: Any
    weight: float

    def map(self, fn: Callable[[Any], Any]) -> Guided:
        """The same guidance of ``fn``'s outputs: ``Guided(fn(cond), fn(uncond), w)``."""
        return Guided(fn(self.cond), fn(self.uncond), self.weight)

    def mix(self, out_c: Tensor, out_u: Tensor) -> Tensor:
        """(1 + w) out_c - w out_u: out_c exactly at w = 0, out_u exactly at w = -1."""
        w = self.weight
        return (1 + w) * out_c - w * out_u

    def apply(self, fn: Callable[[Any], Tensor | tuple[Tensor, ...]]):
        """``fn`` under guidance: run on both inputs, the outputs (a tensor or a tuple of
        them) extrapolated by :meth:`mix`."""
        out_c, out_u = fn(self.cond), fn(self.uncond)
        if isinstance(out_c, tuple):
            return tuple(self.mix(c, u) for c, u in zip(out_c, out_u, strict=True))
        return self.mix(out_c, out_u)


def check_guidance(weight: Any) -> float:
    """``weight`` as a float, or ValueError naming it: a finite number in [-20, 20].

    Example:
        >>> check_guidance(1.5)
        1.5
    """
    ok = isinstance(weight, (int, float)) and not isinstance(weight, bool)
    if not ok or not math.isfinite(weight) or abs(weight) > MAX_GUIDANCE:
        raise ValueError(
            f"guidance must be a finite number in [-{MAX_GUIDANCE:g}, {MAX_GUIDANCE:g}] "
            f"(0: the conditional model, -1: the unconditional one), got {weight!r}"
        )
    return float(weight)


def label_digits(cond: Tensor, sides: int, base: int = 10) -> list[Tensor]:
    """The digits of labels, one (B,) tensor per side, leftmost first; -1 for a null side.

    ``cond`` is labels (B,) (pairs 10 a + b, or classes; a flow's own clusters ``base`` a + b,
    :attr:`~pairflow.flows.FlowConfig.label_base`) or digits (B, S) as :func:`drop_labels`
    writes them.
    """
    if cond.dim() == 2:
        return list(cond.unbind(1))
    if sides == 1:
        return [cond]
    return [(cond // base ** (sides - 1 - s)) % base for s in range(sides)]


def null_labels(n: int, sides: int, device: torch.device | str | None = None) -> Tensor:
    """The null label of n examples: digits (n, S), every side null."""
    return torch.full((n, sides), NULL_DIGIT, dtype=torch.int64, device=device)


def drop_labels(
    cond: Tensor,
    p: float,
    sides: int,
    generator: torch.Generator | None = None,
    base: int = 10,
) -> Tensor:
    """Labels (B,) as digits (B, S) with each side nulled with probability p, independently.

    Per side, so that a pair model also learns one digit without the other; both sides are
    null for a fraction p^2 of the examples (a single image's one side for p).

    Example:
        >>> drop_labels(torch.tensor([37, 5]), 0.0, 2).tolist()
        [[3, 7], [0, 5]]
        >>> drop_labels(torch.tensor([37, 5]), 1.0, 2).tolist()
        [[-1, -1], [-1, -1]]
    """
    digits = torch.stack(label_digits(cond, sides, base), dim=1)  # (B, S)
    draw_on = generator.device if generator is not None else cond.device
    u = torch.rand(digits.shape, generator=generator, device=draw_on).to(cond.device)
    return torch.where(u < p, torch.full_like(digits, NULL_DIGIT), digits)


def train_labels(flow: Flow, cond: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A training batch's labels (B,) with label dropout: digits (B, S), -1 where dropped,
    drawn from ``generator`` (the training's checkpointed noise generator)."""
    config = flow.config
    return drop_labels(cond, config.label_dropout, config.label_sides, generator, config.label_base)


def guide(flow: Flow, cond: Tensor, weight: float) -> Guided:
    """Labels (B,) and their null label, guided by ``weight``: what the flow's parts read."""
    return Guided(cond, null_labels(len(cond), flow.config.label_sides, cond.device), weight)


def why_not_guidable(flow: Flow) -> str | None:
    """Why ``flow`` cannot be guided, or None where it can: it must be conditional, have a
    null label (trained with ``label_dropout`` > 0), and every part that reads the label (a
    label prior, a body part with networks: ``runs_in_low_precision``) must declare
    ``follows_guidance``."""
    config = flow.config
    if not config.reads_labels:
        return "this flow is unconditional (it has no label to guide by)"
    if not config.null_label:
        return (
            f"this one was trained without it (label_dropout={config.label_dropout:g}, "
            f"conditioning={config.conditioning!r}); train a conditional flow with "
            "--set label_dropout=0.1 (conditioning 'embedding', 'prior' or 'both')"
        )
    distribution = flow.distribution
    if distribution.uses_label and not distribution.follows_guidance:
        return f"its base distribution {type(distribution).__name__} does not follow guidance"
    if flow.embedding is not None:
        for part in flow.body.modules():
            if isinstance(part, Transform) and part.runs_in_low_precision:
                if not part.follows_guidance:
                    return f"its part {type(part).__name__} does not follow guidance"
    return None


@torch.no_grad()
def start_null_label(flow: Flow) -> list[str]:
    """Start a fine-tuned flow's new null label at the average of its digits: per side, the
    mean of the digit embeddings, and of the label prior's means and log-scales.

    A flow fine-tuned with label dropout from one trained without it has learned digits but
    a null label at zero, far from anything its conditioners have seen; the digits' average
    is where TarFlow puts its unconditional class embedding. Returns the lines to print.
    """
    done = []
    embedding, distribution = flow.embedding, flow.distribution
    # The digits in use: a flow's own k clusters per side fill the first k of 10 rows.
    used = getattr(flow.config, "clusters", 0) or None
    if embedding is not None and embedding.null is not None:
        sides, width = embedding.null.shape
        rows = embedding.weight.view(sides, embedding.base, width)[:, :used]
        embedding.null.copy_(rows.mean(1))
        done.append("embedding")
    if distribution.null_label:
        distribution.null_loc.copy_(distribution.loc[:, :used].mean(1))
        distribution.null_log_scale.copy_(distribution.log_scale[:, :used].mean(1))
        done.append("prior")
    if not done:
        return []
    return [f"label dropout: the new null label starts at the digits' average ({', '.join(done)})"]
