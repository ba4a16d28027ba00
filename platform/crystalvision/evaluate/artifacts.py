"""The files of an evaluation beside its metrics: prediction tables (per image, per structure), classification
reports, and the figures (parity, confusion, ROC and PR of the test split, the radii comparison, saliency maps)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from crystalvision.core import CLASS_ID, TARGETS_CLASSIFICATION, TARGETS_REGRESSION, PipelineConfig
from crystalvision.data import MaterialRecord, ObjectStore, Splits, load_images
from crystalvision.evaluate import metrics as M
from crystalvision.evaluate import plots
from crystalvision.evaluate.levels import Level, class_report
from crystalvision.learn import CrystalNet, ModelSpec, unwrap


def prediction_table(level: Level, split: str, spec_classes: dict[str, list[str]], threshold: float) -> pd.DataFrame:
    """Readable predictions: true and predicted value of every target, top class probability."""
    lab, pred = level.labels, level.outputs
    per_image = ("view", "image_key") if "n_views" not in lab else ()
    keep = [c for c in ("material_id", *per_image, "n_views", "formula") if c in lab]
    df = lab[keep].copy()
    df.insert(0, "split", split)
    for t in TARGETS_REGRESSION:
        df[t], df[f"{t}_pred"] = lab[t].to_numpy(), pred[t]
    df["stable"] = lab["energy_above_hull"].to_numpy() <= threshold
    df["stable_pred"] = pred["energy_above_hull"] <= threshold
    for t in TARGETS_CLASSIFICATION:
        proba = pred[f"{t}_proba"]
        df[t] = [spec_classes[t][k] for k in lab[CLASS_ID[t]].astype(int)]
        df[f"{t}_pred"] = [spec_classes[t][k] for k in proba.argmax(1)]
        df[f"{t}_pred_proba"] = proba.max(1)
    return df


def write_tables(levels: Mapping[str, Level], classes: dict[str, list[str]], threshold: float, out: Path) -> dict:
    """Classification reports of the test split and prediction CSVs (per image, per structure); the reports."""
    reports = {t: class_report(levels["test"], t, classes[t]) for t in TARGETS_CLASSIFICATION}
    for t, rep in reports.items():
        (out / f"classification_report_{t}.txt").write_text(rep["report_text"])
        (out / f"classification_report_{t}.json").write_text(
            json.dumps({k: v for k, v in rep.items() if k != "report_text"}, indent=1)
        )
    tables = [prediction_table(levels[n], n, classes, threshold) for n in levels if "struct" not in n]
    pd.concat(tables).to_csv(out / "predictions.csv", index=False)
    struct_tables = [
        prediction_table(levels[n], n.removesuffix("_struct"), classes, threshold) for n in levels if "struct" in n
    ]
    pd.concat(struct_tables).to_csv(out / "predictions_by_structure.csv", index=False)
    return reports


def make_plots(test: Level, struct: Level, classes: dict[str, list[str]], metrics: dict, out: Path) -> list[Path]:
    """Parity, confusion (per image and per structure), ROC and PR figures of the test split."""
    paths = []
    for t in TARGETS_REGRESSION:
        paths.append(
            plots.parity_plot(
                test.labels[t].to_numpy(),
                test.outputs[t],
                t,
                out / f"parity_{t}.png",
                struct_true=struct.labels[t].to_numpy(),
                struct_pred=struct.outputs[t],
                r2=metrics.get(f"test_r2_{t}"),
            )
        )
    for t in TARGETS_CLASSIFICATION:
        for name, level in (("image", test), ("structure", struct)):
            y = level.labels[CLASS_ID[t]].to_numpy(dtype=int)
            y_pred = level.outputs[f"{t}_proba"].argmax(1)
            labels = M.present_labels(y, y_pred)
            paths.append(
                plots.confusion_plot(
                    M.confusion(y, y_pred, labels),
                    [classes[t][k] for k in labels],
                    out / f"confusion_{t}_{name}.png",
                    f"{t}, test, per {name}",
                )
            )
        y, proba = test.labels[CLASS_ID[t]].to_numpy(dtype=int), test.outputs[f"{t}_proba"]
        paths.append(plots.roc_plot(y, proba, classes[t], out / f"roc_{t}.png", f"ROC, {t} (test, per image)"))
        paths.append(plots.pr_plot(y, proba, classes[t], out / f"pr_{t}.png", f"PR, {t} (test, per image)"))
    return paths


def radii_figure(
    splits: Splits, records: Mapping[str, MaterialRecord] | None, cfg: PipelineConfig, out: Path
) -> list[Path]:
    """The first test structure drawn with each radii set (``radii.png``), in a helper process (never VTK beside
    torch); none without its record."""
    if not records or splits.test.empty:
        return []
    from crystalvision.render import radii_comparison_apart

    mid = str(splits.test["material_id"].iloc[0])
    if mid not in records:
        return []
    path = radii_comparison_apart(records[mid].structure, mid, cfg.render, out / "radii.png")
    return [path] if path else []


def run_saliency(
    model: CrystalNet, splits: Splits, store: ObjectStore, cfg: PipelineConfig, out: Path, spec: ModelSpec | None = None
):
    """SmoothGrad maps for one example per crystal system (test first, then val, then train) + SSIM matrix."""
    from crystalvision.evaluate.explain import explain_examples, pick_examples

    examples = pick_examples([("test", splits.test), ("val", splits.val), ("train", splits.train)])
    if examples.empty:
        return None
    images = load_images(store, examples["image_key"].tolist(), size=(spec or unwrap(model).spec).image_size)
    result = explain_examples(model, examples, images, cfg.evaluate.saliency_noise, cfg.evaluate.saliency_samples)
    titles = [
        f"{c}\n{m} ({s})\npred: {p}"
        for c, m, s, p in zip(result.classes, result.material_ids, result.splits, result.predicted, strict=True)
    ]
    plots.saliency_grid(result.images, result.maps, titles, out / "saliency.png")
    plots.ssim_heatmap(result.ssim, result.classes, out / "saliency_ssim.png")
    np.save(out / "saliency_maps.npy", result.maps)
    pd.DataFrame(result.ssim, index=result.classes, columns=result.classes).to_csv(out / "saliency_ssim.csv")
    return result
