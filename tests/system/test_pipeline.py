"""The quickstart end to end on the real bundled snapshot, through the CLI, at tiny size; its second run (a
multi-epoch run whose best epoch is not its last) also shows that promotion judges the model it registers."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from crystalvision.app.cli import app
from crystalvision.core.targets import SCORE_METRICS
from crystalvision.data.storage import ObjectStore
from tests.support.tiny import tiny_model_dir, toy_splits

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "snapshot.max_structures=5",
    "render.views_per_structure=3",
    "render.image_size=32",
    "split.test_fraction=0.3",
    "train.backbone=test_efficientnet",
    "train.epochs=1",
    "train.max_steps_per_epoch=2",
    "evaluate.saliency_samples=2",
]
# the second run: one structure more (validation of 2 structures), 4 epochs of one step at a high constant lr, so
# that its best epoch is not its last
SECOND = ["snapshot.max_structures=6", "split.val_fraction=0.3", "train.epochs=4", "train.max_steps_per_epoch=1",
          "train.max_failures=0", "train.patience=10", "train.lr=0.05", "train.schedule=constant"]  # fmt: skip


def _kfold_record(folder: Path, snapshot: object, *overrides: str) -> Path:
    """A grouped k-fold record as `pipeline run --json` writes it (pooled metrics, the render config hash, label
    sources and recipe) for the bundled snapshot and the quickstart config at TINY size with ``overrides``."""
    from crystalvision.core.pipeline_file import load_pipeline, parse_overrides
    from crystalvision.render.job import render_config_hash
    from crystalvision.track.recipe import label_sources, recipe

    cfg = load_pipeline(ROOT / "pipelines/quickstart.yaml", parse_overrides([*TINY, *overrides]))
    pooled = {
        "pooled_n_structures": 62.0,
        "pooled_n_seeds": 1.0,
        "pooled_model_acc_crystal_system": 0.41,
        "pooled_model_acc_crystal_system_lo": 0.3,
        "pooled_model_acc_crystal_system_hi": 0.52,
        "pooled_dummy_acc_crystal_system": 0.37,
        "pooled_model_r2_band_gap": -0.2,
    }
    path = folder / f"lmno-grouped{len(overrides)}.json"
    record = {
        "pipeline": "lmno-grouped",
        "snapshot_sha256": snapshot.manifest.content_sha256,
        "run_id": "r1",
        "render": {"render_config_hash": render_config_hash(cfg.render)},
        "label_source": label_sources(snapshot.manifest),
        "recipe": recipe(cfg),
        "pooled": {"metrics": pooled},
    }
    path.write_text(json.dumps(record))
    return path


@pytest.mark.slow
def test_quickstart_end_to_end(cv_home: Path, tmp_path: Path) -> None:
    from crystalvision.data.snapshot import bundled_snapshots, load_snapshot

    args = ["pipeline", "run", str(ROOT / "pipelines/quickstart.yaml"), "--json"]
    for item in TINY:
        args += ["--set", item]
    # a record of another snapshot cannot describe this model: refused before anything is rendered
    space = ROOT / "docs/study/records/space-grouped.json"
    refused = CliRunner().invoke(app, [*args, "--set", f"registry.generalisation_record={space}"])
    assert refused.exit_code != 0 and "measured snapshot 5acaf39473a8" in refused.output
    assert not (cv_home / "store" / "renders").exists()
    record = _kfold_record(tmp_path, load_snapshot(bundled_snapshots()["lmno"]))
    result = CliRunner().invoke(app, [*args, "--set", f"registry.generalisation_record={record}"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{") :])

    assert summary["n_structures"] == 5 and summary["n_dropped_flagged"] == 6
    assert summary["render"]["render_n_images"] == 15
    assert {"render", "train", "evaluate", "log_model", "register"} <= set(summary["stage_seconds"])
    assert "test_score" in summary["metrics"]

    mlflow.set_tracking_uri(f"sqlite:///{cv_home / 'mlflow.db'}")
    client = MlflowClient()
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["snapshot_sha256"] == summary["snapshot_sha256"]
    assert "CHGNet" in run.data.tags["label_source.energy_above_hull"]
    assert "CGCNN" in run.data.tags["label_source.band_gap"]
    assert run.data.params["cfg.train.epochs"] == "1"
    assert "val_loss" in run.data.metrics and "test_r2_band_gap" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(summary["run_id"], "evaluation")}
    assert {"evaluation/report.html", "evaluation/metrics.json", "evaluation/saliency.png"} <= artifacts
    assert "evaluation/radii.png" in artifacts  # one test structure in both radii sets
    card = json.loads((Path(summary["model_dir"]) / "model.json").read_text())["generalisation"]
    assert card["heads"]["crystal_system"] == {
        "metric": "accuracy",
        "value": 0.41,
        "lo": 0.3,
        "hi": 0.52,
        "majority": 0.37,
    }

    name = summary["registry"]["model_name"]
    champion = client.get_model_version_by_alias(name, "champion")
    assert str(champion.version) == str(summary["registry"]["challenger_version"]) == "1"
    assert "| crystal_system | accuracy | 0.41 [0.30, 0.52] | 0.37 |" in champion.description
    assert summary["registry"]["promoted"] is True

    # `evaluate --run-id` rebuilds the run's own labels table and split from what the run logged, whatever the
    # config it is given says (here: other structures, image size and split seed).
    other = ["snapshot.max_structures=6", "render.image_size=48", "split.seed=7", "evaluate.saliency=false"]
    evaluated = CliRunner().invoke(
        app, ["evaluate", "--run-id", summary["run_id"], *[x for item in other for x in ("--set", item)]]
    )
    assert evaluated.exit_code == 0, evaluated.output
    re_eval = json.loads(evaluated.stdout[evaluated.stdout.index("{") :])
    params = client.get_run(summary["run_id"]).data.params
    assert re_eval["split"]["n_images_test"] == int(params["split.n_images_test"])
    assert re_eval["split"]["n_images_train"] == int(params["split.n_images_train"])
    assert re_eval["metrics"]["test_score"] == pytest.approx(summary["metrics"]["test_score"], abs=1e-6)

    # A second run, of one structure more, reuses every rendered image and registers a second version as
    # challenger. Its record measured another recipe (2 epochs; this run trains 4): the card is withheld, naming why.
    other = _kfold_record(tmp_path, load_snapshot(bundled_snapshots()["lmno"]), "train.epochs=2")
    sets = [a for item in [*SECOND, f"registry.generalisation_record={other}"] for a in ("--set", item)]
    again = CliRunner().invoke(app, [*args, *sets])
    assert again.exit_code == 0, again.output
    second = json.loads(again.stdout[again.stdout.index("{") :])
    assert second["render"]["render_n_new"] == 3 and second["render"]["render_n_skipped"] == 15
    withheld = json.loads((Path(second["model_dir"]) / "model.json").read_text())["generalisation"]
    assert set(withheld) == {"withheld"} and "train.epochs: 2 in the record, 4 here" in withheld["withheld"]
    challenger = client.get_model_version_by_alias(name, "challenger")
    assert str(challenger.version) == "2" and "no measured out-of-fold metrics" in challenger.description
    assert "card withheld: lmno-grouped1.json measured another recipe" in challenger.description
    _check_promotion_judges_the_registered_model(client, second["run_id"], tmp_path)


def _val_score(metrics: dict[str, float]) -> float:
    """The mean of the validation counterparts of test_score's parts."""
    return sum(metrics["val" + m.removeprefix("test")] for m in SCORE_METRICS) / len(SCORE_METRICS)


def _check_promotion_judges_the_registered_model(client: MlflowClient, run_id: str, tmp_path: Path) -> None:
    """The kept (best-epoch) model and the last epoch of ``run_id`` score differently on validation; a champion of
    another model name on the same split scores between the two. The decision must use the registered model's own
    evaluation, not the last epoch's metrics."""
    from crystalvision.core.pipeline_file import load_pipeline, parse_overrides
    from crystalvision.evaluate.evaluate import EvalResult
    from crystalvision.promote import registry
    from crystalvision.serve.mlflow_model import log_model
    from crystalvision.stages import log_evaluation

    run = client.get_run(run_id)
    best, epochs = int(run.data.metrics["final_best_epoch"]), int(run.data.metrics["final_epochs_trained"])
    assert best < epochs - 1, f"the check needs a best epoch before the last (best {best} of {epochs})"
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="evaluation/metrics.json")
    kept = _val_score(json.loads(Path(path).read_text()))  # the evaluation of the model that gets registered
    parts = {"val" + m.removeprefix("test") for m in SCORE_METRICS}
    last = _val_score({k: next(m.value for m in client.get_metric_history(run_id, k) if m.step == epochs - 1)
                       for k in parts})  # fmt: skip
    assert abs(kept - last) > 1e-3, (kept, last)

    # the champion: same held-out split, its own registered model's evaluation between the two
    judged = parse_overrides([*TINY, *SECOND, "registry.model_name=judged"])
    cfg = load_pipeline(ROOT / "pipelines/quickstart.yaml", judged)
    middle = (kept + last) / 2
    (tmp_path / "eval").mkdir()
    store = ObjectStore(str(tmp_path / "store"))
    with mlflow.start_run() as champion:
        mlflow.log_params(registry.held_out_fingerprint(run))
        log_model(tiny_model_dir(tmp_path / "model"), toy_splits(store, n_structures=6, views=1), store)
    log_evaluation(EvalResult({m: middle for m in parts}, tmp_path / "eval"), champion.info.run_id)
    assert registry.register_and_promote(cfg, champion.info.run_id)["promoted"]

    def never(*_args):
        raise AssertionError("same split: the champion is not re-evaluated")

    decision = registry.register_and_promote(cfg, run_id, evaluator=never)
    assert decision["same_split"] and decision["champion_value"] == pytest.approx(middle)
    assert decision["challenger_value"] == pytest.approx(kept), (decision["reason"], kept, last)
    assert decision["promoted"] == (kept > middle), decision["reason"]
