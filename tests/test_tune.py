"""The sweep's search space, per-trial config and concurrency. (A sweep that is killed, restored and logs nested MLflow
runs: tests/test_tune_s3.py.)"""

from __future__ import annotations

from crystalvision import tune as cvtune
from crystalvision.config import PipelineConfig

from .support.tiny import SIZE


def _cfg() -> PipelineConfig:
    return PipelineConfig(
        name="tunetest",
        render={"image_size": SIZE},
        train={
            "backbone": "test_efficientnet",
            "epochs": 1,
            "batch_size": 4,
            "max_steps_per_epoch": 2,
            "num_workers": 1,
            "cpus_per_worker": 1,
        },
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
