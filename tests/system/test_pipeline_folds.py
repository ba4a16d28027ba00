"""A tiny grouped k-fold pipeline run and its learning curve (one record per point, validation cut with training,
baselines fit on what the image model saw, the same steps at every point): parent + child runs, each structure
tested once, pooled out-of-fold metrics with paired bootstrap intervals and mean ± std on the parent, leakage
section and graph baseline in the reports, no registration; the same structures tested on a hold-out
(`split.holdout.use: test`, one more Ray Train run); `pipeline validate` prints the resolved split."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from crystalvision.app.cli import app
from tests.support.study import study_script

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "snapshot.max_structures=6",
    "render.views_per_structure=2",
    "render.image_size=32",
    "split.folds=2",
    "train.backbone=test_efficientnet",
    "train.epochs=1",
    "train.max_steps_per_epoch=2",
    "train.batch_size=4",
    "evaluate.saliency=false",
    "evaluate.graph_epochs=2",
    "evaluate.graph_size=small",
    "evaluate.subsets={quaternary: {nelements: 4}}",
    "evaluate.bootstrap_resamples=50",
]


def _json(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{") :])


N_CURVE = 16  # 2 folds of 8 training + validation structures (about 6 + 2): a point of 4 cuts both parts
CURVE = [item for item in TINY if not item.startswith(("snapshot.max_structures", "train.max_steps_per_epoch"))]
CURVE.append(f"snapshot.max_structures={N_CURVE}")


@pytest.mark.slow
def test_grouped_kfold_pipeline_and_its_learning_curve(cv_home: Path, tmp_path: Path) -> None:
    """`curve --size 4` runs the grouped k-fold pipeline at one point (4 training + validation structures per
    fold): validation is cut with training in the fold's ratio, every baseline is fit on exactly the structures the
    image model saw, the point takes the full folds' optimiser steps and is scored on the uncut test folds; one
    record for the point; a rerun skips it, a record of another config is refused; the study script makes the table
    from the point record. The point's run is a plain grouped k-fold run too, checked in full."""
    out = tmp_path / "curve"
    base = ["curve", str(ROOT / "pipelines/paper-grouped.yaml"), "--out", str(out), "--json"]
    sets = [a for item in CURVE for a in ("--set", item)]
    # a size above the smallest fold's structures: one error naming both sizes, before any training
    too_big = CliRunner().invoke(app, [*base, *sets, "--set", "learning_curve.sizes=[4, 50]"])
    assert too_big.exit_code == 2, too_big.output
    assert "[50] exceed the smallest fold's training + validation structures (8)" in too_big.output
    assert not (cv_home / "ray_results").exists()

    one = [*base, *sets, "--set", "learning_curve.sizes=[4]", "--size", "4"]
    result = CliRunner().invoke(app, one)
    assert result.exit_code == 0, result.output
    summary = _json(result.stdout)
    assert (summary["ran"], summary["kept"], summary["missing"]) == (["4"], [], ["all"])
    record = json.loads((out / "learning_curve.json").read_text())
    assert sorted(p.name for p in out.glob("point-*.json")) == ["point-4.json"]  # one record per point
    assert (out / "learning_curve.png").stat().st_size > 10_000
    assert record["sizes"] == [4] and [p["n_structures_mean"] for p in record["points"]] == [4.0]
    (point,) = record["points"]
    _check_curve_point(point, record["budget"], tmp_path)
    assert point["metrics"]["pooled_n_structures"] == N_CURVE  # the held-out structures uncut, each scored once
    cell = point["series"]["image model"]["crystal_system"]
    assert cell["lo"] <= cell["value"] <= cell["hi"]
    assert point["series"]["trees"]["crystal_system"]["value"] >= 0

    client = MlflowClient(f"sqlite:///{cv_home / 'mlflow.db'}")
    experiment = client.get_run(point["run_id"]).info.experiment_id
    _check_rerun_skips_the_point(one, out, client, experiment)

    readme = tmp_path / "study.md"
    readme.write_text("<!-- space-table:start -->\n<!-- space-table:end -->\n")
    study_script("curve_record").main([str(out), "--readme", str(readme)])
    table = readme.read_text()
    assert f"| 4 ({point['n_train_mean']:.0f} + 1) | trees |" in table

    mlflow.set_tracking_uri(f"sqlite:///{cv_home / 'mlflow.db'}")
    every_child = client.search_runs([experiment], "tags.kfold = 'child'")
    assert {r.data.params.get("cfg.split.train_structures") for r in every_child} == {"4"}
    assert client.search_registered_models() == []  # k-fold is an evaluation protocol: nothing registered
    _check_grouped_kfold_run(client, point["run_id"], point["metrics"], tmp_path, N_CURVE)
    _check_holdout_test_run(client, tmp_path)  # the same structures and images, tested on a hold-out instead


HOLDOUT = [item for item in CURVE if not item.startswith("split.folds")]
HOLDOUT += ["split.folds=null", "split.holdout.use=test", "name=paper-holdout", "train.seeds=[1]",
            "train.max_steps_per_epoch=1", "evaluate.leakage=false"]  # fmt: skip


def _holdout_with_a_sibling(tmp_path: Path) -> tuple[Path, list[str], str]:
    """`crystalvision holdout` of the curve's 16 structures (30 %: Li2MnNiO4's three structures among them), with
    one Li2MnNiO4 structure taken out of its ids but its formula kept: a structure that shares a hold-out formula
    (as a hold-out made from another selection can leave). The file, its ids and the sibling's id."""
    from crystalvision.data.holdout import digest

    path = tmp_path / "holdout.json"
    args = ["holdout", "-c", str(ROOT / "pipelines/paper-grouped.yaml"), "--fraction", "0.3", "--out", str(path)]
    made = CliRunner().invoke(app, [*args, *(a for item in CURVE for a in ("--set", item))])
    assert made.exit_code == 0, made.output
    content = json.loads(path.read_text())
    sibling = "mp-753347"  # Li2MnNiO4, like mp-1177894 and mp-1284127
    assert sibling in content["ids"] and "Li2MnNiO4" in content["formulas"]
    ids = [i for i in content["ids"] if i != sibling]
    path.write_text(json.dumps(content | {"ids": ids, "sha256": digest(ids, content["formulas"])}))
    return path, ids, sibling


def _check_holdout_test_run(client: MlflowClient, tmp_path: Path) -> None:
    """`split.holdout.use: test` end to end (one Ray Train run, seed 1): the one test set is exactly the hold-out's
    ids; no hold-out structure, nor one sharing a hold-out formula, is in training or validation or in what the
    baselines were fit on; the record, the parent's params and the pooled table name the file and its digest; the
    child's logged split rebuilds the same test set (`evaluate --run-id`)."""
    from crystalvision.core import load_pipeline, parse_overrides
    from crystalvision.data import load_labels, open_store
    from crystalvision.evaluate.baselines import structure_table
    from crystalvision.stages import road, runs

    path, ids, sibling = _holdout_with_a_sibling(tmp_path)
    sets = [*HOLDOUT, f"split.holdout.ids={path}"]
    args = ["pipeline", "run", str(ROOT / "pipelines/paper-grouped.yaml"), "--json"]
    result = CliRunner().invoke(app, [*args, *(a for item in sets for a in ("--set", item))])
    assert result.exit_code == 0, result.output
    record = _json(result.stdout)
    digest = json.loads(path.read_text())["sha256"]
    assert record["holdout"] == {"file": str(path), "sha256": digest, "use": "test", "n_ids": len(ids),
                                 "n_left_out_of_selection": 0, "n_tested": len(ids)}  # fmt: skip
    assert record["n_structures"] == N_CURVE and record["pooled"]["seeds"] == [1]
    metrics = record["metrics"]
    assert (metrics["n_folds"], metrics["n_seeds"], metrics["pooled_n_structures"]) == (1, 1, len(ids))

    labels = load_labels(open_store(), record["render"]["render_labels_key"])
    seen = set(labels["material_id"]) - set(ids) - {sibling}  # every structure but the hold-out's formulas
    assert len(seen) == N_CURVE - len(ids) - 1
    parent = client.get_run(record["run_id"])
    assert parent.data.tags["kfold"] == "parent"
    assert {k: parent.data.params[f"holdout.{k}"] for k in ("file", "sha256", "use")} == {
        "file": str(path), "sha256": digest, "use": "test"}  # fmt: skip
    oof = pd.read_parquet(client.download_artifacts(record["run_id"], "evaluation/oof_predictions.parquet",
                                                    str(tmp_path / "holdout-oof")))  # fmt: skip
    assert sorted(oof["material_id"]) == sorted(ids) and set(oof["fold"]) == {0} and set(oof["seed"]) == {1}
    report = Path(client.download_artifacts(record["run_id"], "evaluation/folds_report.html", str(tmp_path / "hr")))
    text = report.read_text()
    assert f"hold-out test: {path} ({len(ids)} of its {len(ids)} ids tested, 1 training seed)" in text
    assert "k-fold evaluation" not in text and "<td>hold-out, seed 1</td>" in text
    mean_gap = structure_table(labels[labels["material_id"].isin(seen)])["band_gap"].mean()
    assert oof["dummy__band_gap"].to_numpy() == pytest.approx(mean_gap, abs=1e-9)  # fit on exactly `seen`

    (child,) = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{record['run_id']}'")
    assert (child.data.tags["fold"], child.data.tags["train_seed"]) == ("0", "1")
    logged = {k: int(child.data.params[f"split.n_structures_{k}"]) for k in ("train", "val", "test")}
    assert logged["test"] == len(ids) and logged["train"] + logged["val"] == len(seen) and logged["val"] >= 1
    dst = tmp_path / "holdout-child"
    pred = pd.read_csv(client.download_artifacts(child.info.run_id, "evaluation/predictions.csv", str(dst)))
    assert set(pred.loc[pred["split"] == "test", "material_id"]) == set(ids)
    assert set(pred.loc[pred["split"] == "val", "material_id"]) <= seen
    base = pd.read_csv(client.download_artifacts(child.info.run_id, "evaluation/baseline_predictions.csv", str(dst)))
    assert set(base["material_id"]) == set(ids) and set(base["1nn_neighbour"]) <= seen

    # what `evaluate --run-id` rebuilds from the child's params: the same hold-out test set, the same training
    cfg = load_pipeline(ROOT / "pipelines/paper-grouped.yaml", parse_overrides(CURVE))
    split = runs.split_config_from_params(child.data.params, cfg.split)
    assert split.holdout is not None and (split.holdout.ids, split.holdout.use) == (str(path), "test")
    rebuilt = road.from_labels(cfg, open_store(), record["render"]["render_labels_key"], None, split, 0).splits
    assert sorted(set(rebuilt.test["material_id"])) == sorted(ids)
    assert set(rebuilt.train["material_id"]) | set(rebuilt.val["material_id"]) == seen
    assert int(child.data.params["split.n_images_test"]) == len(rebuilt.test)


def _check_rerun_skips_the_point(args: list[str], out: Path, client: MlflowClient, experiment: str) -> None:
    """The same command again keeps the point's record and trains nothing; a record made with another config is
    one error, not a mixed curve."""
    rerun = CliRunner().invoke(app, args)
    assert rerun.exit_code == 0, rerun.output
    assert (_json(rerun.stdout)["ran"], _json(rerun.stdout)["kept"]) == ([], ["4"])
    assert len(client.search_runs([experiment], "tags.kfold = 'parent'")) == 1  # the rerun trained nothing
    other = out / "point-4.json"
    kept = other.read_text()
    other.write_text(json.dumps(json.loads(kept) | {"config_hash": "0" * 16}))
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2, refused.output
    assert "was made with another config" in refused.output
    other.write_text(kept)


def _check_curve_point(small: dict, budget: dict, tmp_path: Path) -> None:
    """A point of 4: per fold, validation cut with training (in the fold's ratio) and the test fold untouched; the
    image model's child run trained on those parts for the full folds' steps; majority, 1-NN and trees were fit on
    exactly its training + validation structures (the majority's mean band gap is theirs, every 1-NN neighbour is
    one of them, the trees refit on them predict what the run's trees predicted)."""
    from crystalvision.app import curve_record as cr
    from crystalvision.app import learning_curve as lc
    from crystalvision.core import load_pipeline, parse_overrides
    from crystalvision.data import load_selection, subset_folds
    from crystalvision.evaluate.baselines import structure_table
    from crystalvision.evaluate.tabular import tabular_predict

    cfg = load_pipeline(ROOT / "pipelines/paper-grouped.yaml", parse_overrides(CURVE))
    uncut = lc.full_folds(cfg)
    point = subset_folds(uncut, cfg.split.model_copy(update={"train_structures": 4}))
    full_steps = cfg.train.epochs * lc.steps_per_epoch(cfg, [len(f.train) for f in uncut])
    assert budget["optimiser_steps"] == full_steps  # the full folds' steps: the same at every point
    client = MlflowClient()
    oof = pd.read_parquet(
        client.download_artifacts(small["run_id"], "evaluation/oof_predictions.parquet", str(tmp_path))
    )
    experiment = client.get_run(small["run_id"]).info.experiment_id
    found = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{small['run_id']}'")
    children = {c.data.tags["fold"]: c for c in found}
    records = {r.material_id: r for r in load_selection(cfg.snapshot)[1].records}
    for fold, part, whole, made in zip(
        point, small["folds"], map(cr.fold_part, uncut), [cr.fold_part(f) for f in point], strict=True
    ):
        assert part == made  # the record says what the pipeline's split makes
        assert part["n_structures_train"] + part["n_structures_val"] == 4
        assert 1 <= part["n_structures_val"] < whole["n_structures_val"]  # validation cut with training
        ratio = whole["n_structures_val"] / (whole["n_structures_train"] + whole["n_structures_val"])
        assert abs(part["n_structures_val"] - 4 * ratio) < 1  # in the fold's own train:val ratio
        assert part["test_sha256"] == whole["test_sha256"] and part["n_structures_test"] == whole["n_structures_test"]
        child = children[str(part["fold"])]
        logged = {k: int(child.data.params[f"split.n_structures_{k}"]) for k in ("train", "val", "test")}
        assert logged == {k: part[f"n_structures_{k}"] for k in ("train", "val", "test")}
        assert child.data.metrics["final_optimiser_steps"] == full_steps
        seen = pd.concat([fold.train, fold.val])
        rows = oof[oof["fold"] == part["fold"]]
        mean_gap = structure_table(seen)["band_gap"].mean()
        assert rows["dummy__band_gap"].to_numpy() == pytest.approx(mean_gap, abs=1e-9)
        uncut_mean = structure_table(pd.concat([uncut[part["fold"]].train, uncut[part["fold"]].val]))["band_gap"].mean()
        assert mean_gap != pytest.approx(uncut_mean)  # the check tells the uncut fold's structures apart
        dst = tmp_path / child.info.run_id
        base = pd.read_csv(
            client.download_artifacts(child.info.run_id, "evaluation/baseline_predictions.csv", str(dst))
        )
        assert set(base["1nn_neighbour"]) <= set(seen["material_id"])
        trees = tabular_predict(records, seen, fold.test).set_index("material_id")["band_gap"]
        assert rows.set_index("material_id")["tabular__band_gap"].to_numpy() == pytest.approx(
            trees.loc[rows["material_id"]].to_numpy()
        )
    assert small["optimiser_steps_mean"] == full_steps


def _check_grouped_kfold_run(client: MlflowClient, run_id: str, pooled: dict, tmp_path: Path, n: int = 6) -> None:
    """A grouped 2-fold parent run over ``n`` structures: fold statistics, pooled out-of-fold metrics with paired
    bootstrap intervals, artifacts, child runs that test each structure once, `evaluate --run-id` on a fold.
    ``pooled``: the pooled metrics the learning curve recorded for this run."""
    parent = client.get_run(run_id)
    assert parent.data.tags["kfold"] == "parent"
    metrics = parent.data.metrics
    recorded = {k: v for k, v in pooled.items() if k.startswith("pooled_")}
    assert {k: metrics[k] for k in recorded} == pytest.approx(recorded, nan_ok=True) and recorded
    assert metrics["n_folds"] == 2
    for name in ("test_score", "test_acc_crystal_system", "test_struct_acc_crystal_system", "cgcnn_test_score"):
        assert {f"{name}_mean", f"{name}_std"} <= set(metrics), name
    assert metrics["leakage_ssim_median_n"] == 2
    # pooled out of fold: every structure scored once, for the model and each baseline (CGCNN included)
    assert metrics["pooled_n_structures"] == n and metrics["pooled_n_seeds"] == 1
    for p in ("model", "dummy", "1nn", "cgcnn"):
        assert {f"pooled_{p}_acc_crystal_system", f"pooled_{p}_mae_band_gap"} <= set(metrics), p
    for b in ("dummy", "1nn", "cgcnn"):
        key = f"pooled_diff_model_vs_{b}_acc_crystal_system"
        assert metrics[f"{key}_lo"] <= metrics[key] <= metrics[f"{key}_hi"], b
    assert "pooled_quaternary_n_structures" in metrics and "ceiling_acc_spacegroup_mean" in metrics

    assert {a.path for a in client.list_artifacts(run_id, "evaluation")} >= {
        "evaluation/folds_report.html",
        "evaluation/folds.json",
        "evaluation/oof_predictions.parquet",
        "evaluation/oof_predictions.csv",
    }
    oof = pd.read_parquet(client.download_artifacts(run_id, "evaluation/oof_predictions.parquet", str(tmp_path)))
    assert oof["material_id"].is_unique and len(oof) == n and set(oof["fold"]) == {0, 1}
    assert {"model__band_gap", "dummy__crystal_system", "1nn__spacegroup", "cgcnn__band_gap"} <= set(oof)
    text = Path(client.download_artifacts(run_id, "evaluation/folds_report.html", str(tmp_path))).read_text()
    assert "mean ± std over folds" in text and "±" in text and "CGCNN graph baseline" in text
    assert "Pooled out of fold" in text and "model − 1nn" in text and "quaternary" in text

    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    assert sorted(c.data.tags["fold"] for c in children) == ["0", "1"]
    tested: list[str] = []
    for child in children:
        assert child.info.status == "FINISHED"
        assert "val_loss" in child.data.metrics and "cgcnn_test_score" in child.data.metrics
        assert "leakage_ssim_median" in child.data.metrics
        dst = tmp_path / child.info.run_id
        pred = pd.read_csv(client.download_artifacts(child.info.run_id, "evaluation/predictions.csv", str(dst)))
        tested += sorted(set(pred.loc[pred["split"] == "test", "material_id"]))
        report = Path(client.download_artifacts(child.info.run_id, "evaluation/report.html", str(dst))).read_text()
        assert "Leakage: nearest training image" in report and "data:image/png;base64" in report
        assert "CGCNN graph baseline, per structure" in report and "pretrained CGCNN" in report
    assert len(tested) == len(set(tested)) == n  # each structure tested exactly once across folds

    # `evaluate --run-id` on a fold's child run rebuilds that fold's test split, not a plain split.
    child = children[0]
    args = ["evaluate", "--run-id", child.info.run_id, "--set", "evaluate.saliency=false", "--set",
            "evaluate.leakage=false"]  # fmt: skip
    evaluated = CliRunner().invoke(app, args)
    assert evaluated.exit_code == 0, evaluated.output
    assert _json(evaluated.stdout)["split"]["n_images_test"] == int(child.data.params["split.n_images_test"])


@pytest.mark.slow
def test_too_many_folds_is_one_config_error_before_rendering(cv_home: Path) -> None:
    args = ["pipeline", "run", str(ROOT / "pipelines/paper-grouped.yaml"), "--json"]
    for item in [*TINY, "split.folds=7"]:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "split.folds = 7" in result.output and "2..6" in result.output
    assert not (cv_home / "ray_results").exists() and not (cv_home / "store").exists()  # nothing rendered


def test_validate_prints_the_resolved_split(cv_home: Path) -> None:
    result = CliRunner().invoke(app, ["pipeline", "validate", str(ROOT / "pipelines/paper-grouped.yaml")])
    assert result.exit_code == 0, result.output
    text = result.stdout[result.stdout.index("resolved split") :]
    assert text.startswith("resolved split: 5 grouped folds over 62 structures")
    rows = [line.split() for line in text.splitlines() if line[:4].strip().isdigit()]
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3, 4]
    assert sum(int(r[3]) for r in rows) == 62 and all(int(r[1]) + int(r[2]) + int(r[3]) == 62 for r in rows)
    assert text.count("unseen in training (crystal_system): tetragonal") == 1  # the one tetragonal structure
    assert "ceiling system" in text and "test per crystal system: " in text


def test_each_seed_trains_every_fold_under_its_own_name_config_and_spec() -> None:
    from crystalvision.app.pipeline import _seeded
    from crystalvision.core.config import PipelineConfig
    from crystalvision.data.folds import FoldSplits
    from crystalvision.learn import Prepared
    from crystalvision.learn.model import ModelSpec
    from crystalvision.learn.train import run_name

    part = pd.DataFrame({"material_id": ["mp-1"], "image_key": ["k1"]})
    splits = FoldSplits(part, part, part, protocol="grouped", seed=0, fold=1, n_folds=2)
    spec = ModelSpec(class_names={"crystal_system": ["cubic"], "spacegroup": ["Fm-3m"]})
    fold = Prepared(PipelineConfig(name="x", train={"seeds": [0, 1, 2]}), None, splits, spec)
    runs = [_seeded(fold, s) for s in (0, 1, 2)]
    assert [r.cfg.train.seed for r in runs] == [0, 1, 2] and fold.cfg.train.seed == 0
    assert len({id(r.spec) for r in runs} | {id(spec)}) == 4  # training scales its own copy of the spec
    assert len({run_name(r) for r in runs}) == 3  # no seed resumes another seed's checkpoints
