"""How the page loads a model: a shipped name, or a run folder / checkpoint, onto the CPU.

All of the app's loading is :func:`load_model`; :class:`ModelCache` keeps what it loaded, so
a page event does not reload the weights.
"""

from __future__ import annotations

import threading

from pairflow.app.inputs import AppInputError
from pairflow.app.model import LoadedModel
from pairflow.models import kind_of

__all__ = ["load_model", "ModelCache"]


def load_model(name_or_path: str) -> LoadedModel:
    """Load a shipped model by name, or a run folder / checkpoint file, onto the CPU.

    As :func:`pairflow.load` does (the fast precision here, ``"auto"``), and the dataset and
    layout from the checkpoint's training config (MNIST pairs where it names none).

    Raises:
        AppInputError: the name is neither a shipped model nor an existing checkpoint, or
            the checkpoint cannot be read.
    """
    from pairflow.data import get_dataset
    from pairflow.loading import load_trained

    name = str(name_or_path).strip()
    if not name:
        raise AppInputError("no model chosen: pick a shipped model or give a run folder")
    try:
        loaded = load_trained(name, "cpu")
        dataset, layout = loaded.dataset, loaded.layout
        get_dataset(dataset).image_shape(layout)  # a checkpoint naming an unknown one
    except ValueError as err:  # CheckpointError is one too
        raise AppInputError(f"model {name!r}: {err}") from err
    model, test_bpd = loaded.model, loaded.test_bpd
    temperatures = loaded.state.get("sampling_temperatures")
    guidance = loaded.state.get("sampling_guidance")
    return LoadedModel(
        name, model, kind_of(model), test_bpd, dataset, layout, temperatures, guidance
    )


class ModelCache:
    """Loaded models by name, so a page event does not reload the weights (thread-safe)."""

    def __init__(self) -> None:
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def get(self, name_or_path: str) -> LoadedModel:
        key = str(name_or_path).strip()
        with self._lock:
            if key not in self._models:
                self._models[key] = load_model(key)
            return self._models[key]
