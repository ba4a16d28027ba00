"""Ray Data render job: one row per (structure, view) -> PNGs, labels.parquet, manifest.json, quarantine.json.

Layout under the store root (docs/architecture.md)::

    renders/<snapshot_sha[:12]>-<render_cfg_hash[:12]>/
        images/<material_id>/<view:04d>.png
        labels.parquet      one row per image
        manifest.json       config hash, snapshot hash, counts, timings
        quarantine.json     [{"material_id", "error"}] structures that could not be rendered

Images already in the store are skipped, and so are structures already quarantined under the same prefix
(the prefix pins the snapshot and the config), so a rerun renders and writes nothing new. Every object is
written atomically through :class:`~crystalvision.storage.ObjectStore`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from crystalvision import __version__
from crystalvision.config import RenderConfig
from crystalvision.errors import CrystalVisionError, RenderError
from crystalvision.render.rotations import view_quaternion
from crystalvision.settings import StorageSettings, get_settings
from crystalvision.storage import ObjectStore, without_credentials

log = logging.getLogger(__name__)

RENDERER_VERSION = "1"  # bump when a code change alters pixels: it is part of the config hash
# Fields that change how work is scheduled, not what the images look like.
NON_IMAGE_FIELDS = {"num_workers", "cpus_per_worker"}
BATCH_SIZE = 16
# Test hook: "after=N" makes the first render actor that has written N images exit hard, once per store prefix.
FAULT_ENV = "CRYSTALVISION_RENDER_FAULT"


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
    """sha256 of everything that determines the pixels (config fields that do + the renderer version)."""
    fields = cfg.model_dump(mode="json", exclude=NON_IMAGE_FIELDS)
    blob = json.dumps({"renderer_version": RENDERER_VERSION, **fields}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def render_prefix(snapshot_sha256: str, cfg: RenderConfig) -> str:
    return f"renders/{snapshot_sha256[:12]}-{render_config_hash(cfg)[:12]}"


def image_key(prefix: str, material_id: str, view: int) -> str:
    return f"{prefix}/images/{material_id}/{view:04d}.png"


# -- the Ray Data UDF ------------------------------------------------------------------------------------------
class RenderBatch:
    """Class-based Ray Data UDF: one Renderer (one GL context) per actor, reused for every batch."""

    def __init__(
        self,
        structures: dict[str, dict] | list,
        cfg: dict,
        store_root: str,
        storage: StorageSettings | None,
        checked: tuple[str, str] | None = None,
        fault: dict[str, Any] | None = None,
    ):
        """``structures``: material_id -> Structure.as_dict(), or ``[ObjectRef]`` of that dict (keeps the actor's
        constructor arguments small). ``checked`` = (node id, window class) of the driver's backend check, reused
        by actors on the driver's node. ``fault``: the fault-injection hook (:func:`parse_fault`)."""
        import ray

        from crystalvision.render.backend import assume_backend
        from crystalvision.render.scene import Renderer

        if checked and ray.get_runtime_context().get_node_id() == checked[0]:
            assume_backend(checked[1])

        self.cfg = RenderConfig.model_validate(cfg)
        self.store = ObjectStore(store_root, storage)
        self.raw = ray.get(structures[0]) if isinstance(structures, list) else structures
        self.structures: dict[str, Any] = {}
        self.renderer = Renderer(self.cfg)
        self.fault = fault
        self.n_written = 0

    def _structure(self, material_id: str) -> Any:
        if material_id not in self.structures:
            from crystalvision.structures import structure_from_dict

            # keep only the current structure: rows arrive grouped by material
            self.structures = {material_id: structure_from_dict(self.raw[material_id], material_id)}
        return self.structures[material_id]

    def _image(self, material_id: str, quat: np.ndarray) -> tuple[bytes | None, str]:
        """(PNG bytes, "") or (None, error message) for one view; only the structure's own problems are caught."""
        from crystalvision.render.scene import encode_png

        try:
            return encode_png(self.renderer.render(self._structure(material_id), quat)), ""
        except CrystalVisionError as exc:
            return None, str(exc)
        except Exception as exc:  # an odd structure must not take the batch down
            return None, f"{type(exc).__name__}: {exc}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        errors, done, sums = [], [], []
        for mid, quat, key in zip(batch["material_id"], batch["quaternion"], batch["image_key"], strict=True):
            png, error = self._image(str(mid), np.asarray(quat, dtype=np.float64))
            if png is not None:
                self.store.put_bytes(str(key), png)  # a StorageError fails the job: it is not the structure's fault
                self.n_written += 1
                _maybe_fault(self.fault, self.n_written)
            errors.append(error)
            sums.append(f"{len(png)}:{hashlib.sha256(png).hexdigest()}" if png is not None else "")
            done.append(time.time())
        return {
            "material_id": batch["material_id"],
            "view": batch["view"],
            "image_key": batch["image_key"],
            "checksum": np.asarray(sums, dtype=object),
            "error": np.asarray(errors, dtype=object),
            "t_done": np.asarray(done, dtype=np.float64),
        }

    def __del__(self) -> None:
        renderer = getattr(self, "renderer", None)
        if renderer is not None:
            renderer.close()


def parse_fault(value: str | None, prefix: str) -> dict[str, Any] | None:
    """``"after=3"`` -> ``{"after": 3, "marker": <file>}``; the marker makes the fault fire once per prefix."""
    if not value:
        return None
    fault: dict[str, Any] = {k.strip(): int(v) for k, v in (i.split("=", 1) for i in value.split(",") if i.strip())}
    name = prefix.replace("/", "_")
    fault["marker"] = str(get_settings().paths.home / "faults" / f"{name}.done")
    return fault


def _maybe_fault(fault: dict[str, Any] | None, n_written: int) -> None:
    """Exit this actor's process hard mid-batch once ``after`` images are written (the test hook)."""
    if not fault or n_written < fault.get("after", 1) or os.path.exists(fault["marker"]):
        return
    os.makedirs(os.path.dirname(fault["marker"]), exist_ok=True)
    open(fault["marker"], "w").close()
    log.warning("fault injection: render actor exits after writing %d images", n_written)
    os._exit(1)


# -- driver side -----------------------------------------------------------------------------------------------
def _precheck(records: list[Any], cfg: RenderConfig) -> tuple[list[Any], list[dict[str, str]]]:
    """Parse every structure and check its species on the driver; bad ones go to quarantine right away."""
    from crystalvision.render.scene import prepare_scene
    from crystalvision.structures import structure_from_dict

    good, bad = [], []
    for rec in records:
        try:
            prepare_scene(structure_from_dict(rec.structure, rec.material_id), cfg)
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
        for view in range(cfg.views_per_structure):
            key = image_key(prefix, rec.material_id, view)
            if key not in existing:
                quat = view_quaternion(cfg.seed, rec.material_id, view)
                rows.append({"material_id": rec.material_id, "view": view, "quaternion": quat, "image_key": key})
    return rows


def _run_ray(
    rows: list[dict], records: list[Any], cfg: RenderConfig, store: ObjectStore, prefix: str
) -> tuple[pd.DataFrame, dict]:
    """Render ``rows`` on ``cfg.num_workers`` Ray actors; returns per-row outcomes and timings."""
    import ray

    from crystalvision.raycluster import ensure_ray
    from crystalvision.render.backend import ensure_backend

    t0 = time.time()
    ensure_ray()
    checked = (ray.get_runtime_context().get_node_id(), ensure_backend())
    t_ray = time.time()
    wanted = {row["material_id"] for row in rows}
    structures = {r.material_id: r.structure for r in records if r.material_id in wanted}
    n_blocks = min(len(rows), max(cfg.num_workers, min(-(-len(rows) // BATCH_SIZE), 8 * cfg.num_workers)))
    ds = ray.data.from_items(rows, override_num_blocks=n_blocks)
    ds = ds.map_batches(
        RenderBatch,
        batch_size=BATCH_SIZE,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cfg.num_workers),
        num_cpus=cfg.cpus_per_worker,
        fn_constructor_kwargs={
            "structures": [ray.put(structures)],
            "cfg": cfg.model_dump(mode="json"),
            "store_root": store.root,
            "storage": without_credentials(store.settings),
            "checked": checked,
            "fault": parse_fault(os.environ.get(FAULT_ENV), prefix),
        },
    )
    try:
        out = ds.to_pandas()
    except Exception as exc:
        user_error = _user_error(exc)
        if user_error is None:
            raise
        raise user_error from exc
    t_end = time.time()
    first, last = float(out["t_done"].min()), float(out["t_done"].max())
    steady = (len(out) - cfg.num_workers) / (last - first) if last > first and len(out) > cfg.num_workers else 0.0
    timings = {
        "ray_init_s": t_ray - t0,
        "startup_s": first - t_ray,
        "render_s": t_end - t_ray,
        "images_per_s": len(out) / max(t_end - t_ray, 1e-9),
        "steady_images_per_s": steady,
    }
    return out, timings


def _user_error(exc: BaseException) -> CrystalVisionError | None:
    """A crystalvision error raised inside a Ray worker, re-created for the driver (Ray only keeps its text)."""
    from crystalvision import errors

    for line in reversed(str(exc).splitlines()):
        match = re.match(r"\s*crystalvision\.errors\.(\w+): (.*)", line)
        cls = getattr(errors, match.group(1), None) if match else None
        if isinstance(cls, type) and issubclass(cls, CrystalVisionError):
            return cls(match.group(2))
    return None


def _quarantine_from(out: pd.DataFrame) -> list[dict[str, str]]:
    failed = out[out["error"].astype(str) != ""]
    first = failed.sort_values(["material_id", "view"]).groupby("material_id", sort=True).first()
    return [{"material_id": str(mid), "error": _named(str(mid), str(row.error))} for mid, row in first.iterrows()]


def _labels_frame(records: list[Any], encoders: Any, cfg: RenderConfig, prefix: str) -> pd.DataFrame:
    rows = []
    for rec in records:
        base = {
            "band_gap": float(rec.band_gap),
            "energy_above_hull": float(rec.energy_above_hull),
            "crystal_system": rec.crystal_system,
            "spacegroup_symbol": rec.spacegroup_symbol,
            "crystal_system_id": encoders.encode("crystal_system", rec.crystal_system),
            "spacegroup_id": encoders.encode("spacegroup", rec.spacegroup_symbol),
            "formula": rec.formula,
            "label_source_band_gap": rec.label_source.get("band_gap", ""),
            "label_source_energy_above_hull": rec.label_source.get("energy_above_hull", ""),
        }
        for view in range(cfg.views_per_structure):
            quat = view_quaternion(cfg.seed, rec.material_id, view).tolist()
            key = image_key(prefix, rec.material_id, view)
            rows.append({"material_id": rec.material_id, "view": view, "quaternion": quat, "image_key": key, **base})
    return pd.DataFrame(rows)


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def _put_if_changed(store: ObjectStore, key: str, data: bytes) -> bool:
    """Write ``data`` unless the object already holds exactly it; True when written."""
    if store.exists(key) and store.get_bytes(key) == data:
        return False
    store.put_bytes(key, data)
    return True


def render_dataset(
    records: list[Any], encoders: Any, snapshot_sha256: str, cfg: RenderConfig, store: ObjectStore
) -> RenderResult:
    """Render ``views_per_structure`` images of each record into ``store`` and write the labels table."""
    if not records:
        raise RenderError("no structures to render; check the snapshot selection")
    t0 = time.time()
    cfg_hash = render_config_hash(cfg)
    prefix = render_prefix(snapshot_sha256, cfg)
    quarantine_key = f"{prefix}/quarantine.json"
    known_bad = {q["material_id"]: q for q in _read_json(store, quarantine_key, [])}
    good, bad = _precheck([r for r in records if r.material_id not in known_bad], cfg)
    quarantined = [known_bad[r.material_id] for r in records if r.material_id in known_bad] + bad
    checksums_key = f"{prefix}/images.json"  # image key -> "size:sha256": an image counts as done only if it matches
    checksums = _read_json(store, checksums_key, {})
    existing = {
        k for k in store.list(f"{prefix}/images")
        if k in checksums and store.exists_verified(k, *_size_sha(checksums[k]))
    }
    rows = _todo_rows(good, cfg, prefix, existing)
    n_total = len(good) * cfg.views_per_structure
    log.info(
        "render %s: %d structures x %d views, %d images to render, %d already in %s",
        prefix,
        len(good),
        cfg.views_per_structure,
        len(rows),
        n_total - len(rows),
        store.root,
    )
    timings: dict[str, float] = {}
    if rows:
        out, timings = _run_ray(rows, good, cfg, store, prefix)
        written = out[out["checksum"].astype(str) != ""]
        checksums |= dict(zip(written["image_key"].astype(str), written["checksum"].astype(str), strict=True))
        failed = _quarantine_from(out)
        quarantined += failed
        bad_ids = {q["material_id"] for q in failed}
        good = [r for r in good if r.material_id not in bad_ids]
        n_new = int(((out["error"].astype(str) == "") & ~out["material_id"].isin(bad_ids)).sum())
    else:
        n_new = 0
    quarantined = sorted(quarantined, key=lambda q: q["material_id"])
    labels = _labels_frame(good, encoders, cfg, prefix)
    labels_key = f"{prefix}/labels.parquet"
    wrote = _put_if_changed(store, labels_key, _parquet_bytes(labels))
    wrote |= _put_if_changed(store, quarantine_key, json.dumps(quarantined, indent=1).encode())
    wrote |= _put_if_changed(store, checksums_key, json.dumps(checksums, sort_keys=True).encode())
    timings["total_s"] = time.time() - t0
    manifest = {
        "render_config_hash": cfg_hash,
        "snapshot_sha256": snapshot_sha256,
        "render_config": cfg.model_dump(mode="json"),
        "renderer_version": RENDERER_VERSION,
        "crystalvision_version": __version__,
        "n_structures": len(good),
        "n_images": len(labels),
        "n_quarantined": len(quarantined),
        "labels_key": labels_key,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "last_run": {"n_new": n_new, "n_skipped": n_total - len(rows), "timings": timings},
    }
    manifest_key = f"{prefix}/manifest.json"
    if wrote or n_new or not store.exists(manifest_key):
        store.put_text(manifest_key, json.dumps(manifest, indent=1))
    else:
        manifest = _read_json(store, manifest_key, manifest)
    result = RenderResult(prefix, labels_key, len(labels), n_new, n_total - len(rows), quarantined, manifest, timings)
    log.info("render done: %s", result.summary())
    return result
