"""Affine coupling: transform half the features with a scale and shift computed from the rest.

References:
    Dinh, Sohl-Dickstein and Bengio, "Density estimation using Real NVP", ICLR 2017, sec. 3.3.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from pairflow.flows.base import Transform

__all__ = ["AffineCoupling", "ConditionerFactory"]

ConditionerFactory = Callable[[int, int], nn.Module]
"""``factory(in_features, out_features) -> net`` with ``net(h, context=None)``.

``in_features`` counts the features (vectors) or channels (images) the net reads and
``out_features`` the ones it returns: twice the number of transformed features, the raw
log-scales first, then the shifts. Its last layer should start at zero, so the coupling
starts as the identity.
"""


class AffineCoupling(Transform):
    r"""Affine coupling layer with a binary mask.

    With mask m (True = pass through), forward (data -> latent) computes

    .. math:: z_m = x_m, \quad z_{\bar m} = x_{\bar m} \odot \exp(s(x_m)) + t(x_m),

    with the log-scale bounded by a soft clamp, :math:`s = b \tanh(\tilde s / b)`, so
    :math:`|s| < b` and ``exp`` cannot overflow; log-determinant :math:`\sum s`.

    The same layer serves vectors and images, choosing how to feed the conditioner from the
    mask's shape:

    - mask constant over all but dim 0 (vector masks (D,), channel-wise masks (C, H, W)):
      the conditioner reads only the kept features or channels and returns parameters only
      for the transformed ones (no wasted work);
    - spatial masks (checkerboard (C, H, W)): the conditioner reads the whole image with the
      transformed pixels zeroed and returns parameters for every pixel, of which only the
      transformed ones are used (RealNVP's masked convolution).

    The conditioner runs under ``torch.autocast`` in bfloat16 when :attr:`autocast_dtype` is
    set; its output is cast back, so the affine maths and the log-determinant stay in the
    input's precision.

    Arguments:
        mask: bool tensor shaped like one sample, True for features passed unchanged.
        conditioner: factory ``(in_features, out_features) -> net``, see
            :data:`ConditionerFactory`.
        scale_bound: the bound b on the log-scale (b = 1 gives s = tanh(s~)).

    Example:
        >>> from pairflow.flows.masks import alternating_mask
        >>> from pairflow.flows.nets import MLP
        >>> layer = AffineCoupling(alternating_mask(6), lambda i, o: MLP(i, o, hidden=8))
        >>> z, ld = layer(torch.randn(2, 6))
        >>> z.shape, ld.shape
        (torch.Size([2, 6]), torch.Size([2]))
    """

    autocast_dtype: torch.dtype | None = None
    parity: int | None = None  # alternating vector masks: index of the first kept feature

    def __init__(self, mask: Tensor, conditioner: ConditionerFactory, scale_bound: float = 2.0):
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if scale_bound <= 0:
            raise ValueError(f"scale_bound must be > 0, got {scale_bound}")
        if bool(mask.all()) or not bool(mask.any()):
            raise ValueError("a coupling mask must keep some features and transform others")
        self.scale_bound = float(scale_bound)
        flat = mask.reshape(mask.shape[0], -1)
        self.gather = bool((flat == flat[:, :1]).all())
        if self.gather:
            keep = flat[:, 0]
            kept = torch.nonzero(keep).flatten()
            moved = torch.nonzero(~keep).flatten()
            self.register_buffer("kept", kept, persistent=False)
            self.register_buffer("moved", moved, persistent=False)
            # Positions of [kept, moved] in the original order, to put z back together.
            self.register_buffer("order", torch.argsort(torch.cat([kept, moved])), False)
            # Alternating masks (kept = every other feature) split and merge by strided views:
            # cheaper than index_select forward and its scatter_add backward.
            n = flat.shape[0]
            alternating = len(kept) == n // 2 and bool((kept[1:] - kept[:-1] == 2).all())
            if mask.dim() == 1 and n % 2 == 0 and alternating:
                self.parity = int(kept[0])
            self.net = conditioner(len(kept), 2 * len(moved))
        else:
            self.register_buffer("mask", mask.to(torch.float32), persistent=False)
            self.net = conditioner(mask.shape[0], 2 * mask.shape[0])

    def _params(
        self, h: Tensor, context: Tensor | None, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        if self.autocast_dtype is not None:
            with torch.autocast(h.device.type, dtype=self.autocast_dtype):
                out = self.net(h, context)
        else:
            out = self.net(h, context)
        raw, shift = out.to(dtype).chunk(2, dim=1)
        b = self.scale_bound
        return b * torch.tanh(raw / b), shift

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(kept, moved) features of x (B, ...), flattened to (B, n_kept) and (B, n_moved)."""
        if self.parity is not None:
            pairs = x.reshape(x.shape[0], -1, 2)
            return pairs[:, :, self.parity], pairs[:, :, 1 - self.parity]
        return x.index_select(1, self.kept), x.index_select(1, self.moved)

    def _merge(self, a: Tensor, b: Tensor, like: Tensor) -> Tensor:
        """Inverse of :meth:`_split`: put kept features a and moved ones b back in place."""
        if self.parity is not None:
            pair = (a, b) if self.parity == 0 else (b, a)
            return torch.stack(pair, dim=2).reshape(like.shape)
        return torch.cat([a, b], dim=1).index_select(1, self.order)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.gather:
            xa, xb = self._split(x)
            s, t = self._params(xa, context, x.dtype)
            zb = xb * torch.exp(s) + t
            z = self._merge(xa, zb, x)
        else:
            m = self.mask.to(x.dtype)
            s, t = self._params(x * m, context, x.dtype)
            s, t = s * (1 - m), t * (1 - m)  # zero on kept pixels: they pass exactly
            z = x * torch.exp(s) + t
        return z, s.flatten(1).sum(1)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.gather:
            za, zb = self._split(z)
            s, t = self._params(za, context, z.dtype)
            xb = (zb - t) * torch.exp(-s)
            x = self._merge(za, xb, z)
        else:
            m = self.mask.to(z.dtype)
            s, t = self._params(z * m, context, z.dtype)
            s, t = s * (1 - m), t * (1 - m)
            x = (z - t) * torch.exp(-s)
        return x, -s.flatten(1).sum(1)

    def extra_repr(self) -> str:
        kind = "gather" if self.gather else "masked"
        return f"{kind}, scale_bound={self.scale_bound:g}"
