"""Secrets never show: passwords in URIs are masked whole wherever they are printed or logged, the CLI and the job
entrypoints fail with one masked line (an unreachable tracking server) or a masked traceback (anything else), and
what is pickled for Ray workers (run config, object store) carries no S3 key. No Ray Train run: the suite's light
lane. A whole pipeline run with every secret set: test_secrets.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from crystalvision.core.config import TrainConfig
from crystalvision.core.settings import get_settings
from tests.support.procs import free_port
from tests.support.secrets import ALL, S3_KEYS, SECRETS, URI_PASSWORD, leaks, s3_keys_only

ROOT = Path(__file__).resolve().parents[2]


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
    assert not leaks(result.output)


def test_storage_ray_ships_pickles_without_s3_keys(cv_home, monkeypatch):
    """The trainer's run config (its S3 storage filesystem) and the object store's filesystem (Ray Data's
    ``read_parquet(filesystem=...)``), built by the product code, pickle without the keys; unpickled, the filesystem
    takes its keys from the receiving process's environment."""
    import pickle

    import ray.cloudpickle

    from crystalvision.data.storage import open_store
    from crystalvision.learn.train import _run_config

    s3_keys_only(monkeypatch)
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
