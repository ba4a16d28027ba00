"""Scheduled retraining: retrain when the Materials Project serves new data for the configured query.

``watch_once`` is what a scheduler (cron, the Kubernetes CronJob in ``infra/k8s``) runs:

Everything is keyed by the watch key: the query hash plus the hash of the rest of the config (train, render,
evaluate, registry settings), so a changed setting in ``watch.yaml`` retrains.

1. read the database version from mp-api's heartbeat; if it equals the one of the last successful
   retrain of this key, exit quietly (status ``unchanged``) without querying anything else; an older version
   than the recorded one (a lagging replica) is ignored (status ``older-version``): the state never moves back;
2. otherwise derive the job id from (watch key, db_version) and skip if that job is already done or another
   scheduler holds the key's retrain lock (one lease lock per key, whatever the version,
   :mod:`crystalvision.ops.lease`: a lock whose holder died or whose lease expired on another host is taken over, a
   hung holder on this host is an error, exit 2; SIGTERM releases the lock);
3. fetch the query; if its materials are identical to the last snapshot's, record the new version and stop;
4. write the snapshot, then retrain: ``run_pipeline`` (render, train, evaluate, champion/challenger promotion)
   with ``cfg.snapshot.uri`` set to the new snapshot; record the result.

The lease is renewed at progress points only (fetch done, snapshot written, and every stage, render batch and epoch
the retrain reports): a retrain that hangs stops renewing it. A retrain whose lock was taken over stops with
:class:`~crystalvision.ops.lease.LeaseLostError`.

State lives under ``<CRYSTALVISION_HOME>/watch/<watch key>/``: ``state.json`` (last successful retrain, written
atomically before the job's ``jobs/<job id>.done``), ``retrain.lock``. A corrupt ``state.json`` is reported, moved
aside and rebuilt from the newest ``.done`` record. Schedulers on several machines must share that folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from crystalvision.core import PipelineConfig, get_settings
from crystalvision.data import MaterialRecord, content_hash, database_version, fetch_records, query_dict
from crystalvision.ops import Lease, lease_lock, renewed_on_progress

log = logging.getLogger(__name__)

Retrain = Callable[[PipelineConfig], Any]
STATE_FILE = "state.json"


def query_hash(cfg: PipelineConfig) -> str:
    """sha256 of the canonical ingest query (first 16 hex digits)."""
    blob = json.dumps(query_dict(cfg.ingest), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def watch_key(cfg: PipelineConfig) -> str:
    """The query hash and the hash of the whole config (snapshot location left out): state and lock are per key."""
    pinned = cfg.model_copy(update={"snapshot": cfg.snapshot.model_copy(update={"uri": None})})
    return f"{query_hash(cfg)}-{pinned.config_hash()[:12]}"


def job_id(key: str, db_version: str) -> str:
    """The retrain job id: the same watch key and database version always give the same id."""
    return f"watch-{key}-{re.sub(r'[^A-Za-z0-9._-]', '_', db_version)}"


def _version_order(version: str) -> tuple[int, Any]:
    """Sort key of a database version (PEP 440 when it parses, e.g. ``2025.02.12.post``; else the text)."""
    try:
        return 1, Version(version)
    except InvalidVersion:
        return 0, version


def is_older(version: str, than: str | None) -> bool:
    """Whether ``version`` is older than ``than`` (never for an unknown ``than``)."""
    if not than:
        return False
    a, b = _version_order(version), _version_order(than)
    return a[0] == b[0] and a[1] < b[1]


def data_digest(records: list[MaterialRecord]) -> str:
    """Content hash of the materials themselves (label_source names the db version, so it is left out)."""
    return content_hash([r.model_copy(update={"label_source": {}}) for r in records])


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when missing. A corrupt file is reported, moved aside and read as missing
    (the next successful run writes a good one), so one torn write is never fatal forever."""
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        return data
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as exc:
        aside = path.with_name(f"{path.name}.corrupt-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}")
        with contextlib.suppress(OSError):
            os.replace(path, aside)
        log.error("%s is corrupt (%s); moved it to %s and carry on without it", path, exc, aside.name)
        return None


@contextlib.contextmanager
def retrain_lock(folder: Path) -> Iterator[Lease | None]:
    """Yield the lease when this process now owns the key's retrain lock (:mod:`crystalvision.ops.lease`), None when a
    live holder does. A stale lock (dead holder, expired lease elsewhere) is taken over; a hung holder raises."""
    with lease_lock(folder / "retrain.lock") as lease:
        yield lease


@contextlib.contextmanager
def _sigterm_runs_cleanup() -> Iterator[None]:
    """Turn SIGTERM (a CronJob deadline, ``kill``) into SystemExit, so ``finally`` blocks release the lock."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def default_retrain(cfg: PipelineConfig) -> dict[str, Any]:
    """Render, train, evaluate and promote with the whole pipeline."""
    from crystalvision.app.pipeline import run_pipeline

    return run_pipeline(cfg).summary()


def watch_once(
    cfg: PipelineConfig,
    force: bool = False,
    *,
    retrain: Retrain | None = None,
    state_root: str | Path | None = None,
) -> dict[str, Any]:
    """Check the Materials Project once and retrain on a change; returns what happened (``status`` key)."""
    settings = get_settings()
    key = watch_key(cfg)
    folder = Path(state_root or settings.paths.home / "watch") / key
    state = _read_json(folder / STATE_FILE) or {}
    db_version = database_version(settings.mp)
    jid = job_id(key, db_version)
    base = {"job_id": jid, "db_version": db_version, "previous_db_version": state.get("db_version")}
    quiet = _quiet(folder, state, base, force)
    if quiet is not None:
        return quiet
    with _sigterm_runs_cleanup(), retrain_lock(folder) as lease:
        if lease is None:
            log.info("watch key %s is being retrained by another scheduler; skipping %s", key, jid)
            return {"status": "locked", **base}
        state = _read_json(folder / STATE_FILE) or {}  # another scheduler may have finished meanwhile
        quiet = _quiet(folder, state, base, force)
        if quiet is not None:
            return quiet
        return _run_job(cfg, folder, state, base, force, retrain or default_retrain, lease)


def _quiet(folder: Path, state: dict[str, Any], base: dict[str, Any], force: bool) -> dict[str, Any] | None:
    """The result when there is nothing to do (same or older version, job already done), else None."""
    version, recorded = base["db_version"], state.get("db_version")
    if is_older(version, recorded):
        log.warning("Materials Project db_version %s is older than the recorded %s; ignored", version, recorded)
        return {"status": "older-version", **base}
    if force:
        return None
    if recorded == version:
        log.debug("db_version %s already handled for %s; nothing to do", version, folder.name)
        return {"status": "unchanged", "reason": "same db_version", **base}
    done = _read_json(folder / "jobs" / f"{base['job_id']}.done")
    if done is None:
        return None
    log.info("job %s was already completed at %s", base["job_id"], done.get("finished_at"))
    if isinstance(done.get("state"), dict):  # state.json lost (corrupt) or behind the done job: rebuild it
        log.warning("%s does not record %s; rewriting it from %s.done", STATE_FILE, version, base["job_id"])
        _write_json_atomic(folder / STATE_FILE, done["state"] | {"finished_at": done.get("finished_at")})
    return {"status": "already-done", **base}


def _run_job(
    cfg: PipelineConfig,
    folder: Path,
    state: dict[str, Any],
    base: dict[str, Any],
    force: bool,
    retrain: Retrain,
    lease: Lease,
) -> dict[str, Any]:
    from crystalvision.data import write_mp_snapshot

    quarantine: list[dict[str, str]] = []
    records, fetched_version = fetch_records(cfg.ingest, get_settings().mp, quarantine)
    lease.renew(force=True)  # a progress point: the query is fetched
    digest = data_digest(records)
    if not force and state.get("data_digest") == digest:
        log.info(
            "db_version %s -> %s but the %d materials are unchanged",
            state.get("db_version"),
            fetched_version,
            len(records),
        )
        result = {"status": "unchanged", "reason": "same materials", **base}
        _record(folder, base["job_id"], state | {"db_version": base["db_version"]}, result)
        return result
    snapshot = write_mp_snapshot(records, fetched_version, cfg.ingest, quarantine=quarantine)
    lease.renew(force=True)  # a progress point: the snapshot is written
    run_cfg = cfg.model_copy(deep=True)
    run_cfg.snapshot.uri = str(snapshot)
    log.info("retraining job %s on snapshot %s (%d materials)", base["job_id"], snapshot, len(records))
    with renewed_on_progress(lease):
        outcome = retrain(run_cfg)
    lease.renew(force=True)  # still ours: record the result
    result = {
        "status": "retrained",
        "snapshot": str(snapshot),
        "n_materials": len(records),
        **base,
        "pipeline": outcome,
    }
    new_state = {
        "db_version": base["db_version"],
        "data_digest": digest,
        "snapshot": str(snapshot),
        "job_id": base["job_id"],
    }
    _record(folder, base["job_id"], new_state, result)
    return result


def _record(folder: Path, jid: str, state: dict[str, Any], result: dict[str, Any]) -> None:
    """Remember the state, then mark the job done (with the state, to rebuild a lost ``state.json``), both atomic."""
    finished = {"finished_at": _now()}
    (folder / "jobs").mkdir(parents=True, exist_ok=True)
    _write_json_atomic(folder / STATE_FILE, state | finished)
    _write_json_atomic(folder / "jobs" / f"{jid}.done", result | finished | {"state": state})
