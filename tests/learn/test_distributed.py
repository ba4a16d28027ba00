"""The training core under torch.distributed without Ray: collectives on the training device, a 2-process gloo run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from crystalvision.core.config import TrainConfig
from crystalvision.learn.accel import DeviceData
from crystalvision.learn.loop import Engine, EvalAccumulator, fit, reduce_train
from crystalvision.learn.model import CrystalNet, ModelSpec
from crystalvision.learn.selection import LoopState
from tests.support.toy import SPACEGROUPS, SYSTEMS, TEST_BACKBONE

SIZE = 32
COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "broadcast", "reduce", "reduce_scatter_tensor")


def _spy(monkeypatch: pytest.MonkeyPatch, calls: list[tuple[str, torch.device, torch.dtype]]) -> None:
    """Record every collective's tensor; tensors off the CPU are not reduced (world size 1: a no-op anyway)."""
    for name in COLLECTIVES:
        real = getattr(dist, name)

        def spy(tensor, *args, _name=name, _real=real, **kwargs):
            t = tensor[0] if isinstance(tensor, list) else tensor
            calls.append((_name, t.device, t.dtype))
            return _real(tensor, *args, **kwargs) if t.device.type == "cpu" else None

        monkeypatch.setattr(dist, name, spy)


@pytest.fixture
def gloo_group(tmp_path: Path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_training_collectives_run_on_the_training_device(gloo_group, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under NCCL the training device is a GPU and every collective needs its tensors there; here "meta" stands in
    for it: a collective given a CPU tensor (the bug that killed every GPU run at its first validation) fails."""
    device = torch.device("meta")
    calls: list[tuple[str, torch.device, torch.dtype]] = []
    _spy(monkeypatch, calls)
    weights = TrainConfig().loss_weights
    acc = EvalAccumulator(weights, device)
    outputs = {
        "band_gap": torch.randn(4, device=device),
        "energy_above_hull": torch.randn(4, device=device),
        "crystal_system": torch.randn(4, len(SYSTEMS), device=device),
        "spacegroup": torch.randn(4, len(SPACEGROUPS), device=device),
    }
    targets = {k: (v if v.ndim == 1 else v.argmax(-1)) for k, v in outputs.items()}
    acc.add(outputs, targets)
    acc.all_reduce()
    stats = {"loss_sum": torch.tensor(3.0, device=device), "n": 4, "timed_images": 2, "elapsed": 0.5}
    reduce_train(stats, device)
    assert len(calls) >= 3, calls
    wrong = [c for c in calls if c[1].type != device.type or c[2] != torch.float64]
    assert not wrong, f"collectives off the training device or not float64: {wrong}"


# ---- two processes, plain gloo group ------------------------------------------------------------------------------


def _spec() -> ModelSpec:
    return ModelSpec(
        crystal_system_classes=SYSTEMS, spacegroup_classes=SPACEGROUPS, image_size=SIZE, backbone=TEST_BACKBONE
    )


def _toy_batches(rank: int, n: int = 24) -> list[dict[str, torch.Tensor]]:
    """A rank's half of a fixed toy set: colour encodes the crystal system."""
    g = torch.Generator().manual_seed(0)
    system = torch.randint(0, len(SYSTEMS), (2 * n,), generator=g)
    images = (system.view(-1, 1, 1, 1) * 30 + torch.randint(0, 20, (2 * n, SIZE, SIZE, 3), generator=g)).to(torch.uint8)
    rows = slice(rank * n, (rank + 1) * n)
    return [
        {
            "image": images[rows],
            "band_gap": system[rows].float() / 3,
            "energy_above_hull": torch.randn(n, generator=g),
            "crystal_system_id": system[rows],
            "spacegroup_id": system[rows] % len(SPACEGROUPS),
        }
    ]


def _phase(rank: int, world: int, folder: str, epochs: int, resume: bool) -> None:
    """Train to ``epochs`` with a fresh model (from the checkpoint when ``resume``: a relaunch); write the history."""
    calls: list[tuple[str, torch.device, torch.dtype]] = []
    real = dist.all_reduce

    def spy(tensor, *args, **kwargs):
        calls.append(("all_reduce", tensor.device, tensor.dtype))
        return real(tensor, *args, **kwargs)

    dist.all_reduce = spy
    torch.manual_seed(0)
    tcfg = TrainConfig(epochs=epochs, batch_size=8, lr=2e-3, patience=5, max_steps_per_epoch=2)
    ddp = torch.nn.parallel.DistributedDataParallel
    engine = Engine(CrystalNet(_spec()), tcfg, torch.device("cpu"), world=world, rank=rank, wrap=ddp)
    state, best = LoopState(), None
    ckpt = Path(folder) / "state.pt"
    if resume:
        state = engine.load(torch.load(ckpt, map_location="cpu", weights_only=True))
        state.resumes += 1
    columns = ["band_gap", "energy_above_hull", "crystal_system_id", "spacegroup_id"]
    data = DeviceData(_toy_batches(rank), engine.device, columns)

    def report(metrics, st, best_weights):
        if rank == 0:
            torch.save(engine.checkpoint(st), ckpt)

    state, best = fit(engine, state, best, lambda e: data.batches(8, seed=e + rank), lambda: data.batches(16), report)
    dist.all_reduce = real
    out = {"history": state.history, "calls": [[c[0], str(c[1]), str(c[2])] for c in calls], "best": best is not None}
    (Path(folder) / f"rank{rank}-{epochs}.json").write_text(json.dumps(out))
    dist.barrier()  # rank 0's checkpoint is written before anyone resumes from it


def _worker(rank: int, world: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/pg", rank=rank, world_size=world)
    try:
        _phase(rank, world, folder, 2, resume=False)
        _phase(rank, world, folder, 3, resume=True)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_core_trains_under_a_plain_two_process_gloo_group_and_resumes(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}-2.json").read_text()) for r in (0, 1)]
    h0, h1 = ranks[0]["history"], ranks[1]["history"]
    assert [int(h["epoch"]) for h in h0] == [0, 1] and h0[0]["world_size"] == 2
    assert [h["val_loss"] for h in h0] == [h["val_loss"] for h in h1]  # every rank sees the same summed metrics
    assert h0[0]["val_n"] == 48 and h0[0]["train_images"] == 32  # 2 ranks x 2 steps x batch 8
    assert all(c[1] == "cpu" and c[2] == "torch.float64" for c in ranks[0]["calls"]), ranks[0]["calls"]
    assert ranks[0]["best"]
    resumed = json.loads((tmp_path / "rank0-3.json").read_text())["history"]
    assert [int(h["epoch"]) for h in resumed] == [0, 1, 2] and resumed[:2] == h0 and resumed[2]["resumes"] == 1
    blob = torch.load(tmp_path / "state.pt", map_location="cpu", weights_only=True)  # plain contents only
    assert blob["loop"]["epoch"] == 3 and set(blob) == {"model", "optimizer", "scaler", "loop"}
