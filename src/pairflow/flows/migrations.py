"""How a flow's checkpoints from older formats are brought up to date on load.

Each migration takes a checkpoint dict (``kind``, ``version``: the format version it was
saved with, ``model_config``, ``model``, optionally ``ema`` and ``train_config``), changes it
in place where it applies and leaves it alone otherwise, so applying one twice, or to a
current checkpoint, changes nothing. The flow's row of the model registry lists them in
order (:attr:`pairflow.models.KindSpec.migrations`); :func:`pairflow.training.checkpoint.
upgrade_state` runs them, then stamps the current version.

Example:
    >>> weights = {"prior_loc": 0, "digit_embedding.weight": 1}
    >>> state = {"version": 1, "model_config": {}, "model": weights}
    >>> submodules_of_version_2(state)
    >>> sorted(state["model"])
    ['distribution.loc', 'embedding.weight']
"""

from __future__ import annotations

import torch

from pairflow.options import NUM_PAIR_CLASSES

__all__ = [
    "MIGRATIONS",
    "submodules_of_version_2",
    "label_probs_of_version_3",
    "single_layout",
    "class_probs_of_version_4",
]

_VERSION_1_NAMES = {
    "prior_loc": "distribution.loc",
    "prior_log_scale": "distribution.log_scale",
    "digit_embedding": "embedding",
}


def submodules_of_version_2(state: dict) -> None:
    """Version 2 made the base distribution and the label embedding submodules: version-1
    names ``prior_loc``, ``prior_log_scale``, ``digit_embedding.*`` become ``distribution.loc``,
    ``distribution.log_scale``, ``embedding.*``."""
    if state.get("version", 1) >= 2:
        return
    renamed = {}
    for name, value in state["model"].items():
        head, dot, rest = name.partition(".")
        for old, new in _VERSION_1_NAMES.items():
            # "prior_loc" and "prior_loc.__int8_scale" (int8 exports) alike.
            if head == old:
                name = new + dot + rest
                break
        renamed[name] = value
    state["model"] = renamed


def label_probs_of_version_3(state: dict) -> None:
    """Version 3 gave a conditional flow (other than the class mixture, whose
    ``distribution.class_probs`` it already had) p(label) as the buffer ``label_probs``;
    older ones get the uniform p(label), and ``state["label_probs"]`` says so."""
    config = state["model_config"]
    if (
        state.get("version", 1) >= 3
        or not config.get("conditional")
        or config.get("conditioning", "embedding") == "mixture"
    ):
        return
    uniform = torch.full((NUM_PAIR_CLASSES,), 1 / NUM_PAIR_CLASSES)
    for weights in (state["model"], state.get("ema", {}).get("shadow")):
        if weights is not None and not {"label_probs", "distribution.class_probs"} & set(weights):
            weights["label_probs"] = uniform.clone()
    state["label_probs"] = "uniform: the checkpoint predates p(label)"


def single_layout(state: dict) -> None:
    """Flows of single images saved before the flow config had a layout (unconditional ones:
    conditional singles came with the field) get ``layout="single"`` from their run's
    config; without it a config means pairs."""
    config = state["model_config"]
    train = state.get("train_config") or {}
    if "layout" not in config and train.get("layout") == "single":
        config["layout"] = "single"


def class_probs_of_version_4(state: dict) -> None:
    """Version 4 keeps a conditional flow's p(label) in its distribution: the flow's buffer
    ``label_probs`` (and an export's ``label_probs.*`` companions) becomes
    ``distribution.class_probs``, in the weights and in the moving average alike."""
    if state.get("version", 1) >= 4:
        return
    for key in ("model", "ema"):
        weights = state["model"] if key == "model" else state.get("ema", {}).get("shadow")
        if weights is None:
            continue
        renamed = {}
        for name, value in weights.items():
            head, dot, rest = name.partition(".")
            renamed["distribution.class_probs" + dot + rest if head == "label_probs" else name] = (
                value
            )
        if len(renamed) < len(weights):
            raise ValueError("checkpoint holds p(label) twice: label_probs and class_probs")
        weights.clear()
        weights.update(renamed)


MIGRATIONS = (
    submodules_of_version_2,
    label_probs_of_version_3,
    single_layout,
    class_probs_of_version_4,
)
"""The flow's migrations, in the order they apply."""
