"""Compact, weights-only checkpoints for shipping trained models.

A training checkpoint carries optimizer state and RNG states (about 3x the weights). For
sampling and evaluation only the model config and weights are needed; ``export_checkpoint``
keeps those and can store the weights in fewer bits:

- ``fp32``: unchanged;
- ``fp16``: every floating tensor as float16 (loaded back as float32);
- ``int8``: every floating matrix or kernel (2+ dims) as int8 with one float32 scale per
  output row (symmetric, round-to-nearest), vectors as float16.

The flow stays exactly invertible with the stored (rounded) weights: only its weights change,
not the maths, so the exported model's own log-likelihood is exact. Its test bits/dim can
differ slightly from the original's; measure it with ``pairflow evaluate`` on the export.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from pairflow.training.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["export_checkpoint", "pack_state_dict", "unpack_state_dict", "DTYPES"]

DTYPES = ("fp32", "fp16", "int8")
_SCALE = ".__int8_scale"


def pack_state_dict(state: dict[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    """Store a state dict's floating tensors as ``dtype`` (see the module docstring)."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    packed: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if not value.is_floating_point() or dtype == "fp32":
            packed[name] = value
        elif dtype == "fp16" or value.dim() < 2:
            packed[name] = value.to(torch.float16)
        else:
            rows = value.reshape(value.shape[0], -1).float()
            scale = rows.abs().amax(dim=1).clamp_min(1e-12) / 127.0  # (out,)
            packed[name] = torch.round(rows / scale[:, None]).to(torch.int8).reshape(value.shape)
            packed[name + _SCALE] = scale
    return packed


def unpack_state_dict(packed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Invert :func:`pack_state_dict` to float32 tensors (a plain state dict passes through)."""
    state: dict[str, torch.Tensor] = {}
    for name, value in packed.items():
        if name.endswith(_SCALE):
            continue
        scale = packed.get(name + _SCALE)
        if scale is not None:
            shape = (-1,) + (1,) * (value.dim() - 1)
            state[name] = value.float() * scale.view(shape)
        elif value.dtype in (torch.float16, torch.bfloat16):
            state[name] = value.float()
        else:
            state[name] = value
    return state


def export_checkpoint(
    source: str | os.PathLike, out: str | os.PathLike, dtype: str = "fp16", **metadata
) -> Path:
    """Write a weights-only checkpoint of ``source`` (run folder or checkpoint) to ``out``.

    Arguments:
        source: run folder (its ``best.pt``) or checkpoint file.
        out: the exported file (written atomically).
        dtype: ``fp32``, ``fp16`` or ``int8`` weight storage.
        metadata: extra plain values stored under ``"export"``.

    Returns:
        The path written.
    """
    state = load_checkpoint(source)
    return save_checkpoint(
        {
            "kind": state["kind"],
            "model_config": state["model_config"],
            "train_config": state.get("train_config"),
            "model": pack_state_dict(state["model"], dtype),
            "step": state.get("step"),
            "epoch": state.get("epoch"),
            "export": {"dtype": dtype, **metadata},
        },
        out,
    )
