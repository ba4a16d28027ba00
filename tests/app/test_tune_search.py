"""A sweep whose saved searcher predates a trial in its saved experiment state (driver killed between uploads)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from crystalvision.app.tunesearch import ResumableOptunaSearch

SPACE = {"lr": tune.loguniform(1e-4, 1e-2), "w_band_gap": tune.uniform(0.5, 2.0)}


def _saved_before_second_trial(cls: type[OptunaSearch], path: Path) -> OptunaSearch:
    """A searcher that suggested trial ``a`` only, saved, and restored into a fresh one (as ``Tuner.restore`` does)."""
    first = _as_tune_makes_it(cls)
    first.suggest("a")
    first.save(str(path))
    restored = _as_tune_makes_it(cls)
    restored.restore(str(path))
    return restored


def _as_tune_makes_it(cls: type[OptunaSearch]) -> OptunaSearch:
    """Built as tune.py builds it; the Tuner then hands it the param space."""
    searcher = cls(metric="val_loss", mode="min", seed=0)
    searcher.set_search_properties(None, None, SPACE)
    return searcher


def _result(loss: float, it: int) -> dict:
    return {"val_loss": loss, "training_iteration": it, "config/lr": 3e-3, "config/w_band_gap": 1.25}


def test_plain_optuna_search_fails_on_a_trial_it_did_not_suggest(tmp_path: Path) -> None:
    """The fault itself: Ray's searcher cannot take a result of a trial restored from the experiment state."""
    with pytest.raises(KeyError):
        _saved_before_second_trial(OptunaSearch, tmp_path / "s.pkl").on_trial_result("b", _result(0.9, 1))


def test_an_unknown_trial_is_adopted_with_the_parameters_it_ran_with(tmp_path: Path, caplog) -> None:
    searcher = _saved_before_second_trial(ResumableOptunaSearch, tmp_path / "s.pkl")
    with caplog.at_level(logging.WARNING, "crystalvision.app.tunesearch"):
        searcher.on_trial_result("b", _result(0.9, 1))
        searcher.on_trial_complete("b", _result(0.7, 2))
    ours = [r.getMessage() for r in caplog.records if r.name == "crystalvision.app.tunesearch"]
    assert len(ours) == 1 and "trial b" in ours[0], "one WARNING naming the trial"
    done = [t for t in searcher._ot_study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 1 and done[0].value == pytest.approx(0.7)
    assert done[0].params == pytest.approx({"lr": 3e-3, "w_band_gap": 1.25}), "Optuna learns from what it ran"
    assert searcher.suggest("c") is not None, "the search goes on"


def test_an_unknown_trial_without_parameters_is_ignored_once(tmp_path: Path) -> None:
    searcher = _saved_before_second_trial(ResumableOptunaSearch, tmp_path / "s.pkl")
    searcher.on_trial_complete("b", None, error=True)
    searcher.on_trial_complete("b", None, error=True)
    assert all(t.state.name != "COMPLETE" for t in searcher._ot_study.trials)
