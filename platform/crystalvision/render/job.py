"""Ray Data render job: one row per (structure, view) -> image shards (or PNGs), labels.parquet, manifest.json,
quarantine.json.

Layout under the store root (docs/architecture.md)::

    renders/<snapshot_sha[:12]>-<render_cfg_hash[:12]>/
        shards/<index:05d>-<digest>.parquet (+ .json sidecar)   render.layout: shards (default), shardjob.py
        images/<material_id>/<view:04d>.png                      render.layout: files, or export_png
        labels.parquet      one row per image
        manifest.json       config hash, snapshot hash, counts, timings
        quarantine.json     [{"material_id", "error"}] structures that could not be rendered

Both layouts render their rows on the actor pool of ``pool.py`` (the files layout here, the shard layout in
``shardjob.py``). Images already in the store are skipped, and so are structures already quarantined under the same
prefix (the prefix pins the snapshot and the config), so a rerun renders and writes nothing new. Every object is
written atomically through :class:`~crystalvision.data.storage.ObjectStore`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from crystalvision.core import CrystalVisionError, RenderConfig, RenderError, __version__
from crystalvision.data import ObjectStore
from crystalvision.render.labels import image_key, labels_frame, labels_key_for, parquet_bytes
from crystalvision.render.pixel_code import pixel_code_digest
from crystalvision.render.pool import render_rows
from crystalvision.render.rotations import structure_quaternions
from crystalvision.render.udf import FAULT_ENV, RenderBatch  # named by the job too: the render UDF, its fault hook

log = logging.getLogger(__name__)

# Fields that change how work is scheduled, not what the images look like.
NON_IMAGE_FIELDS = {
    "num_workers",
    "cpus_per_worker",
    "max_atoms",
    "structure_timeout_s",
    "max_actor_restarts",
    "max_task_retries",
    "retry_quarantined",
    "export_png",
}
LAYOUT_FIELDS = ("layout", "shard_mb")  # in the hash only for layout: shards (files hashes stay as they were)
__all__ = ["FAULT_ENV", "RenderBatch", "RenderResult", "image_key", "render_config_hash", "render_dataset"]


@dataclass
class RenderResult:
    """What a render job produced (the contract in docs/architecture.md)."""

    prefix: str
    labels_key: str
    n_images: int
    n_new: int
    n_skipped: int
    quarantined: list[dict[str, str]]
    manifest: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Flat numbers for logging and MLflow."""
        return {
            "render_prefix": self.prefix,
            "render_labels_key": self.labels_key,
            "render_n_images": self.n_images,
            "render_n_new": self.n_new,
            "render_n_skipped": self.n_skipped,
            "render_n_quarantined": len(self.quarantined),
            "render_config_hash": self.manifest.get("render_config_hash", ""),
            **{f"render_{k}": round(v, 3) for k, v in self.timings.items()},
        }


def render_config_hash(cfg: RenderConfig) -> str:
    """sha256 of everything that determines the pixels: the config fields that do and the code that draws
    (:func:`~crystalvision.render.pixel_code.pixel_code_digest`)."""
    fields = cfg.model_dump(mode="json", exclude=NON_IMAGE_FIELDS)
    if cfg.views == "uniform":
        fields.pop("trajectory_step_deg")  # only the trajectory protocol uses it
    if cfg.layout == "files":
        for name in LAYOUT_FIELDS:
            fields.pop(name)
    else:
        from crystalvision.data import shards

        fields["shard_format"] = shards.FORMAT_VERSION  # a new shard format never reuses old shards
    blob = json.dumps({"renderer_code": pixel_code_digest(), **fields}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def render_prefix(snapshot_sha256: str, cfg: RenderConfig) -> str:
    return f"renders/{snapshot_sha256[:12]}-{render_config_hash(cfg)[:12]}"


def _precheck(records: list[Any], cfg: RenderConfig) -> tuple[list[Any], list[dict[str, str]]]:
    """Parse every structure and check its species on the driver; bad ones go to quarantine right away."""
    from crystalvision.data import structure_from_dict
    from crystalvision.render.scene import prepare_scene

    good, bad = [], []
    for rec in records:
        try:
            structure = structure_from_dict(rec.structure, rec.material_id, max_atoms=None)
            if len(structure) > cfg.max_atoms:  # drawn atoms >= sites: refuse before building the scene
                raise RenderError(
                    f"{rec.material_id} has {len(structure)} sites, more than render.max_atoms = {cfg.max_atoms}; "
                    "raise the limit to render it"
                )
            scene = prepare_scene(structure, cfg)
            if len(scene.positions) > cfg.max_atoms:
                raise RenderError(
                    f"{rec.material_id} draws {len(scene.positions)} atoms (with periodic images), more than "
                    f"render.max_atoms = {cfg.max_atoms}; raise the limit to render it"
                )
            good.append(rec)
        except CrystalVisionError as exc:
            bad.append({"material_id": rec.material_id, "error": _named(rec.material_id, str(exc))})
            log.warning("quarantined %s: %s", rec.material_id, exc)
    return good, bad


def _named(material_id: str, message: str) -> str:
    return message if message.startswith(material_id) else f"{material_id}: {message}"


def _size_sha(checksum: str) -> tuple[int, str]:
    size, _, sha = checksum.partition(":")
    return int(size), sha


def _read_json(store: ObjectStore, key: str, default: Any) -> Any:
    return json.loads(store.get_text(key)) if store.exists(key) else default


def _todo_rows(records: list[Any], cfg: RenderConfig, prefix: str, existing: set[str]) -> list[dict]:
    rows = []
    for rec in records:
        quats = structure_quaternions(cfg, rec.material_id)
        for view, quat in enumerate(quats):
            key = image_key(prefix, rec.material_id, view)
            if key not in existing:
                rows.append({"material_id": rec.material_id, "view": view, "quaternion": quat, "image_key": key})
    return rows


def _quarantine_from(out: pd.DataFrame) -> list[dict[str, str]]:
    """One entry per structure that failed while rendering (its first error), marked ``stage: render``."""
    failed = out[out["error"].astype(str) != ""]
    first = failed.sort_values(["material_id", "view"]).groupby("material_id", sort=True).first()
    return [
        {"material_id": str(mid), "error": _named(str(mid), str(row.error)), "stage": "render"}
        for mid, row in first.iterrows()
    ]


def _put_if_changed(store: ObjectStore, key: str, data: bytes) -> bool:
    """Write ``data`` unless the object already holds exactly it; True when written."""
    if store.exists(key) and store.get_bytes(key) == data:
        return False
    store.put_bytes(key, data)
    return True


def _shard_codec() -> str:
    from crystalvision.data import shards

    return shards.CODEC


def _forget_quarantine(store: ObjectStore, prefix: str) -> None:
    """--retry-quarantined: drop the attempt markers so crashed structures get their two tries again."""
    for key in store.list(f"{prefix}/attempts"):
        store.fs.delete_file(store.path(key))


def render_dataset(
    records: list[Any],
    encoders: Any,
    snapshot_sha256: str,
    cfg: RenderConfig,
    store: ObjectStore,
    retry_quarantined: bool | None = None,
) -> RenderResult:
    """Render ``views_per_structure`` images of each record into ``store`` and write the labels table.

    Structures quarantined by an earlier run under the same prefix are skipped unless ``retry_quarantined``
    (default: ``cfg.retry_quarantined``)."""
    if not records:
        raise RenderError("no structures to render; check the snapshot selection")
    t0 = time.time()
    cfg_hash = render_config_hash(cfg)
    prefix = render_prefix(snapshot_sha256, cfg)
    quarantine_key = f"{prefix}/quarantine.json"
    # Only failures found while rendering persist; the driver's checks (species, geometry, max_atoms) are cheap
    # and rerun every time, so raising render.max_atoms lets a refused structure in without --retry-quarantined.
    known_bad = {q["material_id"]: q for q in _read_json(store, quarantine_key, []) if q.get("stage") == "render"}
    if cfg.retry_quarantined if retry_quarantined is None else retry_quarantined:
        log.info("retrying %d quarantined structures under %s", len(known_bad), prefix)
        known_bad = {}
        _forget_quarantine(store, prefix)
    good, bad = _precheck([r for r in records if r.material_id not in known_bad], cfg)
    quarantined = [known_bad[r.material_id] for r in records if r.material_id in known_bad] + bad
    n_total = len(good) * cfg.views_per_structure
    timings: dict[str, float] = {}
    checksums_key = f"{prefix}/images.json"  # image key -> "size:sha256": an image counts as done only if it matches
    checksums = _read_json(store, checksums_key, {})
    shard_entries: list[dict[str, Any]] | None = None
    if cfg.layout == "shards":
        from crystalvision.render.shardjob import render_shards

        run = render_shards([r.material_id for r in records], good, encoders, cfg, store, prefix)
        out, timings, n_todo, shard_entries = run.out, run.timings, run.n_rendered_rows, run.entries
    else:
        existing = {
            k for k in store.list(f"{prefix}/images")
            if k in checksums and store.exists_verified(k, *_size_sha(checksums[k]))
        }  # fmt: skip
        rows = _todo_rows(good, cfg, prefix, existing)
        n_todo = len(rows)
        log.info(
            "render %s: %d structures x %d views, %d images to render, %d already in %s",
            prefix,
            len(good),
            cfg.views_per_structure,
            n_todo,
            n_total - n_todo,
            store.root,
        )
        out = None
        if rows:
            out, timings = render_rows(rows, good, cfg, store, prefix)
            written = out[out["checksum"].astype(str) != ""]
            checksums |= dict(zip(written["image_key"].astype(str), written["checksum"].astype(str), strict=True))
    n_new = 0
    if out is not None:
        failed = _quarantine_from(out)
        quarantined += failed
        bad_ids = {q["material_id"] for q in failed}
        good = [r for r in good if r.material_id not in bad_ids]
        n_new = int(((out["error"].astype(str) == "") & ~out["material_id"].isin(bad_ids)).sum())
    quarantined = sorted(quarantined, key=lambda q: q["material_id"])
    if shard_entries is None:
        labels = labels_frame(good, encoders, cfg, prefix)
    else:
        labels = run.labels.sort_values(["material_id", "view"]).reset_index(drop=True)
    labels_key = labels_key_for(prefix, records)
    wrote = _put_if_changed(store, labels_key, parquet_bytes(labels))
    wrote |= _put_if_changed(store, quarantine_key, json.dumps(quarantined, indent=1).encode())
    wrote |= _put_if_changed(store, checksums_key, json.dumps(checksums, sort_keys=True).encode())
    stale = store.remove_stale_temp(prefix, older_than=t0)  # this run's writers are done; older ones are dead
    if stale:
        log.info("removed %d temp files that killed writers left under %s", stale, prefix)
    timings["total_s"] = time.time() - t0
    manifest = {
        "render_config_hash": cfg_hash,
        "snapshot_sha256": snapshot_sha256,
        "render_config": cfg.model_dump(mode="json"),
        "renderer_code": pixel_code_digest(),
        "crystalvision_version": __version__,
        "n_structures": len(good),
        "n_images": len(labels),
        "layout": cfg.layout,
        **({"shards": shard_entries, "shard_codec": _shard_codec()} if shard_entries is not None else {}),
        "n_quarantined": len(quarantined),
        "labels_key": labels_key,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "last_run": {"n_new": n_new, "n_skipped": n_total - n_todo, "timings": timings},
    }
    manifest_key = f"{prefix}/manifest.json"
    if wrote or n_new or not store.exists(manifest_key):
        store.put_text(manifest_key, json.dumps(manifest, indent=1))
    else:
        manifest = _read_json(store, manifest_key, manifest)
    result = RenderResult(prefix, labels_key, len(labels), n_new, n_total - n_todo, quarantined, manifest, timings)
    log.info("render done: %s", result.summary())
    return result
