"""GPU check and throughput table for one run on a bare GPU machine (``bench/device/run`` calls this).

1. The real Ray Train GPU path: ``train_model`` with ``use_gpu=true`` on 1 GPU (and all GPUs when there are
   several), on the carried pre-rendered images (PNG files in a local object store, decoded by Ray Data).
2. The plain loop (``crystalvision.learn.loop.Engine`` without Ray, images already on the GPU): batch 16/64/256,
   bf16/fp16/fp32, channels-last or not, CUDA graphs / torch.compile / eager.
3. Ray Train 1 GPU vs the plain loop at the same settings, in the same run.

Prints one JSON line (and writes it to ``--out``). ``--smoke`` runs the same code on the CPU at 32 px with a few
steps, to test the script where there is no GPU.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")

log = logging.getLogger("device_bench")
STUDY_TRAIN_IMAGES, STUDY_EPOCHS = 2360, 124


def load_data(path: Path, size: int | None) -> dict[str, np.ndarray]:
    """The carried images (uint8 NHWC) and labels; resized by striding for the smoke run."""
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    if size and size != data["image"].shape[1]:
        step = data["image"].shape[1] // size
        data["image"] = np.ascontiguousarray(data["image"][:, ::step, ::step][:, :size, :size])
    return data


def spec_for(data: dict[str, np.ndarray], size: int):
    from crystalvision.learn.model import ModelSpec

    return ModelSpec(
        crystal_system_classes=[str(c) for c in data["crystal_system_classes"]],
        spacegroup_classes=[str(c) for c in data["spacegroup_classes"]],
        image_size=size,
    )


# ---- plain loop ---------------------------------------------------------------------------------------------------


def plain(data, size: int, device: str, batch: int, steps: int, **train) -> dict:
    """Images/s of the core's train step on images already on the device (best of two passes)."""
    import torch

    from crystalvision.core.config import TrainConfig
    from crystalvision.learn.accel import DeviceData
    from crystalvision.learn.loop import Engine
    from crystalvision.learn.model import CrystalNet

    torch.manual_seed(0)
    tcfg = TrainConfig(batch_size=batch, max_steps_per_epoch=steps + 1, **train)
    t0 = time.perf_counter()
    engine = Engine(CrystalNet(spec_for(data, size)), tcfg, torch.device(device))
    cols = ["band_gap", "energy_above_hull", "crystal_system_id", "spacegroup_id"]
    held = DeviceData([{k: torch.from_numpy(data[k]) for k in ["image", *cols]}], engine.device, cols)
    gen = torch.Generator().manual_seed(0)

    def batches():
        for _ in range(steps + 1):
            idx = torch.randint(0, len(held), (batch,), generator=gen).to(engine.device)
            yield {k: v.index_select(0, idx) for k, v in held.data.items()}

    speeds, first = [], 0.0
    for _ in range(2):
        t = time.perf_counter()
        stats = engine.train_epoch(batches())
        first = first or (time.perf_counter() - t - stats["elapsed"])
        speeds.append(stats["timed_images"] / stats["elapsed"])
    loss = float(stats["loss_sum"]) / stats["n"]
    return {
        "images_per_s": max(speeds),
        "mode": engine.mode,
        "dtype": str(engine.dtype),
        "first_step_s": first,
        "setup_s": time.perf_counter() - t0,
        "loss": loss,
    }


def plain_table(
    data, size: int, device: str, steps: int, smoke: bool, deadline: float, focus: bool = False
) -> list[dict]:
    rows = [
        (16, {"step_mode": "graphs"}),
        (16, {"step_mode": "eager"}),
        (16, {"step_mode": "eager", "amp": True, "_fp16": True}),
        (64, {"step_mode": "graphs"}),
        (64, {"step_mode": "eager"}),
        (64, {"step_mode": "eager", "amp": False}),
        (256, {"step_mode": "graphs"}),
        (256, {"step_mode": "eager"}),
        (256, {"step_mode": "eager", "_fp16": True}),
        (256, {"step_mode": "eager", "channels_last": False}),
        (16, {"step_mode": "compile"}),
        (256, {"step_mode": "compile"}),
    ]
    if focus:  # the second run: cuDNN autotuning off (the default), b256, compile
        rows = [
            (16, {"step_mode": "graphs"}),
            (64, {"step_mode": "graphs"}),
            (256, {"step_mode": "graphs"}),
            (256, {"step_mode": "eager"}),
            (256, {"step_mode": "eager", "channels_last": False}),
            (256, {"step_mode": "eager", "_fp16": True}),
            (16, {"step_mode": "eager"}),
            (16, {"step_mode": "compile"}),
            (256, {"step_mode": "graphs", "cudnn_benchmark": True}),
        ]
    if smoke:
        rows = [(16, {"step_mode": "graphs"}), (16, {"step_mode": "eager", "channels_last": False})]
    out = []
    for batch, kw in rows:
        if time.monotonic() > deadline:
            out.append({"batch": batch, **kw, "skipped": "time budget spent"})
            continue
        kw = dict(kw)
        fp16 = kw.pop("_fp16", False)
        name = f"b{batch}-" + "-".join(f"{k}={v}" for k, v in kw.items()) + ("-fp16" if fp16 else "")
        try:
            r = _with_fp16(fp16, lambda b=batch, k=kw: plain(data, size, device, b, steps, **k))
            r |= {"batch": batch, **kw, "fp16_forced": fp16, "name": name}
        except Exception as exc:  # one failing variant must not lose the table
            r = {"batch": batch, **kw, "name": name, "error": f"{type(exc).__name__}: {exc}"[:500]}
            traceback.print_exc()
        log.info("plain %s: %s", name, r)
        out.append(r)
    return out


def _with_fp16(on: bool, fn):
    """Run ``fn`` with bf16 reported unsupported (to measure fp16 + GradScaler on a bf16 GPU)."""
    import torch

    if not on:
        return fn()
    real = torch.cuda.is_bf16_supported
    torch.cuda.is_bf16_supported = lambda *a, **k: False
    try:
        return fn()
    finally:
        torch.cuda.is_bf16_supported = real


# ---- Ray Train ------------------------------------------------------------------------------------------------------


def write_store(data, root: Path, repeat: int):
    """PNG files in a local object store and a Splits of ``repeat`` passes over them (train) + one (val)."""
    import pandas as pd
    from PIL import Image

    from crystalvision.data.dataset import Splits
    from crystalvision.data.storage import ObjectStore

    store = ObjectStore(str(root))
    rows = []
    for i, img in enumerate(data["image"]):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG", compress_level=1)
        key = f"bench/{i:05d}.png"
        store.put_bytes(key, buf.getvalue())
        labels = {k: data[k][i] for k in ("band_gap", "energy_above_hull", "crystal_system_id", "spacegroup_id")}
        rows.append({"material_id": f"m{i // 4}", "view": i % 4, "image_key": key, **labels})
    df = pd.DataFrame(rows)
    train = pd.concat([df] * repeat, ignore_index=True).sample(frac=1.0, random_state=0).reset_index(drop=True)
    return store, Splits(train, df.iloc[::4].reset_index(drop=True), df.iloc[:0], "image", 0)


def ray_train(data, size: int, store, splits, workers: int, gpu: bool, epochs: int, **train) -> dict:
    from crystalvision.core.config import PipelineConfig
    from crystalvision.learn import Prepared
    from crystalvision.learn.train import train_model

    cfg = PipelineConfig.model_validate(
        {
            "name": f"device-{workers}{'gpu' if gpu else 'cpu'}",
            "render": {"image_size": size},
            "train": {
                "epochs": epochs,
                "batch_size": 16,
                "num_workers": workers,
                "use_gpu": gpu,
                "cpus_per_worker": 2.0 if gpu else 1.0,
                "max_failures": 0,
                "patience": 50,
                **train,
            },
        }
    )
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        prepared = Prepared(cfg, store, splits, spec_for(data, size))
        res = train_model(prepared, name=f"{cfg.name}-{time.time_ns()}", model_dir=out)
        loadable = (Path(out) / "weights.pt").exists()
    hist = res.history
    return {
        "workers": workers,
        "gpu": gpu,
        "images_per_s": max(h["train_images_per_s"] for h in hist),
        "images_per_s_by_epoch": [round(h["train_images_per_s"], 1) for h in hist],
        "train_loss_by_epoch": [round(h["train_loss"], 4) for h in hist],
        "val_loss_by_epoch": [round(h["val_loss"], 4) for h in hist],
        "epochs": len(hist),
        "world_size": hist[-1]["world_size"],
        "wall_s": time.perf_counter() - t0,
        "model_saved": loadable,
        **train,
    }


def no_gpu_fails_fast() -> dict:
    """``use_gpu=true`` asking for more GPUs than the cluster has must fail in seconds with a clear error."""
    import torch

    from crystalvision.learn import require_gpus

    t = time.perf_counter()
    try:
        require_gpus(torch.cuda.device_count() + 1)
        return {"ok": False, "error": "no error raised"}
    except Exception as exc:
        return {"ok": "use_gpu" in str(exc), "seconds": time.perf_counter() - t, "error": str(exc)[:300]}


# ---- main ---------------------------------------------------------------------------------------------------------


def environment() -> dict:
    import torch

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpus": torch.cuda.device_count(),
    }
    if torch.cuda.is_available():
        env |= {"gpu": torch.cuda.get_device_name(0), "bf16": torch.cuda.is_bf16_supported()}
    try:
        import ray

        env["ray"] = ray.__version__
    except ImportError as exc:
        env["ray"] = f"missing: {exc}"
    return env


def run(args) -> dict:
    import torch

    gpu = torch.cuda.is_available() and not args.smoke
    size = args.size or (32 if args.smoke else 224)
    device = "cuda" if gpu else "cpu"
    data = load_data(args.data, size)
    result: dict = {"env": environment(), "size": size, "n_images": len(data["image"]), "smoke": args.smoke}
    log.info("environment %s", result["env"])
    steps = args.steps or (3 if args.smoke else 60)
    t0 = time.perf_counter()
    from crystalvision.ops.raycluster import ensure_ray

    ensure_ray()
    result["fail_fast"] = no_gpu_fails_fast()

    def ray_phase() -> list[dict]:
        with tempfile.TemporaryDirectory(prefix="cv-device-") as home:
            os.environ["CRYSTALVISION_HOME"] = home
            from crystalvision.core.settings import get_settings

            get_settings.cache_clear()
            store, splits = write_store(data, Path(home) / "store", repeat=2 if args.smoke else 9)
            epochs = 2 if args.smoke else 3
            extra = {"max_steps_per_epoch": 4} if args.smoke else {}
            runs = []
            for workers in [1] + ([torch.cuda.device_count()] if gpu and torch.cuda.device_count() > 1 else []):
                try:
                    runs.append(ray_train(data, size, store, splits, workers, gpu, epochs, **extra))
                except Exception as exc:  # keep the plain table
                    traceback.print_exc()
                    runs.append({"workers": workers, "error": f"{type(exc).__name__}: {exc}"[:1500]})
            log.info("ray train %s", runs)
            return runs

    if not args.ray_last:
        result["ray_train"] = runs = ray_phase()
        _save(result, args.out)
    result["plain"] = plain_table(data, size, device, steps, args.smoke, args.start + args.budget, args.focus)
    _save(result, args.out)
    if args.ray_last:
        result["ray_train"] = runs = ray_phase()
    ok = [r for r in result["plain"] if "images_per_s" in r]
    ref = next((r for r in ok if r["batch"] == 16), None)  # the first row: batch 16, what step_mode=auto picks
    if ref and "images_per_s" in runs[0]:
        result["ratio_ray_1gpu_vs_plain_b16"] = runs[0]["images_per_s"] / ref["images_per_s"]
    best16 = max((r["images_per_s"] for r in ok if r["batch"] == 16), default=0.0)
    best256 = max((r["images_per_s"] for r in ok if r["batch"] == 256), default=0.0)
    result["best_images_per_s"] = {"b16": best16, "b256": best256}
    if best16:
        result["study_protocol_minutes_at_best_b16"] = STUDY_TRAIN_IMAGES * STUDY_EPOCHS / best16 / 60
    result["total_s"] = time.perf_counter() - t0
    return result


def _save(result: dict, out: Path | None) -> None:
    """Write what is measured so far (a timeout keeps the earlier phases)."""
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, default=str) + "\n")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path)
    p.add_argument("--smoke", action="store_true", help="CPU, 32 px, a few steps (tests the script)")
    p.add_argument("--size", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--focus", action="store_true", help="the second run's table (b256, compile, cuDNN autotune)")
    p.add_argument("--ray-last", action="store_true", help="Ray Train after the plain table")
    p.add_argument("--budget", type=float, default=300.0, help="seconds after which remaining variants are skipped")
    args = p.parse_args()
    args.start = time.monotonic()
    try:
        result = run(args)
    except Exception as exc:
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    _save(result, args.out)
    print(json.dumps(result, default=str), flush=True)
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
