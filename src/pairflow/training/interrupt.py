"""Ctrl-C that lets the current step finish: the loop saves and stops between steps."""

from __future__ import annotations

import signal
import threading

__all__ = ["GracefulInterrupt"]


class GracefulInterrupt:
    """Turn the first Ctrl-C (SIGINT) into a flag the loop checks between steps.

    A KeyboardInterrupt raised wherever the signal lands can be swallowed (Python ignores
    exceptions raised inside garbage-collection callbacks) or cut an optimiser step in two; a
    flag lets the current step finish, then the loop saves and stops. A second Ctrl-C
    interrupts at once. Only the main thread can install signal handlers; elsewhere this is
    inert and Ctrl-C behaves as usual. Use as a context manager.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.requested = False
        self._previous = None
        if enabled and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def __enter__(self) -> GracefulInterrupt:
        return self

    def __exit__(self, *exc) -> None:
        self.restore()
