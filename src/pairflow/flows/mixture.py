"""The class-mixture prior: a flow's base distribution as a mixture over the label classes.

The classes are the 100 pair labels of a pair layout, or the 10 classes of single images.

With it, one pass through a flow body that never sees the label gives the exact
log p(x | y) for every label, the exact log p(x) (a log-sum-exp over labels) and p(y | x) by
Bayes, so the same flow is a density model, a sampler with or without a label, and a pair
classifier.

References:
    Izmailov, Kirichenko, Finzi and Wilson, "Semi-supervised learning with normalizing flows"
    (FlowGMM), ICML 2020.
    Kingma and Dhariwal, "Glow", NeurIPS 2018 (the class-conditional prior).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pairflow.flows.distributions import LabelNormal, draw_labels, label_digits, label_frequencies
from pairflow.options import CLASSES_PER_SIDE

__all__ = ["ClassMixture", "ClusterMixture", "kmeans", "label_frequencies", "draw_labels"]


class ClassMixture(LabelNormal):
    r"""Mixture over labels y of the label Gaussians, weighted by p(y).

    .. math:: p(z) = \sum_{y} p(y)\, \mathcal N(z; \mu_y, \mathrm{diag}\, \sigma_y^2),

    over the 100 pair labels (``sides=2``), where, for y = 10 a + b, the mean and scale over
    the left half of the latent are the left digit a's and over the right half the right
    digit b's, or over the 10 classes of single images (``sides=1``), one mean and scale per
    class over the whole latent: the components are exactly those of
    :class:`~pairflow.flows.distributions.LabelNormal` (same parameters, zero initialised).
    The weights p(y) are a buffer, the training labels' frequencies
    (:meth:`set_class_counts`), not learned.

    ``log_prob(z, cond)`` is log p(z | y) given labels and the mixture's log p(z) without;
    ``sample(n, cond=None)`` first draws y ~ p(y), then z = mu_y + T sigma_y eps. Because each
    component factorises over the two halves, all 100 pair components cost 20 half-latent
    Gaussians: log N(z; mu_y, sigma_y) = L[a] + R[b].

    Arguments:
        shape: the latent's shape (C, H, W); W must be even for pairs.
        sides: 2 for pairs (100 components), 1 for single images (10).

    Example:
        >>> prior = ClassMixture((1, 4, 8))
        >>> z = torch.randn(3, 1, 4, 8)
        >>> posterior = prior.log_posterior(z).exp()
        >>> prior.log_prob(z).shape, torch.allclose(posterior.sum(1), torch.ones(3))
        (torch.Size([3]), True)
        >>> z, y = prior.sample_with_labels(5, generator=torch.Generator().manual_seed(0))
        >>> z.shape, y.shape
        (torch.Size([5, 1, 4, 8]), torch.Size([5]))
    """

    label_optional = True
    """The label may be left out everywhere: the mixture marginalises over it."""

    def __init__(self, shape: tuple[int, int, int], sides: int = 2):
        super().__init__(shape, sides)  # p(y), the buffer class_probs: the mixture's weights

    @torch.no_grad()
    def fit(self, z: Tensor, cond: Tensor) -> None:
        """Set the Gaussians to their maximum-likelihood values for latents z with labels cond.

        For fixed latents the log-likelihood sum_i log N(z_i; mu_{y_i}, sigma_{y_i}) is
        maximised, per side and digit, by the mean and standard deviation of that side's strip
        over the latents whose label has that digit there (the components share these; a
        single image's one side is the whole latent, per class). Used to
        start a class mixture on a trained flow body (``--init-from``) from its optimum
        rather than from N(0, I).

        Arguments:
            z: latents (N, C, H, W).
            cond: their labels (N,); every digit must occur on every side.
        """
        self._fit_groups(z, cond, small="raise")

    @torch.no_grad()
    def _fit_groups(self, z: Tensor, groups: Tensor, small: str) -> None:
        """Per side and digit (or cluster) d, the mean and scale of the strips of the latents
        whose group has d there. A group of fewer than two: ``small="raise"`` refuses it,
        ``"side"`` gives it its side's overall mean and scale."""
        strips, digits = self._strips(z), label_digits(groups, self.sides)
        for side, (part, digit) in enumerate(zip(strips, digits, strict=True)):
            for d in range(CLASSES_PER_SIDE):
                chosen = part[digit == d]
                if len(chosen) < 2:
                    if small == "raise":
                        raise ValueError(f"fit needs >= 2 latents with digit {d} on side {side}")
                    chosen = part
                self.loc[side, d] = chosen.mean(0)
                self.log_scale[side, d] = chosen.std(0, correction=0).clamp_min(1e-2).log()

    # ----------------------------------------------------------------- densities
    def log_joint(self, z: Tensor) -> Tensor:
        """log p(y) + log N(z; mu_y, sigma_y^2) for every label: (B, K)."""
        return self.log_class_probs() + self.log_prob_components(z)

    def log_prob(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        """log p(z | cond) (B,) given labels; log p(z) = logsumexp_y log p(y) p(z | y) without."""
        if cond is not None:
            return super().log_prob(z, cond)
        return torch.logsumexp(self.log_joint(z), dim=1)

    def log_posterior(self, z: Tensor) -> Tensor:
        """log p(y | z) by Bayes, (B, K); each row's exp sums to one."""
        return torch.log_softmax(self.log_joint(z), dim=1)

    # ----------------------------------------------------------------- sampling
    def sample_with_labels(
        self,
        n: int,
        cond: Tensor | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Draw y ~ p(y) (unless ``cond`` gives them), then z; returns (z (n, C, H, W), y (n,))."""
        if cond is None:
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ValueError(f"n must be an int >= 1, got {n!r}")
            cond = self.sample_labels(n, generator)
        return super().sample(n, cond, temperature=temperature, generator=generator), cond

    def sample(self, n, cond=None, temperature=1.0, generator=None) -> Tensor:
        return self.sample_with_labels(n, cond, temperature, generator)[0]


class ClusterMixture(ClassMixture):
    r"""The class mixture's 100 (single images: 10) Gaussians learned without labels.

    The same base distribution as :class:`ClassMixture`, a mixture of position-aware diagonal
    Gaussians, for pairs 10 per half of the latent, component k = 10 a + b built from left
    cluster a and right cluster b, but its components are clusters, not labels: no label is
    read anywhere. Training maximises the marginal

    .. math:: \log p(z) = \log \sum_k \pi_k\, \mathcal N(z; \mu_k, \mathrm{diag}\, \sigma_k^2),

    so each image's gradient goes to the components in proportion to their responsibility
    (soft EM through the flow). It starts from k-means clusters of the training images
    (:meth:`fit_clusters`: :func:`kmeans` on each half's pixels, then
    :meth:`~ClassMixture.fit` of the latents); the weights pi are those clusters' sizes (a
    buffer, as the class mixture's p(y)). Sampling draws a component, then
    z = mu_k + T sigma_k eps: the component picks a mode, where one N(0, I) spreads samples
    between them (measured in BENCHMARKS.md, "label-free mixture prior").

    A model with this prior is unconditional (``cond`` is ignored); ``sample_with_labels``
    returns the component drawn.

    References:
        Izmailov et al., "Semi-supervised learning with normalizing flows" (FlowGMM), 2020:
        the Gaussian-mixture base distribution. Lloyd, "Least squares quantization in PCM",
        1982 (k-means).

    Example:
        >>> prior = ClusterMixture((1, 4, 8))
        >>> z = torch.randn(3, 1, 4, 8)
        >>> prior.uses_label, prior.log_prob(z).shape
        (False, torch.Size([3]))
    """

    uses_label = False

    def log_prob(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        """log p(z) (B,): the log-sum-exp over components (``cond`` is not used)."""
        return torch.logsumexp(self.log_joint(z), dim=1)

    def sample(self, n, cond=None, temperature=1.0, generator=None) -> Tensor:
        """n latents: a component k ~ pi each, then z = mu_k + T sigma_k eps (``cond`` unused)."""
        return self.sample_with_labels(n, None, temperature, generator)[0]

    @torch.no_grad()
    def fit_clusters(self, z: Tensor, images: Tensor, iters: int = 40, seed: int = 0) -> Tensor:
        """Start the components from k-means clusters of ``images``; returns the clusters.

        Each side's pixels (the left and right digit's columns for pairs, all of them for
        single images) are clustered into 10 groups by :func:`kmeans`; the components are then
        the maximum-likelihood Gaussians of the latents ``z`` of each group
        (:meth:`ClassMixture.fit`; a cluster of one image takes its side's overall mean and
        scale) and pi their sizes.

        Arguments:
            z: the images' latents (N, C, H, W) under the flow body as it is.
            images: the images (N, C, H, W'), uint8 or float, width divisible by the sides.
            iters, seed: of :func:`kmeans`.

        Returns:
            the component index of each image (N,) int64 (10 a + b for pairs).
        """
        w = images.shape[-1] // self.sides
        clusters = torch.zeros(len(images), dtype=torch.int64, device=images.device)
        for side in range(self.sides):
            pixels = images[..., side * w : (side + 1) * w].flatten(1).float()
            k = CLASSES_PER_SIDE
            clusters = clusters * k + kmeans(pixels, k, iters=iters, seed=seed)
        clusters = clusters.to(z.device)
        self._fit_groups(z, clusters, small="side")  # a cluster of one image (few pairs)
        self.set_class_counts(torch.bincount(clusters, minlength=self.num_classes))
        return clusters


def kmeans(points: Tensor, k: int, iters: int = 40, seed: int = 0) -> Tensor:
    """Lloyd's k-means of ``points`` (N, D): the cluster of each point, int64 (N,).

    Starts from k distinct points chosen with k-means++ seeding (Arthur and Vassilvitskii
    2007) from ``seed``; stops after ``iters`` rounds or when no point changes cluster. A
    cluster left empty is reseeded at the point farthest from its centre, so every one of
    the k clusters ends non-empty.
    """
    n = len(points)
    if not 1 <= k <= n:
        raise ValueError(f"kmeans needs 1 <= k <= the number of points ({n}), got k={k}")
    if iters < 1:
        raise ValueError(f"kmeans needs iters >= 1, got {iters}")
    x = points.double()
    g = torch.Generator().manual_seed(seed)
    centres = x[torch.randint(n, (1,), generator=g)]
    for _ in range(1, k):
        d2 = torch.cdist(x, centres).min(1).values.pow(2)
        if float(d2.sum()) == 0:
            raise ValueError(f"kmeans: fewer than k={k} distinct points")
        centres = torch.cat([centres, x[torch.multinomial(d2.cpu(), 1, generator=g)]])
    assign = None
    for _ in range(iters):
        dist = torch.cdist(x, centres)
        new = dist.argmin(1)
        for j in range(k):
            members = new == j
            if not members.any():  # reseed at the worst-served point
                far = int(dist.min(1).values.argmax())
                new[far] = j
                members = new == j
            centres[j] = x[members].mean(0)
        if assign is not None and torch.equal(new, assign):
            break
        assign = new
    return assign
