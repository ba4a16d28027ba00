"""The Ray Data fan-out both render layouts call: rows of (structure, view) rendered on a pool of actors.

:func:`render_rows` sizes the pool (:func:`plan`), streams the output batches back to the driver (reporting images
done, ``progress`` stage ``render``) and returns per-row outcomes and timings. The files layout (``job.py``) lets the
actors write the PNGs; the shard layout (``shardjob.py``) passes ``consume``, which gets each batch with its raw
pixels as it streams out and writes shards from them.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from crystalvision.core import RenderConfig, progress, raised_in_worker
from crystalvision.data import ObjectStore, without_credentials
from crystalvision.ops import parse_fault
from crystalvision.render.udf import FAULT_ENV, RenderBatch

# Each Ray Data task leaves its actor idle for ~40 ms (dispatch and output handling), so a task should carry a
# few hundred ms of rendering: at 224 px, 2 actors on 2 cores, batch 64 kept each actor ~45% idle (1 -> 2 actors
# x1.4), batch 256 ~8% (x1.9-2.0; bench/render_bench.py, ray data rows).
MIN_BATCH, MAX_BATCH, BATCHES_PER_ACTOR = 8, 256, 4

# A batch of output rows (a pyarrow table with the ``image`` column of raw pixels) -> the rows kept, without pixels.
Consume = Callable[[Any], pd.DataFrame]


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


def render_rows(
    rows: list[dict],
    records: list[Any],
    cfg: RenderConfig,
    store: ObjectStore,
    prefix: str,
    consume: Consume | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Render ``rows`` on a pool of Ray actors sized by :func:`plan`; returns per-row outcomes and timings.

    ``consume`` (the shard layout): each output batch, with the ``image`` column of raw pixels, goes to it as it
    streams out, and it returns the batch's other columns as a DataFrame; without it the actors write PNGs."""
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
    timings = {
        "ray_init_s": t_ray - t0,
        "startup_s": float(out["t_done"].min()) - t_ray,
        "render_s": t_end - t_ray,
        "images_per_s": len(out) / max(t_end - t_ray, 1e-9),
        "steady_images_per_s": steady_rate(out),
        "workers": float(workers),
        "batch_size": float(batch),
    }
    return out, timings


def _collect(ds: Any, total: int, consume: Consume | None = None) -> pd.DataFrame:
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
