"""Small shared helpers: atomic file writes, device and seed handling."""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, ClassVar

from pairflow.options import DEFAULT_LAYOUT, LABEL_SIDES, num_classes_of

__all__ = ["atomic_write", "atomic_save", "resolve_device"]


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write a file atomically: ``write(f)`` fills a temporary file that replaces ``path``.

    The temporary file lives in the same directory and is fsynced before ``os.replace``, so
    a crash, ``kill -9`` or Ctrl-C at any moment leaves either the old file or the new one,
    never a half-written file.

    Arguments:
        path: destination file.
        write: callable receiving a binary file object.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file 0600; give it the mode a plain open() would (0666 & ~umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            _injected_fault(path, f)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


_FAULT_COUNTS: dict[str, int] = {}


def _injected_fault(path: Path, f: IO[bytes]) -> None:
    """Test hook: ``PAIRFLOW_FAULT=ACTION:GLOB[:NTH]`` fails the NTH (default first) atomic
    write of a file whose name matches GLOB, after its temporary file is written:
    ``enospc`` raises "No space left on device", ``kill`` kills the process (SIGKILL).
    The fault suite (tests/test_faults.py) uses it to crash a run at a chosen write."""
    spec = os.environ.get("PAIRFLOW_FAULT")
    if not spec:
        return
    import fnmatch

    action, _, rest = spec.partition(":")
    pattern, _, nth = rest.partition(":")
    if not fnmatch.fnmatch(path.name, pattern):
        return
    _FAULT_COUNTS[spec] = count = _FAULT_COUNTS.get(spec, 0) + 1
    if count != int(nth or 1):
        return
    if action == "kill":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "enospc":
        import errno

        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write ``data`` to ``path`` (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write UTF-8 ``text`` to ``path`` (see :func:`atomic_write`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically (see :func:`atomic_write`)."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def resolve_device(name: str = "auto"):
    """Turn ``auto|cpu|cuda|cuda:N|mps`` into a ``torch.device``; ``auto`` prefers CUDA.

    Raises:
        ValueError: for an unknown name, or ``cuda`` when CUDA is not available.
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here; use cpu")
    return device


def dataclass_from_dict(
    cls, values: dict, what: str | None = None, spell: Callable[[str], str] | None = None
):
    """Build dataclass ``cls`` from a plain dict; unknown keys raise ``ValueError`` listing
    the valid fields (configs are stored as dicts in checkpoints). ``what`` names the keys in
    that message (default: "<class> field"), ``spell`` how a key is written in it (see
    :func:`check_field_types`, which checks the values' types)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    what = what or f"{cls.__name__} field"
    if unknown:
        raise ValueError(
            f"unknown {what}(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}"
        )
    check_field_types(cls, values, what, spell)
    return cls(**values)


_TYPE_NAMES = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}


def check_field_types(
    cls, values: dict, what: str | None = None, spell: Callable[[str], str] | None = None
) -> None:
    """Check each value of ``values`` against the annotation of dataclass ``cls``'s field.

    Fields annotated ``int``, ``float``, ``bool``, ``str`` or ``dict[...]`` (each optionally
    ``| None``) are checked: a bool is not an integer, an integer is a number, and a float must
    be finite (``inf`` and ``nan`` are never a setting). Other annotations are not checked.

    Arguments:
        cls: the dataclass.
        values: field name -> value.
        what: how the message names a key (default ``"<class> field"``).
        spell: how the message spells a key (default: as it is), e.g. ``lr (--lr)``.

    Raises:
        ValueError: naming the key, the value and the expected type, e.g. ``config key lr:
            expected a finite number, got 'fast' (str)``.
    """
    import math
    import types
    import typing

    what = what or f"{cls.__name__} field"
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        hint = hints.get(key)
        if hint is None:
            continue
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        args = typing.get_args(hint) if union else (hint,)
        if value is None and type(None) in args:
            continue
        kinds = [typing.get_origin(a) or a for a in args if a is not type(None)]
        if len(kinds) != 1 or kinds[0] not in (int, float, bool, str, dict):
            continue
        kind = kinds[0]
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and math.isfinite(value)
        else:
            ok = isinstance(value, kind)
        if not ok:
            expected = _TYPE_NAMES.get(kind, "a table of KEY = VALUE")
            if type(None) in args:
                expected += " (or none)"
            name = spell(key) if spell else key
            raise ValueError(
                f"{what} {name}: expected {expected}, got {value!r} ({type(value).__name__})"
            )


class ModelConfig:
    """Mixin for the model config dataclasses (flows and baselines): presets, shape, dicts.

    A subclass is a dataclass with fields ``preset``, ``channels``, ``height`` and ``width``
    and a ``PRESETS`` table: preset name -> field values.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    @property
    def shape(self) -> tuple[int, int, int]:
        """Image shape (C, H, W)."""
        return (self.channels, self.height, self.width)

    @property
    def num_dims(self) -> int:
        """D = C * H * W, the number of dimensions bits/dim divides by."""
        return self.channels * self.height * self.width

    @property
    def label_sides(self) -> int:
        """Digits in a label, one per side of the image: 2 for pairs, 1 for single images
        (``layout``; a config without one is of pairs)."""
        return LABEL_SIDES[getattr(self, "layout", DEFAULT_LAYOUT)]

    @property
    def num_classes(self) -> int:
        """Labels a conditional model knows: 100 pairs (10 a + b) or 10 single-image classes."""
        return num_classes_of(getattr(self, "layout", DEFAULT_LAYOUT))

    @classmethod
    def from_preset(cls, name: str, **overrides: Any):
        """The config of preset ``name`` with field overrides; unknown names raise."""
        if name not in cls.PRESETS:
            raise ValueError(f"unknown preset {name!r}; valid: {', '.join(cls.PRESETS)}")
        return cls.from_dict({**cls.PRESETS[name], "preset": name, **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """Rebuild a config from ``to_dict`` output; unknown keys raise."""
        return dataclass_from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (safe for ``torch.save`` and JSON)."""
        import dataclasses

        return dataclasses.asdict(self)
