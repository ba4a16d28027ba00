"""Baselines reported beside the model, all per structure on the same split, defined once here and fit on the
structures the model saw (its training + validation structures; :func:`seen`):

- ``dummy``: the mean (regression) and majority class (classification) of those structures;
- ``1nn``: 1-nearest-neighbour on a descriptor of the Niggli-reduced cell plus composition (element fractions,
  sorted reduced lattice lengths and angles, volume per atom, density; standardised on the fit structures);
- ``tabular``: one tree ensemble per head on composition + the Niggli cell of the primitive cell + lattice-metric
  deviations (:mod:`crystalvision.evaluate.tabular`: the field's standard tabular baseline, recipe pinned);
- ``symmetry``: spglib via pymatgen's ``SpacegroupAnalyzer`` on the structure itself, for crystal system and
  space group. The bundled labels were made the same way (symprec 0.1), so at that tolerance this is the
  ceiling of the classification heads (1.0 by construction), not a competitor.

Under the ``image`` split protocol the same structure can sit in train and test; 1-NN then finds it exactly,
which shows how much that protocol leaks.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from crystalvision.core import CLASS_ID, CLASS_NAME, TARGETS_CLASSIFICATION, TARGETS_REGRESSION, EvaluateConfig
from crystalvision.data import MaterialRecord
from crystalvision.evaluate.metrics import label_metrics, prefixed, regression_metrics, stability_metrics

if TYPE_CHECKING:
    from crystalvision.data import Splits
    from crystalvision.evaluate.graphnet import GraphConfig

log = logging.getLogger(__name__)

LABEL_METRICS = ("acc", "balanced_acc", "macro_f1", "weighted_f1")


def structure_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per structure (labels are constant over views), sorted by material_id."""
    cols = ["material_id", *TARGETS_REGRESSION, *CLASS_ID.values(), *CLASS_NAME.values()]
    return (
        df[list(dict.fromkeys(cols))].drop_duplicates("material_id").sort_values("material_id").reset_index(drop=True)
    )


def score(name: str, truth: pd.DataFrame, pred: pd.DataFrame, stability_threshold: float) -> dict[str, float]:
    """``baseline_<name>_<metric>_<target>`` for the targets ``pred`` has columns for."""
    out: dict[str, float] = {}
    for t in TARGETS_REGRESSION:
        if t in pred:
            out |= prefixed(f"baseline_{name}", t, regression_metrics(truth[t], pred[t]))
    if "energy_above_hull" in pred:
        stab = stability_metrics(truth["energy_above_hull"], pred["energy_above_hull"], stability_threshold)
        out |= {f"baseline_{name}_stability_{k}": stab[k] for k in ("acc", "f1")}
    for t in TARGETS_CLASSIFICATION:
        if CLASS_NAME[t] in pred:
            m = label_metrics(truth[CLASS_NAME[t]].astype(str), pred[CLASS_NAME[t]].astype(str))
            out |= prefixed(f"baseline_{name}", t, {k: m[k] for k in LABEL_METRICS if k in m})
    return out


def dummy_predict(train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """Train mean / majority class (over train structures) for every test structure."""
    tr = structure_table(train)
    pred = pd.DataFrame({"material_id": structure_table(test)["material_id"]})
    for t in TARGETS_REGRESSION:
        pred[t] = float(tr[t].mean())
    for t in TARGETS_CLASSIFICATION:
        pred[CLASS_NAME[t]] = tr[CLASS_NAME[t]].value_counts().sort_index().idxmax()
    return pred


def seen(splits: Splits) -> pd.DataFrame:
    """The rows a baseline is fit on: the split's training and validation rows (what the model saw)."""
    return pd.concat([splits.train, splits.val], ignore_index=True)


def _structure(record: MaterialRecord) -> Structure:
    return Structure.from_dict(record.structure)


def descriptor(structure: Structure, elements: list[str]) -> np.ndarray:
    """Element fractions, then of the Niggli-reduced cell: sorted a/b/c, sorted angles, volume per atom, density."""
    comp = structure.composition.fractional_composition
    return np.array([comp.get_atomic_fraction(el) for el in elements] + cell_descriptor(structure))


def cell_descriptor(structure: Structure) -> list[float]:
    """Of the Niggli-reduced cell: sorted a/b/c, sorted angles, volume per atom, density."""
    lat = structure.get_reduced_structure("niggli").lattice
    return sorted(lat.abc) + sorted(lat.angles) + [lat.volume / len(structure), float(structure.density)]


_CELLS: dict[tuple[str, str], tuple[list[str], list[float], dict[str, float]]] = {}


def _record_features(record: MaterialRecord) -> tuple[list[str], list[float], dict[str, float]]:
    """Elements, reduced-cell descriptor and element fractions of a record, computed once per structure (k folds
    and learning-curve points reuse them); keyed by material_id and the structure's lattice and sites."""
    key = (record.material_id, repr(record.structure.get("lattice")) + repr(record.structure.get("sites")))
    if key not in _CELLS:
        if len(_CELLS) > 50_000:
            _CELLS.clear()
        s = _structure(record)
        comp = s.composition.fractional_composition
        fractions = {el.symbol: comp.get_atomic_fraction(el) for el in comp.elements}
        _CELLS[key] = (sorted(fractions), cell_descriptor(s), fractions)
    return _CELLS[key]


def nn1_predict(records: Mapping[str, MaterialRecord], train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """Labels of the nearest train structure (Euclidean on the standardised :func:`descriptor`)."""
    from sklearn.neighbors import NearestNeighbors

    tr, te = structure_table(train), structure_table(test)
    feats = {m: _record_features(records[m]) for m in [*tr["material_id"], *te["material_id"]]}
    elements = sorted({el for f in feats.values() for el in f[0]})

    def x(ids: pd.Series) -> np.ndarray:
        return np.stack([[feats[m][2].get(el, 0.0) for el in elements] + feats[m][1] for m in ids])

    x_tr, x_te = x(tr["material_id"]), x(te["material_id"])
    mean, std = x_tr.mean(0), x_tr.std(0)
    std[std == 0] = 1.0
    nn = NearestNeighbors(n_neighbors=1).fit((x_tr - mean) / std)
    idx = nn.kneighbors((x_te - mean) / std, return_distance=False)[:, 0]
    pred = tr.iloc[idx].reset_index(drop=True)
    return pred.assign(material_id=te["material_id"].to_numpy(), neighbour=tr["material_id"].to_numpy()[idx])


def symmetry_predict(records: Mapping[str, MaterialRecord], test: pd.DataFrame, symprec: float) -> pd.DataFrame:
    """Crystal system and space group straight from spglib on each test structure."""
    rows = []
    for m in structure_table(test)["material_id"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sga = SpacegroupAnalyzer(_structure(records[m]), symprec=symprec)
            rows.append(
                {
                    "material_id": m,
                    "crystal_system": sga.get_crystal_system(),
                    "spacegroup_symbol": sga.get_space_group_symbol(),
                }
            )
    return pd.DataFrame(rows)


def predict_baselines(
    train: pd.DataFrame, test: pd.DataFrame, records: Mapping[str, MaterialRecord] | None, symprec: float = 0.1
) -> dict[str, pd.DataFrame]:
    """Per baseline, its per-structure predictions on ``test`` after fitting on ``train`` (1-NN, tabular and
    symmetry only when ``records`` hold every structure)."""
    preds = {"dummy": dummy_predict(train, test)}
    needed = set(test["material_id"]) | set(train["material_id"])
    if records is None or not needed <= set(records):
        missing = len(needed - set(records or {}))
        log.info(
            "structure baselines (1-NN, tabular, symmetry) skipped: %d split structures have no snapshot record",
            missing,
        )
    else:
        from crystalvision.evaluate.tabular import RECIPE, tabular_predict

        log.info(
            "baselines: 1-NN on reduced-cell + composition descriptors, tabular %s trees, spglib symmetry "
            "(symprec %.3g)",
            RECIPE,
            symprec,
        )
        preds["1nn"] = nn1_predict(records, train, test)
        preds["tabular"] = tabular_predict(records, train, test)
        preds["symmetry"] = symmetry_predict(records, test, symprec)
    return preds


def run_baselines(
    train: pd.DataFrame,
    test: pd.DataFrame,
    records: Mapping[str, MaterialRecord] | None,
    *,
    stability_threshold: float,
    symprec: float = 0.1,
) -> tuple[dict[str, float], pd.DataFrame]:
    """All baselines fit on ``train``, on the test structures: flat metrics and a per-structure prediction table."""
    return tabulate(test, predict_baselines(train, test, records, symprec), stability_threshold)


def tabulate(
    test: pd.DataFrame, preds: Mapping[str, pd.DataFrame], stability_threshold: float
) -> tuple[dict[str, float], pd.DataFrame]:
    """Baseline predictions -> ``baseline_<name>_*`` metrics and one wide per-structure table."""
    truth = structure_table(test)
    metrics: dict[str, float] = {}
    table = truth[["material_id"]].copy()
    for name, pred in preds.items():
        pred = truth[["material_id"]].merge(pred, on="material_id", how="left")
        metrics |= score(name, truth, pred, stability_threshold)
        cols = [c for c in (*TARGETS_REGRESSION, *CLASS_NAME.values(), "neighbour") if c in pred]
        table = table.join(pred[cols].add_prefix(f"{name}_"))
    return metrics, table


# ------------------------------------------------------------------------------------- one fold of evaluate


def baseline_metrics(
    splits: Splits, records: Mapping[str, MaterialRecord] | None, ecfg: EvaluateConfig, out: Path, notes: list[str]
) -> tuple[dict[str, float], dict[str, pd.DataFrame]]:
    """Dummy, 1-NN, tabular and symmetry baselines fit on train + val, on the test split
    (``baseline_predictions.csv``); the per-structure predictions of every baseline but symmetry by head name
    (symmetry is the classification ceiling)."""
    preds = predict_baselines(seen(splits), splits.test, records, ecfg.symmetry_symprec)
    b_metrics, table = tabulate(splits.test, preds, ecfg.stability_threshold)
    if "1nn" not in preds:
        notes.append("1-NN, tabular and symmetry baselines skipped: the split's structures are not in the snapshot.")
    table.to_csv(out / "baseline_predictions.csv", index=False)
    by_head = {v: k for k, v in CLASS_NAME.items()}
    return b_metrics, {n: p.rename(columns=by_head) for n, p in preds.items() if n != "symmetry"}


def graph_config(ecfg: EvaluateConfig, **kwargs: object) -> GraphConfig:
    """The graph baseline's settings: its size and epoch cap, and ``evaluate.graph_lr`` where one is given."""
    from crystalvision.evaluate.graphnet import GraphConfig

    lr = {} if ecfg.graph_lr is None else {"lr": ecfg.graph_lr}
    return GraphConfig.sized(ecfg.graph_size, epochs=ecfg.graph_epochs, **lr, **kwargs)


def graph_metrics(
    splits: Splits,
    records: Mapping[str, MaterialRecord] | None,
    ecfg: EvaluateConfig,
    classes: Mapping[str, list[str]],
    notes: list[str],
) -> tuple[dict[str, float], pd.DataFrame | None]:
    """The CGCNN graph baseline (graphnet.py) trained and scored on this split (``cgcnn_*`` metrics) and its test
    structures' predictions by head name."""
    from crystalvision.evaluate.graphnet import graph_baseline

    ids = {m for _, df in splits.items() for m in df["material_id"]}
    if records is None or not ids <= set(records):
        notes.append("graph baseline skipped: the split's structures are not in the snapshot.")
        return {}, None
    log.info("evaluate: graph baseline (CGCNN %s size, up to %d epochs)", ecfg.graph_size, ecfg.graph_epochs)
    gcfg = graph_config(ecfg, stability_threshold=ecfg.stability_threshold)
    g_metrics, pred = graph_baseline(records, splits, gcfg, n_classes={t: len(c) for t, c in classes.items()})
    names = {t: [classes[t][k] for k in pred.pop(f"{t}_id").astype(int)] for t in TARGETS_CLASSIFICATION}
    return g_metrics, pred.assign(**names)


def fold_baselines(
    splits: Splits,
    records: Mapping[str, MaterialRecord] | None,
    ecfg: EvaluateConfig,
    classes: Mapping[str, list[str]],
    out: Path,
    notes: list[str],
) -> tuple[dict[str, float], dict[str, pd.DataFrame]]:
    """The baselines ``ecfg`` asks for on one split: flat metrics, per-structure test predictions by predictor."""
    metrics: dict[str, float] = {}
    others: dict[str, pd.DataFrame] = {}
    if ecfg.baselines:
        metrics, others = baseline_metrics(splits, records, ecfg, out, notes)
    if ecfg.graph_baseline:
        g_metrics, g_pred = graph_metrics(splits, records, ecfg, classes, notes)
        metrics |= g_metrics
        others |= {"cgcnn": g_pred} if g_pred is not None else {}
    return metrics, others


def described(ecfg: EvaluateConfig) -> dict[str, object]:
    """What a record says about its baselines: each one's definition, the tabular feature set and recipe, the
    graph network's size and budget cap."""
    from crystalvision.evaluate.tabular import describe

    out: dict[str, object] = {}
    if ecfg.baselines:
        out["dummy"] = "training mean / majority class of the fit structures"
        out["1nn"] = "1-nearest-neighbour, standardised composition + Niggli reduced-cell descriptor"
        out["tabular"] = describe()
    if ecfg.graph_baseline:
        g = graph_config(ecfg)
        out["cgcnn"] = {"size": ecfg.graph_size, "layers": g.layers, "atom_features": g.atom_features,
                        "fc_features": g.fc_features, "max_epochs": g.epochs, "patience": g.patience, "lr": g.lr,
                        "label_note": "band-gap labels are a pretrained CGCNN's predictions"}  # fmt: skip
    return out
