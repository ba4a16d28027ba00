"""Hyper-parameter sweep: Ray Tune over the Ray Train trainer (:func:`crystalvision.learn.train.train_model`).

Each Tune trial is a small driver that runs one ``TorchTrainer`` (Ray Train V2) and forwards its per-epoch reports
to Tune with ``TuneReportCallback``. The search space is the learning rate (log-uniform) and the four loss weights
(uniform in ``tune.loss_weight_range``); ASHA stops poor trials after ``grace_period`` epochs; Optuna proposes
trials when ``tune.search == "optuna"`` (:mod:`crystalvision.app.tunesearch`, restorable after a kill mid-save).
Concurrency is bounded by the cluster's CPUs (and GPUs).

MLflow: one parent run per sweep, each trial a nested child run (params, per-epoch metrics, the trained model as a
pyfunc); the best trial's config and metrics go on the parent. The sweep is named after the content digest that
names Ray Train runs (config, snapshot, labels, split, code), so running the same config on the same data again
resumes an interrupted sweep with ``Tuner.restore`` (and reuses its parent run); new data starts a new sweep.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

from crystalvision.core import TARGETS, PipelineConfig, get_settings, progress
from crystalvision.learn import Prepared, content_digest, ray_storage
from crystalvision.stages import prepare
from crystalvision.track import PARENT_TAG, TRIAL_TAG, child_run, close_child_runs, start_parent_run

log = logging.getLogger(__name__)


class SweepInterrupted(KeyboardInterrupt):
    """The sweep stopped before every trial finished (Ctrl-C or SIGTERM); its state is saved for a rerun."""


TRIAL_DRIVER_CPUS = 0.25  # a trial only drives its Train run; its workers hold the real resources
_TRIAL_PARAM_PREFIXES = ("cfg.train.lr", "cfg.train.loss_weights")
# Settings every trial process needs (it may outlive or not share the driver's environment).
_SETTINGS_ENV = {
    "CRYSTALVISION_HOME": lambda s: str(s.paths.home),
    "CRYSTALVISION_MLFLOW_ARTIFACT_LOCATION": lambda s: s.tracking.mlflow_artifact_location,
    "CRYSTALVISION_OBJECT_STORE_URI": lambda s: s.storage.object_store_uri,
    "CRYSTALVISION_RAY_STORAGE_PATH": lambda s: s.ray.ray_storage_path,
}


def search_space(cfg: PipelineConfig) -> dict[str, Any]:
    """lr log-uniform in [lr_min, lr_max]; ``w_<target>`` uniform in ``loss_weight_range`` for each head."""
    from ray import tune

    lo, hi = cfg.tune.loss_weight_range
    return {"lr": tune.loguniform(cfg.tune.lr_min, cfg.tune.lr_max)} | {f"w_{t}": tune.uniform(lo, hi) for t in TARGETS}


def trial_config(cfg: PipelineConfig, params: dict[str, Any]) -> PipelineConfig:
    """The pipeline config of one trial: the sampled lr and loss weights put into ``train``."""
    weights = {t: float(params[f"w_{t}"]) for t in TARGETS}
    train = cfg.train.model_copy(update={"lr": float(params["lr"]), "loss_weights": weights})
    return cfg.model_copy(update={"train": train})


def max_concurrent_trials(cfg: PipelineConfig, resources: dict[str, float]) -> int:
    """``tune.max_concurrent`` bounded by how many trials the cluster can run at once."""
    per_trial_cpu = TRIAL_DRIVER_CPUS + cfg.train.num_workers * cfg.train.cpus_per_worker
    bound = int(resources.get("CPU", 1) // per_trial_cpu)
    if cfg.train.use_gpu:
        bound = min(bound, int(resources.get("GPU", 0) // cfg.train.num_workers))
    return max(1, min(cfg.tune.max_concurrent, bound))


def sweep_name(prepared: Prepared) -> str:
    """From the content, as Ray Train run names are (:func:`crystalvision.learn.train.content_digest`: config, snapshot,
    labels, split, code): the same content resumes the same sweep, new data or code starts a new one."""
    return f"tune-{prepared.cfg.name}-{content_digest(prepared)}"


# ---- inside a trial (a Ray actor) ---------------------------------------------------------------------------------


def run_trial(params: dict[str, Any], ctx: dict[str, Any]) -> None:
    """One Tune trial: train with the sampled params (reports reach Tune per epoch), log the model to MLflow."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from crystalvision.learn import train_model
    from crystalvision.serve import log_model

    os.environ.update(ctx["env"])
    get_settings.cache_clear()
    trial_id = tune.get_context().get_trial_id()
    base: Prepared = ctx["prepared"]
    prepared = base.with_config(trial_config(base.cfg, params)).with_spec_copy()
    mlflow.set_tracking_uri(ctx["tracking_uri"])
    client = MlflowClient(ctx["tracking_uri"])
    trial_params = {"cfg.train.lr": params["lr"]} | {f"cfg.train.loss_weights.{t}": params[f"w_{t}"] for t in TARGETS}
    run_id = child_run(client, client.get_run(ctx["parent_run_id"]), trial_id, trial_params, ctx["inherited"])
    name = f"{ctx['sweep']}-{trial_id}"
    model_dir = Path(ctx["env"]["CRYSTALVISION_HOME"]) / "models" / name
    result = train_model(
        prepared,
        run_id=run_id,
        name=name,
        callbacks=[TuneReportCallback()],
        model_dir=model_dir,
        tracking_uri=ctx["tracking_uri"],
    )
    with mlflow.start_run(run_id=run_id):
        log_model(result.model_dir, prepared.splits, prepared.store)
    client.set_terminated(run_id, "FINISHED")


# ---- the driver -------------------------------------------------------------------------------------------------


def _trial_context(prepared: Prepared, parent: Any) -> dict:
    settings = get_settings()
    params = {k: v for k, v in parent.data.params.items() if not k.startswith(_TRIAL_PARAM_PREFIXES)}
    tags = {k: v for k, v in parent.data.tags.items() if not k.startswith("mlflow.") and k != PARENT_TAG}
    return {
        "prepared": prepared.for_workers(),
        "sweep": parent.data.tags[PARENT_TAG],
        "parent_run_id": parent.info.run_id,
        "tracking_uri": settings.tracking.mlflow_tracking_uri,
        "env": {k: get(settings) for k, get in _SETTINGS_ENV.items()},
        "inherited": {"params": params, "tags": tags},
    }


def _make_tuner(cfg: PipelineConfig, trainable: Any, sweep: str, resources: dict[str, float]) -> Any:
    """A new Tuner, or the interrupted sweep of the same name restored."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from crystalvision.app.tuneprogress import TrialProgress

    storage, fs, path = ray_storage(sweep)
    if tune.Tuner.can_restore(path, storage_filesystem=fs):
        log.info("resuming sweep %s from %s", sweep, path)
        return tune.Tuner.restore(path, trainable, resume_errored=True, storage_filesystem=fs)
    search_alg = None
    if cfg.tune.search == "optuna":
        from crystalvision.app.tunesearch import ResumableOptunaSearch

        search_alg = ResumableOptunaSearch(metric=cfg.tune.metric, mode=cfg.tune.mode, seed=cfg.train.seed)
    # max_t beyond the last epoch: a trial that reaches it ends by itself (saving and logging its model) instead of
    # being stopped by the scheduler right after its last report
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        max_t=cfg.train.epochs + 1,
        grace_period=min(cfg.tune.grace_period, cfg.train.epochs),
    )
    concurrency = max_concurrent_trials(cfg, resources)
    log.info("sweep %s: %d trials, %d at a time, search=%s", sweep, cfg.tune.num_samples, concurrency, cfg.tune.search)
    return tune.Tuner(
        trainable,
        param_space=search_space(cfg),
        tune_config=tune.TuneConfig(
            metric=cfg.tune.metric,
            mode=cfg.tune.mode,
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=cfg.tune.num_samples,
            max_concurrent_trials=concurrency,
        ),
        run_config=tune.RunConfig(
            name=sweep,
            storage_path=storage,
            storage_filesystem=fs,
            verbose=0,
            callbacks=[TrialProgress(cfg.tune.num_samples, cfg.tune.metric, cfg.tune.mode)],
        ),
    )


def _best_row(result: Any, metric: str, mode: str) -> dict[str, float]:
    """The best reported epoch of a trial, numeric values only."""
    df = result.metrics_dataframe
    if df is None or df.empty or metric not in df:
        return {}
    row = df.loc[df[metric].idxmin() if mode == "min" else df[metric].idxmax()]
    return {k: float(v) for k, v in row.items() if isinstance(v, int | float) and math.isfinite(float(v))}


def _trial_id_from_path(path: str | None) -> str | None:
    """Tune's trial id (e.g. ``9e8a8_00001``) from a trial folder name such as ``run_trial_9e8a8_00001_1_lr=...``."""
    match = re.search(r"_([0-9a-f]{5}_\d{5})(?:_|$)", Path(path).name) if path else None
    return match.group(1) if match else None


def _pick_best(results: Any, runs: dict[str, Any], metric: str, mode: str) -> tuple[Any, Any, dict[str, float]]:
    """(result, MLflow run, best epoch's metrics) of the best trial that finished and logged its model."""
    scored = []
    for result in results:
        run = runs.get((result.metrics or {}).get("trial_id") or _trial_id_from_path(result.path))
        row = _best_row(result, metric, mode)
        if not row and run is not None:
            # A trial restored at its last epoch reports nothing new to Tune; its MLflow run has the metrics.
            row = {k: float(v) for k, v in run.data.metrics.items() if math.isfinite(float(v))}
        if run is not None and run.info.status == "FINISHED" and metric in row:
            scored.append((row[metric], result, run, row))
    if not scored:
        raise RuntimeError(f"no trial of the sweep finished with a '{metric}'; see the trial errors in the logs")
    _value, result, run, row = (min if mode == "min" else max)(scored, key=lambda item: item[0])
    return result, run, row


def _summarise(cfg: PipelineConfig, results: Any, client: MlflowClient, parent: Any) -> dict[str, Any]:
    """Log the best trial's config and metrics on the parent run and return the sweep summary."""
    metric, mode = cfg.tune.metric, cfg.tune.mode
    sweep = parent.data.tags[PARENT_TAG]
    runs = close_child_runs(client, parent.info.experiment_id, sweep)
    best, best_run, best_metrics = _pick_best(results, runs, metric, mode)
    best_id, best_run_id = best_run.data.tags[TRIAL_TAG], best_run.info.run_id
    client.log_batch(
        parent.info.run_id,
        metrics=[mlflow.entities.Metric(f"best_{k}", v, 0, 0) for k, v in best_metrics.items() if "time" not in k],
        params=[mlflow.entities.Param(f"best.{k}", str(v)) for k, v in best.config.items()],
        tags=[mlflow.entities.RunTag("best_trial_id", best_id), mlflow.entities.RunTag("best_run_id", best_run_id)],
    )
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "trials.csv"
        results.get_dataframe(filter_metric=metric, filter_mode=mode).to_csv(table, index=False)
        client.log_artifact(parent.info.run_id, str(table), "tune")
    client.set_terminated(parent.info.run_id, "FINISHED")
    return {
        "sweep": sweep,
        "metric": metric,
        "experiment_id": parent.info.experiment_id,
        "parent_run_id": parent.info.run_id,
        "n_trials": len(results),
        "n_errors": results.num_errors,
        "n_stopped_early": sum(1 for r in runs.values() if r.info.status == "KILLED"),
        "best_trial_id": best_id,
        "best_run_id": best_run_id,
        "best_config": best.config,
        "best_metrics": {k: v for k, v in best_metrics.items() if k.startswith(("val_", "train_", metric))},
        "model_uri": f"runs:/{best_run_id}/model",
    }


def tune_model(
    prepared: Prepared,
    tags: dict[str, str] | None = None,
    context: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the sweep on ``prepared`` (config, splits, store, spec).

    ``tags`` go on the parent run; ``context`` (optional) logs the pipeline context into it. Trials inherit both,
    so the registry can tell which held-out split a trial's model was trained for.
    """
    import ray
    from ray import tune

    from crystalvision.ops import ensure_ray
    from crystalvision.track import tracking

    ensure_ray(include_dashboard=True)
    cfg = prepared.cfg
    experiment_id = tracking.configure_mlflow()
    client = MlflowClient()
    sweep = sweep_name(prepared)
    context = context or (lambda: tracking.log_params_safe(tracking.flatten(tracking.logged_config(cfg), prefix="cfg")))
    parent_id = start_parent_run(client, experiment_id, sweep, tags, context)
    parent = client.get_run(parent_id)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, ctx=_trial_context(prepared, parent)),
        {"CPU": TRIAL_DRIVER_CPUS},
    )
    tuner = _make_tuner(cfg, trainable, sweep, ray.cluster_resources())
    results, interrupted = _fit(tuner)
    if interrupted:
        raise SweepInterrupted(f"sweep {sweep} stopped; its state is saved: run the same command again to resume it")
    progress.finish("tune", trials=len(results))
    if results.num_terminated == 0 and results.num_errors:
        client.set_terminated(parent_id, "FAILED")
        raise RuntimeError(f"every trial of sweep {sweep} failed; first error: {results.errors[0]}")
    summary = _summarise(cfg, results, client, parent)
    log.info("sweep %s done: %s", sweep, json.dumps(summary, default=str))
    return summary


def _fit(tuner: Any) -> tuple[Any, bool]:
    """``tuner.fit()`` with Tune's tables on stderr (the CLI prints JSON on stdout); and whether Ctrl-C stopped it.

    Ctrl-C (SIGTERM too, under the CLI) stops the sweep as Tune's own handler would (through the SIGUSR1 handler
    Tune keeps while it runs: trials stopped, state saved for a rerun), but remembered here, so an interrupted
    sweep is never summarised, evaluated or registered; a second Ctrl-C stops at once. The SIGINT and SIGUSR1
    handlers are as before afterwards (Tune would leave its own, and a later Ctrl-C would be ignored)."""
    if threading.current_thread() is not threading.main_thread():
        with contextlib.redirect_stdout(sys.stderr):
            return tuner.fit(), False
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGUSR1)}
    stops: list[int] = []

    def stop(signum: int, frame: Any) -> None:
        stops.append(signum)
        tune_stop = signal.getsignal(signal.SIGUSR1)
        if len(stops) > 1 or not callable(tune_stop) or tune_stop is saved[signal.SIGUSR1]:
            raise KeyboardInterrupt
        tune_stop(signum, frame)

    signal.signal(signal.SIGINT, stop)
    disabled = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours stands in for it
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return tuner.fit(), bool(stops)
    finally:
        if disabled is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = disabled
        for signum, handler in saved.items():
            if handler is not None:
                signal.signal(signum, handler)


def run_tune(cfg: PipelineConfig) -> dict[str, Any]:
    """``crystalvision tune``: prepare the data, sweep, then evaluate and register the best trial's model."""
    from crystalvision.ops import ensure_ray
    from crystalvision.track import tracking

    ensure_ray(include_dashboard=True)  # before the render stage starts Ray without it
    prepared = prepare(cfg)
    summary = tune_model(
        prepared,
        tags=tracking.pipeline_tags(cfg, prepared.snapshot),
        context=lambda: tracking.log_pipeline_context(
            cfg, prepared.snapshot, prepared.selection, prepared.render, prepared.splits
        ),
    )
    snapshot = prepared.snapshot
    if snapshot is not None and prepared.selection is not None:
        summary |= {"snapshot_id": snapshot.manifest.snapshot_id, "n_structures": len(prepared.selection.records)}
    if prepared.render is not None:
        summary["render"] = prepared.render.summary()
    if summary["best_run_id"] and "evaluate" in cfg.stages:
        from crystalvision.stages import evaluate_into_run, load_run_model

        progress.emit("evaluate", 0, None)
        with tempfile.TemporaryDirectory(prefix="crystalvision-tune-eval-") as tmp:
            model = load_run_model(summary["best_run_id"], Path(tmp))
        summary["test_metrics"] = evaluate_into_run(model, prepared, summary["best_run_id"]).metrics
        progress.finish("evaluate")
    if summary["best_run_id"] and "register" in cfg.stages and cfg.registry.enabled:
        from crystalvision.promote import register_and_promote

        progress.emit("register", 0, None)
        summary["registry"] = register_and_promote(cfg, summary["best_run_id"], prepared=prepared)
        progress.finish("register")
    else:
        why = "registry.enabled is false" if cfg.registry.enabled else "`register` is not in the config's stages"
        summary["registry"] = {"registered": False, "reason": why}
    return summary
