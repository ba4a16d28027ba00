"""A logged MLflow run: where its model folder, split and labels table live, and evaluating into it.

The one home of "rebuild things from a run" (like MatGL's ``utils/io.py`` for models): the model folder comes
from the artifact ``model_dir/`` (or a folder with ``model.json`` + ``weights.pt`` inside the pyfunc artifact
``model/``); the labels table and split from the params that ``tracking.log_pipeline_context`` logs
(``render.render_labels_key``, ``cfg.split.<field>``, ``split.n_images_test``). :func:`evaluate_into_run` is the
only place that evaluates a model and logs the result under ``evaluation/`` of a run, with the validation metrics
of that (kept, registered) model once more under :data:`EVALUATED_PREFIX`: the names promotion reads back
(:func:`evaluated_value`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np

from crystalvision.core import (
    SCORE_METRICS,
    ConfigError,
    CrystalVisionError,
    ModelError,
    PipelineConfig,
    SplitConfig,
)
from crystalvision.data import holdout_file_path, load_holdout, open_store
from crystalvision.stages.road import from_labels, is_kfold, prepare

if TYPE_CHECKING:  # the model and evaluation modules load torch: promotion's gate imports this module without it
    from crystalvision.evaluate import EvalResult
    from crystalvision.learn import CrystalNet, Prepared

log = logging.getLogger(__name__)

EVALUATION_ARTIFACT = "evaluation"
# Where a run keeps its labels table and test-split size: the names tracking.log_pipeline_context logs first,
# then older spellings.
LABELS_KEY_PARAMS = ("render.render_labels_key", "labels_key", "render.labels_key", "render_labels_key")
TEST_SIZE_PARAMS = ("split.n_images_test", "n_images_test")
SELECTION_SPLIT = "val"  # the split promotion scores: carved from the training structures, never the test rows
SELECTION_METRIC = "val_score"
# The evaluation of a run's own (kept, registered) model logs its validation metrics again under this prefix: training
# logs per-epoch metrics of the same names (val_r2_*, val_acc_*, ...), and MLflow's latest value of a name is the
# one at the highest step, the last epoch's. Promotion reads only these names.
EVALUATED_PREFIX = "model/"


def param(values: Mapping[str, str], *names: str) -> str | None:
    """The first of ``names`` present in ``values``."""
    return next((values[n] for n in names if n in values), None)


def find_model_folder(run_id: str, dst: Path) -> Path:
    """Download the run's model folder: artifact ``model_dir/``, else a folder with model.json under ``model/``."""
    from crystalvision.learn import SPEC_FILE, WEIGHTS_FILE
    from crystalvision.serve import MODEL_ARTIFACT, MODEL_DIR_ARTIFACT

    for artifact in (MODEL_DIR_ARTIFACT, MODEL_ARTIFACT):
        try:
            local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=str(dst)))
        except Exception as exc:  # MLflow raises different types per store for a missing artifact
            log.debug("run %s has no artifact %s (%s)", run_id, artifact, exc)
            continue
        for spec in sorted(local.rglob(SPEC_FILE)):
            if (spec.parent / WEIGHTS_FILE).is_file():
                return spec.parent
    raise ModelError(
        f"run {run_id} has no model to evaluate (no {SPEC_FILE} + {WEIGHTS_FILE} under artifacts "
        f"{MODEL_DIR_ARTIFACT}/ or {MODEL_ARTIFACT}/); train first"
    )


def load_run_model(run_id: str, dst: Path) -> CrystalNet:
    """The model logged in run ``run_id`` (downloaded into ``dst``)."""
    from crystalvision.learn import load_model

    folder = find_model_folder(run_id, dst)
    try:
        return load_model(folder)
    except ModelError as exc:
        raise ModelError(f"run {run_id}: {exc}") from exc


def split_config_from_params(params: Mapping[str, str], default: SplitConfig) -> SplitConfig:
    """The split the run logged (``cfg.split.<field>`` as tracking logs it, ``split.<field>``), else ``default``.
    A hold-out file logged relative to the checkout is read from this checkout, whatever the working dir.
    A ConfigError when the run's hold-out file no longer holds the ids it logged (``holdout.sha256``): the split
    rebuilt from it would not be the run's."""
    values = default.model_dump()
    for field in values:
        raw = param(params, f"cfg.split.{field}", f"split.{field}", f"split_{field}")
        if raw is not None:
            values[field] = raw
        nested = {k.rsplit(".", 1)[1]: v for k, v in params.items() if k.startswith(f"cfg.split.{field}.")}
        if nested:  # a mapping field (split.test_only, split.holdout) is logged flattened
            values[field] = nested
    if isinstance(values.get("holdout"), dict) and values["holdout"].get("ids"):  # logged relative to the checkout
        values["holdout"] = values["holdout"] | {"ids": str(holdout_file_path(values["holdout"]["ids"]))}
    split = SplitConfig.model_validate(values)
    logged = params.get("holdout.sha256")
    if split.holdout is not None and logged and (now := load_holdout(split.holdout.ids).sha256) != logged:
        raise ConfigError(
            f"the run's hold-out {split.holdout.ids} now has sha256 {now[:12]}, the run logged {logged[:12]}: its "
            "split cannot be rebuilt from it; restore the file the run used (git) and evaluate again"
        )
    return split


def logged_labels_key(params: Mapping[str, str], tags: Mapping[str, str]) -> str | None:
    """The labels table the run trained on, as logged (``render.render_labels_key``), or None."""
    return param({**tags, **params}, *LABELS_KEY_PARAMS)


def inputs_of_run(cfg: PipelineConfig, run: Any, model: CrystalNet) -> Prepared:
    """The run's own labels table and split, with ``model``'s spec; ``cfg`` only fills what the run did not log.

    A run without a logged labels key (made before it was logged) falls back to preparing ``cfg``'s data.
    """
    params, tags = run.data.params, run.data.tags
    split = split_config_from_params(params, cfg.split)
    key = logged_labels_key(params, tags)
    if key is None:
        log.info("run %s logged no labels key; preparing the data of the given config", run.info.run_id)
        key = prepare(cfg).labels_key
    fold = int(tags["fold"]) if "fold" in tags and is_kfold(split) else None  # a k-fold (or hold-out) child
    prepared = from_labels(cfg, open_store(), str(key), model.spec, split, fold)
    logged = param(params, *TEST_SIZE_PARAMS)
    if logged is not None and int(float(logged)) != len(prepared.splits.test):
        log.warning("rebuilt test split has %d images, the run logged %s", len(prepared.splits.test), logged)
    return prepared


def selection_score(metrics: Mapping[str, float]) -> float | None:
    """``val_score``: the mean of the validation counterparts of ``test_score``'s parts (None if one is missing)."""
    parts = [metrics.get(SELECTION_SPLIT + m.removeprefix("test")) for m in SCORE_METRICS]
    if any(p is None or not np.isfinite(p) for p in parts):
        return None
    return float(np.mean(parts))


def evaluated_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """The validation metrics of an evaluation, and its ``val_score``, under :data:`EVALUATED_PREFIX` (what
    :func:`log_evaluation` logs besides the plain names)."""
    out = {f"{EVALUATED_PREFIX}{k}": float(v) for k, v in metrics.items() if k.startswith(SELECTION_SPLIT + "_")}
    score = metrics.get(SELECTION_METRIC, selection_score(metrics))
    if score is not None:
        out[EVALUATED_PREFIX + SELECTION_METRIC] = float(score)
    return out


def evaluated_value(logged: Mapping[str, float], metric: str) -> float | None:
    """``metric`` of the run's evaluated model from a run's logged metrics (only the :data:`EVALUATED_PREFIX`
    names; ``val_score`` derived from them when absent), or None when the model was never evaluated."""
    own = {k.removeprefix(EVALUATED_PREFIX): v for k, v in logged.items() if k.startswith(EVALUATED_PREFIX)}
    value = own.get(metric)
    if value is None and metric == SELECTION_METRIC:
        return selection_score(own)
    return None if value is None else float(value)


def log_evaluation(result: EvalResult, run_id: str | None = None) -> None:
    """Log evaluation metrics and artifacts (under ``evaluation/``) into ``run_id``, else the active run. The
    validation metrics and ``val_score`` are logged once more as ``model/<name>`` (:func:`evaluated_metrics`):
    names no training epoch logs, which promotion reads."""
    values = result.metrics | evaluated_metrics(result.metrics)
    if run_id is None:
        mlflow.log_metrics(values)
        mlflow.log_artifacts(str(result.artifacts_dir), artifact_path=EVALUATION_ARTIFACT)
        return
    client = mlflow.MlflowClient()
    now = _now_ms()
    metrics = [mlflow.entities.Metric(k, float(v), now, 0) for k, v in values.items()]
    for start in range(0, len(metrics), 1000):  # MLflow's batch limit
        client.log_batch(run_id, metrics=metrics[start : start + 1000])
    client.log_artifacts(run_id, str(result.artifacts_dir), EVALUATION_ARTIFACT)


def report_dir(run_id: str | None) -> Path:
    """Where a run's evaluation artifacts stay on this machine: ``<home>/reports/<run id>/evaluation``."""
    from crystalvision.core import get_settings

    active = mlflow.active_run()
    name = run_id or (active.info.run_id if active else time.strftime("%Y%m%dT%H%M%S"))
    return get_settings().paths.home / "reports" / name / EVALUATION_ARTIFACT


def evaluate_into_run(model: CrystalNet, prepared: Prepared, run_id: str | None = None) -> EvalResult:
    """Evaluate ``model`` on ``prepared``'s split and log metrics + ``evaluation/`` artifacts into the run (the
    active one when ``run_id`` is None); the artifacts also stay in :func:`report_dir` (the HTML report a person
    opens)."""
    from crystalvision.evaluate import evaluate_model

    out = report_dir(run_id)
    if out.exists():
        shutil.rmtree(out)
    result = evaluate_model(model, prepared.splits, prepared.store, prepared.cfg, out, records=prepared.records)
    log_evaluation(result, run_id)
    return result


def evaluate_logged_run(cfg: PipelineConfig, run_id: str) -> dict[str, Any]:
    """Evaluate the model logged in MLflow run ``run_id`` on its own split; log metrics + artifacts into it."""
    from crystalvision.track import configure_mlflow

    configure_mlflow()
    try:
        run = mlflow.get_run(run_id)
    except mlflow.exceptions.MlflowException as exc:
        raise CrystalVisionError(f"MLflow run {run_id} not found ({exc}); pass the run id of a training run") from exc
    with tempfile.TemporaryDirectory(prefix="crystalvision-run-") as tmp:
        model = load_run_model(run_id, Path(tmp) / "model")
        prepared = inputs_of_run(cfg, run, model)
        result = evaluate_into_run(model, prepared, run_id)
    log.info("logged %d metrics and the evaluation artifacts into run %s", len(result.metrics), run_id)
    return {
        "run_id": run_id,
        "metrics": result.metrics,
        "artifact_path": EVALUATION_ARTIFACT,
        "split": prepared.splits.describe(),
    }


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
