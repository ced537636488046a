"""Recipes: a model's whole training as stages of ``pairflow train`` settings in one TOML file.

A shipped model is rarely one run: ``multiscale`` was trained from scratch, then fine-tuned
with variational dequantization added, then again with the label-free mixture prior. A recipe
writes that lineage down so that one command re-runs it::

    pairflow train --recipe recipes/multiscale.toml --out runs/multiscale

The file::

    description = "what the recipe makes"

    [defaults]            # settings every stage starts from (optional)
    preset = "multiscale"

    [[stage]]
    name = "pretrain"     # letters, digits, - and _; unique
    time_budget = 60.0    # any key of a --config file (TrainConfig), but not out

    [[stage]]
    name = "variational-dequantization"
    init_from = "previous"        # or an earlier stage's name, a run folder or a shipped model
    model_overrides = { dequantization = "variational" }

Stage ``i`` trains in ``OUT/stage-i-NAME/``; ``OUT/recipe.json`` records which stages have
finished, so the same command run again keeps them and resumes the running one (``--resume``
of its folder: bit-exact); the last stage's model is copied to ``OUT/final.pt``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pairflow.training.config import TrainConfig
from pairflow.utils import atomic_write_text, check_field_types

__all__ = [
    "FINAL",
    "STATE",
    "Recipe",
    "RecipeError",
    "Stage",
    "load_recipe",
    "plan_stages",
    "read_state",
    "recipe_sha256",
    "stage_folder",
    "write_state",
]

STATE = "recipe.json"
"""The file in a recipe's output folder that records the recipe, its overrides and progress."""
FINAL = "final.pt"
"""The last stage's model, copied into the output folder once every stage has finished."""
PREVIOUS = "previous"
_TOP_KEYS = ("description", "defaults", "stage")
_STAGE_KEYS = ("name", "about", "init_from")
_NOT_IN_RECIPES = ("out",)  # the recipe run decides where each stage trains
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class RecipeError(ValueError):
    """A recipe file that cannot be run as written; the message names the file and the key."""


@dataclass(frozen=True)
class Stage:
    """One stage of a recipe: a name, what it does in words, and its training settings.

    Arguments:
        index: its position, counted from 1.
        name: its name, unique in the recipe.
        settings: TrainConfig keys -> values (the recipe's defaults, then the stage's own).
        init_from: ``None`` (from scratch), the name of an earlier stage, or a run folder,
            checkpoint or shipped model name.
        about: one line on what the stage does (optional).
    """

    index: int
    name: str
    settings: dict[str, Any]
    init_from: str | None = None
    about: str = ""


@dataclass(frozen=True)
class Recipe:
    """A recipe file, read and checked: its stages in order.

    Example:
        >>> recipe = load_recipe("recipes/multiscale.toml")  # doctest: +SKIP
        >>> [s.name for s in recipe.stages]  # doctest: +SKIP
        ['pretrain', 'variational-dequantization', 'mixture-prior']
    """

    path: Path
    description: str
    stages: tuple[Stage, ...]
    sha256: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)

    def stage(self, name: str) -> Stage:
        """The stage called ``name``; RecipeError naming the valid ones otherwise."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        valid = ", ".join(s.name for s in self.stages)
        raise RecipeError(f"recipe {self.path} has no stage {name!r}; its stages: {valid}")


def recipe_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a recipe file's bytes (what ``recipe.json`` pins a run to)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _settings(values: dict[str, Any], where: str) -> dict[str, Any]:
    """``values`` with ``-`` spelled ``_``, once every key is a TrainConfig field of the right
    type and none is one a recipe may not set."""
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    for key in values:
        if key in _NOT_IN_RECIPES:
            raise RecipeError(
                f"{where}: {key!r} cannot be set in a recipe; each stage trains in "
                "OUT/stage-N-NAME of the command's --out"
            )
        if key not in names:
            valid = ", ".join(sorted(names - set(_NOT_IN_RECIPES)))
            raise RecipeError(f"{where}: unknown key {key!r}; valid: {valid}")
    try:
        check_field_types(TrainConfig, values, f"{where}: key")
    except ValueError as err:
        raise RecipeError(str(err)) from err
    return values


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read and check a recipe file (TOML).

    Every stage is checked here, before anything trains: unknown keys, wrong types, bad
    values (as ``pairflow train`` would refuse them), duplicate or missing names, and an
    ``init_from`` naming the stage itself or a later one.

    Arguments:
        path: the ``.toml`` file.

    Returns:
        The :class:`Recipe`.

    Raises:
        RecipeError: naming the file, the stage and the key at fault.
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist")
    if path.suffix.lower() != ".toml":
        raise RecipeError(f"recipe {path}: a recipe is a .toml file, got {path.suffix!r}")
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        text = path.read_text(encoding="utf-8")
        values = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise RecipeError(f"recipe {path} could not be read: {err}") from err
    unknown = sorted(set(values) - set(_TOP_KEYS))
    if unknown:
        raise RecipeError(
            f"recipe {path}: unknown top-level key(s) {', '.join(unknown)}; valid: "
            f"{', '.join(_TOP_KEYS)} (stage settings go in [[stage]] tables, shared ones in "
            "[defaults])"
        )
    description = values.get("description", "")
    if not isinstance(description, str):
        raise RecipeError(f"recipe {path}: description must be a string")
    defaults = values.get("defaults", {})
    if not isinstance(defaults, dict):
        raise RecipeError(f"recipe {path}: [defaults] must be a table of settings")
    if "init_from" in defaults:
        raise RecipeError(f"recipe {path}: init_from belongs to a stage, not to [defaults]")
    defaults = _settings(defaults, f"recipe {path} [defaults]")
    raw = values.get("stage", [])
    if not isinstance(raw, list) or not raw:
        raise RecipeError(
            f"recipe {path} has no stages: add at least one [[stage]] table with a name"
        )
    stages: list[Stage] = []
    names = [s.get("name") if isinstance(s, dict) else None for s in raw]
    for index, table in enumerate(raw, start=1):
        where = f"recipe {path}, stage {index}"
        if not isinstance(table, dict):
            raise RecipeError(f"{where}: a stage must be a [[stage]] table")
        name = table.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise RecipeError(
                f'{where}: needs a name of letters, digits, - and _ (name = "pretrain"), '
                f"got {name!r}"
            )
        where = f"recipe {path}, stage {index} ({name})"
        if names.count(name) > 1:
            raise RecipeError(f"{where}: the name {name!r} is used by more than one stage")
        about = table.get("about", "")
        if not isinstance(about, str):
            raise RecipeError(f"{where}: about must be a string")
        init_from = table.get("init_from")
        if init_from is not None:
            if not isinstance(init_from, str) or not init_from:
                raise RecipeError(f"{where}: init_from must be a string, got {init_from!r}")
            if init_from == PREVIOUS and index == 1:
                raise RecipeError(f"{where}: init_from = 'previous' in the first stage")
            if init_from == name:
                raise RecipeError(f"{where}: init_from names the stage itself")
            if init_from in names[index:]:
                raise RecipeError(
                    f"{where}: init_from = {init_from!r} names a later stage; a stage can "
                    "start only from one that comes before it"
                )
        own = {k: v for k, v in table.items() if k not in _STAGE_KEYS}
        settings = {**defaults, **_settings(own, where)}
        if "model_overrides" in defaults and "model_overrides" in own:
            settings["model_overrides"] = {**defaults["model_overrides"], **own["model_overrides"]}
        stage = Stage(index, name, settings, init_from, about)
        try:
            stage_config(stage, out=".")
        except ValueError as err:
            raise RecipeError(f"{where}: {err}") from err
        stages.append(stage)
    return Recipe(path, description, tuple(stages), hashlib.sha256(text.encode()).hexdigest(),
                  defaults)  # fmt: skip


def stage_folder(out: str | os.PathLike, stage: Stage) -> Path:
    """Where ``stage`` trains: ``OUT/stage-i-NAME``."""
    return Path(out) / f"stage-{stage.index}-{stage.name}"


def stage_config(
    stage: Stage,
    out: str | os.PathLike,
    overrides: dict[str, Any] | None = None,
    model_overrides: dict[str, Any] | None = None,
    init_from: str | None = None,
) -> TrainConfig:
    """The checked TrainConfig of ``stage`` in a recipe run into ``out``.

    Arguments:
        stage: the stage.
        out: the recipe run's folder.
        overrides: TrainConfig keys set for every stage (``--recipe-set``).
        model_overrides: model config fields set for every stage (``--set``).
        init_from: the resolved checkpoint or run folder the stage starts from.
    """
    values = {**stage.settings, **(overrides or {})}
    if model_overrides:
        values["model_overrides"] = {**values.get("model_overrides", {}), **model_overrides}
    values["out"] = str(stage_folder(out, stage))
    values["init_from"] = init_from
    return TrainConfig.from_dict(values).validate()


def plan_stages(
    recipe: Recipe,
    out: str | os.PathLike,
    overrides: dict[str, Any] | None = None,
    model_overrides: dict[str, Any] | None = None,
) -> list[tuple[Stage, TrainConfig]]:
    """Every stage with the TrainConfig it trains with in ``out``: ``init_from`` resolved to
    the earlier stage's folder (``previous`` or its name), else kept as written.

    Raises:
        RecipeError: an override is unknown, of the wrong type or a bad value for a stage.
    """
    overrides = _settings(overrides or {}, "--recipe-set") if overrides else {}
    if "init_from" in overrides:
        raise RecipeError("--recipe-set init_from: where a stage starts is the recipe's to say")
    planned = []
    for stage in recipe.stages:
        source = stage.init_from
        if source == PREVIOUS:
            source = str(stage_folder(out, recipe.stages[stage.index - 2]))
        elif source in {s.name for s in recipe.stages}:
            source = str(stage_folder(out, recipe.stage(source)))
        try:
            config = stage_config(stage, out, overrides, model_overrides, source)
        except ValueError as err:
            raise RecipeError(f"recipe {recipe.path}, stage {stage.index} ({stage.name}) "
                              f"with the command's overrides: {err}") from err  # fmt: skip
        planned.append((stage, config))
    return planned


def read_state(out: str | os.PathLike) -> dict[str, Any] | None:
    """The recipe run's record in ``out`` (``recipe.json``), or None where there is none."""
    path = Path(out) / STATE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RecipeError(f"{path} could not be read ({err}); it is not a recipe run") from err
    if not isinstance(state, dict) or not isinstance(state.get("finished"), list):
        raise RecipeError(f"{path} is not a recipe run's record")
    return state


def write_state(out: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write the recipe run's record into ``out`` atomically."""
    return atomic_write_text(Path(out) / STATE, json.dumps(state, indent=2) + "\n")
