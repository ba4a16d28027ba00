"""Ray jobs on a real two-node cluster on 127.0.0.1, submitted exactly as the README says."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.support.raycluster import RAY, Cluster, two_node_cluster

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    with two_node_cluster(tmp_path_factory.mktemp("raylogs")) as c:
        yield c


def _result(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith('{"result"')]
    assert lines, f"no result line in job output:\n{stdout[-3000:]}"
    return json.loads(lines[-1])["result"]


def _wait(client, submission_id: str, timeout: float) -> str:
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + timeout
    while (status := client.get_job_status(submission_id)) not in {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.STOPPED,
    }:
        assert time.monotonic() < deadline, f"job {submission_id} still {status} after {timeout}s"
        time.sleep(2)
    return status


def test_snapshot_job_with_the_cli_runs_on_both_nodes(cluster: Cluster):
    from ray.job_submission import JobStatus, JobSubmissionClient

    cmd = [
        RAY,
        "job",
        "submit",
        "--address",
        cluster.dashboard_url,
        "--working-dir",
        ".",
        "--runtime-env",
        "jobs/runtime_env/snapshot.yaml",
        "--",
        "python",
        "-m",
        "jobs.snapshot",
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=cluster.env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = _result(done.stdout)
    assert result["manifest"]["snapshot_id"].startswith("lmno-") and len(result["verified_on_nodes"]) == 2
    jobs = JobSubmissionClient(cluster.dashboard_url).list_jobs()
    assert [j.status for j in jobs if j.entrypoint.endswith("jobs.snapshot")] == [JobStatus.SUCCEEDED]


def test_quickstart_pipeline_job_logs_and_registers(cluster: Cluster, tmp_path: Path):
    import mlflow
    from ray.job_submission import JobStatus, JobSubmissionClient

    runtime_env = yaml.safe_load((ROOT / "jobs/runtime_env/pipeline.yaml").read_text())
    runtime_env["working_dir"] = str(ROOT)
    runtime_env["py_modules"] = [str(ROOT / p) for p in runtime_env["py_modules"]]
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runtime_env["env_vars"] |= {"CRYSTALVISION_HOME": str(tmp_path / "home"), "MLFLOW_TRACKING_URI": tracking_uri}
    tiny = [
        "snapshot.max_structures=6",
        "render.image_size=32",
        "render.views_per_structure=2",
        "render.num_workers=1",
        "train.backbone=test_efficientnet",
        "train.epochs=1",
        "train.max_steps_per_epoch=2",
        "train.batch_size=4",
        "evaluate.saliency=false",
        "evaluate.baselines=false",
        "registry.model_name=jobs-e2e",
    ]
    entrypoint = "python -m jobs.pipeline --config pipelines/quickstart.yaml " + " ".join(f"--set {s}" for s in tiny)
    client = JobSubmissionClient(cluster.dashboard_url)
    sid = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
    status = _wait(client, sid, timeout=900)
    logs = client.get_job_logs(sid)
    assert status == JobStatus.SUCCEEDED, logs[-5000:]
    result = _result(logs)
    mlflow_client = mlflow.MlflowClient(tracking_uri)
    assert mlflow_client.get_run(result["run_id"]).info.status == "FINISHED"
    versions = mlflow_client.search_model_versions("name='jobs-e2e'")
    assert [v.run_id for v in versions] == [result["run_id"]]
