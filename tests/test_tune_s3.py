"""Ray Tune on s3:// storage (moto on 127.0.0.1): the sweep's state and the trials' Train checkpoints land in the
bucket; the driver is SIGKILLed mid-sweep, and a rerun of the same config restores the sweep from S3
(``Tuner.can_restore``/``restore`` with ``storage_filesystem``) and finishes it without rerunning a finished trial."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .support.s3 import CREDENTIALS, S3Server, moto_s3
from .test_faults import TUNE_OVERRIDES, kill_sweep_when, rerun_sweep, tune_process

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "ray_results"


def _tune_process(s3: S3Server, home: Path, log_path: Path) -> subprocess.Popen:
    return tune_process(home, log_path, {
        **CREDENTIALS,
        "CRYSTALVISION_RAY_STORAGE_PATH": f"s3://{s3.bucket}/{PREFIX}",
        "CRYSTALVISION_S3_ENDPOINT_URL": s3.endpoint_url,
        "AWS_ENDPOINT_URL_S3": s3.endpoint_url,
    })  # fmt: skip


def _saved_state(s3: S3Server, sweep: str) -> str:
    """The text of the sweep's newest experiment state in the bucket ('' while there is none)."""
    keys = [k for k in s3.keys(f"{PREFIX}/{sweep}/") if k.rsplit("/", 1)[-1].startswith("experiment_state")]
    if not keys:
        return ""
    return s3.client().get_object(Bucket=s3.bucket, Key=max(keys))["Body"].read().decode()


def _weights_of_finished_trials(home: Path) -> dict[str, int]:
    """Model weights each trial saved when it finished: path -> mtime (ns)."""
    return {str(p): p.stat().st_mtime_ns for p in (home / "models").glob("tune-*/weights.pt")}


def test_tune_on_s3_is_restored_from_the_bucket_after_the_driver_is_killed(tmp_path: Path) -> None:
    from crystalvision.config import load_pipeline
    from crystalvision.tune import sweep_name

    sweep = sweep_name(load_pipeline(ROOT / "pipelines/quickstart.yaml", TUNE_OVERRIDES))
    home = tmp_path / "home"
    with moto_s3("cv-tune") as s3:
        # one trial finished, and the state saved in the bucket says so
        kill_sweep_when(_tune_process(s3, home, tmp_path / "first.log"), tmp_path / "first.log",
                        lambda: "TERMINATED" in _saved_state(s3, sweep), "no trial finished in time")  # fmt: skip
        assert "SUMMARY" not in (tmp_path / "first.log").read_text(), "killed mid-sweep, not after it"
        keys = s3.keys(f"{PREFIX}/")
        assert any(k.startswith(f"{PREFIX}/{sweep}/experiment_state") for k in keys), "Tune's state lives in S3"
        assert any(k.startswith(f"{PREFIX}/{sweep}-") and "/epoch_" in k for k in keys), keys
        assert not (home / "ray_results").exists(), "nothing is kept on local disk"
        finished = _weights_of_finished_trials(home)
        assert len(finished) == 1

        out, summary = rerun_sweep(_tune_process(s3, home, tmp_path / "second.log"), tmp_path / "second.log")
        assert f"resuming sweep {sweep} from {s3.bucket}/{PREFIX}/{sweep}" in out, "restored from S3"
        assert summary["n_trials"] == 2 and summary["n_errors"] == 0 and summary["best_run_id"]
        after = _weights_of_finished_trials(home)
        assert len(after) == 2 and all(after[p] == t for p, t in finished.items()), "a finished trial ran again"
