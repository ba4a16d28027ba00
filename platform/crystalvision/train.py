"""Training on Ray Train (V2 API): EfficientNet-B0 with four heads, data-parallel over Ray Data shards.

Every epoch each worker trains on its shard of ``train``, all workers validate on their shards of ``val`` and
sum their statistics (so every rank takes the same early-stopping decision), and rank 0 writes a checkpoint
(model, optimizer, scaler, epoch, best-so-far weights, early-stopping counter, history) through
``ray.train.report``. A worker failure restarts the group from the latest checkpoint (``FailureConfig``);
launching again with the same ``name`` and storage path resumes the run the same way.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from crystalvision.config import TrainConfig
from crystalvision.dataset import Splits, to_ray_dataset
from crystalvision.faults import parse_fault
from crystalvision.model import CrystalNet, ModelSpec, preprocess, save_model, unwrap
from crystalvision.settings import get_settings
from crystalvision.storage import filesystem_for, is_s3
from crystalvision.targets import TARGET_COLUMNS, TARGETS, TARGETS_CLASSIFICATION, TARGETS_REGRESSION

if TYPE_CHECKING:
    from crystalvision.prepare import Prepared

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
BEST_FILE = "best_model.pt"
# Test hook: "rank=1,epoch=2,step=1" makes that worker exit hard there, once per run name (a marker file).
FAULT_ENV = "CRYSTALVISION_TRAIN_FAULT"


@dataclass
class TrainResult:
    """What training produced: the best model's folder, per-epoch history, best epoch and its metrics."""

    model_dir: Path
    history: list[dict[str, float]]
    best_epoch: int
    metrics: dict[str, float]
    checkpoint_path: str | None = None
    name: str = ""


# ---- loss and metrics ------------------------------------------------------------------------------------------


def multitask_loss(
    outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], weights: dict[str, float]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of MSE (standardised regression) and cross-entropy (classification); also the parts."""
    parts = {t: F.mse_loss(outputs[t].float(), targets[t].float()) for t in TARGETS_REGRESSION}
    parts |= {t: F.cross_entropy(outputs[t].float(), targets[t].long()) for t in TARGETS_CLASSIFICATION}
    total = sum(weights.get(t, 1.0) * parts[t] for t in TARGETS)
    return total, parts  # type: ignore[return-value]


def batch_targets(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Ray Data batch columns -> target tensors keyed by head name."""
    return {t: batch[col].to(device, non_blocking=True) for t, col in TARGET_COLUMNS.items()}


class EvalAccumulator:
    """Sums of per-sample losses, squared errors and correct predictions; all-reduced across workers."""

    def __init__(self, weights: dict[str, float]):
        self.weights = weights
        self.names = ["n", "loss"] + [f"{t}.{s}" for t in TARGETS_REGRESSION for s in ("sse", "sum", "sum2")]
        self.names += [f"{t}.{s}" for t in TARGETS_CLASSIFICATION for s in ("correct", "ce")]
        self.sums = torch.zeros(len(self.names), dtype=torch.float64)

    def add(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> None:
        vals: dict[str, float] = {"n": len(targets[TARGETS[0]])}
        loss = 0.0
        for t in TARGETS_REGRESSION:
            y, p = targets[t].double(), outputs[t].double()
            sse = float(((p - y) ** 2).sum())
            vals |= {f"{t}.sse": sse, f"{t}.sum": float(y.sum()), f"{t}.sum2": float((y**2).sum())}
            loss += self.weights[t] * sse
        for t in TARGETS_CLASSIFICATION:
            logits = outputs[t].float()
            ce = float(F.cross_entropy(logits, targets[t].long(), reduction="sum"))
            vals |= {f"{t}.correct": float((logits.argmax(-1) == targets[t]).sum()), f"{t}.ce": ce}
            loss += self.weights[t] * ce
        vals["loss"] = loss
        self.sums += torch.tensor([vals[k] for k in self.names], dtype=torch.float64)

    def all_reduce(self) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.sums)

    def metrics(self, prefix: str = "val") -> dict[str, float]:
        """Mean loss, R² per regression head, accuracy per classification head."""
        s = dict(zip(self.names, self.sums.tolist(), strict=True))
        n = max(s["n"], 1.0)
        out = {f"{prefix}_loss": s["loss"] / n, f"{prefix}_n": s["n"]}
        for t in TARGETS_REGRESSION:
            sst = s[f"{t}.sum2"] - s[f"{t}.sum"] ** 2 / n
            out[f"{prefix}_r2_{t}"] = 1.0 - s[f"{t}.sse"] / sst if sst > 1e-12 else 0.0
            out[f"{prefix}_mse_{t}"] = s[f"{t}.sse"] / n
        for t in TARGETS_CLASSIFICATION:
            out[f"{prefix}_acc_{t}"] = s[f"{t}.correct"] / n
            out[f"{prefix}_ce_{t}"] = s[f"{t}.ce"] / n
        return out


# ---- the per-worker training loop -----------------------------------------------------------------------------


@dataclass
class LoopState:
    """Training progress carried in every checkpoint."""

    epoch: int = 0  # next epoch to run
    best_val_loss: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    stopped: bool = False
    resumes: int = 0  # times this run continued from a checkpoint (worker restarts and re-launches)
    history: list[dict[str, float]] = field(default_factory=list)


def _prepare_input(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = preprocess(images.to(device, non_blocking=True))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def _autocast(device: torch.device, amp: bool):
    return torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp and device.type == "cuda")


def _maybe_fault(fault: dict[str, Any] | None, rank: int, epoch: int, step: int) -> None:
    """Exit the worker process hard at the configured point (test hook; once, guarded by a marker file)."""
    if not fault or Path(fault["marker"]).exists():
        return
    if rank == fault.get("rank", 0) and epoch == fault.get("epoch", 0) and step >= fault.get("step", 0):
        Path(fault["marker"]).parent.mkdir(parents=True, exist_ok=True)
        Path(fault["marker"]).touch()
        log.warning("fault injection: rank %d exits at epoch %d step %d", rank, epoch, step)
        time.sleep(1.0)  # let the controller register the previous epoch's checkpoint first
        os._exit(1)


def _train_epoch(model, optimizer, scaler, shard, tcfg: TrainConfig, device, ctx: dict) -> dict[str, float]:
    """One pass over this worker's shard; returns summed train loss and images/s (after the first step)."""
    model.train()
    channels_last = device.type == "cuda"
    total, n_seen, steps, t_start, n_timed = 0.0, 0, 0, 0.0, 0
    batches = shard.iter_torch_batches(
        batch_size=tcfg.batch_size,
        local_shuffle_buffer_size=4 * tcfg.batch_size,
        local_shuffle_seed=tcfg.seed + 1000 * ctx["epoch"] + ctx["rank"],
        prefetch_batches=2,
    )
    for batch in batches:
        _maybe_fault(ctx["fault"], ctx["rank"], ctx["epoch"], steps)
        x = _prepare_input(batch["image"], device, channels_last)
        targets = batch_targets(batch, device)
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, tcfg.amp):
            loss, _ = multitask_loss(model(x), targets, tcfg.loss_weights)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total += float(loss.detach()) * len(x)
        n_seen += len(x)
        steps += 1
        if steps == 1:
            t_start = time.perf_counter()
        else:
            n_timed += len(x)
        if tcfg.max_steps_per_epoch and steps >= tcfg.max_steps_per_epoch:
            break
    elapsed = time.perf_counter() - t_start
    return {"loss_sum": total, "n": n_seen, "steps": steps, "timed_images": n_timed, "elapsed": elapsed}


@torch.no_grad()
def _validate(model, shard, tcfg: TrainConfig, device) -> dict[str, float]:
    net = unwrap(model)
    net.eval()
    acc = EvalAccumulator(tcfg.loss_weights)
    for batch in shard.iter_torch_batches(batch_size=max(tcfg.batch_size, 64)):
        x = _prepare_input(batch["image"], device, device.type == "cuda")
        with _autocast(device, tcfg.amp):
            outputs = net(x)
        acc.add(
            {k: v.float().cpu() for k, v in outputs.items()},
            {k: v.cpu() for k, v in batch_targets(batch, device).items()},
        )
    acc.all_reduce()
    return acc.metrics("val")


def _reduce_train(stats: dict[str, float]) -> dict[str, float]:
    """Global train loss and images/s across workers."""
    t = torch.tensor([stats["loss_sum"], stats["n"], stats["timed_images"], stats["elapsed"]], dtype=torch.float64)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        elapsed = t[3:].clone()
        torch.distributed.all_reduce(t)
        torch.distributed.all_reduce(elapsed, op=torch.distributed.ReduceOp.MAX)
        t[3] = elapsed[0]
    return {
        "train_loss": float(t[0] / max(t[1], 1.0)),
        "train_images": float(t[1]),
        "train_images_per_s": float(t[2] / t[3]) if t[3] > 0 and t[2] > 0 else 0.0,
    }


def _save_checkpoint(folder: Path, model, optimizer, scaler, state: LoopState, best_state: dict | None) -> None:
    torch.save(
        {
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "loop": state.__dict__,
        },
        folder / STATE_FILE,
    )
    if best_state is not None:
        torch.save(best_state, folder / BEST_FILE)
    (folder / "history.json").write_text(json.dumps(state.history, indent=1))


def _load_checkpoint(checkpoint, model, optimizer, scaler) -> tuple[LoopState, dict | None]:
    with checkpoint.as_directory() as d:
        blob = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=False)
        best = Path(d) / BEST_FILE
        best_state = torch.load(best, map_location="cpu", weights_only=True) if best.exists() else None
    unwrap(model).load_state_dict(blob["model"])
    optimizer.load_state_dict(blob["optimizer"])
    scaler.load_state_dict(blob["scaler"])
    return LoopState(**blob["loop"]), best_state


def _setup_worker(config: dict[str, Any]):
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(config["threads_per_worker"])))
    torch.manual_seed(config["train"]["seed"])
    tcfg = TrainConfig.model_validate(config["train"])
    spec = ModelSpec.model_validate(config["spec"])
    device = ray.train.torch.get_device()
    model = CrystalNet(spec, tcfg.pretrained_checkpoint)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=tcfg.amp and device.type == "cuda")
    return rank, world, tcfg, device, model, optimizer, scaler


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker function (``config`` from :func:`train_model`)."""
    import ray.train

    from crystalvision.tracking import worker_logger

    rank, world, tcfg, device, model, optimizer, scaler = _setup_worker(config)
    state, best_state = LoopState(), None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        state, best_state = _load_checkpoint(checkpoint, model, optimizer, scaler)
        state.resumes += 1
        log.info(
            "rank %d resumes at epoch %d (best %.4f at %d)", rank, state.epoch, state.best_val_loss, state.best_epoch
        )
    mlog = worker_logger(config["tracking_uri"], config["run_id"], rank)
    train_shard, val_shard = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")
    while state.epoch < tcfg.epochs and not state.stopped:
        epoch = state.epoch
        torch.manual_seed(tcfg.seed + 1000 * epoch + rank)
        ctx = {"epoch": epoch, "rank": rank, "fault": config.get("fault")}
        train_stats = _reduce_train(_train_epoch(model, optimizer, scaler, train_shard, tcfg, device, ctx))
        metrics = {"epoch": float(epoch), **train_stats, **_validate(model, val_shard, tcfg, device)}
        if metrics["val_loss"] < state.best_val_loss:
            state.best_val_loss, state.best_epoch, state.bad_epochs = metrics["val_loss"], epoch, 0
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()})
        else:
            state.bad_epochs += 1
        state.stopped = state.bad_epochs >= tcfg.patience
        state.epoch = epoch + 1
        metrics |= {"best_val_loss": state.best_val_loss, "best_epoch": float(state.best_epoch)}
        metrics |= {"early_stop_counter": float(state.bad_epochs), "world_size": float(world), "resumes": state.resumes}
        state.history.append(metrics)
        mlog.log_metrics({k: v for k, v in metrics.items() if k not in ("epoch", "world_size")}, step=epoch)
        _report(metrics, rank, model, optimizer, scaler, state, best_state)
    if state.stopped:
        log.info("early stopping after epoch %d (best epoch %d)", state.epoch - 1, state.best_epoch)


def _report(metrics, rank, model, optimizer, scaler, state: LoopState, best_state) -> None:
    import ray.train

    with tempfile.TemporaryDirectory(prefix="cv-ckpt-") as tmp:
        checkpoint = None
        if rank == 0:
            _save_checkpoint(Path(tmp), model, optimizer, scaler, state, best_state)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"epoch_{state.epoch:05d}")


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


def make_trainer(
    prepared: Prepared, run_id: str | None, name: str, callbacks: list | None, tracking_uri: str | None = None
):
    """The TorchTrainer for a run (datasets built and standardised; ``prepared.spec`` gets the target scaling).

    Workers log into ``run_id`` at ``tracking_uri`` (default: the settings'), passed in the loop config.
    """
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from crystalvision.raycluster import ensure_ray

    ensure_ray()
    tcfg, spec = prepared.cfg.train, prepared.spec
    frames = standardise_targets(prepared.splits, spec)
    datasets = {k: to_ray_dataset(df, prepared.store, spec.image_size) for k, df in frames.items()}
    resources = {"CPU": tcfg.cpus_per_worker} | ({"GPU": 1} if tcfg.use_gpu else {})
    loop_config = {
        "train": tcfg.model_dump(mode="json"),
        "spec": spec.model_dump(mode="json"),
        "tracking_uri": (tracking_uri or get_settings().tracking.mlflow_tracking_uri) if run_id else None,
        "run_id": run_id,
        "threads_per_worker": max(1, int(tcfg.cpus_per_worker)),
        "fault": parse_fault(os.environ.get(FAULT_ENV), name),
    }
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=tcfg.num_workers, use_gpu=tcfg.use_gpu, resources_per_worker=resources
        ),
        torch_config=TorchConfig(backend="nccl" if tcfg.use_gpu else "gloo"),
        run_config=_run_config(name, tcfg, callbacks),
        datasets=datasets,
    )


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
    latest checkpoint (default: derived from ``run_id``, or the pipeline name and time). Rank 0 logs per-epoch
    metrics into the MLflow run ``run_id``; ``callbacks`` (``ray.train.UserCallback``) go to ``RunConfig``.
    """
    cfg, splits, spec = prepared.cfg, prepared.splits, prepared.spec
    name = name or (f"{cfg.name}-{run_id[:12]}" if run_id else f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    tracking_uri = tracking_uri or get_settings().tracking.mlflow_tracking_uri
    trainer = make_trainer(prepared, run_id, name, callbacks, tracking_uri)
    log.info(
        "training %s: %d workers, gpu=%s, %d train / %d val images",
        name,
        cfg.train.num_workers,
        cfg.train.use_gpu,
        len(splits.train),
        len(splits.val),
    )
    result = trainer.fit()
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
        blob = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=False)
        best = torch.load(Path(d) / BEST_FILE, map_location="cpu", weights_only=True)
    return LoopState(**blob["loop"]), best


def _final_metrics(state: LoopState) -> dict[str, float]:
    best = next((h for h in state.history if int(h["epoch"]) == state.best_epoch), state.history[-1])
    out = {k: float(v) for k, v in best.items() if k.startswith("val_")}
    out |= {"best_epoch": float(state.best_epoch), "epochs_trained": float(state.epoch)}
    out["stopped_early"] = float(state.stopped)
    return out


def _log_driver_side(run_id: str | None, tracking_uri: str, spec: ModelSpec, metrics: dict, name: str) -> None:
    if not run_id:
        return
    from crystalvision.tracking import worker_logger

    mlog = worker_logger(tracking_uri, run_id, rank=0)
    params = {f"target_mean.{t}": v for t, v in spec.target_mean.items()}
    params |= {f"target_std.{t}": v for t, v in spec.target_std.items()} | {"ray_train_run_name": name}
    mlog.log_params(params)
    mlog.log_metrics({f"final_{k}": v for k, v in metrics.items()}, step=int(metrics["epochs_trained"]))


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (for logs and benchmarks)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
