"""A model's outputs on a split at two levels, per image (as the study) and per structure (class probabilities and
regression outputs averaged over a structure's views), and their metrics.

Metric names are ``<level>_<metric>_<target>`` with level ``test`` / ``val`` or ``test_struct`` / ``val_struct``, e.g.
``test_r2_band_gap``, ``test_acc_crystal_system``, ``test_struct_r2_band_gap``, ``test_stability_f1``; ``test_score``
is the mean of the two test R² and the two test accuracies.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from crystalvision.core import (
    CLASS_ID,
    SCORE_METRICS,
    TARGETS_CLASSIFICATION,
    TARGETS_REGRESSION,
    EvaluateConfig,
    ModelError,
    StorageError,
    progress,
)
from crystalvision.data import ObjectStore, Splits, load_images
from crystalvision.evaluate import metrics as M
from crystalvision.learn import CrystalNet, ModelSpec, predict_arrays, predict_dihedral, unwrap

log = logging.getLogger(__name__)

CHUNK = 256  # images loaded and predicted at a time (bounded memory, progress logging)


@dataclass
class Level:
    """Labels and model outputs at one level (per image or per structure) of one split."""

    labels: pd.DataFrame
    outputs: dict[str, np.ndarray]


def predict_split(
    model: CrystalNet,
    df: pd.DataFrame,
    store: ObjectStore,
    name: str,
    batch_size: int,
    size: int | None = None,
    dihedral: bool = False,
) -> Level:
    """Load and predict a split's images (``size`` px, default the model's) in chunks, logging progress;
    ``dihedral``: test-time averaging over the 8 in-plane views (``evaluate.tta``)."""
    size = size or unwrap(model).spec.image_size
    forward = predict_dihedral if dihedral else None
    parts: list[dict[str, np.ndarray]] = []
    keys = df["image_key"].tolist()
    for start in range(0, len(keys), CHUNK):
        progress.beat("evaluate", step=f"predict {name}", done=start, total=len(keys))
        images = load_images(store, keys[start : start + CHUNK], size=size)
        beat = functools.partial(progress.beat, "evaluate", step=f"predict {name}")
        parts.append(predict_arrays(model, images, batch_size=batch_size, forward=forward, on_batch=beat))
        log.info("evaluate: predicted %d/%d %s images", min(start + CHUNK, len(keys)), len(keys), name)
    if not parts:
        raise StorageError(f"the {name} split is empty; change the split fractions or select more structures")
    outputs = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return Level(df.reset_index(drop=True), outputs)


def by_structure(level: Level) -> Level:
    """Average regression outputs and class probabilities over each structure's views."""
    ids = level.labels["material_id"].to_numpy()
    outputs = {k: M.group_mean(ids, v)[1] for k, v in level.outputs.items()}
    first = level.labels.drop_duplicates("material_id").set_index("material_id")
    keys = M.group_mean(ids, np.zeros(len(ids)))[0]
    labels = first.loc[keys].reset_index()
    labels["n_views"] = pd.Series(ids).value_counts().loc[keys].to_numpy()
    return Level(labels, outputs)


def check_class_ids(splits: Splits, classes: Mapping[str, list[str]]) -> None:
    """The labels table's class ids must index the model's heads (same snapshot encoders)."""
    for t, names in classes.items():
        for name, df in splits.items():
            if len(df) and int(df[CLASS_ID[t]].max()) >= len(names):
                raise ModelError(
                    f"{name} split has {t} class id {int(df[CLASS_ID[t]].max())} but the model has {len(names)} "
                    f"{t} classes; evaluate with renders of the snapshot the model was trained on"
                )


def predict_levels(model: CrystalNet, splits: Splits, store: ObjectStore, spec: ModelSpec, ecfg: EvaluateConfig):
    """Model outputs per image on test (and val), and their per-structure means: ``{level name: Level}``."""
    tta = ecfg.tta == "dihedral"
    levels = {"test": predict_split(model, splits.test, store, "test", ecfg.batch_size, spec.image_size, tta)}
    if ecfg.include_val and len(splits.val):
        levels["val"] = predict_split(model, splits.val, store, "val", ecfg.batch_size, spec.image_size, tta)
    for name in list(levels):
        levels[f"{name}_struct"] = by_structure(levels[name])
    return levels


def level_metrics(prefix: str, level: Level, stability_threshold: float) -> dict[str, float]:
    """All scalar metrics of one level, named ``<prefix>_<metric>_<target>``."""
    out: dict[str, float] = {}
    lab, pred = level.labels, level.outputs
    for t in TARGETS_REGRESSION:
        out |= M.prefixed(prefix, t, M.regression_metrics(lab[t], pred[t]))
    stab = M.stability_metrics(lab["energy_above_hull"], pred["energy_above_hull"], stability_threshold)
    out |= {f"{prefix}_stability_{k}": v for k, v in stab.items()}
    for t in TARGETS_CLASSIFICATION:
        out |= M.prefixed(prefix, t, M.classification_metrics(lab[CLASS_ID[t]], pred[f"{t}_proba"]))
    return out


def test_score(metrics: Mapping[str, float]) -> float:
    """Mean of each regression head's test R² and each classification head's test accuracy (NaN if one is missing)."""
    parts = [metrics.get(k, math.nan) for k in SCORE_METRICS]
    return float(np.mean(parts))


def model_metrics(levels: Mapping[str, Level], threshold: float) -> dict[str, float]:
    """Every level's metrics plus ``test_score``."""
    metrics: dict[str, float] = {}
    for name, level in levels.items():
        metrics |= level_metrics(name, level, threshold)
    metrics["test_score"] = test_score(metrics)
    return metrics


def class_report(level: Level, target: str, classes: list[str]) -> dict[str, Any]:
    """Classification report, per-class ROC AUC / AP (by class name) and confusion matrix of one head."""
    y = level.labels[CLASS_ID[target]].to_numpy(dtype=int)
    proba = level.outputs[f"{target}_proba"]
    y_pred = proba.argmax(1)
    labels = M.present_labels(y, y_pred)
    return {
        "report": M.classification_report_dict(y, y_pred, classes),
        "report_text": M.classification_report_text(y, y_pred, classes),
        "roc_auc": {classes[k]: v for k, v in M.roc_auc_per_class(y, proba).items()},
        "average_precision": {classes[k]: v for k, v in M.average_precision_per_class(y, proba).items()},
        "absent_classes": [c for k, c in enumerate(classes) if k not in set(y.tolist())],
        "confusion_matrix": {"labels": [classes[k] for k in labels], "matrix": M.confusion(y, y_pred, labels).tolist()},
    }
