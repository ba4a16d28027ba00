"""Tracking: experiment set-up, pipeline context (config artifact, provenance, environment), no secrets."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest

from crystalvision.core.config import PipelineConfig
from crystalvision.core.settings import get_settings
from crystalvision.data.snapshot import select
from crystalvision.track import tracking
from crystalvision.track.worker_logging import worker_logger


def test_pipeline_context_is_logged_without_secrets(cv_home, bundled_snapshot, monkeypatch, tmp_path) -> None:
    secret = "mp-secret-key-1234567890"
    monkeypatch.setenv("MP_API_KEY", secret)
    get_settings.cache_clear()
    cfg = PipelineConfig.model_validate(
        {"name": "ctx", "description": f"leaky {secret}", "snapshot": {"max_structures": 4}}
    )
    selection = select(bundled_snapshot, cfg.snapshot)
    render = SimpleNamespace(summary=lambda: {"n_images": 8, "prefix": "renders/x"})
    splits = SimpleNamespace(describe=lambda: {"n_images_train": 5, "n_images_val": 2, "n_images_test": 1})
    exp_id = tracking.configure_mlflow()
    assert mlflow.get_tracking_uri().startswith("sqlite:///")
    with tracking.start_run("ctx", tags=tracking.pipeline_tags(cfg, bundled_snapshot)) as run:
        tracking.log_pipeline_context(cfg, bundled_snapshot, selection, render, splits)
    data = mlflow.MlflowClient().get_run(run.info.run_id).data
    assert run.info.experiment_id == exp_id
    assert data.params["snapshot_sha256"] == bundled_snapshot.manifest.content_sha256
    assert data.params["cfg.train.lr"] == "0.001" and data.params["split.n_images_train"] == "5"
    assert data.params["render.n_images"] == "8" and "label_source.band_gap" in data.params
    assert data.tags["db_version"] == bundled_snapshot.manifest.db_version
    assert {"env.torch", "env.ray", "env.timm", "env.mlflow", "env.python"} <= set(data.tags)
    artifact = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="config/pipeline.yaml")
    text = Path(artifact).read_text()
    assert "name: ctx" in text
    everything = text + repr(data.params) + repr(data.tags)
    assert secret not in everything and "***" in everything


def test_worker_logger_logs_only_on_rank_zero(cv_home) -> None:
    tracking.configure_mlflow()
    uri = mlflow.get_tracking_uri()
    with tracking.start_run("workers") as run:
        pass
    for rank in (0, 1):
        worker_logger(uri, run.info.run_id, rank).log_metrics({"val_loss": 1.0 + rank}, step=0)
    worker_logger(uri, None, 0).log_metrics({"val_loss": 5.0}, step=0)  # no run: nothing logged
    history = mlflow.MlflowClient(uri).get_metric_history(run.info.run_id, "val_loss")
    assert [(m.value, m.step) for m in history] == [(1.0, 0)]


@pytest.mark.parametrize(("value", "expected"), [({"a": {"b": 1}, "c": [1, 2]}, {"p.a.b": 1, "p.c": [1, 2]})])
def test_flatten(value, expected) -> None:
    assert tracking.flatten(value, "p") == expected
