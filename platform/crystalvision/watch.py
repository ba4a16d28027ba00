"""Scheduled retraining: retrain when the Materials Project serves new data for the configured query.

``watch_once`` is what a scheduler (cron, the Kubernetes CronJob in ``infra/k8s``) runs:

1. read the database version from mp-api's heartbeat; if it equals the one of the last successful
   retrain of this query, exit quietly (status ``unchanged``) without querying anything else;
2. otherwise derive the job id from (query hash, db_version) and skip if that job is already done or
   running (a lease lock, :mod:`crystalvision.lease`: two schedulers never run the same retrain, a lock whose
   holder died or whose lease expired is taken over, a hung holder is an error; SIGTERM releases the lock);
3. fetch the query; if its materials are identical to the last snapshot's, record the new version and stop;
4. write the snapshot, then retrain: ``run_pipeline`` (render, train, evaluate, champion/challenger promotion)
   with ``cfg.snapshot.uri`` set to the new snapshot; record the result.

State lives under ``<CRYSTALVISION_HOME>/watch/<query hash>/``: ``state.json`` (last successful retrain)
and ``jobs/<job id>.lock`` / ``jobs/<job id>.done``. Schedulers on several machines must share that folder.
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

from crystalvision.config import PipelineConfig
from crystalvision.lease import lease_lock
from crystalvision.mp import database_version, fetch_records, query_dict
from crystalvision.settings import get_settings
from crystalvision.snapshot import MaterialRecord, content_hash

log = logging.getLogger(__name__)

Retrain = Callable[[PipelineConfig], Any]
STATE_FILE = "state.json"


def query_hash(cfg: PipelineConfig) -> str:
    """sha256 of the canonical ingest query (first 16 hex digits)."""
    blob = json.dumps(query_dict(cfg.ingest), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def job_id(qhash: str, db_version: str) -> str:
    """The retrain job id: the same query and database version always give the same id."""
    return f"watch-{qhash[:12]}-{re.sub(r'[^A-Za-z0-9._-]', '_', db_version)}"


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
def job_lock(jobs_dir: Path, jid: str) -> Iterator[bool]:
    """Yield True when this process now owns ``jid`` (a lease lock, :mod:`crystalvision.lease`), False when a live
    holder does. A stale lock (dead holder, expired lease) is taken over; a hung holder raises."""
    with lease_lock(jobs_dir / f"{jid}.lock") as owned:
        yield owned


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
    from crystalvision.pipeline import run_pipeline

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
    qhash = query_hash(cfg)
    folder = Path(state_root or settings.paths.home / "watch") / qhash
    state = _read_json(folder / STATE_FILE) or {}
    db_version = database_version(settings.mp)
    jid = job_id(qhash, db_version)
    base = {"job_id": jid, "db_version": db_version, "previous_db_version": state.get("db_version")}
    if not force and state.get("db_version") == db_version:
        log.debug("db_version %s already handled for query %s; nothing to do", db_version, qhash)
        return {"status": "unchanged", "reason": "same db_version", **base}
    if not force and _already_done(folder, jid):
        return {"status": "already-done", **base}
    with _sigterm_runs_cleanup(), job_lock(folder / "jobs", jid) as owned:
        if not owned:
            log.info("job %s is running in another scheduler; skipping", jid)
            return {"status": "locked", **base}
        if not force and _already_done(folder, jid):  # finished between our first check and the lock
            return {"status": "already-done", **base}
        state = _read_json(folder / STATE_FILE) or {}
        return _run_job(cfg, folder, state, base, force, retrain or default_retrain)


def _already_done(folder: Path, jid: str) -> bool:
    done = _read_json(folder / "jobs" / f"{jid}.done")
    if done is not None:
        log.info("job %s was already completed at %s", jid, done.get("finished_at"))
    return done is not None


def _run_job(
    cfg: PipelineConfig, folder: Path, state: dict[str, Any], base: dict[str, Any], force: bool, retrain: Retrain
) -> dict[str, Any]:
    from crystalvision.ingest import write_mp_snapshot

    quarantine: list[dict[str, str]] = []
    records, fetched_version = fetch_records(cfg.ingest, get_settings().mp, quarantine)
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
    run_cfg = cfg.model_copy(deep=True)
    run_cfg.snapshot.uri = str(snapshot)
    log.info("retraining job %s on snapshot %s (%d materials)", base["job_id"], snapshot, len(records))
    outcome = retrain(run_cfg)
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
    """Mark the job done and remember the state, both atomically."""
    finished = {"finished_at": _now()}
    _write_json_atomic(folder / "jobs" / f"{jid}.done", result | finished)
    _write_json_atomic(folder / STATE_FILE, state | finished)
