"""Sweep progress on the driver: a Ray Tune callback that turns trial events into :mod:`crystalvision.core.progress`
events (``tune`` k/N trials finished, how many run, the best metric so far).

Tune calls its callbacks in the driver's tuning loop, so the events reach the CLI's display directly. The callback
keeps no state of its own (it counts from the trial list Tune hands it), so a restored sweep reports correctly.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune import Callback

from crystalvision.core import progress

FINISHED = ("TERMINATED", "ERROR")  # ray.tune.experiment.Trial statuses of a trial that will not run again


class TrialProgress(Callback):
    """``tune`` events: trials finished of ``total``, trials running, the best ``metric`` reported so far."""

    def __init__(self, total: int, metric: str, mode: str):
        self.total, self.metric, self.mode = total, metric, mode

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.emit(trials)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any) -> None:
        self.emit(trials)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.emit(trials, ending=trial)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.emit(trials, ending=trial)

    def emit(self, trials: list[Any], ending: Any = None) -> None:
        """``ending``: a trial that just finished (Tune calls before it sets the trial's status)."""
        finished = [t for t in trials if t.status in FINISHED or t is ending]
        running = [t for t in trials if t.status == "RUNNING" and t is not ending]
        info: dict[str, float] = {"running": len(running)}
        best = self.best(trials)
        if best is not None:
            info[f"best_{self.metric}"] = best
        progress.emit("tune", len(finished), self.total, unit="trials", **info)

    def best(self, trials: list[Any]) -> float | None:
        """The best value of ``metric`` among the trials' last reports (None before any)."""
        values = []
        for trial in trials:
            value = (trial.last_result or {}).get(self.metric)
            if isinstance(value, int | float) and math.isfinite(value):
                values.append(float(value))
        if not values:
            return None
        return min(values) if self.mode == "min" else max(values)
