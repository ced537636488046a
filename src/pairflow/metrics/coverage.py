"""How generated samples spread over the 100 pair classes: histogram, coverage, KL to uniform."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["class_histogram", "class_coverage", "kl_to_uniform"]


def class_histogram(labels: Tensor, num_classes: int = 100) -> Tensor:
    """Count how many samples fall in each class.

    Arguments:
        labels: predicted class labels, integer tensor of shape (N,) with values in
            0..num_classes-1 (for pairs: 10 * left + right).
        num_classes: number of classes K.

    Returns:
        Counts, int64 tensor of shape (K,).

    Example:
        >>> class_histogram(torch.tensor([0, 2, 2]), num_classes=3)
        tensor([1, 0, 2])
    """
    labels = torch.as_tensor(labels)
    if labels.dim() != 1:
        raise ValueError(f"labels must have shape (N,), got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must lie in 0..{num_classes - 1}, got values "
            f"{labels.min().item()}..{labels.max().item()}"
        )
    return torch.bincount(labels.long(), minlength=num_classes)


def class_coverage(labels: Tensor, num_classes: int = 100, min_count: int = 1) -> float:
    """Fraction of the classes that at least ``min_count`` samples are classified as.

    With the pair classifier's predictions this says how many of the 100 digit pairs a model
    draws at all: a model that has collapsed onto a few pairs has low coverage.

    Arguments:
        labels: predicted labels, shape (N,), values in 0..num_classes-1.
        num_classes: number of classes K.
        min_count: a class counts as covered with at least this many samples.

    Returns:
        A float in [0, 1].

    Example:
        >>> class_coverage(torch.tensor([0, 0, 1, 3]), num_classes=4)
        0.75
    """
    if not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count must be a positive integer, got {min_count!r}")
    counts = class_histogram(labels, num_classes)
    return (counts >= min_count).sum().item() / num_classes


def kl_to_uniform(labels: Tensor, num_classes: int = 100) -> float:
    r"""KL divergence of the class histogram to the uniform distribution, in nats.

    .. math:: \mathrm{KL}(\hat p \,\|\, u) = \sum_c \hat p_c \log(K \hat p_c)
        = \log K - H(\hat p)

    0 when the samples are spread evenly over the K classes, :math:`\log K` (4.605 for 100
    pairs) when they all fall in one class. Real MNIST pairs are not exactly uniform (digit
    frequencies differ a little), so compare with the real-vs-real floor.

    Arguments:
        labels: predicted labels, shape (N,) with N >= 1, values in 0..num_classes-1.
        num_classes: number of classes K.

    Returns:
        A float in [0, log K].

    References:
        | Kullback & Leibler, On Information and Sufficiency (1951)

    Example:
        >>> kl_to_uniform(torch.tensor([0, 1, 2, 3]), num_classes=4)
        0.0
    """
    counts = class_histogram(labels, num_classes).double()
    if counts.sum() == 0:
        raise ValueError("labels is empty: the histogram of no samples has no KL divergence")
    p = counts / counts.sum()
    # xlogy(0, 0) = 0: empty classes contribute nothing.
    # max(., 0): rounding can leave -1e-16 for an exactly uniform histogram.
    return max(torch.xlogy(p, p * num_classes).sum().item(), 0.0)
