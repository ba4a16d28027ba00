"""The render job's shard layout (``render.layout: shards``): rendered pixels stream back from the Ray Data
actors to the driver, which writes each shard (whole structures, :mod:`crystalvision.data.shards`) as soon as all its
images are in, so the driver holds about one shard of pixels at a time. Reruns render only the shards that are
missing, truncated, fail their checksum, or lack a structure that should be in them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

from crystalvision.core import RenderConfig
from crystalvision.data import ObjectStore, shards
from crystalvision.render.labels import image_key, labels_frame
from crystalvision.render.pool import render_rows
from crystalvision.render.rotations import structure_quaternions

log = logging.getLogger(__name__)


@dataclass
class ShardRun:
    """What the shard layout produced: the labels of every image in a good shard, per-row outcomes of this run."""

    labels: pd.DataFrame
    out: pd.DataFrame | None
    timings: dict[str, float]
    n_rendered_rows: int
    entries: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Pending:
    key: str
    labels: pd.DataFrame  # the shard's rows for every structure sent to render
    expected: int
    pixels: dict[tuple[str, int], bytes] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    received: int = 0


def _intact(store: ObjectStore, key: str) -> dict[str, Any] | None:
    """The shard's sidecar when shard and sidecar exist and agree, else None (a bad shard's reason is logged)."""
    entry = shards.entry_of(store, key)
    if entry is None:
        return None
    why = shards.problem(store, key, entry)
    if why:
        log.warning("image shard %s is %s; rendering it again", store.uri(key), why)
        return None
    return entry


def _donors(store: ObjectStore, prefix: str, intact: Callable[[str], dict[str, Any] | None]) -> dict[str, str]:
    """material id -> an intact shard under ``prefix`` that holds its images (any selection's shard)."""
    found: dict[str, str] = {}
    for side in store.list(f"{prefix}/shards"):
        if not side.endswith(".json"):
            continue
        key = side.removesuffix(".json") + ".parquet"
        entry = intact(key)
        for mid in entry["material_ids"] if entry else []:
            found.setdefault(str(mid), key)
    return found


def _keep_rendered(store: ObjectStore, part: _Pending, donors: dict[str, str]) -> set[str]:
    """Prefill ``part`` with the images of its structures that an intact shard under the same prefix already holds
    (an older version of this shard that gained structures, after raising ``render.max_atoms``, or another
    selection's shard, same render config): only the others are rendered."""
    frame, whole, read = part.labels, set(), {}
    for mid, group in frame.groupby("material_id"):
        donor = donors.get(str(mid))
        if donor is None:
            continue
        stored = read.setdefault(donor, shards.read_images(store, donor))
        refs = [shards.image_ref(donor, str(mid), int(v)) for v in group["view"]]
        if all(r in stored for r in refs):
            whole.add(str(mid))
            for view, ref in zip(group["view"], refs, strict=True):
                part.pixels[(str(mid), int(view))] = stored[ref]
                part.received += 1
    if whole:
        log.info("image shard %s: %d structures taken from shards on store, the others rendered",
                 store.uri(part.key), len(whole))  # fmt: skip
    return whole


def render_shards(
    all_ids: list[str],
    good: list[Any],
    encoders: Any,
    cfg: RenderConfig,
    store: ObjectStore,
    prefix: str,
) -> ShardRun:
    """Render the shards of ``good`` records that are not done. Shard membership is planned on ``all_ids`` (every
    selected structure, quarantined ones included) so that it does not move when the quarantine changes. The rows
    to render go to the actor pool (:func:`~crystalvision.render.pool.render_rows`) with a ``consume`` that writes
    each shard as soon as all its images are in."""
    by_id = {r.material_id: r for r in good}
    pending: dict[str, _Pending] = {}
    owner: dict[str, str] = {}
    labels, entries, rows = [], [], []
    donors: dict[str, str] | None = None
    checked: dict[str, dict[str, Any] | None] = {}

    def intact(key: str) -> dict[str, Any] | None:  # each shard's checksum is read once per run
        if key not in checked:
            checked[key] = _intact(store, key)
        return checked[key]

    for index, members in enumerate(shards.plan(all_ids, cfg.views_per_structure, cfg.image_size, cfg.shard_mb)):
        key = shards.shard_key(prefix, index, members)
        recs = [by_id[m] for m in members if m in by_id]
        if not recs:
            continue
        frame = labels_frame(recs, encoders, cfg, prefix, keys=lambda mid, v, k=key: shards.image_ref(k, mid, v))
        entry = intact(key)
        if entry is not None and {r.material_id for r in recs} <= set(entry["material_ids"]):
            labels.append(frame[frame["material_id"].isin(entry["material_ids"])])
            entries.append(entry)
            continue
        pending[key] = part = _Pending(key, frame, len(frame))
        donors = _donors(store, prefix, intact) if donors is None else donors
        kept = _keep_rendered(store, part, donors)
        for rec in (r for r in recs if r.material_id not in kept):
            owner[rec.material_id] = key
            for view, quat in enumerate(structure_quaternions(cfg, rec.material_id)):
                png = image_key(prefix, rec.material_id, view) if cfg.export_png else ""
                rows.append({"material_id": rec.material_id, "view": view, "quaternion": quat, "image_key": png})
    log.info("shards under %s: %d done, %d to render", prefix, len(entries), len(pending))
    if not rows:
        return _exported(ShardRun(_concat(labels), None, {}, 0, entries), store, prefix, cfg)

    def consume(batch: pa.Table) -> pd.DataFrame:
        images = batch.column("image").to_pylist()  # bytes objects in one C pass
        frame = batch.drop_columns(["image"]).to_pandas()
        cols = (frame["material_id"].tolist(), frame["view"].tolist(), frame["error"].tolist(), images)
        for mid, view, err, img in zip(*cols, strict=True):
            part = pending[owner[str(mid)]]
            if str(err):
                part.failed.add(str(mid))
            part.pixels[(str(mid), int(view))] = img
            part.received += 1
            if part.received == part.expected:
                labels.append(_write(store, part, entries))
        return frame

    out, timings = render_rows(rows, good, cfg, store, prefix, consume=consume)
    left = [p.key for p in pending.values() if p.received < p.expected]
    if left:  # every row comes back (errors included), so this is a bug, not bad input
        raise RuntimeError(f"render job ended with incomplete shards {left[:3]}")
    return _exported(ShardRun(_concat(labels), out, timings, len(rows), entries), store, prefix, cfg)


def _exported(run: ShardRun, store: ObjectStore, prefix: str, cfg: RenderConfig) -> ShardRun:
    """``run``, after writing the PNGs that ``render.export_png`` asks for and an earlier run did not write."""
    if cfg.export_png:
        export_pngs(store, prefix, run.labels)
    return run


def export_pngs(store: ObjectStore, prefix: str, labels: pd.DataFrame) -> int:
    """Write the PNG of every image in ``labels`` (rows with shard references) that has none under ``prefix`` yet:
    images an earlier run rendered, or taken from another shard, get one too. Each shard is read once; returns the
    number of PNGs written."""
    from crystalvision.data import encode_png

    if labels.empty:
        return 0
    existing = set(store.list(f"{prefix}/images"))
    by_shard: dict[str, list[tuple[str, str]]] = {}
    for ref, mid, view in zip(labels["image_key"], labels["material_id"], labels["view"], strict=True):
        png = image_key(prefix, str(mid), int(view))
        if png not in existing:
            by_shard.setdefault(shards.split_ref(str(ref))[0], []).append((str(ref), png))
    for key, items in by_shard.items():
        images = shards.read_images(store, key)
        for ref, png in items:
            store.put_bytes(png, encode_png(shards.pixels(images[ref])))
    written = sum(len(items) for items in by_shard.values())
    if written:
        log.info("exported %d PNGs of images already in shards under %s", written, prefix)
    return written


def _write(store: ObjectStore, part: _Pending, entries: list[dict[str, Any]]) -> pd.DataFrame:
    """Write one complete shard without its failed structures; returns its labels rows."""
    frame = part.labels[~part.labels["material_id"].isin(part.failed)].reset_index(drop=True)
    images = [bytes(part.pixels[(m, int(v))]) for m, v in zip(frame["material_id"], frame["view"], strict=True)]
    if len(frame):
        entries.append(shards.write(store, part.key, frame, images))
        log.info("wrote shard %s: %d images, %.1f MB", part.key, len(images), entries[-1]["size"] / 1e6)
    part.pixels.clear()
    return frame


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
