"""`crystalvision tune` as a person runs it: SIGTERM takes every process the sweep started with it. (A sweep run to
its end with ``--json``, its progress and summary: test_tune_s3.py, whose CLI run restores a killed sweep.)

Each command runs as ``python -m crystalvision.app.cli`` in its own session (tests/support/commands.py keeps a list of
every process it started); after it exits none of them may still run. The render command's side:
test_long_render.py.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.support.commands import TINY, TINY_TRAIN, Command, interrupted

pytestmark = pytest.mark.slow

MODEL = "lmno-long-commands-test"
TINY_TUNE = [
    *TINY,
    "stages=[snapshot, render, train, evaluate, register]",
    *TINY_TRAIN,
    "tune.num_samples=1",
    "tune.max_concurrent=1",
    "evaluate.saliency=false",
    f"registry.model_name={MODEL}",
]


def test_tune_stopped_with_sigterm_stops_whole_and_registers_nothing(cv_home: Path) -> None:
    """A sweep stopped with SIGTERM while its trial starts: exit 143, no process left, nothing registered."""
    import mlflow
    from mlflow import MlflowClient

    home = cv_home
    sweep = Command(home, "tune", ["tune", "-c", "pipelines/quickstart.yaml"], TINY_TUNE)
    interrupted(sweep, signal.SIGTERM, lambda: "tune      0/1 trials" in sweep.stderr(), "trial started")
    assert "run the same command again to resume it" in sweep.stderr()
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    assert MlflowClient().search_model_versions(f"name = '{MODEL}'") == [], "an interrupted sweep registered a model"
