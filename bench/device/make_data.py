"""Render the bench set for the GPU machine: the bundled snapshot's structures, a few views each, 224 px.

``python bench/device/make_data.py OUT_DIR [--views 4] [--size 224] [--limit N]`` writes ``OUT_DIR/images.npz``
(uint8 NHWC images and the label columns the trainer reads) with the package's own renderer (VTK, offscreen). Only
structures with both regression labels are used (``--limit``: the first N of them, for a smoke run).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "platform"))

log = logging.getLogger("bench.device.data")


def render(out: Path, views: int, size: int, limit: int | None = None) -> Path:
    """Render ``views`` rotations of every labelled bundled structure (the first ``limit``); save images + labels
    as one npz."""
    from crystalvision.core.config import RenderConfig
    from crystalvision.core.settings import BUNDLED_SNAPSHOT
    from crystalvision.data.snapshot import load_snapshot
    from crystalvision.data.structures import structure_from_dict
    from crystalvision.render.rotations import view_rotation
    from crystalvision.render.scene import Renderer

    snap = load_snapshot(BUNDLED_SNAPSHOT)
    cfg = RenderConfig(image_size=size)
    systems, groups = snap.encoders.classes("crystal_system"), snap.encoders.classes("spacegroup")
    records = [r for r in snap.records if r.band_gap is not None and r.energy_above_hull is not None][:limit]
    images, rows = [], []
    with Renderer(cfg) as renderer:
        for rec in records:
            structure = structure_from_dict(rec.structure, rec.material_id)
            for view in range(views):
                images.append(renderer.render(structure, view_rotation(cfg.seed, rec.material_id, view)))
                rows.append(rec)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "images.npz"
    np.savez_compressed(
        path,
        image=np.stack(images).astype(np.uint8),
        band_gap=np.array([r.band_gap for r in rows], np.float32),
        energy_above_hull=np.array([r.energy_above_hull for r in rows], np.float32),
        crystal_system_id=np.array([systems.index(r.crystal_system) for r in rows], np.int64),
        spacegroup_id=np.array([groups.index(r.spacegroup_symbol) for r in rows], np.int64),
        crystal_system_classes=np.array(systems),
        spacegroup_classes=np.array(groups),
    )
    log.info("rendered %d images of %d structures at %d px -> %s", len(images), len(records), size, path)
    return path


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--limit", type=int, default=None, help="Only the first N labelled structures (smoke runs).")
    a = p.parse_args()
    render(a.out, a.views, a.size, a.limit)
