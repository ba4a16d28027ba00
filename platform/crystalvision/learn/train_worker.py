"""What each Ray Train worker runs: the core epoch loop (:mod:`crystalvision.learn.loop`) around Ray Data shards.

Every epoch each worker trains on its shard of ``train`` (one pass, or ``train.steps_per_epoch`` steps over as many
reshuffled passes as that takes), all workers validate on their shards of ``val`` and
sum their statistics (so every rank takes the same early-stopping decision), and rank 0 writes a checkpoint
(model, optimizer, scaler, epoch, best-so-far weights, early-stopping counter, history) through
``ray.train.report``; rank 0 also logs per-epoch metrics to MLflow (:mod:`crystalvision.track.worker_logging`)
and sends heartbeats to the driver (start-up, training and validation batches, checkpoints; at most every
``beat_s``) that renew the driver's leases (:mod:`crystalvision.learn.trainprogress`). The driver's side (trainer,
datasets, final model) is :mod:`crystalvision.learn.train`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from crystalvision.core import TARGET_COLUMNS, TrainConfig
from crystalvision.learn.accel import PASS_SEED_STRIDE, HeldSplit, cycled, keep_split
from crystalvision.learn.loop import Engine, dist_ready, fit
from crystalvision.learn.model import CrystalNet, ModelSpec
from crystalvision.learn.selection import LoopState
from crystalvision.learn.trainprogress import beater
from crystalvision.ops import maybe_exit_worker

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
BEST_FILE = "best_model.pt"
MLFLOW_FLUSH_TIMEOUT_S = 60.0  # how long the end of training waits for logging held back by an MLflow outage
MLFLOW_WAIT_S = 5.0  # how long one logging call waits for an unreachable MLflow before training goes on


def _check_device(tcfg: TrainConfig, device: torch.device) -> None:
    """Fail at once, naming cause and fix, when a GPU run has no GPU or its NCCL group cannot communicate."""
    if tcfg.use_gpu and (device.type != "cuda" or not torch.cuda.is_available()):
        raise RuntimeError(
            f"train.use_gpu=true but this Ray Train worker sees no CUDA device (device {device}, "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}, torch {torch.__version__}); "
            "install a CUDA build of torch on the GPU nodes, or set train.use_gpu=false"
        )
    if device.type == "cuda" and dist_ready():
        try:
            probe = torch.ones(1, device=device)
            torch.distributed.all_reduce(probe)
            torch.cuda.synchronize(device)
        except Exception as exc:
            raise RuntimeError(
                f"NCCL process group cannot communicate ({type(exc).__name__}: {exc}); check that every worker "
                "has its own GPU, NCCL_SOCKET_IFNAME/NCCL_IB_DISABLE for the network, or set train.use_gpu=false"
            ) from exc


def _setup_worker(config: dict[str, Any]) -> tuple[int, Engine]:
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(config["threads_per_worker"])))
    torch.manual_seed(config["train"]["seed"])
    tcfg = TrainConfig.model_validate(config["train"])
    spec = ModelSpec.model_validate(config["spec"])
    device = ray.train.torch.get_device()
    _check_device(tcfg, device)
    model = CrystalNet(spec, tcfg.pretrained_checkpoint, pretrained=tcfg.pretrained)
    wrap = ray.train.torch.prepare_model if world > 1 else None
    engine = Engine(model, tcfg, device, world=world, rank=rank, wrap=wrap, label_columns=TARGET_COLUMNS)
    return rank, engine


def _data_sources(config: dict[str, Any], engine: Engine):
    """Per-epoch train batches and validation batches of this worker's Ray Data shards: read once and then held
    (on the GPU, or in host memory on CPU workers up to ``train.host_data_max_mb``) when ``device_data`` says so,
    so later epochs do no Ray Data work and decode nothing; else streamed each epoch (prefetched, pinned host
    memory on CUDA)."""
    import ray.train

    tcfg, device, rank = engine.tcfg, engine.device, engine.rank
    shards = {k: ray.train.get_dataset_shard(k) for k in ("train", "val")}
    per_worker = config["n_images"] * config["spec"]["image_size"] ** 2 * 3 / engine.world
    keep = keep_split(tcfg, per_worker, engine.cuda)
    log.info("rank %d: decoded split %.0f MiB, held in memory: %s", rank, per_worker / 2**20, keep)

    def reader(name: str):
        def read(batch_size: int, seed: int | None):
            kw = {} if seed is None else {"local_shuffle_buffer_size": 4 * batch_size, "local_shuffle_seed": seed}
            return shards[name].iter_torch_batches(
                device=device, pin_memory=engine.cuda, prefetch_batches=2, batch_size=batch_size, **kw
            )

        return read

    held = {k: HeldSplit(reader(k), device, TARGET_COLUMNS.values(), keep) for k in shards}

    def train_batches(epoch: int):  # one pass, or train.steps_per_epoch steps over as many passes as it takes
        seed = tcfg.seed + 1000 * epoch + rank
        passes = lambda p: held["train"].batches(tcfg.batch_size, seed=seed + PASS_SEED_STRIDE * p)  # noqa: E731
        return cycled(passes, tcfg.steps_per_epoch)

    def val_batches():
        return held["val"].batches(max(tcfg.batch_size, 64))

    return train_batches, val_batches


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker function (``config`` from :func:`train_model`): the core's :func:`~crystalvision.learn.loop.fit`
    with Ray Data shards, ``ray.train.report`` checkpoints and rank-0 MLflow logging."""
    import ray.train

    queue = config.get("progress_queue") if ray.train.get_context().get_world_rank() == 0 else None
    beat = beater(queue, float(config.get("beat_s", 30.0)))
    beat("worker", step="start")
    rank, engine = _setup_worker(config)
    beat("worker", step="model ready")
    state, best_state = LoopState(), None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        state, best_state = _load_checkpoint(checkpoint, engine)
        state.resumes += 1
        log.info(
            "rank %d resumes at epoch %d (best %.4f at %d)", rank, state.epoch, state.best_val_loss, state.best_epoch
        )
    mlog = None
    if config["run_id"] and rank == 0:  # MLflow stays out of the worker unless a run is tracked
        from crystalvision.track import worker_logger

        mlog = worker_logger(config["tracking_uri"], config["run_id"], rank, config.get("mlflow_wait_s", MLFLOW_WAIT_S))
    train_batches, val_batches = _data_sources(config, engine)
    beat("worker", step="data ready")

    def report(metrics: dict[str, float], st: LoopState, best: dict | None) -> None:
        beat("worker", step="checkpoint", epoch=st.epoch - 1)
        if mlog is not None:
            mlog.log_metrics({k: v for k, v in metrics.items() if k not in ("epoch", "world_size")}, step=st.epoch - 1)
        _report(metrics, rank, engine, st, best)

    fault = config.get("fault")
    try:
        fit(
            engine,
            state,
            best_state,
            train_batches,
            val_batches,
            report,
            on_step=(lambda epoch, step: maybe_exit_worker(fault, rank, epoch, step)) if fault else None,
            beat=lambda: beat("worker", step="batch", epoch=state.epoch),
        )
    finally:
        if mlog is not None:  # send what an MLflow outage held back; training's result never depends on it
            mlog.close(timeout=config.get("mlflow_flush_timeout_s", MLFLOW_FLUSH_TIMEOUT_S))


def _save_checkpoint(folder: Path, engine: Engine, state: LoopState, best_state: dict | None) -> None:
    torch.save(engine.checkpoint(state), folder / STATE_FILE)
    if best_state is not None:
        torch.save(best_state, folder / BEST_FILE)
    (folder / "history.json").write_text(json.dumps(state.history, indent=1))


def _load_checkpoint(checkpoint, engine: Engine) -> tuple[LoopState, dict | None]:
    with checkpoint.as_directory() as d:
        blob = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
        best = Path(d) / BEST_FILE
        best_state = torch.load(best, map_location="cpu", weights_only=True) if best.exists() else None
    return engine.load(blob), best_state


def _report(metrics, rank: int, engine: Engine, state: LoopState, best_state) -> None:
    import ray.train

    with tempfile.TemporaryDirectory(prefix="cv-ckpt-") as tmp:
        checkpoint = None
        if rank == 0:
            _save_checkpoint(Path(tmp), engine, state, best_state)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"epoch_{state.epoch:05d}")
