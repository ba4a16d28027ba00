"""The selection rule (train.select, train.select_window) and the learning-rate schedule (train.schedule)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from crystalvision.core.config import TrainConfig
from crystalvision.core.targets import SCORE_METRICS, TARGET_COLUMNS
from crystalvision.learn.loop import Engine, fit
from crystalvision.learn.selection import LoopState, epoch_lr, select_score
from tests.learn.test_train import _batch, _cfg, _tiny_net


def _metrics(acc: float, r2: float) -> dict[str, float]:
    return {f"val_{m[len('test_') :]}": (r2 if "_r2_" in m else acc) for m in SCORE_METRICS}


def test_score_selection_survives_one_spike_in_a_regression_loss() -> None:
    """A regression head's loss spikes once while accuracy keeps rising: loss selection stops the run and keeps an
    early epoch; score selection keeps training and keeps the last (best) epoch."""
    losses = [1.0, 0.8, 50.0, 0.9, 0.95, 0.97]  # the spike at epoch 2, then never below 0.8 again
    accs = [0.30, 0.40, 0.45, 0.50, 0.55, 0.60]
    by_loss, by_score = LoopState(), LoopState()
    for epoch, (loss, acc) in enumerate(zip(losses, accs, strict=True)):
        if not by_loss.stopped:
            by_loss.update(epoch, loss, patience=3)
        by_score.update(epoch, loss, 3, -select_score(_metrics(acc, 0.2), {}))
    assert (by_loss.stopped, by_loss.best_epoch) == (True, 1)
    assert (by_score.stopped, by_score.best_epoch) == (False, 5)
    assert by_score.best_val_loss == 0.97 and by_score.best_criterion == pytest.approx(-(0.6 * 2 + 0.2 * 2) / 4)


def test_the_window_smooths_a_single_lucky_epoch() -> None:
    raw = [-0.30, -0.50, -0.32, -0.40, -0.45, -0.48]  # epoch 1 is one lucky draw
    single, smooth = LoopState(), LoopState()
    for epoch, c in enumerate(raw):
        single.update(epoch, 1.0, 10, c)
        smooth.update(epoch, 1.0, 10, c, window=3)
    assert single.best_epoch == 1
    assert smooth.best_epoch == 5  # mean of epochs 3-5 (-0.443) beats epochs 0-1 (-0.40) and 1-3 (-0.407)


def test_val_score_uses_weighted_heads_and_floors_r2() -> None:
    m = _metrics(0.5, -7.0)
    assert select_score(m, {}) == pytest.approx((0.5 * 2 - 1.0 * 2) / 4)
    only_class = {t: 0.0 for t in ("band_gap", "energy_above_hull")}
    assert select_score(m, only_class) == pytest.approx(0.5)


def test_cosine_schedule_runs_from_lr_to_a_hundredth() -> None:
    t = TrainConfig(lr=1e-3, epochs=11, schedule="cosine")
    lrs = [epoch_lr(t, e) for e in range(11)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-5)
    assert all(a > b for a, b in itertools.pairwise(lrs))
    assert epoch_lr(TrainConfig(lr=1e-3, epochs=11), 7) == 1e-3


def test_fit_sets_each_epochs_lr_and_reports_the_score() -> None:
    torch.manual_seed(0)
    tcfg = _cfg(epochs=3, schedule="cosine", select="val_score", patience=5).train
    engine = Engine(_tiny_net(), tcfg, torch.device("cpu"), label_columns=TARGET_COLUMNS)
    seen = []

    def report(metrics, state, best):
        seen.append((metrics["lr"], engine.optimizer.param_groups[0]["lr"], metrics["select_score"]))

    state, best = fit(engine, LoopState(), None, lambda e: [_batch(4, 0.5)], lambda: [_batch(4, 0.5)], report)
    assert [round(lr, 8) for lr, _, _ in seen] == [round(epoch_lr(tcfg, e), 8) for e in range(3)]
    assert all(lr == opt for lr, opt, _ in seen) and all(math.isfinite(s) for _, _, s in seen)
    assert best is not None and state.best_criterion == -max(s for _, _, s in seen)
