"""Whether a model to train fits in memory, known before a byte of it is allocated.

A ``--set hidden_features=100000000`` asks for a model of terabytes: allocating it fails deep
inside the allocator (or the machine swaps itself to a halt). :func:`check_model_fits` counts
the model's parameters without allocating them, by building it with its large tensors on
PyTorch's ``meta`` device (shapes without storage), and refuses a model whose training state
would not fit in the memory free now.

Example:
    >>> from pairflow.flows import FlowConfig
    >>> from dataclasses import asdict
    >>> count, nbytes = parameter_size("flow", asdict(FlowConfig.from_preset("seed")))
    >>> nbytes == 4 * count
    True
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["available_memory", "check_model_fits", "parameter_size", "training_bytes"]

# Which tensors are built on the meta device: those of at least _META_FROM elements, and,
# once _REAL_BUDGET elements have been built for real, those of at least _META_AFTER_BUDGET
# (many blocks of small tensors add up too). The others are real, so that a constructor may
# inspect their values (``mask.any()``), which a meta tensor cannot answer; masks and label
# tables are far smaller than _META_AFTER_BUDGET. Real building up to _META_FROM also keeps
# ordinary models off the meta kernels, whose first use imports much of torch (seconds).
_META_FROM = 1 << 20
_REAL_BUDGET = 1 << 24
_META_AFTER_BUDGET = 1 << 14

_FACTORIES = {
    torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn,
    torch.empty_strided,
}  # fmt: skip


class _LargeOnMeta(TorchFunctionMode):
    """Factory calls that ask for a large tensor, without a device, get one on ``meta``."""

    def __init__(self) -> None:
        super().__init__()
        self.real = 0  # elements built for real so far

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in _FACTORIES and kwargs.get("device") is None:
            shape = kwargs.get("size", args[0] if args else ())
            if isinstance(shape, int):
                shape = [a for a in args if isinstance(a, int)]
            try:
                numel = math.prod(int(n) for n in shape)
            except TypeError:
                numel = 0  # not a shape: leave it
            large = _META_AFTER_BUDGET if self.real > _REAL_BUDGET else _META_FROM
            if numel >= large:
                kwargs["device"] = "meta"
            else:
                self.real += numel
        return func(*args, **kwargs)


def parameter_size(kind: str, model_config: dict[str, Any]) -> tuple[int, int]:
    """``(parameters, bytes)`` of a model of ``kind`` built from ``model_config``, counted
    without allocating its large tensors; bytes of the parameters as stored (fp32: 4 each).

    Arguments:
        kind: a registered model kind (``flow``, ``vae``, ``gan``).
        model_config: its config as a dict (what a checkpoint's ``model_config`` holds).
    """
    from pairflow.training.checkpoint import build_model

    with _LargeOnMeta():
        model = build_model(kind, model_config)
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() * p.element_size() for p in params)


def training_bytes(parameter_bytes: int, ema: bool = False) -> int:
    """Bytes of a model's training state: weights, gradients and Adam's two moments (and the
    moving average of the weights with ``ema``), activations not counted."""
    return parameter_bytes * (5 if ema else 4)


def available_memory(device: torch.device) -> int | None:
    """Bytes free now on ``device``: a CUDA GPU's free memory, or the host's available memory
    (within a container's limit, where there is one); None where it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    free = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    try:  # cgroup v2: the container's limit less what it uses
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current") as f:
                room = int(limit) - int(f.read().strip())
            free = room if free is None else min(free, room)
    except (OSError, ValueError):
        pass
    return free


def _gb(nbytes: int) -> str:
    return f"{nbytes / 1e9:,.1f} GB" if nbytes >= 1e8 else f"{nbytes / 1e9:.3f} GB"


def check_model_fits(
    kind: str, model_config: dict[str, Any], device: torch.device, ema: bool = False
) -> None:
    """Refuse, before allocating it, a model whose training state would not fit on ``device``.

    Arguments:
        kind, model_config: the model, as for :func:`parameter_size`.
        device: where it would train.
        ema: the run keeps a moving average of the weights (one more copy).

    Raises:
        ValueError: "the model would need N GB ...", with its parameter count and the memory
            free, where its weights, gradients and optimiser state exceed that memory.
    """
    try:
        count, nbytes = parameter_size(kind, model_config)
    except (RuntimeError, NotImplementedError, TypeError):
        return  # a constructor that needs its large tensors' values: no estimate, no refusal
    need = training_bytes(nbytes, ema)
    free = available_memory(device)
    if free is not None and need > free:
        raise ValueError(
            f"the model would need {_gb(need)} to train ({count:,} parameters: weights, "
            f"gradients and Adam's two moments{' and the moving average' if ema else ''}, "
            f"before activations), more than the {_gb(free)} free on {device}; make it "
            "smaller (--set hidden_features=..., hidden_channels=..., num_blocks=...) or "
            "use a device with more memory"
        )
