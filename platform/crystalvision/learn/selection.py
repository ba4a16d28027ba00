"""When training stops and which epoch's weights are kept: the loop state carried in checkpoints, the selection
criterion (``train.select``: validation loss or score, smoothed over ``train.select_window`` epochs) and the
learning-rate schedule (``train.schedule``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from crystalvision.core import TABLE, CrystalVisionError, TrainConfig

# ---- state carried in checkpoints -----------------------------------------------------------------------------


@dataclass
class LoopState:
    """Training progress carried in every checkpoint."""

    epoch: int = 0  # next epoch to run
    best_val_loss: float = math.inf  # the validation loss at best_epoch
    best_epoch: int = -1  # counted from 0, as the `epoch` metric
    bad_epochs: int = 0
    stopped: bool = False
    resumes: int = 0  # times this run continued from a checkpoint (worker restarts and re-launches)
    history: list[dict[str, float]] = field(default_factory=list)
    best_criterion: float = math.inf  # the smoothed selection criterion at best_epoch (lower is better)
    criteria: list[float] = field(default_factory=list)  # the raw criterion of every epoch

    def update(
        self, epoch: int, val_loss: float, patience: int, criterion: float | None = None, window: int = 1
    ) -> bool:
        """Early stopping after ``epoch`` on the moving mean (``window`` epochs) of ``criterion`` (lower is better;
        default: ``val_loss``): True when it is the best so far."""
        self.criteria.append(val_loss if criterion is None else criterion)
        recent = self.criteria[-window:]
        smoothed = sum(recent) / len(recent)
        best = smoothed < self.best_criterion
        if best:
            self.best_criterion, self.best_val_loss, self.best_epoch, self.bad_epochs = smoothed, val_loss, epoch, 0
        else:
            self.bad_epochs += 1
        self.stopped = self.bad_epochs >= patience
        self.epoch = epoch + 1
        return best


def select_score(metrics: dict[str, float], weights: dict[str, float]) -> float:
    """Mean validation accuracy (class heads) / R² (regression heads, floored at -1) over heads with weight > 0."""
    parts = []
    for head in TABLE:
        if weights.get(head.name, 1.0) > 0:
            if head.is_regression:
                parts.append(max(metrics[f"val_r2_{head.name}"], -1.0))
            else:
                parts.append(metrics[f"val_acc_{head.name}"])
    return sum(parts) / len(parts) if parts else math.nan


def epoch_lr(tcfg: TrainConfig, epoch: int) -> float:
    """The learning rate of ``epoch`` under ``train.schedule`` (cosine: lr to lr/100 over ``train.epochs``)."""
    if tcfg.schedule == "constant" or tcfg.epochs <= 1:
        return tcfg.lr
    floor = tcfg.lr / 100
    return floor + (tcfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * epoch / (tcfg.epochs - 1)))


class NonFiniteLossError(CrystalVisionError):
    """Training diverged: the validation loss is NaN or infinite (no best model exists to save)."""


def check_finite(epoch: int, metrics: dict[str, float]) -> None:
    """Raise :class:`NonFiniteLossError` naming the epoch when the validation loss is NaN or infinite."""
    val_loss = float(metrics["val_loss"])
    if math.isfinite(val_loss):
        return
    train_loss = metrics.get("train_loss", float("nan"))
    raise NonFiniteLossError(
        f"training diverged: validation loss is {val_loss} at epoch {epoch} (train loss {train_loss:.6g}); "
        "lower train.lr or check the labels for NaN/inf values"
    )
