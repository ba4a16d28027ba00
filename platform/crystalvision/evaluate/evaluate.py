"""Evaluate a trained CrystalNet: metrics per image and per structure, baselines, plots, saliency, HTML report.

Metric names are ``<level>_<metric>_<target>`` with level ``test`` / ``val`` (per image, as the study) or
``test_struct`` / ``val_struct`` (class probabilities and regression outputs averaged over a structure's views),
e.g. ``test_r2_band_gap``, ``test_acc_crystal_system``, ``test_macro_f1_spacegroup``,
``test_auc_macro_crystal_system``, ``test_struct_r2_band_gap``, ``test_stability_f1``,
``baseline_1nn_r2_band_gap``. ``test_score`` is the mean of the two test R² and the two test accuracies.
Baselines are fit on the training + validation structures (what the model saw). ``oof_predictions.csv`` holds the
test structures' predictions of the model (``test_struct`` level) and of every baseline in
:mod:`crystalvision.evaluate.oof`'s table format; a k-fold run pools these over its folds.

This module runs an evaluation; the model's outputs and metrics per level are :mod:`crystalvision.evaluate.levels`,
its tables and figures :mod:`crystalvision.evaluate.artifacts`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from crystalvision.core import TARGETS_REGRESSION, CrystalVisionError, PipelineConfig, progress
from crystalvision.data import MaterialRecord, ObjectStore, Splits
from crystalvision.evaluate import metrics as M
from crystalvision.evaluate.artifacts import make_plots, radii_figure, run_saliency, write_tables
from crystalvision.evaluate.levels import check_class_ids, model_metrics, predict_levels
from crystalvision.evaluate.oof import fold_table
from crystalvision.learn import CrystalNet, ModelSpec, unwrap

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Flat finite metrics and the folder holding every artifact (metrics.json, CSVs, PNGs, report.html)."""

    metrics: dict[str, float]
    artifacts_dir: Path
    oof: pd.DataFrame | None = None


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


def leakage_metrics(splits: Splits, store: ObjectStore, cfg: PipelineConfig, out: Path) -> tuple[dict, str]:
    """Nearest-training-image SSIM of every test image, next to its correctness in ``predictions.csv``."""
    from crystalvision.evaluate.leakage import report_section

    pred = pd.read_csv(out / "predictions.csv")
    test = pred[pred["split"] == "test"].reset_index(drop=True)
    name = f"{cfg.render.views} views, split {'by image' if splits.protocol == 'image' else 'by structure'}"
    return report_section(store, splits.train, test, out, size=cfg.evaluate.leakage_size, name=name)
