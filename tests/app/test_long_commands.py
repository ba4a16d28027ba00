"""`crystalvision tune` as a person runs it: trial progress, JSON only with ``--json`` (its result makes the same
short summary), and SIGTERM that takes every process the sweep started with it.

Each command runs as ``python -m crystalvision.app.cli`` in its own session (tests/support/commands.py keeps a list of
every process it started); after it exits none of them may still run. The render command's side:
test_long_render.py.
"""

from __future__ import annotations

import io
import json
import re
import signal
from pathlib import Path

import pytest

from crystalvision.app.summary import MAX_LINES
from tests.support.commands import TINY, Command, interrupted, summary_lines

pytestmark = pytest.mark.slow

MODEL = "lmno-long-commands-test"
TINY_TUNE = [
    *TINY,
    "stages=[snapshot, render, train, evaluate, register]",
    "train.backbone=test_efficientnet",
    "train.epochs=1",
    "train.max_steps_per_epoch=2",
    "train.batch_size=4",
    "tune.num_samples=1",
    "tune.max_concurrent=1",
    "evaluate.saliency=false",
    f"registry.model_name={MODEL}",
]


def test_tune_shows_progress_ends_in_a_summary_and_stops_whole(cv_home: Path) -> None:
    """A sweep with --json (progress, JSON only; its result makes a summary naming the model version it registered),
    and a sweep of another split stopped with SIGTERM while its trial starts (exit 143, no process left, nothing
    registered)."""
    import mlflow
    from mlflow import MlflowClient
    from rich.console import Console

    from crystalvision.app.summary import result_summary

    home = cv_home
    # one sweep, with --json: what the terminal would show after it is its result's summary (the same function
    # prints it without --json, as test_long_render.py's render does)
    tune = ["tune", "-c", "pipelines/quickstart.yaml"]
    swept = Command(home, "tune-1", [*tune, "--json"], TINY_TUNE)
    assert swept.finish() == 0, swept.report()
    result = json.loads(swept.stdout())
    assert re.search(r"^tune\s+1/1 trials", swept.stderr(), flags=re.M), swept.stderr()  # progress
    assert "crystalvision: sweep" not in swept.stderr() and result["sweep"].startswith("tune-quickstart-")
    assert result["registry"]["challenger_version"] == "1"
    console = Console(width=1000, soft_wrap=True, record=True, file=io.StringIO())
    console.print(result_summary(result, "tune.log"))
    summary = summary_lines(console.export_text(), f"crystalvision: sweep {result['sweep']} finished")
    assert len(summary) <= MAX_LINES and not any(line.lstrip().startswith(("{", '"')) for line in summary), summary
    assert any(line.startswith(f"model     {MODEL} v1 -> champion") for line in summary), summary
    assert any(line.startswith("best      trial ") for line in summary)
    assert any(line.startswith("sweep     1 trials: 0 failed") for line in summary), summary

    other = Command(home, "tune-3", tune, [*TINY_TUNE, "split.seed=1"])  # another split: another sweep
    interrupted(other, signal.SIGTERM, lambda: "tune      0/1 trials" in other.stderr(), "trial started")
    assert "run the same command again to resume it" in other.stderr()
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    versions = MlflowClient().search_model_versions(f"name = '{MODEL}'")
    assert [str(v.version) for v in versions] == ["1"], "an interrupted sweep registered a model"
