"""What a person sees: `crystalvision pipeline run` in a terminal that is not a TTY (CI, `ray job` logs), and the run
and the registered model in the real MLflow UI (a real server process, its REST API, and headless Chromium)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.browser import browser, page_text, require_browser
from tests.support.procs import free_port, stop_group, wait_http

ROOT = Path(__file__).resolve().parents[2]
MODEL = "lmno-person-test"
TINY = [
    "snapshot.max_structures=5",
    "render.views_per_structure=3",
    "render.image_size=32",
    "split.test_fraction=0.3",
    "train.backbone=test_efficientnet",
    "train.epochs=2",
    "train.max_steps_per_epoch=2",
    "evaluate.saliency_samples=2",
    f"registry.model_name={MODEL}",
]
pytestmark = pytest.mark.slow


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 with a SQLite store; its URL. MLflow's job runner (its GenAI jobs: huey
    consumers, several more Python processes to start, which no crystalvision code or UI page here uses) stays off."""
    port = free_port()
    log = (tmp_path / "mlflow-server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", timeout=120, alive=lambda: proc.poll() is None)
        yield url
    finally:
        stop_group(proc, grace=3)  # its graceful stop is not under test here (it takes ~15 s)
        log.close()


def _run_pipeline(home: Path, url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {
        "CRYSTALVISION_HOME": str(home),
        "CRYSTALVISION_MLFLOW_TRACKING_URI": url,
        "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1",
    }
    args = [sys.executable, "-m", "crystalvision.app.cli", "pipeline", "run", str(ROOT / "pipelines/quickstart.yaml")]
    for item in TINY:
        args += ["--set", item]
    return subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)


def _api(url: str, path: str, **params: str) -> dict:
    answer = requests.get(f"{url}/api/2.0/mlflow/{path}", params=params, timeout=60)
    answer.raise_for_status()
    return answer.json()


def test_quiet_run_summary_and_a_self_explaining_mlflow_ui(tmp_path: Path, mlflow_server: str) -> None:
    require_browser()
    done = _run_pipeline(tmp_path / "home", mlflow_server)
    assert done.returncode == 0, done.stdout + done.stderr
    screen = done.stdout + done.stderr
    (tmp_path / "screen.txt").write_text(screen)

    # The terminal: short, no carriage-return frames, Ray's internals in the log file, a summary at the end.
    lines = screen.splitlines()
    assert len(lines) <= 60, screen
    assert "\r" not in screen
    assert lines[-1].startswith("log ")  # nothing after the summary (Ray stopped inside the quiet block)
    for noise in ("PlacementGroupCleaner", "core_worker", "Running Dataset", "DeprecationWarning", "(pid="):
        assert noise not in screen, noise
    assert any(line.startswith("render") for line in lines) and any(line.startswith("train") for line in lines)
    log_files = list((tmp_path / "home" / "logs").glob("*-pipeline-*.log"))
    assert len(log_files) == 1 and "Ray" in log_files[0].read_text(errors="replace")
    run_line = next(line for line in lines if line.startswith("run "))
    run_id = run_line.split()[-1]
    assert f"{mlflow_server}/#/experiments/" in screen and f"/runs/{run_id}" in screen
    assert "majority" in screen and "1-NN" in screen and "crystal system acc" in screen
    assert f"{MODEL} v1 -> champion" in screen
    report = next(line for line in lines if line.startswith("report ")).split()[-1]
    assert Path(report).is_file() and Path(report).name == "report.html"

    # The REST API: description, datasets, system metrics; the registered model and version explain themselves.
    run = _api(mlflow_server, "runs/get", run_id=run_id)["run"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    description = tags["mlflow.note.content"]
    assert "quickstart" in description and "grouped" in description and "| band gap | R² |" in description
    inputs = run["inputs"]["dataset_inputs"]
    contexts = {next(t["value"] for t in i["tags"] if t["key"] == "mlflow.data.context"): i["dataset"] for i in inputs}
    assert set(contexts) == {"snapshot", "training"}
    snapshot_id = tags["snapshot_id"]
    assert contexts["snapshot"]["name"] == snapshot_id and contexts["snapshot"]["digest"]
    assert json.loads(contexts["training"]["source"])["uri"].endswith(".parquet")  # the render stage's labels table
    metric_keys = {m["key"] for m in run["data"]["metrics"]}
    assert any(k.startswith("system/cpu") for k in metric_keys), sorted(metric_keys)[:20]
    model = _api(mlflow_server, "registered-models/get", name=MODEL)["registered_model"]
    assert "band gap" in model["description"] and "champion" in model["description"]
    version = _api(mlflow_server, "model-versions/get", name=MODEL, version="1")["model_version"]
    vtags = {t["key"]: t["value"] for t in version["tags"]}
    assert vtags["training_snapshot"] == snapshot_id and vtags["split_protocol"] == "grouped"
    assert vtags["promote_metric"] and "CGCNN" in vtags["label_source.band_gap"]
    assert snapshot_id in version["description"]

    # The UI itself, as a person opens it.
    experiment_id = run["info"]["experiment_id"]
    with browser() as driver:
        text = page_text(
            driver,
            f"{mlflow_server}/#/experiments/{experiment_id}/runs/{run_id}",
            ["Description", "quickstart: EfficientNet-B0", "Datasets", snapshot_id],
        )
        assert "Split by image" not in text  # the quickstart splits by structure
        page_text(driver, f"{mlflow_server}/#/models/{MODEL}", ["Predicts band gap", "champion"])
