"""The table of targets: every head of the model, its kind, label columns and unit.

Everything that names targets derives from :data:`TABLE`: the config's loss weights, the labels table's columns,
the training columns, the model's heads, the evaluation metrics and plots, the prediction columns. Adding a head
means adding a row here (a classification head's class order: ``snapshot.CLASS_ORDER``, sorted by default).
This module imports nothing from crystalvision: it sits at the bottom with ``config.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Target:
    """One model head.

    ``label``: the labels-table column with the true value (regression) or class name (classification);
    ``class_id``: the labels-table column with the class index (classification only); ``unit``: physical unit of a
    regression target (plots, reports).
    """

    name: str
    kind: Literal["regression", "classification"]
    label: str
    class_id: str | None = None
    unit: str = ""
    title: str = ""

    @property
    def is_regression(self) -> bool:
        return self.kind == "regression"

    @property
    def train_column(self) -> str:
        """The column a training batch reads this head's target from (value or class id)."""
        return self.label if self.is_regression else str(self.class_id)

    @property
    def score_metric(self) -> str:
        """The test metric of this head that enters ``test_score`` (R² or accuracy)."""
        return f"test_r2_{self.name}" if self.is_regression else f"test_acc_{self.name}"


TABLE: tuple[Target, ...] = (
    Target("band_gap", "regression", label="band_gap", unit="eV", title="band gap"),
    Target("energy_above_hull", "regression", label="energy_above_hull", unit="eV/atom", title="e above hull"),
    Target("crystal_system", "classification", label="crystal_system", class_id="crystal_system_id",
           title="crystal system"),
    Target("spacegroup", "classification", label="spacegroup_symbol", class_id="spacegroup_id",
           title="space group"),
)  # fmt: skip

BY_NAME: dict[str, Target] = {t.name: t for t in TABLE}
TARGETS_REGRESSION: tuple[str, ...] = tuple(t.name for t in TABLE if t.is_regression)
TARGETS_CLASSIFICATION: tuple[str, ...] = tuple(t.name for t in TABLE if not t.is_regression)
TARGETS: tuple[str, ...] = TARGETS_REGRESSION + TARGETS_CLASSIFICATION

# head -> the training column (regression value or class id): what a Ray Data batch feeds each loss
TARGET_COLUMNS: dict[str, str] = {t.name: t.train_column for t in TABLE if t.name in TARGETS}
# classification head -> class-id column / class-name column of the labels table
CLASS_ID: dict[str, str] = {t.name: str(t.class_id) for t in TABLE if not t.is_regression}
CLASS_NAME: dict[str, str] = {t.name: t.label for t in TABLE if not t.is_regression}
# regression head -> unit
UNITS: dict[str, str] = {t.name: t.unit for t in TABLE if t.is_regression}
# the labels table's per-target columns (values, class names and class ids), in table order
TARGET_LABEL_COLUMNS: tuple[str, ...] = tuple(
    dict.fromkeys([t.label for t in TABLE] + [t.class_id for t in TABLE if t.class_id])
)
# prediction output columns per target: value or class name, then one ``<name>_proba`` per classification head
PREDICTION_COLUMNS: tuple[str, ...] = TARGETS + tuple(f"{t}_proba" for t in TARGETS_CLASSIFICATION)
SCORE_METRICS: tuple[str, ...] = tuple(BY_NAME[t].score_metric for t in TARGETS)


def target(name: str) -> Target:
    """The table row of ``name``."""
    return BY_NAME[name]
