"""Inception-style score of a set of class-probability vectors."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["inception_score", "pair_probabilities"]


def pair_probabilities(digit_logits: Tensor) -> Tensor:
    """The 100-way pair distribution from the classifier's two 10-way digit heads.

    The halves are classified independently, so p(10 l + r | x) = p(l | left) p(r | right):
    the outer product of the two softmaxes, flattened so that index 10 l + r is pair "lr".

    Arguments:
        digit_logits: logits of shape (B, 2, 10), [:, 0] for the left digit, [:, 1] the right.

    Returns:
        Probabilities of shape (B, 100), rows summing to one (NaN logits give NaN rows).

    Example:
        >>> pair_probabilities(torch.zeros(1, 2, 10)).sum().item()
        1.0
    """
    if digit_logits.dim() != 3 or tuple(digit_logits.shape[1:]) != (2, 10):
        raise ValueError(
            f"digit_logits must have shape (B, 2, 10), got {tuple(digit_logits.shape)}"
        )
    p = digit_logits.double().softmax(dim=-1)  # (B, 2, 10)
    return (p[:, 0, :, None] * p[:, 1, None, :]).flatten(1)  # (B, 100)


def inception_score(probs: Tensor, splits: int = 1) -> float:
    r"""Inception score: :math:`\exp\big(\mathbb{E}_x\, \mathrm{KL}(p(y \mid x) \,\|\, p(y))\big)`.

    High when each sample is classified confidently (low entropy of p(y|x)) and the samples
    spread over many classes (high entropy of the marginal p(y)). Ranges from 1 (every sample
    has the same class distribution) to K (confident and evenly spread over all K classes).
    pairflow computes it with the pair classifier's 100-way probabilities
    (:func:`pair_probabilities`), so its ceiling is 100.

    NaN probabilities are not dropped: the score is then NaN.

    Arguments:
        probs: class probabilities p(y | x), shape (N, K), rows summing to one.
        splits: compute the score on this many equal chunks and average them (the original
            recipe used 10; 1 uses all samples at once, which has less bias).

    Returns:
        The score, a float in [1, K].

    References:
        | Improved Techniques for Training GANs (Salimans et al., 2016)
        | https://arxiv.org/abs/1606.03498

    Example:
        >>> round(inception_score(torch.eye(10)), 6)  # confident, evenly over 10 classes
        10.0
    """
    probs = torch.as_tensor(probs, dtype=torch.float64)
    if probs.dim() != 2:
        raise ValueError(f"probs must have shape (N, K), got {tuple(probs.shape)}")
    if not isinstance(splits, int) or not 1 <= splits <= probs.shape[0]:
        raise ValueError(f"splits must be an integer in 1..N={probs.shape[0]}, got {splits!r}")
    # Rows that are NaN pass this check on purpose: they must reach the score and make it NaN.
    bad = ((probs.sum(dim=1) - 1).abs() > 1e-4) | (probs < 0).any(dim=1)
    if bad.any():
        row = int(bad.nonzero()[0])
        raise ValueError(
            f"probs must be probability vectors (non-negative, summing to one); row {row} "
            f"sums to {probs[row].sum().item():.6g}. Pass softmax outputs, not logits."
        )
    scores = []
    for chunk in probs.chunk(splits):
        marginal = chunk.mean(dim=0, keepdim=True)  # (1, K)
        # xlogy(0, .) = 0, so classes with p(y|x) = 0 contribute nothing; NaN stays NaN.
        kl = (torch.xlogy(chunk, chunk) - torch.xlogy(chunk, marginal)).sum(dim=1)  # (N,)
        scores.append(math.exp(kl.mean().item()))
    return sum(scores) / len(scores)
