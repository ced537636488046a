"""Labels a flow finds for itself: each side's k-means cluster of pixels (:class:`PixelClusters`).

A flow with ``FlowConfig.clusters = k`` is unconditional to its users (it takes no label, in
training or in sampling) but its couplings and prior read, as a conditional flow reads a
label, the cluster of each side of the image: the nearest of k centres, found by k-means of
the training images' pixels before the first step and kept in the model. Clusters of pixels
group like-looking digits without reading a label, and a flow given them draws better digits
than one without (BENCHMARKS.md, "Couplings that read clusters").

The model is the mixture p(x) = sum_c p(c) p(x | c) over cluster labels c (B a + b for the
clusters a, b of a pair's sides, B = max(10, k): 10 a + b like a pair label up to 10 clusters
per side; p(c) the training images' cluster frequencies). Sampling
draws c ~ p(c), then x ~ p(x | c). Since every term of the sum is positive,

    log p(x) >= log p(c(x)) + log p(x | c(x)),

one pass at the image's own clusters c(x): that is the training objective and the bits/dim
every command reports, marked as a bound; ``pairflow evaluate --marginal-pairs N`` adds the
exact log p(x), one pass per cluster label.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pairflow.flows.config import MAX_CLUSTERS, label_base
from pairflow.flows.mixture import kmeans

__all__ = ["PixelClusters", "MAX_CLUSTERS"]


class PixelClusters(nn.Module):
    """k centres of one side's pixels and the label they give an image: its sides' nearest.

    The centres are a buffer (k, C, H, W / S) of pixel values 0..255, saved with the model;
    all zero until :meth:`fit`. An image's label is sum_s B^(S-1-s) c_s with c_s the nearest
    centre (Euclidean, on pixels) of side s and B = max(10, k) (:attr:`base`): for pairs
    B a + b, like a pair label 10 a + b up to 10 clusters per side.

    Arguments:
        k: clusters per side, 2..80 (``MAX_CLUSTERS``).
        shape: the image shape (C, H, W).
        sides: S, 2 for pairs (the width splits into halves), 1 for single images.

    Example:
        >>> clusters = PixelClusters(2, (1, 1, 4), sides=2)
        >>> clusters.set_centres(torch.tensor([[[[0.0, 0.0]]], [[[255.0, 255.0]]]]))
        >>> clusters(torch.tensor([[[[0, 0, 250, 255]]], [[[255, 200, 10, 0]]]], dtype=torch.uint8))
        tensor([ 1, 10])
    """

    def __init__(self, k: int, shape: tuple[int, int, int], sides: int):
        super().__init__()
        if not isinstance(k, int) or isinstance(k, bool) or not 2 <= k <= MAX_CLUSTERS:
            raise ValueError(f"PixelClusters needs 2..{MAX_CLUSTERS} clusters per side, got {k!r}")
        c, h, w = shape
        if w % sides:
            raise ValueError(f"an image of width {w} does not split into {sides} sides")
        self.k, self.sides = k, sides
        self.base = label_base(k)
        """B: labels are written in base B, one digit per side."""
        self.register_buffer("centres", torch.zeros(k, c, h, w // sides))
        # A fine-tune that splits its source's clusters (:meth:`split_from`): their centres
        # until :meth:`fit` splits them; not saved.
        self.parents: Tensor | None = None
        self.unfilled = 0
        """Clusters the last :meth:`fit` of a split left without a training image of their
        own (a parent with fewer images than children): they start at their parent's centre."""

    @property
    def fitted(self) -> bool:
        """Whether the centres were set (a model saved after :meth:`fit`, or fitted now)."""
        return bool(self.centres.any())

    def set_centres(self, centres: Tensor) -> None:
        """Set the centres (k, C, H, W / S), pixel values 0..255."""
        if tuple(centres.shape) != tuple(self.centres.shape):
            raise ValueError(
                f"expected centres of shape {tuple(self.centres.shape)}, got {tuple(centres.shape)}"
            )
        self.centres.copy_(centres)

    def side_pixels(self, x: Tensor) -> list[Tensor]:
        """Each side of images (B, C, H, W) as (B, C * H * W / S) float64 pixel rows."""
        w = x.shape[-1] // self.sides
        return [x[..., s * w : (s + 1) * w].flatten(1).double() for s in range(self.sides)]

    def side_labels(self, x: Tensor) -> Tensor:
        """Each side's nearest centre, (B, S) int64, of images (B, C, H, W) in pixels 0..255."""
        # (Checked eagerly: under torch.compile the check would break the graph every step.)
        if not torch.compiler.is_compiling() and not self.fitted:
            raise ValueError("these clusters have no centres yet: fit them to training images")
        centres = self.centres.flatten(1).double()
        return torch.stack(
            [torch.cdist(side, centres).argmin(1) for side in self.side_pixels(x)], dim=1
        )

    def forward(self, x: Tensor) -> Tensor:
        """Cluster labels (B,) int64 of images (B, C, H, W): ``base`` a + b for pairs."""
        digits = self.side_labels(x)
        label = torch.zeros(len(x), dtype=torch.int64, device=x.device)
        for s in range(self.sides):
            label = label * self.base + digits[:, s]
        return label

    def split_from(self, parents: Tensor) -> None:
        """Make the next :meth:`fit` split each of ``parents`` (p, C, H, W / S), a source's
        p centres with k a multiple of p, into m = k / p clusters: cluster j is a child of
        parent j // m, so a fine-tune that starts each child's label rows as its parent's
        starts as its source (:func:`~pairflow.flows.prepare.widen`)."""
        p = len(parents)
        if tuple(parents.shape[1:]) != tuple(self.centres.shape[1:]) or p < 1 or self.k % p:
            raise ValueError(
                f"{self.k} clusters per side split {len(parents)} parent centres of shape "
                f"{tuple(self.centres.shape[1:])} only where {self.k} is a multiple of their "
                f"number; got {tuple(parents.shape)}"
            )
        self.parents = parents.detach().to(self.centres).clone()

    @torch.no_grad()
    def fit(self, images: Tensor, iters: int = 40, seed: int = 0) -> Tensor:
        """k-means of single images (N, C, H, W / S) (one side each): the centres become the
        clusters' means (:func:`~pairflow.flows.mixture.kmeans`, k-means++ from ``seed``,
        ``iters`` rounds at most). Returns each image's cluster (N,) as k-means left it.

        After :meth:`split_from` the images are first given their nearest parent, and each
        parent's images are split by k-means into m clusters, parent a's children being
        clusters a m .. a m + m - 1. A parent with n < m images (tiny data) gives one image to
        each of its first n children; the others start at the parent's centre
        (:attr:`unfilled` counts them) and take the images nearest to it, if any.

        Raises:
            ValueError: fewer than k images, or not of one side's shape.
        """
        want = tuple(self.centres.shape[1:])
        if images.dim() == 3 and want[0] == 1:
            images = images[:, None]
        if tuple(images.shape[1:]) != want:
            raise ValueError(
                f"cluster centres are fitted to single images of shape {want}, got "
                f"{tuple(images.shape[1:])}"
            )
        if len(images) < self.k:
            raise ValueError(
                f"{self.k} clusters per side need at least {self.k} training images, got "
                f"{len(images)}"
            )
        points = images.flatten(1).double()
        self.unfilled = 0
        if self.parents is None:
            assign = kmeans(points, self.k, iters=iters, seed=seed)
            start = None
        else:
            start = self.parents.flatten(1).double().to(points.device)
            start = start.repeat_interleave(self.k // len(start), dim=0)
            assign = self._split(points, iters, seed)
        means = []
        for j in range(self.k):
            members = assign == j
            if members.any():
                means.append(points[members].mean(0))
            else:  # a child its parent had too few images for: at the parent's centre
                means.append(start[j])
                self.unfilled += 1
        self.set_centres(torch.stack(means).view(self.k, *want).to(self.centres))
        return assign

    def _split(self, points: Tensor, iters: int, seed: int) -> Tensor:
        """Each point's cluster (N,) when each parent's points are split into m by k-means."""
        parents = self.parents.flatten(1).double().to(points.device)
        m = self.k // len(parents)
        parent = torch.cdist(points, parents).argmin(1)
        assign = torch.empty(len(points), dtype=torch.int64, device=points.device)
        for a in range(len(parents)):
            members = (parent == a).nonzero().flatten()
            if len(members) < m:  # one image per child; the rest start at the parent's centre
                assign[members] = a * m + torch.arange(len(members), device=points.device)
                continue
            assign[members] = a * m + kmeans(points[members], m, iters=iters, seed=seed + a)
        self.parents = None
        return assign

    def fit_sides(self, x: Tensor, iters: int = 40, seed: int = 0) -> Tensor:
        """:meth:`fit` to every side of images (B, C, H, W): the B * S single images."""
        w = x.shape[-1] // self.sides
        return self.fit(torch.cat([x[..., s * w : (s + 1) * w] for s in range(self.sides)]),
                        iters, seed)  # fmt: skip

    def label_counts(self, images: Tensor, batch: int = 10_000) -> Tensor:
        """Each side's cluster counts over single images (N, C, H, W / S): (k,) int64."""
        if images.dim() == 3:
            images = images[:, None]
        centres = self.centres.flatten(1).double()
        counts = torch.zeros(self.k, dtype=torch.int64)
        for lo in range(0, len(images), batch):
            rows = images[lo : lo + batch].flatten(1).double().to(centres.device)
            counts += torch.bincount(torch.cdist(rows, centres).argmin(1), minlength=self.k).cpu()
        return counts

    def extra_repr(self) -> str:
        return f"k={self.k}, sides={self.sides}"
