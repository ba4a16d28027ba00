"""`mlflow models serve -m models:/NAME@champion` as a real process on 127.0.0.1 answers REST requests, and so does
`crystalvision serve MODEL_URI` with a PATH that lacks this environment's scripts (where `uvicorn` is).

The server runs outside the checkout: its working folder is a temporary one, and a ``sitecustomize`` drops every
``sys.path`` entry that holds a ``crystalvision`` package (the editable install, PYTHONPATH), so the model loads only
with what it carries (its code and requirements).
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crystalvision.core.config import PipelineConfig
from crystalvision.promote.registry import register_and_promote
from tests.serve.test_predict import GOOD_CIF, SYMMETRY_BOMB, decompression_bomb_png
from tests.support.procs import free_port, stop_group
from tests.support.tiny import LoggedModel, log_tiny_model, use_home, use_test_tracking

START_TIMEOUT_S = 150
HIDE_CHECKOUT = """import os, sys
sys.path[:] = [p for p in sys.path if not os.path.isdir(os.path.join(p or os.getcwd(), "crystalvision"))]
"""


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


@pytest.fixture(scope="module")
def registered_once(tmp_path_factory) -> LoggedModel:
    """A tiny model registered and promoted to champion, once per module (both servers below serve it)."""
    from crystalvision.core.settings import get_settings

    logged = log_tiny_model(tmp_path_factory.mktemp("registered"))
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_home(monkeypatch, logged.home)
        assert register_and_promote(PipelineConfig(name="serve"), logged.run_id)["promoted"]
    get_settings.cache_clear()
    return logged


@pytest.fixture
def registered(registered_once, monkeypatch):
    """CRYSTALVISION_HOME (and MLflow) pointed at the home of the registered champion: its URI, the object store and
    the toy splits."""
    from crystalvision.core.settings import get_settings

    use_home(monkeypatch, registered_once.home)
    yield (
        f"models:/{PipelineConfig(name='serve').registry.model_name}@champion",
        registered_once.store,
        registered_once.splits,
    )
    get_settings.cache_clear()


@pytest.fixture
def served(registered, tmp_path):
    """A tiny model registered as champion and served by a real `mlflow models serve` process."""
    tracking_uri = use_test_tracking()
    model_uri, store, splits = registered
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri]
    cmd += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "--workers", "1"]
    # the server execs `uvicorn` from PATH: put this interpreter's bin folder first
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sitecustomize.py").write_text(HIDE_CHECKOUT)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": path, "PYTHONPATH": str(outside)}
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            cmd, env=env, cwd=outside, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
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


def _invoke(url: str, records: list[dict], timeout: float = 120) -> list[dict]:
    body = json.dumps({"dataframe_records": records}).encode()
    req = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())["predictions"]


def test_served_champion_answers_images_and_cifs_and_bounds_every_row(served) -> None:
    """One served process (outside the checkout): images and a CIF are predicted, each bad row gets its own error."""
    url, store, splits = served
    image = base64.b64encode(store.get_bytes(str(splits.test["image_key"].iloc[0]))).decode()
    tiff = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tiff, format="TIFF")
    rows = [
        {"image": image},
        {"image": "bm90IGEgcG5n"},
        {"cif": GOOD_CIF, "views": 2, "name": "mp-25284.cif"},
        {"cif": GOOD_CIF, "views": 65, "name": "too-many-views"},
        {"image": base64.b64encode(tiff.getvalue()).decode(), "name": "photo.png"},
        {"image": base64.b64encode(decompression_bomb_png()).decode(), "name": "bomb.png"},
    ]
    good, bad, cif, views, tiff_row, bomb = _invoke(url, rows)
    assert good["error"] is None and isinstance(good["band_gap"], float)
    assert good["spacegroup"] in json.loads(good["spacegroup_proba"])
    assert "not a readable image" in bad["error"]
    assert cif["error"] is None, cif["error"]
    assert isinstance(cif["band_gap"], float) and cif["crystal_system"] and len(json.loads(cif["spacegroup_top3"])) == 3
    assert "views must be a whole number from 1 to 64" in views["error"]
    assert tiff_row["error"].startswith("photo.png: the image is TIFF, not PNG or JPEG")
    assert bomb["error"].startswith("bomb.png") and "decompression bomb" in bomb["error"]
    # per request: a symmetry-operation bomb is refused at once; 257 rows are refused row by row, nothing predicted
    start = time.monotonic()
    (symops,) = _invoke(url, [{"cif": SYMMETRY_BOMB.read_text(), "name": "symops.cif"}], timeout=60)
    assert time.monotonic() - start < 20 and symops["error"].startswith("symops.cif: 7000 symmetry operations")
    many = _invoke(url, [{"image": image}] * 257)
    assert all(r["error"] and "more than the limit of 256" in r["error"] for r in many), many[0]


CRYSTALVISION = str(Path(sys.executable).with_name("crystalvision"))
BARE_PATH = "/usr/bin:/bin"  # no .venv/bin: `mlflow models serve` alone dies here with `exec: uvicorn: not found`


def test_crystalvision_serve_answers_over_http_without_the_environment_on_path(registered, tmp_path) -> None:
    """`crystalvision serve MODEL_URI -p PORT` (host 127.0.0.1) serves the registered model from this environment
    even though PATH has no `uvicorn`; the model is found in the home's registry without MLFLOW_TRACKING_URI."""
    model_uri, store, splits = registered
    assert "MLFLOW_TRACKING_URI" not in os.environ
    port = free_port()
    env = {**os.environ, "PATH": BARE_PATH}
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [CRYSTALVISION, "serve", model_uri, "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_ready(proc, f"http://127.0.0.1:{port}", log_path)
        image = base64.b64encode(store.get_bytes(str(splits.test["image_key"].iloc[0]))).decode()
        (row,) = _invoke(f"http://127.0.0.1:{port}", [{"image": image}])
        assert row["error"] is None and isinstance(row["band_gap"], float), row
    finally:
        stop_group(proc, grace=20)


def test_crystalvision_serve_refuses_an_unknown_model_in_one_line(cv_home) -> None:
    done = subprocess.run(
        [CRYSTALVISION, "serve", "models:/no-such-model@champion", "--port", str(free_port())],
        env={**os.environ, "PATH": BARE_PATH},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot load model models:/no-such-model@champion") and "register" in last
