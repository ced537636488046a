"""Weights that ship with pairflow, trained with ``pairflow train`` (see BENCHMARKS.md).

``weights/index.json`` lists each model: its file, preset, whether it is conditional, its
measured test bits/dim and the command that trained it.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["WEIGHTS_DIR", "bpd_text", "list_pretrained", "pretrained_path", "shipped_bpd_text"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def list_pretrained() -> dict[str, dict]:
    """Name -> metadata (``file``, ``preset``, ``conditional``, ``test_bpd``, ``command``)."""
    index = WEIGHTS_DIR / "index.json"
    if not index.is_file():
        return {}
    return json.loads(index.read_text(encoding="utf-8"))


def shipped_bpd_text(meta: dict) -> str:
    """A shipped model's measured test bits/dim in words, from its index entry.

    ``"1.1018"`` for an exact likelihood, ``"<= 1.0790 (variational bound)"`` for a flow with
    variational dequantization (index key ``test_bpd_is_bound``), whose number is Flow++'s
    bound and must never be shown as if it were exact.

    Example:
        >>> shipped_bpd_text({"test_bpd": 1.1018})
        '1.1018'
        >>> shipped_bpd_text({"test_bpd": 1.079, "test_bpd_is_bound": True})
        '<= 1.0790 (variational bound)'
    """
    return bpd_text(float(meta.get("test_bpd", float("nan"))), bool(meta.get("test_bpd_is_bound")))


def bpd_text(value: float, bound: bool, digits: int = 4) -> str:
    """A bits/dim in words: ``"1.1018"``, or ``"<= 1.0790 (variational bound)"`` for a bound.

    Example:
        >>> bpd_text(1.0972, bound=True, digits=3)
        '<= 1.097 (variational bound)'
    """
    return f"<= {value:.{digits}f} (variational bound)" if bound else f"{value:.{digits}f}"


def pretrained_path(name: str) -> Path:
    """The checkpoint file of the shipped model ``name``.

    Raises:
        ValueError: unknown name (the message lists the valid ones), or a missing file.
    """
    models = list_pretrained()
    if name not in models:
        valid = ", ".join(sorted(models)) or "(none ship with this build)"
        raise ValueError(f"unknown pretrained model {name!r}; valid names: {valid}")
    path = WEIGHTS_DIR / models[name]["file"]
    if not path.is_file():
        raise ValueError(f"pretrained model {name!r}: its file {path} is missing from the install")
    return path
