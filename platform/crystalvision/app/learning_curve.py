"""Learning curve: the grouped k-fold pipeline at nested subsets of each fold's structures, one record per point.

``learning_curve.sizes: [62, 125, 250, 500]`` runs the config's grouped k-fold pipeline once per size and once
with every structure (``all``). What a point of size n is:

- **Structures.** Each fold's training + validation structures are cut to n together, in the fold's own train:val
  ratio (``split.train_structures = n``, :func:`crystalvision.data.folds.subset_folds`): the image model trains on
  the training part and keeps the weights of its best validation epoch; CGCNN trains and stops on the same parts;
  majority, 1-NN and the trees are fit on all n (what the image model saw). Each part is a prefix of one seeded,
  class-balanced order, so a smaller point's structures are a subset of a larger one's.
- **Test.** The test folds are never cut: every point is scored on the same structures, each once, pooled out of
  fold, per structure (the model's views averaged), with 95 % bootstrap intervals over structures.
- **Budget.** Every point trains the same rendered views for ``train.epochs`` epochs of the same number of optimiser
  steps, the full fold's one pass (``train.steps_per_epoch``: mean training images of the full folds over batch
  size x workers, smaller sets cycle through reshuffled passes), with no early stopping (``train.patience`` set to
  ``train.epochs``): a fixed number of optimiser steps at every size.

Each point's record (:mod:`crystalvision.app.curve_record`) is written into the output folder when its k-fold run
finishes; a rerun skips a point whose record is there (the same point config), and a killed run resumes its fold
trainings from their checkpoints (the pipeline names each training by its content). ``--size`` runs some points
only (one command per point keeps each part short); every run merges the point records present into
``learning_curve.json`` and its figure.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from crystalvision.app import curve_record as cr
from crystalvision.core import ConfigError, PipelineConfig

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- sizes and budget


def check_sizes(sizes: Sequence[int], fold_seen_counts: Sequence[int]) -> list[int]:
    """Sizes sorted and deduplicated; a ConfigError when one exceeds the smallest fold's training + validation
    structures."""
    if not sizes:
        raise ConfigError("learning_curve.sizes is empty; give numbers of structures per fold, e.g. [62, 125]")
    smallest = min(fold_seen_counts)
    too_big = [s for s in sizes if s > smallest]
    if too_big:
        raise ConfigError(
            f"learning_curve.sizes {too_big} exceed the smallest fold's training + validation structures "
            f"({smallest}); use sizes up to {smallest} (every structure is always the last point)"
        )
    return sorted(set(sizes))


def parse_points(wanted: Sequence[str] | None, sizes: Sequence[int]) -> list[int | None]:
    """``--size`` values (``62``, ``all``) -> the points to run, in curve order; all of them when none are given."""
    every: list[int | None] = [*sizes, None]
    if not wanted:
        return every
    allowed = {cr.point_key(n): n for n in every}
    unknown = [w for w in wanted if w not in allowed]
    if unknown:
        raise ConfigError(f"--size {unknown} is not a point of this curve; choose from {list(allowed)}")
    return [n for n in every if cr.point_key(n) in set(wanted)]


def steps_per_epoch(cfg: PipelineConfig, train_images: Sequence[int]) -> int:
    """The full folds' one pass: mean training images per fold over batch size x workers, rounded up."""
    per_step = cfg.train.batch_size * cfg.train.num_workers
    return max(1, math.ceil(float(np.mean(train_images)) / per_step))


def size_config(cfg: PipelineConfig, n: int | None, steps: int) -> PipelineConfig:
    """``cfg`` for one point: ``split.train_structures = n``, ``steps`` optimiser steps per epoch, no early stopping
    (patience = epochs), no nested curve."""
    data = cfg.model_dump(mode="json")
    data["split"]["train_structures"] = n
    data["train"] |= {"steps_per_epoch": steps, "patience": cfg.train.epochs}
    data["learning_curve"] = {**data["learning_curve"], "sizes": []}
    data["name"] = f"{cfg.name}-n{cr.point_key(n)}"
    return PipelineConfig.model_validate(data)


def budget(cfg: PipelineConfig, steps: int) -> dict[str, Any]:
    """What every point trains at (the same for all)."""
    t = cfg.train
    return {
        "views_per_structure": cfg.render.views_per_structure,
        "image_size": cfg.render.image_size,
        "epochs": t.epochs,
        "steps_per_epoch": steps,
        "batch_size": t.batch_size,
        "num_workers": t.num_workers,
        "optimiser_steps": t.epochs * steps,
        "early_stopping": "none (patience = epochs)",
        "kept_weights": f"best validation epoch by {t.select}",
        "seeds": list(t.seeds or [t.seed]),
    }


# ---------------------------------------------------------------------------------------------- running


@dataclass
class CurveResult:
    """A curve run: the merged record (every point present), its files, and which points ran, were kept or miss."""

    record: dict[str, Any]
    record_path: Path
    figure: Path
    ran: list[str]
    kept: list[str]
    missing: list[str]

    def summary(self) -> dict[str, Any]:
        return self.record | {"record": str(self.record_path), "figure": str(self.figure), "ran": self.ran,
                              "kept": self.kept, "missing": self.missing}  # fmt: skip


def full_folds(cfg: PipelineConfig) -> list[Any]:
    """Every fold of ``cfg`` uncut (renders first; finished images are reused)."""
    from crystalvision.stages import prepare

    whole = cfg.split.model_copy(update={"train_structures": None})
    return prepare(cfg.model_copy(update={"split": whole})).folds


def default_out(cfg: PipelineConfig) -> Path:
    from crystalvision.core import get_settings

    return get_settings().paths.home / "learning-curves" / cfg.name


def run_learning_curve(
    cfg: PipelineConfig, out_dir: str | Path | None = None, points: Sequence[str] | None = None
) -> CurveResult:
    """Run the points of ``cfg``'s curve (``points``: some of them, by ``--size`` value) that have no record in
    ``out_dir`` yet, one k-fold pipeline each; merge every point record there into the curve record and figure."""
    from crystalvision.data import subset_folds
    from crystalvision.stages import is_kfold

    if not is_kfold(cfg.split) or cfg.split.protocol != "grouped":
        raise ConfigError("a learning curve needs grouped folds: set split.protocol: grouped and split.folds: K")
    if cfg.split.train_structures is not None:
        raise ConfigError("a learning curve sets split.train_structures itself; remove it from the config")
    folds = full_folds(cfg)
    sizes = check_sizes(cfg.learning_curve.sizes, [f.train["material_id"].nunique() + f.val["material_id"].nunique()
                                                    for f in folds])  # fmt: skip
    steps = steps_per_epoch(cfg, [len(f.train) for f in folds])
    out = Path(out_dir) if out_dir else default_out(cfg)
    ran, kept = [], []
    for n in parse_points(points, sizes):
        pcfg = size_config(cfg, n, steps)
        done = cr.point_path(out, n)
        if done.exists():
            _check_kept(done, pcfg)
            kept.append(cr.point_key(n))
            log.info("learning curve %s: point %s has its record (%s); skipped", cfg.name, cr.point_key(n), done)
            continue
        log.info("learning curve %s: point %s (%d optimiser steps per epoch)", cfg.name, cr.point_key(n), steps)
        cr.write_point(out, run_point(cfg, pcfg, n, subset_folds(folds, pcfg.split), steps))
        ran.append(cr.point_key(n))
    present = cr.read_points(out)
    record = cr.merge(present)
    record_path, figure = cr.write_curve(record, out)
    have = {cr.point_key(p["train_structures"]) for p in present}
    missing = [k for k in map(cr.point_key, [*sizes, None]) if k not in have]
    _log_to_mlflow(cfg, out)
    return CurveResult(record, record_path, figure, ran, kept, missing)


def _check_kept(path: Path, pcfg: PipelineConfig) -> None:
    """A point record made with another config is an error (the curve would mix two protocols)."""
    import json

    if json.loads(path.read_text()).get("config_hash") != pcfg.config_hash():
        raise ConfigError(
            f"{path} was made with another config than this run's point {pcfg.name}; move it away to run the point "
            "again, or run with the config that made it"
        )


def run_point(
    cfg: PipelineConfig, pcfg: PipelineConfig, n: int | None, folds: Sequence[Any], steps: int
) -> dict[str, Any]:
    """One point: its k-fold pipeline run and the point record."""
    from crystalvision.app.pipeline import run_pipeline

    start = time.perf_counter()
    result = run_pipeline(pcfg)
    parts = [cr.fold_part(f) for f in folds]
    m = result.metrics
    return {
        "pipeline": cfg.name,
        "train_structures": n,
        "point": cr.point_key(n),
        "curve_config_hash": cfg.config_hash(),
        "config_hash": pcfg.config_hash(),
        "run_id": result.run_id,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - start, 1),
        "hardware": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "budget": budget(cfg, steps),
        "optimiser_steps_mean": m.get("optimiser_steps_mean"),
        "epochs_trained_mean": m.get("epochs_trained_mean"),
        "best_epoch_mean": m.get("best_epoch_mean"),
        "n_structures_mean": float(np.mean([p["n_structures_train"] + p["n_structures_val"] for p in parts])),
        "n_train_mean": float(np.mean([p["n_structures_train"] for p in parts])),
        "n_val_mean": float(np.mean([p["n_structures_val"] for p in parts])),
        "folds": parts,
        "stage_seconds": dict(result.stage_seconds),
        "baselines": (result.pooled or {}).get("baselines"),
        "series": cr.point_series(result.oof_table, cfg.evaluate),
        "metrics": cr.pooled_only(m),
    }


def _log_to_mlflow(cfg: PipelineConfig, out: Path) -> None:
    """The curve record, figure and point records as artifacts of one MLflow run named after the curve (best
    effort)."""
    try:
        import mlflow

        from crystalvision.track import tracking

        tracking.configure_mlflow()
        with mlflow.start_run(run_name=f"{cfg.name}-learning-curve", tags={"learning_curve": "1"}):
            mlflow.log_artifacts(str(out), artifact_path="learning_curve")
    except Exception:  # the records on disk are the result; the UI copy must not fail the curve
        log.warning("could not log the learning curve to MLflow", exc_info=True)
