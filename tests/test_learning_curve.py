"""Learning curve: nested, class-balanced subsets; size errors; the record and its figure."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from crystalvision import learning_curve as lc
from crystalvision.config import PipelineConfig, SplitConfig
from crystalvision.errors import ConfigError
from crystalvision.folds import FoldSplits


def _train(n: int = 120, views: int = 3, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    systems = rng.choice(["triclinic", "monoclinic", "cubic", "hexagonal"], n, p=[0.45, 0.35, 0.15, 0.05])
    rows = [
        {"material_id": f"mp-{i}", "crystal_system": s, "image_key": f"mp-{i}/{v}.png"}
        for i, s in enumerate(systems)
        for v in range(views)
    ]
    return pd.DataFrame(rows)


def test_subsets_are_nested_and_keep_class_shares() -> None:
    train = _train()
    sizes = [10, 30, 60, 120]
    subsets = [set(lc.subset_training(train, n, seed=3, fold=0)["material_id"]) for n in sizes]
    for small, big in itertools.pairwise(subsets):
        assert small < big
    assert [len(s) for s in subsets] == sizes
    whole = train.drop_duplicates("material_id")["crystal_system"].value_counts(normalize=True)
    part = train[train["material_id"].isin(subsets[1])].drop_duplicates("material_id")
    shares = part["crystal_system"].value_counts(normalize=True)
    for cls, share in whole.items():
        assert abs(shares.get(cls, 0.0) - share) <= 1 / 30 + 1e-9, (cls, shares.get(cls, 0.0), share)
    # every view of a chosen structure comes along
    assert len(lc.subset_training(train, 10, seed=3, fold=0)) == 30


def test_order_depends_on_seed_only_through_the_seed() -> None:
    train = _train()
    assert lc.nested_order(train, 1) == lc.nested_order(train.sample(frac=1.0, random_state=7), 1)
    assert lc.nested_order(train, 1) != lc.nested_order(train, 2)


def test_subset_larger_than_training_set_names_both_sizes() -> None:
    with pytest.raises(ConfigError, match=r"split.train_structures = 500 .* fold 2's training set \(120 structures\)"):
        lc.subset_training(_train(), 500, seed=0, fold=2)
    with pytest.raises(ConfigError, match=r"\[900\] exceed the smallest fold's training set \(700 structures\)"):
        lc.check_sizes([62, 900], [706, 700, 710])
    assert lc.check_sizes([250, 62, 62, 125], [706]) == [62, 125, 250]


def test_subset_folds_cuts_training_only() -> None:
    train, test = _train(60), _train(20, seed=5).assign(material_id=lambda d: "t" + d["material_id"])
    fold = FoldSplits(train, train.iloc[:0], test, protocol="grouped", seed=0, fold=1, n_folds=5)
    (cut,) = lc.subset_folds([fold], SplitConfig(folds=5, train_structures=12))
    assert cut.train["material_id"].nunique() == 12 and cut.test is test and cut.fold == 1
    assert fold.train["material_id"].nunique() == 60  # the input fold is left as it was
    (same,) = lc.subset_folds([fold], SplitConfig(folds=5))
    assert same is fold
    # the ceiling follows the smaller training part: test classes it lacks are unseen
    rare = train.assign(crystal_system="cubic").iloc[:3].assign(material_id="only-cubic")
    fold2 = FoldSplits(
        pd.concat([train.assign(crystal_system="triclinic"), rare]),
        train.iloc[:0],
        rare.assign(material_id="t-cubic"),
        protocol="grouped",
        seed=0,
        fold=0,
        n_folds=5,
    )
    (cut2,) = lc.subset_folds([fold2], SplitConfig(folds=5, train_structures=5))
    assert "only-cubic" not in set(cut2.train["material_id"])  # seed 0 puts the one cubic structure late
    assert cut2.unseen_classes["crystal_system"] == ["cubic"]


def test_size_config_sets_one_point_without_recursion() -> None:
    cfg = PipelineConfig.model_validate({"name": "curve", "split": {"folds": 3}, "learning_curve": {"sizes": [4, 8]}})
    one = lc.size_config(cfg, 8)
    assert one.split.train_structures == 8 and one.learning_curve.sizes == [] and one.name == "curve-n8"
    assert lc.size_config(cfg, None).split.train_structures is None
    assert one.config_hash() != lc.size_config(cfg, 4).config_hash()  # each point is its own training run


def test_record_and_figure_from_pooled_metrics(tmp_path) -> None:
    cfg = PipelineConfig.model_validate({"name": "curve", "split": {"folds": 3}})
    points = []
    for n, acc in [(10, 0.3), (40, 0.45), (None, 0.6)]:
        metrics = {
            "oof_model_acc_crystal_system": acc,
            "oof_model_acc_crystal_system_lo": acc - 0.05,
            "oof_model_acc_crystal_system_hi": acc + 0.05,
            "oof_baseline_dummy_acc_crystal_system": 0.35,
            "test_acc_crystal_system_mean": 0.9,
        }
        points.append(lc.CurvePoint(n, float(n or 80), f"run{n}", metrics))
    record = lc.curve_record(cfg, points)
    cell = record["points"][1]["series"]["image model"]["crystal_system"]
    assert cell == {"value": 0.45, "lo": 0.4, "hi": 0.5}
    assert np.isnan(record["points"][0]["series"]["CGCNN"]["band_gap"]["value"])
    assert "test_acc_crystal_system_mean" not in record["points"][0]["metrics"]  # pooled numbers only
    json.dumps(record)
    path = lc.plot_curve(record, tmp_path / "curve.png")
    assert path.stat().st_size > 10_000
