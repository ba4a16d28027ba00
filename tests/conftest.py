"""Shared fixtures. Every test gets its own CRYSTALVISION_HOME so runs never share state."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLATFORM = ROOT / "platform"
# Make this checkout's package win over any installed copy, for this process and for Ray workers it starts.
sys.path.insert(0, str(PLATFORM))
os.environ["PYTHONPATH"] = os.pathsep.join([str(PLATFORM), *filter(None, [os.environ.get("PYTHONPATH")])])
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
# Ray Train V2 (read by the driver and passed on to its controller): no preemption-watcher actor (one Python process
# less per run). The worker-group poll stays at Ray's 2 s: at 0.25 s, runs under two files' load lost their workers
# ("placement group was removed") in 2 of ~40 Ray Train runs.
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
# Two test files run at once on 2 cores: give worker processes time to start before Train calls it a failure.
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "300")

BUNDLED = PLATFORM / "crystalvision" / "data" / "snapshots" / "lmno"


def _forget_mlflow_state() -> None:
    """MLflow's fluent API keeps the active experiment of the previous test's database: forget it."""
    fluent = sys.modules.get("mlflow.tracking.fluent")
    if fluent is not None and hasattr(fluent, "_active_experiment_id"):
        fluent._active_experiment_id = None


@pytest.fixture
def cv_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh CRYSTALVISION_HOME (object store, MLflow db, Ray storage) for one test."""
    from crystalvision.core.settings import get_settings

    home = tmp_path / "cvhome"
    monkeypatch.setenv("CRYSTALVISION_HOME", str(home))
    for var in (
        "MLFLOW_TRACKING_URI",
        "CRYSTALVISION_MLFLOW_TRACKING_URI",
        "CRYSTALVISION_OBJECT_STORE_URI",
        "MLFLOW_EXPERIMENT_ID",
        "MLFLOW_EXPERIMENT_NAME",
    ):
        monkeypatch.delenv(var, raising=False)
    _forget_mlflow_state()
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def bundled_snapshot():
    from crystalvision.data.snapshot import load_snapshot

    return load_snapshot(BUNDLED)


MP_TEST_KEY = "K3y" + "x" * 26 + "S3c"  # 32 characters, like a real Materials Project key


@pytest.fixture
def mp_api(monkeypatch: pytest.MonkeyPatch, cv_home: Path):
    """A local replay of the Materials Project (db 2025.01.01, four materials); settings point mp-api at it."""
    from crystalvision.core.settings import get_settings
    from tests.support.mp_replay import ReplayServer, bundled_docs

    with ReplayServer("2025.01.01", bundled_docs(4)) as server:
        monkeypatch.setenv("MP_API_KEY", MP_TEST_KEY)
        monkeypatch.setenv("CRYSTALVISION_MP_ENDPOINT", server.url)
        monkeypatch.setenv("CRYSTALVISION_RETRY_BACKOFF_S", "0.01")
        monkeypatch.setenv("CRYSTALVISION_MAX_RETRIES", "5")
        get_settings.cache_clear()
        yield server
    get_settings.cache_clear()
