"""What the baseline models share: config plumbing, input checks, pair labels, precision.

The baselines take and return what a :class:`~pairflow.flows.PairFlow` does: pixel values
0..255 of shape (B, C, H, W) (1x28x56 for MNIST pairs), pair labels
``cond = 10 * left + right`` in 0..99 for conditional models of pairs (``layout="pair"``) or
class labels 0..9 for single images (``layout="single"``), uint8 samples. Their labels enter
as the flows' do: a :class:`~pairflow.flows.LabelEmbedding`, one learned vector per digit and
side (rows 0..9 left digit, 10..19 right digit; one table of 10 for single images), which
convolutional layers receive spread over the image by
:func:`~pairflow.flows.nets.label_context_map` (the left digit's vector on the left half, a
single image's class everywhere), so the left label can steer the left digit.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from pairflow.flows.distributions import label_digits
from pairflow.options import Layout, Precision, check_choice
from pairflow.utils import ModelConfig
from pairflow.validation import check_pair_labels, check_pixels

__all__ = ["BaselineConfig", "PairModel"]


class BaselineConfig(ModelConfig):
    """Mixin for the baselines' config dataclasses: presets, checks, dict round trip.

    A subclass is a dataclass with fields ``preset``, ``channels``, ``height``, ``width``,
    ``conditional``, ``embed_dim``, ``layout`` and ``precision`` and a ``PRESETS`` table.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    _POSITIVE: ClassVar[tuple[str, ...]] = ("channels", "height", "width", "embed_dim")

    def _check(self) -> None:
        name = type(self).__name__
        for field in self._POSITIVE:
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}.{field} must be a positive int, got {value!r}")
        check_choice("precision", self.precision, Precision)
        check_choice("layout", self.layout, Layout)
        # Two stride-2 stages down and up: the image sides must be multiples of 4.
        if self.height % 4 or self.width % 4:
            raise ValueError(
                f"{name}: height and width must be multiples of 4, got {self.height}x{self.width}"
            )


class PairModel(nn.Module):
    """Base of the baseline models: validation of pixels and labels, label embedding, autocast.

    Subclasses set ``self.config`` (a :class:`BaselineConfig`) before using these helpers.
    """

    config: Any

    @property
    def device(self) -> torch.device:
        """The device the model's parameters live on."""
        return next(self.parameters()).device

    _device = device

    @property
    def precision(self) -> str:
        """``"fp32"`` or ``"bf16"`` (the networks under autocast); settable."""
        return self.config.precision

    @precision.setter
    def precision(self, value: str) -> None:
        self.config.precision = check_choice("precision", value, Precision)

    def _autocast(self):
        """bf16 autocast for the networks when ``config.precision == "bf16"``; the
        likelihood maths runs outside it, in float32."""
        if self.config.precision != "bf16":
            return nullcontext()
        return torch.autocast(self._device.type, dtype=torch.bfloat16)

    def _digits(self, cond: Tensor) -> Tensor:
        """Labels (B,) -> embedding rows (B, S): for pairs the left digit 0..9 and the right
        digit 10..19, for single images the class 0..9 (the rows of a
        :class:`~pairflow.flows.LabelEmbedding`)."""
        digits = label_digits(cond, self.config.label_sides)
        return torch.stack([10 * side + d for side, d in enumerate(digits)], dim=1)

    def _check_pixels(self, x: Tensor) -> Tensor:
        return check_pixels(x, self.config.shape, self._device)

    def _check_cond(self, cond: Tensor | int | None, batch: int) -> Tensor | None:
        return check_pair_labels(
            cond, batch, self.config.conditional, self._device, self.config.num_classes
        )

    def _normal(self, shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
        """Standard normal noise drawn on the generator's device, moved to the model's."""
        device = generator.device if generator is not None else self._device
        return torch.randn(shape, generator=generator, device=device).to(self._device)

    @staticmethod
    def _check_sampling(n: int | tuple[int], temperature: float) -> int:
        """The number of images asked for (``n`` or ``(n,)``), checked with the temperature."""
        if isinstance(n, (tuple, torch.Size)) and len(n) == 1:
            n = n[0]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if not math.isfinite(temperature):
            raise ValueError(f"temperature must be finite, got {temperature!r}")
        return n


def scale_pixels(x: Tensor) -> Tensor:
    """Pixel values 0..255 -> floats in [-1, 1], the networks' input scale."""
    return x.to(torch.float32) / 127.5 - 1.0
