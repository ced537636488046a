"""Conditional accuracy: does a conditional model draw the pair it was asked for?"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

__all__ = ["ConditionalAccuracy", "conditional_accuracy"]


@dataclass
class ConditionalAccuracy:
    """Result of :func:`conditional_accuracy`.

    Attributes:
        mean: per-pair accuracy averaged over the requested pairs (each pair weighs the same,
            however many samples asked for it).
        min: the lowest per-pair accuracy.
        min_pair: the pair label (10 * left + right) with that lowest accuracy.
        overall: fraction of all samples read as their requested pair.
        per_pair: accuracy for each of the ``num_classes`` labels, NaN where none was requested.
        counts: how many samples requested each label.
    """

    mean: float
    min: float
    min_pair: int
    overall: float
    per_pair: list[float] = field(repr=False)
    counts: list[int] = field(repr=False)

    def to_dict(self) -> dict:
        """A JSON-ready dict (NaN per-pair entries become ``None``)."""
        d = asdict(self)
        d["per_pair"] = [None if math.isnan(a) else a for a in self.per_pair]
        return d


def conditional_accuracy(
    pred_labels: Tensor, requested_labels: Tensor, num_classes: int = 100
) -> ConditionalAccuracy:
    """How often the classifier reads each conditional sample as the pair that was requested.

    Arguments:
        pred_labels: the classifier's predicted pair labels, integer tensor (N,).
        requested_labels: the labels the samples were drawn for, integer tensor (N,), values
            in 0..num_classes-1.
        num_classes: number of pair classes (100).

    Returns:
        A :class:`ConditionalAccuracy` with the mean over requested pairs, the worst pair and
        the per-pair breakdown.

    Example:
        >>> r = conditional_accuracy(torch.tensor([37, 37, 5, 6]), torch.tensor([37, 37, 5, 5]))
        >>> r.mean, r.min, r.min_pair, r.overall
        (0.75, 0.5, 5, 0.75)
    """
    pred = torch.as_tensor(pred_labels)
    req = torch.as_tensor(requested_labels)
    for name, t in (("pred_labels", pred), ("requested_labels", req)):
        if t.dim() != 1 or t.is_floating_point() or t.dtype == torch.bool:
            raise ValueError(
                f"{name} must be an integer tensor of shape (N,), got {t.dtype} {tuple(t.shape)}"
            )
    if pred.shape != req.shape:
        raise ValueError(
            f"pred_labels and requested_labels differ in length: {pred.numel()} vs {req.numel()}"
        )
    if req.numel() == 0:
        raise ValueError("no samples: conditional accuracy needs at least one sample")
    if req.min() < 0 or req.max() >= num_classes:
        raise ValueError(
            f"requested_labels must lie in 0..{num_classes - 1}, got "
            f"{req.min().item()}..{req.max().item()}"
        )
    req = req.long()
    correct = (pred.long() == req).double()  # (N,)
    counts = torch.bincount(req, minlength=num_classes)  # (K,)
    hits = torch.bincount(req, weights=correct, minlength=num_classes)  # (K,)
    per_pair = hits / counts.clamp(min=1)
    per_pair[counts == 0] = math.nan
    asked = per_pair[counts > 0]
    worst = int(torch.where(counts > 0, per_pair, math.inf).argmin())
    return ConditionalAccuracy(
        mean=asked.mean().item(),
        min=asked.min().item(),
        min_pair=worst,
        overall=correct.mean().item(),
        per_pair=per_pair.tolist(),
        counts=counts.tolist(),
    )
