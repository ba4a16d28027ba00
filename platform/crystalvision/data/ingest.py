"""Ingest: a Materials Project query becomes a versioned, content-hashed snapshot folder."""

from __future__ import annotations

import logging
from pathlib import Path

from crystalvision.core import IngestConfig, get_settings
from crystalvision.data.mp import fetch_records, query_dict
from crystalvision.data.snapshot import MaterialRecord, write_snapshot

log = logging.getLogger(__name__)
QUARANTINE_FILE = "quarantine.json"


def write_mp_snapshot(
    records: list[MaterialRecord],
    db_version: str,
    query: IngestConfig,
    out: str | Path | None = None,
    quarantine: list[dict[str, str]] | None = None,
) -> Path:
    """Write fetched Materials Project records as a snapshot under ``out`` (default: settings' snapshots root);
    the records quarantined during the fetch go to its ``quarantine.json``, each with its reason, written with the
    folder (a reader never sees the snapshot without it)."""
    flagged = sum(1 for r in records if r.flags)
    log.info(
        "%d of %d structures carry validation flags (kept in the snapshot, dropped at use by default)",
        flagged,
        len(records),
    )
    path = write_snapshot(
        records,
        out or get_settings().data.snapshots_root,
        source="materials-project-api",
        db_version=db_version,
        query=query_dict(query),
        extra_json={QUARANTINE_FILE: quarantine} if quarantine else None,  # inside the folder before it appears
    )
    if quarantine:
        log.warning("%d records quarantined during the fetch: see %s", len(quarantine), path / QUARANTINE_FILE)
    return path


def ingest_from_mp(query: IngestConfig, out: str | Path | None = None) -> Path:
    """Fetch ``query`` with mp-api and write a snapshot under ``out`` (default: settings' snapshots root)."""
    quarantine: list[dict[str, str]] = []
    records, db_version = fetch_records(query, get_settings().mp, quarantine)
    return write_mp_snapshot(records, db_version, query, out, quarantine)
