"""Progress bars for long commands: tqdm on a terminal, nothing otherwise.

Library functions that take a while (sampling 10,000 pairs, classifier features, the
real-vs-real floor) accept ``progress``, a :data:`ProgressFactory`: called with a total and
a description, it returns a bar with ``update(n)`` and ``close()``. ``None`` means no bar,
so library calls stay silent unless a command asks for bars.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Protocol

__all__ = ["Bar", "ProgressFactory", "bars", "open_bar"]


class Bar(Protocol):
    """What a progress bar must do: count finished units, then close."""

    def update(self, n: int = 1) -> object: ...

    def close(self) -> None: ...


ProgressFactory = Callable[[int, str], Bar]


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def open_bar(progress: ProgressFactory | None, total: int, desc: str) -> Bar:
    """``progress(total, desc)``, or a bar that does nothing when ``progress`` is None."""
    return _NoBar() if progress is None else progress(total, desc)


def bars(enabled: bool | None = None, unit: str = "pair") -> ProgressFactory | None:
    """A factory of tqdm bars on stderr, or None (no bars).

    Arguments:
        enabled: True or False; None (default): only when stderr is a terminal, so logs and
            pipes get no bar noise.
        unit: what the bars count.

    Example:
        >>> bars(enabled=False) is None
        True
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None

    def factory(total: int, desc: str) -> Bar:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, mininterval=0.5)

    return factory
