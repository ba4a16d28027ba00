"""A learning curve's records: one JSON record per point, merged into ``learning_curve.json`` and its figure.

A point record (``point-<size>.json``, ``point-all.json``) is written when that point's k-fold run has finished:
its size, the budget it trained at, per fold how many structures each part held (training and validation: what
the image model trained on and picked its epoch on, and what every baseline was fit on; test: what all were scored
on) with a hash of their material ids, and its pooled out-of-fold scores (every method and head, 95 % bootstrap
intervals over structures, the paired differences of the image model from each baseline). :func:`merge` joins the
point records of a folder into one curve record after checking that they are points of one curve (same config,
same budget, same test folds); :func:`write_curve` writes it and its figure; ``app/summary.py`` gives the short
summary ``crystalvision curve`` ends with.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from crystalvision.core import ConfigError, EvaluateConfig

CURVE_FILE = "learning_curve.json"
FIGURE_FILE = "learning_curve.png"
POINT_GLOB = "point-*.json"
X_LABEL = "structures per fold (training + validation)"
# method label in the figure -> predictor of the pooled out-of-fold table (oof.py)
METHODS = {"image model": "model", "trees": "tabular", "CGCNN": "cgcnn", "1-NN": "1nn", "majority / mean": "dummy"}
HEADS = {"crystal_system": "acc", "spacegroup": "acc", "band_gap": "r2", "energy_above_hull": "r2"}
PROTOCOL = (
    "size n: each fold's training + validation structures cut to n together, in the fold's own train:val ratio "
    "(nested, class-balanced subsets); the image model trains on the training part and keeps its best validation "
    "epoch, CGCNN likewise, majority, 1-NN and trees are fit on all n; the test folds are never cut: every point is "
    "scored on the same structures, each once, pooled out of fold, per structure; every point trains the same views "
    "for the same epochs of the same number of optimiser steps (the full fold's one pass), without early stopping"
)
_NAN_CELL = {"value": math.nan, "lo": math.nan, "hi": math.nan}


def point_key(n: int | None) -> str:
    """``62`` for a size, ``all`` for every structure of each fold."""
    return "all" if n is None else str(n)


def point_path(out: str | Path, n: int | None) -> Path:
    return Path(out) / f"point-{point_key(n)}.json"


def ids_sha256(ids: Iterable[str]) -> str:
    """A short hash of a set of material ids (sorted): equal sets, equal hashes."""
    return hashlib.sha256("\n".join(sorted(set(map(str, ids)))).encode()).hexdigest()[:16]


def fold_part(fold: Any) -> dict[str, Any]:
    """One fold of a point: structures per part, training images, hashes of the seen (train + val) and test ids."""
    seen = [*fold.train["material_id"], *fold.val["material_id"]]
    return {
        "fold": int(getattr(fold, "fold", 0)),
        **{f"n_structures_{name}": int(part["material_id"].nunique()) for name, part in fold.items()},
        "n_images_train": len(fold.train),
        "seen_sha256": ids_sha256(seen),
        "test_sha256": ids_sha256(fold.test["material_id"]),
    }


def point_series(table: pd.DataFrame | None, ecfg: EvaluateConfig) -> dict[str, dict[str, dict[str, float]]]:
    """Method label -> head -> pooled value and 95 % bootstrap interval over structures (NaN where absent)."""
    from crystalvision.evaluate import oof

    series: dict[str, dict[str, dict[str, float]]] = {}
    for label, predictor in METHODS.items():
        got = {}
        if table is not None and predictor in oof.predictors(table):
            got = oof.intervals(table, predictor, n_resamples=ecfg.bootstrap_resamples, seed=ecfg.bootstrap_seed)
        series[label] = {
            head: {k: got.get(f"{metric}_{head}", _NAN_CELL).get(k, math.nan) for k in _NAN_CELL}
            for head, metric in HEADS.items()
        }
    return series


def pooled_only(metrics: Mapping[str, float]) -> dict[str, float]:
    """The pooled out-of-fold numbers of a k-fold run's metrics (and its number of folds)."""
    return {k: float(v) for k, v in metrics.items() if k.startswith("pooled") or k == "n_folds"}


# ---------------------------------------------------------------------------------------------- files


def write_point(out: str | Path, record: Mapping[str, Any]) -> Path:
    """The point record, written atomically (a killed run leaves either no record or a whole one)."""
    from crystalvision.data import write_durably

    path = point_path(out, record["train_structures"])
    write_durably(str(path), json.dumps(record, indent=1, default=float).encode())
    return path


def read_points(out: str | Path) -> list[dict[str, Any]]:
    """Every point record of a folder, smallest size first (``all`` last)."""
    records = []
    for path in Path(out).glob(POINT_GLOB):
        try:
            records.append(json.loads(path.read_text()) | {"path": path.as_posix()})
        except (json.JSONDecodeError, OSError) as exc:
            msg = f"point record {path} cannot be read ({exc}); delete it and run that point again"
            raise ConfigError(msg) from None
    return sorted(records, key=lambda r: math.inf if r["train_structures"] is None else r["train_structures"])


def merge(points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The curve record of some point records; a ConfigError names the files when they are not points of one curve
    (another config or budget, or other test folds)."""
    if not points:
        raise ConfigError("no point records (point-*.json) to merge; run `crystalvision curve` first")
    first = points[0]
    for p in points[1:]:
        for key in ("pipeline", "curve_config_hash", "budget"):
            if p[key] != first[key]:
                raise ConfigError(
                    f"point records {first['path']} and {p['path']} differ in {key}: they are not points of one curve; "
                    "move one away and run its point again with the other's config"
                )
        if [f["test_sha256"] for f in p["folds"]] != [f["test_sha256"] for f in first["folds"]]:
            raise ConfigError(f"point records {first['path']} and {p['path']} were scored on other test folds")
    return {
        "pipeline": first["pipeline"],
        "config_hash": first["curve_config_hash"],
        "protocol": PROTOCOL,
        "budget": first["budget"],
        "x_label": X_LABEL,
        "sizes": [p["train_structures"] for p in points],
        "heads": HEADS,
        "bootstrap": "95 % percentile interval over structures, seed-averaged metric per resample",
        "points": [{k: v for k, v in p.items() if k != "path"} for p in points],
    }


def write_curve(record: Mapping[str, Any], out: str | Path) -> tuple[Path, Path]:
    """``learning_curve.json`` and its figure (one panel per head, log x, 95 % bars) in ``out``."""
    from crystalvision.data import write_durably
    from crystalvision.evaluate import plots

    out = Path(out)
    write_durably(str(out / CURVE_FILE), json.dumps(record, indent=1, default=float).encode())
    return out / CURVE_FILE, plots.learning_curve_plot(dict(record), out / FIGURE_FILE)
