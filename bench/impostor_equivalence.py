"""Do impostor and mesh spheres teach a network the same thing? (issue 16.1: "a model trained on one scores the same
on the other within noise").

Every non-flagged structure of the bundled snapshot is drawn twice from the same trajectory frames (the study's
protocol, where a small network learns within minutes on CPU): with impostor spheres (the default) and with the
tessellated mesh. One split by image (80/20, seeded), the same for both sets. EfficientNet-B0 from scratch (four
heads, the project's loss, Adam 1e-3, batch 16) is trained on impostor images twice (two seeds) and on mesh images
once; each model is scored on the test images of both sets. Within noise means: the change from switching the
test set's sphere method is no larger than the change from switching the training seed.

    PYTHONPATH=platform .venv/bin/python -m bench.impostor_equivalence [--quick]

prints a table and writes ``bench/results/impostor_equivalence.json``. Rendering runs in a spawned child process
(VTK's GL libraries and torch do not share a process safely).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "platform") not in sys.path:
    sys.path.insert(0, str(ROOT / "platform"))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "platform"), os.environ.get("PYTHONPATH")]))

from bench.common import module_main, row  # noqa: E402

log = logging.getLogger("bench.impostor_equivalence")
RESULTS = ROOT / "bench" / "results" / "impostor_equivalence.json"
HEADS = ("crystal_system", "spacegroup")  # the heads compared (all four are trained)


def _render_sets(out: str, views: int, size: int) -> None:
    """Child process: both sphere methods, same frames; saves images, material ids and views to ``out`` (npz)."""
    from crystalvision.core.config import RenderConfig
    from crystalvision.core.settings import BUNDLED_SNAPSHOT
    from crystalvision.data.snapshot import load_snapshot
    from crystalvision.data.structures import structure_from_dict
    from crystalvision.render import Renderer
    from crystalvision.render.rotations import structure_quaternions

    records = [r for r in load_snapshot(BUNDLED_SNAPSHOT).records if not r.flags]
    arrays: dict[str, list] = {"impostor": [], "mesh": [], "material_id": [], "view": []}
    for method in ("impostor", "mesh"):
        cfg = RenderConfig(image_size=size, views_per_structure=views, views="trajectory", method=method)
        with Renderer(cfg) as renderer:
            for rec in records:
                structure = structure_from_dict(rec.structure, rec.material_id)
                for v, quat in enumerate(structure_quaternions(cfg, rec.material_id)):
                    arrays[method].append(renderer.render(structure, quat))
                    if method == "impostor":
                        arrays["material_id"].append(rec.material_id)
                        arrays["view"].append(v)
    np.savez(out, **{k: np.asarray(v) for k, v in arrays.items()})


def _labels(material_ids: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Per image, each head's raw label (class id, or regression value in physical units) from the render job's
    own label columns; and the class names."""
    from crystalvision.core.config import TARGETS, TARGETS_CLASSIFICATION
    from crystalvision.core.settings import BUNDLED_SNAPSHOT
    from crystalvision.core.targets import BY_NAME, CLASS_ID
    from crystalvision.data.snapshot import load_snapshot
    from crystalvision.render.labels import label_columns

    snap = load_snapshot(BUNDLED_SNAPSHOT)
    by_id = {r.material_id: label_columns(r, snap.encoders) for r in snap.records}
    column = {t: CLASS_ID[t] if t in CLASS_ID else BY_NAME[t].label for t in TARGETS}
    labels = {t: np.array([by_id[m][column[t]] for m in material_ids]) for t in TARGETS}
    return labels, {h: list(snap.encoders.classes(h)) for h in TARGETS_CLASSIFICATION}


def _train(images: np.ndarray, labels: dict[str, np.ndarray], classes: dict, epochs: int, seed: int):
    """EfficientNet-B0 from scratch with the training core (``loop.Engine``: the four heads, the project's loss,
    Adam 1e-3, batch 16), regression targets standardised on these training images."""
    import torch

    from crystalvision.core.config import TARGETS_REGRESSION, TrainConfig
    from crystalvision.learn.accel import DeviceData
    from crystalvision.learn.loop import Engine
    from crystalvision.learn.model import CrystalNet, ModelSpec

    torch.manual_seed(seed)
    mean = {t: float(labels[t].mean()) for t in TARGETS_REGRESSION}
    std = {t: float(labels[t].std()) or 1.0 for t in TARGETS_REGRESSION}
    spec = ModelSpec(class_names=classes, image_size=images.shape[1], target_mean=mean, target_std=std)
    targets = {t: torch.as_tensor((v - mean[t]) / std[t] if t in mean else v) for t, v in labels.items()}
    engine = Engine(CrystalNet(spec), TrainConfig(batch_size=16, lr=1e-3), torch.device("cpu"),
                    label_columns={t: t for t in labels})  # fmt: skip
    held = DeviceData([{"image": torch.from_numpy(images), **targets}], engine.device, list(targets))
    for epoch in range(epochs):
        engine.train_epoch(held.batches(16, seed=seed * 1000 + epoch))
    return engine.model


def _correct(net, images: np.ndarray, labels: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per test image and head: was the top class right?"""
    from crystalvision.learn.model import predict_arrays

    proba = predict_arrays(net, images)
    return {h: proba[f"{h}_proba"].argmax(1) == labels[h] for h in HEADS}


def paired_ci(a: np.ndarray, b: np.ndarray, n_boot: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of mean(a) - mean(b) over the same test images (paired resampling)."""
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(a), (n_boot, len(a)))
    diffs = a[idx].mean(1) - b[idx].mean(1)
    return float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))


def run(quick: bool = False) -> list[dict]:
    """Train on impostors (2 seeds) and on meshes; score each on both test sets."""
    import torch

    torch.set_num_threads(int(os.environ.get("CRYSTALVISION_BENCH_THREADS", "2")))
    views, size, epochs = (8, 48, 2) if quick else (24, 64, 12)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="cv-equiv-") as tmp:
        path = str(Path(tmp) / "sets.npz")
        child = mp.get_context("spawn").Process(target=_render_sets, args=(path, views, size))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise RuntimeError(f"rendering the two sphere sets failed (exit code {child.exitcode})")
        data = dict(np.load(path))
    labels, classes = _labels(data["material_id"])
    test = np.random.default_rng(0).random(len(data["view"])) < 0.2
    log.info("%d images per set, %d test; rendered in %.0f s", len(test), test.sum(), time.time() - t0)
    train_labels = {h: v[~test] for h, v in labels.items()}
    test_labels = {h: v[test] for h, v in labels.items()}
    correct: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for name, method, seed in (("impostor seed 0", "impostor", 0), ("impostor seed 1", "impostor", 1),
                               ("mesh seed 0", "mesh", 0)):  # fmt: skip
        net = _train(data[method][~test], train_labels, classes, epochs, seed)
        correct[name] = {m: _correct(net, data[m][test], test_labels) for m in ("impostor", "mesh")}
        log.info("trained on %s: %s", name, {m: {h: round(float(c[h].mean()), 3) for h in HEADS}
                                              for m, c in correct[name].items()})  # fmt: skip
    note = f"{len(test)} images per set ({views} trajectory frames x {len(test) // views} structures, {size} px), " \
           f"{int(test.sum())} test, B0 from scratch, {epochs} epochs"  # fmt: skip
    rows = []
    for name, by_test in correct.items():
        for method, c in by_test.items():
            for h in HEADS:
                rows.append(row(f"trained on {name}", f"acc_{h}_on_{method}", float(c[h].mean()), "", note))
    for h in HEADS:
        seeds = correct["impostor seed 0"]["impostor"][h], correct["impostor seed 1"]["impostor"][h]
        lo, hi = paired_ci(*seeds)
        rows.append(row("impostor vs mesh", f"seed_gap_{h}", float(seeds[0].mean() - seeds[1].mean()), "",
                        f"seed 0 - seed 1 on the impostor test set, 95% CI [{lo:.3f}, {hi:.3f}]"))  # fmt: skip
        for name, by_test in correct.items():
            lo, hi = paired_ci(by_test["impostor"][h], by_test["mesh"][h])
            gap = float(by_test["impostor"][h].mean() - by_test["mesh"][h].mean())
            rows.append(row("impostor vs mesh", f"method_gap_{h} ({name})", gap, "",
                            f"impostor - mesh test set, same views; paired bootstrap 95% CI [{lo:.3f}, {hi:.3f}]",
                            "CI holds 0"))  # fmt: skip
    return rows


if __name__ == "__main__":
    module_main(run, RESULTS, __doc__.splitlines()[0], "smallest sizes (a smoke run)")
