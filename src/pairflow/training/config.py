"""The training run's configuration: one dataclass, filled from defaults, a file, then flags."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pairflow.models import REGISTRY, kind_spec
from pairflow.options import (
    DEFAULT_DATASET,
    DEFAULT_LAYOUT,
    DEFAULT_TEMPERATURE,
    DatasetName,
    Layout,
    PrecisionOption,
    Schedule,
    check_choice,
    check_seed,
)
from pairflow.utils import check_field_types, dataclass_from_dict

__all__ = ["TrainConfig", "load_config_file", "merge_config", "FINE_TUNE_DEFAULTS"]
__all__ += ["fine_tune_defaults"]

# A fine-tune (--init-from) starts from weights that are already good, with a fresh Adam whose
# first steps are large: these replace the from-scratch defaults where the flag and the config
# file leave a setting out. Chosen by measuring (docs/cli.md, "Fine-tuning"): the from-scratch rate
# (1e-3) made the shipped multiscale flow worse in a minute's fine-tune.
FINE_TUNE_DEFAULTS: dict[str, Any] = {"lr": 2e-4, "warmup_steps": 100, "ema_decay": 0.999}


def _spell(key: str) -> str:
    """A config key with its flag, for messages: ``grad_clip (--grad-clip)``."""
    flag = "--set" if key == "model_overrides" else "--" + key.replace("_", "-")
    return f"{key} ({flag})"


@dataclass
class TrainConfig:
    """Everything a training run needs; saved in every checkpoint and as ``config.json``.

    Precedence: dataclass defaults < config file (TOML, or YAML when PyYAML is installed)
    < command-line flags.
    """

    preset: str | None = None  # None: the model's default (multiscale, conv, dcgan)
    model: str = "flow"  # flow, vae or gan
    conditional: bool = False
    balanced: bool = False
    epochs: int = 10
    max_steps: int | None = None  # stop after this many optimiser steps (tiny runs)
    time_budget: float | None = None  # minutes of training wall-clock, then stop cleanly
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 200
    schedule: str = "constant"  # constant after warmup, or cosine to 0 over all epochs
    grad_clip: float = 100.0
    weight_decay: float = 0.0
    num_pairs: int | None = None  # training pairs per epoch; default: 60,000
    test_pairs: int | None = None  # fixed test pairs evaluated each epoch; default: 10,000
    test_every: int | None = None  # also test every this many steps within an epoch (curves)
    data_dir: str | None = None
    dataset: str = DEFAULT_DATASET  # options.DatasetName: mnist, fashion-mnist or cifar10
    layout: str = DEFAULT_LAYOUT  # pair: two images side by side (label 10a+b); single: one
    out: str = "runs/default"
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    sample_n: int = 64
    sample_temperature: float = DEFAULT_TEMPERATURE
    log_every: int = 20  # steps between train metric lines
    max_nonfinite: int = 20  # consecutive skipped steps before training stops
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    # torch.compile the loss: True, False or "auto" (where measured to pay, see
    # training.speed.decide_compile); falls back to eager if compiling fails.
    compile: bool | str = "auto"
    init_from: str | None = None  # run folder or checkpoint whose weights start this run
    tensorboard: bool = False  # also write the metrics and sample grids to out/tensorboard/
    ema_decay: float = 0.0  # > 0: evaluate, sample and select best.pt with averaged weights
    model_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.preset is None and self.model in REGISTRY:
            self.preset = kind_spec(self.model).default_preset

    def validate(self) -> TrainConfig:
        """Check values; raise ``ValueError`` naming the bad field, its value and what is valid."""
        check_field_types(type(self), self.to_dict(), "config key", _spell)
        if self.model not in REGISTRY:
            raise ValueError(f"unknown model {self.model!r}; valid models: {', '.join(REGISTRY)}")
        presets = kind_spec(self.model).presets
        if self.preset not in presets:
            raise ValueError(
                f"unknown preset {self.preset!r}; valid presets: {', '.join(presets)} "
                f"(for --model {self.model})"
            )
        check_choice("precision", self.precision, PrecisionOption)
        check_choice("schedule", self.schedule, Schedule)
        check_choice("dataset", self.dataset, DatasetName)
        check_choice("layout", self.layout, Layout)
        for name in ("epochs", "batch_size", "sample_n", "log_every", "max_nonfinite"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("max_steps", "num_pairs", "test_pairs", "test_every", "threads"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.compile, bool) and self.compile != "auto":
            raise ValueError(f"compile must be true, false or 'auto', got {self.compile!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(f"time_budget must be > 0 minutes, got {self.time_budget!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps!r}")
        if not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0, got {self.grad_clip!r}")
        check_seed(self.seed, "seed (--seed)")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not (isinstance(self.ema_decay, (int, float)) and 0 <= self.ema_decay < 1):
            raise ValueError(f"ema_decay must be in [0, 1) (0: off), got {self.ema_decay!r}")
        if not self.sample_temperature > 0:
            raise ValueError(f"sample_temperature must be > 0, got {self.sample_temperature!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        return dataclass_from_dict(cls, values, what="config key", spell=_spell)


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML (``.toml``), YAML (``.yaml``/``.yml``, needs PyYAML) or JSON config file.

    A ``[train]`` table, if present, holds the settings; otherwise the top level does. A file
    with both is refused, naming the keys outside the table: which of the two should win
    where they disagree is a guess, and a key silently left out is a run that is not the
    one asked for.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise ValueError(
            f"config file {path}: unknown format {suffix!r}; use .toml, .yaml or .json"
        )
    if suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        parse = tomllib.loads
    elif suffix == ".json":
        parse = json.loads
    else:
        try:
            import yaml
        except ModuleNotFoundError as err:
            raise ValueError(
                f"config file {path} is YAML but PyYAML is not installed; "
                "pip install pyyaml, or use a .toml file"
            ) from err

        def parse(text: str) -> Any:
            return yaml.safe_load(text) or {}

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"config file {path} could not be read: {err}") from err
    try:
        values = parse(text)
    except Exception as err:  # the parse errors of each format
        raise ValueError(f"config file {path} could not be parsed: {err}") from err
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a table of settings")
    if "train" in values and len(values) > 1:
        outside = ", ".join(sorted(str(k) for k in values if k != "train"))
        raise ValueError(
            f"config file {path} has settings both in its [train] table and outside it "
            f"({outside}); put them all in [train], or drop the [train] header"
        )
    values = values.get("train", values)
    if not isinstance(values, dict):
        raise ValueError(f"config file {path}: [train] must be a table of settings")
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    # Unknown keys and wrong types are named with the file they came from.
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(
            f"config file {path}: unknown key(s) {', '.join(unknown)}; "
            f"valid: {', '.join(sorted(names))}"
        )
    check_field_types(TrainConfig, values, f"config file {path}: key")
    return values


def fine_tune_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """The fine-tune defaults (:data:`FINE_TUNE_DEFAULTS`) that apply to settings ``values``
    (a config file's and the given flags' together): those it leaves out, where it starts
    from weights (``init_from``); nothing for a run from scratch.

    Example:
        >>> fine_tune_defaults({"init_from": "multiscale", "lr": 1e-3})
        {'warmup_steps': 100, 'ema_decay': 0.999}
        >>> fine_tune_defaults({"lr": 1e-3})
        {}
    """
    if not values.get("init_from"):
        return {}
    return {k: v for k, v in FINE_TUNE_DEFAULTS.items() if values.get(k) is None}


def merge_config(file_values: dict[str, Any], flag_values: dict[str, Any]) -> TrainConfig:
    """Defaults, overridden by the file's values, overridden by flags that were given (not None).

    A fine-tune (``init_from``) takes :data:`FINE_TUNE_DEFAULTS` for what neither gives.
    """
    merged = dict(file_values)
    merged.update({k: v for k, v in flag_values.items() if v is not None})
    merged.update(fine_tune_defaults(merged))
    return TrainConfig.from_dict(merged).validate()
