"""docs/study.md's leakage table ("Why the split by image is easy") and graph-baseline table, measured and regenerated.

Renders the bundled structures x ``--views`` views at ``--size`` px twice (frames of a continuous 6-degree
rotation, emulating the study's video, and independent uniform views), and per protocol finds each test image's
nearest training image by SSIM, searched over *all* training images with the same rule for every protocol
(``--candidates K``: SSIM on the K training images nearest in pixel distance, 16 px thumbnails; 0 = exhaustive).
That nearest image is also a pixel SSIM 1-NN classifier's answer. For ``--check`` test images per protocol the
prefilter is compared with the exhaustive search (how often it finds the same nearest image). Then the CGCNN
baseline and the dummy/1-NN baselines train on the grouped folds.

Usage, from the repository root: ``python docs/study/first_numbers.py OUT_DIR [--views 28 ...]`` writes
``numbers.json``, ``leakage.png`` and ``leakage.html``; ``python docs/study/first_numbers.py --table NUMBERS.json
[--readme docs/study.md]`` prints both Markdown tables (and rewrites them between the page's ``leakage-table`` and
``graph-table`` markers).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pymatgen.core import Structure
from scipy.spatial.transform import Rotation

from crystalvision.core.config import RenderConfig, SnapshotConfig, SplitConfig
from crystalvision.data.dataset import split_frame
from crystalvision.data.folds import aggregate_folds, fold_splits
from crystalvision.data.snapshot import load_snapshot, select
from crystalvision.evaluate.baselines import run_baselines
from crystalvision.evaluate.graphnet import GraphConfig, train_graph_baseline
from crystalvision.evaluate.leakage import (
    accuracy_by_similarity,
    leakage_figure,
    leakage_html,
    nearest_train_ssim,
    prepare,
    summary,
)
from crystalvision.render.rotations import view_rotation, view_seed

STEP_DEG = 6.0
HEADS = (("crystal_system", "crystal_system"), ("spacegroup", "spacegroup_symbol"))
PROTOCOLS = (
    ("trajectory, split by image (study)", "trajectory frames, split by image (the study)"),
    ("uniform, split by image", "uniform views, split by image"),
    ("uniform, grouped 5-fold", "uniform views, grouped 5-fold"),
)
log = logging.getLogger("first_numbers")


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


def render_all(records, encoders, views: int, size: int) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Both view sets of every structure (uint8 NHWC) and the labels table, one row per view."""
    from crystalvision.render.scene import Renderer  # VTK only where images are made

    renderer = Renderer(RenderConfig(image_size=size))
    images: dict[str, list[np.ndarray]] = {"trajectory": [], "uniform": []}
    rows = []
    for m, rec in records.items():
        scene = renderer.scene(Structure.from_dict(rec.structure))
        images["trajectory"] += [renderer.render_scene(scene, r) for r in trajectory(m, views, STEP_DEG)]
        images["uniform"] += [renderer.render_scene(scene, view_rotation(0, m, v)) for v in range(views)]
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
            for v in range(views)
        ]
    df = pd.DataFrame(rows)
    df["row"] = np.arange(len(df))
    return df, {k: np.stack(v) for k, v in images.items()}


def measure(x: torch.Tensor, train: pd.DataFrame, test: pd.DataFrame, candidates: int | None, check: int):
    """Nearest training image (all structures) per test image: SSIM, the SSIM 1-NN classifier's correct flags,
    whether it shows the same structure, and, for the first ``check`` test images, whether the prefilter found the
    exhaustive search's nearest image."""
    tr, te = train["row"].to_numpy(), test["row"].to_numpy()
    ids_tr, ids_te = train["material_id"].to_numpy(), test["material_id"].to_numpy()
    nn = nearest_train_ssim(x[te], ids_te, x[tr], ids_tr, candidates=candidates)
    correct = {h: train[c].to_numpy()[nn.index] == test[c].to_numpy() for h, c in HEADS}
    agree = np.zeros(0, bool)
    if candidates is not None and check:
        sample = te[:check]
        full = nearest_train_ssim(x[sample], ids_te[:check], x[tr], ids_tr, candidates=None)
        agree = np.isclose(full.ssim, nn.ssim[: len(sample)], atol=1e-6)
    return nn.ssim, correct, nn.same_structure, agree


def main(out: Path, views: int, size: int, candidates: int | None, check: int, n_structures: int, folds: int) -> None:
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    snap = load_snapshot(Path(__file__).resolve().parents[2] / "platform/crystalvision/data/snapshots/lmno")
    records = dict(list({r.material_id: r for r in select(snap, SnapshotConfig()).records}.items())[:n_structures])
    df, images = render_all(records, snap.encoders, views, size)
    x = {k: prepare(v, size) for k, v in images.items()}
    timing = {"render_s": time.perf_counter() - t0}
    t1 = time.perf_counter()
    parts: dict[str, list] = {}
    for name, views_of in ((PROTOCOLS[0][0], "trajectory"), (PROTOCOLS[1][0], "uniform")):
        sp = split_frame(df, SplitConfig(protocol="image"))
        parts[name] = [measure(x[views_of], pd.concat([sp.train, sp.val]), sp.test, candidates, check)]
    fold_list = fold_splits(df, SplitConfig(protocol="grouped", folds=folds))
    parts[PROTOCOLS[2][0]] = [
        measure(x["uniform"], pd.concat([f.train, f.val]), f.test, candidates, check // folds) for f in fold_list
    ]
    timing["leakage_s"] = time.perf_counter() - t1
    results, numbers = {}, {}
    for name, ps in parts.items():
        ssim = np.concatenate([p[0] for p in ps])
        results[name] = (ssim, {h: np.concatenate([p[1][h] for p in ps]) for h, _ in HEADS})
        same, agree = np.concatenate([p[2] for p in ps]), np.concatenate([p[3] for p in ps])
        numbers[name] = summary(*results[name], near=0.7) | {
            "leakage_frac_nearest_same_structure": float(same.mean()),
            "prefilter_checked": float(len(agree)),
            "prefilter_agrees_with_exhaustive": float(agree.mean()) if len(agree) else float("nan"),
            "accuracy_by_ssim_bin": {
                h: accuracy_by_similarity(ssim, c).to_dict(orient="list") for h, c in results[name][1].items()
            },
        }
    flat = {k: {kk: vv for kk, vv in v.items() if not isinstance(vv, dict)} for k, v in numbers.items()}
    (out / "leakage.html").write_text(leakage_html(flat, leakage_figure(results, out / "leakage.png")))
    t2 = time.perf_counter()
    n_classes = {t: len(snap.encoders.classes(t)) for t in ("crystal_system", "spacegroup")}
    graph = [train_graph_baseline(records, f, GraphConfig.small(), n_classes=n_classes) for f in fold_list]
    base = [
        run_baselines(pd.concat([f.train, f.val]), f.test, records, stability_threshold=0.025)[0] for f in fold_list
    ]
    timing["graph_and_baselines_s"] = time.perf_counter() - t2
    numbers |= {
        "grouped_5fold_cgcnn": aggregate_folds(graph),
        "grouped_5fold_baselines": aggregate_folds(base),
        "settings": {"structures": len(records), "views": views, "size": size, "folds": folds, "step_deg": STEP_DEG,
                     "candidates": candidates or "exhaustive", "check": check, "torch_threads": 1},
        "seconds": timing,
    }  # fmt: skip
    (out / "numbers.json").write_text(json.dumps(numbers, indent=1))
    log.info("first numbers in %s (%.0f s)", out, time.perf_counter() - t0)


def _ms(m: dict, key: str) -> str:
    return f"{m[key + '_mean']:.2f} ± {m[key + '_std']:.2f}" if f"{key}_mean" in m else ""


def tables(numbers: dict) -> tuple[str, str]:
    """The leakage table and the graph-baseline table (Markdown) from a ``numbers.json``."""
    st = numbers["settings"]
    rule = "exhaustive" if st["candidates"] == "exhaustive" else f"prefilter {st['candidates']}"
    leak = [
        f"| protocol ({st['structures']} structures x {st['views']} views, {st['size']} px; search: {rule}) "
        "| nearest-SSIM median (IQR) | SSIM 1-NN acc system | SSIM 1-NN acc space group "
        "| nearest SSIM ≥ 0.7 | nearest image is same structure | prefilter = exhaustive |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, label in PROTOCOLS:
        m, label = numbers[key], label.replace("5-fold", f"{st['folds']}-fold")
        agree = m.get("prefilter_agrees_with_exhaustive", float("nan"))
        agree_text = f"{agree:.0%} of {m['prefilter_checked']:.0f}" if agree == agree else ""
        leak.append(
            f"| {label} | {m['leakage_ssim_median']:.2f} ({m['leakage_ssim_q25']:.2f}-{m['leakage_ssim_q75']:.2f}) "
            f"| {m['leakage_acc_crystal_system']:.3f} | {m['leakage_acc_spacegroup']:.3f} "
            f"| {m['leakage_frac_ssim_ge_0.7']:.0%} | {m['leakage_frac_nearest_same_structure']:.0%} | {agree_text} |"
        )
    cols = ("r2_band_gap", "r2_energy_above_hull", "acc_crystal_system", "acc_spacegroup")
    graph = [
        f"| model (grouped {st['folds']}-fold, per structure) | R² gap | R² e_hull | acc system | acc space group |",
        "|---|---|---|---|---|",
    ]
    b, g = numbers["grouped_5fold_baselines"], numbers["grouped_5fold_cgcnn"]
    for label, m, prefix in (
        ("majority / train mean", b, "baseline_dummy"),
        ("1-NN on structure descriptor", b, "baseline_1nn"),
        ("CGCNN, 2 layers x 32 (smaller than the published size)", g, "cgcnn_test"),
    ):
        graph.append(f"| {label} | " + " | ".join(_ms(m, f"{prefix}_{c}") for c in cols) + " |")
    return "\n".join(leak), "\n".join(graph)


def write_readme(readme: Path, name: str, text: str) -> None:
    """Replace the table between the page's ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` markers."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    doc = readme.read_text()
    if start not in doc or end not in doc:
        raise ValueError(f"{readme} has no {start} ... {end} markers; add them around the table to regenerate")
    head, rest = doc.split(start, 1)
    tmp = readme.with_suffix(".tmp")
    tmp.write_text(f"{head}{start}\n{text}\n{end}{rest.split(end, 1)[1]}")
    tmp.replace(readme)


def cli(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, nargs="?")
    ap.add_argument("--views", type=int, default=56)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--candidates", type=int, default=64, help="0 = exhaustive SSIM over all training images")
    ap.add_argument("--check", type=int, default=50, help="test images per protocol compared with exhaustive")
    ap.add_argument("--structures", type=int, default=10_000)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--table", type=Path, help="print the tables of this numbers.json")
    ap.add_argument("--readme", type=Path, help="with --table: rewrite the tables in this page (docs/study.md)")
    a = ap.parse_args(argv)
    if a.table is not None:
        leak, graph = tables(json.loads(a.table.read_text()))
        if a.readme is not None:
            write_readme(a.readme, "leakage-table", leak)
            write_readme(a.readme, "graph-table", graph)
        print(leak + "\n\n" + graph)
        return
    if a.out is None:
        ap.error("give OUT_DIR (or --table NUMBERS.json)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    main(a.out, a.views, a.size, a.candidates or None, a.check, a.structures, a.folds)


if __name__ == "__main__":
    cli(sys.argv[1:])
