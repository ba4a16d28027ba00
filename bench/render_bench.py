"""Render benchmark: images/s per worker (224/512 px, 56- and 448-atom cells, mesh and impostor spheres), peak
memory over many images, and Ray Data scaling from 1 to 2 workers with job start-up time.

    PYTHONPATH=platform .venv/bin/python -m bench.render_bench [--quick]

prints a table and writes ``bench/results/render.json``.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "platform"), *filter(None, [os.environ.get("PYTHONPATH")])])
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from bench.common import module_main, row  # noqa: E402
from crystalvision.core.config import RenderConfig  # noqa: E402
from crystalvision.core.settings import BUNDLED_SNAPSHOT  # noqa: E402
from crystalvision.data import encode_png  # noqa: E402
from crystalvision.data.snapshot import load_snapshot  # noqa: E402
from crystalvision.data.structures import structure_from_dict  # noqa: E402
from crystalvision.render import Renderer, view_quaternion, view_rotation  # noqa: E402

log = logging.getLogger("bench.render")
CELL_56 = "mp-1177919"  # Li2Mn3NiO8 spinel, 56 atoms; its 2x2x2 supercell has 448
RESULTS = ROOT / "bench" / "results" / "render.json"
SIDE_BY_SIDE = ROOT / "bench" / "results" / "render_mesh_vs_impostor.png"


def _structures() -> dict[str, Any]:
    snap = load_snapshot(BUNDLED_SNAPSHOT)
    rec = next(r for r in snap.records if r.material_id == CELL_56)
    cell = structure_from_dict(rec.structure, CELL_56)
    return {"56 atoms": cell, f"{len(cell) * 8} atoms": cell * (2, 2, 2)}


def minimal_vtk_rate(scene: Any, size: int, quats: list, rounds_out: list[float]) -> None:
    """The reference: the fewest VTK calls that draw the same atoms with impostors (VTK's default headlight and
    shading, positions uploaded per view, pixels read back); appends images/s to ``rounds_out``."""
    import numpy as np
    import vtkmodules.vtkRenderingOpenGL2  # noqa: F401
    from scipy.spatial.transform import Rotation
    from vtkmodules.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray
    from vtkmodules.vtkCommonCore import vtkPoints, vtkUnsignedCharArray
    from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData
    from vtkmodules.vtkRenderingCore import vtkActor, vtkRenderer, vtkRenderWindow
    from vtkmodules.vtkRenderingOpenGL2 import vtkOpenGLSphereMapper

    n = len(scene.positions)
    points, poly = vtkPoints(), vtkPolyData()
    poly.SetPoints(points)
    verts = vtkCellArray()
    verts.SetData(
        numpy_to_vtkIdTypeArray(np.arange(n + 1), deep=True), numpy_to_vtkIdTypeArray(np.arange(n), deep=True)
    )
    poly.SetVerts(verts)
    radius = numpy_to_vtk(scene.radii.astype(np.float32), deep=True)
    radius.SetName("radius")
    poly.GetPointData().AddArray(radius)
    poly.GetPointData().SetScalars(numpy_to_vtk(scene.colours, deep=True))
    mapper = vtkOpenGLSphereMapper()
    mapper.SetInputData(poly)
    mapper.SetScaleArray("radius")
    mapper.SetColorModeToDirectScalars()
    actor = vtkActor()
    actor.SetMapper(mapper)
    renderer = vtkRenderer()
    renderer.AddActor(actor)
    renderer.SetBackground(1.0, 1.0, 1.0)
    window = vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetMultiSamples(0)
    window.SetSize(size, size)
    window.AddRenderer(renderer)
    camera = renderer.GetActiveCamera()
    camera.ParallelProjectionOn()
    camera.SetParallelScale(scene.extent * 1.03)
    camera.SetPosition(0.0, 0.0, 4.0 * scene.extent)
    camera.SetClippingRange(2.9 * scene.extent, 5.1 * scene.extent)
    pixels = vtkUnsignedCharArray()

    def draw(q: Any) -> None:
        points.SetData(numpy_to_vtk(Rotation.from_quat(q).apply(scene.positions).astype(np.float32), deep=True))
        poly.Modified()
        window.Render()
        window.GetPixelData(0, 0, size - 1, size - 1, 0, pixels, 0)

    draw(quats[0])
    t = time.perf_counter()
    for q in quats:
        draw(q)
    rounds_out.append(len(quats) / (time.perf_counter() - t))
    window.Finalize()


def headline(quick: bool) -> list[dict]:
    """The project's renderer against the minimal VTK impostor scene, same atoms, interleaved rounds (median)."""
    import statistics

    from crystalvision.render.scene import prepare_scene

    structure = _structures()["56 atoms"]
    n, rounds = (60, 3) if quick else (200, 5)
    quats = [view_quaternion(0, CELL_56, v) for v in range(n)]
    ours: list[float] = []
    ref: list[float] = []
    png_s: list[float] = []
    zstd_s: list[float] = []
    with Renderer(RenderConfig(image_size=224, method="impostor")) as r:
        scene = prepare_scene(structure, r.cfg)
        r.render(structure, quats[0])
        for _ in range(rounds):
            t = time.perf_counter()
            images = [r.render(structure, q) for q in quats]
            ours.append(n / (time.perf_counter() - t))
            t = time.perf_counter()
            for img in images:
                encode_png(img)
            png_s.append((time.perf_counter() - t) / n)
            zstd_s.append(_shard_encode_s(images))
            minimal_vtk_rate(scene, 224, quats, ref)
    rate, ref_rate = statistics.median(ours), statistics.median(ref)
    png, zstd = statistics.median(png_s), statistics.median(zstd_s)
    note = f"56 atoms 224 px, {rounds} interleaved rounds of {n}, median"
    return [
        row("render 56 atoms 224px impostor", "images_per_s", rate, "images/s", note, ">= 800"),
        row("minimal VTK impostor scene", "images_per_s", ref_rate, "images/s", note + "; same atoms, VTK defaults"),
        row("renderer / minimal VTK scene", "ratio", rate / ref_rate, "x", "headline; same run", ">= 1.0"),
        row(
            "render 56 atoms 224px impostor",
            "encode_share",
            100 * zstd / (zstd + 1 / rate),
            "%",
            "default layout (shards: a zstd frame of raw uint8 per image + the shard's parquet) of render + encode",
            "< 15",
        ),
        row(
            "render 56 atoms 224px impostor",
            "png_encode_share",
            100 * png / (png + 1 / rate),
            "%",
            "layout: files / export_png only (PNG per image), one thread",
        ),
    ]


def _shard_encode_s(images: list) -> float:
    """Seconds per image to encode ``images`` as one shard the way the render job does (labels + raw pixels)."""
    import pandas as pd

    from crystalvision.data import shards

    frame = pd.DataFrame({"material_id": [CELL_56] * len(images), "view": range(len(images))})
    frame["image_key"] = [shards.image_ref("s.parquet", CELL_56, v) for v in frame["view"]]
    t = time.perf_counter()
    shards.encode(frame, [shards.compress(img) for img in images])  # compress: on the actor; encode: the driver
    return (time.perf_counter() - t) / len(images)


def look(quick: bool) -> list[dict]:
    """Mesh and impostor spheres side by side (bench/results/render_mesh_vs_impostor.png) and their pixel gap."""
    import numpy as np
    from PIL import Image

    structure = _structures()["56 atoms"]
    images = {}
    for method in ("mesh", "impostor"):
        with Renderer(RenderConfig(image_size=224, method=method)) as r:
            images[method] = np.stack([r.render(structure, view_rotation(0, CELL_56, v)) for v in range(8)])
    gap = np.abs(images["mesh"].astype(int) - images["impostor"].astype(int))
    strip = np.concatenate([np.concatenate(list(images[m][:4]), axis=1) for m in ("mesh", "impostor")], axis=0)
    SIDE_BY_SIDE.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(strip).save(SIDE_BY_SIDE)
    note = f"8 views, 224 px; top row mesh, bottom impostor: {SIDE_BY_SIDE.relative_to(ROOT)}"
    return [
        row("mesh vs impostor look", "mean_abs_pixel_diff", float(gap.mean()), "of 255", note, "< 4"),
        row(
            "mesh vs impostor look",
            "pixels_off_by_more_than_16",
            float(100 * (gap.max(-1) > 16).mean()),
            "%",
            "silhouette pixels of the tessellated spheres",
        ),
    ]


def per_worker(quick: bool) -> list[dict]:
    """Images/s of one process: render only, and render + PNG encode, per size, cell and method."""
    rows = []
    for (name, structure), size, method in (
        (s, size, m) for s in _structures().items() for size in (224, 512) for m in ("mesh", "impostor")
    ):
        n = (30 if quick else 100) if size == 224 else (15 if quick else 40)
        with Renderer(RenderConfig(image_size=size, method=method)) as r:
            rots = [view_rotation(0, CELL_56, v) for v in range(n)]
            r.render(structure, rots[0])  # warm-up: scene upload, shader compile
            t = time.perf_counter()
            images = [r.render(structure, q) for q in rots]
            render_s = time.perf_counter() - t
            t = time.perf_counter()
            for img in images:
                encode_png(img)
            png_s = time.perf_counter() - t
        bench = f"render {name} {size}px {method}"
        rows.append(row(bench, "images_per_s", n / render_s, "images/s", f"render only, n={n}"))
        rows.append(row(bench, "images_per_s_with_png", n / (render_s + png_s), "images/s", "render + PNG encode"))
        log.info("%s: %.0f images/s", bench, n / render_s)
    return rows


def memory(quick: bool) -> list[dict]:
    """Peak RSS growth over many renders with one Renderer (a leak shows as steady growth)."""
    structure = _structures()["56 atoms"]
    n = 300 if quick else 1500
    with Renderer(RenderConfig(image_size=224)) as r:
        for v in range(50):
            r.render(structure, view_rotation(0, CELL_56, v))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for v in range(n):
            encode_png(r.render(structure, view_rotation(1, CELL_56, v)))
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    return [row("render memory 56 atoms 224px mesh", "peak_rss_growth", grown, "MB", f"over {n} images after warm-up")]


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
    cell = _structures()["56 atoms"]
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
    import tempfile

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


def run(quick: bool = False) -> list[dict]:
    """All render benchmarks; a list of {benchmark, metric, value, unit, notes} rows."""
    load = os.getloadavg()[0]
    rows = headline(quick) + look(quick) + per_worker(quick) + memory(quick)
    scaling = ray_scaling(quick)
    one_actor = next(
        r["value"] for r in scaling if (r["benchmark"], r["metric"]) == ("ray data 1 worker(s)", "steady_images_per_s")
    )
    rows += scaling + ray_simulated(quick, one_actor) + layout_io(quick)
    for r in rows:
        r["notes"] = f"{r['notes']}; load avg at start {load:.1f} on {os.cpu_count()} CPUs".lstrip("; ")
    return rows


if __name__ == "__main__":
    module_main(run, RESULTS, __doc__.splitlines()[0], "fewer images (a smoke run)")
