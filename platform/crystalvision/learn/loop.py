"""The training core without Ray: train step, validation, early stopping and checkpoint contents.

:class:`Engine` runs one process's part of data-parallel training on ``device`` (CPU or one GPU) under any
``torch.distributed`` process group (Ray Train's, or a plain ``init_process_group``), or none. Every collective
runs on the process group's device (CUDA under NCCL, CPU under gloo) in float64, so all ranks take the same
early-stopping decision. Batches are dicts of tensors: ``image`` (uint8 NHWC, on the host or the device) and the
label columns. On a GPU the step is bf16 autocast where supported (fp16 + GradScaler elsewhere), channels-last,
normalised on the GPU, and with ``step_mode`` ``graphs`` one CUDA graph replays the whole step (forward, backward,
fused Adam) so that small batches are not bound by kernel launches. Checkpoints are plain (tensors, state dicts,
numbers, lists): they load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from crystalvision.core import TARGET_COLUMNS, TARGETS, TARGETS_CLASSIFICATION, TARGETS_REGRESSION, TrainConfig
from crystalvision.learn.accel import GraphStep, amp_dtype, norm_constants, normalise, resolve_step_mode
from crystalvision.learn.augment import augment_batch, classification_loss
from crystalvision.learn.model import unwrap
from crystalvision.learn.selection import LoopState, check_finite, epoch_lr, select_score

log = logging.getLogger(__name__)

DEFAULT_LABEL_COLUMNS = TARGET_COLUMNS  # head -> training column, from the targets table
Batch = dict[str, torch.Tensor]


# ---- loss and metrics ------------------------------------------------------------------------------------------


def multitask_loss(
    outputs: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    weights: dict[str, float],
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of MSE (standardised regression) and cross-entropy (classification, optionally with label
    smoothing); also the parts."""
    parts = {t: F.mse_loss(outputs[t].float(), targets[t].float()) for t in TARGETS_REGRESSION}
    parts |= {
        t: classification_loss(outputs[t].float(), targets[t].long(), label_smoothing) for t in TARGETS_CLASSIFICATION
    }
    total = sum(weights.get(t, 1.0) * parts[t] for t in TARGETS)
    return total, parts  # type: ignore[return-value]


def dist_ready() -> bool:
    """True inside an initialised ``torch.distributed`` process group."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def collective_device(device: torch.device) -> torch.device:
    """The device collectives must use: CUDA under NCCL (which reduces only CUDA tensors), else ``device``."""
    if dist_ready() and torch.distributed.get_backend() == "nccl" and device.type != "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return device


def all_reduce(t: torch.Tensor, op: Any = None) -> torch.Tensor:
    """In-place all-reduce (sum unless ``op``) when a process group exists; a no-op otherwise."""
    if dist_ready():
        torch.distributed.all_reduce(t, op=op or torch.distributed.ReduceOp.SUM)
    return t


class EvalAccumulator:
    """Per-sample sums (loss, squared errors, correct predictions) kept in float64 on ``device``, all-reduced."""

    def __init__(self, weights: dict[str, float], device: torch.device | str = "cpu"):
        self.weights = weights
        self.device = torch.device(device)
        self.names = ["n", "loss"] + [f"{t}.{s}" for t in TARGETS_REGRESSION for s in ("sse", "sum", "sum2")]
        self.names += [f"{t}.{s}" for t in TARGETS_CLASSIFICATION for s in ("correct", "ce")]
        self.sums = torch.zeros(len(self.names), dtype=torch.float64, device=self.device)

    def add(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> None:
        """Add one batch (no host sync: the sums stay on the device)."""
        vals: dict[str, torch.Tensor] = {}
        loss = torch.zeros((), dtype=torch.float64, device=self.device)
        for t in TARGETS_REGRESSION:
            y, p = targets[t].to(self.device).double(), outputs[t].to(self.device).double()
            sse = ((p - y) ** 2).sum()
            vals |= {f"{t}.sse": sse, f"{t}.sum": y.sum(), f"{t}.sum2": (y**2).sum()}
            loss = loss + self.weights[t] * sse
        for t in TARGETS_CLASSIFICATION:
            logits, y = outputs[t].to(self.device).float(), targets[t].to(self.device).long()
            ce = F.cross_entropy(logits, y, reduction="sum").double()
            vals |= {f"{t}.correct": (logits.argmax(-1) == y).sum().double(), f"{t}.ce": ce}
            loss = loss + self.weights[t] * ce
        vals["loss"] = loss
        vals["n"] = torch.tensor(float(len(targets[TARGETS_REGRESSION[0]])), dtype=torch.float64, device=self.device)
        self.sums += torch.stack([vals[k].to(torch.float64) for k in self.names])

    def all_reduce(self) -> None:
        """Sum across ranks on the process group's device (float64)."""
        dev = collective_device(self.device)
        self.sums = all_reduce(self.sums.to(dev)).to(self.device)

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


def reduce_train(stats: dict[str, Any], device: torch.device) -> torch.Tensor:
    """[loss sum, images, timed images, max elapsed] over all ranks: float64 on the process group's device."""
    dev = collective_device(device)
    loss_sum = stats["loss_sum"]
    sums = torch.tensor([0.0, stats["n"], stats["timed_images"]], dtype=torch.float64, device=dev)
    sums[0] = loss_sum.to(dev, torch.float64) if torch.is_tensor(loss_sum) else float(loss_sum)
    elapsed = torch.tensor([float(stats["elapsed"])], dtype=torch.float64, device=dev)
    all_reduce(sums)
    all_reduce(elapsed, torch.distributed.ReduceOp.MAX)
    return torch.cat([sums, elapsed])


def train_metrics(reduced: torch.Tensor) -> dict[str, float]:
    """Global train loss and images/s from :func:`reduce_train`'s sums."""
    loss, n, timed, secs = reduced.tolist()
    return {
        "train_loss": loss / max(n, 1.0),
        "train_images": n,
        "train_images_per_s": timed / secs if secs > 0 and timed > 0 else 0.0,
    }


# ---- the engine ---------------------------------------------------------------------------------------------------


class Engine:
    """One rank's model, optimizer, scaler and step function; the loop in :func:`fit` drives it."""

    def __init__(
        self,
        model: nn.Module,
        tcfg: TrainConfig,
        device: torch.device,
        *,
        world: int = 1,
        rank: int = 0,
        wrap: Callable[[nn.Module], nn.Module] | None = None,
        label_columns: dict[str, str] | None = None,
    ):
        self.tcfg, self.device, self.world, self.rank = tcfg, device, world, rank
        self.cuda = device.type == "cuda"
        self.dtype = amp_dtype(device, tcfg.amp)
        self.channels_last = tcfg.channels_last
        self.label_columns = label_columns or DEFAULT_LABEL_COLUMNS
        self.consts = norm_constants(device)
        if self.cuda:
            torch.backends.cudnn.benchmark = tcfg.cudnn_benchmark
        model = model.to(device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = wrap(model) if wrap else model
        self.mode = resolve_step_mode(tcfg, device, world, self.dtype)
        opt_kw: dict[str, Any] = {"fused": True} if self.cuda else {}
        if self.mode == "graphs":
            opt_kw["capturable"] = True
        params = self.model.parameters()
        lr: float | torch.Tensor = tcfg.lr
        if self.mode == "graphs" and tcfg.schedule != "constant":  # a captured step reads the lr from a tensor
            lr = torch.tensor(tcfg.lr, device=device)
        self.optimizer = torch.optim.Adam(params, lr=lr, weight_decay=tcfg.weight_decay, **opt_kw)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)
        self.forward = torch.compile(self.model) if self.mode == "compile" else self.model
        self._graph: GraphStep | None = None
        log.info(
            "engine on %s: step %s, autocast %s, channels-last %s", device, self.mode, self.dtype, self.channels_last
        )

    # -- pieces ------------------------------------------------------------------------------------------------

    def autocast(self, cache: bool = True) -> AbstractContextManager:
        dtype, on = self.dtype or torch.float16, self.dtype is not None
        return torch.autocast("cuda", dtype=dtype, enabled=on, cache_enabled=cache)

    def inputs(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """uint8 images and targets on the device (asynchronous copies from pinned host memory)."""
        images = batch["image"]
        if self.cuda and images.device.type == "cpu" and not images.is_pinned():
            images = images.pin_memory()
        images = images.to(self.device, non_blocking=True)
        targets = {t: batch[c].to(self.device, non_blocking=True) for t, c in self.label_columns.items()}
        return images, targets

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """Colour-keeping geometric augmentation of uint8 NHWC images (outside the CUDA graph: it draws random
        numbers on the host)."""
        if not self.tcfg.augment.enabled:
            return images
        nchw = augment_batch(images.permute(0, 3, 1, 2), self.tcfg.augment)
        return nchw.permute(0, 2, 3, 1).contiguous()

    def loss(self, images: torch.Tensor, targets: dict[str, torch.Tensor], cache: bool = True) -> torch.Tensor:
        with self.autocast(cache):
            out = self.forward(normalise(images, self.consts, self.channels_last))
            total, _ = multitask_loss(out, targets, self.tcfg.loss_weights, self.tcfg.label_smoothing)
        return total

    def eager_step(self, images: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(images, targets)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()

    def step(self, images: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """One optimisation step; returns the batch's mean loss as a device tensor (no host sync)."""
        if self.mode != "graphs":
            return self.eager_step(images, targets)
        if self._graph is None:
            try:
                self._graph = GraphStep(self, images, targets)
            except RuntimeError as exc:  # e.g. an op that cannot be captured: train on, eagerly
                log.warning("CUDA graph capture failed (%s); step_mode eager from now on", exc)
                self.mode = "eager"
                return self.eager_step(images, targets)
        if not self._graph.fits(images):  # a short last batch runs eagerly
            return self.eager_step(images, targets)
        return self._graph.replay(images, targets)

    def set_lr(self, lr: float) -> None:
        """Set every parameter group's learning rate (in place when it is a tensor, as a captured step needs)."""
        for group in self.optimizer.param_groups:
            if torch.is_tensor(group["lr"]):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr

    # -- epochs ------------------------------------------------------------------------------------------------

    def train_epoch(self, batches: Iterable[Batch], on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
        """One pass over this rank's batches; loss summed on the device, images/s after the first step."""
        self.model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        n_seen = steps = n_timed = 0
        t_start = 0.0
        for batch in batches:
            if on_step:
                on_step(steps)
            images, targets = self.inputs(batch)
            images = self.augment(images)
            loss_sum += self.step(images, targets).double() * len(images)
            n_seen += len(images)
            steps += 1
            if steps == 1:
                self._sync()
                t_start = time.perf_counter()
            else:
                n_timed += len(images)
            if self.tcfg.max_steps_per_epoch and steps >= self.tcfg.max_steps_per_epoch:
                break
        self._sync()
        elapsed = time.perf_counter() - t_start if steps > 1 else 0.0
        return {"loss_sum": loss_sum, "n": n_seen, "steps": steps, "timed_images": n_timed, "elapsed": elapsed}

    @torch.no_grad()
    def validate(self, batches: Iterable[Batch], on_batch: Callable[[], None] | None = None) -> dict[str, float]:
        """Metrics over every rank's validation batches (sums all-reduced); ``on_batch`` before each batch."""
        net = unwrap(self.model)
        net.eval()
        acc = EvalAccumulator(self.tcfg.loss_weights, self.device)
        for batch in batches:
            if on_batch:
                on_batch()
            images, targets = self.inputs(batch)
            with self.autocast():
                out = net(normalise(images, self.consts, self.channels_last))
            acc.add({k: v.float() for k, v in out.items()}, targets)
        acc.all_reduce()
        net.train()
        return acc.metrics("val")

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    # -- checkpoints -------------------------------------------------------------------------------------------

    def weights(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the model's weights."""
        return {k: v.detach().cpu().clone() for k, v in unwrap(self.model).state_dict().items()}

    def checkpoint(self, state: LoopState) -> dict[str, Any]:
        """Plain checkpoint contents (loads with ``torch.load(weights_only=True)``)."""
        return {
            "model": self.weights(),
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "scaler": self.scaler.state_dict(),
            "loop": copy.deepcopy(asdict(state)),
        }

    def load(self, blob: dict[str, Any]) -> LoopState:
        """Restore model, optimizer and scaler from :meth:`checkpoint` contents; return the loop state."""
        unwrap(self.model).load_state_dict(blob["model"])
        self.optimizer.load_state_dict(blob["optimizer"])
        self.scaler.load_state_dict(blob["scaler"])
        self._graph = None  # optimizer state tensors were replaced: capture again
        return LoopState(**blob["loop"])


def _to_cpu(obj: Any) -> Any:
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


# ---- the epoch loop -------------------------------------------------------------------------------------------------


def _step_hook(
    epoch: int, on_step: Callable[[int, int], None] | None, beat: Callable[[], None] | None
) -> Callable[[int], None] | None:
    """What runs before each training step of ``epoch``: the heartbeat, then ``on_step(epoch, step)``."""
    if on_step is None and beat is None:
        return None

    def hook(step: int) -> None:
        if beat:
            beat()
        if on_step:
            on_step(epoch, step)

    return hook


def fit(
    engine: Engine,
    state: LoopState,
    best: dict[str, torch.Tensor] | None,
    train_batches: Callable[[int], Iterable[Batch]],
    val_batches: Callable[[], Iterable[Batch]],
    report: Callable[[dict[str, float], LoopState, dict[str, torch.Tensor] | None], None],
    on_step: Callable[[int, int], None] | None = None,
    beat: Callable[[], None] | None = None,
) -> tuple[LoopState, dict[str, torch.Tensor] | None]:
    """Epochs from ``state.epoch`` until ``tcfg.epochs`` or early stopping; ``report`` gets each epoch's metrics,
    the state and the best weights so far (to checkpoint). ``on_step(epoch, step)`` runs before every training
    step, ``beat()`` before every training and validation batch (progress for leases)."""
    tcfg = engine.tcfg
    while state.epoch < tcfg.epochs and not state.stopped:
        epoch = state.epoch
        torch.manual_seed(tcfg.seed + 1000 * epoch + engine.rank)
        hook = _step_hook(epoch, on_step, beat)
        lr = epoch_lr(tcfg, epoch)
        engine.set_lr(lr)
        stats = engine.train_epoch(train_batches(epoch), hook)
        metrics = {"epoch": float(epoch), "lr": lr}
        metrics |= train_metrics(reduce_train(stats, engine.device)) | {"train_steps": float(stats["steps"])}
        metrics |= engine.validate(val_batches(), beat)
        # train.select's score (weighted heads, R² floored at -1); the registry's val_score is the final model's
        metrics["select_score"] = select_score(metrics, tcfg.loss_weights)
        check_finite(epoch, metrics)
        criterion = metrics["val_loss"] if tcfg.select == "val_loss" else -metrics["select_score"]
        if state.update(epoch, metrics["val_loss"], tcfg.patience, criterion, tcfg.select_window):
            best = engine.weights()
        metrics |= {"best_val_loss": state.best_val_loss, "best_epoch": float(state.best_epoch)}
        metrics["best_criterion"] = state.best_criterion
        metrics |= {"early_stop_counter": float(state.bad_epochs), "world_size": float(engine.world)}
        metrics["resumes"] = state.resumes
        state.history.append(metrics)
        report(metrics, state, best)
    if state.stopped:
        log.info("early stopping after epoch %d (best epoch %d)", state.epoch - 1, state.best_epoch)
    return state, best
