"""Secrets never leak: a pipeline run with every secret set, and the MP key and S3 credentials really used (an
ingest against the replay server, the object store and Ray Train checkpoints on moto), leaves none of them in
the log output, Ray worker logs, MLflow params/tags/metric names, run or model artifacts, any file it wrote, or
anything Ray serialises for its workers (every ``ray.cloudpickle.dumps`` of the run: task and actor arguments,
remote functions, the trainer's run config, Ray Data read tasks). The S3 keys come from ``CRYSTALVISION_AWS_*``
only, so the driver builds its S3 filesystem with explicit keys. The CLI prints no secret either: an unreachable
tracking server is one masked line, any other error a masked traceback."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import mlflow
import pytest

from crystalvision.core.config import IngestConfig, TrainConfig
from crystalvision.core.pipeline_file import load_pipeline
from crystalvision.core.settings import get_settings
from tests.support.mp_replay import ReplayServer, bundled_docs
from tests.support.procs import free_port
from tests.support.s3 import moto_s3

ROOT = Path(__file__).resolve().parents[2]
S3_KEYS = {
    "CRYSTALVISION_AWS_ACCESS_KEY_ID": "AKIASECRETID4TEST9",
    "CRYSTALVISION_AWS_SECRET_ACCESS_KEY": "s3cr3t/KEY+value+Do-Not-Leak",
    "CRYSTALVISION_AWS_SESSION_TOKEN": "FwoGZXIvSESSION+token/Do-Not-Leak",
}
SECRETS = {
    "MP_API_KEY": "mpkeyZq81SECRETw7Yx0123456789abc",  # 32 characters: a well-formed key, sent to the replay API
    **S3_KEYS,
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


def _launcher():
    """``mlflow/launch.py`` as a module (``mlflow/`` is no package: it would shadow MLflow)."""
    spec = importlib.util.spec_from_file_location("mlflow_launch", ROOT / "mlflow" / "launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("uri", "masked"),
    [
        ("postgresql://mlflow:pa@ss@word@db:5432/mlflow", "postgresql://mlflow:***@db:5432/mlflow"),
        (
            "http://alice:p@ss:w@rd@127.0.0.1:9/api/runs/get?run_id=a@b",
            "http://alice:***@127.0.0.1:9/api/runs/get?run_id=a@b",
        ),
        ("https://:tok@en@mlflow.example.org", "https://:***@mlflow.example.org"),
    ],
)
def test_a_password_holding_at_is_masked_whole(uri: str, masked: str):
    from crystalvision.core.logs import mask

    assert mask(uri, []) == masked and _launcher().redact_uri(uri) == masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [  # a password holding URL delimiters or a blank (openssl rand -base64 gives '/' and '+'), a user holding '@'
        ("postgresql://mlflow:Ab/9+xQ@db:5432/mlflow", "postgresql://mlflow:***@db:5432/mlflow"),
        ("http://alice:q?r#s/t@mlflow:5000/api/2.0/x?run_id=a@b", "http://alice:***@mlflow:5000/api/2.0/x?run_id=a@b"),
        ("http://alice@corp.example:pw@mlflow:5000/", "http://alice@corp.example:***@mlflow:5000/"),
        (
            "API request to http://alice:two words@mlflow:5000/api failed",
            "API request to http://alice:***@mlflow:5000/api failed",
        ),
        ("https://tok3nDoNotLeak@mlflow.example.org/", "https://***@mlflow.example.org/"),
        ("file:///data/a@b/mlflow.db and s3://bucket/key", "file:///data/a@b/mlflow.db and s3://bucket/key"),
        ("http://mlflow:5000 is down; mail ops@example.org", "http://mlflow:5000 is down; mail ops@example.org"),
    ],
)
def test_every_authority_is_masked_up_to_its_last_at(text: str, masked: str):
    from crystalvision.core.logs import mask

    assert mask(text, []) == masked and _launcher().redact_uri(text) == masked


def test_a_configured_uri_password_is_masked_wherever_it_shows(cv_home, monkeypatch):
    from crystalvision.core.logs import mask

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://mlflow:Ab/9 x?Q#z@db:5432/mlflow")
    get_settings.cache_clear()
    assert mask("FATAL: password 'Ab/9 x?Q#z' rejected") == "FATAL: password '***' rejected"


def test_summary_links_the_run_without_the_tracking_password():
    from crystalvision.app.summary import mlflow_pointer

    assert mlflow_pointer("http://alice:p@ss@mlflow:5000/", "3", "abc") == "http://mlflow:5000/#/experiments/3/runs/abc"
    slash = mlflow_pointer("http://alice:Ab/9+xQ@mlflow:5000", "3", "abc")
    assert slash == "http://mlflow:5000/#/experiments/3/runs/abc"
    local = mlflow_pointer("postgresql://u:p@ss@db/mlflow", None, None)
    assert "p@ss" not in local and "postgresql://u:***@db/mlflow" in local


def _invoke(*args: str):
    from typer.testing import CliRunner

    from crystalvision.app.cli import app

    get_settings.cache_clear()
    return CliRunner().invoke(app, list(args))


def test_unreachable_tracking_server_is_one_masked_line_and_exit_2(cv_home, monkeypatch):
    password = "s3cr3t@pw-Do-Not-Leak"
    uri = f"http://alice:{password}@127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    result = _invoke("register", "--run-id", "x")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "is unreachable" in lines[0] and "MLFLOW_TRACKING_URI" in lines[0]
    assert f"http://alice:***@127.0.0.1:{uri.rsplit(':', 1)[1]}" in lines[0]
    assert password not in result.output and "s3cr3t" not in result.output


def test_a_job_with_no_tracking_server_prints_no_password(cv_home):
    """A job entrypoint (what Ray keeps in the job log, the dashboard and the session folder) fails like the CLI:
    one masked line for an unreachable server (anything else: a masked traceback), never the password."""
    import os
    import subprocess
    import sys

    password, port = "s3cr3tPW-Do-Not-Leak", free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://alice:{password}@127.0.0.1:{port}"}
    env |= {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "CRYSTALVISION_HOME": str(cv_home)}
    cmd = [sys.executable, "-m", "jobs.register", "--config", "pipelines/quickstart.yaml", "--run-id", "x"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in output and password not in output, output
    assert f"error: the MLflow tracking server http://alice:***@127.0.0.1:{port} is unreachable" in done.stderr


def test_a_pipeline_checks_the_tracking_server_before_it_renders(cv_home, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:s3cr3tPW@127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    tiny = ["snapshot.max_structures=3", "render.image_size=32", "render.views_per_structure=1"]
    result = _invoke(
        "pipeline", "run", str(ROOT / "pipelines/quickstart.yaml"), *(a for t in tiny for a in ("--set", t))
    )
    assert result.exit_code == 2 and "is unreachable" in result.output, result.output
    assert "s3cr3tPW" not in result.output
    assert not (cv_home / "store").exists(), "nothing was rendered"


def test_any_other_error_prints_its_traceback_with_secrets_masked(cv_home, monkeypatch):
    import crystalvision.app.commands

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", SECRETS["MLFLOW_TRACKING_TOKEN"])

    def broken(name, cfg, **options):
        token, uri = SECRETS["MLFLOW_TRACKING_TOKEN"], f"postgresql://u:{URI_PASSWORD}@db/x"
        raise RuntimeError(f"bearer {token} at {uri}")

    monkeypatch.setattr(crystalvision.app.commands, "run", broken)
    result = _invoke("register", "--run-id", "x")
    assert result.exit_code == 1 and "Traceback (most recent call last)" in result.stderr, result.output
    assert "RuntimeError: bearer *** at postgresql://u:***@db/x" in result.stderr
    assert not _leaks(result.output)


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


def _s3_keys_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 keys from CRYSTALVISION_AWS_* alone: the AWS default chain cannot find them, so the driver's filesystem
    carries them explicitly."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in S3_KEYS.items():
        monkeypatch.setenv(name, value)


def test_storage_ray_ships_pickles_without_s3_keys(cv_home, monkeypatch):
    """The trainer's run config (its S3 storage filesystem) and the object store's filesystem (Ray Data's
    ``read_parquet(filesystem=...)``), built by the product code, pickle without the keys; unpickled, the filesystem
    takes its keys from the receiving process's environment."""
    import pickle

    import ray.cloudpickle

    from crystalvision.data.storage import open_store
    from crystalvision.learn.train import _run_config

    _s3_keys_only(monkeypatch)
    monkeypatch.setenv("CRYSTALVISION_OBJECT_STORE_URI", "s3://bucket/store")
    monkeypatch.setenv("CRYSTALVISION_RAY_STORAGE_PATH", "s3://bucket/ray_results")
    get_settings.cache_clear()
    run_config = _run_config("run-x", TrainConfig(), None)
    store = open_store()
    assert run_config.storage_filesystem is not None and run_config.storage_path == "bucket/ray_results"
    shipped = {"RunConfig": run_config, "ObjectStore.fs": store.fs, "ObjectStore": store}
    for what, obj in shipped.items():
        data = ray.cloudpickle.dumps(obj)
        assert not [n for n, v in ALL.items() if v.encode() in data], what
    received = pickle.loads(ray.cloudpickle.dumps(run_config)).storage_filesystem.handler
    assert received.settings.aws_access_key_id is None, "the keys are not in what was shipped"
    built = pickle.dumps(received.fs)  # the real filesystem, built here from this process's environment
    assert S3_KEYS["CRYSTALVISION_AWS_SECRET_ACCESS_KEY"].encode() in built, "the receiver found its own keys"


@pytest.mark.slow
def test_pipeline_with_secrets_set_leaks_none_of_them(cv_home, tmp_path, monkeypatch, capfd):
    import ray
    import ray.cloudpickle

    from crystalvision.app.pipeline import run_pipeline
    from crystalvision.app.tune import _make_tuner
    from crystalvision.core.logs import setup_logging
    from crystalvision.data import dataset
    from crystalvision.data.ingest import ingest_from_mp

    spy = RaySerialisations(markers=(b"ray_results", b"/store/"))
    with moto_s3("cv-secrets") as s3, ReplayServer("2025.01.01", bundled_docs(4)) as mp_api:
        for name, value in SECRETS.items():
            monkeypatch.setenv(name, value)
        _s3_keys_only(monkeypatch)
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
            snapshot = ingest_from_mp(IngestConfig(chemsys="Li-Mn-Ni-O"), cv_home / "snapshots")
            cfg = load_pipeline(ROOT / "pipelines/quickstart.yaml", TINY)
            result = run_pipeline(cfg)
            spy(_make_tuner(cfg, lambda config: None, "secrets-sweep", {"CPU": 2.0}))  # a Tune sweep's run config
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
    assert spy.count > 20 and spy.seen == {b"ray_results", b"/store/"}, "the run config and read tasks went by"
    assert not spy.leaks, f"pickled for Ray workers: {spy.leaks[:5]}"
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
