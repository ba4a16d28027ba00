"""Ray jobs on a real two-node cluster on 127.0.0.1, submitted exactly as the README says."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.support.commands import TINY, TINY_TRAIN
from tests.support.raycluster import RAY, Cluster, two_node_cluster

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def user_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``~`` of the nodes' user: jobs with no CRYSTALVISION_HOME keep their state in ``~/.crystalvision``."""
    return tmp_path_factory.mktemp("user")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, user_home: Path):
    with two_node_cluster(tmp_path_factory.mktemp("raylogs"), {"HOME": str(user_home)}) as c:
        yield c


def _result(log: str) -> dict:
    """The job's whole result: the file its ``result    <file>`` line names, after the human summary."""
    from jobs._common import read_result

    return read_result(log)


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


def _submit(client, entrypoint: str, runtime_env: dict, timeout: float) -> tuple[str, str]:
    from ray.job_submission import JobStatus

    sid = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
    status = _wait(client, sid, timeout=timeout)
    logs = client.get_job_logs(sid)
    assert status == JobStatus.SUCCEEDED, logs[-5000:]
    return sid, logs


def test_jobs_keep_one_registry_across_submits_and_an_edit_of_the_checkout(
    cluster: Cluster, user_home: Path, tmp_path: Path
):
    """README's cluster flow in miniature, with no CRYSTALVISION_HOME set: a pipeline job registers a champion; one
    file of the working dir is edited (a new runtime-env package); the next job finds that champion, in the same
    durable home (~/.crystalvision), not an empty registry inside the new package."""
    import shutil

    import mlflow
    from ray.job_submission import JobSubmissionClient

    work = tmp_path / "checkout"  # the submitted working dir: what a job needs of the checkout
    for folder in ("jobs", "pipelines"):
        shutil.copytree(ROOT / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__"))
    runtime_env = yaml.safe_load((ROOT / "jobs/runtime_env/pipeline.yaml").read_text())
    runtime_env["working_dir"] = str(work)
    runtime_env["py_modules"] = [str(ROOT / p) for p in runtime_env["py_modules"]]
    tiny = [
        *TINY,
        *TINY_TRAIN,
        "evaluate.saliency=false",
        "evaluate.baselines=false",
        "registry.model_name=jobs-e2e",
    ]
    sets = " ".join(f"--set {s}" for s in tiny)
    client = JobSubmissionClient(cluster.dashboard_url)
    first, logs = _submit(
        client, f"python -m jobs.pipeline --config pipelines/quickstart.yaml {sets}", runtime_env, 900
    )
    assert "crystalvision: quickstart finished" in logs, "the job's log ends with the CLI's summary"
    assert logs.rstrip().splitlines()[-1].startswith("result    "), logs[-3000:]
    result = _result(logs)
    assert result["registry"]["promoted"] and result["registry"]["champion_version"] == "1"
    home = user_home / ".crystalvision"
    mlflow_client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    assert mlflow_client.get_run(result["run_id"]).info.status == "FINISHED"

    with (work / "pipelines" / "quickstart.yaml").open("a") as f:
        f.write("# edited\n")
    second, logs = _submit(
        client,
        f"python -m jobs.register --config pipelines/quickstart.yaml {sets} --run-id {result['run_id']}",
        runtime_env,
        300,
    )
    packages = {client.get_job_info(sid).runtime_env["working_dir"] for sid in (first, second)}
    assert len(packages) == 2, "the edit gave the second job a new package"
    decision = _result(logs)
    assert decision["already_registered"] and decision["champion_version"] == "1", decision
    versions = mlflow_client.search_model_versions("name='jobs-e2e'")
    assert [v.run_id for v in versions] == [result["run_id"]]
