"""Evaluation figures (matplotlib, Agg backend). Every function saves one PNG and returns its path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn import metrics as skm

from crystalvision.core import UNITS  # regression head -> unit
from crystalvision.evaluate.metrics import one_hot, scorable_classes

DPI = 110


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def parity_plot(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    target: str,
    path: str | Path,
    *,
    struct_true: np.ndarray | None = None,
    struct_pred: np.ndarray | None = None,
    r2: float | None = None,
) -> Path:
    """Predicted vs true (per image, and per structure when given) with the y = x line."""
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.scatter(y_true, y_pred, s=8, alpha=0.35, label="per image")
    if struct_true is not None and struct_pred is not None:
        ax.scatter(struct_true, struct_pred, s=26, marker="D", edgecolor="k", label="per structure (mean of views)")
    values = np.concatenate([np.ravel(y_true), np.ravel(y_pred)]) if len(y_true) else np.array([0.0, 1.0])
    lo, hi = float(values.min()), float(values.max())
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=1)
    unit = UNITS.get(target, "")
    ax.set_xlabel(f"true {target} ({unit})")
    ax.set_ylabel(f"predicted {target} ({unit})")
    title = target if r2 is None or not np.isfinite(r2) else f"{target}: R² = {r2:.3f}"
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def confusion_plot(cm: np.ndarray, labels: Sequence[str], path: str | Path, title: str) -> Path:
    """Confusion matrix as counts, coloured by the row-normalised fraction."""
    n = len(labels)
    size = max(4.0, 0.42 * n + 2.0)
    fig, ax = plt.subplots(figsize=(size, size))
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if frac[i, j] > 0.5 else "black",
                )
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, path)


def _curves(kind: str, y_true: np.ndarray, proba: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(class id, x, y) per scorable class, then (-1, x, y) for the micro average; x/y = fpr/tpr or recall/precision."""
    pairs = [(y_true == k, proba[:, k], k) for k in scorable_classes(y_true, proba.shape[1])]
    onehot = one_hot(y_true, proba.shape[1]).ravel()
    if 0 < onehot.sum() < len(onehot):
        pairs.append((onehot, proba.ravel(), -1))
    out = []
    for truth, score, k in pairs:
        if kind == "roc":
            fpr, tpr, _ = skm.roc_curve(truth, score)
            out.append((k, fpr, tpr))
        else:
            prec, rec, _ = skm.precision_recall_curve(truth, score)
            out.append((k, rec, prec))
    return out


def roc_plot(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str], path: str | Path, title: str) -> Path:
    """One-vs-rest ROC curve per class present, micro average and macro average (mean TPR on a grid)."""
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    grid = np.linspace(0, 1, 201)
    tprs = []
    for k, fpr, tpr in _curves("roc", np.asarray(y_true), np.asarray(proba)):
        auc = skm.auc(fpr, tpr)
        if k >= 0:
            tprs.append(np.interp(grid, fpr, tpr))
            ax.plot(fpr, tpr, lw=1, alpha=0.7, label=f"{classes[k]} ({auc:.2f})")
        else:
            ax.plot(fpr, tpr, "k:", lw=2, label=f"micro ({auc:.2f})")
    if tprs:
        mean = np.mean(tprs, axis=0)
        ax.plot(grid, mean, "k-", lw=2, label=f"macro ({skm.auc(grid, mean):.2f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(fontsize=6, loc="lower right", ncol=2 if len(tprs) > 10 else 1)
    return _save(fig, path)


def pr_plot(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str], path: str | Path, title: str) -> Path:
    """One-vs-rest precision-recall curve per class present with its AP, and the micro average."""
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    y_true, proba = np.asarray(y_true), np.asarray(proba)
    n = 0
    for k, rec, prec in _curves("pr", y_true, proba):
        if k >= 0:
            ap = skm.average_precision_score(y_true == k, proba[:, k])
            ax.step(rec, prec, where="post", lw=1, alpha=0.7, label=f"{classes[k]} (AP {ap:.2f})")
            n += 1
        else:
            ap = skm.average_precision_score(one_hot(y_true, proba.shape[1]).ravel(), proba.ravel())
            ax.step(rec, prec, "k:", where="post", lw=2, label=f"micro (AP {ap:.2f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=6, loc="lower left", ncol=2 if n > 10 else 1)
    return _save(fig, path)


def saliency_grid(
    images: np.ndarray, maps: np.ndarray, titles: Sequence[str], path: str | Path, cmap: str = "gray"
) -> Path:
    """Row 1: input images; row 2: saliency maps (grey colour map, 0..1)."""
    n = max(len(images), 1)
    fig, axes = plt.subplots(2, n, figsize=(2.1 * n, 4.4), squeeze=False)
    for i in range(len(images)):
        axes[0, i].imshow(images[i])
        axes[0, i].set_title(titles[i], fontsize=7)
        axes[1, i].imshow(maps[i], cmap=cmap, vmin=0, vmax=1)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle("SmoothGrad saliency, crystal-system head", fontsize=9)
    return _save(fig, path)


def ssim_heatmap(matrix: np.ndarray, labels: Sequence[str], path: str | Path) -> Path:
    """SSIM between the saliency maps of the crystal-system examples."""
    n = len(labels)
    fig, ax = plt.subplots(figsize=(max(3.5, 0.6 * n + 2), max(3.2, 0.6 * n + 1.6)))
    im = ax.imshow(matrix, cmap="viridis", vmin=min(0.0, float(np.min(matrix)) if n else 0.0), vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_title("SSIM between class saliency maps")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def learning_curve_plot(record: dict, path: str | Path) -> Path:
    """A learning curve record (app.curve_record.merge) as one panel per head: metric against structures per fold
    (``x_label``; records before it: training structures) on a log axis, one line per method, 95 % bootstrap
    intervals as error bars."""
    heads = record["heads"]
    points = record["points"]
    x = np.array([p.get("n_structures_mean", p["n_train_mean"]) for p in points], dtype=float)
    methods = list(points[0]["series"]) if points else []
    fig, axes = plt.subplots(1, len(heads), figsize=(3.6 * len(heads), 3.4), squeeze=False)
    for ax, (head, metric) in zip(axes[0], heads.items(), strict=True):
        for j, method in enumerate(methods):
            cells = [p["series"][method][head] for p in points]
            y = np.array([c["value"] for c in cells], dtype=float)
            if not np.isfinite(y).any():
                continue
            lo = np.array([c["lo"] for c in cells], dtype=float)
            hi = np.array([c["hi"] for c in cells], dtype=float)
            err = np.vstack([np.where(np.isfinite(lo), y - lo, 0.0), np.where(np.isfinite(hi), hi - y, 0.0)])
            ax.errorbar(
                x * (1 + 0.03 * (j - (len(methods) - 1) / 2)),  # methods side by side around each size
                y,
                yerr=np.clip(err, 0, None),
                marker="o",
                ms=4,
                capsize=2,
                lw=1.2,
                label=method,
            )
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{v:.0f}" for v in x])
        ax.minorticks_off()
        ax.set_xlabel(record.get("x_label", "training structures per fold"), fontsize=8)
        ax.set_ylabel("accuracy (pooled out of fold)" if metric == "acc" else "R² (pooled out of fold)")
        if metric == "r2":  # a constant or a poor fit goes far below 0: keep the useful range readable
            ax.set_ylim(max(ax.get_ylim()[0], -1.0), 1.0)
            ax.axhline(0.0, color="k", lw=0.6)
        else:
            ax.set_ylim(0.0, 1.0)
        ax.set_title(head.replace("_", " "))
        ax.grid(alpha=0.3, which="both")
    if methods:
        axes[0][0].legend(fontsize=7, loc="best")
    return _save(fig, path)
