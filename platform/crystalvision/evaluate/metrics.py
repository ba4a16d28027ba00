"""Metric functions on plain arrays: regression, multi-class classification, stability, per-structure means.

All functions are pure. Classification functions take integer class ids and, where probabilities are needed,
an (N, K) matrix over *all* K classes of the model's head. Classes absent from ``y_true`` (common with a grouped
split: several space groups have a single structure) are handled explicitly:

- ROC AUC and AP per class are computed only for classes with at least one positive and one negative in
  ``y_true``; "macro" is the mean over those classes; "micro" pools every (sample, class) pair of all K columns.
- precision/recall/F1 averages follow scikit-learn's default label set: classes in ``y_true`` or ``y_pred``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn import metrics as skm


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, float]:
    """R², MAE, MSE, RMSE (R² is NaN with fewer than two samples)."""
    t, p = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    if len(t) == 0:
        return dict.fromkeys(("r2", "mae", "mse", "rmse"), math.nan)
    mse = float(skm.mean_squared_error(t, p))
    return {
        "r2": float(skm.r2_score(t, p)) if len(t) >= 2 else math.nan,
        "mae": float(skm.mean_absolute_error(t, p)),
        "mse": mse,
        "rmse": math.sqrt(mse),
    }


def balanced_accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    """Mean recall over the classes present in ``y_true`` (scikit-learn's ``balanced_accuracy_score``, without its
    warning about predicted classes that never occur: with rare space groups they always do)."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if len(t) == 0:
        return math.nan
    classes = np.unique(t)
    return float(np.mean([np.mean(p[t == k] == k) for k in classes]))


def label_metrics(y_true: Sequence[int], y_pred: Sequence[int]) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro/weighted precision, recall, F1 from hard predictions."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if len(t) == 0:
        return {"acc": math.nan}
    out = {"acc": float(skm.accuracy_score(t, p)), "balanced_acc": balanced_accuracy(t, p)}
    for avg in ("macro", "weighted"):
        prec, rec, f1, _ = skm.precision_recall_fscore_support(t, p, average=avg, zero_division=0)
        out.update({f"{avg}_precision": float(prec), f"{avg}_recall": float(rec), f"{avg}_f1": float(f1)})
    return out


def one_hot(y: Sequence[int], n_classes: int) -> np.ndarray:
    """(N,) class ids -> (N, n_classes) 0/1 matrix."""
    y = np.asarray(y, dtype=int)
    out = np.zeros((len(y), n_classes), dtype=int)
    out[np.arange(len(y)), y] = 1
    return out


def scorable_classes(y_true: Sequence[int], n_classes: int) -> list[int]:
    """Classes with at least one positive and one negative sample (the ones a ROC/PR curve exists for)."""
    counts = np.bincount(np.asarray(y_true, dtype=int), minlength=n_classes)
    return [k for k in range(n_classes) if 0 < counts[k] < len(y_true)]


def roc_auc_per_class(y_true: Sequence[int], proba: np.ndarray) -> dict[int, float]:
    """One-vs-rest ROC AUC of each scorable class."""
    y = np.asarray(y_true, dtype=int)
    return {k: float(skm.roc_auc_score(y == k, proba[:, k])) for k in scorable_classes(y, proba.shape[1])}


def average_precision_per_class(y_true: Sequence[int], proba: np.ndarray) -> dict[int, float]:
    """One-vs-rest average precision of each scorable class."""
    y = np.asarray(y_true, dtype=int)
    return {k: float(skm.average_precision_score(y == k, proba[:, k])) for k in scorable_classes(y, proba.shape[1])}


def _micro(score_fn, y_true: Sequence[int], proba: np.ndarray) -> float:
    onehot = one_hot(y_true, proba.shape[1]).ravel()
    if onehot.min() == onehot.max():
        return math.nan
    return float(score_fn(onehot, proba.ravel()))


def _mean(values: dict[int, float]) -> float:
    return float(np.mean(list(values.values()))) if values else math.nan


def probability_metrics(y_true: Sequence[int], proba: np.ndarray) -> dict[str, float]:
    """ROC AUC and AP: micro (pooled over all classes) and macro (mean over scorable classes)."""
    proba = np.asarray(proba, dtype=float)
    return {
        "auc_micro": _micro(skm.roc_auc_score, y_true, proba),
        "auc_macro": _mean(roc_auc_per_class(y_true, proba)),
        "ap_micro": _micro(skm.average_precision_score, y_true, proba),
        "ap_macro": _mean(average_precision_per_class(y_true, proba)),
    }


def classification_metrics(y_true: Sequence[int], proba: np.ndarray) -> dict[str, float]:
    """Everything scalar for one classification head: label metrics on argmax + probability metrics."""
    proba = np.asarray(proba, dtype=float)
    y_pred = proba.argmax(axis=1) if len(proba) else np.zeros(0, dtype=int)
    out = label_metrics(y_true, y_pred)
    if len(proba):
        out.update(probability_metrics(y_true, proba))
    out["n_classes_present"] = float(len(np.unique(np.asarray(y_true))))
    return out


def classification_report_dict(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]) -> dict:
    """scikit-learn's classification report (output_dict) over classes in y_true or y_pred, named."""
    present = sorted(set(np.asarray(y_true, dtype=int).tolist()) | set(np.asarray(y_pred, dtype=int).tolist()))
    return skm.classification_report(
        y_true, y_pred, labels=present, target_names=[classes[k] for k in present], output_dict=True, zero_division=0
    )


def classification_report_text(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]) -> str:
    """The same report as text."""
    present = sorted(set(np.asarray(y_true, dtype=int).tolist()) | set(np.asarray(y_pred, dtype=int).tolist()))
    return skm.classification_report(
        y_true, y_pred, labels=present, target_names=[classes[k] for k in present], zero_division=0, digits=4
    )


def confusion(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[int]) -> np.ndarray:
    """Confusion matrix (rows true, columns predicted) over ``labels``."""
    return skm.confusion_matrix(y_true, y_pred, labels=list(labels))


def present_labels(*arrays: Sequence[int]) -> list[int]:
    """Sorted union of class ids appearing in any of the arrays."""
    out: set[int] = set()
    for a in arrays:
        out |= set(np.asarray(a, dtype=int).tolist())
    return sorted(out)


def stability_metrics(e_true: Sequence[float], e_pred: Sequence[float], threshold: float) -> dict[str, float]:
    """e_above_hull as a classification: 'stable' = at or below ``threshold`` (eV/atom).

    Precision/recall/F1 are for the stable class; AUC/AP rank by ``-e_pred`` (lower predicted e_hull = more
    likely stable) and are NaN when only one class is present.
    """
    t = np.asarray(e_true, dtype=float) <= threshold
    p = np.asarray(e_pred, dtype=float) <= threshold
    if len(t) == 0:
        return {"acc": math.nan}
    prec, rec, f1, _ = skm.precision_recall_fscore_support(t, p, average="binary", pos_label=True, zero_division=0)
    both = 0 < t.sum() < len(t)
    score = -np.asarray(e_pred, dtype=float)
    return {
        "acc": float(skm.accuracy_score(t, p)),
        "precision": float(prec),
        "recall": float(rec),
        "f1": float(f1),
        "mcc": float(skm.matthews_corrcoef(t, p)) if both else math.nan,
        "auc": float(skm.roc_auc_score(t, score)) if both else math.nan,
        "ap": float(skm.average_precision_score(t, score)) if both else math.nan,
        "frac_stable": float(t.mean()),
    }


def group_mean(groups: Sequence[str], values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` rows (shape (N,) or (N, K)) per group; returns (sorted unique groups, means)."""
    keys, inverse = np.unique(np.asarray(groups), return_inverse=True)
    vals = np.asarray(values, dtype=float)
    flat = vals.reshape(len(vals), -1)
    sums = np.zeros((len(keys), flat.shape[1]))
    np.add.at(sums, inverse, flat)
    means = sums / np.bincount(inverse, minlength=len(keys))[:, None]
    return keys, means.reshape((len(keys), *vals.shape[1:]))


def group_first(groups: Sequence[str], values: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """First value per group (labels are constant within a structure); sorted unique groups."""
    keys, first = np.unique(np.asarray(groups), return_index=True)
    return keys, np.asarray(values)[first]


def prefixed(prefix: str, target: str, values: dict[str, float]) -> dict[str, float]:
    """``{"r2": x}`` -> ``{"<prefix>_r2_<target>": x}``."""
    return {f"{prefix}_{name}_{target}": v for name, v in values.items()}


def finite(metrics: dict[str, float]) -> dict[str, float]:
    """Only the finite values (MLflow and the registry need real numbers)."""
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
