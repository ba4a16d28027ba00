"""Promotion judges the model it registers: a real multi-epoch pipeline run whose best epoch is not its last,
through ``register_and_promote``."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from crystalvision.core.pipeline_file import load_pipeline
from crystalvision.core.targets import SCORE_METRICS
from crystalvision.data.storage import ObjectStore
from tests.support.tiny import tiny_model_dir, toy_splits

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "snapshot": {"max_structures": 6},
    "render": {"views_per_structure": 2, "image_size": 32, "num_workers": 1},
    "split": {"test_fraction": 0.3, "val_fraction": 0.3},
    "train": {
        "backbone": "test_efficientnet",
        "epochs": 4,
        "max_steps_per_epoch": 1,
        "num_workers": 1,
        "max_failures": 0,
        "patience": 10,
        "lr": 0.05,
        "schedule": "constant",
    },
    "evaluate": {"saliency": False, "baselines": False, "leakage": False, "graph_baseline": False},
    "registry": {"model_name": "judged"},
}


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from crystalvision.ops.raycluster import ensure_ray

    ensure_ray()
    yield
    ray.shutdown()


def _val_score(metrics: dict[str, float]) -> float:
    """The mean of the validation counterparts of test_score's parts."""
    return sum(metrics["val" + m.removeprefix("test")] for m in SCORE_METRICS) / len(SCORE_METRICS)


@pytest.mark.slow
def test_promotion_compares_the_registered_model_not_the_last_epoch(cv_home, ray_local, tmp_path) -> None:
    """The kept (best-epoch) model and the last epoch score differently on validation; a champion on the same split
    scores between the two. The decision must use the registered model's own evaluation."""
    from crystalvision.app.pipeline import run_pipeline
    from crystalvision.evaluate.evaluate import EvalResult
    from crystalvision.promote import registry
    from crystalvision.serve.mlflow_model import log_model
    from crystalvision.stages import log_evaluation

    cfg = load_pipeline(ROOT / "pipelines/quickstart.yaml", TINY)
    result = run_pipeline(cfg, ["render", "train", "evaluate"])
    client = mlflow.MlflowClient()
    run = client.get_run(result.run_id)
    best, epochs = int(run.data.metrics["final_best_epoch"]), int(run.data.metrics["final_epochs_trained"])
    assert best < epochs - 1, f"the test needs a best epoch before the last (best {best} of {epochs})"

    path = mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="evaluation/metrics.json")
    kept = _val_score(json.loads(Path(path).read_text()))  # the evaluation of the model that gets registered
    parts = {"val" + m.removeprefix("test") for m in SCORE_METRICS}
    last = _val_score({k: next(m.value for m in client.get_metric_history(result.run_id, k) if m.step == epochs - 1)
                       for k in parts})  # fmt: skip
    assert abs(kept - last) > 1e-3, (kept, last)

    # the champion: same held-out split, its own registered model's evaluation between the two
    middle = (kept + last) / 2
    (tmp_path / "eval").mkdir()
    store = ObjectStore(str(tmp_path / "store"))
    with mlflow.start_run() as champion:
        mlflow.log_params(registry.held_out_fingerprint(run))
        log_model(tiny_model_dir(tmp_path / "model"), toy_splits(store, n_structures=6, views=1), store)
    log_evaluation(EvalResult({m: middle for m in parts}, tmp_path / "eval"), champion.info.run_id)
    first = registry.register_and_promote(cfg, champion.info.run_id)
    assert first["promoted"]

    def never(*_args):
        raise AssertionError("same split: the champion is not re-evaluated")

    decision = registry.register_and_promote(cfg, result.run_id, evaluator=never)
    assert decision["same_split"] and decision["champion_value"] == pytest.approx(middle)
    assert decision["challenger_value"] == pytest.approx(kept), (decision["reason"], kept, last)
    assert decision["promoted"] == (kept > middle), decision["reason"]
