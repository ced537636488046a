"""Checkpoints: one file holds everything to sample from or resume a run.

A checkpoint is a plain dict of tensors and Python values, so it loads with
``torch.load(path, weights_only=True)``: opening someone else's checkpoint never runs code.

Keys: ``format`` ("pairflow-checkpoint"), ``version``, ``kind`` ("flow", "vae" or "gan"),
``model_config`` (the model's config dataclass as a dict), ``train_config``, ``model`` (state
dict) and, for resuming, ``optimizer``, ``scheduler`` (or, for models with several
optimisers such as the GAN, ``optimizers`` and ``schedulers``: dicts by name), ``step``,
``epoch``, ``batch_in_epoch``, ``rng`` (generator states), ``data`` (pairing state),
``best_test_bpd`` (for a VAE: of its bound), ``nonfinite_skipped`` and, for runs with
``--ema-decay``, ``ema`` (:meth:`pairflow.training.ema.EMA.state_dict`: the averaged weights,
which :func:`load_model`, ``--init-from`` and exports use; ``model`` stays the raw weights,
for resuming).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from pairflow.training.packing import unpack_state_dict
from pairflow.utils import atomic_save

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "find_checkpoint",
    "load_model",
    "evaluation_state_dict",
]

FORMAT = "pairflow-checkpoint"
VERSION = 4
"""2: a flow's base distribution and label embedding are submodules (``distribution.*``,
``embedding.*``); version-1 checkpoints (``prior_loc``, ``prior_log_scale``,
``digit_embedding.*``) are migrated on load (:func:`upgrade_state`, with the migrations of
the kind's registry row: :mod:`pairflow.flows.migrations`).
3: a conditional flow (other than the class mixture, whose ``distribution.class_probs`` it
already had) holds p(label) as the buffer ``label_probs``; older ones load with the uniform
p(label) and say so in ``state["label_probs"]``."""


class CheckpointError(ValueError):
    """A checkpoint file that is missing, corrupt, or does not fit what was asked."""


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` (plus format and version tags) atomically to ``path``."""
    state = {"format": FORMAT, "version": VERSION, **state}
    return atomic_save(state, path)


def find_checkpoint(path: str | os.PathLike, prefer: str = "best") -> Path:
    """Resolve a run folder or checkpoint file to a checkpoint file.

    A folder resolves to ``best.pt`` (or ``last.pt`` with ``prefer="last"``), falling back to
    the other one.
    """
    path = Path(path)
    if path.is_dir():
        order = ["best.pt", "last.pt"] if prefer == "best" else ["last.pt", "best.pt"]
        for name in order:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"run folder {path} holds no checkpoint (looked for {order})")
    if not path.exists():
        raise CheckpointError(f"checkpoint or run folder {path} does not exist")
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load and check a checkpoint file with ``weights_only=True``.

    Raises:
        CheckpointError: the file is missing, truncated/corrupt, not a pairflow checkpoint, or
            from a newer format version.
    """
    path = find_checkpoint(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"checkpoint {path} could not be read ({type(err).__name__}: {str(err)[:200]}); "
            "it is corrupt, truncated or not a pairflow checkpoint"
        ) from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pairflow checkpoint (no '{FORMAT}' tag)")
    if state.get("version", 0) > VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {state['version']}, newer than this "
            f"pairflow reads ({VERSION}); upgrade pairflow"
        )
    for key in ("kind", "model_config", "model"):
        if key not in state:
            raise CheckpointError(f"checkpoint {path} lacks '{key}'; it is incomplete")
    return upgrade_state(state)


def upgrade_state(state: dict) -> dict:
    """Migrate an older checkpoint dict to the current format, in place; returns it.

    The migrations are the kind's own (:attr:`pairflow.models.KindSpec.migrations`); a kind
    this pairflow does not know is left to :func:`build_model` to name.
    """
    from pairflow.models import REGISTRY, kind_spec

    if state["kind"] in REGISTRY:
        kind_spec(state["kind"]).upgrade(state)
    state["version"] = VERSION
    return state


def evaluation_state_dict(state: dict) -> dict:
    """The weights to evaluate and sample with: the moving average's where the run kept one."""
    if "ema" in state:
        return state["ema"]["shadow"]
    return state["model"]


def model_config_class(kind: str) -> type:
    """The config dataclass of model ``kind`` (see :data:`pairflow.models.REGISTRY`)."""
    from pairflow.models import REGISTRY, kind_spec

    if kind not in REGISTRY:
        raise CheckpointError(
            f"unknown model kind {kind!r} in checkpoint; valid kinds: {', '.join(REGISTRY)}"
        )
    return kind_spec(kind).config_class


def build_model(kind: str, model_config: dict[str, Any]) -> torch.nn.Module:
    """Build an untrained model of ``kind`` from its config dict (the registry's builder)."""
    from pairflow.models import build_model as build

    model_config_class(kind)  # a named CheckpointError for an unknown kind
    return build(kind, model_config)


def load_model(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict]:
    """Load a model (in eval mode) from a checkpoint file or run folder.

    The weights are the moving average's where the run kept one (``--ema-decay``).

    Returns:
        ``(model, checkpoint_dict)``.
    """
    state = load_checkpoint(path, map_location=map_location)
    model = build_model(state["kind"], state["model_config"])
    try:
        model.load_state_dict(unpack_state_dict(evaluation_state_dict(state)))
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint {path}: weights do not fit its model config ({str(err)[:300]})"
        ) from err
    return model.to(map_location).eval(), state
