"""Run a pipeline config stage by stage: snapshot -> render -> train -> evaluate -> register.

This module and ``cli.py`` sit on top: they call into the stage modules, which never import upward.
One MLflow run covers one pipeline run; every stage logs into it.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crystalvision.config import PipelineConfig
from crystalvision.errors import CrystalVisionError
from crystalvision.snapshot import Selection, Snapshot, load_selection
from crystalvision.storage import ObjectStore, open_store

log = logging.getLogger(__name__)


@dataclass
class PipelineResult:
    """What a pipeline run produced."""

    name: str
    snapshot_id: str
    snapshot_sha256: str
    n_structures: int
    dropped_flagged: list[str]
    render: Any = None
    run_id: str | None = None
    model_dir: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    registry: dict[str, Any] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Record the wall time of one stage."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds[stage] = round(time.perf_counter() - start, 3)
            log.info("stage %s took %.1f s", stage, self.stage_seconds[stage])

    def summary(self) -> dict[str, Any]:
        return {
            "pipeline": self.name,
            "snapshot_id": self.snapshot_id,
            "snapshot_sha256": self.snapshot_sha256,
            "n_structures": self.n_structures,
            "n_dropped_flagged": len(self.dropped_flagged),
            "render": self.render.summary() if self.render is not None else None,
            "run_id": self.run_id,
            "model_dir": self.model_dir,
            "metrics": self.metrics,
            "registry": self.registry,
            "stage_seconds": self.stage_seconds,
        }


def logged_selection(cfg: PipelineConfig) -> tuple[Snapshot, Selection]:
    """The snapshot the config names (or the default) and the records it selects."""
    snap, selection = load_selection(cfg.snapshot)
    log.info(
        "snapshot %s: %d of %d structures selected, %d flagged dropped; labels: %s",
        snap.manifest.snapshot_id,
        len(selection.records),
        len(snap.records),
        len(selection.dropped_flagged),
        snap.manifest.label_source,
    )
    return snap, selection


def run_render_stage(cfg: PipelineConfig, store: ObjectStore | None = None):
    """Snapshot + render only; returns the render result."""
    from crystalvision.render.job import render_dataset

    snap, selection = logged_selection(cfg)
    store = store or open_store()
    return render_dataset(selection.records, snap.encoders, snap.manifest.content_sha256, cfg.render, store)


def run_pipeline(cfg: PipelineConfig, stages: list[str] | None = None) -> PipelineResult:
    """Run the configured stages and return what they produced."""
    stages = list(stages or cfg.stages)
    snap, selection = logged_selection(cfg)
    result = PipelineResult(
        name=cfg.name,
        snapshot_id=snap.manifest.snapshot_id,
        snapshot_sha256=snap.manifest.content_sha256,
        n_structures=len(selection.records),
        dropped_flagged=selection.dropped_flagged,
    )
    if "render" not in stages and "train" not in stages:
        return result
    from crystalvision.render.job import render_dataset

    store = open_store()
    with result.timed("render"):
        result.render = render_dataset(
            selection.records, snap.encoders, snap.manifest.content_sha256, cfg.render, store
        )
    if result.render.quarantined:
        log.warning(
            "%d structures quarantined by the renderer: %s", len(result.render.quarantined), result.render.quarantined
        )
    if "train" not in stages:
        return result
    _train_evaluate_register(cfg, stages, snap, selection, store, result)
    return result


def _train_evaluate_register(
    cfg: PipelineConfig,
    stages: list[str],
    snap: Snapshot,
    selection: Selection,
    store: ObjectStore,
    result: PipelineResult,
) -> None:
    import mlflow

    from crystalvision import tracking
    from crystalvision.dataset import load_labels, split_frame
    from crystalvision.model import load_model, spec_for
    from crystalvision.train import train_model

    labels = load_labels(store, result.render.labels_key)
    splits = split_frame(labels, cfg.split)
    spec = spec_for(cfg, snap)
    tracking.configure_mlflow()
    with tracking.start_run(run_name=cfg.name, tags=tracking.pipeline_tags(cfg, snap)) as run:
        result.run_id = run.info.run_id
        tracking.log_pipeline_context(cfg, snap, selection, result.render, splits)
        with result.timed("train"):
            trained = train_model(cfg, splits, store, spec, run_id=run.info.run_id)
        result.model_dir = str(trained.model_dir)
        result.metrics.update(trained.metrics)
        model = load_model(trained.model_dir)
        if "evaluate" in stages:
            from crystalvision.evaluate import evaluate_model

            with result.timed("evaluate"), tempfile.TemporaryDirectory(prefix="crystalvision-eval-") as tmp:
                evaluated = evaluate_model(model, splits, store, cfg, Path(tmp))
                mlflow.log_metrics(evaluated.metrics)
                mlflow.log_artifacts(str(evaluated.artifacts_dir), artifact_path="evaluation")
            result.metrics.update(evaluated.metrics)
        from crystalvision.predict import log_model

        with result.timed("log_model"):
            log_model(trained.model_dir, splits, store)
    if "register" in stages and cfg.registry.enabled:
        from crystalvision.registry import register_and_promote

        with result.timed("register"):
            result.registry = register_and_promote(cfg, result.run_id)


def evaluate_run(cfg: PipelineConfig, run_id: str) -> dict[str, Any]:
    """Evaluate an existing training run's model on its test split and log the results into that run."""
    from crystalvision.evaluate import evaluate_logged_run

    try:
        return evaluate_logged_run(cfg, run_id)
    except FileNotFoundError as exc:
        raise CrystalVisionError(f"run {run_id} has no model to evaluate ({exc}); train first") from exc
