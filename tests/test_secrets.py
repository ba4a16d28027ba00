"""Secrets never leak: a pipeline run with every secret set, and the MP key and S3 credentials really used (an
ingest against the replay server, the object store and Ray Train checkpoints on moto), leaves none of them in
the log output, Ray worker logs, MLflow params/tags/metric names, run or model artifacts, any file it wrote, or the
pickled arguments Ray ships to workers."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import pytest

from crystalvision.config import IngestConfig, load_pipeline
from crystalvision.settings import get_settings

from .support.mp_replay import ReplayServer, bundled_docs
from .support.s3 import moto_s3

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
SECRETS = {
    "MP_API_KEY": "mpkeyZq81SECRETw7Yx0123456789abc",  # 32 characters: a well-formed key, sent to the replay API
    "AWS_ACCESS_KEY_ID": "AKIASECRETID4TEST9",
    "AWS_SECRET_ACCESS_KEY": "s3cr3t/KEY+value+Do-Not-Leak",
    "AWS_SESSION_TOKEN": "FwoGZXIvSESSION+token/Do-Not-Leak",
    "MLFLOW_TRACKING_PASSWORD": "trackingPASSWORD-Do-Not-Leak",
    "MLFLOW_TRACKING_TOKEN": "trackingTOKEN-Do-Not-Leak",
    "MLFLOW_AUTH_ADMIN_PASSWORD": "adminPASSWORD-Do-Not-Leak",
}
URI_PASSWORD = "pgPASSWORD-in-a-uri"  # configured nowhere: masked because it sits in a URI
TINY = {
    "snapshot": {"max_structures": 4},
    "render": {"image_size": 32, "views_per_structure": 2, "num_workers": 1},
    "train": {"backbone": "test_efficientnet", "epochs": 1, "max_steps_per_epoch": 2, "batch_size": 4},
    "evaluate": {"saliency": False},
    "registry": {"model_name": "secrets-test"},
}
ALL = {**SECRETS, "URI_PASSWORD": URI_PASSWORD}


def _leaks(text: str) -> list[str]:
    return [name for name, value in ALL.items() if value in text]


def _files_with_secrets(root: Path) -> list[str]:
    """Every file under ``root`` (binary included: SQLite, pickles, checkpoints) that holds a secret's bytes."""
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path}: {name}" for name, value in ALL.items() if value.encode() in data]
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


def _log_secrets_everywhere() -> None:
    """Messages, a URI with a password and a traceback, all naming secrets, through the platform's log handler."""
    log = logging.getLogger("crystalvision.test_secrets")
    log.info("the MP key is %s", SECRETS["MP_API_KEY"])
    log.info("tracking at https://admin:%s@mlflow:5000 and postgresql://mlflow:%s@db/mlflow",
             SECRETS["MLFLOW_TRACKING_PASSWORD"], URI_PASSWORD)
    try:
        raise RuntimeError(f"token {SECRETS['MLFLOW_TRACKING_TOKEN']} session {SECRETS['AWS_SESSION_TOKEN']} "
                           f"admin {SECRETS['MLFLOW_AUTH_ADMIN_PASSWORD']}")
    except RuntimeError:
        log.exception("a failure whose traceback names secrets")


def _pickled_worker_args() -> bytes:
    """What Ray ships to workers that touch storage: the object store, its settings for render actors, and the
    Ray Train/Tune storage filesystem (RunConfig.storage_filesystem)."""
    import ray.cloudpickle

    from crystalvision.storage import filesystem_for, open_store, without_credentials

    store = open_store()
    store.exists("nothing-here")  # builds (and caches) its live filesystem before pickling
    shipped = [store, without_credentials(store.settings), filesystem_for(get_settings().ray.ray_storage_path)[0]]
    return b"".join(ray.cloudpickle.dumps(obj) for obj in shipped)


def test_pipeline_with_secrets_set_leaks_none_of_them(cv_home, tmp_path, monkeypatch, capfd):
    import ray

    from crystalvision.ingest import ingest_from_mp
    from crystalvision.logs import setup_logging
    from crystalvision.pipeline import run_pipeline

    with moto_s3("cv-secrets") as s3, ReplayServer("2025.01.01", bundled_docs(4)) as mp_api:
        for name, value in SECRETS.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("CRYSTALVISION_OBJECT_STORE_URI", f"s3://{s3.bucket}/store")
        monkeypatch.setenv("CRYSTALVISION_RAY_STORAGE_PATH", f"s3://{s3.bucket}/ray_results")
        monkeypatch.setenv("CRYSTALVISION_S3_ENDPOINT_URL", s3.endpoint_url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint_url)
        monkeypatch.setenv("CRYSTALVISION_MP_ENDPOINT", mp_api.url)
        get_settings.cache_clear()
        setup_logging("DEBUG")
        _log_secrets_everywhere()
        try:
            snapshot = ingest_from_mp(IngestConfig(chemsys="Li-Mn-Ni-O"), cv_home / "snapshots")
            pickled = _pickled_worker_args()
            result = run_pipeline(load_pipeline(ROOT / "pipelines/quickstart.yaml", TINY))
            ray_logs = [p for d in _ray_logs() for p in d.rglob("*") if p.is_file()]
            ray_text = "\n".join(p.read_text(errors="replace") for p in ray_logs)
        finally:
            ray.shutdown()
            for h in [h for h in logging.getLogger().handlers if getattr(h, "_crystalvision", False)]:
                logging.getLogger().removeHandler(h)
        assert result.run_id and result.registry, result.summary()
        sent = [r for r in mp_api.requests if "summary" in r.path]
        assert sent and all(r.headers.get("x-api-key") == SECRETS["MP_API_KEY"] for r in sent), "the MP key was used"
        assert (snapshot / "manifest.json").is_file()
        stored_keys = s3.keys("store/")
        assert any("/shards/" in k and k.endswith(".parquet") for k in stored_keys) and any(
            "/labels-" in k for k in stored_keys
        ), f"the S3 credentials were really used (render shards and labels in the bucket): {stored_keys}"
        assert s3.keys("ray_results/"), "Ray Train wrote its checkpoints to s3:// with the workers' own credentials"
        stored = [s3.client().get_object(Bucket=s3.bucket, Key=k)["Body"].read() for k in s3.keys("store/")]

    out, err = capfd.readouterr()
    assert "a failure whose traceback names secrets" in err and "Traceback" in err, "the handler wrote the logs"
    assert err.count("***") >= 6, "each secret in the messages, the URI and the traceback was masked"
    assert not _leaks(out + err), "log output"
    assert not _leaks(pickled.decode(errors="replace")), "pickled Ray task/actor arguments"
    assert ray_logs and not _leaks(ray_text), "Ray worker logs"
    assert not [k for k in stored if _leaks(k.decode(errors="replace"))], "objects in the store"

    client = mlflow.MlflowClient(get_settings().tracking.mlflow_tracking_uri)
    assert not _leaks("\n".join(_mlflow_texts(client, result.run_id, "secrets-test"))), "MLflow params/tags/names"
    artifacts = Path(mlflow.artifacts.download_artifacts(run_id=result.run_id, dst_path=str(tmp_path / "artifacts")))
    assert any(artifacts.rglob("pipeline.yaml")) and any(artifacts.rglob("weights.pt"))
    assert not _files_with_secrets(artifacts), "run artifacts"
    model = mlflow.artifacts.download_artifacts("models:/secrets-test@challenger", dst_path=str(tmp_path / "model"))
    assert any(Path(model).rglob("MLmodel")) and not _files_with_secrets(Path(model)), "registered model"
    assert not _files_with_secrets(cv_home), "a file under CRYSTALVISION_HOME (MLflow db, snapshot, Ray results)"
