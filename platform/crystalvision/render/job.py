"""Ray Data render job: one row per (structure, view) -> image shards (or PNGs), labels.parquet, manifest.json,
quarantine.json.

Layout under the store root (docs/architecture.md)::

    renders/<snapshot_sha[:12]>-<render_cfg_hash[:12]>/
        shards/<index:05d>-<digest>.parquet (+ .json sidecar)   render.layout: shards (default), shardjob.py
        images/<material_id>/<view:04d>.png                      render.layout: files, or export_png
        labels.parquet      one row per image
        manifest.json       config hash, snapshot hash, counts, timings
        quarantine.json     [{"material_id", "error"}] structures that could not be rendered

Images already in the store are skipped, and so are structures already quarantined under the same prefix
(the prefix pins the snapshot and the config), so a rerun renders and writes nothing new. Every object is
written atomically through :class:`~crystalvision.data.storage.ObjectStore`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from crystalvision.core import CrystalVisionError, RenderConfig, RenderError, __version__, progress, raised_in_worker
from crystalvision.data import ObjectStore, without_credentials
from crystalvision.ops import parse_fault
from crystalvision.render.labels import image_key, labels_frame, labels_key_for, parquet_bytes
from crystalvision.render.pixel_code import pixel_code_digest
from crystalvision.render.rotations import structure_quaternions
from crystalvision.render.udf import FAULT_ENV, RenderBatch

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
# Each Ray Data task leaves its actor idle for ~40 ms (dispatch and output handling), so a task should carry a
# few hundred ms of rendering: at 224 px, 2 actors on 2 cores, batch 64 kept each actor ~45% idle (1 -> 2 actors
# x1.4), batch 256 ~8% (x1.9-2.0; bench/render_bench.py, ray data rows).
MIN_BATCH, MAX_BATCH, BATCHES_PER_ACTOR = 8, 256, 4
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


def plan(n_rows: int, cfg: RenderConfig, cluster_cpus: float) -> tuple[int, float, int]:
    """(actors, CPUs per actor, batch size) from the cluster's CPUs: one actor per CPU unless configured, each
    reserving at most 90% of its share (the read and the writes need some), and at least
    ``BATCHES_PER_ACTOR`` batches per actor so the pool stays balanced."""
    cpus = max(cluster_cpus, 1.0)
    workers = int(cpus) if cfg.num_workers == "auto" else cfg.num_workers
    workers = max(1, min(workers, n_rows))
    per_worker = min(cfg.cpus_per_worker, 0.9 * cpus / workers)
    batch = int(np.clip(-(-n_rows // (workers * BATCHES_PER_ACTOR)), MIN_BATCH, MAX_BATCH))
    return workers, per_worker, batch


def _run_ray(
    rows: list[dict], records: list[Any], cfg: RenderConfig, store: ObjectStore, prefix: str, consume: Any = None
) -> tuple[pd.DataFrame, dict]:
    """Render ``rows`` on a pool of Ray actors sized by :func:`plan`; returns per-row outcomes and timings.

    ``consume``: the shard layout's callback; it gets each output batch (a pyarrow table with the ``image`` column
    of raw pixels) as it streams out and returns the batch's other columns as a DataFrame."""
    import ray

    from crystalvision.ops import ensure_ray
    from crystalvision.render.backend import ensure_backend

    t0 = time.time()
    ensure_ray(data_bytes=len(records) * cfg.views_per_structure * cfg.image_size**2 * 3)  # what training will cache
    checked = (ray.get_runtime_context().get_node_id(), ensure_backend())
    t_ray = time.time()
    workers, per_worker, batch = plan(len(rows), cfg, ray.cluster_resources().get("CPU", 1.0))
    wanted = {row["material_id"] for row in rows}
    structures = {r.material_id: r.structure for r in records if r.material_id in wanted}
    ds = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // batch)))
    with warnings.catch_warnings():  # max_restarts/max_task_retries have no named parameter in Ray 2.60
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        ds = ds.map_batches(
            RenderBatch,
            batch_size=batch,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=per_worker,
            max_restarts=cfg.max_actor_restarts,  # Ray Data's default is unbounded: a poison structure would loop
            max_task_retries=cfg.max_task_retries,
            fn_constructor_kwargs={
                "structures": [ray.put(structures)],
                "cfg": cfg.model_dump(mode="json"),
                "store_root": store.root,
                "storage": without_credentials(store.settings),
                "checked": checked,
                "fault": parse_fault(os.environ.get(FAULT_ENV), prefix),
                "prefix": prefix,
                "return_images": consume is not None,
            },
        )
    try:
        out = _collect(ds, len(rows), consume)
    except Exception as exc:  # a worker's own error (a store it cannot write) as its one line, not Ray's traceback
        user_error = raised_in_worker(exc)
        if user_error is None:
            raise
        raise user_error from exc
    t_end = time.time()
    steady = steady_rate(out)
    timings = {
        "ray_init_s": t_ray - t0,
        "startup_s": float(out["t_done"].min()) - t_ray,
        "render_s": t_end - t_ray,
        "images_per_s": len(out) / max(t_end - t_ray, 1e-9),
        "steady_images_per_s": steady,
        "workers": float(workers),
        "batch_size": float(batch),
    }
    return out, timings


def _collect(ds: Any, total: int, consume: Any = None) -> pd.DataFrame:
    """Run the Ray Data pipeline, reporting images done as blocks complete (``progress`` stage ``render``);
    ``consume`` (the shard layout) turns each output batch (a pyarrow table: the pixels stay in one buffer, no
    per-image pandas objects) into the rows kept."""
    parts, done = [], 0
    progress.emit("render", 0, total, unit="img")
    for part in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        parts.append(consume(part) if consume is not None else part.to_pandas())
        done += part.num_rows
        progress.emit("render", done, total, unit="img")
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def steady_rate(out: pd.DataFrame) -> float:
    """Images/s while every actor was producing: completions between the last actor's first image and the first
    actor's last image (actors start staggered, so a whole-job rate would count start-up); falls back to the
    whole span when that window is too short to measure."""
    t = out["t_done"].to_numpy()
    spans = out.groupby("actor")["t_done"].agg(["min", "max"])
    start, end = float(spans["min"].max()), float(spans["max"].min())
    inside = int(((t > start) & (t <= end)).sum())
    if end - start > 0.2 and inside >= 20:
        return inside / (end - start)
    first, last = float(t.min()), float(t.max())
    return (len(t) - len(spans)) / (last - first) if last > first and len(t) > len(spans) else 0.0


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

        run = render_shards([r.material_id for r in records], good, encoders, cfg, store, prefix, _run_ray)
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
            out, timings = _run_ray(rows, good, cfg, store, prefix)
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
