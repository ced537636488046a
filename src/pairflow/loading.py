"""Loading a trained model: a shipped name, a run folder or a checkpoint file -> the model.

The one way pairflow loads a model to use it: :func:`pairflow.load`, every command that reads
a model (``sample``, ``evaluate``, ``demo``) and the benchmarks call :func:`load_trained`.
It resolves what was asked for (a shipped model's file, its bytes checked against
``weights/sha256.json``; a run folder's ``best.pt``, else ``last.pt``; a checkpoint file),
builds the model from the checkpoint's kind and config, loads the weights (the moving
average's where the run kept one), puts it on the device in eval mode and sets the
precision its networks compute in. What came with it stays beside it: the checkpoint dict
(``train_config``: the dataset, layout and command it was trained with) and, for a shipped
model, its entry in ``weights/index.json`` (its measured test bits/dim).

Example:
    >>> loaded = load_trained("multiscale-cond", precision="fp32")
    >>> loaded.name, loaded.dataset, loaded.layout, loaded.model.precision
    ('multiscale-cond', 'mnist', 'pair', 'fp32')
    >>> loaded.model.sample((2,), cond=37).shape
    torch.Size([2, 1, 28, 56])
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pairflow.options import DEFAULT_DATASET, DEFAULT_LAYOUT, LoadPrecisionOption, check_choice

if TYPE_CHECKING:
    import torch

    from pairflow.precision import PrecisionChoice

__all__ = [
    "TrainedModel",
    "load_trained",
    "load",
    "load_with_checkpoint",
    "dataset_of",
    "layout_of",
]


def dataset_of(state: dict) -> tuple[str, str]:
    """``(dataset, layout)`` a checkpoint's run was trained on (MNIST pairs if not recorded).

    Example:
        >>> dataset_of({"train_config": {"dataset": "cifar10", "layout": "single"}})
        ('cifar10', 'single')
        >>> dataset_of({})
        ('mnist', 'pair')
    """
    config = state.get("train_config") or {}
    return config.get("dataset") or DEFAULT_DATASET, config.get("layout") or DEFAULT_LAYOUT


def layout_of(state: dict) -> str:
    """``"pair"`` or ``"single"``: the images a checkpoint's model draws and the labels it
    takes (pair labels 0..99, or class labels 0..9); the model config says, else the run's."""
    return state["model_config"].get("layout") or dataset_of(state)[1]


@dataclass
class TrainedModel:
    """A model loaded to use, with what came with it.

    Arguments:
        model: the model, in eval mode, on its device, at its precision.
        state: the checkpoint dict it was loaded from (``kind``, ``model_config``,
            ``train_config``, ``step``...); a shipped model's gets its sampling defaults,
            ``sampling_temperatures``, from its ``weights/index.json`` entry where a temperature
            sweep chose them (:func:`pairflow.options.default_temperature`), and
            ``sampling_guidance`` where a guidance sweep chose a weight
            (:func:`pairflow.options.default_guidance`).
        checkpoint: the checkpoint file read.
        name: the shipped model's name, or None for a run folder or checkpoint file.
        shipped: its ``weights/index.json`` entry (``test_bpd``...), or {} if not shipped.
        precision: how its precision was chosen (:class:`~pairflow.precision.PrecisionChoice`:
            the precision and why, in words), or None where it was left as saved.
    """

    model: torch.nn.Module
    state: dict
    checkpoint: Path
    name: str | None = None
    shipped: dict = field(default_factory=dict)
    precision: PrecisionChoice | None = None

    @property
    def train_config(self) -> dict:
        """The run's training config as saved (empty for checkpoints without one)."""
        return dict(self.state.get("train_config") or {})

    @property
    def dataset(self) -> str:
        """The dataset it was trained on (a name in :data:`pairflow.data.DATASETS`)."""
        return dataset_of(self.state)[0]

    @property
    def layout(self) -> str:
        """``"pair"`` or ``"single"``: the images it draws and the labels it takes."""
        return layout_of(self.state)

    @property
    def test_bpd(self) -> float | None:
        """The shipped model's measured test bits/dim (None for other models)."""
        value = self.shipped.get("test_bpd")
        return None if value is None else float(value)


def _resolve(name_or_path: str | os.PathLike, shipped: bool | None) -> tuple[Path, str | None]:
    """The checkpoint file or run folder asked for, and the shipped name if it is one."""
    from pairflow.pretrained import list_pretrained, pretrained_path
    from pairflow.training.checkpoint import find_checkpoint

    text = os.fspath(name_or_path)
    if shipped:
        return pretrained_path(text), text
    path = Path(os.path.expanduser(text))
    if shipped is False or path.exists():
        found = find_checkpoint(path)
        return found, _shipped_name_of(found)
    if text not in list_pretrained():
        names = ", ".join(sorted(list_pretrained())) or "(none ship with this build)"
        raise ValueError(
            f"{text!r} is neither a file, a run folder nor a shipped model; shipped: {names}"
        )
    return pretrained_path(text), text


def _shipped_name_of(path: Path) -> str | None:
    """The shipped name of a checkpoint file given by its path: the installed shipped file
    with its recorded bytes (so it takes that model's sampling defaults), else None."""
    from pairflow.pretrained import WEIGHTS_DIR, list_pretrained, pretrained_path

    try:
        if path.resolve().parent != WEIGHTS_DIR.resolve():
            return None
        for name, meta in list_pretrained().items():
            if meta.get("file") == path.name:
                pretrained_path(name)  # its bytes checked: an edited file is a plain checkpoint
                return name
    except (OSError, ValueError):  # ChecksumError is a ValueError
        return None
    return None


def load_trained(
    name_or_path: str | os.PathLike,
    device: str | torch.device | None = None,
    precision: LoadPrecisionOption | str | None = "auto",
    shipped: bool | None = None,
) -> TrainedModel:
    """Load a model, ready to use (eval mode), with its checkpoint and where it came from.

    Arguments:
        name_or_path: a shipped model's name (``"multiscale-cond"``, see
            ``pairflow sample --list-pretrained``), a run folder (its ``best.pt``, else
            ``last.pt``) or a checkpoint file. ``~`` is expanded.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"`` (CUDA if present) or a
            ``torch.device``; None: the CPU.
        precision: the compute precision of its networks here: ``"auto"`` (default) the
            faster one on this device (:func:`pairflow.precision.choose_model_precision`:
            bf16 with AMX or a CUDA GPU, fp32 on CPUs without AVX512-BF16, and on AVX512-BF16
            CPUs without AMX the faster of the two, measured once and cached), ``"fp32"``,
            ``"bf16"``, or ``"saved"`` (None alike) for the one it was trained in. The
            weights are the same; only the arithmetic changes (bits/dim by ~1e-4).
        shipped: True: ``name_or_path`` must be a shipped name (``--pretrained``); False: a
            run folder or checkpoint file; None (default): a path where one exists, else a
            shipped name.

    Returns:
        A :class:`TrainedModel`.

    Raises:
        ValueError: an unknown name or precision, a path that does not exist, CUDA asked
            for and absent; :class:`~pairflow.training.checkpoint.CheckpointError` for a
            file that is not a readable checkpoint, :class:`~pairflow.pretrained.ChecksumError`
            for a shipped file whose bytes are not the ones shipped (both are ValueErrors).
    """
    from pairflow.pretrained import list_pretrained
    from pairflow.training.checkpoint import load_model
    from pairflow.utils import resolve_device

    if precision is not None:
        check_choice("precision", precision, LoadPrecisionOption)
    where = resolve_device(str(device)) if device is not None else "cpu"
    checkpoint, name = _resolve(name_or_path, shipped)
    model, state = load_model(checkpoint, map_location=where)
    choice = None
    if precision not in (None, "saved"):
        from pairflow.precision import choose_model_precision

        choice = choose_model_precision(model, precision)
        model.precision = choice.precision
    meta = list_pretrained().get(name, {}) if name is not None else {}
    if meta.get("temperature"):  # chosen by a sweep after the weights were shipped
        state = {**state, "sampling_temperatures": dict(meta["temperature"])}
    if meta.get("guidance"):  # likewise, for a flow trained with label dropout
        state = {**state, "sampling_guidance": dict(meta["guidance"])}
    return TrainedModel(model, state, checkpoint, name, dict(meta), choice)


def load(
    name_or_path: str | os.PathLike,
    map_location: str | torch.device | None = None,
    precision: str | None = "auto",
) -> torch.nn.Module:
    """Load a model, ready to use (eval mode): a shipped name, a run folder or a checkpoint.

    Arguments:
        name_or_path: a shipped model's name (``"multiscale-cond"``, see
            ``pairflow sample --list-pretrained``), a run folder (its ``best.pt``, else
            ``last.pt``) or a checkpoint file. A shipped file is read only if its bytes are
            the ones shipped (SHA-256).
        map_location: the device to put it on (``"cpu"``, ``"cuda"``, ``"cuda:1"``); None: CPU.
        precision: the compute precision of its networks here: ``"auto"`` (default) the
            faster one on this device, ``"fp32"``, ``"bf16"``, or None for the one it was
            trained in (see :func:`load_trained`).

    Returns:
        The model (a :class:`~pairflow.models.LikelihoodModel` for flows and the VAE).

    Raises:
        ValueError: as :func:`load_trained`.

    Example:
        >>> import pairflow
        >>> flow = pairflow.load("multiscale-cond")
        >>> flow.sample((4,), cond=37, temperature=0.7).shape
        torch.Size([4, 1, 28, 56])
    """
    return load_trained(name_or_path, map_location, precision).model


def load_with_checkpoint(
    name_or_path: str | os.PathLike,
    map_location: str | torch.device | None = None,
    precision: str | None = "auto",
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """:func:`load`, also returning the checkpoint dict (its ``train_config``: the dataset,
    layout and command the model was trained with)."""
    loaded = load_trained(name_or_path, map_location, precision)
    return loaded.model, loaded.state
