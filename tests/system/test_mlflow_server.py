"""The MLflow launcher: a real ``mlflow server`` process in embedded and production (basic-auth + S3) modes."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from tests.support.postgres import PostgresServer, postgres  # noqa: F401  (fixture)
from tests.support.procs import free_port, stop_group, wait_http
from tests.support.s3 import CREDENTIALS, moto_s3

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "mlflow" / "launch.py"
pytestmark = pytest.mark.slow


@contextmanager
def server(mode: str, env: dict[str, str], log_path: Path, procs: list | None = None) -> Iterator[str]:
    """Run ``python mlflow/launch.py MODE`` on a free port; yield its URL; stop its process group."""
    port = free_port()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(LAUNCH), mode, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=log_path.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    if procs is not None:
        procs.append(proc)
    try:
        wait_http(f"{url}/health", timeout=120, alive=lambda: proc.poll() is None)
        yield url
    finally:
        stop_group(proc)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    return env | extra


def _log_run(url: str, monkeypatch: pytest.MonkeyPatch, **auth: str) -> tuple[str, str]:
    """Log a run with a param, a metric and an artifact over HTTP; return (run_id, artifact_uri)."""
    import mlflow

    for k, v in auth.items():
        monkeypatch.setenv(k, v)
    client = mlflow.MlflowClient(tracking_uri=url)
    exp = client.create_experiment(f"exp-{secrets.token_hex(4)}")
    run = client.create_run(exp)
    client.log_param(run.info.run_id, "lr", "0.001")
    client.log_metric(run.info.run_id, "val_loss", 0.5)
    client.log_text(run.info.run_id, "hello", "notes/hello.txt")
    client.set_terminated(run.info.run_id)
    assert client.get_run(run.info.run_id).data.metrics == {"val_loss": 0.5}
    return run.info.run_id, client.get_run(run.info.run_id).info.artifact_uri


def test_embedded_mode_sqlite_and_local_artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Runs and artifacts land under CRYSTALVISION_HOME; SIGTERM to the launcher (``kill``, a container stop) stops
    every process it started before it exits 143."""
    home, procs = tmp_path / "home", []
    with server("embedded", _clean_env(CRYSTALVISION_HOME=str(home)), tmp_path / "mlflow.log", procs) as url:
        _log_run(url, monkeypatch)
        launcher = procs[0]
        assert len(_session_cmdlines(launcher.pid)) >= 3  # the launcher (mlflow server), uvicorn, MLflow's job runner
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=90) == 143
        assert _session_cmdlines(launcher.pid) == [], "a child outlived the launcher"
    assert (home / "mlflow.db").is_file()
    assert list((home / "mlartifacts").rglob("hello.txt"))


def _session_cmdlines(sid: int) -> list[str]:
    """Command lines of every process in session ``sid`` (the launcher, mlflow server, its uvicorn workers)."""
    lines = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.getsid(int(proc.name)) == sid:
                lines.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, ProcessLookupError):
            continue
    return lines


def _auth_database(postgres: PostgresServer, password: str) -> str:  # noqa: F811
    """Database ``mlflow_auth`` owned by role ``mlauth`` with ``password``; its URI with the password URL-encoded."""
    postgres.create_database("mlflow_auth")
    conn = postgres._connect("postgres")
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE ROLE mlauth LOGIN PASSWORD '{password}'")
            cur.execute("ALTER DATABASE mlflow_auth OWNER TO mlauth")
    finally:
        conn.close()
    return f"postgresql://mlauth:{quote(password, safe='')}@127.0.0.1:{postgres.port}/mlflow_auth"


def _get(url: str, path: str, auth: tuple[str, str], **params: str) -> requests.Response:
    return requests.get(f"{url}/api/{path}", params=params, auth=auth, timeout=60)


def _post(url: str, path: str, auth: tuple[str, str], **body: str) -> int:
    return requests.post(f"{url}/api/{path}", json=body, auth=auth, timeout=60).status_code


def test_production_mode_on_postgres_requires_auth_and_stores_artifacts_in_s3(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    postgres: PostgresServer,  # noqa: F811
):
    """Production mode against a real PostgreSQL server (tracking and auth databases) and moto S3; the database
    password never appears on any process's command line or in the log. The auth database's password holds '@' and
    '%' (URL-encoded in its URI, so the URI holds '%'). A new user sees nothing until an admin grants it."""
    password = secrets.token_urlsafe(16)
    auth_password = f"p@ss%w0rd-{secrets.token_hex(4)}"
    tracking_uri = postgres.create_database("mlflow")
    auth_uri = _auth_database(postgres, auth_password)
    assert "%" in auth_uri
    with moto_s3() as s3:
        env = _clean_env(
            MLFLOW_BACKEND_STORE_URI=tracking_uri,
            MLFLOW_AUTH_DATABASE_URI=auth_uri,
            MLFLOW_ARTIFACTS_DESTINATION=f"s3://{s3.bucket}/mlflow",
            MLFLOW_AUTH_ADMIN_PASSWORD=password,
            MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16),
            MLFLOW_S3_ENDPOINT_URL=s3.endpoint_url,
            MLFLOW_WORKERS="1",
            **CREDENTIALS,
        )
        log_path, procs = tmp_path / "mlflow.log", []
        with server("production", env, log_path, procs) as url:
            cmdlines = _session_cmdlines(procs[0].pid)
            assert cmdlines and any("mlflow" in c for c in cmdlines)
            assert not [c for c in cmdlines if postgres.password in c], "the database password is on a command line"
            search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
            assert requests.get(search, timeout=60).status_code == 401  # a busy machine is slow, not wrong
            assert requests.get(search, auth=("admin", "wrong"), timeout=60).status_code == 401
            assert requests.get(search, auth=("admin", password), timeout=60).status_code == 200
            run_id, artifact_uri = _log_run(
                url, monkeypatch, MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=password
            )
            _check_default_is_no_permissions(url, ("admin", password), run_id)
        assert artifact_uri.startswith("mlflow-artifacts:/")
        assert any(k.endswith(f"{run_id}/artifacts/notes/hello.txt") for k in s3.keys("mlflow/"))
    assert postgres.query("mlflow", "SELECT run_uuid FROM runs") == [(run_id,)], "the run lives in PostgreSQL"
    assert postgres.query("mlflow_auth", "SELECT username FROM users") == [("admin",), ("bob",)]
    log_text = log_path.read_text(errors="replace")
    assert password not in log_text and postgres.password not in log_text
    assert auth_password not in log_text and quote(auth_password, safe="") not in log_text


def _check_default_is_no_permissions(url: str, admin: tuple[str, str], run_id: str) -> None:
    """A new user cannot read the admin's experiment until the admin grants READ on it (README's grant)."""
    bob = ("bob", secrets.token_urlsafe(12))
    assert _post(url, "2.0/mlflow/users/create", admin, username=bob[0], password=bob[1]) == 200
    experiment_id = _get(url, "2.0/mlflow/runs/get", admin, run_id=run_id).json()["run"]["info"]["experiment_id"]
    read = "2.0/mlflow/experiments/get"
    assert _get(url, read, bob, experiment_id=experiment_id).status_code == 403, "default_permission is not READ"
    grant = {"username": bob[0], "resource_type": "experiment", "resource_id": experiment_id, "permission": "READ"}
    assert _post(url, "3.0/mlflow/users/permissions/grant", admin, **grant) == 200
    assert _get(url, read, bob, experiment_id=experiment_id).status_code == 200


def test_production_mode_names_missing_settings(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, str(LAUNCH), "production", "--port", str(free_port())],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "MLFLOW_AUTH_ADMIN_PASSWORD" in done.stderr
