"""Pictures for reports: one structure drawn with each radii set, side by side (the run's other render settings)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, get_args

import numpy as np

from crystalvision.core.config import RenderConfig
from crystalvision.render.radii import RADIUS_SOURCES, RadiiSet

log = logging.getLogger(__name__)

FIGURE_PX = 256


def radii_comparison(structure: Any, material_id: str, cfg: RenderConfig, path: Path) -> Path | None:
    """Draw ``structure`` (view 0 of ``material_id``) with every radii set into one PNG; None if it cannot be drawn
    here (no offscreen OpenGL, or an element missing from a set): the report goes on without the picture."""
    from PIL import Image, ImageDraw

    from crystalvision.core.errors import RenderError
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
