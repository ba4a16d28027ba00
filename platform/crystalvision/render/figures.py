"""Pictures for reports: one structure drawn with each radii set, side by side (the run's other render settings).

Processes that run torch (evaluation) draw it in a fresh interpreter, :func:`radii_comparison_apart`: VTK and its
OpenGL stack never load beside torch (``core/natives.py``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, get_args

import numpy as np

from crystalvision.core import RenderConfig
from crystalvision.render.radii import RADIUS_SOURCES, RadiiSet

log = logging.getLogger(__name__)

FIGURE_PX = 256
HELPER_TIMEOUT_S = 120.0
_HELPER = "import sys; from crystalvision.render.figures import _draw_job; _draw_job(sys.argv[1])"


def radii_comparison(structure: Any, material_id: str, cfg: RenderConfig, path: Path) -> Path | None:
    """Draw ``structure`` (view 0 of ``material_id``) with every radii set into one PNG; None if it cannot be drawn
    here (no offscreen OpenGL, or an element missing from a set): the report goes on without the picture."""
    from PIL import Image, ImageDraw

    from crystalvision.core import RenderError
    from crystalvision.render.rotations import view_rotation
    from crystalvision.render.scene import Renderer

    panels = []
    size = max(cfg.image_size, FIGURE_PX)
    for radii in get_args(RadiiSet):
        one = cfg.model_copy(update={"radii": radii, "image_size": size})
        try:
            with Renderer(one) as renderer:
                pixels = renderer.render(structure, view_rotation(cfg.seed, material_id, 0))
        except (RenderError, RuntimeError, OSError) as exc:
            log.info("radii figure skipped (%s): %s", radii, exc)
            return None
        panel = Image.fromarray(np.ascontiguousarray(pixels))
        ImageDraw.Draw(panel).text((4, 4), f"radii: {radii}" + (" (this run)" if radii == cfg.radii else ""), fill=0)
        panels.append(panel)
    sheet = Image.new("RGB", (size * len(panels), size), "white")
    for i, panel in enumerate(panels):
        sheet.paste(panel, (i * size, 0))
    sheet.save(path)
    log.info("radii figure of %s: %s", material_id, "; ".join(RADIUS_SOURCES[r] for r in get_args(RadiiSet)))
    return path


def radii_comparison_apart(
    structure: dict[str, Any], material_id: str, cfg: RenderConfig, path: Path, timeout_s: float = HELPER_TIMEOUT_S
) -> Path | None:
    """:func:`radii_comparison` of a structure (its snapshot dict) drawn in a fresh interpreter; None when it cannot
    be drawn, the helper fails or it takes longer than ``timeout_s`` (the report goes on without the picture)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, sys.path))}
    with tempfile.TemporaryDirectory(prefix="crystalvision-figure-") as tmp:
        job = Path(tmp) / "job.json"
        job.write_text(json.dumps({"structure": structure, "material_id": material_id, "path": str(path),
                                   "render": cfg.model_dump(mode="json")}))  # fmt: skip
        try:
            done = subprocess.run(
                [sys.executable, "-c", _HELPER, str(job)], env=env, capture_output=True, text=True, timeout=timeout_s
            )
        except subprocess.TimeoutExpired:
            log.info("radii figure skipped: its helper process took more than %.0f s", timeout_s)
            return None
    if done.returncode != 0:
        log.info("radii figure skipped: its helper process failed (%s)", done.stderr.strip()[-500:])
        return None
    return path if path.is_file() else None


def _draw_job(job_path: str) -> None:
    """The helper process: draw the figure a job file describes."""
    from crystalvision.data import structure_from_dict

    logging.basicConfig(level=logging.INFO)
    job = json.loads(Path(job_path).read_text())
    mid, cfg = job["material_id"], RenderConfig.model_validate(job["render"])
    radii_comparison(structure_from_dict(job["structure"], mid), mid, cfg, Path(job["path"]))
