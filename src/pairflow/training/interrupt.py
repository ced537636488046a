"""Ctrl-C (or a SIGTERM) that lets the current step finish: the loop saves and stops between
steps."""

from __future__ import annotations

import signal
import threading

__all__ = ["GracefulInterrupt", "Stopped"]


class Stopped(KeyboardInterrupt):
    """The run was stopped by a signal (after saving); ``exit_code`` is the shell's 128 + N
    (130 for Ctrl-C, 143 for SIGTERM)."""

    def __init__(self, signal_name: str = "SIGINT") -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.exit_code = 128 + int(getattr(signal, signal_name, signal.SIGINT))


class GracefulInterrupt:
    """Turn the first Ctrl-C (SIGINT) or SIGTERM into a flag the loop checks between steps.

    SIGTERM is what ``kill``, a job scheduler's time limit or a container's stop sends: the
    run saves ``last.pt`` at the step it reached, as for Ctrl-C, instead of dying unsaved.

    A KeyboardInterrupt raised wherever the signal lands can be swallowed (Python ignores
    exceptions raised inside garbage-collection callbacks) or cut an optimiser step in two; a
    flag lets the current step finish, then the loop saves and stops. A second Ctrl-C
    interrupts at once. Only the main thread can install signal handlers; elsewhere this is
    inert and Ctrl-C behaves as usual. Use as a context manager.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}
        if enabled and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def stop(self) -> Stopped:
        """The exception the loop raises once it has finished the step."""
        return Stopped(self.signal_name or "SIGINT")

    def __enter__(self) -> GracefulInterrupt:
        return self

    def __exit__(self, *exc) -> None:
        self.restore()
