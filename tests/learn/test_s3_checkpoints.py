"""Ray Train checkpoints on s3:// (moto): a worker killed mid-epoch resumes from its S3 checkpoint, and a relaunch
with the same name resumes from S3 too. Workers read their own credentials (nothing in the pickled filesystem).
Local storage takes the same path through Ray Train's storage filesystem (a crashed pipeline relaunched on local
storage: tests/learn/test_resume.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from crystalvision.core.settings import get_settings
from crystalvision.data.dataset import load_labels, split_frame
from crystalvision.data.storage import ObjectStore
from crystalvision.learn import Prepared
from crystalvision.learn.train import FAULT_ENV, train_model
from tests.learn.test_train import SIZE, _cfg, _spec
from tests.support.s3 import CREDENTIALS, S3Server, moto_s3
from tests.support.toy import write_toy_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3_ray() -> Iterator[S3Server]:
    """moto S3 with the Ray storage path on it, and a local Ray cluster started after the credentials are set (its
    workers inherit them: the storage filesystem Ray ships carries none)."""
    import ray

    from crystalvision.ops.raycluster import ensure_ray

    with moto_s3("cv-ray") as s3, pytest.MonkeyPatch.context() as mp:
        for name, value in CREDENTIALS.items():
            mp.setenv(name, value)
        mp.setenv("CRYSTALVISION_RAY_STORAGE_PATH", f"s3://{s3.bucket}/ray_results")
        mp.setenv("CRYSTALVISION_S3_ENDPOINT_URL", s3.endpoint_url)
        mp.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint_url)
        get_settings.cache_clear()
        ensure_ray()
        try:
            yield s3
        finally:
            ray.shutdown()
            get_settings.cache_clear()


def test_killed_worker_and_relaunch_resume_from_s3_checkpoints(s3_ray, cv_home, tmp_path, monkeypatch) -> None:
    assert get_settings().ray.ray_storage_path == f"s3://{s3_ray.bucket}/ray_results"
    store = ObjectStore(str(tmp_path / "store"))
    key = write_toy_dataset(store, n_structures=8, views=8, size=SIZE)
    splits = split_frame(load_labels(store, key), _cfg().split)
    cfg = _cfg(epochs=3, max_steps_per_epoch=1, max_failures=1)
    monkeypatch.setenv(FAULT_ENV, "rank=1,epoch=1,step=0")
    first = train_model(Prepared(cfg, store, splits, _spec()), name="s3-run", model_dir=tmp_path / "m1")
    assert (cv_home / "faults" / "s3-run.done").exists(), "the worker really died"
    assert [int(h["epoch"]) for h in first.history] == [0, 1, 2], "epochs continue, none repeated"
    assert first.history[0]["resumes"] == 0 and first.history[-1]["resumes"] == 1
    assert f"{s3_ray.bucket}/ray_results/s3-run" in first.checkpoint_path
    assert first.checkpoint_path.endswith("epoch_00003") and (first.model_dir / "weights.pt").exists()
    assert any("/epoch_" in k for k in s3_ray.keys("ray_results/s3-run/")), "checkpoints live in S3"
    monkeypatch.delenv(FAULT_ENV)
    # Same name, more epochs: the run continues from its latest checkpoint instead of starting over.
    more = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 4})})
    second = train_model(Prepared(more, store, splits, _spec()), name="s3-run", model_dir=tmp_path / "m2")
    assert [int(h["epoch"]) for h in second.history] == [0, 1, 2, 3]
    assert second.history[:3] == first.history and second.history[-1]["resumes"] == 2
