"""Secrets never leak: `watch`'s real retrain with every secret set, and the MP key and S3 credentials really used (its
ingest against the replay server, then render, train, evaluate and promote with the object store and Ray Train
checkpoints on moto; a second check finds the database unchanged), leaves none of them in the log output, Ray worker
logs, MLflow params/tags/metric names, run or model artifacts, any file it wrote, or anything Ray serialises for its
workers (every ``ray.cloudpickle.dumps`` of the run: task and actor arguments, remote functions, the trainer's run
config, Ray Data read tasks). The S3 keys come from ``CRYSTALVISION_AWS_*`` only, so the driver builds its S3
filesystem with explicit keys. (Masking, the CLI's and jobs' error lines and what is pickled for Ray workers, without
a Ray Train run: test_secrets_masked.py.)"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import pytest

from crystalvision.core.pipeline_file import load_pipeline
from crystalvision.core.settings import get_settings
from tests.support.mp_replay import ReplayServer, bundled_docs
from tests.support.s3 import moto_s3
from tests.support.secrets import ALL, SECRETS, URI_PASSWORD, leaks, s3_keys_only

ROOT = Path(__file__).resolve().parents[2]
TINY = {  # pipelines/watch.yaml, tiny: the replay serves 4 materials
    "render": {"image_size": 32, "views_per_structure": 2, "num_workers": 1},
    "train": {"backbone": "test_efficientnet", "epochs": 1, "max_steps_per_epoch": 2, "batch_size": 4},
    "evaluate": {"saliency": False},
    "registry": {"model_name": "secrets-test"},
}


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
    log.info(
        "tracking at https://admin:%s@mlflow:5000 and postgresql://mlflow:%s@db/mlflow",
        SECRETS["MLFLOW_TRACKING_PASSWORD"],
        URI_PASSWORD,
    )
    try:
        raise RuntimeError(
            f"token {SECRETS['MLFLOW_TRACKING_TOKEN']} session {SECRETS['CRYSTALVISION_AWS_SESSION_TOKEN']} "
            f"admin {SECRETS['MLFLOW_AUTH_ADMIN_PASSWORD']}"
        )
    except RuntimeError:
        log.exception("a failure whose traceback names secrets")


class RaySerialisations:
    """Wraps ``ray.cloudpickle.dumps``, through which Ray pickles everything it ships (task and actor arguments,
    remote functions and actor classes, Ray Data read tasks, Ray Train's run config): records which secrets and
    which markers each pickle held."""

    def __init__(self, markers: tuple[bytes, ...] = ()):
        import ray.cloudpickle

        self._dumps, self.markers = ray.cloudpickle.dumps, markers
        self.count, self.leaks, self.seen = 0, [], set()

    def __call__(self, obj, *args, **kwargs):
        data = self._dumps(obj, *args, **kwargs)
        self.count += 1
        self.leaks += [f"{type(obj).__name__}: {name}" for name, v in ALL.items() if v.encode() in data]
        self.seen |= {m for m in self.markers if m in data}
        return data


@pytest.mark.slow
def test_watch_retrain_with_secrets_set_leaks_none_of_them(cv_home, tmp_path, monkeypatch, capfd):
    """One scheduled retrain (the whole pipeline behind `watch`) with every secret set: it retrains and registers,
    a second check finds the same database version, and no secret is anywhere."""
    import ray
    import ray.cloudpickle

    from crystalvision.app.tune import _make_tuner
    from crystalvision.app.watch import watch_once
    from crystalvision.core.logs import setup_logging
    from crystalvision.data import dataset

    spy = RaySerialisations(markers=(b"ray_results", b"/store/"))
    with moto_s3("cv-secrets") as s3, ReplayServer("2025.01.01", bundled_docs(4)) as mp_api:
        for name, value in SECRETS.items():
            monkeypatch.setenv(name, value)
        s3_keys_only(monkeypatch)
        monkeypatch.setenv("CRYSTALVISION_OBJECT_STORE_URI", f"s3://{s3.bucket}/store")
        monkeypatch.setenv("CRYSTALVISION_RAY_STORAGE_PATH", f"s3://{s3.bucket}/ray_results")
        monkeypatch.setenv("CRYSTALVISION_S3_ENDPOINT_URL", s3.endpoint_url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint_url)
        monkeypatch.setenv("CRYSTALVISION_MP_ENDPOINT", mp_api.url)
        monkeypatch.setattr(ray.cloudpickle, "dumps", spy)
        monkeypatch.setattr(dataset, "DRIVER_DECODE_MAX_BYTES", 0)  # Ray Data's read tasks, as for a big split
        get_settings.cache_clear()
        setup_logging("DEBUG")
        _log_secrets_everywhere()
        try:
            cfg = load_pipeline(ROOT / "pipelines/watch.yaml", TINY)
            result = watch_once(cfg)
            again = watch_once(cfg)
            spy(_make_tuner(cfg, lambda config: None, "secrets-sweep", {"CPU": 2.0}))  # a Tune sweep's run config
            ray_logs = [p for d in _ray_logs() for p in d.rglob("*") if p.is_file()]
            ray_text = "\n".join(p.read_text(errors="replace") for p in ray_logs)
        finally:
            ray.shutdown()
            for h in [h for h in logging.getLogger().handlers if getattr(h, "_crystalvision", False)]:
                logging.getLogger().removeHandler(h)
        assert result["status"] == "retrained" and again["status"] == "unchanged", (result, again)
        run_id = result["pipeline"]["run_id"]
        assert run_id and result["pipeline"]["registry"], result
        sent = [r for r in mp_api.requests if "summary" in r.path]
        assert sent and all(r.headers.get("x-api-key") == SECRETS["MP_API_KEY"] for r in sent), "the MP key was used"
        assert (Path(result["snapshot"]) / "manifest.json").is_file()
        stored_keys = s3.keys("store/")
        assert any("/shards/" in k and k.endswith(".parquet") for k in stored_keys) and any(
            "/labels-" in k for k in stored_keys
        ), f"the S3 credentials were really used (render shards and labels in the bucket): {stored_keys}"
        assert s3.keys("ray_results/"), "Ray Train wrote its checkpoints to s3:// with the workers' own credentials"
        stored = [s3.client().get_object(Bucket=s3.bucket, Key=k)["Body"].read() for k in s3.keys("store/")]

    out, err = capfd.readouterr()
    assert "a failure whose traceback names secrets" in err and "Traceback" in err, "the handler wrote the logs"
    assert err.count("***") >= 6, "each secret in the messages, the URI and the traceback was masked"
    assert not leaks(out + err), "log output"
    assert spy.count > 20 and spy.seen == {b"ray_results", b"/store/"}, "the run config and read tasks went by"
    assert not spy.leaks, f"pickled for Ray workers: {spy.leaks[:5]}"
    assert ray_logs and not leaks(ray_text), "Ray worker logs"
    assert not [k for k in stored if leaks(k.decode(errors="replace"))], "objects in the store"

    client = mlflow.MlflowClient(get_settings().tracking.mlflow_tracking_uri)
    assert not leaks("\n".join(_mlflow_texts(client, run_id, "secrets-test"))), "MLflow params/tags/names"
    artifacts = Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(tmp_path / "artifacts")))
    assert any(artifacts.rglob("pipeline.yaml")) and any(artifacts.rglob("weights.pt"))
    assert not _files_with_secrets(artifacts), "run artifacts"
    model = mlflow.artifacts.download_artifacts("models:/secrets-test@challenger", dst_path=str(tmp_path / "model"))
    assert any(Path(model).rglob("MLmodel")) and not _files_with_secrets(Path(model)), "registered model"
    assert not _files_with_secrets(cv_home), "a file under CRYSTALVISION_HOME (MLflow db, snapshot, Ray results)"
