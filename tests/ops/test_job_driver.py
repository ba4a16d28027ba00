"""A job driver outlives its working dir: Ray deletes a runtime-env package once no worker of that node uses it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import mlflow
import pytest

from crystalvision.core import logs
from jobs import _common

ROOT = Path(__file__).resolve().parents[2]


def test_the_job_driver_keeps_tracking_after_its_working_dir_is_deleted(
    cv_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    work = tmp_path / "working_dir_files" / "pkg"  # what `ray job submit --working-dir .` unpacks on the node
    (work / "pipelines").mkdir(parents=True)
    shutil.copy(ROOT / "pipelines/quickstart.yaml", work / "pipelines/quickstart.yaml")
    monkeypatch.chdir(work)
    monkeypatch.setattr(logs, "setup_logging", lambda *a, **k: None)  # keep this process's logging as it is
    monkeypatch.setattr(sys, "argv", ["jobs.pipeline", "--config", "pipelines/quickstart.yaml"])

    def main(args) -> dict:
        cfg = _common.load_config(args)
        shutil.rmtree(work)  # the other node's runtime-env agent deletes the package mid-job
        from crystalvision.track.tracking import configure_mlflow

        configure_mlflow()
        with mlflow.start_run() as run:
            mlflow.log_param("config", cfg.name)
            mlflow.log_text("still here", "note.txt")
        return {"run_id": run.info.run_id}

    _common.run(main, _common.parser("test job"))
    result = _common.read_result(capsys.readouterr().out)
    run = mlflow.get_run(result["run_id"])
    assert run.data.params["config"] == "quickstart"
    assert run.info.artifact_uri.startswith(cv_home.resolve().as_uri())
    assert Path.cwd() == cv_home.resolve(), "the driver works from its home folder, not the package it was given"


def test_readme_cluster_gives_each_node_its_own_temp_dir_and_the_bench_starts_that_cluster() -> None:
    """Two raylets sharing a temp dir delete each other's job packages; the bench must try README's own lines."""
    from bench.job_submissions import readme_cluster

    starts, address = readme_cluster()
    assert len(starts) == 2 and starts[0][:3] == ["ray", "start", "--head"], starts
    temp_dirs = [[a for a in cmd if a.startswith("--temp-dir=")] for cmd in starts]
    assert all(len(t) == 1 for t in temp_dirs) and temp_dirs[0] != temp_dirs[1], temp_dirs
    assert address.startswith("http://127.0.0.1:")


def test_path_arguments_and_settings_resolve_against_the_working_dir(
    cv_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRYSTALVISION_OBJECT_STORE_URI", "store")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///runs/mlflow.db")
    args = argparse.Namespace(config="pipelines/q.yaml", out="snaps", uri="s3://bucket/snap")
    assert _common.pin_paths(args) == cv_home
    assert (args.config, args.out, args.uri) == (
        f"{tmp_path}/pipelines/q.yaml",
        f"{tmp_path}/snaps",
        "s3://bucket/snap",
    )
    from crystalvision.core.settings import get_settings

    settings = get_settings()
    assert settings.storage.object_store_uri == f"{tmp_path}/store"
    assert settings.tracking.mlflow_tracking_uri == f"sqlite:///{tmp_path}/runs/mlflow.db"


def _package(tmp_path: Path) -> Path:
    """Where ``ray job submit --working-dir .`` unpacks the checkout on a node (Ray deletes it after the job)."""
    work = tmp_path / "session" / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123abcd"
    work.mkdir(parents=True)
    return work


def test_a_job_in_a_ray_package_keeps_its_state_in_a_durable_home(
    cv_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    from crystalvision.core.settings import get_settings

    monkeypatch.chdir(_package(tmp_path))
    monkeypatch.delenv("CRYSTALVISION_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    home = _common.pin_paths(argparse.Namespace(config="pipelines/quickstart.yaml"))
    assert home == tmp_path / "user" / ".crystalvision"
    assert get_settings().tracking.mlflow_tracking_uri == f"sqlite:///{home / 'mlflow.db'}"


@pytest.mark.parametrize(
    ("var", "value"), [("CRYSTALVISION_HOME", ".crystalvision"), ("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")]
)
def test_a_job_refuses_state_inside_its_package_naming_the_variable(
    cv_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, var: str, value: str
) -> None:
    monkeypatch.chdir(_package(tmp_path))
    monkeypatch.setenv(var, value)
    monkeypatch.setattr(logs, "setup_logging", lambda *a, **k: None)
    monkeypatch.setattr(sys, "argv", ["jobs.pipeline"])
    with pytest.raises(SystemExit) as exited:
        _common.run(lambda args: {"ran": True}, _common.parser("test job"))
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: {var}=") and "runtime-env package" in err and "durable storage" in err


def test_a_job_log_ends_with_the_summary_and_the_file_of_the_whole_result(
    cv_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)  # the job moves into its home; the test's working dir comes back after it
    monkeypatch.setattr(logs, "setup_logging", lambda *a, **k: None)
    monkeypatch.setattr(sys, "argv", ["jobs/pipeline.py"])
    result = {
        "pipeline": "quickstart",
        "snapshot_id": "lmno-x",
        "n_structures": 5,
        "run_id": "r1",
        "metrics": {"test_acc_crystal_system": 0.5, **{f"m{i}": 0.1 for i in range(500)}},
        "registry": {
            "model_name": "m",
            "challenger_version": "2",
            "promoted": False,
            "champion_version": "1",
            "reason": "better",
        },
    }
    _common.run(lambda args: result, _common.parser("test job"))
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "crystalvision: quickstart finished" and "crystal system acc" in "\n".join(lines)
    assert "model     m v2 -> challenger; champion stays v1 (better)" in lines
    assert lines[-1].startswith("result    ") and max(map(len, lines)) < 200, "no JSON line in the log"
    assert _common.read_result("\n".join(lines)) == result
    assert Path(lines[-1].split()[-1]).parent == cv_home.resolve() / "jobs"
