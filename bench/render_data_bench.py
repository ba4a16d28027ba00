"""The render job's data path: Ray Data render jobs with 1 and 2 actors and 8 simulated ones, and both image layouts
(PNG files, parquet shards) written and read back on local disk and on moto S3.

Parts of :mod:`bench.render_bench`, which runs them (``--only render_bench.ray_simulated`` runs one).
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from bench.common import row
from bench.renderer_bench import CELL_56, structures
from crystalvision.core.config import RenderConfig
from crystalvision.core.settings import BUNDLED_SNAPSHOT
from crystalvision.data import encode_png
from crystalvision.data.snapshot import load_snapshot
from crystalvision.render import Renderer, view_quaternion


def _ray_job(records: list, snap: Any, cfg: RenderConfig, fault: str | None = None) -> dict:
    """One render job into a fresh local store; its timings (steady images/s, start-up)."""
    from crystalvision.data.storage import ObjectStore
    from crystalvision.render.job import FAULT_ENV, render_dataset

    if fault:
        os.environ[FAULT_ENV] = fault
    try:
        with tempfile.TemporaryDirectory() as tmp:
            result = render_dataset(records, snap.encoders, snap.manifest.content_sha256, cfg, ObjectStore(tmp))
    finally:
        os.environ.pop(FAULT_ENV, None)
    return {**result.timings, "n": result.n_new}


def _render_jobs(records: list, snap: Any, views: int, workers: int, n: int) -> list[dict]:
    """``n`` render jobs of ``workers`` actors (224 px impostor, default shards layout, a fresh local store each)."""
    cfg = RenderConfig(image_size=224, views_per_structure=views, num_workers=workers)
    return [_ray_job(records, snap, cfg) for _ in range(n)]


def _scaling_setup(quick: bool) -> tuple[Any, list, int, float]:
    """The bundled snapshot, the structures and views the Ray Data rows render, a started local Ray (seconds)."""
    from crystalvision.ops.raycluster import ensure_ray

    snap = load_snapshot(BUNDLED_SNAPSHOT)
    records = [r for r in snap.records if not r.flags][: 4 if quick else 24]
    t = time.time()
    ensure_ray()
    return snap, records, 16 if quick else 96, time.time() - t


def ray_scaling(quick: bool) -> list[dict]:
    """Ray Data render jobs (224 px, impostor, the default shards layout in a local store) with 1 and 2 actors on
    this machine, interleaved (the load of a shared machine drifts): steady images/s, end to end, start-up."""
    snap, records, views, init_s = _scaling_setup(quick)
    rows = [row("ray data", "ray_init_s", init_s, "s", "local cluster start")]
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for workers in (1, 2) if quick else (1, 2, 2, 1):
        runs[workers] += _render_jobs(records, snap, views, workers, 1)
    rates = {}
    for workers, tms in runs.items():
        rates[workers] = sum(t["steady_images_per_s"] for t in tms) / len(tms)
        n, batch = tms[0]["n"], tms[0]["batch_size"]
        note = f"{n} images of {len(records)} structures, 224 px impostor, batch {batch:.0f}, mean of {len(tms)} runs"
        goal = ">= 800" if workers == 2 else ""
        bench = f"ray data {workers} worker(s)"
        end_to_end = sum(t["images_per_s"] for t in tms) / len(tms)
        startup = max(t["startup_s"] for t in tms)
        rows.append(row(bench, "steady_images_per_s", rates[workers], "images/s", note, goal))
        rows.append(row(bench, "images_per_s_end_to_end", end_to_end, "images/s", note))
        rows.append(row(bench, "startup_s", startup, "s", "job start to first image, worst run", "< 10"))
    rows.append(
        row("ray data", "speedup_2_vs_1", rates[2] / max(rates[1], 1e-9), "x", "steady images/s ratio", ">= 1.8")
    )
    return rows


def ray_simulated(quick: bool, one_actor_rate: float | None = None) -> list[dict]:
    """8 Ray Data render actors with the per-core work simulated: each render after an actor's first is a sleep of
    the one-actor time per image (``one_actor_rate``, the 1-actor rows of the same run; measured here when not
    given) and its first image returned again, so Ray Data's scheduling, the driver and the shard writes stay real;
    shows where the data path, not the core count, caps a bigger cluster."""
    snap, records, views, _init_s = _scaling_setup(quick)
    source = "the 1-actor rows of this run"
    if one_actor_rate is None:
        one = _render_jobs(records, snap, views, 1, 1 if quick else 2)
        one_actor_rate = sum(t["steady_images_per_s"] for t in one) / len(one)
        source = f"mean of {len(one)} 1-actor runs in this part"
    rate = one_actor_rate
    per_image_ms = 1000 / max(rate, 1e-9)
    cfg = RenderConfig(image_size=224, views_per_structure=views, num_workers=8, cpus_per_worker=0.2)
    tm = _ray_job(records, snap, cfg, fault=f"simulate_ms={per_image_ms:.2f}")
    note = (
        f"8 actors on {os.cpu_count()} CPUs, render + encode simulated as a {per_image_ms:.1f} ms sleep (1-actor "
        f"time per image, {source}); scheduling, driver, writes real; ideal {8 * rate:.0f}"
    )
    bench = "ray data 8 workers (simulated)"
    return [
        row(bench, "steady_images_per_s", tm["steady_images_per_s"], "images/s", note),
        row(bench, "efficiency_vs_ideal", tm["steady_images_per_s"] / max(8 * rate, 1e-9), "x",
            "steady / (8 x one actor)"),
    ]  # fmt: skip


def _io_images(n: int) -> list:
    """``n`` distinct real 224 px renders of the 56-atom cell (repeats would flatter zstd across images)."""
    cell = structures()["56 atoms"]
    with Renderer(RenderConfig(image_size=224, method="impostor")) as r:
        return [r.render(cell, view_quaternion(0, CELL_56, v)) for v in range(n)]


def _layout_io(store: Any, images: list, layout: str) -> dict[str, float]:
    """Write then read ``images`` in one layout: objects/s and MB/s each way (8 threads, like the writers)."""
    from concurrent.futures import ThreadPoolExecutor

    import pandas as pd

    from crystalvision.data import shards
    from crystalvision.data.dataset import load_images

    n = len(images)
    t = time.perf_counter()
    if layout == "files":
        keys = [f"bench/files/{i:05d}.png" for i in range(n)]
        pngs = [encode_png(img) for img in images]  # encoded on the render side in the real job, timed here too
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(store.put_bytes, keys, pngs))
        nbytes = sum(len(p) for p in pngs)
        objects = n
    else:
        per = max(1, n // 2)  # two shards
        keys, objects, nbytes = [], 0, 0
        for s0 in range(0, n, per):
            key = f"bench/shards/{s0:05d}.parquet"
            part = [shards.image_ref(key, f"m{i}", 0) for i in range(s0, min(n, s0 + per))]
            frame = pd.DataFrame({"material_id": [f"m{i}" for i in range(s0, s0 + len(part))], "image_key": part})
            entry = shards.write(store, key, frame, [shards.compress(images[i]) for i in range(s0, s0 + len(part))])
            keys += part
            objects, nbytes = objects + 2, nbytes + entry["size"]  # shard + sidecar
    write_s = time.perf_counter() - t
    shards._cache.clear()
    shards._verified.clear()
    t = time.perf_counter()
    got = load_images(store, keys, size=224)
    read_s = time.perf_counter() - t
    assert got.shape[0] == n
    return {"write_s": write_s, "read_s": read_s, "objects": objects, "mb": nbytes / 1e6}


def layout_io(quick: bool) -> list[dict]:
    """Both image layouts written and read back (decoded) on local disk and on moto S3 (127.0.0.1), same images."""
    from crystalvision.data.storage import ObjectStore
    from tests.support.s3 import start_moto

    n = 256 if quick else 1024
    images = _io_images(n)
    rows = []
    server = start_moto()
    try:
        with tempfile.TemporaryDirectory(prefix="cv-layout-") as tmp:
            stores = {"local disk": ObjectStore(tmp), "moto S3": None}
            stores["moto S3"] = ObjectStore(f"s3://{server.make_bucket()}", server.settings())
            for where, store in stores.items():
                for layout in ("files", "shards"):
                    m = _layout_io(store, images, layout)
                    bench, note = f"layout {layout} {where}", f"{n} images 224 px, {m['objects']} objects"
                    for way in ("write", "read"):
                        secs = m[f"{way}_s"]
                        rows.append(row(bench, f"{way}_images_per_s", n / secs, "images/s", note + ", read = decoded"))
                        rows.append(row(bench, f"{way}_objects_per_s", m["objects"] / secs, "objects/s", note))
                        rows.append(row(bench, f"{way}_mb_per_s", m["mb"] / secs, "MB/s", note))
                    rows.append(row(bench, "stored_mb", m["mb"], "MB", note))
    finally:
        server.stop()
    return rows
