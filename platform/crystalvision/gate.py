"""The promotion gate per target: challenger vs champion on the same test structures, with bootstrap noise.

Each target is scored on its own (R² for a regression head, accuracy for a classification head, per structure
from ``evaluation/predictions_by_structure.csv``): no average of unbounded R² with accuracies, so one bad R²
cannot dominate. The noise of each improvement is the standard deviation of the paired improvement over
``n_boot`` bootstrap resamples of the test structures. A target is ``better`` when its improvement exceeds
``z`` times its noise, ``worse`` when it falls below minus that, else ``same``; the challenger is promoted when at
least one target is better and none is worse.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crystalvision.targets import CLASS_NAME, TARGETS_CLASSIFICATION, TARGETS_REGRESSION

log = logging.getLogger(__name__)

STRUCTURE_TABLE = "evaluation/predictions_by_structure.csv"


def structure_table(run_id: str) -> pd.DataFrame | None:
    """The run's test predictions per structure (as evaluation logged them), or None when it has none."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="crystalvision-gate-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=STRUCTURE_TABLE, dst_path=tmp)
            df = pd.read_csv(Path(path))
        except Exception as exc:  # a missing artifact raises different types per artifact store
            log.info("run %s has no %s (%s)", run_id, STRUCTURE_TABLE, exc)
            return None
    return df[df["split"] == "test"] if "split" in df else df


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


def per_target_gate(
    challenger: pd.DataFrame, champion: pd.DataFrame, n_boot: int = 1000, z: float = 2.0, seed: int = 0
) -> dict[str, Any]:
    """Compare two structure tables on their common test structures; returns per-target scores, improvement,
    noise and verdict, and ``promote``."""
    common = sorted(set(challenger["material_id"]) & set(champion["material_id"]))
    if len(common) < 2:
        raise ValueError(f"only {len(common)} common test structures; cannot compare per target")
    a = challenger.drop_duplicates("material_id").set_index("material_id").loc[common].reset_index()
    b = champion.drop_duplicates("material_id").set_index("material_id").loc[common].reset_index()
    everything = np.arange(len(common))
    sa, sb = _scores(a, everything), _scores(b, everything)
    rng = np.random.default_rng(seed)
    boot = {t: [] for t in sa}
    for _ in range(n_boot):
        idx = rng.integers(0, len(common), len(common))
        ba, bb = _scores(a, idx), _scores(b, idx)
        for t in sa:
            boot[t].append(ba[t] - bb[t])
    targets = {}
    for t in sa:
        delta = sa[t] - sb[t]
        noise = float(np.nanstd(boot[t])) if np.isfinite(boot[t]).any() else float("nan")
        if not np.isfinite(delta) or not np.isfinite(noise):
            verdict = "unknown"
        elif delta > z * noise and delta > 0:
            verdict = "better"
        elif delta < -z * noise and delta < 0:
            verdict = "worse"
        else:
            verdict = "same"
        targets[t] = {"challenger": sa[t], "champion": sb[t], "improvement": delta, "noise": noise,
                      "verdict": verdict}  # fmt: skip
    verdicts = [v["verdict"] for v in targets.values()]
    promote = "better" in verdicts and "worse" not in verdicts
    return {"n_structures": len(common), "n_boot": n_boot, "z": z, "targets": targets, "promote": promote}


def describe(gate: dict[str, Any]) -> str:
    """One line per target: improvement +- noise and the verdict."""
    parts = [
        f"{t} {v['challenger']:.4g} vs {v['champion']:.4g} "
        f"({v['improvement']:+.4g} +- {v['noise']:.3g}: {v['verdict']})"
        for t, v in gate["targets"].items()
    ]
    return f"per-target gate over {gate['n_structures']} test structures: " + "; ".join(parts)
