"""Optuna search that a sweep killed mid-upload can still be restored with.

Tune saves a sweep's state as separate files (the experiment state with its trials, the search generator's counter,
the pickled searcher) and uploads them one after another. A driver killed between two uploads leaves an experiment
state that holds a trial the saved searcher never suggested; Ray's ``OptunaSearch`` then fails every restore with a
``KeyError`` on that trial's id, so the sweep can never finish. :class:`ResumableOptunaSearch` instead tells Optuna
about such a trial with the parameters it ran with (from the ``config/...`` fields of Tune's flattened result), so
its scores still guide the search, and logs one WARNING naming the trial.
"""

from __future__ import annotations

import logging

from ray.tune.search.optuna import OptunaSearch

log = logging.getLogger(__name__)


class ResumableOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that adopts a trial it did not suggest instead of failing with ``KeyError``."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self._adopt(trial_id, result):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if self._adopt(trial_id, result):
            super().on_trial_complete(trial_id, result=result, error=error)

    def _adopt(self, trial_id: str, result: dict | None) -> bool:
        """True when Optuna knows ``trial_id`` (now or after adopting it from the parameters in ``result``)."""
        if trial_id in self._ot_trials or trial_id in self._completed_trials:
            return True
        space = self._space if isinstance(self._space, dict) else {}
        params = {name: (result or {}).get(f"config/{name}") for name in space}
        if not space or any(value is None for value in params.values()):
            log.warning("sweep state: trial %s is unknown to the saved search and reports no parameters; "
                        "the search ignores it", trial_id)  # fmt: skip
            self._completed_trials.add(trial_id)
            return False
        log.warning("sweep state: trial %s is unknown to the saved search (the driver was stopped while saving); "
                    "it is added to the search with the parameters it ran with", trial_id)  # fmt: skip
        self._ot_study.enqueue_trial(params, skip_if_exists=False)
        self._ot_trials[trial_id] = self._ot_study.ask(fixed_distributions=space)
        return True
