"""The tabular baseline (evaluate/tabular.py): primitive-cell features, lattice-metric deviations, one pinned tree
ensemble per head, scored beside the other baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from crystalvision.evaluate import tabular as T


def features(structure: Structure) -> dict[str, float]:
    return dict(zip(T.CELL_FEATURES, T.cell_features(structure), strict=True))


def test_a_supercell_has_the_features_of_its_primitive_cell() -> None:
    """The stored cell may be conventional or a supercell: the features are those of the primitive cell."""
    fcc = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.18), ["Ni", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    prim = fcc.get_primitive_structure()
    conventional, primitive = features(fcc), features(prim)
    assert conventional == pytest.approx(primitive) and conventional["primitive_sites"] == 2
    # fcc primitive: three equal lengths a/sqrt(2) at 60 degrees (the metric of 120 degrees' supplement)
    assert conventional["a"] == pytest.approx(4.18 / np.sqrt(2)) and conventional["dev_ac"] == pytest.approx(0)
    assert conventional["dev120_alpha"] == pytest.approx(0) and conventional["dev90_alpha"] == pytest.approx(30)
    assert conventional["volume_per_atom"] == pytest.approx(4.18**3 / 8)


def test_lengths_and_angles_stay_paired_and_deviations_measure_the_metric() -> None:
    mono = Structure(Lattice.from_parameters(3.0, 4.0, 5.0, 90, 104, 90), ["Li"], [[0, 0, 0]])
    f = features(mono)
    assert (f["a"], f["b"], f["c"]) == pytest.approx((3.0, 4.0, 5.0))
    assert (f["alpha"], f["beta"], f["gamma"]) == pytest.approx((90, 104, 90))  # beta stays with the a-c pair
    assert f["dev90_beta"] == pytest.approx(14) and f["dev90_alpha"] == pytest.approx(0)
    assert f["dev_ab"] == pytest.approx(1 / 4) and f["dev_ac"] == pytest.approx(2 / 4)
    hexagonal = features(Structure(Lattice.hexagonal(3.0, 5.0), ["Li"], [[0, 0, 0]]))
    assert min(hexagonal[f"dev120_{x}"] for x in ("alpha", "beta", "gamma")) == pytest.approx(0)


def test_every_recipe_fits_one_model_per_head_and_predicts_the_seen_classes(bundled_snapshot, monkeypatch) -> None:
    # every candidate's code path, at a few trees each (the pinned sizes cost seconds per recipe)
    small = {"n_estimators": 8, "max_iter": 5}
    monkeypatch.setattr(
        T, "RECIPES", {k: (f, {n: small.get(n, v) for n, v in kw.items()}) for k, (f, kw) in T.RECIPES.items()}
    )
    records = {r.material_id: r for r in bundled_snapshot.records if not r.flags}
    ids = sorted(records)[:30]
    rows = [
        {"material_id": m, "band_gap": records[m].band_gap, "energy_above_hull": records[m].energy_above_hull,
         "crystal_system": records[m].crystal_system, "spacegroup_symbol": records[m].spacegroup_symbol}
        for m in ids
    ]  # fmt: skip
    df = pd.DataFrame(rows)
    train, test = df.iloc[:22], df.iloc[22:]
    assert T.RECIPE in T.RECIPES
    for recipe in T.RECIPES:
        pred = T.tabular_predict(records, train, test, recipe)
        assert pred["material_id"].tolist() == sorted(test["material_id"])
        assert set(pred["crystal_system"]) <= set(train["crystal_system"])
        assert np.isfinite(pred["band_gap"].to_numpy(float)).all()
    # deterministic: a pinned recipe gives one answer
    again = T.tabular_predict(records, train, test, "rf-half")
    assert again.equals(T.tabular_predict(records, train, test, "rf-half"))
    # memorisation: fit on the test structures themselves, a tree ensemble recovers their labels
    seen = T.tabular_predict(records, df, df, "rf-half")
    truth = df.sort_values("material_id")["crystal_system"].to_numpy()
    assert (seen["crystal_system"].to_numpy() == truth).mean() > 0.9
    assert T.describe()["features"] == T.FEATURE_SET and T.describe()["recipe"] == T.RECIPE


def test_the_tabular_baseline_is_scored_beside_the_others(bundled_snapshot) -> None:
    from crystalvision.evaluate.baselines import run_baselines

    regular = [r for r in bundled_snapshot.records if not r.flags][:16]
    records = {r.material_id: r for r in regular}
    frame = pd.DataFrame(
        [{"material_id": r.material_id, "band_gap": r.band_gap, "energy_above_hull": r.energy_above_hull,
          "crystal_system": r.crystal_system, "spacegroup_symbol": r.spacegroup_symbol,
          "crystal_system_id": 0, "spacegroup_id": 0} for r in regular]
    )  # fmt: skip
    metrics, table = run_baselines(frame.iloc[:11], frame.iloc[11:], records, stability_threshold=0.025)
    for name in ("r2_band_gap", "acc_crystal_system", "balanced_acc_crystal_system", "macro_f1_spacegroup"):
        assert f"baseline_tabular_{name}" in metrics, name
    assert "tabular_crystal_system" in table and len(table) == 5
