"""`watch`: detection, ingest, dedup and the quiet no-change path, against a replay of the Materials Project.

The retrain step here is a recorder (or a process that holds the lock): no Ray Train run, so this file runs in the
suite's light lane. The retrain with the real pipeline: tests/system/test_secrets.py."""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path

import pytest

from crystalvision.app.watch import job_id, watch_key, watch_once
from crystalvision.core.config import PipelineConfig
from crystalvision.core.pipeline_file import load_pipeline
from crystalvision.data.snapshot import load_snapshot

ROOT = Path(__file__).resolve().parents[2]


class Recorder:
    """A retrain step that remembers the configs it was given (thread-safe)."""

    def __init__(self, delay: float = 0.0, fail: bool = False):
        self.configs: list[PipelineConfig] = []
        self.delay, self.fail = delay, fail
        self._lock = threading.Lock()

    def __call__(self, cfg: PipelineConfig) -> dict:
        with self._lock:
            self.configs.append(cfg)
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("training blew up")
        return {"run_id": f"run-{len(self.configs)}"}


@pytest.fixture
def cfg() -> PipelineConfig:
    return load_pipeline(ROOT / "pipelines" / "watch.yaml")


def _changed(docs: list[dict]) -> list[dict]:
    docs = copy.deepcopy(docs)
    docs[1]["band_gap"] = docs[1]["band_gap"] + 0.5
    return docs


def test_first_run_ingests_and_retrains_then_stays_quiet(mp_api, cfg):
    retrain = Recorder()
    first = watch_once(cfg, retrain=retrain)
    assert first["status"] == "retrained" and first["job_id"] == job_id(watch_key(cfg), "2025.01.01")
    assert len(retrain.configs) == 1
    snap = load_snapshot(retrain.configs[0].snapshot.uri)
    assert snap.manifest.db_version == "2025.01.01" and snap.manifest.n_records == 4
    assert cfg.snapshot.uri is None  # the caller's config is not modified

    n_before = len(mp_api.requests)
    second = watch_once(cfg, retrain=retrain)
    assert second["status"] == "unchanged" and len(retrain.configs) == 1
    assert all(r.path == "/heartbeat" for r in mp_api.requests[n_before:])  # no query when the version is the same


def test_new_version_with_changed_entry_retrains(mp_api, cfg):
    retrain = Recorder()
    watch_once(cfg, retrain=retrain)
    mp_api.publish("2025.06.01", _changed(mp_api.docs))
    result = watch_once(cfg, retrain=retrain)
    assert result["status"] == "retrained" and result["previous_db_version"] == "2025.01.01"
    assert result["job_id"].endswith("2025.06.01") and len(retrain.configs) == 2
    old, new = (load_snapshot(c.snapshot.uri) for c in retrain.configs)
    assert old.manifest.content_sha256 != new.manifest.content_sha256
    assert new.records[1].band_gap == pytest.approx(old.records[1].band_gap + 0.5)
    assert watch_once(cfg, retrain=retrain)["status"] == "unchanged"


def test_new_version_with_identical_materials_does_not_retrain(mp_api, cfg):
    retrain = Recorder()
    watch_once(cfg, retrain=retrain)
    mp_api.publish("2025.06.01", mp_api.docs)
    result = watch_once(cfg, retrain=retrain)
    assert result == result | {"status": "unchanged", "reason": "same materials"}
    assert len(retrain.configs) == 1
    assert watch_once(cfg, retrain=retrain)["reason"] == "same db_version"


def test_force_retrains_without_a_change(mp_api, cfg):
    retrain = Recorder()
    watch_once(cfg, retrain=retrain)
    assert watch_once(cfg, force=True, retrain=retrain)["status"] == "retrained"
    assert len(retrain.configs) == 2


def test_two_concurrent_watchers_retrain_once(mp_api, cfg):
    retrain = Recorder(delay=1.0)
    barrier = threading.Barrier(2)
    results: list[dict] = []

    def run() -> None:
        barrier.wait()
        results.append(watch_once(cfg, retrain=retrain))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(retrain.configs) == 1
    assert sorted(r["status"] for r in results) in (["locked", "retrained"], ["already-done", "retrained"])
    assert len({r["job_id"] for r in results}) == 1


def test_failed_retrain_releases_the_lock_and_is_retried(mp_api, cfg, cv_home: Path):
    with pytest.raises(RuntimeError, match="blew up"):
        watch_once(cfg, retrain=Recorder(fail=True))
    assert not list((cv_home / "watch").rglob("*.lock"))
    retrain = Recorder()
    assert watch_once(cfg, retrain=retrain)["status"] == "retrained"


_HELD_WATCHER = """
import sys, threading
from pathlib import Path
from crystalvision.core.pipeline_file import load_pipeline
from crystalvision.app.watch import watch_once

def retrain(cfg):
    Path(sys.argv[1]).write_text("started")
    threading.Event().wait()  # hold the lock until killed

watch_once(load_pipeline(sys.argv[2]), retrain=retrain)
"""


def _start_holder(tmp_path: Path, lease_s: str = "300"):
    """A watcher in its own process that takes the job lock and then blocks in its retrain step."""
    import os
    import subprocess
    import sys

    marker = tmp_path / "started"
    env = dict(os.environ, CRYSTALVISION_WATCH_LEASE_S=lease_s)
    proc = subprocess.Popen(
        [sys.executable, "-c", _HELD_WATCHER, str(marker), str(ROOT / "pipelines" / "watch.yaml")],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not marker.exists():  # the holder's own signal that it owns the lock
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the holder never reached its retrain step"
        time.sleep(0.05)
    return proc


def test_sigkilled_watcher_lock_is_taken_over(mp_api, cfg, cv_home: Path, tmp_path: Path):
    """A live holder keeps the lock, for its own database version and for a newer one (two versions share one
    lock); once it is SIGKILLed, the lock it left behind is taken over."""
    import signal

    proc = _start_holder(tmp_path)  # retraining 2025.01.01
    try:
        retrain = Recorder()
        assert watch_once(cfg, retrain=retrain)["status"] == "locked"  # a live holder keeps it
        mp_api.publish("2025.06.01", _changed(mp_api.docs))
        assert watch_once(cfg, retrain=retrain)["status"] == "locked" and not retrain.configs
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert list((cv_home / "watch").rglob("*.lock")), "SIGKILL leaves the lock behind"
    result = watch_once(cfg, retrain=retrain)
    assert result["status"] == "retrained" and result["job_id"].endswith("2025.06.01")
    assert len(retrain.configs) == 1 and not list((cv_home / "watch").rglob("*.lock"))


def _lock_path(cv_home: Path, cfg: PipelineConfig) -> Path:
    return cv_home / "watch" / watch_key(cfg) / "retrain.lock"


def _held_lock(cv_home: Path) -> Path:
    """The one lock a running watcher holds."""
    (lock,) = (cv_home / "watch").rglob("*.lock")
    return lock


def test_expired_lease_of_another_host_is_taken_over(mp_api, cfg, cv_home: Path):
    import json

    lock = _lock_path(cv_home, cfg)
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"host": "gone-node", "pid": 1, "token": "t", "expires_at": time.time() - 1}))
    assert watch_once(cfg, retrain=Recorder())["status"] == "retrained"


def test_hung_holder_past_its_lease_exits_2_with_a_clear_message_and_sigterm_frees_it(
    mp_api, cfg, cv_home: Path, tmp_path: Path
):
    """A real watcher whose retrain hangs (no progress): its lease is not renewed, so the next watcher exits 2 naming
    it instead of reporting "locked" until the CronJob deadline; SIGTERM stops it and its clean-up releases the lock
    (exit 143), so the next watcher retrains. (A SIGKILLed holder's lock: test_sigkilled_watcher_lock_is_taken_over.)"""
    import json
    import signal

    from typer.testing import CliRunner

    from crystalvision.app.cli import app

    proc = _start_holder(tmp_path, lease_s="2")
    try:
        lock = _held_lock(cv_home)
        while json.loads(lock.read_text())["expires_at"] > time.time() - 0.5:  # no progress: the lease runs out
            assert proc.poll() is None
            time.sleep(0.2)
        result = CliRunner().invoke(app, ["watch", "--config", str(ROOT / "pipelines" / "watch.yaml")])
        assert result.exit_code == 2, result.output
        assert "hung" in result.output and "lease expired" in result.output and str(proc.pid) in result.output
        assert json.loads(lock.read_text())["pid"] == proc.pid, "a live holder's lock is never taken"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        assert not list((cv_home / "watch").rglob("*.lock")), "the clean-up ran on SIGTERM"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    assert watch_once(cfg, retrain=Recorder())["status"] == "retrained"


def test_a_retrain_whose_lock_was_taken_over_stops_at_its_next_progress_point(
    mp_api, cfg, cv_home: Path, monkeypatch: pytest.MonkeyPatch
):
    """Renewal is compare-and-set: it never overwrites the new holder's lock, and the old retrain stops."""
    import json

    from crystalvision.core import progress
    from crystalvision.ops.lease import LeaseLostError

    monkeypatch.setenv("CRYSTALVISION_WATCH_LEASE_S", "1")
    went_on: list[bool] = []

    def retrain(_cfg: PipelineConfig) -> dict:
        time.sleep(0.3)
        lock = _held_lock(cv_home)
        taken = json.loads(lock.read_text()) | {"host": "other-node", "pid": 1, "token": "the-new-holder"}
        lock.write_text(json.dumps(taken))  # another scheduler took the expired lease over
        progress.emit("train", 1, 2, unit="epoch")
        time.sleep(3)
        went_on.append(True)
        return {}

    with pytest.raises(LeaseLostError, match="other-node"):
        watch_once(cfg, retrain=retrain)
    assert not went_on, "the retrain went on after losing its lock"
    holder = json.loads(_held_lock(cv_home).read_text())
    assert holder["token"] == "the-new-holder", "the renewal overwrote the new holder"


def test_changed_settings_retrain_and_versions_never_move_back(mp_api, cfg):
    retrain = Recorder()
    assert watch_once(cfg, retrain=retrain)["status"] == "retrained"
    longer = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": cfg.train.epochs + 1})})
    assert watch_once(longer, retrain=retrain)["status"] == "retrained"  # same data, new train settings
    assert watch_once(cfg, retrain=retrain)["status"] == "unchanged" and len(retrain.configs) == 2

    original = copy.deepcopy(mp_api.docs)
    mp_api.publish("2025.06.01", _changed(original))
    assert watch_once(cfg, retrain=retrain)["status"] == "retrained"
    mp_api.publish("2025.01.01", original)  # a lagging replica serves the older release again
    result = watch_once(cfg, retrain=retrain)
    assert result["status"] == "older-version" and len(retrain.configs) == 3
    mp_api.publish("2025.06.01", _changed(original))
    assert watch_once(cfg, retrain=retrain)["status"] == "unchanged"


def test_corrupt_state_is_reported_and_recovered(mp_api, cfg, cv_home: Path, caplog: pytest.LogCaptureFixture):
    """Without --force: the corrupt file is moved aside, rebuilt from the job's record, and nothing retrains."""
    retrain = Recorder()
    assert watch_once(cfg, retrain=retrain)["status"] == "retrained"
    state = cv_home / "watch" / watch_key(cfg) / "state.json"
    state.write_text('{"db_version": "2025.01')  # torn write
    result = watch_once(cfg, retrain=retrain)
    assert result["status"] == "already-done" and len(retrain.configs) == 1
    assert "state.json is corrupt" in caplog.text
    assert list(state.parent.glob("state.json.corrupt-*")) and json_ok(state)
    assert watch_once(cfg, retrain=retrain)["reason"] == "same db_version"


def json_ok(path: Path) -> bool:
    import json

    return isinstance(json.loads(path.read_text()), dict)


def test_train_and_watch_leases_have_their_own_variables_and_waits_extend_them(tmp_path: Path, monkeypatch):
    """The lease on a Ray Train run name reads CRYSTALVISION_TRAIN_LEASE_S (the watch's lock its own variable); a
    progress event announcing a bounded wait (Ray Train starting its workers) extends the lease by that wait, a
    later renewal never shortens it, and a hung holder's message names the variable of its own lease."""
    import json
    import os
    import socket

    from crystalvision.core import progress
    from crystalvision.ops.lease import (
        TRAIN_LEASE_ENV,
        WATCH_LEASE_ENV,
        LeaseExpiredError,
        acquire,
        renewed_on_progress,
    )

    monkeypatch.setenv(WATCH_LEASE_ENV, "50")
    monkeypatch.setenv(TRAIN_LEASE_ENV, "7")
    lock = tmp_path / "run.lock"
    lease = acquire(lock, env=TRAIN_LEASE_ENV)
    assert lease is not None and lease.lease_s == 7.0 and json.loads(lock.read_text())["lease_env"] == TRAIN_LEASE_ENV
    with renewed_on_progress(lease):
        progress.beat("train", step="starting workers", wait_s=100.0)
        extended = json.loads(lock.read_text())["expires_at"]
        assert extended > time.time() + 100
        lease.renew(force=True)  # progress resumed: the announced wait still holds
        assert json.loads(lock.read_text())["expires_at"] == pytest.approx(extended)
    assert acquire(tmp_path / "watch.lock").lease_s == 50.0

    hung = {"host": socket.gethostname(), "pid": os.getpid(), "token": "t", "expires_at": time.time() - 1,
            "lease_env": TRAIN_LEASE_ENV, "longest_gap_s": 12.0}  # fmt: skip
    (tmp_path / "hung.lock").write_text(json.dumps(hung))
    with pytest.raises(LeaseExpiredError, match=f"longest gap.*12 s.*raise {TRAIN_LEASE_ENV}"):
        acquire(tmp_path / "hung.lock", env=TRAIN_LEASE_ENV)
