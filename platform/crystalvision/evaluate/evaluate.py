"""Evaluate a trained CrystalNet: metrics per image and per structure, baselines, plots, saliency, HTML report.

Metric names are ``<level>_<metric>_<target>`` with level ``test`` / ``val`` (per image, as the study) or
``test_struct`` / ``val_struct`` (class probabilities and regression outputs averaged over a structure's views),
e.g. ``test_r2_band_gap``, ``test_acc_crystal_system``, ``test_macro_f1_spacegroup``,
``test_auc_macro_crystal_system``, ``test_struct_r2_band_gap``, ``test_stability_f1``,
``baseline_1nn_r2_band_gap``. ``test_score`` is the mean of the two test R² and the two test accuracies.
Baselines are fit on the training + validation structures (what the model saw). ``oof_predictions.csv`` holds the
test structures' predictions of the model (``test_struct`` level) and of every baseline in
:mod:`crystalvision.evaluate.oof`'s table format; a k-fold run pools these over its folds.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crystalvision.core import (
    CLASS_ID,
    SCORE_METRICS,
    TARGETS_CLASSIFICATION,
    TARGETS_REGRESSION,
    CrystalVisionError,
    EvaluateConfig,
    ModelError,
    PipelineConfig,
    StorageError,
    progress,
)
from crystalvision.data import MaterialRecord, ObjectStore, Splits, load_images
from crystalvision.evaluate import metrics as M
from crystalvision.evaluate import plots
from crystalvision.evaluate.oof import fold_table
from crystalvision.learn import CrystalNet, ModelSpec, predict_arrays, predict_dihedral, unwrap

log = logging.getLogger(__name__)

CHUNK = 256  # images loaded and predicted at a time (bounded memory, progress logging)


@dataclass
class EvalResult:
    """Flat finite metrics and the folder holding every artifact (metrics.json, CSVs, PNGs, report.html)."""

    metrics: dict[str, float]
    artifacts_dir: Path
    oof: pd.DataFrame | None = None


@dataclass
class Level:
    """Labels and model outputs at one level (per image or per structure) of one split."""

    labels: pd.DataFrame
    outputs: dict[str, np.ndarray]


# --------------------------------------------------------------------------------------------- prediction


def predict_split(
    model: CrystalNet,
    df: pd.DataFrame,
    store: ObjectStore,
    name: str,
    batch_size: int,
    size: int | None = None,
    dihedral: bool = False,
) -> Level:
    """Load and predict a split's images (``size`` px, default the model's) in chunks, logging progress;
    ``dihedral``: test-time averaging over the 8 in-plane views (``evaluate.tta``)."""
    size = size or unwrap(model).spec.image_size
    forward = predict_dihedral if dihedral else None
    parts: list[dict[str, np.ndarray]] = []
    keys = df["image_key"].tolist()
    for start in range(0, len(keys), CHUNK):
        progress.beat("evaluate", step=f"predict {name}", done=start, total=len(keys))
        images = load_images(store, keys[start : start + CHUNK], size=size)
        beat = functools.partial(progress.beat, "evaluate", step=f"predict {name}")
        parts.append(predict_arrays(model, images, batch_size=batch_size, forward=forward, on_batch=beat))
        log.info("evaluate: predicted %d/%d %s images", min(start + CHUNK, len(keys)), len(keys), name)
    if not parts:
        raise StorageError(f"the {name} split is empty; change the split fractions or select more structures")
    outputs = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return Level(df.reset_index(drop=True), outputs)


def by_structure(level: Level) -> Level:
    """Average regression outputs and class probabilities over each structure's views."""
    ids = level.labels["material_id"].to_numpy()
    outputs = {k: M.group_mean(ids, v)[1] for k, v in level.outputs.items()}
    first = level.labels.drop_duplicates("material_id").set_index("material_id")
    keys = M.group_mean(ids, np.zeros(len(ids)))[0]
    labels = first.loc[keys].reset_index()
    labels["n_views"] = pd.Series(ids).value_counts().loc[keys].to_numpy()
    return Level(labels, outputs)


# ------------------------------------------------------------------------------------------------ metrics


def level_metrics(prefix: str, level: Level, stability_threshold: float) -> dict[str, float]:
    """All scalar metrics of one level, named ``<prefix>_<metric>_<target>``."""
    out: dict[str, float] = {}
    lab, pred = level.labels, level.outputs
    for t in TARGETS_REGRESSION:
        out |= M.prefixed(prefix, t, M.regression_metrics(lab[t], pred[t]))
    stab = M.stability_metrics(lab["energy_above_hull"], pred["energy_above_hull"], stability_threshold)
    out |= {f"{prefix}_stability_{k}": v for k, v in stab.items()}
    for t in TARGETS_CLASSIFICATION:
        out |= M.prefixed(prefix, t, M.classification_metrics(lab[CLASS_ID[t]], pred[f"{t}_proba"]))
    return out


def test_score(metrics: Mapping[str, float]) -> float:
    """Mean of each regression head's test R² and each classification head's test accuracy (NaN if one is missing)."""
    parts = [metrics.get(k, math.nan) for k in SCORE_METRICS]
    return float(np.mean(parts))


def class_report(level: Level, target: str, classes: list[str]) -> dict[str, Any]:
    """Classification report, per-class ROC AUC / AP (by class name) and confusion matrix of one head."""
    y = level.labels[CLASS_ID[target]].to_numpy(dtype=int)
    proba = level.outputs[f"{target}_proba"]
    y_pred = proba.argmax(1)
    labels = M.present_labels(y, y_pred)
    return {
        "report": M.classification_report_dict(y, y_pred, classes),
        "report_text": M.classification_report_text(y, y_pred, classes),
        "roc_auc": {classes[k]: v for k, v in M.roc_auc_per_class(y, proba).items()},
        "average_precision": {classes[k]: v for k, v in M.average_precision_per_class(y, proba).items()},
        "absent_classes": [c for k, c in enumerate(classes) if k not in set(y.tolist())],
        "confusion_matrix": {"labels": [classes[k] for k in labels], "matrix": M.confusion(y, y_pred, labels).tolist()},
    }


# -------------------------------------------------------------------------------------------- tables/files


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


def load_records(cfg: PipelineConfig, spec: ModelSpec) -> dict[str, MaterialRecord] | None:
    """Snapshot records by material_id for the structure baselines; None (logged) when unavailable."""
    from crystalvision.data import configured_snapshot

    try:
        snap = configured_snapshot(cfg.snapshot)
    except CrystalVisionError as exc:
        log.info("structure baselines skipped: snapshot not loadable (%s)", exc)
        return None
    trained_on = spec.snapshot_sha256
    if trained_on and trained_on != snap.manifest.content_sha256:
        log.warning(
            "model was trained on snapshot %s, baselines use %s", trained_on[:12], snap.manifest.content_sha256[:12]
        )
    return {r.material_id: r for r in snap.records}


def label_sources(splits: Splits, spec: ModelSpec) -> dict[str, str]:
    """Where the regression labels come from: the labels table's columns, else the model spec."""
    out = dict(spec.label_source)
    for t in TARGETS_REGRESSION:
        col = f"label_source_{t}"
        if col in splits.test:
            values = sorted({str(v) for _, df in splits.items() for v in df[col].dropna().unique()})
            if values:
                out[t] = " | ".join(values)
    return out


# ------------------------------------------------------------------------------------------------- driver


def check_class_ids(splits: Splits, classes: Mapping[str, list[str]]) -> None:
    """The labels table's class ids must index the model's heads (same snapshot encoders)."""
    for t, names in classes.items():
        for name, df in splits.items():
            if len(df) and int(df[CLASS_ID[t]].max()) >= len(names):
                raise ModelError(
                    f"{name} split has {t} class id {int(df[CLASS_ID[t]].max())} but the model has {len(names)} "
                    f"{t} classes; evaluate with renders of the snapshot the model was trained on"
                )


def predict_levels(model: CrystalNet, splits: Splits, store: ObjectStore, spec: ModelSpec, ecfg: EvaluateConfig):
    """Model outputs per image on test (and val), and their per-structure means: ``{level name: Level}``."""
    tta = ecfg.tta == "dihedral"
    levels = {"test": predict_split(model, splits.test, store, "test", ecfg.batch_size, spec.image_size, tta)}
    if ecfg.include_val and len(splits.val):
        levels["val"] = predict_split(model, splits.val, store, "val", ecfg.batch_size, spec.image_size, tta)
    for name in list(levels):
        levels[f"{name}_struct"] = by_structure(levels[name])
    return levels


def model_metrics(levels: Mapping[str, Level], threshold: float) -> dict[str, float]:
    """Every level's metrics plus ``test_score``."""
    metrics: dict[str, float] = {}
    for name, level in levels.items():
        metrics |= level_metrics(name, level, threshold)
    metrics["test_score"] = test_score(metrics)
    return metrics


def leakage_metrics(splits: Splits, store: ObjectStore, cfg: PipelineConfig, out: Path) -> tuple[dict, str]:
    """Nearest-training-image SSIM of every test image, next to its correctness in ``predictions.csv``."""
    from crystalvision.evaluate.leakage import report_section

    pred = pd.read_csv(out / "predictions.csv")
    test = pred[pred["split"] == "test"].reset_index(drop=True)
    name = f"{cfg.render.views} views, split {'by image' if splits.protocol == 'image' else 'by structure'}"
    return report_section(store, splits.train, test, out, size=cfg.evaluate.leakage_size, name=name)


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


def evaluate_model(
    model: CrystalNet,
    splits: Splits,
    store: ObjectStore,
    cfg: PipelineConfig,
    out_dir: str | Path,
    *,
    records: Mapping[str, MaterialRecord] | None = None,
) -> EvalResult:
    """Evaluate on the test (and validation) split; write every artifact into ``out_dir``.

    ``records`` (material_id -> MaterialRecord) feed the structure baselines; when None they are read from the
    configured snapshot, and the 1-NN/symmetry baselines are skipped (logged) if the split's structures are
    not in it.
    """
    from crystalvision.evaluate.report import write_report

    ecfg, spec = cfg.evaluate, unwrap(model).spec
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    classes = spec.class_lists()
    check_class_ids(splits, classes)
    levels = predict_levels(model, splits, store, spec, ecfg)
    metrics = model_metrics(levels, ecfg.stability_threshold)
    figures: list[Path] = []
    notes: list[str] = []
    recs = None
    if ecfg.baselines or ecfg.graph_baseline:
        recs = records if records is not None else load_records(cfg, spec)
    from crystalvision.evaluate.baselines import fold_baselines

    progress.beat("evaluate", step="baselines")
    b_metrics, others = fold_baselines(splits, recs, ecfg, classes, out, notes)
    metrics |= b_metrics
    struct = levels["test_struct"]
    oof_table = fold_table(struct.labels, struct.outputs, classes, splits.train, others)
    oof_table.to_csv(out / "oof_predictions.csv", index=False)
    progress.beat("evaluate", step="tables")
    reports = write_tables(levels, classes, ecfg.stability_threshold, out)
    sections: list[str] = []
    if ecfg.leakage and len(splits.train):
        progress.beat("evaluate", step="leakage")
        leak, section = leakage_metrics(splits, store, cfg, out)
        metrics |= leak
        sections.append(section)
    log.info("evaluate: plots")
    progress.beat("evaluate", step="plots")
    figures += make_plots(levels["test"], levels["test_struct"], classes, metrics, out)
    progress.beat("evaluate", step="radii figure")
    figures += radii_figure(splits, recs, cfg, out)
    progress.beat("evaluate", step="saliency")
    saliency = run_saliency(model, splits, store, cfg, out, spec) if ecfg.saliency else None
    progress.beat("evaluate", step="report")
    if saliency is not None:
        figures += [out / "saliency.png", out / "saliency_ssim.png"]

    flat = M.finite(metrics)
    skipped = sorted(set(metrics) - set(flat))
    if skipped:
        notes.append(f"undefined (NaN) and left out: {', '.join(skipped)}")
    (out / "metrics.json").write_text(json.dumps(flat, indent=1, sort_keys=True))
    write_report(
        out / "report.html",
        metrics=flat,
        splits=splits.describe(),
        label_source=label_sources(splits, spec),
        spec=spec,
        cfg=ecfg,
        reports={t: r["report_text"] for t, r in reports.items()},
        absent={t: r["absent_classes"] for t, r in reports.items()},
        figures=figures,
        saliency=saliency,
        notes=notes,
        sections=sections,
    )
    log.info("evaluate: test_score %.4f; artifacts in %s", flat.get("test_score", math.nan), out)
    return EvalResult(metrics=flat, artifacts_dir=out, oof=oof_table)


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
