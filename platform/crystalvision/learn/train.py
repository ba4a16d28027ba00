"""Training on Ray Train (V2 API), the driver's side: EfficientNet-B0 with four heads, data-parallel over Ray Data
shards.

:func:`train_model` standardises the targets, builds the Ray datasets and the ``TorchTrainer`` around
:func:`crystalvision.learn.train_worker.train_loop_per_worker` (what each worker runs: the core epoch loop of
:mod:`crystalvision.learn.loop`, checkpoints through ``ray.train.report``), then saves the best model and logs the final
metrics. A worker failure restarts the group from the latest checkpoint (``FailureConfig``); launching again with
the same ``name`` and storage path resumes the run the same way.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from crystalvision.core import TARGETS_REGRESSION, ConfigError, TrainConfig, get_settings, progress
from crystalvision.data import Splits, filesystem_for, is_s3, to_ray_dataset
from crystalvision.learn import trainprogress
from crystalvision.learn.loop import EvalAccumulator, multitask_loss  # noqa: F401 - re-exported
from crystalvision.learn.model import CrystalNet, ModelSpec, save_model
from crystalvision.learn.selection import LoopState, NonFiniteLossError
from crystalvision.learn.train_worker import (
    BEST_FILE,
    MLFLOW_FLUSH_TIMEOUT_S,
    MLFLOW_WAIT_S,
    STATE_FILE,
    train_loop_per_worker,
)
from crystalvision.ops import TRAIN_LEASE_ENV, LockedError, holder, lease_lock, renewed_on_progress, train_fault

if TYPE_CHECKING:
    from crystalvision.learn.prepared import Prepared

log = logging.getLogger(__name__)

NCCL_TIMEOUT_S = 120  # collectives that wait longer fail instead of hanging (Ray's default is 30 minutes)
# Test hook: "rank=1,epoch=2,step=1" makes that worker exit hard there, once per run name (a marker file).
FAULT_ENV = "CRYSTALVISION_TRAIN_FAULT"
# Env overrides of how long the end of training waits for MLflow logging held back by an outage, and how long one
# logging call waits for an unreachable MLflow (defaults: train_worker.MLFLOW_FLUSH_TIMEOUT_S / MLFLOW_WAIT_S).
FLUSH_TIMEOUT_ENV = "CRYSTALVISION_MLFLOW_FLUSH_TIMEOUT_S"
MLFLOW_WAIT_ENV = "CRYSTALVISION_MLFLOW_WAIT_S"


@dataclass
class TrainResult:
    """What training produced: the best model's folder, per-epoch history, best epoch and its metrics."""

    model_dir: Path
    history: list[dict[str, float]]
    best_epoch: int
    metrics: dict[str, float]
    checkpoint_path: str | None = None
    name: str = ""


# ---- the driver ---------------------------------------------------------------------------------------------------


def standardise_targets(splits: Splits, spec: ModelSpec) -> dict[str, pd.DataFrame]:
    """Set ``spec.target_mean/std`` from the train split; return train/val frames with standardised targets."""
    for t in TARGETS_REGRESSION:
        values = splits.train[t].astype(float)
        std = float(values.std(ddof=0))
        spec.target_mean[t] = float(values.mean())
        spec.target_std[t] = std if std > 1e-12 and np.isfinite(std) else 1.0
    frames = {}
    for name, df in (("train", splits.train), ("val", splits.val)):
        df = df.copy()
        for t in TARGETS_REGRESSION:
            df[t] = (df[t].astype(float) - spec.target_mean[t]) / spec.target_std[t]
        frames[name] = df
    return frames


def ray_storage(name: str) -> tuple[str, Any, str]:
    """Where Ray Train and Tune keep run ``name``: (storage path, pyarrow filesystem or None, full run path).

    ``settings.ray.ray_storage_path`` is a local folder (created) or an ``s3://`` URI (with the store's filesystem).
    """
    storage = get_settings().ray.ray_storage_path
    if is_s3(storage):
        fs, path = filesystem_for(storage)
        return path, fs, f"{path}/{name}"
    Path(storage).mkdir(parents=True, exist_ok=True)
    return storage, None, str(Path(storage) / name)


def _run_config(name: str, tcfg: TrainConfig, callbacks: list | None):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig

    storage, fs, _ = ray_storage(name)
    return RunConfig(
        name=name,
        storage_path=storage,
        storage_filesystem=fs,
        failure_config=FailureConfig(max_failures=tcfg.max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=2),
        callbacks=list(callbacks or []),
    )


def _start_ray(prepared: Prepared) -> None:
    """Ray, with a local cluster's object store sized for this run's decoded images."""
    from crystalvision.ops import ensure_ray

    ensure_ray(data_bytes=sum(len(df) for _, df in prepared.splits.items()) * prepared.spec.image_size**2 * 3)


def make_trainer(
    prepared: Prepared,
    run_id: str | None,
    name: str,
    callbacks: list | None,
    tracking_uri: str | None = None,
    progress_queue: Any = None,
    beat_s: float = 30.0,
):
    """The TorchTrainer for a run (datasets built and standardised; ``prepared.spec`` gets the target scaling).

    Workers log into ``run_id`` at ``tracking_uri`` (default: the settings'), passed in the loop config; rank 0 puts
    heartbeats on ``progress_queue`` (:func:`trainprogress.reporting`'s) at most every ``beat_s``. Ray is running
    (:func:`train_model` starts it, sized for the run).
    """
    from ray.train import DataConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    tcfg, spec = prepared.cfg.train, prepared.spec
    if tcfg.use_gpu:
        require_gpus(tcfg.num_workers)
    frames = standardise_targets(prepared.splits, spec)
    datasets = {k: to_ray_dataset(df, prepared.store, spec.image_size) for k, df in frames.items()}
    resources = {"CPU": tcfg.cpus_per_worker} | ({"GPU": 1} if tcfg.use_gpu else {})
    loop_config = {
        "train": tcfg.model_dump(mode="json"),
        "spec": spec.model_dump(mode="json"),
        "tracking_uri": (tracking_uri or get_settings().tracking.mlflow_tracking_uri) if run_id else None,
        "run_id": run_id,
        "threads_per_worker": max(1, int(tcfg.cpus_per_worker)),
        "n_images": len(frames["train"]) + len(frames["val"]),
        "fault": train_fault(os.environ.get(FAULT_ENV), name, ray_storage(name)),
        "mlflow_flush_timeout_s": _flush_timeout(),
        "mlflow_wait_s": _wait(),
        "progress_queue": progress_queue,
        "beat_s": beat_s,
    }
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=tcfg.num_workers, use_gpu=tcfg.use_gpu, resources_per_worker=resources
        ),
        torch_config=TorchConfig(backend="nccl" if tcfg.use_gpu else "gloo", timeout_s=NCCL_TIMEOUT_S),
        run_config=_run_config(name, tcfg, callbacks),
        datasets=datasets,
        # one worker reads the whole split: no streaming_split, so no SplitCoordinator actor per dataset (~200 MB)
        dataset_config=DataConfig(datasets_to_split=[] if tcfg.num_workers == 1 else "all"),
    )


def _flush_timeout() -> float:
    return float(os.environ.get(FLUSH_TIMEOUT_ENV, MLFLOW_FLUSH_TIMEOUT_S))


def _wait() -> float:
    return float(os.environ.get(MLFLOW_WAIT_ENV, MLFLOW_WAIT_S))


def require_gpus(workers: int) -> None:
    """Fail in seconds, naming cause and fix, when a local Ray cluster has fewer GPUs than GPU workers asked for
    (a remote cluster may scale a GPU group up from zero: there the run waits, with a warning)."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    if gpus < workers and (get_settings().ray.ray_address or os.environ.get("RAY_ADDRESS")):
        log.warning(
            "%d GPU worker(s) asked for, the cluster has %g GPU(s) now: waiting for the autoscaler", workers, gpus
        )
    elif gpus < workers:
        raise ConfigError(
            f"train.use_gpu=true asks for {workers} GPU worker(s) but the Ray cluster has {gpus:g} GPU(s) "
            f"(torch sees {torch.cuda.device_count()} here); run on GPU nodes (ray start --num-gpus), lower "
            "train.num_workers, or set train.use_gpu=false"
        )


@functools.cache
def code_version() -> str:
    """The package version and a hash of its Python sources: a code change starts new runs instead of resuming
    checkpoints written by other code."""
    from crystalvision.core import __version__

    package = Path(__file__).parents[1]  # the crystalvision package (this file is learn/train.py)
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"


def content_digest(prepared: Prepared) -> str:
    """What a training run is made of: config hash, snapshot sha, labels table, the split's images, the fold and the
    code version (16 hex digits). Train runs and Tune sweeps are named from it."""
    cfg, splits = prepared.cfg, prepared.splits
    snapshot = prepared.snapshot.manifest.content_sha256 if prepared.snapshot is not None else None
    fold = getattr(splits, "fold", None)
    parts = [cfg.config_hash(), snapshot or prepared.spec.snapshot_sha256 or "", prepared.labels_key or ""]
    parts += [splits.protocol, str(splits.seed), str(fold), code_version()]
    for _, df in splits.items():
        keys = df.get("image_key", df.index)
        parts.append(hashlib.sha256("\n".join(sorted(map(str, keys))).encode()).hexdigest())
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def run_name(prepared: Prepared) -> str:
    """The Ray Train run name of ``prepared``'s training, from :func:`content_digest`. A relaunch of the same
    pipeline after a crash gets the same name and resumes from its latest checkpoint; any change in content or code
    starts a new run."""
    fold = getattr(prepared.splits, "fold", None)
    return f"{prepared.cfg.name}-{content_digest(prepared)}" + (f"-fold{fold}" if fold is not None else "")


def worker_start_timeout_s() -> float:
    """How long Ray Train waits for its worker group to start (placement, a GPU node scaling up) before it counts a
    failure: ``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S``, Ray's default 60 s."""
    try:
        return float(os.environ.get("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", 60))
    except ValueError:
        return 60.0


def run_lock_path(name: str) -> Path:
    """The lease lock on Ray Train run ``name`` (under ``CRYSTALVISION_HOME``): one writer of its checkpoints."""
    return get_settings().paths.home / "locks" / "train" / f"{name}.lock"


def train_model(
    prepared: Prepared,
    run_id: str | None = None,
    *,
    name: str | None = None,
    callbacks: list | None = None,
    model_dir: str | Path | None = None,
    tracking_uri: str | None = None,
) -> TrainResult:
    """Train on ``prepared`` (config, splits, store, spec) with Ray Train; save the best model into ``model_dir``.

    ``name`` identifies the Ray Train run under ``settings.ray.ray_storage_path``: the same name resumes from its
    latest checkpoint (default: :func:`run_name`, from the content, so a relaunched pipeline resumes). Rank 0 logs
    per-epoch metrics (best-effort, buffered) into the MLflow run ``run_id``; ``callbacks``
    (``ray.train.UserCallback``) go to ``RunConfig``.
    """
    cfg, splits, spec = prepared.cfg, prepared.splits, prepared.spec
    name = name or run_name(prepared)
    tracking_uri = tracking_uri or get_settings().tracking.mlflow_tracking_uri
    log.info(
        "training %s: %d workers, gpu=%s, %d train / %d val images",
        name,
        cfg.train.num_workers,
        cfg.train.use_gpu,
        len(splits.train),
        len(splits.val),
    )
    lock = run_lock_path(name)
    _start_ray(prepared)
    try:
        with lease_lock(lock, env=TRAIN_LEASE_ENV) as lease:
            if lease is None:
                raise LockedError(
                    f"Ray Train run {name} is being written by another process ({holder(lock)}; lock {lock}); "
                    "wait for it to finish, or stop it and run again (this run then resumes its checkpoints)"
                )
            start_wait_s = worker_start_timeout_s()
            with renewed_on_progress(lease), trainprogress.reporting(cfg.train.epochs, start_wait_s) as (shown, q):
                # Ray Train starts its workers (or fails after its own start timeout) before the first heartbeat
                progress.beat("train", step="starting workers", wait_s=start_wait_s)
                trainer = make_trainer(prepared, run_id, name, [*(callbacks or []), *shown], tracking_uri, q,
                                       beat_s=max(0.1, lease.lease_s / 10))  # fmt: skip
                result = trainer.fit()
    except Exception as exc:  # Ray wraps the worker's error; surface a diverged run as its own clear error
        diverged = re.search(r"training diverged: [^\n]*", str(exc))
        if diverged:
            raise NonFiniteLossError(f"run {name}: {diverged.group(0)}") from exc
        raise
    if result.checkpoint is None:
        raise RuntimeError(f"training run {name} reported no checkpoint")
    out = Path(model_dir) if model_dir else get_settings().paths.home / "models" / name
    state, best = _read_final_checkpoint(result.checkpoint)
    model = CrystalNet(spec)
    model.load_state_dict(best)
    save_model(model, out)
    metrics = _final_metrics(state)
    _log_driver_side(run_id, tracking_uri, spec, metrics, name)
    log.info("trained %s: best epoch %d, %s", name, state.best_epoch, metrics)
    return TrainResult(out, state.history, state.best_epoch, metrics, result.checkpoint.path, name)


def _read_final_checkpoint(checkpoint) -> tuple[LoopState, dict]:
    with checkpoint.as_directory() as d:
        blob = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
        best = torch.load(Path(d) / BEST_FILE, map_location="cpu", weights_only=True)
    return LoopState(**blob["loop"]), best


def _final_metrics(state: LoopState) -> dict[str, float]:
    best = next((h for h in state.history if int(h["epoch"]) == state.best_epoch), state.history[-1])
    out = {k: float(v) for k, v in best.items() if k.startswith("val_")}
    out |= {"best_epoch": float(state.best_epoch), "epochs_trained": float(state.epoch)}
    out["stopped_early"] = float(state.stopped)
    out["optimiser_steps"] = float(sum(h.get("train_steps", 0.0) for h in state.history))  # this rank's, all epochs
    return out


def _log_driver_side(run_id: str | None, tracking_uri: str, spec: ModelSpec, metrics: dict, name: str) -> None:
    if not run_id:
        return
    from crystalvision.track import worker_logger

    mlog = worker_logger(tracking_uri, run_id, rank=0, wait_s=_wait())
    params = {f"target_mean.{t}": v for t, v in spec.target_mean.items()}
    params |= {f"target_std.{t}": v for t, v in spec.target_std.items()} | {"ray_train_run_name": name}
    mlog.log_params(params)
    mlog.log_metrics({f"final_{k}": v for k, v in metrics.items()}, step=int(metrics["epochs_trained"]))
    mlog.close(timeout=_flush_timeout())
