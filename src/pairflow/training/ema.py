"""An exponential moving average of a model's weights, for evaluation and sampling.

References:
    Polyak and Juditsky, "Acceleration of stochastic approximation by averaging", 1992.
    Kingma and Dhariwal, "Glow", NeurIPS 2018 and Ho et al., "Flow++", ICML 2019 (who sample
    from averaged weights).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = ["EMA"]


class EMA:
    r"""Exponential moving average of every floating-point tensor of a model's state dict.

    After each optimiser step, :meth:`update` sets

    .. math:: \bar\theta \leftarrow d_n \bar\theta + (1 - d_n) \theta, \quad
        d_n = \min\left(d, \frac{1 + n}{10 + n}\right) \text{ (warm-up) or } d,

    with n the number of updates so far (TensorFlow's warm-up, so the average forgets a
    random initialisation quickly), for every parameter. Buffers are copied, not averaged:
    ActNorm's ``initialized`` flag, and the values a model fixes before training (a cluster
    flow's centres, p(y)), which an average would only move by rounding. The average starts
    as a copy of the model. It is plain state, not an ``nn.Module``, so the optimiser never
    sees it; :meth:`state_dict` goes into the checkpoint under ``"ema"``.

    Arguments:
        model: the model whose weights are averaged.
        decay: d in [0, 1); 0.999 averages over about the last 1,000 steps.
        warmup: use the warm-up d_n above (False: d from the first update on).

    Example:
        >>> model = nn.Linear(1, 1, bias=False)
        >>> _ = model.weight.data.fill_(0.0)
        >>> ema = EMA(model, decay=0.5, warmup=False)
        >>> _ = model.weight.data.fill_(2.0)
        >>> ema.update(model)
        >>> ema.shadow["weight"].item()
        1.0
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.shadow: dict[str, Tensor] = {
            k: v.detach().clone() for k, v in model.state_dict().items()
        }
        self._parameters = {name for name, _ in model.named_parameters()}

    def current_decay(self) -> float:
        """d_n, the decay the next :meth:`update` uses."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards the model's current weights (call after each step)."""
        d = self.current_decay()
        for name, value in model.state_dict().items():
            avg = self.shadow[name]
            if avg.is_floating_point() and name in self._parameters:
                avg.mul_(d).add_(value.detach().to(avg.dtype), alpha=1 - d)
            else:
                avg.copy_(value)
        self.num_updates += 1

    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model``."""
        model.load_state_dict(self.shadow)

    @contextmanager
    def averaged(self, model: nn.Module) -> Iterator[nn.Module]:
        """Within the block ``model`` holds the averaged weights; its own come back after.

        Example:
            >>> model = nn.Linear(2, 2)
            >>> ema = EMA(model)
            >>> with ema.averaged(model):
            ...     pass
        """
        own = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.copy_to(model)
        try:
            yield model
        finally:
            model.load_state_dict(own)

    def state_dict(self) -> dict:
        """Plain values and tensors (loads with ``torch.load(weights_only=True)``)."""
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
            "shadow": dict(self.shadow),
        }

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise ValueError(f"EMA state does not fit the model: {', '.join(sorted(missing)[:5])}")
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])
        self.num_updates = int(state["num_updates"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)
