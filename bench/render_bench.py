"""Render benchmark: images/s per worker (224/512 px, 56- and 448-atom cells, mesh and impostor spheres), peak
memory over many images, and Ray Data scaling from 1 to 2 workers with job start-up time.

    PYTHONPATH=platform .venv/bin/python -m bench.render_bench [--quick]

prints a table and writes ``bench/results/render.json``. The parts live in :mod:`bench.renderer_bench` (one
process) and :mod:`bench.render_data_bench` (Ray Data jobs, image layouts); ``--only render_bench.PART`` runs one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "platform"), *filter(None, [os.environ.get("PYTHONPATH")])])
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from bench.common import module_main  # noqa: E402
from bench.render_data_bench import layout_io, ray_scaling, ray_simulated  # noqa: E402
from bench.renderer_bench import headline, look, memory, per_worker  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "render.json"


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
