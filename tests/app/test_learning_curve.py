"""Learning curve: nested, class-balanced subsets of training and validation together; size errors; the fixed step
budget; point records, their merge, the figure, the table script and the summary."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from crystalvision.app import curve_record as cr
from crystalvision.app import learning_curve as lc
from crystalvision.core.config import PipelineConfig, SplitConfig
from crystalvision.core.errors import ConfigError
from crystalvision.data import folds
from crystalvision.data.folds import FoldSplits
from tests.support.study import study_script


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
    subsets = [set(folds.subset_training(train, n, seed=3, fold=0)["material_id"]) for n in sizes]
    for small, big in itertools.pairwise(subsets):
        assert small < big
    assert [len(s) for s in subsets] == sizes
    whole = train.drop_duplicates("material_id")["crystal_system"].value_counts(normalize=True)
    part = train[train["material_id"].isin(subsets[1])].drop_duplicates("material_id")
    shares = part["crystal_system"].value_counts(normalize=True)
    for cls, share in whole.items():
        assert abs(shares.get(cls, 0.0) - share) <= 1 / 30 + 1e-9, (cls, shares.get(cls, 0.0), share)
    # every view of a chosen structure comes along
    assert len(folds.subset_training(train, 10, seed=3, fold=0)) == 30


def test_order_depends_on_seed_only_through_the_seed() -> None:
    train = _train()
    assert folds.nested_order(train, 1) == folds.nested_order(train.sample(frac=1.0, random_state=7), 1)
    assert folds.nested_order(train, 1) != folds.nested_order(train, 2)


def test_sizes_beyond_a_fold_name_both_numbers() -> None:
    with pytest.raises(ConfigError, match=r"split.train_structures = 500 .* fold 2's training set \(120 structures\)"):
        folds.subset_training(_train(), 500, seed=0, fold=2)
    with pytest.raises(
        ConfigError, match=r"\[900\] exceed the smallest fold's training \+ validation structures \(700\)"
    ):
        lc.check_sizes([62, 900], [706, 700, 710])
    assert lc.check_sizes([250, 62, 62, 125], [706]) == [62, 125, 250]
    with pytest.raises(ConfigError, match=r"= 90 is larger than fold 3's training \+ validation structures \(80\)"):
        folds.part_sizes(90, 64, 16, fold=3)
    with pytest.raises(ConfigError, match="= 1 leaves no validation structure in fold 0: use 2 or more"):
        folds.part_sizes(1, 64, 16)


def test_part_sizes_keep_the_folds_ratio_and_grow_with_the_size() -> None:
    assert folds.part_sizes(62, 565, 141) == (50, 12)
    assert folds.part_sizes(706, 565, 141) == (565, 141)
    assert folds.part_sizes(2, 565, 141) == (1, 1)  # one of each at the least
    assert folds.part_sizes(10, 10, 0) == (10, 0)  # a fold without validation structures
    parts = [folds.part_sizes(n, 565, 141) for n in range(2, 707)]
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in itertools.pairwise(parts))  # nested: both parts only grow


def _fold(n_train: int = 80, n_val: int = 20, n_test: int = 25, fold: int = 1) -> FoldSplits:
    train = _train(n_train)
    val = _train(n_val, seed=3).assign(material_id=lambda d: "v" + d["material_id"])
    test = _train(n_test, seed=5).assign(material_id=lambda d: "t" + d["material_id"])
    return FoldSplits(train, val, test, protocol="grouped", seed=0, fold=fold, n_folds=5)


def test_subset_folds_cuts_training_and_validation_together_and_never_the_test() -> None:
    fold = _fold()
    (cut,) = folds.subset_folds([fold], SplitConfig(folds=5, train_structures=30))
    n = {name: part["material_id"].nunique() for name, part in cut.items()}
    assert n == {"train": 24, "val": 6, "test": 25}  # 30 in the fold's 80:20, the test part whole
    assert cut.test is fold.test and cut.fold == 1 and len(cut.val) == 6 * 3  # every view of a kept structure
    assert set(cut.val["material_id"]) < set(fold.val["material_id"])
    assert fold.train["material_id"].nunique() == 80 and fold.val["material_id"].nunique() == 20  # input kept
    (bigger,) = folds.subset_folds([fold], SplitConfig(folds=5, train_structures=60))
    for part in ("train", "val"):  # nested: a smaller point's structures are a subset of a larger one's
        assert set(getattr(cut, part)["material_id"]) < set(getattr(bigger, part)["material_id"])
    (same,) = folds.subset_folds([fold], SplitConfig(folds=5))
    assert same is fold


def test_the_unseen_test_classes_follow_the_smaller_training_part() -> None:
    train = _train(60)
    rare = train.assign(crystal_system="cubic").iloc[:3].assign(material_id="only-cubic")
    fold = FoldSplits(
        pd.concat([train.assign(crystal_system="triclinic"), rare]),
        train.iloc[:0],
        rare.assign(material_id="t-cubic"),
        protocol="grouped",
        seed=0,
        fold=0,
        n_folds=5,
    )
    (cut,) = folds.subset_folds([fold], SplitConfig(folds=5, train_structures=5))
    assert "only-cubic" not in set(cut.train["material_id"])  # seed 0 puts the one cubic structure late
    assert cut.unseen_classes["crystal_system"] == ["cubic"]


def test_each_point_trains_the_full_folds_steps_without_early_stopping() -> None:
    cfg = PipelineConfig.model_validate(
        {"name": "curve", "split": {"folds": 3}, "train": {"epochs": 12, "patience": 4, "batch_size": 16},
         "learning_curve": {"sizes": [4, 8]}}
    )  # fmt: skip
    steps = lc.steps_per_epoch(cfg, [4520, 4512, 4530])  # 565 structures x 8 views per fold, batch 16
    assert steps == 283
    one = lc.size_config(cfg, 8, steps)
    assert one.split.train_structures == 8 and one.learning_curve.sizes == [] and one.name == "curve-n8"
    assert one.train.steps_per_epoch == 283 and one.train.patience == 12 and one.train.epochs == 12
    whole = lc.size_config(cfg, None, steps)
    assert whole.split.train_structures is None and whole.train.steps_per_epoch == 283 and whole.name == "curve-nall"
    assert one.config_hash() != lc.size_config(cfg, 4, steps).config_hash()  # each point is its own training run
    assert lc.budget(cfg, steps)["optimiser_steps"] == 12 * 283
    assert lc.parse_points(None, [4, 8]) == [4, 8, None]
    assert lc.parse_points(["all", "4"], [4, 8]) == [4, None]
    with pytest.raises(
        ConfigError, match=r"--size \['5'\] is not a point of this curve; choose from \['4', '8', 'all'\]"
    ):
        lc.parse_points(["5"], [4, 8])


def _oof_table(n: int, acc: float, seed: int = 0) -> pd.DataFrame:
    """A pooled out-of-fold table: the model right on a share ``acc`` of structures, majority always 'a'."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(["a", "b"], n)
    right = rng.random(n) < acc
    y = rng.normal(size=n)
    return pd.DataFrame(
        {
            "material_id": [f"m{i}" for i in range(n)],
            "fold": np.arange(n) % 5,
            "seed": 0,
            "crystal_system": truth,
            "band_gap": y,
            "model__crystal_system": np.where(right, truth, np.where(truth == "a", "b", "a")),
            "model__band_gap": y + rng.normal(scale=0.5, size=n),
            "dummy__crystal_system": "a",
            "dummy__band_gap": 0.0,
            "tabular__crystal_system": truth,
            "tabular__band_gap": y,
        }
    )


def _point(n: int | None, acc: float, cfg: PipelineConfig, **changes) -> dict:
    """A point record as run_point writes it, from a synthetic pooled table of 300 structures."""
    from crystalvision.evaluate import oof

    table = _oof_table(300, acc)
    metrics = oof.summarise(table, {}, n_resamples=100) | {"n_folds": 5.0}
    parts = [cr.fold_part(f) for f in folds.subset_folds([_fold(fold=i) for i in range(2)],
                                                          SplitConfig(folds=5, train_structures=n))]  # fmt: skip
    record = {
        "pipeline": cfg.name, "train_structures": n, "point": cr.point_key(n), "curve_config_hash": cfg.config_hash(),
        "config_hash": lc.size_config(cfg, n, 7).config_hash(), "run_id": f"run{n}", "finished": "2026-12-08T10:00:00",
        "seconds": 600.0, "hardware": "x86_64, 2 CPUs, Linux", "budget": lc.budget(cfg, 7),
        "n_structures_mean": float(np.mean([p["n_structures_train"] + p["n_structures_val"] for p in parts])),
        "n_train_mean": float(np.mean([p["n_structures_train"] for p in parts])),
        "n_val_mean": float(np.mean([p["n_structures_val"] for p in parts])),
        "folds": parts, "series": cr.point_series(table, cfg.evaluate), "metrics": cr.pooled_only(metrics),
    }  # fmt: skip
    return record | changes


def test_point_records_merge_into_one_curve_with_its_figure(tmp_path) -> None:
    cfg = PipelineConfig.model_validate(
        {"name": "curve", "split": {"folds": 5}, "evaluate": {"bootstrap_resamples": 200}}
    )
    for n, acc in [(40, 0.6), (None, 0.9), (10, 0.3)]:
        cr.write_point(tmp_path, _point(n, acc, cfg))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["point-10.json", "point-40.json", "point-all.json"]
    record = cr.merge(cr.read_points(tmp_path))
    assert record["sizes"] == [10, 40, None] and record["budget"]["optimiser_steps"] == 7 * cfg.train.epochs
    assert [p["n_structures_mean"] for p in record["points"]] == [10.0, 40.0, 100.0]
    cell = record["points"][1]["series"]["image model"]["crystal_system"]
    assert cell["lo"] < cell["value"] < cell["hi"] and abs(cell["value"] - 0.6) < 0.08
    assert record["points"][0]["series"]["trees"]["crystal_system"]["value"] == 1.0  # the trees on the same axis
    assert np.isnan(record["points"][0]["series"]["CGCNN"]["band_gap"]["value"])  # no CGCNN column
    json_path, figure = cr.write_curve(record, tmp_path)
    assert json.loads(json_path.read_text())["sizes"] == [10, 40, None] and figure.stat().st_size > 10_000


def test_merge_refuses_points_of_another_budget_or_other_test_folds(tmp_path) -> None:
    cfg = PipelineConfig.model_validate(
        {"name": "curve", "split": {"folds": 5}, "evaluate": {"bootstrap_resamples": 50}}
    )
    cr.write_point(tmp_path, _point(10, 0.3, cfg))
    other = _point(40, 0.5, cfg)
    cr.write_point(tmp_path, other | {"budget": other["budget"] | {"steps_per_epoch": 9}})
    with pytest.raises(ConfigError, match="differ in budget: they are not points of one curve"):
        cr.merge(cr.read_points(tmp_path))
    moved = [f | {"test_sha256": "0" * 16} for f in other["folds"]]
    cr.write_point(tmp_path, other | {"folds": moved})
    with pytest.raises(ConfigError, match="were scored on other test folds"):
        cr.merge(cr.read_points(tmp_path))
    with pytest.raises(ConfigError, match="no point records"):
        cr.merge(cr.read_points(tmp_path / "empty"))


def test_curve_script_writes_the_table_and_figure_from_the_point_records(tmp_path) -> None:
    script = study_script("curve_record")
    cfg = PipelineConfig.model_validate(
        {"name": "space-curve", "split": {"folds": 5}, "evaluate": {"bootstrap_resamples": 100}}
    )
    folder = tmp_path / "space-curve"
    for n, acc in [(10, 0.3), (None, 0.7)]:
        cr.write_point(folder, _point(n, acc, cfg))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- space-table:start -->\nstale rows\n<!-- space-table:end -->\nrest\n")
    script.main(
        [str(folder), "--sizes", "10", "40", "all", "--readme", str(readme), "--figure", str(tmp_path / "f.png")]
    )
    text = readme.read_text()
    assert "stale rows" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    assert "| 10 (8 + 2) | image model | 0.2" in text and "| all: 100 (80 + 20) | trees | 1.00 [1.00, 1.00] |" in text
    assert "| image model minus, at 10 (8 + 2) structures per fold |" in text
    assert "| 10 | trees | 1.00 |" in text  # balanced accuracy, per size and method
    assert "Points not run yet: 40." in text and "10: 2026-12-08, 10 min (x86_64, 2 CPUs, Linux)" in text
    assert f"{cfg.train.epochs} epoch(s) x 7 optimiser steps" in text
    assert (folder / "learning_curve.json").is_file() and (tmp_path / "f.png").stat().st_size > 10_000


def test_curve_summary_names_points_run_kept_and_missing(tmp_path) -> None:
    from rich.console import Console

    from crystalvision.app.summary import result_summary

    cfg = PipelineConfig.model_validate(
        {"name": "space-curve", "split": {"folds": 5}, "evaluate": {"bootstrap_resamples": 50}}
    )
    record = cr.merge([_point(10, 0.3, cfg) | {"path": "a"}, _point(None, 0.7, cfg) | {"path": "b"}])
    result = record | {"record": "out/learning_curve.json", "figure": "out/learning_curve.png", "ran": ["10"],
                       "kept": ["all"], "missing": ["40"]}  # fmt: skip
    console = Console(width=100, record=True)
    console.print(result_summary(result, "curve.log"))
    text = console.export_text()
    assert "learning curve space-curve" in text and "run now: 10; kept: all" in text and "40 (run them" in text
    assert "trees" in text and "out/learning_curve.png" in text and len(text.splitlines()) <= 25
