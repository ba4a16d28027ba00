"""Learning curve: nested, class-balanced subsets; size errors; the record and its figure."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from crystalvision.app import learning_curve as lc
from crystalvision.core.config import PipelineConfig, SplitConfig
from crystalvision.core.errors import ConfigError
from crystalvision.data import folds
from crystalvision.data.folds import FoldSplits


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


def test_subset_larger_than_training_set_names_both_sizes() -> None:
    with pytest.raises(ConfigError, match=r"split.train_structures = 500 .* fold 2's training set \(120 structures\)"):
        folds.subset_training(_train(), 500, seed=0, fold=2)
    with pytest.raises(ConfigError, match=r"\[900\] exceed the smallest fold's training set \(700 structures\)"):
        lc.check_sizes([62, 900], [706, 700, 710])
    assert lc.check_sizes([250, 62, 62, 125], [706]) == [62, 125, 250]


def test_subset_folds_cuts_training_only() -> None:
    train, test = _train(60), _train(20, seed=5).assign(material_id=lambda d: "t" + d["material_id"])
    fold = FoldSplits(train, train.iloc[:0], test, protocol="grouped", seed=0, fold=1, n_folds=5)
    (cut,) = folds.subset_folds([fold], SplitConfig(folds=5, train_structures=12))
    assert cut.train["material_id"].nunique() == 12 and cut.test is test and cut.fold == 1
    assert fold.train["material_id"].nunique() == 60  # the input fold is left as it was
    (same,) = folds.subset_folds([fold], SplitConfig(folds=5))
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
    (cut2,) = folds.subset_folds([fold2], SplitConfig(folds=5, train_structures=5))
    assert "only-cubic" not in set(cut2.train["material_id"])  # seed 0 puts the one cubic structure late
    assert cut2.unseen_classes["crystal_system"] == ["cubic"]


def test_size_config_sets_one_point_without_recursion() -> None:
    cfg = PipelineConfig.model_validate({"name": "curve", "split": {"folds": 3}, "learning_curve": {"sizes": [4, 8]}})
    one = lc.size_config(cfg, 8)
    assert one.split.train_structures == 8 and one.learning_curve.sizes == [] and one.name == "curve-n8"
    assert lc.size_config(cfg, None).split.train_structures is None
    assert one.config_hash() != lc.size_config(cfg, 4).config_hash()  # each point is its own training run


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
        }
    )


def test_record_and_figure_from_pooled_tables(tmp_path) -> None:
    cfg = PipelineConfig.model_validate({"name": "curve", "split": {"folds": 3}})
    points = []
    for n, acc in [(10, 0.3), (40, 0.6), (None, 0.9)]:
        table = _oof_table(400, acc)
        metrics = {"pooled_model_acc_crystal_system": acc, "test_acc_crystal_system_mean": 0.5}
        points.append(lc.CurvePoint(n, float(n or 80), f"run{n}", metrics, lc.point_series(table, cfg)))
    record = lc.curve_record(cfg, points)
    cell = record["points"][1]["series"]["image model"]["crystal_system"]
    assert cell["lo"] < cell["value"] < cell["hi"] and abs(cell["value"] - 0.6) < 0.08
    assert cell["hi"] - cell["lo"] < 0.15  # 400 structures: a 95 % interval of about +-0.05
    r2 = record["points"][2]["series"]["image model"]["band_gap"]
    assert 0.6 < r2["value"] < 0.9  # y + N(0, 0.5): R² about 0.8
    majority = record["points"][0]["series"]["majority / mean"]["band_gap"]["value"]
    assert majority <= 0.0  # a constant predicts no better than the mean
    assert np.isnan(record["points"][0]["series"]["CGCNN"]["band_gap"]["value"])  # no CGCNN column
    assert "test_acc_crystal_system_mean" not in record["points"][0]["metrics"]  # pooled numbers only
    json.dumps(record)
    path = lc.plot_curve(record, tmp_path / "curve.png")
    assert path.stat().st_size > 10_000


def test_space_table_script_renders_readme_rows_from_a_record(tmp_path) -> None:
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("space_table", root / "docs/study/space_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    cfg = PipelineConfig.model_validate({"name": "space-curve", "split": {"folds": 5}})
    table = _oof_table(300, 0.7)
    metrics = {"pooled_n_structures": 300.0, "pooled_diff_model_vs_dummy_acc_crystal_system": 0.2,
               "pooled_diff_model_vs_dummy_acc_crystal_system_lo": 0.1,
               "pooled_diff_model_vs_dummy_acc_crystal_system_hi": 0.3}  # fmt: skip
    points = [lc.CurvePoint(n, float(n or 200), "r", metrics, lc.point_series(table, cfg)) for n in (50, None)]
    record_path = tmp_path / "space-curve.json"
    record_path.write_text(json.dumps(lc.curve_record(cfg, points)))
    lc.plot_curve(json.loads(record_path.read_text()), record_path.with_suffix(".png"))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- space-table:start -->\nstale rows\n<!-- space-table:end -->\nrest\n")
    module.main([str(record_path), "--readme", str(readme), "--figure", str(tmp_path / "fig.png")])
    text = readme.read_text()
    assert "stale rows" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    assert "| all (200) | image model | 0.65 [0.60, 0.71] |" in text and "| 50 | majority / mean |" in text
    assert "| majority / mean | +0.20 [+0.10, +0.30] |" in text
    assert (tmp_path / "fig.png").stat().st_size > 10_000


def test_curve_record_script_rebuilds_a_stopped_curve_from_its_finished_runs(cv_home, tmp_path) -> None:
    import importlib.util
    from pathlib import Path

    import mlflow

    from crystalvision.track import tracking

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("curve_record", root / "docs/study/curve_record.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    tracking.configure_mlflow()
    runs = []
    for n, acc in [(62, 0.4), (250, 0.7)]:
        table = _oof_table(300, acc)
        table.to_parquet(tmp_path / "oof_predictions.parquet")
        with mlflow.start_run(run_name=f"space-curve-n{n}", tags={"kfold": "parent"}) as run:
            mlflow.log_metrics({"pooled_n_structures": 300.0, "pooled_model_acc_crystal_system": acc})
            mlflow.log_artifact(str(tmp_path / "oof_predictions.parquet"), artifact_path="evaluation")
        runs += ["--run", f"{n}={run.info.run_id}"]
    with mlflow.start_run(run_name="not-a-point") as other:
        pass
    out = tmp_path / "record"
    args = [str(root / "pipelines/space-curve.yaml"), "--set", "evaluate.bootstrap_resamples=100", "--out", str(out)]
    figure = module.main([*args, *runs])
    record = json.loads((out / "learning_curve.json").read_text())
    assert figure.is_file() and record["sizes"] == [62, 250] and record["pipeline"] == "space-curve"
    values = [p["series"]["image model"]["crystal_system"]["value"] for p in record["points"]]
    assert values[0] < 0.5 < values[1]
    assert record["points"][1]["metrics"]["pooled_model_acc_crystal_system"] == 0.7
    with pytest.raises(ConfigError, match="not a k-fold parent run"):
        module.main([*args, "--run", f"62={other.info.run_id}"])


def test_space_table_script_renders_a_grouped_run_record_per_scope(tmp_path) -> None:
    import importlib.util
    from pathlib import Path

    from crystalvision.evaluate import oof

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("space_table", root / "docs/study/space_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    table = _oof_table(300, 0.7).assign(nelements=[4 if i % 3 == 0 else 3 for i in range(300)])
    metrics = oof.summarise(table, {"quaternary": 4}, n_resamples=200) | {"n_folds": 5.0}
    record = tmp_path / "space-grouped.json"
    record.write_text(json.dumps({"pipeline": "space-grouped", "metrics": metrics}))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- space-grouped-table:start -->\nstale\n<!-- space-grouped-table:end -->\nrest\n")
    module.main([str(record), "--readme", str(readme)])
    text = readme.read_text()
    assert "stale" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    assert "5 grouped folds, 1 seed(s)" in text and "Every structure (300):" in text
    assert "Subset `quaternary` (100 structures):" in text
    acc = metrics["pooled_model_acc_crystal_system"]
    assert f"| image model | {acc:.2f} |" in text
    diff = "pooled_quaternary_diff_model_vs_dummy_acc_crystal_system"
    row = f"| image model − majority / mean | {metrics[diff]:+.2f} [{metrics[diff + '_lo']:+.2f}, "
    assert row in text.split("Subset `quaternary`")[1]
