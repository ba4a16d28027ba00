"""Grouped k-fold splits and fold aggregation (folds.py)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from crystalvision.core.config import SplitConfig
from crystalvision.core.errors import ConfigError
from crystalvision.data.dataset import Splits
from crystalvision.data.folds import aggregate_folds, ceiling_metrics, fold_splits, mean_std_text, split_plan, stratum


def labels(n_structures: int = 20, views: int = 4, systems: dict[str, int] | None = None) -> pd.DataFrame:
    systems = systems or {"monoclinic": 9, "triclinic": 6, "trigonal": 4, "cubic": 1}
    names = [s for s, n in systems.items() for _ in range(n)][:n_structures]
    rows = [
        {
            "material_id": f"mp-{i}",
            "view": v,
            "crystal_system": names[i],
            "spacegroup_symbol": f"sg{i % 7}",
            "band_gap": float(i),
        }
        for i in range(len(names))
        for v in range(views)
    ]
    return pd.DataFrame(rows)


def test_grouped_folds_test_each_structure_once_and_never_leak():
    df = labels()
    folds = fold_splits(df, SplitConfig(protocol="grouped", folds=5, seed=1))
    assert len(folds) == 5 and all(isinstance(f, Splits) for f in folds)
    tested = [m for f in folds for m in f.test["material_id"].unique()]
    assert sorted(tested) == sorted(df["material_id"].unique())  # each structure tested exactly once
    for f in folds:
        tr, va, te = (set(x["material_id"]) for x in (f.train, f.val, f.test))
        assert not (tr & va) and not (tr & te) and not (va & te)  # grouped: structures on one side only
        assert len(f.train) + len(f.val) + len(f.test) == len(df)
        assert va, "validation is carved from the training structures"
        assert f.describe()["n_folds"] == 5


def test_folds_are_stratified_when_class_sizes_allow():
    df = labels(systems={"monoclinic": 10, "triclinic": 10})
    folds = fold_splits(df, SplitConfig(protocol="grouped", folds=5, seed=0))
    assert all(f.stratified for f in folds)
    for f in folds:  # 2 of each class in every test fold
        counts = f.test.drop_duplicates("material_id")["crystal_system"].value_counts()
        assert counts.to_dict() == {"monoclinic": 2, "triclinic": 2}


def test_rare_classes_are_pooled_for_stratification():
    y = ["a"] * 10 + ["b"] * 6 + ["c"] * 2 + ["d"] * 1
    s = stratum(y, 5)
    assert list(s[-3:]) == ["a", "a", "a"]  # c + d pooled (3 < 5), too few alone: merged into the largest class
    assert set(stratum(y + ["e"] * 2, 5)) == {"a", "b", "__rare__"}  # c + d + e = 5: their own stratum
    assert stratum(["a"] * 3 + ["b"], 5) is None  # nothing can be stratified


def test_unseen_test_classes_are_logged(caplog):
    df = labels(systems={"monoclinic": 9, "cubic": 1})
    with caplog.at_level(logging.WARNING, logger="crystalvision.data.folds"):
        folds = fold_splits(df, SplitConfig(protocol="grouped", folds=3, seed=0))
    fold = next(f for f in folds if "cubic" in set(f.test["crystal_system"]))
    assert fold.unseen_classes["crystal_system"] == ["cubic"]
    assert "cubic" in caplog.text


def test_leave_one_out_gives_one_fold_per_structure():
    df = labels(n_structures=6)
    folds = fold_splits(df, SplitConfig(protocol="grouped", leave_one_out=True))
    assert len(folds) == 6
    assert all(f.test["material_id"].nunique() == 1 for f in folds)
    assert sorted(f.test["material_id"].iloc[0] for f in folds) == sorted(df["material_id"].unique())


def test_image_folds_cover_every_image_once():
    df = labels(n_structures=10, views=5)
    folds = fold_splits(df, SplitConfig(protocol="image", folds=4))
    keys = sorted((m, v) for f in folds for m, v in zip(f.test["material_id"], f.test["view"], strict=True))
    assert keys == sorted(zip(df["material_id"], df["view"], strict=True))


def test_too_many_folds_is_a_config_error_naming_the_key():
    df = labels(n_structures=6)
    with pytest.raises(ConfigError, match=r"split\.folds = 7 .*2\.\.6"):
        fold_splits(df, SplitConfig(protocol="grouped", folds=7))
    with pytest.raises(ConfigError, match="split.leave_one_out"):
        fold_splits(df, SplitConfig(protocol="image", leave_one_out=True))


def test_aggregate_folds_mean_std_skips_nan():
    per_fold = [
        {"test_acc_crystal_system": 0.5, "test_struct_r2_band_gap": 0.1},
        {"test_acc_crystal_system": 0.7, "test_struct_r2_band_gap": float("nan")},
    ]
    agg = aggregate_folds(per_fold)
    assert agg["n_folds"] == 2
    assert agg["test_acc_crystal_system_mean"] == pytest.approx(0.6)
    assert agg["test_acc_crystal_system_std"] == pytest.approx(np.sqrt(0.02))  # sample std (ddof=1)
    assert agg["test_struct_r2_band_gap_n"] == 1 and agg["test_struct_r2_band_gap_mean"] == pytest.approx(0.1)
    assert "test_struct_r2_band_gap_std" not in agg  # one fold has no sample std
    assert mean_std_text(agg, "test_acc_crystal_system") == "0.600 ± 0.141"
    assert mean_std_text(agg, "test_struct_r2_band_gap") == "0.100"
    assert np.isfinite(list(agg.values())).all()


def test_split_config_reads_back_from_logged_params():
    """tracking logs cfg.split.* as strings; evaluate rebuilds the SplitConfig from them."""
    logged = {k: str(v) for k, v in SplitConfig().model_dump().items()}
    assert logged["folds"] == "None"
    back = SplitConfig.model_validate(logged)
    assert back.folds is None and back.leave_one_out is False
    assert SplitConfig.model_validate({**logged, "folds": "5"}).folds == 5


def test_validation_carve_out_is_grouped_and_stratified():
    df = labels(n_structures=40, systems={"monoclinic": 20, "triclinic": 20})
    for f in fold_splits(df, SplitConfig(protocol="grouped", folds=4, seed=3, val_fraction=0.2)):
        assert f.val_stratified
        assert not set(f.train["material_id"]) & set(f.val["material_id"])  # whole structures on one side
        assert f.val.groupby("material_id").size().eq(4).all()  # every view of a validation structure
        counts = f.val.drop_duplicates("material_id")["crystal_system"].value_counts().to_dict()
        assert counts == {"monoclinic": 3, "triclinic": 3}  # 30 training structures / 5, by class


def test_fold_ceiling_is_the_share_of_test_structures_with_a_seen_class():
    train = pd.DataFrame({"material_id": ["a", "b"], "crystal_system": ["cubic", "cubic"],
                          "spacegroup_symbol": ["Fm-3m", "Pm-3m"]})  # fmt: skip
    test = pd.DataFrame({"material_id": ["c", "c", "d", "e", "f"], "crystal_system": ["cubic"] * 2 + ["trigonal"] * 3,
                         "spacegroup_symbol": ["Fm-3m"] * 2 + ["R-3m", "R-3m", "Fm-3m"]})  # fmt: skip
    m = ceiling_metrics(train, test)  # per structure: c, d, e, f (c has two views)
    assert m["unseen_share_crystal_system"] == pytest.approx(0.75) and m["ceiling_acc_crystal_system"] == 0.25
    assert m["unseen_share_spacegroup"] == pytest.approx(0.5) and m["ceiling_acc_spacegroup"] == 0.5
    fold = fold_splits(labels(systems={"monoclinic": 9, "cubic": 1}), SplitConfig(folds=3))[0]
    assert {"ceiling_acc_crystal_system", "unseen_share_spacegroup", "val_stratified"} <= set(fold.describe())


def test_test_only_folds_over_the_subset_and_train_on_everything_else():
    df = labels(n_structures=20, views=2)
    df["formula"] = ["LiMnNiO4" if int(m[3:]) % 2 else "LiO2" for m in df["material_id"]]
    cfg = SplitConfig(folds=5, test_only={"nelements": 4})
    folds = fold_splits(df, cfg)
    quaternary = set(df.loc[df["formula"] == "LiMnNiO4", "material_id"])
    tested = [m for f in folds for m in f.test["material_id"].unique()]
    assert sorted(tested) == sorted(quaternary)  # each quaternary tested once, nothing else
    for f in folds:
        seen = set(f.train["material_id"]) | set(f.val["material_id"])
        assert seen == set(df["material_id"]) - set(f.test["material_id"])  # the rest, incl. other quaternaries
    with pytest.raises(ConfigError, match="split.test_only"):
        fold_splits(df, SplitConfig(folds=2, test_only={"nelements": 3}))


def test_split_plan_counts_folds_and_unseen_classes_without_images():
    structures = labels(views=1, systems={"monoclinic": 9, "cubic": 1})
    plan = split_plan(structures, SplitConfig(folds=3))
    assert plan["n_structures"] == 10 and plan["crystal_system"] == {"cubic": 1, "monoclinic": 9}
    assert sum(f["n_structures_test"] for f in plan["folds"]) == 10
    f = next(f for f in plan["folds"] if "cubic" in f["test_crystal_system"])
    assert f["unseen_test_classes"]["crystal_system"] == ["cubic"]
    assert f["ceiling_acc_crystal_system"] == pytest.approx(1 - 1 / f["n_structures_test"])


@pytest.mark.parametrize("group_by", ["formula", "structure_cluster"])
def test_group_by_keeps_each_group_on_one_side_of_test_and_validation(group_by):
    """Formula siblings (or matched structures) never straddle a test fold or a validation carve-out."""
    df = labels(n_structures=20, views=2)
    df["formula"] = [
        ["LiMnO2", "Li2Mn2O4", "NiO", "LiNiO2", "Mn3O4", "Li2O"][int(m[3:]) % 6] for m in df["material_id"]
    ]
    # LiMnO2 and Li2Mn2O4 are one reduced formula; a made-up clustering pairs structures 0-1, 2-3, ...
    clusters = {m: f"c{int(m[3:]) // 2}" for m in df["material_id"].unique()}
    cfg = SplitConfig(folds=3, group_by=group_by)
    folds = fold_splits(df, cfg, clusters)
    key = df.drop_duplicates("material_id").set_index("material_id")
    group = (
        key["formula"].map(lambda f: "LiMnO2" if f == "Li2Mn2O4" else f)
        if group_by == "formula"
        else pd.Series(clusters)
    )
    assert sorted(m for f in folds for m in f.test["material_id"].unique()) == sorted(key.index)
    for f in folds:
        sides = [set(group[x["material_id"].unique()]) for x in (f.train, f.val, f.test)]
        assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
        assert sides[1] and "group" not in f.train
    assert "grouped by " + group_by in __import__("crystalvision.data.folds", fromlist=["x"]).plan_text(
        split_plan(df.drop_duplicates("material_id"), cfg, clusters), cfg
    )
    # the default is unchanged: grouped by material id, the same folds as before the option existed
    base = fold_splits(df, SplitConfig(folds=3))
    same = fold_splits(df, SplitConfig(folds=3, group_by="material"))
    assert [set(f.test["material_id"]) for f in base] == [set(f.test["material_id"]) for f in same]


def test_group_by_errors_name_the_fix():
    df = labels(n_structures=6, views=1)
    with pytest.raises(ConfigError, match="structure_cluster needs the snapshot's structures"):
        fold_splits(df, SplitConfig(folds=2, group_by="structure_cluster"))
    with pytest.raises(ConfigError, match="formula needs the labels table's formula column"):
        fold_splits(df, SplitConfig(folds=2, group_by="formula"))
    df["formula"] = ["Li2O", "Li4O2", "NiO", "NiO", "Ni2O2", "MnO"]  # three reduced formulas
    with pytest.raises(ConfigError, match=r"2\.\.3 \(the number of formula groups selected\)"):
        fold_splits(df, SplitConfig(folds=4, group_by="formula"))
    with pytest.raises(ConfigError, match="leave_one_out .* needs split.group_by: material"):
        fold_splits(df, SplitConfig(leave_one_out=True, group_by="formula"))
