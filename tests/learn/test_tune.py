"""The sweep's search space, per-trial config and concurrency. (A sweep that is killed, restored and logs nested MLflow
runs: tests/app/test_tune_s3.py.)"""

from __future__ import annotations

from crystalvision.app import tune as cvtune
from crystalvision.core.config import PipelineConfig
from tests.support.tiny import SIZE


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


def _prepared(tmp_path, **spec_update):
    from crystalvision.data.dataset import load_labels, split_frame
    from crystalvision.data.storage import ObjectStore
    from crystalvision.learn import Prepared
    from crystalvision.learn.model import ModelSpec
    from tests.support.toy import SPACEGROUPS, SYSTEMS, write_toy_dataset

    store = ObjectStore(str(tmp_path / "store"))
    key = write_toy_dataset(store, n_structures=6, views=1, size=SIZE)
    cfg = _cfg()
    spec = ModelSpec(crystal_system_classes=SYSTEMS, spacegroup_classes=SPACEGROUPS, image_size=SIZE, **spec_update)
    return Prepared(cfg, store, split_frame(load_labels(store, key), cfg.split), spec, labels_key=key)


def test_sweeps_and_runs_are_keyed_by_data_and_code(tmp_path, monkeypatch) -> None:
    """The same config on another snapshot (or labels table, or split) is another sweep; a code change is another
    Ray Train run (its checkpoints are not resumed)."""
    from crystalvision.learn import train

    base = _prepared(tmp_path, snapshot_sha256="a" * 64)
    assert cvtune.sweep_name(base) == cvtune.sweep_name(_prepared(tmp_path / "again", snapshot_sha256="a" * 64))
    other_snapshot = _prepared(tmp_path / "other", snapshot_sha256="b" * 64)
    other_labels = base.with_config(base.cfg)
    other_labels.labels_key = "labels-other.parquet"
    other_split = base.with_config(base.cfg.model_copy(update={"split": base.cfg.split.model_copy(update={"seed": 7})}))
    names = {cvtune.sweep_name(p) for p in (base, other_snapshot, other_labels, other_split)}
    assert len(names) == 4 and all(n.startswith("tune-tunetest-") for n in names)

    before = train.run_name(base)
    monkeypatch.setattr(train, "code_version", lambda: "0.1.0+changed")
    assert train.run_name(base) != before


_RUN_HOLDER = """
import sys, time
from pathlib import Path
from crystalvision.ops.lease import acquire
lease = acquire(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(120)
"""


def test_a_second_process_cannot_write_the_same_ray_train_run(tmp_path, cv_home) -> None:
    """Two identical pipelines at once (a retried job and a manual run): the second stops before Ray Train starts,
    naming the process that writes the run's checkpoints."""
    import os
    import subprocess
    import sys

    import pytest

    from crystalvision.learn import train
    from crystalvision.ops.lease import LockedError

    prepared = _prepared(tmp_path)
    lock = train.run_lock_path(train.run_name(prepared))
    holder = subprocess.Popen([sys.executable, "-c", _RUN_HOLDER, str(lock)], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ))  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=rf"pid {holder.pid} on .*wait for it to finish"):
            train.train_model(prepared)
    finally:
        holder.kill()
        holder.wait(timeout=30)
