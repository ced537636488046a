"""What a user types into the page, checked: labels, counts, temperatures, seeds, steps.

Each check returns the value as the model functions take it, or raises
:class:`AppInputError` with a message the page shows as it is (the field, the value and what
to give instead). Labels follow the command line's rule
(:func:`pairflow.validation.parse_label`): ``3`` is refused as a pair label, as
``pairflow sample --pair 3`` refuses it.

Example:
    >>> parse_pair("37", conditional=True), parse_pair("any", conditional=True)
    (37, None)
    >>> check_temperature("5")
    Traceback (most recent call last):
    ...
    pairflow.app.inputs.AppInputError: temperature '5': give a number from 0.1 to 1.5
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "AppInputError",
    "MAX_COUNT",
    "MAX_STEPS",
    "TEMPERATURE_RANGE",
    "GUIDANCE_RANGE",
    "is_any",
    "parse_pair",
    "check_count",
    "check_temperature",
    "check_guidance",
    "check_seed",
    "check_steps",
]

MAX_COUNT = 64  # samples per click: 64 take several seconds on one CPU thread
MAX_STEPS = 16  # images in Explore's strip: one row across the page
TEMPERATURE_RANGE = (0.1, 1.5)
"""The temperatures the page takes: below 0.1 every sample looks alike, above 1.5 they are
noise (the command line takes any number > 0)."""
GUIDANCE_RANGE = (-1.0, 5.0)
"""The guidance weights the page's slider spans: -1 is the unconditional model, 0 the
conditional one; past 5 samples saturate (the command line takes -20..20)."""


class AppInputError(ValueError):
    """Bad input from the page; the message is shown to the user as it is."""


def is_any(text: str | int | None) -> bool:
    """Whether a label field asks for no particular label: ``"any"``, blank or None."""
    return text is None or str(text).strip().lower() in ("", "any")


def parse_pair(
    text: str | int | None, conditional: bool, layout: str = "pair", field: str = "pair"
) -> int | None:
    """A pair label ``"00".."99"`` (a class ``"0".."9"`` for single images) -> int, or
    ``"any"`` (or blank) -> None.

    ``"any"`` on a conditional model means a label per image drawn from the model's p(y); an
    unconditional model accepts only ``"any"``.

    Arguments:
        text: what the field holds.
        conditional: whether the model takes a label.
        layout: the model's layout, ``"pair"`` or ``"single"``.
        field: the field's name for the message (``"label A"``).

    Raises:
        AppInputError: not two digits (one for single images), or a label for an
            unconditional model.
    """
    from pairflow.validation import parse_label

    if is_any(text):
        return None
    try:
        label = parse_label(str(text), layout)
    except ValueError as err:
        raise AppInputError(f"{field}: {err}, or 'any'") from None
    if not conditional:
        raise AppInputError(
            f"{field} {str(text).strip()}: this model is unconditional and samples without a "
            "label; choose 'any', or a conditional model such as multiscale-cond"
        )
    return label


def check_count(count: Any) -> int:
    """A number of samples, 1..MAX_COUNT."""
    try:
        n = int(count)
    except (TypeError, ValueError):
        raise AppInputError(f"count {count!r}: give a whole number 1..{MAX_COUNT}") from None
    if not 1 <= n <= MAX_COUNT or n != float(count):
        raise AppInputError(f"count {count!r}: give a whole number 1..{MAX_COUNT}")
    return n


def _in_range(name: str, value: Any, lo: float, hi: float) -> float:
    """``value`` as a finite float in [lo, hi], refused (not clamped) outside it."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and lo <= number <= hi):
        raise AppInputError(f"{name} {value!r}: give a number from {lo:g} to {hi:g}")
    return number


def check_temperature(temperature: Any) -> float:
    """A temperature in :data:`TEMPERATURE_RANGE`, refused (not clamped) outside it."""
    return _in_range("temperature", temperature, *TEMPERATURE_RANGE)


def check_guidance(guidance: Any) -> float:
    """A guidance weight in :data:`GUIDANCE_RANGE`, refused (not clamped) outside it."""
    return _in_range("guidance", guidance, *GUIDANCE_RANGE)


def check_seed(seed: Any) -> int:
    """A seed, a whole number >= 0."""
    try:
        s = int(seed)
    except (TypeError, ValueError):
        raise AppInputError(f"seed {seed!r}: give a whole number >= 0") from None
    if s < 0:
        raise AppInputError(f"seed {seed!r}: give a whole number >= 0")
    return s


def check_steps(steps: Any) -> int:
    """Images in an interpolation strip, 2..MAX_STEPS."""
    try:
        s = int(steps)
    except (TypeError, ValueError):
        raise AppInputError(f"steps {steps!r}: give a whole number 2..{MAX_STEPS}") from None
    if not 2 <= s <= MAX_STEPS:
        raise AppInputError(f"steps {steps!r}: give a whole number 2..{MAX_STEPS}")
    return s
