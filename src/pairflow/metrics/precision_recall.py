"""Improved precision and recall for generative models (k-nearest-neighbour manifolds)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["precision_recall"]


def precision_recall(
    real_feats: Tensor, fake_feats: Tensor, k: int = 3, chunk_size: int = 1024
) -> tuple[float, float]:
    """Precision and recall of generated samples against real ones, in feature space.

    Each set's manifold is approximated by the union of balls centred on its points, each
    with the radius to that point's k-th nearest neighbour within the same set.

    - precision: fraction of generated samples inside the real manifold (are samples
      realistic?);
    - recall: fraction of real samples inside the generated manifold (is the data's
      variety covered?).

    A point on the boundary of a ball counts as inside (distance <= radius). Non-finite
    features are not dropped: both numbers are then NaN, so a diverged model looks diverged.

    Arguments:
        real_feats: real features, shape (N, F), N > k.
        fake_feats: generated features, shape (M, F), M > k.
        k: neighbourhood size; the paper uses 3.
        chunk_size: rows of the distance matrix held in memory at once.

    Returns:
        ``(precision, recall)``, each a float in [0, 1].

    References:
        | Improved Precision and Recall Metric for Assessing Generative Models
          (Kynkäänniemi et al., 2019)
        | https://arxiv.org/abs/1904.06991

    Example:
        >>> x = torch.randn(100, 4)
        >>> precision_recall(x, x)
        (1.0, 1.0)
    """
    real = torch.as_tensor(real_feats, dtype=torch.float64)
    fake = torch.as_tensor(fake_feats, dtype=torch.float64)
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    for name, f in (("real_feats", real), ("fake_feats", fake)):
        if f.dim() != 2:
            raise ValueError(f"{name} must have shape (N, F), got {tuple(f.shape)}")
        if f.shape[0] <= k:
            raise ValueError(f"{name} has {f.shape[0]} samples; k={k} needs more than k")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"feature dimensions differ: real has {real.shape[1]}, fake has {fake.shape[1]}"
        )
    if not (torch.isfinite(real).all() and torch.isfinite(fake).all()):
        return math.nan, math.nan

    real_radii = _kth_neighbour_radii(real, k, chunk_size)
    fake_radii = _kth_neighbour_radii(fake, k, chunk_size)
    precision = _fraction_inside(fake, real, real_radii, chunk_size)
    recall = _fraction_inside(real, fake, fake_radii, chunk_size)
    return precision, recall


def _kth_neighbour_radii(x: Tensor, k: int, chunk_size: int) -> Tensor:
    """Distance from each point to its k-th nearest neighbour in the same set, shape (N,)."""
    radii = []
    for rows in x.split(chunk_size):
        d = torch.cdist(rows, x)  # (chunk, N)
        # The point itself is one of the zeros, so the (k+1)-th smallest distance is the k-th
        # neighbour's, also when the set holds duplicates.
        radii.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def _fraction_inside(queries: Tensor, centres: Tensor, radii: Tensor, chunk_size: int) -> float:
    """Fraction of ``queries`` inside at least one ball (centres[i], radii[i])."""
    inside = 0
    for rows in queries.split(chunk_size):
        d = torch.cdist(rows, centres)  # (chunk, N)
        inside += int((d <= radii[None, :]).any(dim=1).sum())
    return inside / queries.shape[0]
