"""Learning curve: the k-fold pipeline at nested subsets of each fold's training structures.

``learning_curve.sizes: [62, 125, 250, 500]`` runs the config's grouped k-fold pipeline once per size with
``split.train_structures`` set to it, and once with every training structure. Each fold keeps its test and
validation structures at every size, so every point is scored on the same held-out structures; the training
structures of a smaller size are a prefix of one seeded order (:func:`crystalvision.data.folds.nested_order`), so the
subsets are nested.
Each point's pooled out-of-fold metrics (model, CGCNN, majority, 1-NN) come from the fold pipeline; this module
collects them into ``learning_curve.json`` and a figure (:func:`plot_curve`, log x with 95 % error bars).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crystalvision.core import ConfigError, PipelineConfig

log = logging.getLogger(__name__)

CURVE_FILE = "learning_curve.json"
FIGURE_FILE = "learning_curve.png"


# ---------------------------------------------------------------------------------------------- sizes


def check_sizes(sizes: Sequence[int], fold_train_counts: Sequence[int]) -> list[int]:
    """Sizes sorted and deduplicated; a ConfigError when one exceeds the smallest fold's training set."""
    if not sizes:
        raise ConfigError("learning_curve.sizes is empty; give the numbers of training structures, e.g. [62, 125]")
    smallest = min(fold_train_counts)
    too_big = [s for s in sizes if s > smallest]
    if too_big:
        raise ConfigError(
            f"learning_curve.sizes {too_big} exceed the smallest fold's training set ({smallest} structures); "
            f"use sizes up to {smallest} (the whole training set is always the last point)"
        )
    return sorted(set(sizes))


# ---------------------------------------------------------------------------------------------- points


@dataclass
class CurvePoint:
    """One size of the curve: its pooled out-of-fold metrics and the fold pipeline run that made them."""

    train_structures: int | None  # None: every training structure of each fold
    n_train_mean: float
    run_id: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    series: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)


@dataclass
class CurveResult:
    """The whole curve: its points, record and figure."""

    name: str
    points: list[CurvePoint]
    record: dict[str, Any]
    figure: Path | None = None


def size_config(cfg: PipelineConfig, n: int | None) -> PipelineConfig:
    """``cfg`` for one point of the curve: ``split.train_structures = n`` and no nested curve."""
    data = cfg.model_dump(mode="json")
    data["split"]["train_structures"] = n
    data["learning_curve"] = {**data["learning_curve"], "sizes": []}
    data["name"] = f"{cfg.name}-n{n if n is not None else 'all'}"
    return PipelineConfig.model_validate(data)


def fold_train_counts(cfg: PipelineConfig) -> list[int]:
    """Training structures of each fold of ``cfg``, uncut (renders first; finished images are reused)."""
    from crystalvision.stages import prepare

    whole = cfg.split.model_copy(update={"train_structures": None})
    return [int(f.train["material_id"].nunique()) for f in prepare(cfg.model_copy(update={"split": whole})).folds]


def run_learning_curve(cfg: PipelineConfig, out_dir: str | Path | None = None) -> CurveResult:
    """Run the k-fold pipeline at every size of ``cfg.learning_curve.sizes`` and at full size; record + figure."""
    from crystalvision.app.pipeline import run_pipeline
    from crystalvision.core import get_settings
    from crystalvision.stages import is_kfold

    if not is_kfold(cfg.split) or cfg.split.protocol != "grouped":
        raise ConfigError("a learning curve needs grouped folds: set split.protocol: grouped and split.folds: K")
    counts = fold_train_counts(cfg)
    sizes = check_sizes(cfg.learning_curve.sizes, counts)
    points: list[CurvePoint] = []
    for n in [*sizes, None]:
        log.info("learning curve %s: %s training structures per fold", cfg.name, n or f"all ({min(counts)}+)")
        result = run_pipeline(size_config(cfg, n))
        mean_n = float(n) if n is not None else float(np.mean(counts))
        series = point_series(result.oof_table, cfg)
        points.append(CurvePoint(n, mean_n, result.run_id, dict(result.metrics), series))
    out = Path(out_dir) if out_dir else get_settings().paths.home / "learning-curves" / cfg.name
    record, figure = write_record(cfg, points, out)
    _log_to_mlflow(cfg, out)
    return CurveResult(cfg.name, points, record, figure)


def _log_to_mlflow(cfg: PipelineConfig, out: Path) -> None:
    """The record and figure as artifacts of one MLflow run named after the curve (best effort)."""
    try:
        import mlflow

        from crystalvision.track import tracking

        tracking.configure_mlflow()
        with mlflow.start_run(run_name=f"{cfg.name}-learning-curve", tags={"learning_curve": "1"}):
            mlflow.log_artifacts(str(out), artifact_path="learning_curve")
    except Exception:  # the record on disk is the result; the UI copy must not fail the curve
        log.warning("could not log the learning curve to MLflow", exc_info=True)


# ---------------------------------------------------------------------------------------------- record

# method label in the figure -> predictor of the pooled out-of-fold table (oof.py)
METHODS = {"image model": "model", "CGCNN": "cgcnn", "trees": "tabular", "majority / mean": "dummy", "1-NN": "1nn"}
HEADS = {
    "crystal_system": "acc",
    "spacegroup": "acc",
    "band_gap": "r2",
    "energy_above_hull": "r2",
}
_NAN_CELL = {"value": math.nan, "lo": math.nan, "hi": math.nan}


def point_series(table: pd.DataFrame | None, cfg: PipelineConfig) -> dict[str, dict[str, dict[str, float]]]:
    """Method label -> head -> pooled value and 95 % bootstrap interval over structures (NaN where absent)."""
    from crystalvision.evaluate import oof

    ecfg = cfg.evaluate
    series: dict[str, dict[str, dict[str, float]]] = {}
    for label, predictor in METHODS.items():
        got = {}
        if table is not None and predictor in oof.predictors(table):
            got = oof.intervals(table, predictor, n_resamples=ecfg.bootstrap_resamples, seed=ecfg.bootstrap_seed)
        series[label] = {
            head: {k: got.get(f"{metric}_{head}", _NAN_CELL).get(k, math.nan) for k in _NAN_CELL}
            for head, metric in HEADS.items()
        }
    return series


def curve_record(cfg: PipelineConfig, points: Sequence[CurvePoint]) -> dict[str, Any]:
    """The JSON record: per point and method, every head's pooled value and 95 % interval, plus its pooled
    metrics (model against each baseline: paired differences with their intervals)."""
    rows = []
    for p in points:
        rows.append(
            {
                "train_structures": p.train_structures,
                "n_train_mean": p.n_train_mean,
                "run_id": p.run_id,
                "series": p.series,
                "metrics": {k: v for k, v in p.metrics.items() if k.startswith("pooled") or k == "n_folds"},
            }
        )
    return {
        "pipeline": cfg.name,
        "config_hash": cfg.config_hash(),
        "sizes": [p.train_structures for p in points],
        "heads": HEADS,
        "bootstrap": "95 % percentile interval over structures, seed-averaged metric per resample",
        "points": rows,
    }


def plot_curve(record: Mapping[str, Any], path: str | Path) -> Path:
    """One panel per head: pooled metric against training structures (log x), one line per method, 95 % bars."""
    from crystalvision.evaluate import plots

    return plots.learning_curve_plot(record, path)


def points_from_runs(cfg: PipelineConfig, runs: Mapping[int | None, str]) -> list[CurvePoint]:
    """Curve points rebuilt from finished k-fold parent runs (size -> MLflow run id): their pooled metrics and
    ``evaluation/oof_predictions.parquet``. Records a curve whose later sizes did not run (stopped, or too long)."""
    import tempfile

    import mlflow

    from crystalvision.track import tracking

    tracking.configure_mlflow()
    client = mlflow.MlflowClient()
    points = []
    for n, run_id in sorted(runs.items(), key=lambda kv: math.inf if kv[0] is None else kv[0]):
        run = client.get_run(run_id)
        if run.data.tags.get("kfold") != "parent":
            raise ConfigError(f"run {run_id} is not a k-fold parent run (tag kfold=parent); give the curve point's run")
        with tempfile.TemporaryDirectory() as tmp:
            table = pd.read_parquet(client.download_artifacts(run_id, "evaluation/oof_predictions.parquet", tmp))
        n_train = float(n) if n is not None else float(run.data.metrics.get("n_train_structures_mean", math.nan))
        points.append(CurvePoint(n, n_train, run_id, dict(run.data.metrics), point_series(table, cfg)))
    return points


def write_record(cfg: PipelineConfig, points: Sequence[CurvePoint], out: str | Path) -> tuple[dict[str, Any], Path]:
    """``learning_curve.json`` and its figure in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = curve_record(cfg, points)
    (out / CURVE_FILE).write_text(json.dumps(record, indent=1, default=float))
    return record, plot_curve(record, out / FIGURE_FILE)
