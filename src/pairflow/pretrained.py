"""Weights that ship with pairflow, trained with ``pairflow train`` (see BENCHMARKS.md).

``weights/index.json`` lists each model: its file, preset, whether it is conditional, its
measured test bits/dim and the command that trained it. ``weights/sha256.json`` holds the
SHA-256 of every shipped weight file (the flows' and the classifiers'): a shipped file is
read only if its bytes match (:func:`verify_shipped_file`), so a damaged or altered file is
refused by name instead of giving other numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

__all__ = [
    "WEIGHTS_DIR",
    "CHECKSUMS",
    "ChecksumError",
    "bpd_text",
    "file_sha256",
    "list_pretrained",
    "pretrained_path",
    "recorded_sha256",
    "shipped_bpd_text",
    "verify_shipped_file",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
CHECKSUMS = "sha256.json"
"""The file beside the weights that maps each weight file's name to its SHA-256 (hex)."""


class ChecksumError(ValueError):
    """A shipped weight file whose bytes are not the ones pairflow shipped."""


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
    """The checkpoint file of the shipped model ``name``, its bytes checked against
    ``weights/sha256.json``.

    Raises:
        ValueError: unknown name (the message lists the valid ones), or a missing file.
        ChecksumError: the file's bytes do not match its recorded SHA-256.
    """
    models = list_pretrained()
    if name not in models:
        valid = ", ".join(sorted(models)) or "(none ship with this build)"
        raise ValueError(f"unknown pretrained model {name!r}; valid names: {valid}")
    path = WEIGHTS_DIR / models[name]["file"]
    if not path.is_file():
        raise ValueError(f"pretrained model {name!r}: its file {path} is missing from the install")
    return verify_shipped_file(path)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def recorded_sha256() -> dict[str, str]:
    """File name -> SHA-256 of each shipped weight file, from ``weights/sha256.json``."""
    path = WEIGHTS_DIR / CHECKSUMS
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def verify_shipped_file(path: str | os.PathLike) -> Path:
    """``path``, a file in the weights folder, once its bytes match their recorded SHA-256.

    Raises:
        ChecksumError: no SHA-256 is recorded for the file, or its bytes differ (a damaged
            download or install, or a file changed after shipping); the message names the
            file and says to reinstall.

    Example:
        >>> verify_shipped_file(WEIGHTS_DIR / "seed.pt").name
        'seed.pt'
    """
    path = Path(path)
    expected = recorded_sha256().get(path.name)
    if expected is None:
        raise ChecksumError(
            f"shipped weight file {path} has no SHA-256 in {WEIGHTS_DIR / CHECKSUMS}, so it "
            "cannot be checked; reinstall pairflow"
        )
    actual = file_sha256(path)
    if actual != expected:
        raise ChecksumError(
            f"shipped weight file {path} is damaged or was changed: its SHA-256 is "
            f"{actual[:16]}..., the one shipped is {expected[:16]}... "
            f"({WEIGHTS_DIR / CHECKSUMS}); reinstall pairflow"
        )
    return path
