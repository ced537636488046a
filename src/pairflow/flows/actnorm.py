"""ActNorm: a per-channel affine layer initialised from the data.

References:
    Kingma and Dhariwal, "Glow: Generative flow with invertible 1x1 convolutions",
    NeurIPS 2018, sec. 3.1.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pairflow.flows.base import Transform

__all__ = ["ActNorm"]


class ActNorm(Transform):
    r"""Per-channel affine map z = (x + b) * exp(log_scale), data-initialised.

    On the first ``forward`` in training mode (data -> latent), ``b`` and ``log_scale`` are
    set so that the batch leaves with zero mean and unit variance per channel; afterwards they
    are ordinary parameters. The ``initialized`` flag is a buffer, so checkpoints keep it.
    Until initialised the layer is the identity (so eval mode and sampling are well defined).

    Under ``torch.distributed`` the batch statistics are averaged over all ranks (one
    ``all_reduce``), so every rank starts from the same parameters; the first training-mode
    forward (or :meth:`pairflow.flows.PairFlow.data_init`) must then run on every rank.

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
        # Python mirror of ``initialized`` once it is known to be True: checking it costs no
        # tensor read, so ``torch.compile`` traces the training forward without a graph break.
        self._ready = False

    def reset(self) -> None:
        """Mark the layer uninitialised: the next training-mode forward re-initialises it."""
        self.initialized.fill_(False)
        self._ready = False

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._ready = False  # the loaded flag decides; re-read it on the next forward

    def _shape(self, x: Tensor) -> tuple[int, ...]:
        return (1, -1) + (1,) * (x.dim() - 2)

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set bias and scale from the batch ``x`` so it leaves standardised per channel."""
        dims = [d for d in range(x.dim()) if d != 1]
        moments = torch.stack([x.mean(dim=dims), x.pow(2).mean(dim=dims)])  # (2, C)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(moments)  # same init on every rank (DDP does not re-broadcast)
            moments /= dist.get_world_size()
        mean, var = moments[0], (moments[1] - moments[0] ** 2).clamp_min(0)
        if x.numel() // x.shape[1] < 2:
            var = torch.ones_like(var)  # one value per channel: no spread to measure
        self.bias.copy_(-mean)
        self.log_scale.copy_(-0.5 * torch.log(var + 1e-12))
        self.initialized.fill_(True)
        self._ready = True

    def _logdet(self, x: Tensor) -> Tensor:
        pixels = x[0, 0].numel()  # H*W for images, 1 for vectors
        return (self.log_scale.sum() * pixels).to(x.dtype).expand(x.shape[0])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.training and not self._ready:
            if not bool(self.initialized):
                self.initialize(x)
            self._ready = True
        shape = self._shape(x)
        z = (x + self.bias.view(shape)) * torch.exp(self.log_scale).view(shape)
        return z, self._logdet(x)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        shape = self._shape(z)
        x = z * torch.exp(-self.log_scale).view(shape) - self.bias.view(shape)
        return x, -self._logdet(z)
