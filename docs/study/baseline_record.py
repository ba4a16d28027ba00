"""Every baseline of a grouped k-fold study, on the study's exact folds and under stricter groupings: one record.

The folds of ``crystalvision pipeline run <config>`` are deterministic from the snapshot, the selection and
``split``: this rebuilds them from the snapshot's records (no rendering) and runs the pipeline's own baseline code on
each (``evaluate.baselines.fold_baselines``: majority / mean, 1-NN, the tabular tree ensemble fit on each fold's
training + validation structures; the reference CGCNN trained on its training structures with early stopping on
its validation structures). Per grouping it pools the out-of-fold predictions (``evaluate.oof``: every structure
predicted once, scored once; accuracy, balanced accuracy and macro-F1 per class head) and compares the tabular
baseline with the others, paired over structures. ``--verify RECORD`` checks that the folds are the record's: the
majority and 1-NN baselines must reproduce its pooled numbers exactly.

Subcommands, from the repository root:

- ``select``: choose the tabular recipe on the folds' validation carve-outs only (fit on each fold's training
  structures; the rule: highest mean over folds of (R² gap + R² e_hull + acc system + acc space group) / 4 on the
  validation structures); writes ``docs/study/records/select-tabular.json``.
- ``select-graph``: the reference CGCNN's training recipe (early stopping per head or on the summed loss, learning
  rate), chosen by the same rule on the same validation structures; writes ``docs/study/records/select-cgcnn.json``.
- ``run``: the record, ``docs/study/records/baselines.json`` (+ each grouping's out-of-fold table beside it).
- ``pairs``: same-formula structures in different folds that match within tight tolerances (StructureMatcher ltol
  0.05, stol 0.1, 1 degree), with their labels: ``docs/study/records/near-identical-pairs.json``.
- ``annotate RECORD``: add to a grouped k-fold record what needs no retraining: the tabular baseline and every
  baseline's balanced accuracy, on its own folds (read from ``RECORD.cmd``), checked against its majority and 1-NN.
- ``table``: the Markdown tables of a ``run`` record (``--readme docs/study.md`` rewrites the ``baselines-table``
  markers).

Usage: ``python docs/study/baseline_record.py run pipelines/space-grouped.yaml --group-by material formula
--verify docs/study/records/space-grouped.json --out docs/study/records/baselines.json``
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import re
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from crystalvision.core.pipeline_file import load_pipeline, parse_overrides
from crystalvision.core.targets import TARGETS, TARGETS_CLASSIFICATION
from crystalvision.data.folds import fold_splits
from crystalvision.data.holdout import describe_holdout
from crystalvision.evaluate import oof
from crystalvision.evaluate.baselines import fold_baselines, graph_config
from crystalvision.render.labels import label_columns
from crystalvision.stages import select_records

log = logging.getLogger("baseline_record")
PREDICTORS = {"tabular": "trees (tabular)", "cgcnn": "CGCNN (reference)", "1nn": "1-NN", "dummy": "majority / mean"}
METRICS = {  # head -> metrics shown
    "crystal_system": ("acc", "balanced_acc", "macro_f1"),
    "spacegroup": ("acc", "balanced_acc", "macro_f1"),
    "band_gap": ("r2", "mae"),
    "energy_above_hull": ("r2", "mae"),
}
VERIFY_KEYS = ("dummy", "1nn")


def structures_frame(cfg) -> tuple[Any, dict, pd.DataFrame]:
    """The snapshot, records by id and one labels row per selected structure (sorted, as the labels table is): the
    pipeline road's selection, so a ``split.holdout`` with ``use: exclude`` is left out here too."""
    snap, selection = select_records(cfg)
    rows = [{"material_id": r.material_id, **label_columns(r, snap.encoders)} for r in selection.records]
    frame = pd.DataFrame(rows).sort_values("material_id").reset_index(drop=True)
    return snap, {r.material_id: r for r in selection.records}, frame


def folds_for(cfg, frame: pd.DataFrame, records: dict, group_by: str) -> list:
    """The folds the pipeline's road (``crystalvision.stages.prepare``) makes of ``frame`` under ``group_by``."""
    from crystalvision.data.clusters import structure_clusters

    split = cfg.split.model_copy(update={"group_by": group_by})
    clusters = structure_clusters(list(records.values())) if group_by == "structure_cluster" else None
    return fold_splits(frame, split, clusters)


def holdout_entry(cfg) -> dict[str, Any]:
    """``{"holdout": {file, sha256, use, n_ids}}`` of the config's ``split.holdout`` ({} without one)."""
    return {"holdout": describe_holdout(cfg.split)} if cfg.split.holdout is not None else {}


def run_grouping(cfg, snap, records: dict, frame: pd.DataFrame, group_by: str) -> tuple[dict, pd.DataFrame]:
    """Every baseline on every fold of one grouping: the pooled summary and the out-of-fold table."""
    classes = {t: snap.encoders.classes(t) for t in TARGETS_CLASSIFICATION}
    start = time.perf_counter()
    folds = folds_for(cfg, frame, records, group_by)
    tables, per_fold = [], []
    for f in folds:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            metrics, others = fold_baselines(f, records, cfg.evaluate, classes, Path(tmp), [])
        labels = f.test.drop_duplicates("material_id").sort_values("material_id").reset_index(drop=True)
        tables.append(oof.tag(oof.fold_table(labels, None, classes, f.train, others), f.fold, 0))
        budget = {k: v for k, v in metrics.items() if k.startswith("cgcnn_") and "_test_" not in k and "_val_" not in k}
        sizes = {f"n_{name}": int(part["material_id"].nunique()) for name, part in f.items()}
        per_fold.append({"fold": f.fold, **sizes, **budget, "seconds": round(time.perf_counter() - t0, 1)})
        log.info("%s fold %d: %.0f s %s", group_by, f.fold, per_fold[-1]["seconds"], budget)
    table = pd.concat(tables, ignore_index=True)
    n = cfg.evaluate.bootstrap_resamples
    summary = oof.pooled_metrics(table) | oof.comparisons(table, n_resamples=n, reference="tabular")
    for p in oof.predictors(table):
        for metric, cell in oof.intervals(table, p, n_resamples=n).items():
            summary |= {f"pooled_{p}_{metric}_lo": cell["lo"], f"pooled_{p}_{metric}_hi": cell["hi"]}
    summary = {k: v for k, v in summary.items() if math.isfinite(v)}
    groups = {"n_folds": len(folds), "stratified": bool(folds[0].stratified)}
    return {"group_by": group_by, **groups, "folds": per_fold, "seconds": round(time.perf_counter() - start, 1),
            "metrics": summary}, table  # fmt: skip


def verify(summary: dict, record_path: Path) -> dict[str, Any]:
    """The majority and 1-NN pooled numbers against the record's (the same folds give the same numbers)."""
    theirs = json.loads(record_path.read_text())["pooled"]["metrics"]
    keys = [k for k in theirs if any(k.startswith(f"pooled_{p}_") for p in VERIFY_KEYS) and "_diff_" not in k]
    worst = max(abs(summary["metrics"][k] - theirs[k]) for k in keys)
    same = worst < 1e-12
    if not same:
        raise SystemExit(f"the folds differ from {record_path}: majority / 1-NN differ by up to {worst:.3g}")
    return {"record": record_path.as_posix(), "compared": len(keys), "max_abs_difference": worst, "same": same}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from crystalvision.evaluate.tabular import describe

    cfg = load_pipeline(args.config, parse_overrides(args.overrides))
    snap, records, frame = structures_frame(cfg)
    ecfg = cfg.evaluate
    out: dict[str, Any] = {
        "command": " ".join(["python docs/study/baseline_record.py run", *sys.argv[2:]]),
        "date": date.today().isoformat(),
        "hardware": f"{platform.machine()}, {_cores()} CPU cores (shared)",
        "pipeline": cfg.name,
        "snapshot_id": snap.manifest.snapshot_id,
        "snapshot_sha256": snap.manifest.content_sha256,
        "n_structures": len(records),
        "split": cfg.split.model_dump(mode="json"),
        **holdout_entry(cfg),
        "tabular": describe(),
        "cgcnn": graph_config(ecfg).model_dump(mode="json"),  # the settings fold_baselines trains with
        "label_source": snap.manifest.label_source,
        "per": "structure: every structure predicted once, out of fold; metrics pooled over the folds",
        "groupings": {},
    }
    if args.verify:
        out["image_model_budget"] = image_budget(args.verify)
    for group_by in args.group_by:
        summary, table = run_grouping(cfg, snap, records, frame, group_by)
        if args.verify and group_by == cfg.split.group_by:
            summary["verified"] = verify(summary, args.verify)
        out["groupings"][group_by] = summary
        table.to_csv(args.out.with_name(f"{args.out.stem}-oof-{group_by}.csv"), index=False)
        args.out.write_text(json.dumps(out, indent=1) + "\n")  # after each grouping: a stopped run keeps its part
    return out


def image_budget(record_path: Path) -> dict[str, Any]:
    """The image model's training budget in a k-fold record: epochs per fold and training seconds in all."""
    record = json.loads(record_path.read_text())
    m, stages = record["metrics"], record.get("stage_seconds", {})
    cmd = record_path.with_suffix(".cmd")
    return {
        "record": record_path.as_posix(),
        "measured_on": cmd.read_text().splitlines()[0].lstrip("# ") if cmd.is_file() else "",
        "epochs_trained_mean": m.get("epochs_trained_mean"),
        "best_epoch_mean": m.get("best_epoch_mean"),
        "train_seconds": sum(v for k, v in stages.items() if k.startswith("train")),
    }


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def select(args: argparse.Namespace) -> dict[str, Any]:
    """Each candidate recipe fit on the folds' training structures, scored on their validation structures."""
    from crystalvision.evaluate import tabular
    from crystalvision.evaluate.baselines import score

    cfg = load_pipeline(args.config, parse_overrides(args.overrides))
    _, records, frame = structures_frame(cfg)
    folds = folds_for(cfg, frame, records, cfg.split.group_by)
    rows = {}
    for recipe in tabular.RECIPES:
        start, scores = time.perf_counter(), []
        for f in folds:
            pred = tabular.tabular_predict(records, f.train, f.val, recipe)
            truth = f.val.drop_duplicates("material_id").sort_values("material_id").reset_index(drop=True)
            m = score("t", truth, truth[["material_id"]].merge(pred, on="material_id"), 0.025)
            parts = [m[f"baseline_t_{k}"] for k in ("r2_band_gap", "r2_energy_above_hull")]
            parts += [m[f"baseline_t_{k}"] for k in ("acc_crystal_system", "acc_spacegroup")]
            scores.append(sum(parts) / 4)
        rows[recipe] = {"val_score_mean": sum(scores) / len(scores), "val_score_per_fold": scores,
                        "seconds": round(time.perf_counter() - start, 1), **dict(zip(("estimator", "params"),
                        tabular.RECIPES[recipe], strict=True))}  # fmt: skip
        log.info("%s: validation score %.4f", recipe, rows[recipe]["val_score_mean"])
    best = max(rows, key=lambda r: rows[r]["val_score_mean"])  # ties: the first (dict order) wins
    out = {
        "command": " ".join(["python docs/study/baseline_record.py select", *sys.argv[2:]]),
        "date": date.today().isoformat(),
        "rule": "highest mean over folds of (R² gap + R² e_hull + acc system + acc space group) / 4 on each fold's "
        "validation structures, fit on its training structures; never a test fold",
        "pipeline": cfg.name,
        **holdout_entry(cfg),
        "features": tabular.FEATURE_SET,
        "candidates": rows,
        "not a candidate": tabular.LEFT_OUT,
        "chosen": best,
    }
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    return out


GRAPH_CANDIDATES = {  # name -> GraphConfig settings on top of the reference size; the first ran first
    "joint-lr3e-3": {"stopping": "joint", "lr": 3e-3},
    "per-head-lr3e-3": {"stopping": "per_head", "lr": 3e-3},
    "per-head-lr1e-3": {"stopping": "per_head", "lr": 1e-3},
}


def select_graph(args: argparse.Namespace) -> dict[str, Any]:
    """The reference CGCNN's training recipe, chosen like the trees': trained on each fold's training structures,
    scored on its validation structures (the same rule), never on a test fold."""
    from crystalvision.evaluate.graphnet import GraphConfig, graph_baseline

    cfg = load_pipeline(args.config, parse_overrides(args.overrides))
    snap, records, frame = structures_frame(cfg)
    n_classes = {t: len(snap.encoders.classes(t)) for t in TARGETS_CLASSIFICATION}
    folds = folds_for(cfg, frame, records, cfg.split.group_by)
    keys = ("r2_band_gap", "r2_energy_above_hull", "acc_crystal_system", "acc_spacegroup")
    rows = {}
    for name, settings in GRAPH_CANDIDATES.items():
        gcfg = GraphConfig.sized(cfg.evaluate.graph_size, epochs=cfg.evaluate.graph_epochs, **settings)
        scores, per_fold = [], []
        for f in folds:
            m, _ = graph_baseline(records, f, gcfg, n_classes=n_classes)
            scores.append(sum(m[f"cgcnn_val_{k}"] for k in keys) / 4)
            per_fold.append({k: m[k] for k in m if k.startswith("cgcnn_val_") and k.split("cgcnn_val_")[1] in keys}
                            | {k: m[k] for k in ("cgcnn_epochs_trained", "cgcnn_train_seconds")})  # fmt: skip
            log.info("%s fold %d: validation score %.4f", name, f.fold, scores[-1])
        rows[name] = {"settings": settings, "val_score_mean": sum(scores) / len(scores), "per_fold": per_fold}
    best = max(rows, key=lambda r: rows[r]["val_score_mean"])
    out = {
        "command": " ".join(["python docs/study/baseline_record.py select-graph", *sys.argv[2:]]),
        "date": date.today().isoformat(),
        "rule": "highest mean over folds of (R² gap + R² e_hull + acc system + acc space group) / 4 on each fold's "
        "validation structures (the early-stopping set), trained on its training structures; never a test fold",
        "size": {"layers": gcfg.layers, "atom_features": gcfg.atom_features, "fc_features": gcfg.fc_features},
        **holdout_entry(cfg),
        "candidates": rows,
        "chosen": best,
    }
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    return out


def pair_ceiling(found: list[dict[str, Any]], n_structures: int) -> dict[str, float]:
    """The accuracy a model reaches at best when it gives one answer to each group of near-identical structures
    (connected through the pairs): per group, all but its most common label are wrong."""
    from collections import Counter

    from crystalvision.data.clusters import components

    ids = sorted({m for p in found for m in (p["a"], p["b"])})
    label = {h: {} for h in ("crystal_system", "spacegroup")}
    for p in found:
        for h in label:
            label[h] |= {p["a"]: p[h][0], p["b"]: p[h][1]}
    group = components(ids, [(p["a"], p["b"]) for p in found])
    out = {}
    for h, of in label.items():
        wrong = 0
        for g in set(group.values()):
            members = [m for m in ids if group[m] == g]
            wrong += len(members) - Counter(of[m] for m in members).most_common(1)[0][1]
        out[f"ceiling_acc_{h}"] = 1 - wrong / n_structures
        out[f"n_structures_wrong_at_least_{h}"] = wrong
    return out


def pairs(args: argparse.Namespace) -> dict[str, Any]:
    """Cross-fold near-identical pairs of one formula, and how many disagree on their labels."""
    from crystalvision.data.clusters import TIGHT_TOLERANCES, near_identical_pairs

    cfg = load_pipeline(args.config, parse_overrides(args.overrides))
    snap, records, frame = structures_frame(cfg)
    start = time.perf_counter()
    fold_of = {m: f.fold for f in folds_for(cfg, frame, records, cfg.split.group_by) for m in f.test["material_id"]}
    found = near_identical_pairs(list(records.values()), fold_of)
    differ = [p for p in found if not p["same_crystal_system"]]
    out = {
        "command": " ".join(["python docs/study/baseline_record.py pairs", *sys.argv[2:]]),
        "date": date.today().isoformat(),
        "pipeline": cfg.name,
        "snapshot_sha256": snap.manifest.content_sha256,
        "matcher": {**TIGHT_TOLERANCES, "same reduced formula": True, "library": "pymatgen StructureMatcher"},
        "folds": f"the test folds of {cfg.name} (split.group_by {cfg.split.group_by})",
        "n_pairs": len(found),
        "n_pairs_different_crystal_system": len(differ),
        "n_pairs_different_spacegroup": sum(not p["same_spacegroup"] for p in found),
        "n_structures_in_a_pair_with_different_crystal_system": len({m for p in differ for m in (p["a"], p["b"])}),
        "if_near_copies_get_one_answer": pair_ceiling(found, len(records)),
        "seconds": round(time.perf_counter() - start, 1),
        "pairs": found,
    }
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    return out


def _run_command(cmd_file: Path) -> tuple[Path, list[str]]:
    """The config and ``--set`` options of the ``crystalvision pipeline run`` line of a record's ``.cmd``."""
    import shlex

    text = cmd_file.read_text().replace("\\\n", " ")
    line = next(x for x in text.splitlines() if x.startswith("crystalvision pipeline run "))
    words = shlex.split(line)
    sets = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--set"]
    return Path(words[3]), sets


def annotate(args: argparse.Namespace) -> dict[str, Any]:
    """Add the baselines a k-fold record lacks (the tabular trees; balanced accuracy of every baseline), computed on
    the record's own folds, after checking that majority and 1-NN reproduce its numbers exactly. Nothing the run
    wrote is changed; the image model's own new metrics and its differences need the run again."""
    from crystalvision.data.folds import aggregate_folds
    from crystalvision.evaluate.baselines import predict_baselines, seen, tabulate
    from crystalvision.evaluate.tabular import describe

    record = json.loads(args.record.read_text())
    config, sets = _run_command(args.record.with_suffix(".cmd"))
    cfg = load_pipeline(config, parse_overrides(sets))
    snap, records, frame = structures_frame(cfg)
    if record.get("snapshot_sha256") not in (None, snap.manifest.content_sha256):
        raise SystemExit(f"{args.record} measured another snapshot than {config} selects")
    classes = {t: snap.encoders.classes(t) for t in TARGETS_CLASSIFICATION}
    by_head = {"crystal_system": "crystal_system", "spacegroup_symbol": "spacegroup"}
    per_fold, tables = [], []
    for f in folds_for(cfg, frame, records, cfg.split.group_by):
        preds = predict_baselines(seen(f), f.test, records, cfg.evaluate.symmetry_symprec)
        per_fold.append(tabulate(f.test, preds, cfg.evaluate.stability_threshold)[0])
        others = {n: p.rename(columns=by_head) for n, p in preds.items() if n != "symmetry"}
        labels = f.test.drop_duplicates("material_id").sort_values("material_id").reset_index(drop=True)
        tables.append(oof.tag(oof.fold_table(labels, None, classes, f.train, others), f.fold, 0))
    mine = aggregate_folds(per_fold)
    found = {k: v for k, v in mine.items() if k.startswith("baseline_") and not k.startswith("baseline_symmetry")}
    theirs = record["metrics"]
    compared = [k for k in found if k in theirs and k.endswith("_mean")]
    if compared:
        worst = max(abs(found[k] - theirs[k]) for k in compared)
    else:
        raise SystemExit(f"{args.record} has no per-fold baseline metrics to check the folds against")
    added = {k: v for k, v in found.items() if k not in theirs}
    if "pooled" in record:
        subsets = {name: f.nelements for name, f in cfg.evaluate.subsets.items()}
        table = pd.concat(tables, ignore_index=True)
        pooled = oof.pooled_metrics(table, subsets)
        old = record["pooled"]["metrics"]
        keys = [k for k in pooled if k in old and any(f"_{p}_" in k for p in VERIFY_KEYS)]
        worst = max([worst, *(abs(pooled[k] - old[k]) for k in keys)])
        compared += keys
        for metric, cell in oof.intervals(table, "tabular", n_resamples=cfg.evaluate.bootstrap_resamples).items():
            pooled |= {f"pooled_tabular_{metric}_lo": cell["lo"], f"pooled_tabular_{metric}_hi": cell["hi"]}
        new = {k: v for k, v in pooled.items() if k not in old and math.isfinite(v)}
        old.update(new)
        record["pooled"].setdefault("baselines", {})["tabular"] = describe()
        added |= new
    if worst > 1e-9:
        raise SystemExit(f"the folds differ from {args.record}'s: majority / 1-NN differ by up to {worst:.3g}")
    theirs.update(added)  # the run's flat metrics hold its pooled ones too
    note = {
        "date": date.today().isoformat(),
        "command": f"python docs/study/baseline_record.py annotate {args.record.as_posix()}",
        "added": len(added),
        "checked": f"{len(compared)} majority / 1-NN numbers reproduced (max difference {worst:.1g})",
        "what": "tabular trees baseline and the baselines' balanced accuracy on the record's own folds; the image "
        "model's balanced accuracy and its differences from the trees need the run again",
    }
    record.setdefault("annotations", []).append(note)
    args.record.write_text(json.dumps(record, indent=2) + "\n")  # the format the run wrote
    cmd = args.record.with_suffix(".cmd")
    cmd.write_text(cmd.read_text().rstrip("\n") + f"\n# {note['date']}: {note['what']} ({note['checked']}):\n"
                   f"{note['command']}\n")  # fmt: skip
    return note


# ------------------------------------------------------------------------------------------------- tables


def _cell(m: dict, key: str) -> str:
    if key not in m:
        return ""
    lo, hi = m.get(f"{key}_lo"), m.get(f"{key}_hi")
    return f"{m[key]:.2f} [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else f"{m[key]:.2f}"


def grouping_table(g: dict) -> str:
    """Every predictor's pooled score per head and metric, then trees minus each other baseline (paired)."""
    m = g["metrics"]
    cols = [(h, k) for h in TARGETS for k in METRICS[h]]
    title = {"acc": "acc", "balanced_acc": "bal. acc", "macro_f1": "macro-F1", "r2": "R²", "mae": "MAE"}
    short = {"crystal_system": "system", "spacegroup": "space group", "band_gap": "gap", "energy_above_hull": "e_hull"}
    lines = ["| method | " + " | ".join(f"{short[h]} {title[k]}" for h, k in cols) + " |", "|---|" + "---|" * len(cols)]
    for p, label in PREDICTORS.items():
        cells = [_cell(m, f"pooled_{p}_{k}_{h}") if k != "mae" else _plain(m, f"pooled_{p}_{k}_{h}") for h, k in cols]
        if any(cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for p, label in PREDICTORS.items():
        cells = [_diff(m, f"pooled_diff_tabular_vs_{p}_{k}_{h}") for h, k in cols]
        if any(cells):
            lines.append(f"| trees − {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plain(m: dict, key: str) -> str:
    return f"{m[key]:.3f}" if key in m else ""


def _diff(m: dict, key: str) -> str:
    return f"{m[key]:+.2f} [{m[key + '_lo']:+.2f}, {m[key + '_hi']:+.2f}]" if key in m else ""


def budget_line(g: dict) -> str:
    folds = g["folds"]
    epochs = [f.get("cgcnn_epochs_trained") for f in folds if "cgcnn_epochs_trained" in f]
    if not epochs:
        return ""
    best = [f["cgcnn_best_epoch"] + 1 for f in folds]
    secs = sum(f.get("cgcnn_train_seconds", 0.0) for f in folds)
    return (
        f"CGCNN budget: {min(epochs):.0f}-{max(epochs):.0f} epochs per fold (best epoch {min(best):.0f}-"
        f"{max(best):.0f}, counted from 1; early stopping on validation), {secs / 60:.0f} min of training over "
        f"{len(folds)} folds."
    )


def image_budget_line(record: dict) -> str:
    b = record.get("image_model_budget")
    if not b:
        return ""
    return (
        f"Image model budget, for comparison (`{b['record']}`, {b['measured_on']}): {b['epochs_trained_mean']:.1f} "
        f"epochs per fold on average (best epoch {b['best_epoch_mean'] + 1:.1f}, counted from 1), "
        f"{b['train_seconds'] / 60:.0f} min of training over the folds."
    )


def tables(record: dict, source: str) -> str:
    parts = [
        f"Record: `{source}` ({record['date']}, {record['hardware']}; pipeline `{record['pipeline']}`, "
        f"{record['n_structures']} structures). Per structure, pooled out of fold, 95 % bootstrap intervals over "
        f"structures. Trees: {record['tabular']['recipe']} ({record['tabular']['features']}). CGCNN: "
        f"{record['cgcnn']['layers']} convolutions, {record['cgcnn']['atom_features']} atom features, "
        f"{record['cgcnn']['fc_features']} hidden. The band-gap labels are themselves a pretrained CGCNN's "
        "predictions: a CGCNN re-learns its own family there. Balanced accuracy and macro-F1 intervals are "
        "percentile intervals over resamples, which drop rare classes, so they lean high."
    ]
    for name, g in record["groupings"].items():
        check = " (the study's folds, verified)" if g.get("verified", {}).get("same") else ""
        parts += [f"Grouped by **{name}**, {g['n_folds']} folds{check}:", grouping_table(g), budget_line(g)]
    parts.append(image_budget_line(record))
    return "\n\n".join(p for p in parts if p) + "\n"


def write_readme(path: Path, text: str, marker: str = "baselines-table") -> None:
    pattern = re.compile(rf"(<!-- {marker}:start -->\n).*?(<!-- {marker}:end -->)", re.S)
    page = path.read_text()
    if not pattern.search(page):
        raise SystemExit(f"{path} has no {marker} markers")
    path.write_text(pattern.sub(lambda m: m.group(1) + text + m.group(2), page))


def main(argv: list[str] | None = None) -> Any:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    outs = {"run": "baselines.json", "select": "select-tabular.json", "select-graph": "select-cgcnn.json",
            "pairs": "near-identical-pairs.json"}  # fmt: skip
    for name, default in outs.items():
        p = sub.add_parser(name)
        p.add_argument("config", type=Path)
        p.add_argument("--set", dest="overrides", action="append", default=[])
        p.add_argument("--out", type=Path, default=Path("docs/study/records") / default)
        if name == "run":
            p.add_argument("--group-by", nargs="+", default=["material", "formula"])
            p.add_argument("--verify", type=Path)
    a = sub.add_parser("annotate")
    a.add_argument("record", type=Path)
    t = sub.add_parser("table")
    t.add_argument("record", type=Path)
    t.add_argument("--readme", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.command == "table":
        text = tables(json.loads(args.record.read_text()), args.record.as_posix())
        if args.readme:
            write_readme(args.readme, text)
        else:
            print(text)
        return text
    commands = {"run": run, "select": select, "select-graph": select_graph, "pairs": pairs, "annotate": annotate}
    return commands[args.command](args)


if __name__ == "__main__":
    main()
