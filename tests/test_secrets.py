"""Secrets never leak: a pipeline run with an MP key and S3 credentials set (and used, against moto) leaves neither
in logs, Ray worker logs, MLflow params/tags/metric names, run or model artifacts, or any file it wrote."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import pytest

from crystalvision.config import load_pipeline
from crystalvision.logs import RedactSecrets
from crystalvision.settings import get_settings

from .support.s3 import moto_s3

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
SECRETS = {
    "MP_API_KEY": "mpkey-Zq81SECRETw7Yx",
    "AWS_ACCESS_KEY_ID": "AKIASECRETID4TEST9",
    "AWS_SECRET_ACCESS_KEY": "s3cr3t/KEY+value+Do-Not-Leak",
}
TINY = {
    "snapshot": {"max_structures": 4},
    "render": {"image_size": 32, "views_per_structure": 2, "num_workers": 1},
    "train": {"epochs": 1, "max_steps_per_epoch": 2, "batch_size": 4},
    "evaluate": {"saliency": False},
    "registry": {"model_name": "secrets-test"},
}


def _leaks(text: str) -> list[str]:
    return [name for name, value in SECRETS.items() if value in text]


def _files_with_secrets(root: Path) -> list[str]:
    """Every file under ``root`` (binary included: SQLite, pickles, checkpoints) that holds a secret's bytes."""
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path}: {name}" for name, value in SECRETS.items() if value.encode() in data]
    return found


def _mlflow_texts(client: mlflow.MlflowClient, run_id: str, model_name: str) -> list[str]:
    run = client.get_run(run_id)
    texts = [*run.data.params, *run.data.params.values(), *run.data.tags, *run.data.tags.values()]
    texts += list(run.data.metrics)
    for version in client.search_model_versions(f"name='{model_name}'"):
        texts += [version.source, version.description or "", *version.tags, *version.tags.values()]
    return texts


def _ray_logs() -> list[Path]:
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    return [Path(node.get_session_dir_path()) / "logs"] if node is not None else []


def test_pipeline_with_secrets_set_leaks_none_of_them(cv_home, tmp_path, monkeypatch, caplog, capfd):
    import ray

    from crystalvision.logs import setup_logging
    from crystalvision.pipeline import run_pipeline

    with moto_s3("cv-secrets") as s3:
        for name, value in SECRETS.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("CRYSTALVISION_OBJECT_STORE_URI", f"s3://{s3.bucket}/store")
        monkeypatch.setenv("CRYSTALVISION_S3_ENDPOINT_URL", s3.endpoint_url)
        get_settings.cache_clear()
        setup_logging("DEBUG")
        logging.getLogger("crystalvision").info("the MP key is %s", SECRETS["MP_API_KEY"])  # the filter's own check
        try:
            with caplog.at_level(logging.DEBUG):
                result = run_pipeline(load_pipeline(ROOT / "pipelines/quickstart.yaml", TINY))
            ray_logs = [p for d in _ray_logs() for p in d.rglob("*") if p.is_file()]
            ray_text = "\n".join(p.read_text(errors="replace") for p in ray_logs)
        finally:
            ray.shutdown()
            for h in [h for h in logging.getLogger().handlers if getattr(h, "_crystalvision", False)]:
                logging.getLogger().removeHandler(h)
        assert result.run_id and result.registry, result.summary()
        assert len(s3.keys("store/")) > 8, "the S3 credentials were really used"
        stored = [s3.client().get_object(Bucket=s3.bucket, Key=k)["Body"].read() for k in s3.keys("store/")]

    out, err = capfd.readouterr()
    assert "***" in err, "the log filter masks secrets on the crystalvision handler"
    handled = [RedactSecrets().filter(r) and r.getMessage() for r in caplog.records]
    assert not _leaks("\n".join(handled) + out + err), "logs"
    assert ray_logs and not _leaks(ray_text), "Ray worker logs"
    assert not [k for k in stored if _leaks(k.decode(errors="replace"))], "objects in the store"

    client = mlflow.MlflowClient(get_settings().tracking.mlflow_tracking_uri)
    assert not _leaks("\n".join(_mlflow_texts(client, result.run_id, "secrets-test"))), "MLflow params/tags/names"
    artifacts = Path(mlflow.artifacts.download_artifacts(run_id=result.run_id, dst_path=str(tmp_path / "artifacts")))
    assert any(artifacts.rglob("pipeline.yaml")) and any(artifacts.rglob("weights.pt"))
    assert not _files_with_secrets(artifacts), "run artifacts"
    model = mlflow.artifacts.download_artifacts("models:/secrets-test@challenger", dst_path=str(tmp_path / "model"))
    assert any(Path(model).rglob("MLmodel")) and not _files_with_secrets(Path(model)), "registered model"
    assert not _files_with_secrets(cv_home), "a file under CRYSTALVISION_HOME (MLflow db, checkpoints, Ray results)"
