"""Pooled out-of-fold scoring and paired bootstrap comparisons on per-structure prediction tables.

A prediction table has one row per (seed, fold, test structure): ``material_id``, ``fold``, ``seed``,
``nelements``, the truth of every head (``band_gap``, ``energy_above_hull`` values; ``crystal_system``,
``spacegroup`` class names), optionally ``unseen_<head>`` (the class is absent from that fold's training part), and
per predictor P (``model``, ``dummy``, ``1nn``, ``cgcnn``, ...) its prediction in ``P__<head>``. Under k-fold every
structure appears once per seed, so the table holds each structure's out-of-fold prediction.

- :func:`pooled_metrics` scores all rows of a seed ONCE (R², MAE per regression head; accuracy, balanced accuracy,
  macro-F1 per class head), then reports the mean over seeds and, with several seeds, their sample std
  (``_seed_std``, ddof=1).
- :func:`paired_bootstrap` resamples structures (the same resample for both predictors and for every seed) and gives
  the 95 % interval of the difference of the seed-averaged metric (accuracy, balanced accuracy and macro-F1 per class
  head, R² per regression head).

Everything here works on plain tables, so any caller (k-fold runs, a learning curve) scores the same way.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from crystalvision.core import TARGETS, TARGETS_CLASSIFICATION, TARGETS_REGRESSION, CrystalVisionError
from crystalvision.evaluate.metrics import balanced_accuracy

log = logging.getLogger(__name__)

SEP = "__"
REFERENCE = "model"
KEYS = ("material_id", "fold", "seed")
CLASS_METRICS = ("acc", "balanced_acc", "macro_f1")  # bootstrapped per class head (the first is the headline)


def head_metrics(head: str) -> tuple[str, ...]:
    """The metrics the bootstrap resamples for ``head``: R² for a value, :data:`CLASS_METRICS` for a class."""
    return ("r2",) if head in TARGETS_REGRESSION else CLASS_METRICS


def column(predictor: str, head: str) -> str:
    """The prediction column of ``predictor`` for ``head``."""
    return f"{predictor}{SEP}{head}"


def predictors(table: pd.DataFrame) -> list[str]:
    """Predictor names of a table, in column order."""
    return list(dict.fromkeys(c.split(SEP)[0] for c in table.columns if SEP in c))


def score(truth: pd.DataFrame, pred: pd.DataFrame, predictor: str) -> dict[str, float]:
    """``<metric>_<head>`` of one predictor's rows: r2, mae (regression); acc, balanced_acc, macro_f1
    (classification)."""
    out: dict[str, float] = {}
    for head in TARGETS:
        col = column(predictor, head)
        if col not in pred or head not in truth:
            continue
        ok = pred[col].notna().to_numpy()
        y, p = truth[head].to_numpy()[ok], pred[col].to_numpy()[ok]
        if not len(y):
            continue
        if head in TARGETS_REGRESSION:
            y, p = y.astype(float), p.astype(float)
            out[f"r2_{head}"] = float(skm.r2_score(y, p)) if len(y) >= 2 else math.nan
            out[f"mae_{head}"] = float(skm.mean_absolute_error(y, p))
        else:
            y, p = y.astype(str), p.astype(str)
            out[f"acc_{head}"] = float(skm.accuracy_score(y, p))
            out[f"balanced_acc_{head}"] = balanced_accuracy(y, p)
            out[f"macro_f1_{head}"] = float(skm.f1_score(y, p, average="macro", zero_division=0))
    return out


def subset_rows(table: pd.DataFrame, nelements: int | None) -> pd.DataFrame:
    """The rows of structures with ``nelements`` elements (all rows for None)."""
    if nelements is None:
        return table
    return table[table["nelements"] == nelements] if "nelements" in table else table.iloc[:0]


def _seed_stats(per_seed: Sequence[Mapping[str, float]], prefix: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in dict.fromkeys(k for m in per_seed for k in m):
        vals = [m[name] for m in per_seed if name in m and math.isfinite(m[name])]
        if not vals:
            continue
        out[f"{prefix}_{name}"] = float(np.mean(vals))
        if len(per_seed) > 1 and len(vals) >= 2:
            out[f"{prefix}_{name}_seed_std"] = float(np.std(vals, ddof=1))
    return out


def pooled_metrics(table: pd.DataFrame, subsets: Mapping[str, int] | None = None) -> dict[str, float]:
    """``pooled_<predictor>_<metric>_<head>`` (and ``pooled_<subset>_...`` per ``subsets``: name -> nelements),
    each scored once over a seed's out-of-fold rows, then averaged over seeds; ``pooled_n_structures``,
    ``pooled_n_seeds`` and ``pooled_ceiling_acc_<head>`` (share of structures whose class training had)."""
    out: dict[str, float] = {"pooled_n_seeds": float(table["seed"].nunique())}
    for name, n in {"": None, **dict(subsets or {})}.items():
        rows = subset_rows(table, n)
        prefix = f"pooled_{name}" if name else "pooled"
        if rows.empty:
            log.warning("pooled metrics: subset %s has no structures", name)
            continue
        out[f"{prefix}_n_structures"] = float(rows["material_id"].nunique())
        per_seed = []
        for _, part in rows.groupby("seed", sort=True):
            m: dict[str, float] = {}
            for p in predictors(part):
                m |= {f"{p}_{k}": v for k, v in score(part, part, p).items()}
            for head in TARGETS_CLASSIFICATION:
                if f"unseen_{head}" in part:
                    m[f"ceiling_acc_{head}"] = 1.0 - float(part[f"unseen_{head}"].astype(bool).mean())
            per_seed.append(m)
        out |= _seed_stats(per_seed, prefix)
    return out


def _aligned(table: pd.DataFrame, cols: Sequence[str]) -> tuple[list[tuple], dict[str, np.ndarray]]:
    """Per column a (seeds, rows) array, rows (fold, structure) in one order for every seed. Grouped folds test a
    structure once, so a row is a structure; image folds can test a structure's views in several folds."""
    seeds = sorted(table["seed"].unique())
    keys = ["fold", "material_id"] if "fold" in table else ["material_id"]
    ids = sorted(table.loc[table["seed"] == seeds[0]].set_index(keys).index)
    out: dict[str, list[np.ndarray]] = {c: [] for c in cols}
    for s in seeds:
        part = table[table["seed"] == s].set_index(keys)
        if sorted(part.index) != ids:
            raise ValueError(f"seed {s} predicts other structures than seed {seeds[0]}; pair the same folds")
        for c in cols:
            out[c].append(part.loc[ids, c].to_numpy())
    return ids, {c: np.stack(v) for c, v in out.items()}


def _weights(idx: np.ndarray, n: int) -> np.ndarray:
    """(B, n) resample indices -> (B, n) multiplicity of every structure in every resample."""
    flat = (idx + n * np.arange(len(idx))[:, None]).ravel()
    return np.bincount(flat, minlength=len(idx) * n).reshape(len(idx), n).astype(float)


def _class_metric(metric: str, y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Balanced accuracy or macro-F1 of one seed's (n,) labels under every resample's weights ``w`` (B, n), with
    scikit-learn's class sets: balanced accuracy averages recall over the classes present in the resample's truth,
    macro-F1 averages F1 over the classes in its truth or predictions (an F1 with no true positive is 0)."""
    classes, inverse = np.unique(np.concatenate([y, p]), return_inverse=True)
    ty, tp = inverse[: len(y)], inverse[len(y) :]
    onehot_y = np.eye(len(classes))[ty]
    true_pos = w @ (onehot_y * (ty == tp)[:, None])
    n_true = w @ onehot_y
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "balanced_acc":
            per_class = np.where(n_true > 0, true_pos / n_true, np.nan)
        else:
            denom = n_true + w @ np.eye(len(classes))[tp]
            per_class = np.where(denom > 0, 2 * true_pos / denom, np.nan)
    return np.nanmean(per_class, axis=1)


def _resampled_metric(head: str, y: np.ndarray, p: np.ndarray, idx: np.ndarray, metric: str = "") -> np.ndarray:
    """The seed-averaged metric of every resample: ``y``/``p`` (seeds, n), ``idx`` (B, n) -> (B,). ``metric``: r2
    for a regression head; acc (default), balanced_acc or macro_f1 for a class head."""
    if head in TARGETS_REGRESSION:
        y, p = y.astype(float), p.astype(float)
        yt = y[0][idx]
        sst = ((yt - yt.mean(1, keepdims=True)) ** 2).sum(1)
        sst = np.where(sst > 0, sst, np.nan)
        return np.mean([1.0 - ((yt - ps[idx]) ** 2).sum(1) / sst for ps in p], axis=0)
    if metric in ("balanced_acc", "macro_f1"):
        w = _weights(idx, y.shape[1])
        seeds = zip(y.astype(str), p.astype(str), strict=True)
        return np.mean([_class_metric(metric, ys, ps, w) for ys, ps in seeds], axis=0)
    correct = y.astype(str) == p.astype(str)
    return correct[:, idx].mean(-1).mean(0)


def paired_bootstrap(
    table: pd.DataFrame, a: str, b: str, *, n_resamples: int = 2000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Per head both ``a`` and ``b`` predict and per metric of :func:`head_metrics` (r2; acc, balanced_acc,
    macro_f1): ``a`` minus ``b`` with its 95 % percentile interval over ``n_resamples`` resamples of the structures
    (the same resample for both and for every seed)."""
    heads = [h for h in TARGETS if column(a, h) in table and column(b, h) in table and h in table]
    if not heads or table.empty:
        return {}
    rows = table.dropna(subset=[column(p, h) for h in heads for p in (a, b)])
    cols = list(dict.fromkeys([*heads, *(column(p, h) for h in heads for p in (a, b))]))  # a == b: once
    ids, arr = _aligned(rows, cols)
    n = len(ids)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    full = np.arange(n)[None, :]
    out: dict[str, dict[str, float]] = {}
    for h in heads:
        y, pa, pb = arr[h], arr[column(a, h)], arr[column(b, h)]
        for metric in head_metrics(h):
            diff = _resampled_metric(h, y, pa, idx, metric) - _resampled_metric(h, y, pb, idx, metric)
            point = float((_resampled_metric(h, y, pa, full, metric) - _resampled_metric(h, y, pb, full, metric))[0])
            lo, hi = np.nanpercentile(diff, [2.5, 97.5])
            out[f"{metric}_{h}"] = {"diff": point, "lo": float(lo), "hi": float(hi), "n_structures": float(n)}
    return out


def intervals(
    table: pd.DataFrame, predictor: str, *, n_resamples: int = 2000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Per head ``predictor`` predicts and per metric of :func:`head_metrics`: its pooled, seed-averaged value with
    the 95 % percentile interval over ``n_resamples`` resamples of the structures (a learning curve's error bars)."""
    heads = [h for h in TARGETS if column(predictor, h) in table and h in table]
    rows = table.dropna(subset=[column(predictor, h) for h in heads])
    if not heads or rows.empty:
        return {}
    ids, arr = _aligned(rows, [*heads, *(column(predictor, h) for h in heads)])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ids), size=(n_resamples, len(ids)))
    full = np.arange(len(ids))[None, :]
    out: dict[str, dict[str, float]] = {}
    for h in heads:
        y, p = arr[h], arr[column(predictor, h)]
        for metric in head_metrics(h):
            lo, hi = np.nanpercentile(_resampled_metric(h, y, p, idx, metric), [2.5, 97.5])
            value = float(_resampled_metric(h, y, p, full, metric)[0])
            out[f"{metric}_{h}"] = {"value": value, "lo": float(lo), "hi": float(hi), "n_structures": float(len(ids))}
    return out


def model_intervals(table: pd.DataFrame, *, n_resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """``pooled_<reference>_<metric>_<head>_lo`` / ``_hi``: the 95 % bootstrap interval of the model's own pooled
    metric over resampled structures (what a model card shows beside the value)."""
    if REFERENCE not in predictors(table):
        return {}
    out: dict[str, float] = {}
    for metric, v in intervals(table, REFERENCE, n_resamples=n_resamples, seed=seed).items():
        out |= {f"pooled_{REFERENCE}_{metric}_lo": v["lo"], f"pooled_{REFERENCE}_{metric}_hi": v["hi"]}
    return out


def comparisons(
    table: pd.DataFrame,
    subsets: Mapping[str, int] | None = None,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    reference: str = REFERENCE,
) -> dict[str, float]:
    """``pooled[_<subset>]_diff_<reference>_vs_<baseline>_<metric>_<head>`` with ``_lo`` / ``_hi`` (95 %): the
    paired bootstrap of the reference against every other predictor of the table."""
    out: dict[str, float] = {}
    if reference not in predictors(table):
        return out
    for name, n in {"": None, **dict(subsets or {})}.items():
        rows = subset_rows(table, n)
        prefix = f"pooled_{name}_diff" if name else "pooled_diff"
        for other in (p for p in predictors(table) if p != reference):
            boot = paired_bootstrap(rows, reference, other, n_resamples=n_resamples, seed=seed)
            for metric, v in boot.items():
                key = f"{prefix}_{reference}_vs_{other}_{metric}"
                out |= {key: v["diff"], f"{key}_lo": v["lo"], f"{key}_hi": v["hi"]}
    return out


def summarise(
    table: pd.DataFrame, subsets: Mapping[str, int] | None = None, *, n_resamples: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Pooled metrics and paired comparisons of a prediction table (finite values only)."""
    out = pooled_metrics(table, subsets) | comparisons(table, subsets, n_resamples=n_resamples, seed=seed)
    out |= model_intervals(table, n_resamples=n_resamples, seed=seed)
    out["pooled_bootstrap_resamples"] = float(n_resamples)
    return {k: v for k, v in out.items() if math.isfinite(v)}


# ----------------------------------------------------------------------------------- building a fold's table


def class_names(proba: np.ndarray, classes: Sequence[str]) -> list[str]:
    """Arg-max class name of every row of a probability matrix."""
    return [classes[k] for k in np.asarray(proba).argmax(1)]


def fold_table(
    labels: pd.DataFrame,
    outputs: Mapping[str, np.ndarray] | None,
    classes: Mapping[str, Sequence[str]],
    train: pd.DataFrame | None = None,
    others: Mapping[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """One fold's per-structure table: truth from ``labels`` (one row per structure, class names in the labels
    table's columns), the model's ``outputs`` (values and ``<head>_proba`` aligned with ``labels``), ``unseen_*``
    against ``train``, and ``others``: predictor -> frame with ``material_id`` and one column per head."""
    from crystalvision.core import CLASS_NAME
    from crystalvision.data import nelements

    out = labels[["material_id"]].reset_index(drop=True).copy()
    try:
        out["nelements"] = nelements(labels).to_numpy()
    except (ValueError, CrystalVisionError) as exc:  # no formula column, or one pymatgen cannot read
        log.info("prediction table without nelements (subsets unavailable): %s", exc)
    for h in TARGETS_REGRESSION:
        out[h] = labels[h].to_numpy(dtype=float)
    for h in TARGETS_CLASSIFICATION:
        out[h] = labels[CLASS_NAME[h]].astype(str).to_numpy()
        if train is not None:
            out[f"unseen_{h}"] = ~out[h].isin(set(train[CLASS_NAME[h]].astype(str)))
    if outputs is not None:
        for h in TARGETS_REGRESSION:
            out[column(REFERENCE, h)] = np.asarray(outputs[h], dtype=float)
        for h in TARGETS_CLASSIFICATION:
            out[column(REFERENCE, h)] = class_names(outputs[f"{h}_proba"], classes[h])
    for name, frame in (others or {}).items():
        cols = [h for h in TARGETS if h in frame]
        merged = out[["material_id"]].merge(frame[["material_id", *cols]], on="material_id", how="left")
        for h in cols:
            out[column(name, h)] = merged[h].to_numpy()
    return out


def tag(table: pd.DataFrame, fold: int, seed: int) -> pd.DataFrame:
    """``table`` with its fold and seed columns set (first columns)."""
    rest = table.drop(columns=[c for c in ("fold", "seed") if c in table])
    return rest.assign(fold=fold, seed=seed)[["fold", "seed", *rest.columns]]


def write(table: pd.DataFrame, folder: Any, name: str = "oof_predictions") -> list[Any]:
    """The table as ``<name>.parquet`` and ``<name>.csv`` in ``folder``."""
    from pathlib import Path

    folder = Path(folder)
    paths = [folder / f"{name}.parquet", folder / f"{name}.csv"]
    table.to_parquet(paths[0], index=False)
    table.to_csv(paths[1], index=False)
    return paths
