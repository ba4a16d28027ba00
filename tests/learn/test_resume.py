"""Runs that resume and right labels (issue 14, points 8 and 9) with the real Ray, MLflow server and render job.

- a relaunched pipeline (new MLflow run) resumes the crashed Ray Train run instead of training again;
- a Ray Train run whose MLflow server is dead still finishes, and a long first epoch keeps its run lease.

(Run names that follow content: test_run_name.py; two selections of one snapshot rendered with one config get two
labels tables: tests/render/test_render_job.py.)
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pytest

from crystalvision.core.pipeline_file import load_pipeline
from crystalvision.data.dataset import load_labels, split_frame
from crystalvision.data.storage import ObjectStore
from crystalvision.learn import Prepared
from crystalvision.learn.model import ModelSpec
from crystalvision.learn.train import FAULT_ENV, FLUSH_TIMEOUT_ENV, MLFLOW_WAIT_ENV, train_model
from tests.support.procs import free_port
from tests.support.toy import SPACEGROUPS, SYSTEMS, TEST_BACKBONE, write_toy_dataset

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "snapshot": {"max_structures": 5},
    "render": {"views_per_structure": 2, "image_size": 32, "num_workers": 1},
    "split": {"test_fraction": 0.3},
    "train": {
        "backbone": "test_efficientnet",
        "epochs": 3,
        "max_steps_per_epoch": 1,
        "num_workers": 1,
        "max_failures": 0,
        "patience": 10,
    },
}


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray cluster whose workers give up on an unreachable MLflow after one retry (so that the old,
    unbuffered logger fails in seconds, not minutes)."""
    import ray

    from crystalvision.ops.raycluster import ensure_ray

    old = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "1"
    ensure_ray()
    yield
    ray.shutdown()
    if old is None:
        os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
    else:
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = old


@pytest.mark.slow
def test_relaunched_pipeline_resumes_the_crashed_training(cv_home, ray_local, monkeypatch) -> None:
    from crystalvision.app.pipeline import run_pipeline

    cfg = load_pipeline(ROOT / "pipelines/quickstart.yaml", TINY)
    monkeypatch.setenv(FAULT_ENV, "rank=0,epoch=1,step=0")  # the worker dies in epoch 1, once per Ray Train run name
    with pytest.raises(Exception, match="(?i)train|worker"):
        run_pipeline(cfg, ["render", "train"])
    assert len(list((cv_home / "faults").glob("*.done"))) == 1
    relaunched = run_pipeline(cfg, ["render", "train"])  # a new MLflow run, the same content

    client = mlflow.MlflowClient()
    experiment = client.get_run(relaunched.run_id).info.experiment_id
    runs = client.search_runs([experiment], order_by=["start_time ASC"])
    assert [r.info.status for r in runs] == ["FAILED", "FINISHED"] and runs[1].info.run_id == relaunched.run_id
    # epoch 0 ran in the crashed run only; the relaunch continued from its checkpoint with epochs 1 and 2
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "val_loss")] == [0]
    resumed = client.get_metric_history(relaunched.run_id, "resumes")
    assert sorted(m.step for m in resumed) == [1, 2] and {m.value for m in resumed} == {1.0}
    assert relaunched.metrics["epochs_trained"] == 3.0
    assert runs[1].data.params["ray_train_run_name"].startswith(f"{cfg.name}-")


class _LeaseWatch:
    """Polls every lock file under ``folder`` in a thread: how far past its ``expires_at`` any was ever seen."""

    def __init__(self, folder: Path):
        import threading

        self.folder, self.overrun, self.seen = folder, float("-inf"), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        import json
        import time

        while not self._stop.is_set():
            for path in self.folder.rglob("*.lock"):
                try:
                    held = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
                self.seen += 1
                self.overrun = max(self.overrun, time.time() - float(held["expires_at"]))
            time.sleep(0.05)

    def __enter__(self) -> _LeaseWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.mark.slow
def test_a_long_first_epoch_keeps_the_run_lease_and_a_dead_mlflow_stops_nothing(
    cv_home, ray_local, tmp_path, monkeypatch
) -> None:
    """One Ray Train run, two troubles that must not end it. The lease on the Ray Train run name is renewed by
    training and validation batches, not only by epochs: a first epoch more than twice as long as the lease (every
    step made slower by the fault hook) never lets it expire, so no other process could take the run over. And its
    MLflow server is dead (nothing listens there): rank 0's logging calls give up, the run still finishes and saves
    its model."""
    store = ObjectStore(str(tmp_path / "store"))
    key = write_toy_dataset(store, n_structures=10, views=4, size=32)
    train = TINY["train"] | {"epochs": 1, "max_steps_per_epoch": 10, "batch_size": 2}
    cfg = load_pipeline(ROOT / "pipelines/quickstart.yaml", TINY | {"train": train})
    spec = ModelSpec(
        crystal_system_classes=SYSTEMS, spacegroup_classes=SPACEGROUPS, image_size=32, backbone=TEST_BACKBONE
    )
    monkeypatch.setenv("CRYSTALVISION_TRAIN_LEASE_S", "6")
    monkeypatch.setenv("CRYSTALVISION_WATCH_LEASE_S", "6")  # what the train lease read before it had its own name
    monkeypatch.setenv(FAULT_ENV, "slow_ms=1400")  # 10 steps: an epoch of at least 14 s
    monkeypatch.setenv(FLUSH_TIMEOUT_ENV, "1")
    monkeypatch.setenv(MLFLOW_WAIT_ENV, "0.5")  # each logging call gives up after 0.5 s, not 5 s
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    prepared = Prepared(cfg, store, split_frame(load_labels(store, key), cfg.split), spec, labels_key=key)
    with _LeaseWatch(cv_home / "locks" / "train") as watch:
        result = train_model(prepared, run_id="0" * 32, tracking_uri=dead, model_dir=tmp_path / "model")
    assert [int(h["epoch"]) for h in result.history] == [0] and (result.model_dir / "weights.pt").exists()
    assert result.history[0]["train_images"] >= 16 and watch.seen > 0
    assert watch.overrun < 0, f"the run lease stood expired for {watch.overrun:.1f} s while training ran"
