"""A tiny sweep (2 trials, 1 epoch, 32 px) finishes, logs nested MLflow runs and resumes with Tuner.restore."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from crystalvision import tune as cvtune
from crystalvision.config import PipelineConfig
from crystalvision.model import ModelSpec
from crystalvision.prepare import Prepared
from crystalvision.storage import open_store

from .support.tiny import SIZE, toy_splits
from .support.toy import SPACEGROUPS, SYSTEMS


@pytest.fixture
def ray_local(cv_home, monkeypatch):
    import ray

    from crystalvision.settings import get_settings

    monkeypatch.setenv("CRYSTALVISION_RAY_NUM_CPUS", "2")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    get_settings.cache_clear()
    yield cv_home
    ray.shutdown()


def _cfg() -> PipelineConfig:
    return PipelineConfig(
        name="tunetest",
        render={"image_size": SIZE},
        train={"backbone": "test_efficientnet", "epochs": 1, "batch_size": 4, "max_steps_per_epoch": 2,
               "num_workers": 1, "cpus_per_worker": 1},
        tune={"num_samples": 2, "max_concurrent": 2, "search": "optuna", "lr_min": 1e-4, "lr_max": 1e-2},
    )


def test_space_config_and_concurrency() -> None:
    cfg = _cfg()
    space = cvtune.search_space(cfg)
    assert set(space) == {"lr", "w_band_gap", "w_energy_above_hull", "w_crystal_system", "w_spacegroup"}
    params = {"lr": 3e-4} | {k: 1.5 for k in space if k.startswith("w_")}
    trial = cvtune.trial_config(cfg, params)
    assert trial.train.lr == 3e-4 and set(trial.train.loss_weights.values()) == {1.5}
    assert cvtune.max_concurrent_trials(cfg, {"CPU": 2}) == 1
    assert cvtune.max_concurrent_trials(cfg, {"CPU": 64}) == 2
    gpu = cfg.model_copy(update={"train": cfg.train.model_copy(update={"use_gpu": True, "num_workers": 2})})
    assert cvtune.max_concurrent_trials(gpu, {"CPU": 64, "GPU": 2}) == 1


def test_tiny_sweep_logs_nested_runs_and_restores(ray_local) -> None:
    cfg = _cfg()
    store = open_store()
    splits = toy_splits(store, n_structures=8, views=2)
    spec = ModelSpec(crystal_system_classes=SYSTEMS, spacegroup_classes=SPACEGROUPS, image_size=SIZE,
                     backbone="test_efficientnet")
    prepared = Prepared(cfg, store, splits, spec)
    summary = cvtune.tune_model(prepared)
    assert summary["n_trials"] == 2 and summary["n_errors"] == 0
    client = MlflowClient()
    parent = client.get_run(summary["parent_run_id"])
    assert float(parent.data.params["best.lr"]) == pytest.approx(summary["best_config"]["lr"])
    assert "best_val_loss" in parent.data.metrics and parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 2 and summary["best_run_id"] in {c.info.run_id for c in children}
    for child in children:
        assert "val_loss" in child.data.metrics and "cfg.train.lr" in child.data.params
    best = mlflow.pyfunc.load_model(summary["model_uri"])
    assert best.metadata.get_input_schema() is not None

    again = cvtune.tune_model(prepared)  # same config: Tuner.restore, same parent, no new trials
    assert again["parent_run_id"] == summary["parent_run_id"] and again["best_run_id"] == summary["best_run_id"]
    assert len(client.search_runs([parent.info.experiment_id], f"tags.tune_sweep = '{summary['sweep']}'")) == 2
