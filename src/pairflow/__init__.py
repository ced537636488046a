"""pairflow: RealNVP normalizing flows for MNIST digit pairs.

Two MNIST digits side by side make one 28x56 grayscale image whose label is the two-digit
number they read (3 and 7 -> 37). pairflow maps such images to a Gaussian latent space and
back, so it gives exact log-likelihoods (bits per dimension) and samples by inverting.

Importing the package is cheap: submodules (``pairflow.data``, ``pairflow.flows``, ...) are
imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = {
    "data",
    "flows",
    "metrics",
    "models",
    "evaluation",
    "loading",
    "training",
    "commands",
    "utils",
    "pretrained",
    "options",
}

__all__ = ["load", "__version__"]


def load(name_or_path, map_location=None, precision="auto"):
    """Load a shipped model, a run folder or a checkpoint (:func:`pairflow.loading.load`).

    Example:
        >>> import pairflow
        >>> flow = pairflow.load("multiscale-cond")
        >>> flow.bits_per_dim(flow.sample((2,), cond=37), cond=37).shape
        torch.Size([2])
    """
    from pairflow.loading import load as _load

    return _load(name_or_path, map_location=map_location, precision=precision)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"pairflow.{name}")
    raise AttributeError(f"module 'pairflow' has no attribute {name!r}")
