"""train.steps_per_epoch: an epoch of a fixed number of optimiser steps, cycling reshuffled passes of the split."""

from __future__ import annotations

import pytest
import torch

from crystalvision.core.targets import TARGET_COLUMNS
from crystalvision.learn.accel import PASS_SEED_STRIDE, DeviceData, cycled
from crystalvision.learn.loop import Engine, fit
from crystalvision.learn.selection import LoopState
from tests.learn.test_train import _batch, _cfg, _tiny_net


def _data(n: int) -> DeviceData:
    rows = [{"image": torch.full((1, 2, 2, 3), i, dtype=torch.uint8)} for i in range(n)]
    return DeviceData(rows, torch.device("cpu"), [])


def test_an_epoch_of_steps_cycles_reshuffled_passes_and_cuts_the_last() -> None:
    data, calls = _data(6), []

    def passes(p: int):
        calls.append(p)
        return data.batches(4, seed=7 + PASS_SEED_STRIDE * p)

    got = list(cycled(passes, 5))  # 6 rows in batches of 4: 2 batches a pass, so passes 0, 1 and half of 2
    assert len(got) == 5 and calls == [0, 1, 2]
    order = [b["image"][:, 0, 0, 0].tolist() for b in got]
    assert sorted(order[0] + order[1]) == list(range(6)) and sorted(order[2] + order[3]) == list(range(6))
    assert order[0] + order[1] != order[2] + order[3]  # each pass its own shuffle
    calls.clear()
    assert len(list(cycled(passes, None))) == 2 and calls == [0]  # no budget: one pass, as before
    assert len(list(cycled(passes, 2))) == 2 and calls == [0, 0]  # a budget of one pass reads one pass


def test_an_empty_split_with_a_step_budget_is_an_error_not_a_hang() -> None:
    with pytest.raises(RuntimeError, match="steps_per_epoch: the training split gave no batch"):
        list(cycled(lambda p: iter(()), 3))


def test_fit_takes_the_same_steps_every_epoch_whatever_the_split_size() -> None:
    """Two training sets, 1 and 3 batches a pass, 4 steps an epoch: both take 4 steps in each of 2 epochs."""
    torch.manual_seed(0)
    for n_batches in (1, 3):
        tcfg = _cfg(epochs=2, patience=5, steps_per_epoch=4).train
        engine = Engine(_tiny_net(), tcfg, torch.device("cpu"), label_columns=TARGET_COLUMNS)
        one_pass = [_batch(4, 0.5) for _ in range(n_batches)]
        state, _ = fit(
            engine,
            LoopState(),
            None,
            lambda e, one_pass=one_pass, steps=tcfg.steps_per_epoch: cycled(lambda p: iter(one_pass), steps),
            lambda: [_batch(4, 0.5)],
            lambda *a: None,
        )
        assert [h["train_steps"] for h in state.history] == [4.0, 4.0]
        assert [h["train_images"] for h in state.history] == [16.0, 16.0]
