"""Fréchet distance between two sets of feature vectors (the distance behind FID)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["frechet_distance"]


class _Features(nn.Module):
    """Identity "feature extractor": the inputs already are feature vectors (N, F).

    torchmetrics' ``FrechetInceptionDistance`` accepts any module as its feature network;
    handing it the identity lets us feed features computed once by the pair classifier.
    """

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return x


def frechet_distance(feats_a: Tensor, feats_b: Tensor) -> float:
    r"""Fréchet distance between Gaussians fitted to two sets of feature vectors.

    .. math:: d^2 = \lVert \mu_a - \mu_b \rVert^2
        + \operatorname{Tr}\big(\Sigma_a + \Sigma_b - 2 (\Sigma_a \Sigma_b)^{1/2}\big)

    With the pair classifier's penultimate features this is the MNIST-pairs analogue of FID.
    The computation is torchmetrics' ``FrechetInceptionDistance`` (float64 statistics, the
    matrix square root through the eigenvalues of :math:`\Sigma_a \Sigma_b`), fed with the
    features through an identity feature module.

    Non-finite features are not dropped: if any feature is NaN or infinite the distance is
    NaN, so that a diverged model looks diverged.

    Arguments:
        feats_a: features of the first set, shape (N, F), N >= 2.
        feats_b: features of the second set, shape (M, F), M >= 2.

    Returns:
        The squared Fréchet distance (as FID reports it), a float >= 0 up to rounding.

    References:
        | GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium
          (FID) (Heusel et al., 2017)
        | https://arxiv.org/abs/1706.08500
        | The Fréchet distance between multivariate normal distributions (Dowson & Landau, 1982)

    Example:
        >>> a = torch.randn(1000, 8)
        >>> frechet_distance(a, a) < 1e-6
        True
    """
    feats_a, feats_b = _check_pair(feats_a, feats_b)
    if not (torch.isfinite(feats_a).all() and torch.isfinite(feats_b).all()):
        return math.nan

    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=_Features(feats_a.shape[1]))
    metric.update(feats_a, real=True)
    metric.update(feats_b, real=False)
    return float(metric.compute())


def _check_pair(feats_a: Tensor, feats_b: Tensor) -> tuple[Tensor, Tensor]:
    feats_a = torch.as_tensor(feats_a, dtype=torch.float64)
    feats_b = torch.as_tensor(feats_b, dtype=torch.float64)
    for name, f in (("feats_a", feats_a), ("feats_b", feats_b)):
        if f.dim() != 2:
            raise ValueError(f"{name} must have shape (N, F), got {tuple(f.shape)}")
        if f.shape[0] < 2:
            raise ValueError(f"{name} has {f.shape[0]} sample(s); at least 2 are needed")
    if feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError(
            f"feature dimensions differ: feats_a has {feats_a.shape[1]}, "
            f"feats_b has {feats_b.shape[1]}; compute both with the same classifier"
        )
    return feats_a, feats_b
