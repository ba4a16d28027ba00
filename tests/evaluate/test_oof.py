"""Pooled out-of-fold scoring, the paired bootstrap and a fold's prediction table (oof.py); no Ray, no server."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import r2_score

from crystalvision.evaluate import oof


def table(n: int = 200, seed: int = 0, seeds: tuple[int, ...] = (0,)) -> pd.DataFrame:
    """Synthetic out-of-fold table: model is right 70 % of the time, the baseline 50 %; regression with noise."""
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    cls = rng.choice(["cubic", "trigonal", "monoclinic"], size=n)
    rows = []
    for s in seeds:
        r = np.random.default_rng(100 + s)
        wrong_m, wrong_b = r.random(n) > 0.7, r.random(n) > 0.5
        rows.append(
            pd.DataFrame(
                {
                    "material_id": [f"mp-{i}" for i in range(n)],
                    "fold": np.arange(n) % 5,
                    "seed": s,
                    "nelements": np.where(np.arange(n) % 4 == 0, 4, 3),
                    "band_gap": y,
                    "crystal_system": cls,
                    "model__band_gap": y + r.normal(scale=0.5, size=n),
                    "dummy__band_gap": np.zeros(n),
                    "model__crystal_system": np.where(wrong_m, "x", cls),
                    "dummy__crystal_system": np.where(wrong_b, "x", cls),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def test_pooled_r2_is_scored_once_not_averaged_over_folds():
    # Each fold's targets are nearly constant, so per-fold R² is poor, while the pooled predictions track the
    # between-fold spread: the two views differ, and pooled is what a reviewer asks for.
    y = np.array([0.0, 0.1, 5.0, 5.1, 10.0, 10.1])
    pred = np.array([0.1, 0.0, 5.1, 5.0, 10.1, 10.0])
    t = pd.DataFrame({"material_id": list("abcdef"), "fold": [0, 0, 1, 1, 2, 2], "seed": 0, "band_gap": y,
                      "model__band_gap": pred})  # fmt: skip
    pooled = oof.pooled_metrics(t)["pooled_model_r2_band_gap"]
    per_fold = np.mean([r2_score(y[i : i + 2], pred[i : i + 2]) for i in (0, 2, 4)])
    assert pooled == pytest.approx(r2_score(y, pred)) and pooled > 0.99
    assert per_fold == pytest.approx(-3.0)


def test_pooled_metrics_per_subset_and_over_seeds():
    t = table(seeds=(0, 1, 2))
    m = oof.pooled_metrics(t, {"quaternary": 4})
    assert m["pooled_n_seeds"] == 3 and m["pooled_n_structures"] == 200 and m["pooled_quaternary_n_structures"] == 50
    per_seed = [(p["model__crystal_system"] == p["crystal_system"]).mean() for _, p in t.groupby("seed")]
    assert m["pooled_model_acc_crystal_system"] == pytest.approx(np.mean(per_seed))
    assert m["pooled_model_acc_crystal_system_seed_std"] == pytest.approx(np.std(per_seed, ddof=1))
    q = t[t["nelements"] == 4]
    q_acc = np.mean([(p["model__crystal_system"] == p["crystal_system"]).mean() for _, p in q.groupby("seed")])
    assert m["pooled_quaternary_model_acc_crystal_system"] == pytest.approx(q_acc)
    assert {"pooled_dummy_r2_band_gap", "pooled_model_mae_band_gap", "pooled_model_macro_f1_crystal_system"} <= set(m)


def test_paired_bootstrap_contains_the_true_difference_and_is_paired():
    hits = 0
    for s in range(20):
        boot = oof.paired_bootstrap(table(n=300, seed=s), "model", "dummy", n_resamples=500, seed=s)
        acc = boot["acc_crystal_system"]
        hits += acc["lo"] <= 0.2 <= acc["hi"]  # true accuracies 0.7 and 0.5
        assert boot["r2_band_gap"]["lo"] > 0  # the model beats the training mean on R²
    assert hits >= 17  # a 95 % interval: about 19 of 20

    # Paired: a predictor that differs from the model on 3 of 300 structures gets a narrow interval around the
    # true difference, although each accuracy alone varies by about ±0.05 between resamples.
    t = table(n=300)
    t["near__crystal_system"] = t["model__crystal_system"]
    right = np.flatnonzero(t["model__crystal_system"] == t["crystal_system"])[:3]
    t.loc[right, "near__crystal_system"] = "x"
    near = oof.paired_bootstrap(t, "model", "near", n_resamples=500)["acc_crystal_system"]
    assert near["diff"] == pytest.approx(0.01)
    assert near["lo"] >= 0 and near["hi"] <= 0.03
    same = oof.paired_bootstrap(t, "model", "model", n_resamples=50)["acc_crystal_system"]
    assert same["lo"] == same["hi"] == 0.0


def test_comparisons_are_flat_and_seeded():
    t = table(seeds=(0, 1))
    a = oof.comparisons(t, {"quaternary": 4}, n_resamples=200, seed=1)
    assert a == oof.comparisons(t, {"quaternary": 4}, n_resamples=200, seed=1)
    key = "pooled_diff_model_vs_dummy_acc_crystal_system"
    assert a[f"{key}_lo"] <= a[key] <= a[f"{key}_hi"]
    assert "pooled_quaternary_diff_model_vs_dummy_r2_band_gap_hi" in a
    with pytest.raises(ValueError, match="seed 1 predicts other structures"):
        oof.paired_bootstrap(t.iloc[:-1], "model", "dummy", n_resamples=10)


def test_fold_table_holds_model_and_baselines_by_structure():
    labels = pd.DataFrame({
        "material_id": ["mp-1", "mp-2"], "formula": ["LiMnNiO4", "Li2O"], "band_gap": [1.0, 2.0],
        "energy_above_hull": [0.0, 0.1], "crystal_system": ["cubic", "trigonal"],
        "spacegroup_symbol": ["Fm-3m", "R-3m"],
    })  # fmt: skip
    outputs = {
        "band_gap": np.array([1.5, 2.5]),
        "energy_above_hull": np.array([0.0, 0.0]),
        "crystal_system_proba": np.array([[0.9, 0.1], [0.8, 0.2]]),
        "spacegroup_proba": np.array([[0.1, 0.9], [0.2, 0.8]]),
    }
    classes = {"crystal_system": ["cubic", "trigonal"], "spacegroup": ["Fm-3m", "R-3m"]}
    dummy = pd.DataFrame({"material_id": ["mp-2", "mp-1"], "band_gap": [1.2, 1.2], "crystal_system": ["cubic"] * 2})
    train = labels.iloc[:1]
    t = oof.tag(oof.fold_table(labels, outputs, classes, train, {"dummy": dummy}), fold=3, seed=7)
    assert list(t.columns[:3]) == ["fold", "seed", "material_id"] and set(t["fold"]) == {3}
    assert t["nelements"].tolist() == [4, 2]
    assert t["model__crystal_system"].tolist() == ["cubic", "cubic"]
    assert t["model__spacegroup"].tolist() == ["R-3m", "R-3m"]
    assert t["unseen_crystal_system"].tolist() == [False, True]
    assert t["dummy__band_gap"].tolist() == [1.2, 1.2]
    m = oof.pooled_metrics(t)
    assert m["pooled_model_acc_crystal_system"] == 0.5 and m["pooled_ceiling_acc_crystal_system"] == 0.5


def test_baselines_fit_on_train_and_validation_structures(tmp_path):
    from crystalvision.core.config import EvaluateConfig
    from crystalvision.data.dataset import Splits
    from crystalvision.evaluate.baselines import baseline_metrics

    def frame(ids: list[str], gap: float, system: str) -> pd.DataFrame:
        return pd.DataFrame({"material_id": ids, "band_gap": gap, "energy_above_hull": 0.0, "crystal_system_id": 0,
                             "spacegroup_id": 0, "crystal_system": system, "spacegroup_symbol": "P1"})  # fmt: skip

    # train: 1 structure (gap 0, cubic); validation: 2 (gap 3, trigonal): only train + val gives mean 2, trigonal
    splits = Splits(frame(["a"], 0.0, "cubic"), frame(["b", "c"], 3.0, "trigonal"), frame(["d"], 1.0, "cubic"),
                    protocol="grouped", seed=0)  # fmt: skip
    notes: list[str] = []
    metrics, preds = baseline_metrics(splits, None, EvaluateConfig(), tmp_path, notes)
    assert preds["dummy"]["band_gap"].tolist() == [2.0]
    assert preds["dummy"]["crystal_system"].tolist() == ["trigonal"]  # by head name, for oof.fold_table
    assert metrics["baseline_dummy_mae_band_gap"] == 1.0 and "1-NN" in notes[0]


def test_intervals_of_one_predictor_bracket_its_pooled_metric():
    t = table(n=300, seeds=(0, 1))
    got = oof.intervals(t, "model", n_resamples=300)
    acc = got["acc_crystal_system"]
    assert acc["value"] == pytest.approx(oof.pooled_metrics(t)["pooled_model_acc_crystal_system"])
    assert acc["lo"] < acc["value"] < acc["hi"] and acc["hi"] - acc["lo"] < 0.15
    assert got["r2_band_gap"]["lo"] > 0.5 and oof.intervals(t, "absent") == {}


def test_image_folds_pair_rows_by_fold_and_structure():
    t = table(n=40)
    twice = pd.concat([t, t.assign(fold=t["fold"] + 10)], ignore_index=True)  # image folds: a structure in two
    boot = oof.paired_bootstrap(twice, "model", "dummy", n_resamples=50)
    assert boot["acc_crystal_system"]["n_structures"] == 80


def test_balanced_accuracy_and_macro_f1_are_scored_and_resampled_like_scikit_learn():
    """Pooled balanced accuracy / macro-F1 equal scikit-learn's; every bootstrap resample's value is scikit-learn's
    on that resample (weights, not copies), so the intervals of the imbalance-proof metrics mean what they say."""
    from sklearn.metrics import balanced_accuracy_score, f1_score

    t = table(n=120)
    t.loc[:9, "crystal_system"] = "cubic-rare"  # a rare class the model never predicts
    y, p = t["crystal_system"].to_numpy(), t["model__crystal_system"].to_numpy()
    m = oof.pooled_metrics(t)
    assert m["pooled_model_balanced_acc_crystal_system"] == pytest.approx(balanced_accuracy_score(y, p))
    assert m["pooled_model_macro_f1_crystal_system"] == pytest.approx(f1_score(y, p, average="macro"))
    idx = np.random.default_rng(3).integers(0, len(y), size=(4, len(y)))
    for metric, fn in (
        ("balanced_acc", balanced_accuracy_score),
        ("macro_f1", lambda a, b: f1_score(a, b, average="macro")),
    ):
        got = oof._resampled_metric("crystal_system", y[None], p[None], idx, metric)
        assert got == pytest.approx([fn(y[i], p[i]) for i in idx])
    boot = oof.paired_bootstrap(t, "model", "dummy", n_resamples=200)
    for metric in ("balanced_acc", "macro_f1"):
        cell = boot[f"{metric}_crystal_system"]
        expected = m[f"pooled_model_{metric}_crystal_system"] - m[f"pooled_dummy_{metric}_crystal_system"]
        assert cell["diff"] == pytest.approx(expected) and cell["lo"] <= cell["diff"] <= cell["hi"]
    assert "pooled_model_macro_f1_crystal_system_lo" in oof.model_intervals(t, n_resamples=50)
