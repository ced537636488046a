"""The training progress bar: batches of the epoch, or the time budget when one is set.

With ``--time-budget`` the run stops on the clock, usually long before ``--epochs`` is
reached, so a bar of batches (``epoch 1/100``, "90 minutes left") would be wrong twice:
the bar then counts seconds of the budget instead, and its description says which epoch
and step the run is at.
"""

from __future__ import annotations

import time


class TimeBudgetBar:
    """A tqdm bar over the seconds of a time budget, advanced by ``update()`` after each step.

    Arguments:
        budget_minutes: the run's ``time_budget``.
        start_time: ``time.perf_counter()`` when the budget started counting.
        epoch: the current epoch (0-based); shown with the step in the description.
        step: the optimiser step at the bar's start.

    Example:
        >>> bar = TimeBudgetBar(4.0, time.perf_counter(), epoch=0, step=0, disable=True)
        >>> bar.update(1)
        >>> bar.close()
    """

    def __init__(
        self,
        budget_minutes: float,
        start_time: float,
        epoch: int,
        step: int,
        disable: bool = False,
    ) -> None:
        from tqdm.auto import tqdm

        self.start_time = start_time
        self.epoch = epoch
        self.step = step
        self.total = 60.0 * budget_minutes
        self._bar = tqdm(
            total=round(self.total),
            initial=min(round(self._elapsed()), round(self.total)),
            desc=self._describe(),
            unit="s",
            bar_format="{desc} {percentage:3.0f}%|{bar}| {n}/{total} s of the time budget{postfix}",
            mininterval=1.0,
            leave=True,
            disable=disable,
        )

    def _elapsed(self) -> float:
        return time.perf_counter() - self.start_time

    def _describe(self) -> str:
        return f"epoch {self.epoch + 1}, step {self.step}"

    def update(self, steps: int = 1) -> None:
        """Count ``steps`` optimiser steps and move the bar to the time spent so far."""
        self.step += steps
        target = min(round(self._elapsed()), self._bar.total)
        self._bar.set_description_str(self._describe(), refresh=False)
        if target > self._bar.n:
            self._bar.update(target - self._bar.n)

    def set_postfix(self, **fields) -> None:
        self._bar.set_postfix(**fields)

    def close(self) -> None:
        self._bar.close()


def training_bar(
    *,
    epoch: int,
    epochs: int,
    steps_per_epoch: int,
    batch_in_epoch: int,
    step: int,
    time_budget: float | None,
    start_time: float,
):
    """The bar for one epoch: of the time budget when there is one, else of its batches."""
    if time_budget is not None:
        return TimeBudgetBar(time_budget, start_time, epoch=epoch, step=step)
    from tqdm.auto import tqdm

    return tqdm(
        total=steps_per_epoch,
        desc=f"epoch {epoch + 1}/{epochs}",
        initial=batch_in_epoch,
        unit="batch",
        mininterval=1.0,
        leave=True,
    )
