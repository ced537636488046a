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

from pairflow.training.checkpoint import evaluation_state_dict, load_checkpoint, save_checkpoint
from pairflow.training.packing import DTYPES, pack_state_dict, unpack_state_dict

__all__ = ["export_checkpoint", "pack_state_dict", "unpack_state_dict", "DTYPES"]


def export_checkpoint(
    source: str | os.PathLike,
    out: str | os.PathLike,
    dtype: str = "fp16",
    label_counts=None,
    **metadata,
) -> Path:
    """Write a weights-only checkpoint of ``source`` (run folder or checkpoint) to ``out``.

    Arguments:
        source: run folder (its ``best.pt``) or checkpoint file.
        out: the exported file (written atomically).
        dtype: ``fp32``, ``fp16`` or ``int8`` weight storage.
        label_counts: a conditional flow's training label counts (100 for pairs, 10 for
            single images): sets its p(label) where the checkpoint predates it (format
            version < 3 loads it as uniform).
        metadata: extra plain values stored under ``"export"``.

    Returns:
        The path written.
    """
    state = load_checkpoint(source)
    weights = dict(evaluation_state_dict(state))  # the moving average's if the run kept one
    if label_counts is not None:
        import torch

        from pairflow.flows.mixture import label_frequencies

        # p(label) is the distribution's class_probs (older files: the flow's label_probs).
        conditional = state["model_config"].get("conditional")
        key = next((k for k in ("distribution.class_probs", "label_probs") if k in weights), None)
        if not conditional or key is None:
            raise ValueError(f"{source} is not a conditional flow with p(label) to set")
        k = len(weights[key])  # 100 pair labels, or 10 classes of single images
        weights[key] = label_frequencies(label_counts, k).to(torch.float32)
        metadata = {**metadata, "label_probs": "set from the training pairs' label counts"}
    return save_checkpoint(
        {
            "kind": state["kind"],
            "model_config": state["model_config"],
            "train_config": state.get("train_config"),
            "model": pack_state_dict(weights, dtype),
            "step": state.get("step"),
            "epoch": state.get("epoch"),
            "export": {"dtype": dtype, **metadata},
        },
        out,
    )
