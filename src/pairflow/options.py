"""The constants and option strings of pairflow, each defined once, and their one check.

Option strings are ``Literal`` types: the type checker sees the valid values, and
:func:`check_choice` turns them into a run-time check whose error lists them.

Example:
    >>> check_choice("precision", "bf16", Precision)
    'bf16'
    >>> check_choice("precision", "fp64", Precision)
    Traceback (most recent call last):
    ...
    ValueError: unknown precision 'fp64'; valid: fp32, bf16
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

__all__ = [
    "DEFAULT_TEMPERATURE",
    "LABEL_FREE_TEMPERATURE",
    "default_temperature",
    "default_guidance",
    "MAX_INTERPOLATION_STEPS",
    "NUM_LEVELS",
    "NUM_PAIR_CLASSES",
    "CLASSES_PER_SIDE",
    "PAIR_SHAPE",
    "DatasetName",
    "DEFAULT_DATASET",
    "Layout",
    "DEFAULT_LAYOUT",
    "LABEL_SIDES",
    "num_classes_of",
    "Precision",
    "PRECISIONS",
    "PrecisionOption",
    "LoadPrecisionOption",
    "Arch",
    "Conditioning",
    "Schedule",
    "ModelKind",
    "CouplingMap",
    "Prior",
    "Dequantization",
    "choices",
    "check_choice",
    "MAX_SEED",
    "check_seed",
]

NUM_LEVELS = 256
"""Pixel levels of 8-bit images (0..255): bits/dim is reported on this discrete scale."""

CLASSES_PER_SIDE = 10
"""Classes one side of a label takes: the digits 0..9 (a pair label has one per side)."""

NUM_PAIR_CLASSES = CLASSES_PER_SIDE**2
"""Pair labels are 10 * left digit + right digit, 0..99."""

PAIR_SHAPE = (1, 28, 56)
"""(C, H, W) of an MNIST digit pair: two 28x28 digits side by side."""

DEFAULT_TEMPERATURE = 0.7
"""The CLI's sampling temperature for a given label, and for models without labels."""

LABEL_FREE_TEMPERATURE = 0.8
"""The CLI's sampling temperature where a conditional flow draws its labels from p(y)."""

MAX_INTERPOLATION_STEPS = 100
"""Most images in one latent interpolation row (``pairflow sample --interpolate --steps``).
At 100 neighbouring images of ``multiscale-cond`` already differ by under one grey level on
average (6 levels at 10 steps), so more add nothing to see; the row is then 11,600 pixels
wide at the PNG's 2x scale, and memory grows with every image."""


def default_temperature(label_free: bool, chosen: Mapping[str, float] | None = None) -> float:
    """The CLI's sampling temperature when none is given.

    A model's own defaults come first where a temperature sweep chose them (``chosen``: a
    checkpoint's ``sampling_temperatures``; a shipped model's come from its entry in
    ``weights/index.json``; BENCHMARKS.md, "Sampling temperature of each shipped model"):
    ``{"default": T}`` for its unconditional or given-label samples and ``{"label_free": T}``
    for a conditional flow's samples with labels drawn from its p(y), each key optional.
    Otherwise:
    0.7 where the label is given (the drawn pair is read right more often there: 96% of the
    shipped ``multiscale-cond``'s samples, against 92% at 0.8) and for unconditional models;
    0.8 where a conditional flow draws its labels from its own p(y), the label-free sampler,
    whose FD was best there (the model before the last fine-tune: 8.8 at 0.8 against 10.3 at
    0.7, 10,000 samples; BENCHMARKS.md, "Label-free sampling").

    Example:
        >>> default_temperature(False), default_temperature(label_free=True)
        (0.7, 0.8)
        >>> chosen = {"default": 1.0}  # a model whose sweep chose 1.0 for its given-label samples
        >>> default_temperature(False, chosen), default_temperature(True, chosen)
        (1.0, 0.8)
    """
    own = _chosen(label_free, chosen)
    if own is not None:
        return own
    return LABEL_FREE_TEMPERATURE if label_free else DEFAULT_TEMPERATURE


def _chosen(label_free: bool, chosen: Mapping[str, float] | None) -> float | None:
    """A model's sweep-chosen sampling setting: ``chosen["label_free"]`` for label-free
    draws, else ``chosen["default"]``; None where it has none."""
    key = "label_free" if label_free else "default"
    if chosen and chosen.get(key) is not None:
        return float(chosen[key])
    return None


def default_guidance(label_free: bool, chosen: Mapping[str, float] | None = None) -> float | None:
    """The CLI's classifier-free guidance weight when ``--guidance`` is not given.

    A model's own, where a guidance sweep chose one (``chosen``: a shipped model's
    ``"guidance"`` in ``weights/index.json``, as a loaded checkpoint's ``sampling_guidance``;
    BENCHMARKS.md, "Label dropout and classifier-free guidance"): ``{"default": w}`` for its
    given-label samples and ``{"label_free": w}`` for samples whose label is drawn from its
    p(y), each key optional. Otherwise None: no guidance, the conditional model as trained.
    Only a conditional flow trained with label dropout has such defaults.

    Example:
        >>> default_guidance(False) is None
        True
        >>> chosen = {"default": 0.1, "label_free": 0.15}
        >>> default_guidance(False, chosen), default_guidance(True, chosen)
        (0.1, 0.15)
    """
    return _chosen(label_free, chosen)


DatasetName = Literal["mnist", "fashion-mnist", "cifar10"]
"""The datasets pairflow reads (``--dataset``); :data:`pairflow.data.DATASETS` holds each
one's image shape, class names and files."""

DEFAULT_DATASET = "mnist"
"""The dataset of a run or checkpoint that names none (they predate the others)."""

MAX_SEED = 2**32 - 1
"""The largest ``--seed``: seeds are 0..2**32 - 1 in every command (each derives its
generators' seeds from it, e.g. ``1000 * seed + rank``, which then fit torch's 64 bits)."""


def check_seed(seed: Any, name: str = "seed") -> int:
    """Return ``seed`` if it is a whole number in 0..:data:`MAX_SEED`.

    Raises:
        ValueError: naming ``name``, the value and the valid range.

    Example:
        >>> check_seed(7)
        7
        >>> check_seed(-1)
        Traceback (most recent call last):
        ...
        ValueError: seed must be a whole number in 0..4294967295 (2**32 - 1), got -1
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(
            f"{name} must be a whole number in 0..{MAX_SEED} (2**32 - 1), got {seed!r}"
        )
    return seed


Layout = Literal["pair", "single"]
"""How images are laid out: two side by side (label 10 a + b) or one (label 0..9)."""

DEFAULT_LAYOUT = "pair"
"""The layout of a run, config or checkpoint that names none (they predate single images)."""

LABEL_SIDES = {"pair": 2, "single": 1}
"""Digits in a label per layout: a label has 10 ** sides classes, one digit per side."""


def num_classes_of(layout: str) -> int:
    """Labels a conditional model of ``layout`` knows: 100 pair labels (10 a + b), or 10 classes.

    Example:
        >>> num_classes_of("pair"), num_classes_of("single")
        (100, 10)
    """
    return CLASSES_PER_SIDE ** LABEL_SIDES[check_choice("layout", layout, Layout)]


Precision = Literal["fp32", "bf16"]
"""Compute precision of a model's networks (the flow's maths stays in fp32)."""

PRECISIONS: tuple[str, ...] = get_args(Precision)
"""The compute precisions, in the order the speed probes time them: fp32, bf16."""

PrecisionOption = Literal["fp32", "bf16", "auto"]
"""What a user may ask for to train: ``auto`` is resolved by
:func:`pairflow.precision.choose_precision` (the faster one on this machine)."""

LoadPrecisionOption = Literal["auto", "fp32", "bf16", "saved"]
"""What a user may ask for to run a trained model: ``saved`` is the one it was trained in
(:func:`pairflow.precision.choose_model_precision`)."""

Arch = Literal["mlp", "multiscale", "glow", "tarflow"]
"""Flow architectures: the flattened-vector RealNVP, the convolutional multi-scale one and Glow."""

Conditioning = Literal["embedding", "prior", "both", "mixture"]
"""How a conditional flow uses the pair label (see :class:`~pairflow.flows.FlowConfig`)."""

Schedule = Literal["constant", "cosine"]
"""Learning-rate schedules after warm-up."""

ModelKind = Literal["flow", "vae", "gan"]
"""The model kinds of :mod:`pairflow.models`' registry."""

CouplingMap = Literal["affine", "additive", "spline"]
"""The elementwise map of a flow's couplings (:mod:`pairflow.flows.maps`)."""

Prior = Literal["normal", "mixture"]
"""An unconditional flow's base distribution: N(0, I) or the label-free mixture."""

Dequantization = Literal["uniform", "variational", "gaussian"]
"""How a flow turns 8-bit pixels into continuous data: U[0, 1) noise, Flow++'s q(u | x), or
TarFlow's Gaussian noise in the data's space (the flow then models noisy data)."""


def choices(options: Any) -> tuple[str, ...]:
    """The valid values of a ``Literal`` type (or a tuple of strings, returned as it is)."""
    return tuple(options) if isinstance(options, (tuple, list)) else get_args(options)


def check_choice(name: str, value: Any, options: Any) -> Any:
    """Return ``value`` if it is one of ``options`` (a ``Literal`` type or a tuple).

    Raises:
        ValueError: ``unknown <name> <value>; valid: ...``, listing the valid values.
    """
    valid = choices(options)
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
    return value
