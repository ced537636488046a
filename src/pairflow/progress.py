"""Progress bars for long commands: tqdm on a terminal, nothing otherwise.

Library functions that take a while (sampling 10,000 pairs, classifier features, the
real-vs-real floor) accept ``progress``, a :data:`ProgressFactory`: called with a total and
a description, it returns a bar with ``update(n)`` and ``close()``. ``None`` means no bar,
so library calls stay silent unless a command asks for bars.
"""

from __future__ import annotations

import os
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

        # A terminal that reports no size (a pseudo-terminal nobody sized) would get no bar
        # from tqdm (zero columns, and no row to draw on): give it a standard 80 x 24 there.
        columns, lines = _stderr_size()
        return tqdm(
            total=total, desc=desc, unit=unit, mininterval=0.5,
            ncols=None if columns else 80, nrows=None if lines else 24,
        )  # fmt: skip

    return factory


def _stderr_size() -> tuple[int, int]:
    """(columns, lines) of the terminal on stderr; 0 for what it does not report."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):  # not a terminal, or no file descriptor
        return 0, 0
    return size.columns, size.lines
