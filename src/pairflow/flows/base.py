"""The transform contract shared by every flow layer, plus composition and inversion.

A transform is a bijection with a tractable Jacobian determinant. In pairflow
``forward`` always goes from DATA to LATENT (the density-evaluation direction, as in nflows;
normflows uses the opposite convention), and ``inverse`` goes from latent back to data.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = ["Transform", "Compose", "Inverse", "set_autocast"]


class Transform(nn.Module):
    r"""A bijection :math:`f` from data to latent space with its log-Jacobian-determinant.

    ``forward`` maps data ``x`` to latent ``z = f(x)`` (data -> latent, the nflows
    convention; normflows goes the other way) and ``inverse`` maps ``z`` back to ``x``.
    Both return the log absolute determinant of the Jacobian of the map they compute, one
    value per batch element, so ``forward(x)[1] + inverse(forward(x)[0])[1] == 0``.

    ``context`` is an optional context tensor (in pairflow: the label embeddings (B, 2, E) of
    a conditional flow) passed unchanged to every layer; transforms that ignore it accept it
    anyway. At the model level (:class:`~pairflow.flows.PairFlow`), ``cond`` is the pair
    label itself; the model turns it into this context.

    Subclasses implement :meth:`forward` and :meth:`inverse`. A part whose networks may run
    in bfloat16 (a coupling's conditioner, a transformer block) declares
    :attr:`runs_in_low_precision` and reads :attr:`autocast_dtype`, which the flow's
    precision sets (:func:`set_autocast`); the maps and log-determinants stay in the input's
    precision.
    """

    runs_in_low_precision: bool = False
    """Whether this part's networks may run under ``torch.autocast`` in bfloat16."""

    autocast_dtype: torch.dtype | None = None
    """The dtype its networks run in under autocast (None: the input's); see above."""

    follows_guidance: bool = False
    """Whether this part, where it reads the label, takes a
    :class:`~pairflow.flows.guidance.Guided` context (classifier-free guidance: its networks
    run under the label and the null label, their outputs extrapolated). A part that reads
    the context must declare it for a flow with it to be guided; one that ignores the
    context passes it on unchanged."""

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map data to latent.

        Arguments:
            x: data tensor, shape (B, ...).
            context: optional context tensor, shape (B, ...), e.g. label embeddings.

        Returns:
            ``(z, logabsdet)`` with ``z`` shaped like ``x`` and ``logabsdet`` of shape (B,).
        """
        raise NotImplementedError

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map latent to data.

        Arguments:
            z: latent tensor, shape (B, ...).
            context: optional context tensor, shape (B, ...), e.g. label embeddings.

        Returns:
            ``(x, logabsdet)``: the log absolute Jacobian determinant of the inverse map, (B,).
        """
        raise NotImplementedError


class Compose(Transform):
    """A sequence of transforms applied in order (data -> latent), log-dets summed.

    Arguments:
        transforms: the transforms, first applied first in ``forward``.

    Example:
        >>> from pairflow.flows import Compose, Squeeze
        >>> flow = Compose([Squeeze(), Squeeze()])
        >>> z, ld = flow(torch.randn(2, 1, 4, 8))
        >>> z.shape, ld.shape
        (torch.Size([2, 16, 1, 2]), torch.Size([2]))
    """

    def __init__(self, transforms: Iterable[Transform]):
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = x.new_zeros(x.shape[0])
        for t in self.transforms:
            x, ld = t(x, context)
            total = total + ld
        return x, total

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = z.new_zeros(z.shape[0])
        for t in reversed(self.transforms):
            z, ld = t.inverse(z, context)
            total = total + ld
        return z, total

    def __len__(self) -> int:
        return len(self.transforms)


class Inverse(Transform):
    """The inverse of a transform: its ``forward`` is the wrapped ``inverse`` and vice versa.

    Arguments:
        transform: the transform to invert.

    Example:
        >>> from pairflow.flows import Inverse, Squeeze
        >>> Inverse(Squeeze())(torch.randn(2, 4, 2, 4))[0].shape
        torch.Size([2, 1, 4, 8])
    """

    def __init__(self, transform: Transform):
        super().__init__()
        self.transform = transform

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform.inverse(x, context)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform(z, context)


def _zeros(x: Tensor) -> Tensor:
    """A (B,) zero log-det on x's device and dtype."""
    return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)


def set_autocast(module: nn.Module, dtype: torch.dtype | None) -> None:
    """Run the networks of every part of ``module`` that declares
    :attr:`Transform.runs_in_low_precision` under autocast in ``dtype`` (None: off)."""
    for part in module.modules():
        if isinstance(part, Transform) and part.runs_in_low_precision:
            part.autocast_dtype = dtype
