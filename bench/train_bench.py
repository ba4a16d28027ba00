"""Train-step throughput: a plain PyTorch loop vs Ray Train (1 and 2 workers), measured in the same run;
with a GPU also 224 px with the training defaults (the training core without Ray, and Ray Train, one worker).

Every configuration trains the same model (EfficientNet-B0 + four heads, Adam, batch 16, fp32 on CPU) on the same
synthetic images with the same total number of CPU threads (2). The plain loop iterates over uint8 tensors already
in memory; Ray Train reads the images from an image shard (the render job's default layout, ``read_parquet``;
``crystalvision.learn.train.train_model``) and reports
``train_images_per_s`` (global images/s of the training steps after each epoch's first, validation and
checkpointing excluded). Ratios compare configurations from this run only. :func:`cpu_step` (also its own part,
``--only train_bench.cpu_step``) times the training core's CPU step in today's NCHW layout against channels-last.

``python -m bench.train_bench [--quick]`` prints a table and writes ``bench/results/train.json``.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "platform") not in sys.path:
    sys.path.insert(0, str(ROOT / "platform"))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "platform"), os.environ.get("PYTHONPATH")]))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from bench.common import module_main, row  # noqa: E402

log = logging.getLogger("bench.train")

RESULTS = ROOT / "bench" / "results" / "train.json"
BATCH = 16
THREADS = 2
SYSTEMS = ["triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic"]
SPACEGROUPS = ["P1", "P-1", "C2/m", "Pnma", "I4/mmm", "R-3m", "P6_3mc", "Fm-3m"]


def _spec(size: int):
    from crystalvision.learn.model import ModelSpec

    return ModelSpec(crystal_system_classes=SYSTEMS, spacegroup_classes=SPACEGROUPS, image_size=size)


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (n, 1, 1, 3))
    return np.clip(base + rng.normal(0, 20, (n, size, size, 3)), 0, 255).astype(np.uint8)


def _labels(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "band_gap": rng.normal(size=n).astype(np.float32),
        "energy_above_hull": rng.normal(size=n).astype(np.float32),
        "crystal_system_id": rng.integers(0, len(SYSTEMS), n),
        "spacegroup_id": rng.integers(0, len(SPACEGROUPS), n),
    }


def plain_loop(size: int, steps: int, device: str = "cpu", amp: bool = False) -> float:
    """Images/s of a hand-written PyTorch loop over in-memory uint8 batches (first step of a pass not timed)."""
    import torch

    from crystalvision.core.config import TrainConfig
    from crystalvision.learn.model import CrystalNet

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    weights = TrainConfig().loss_weights
    model = CrystalNet(_spec(size)).train().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.from_numpy(_images(BATCH * (steps + 1), size)).to(device)
    labels = {k: torch.from_numpy(v).to(device) for k, v in _labels(BATCH * (steps + 1)).items()}
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    best = 0.0
    for _epoch in range(2):  # best of two passes, like the two Ray Train epochs
        best = max(best, _plain_pass(model, opt, scaler, images, labels, weights, steps, amp))
    return best


def _plain_pass(model, opt, scaler, images, labels, weights, steps: int, amp: bool) -> float:
    import torch

    from crystalvision.learn.model import preprocess
    from crystalvision.learn.train import multitask_loss

    cuda = images.device.type == "cuda"
    start = 0.0
    for step in range(steps + 1):
        if step == 1:
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
        sl = slice(step * BATCH, (step + 1) * BATCH)
        x = preprocess(images[sl]).contiguous(memory_format=torch.channels_last if cuda else torch.contiguous_format)
        targets = {
            "band_gap": labels["band_gap"][sl],
            "energy_above_hull": labels["energy_above_hull"][sl],
            "crystal_system": labels["crystal_system_id"][sl],
            "spacegroup": labels["spacegroup_id"][sl],
        }
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp and cuda):
            loss, _ = multitask_loss(model(x), targets, weights)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    if cuda:
        torch.cuda.synchronize()
    return BATCH * steps / (time.perf_counter() - start)


def _write_dataset(store, size: int, n: int):
    """One image shard (as the render job writes it) + a labels frame split into train (n images) and a tiny val
    set."""
    import pandas as pd

    from crystalvision.data import shards
    from crystalvision.data.dataset import Splits

    imgs, labels = _images(n + 8, size, seed=1), _labels(n + 8, seed=1)
    key = f"bench/{size}/shards/00000-{time.time_ns()}.parquet"
    rows = [
        {"material_id": f"m{i:05d}", "view": 0, "image_key": shards.image_ref(key, f"m{i:05d}", 0)}
        | {k: v[i] for k, v in labels.items()}
        for i in range(len(imgs))
    ]
    df = pd.DataFrame(rows)
    shards.write(store, key, df[["material_id", "view", "image_key"]], [shards.compress(img) for img in imgs])
    return Splits(df.iloc[:n].reset_index(drop=True), df.iloc[n:].reset_index(drop=True), df.iloc[:0], "image", 0)


def ray_train(size: int, steps: int, workers: int, splits, store, gpu: bool = False) -> float:
    """Global train images/s reported by a Ray Train run (2 epochs; the best epoch counts)."""
    from crystalvision.core.config import PipelineConfig
    from crystalvision.learn import Prepared
    from crystalvision.learn.train import train_model

    cfg = PipelineConfig.model_validate(
        {
            "name": f"bench-{size}-{workers}w{'-gpu' if gpu else ''}",
            "train": {
                "epochs": 2,
                "batch_size": BATCH,
                "num_workers": workers,
                "cpus_per_worker": THREADS / workers,
                "max_steps_per_epoch": steps + 1,
                "max_failures": 0,
                "use_gpu": gpu,
                "amp": gpu,
            },
        }
    )
    with tempfile.TemporaryDirectory() as out:
        prepared = Prepared(cfg, store, splits, _spec(size))
        result = train_model(prepared, name=f"{cfg.name}-{time.time_ns()}", model_dir=out)
    return max(h["train_images_per_s"] for h in result.history)


def engine_loop(size: int, steps: int, batch: int) -> float:
    """Images/s of the training core on the GPU with its defaults (bf16, channels-last, CUDA-graph step), images
    already on the GPU; best of two passes."""
    import torch

    from crystalvision.core.config import TrainConfig
    from crystalvision.learn.accel import DeviceData
    from crystalvision.learn.loop import Engine
    from crystalvision.learn.model import CrystalNet

    torch.manual_seed(0)
    engine = Engine(CrystalNet(_spec(size)), TrainConfig(batch_size=batch), torch.device("cuda"))
    n = batch * (steps + 1)
    labels = {k: torch.from_numpy(v) for k, v in _labels(n).items()}
    held = DeviceData([{"image": torch.from_numpy(_images(n, size)), **labels}], engine.device, list(labels))
    best = 0.0
    for epoch in range(2):
        stats = engine.train_epoch(held.batches(batch, seed=epoch))
        best = max(best, stats["timed_images"] / stats["elapsed"])
    return best


def gpu_rows(store, quick: bool) -> list[dict]:
    """224 px on the first GPU with the training defaults (bf16, CUDA-graph step): the core without Ray at batch
    16 and 256, and Ray Train with 1 worker at batch 16; empty without a GPU. ``bench/device/`` has the full table."""
    import torch

    if not torch.cuda.is_available():
        log.info("no GPU: skipping the GPU rows")
        return []
    size, steps = 224, 20 if quick else 50
    name = torch.cuda.get_device_name(0)
    splits = _write_dataset(store, size, BATCH * (steps + 1))
    speeds = {
        "plain_gpu": engine_loop(size, steps, BATCH),
        "plain_gpu_b256": engine_loop(size, steps, 256),
        "ray_1w_gpu": ray_train(size, steps, 1, splits, store, gpu=True),
    }
    note = f"{name}, training defaults (bf16, channels-last, CUDA graph), batch {BATCH} unless b256, {steps} steps"
    rows = [row("train_step_gpu", f"images_per_s_{k}_{size}px", v, "images/s", note) for k, v in speeds.items()]
    ratio = speeds["ray_1w_gpu"] / speeds["plain_gpu"]
    rows.append(row("train_step_gpu", f"ratio_ray_1w_vs_plain_gpu_{size}px", ratio, "x", "same run", ">= 0.9"))
    return rows


# ---- the CPU train step: today's NCHW path vs channels-last, interleaved in one process --------------------------

FOLD_IMAGES = 5650  # one fold's training images in the space study: 883 structures x 8 views x 0.8


def _timed_steps(engines: dict, threads: dict[str, int], batch: dict, steps: int, block: int = 3) -> dict[str, float]:
    """Median images/s of each engine's train step on the same batch; engines take turns in blocks of ``block``
    steps (each at its own thread count), so a load change on a shared machine hits all of them alike."""
    import statistics

    import torch

    times: dict[str, list[float]] = {k: [] for k in engines}
    for round_ in range(1 + -(-steps // block)):
        for name, engine in engines.items():
            torch.set_num_threads(threads[name])
            images, targets = engine.inputs(batch)
            for _ in range(block):
                start = time.perf_counter()
                engine.step(images, targets)
                if round_:  # the first round warms up (oneDNN primitives, allocator)
                    times[name].append(time.perf_counter() - start)
    return {k: len(batch["image"]) / statistics.median(v) for k, v in times.items()}


def _decode_seconds(n: int, size: int) -> float:
    """Seconds to decode ``n`` images from their shard frames (what every epoch pays without the held split)."""
    from crystalvision.data import shards

    frames = [shards.compress(img) for img in _images(256, size)]
    start = time.perf_counter()
    for frame in frames:
        shards.pixels(frame, size)
    return (time.perf_counter() - start) * n / len(frames)


def cpu_step(quick: bool = False) -> list[dict]:
    """The training core's CPU train step at 64 px, batch 16, fp32, eager: today's NCHW layout ("old") against
    channels-last model and batches ("new"), at 1 and 2 threads (quick: 1), interleaved in this one process; ratios
    new/old (goal: >= 1.5), the epoch time of one space-study fold (5,650 training images) and what decoding them
    costs."""
    import torch

    from crystalvision.core.config import TrainConfig
    from crystalvision.core.targets import TARGET_COLUMNS
    from crystalvision.learn.loop import Engine
    from crystalvision.learn.model import CrystalNet

    size, steps = 64, 12 if quick else 30
    thread_counts = (1,) if quick else (1, THREADS)  # 1: a default Ray Train CPU worker (train.cpus_per_worker=1)
    engines, threads = {}, {}
    for layout, channels_last in (("old_nchw", False), ("new_channels_last", True)):
        for n_threads in thread_counts:
            torch.manual_seed(0)
            tcfg = TrainConfig(batch_size=BATCH, channels_last=channels_last)
            name = f"{layout}_{n_threads}t"
            engines[name] = Engine(CrystalNet(_spec(size)), tcfg, torch.device("cpu"), label_columns=TARGET_COLUMNS)
            threads[name] = n_threads
    labels = {k: torch.from_numpy(v) for k, v in _labels(BATCH).items()}
    batch = {"image": torch.from_numpy(_images(BATCH, size)), **labels}
    load_before = os.getloadavg()[0]
    speeds = _timed_steps(engines, threads, batch, steps)
    load_after = os.getloadavg()[0]
    note = (
        f"CPU, batch {BATCH}, fp32 eager, median of {steps} steps each, engines interleaved in one process; "
        f"load avg {load_before:.1f} -> {load_after:.1f}"
    )
    rows = [row("train_step_cpu", f"images_per_s_{k}_{size}px", v, "images/s", note) for k, v in speeds.items()]
    for n_threads in thread_counts:
        ratio = speeds[f"new_channels_last_{n_threads}t"] / speeds[f"old_nchw_{n_threads}t"]
        metric = f"ratio_channels_last_vs_nchw_{n_threads}t_{size}px"
        rows.append(row("train_step_cpu", metric, ratio, "x", f"same run, {n_threads} thread(s)", ">= 1.5"))
    best = max((k for k in speeds if k.startswith("new")), key=speeds.get)
    epoch_note = f"{FOLD_IMAGES:,} images / {best} images/s; train steps only (validation and first epoch's decode not)"
    rows.append(
        row("train_step_cpu", f"epoch_s_{FOLD_IMAGES}_images_{size}px", FOLD_IMAGES / speeds[best], "s", epoch_note)
    )
    decode_note = "decoding one fold's training images from shard frames; the held split pays it once per run"
    rows.append(
        row(
            "train_step_cpu",
            f"decode_s_{FOLD_IMAGES}_images_{size}px",
            _decode_seconds(FOLD_IMAGES, size),
            "s",
            decode_note,
        )
    )
    return rows


def run(quick: bool = False) -> list[dict]:
    """Images/s of plain PyTorch vs Ray Train at 64 and 224 px (and 128 px) in one run, plus ratios (goal: 1
    worker >= 0.9x the plain loop at every size); 2 workers too except at 224 px in quick mode; GPU rows (224 px,
    AMP) when a GPU is present."""
    from crystalvision.core.settings import get_settings
    from crystalvision.data.storage import ObjectStore
    from crystalvision.ops.raycluster import ensure_ray

    sizes = [64, 224] if quick else [64, 128, 224]
    steps = 10 if quick else 20
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="cv-train-bench-") as home:
        os.environ["CRYSTALVISION_HOME"] = home
        get_settings.cache_clear()
        ensure_ray()
        store = ObjectStore(str(Path(home) / "store"))
        for size in sizes:
            n = steps if size < 224 else (3 if quick else 8)  # 224 px on 2 CPU threads: ~4 s a step
            splits = _write_dataset(store, size, BATCH * (n + 1))
            speeds = {"plain": plain_loop(size, n)}
            for workers in (1,) if quick and size == 224 else (1, 2):
                speeds[f"ray_{workers}w"] = ray_train(size, n, workers, splits, store)
            note = f"CPU, {THREADS} threads in total, batch {BATCH}, {n} timed steps, fp32, images from a shard"
            for name, value in speeds.items():
                log.info("%d px %s: %.1f images/s", size, name, value)
                rows.append(row("train_step", f"images_per_s_{name}_{size}px", value, "images/s", note))
            for name in (k for k in speeds if k != "plain"):
                ratio = speeds[name] / speeds["plain"]
                goal = ">= 0.9" if name == "ray_1w" else ""
                rows.append(row("train_step", f"ratio_{name}_vs_plain_{size}px", ratio, "x", "same run", goal))
        rows += gpu_rows(store, quick)
    return rows + cpu_step(quick)


if __name__ == "__main__":
    module_main(run, RESULTS, __doc__.splitlines()[0], "64 and 224 px only, fewer steps")
