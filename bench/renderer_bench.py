"""The renderer in one process: the headline against the fewest VTK calls that draw the same atoms, mesh and impostor
spheres side by side, images/s per image size, cell and sphere method, and memory over many images.

Parts of :mod:`bench.render_bench`, which runs them (``--only render_bench.memory`` runs one).
"""

from __future__ import annotations

import logging
import resource
import time
from pathlib import Path
from typing import Any

from bench.common import row
from crystalvision.core.config import RenderConfig
from crystalvision.core.settings import BUNDLED_SNAPSHOT
from crystalvision.data import encode_png
from crystalvision.data.snapshot import load_snapshot
from crystalvision.data.structures import structure_from_dict
from crystalvision.render import Renderer, view_quaternion, view_rotation

log = logging.getLogger("bench.render")
ROOT = Path(__file__).resolve().parents[1]
CELL_56 = "mp-1177919"  # Li2Mn3NiO8 spinel, 56 atoms; its 2x2x2 supercell has 448
SIDE_BY_SIDE = ROOT / "bench" / "results" / "render_mesh_vs_impostor.png"


def structures() -> dict[str, Any]:
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

    structure = structures()["56 atoms"]
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

    structure = structures()["56 atoms"]
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
        (s, size, m) for s in structures().items() for size in (224, 512) for m in ("mesh", "impostor")
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
    structure = structures()["56 atoms"]
    n = 300 if quick else 1500
    with Renderer(RenderConfig(image_size=224)) as r:
        for v in range(50):
            r.render(structure, view_rotation(0, CELL_56, v))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for v in range(n):
            encode_png(r.render(structure, view_rotation(1, CELL_56, v)))
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    return [row("render memory 56 atoms 224px mesh", "peak_rss_growth", grown, "MB", f"over {n} images after warm-up")]
