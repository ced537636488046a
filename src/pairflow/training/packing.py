"""Weight storage in fewer bits: pack a state dict as fp32, fp16 or row-wise int8, and back.

- ``fp32``: unchanged;
- ``fp16``: every floating tensor as float16 (loaded back as float32);
- ``int8``: every floating matrix or kernel (2+ dims) as int8 with one float32 scale per
  output row (symmetric, round-to-nearest), vectors as float16.

Tensors that are data rather than weights stay float32 whatever the dtype: the pixel
centres of a flow that reads its own clusters (``clusters.centres``), whose rounding would
move images from one cluster to another, and p(y) (``class_probs``), whose smallest entries
(a pair of rare clusters among 40 per side) float16 would round towards zero.

Used by :mod:`pairflow.training.export` (writing) and :mod:`pairflow.training.checkpoint`
(reading): both import this module, neither imports the other's internals.
"""

from __future__ import annotations

import torch

__all__ = ["DTYPES", "pack_state_dict", "unpack_state_dict"]

DTYPES = ("fp32", "fp16", "int8")
_SCALE = ".__int8_scale"
KEEP_FP32 = ("clusters.centres", "distribution.class_probs")
"""State-dict names (suffixes) stored as float32 by every dtype."""


def pack_state_dict(state: dict[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    """Store a state dict's floating tensors as ``dtype`` (see the module docstring)."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    packed: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if not value.is_floating_point() or dtype == "fp32" or name.endswith(KEEP_FP32):
            packed[name] = value.float() if value.is_floating_point() else value
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
