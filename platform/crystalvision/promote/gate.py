"""The promotion gate per target: challenger vs champion on the same *selection* structures, paired bootstrap.

Promotion never looks at the test rows a report or README table shows: it scores the validation structures
(``split == "val"`` of ``evaluation/predictions_by_structure.csv``, carved from the training structures, grouped),
the selection split. Each target is scored on its own (R² for a regression head, accuracy for a classification
head): no average of unbounded R² with accuracies. Per target, a paired bootstrap over the selection structures
gives one-sided p-values of "challenger better" and "challenger worse" (the share of resampled improvements on the
other side of zero). Four heads are four tests, so the p-values are corrected with Holm-Bonferroni (family-wise
error ``alpha``) before any head counts as ``better`` or ``worse``; the challenger is promoted when at least one
head is better and none is worse.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from crystalvision.core import CLASS_NAME, TARGETS_CLASSIFICATION, TARGETS_REGRESSION
from crystalvision.stages import SELECTION_SPLIT

log = logging.getLogger(__name__)

STRUCTURE_TABLE = "evaluation/predictions_by_structure.csv"
Correction = Literal["holm", "bonferroni", "none"]


def structure_table(run_id: str, split: str = SELECTION_SPLIT) -> pd.DataFrame | None:
    """The run's predictions per structure on ``split`` (as evaluation logged them), or None when it has none."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="crystalvision-gate-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=STRUCTURE_TABLE, dst_path=tmp)
            df = pd.read_csv(Path(path))
        except Exception as exc:  # a missing artifact raises different types per artifact store
            log.info("run %s has no %s (%s)", run_id, STRUCTURE_TABLE, exc)
            return None
    if "split" not in df or not (df["split"] == split).any():
        log.info("run %s logged no %s rows per structure; the per-target gate cannot use it", run_id, split)
        return None
    return df[df["split"] == split]


def _truth(df: pd.DataFrame, target: str) -> pd.Series:
    return df[target] if target in df else df[CLASS_NAME[target]]


def _scores(df: pd.DataFrame, idx: np.ndarray) -> dict[str, float]:
    out = {}
    for t in TARGETS_REGRESSION:
        y, p = df[t].to_numpy(float)[idx], df[f"{t}_pred"].to_numpy(float)[idx]
        sst = float(((y - y.mean()) ** 2).sum())
        out[t] = 1.0 - float(((y - p) ** 2).sum()) / sst if sst > 0 else float("nan")
    for t in TARGETS_CLASSIFICATION:
        truth, pred = _truth(df, t).astype(str).to_numpy(), df[f"{t}_pred"].astype(str).to_numpy()
        out[t] = float((truth[idx] == pred[idx]).mean())
    return out


def adjust(pvalues: Mapping[str, float], correction: Correction = "holm") -> dict[str, float]:
    """Family-wise adjusted p-values (Holm-Bonferroni step-down, Bonferroni, or none); NaN stays NaN and does not
    count as a test."""
    finite = {k: float(p) for k, p in pvalues.items() if np.isfinite(p)}
    out = {k: float("nan") for k in pvalues}
    m = len(finite)
    if correction == "none":
        return out | finite
    if correction == "bonferroni":
        return out | {k: min(1.0, p * m) for k, p in finite.items()}
    running = 0.0
    for rank, (k, p) in enumerate(sorted(finite.items(), key=lambda kv: kv[1])):
        running = max(running, min(1.0, (m - rank) * p))  # step-down, monotone
        out[k] = running
    return out


def per_target_gate(
    challenger: pd.DataFrame,
    champion: pd.DataFrame,
    n_boot: int = 2000,
    alpha: float = 0.05,
    correction: Correction = "holm",
    seed: int = 0,
) -> dict[str, Any]:
    """Compare two structure tables on their common structures; per target the scores, improvement, bootstrap
    noise (std), raw and adjusted one-sided p-values and verdict, and ``promote``."""
    common = sorted(set(challenger["material_id"]) & set(champion["material_id"]))
    if len(common) < 2:
        raise ValueError(f"only {len(common)} common selection structures; cannot compare per target")
    a = challenger.drop_duplicates("material_id").set_index("material_id").loc[common].reset_index()
    b = champion.drop_duplicates("material_id").set_index("material_id").loc[common].reset_index()
    everything = np.arange(len(common))
    sa, sb = _scores(a, everything), _scores(b, everything)
    rng = np.random.default_rng(seed)
    boot = {t: np.empty(n_boot) for t in sa}
    for i in range(n_boot):
        idx = rng.integers(0, len(common), len(common))
        ba, bb = _scores(a, idx), _scores(b, idx)
        for t in sa:
            boot[t][i] = ba[t] - bb[t]
    p_better, p_worse = {}, {}
    for t, d in boot.items():
        d = d[np.isfinite(d)]
        ok = len(d) > 0 and np.isfinite(sa[t] - sb[t])
        p_better[t] = (1 + np.sum(d <= 0)) / (1 + len(d)) if ok else float("nan")
        p_worse[t] = (1 + np.sum(d >= 0)) / (1 + len(d)) if ok else float("nan")
    adj_better, adj_worse = adjust(p_better, correction), adjust(p_worse, correction)
    targets = {}
    for t in sa:
        if not np.isfinite(p_better[t]):
            verdict = "unknown"
        elif adj_better[t] <= alpha:
            verdict = "better"
        elif adj_worse[t] <= alpha:
            verdict = "worse"
        else:
            verdict = "same"
        finite = boot[t][np.isfinite(boot[t])]
        targets[t] = {
            "challenger": sa[t],
            "champion": sb[t],
            "improvement": sa[t] - sb[t],
            "noise": float(np.std(finite)) if len(finite) else float("nan"),
            "p_better": float(p_better[t]),
            "p_better_adjusted": adj_better[t],
            "p_worse_adjusted": adj_worse[t],
            "verdict": verdict,
        }
    verdicts = [v["verdict"] for v in targets.values()]
    promote = "better" in verdicts and "worse" not in verdicts
    return {
        "split": SELECTION_SPLIT,
        "n_structures": len(common),
        "n_boot": n_boot,
        "alpha": alpha,
        "correction": correction,
        "targets": targets,
        "promote": promote,
    }


def describe(gate: dict[str, Any]) -> str:
    """One line per target: improvement, noise, adjusted p-value and the verdict."""
    parts = [
        f"{t} {v['challenger']:.4g} vs {v['champion']:.4g} "
        f"({v['improvement']:+.4g} +- {v['noise']:.3g}, p {v['p_better_adjusted']:.3g}: {v['verdict']})"
        for t, v in gate["targets"].items()
    ]
    head = (
        f"per-target gate over {gate['n_structures']} {gate['split']} structures "
        f"({gate['correction']}-corrected, alpha {gate['alpha']:g}): "
    )
    return head + "; ".join(parts)
