"""First CPU numbers of issue 13 (README "Why the split by image is easy"): leakage per protocol, graph baseline.

Renders 62 structures x 56 views at 64 px twice (frames of a continuous 6-degree rotation, emulating the study's
video, and independent uniform views), measures nearest-training-image SSIM and a pixel SSIM 1-NN classifier per
protocol, and trains the CGCNN baseline and the dummy/1-NN baselines on 5 grouped folds. About 12 min on 2 busy
cores. Usage: ``python docs/study/first_numbers.py OUT_DIR`` from the repository root (writes numbers.json,
leakage.png, leakage.html).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pymatgen.core import Structure
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "platform"))

from crystalvision.baselines import run_baselines
from crystalvision.config import RenderConfig, SnapshotConfig, SplitConfig
from crystalvision.dataset import split_frame
from crystalvision.folds import aggregate_folds, fold_splits
from crystalvision.graphnet import GraphConfig, train_graph_baseline
from crystalvision.leakage import leakage_figure, leakage_html, nearest_train_ssim, prepare, summary
from crystalvision.render.rotations import view_rotation, view_seed
from crystalvision.render.scene import Renderer
from crystalvision.snapshot import load_snapshot, select

SIZE, VIEWS, STEP_DEG = 64, 56, 6.0
HEADS = (("crystal system", "crystal_system"), ("space group", "spacegroup_symbol"))


def trajectory(material_id: str, n: int, step_deg: float, seed: int = 0) -> list[Rotation]:
    """Frames of one continuous rotation: seeded start, slowly drifting axis, ``step_deg`` between frames."""
    rng = np.random.default_rng(view_seed(seed, material_id, -1))
    rot, axis, drift = Rotation.random(rng=rng), rng.normal(size=3), rng.normal(size=3)
    out = []
    for v in range(n):
        out.append(rot)
        a = axis + 0.3 * np.sin(v / 10.0) * drift
        rot = Rotation.from_rotvec(np.deg2rad(step_deg) * a / np.linalg.norm(a)) * rot
    return out


def render_all(records, encoders) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    renderer = Renderer(RenderConfig(image_size=SIZE))
    images: dict[str, list[np.ndarray]] = {"trajectory": [], "uniform": []}
    rows = []
    for m, rec in records.items():
        scene = renderer.scene(Structure.from_dict(rec.structure))
        images["trajectory"] += [renderer.render_scene(scene, r) for r in trajectory(m, VIEWS, STEP_DEG)]
        images["uniform"] += [renderer.render_scene(scene, view_rotation(0, m, v)) for v in range(VIEWS)]
        rows += [
            {
                "material_id": m,
                "view": v,
                "crystal_system": rec.crystal_system,
                "spacegroup_symbol": rec.spacegroup_symbol,
                "band_gap": rec.band_gap,
                "energy_above_hull": rec.energy_above_hull,
                "crystal_system_id": encoders.encode("crystal_system", rec.crystal_system),
                "spacegroup_id": encoders.encode("spacegroup", rec.spacegroup_symbol),
            }
            for v in range(VIEWS)
        ]
    df = pd.DataFrame(rows)
    df["row"] = np.arange(len(df))
    return df, {k: np.stack(v) for k, v in images.items()}


def measure(x: torch.Tensor, train: pd.DataFrame, test: pd.DataFrame):
    """Nearest same-structure SSIM per test image and the SSIM 1-NN classifier's correct flags."""
    tr, te = train["row"].to_numpy(), test["row"].to_numpy()
    args = (x[te], test["material_id"].to_numpy(), x[tr], train["material_id"].to_numpy())
    near, nn = nearest_train_ssim(*args), nearest_train_ssim(*args, same_structure=False)
    correct = {h: train[c].to_numpy()[nn.index] == test[c].to_numpy() for h, c in HEADS}
    return near.ssim, correct


def main(out: Path) -> None:
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    snap = load_snapshot(Path(__file__).resolve().parents[2] / "platform/crystalvision/data/snapshots/lmno")
    records = {r.material_id: r for r in select(snap, SnapshotConfig()).records}
    df, images = render_all(records, snap.encoders)
    x = {k: prepare(v, SIZE) for k, v in images.items()}
    results = {}
    for name, views in (("trajectory, split by image (study)", "trajectory"), ("uniform, split by image", "uniform")):
        sp = split_frame(df, SplitConfig(protocol="image"))
        results[name] = measure(x[views], pd.concat([sp.train, sp.val]), sp.test)
    folds = fold_splits(df, SplitConfig(protocol="grouped", folds=5))
    parts = [measure(x["uniform"], pd.concat([f.train, f.val]), f.test) for f in folds]
    results["uniform, grouped 5-fold"] = (
        np.concatenate([p[0] for p in parts]),
        {h: np.concatenate([p[1][h] for p in parts]) for h, _ in HEADS},
    )
    summaries = {k: summary(*v, near=0.7) for k, v in results.items()}
    (out / "leakage.html").write_text(leakage_html(summaries, leakage_figure(results, out / "leakage.png")))
    n_classes = {"crystal_system": len(snap.encoders.crystal_system), "spacegroup": len(snap.encoders.spacegroup)}
    graph = [train_graph_baseline(records, f, GraphConfig(), n_classes=n_classes) for f in folds]
    base = [run_baselines(pd.concat([f.train, f.val]), f.test, records, stability_threshold=0.025)[0] for f in folds]
    numbers = summaries | {
        "grouped_5fold_cgcnn": aggregate_folds(graph),
        "grouped_5fold_baselines": aggregate_folds(base),
    }
    (out / "numbers.json").write_text(json.dumps(numbers, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
