"""Ray Tune on s3:// storage (moto on 127.0.0.1), the driver SIGKILLed mid-sweep and restored by
`crystalvision tune` as a person runs it.

The tiny sweep (2 trials, 1 epoch, 32 px, Optuna search; then evaluate and register the best trial) runs in its own
process group. Its state and the trials' Train checkpoints land in the bucket; once the state saved there says one
trial finished, the driver and the local Ray cluster it started are killed. The same sweep run again with the CLI
(``--json``) restores it from S3 (``Tuner.can_restore`` / ``restore`` with ``storage_filesystem``: one code path for
local and s3:// storage), finishes it without rerunning the finished trial, closes the same MLflow parent run with one
child run per trial and a loadable best model, registers it, shows trial progress and prints JSON only; its result
makes the same short summary a person sees without ``--json``, and no process it started is left. (SIGTERM during a
sweep: test_long_commands.py.)
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from crystalvision.app.summary import MAX_LINES
from tests.support.commands import TINY, TINY_TRAIN, Command, summary_lines
from tests.support.procs import stop_group
from tests.support.s3 import CREDENTIALS, S3Server, moto_s3

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "ray_results"


MODEL = "lmno-tune-s3-test"
TUNE_SCRIPT = """
import json, logging, sys
from crystalvision.core.pipeline_file import load_pipeline, parse_overrides
from crystalvision.core.logs import setup_logging
from crystalvision.app.tune import run_tune
setup_logging()
summary = run_tune(load_pipeline("pipelines/quickstart.yaml", parse_overrides(json.loads(sys.argv[1]))))
print("SUMMARY " + json.dumps(summary, default=str), flush=True)
"""
TUNE_SETS = [  # as `--set` items: the script and the CLI parse them alike, so both make the same sweep
    "stages=[snapshot, render, train, evaluate, register]",
    *TINY,
    *TINY_TRAIN,
    "train.max_failures=0",
    "evaluate.saliency=false",
    "tune.num_samples=2",
    "tune.max_concurrent=1",
    "tune.search=optuna",
    f"registry.model_name={MODEL}",
]


def _tune_run(home: Path, log_path: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """The tiny sweep in its own process group (so a test can SIGKILL the driver and all it started)."""
    env = {**os.environ, "CRYSTALVISION_HOME": str(home), "CRYSTALVISION_RAY_NUM_CPUS": "2", **(extra_env or {})}
    env["TUNE_GLOBAL_CHECKPOINT_S"] = "1"
    for var in ("RAY_ADDRESS", "CRYSTALVISION_RAY_ADDRESS", "MLFLOW_TRACKING_URI", "CRYSTALVISION_OBJECT_STORE_URI"):
        env.pop(var, None)
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-c", TUNE_SCRIPT, json.dumps(TUNE_SETS)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _kill_sweep_when(proc: subprocess.Popen, log_path: Path, ready: Callable[[], bool], late: str) -> None:
    """SIGKILL the sweep's process group (the driver and the local Ray cluster it started) once ``ready()``."""
    try:
        deadline = time.monotonic() + 400
        while not ready():
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, late
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        stop_group(proc)


def _s3_env(s3: S3Server) -> dict[str, str]:
    return {
        **CREDENTIALS,
        "CRYSTALVISION_RAY_STORAGE_PATH": f"s3://{s3.bucket}/{PREFIX}",
        "CRYSTALVISION_S3_ENDPOINT_URL": s3.endpoint_url,
        "AWS_ENDPOINT_URL_S3": s3.endpoint_url,
    }


def _rerun_with_the_cli(s3: S3Server, home: Path) -> tuple[Command, dict]:
    """`crystalvision tune --json` of the same sweep; it must succeed and leave no process. It and its result."""
    rerun = Command(home, "second", ["tune", "-c", "pipelines/quickstart.yaml", "--json"], TUNE_SETS, _s3_env(s3))
    try:
        assert rerun.finish(timeout=500) == 0, rerun.report()
        left = rerun.left_running()
    finally:
        rerun.kill_leftovers()
    assert not left, f"still running after the command exited: {left}"
    return rerun, json.loads(rerun.stdout())


def _check_what_a_person_sees(rerun: Command, result: dict) -> None:
    """Progress on stderr, JSON only on stdout; the result makes a short summary naming the registered model (the
    same function prints it without ``--json``, as test_long_render.py's render does)."""
    from rich.console import Console

    from crystalvision.app.summary import result_summary

    assert re.search(r"^tune\s+\d/2 trials", rerun.stderr(), flags=re.M), rerun.stderr()  # progress
    assert "crystalvision: sweep" not in rerun.stderr()
    console = Console(width=1000, soft_wrap=True, record=True, file=io.StringIO())
    console.print(result_summary(result, "tune.log"))
    summary = summary_lines(console.export_text(), f"crystalvision: sweep {result['sweep']} finished")
    assert len(summary) <= MAX_LINES and not any(line.lstrip().startswith(("{", '"')) for line in summary), summary
    assert any(line.startswith(f"model     {MODEL} v1 -> champion") for line in summary), summary
    assert any(line.startswith("best      trial ") for line in summary)
    assert any(line.startswith("sweep     2 trials: 0 failed") for line in summary), summary


def _sweep_in(log_path: Path) -> str:
    """The sweep's name as its driver logged it (named from the data's content digest), '' before that."""
    found = re.search(r"sweep (tune-[\w.-]+): \d+ trials", log_path.read_text() if log_path.exists() else "")
    return found.group(1) if found else ""


def _saved(s3: S3Server, sweep: str, prefix: str) -> bytes:
    """The newest saved object of the sweep whose name starts with ``prefix`` (b'' while there is none)."""
    if not sweep:
        return b""
    keys = [k for k in s3.keys(f"{PREFIX}/{sweep}/") if k.rsplit("/", 1)[-1].startswith(prefix)]
    return s3.client().get_object(Bucket=s3.bucket, Key=max(keys))["Body"].read() if keys else b""


def _one_finished_and_saved_whole(s3: S3Server, sweep: str) -> bool:
    """One trial finished, and the searcher saved in the bucket knows every trial the experiment state lists.

    Tune uploads the experiment state before the searcher, one file after another: killed in between, the bucket holds
    a searcher older than the trials (what ``ResumableOptunaSearch`` survives; tests/app/test_tune_search.py). This
    test kills the driver once the two agree, so that it tests the restore of a whole state, exactly 2 trials.
    """
    state = _saved(s3, sweep, "experiment_state").decode()
    ids = set(re.findall(r'trial_id\\?": \\?"([0-9a-f]+)', state))
    searcher = _saved(s3, sweep, "searcher-state")
    return "TERMINATED" in state and bool(ids) and all(i.encode() in searcher for i in ids)


def _weights_of_finished_trials(home: Path) -> dict[str, int]:
    """Model weights each trial saved when it finished: path -> mtime (ns)."""
    return {str(p): p.stat().st_mtime_ns for p in (home / "models").glob("tune-*/weights.pt")}


def _parent_runs(client: MlflowClient, sweep: str) -> list:
    """The sweep's MLflow parent runs (there must only ever be one)."""
    experiment = client.get_experiment_by_name("crystalvision")
    return client.search_runs([experiment.experiment_id], f"tags.tune_parent_of = '{sweep}'") if experiment else []


def test_tune_on_s3_is_restored_from_the_bucket_after_the_driver_is_killed(tmp_path: Path) -> None:
    home, first_log = tmp_path / "home", tmp_path / "first.log"
    with moto_s3("cv-tune") as s3:
        # one trial finished, and the state saved in the bucket says so
        one_finished = lambda: _one_finished_and_saved_whole(s3, _sweep_in(first_log))  # noqa: E731
        _kill_sweep_when(_tune_run(home, first_log, _s3_env(s3)), first_log, one_finished, "no trial finished in time")
        sweep = _sweep_in(first_log)
        assert "SUMMARY" not in (tmp_path / "first.log").read_text(), "killed mid-sweep, not after it"
        keys = s3.keys(f"{PREFIX}/")
        assert any(k.startswith(f"{PREFIX}/{sweep}/experiment_state") for k in keys), "Tune's state lives in S3"
        assert any(k.startswith(f"{PREFIX}/{sweep}-") and "/epoch_" in k for k in keys), keys
        assert not (home / "ray_results").exists(), "nothing is kept on local disk"
        finished = _weights_of_finished_trials(home)
        assert len(finished) == 1
        client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")  # only now: the sweep created the database
        [killed_parent] = _parent_runs(client, sweep)
        assert killed_parent.info.status == "RUNNING", "the killed driver could not close its parent run"

        rerun, summary = _rerun_with_the_cli(s3, home)
        assert f"resuming sweep {sweep} from {s3.bucket}/{PREFIX}/{sweep}" in rerun.log(), "restored from S3"
        assert summary["sweep"] == sweep and summary["n_trials"] == 2 and summary["n_errors"] == 0
        assert summary["best_run_id"] and summary["registry"]["challenger_version"] == "1"
        _check_what_a_person_sees(rerun, summary)
        after = _weights_of_finished_trials(home)
        assert len(after) == 2 and all(after[p] == t for p, t in finished.items()), "a finished trial ran again"

    # MLflow: the same parent run, now closed with the best trial's config, and one child run per trial
    [parent] = _parent_runs(client, sweep)
    assert parent.info.run_id == killed_parent.info.run_id == summary["parent_run_id"]
    assert parent.info.status == "FINISHED" and "best_val_loss" in parent.data.metrics
    assert float(parent.data.params["best.lr"]) == pytest.approx(summary["best_config"]["lr"])
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 2 and summary["best_run_id"] in {c.info.run_id for c in children}
    for child in children:
        assert "val_loss" in child.data.metrics and "cfg.train.lr" in child.data.params
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    assert mlflow.pyfunc.load_model(summary["model_uri"]).metadata.get_input_schema() is not None
