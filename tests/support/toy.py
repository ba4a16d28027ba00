"""A trivially learnable toy dataset in the render stage's layout (labels.parquet + PNGs in a store).

Each structure gets a flat colour that encodes its crystal system, a brightness that encodes its band gap and
a stripe pattern that encodes e_above_hull, so a small CNN can learn every head in a few steps.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from PIL import Image

from crystalvision.data.storage import ObjectStore

# timm's 0.1 M-parameter EfficientNet (B0's blocks, ~100x less compute than B0's 4 M parameters) for tests that
# train or save a model but are not about the backbone: train.backbone / ModelSpec(backbone=...).
TEST_BACKBONE = "test_efficientnet"
SYSTEMS = ["triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic"]
SPACEGROUPS = ["P1", "P-1", "C2/m", "Pnma", "I4/mmm", "R-3m", "P6_3mc", "Fm-3m"]
PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230]],
    dtype=np.float32,
)


def _image(system_id: int, gap: float, ehull: float, size: int, rng: np.random.Generator) -> np.ndarray:
    img = np.tile(PALETTE[system_id] * (0.5 + 0.5 * gap / 3.0), (size, size, 1))
    period = 2 + int(ehull * 100) % 6
    img[:, ::period] *= 0.6
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_toy_dataset(
    store: ObjectStore,
    n_structures: int = 14,
    views: int = 6,
    size: int = 32,
    seed: int = 0,
    prefix: str = "renders/toy",
) -> str:
    """Write the toy set into ``store``; returns the labels key."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_structures):
        sys_id = i % len(SYSTEMS)
        sg_id = i % len(SPACEGROUPS)
        gap, ehull = float(rng.uniform(0, 3)), float(rng.uniform(0, 0.06))
        mid = f"mp-toy{i:03d}"
        for v in range(views):
            key = f"{prefix}/images/{mid}/{v:04d}.png"
            buf = io.BytesIO()
            Image.fromarray(_image(sys_id, gap, ehull, size, rng)).save(buf, format="PNG")
            store.put_bytes(key, buf.getvalue())
            rows.append(
                {
                    "material_id": mid,
                    "view": v,
                    "quaternion": [0.0, 0.0, 0.0, 1.0],
                    "image_key": key,
                    "band_gap": gap,
                    "energy_above_hull": ehull,
                    "crystal_system": SYSTEMS[sys_id],
                    "spacegroup_symbol": SPACEGROUPS[sg_id],
                    "crystal_system_id": sys_id,
                    "spacegroup_id": sg_id,
                    "formula": f"Toy{i}",
                    "label_source_band_gap": "toy",
                    "label_source_energy_above_hull": "toy",
                }
            )
    labels_key = f"{prefix}/labels.parquet"
    buf = io.BytesIO()
    pd.DataFrame(rows).to_parquet(buf)
    store.put_bytes(labels_key, buf.getvalue())
    return labels_key
