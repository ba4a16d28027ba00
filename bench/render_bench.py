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
from crystalvision.config import RenderConfig  # noqa: E402
from crystalvision.render import Renderer, encode_png, view_rotation  # noqa: E402
from crystalvision.settings import BUNDLED_SNAPSHOT  # noqa: E402
from crystalvision.snapshot import load_snapshot  # noqa: E402
from crystalvision.structures import structure_from_dict  # noqa: E402

log = logging.getLogger("bench.render")
CELL_56 = "mp-1177919"  # Li2Mn3NiO8 spinel, 56 atoms; its 2x2x2 supercell has 448
RESULTS = ROOT / "bench" / "results" / "render.json"


def _structures() -> dict[str, Any]:
    snap = load_snapshot(BUNDLED_SNAPSHOT)
    rec = next(r for r in snap.records if r.material_id == CELL_56)
    cell = structure_from_dict(rec.structure, CELL_56)
    return {"56 atoms": cell, f"{len(cell) * 8} atoms": cell * (2, 2, 2)}


def per_worker(quick: bool) -> list[dict]:
    """Images/s of one process: render only, and render + PNG encode, per size, cell and method."""
    rows = []
    for (name, structure), size, method in (
        (s, size, m) for s in _structures().items() for size in (224, 512) for m in ("mesh", "impostor")
    ):
        n = (30 if quick else 150) if size == 224 else (15 if quick else 60)
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


def ray_scaling(quick: bool) -> list[dict]:
    """Ray Data job (224 px, mesh) with 1 then 2 workers into fresh local stores."""
    from crystalvision.raycluster import ensure_ray
    from crystalvision.render.job import render_dataset
    from crystalvision.storage import ObjectStore

    snap = load_snapshot(BUNDLED_SNAPSHOT)
    records = [r for r in snap.records if not r.flags][: 4 if quick else 12]
    views = 16 if quick else 32
    t = time.time()
    ensure_ray()
    rows = [row("ray data", "ray_init_s", time.time() - t, "s", "local cluster start")]
    rates = {}
    for workers in (1, 2):
        cfg = RenderConfig(image_size=224, views_per_structure=views, num_workers=workers, cpus_per_worker=0.5)
        with tempfile.TemporaryDirectory() as tmp:
            result = render_dataset(records, snap.encoders, snap.manifest.content_sha256, cfg, ObjectStore(tmp))
        tm = result.timings
        rates[workers] = tm["steady_images_per_s"]
        note = f"{result.n_new} images of {len(records)} structures, 224 px mesh"
        rows.append(
            row(f"ray data {workers} worker(s)", "steady_images_per_s", tm["steady_images_per_s"], "images/s", note)
        )
        rows.append(
            row(f"ray data {workers} worker(s)", "images_per_s_end_to_end", tm["images_per_s"], "images/s", note)
        )
        rows.append(row(f"ray data {workers} worker(s)", "startup_s", tm["startup_s"], "s", "job start to first image"))
    rows.append(row("ray data", "speedup_2_vs_1", rates[2] / max(rates[1], 1e-9), "x", "steady images/s ratio"))
    return rows


def run(quick: bool = False) -> list[dict]:
    """All render benchmarks; a list of {benchmark, metric, value, unit, notes} rows."""
    load = os.getloadavg()[0]
    rows = per_worker(quick) + memory(quick) + ray_scaling(quick)
    for r in rows:
        r["notes"] = f"{r['notes']}; load avg at start {load:.1f} on {os.cpu_count()} CPUs".lstrip("; ")
    return rows


if __name__ == "__main__":
    module_main(run, RESULTS, __doc__.splitlines()[0], "fewer images (a smoke run)")
