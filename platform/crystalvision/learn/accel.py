"""Step speed: autocast dtype, step-mode choice, normalisation on the device, the CUDA-graph train step, and a
rank's decoded data held on its device (GPU memory, or host memory on CPU) across epochs. Used by
:mod:`crystalvision.learn.loop`; everything here also runs (or steps aside) on the CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from crystalvision.core import TrainConfig
from crystalvision.learn.model import MEAN, STD, unwrap

log = logging.getLogger(__name__)
Batch = dict[str, torch.Tensor]


def amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """bf16 on GPUs that support it, else fp16; None (fp32) on CPU or with ``amp`` off."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def resolve_step_mode(tcfg: TrainConfig, device: torch.device, world: int, dtype: torch.dtype | None) -> str:
    """``auto``: one CUDA graph per step on a single GPU without GradScaler, else eager; on CPU ``compile`` (inductor's
    CPU backend) or eager."""
    mode = tcfg.step_mode
    if device.type != "cuda":
        return "compile" if mode == "compile" else "eager"
    if mode == "graphs" and (world > 1 or dtype == torch.float16):
        log.warning("step_mode=graphs needs one GPU and no GradScaler (bf16 or fp32); using eager")
        return "eager"
    if mode == "auto":
        return "graphs" if world == 1 and dtype != torch.float16 else "eager"
    return mode


def norm_constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and 1/std in uint8 units, shaped (1, 3, 1, 1), on ``device``."""
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1) * 255.0
    return mean, 1.0 / (torch.tensor(STD, device=device).view(1, 3, 1, 1) * 255.0)


def normalise(images: torch.Tensor, consts: tuple[torch.Tensor, torch.Tensor], channels_last: bool) -> torch.Tensor:
    """uint8 NHWC -> float NCHW with ImageNet statistics, on the images' device (channels-last on request)."""
    x = (images.permute(0, 3, 1, 2).float() - consts[0]) * consts[1]
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


class GraphStep:
    """The whole train step (normalise, forward, loss, backward, fused Adam) captured once as a CUDA graph.

    Warm-up runs on a side stream change weights, BatchNorm statistics and Adam moments: they are restored
    afterwards, so training is the same as eager apart from rounding.
    """

    WARMUP = 3

    def __init__(self, engine: Any, images: torch.Tensor, targets: dict[str, torch.Tensor]):
        self.engine = engine
        self.images = images.clone()
        self.targets = {k: v.clone() for k, v in targets.items()}
        model, opt = unwrap(engine.model), engine.optimizer
        saved_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
        saved_opt = {p: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()} for p, s in opt.state.items()}
        side = torch.cuda.Stream(engine.device)
        side.wait_stream(torch.cuda.current_stream(engine.device))
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP):
                self._body()
        torch.cuda.current_stream(engine.device).wait_stream(side)
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(saved_model[k])
            for p, s in opt.state.items():
                for k, v in s.items():
                    if torch.is_tensor(v):
                        v.copy_(saved_opt[p][k]) if p in saved_opt else v.zero_()
        self.graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self.loss = self._body()

    def _body(self) -> torch.Tensor:
        loss = self.engine.loss(self.images, self.targets, cache=False)
        loss.backward()
        self.engine.optimizer.step()
        return loss.detach()

    def fits(self, images: torch.Tensor) -> bool:
        return images.shape == self.images.shape

    def replay(self, images: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        self.images.copy_(images, non_blocking=True)
        for k, v in targets.items():
            self.targets[k].copy_(v, non_blocking=True)
        self.graph.replay()
        return self.loss.clone()


# ---- data on the device -----------------------------------------------------------------------------------------


class DeviceData:
    """A rank's split held on the device as uint8 images + labels; epochs are seeded shuffles of it.

    Built once from any batch iterable (a Ray Data shard, or in-memory tensors), so later epochs neither decode
    nor copy images from the host.
    """

    def __init__(self, batches: Iterable[Batch], device: torch.device, columns: Iterable[str]):
        parts: dict[str, list[torch.Tensor]] = {}
        for batch in batches:
            for k in ("image", *columns):
                parts.setdefault(k, []).append(torch.as_tensor(batch[k]).to(device, non_blocking=True))
        self.data = {k: torch.cat(v) for k, v in parts.items()}
        self.device = device

    def __len__(self) -> int:
        return len(self.data["image"]) if self.data else 0

    def batches(self, batch_size: int, seed: int | None = None) -> Iterator[Batch]:
        """Batches in a seeded random order (``seed=None``: in order)."""
        n = len(self)
        if seed is None:
            order = torch.arange(n, device=self.device)
        else:
            gen = torch.Generator().manual_seed(seed)
            order = torch.randperm(n, generator=gen).to(self.device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield {k: v.index_select(0, idx) for k, v in self.data.items()}


Reader = Callable[[int, int | None], Iterable[Batch]]  # (batch size, shuffle seed or None) -> a fresh pass


class HeldSplit:
    """One split's batches for every epoch: read (decoded) once and held as :class:`DeviceData` when ``keep``, else
    a fresh pass of ``read`` each epoch.

    ``read(batch_size, seed)`` must give the same rows on every call (Ray Data shards do); held epochs are seeded
    shuffles of those rows, so they hold exactly the tensors a fresh decode gives.
    """

    HOLD_BATCH = 256

    def __init__(self, read: Reader, device: torch.device, columns: Iterable[str], keep: bool):
        self.read, self.device, self.columns, self.keep = read, device, list(columns), keep
        self.data: DeviceData | None = None

    def batches(self, batch_size: int, seed: int | None = None) -> Iterable[Batch]:
        """One epoch's batches (``seed=None``: in order)."""
        if not self.keep:
            return self.read(batch_size, seed)
        if self.data is None:
            self.data = DeviceData(self.read(self.HOLD_BATCH, None), self.device, self.columns)
        return self.data.batches(batch_size, seed)


PASS_SEED_STRIDE = 1_000_003  # seed offset of each further pass of one epoch (prime: no other epoch's seed)


def cycled(passes: Callable[[int], Iterable[Batch]], steps: int | None) -> Iterable[Batch]:
    """One epoch of exactly ``steps`` batches from successive passes (``passes(p)``: pass ``p``, each its own
    shuffle), the last pass cut short; ``steps=None``: the first pass alone (``train.steps_per_epoch``)."""
    if steps is None:
        return passes(0)

    def gen() -> Iterator[Batch]:
        given, p = 0, 0
        while given < steps:
            before = given
            for batch in passes(p):
                yield batch
                given += 1
                if given == steps:
                    return
            if given == before:
                raise RuntimeError("train.steps_per_epoch: the training split gave no batch; it is empty")
            p += 1

    return gen()


DEVICE_DATA_MAX_BYTES = 4 * 1024**3  # device_data=auto keeps a worker's split on its GPU up to this size


def keep_split(tcfg: TrainConfig, n_bytes: float, cuda: bool) -> bool:
    """``device_data``: ``on`` holds a worker's decoded split (``n_bytes``), ``off`` never, ``auto`` when it fits
    :data:`DEVICE_DATA_MAX_BYTES` on a GPU or ``host_data_max_mb`` on CPU (over it: decoded again every epoch)."""
    budget = DEVICE_DATA_MAX_BYTES if cuda else tcfg.host_data_max_mb * 2**20
    return tcfg.device_data == "on" or (tcfg.device_data == "auto" and n_bytes <= budget)
