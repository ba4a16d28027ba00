"""`mlflow models serve -m models:/NAME@champion` as a real process on 127.0.0.1 answers a REST request."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest

from crystalvision.config import PipelineConfig
from crystalvision.predict import log_model
from crystalvision.registry import register_and_promote
from crystalvision.storage import ObjectStore

from .support.procs import free_port
from .support.tiny import tiny_model_dir, toy_splits, use_test_tracking

START_TIMEOUT_S = 150


def _wait_ready(proc: subprocess.Popen, url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow models serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(1)
    pytest.fail(f"mlflow models serve not ready after {START_TIMEOUT_S}s:\n{log_path.read_text()[-3000:]}")


@pytest.fixture
def served(cv_home, tmp_path):
    """A tiny model registered as champion and served by a real `mlflow models serve` process."""
    tracking_uri = use_test_tracking()
    store = ObjectStore(str(tmp_path / "store"))
    splits = toy_splits(store, n_structures=6, views=1)
    with mlflow.start_run() as run:
        log_model(tiny_model_dir(tmp_path / "model"), splits, store)
    cfg = PipelineConfig(name="serve")
    assert register_and_promote(cfg, run.info.run_id)["promoted"]
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{cfg.registry.model_name}@champion"]
    cmd += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "--workers", "1"]
    # the server execs `uvicorn` from PATH: put this interpreter's bin folder first
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": path}
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_ready(proc, f"http://127.0.0.1:{port}", log_path)
        yield f"http://127.0.0.1:{port}", store, splits
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_served_champion_answers_invocations(served) -> None:
    url, store, splits = served
    image = base64.b64encode(store.get_bytes(str(splits.test["image_key"].iloc[0]))).decode()
    body = json.dumps({"dataframe_records": [{"image": image}, {"image": "bm90IGEgcG5n"}]}).encode()
    req = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        answer = json.loads(resp.read())
    good, bad = answer["predictions"]
    assert good["error"] is None and isinstance(good["band_gap"], float)
    assert good["crystal_system"] in json.loads(good["crystal_system_proba"])
    assert "not a readable image" in bad["error"]
