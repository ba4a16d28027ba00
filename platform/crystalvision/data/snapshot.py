"""Versioned, content-hashed snapshots of materials: records + manifest + label encoders.

A snapshot is a folder::

    structures.json       list of MaterialRecord (structure as pymatgen Structure.as_dict()), or
    structures.json.gz    the same list gzip-compressed (read as JSON only, never as code)
    manifest.json         db_version, query, source, n_records, content_sha256, created_at
    label_encoders.json   class lists for crystal_system and spacegroup
    PROVENANCE.md         where the data came from and its licence (bundled snapshots)
    quarantine.json       records the fetch left out, each with its reason (written before the folder appears)

The content hash covers the records only (sorted by material_id, canonical JSON), so the same data gives
the same hash wherever and whenever it was written, compressed or not. A folder appears whole (one rename) or not at
all; a second writer of the same content reuses the first one's folder.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, field_validator

from crystalvision.core import (
    BY_NAME,
    TARGETS_CLASSIFICATION,
    SnapshotConfig,
    SnapshotError,
    __version__,
    bundled_snapshots,
    get_settings,
)
from crystalvision.data.structures import CRYSTAL_SYSTEMS

log = logging.getLogger(__name__)

STRUCTURES_FILE = "structures.json"
STRUCTURES_GZ = "structures.json.gz"
MAX_STRUCTURES_BYTES = 1 << 30  # a structures file that decompresses to more is refused (a gzip bomb)
MANIFEST_FILE = "manifest.json"
ENCODERS_FILE = "label_encoders.json"


class MaterialRecord(BaseModel):
    """One material with its labels; ``label_source`` says where each regression label comes from."""

    model_config = ConfigDict(extra="allow")

    material_id: str
    formula: str
    nsites: int
    crystal_system: str
    spacegroup_symbol: str
    spacegroup_number: int
    band_gap: float | None  # None: missing upstream (flagged missing_band_gap), never 0.0
    energy_above_hull: float | None
    formation_energy_per_atom: float | None = None
    flags: list[str] = Field(default_factory=list)
    label_source: dict[str, str] = Field(default_factory=dict)
    structure: dict

    @field_validator("material_id")
    @classmethod
    def _safe_id(cls, v: str) -> str:
        """Ids become object keys: allow letters, digits, '-', '_' and '.', never '..' or '/'."""
        if not v.strip(".") or ".." in v or not all(c.isalnum() or c in "-_." for c in v):
            raise ValueError(f"material_id {v!r} is not a safe identifier (letters, digits, '-', '_', '.')")
        return v


class Manifest(BaseModel):
    """What a snapshot is: its query, database version and content hash."""

    snapshot_id: str
    source: str
    db_version: str
    query: dict
    n_records: int
    content_sha256: str
    created_at: str
    label_source: dict[str, str] = Field(default_factory=dict)
    crystalvision_version: str = __version__


class LabelEncoders(RootModel[dict[str, list[str]]]):
    """Class lists of the classification targets: target name -> class names (the index is the class id).

    Stored as ``label_encoders.json`` (``{"crystal_system": [...], "spacegroup": [...]}``); a new classification row in
    :mod:`crystalvision.core.targets` needs no change here (its order comes from :data:`CLASS_ORDER` or is sorted)."""

    def classes(self, target: str) -> list[str]:
        """Class names of ``target`` (raises KeyError naming the target and the fix)."""
        try:
            return self.root[target]
        except KeyError:
            raise KeyError(
                f"the snapshot's encoders have no classes for '{target}' (they have {sorted(self.root)}); "
                "re-create the snapshot with `crystalvision ingest`"
            ) from None

    def encode(self, target: str, value: str) -> int:
        """Class id of ``value`` (raises KeyError naming the unknown class)."""
        classes = self.classes(target)
        try:
            return classes.index(value)
        except ValueError:
            raise KeyError(f"{target} class '{value}' is not in the snapshot's encoder {classes}") from None


@dataclass
class Snapshot:
    """A loaded snapshot."""

    path: Path
    manifest: Manifest
    records: list[MaterialRecord]
    encoders: LabelEncoders


@dataclass
class Selection:
    """The records a pipeline uses, and what was left out and why."""

    records: list[MaterialRecord]
    dropped_flagged: list[str] = field(default_factory=list)
    held_out: list[str] = field(default_factory=list)  # left out for the split's hold-out (data.holdout)

    @property
    def material_ids(self) -> list[str]:
        return [r.material_id for r in self.records]


def content_hash(records: list[MaterialRecord]) -> str:
    """sha256 over the canonical JSON of the records sorted by material_id."""
    rows = sorted((r.model_dump(mode="json") for r in records), key=lambda r: r["material_id"])
    blob = json.dumps(rows, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def _spacegroups_by_number(records: list[MaterialRecord]) -> list[str]:
    return [s for _, s in sorted({(r.spacegroup_number, r.spacegroup_symbol) for r in records})]


# classification target -> its class order; a target not listed gets its label column's values, sorted
CLASS_ORDER: dict[str, Callable[[list[MaterialRecord]], list[str]]] = {
    "crystal_system": lambda _records: list(CRYSTAL_SYSTEMS),  # conventional order, all seven
    "spacegroup": _spacegroups_by_number,
}


def derive_encoders(records: list[MaterialRecord]) -> LabelEncoders:
    """One class list per classification target of :mod:`crystalvision.core.targets`."""

    def order(name: str) -> list[str]:
        if name in CLASS_ORDER:
            return CLASS_ORDER[name](records)
        return sorted({str(getattr(r, BY_NAME[name].label)) for r in records})

    return LabelEncoders({name: order(name) for name in TARGETS_CLASSIFICATION})


def _label_source_summary(records: list[MaterialRecord]) -> dict[str, str]:
    out: dict[str, set[str]] = {}
    for r in records:
        for target, source in r.label_source.items():
            out.setdefault(target, set()).add(source)
    return {t: " | ".join(sorted(s)) for t, s in out.items()}


def write_snapshot(
    records: list[MaterialRecord],
    root: str | Path,
    *,
    source: str,
    db_version: str,
    query: dict,
    name: str | None = None,
    extra_files: dict[str, str | Path] | None = None,
    extra_json: dict[str, Any] | None = None,
    compress: bool = False,
) -> Path:
    """Write a snapshot folder atomically under ``root``; an identical existing snapshot is reused.

    ``extra_files`` are copied and ``extra_json`` written into the folder before it appears; ``compress`` writes
    ``structures.json.gz`` (the same content hash)."""
    if not records:
        raise SnapshotError(f"refusing to write an empty snapshot for query {query}; widen the query")
    sha = content_hash(records)
    slug = name or "-".join(k if v is True else str(v) for k, v in query.items() if v) or "snapshot"
    snapshot_id = f"{slug}-{db_version}-{sha[:12]}".replace("/", "_").replace(" ", "")
    root = Path(root)
    final = root / snapshot_id
    if _same_snapshot(final, sha):
        log.info("snapshot %s already exists; reusing it", final)
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{snapshot_id}.", dir=root))
    try:
        _write_records(tmp, records, compress)
        (tmp / ENCODERS_FILE).write_text(derive_encoders(records).model_dump_json(indent=1))
        manifest = Manifest(
            snapshot_id=snapshot_id,
            source=source,
            db_version=db_version,
            query=query,
            n_records=len(records),
            content_sha256=sha,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            label_source=_label_source_summary(records),
        )
        for fname, src in (extra_files or {}).items():
            dst = tmp / fname
            dst.parent.mkdir(parents=True, exist_ok=True)
            if Path(src).is_dir():
                shutil.copytree(src, dst)
            else:
                shutil.copyfile(src, dst)
        for fname, data in (extra_json or {}).items():
            (tmp / fname).write_text(json.dumps(data, indent=1))
        (tmp / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=1))
        if not _publish(tmp, final, sha):
            shutil.rmtree(tmp, ignore_errors=True)
            log.info("snapshot %s was written meanwhile by another process; reusing it", final)
            return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote snapshot %s (%d records, sha256 %s)", final, len(records), sha[:12])
    return final


def _write_records(folder: Path, records: list[MaterialRecord], compress: bool) -> None:
    rows = [r.model_dump(mode="json") for r in sorted(records, key=lambda r: r.material_id)]
    if not compress:
        (folder / STRUCTURES_FILE).write_text(json.dumps(rows, indent=1))
        return
    # no name and mtime 0 in the gzip header: the same records give the same bytes
    with (folder / STRUCTURES_GZ).open("wb") as raw, gzip.GzipFile("", "wb", fileobj=raw, mtime=0) as gz:
        gz.write(json.dumps(rows, separators=(",", ":")).encode())


def _same_snapshot(final: Path, sha: str) -> bool:
    """Whether ``final`` is a published snapshot of content ``sha``."""
    try:
        return Manifest.model_validate_json((final / MANIFEST_FILE).read_text()).content_sha256 == sha
    except (OSError, ValidationError):
        return False


def _publish(tmp: Path, final: Path, sha: str) -> bool:
    """Rename ``tmp`` to ``final``; False when another writer published the same content first (a lost race)."""
    try:
        os.replace(tmp, final)
    except OSError:  # ENOTEMPTY / EEXIST: a folder appeared at ``final`` since the check
        if _same_snapshot(final, sha):
            return False
        raise SnapshotError(
            f"cannot publish snapshot {final}: a different folder is in the way; move it aside and ingest again"
        ) from None
    return True


def _structures_file(path: Path) -> str:
    """The records' file of snapshot folder ``path``: structures.json, else structures.json.gz."""
    compressed = (path / STRUCTURES_GZ).is_file() and not (path / STRUCTURES_FILE).is_file()
    return STRUCTURES_GZ if compressed else STRUCTURES_FILE


def _read_structures(path: Path, fname: str) -> Any:
    """The records' JSON (a gzip is decompressed, with a size bound, and parsed as JSON: never run as code)."""
    if fname == STRUCTURES_FILE:
        return json.loads((path / fname).read_text())
    with gzip.open(path / fname, "rb") as fh:
        blob = fh.read(MAX_STRUCTURES_BYTES + 1)
    if len(blob) > MAX_STRUCTURES_BYTES:
        raise SnapshotError(
            f"snapshot {path}/{fname} decompresses to more than {MAX_STRUCTURES_BYTES} bytes; "
            "it is not a snapshot: restore it or ingest it again"
        )
    return json.loads(blob)


def load_snapshot(uri: str | Path, verify: bool = True) -> Snapshot:
    """Load a snapshot folder and check its content hash against its manifest."""
    path = Path(uri)
    if not path.is_dir():
        raise SnapshotError(
            f"snapshot {path} not found: run `crystalvision ingest`, set CRYSTALVISION_SNAPSHOT_URI to a snapshot "
            f"folder, or name a bundled one ({', '.join(bundled_snapshots())}); the bundled lmno is used when unset"
        )
    fname = _structures_file(path)
    try:
        raw = _read_structures(path, fname)
        records = [MaterialRecord.model_validate(r) for r in raw]
    except FileNotFoundError as exc:
        raise SnapshotError(f"snapshot {path} has no {STRUCTURES_FILE} (or {STRUCTURES_GZ}); ingest it again") from exc
    except (json.JSONDecodeError, ValidationError, UnicodeDecodeError, TypeError, OSError, EOFError,
            zlib.error) as exc:  # fmt: skip
        raise SnapshotError(f"snapshot {path}/{fname} is unreadable ({exc}); ingest it again") from exc
    try:
        manifest = Manifest.model_validate_json((path / MANIFEST_FILE).read_text())
        encoders = LabelEncoders.model_validate_json((path / ENCODERS_FILE).read_text())
    except (FileNotFoundError, ValidationError) as exc:
        raise SnapshotError(f"snapshot {path} has a missing or bad manifest/encoders ({exc}); ingest it again") from exc
    if verify:
        sha = content_hash(records)
        if sha != manifest.content_sha256:
            raise SnapshotError(
                f"snapshot {path} is corrupted: content sha256 {sha[:12]} != manifest {manifest.content_sha256[:12]};"
                " restore it or ingest it again"
            )
    return Snapshot(path=path, manifest=manifest, records=records, encoders=encoders)


def select(snapshot: Snapshot, cfg: SnapshotConfig) -> Selection:
    """Apply the pipeline's snapshot options: drop flagged structures (default), pick ids, cap the count."""
    records = list(snapshot.records)
    if cfg.material_ids:
        wanted = set(cfg.material_ids)
        missing = wanted - {r.material_id for r in records}
        if missing:
            raise SnapshotError(f"material ids {sorted(missing)} are not in snapshot {snapshot.manifest.snapshot_id}")
        records = [r for r in records if r.material_id in wanted]
    unlabelled = [r.material_id for r in records if r.band_gap is None or r.energy_above_hull is None]
    if unlabelled:  # a missing label is never read as 0.0; the trainers need every label (issue 14, point 13)
        log.info("left out %d structures without a band gap or energy above hull: %s", len(unlabelled), unlabelled)
        records = [r for r in records if r.material_id not in set(unlabelled)]
    dropped = [] if cfg.include_flagged else [r.material_id for r in records if r.flags]
    records = [r for r in records if cfg.include_flagged or not r.flags]
    if dropped:
        log.info("dropped %d flagged structures (snapshot.include_flagged=false): %s", len(dropped), dropped)
    if cfg.max_structures:
        records = _spread(records, cfg.max_structures)
    if not records:
        raise SnapshotError("no structures left after selection; relax snapshot.material_ids/include_flagged")
    return Selection(records=records, dropped_flagged=dropped)


def _spread(records: list[MaterialRecord], n: int) -> list[MaterialRecord]:
    """Take ``n`` records covering as many crystal systems as possible (deterministic)."""
    by_system: dict[str, list[MaterialRecord]] = {}
    for r in records:
        by_system.setdefault(r.crystal_system, []).append(r)
    picked: list[MaterialRecord] = []
    while len(picked) < min(n, len(records)):
        for group in by_system.values():
            if group and len(picked) < n:
                picked.append(group.pop(0))
    return sorted(picked, key=lambda r: r.material_id)


def snapshot_path(cfg: SnapshotConfig) -> str | Path:
    """The folder ``cfg`` names: ``uri``, else the bundled snapshot ``name``, else the configured default."""
    if cfg.uri:
        return cfg.uri
    if cfg.name:
        return bundled_snapshots()[cfg.name]  # the config checked that it exists
    return get_settings().data.snapshot_uri


def configured_snapshot(cfg: SnapshotConfig) -> Snapshot:
    """The snapshot ``cfg`` names (a folder or a bundled name), else the configured default (the bundled lmno)."""
    return load_snapshot(snapshot_path(cfg))


def describe(path: str | Path) -> dict[str, Any]:
    """A snapshot's record counts and whether its content hash verified (never raises on a bad snapshot)."""
    try:
        snap = load_snapshot(path)
    except SnapshotError as exc:
        return {"path": str(path), "verified": False, "error": str(exc)}
    usable = sum(1 for r in snap.records if not r.flags and None not in (r.band_gap, r.energy_above_hull))
    return {
        "snapshot_id": snap.manifest.snapshot_id,
        "db_version": snap.manifest.db_version,
        "n_records": snap.manifest.n_records,
        "n_usable": usable,
        "n_flagged": sum(1 for r in snap.records if r.flags),
        "content_sha256": snap.manifest.content_sha256,
        "verified": True,
        "path": str(snap.path),
    }


def load_selection(cfg: SnapshotConfig) -> tuple[Snapshot, Selection]:
    """The configured snapshot and the records ``cfg`` selects from it."""
    snap = configured_snapshot(cfg)
    return snap, select(snap, cfg)
