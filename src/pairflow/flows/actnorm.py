"""ActNorm: a per-channel affine layer initialised from the data.

References:
    Kingma and Dhariwal, "Glow: Generative flow with invertible 1x1 convolutions",
    NeurIPS 2018, sec. 3.1.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pairflow.flows.base import Transform

__all__ = ["ActNorm"]


class ActNorm(Transform):
    r"""Per-channel affine map z = (x + b) * exp(log_scale), data-initialised.

    On the first ``forward`` in training mode (data -> latent), ``b`` and ``log_scale`` are
    set so that the batch leaves with zero mean and unit variance per channel; afterwards they
    are ordinary parameters. The ``initialized`` flag is a buffer, so checkpoints keep it.
    Until initialised the layer is the identity (so eval mode and sampling are well defined).

    For distributed training, initialise on one rank (e.g. with
    :meth:`pairflow.flows.PairFlow.data_init`) before the parameters are broadcast.

    Arguments:
        channels: number of channels (dim 1) of the input, (B, C) or (B, C, H, W).

    Example:
        >>> layer = ActNorm(3)
        >>> z, ld = layer(torch.randn(64, 3, 4, 4) * 5 + 2)
        >>> bool(z.std() < 1.1)
        True
    """

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))

    def _shape(self, x: Tensor) -> tuple[int, ...]:
        return (1, -1) + (1,) * (x.dim() - 2)

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set bias and scale from the batch ``x`` so it leaves standardised per channel."""
        dims = [d for d in range(x.dim()) if d != 1]
        mean = x.mean(dim=dims)
        std = x.std(dim=dims) if x.numel() // x.shape[1] > 1 else torch.ones_like(mean)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + 1e-6))
        self.initialized.fill_(True)

    def _logdet(self, x: Tensor) -> Tensor:
        pixels = x[0, 0].numel()  # H*W for images, 1 for vectors
        return (self.log_scale.sum() * pixels).to(x.dtype).expand(x.shape[0])

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.training and not bool(self.initialized):
            self.initialize(x)
        shape = self._shape(x)
        z = (x + self.bias.view(shape)) * torch.exp(self.log_scale).view(shape)
        return z, self._logdet(x)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        shape = self._shape(z)
        x = z * torch.exp(-self.log_scale).view(shape) - self.bias.view(shape)
        return x, -self._logdet(z)
