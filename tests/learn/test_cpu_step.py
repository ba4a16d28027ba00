"""The CPU training path: channels-last gives NCHW's numbers, decoded images held across epochs equal a fresh
decode, and the memory budget decides when they are held (no Ray: the pieces the Ray Train worker uses)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from crystalvision.core.config import TrainConfig
from crystalvision.core.targets import TARGET_COLUMNS
from crystalvision.data.dataset import decode_batch, load_labels
from crystalvision.data.storage import ObjectStore
from crystalvision.learn.accel import HeldSplit, keep_split, resolve_step_mode
from crystalvision.learn.loop import Engine
from crystalvision.learn.model import CrystalNet, ModelSpec
from tests.support.toy import SPACEGROUPS, SYSTEMS, TEST_BACKBONE, write_toy_dataset


def _engine(channels_last: bool) -> Engine:
    torch.manual_seed(0)
    spec = ModelSpec(
        backbone=TEST_BACKBONE, crystal_system_classes=SYSTEMS, spacegroup_classes=SPACEGROUPS, image_size=32
    )
    tcfg = TrainConfig(batch_size=4, channels_last=channels_last)
    return Engine(CrystalNet(spec), tcfg, torch.device("cpu"), label_columns=TARGET_COLUMNS)


def _batch(n: int = 4, size: int = 32) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    batch = {"image": torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=gen)}
    for name, col in TARGET_COLUMNS.items():
        is_class = name in ("crystal_system", "spacegroup")
        batch[col] = torch.randint(0, 7, (n,), generator=gen) if is_class else torch.randn(n, generator=gen)
    return batch


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared 2-core machine two threads wait on each other at every op."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_channels_last_on_cpu_trains_like_nchw(one_thread) -> None:
    nchw, cl = _engine(False), _engine(True)
    conv = next(m for m in cl.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last), "CPU model is not channels-last"
    batch = _batch()
    for step in range(3):  # later steps run on weights that Adam updates changed
        a, b = (torch.manual_seed(step) and e.step(*e.inputs(batch)) for e in (nchw, cl))  # same dropout draws
        assert torch.isfinite(a) and float(b) == pytest.approx(float(a), rel=1e-4, abs=1e-5), step
        grads = [torch.cat([p.grad.flatten() for p in e.model.parameters()]) for e in (nchw, cl)]
        assert float((grads[1] - grads[0]).norm() / grads[0].norm()) < 1e-3, step


def test_compile_is_a_cpu_step_mode_and_auto_stays_eager() -> None:
    cpu = torch.device("cpu")
    assert resolve_step_mode(TrainConfig(step_mode="compile"), cpu, 1, None) == "compile"
    assert resolve_step_mode(TrainConfig(), cpu, 1, None) == "eager"


@pytest.fixture
def toy_split(tmp_path) -> tuple[pd.DataFrame, ObjectStore]:
    store = ObjectStore(str(tmp_path / "store"))
    frame = load_labels(store, write_toy_dataset(store, n_structures=4, views=3, size=32))
    return frame.assign(row=np.arange(len(frame))), store


def _reader(split: tuple[pd.DataFrame, ObjectStore], calls: list[int]):
    """A pass that decodes every PNG again (what a streamed Ray Data epoch does), counted in ``calls``."""
    frame, store = split

    def read(batch_size: int, seed: int | None):
        calls.append(batch_size)
        order = np.random.default_rng(seed).permutation(len(frame)) if seed is not None else np.arange(len(frame))
        for start in range(0, len(frame), batch_size):
            rows = frame.iloc[order[start : start + batch_size]]
            decoded = decode_batch({c: rows[c].to_numpy() for c in ("image_key", *TARGET_COLUMNS.values())}, store, 32)
            yield {k: torch.as_tensor(v) for k, v in decoded.items()} | {"row": torch.tensor(rows["row"].to_numpy())}

    return read


def _epoch(batches) -> dict[str, torch.Tensor]:
    batches = list(batches)
    cat = {k: torch.cat([b[k] for b in batches]) for k in ("image", "row")}
    order = torch.argsort(cat["row"])
    return {k: v[order] for k, v in cat.items()} | {"order": cat["row"]}


def test_held_split_equals_a_fresh_decode_every_epoch(toy_split) -> None:
    fresh = _epoch(_reader(toy_split, [])(5, None))
    calls: list[int] = []
    held = HeldSplit(_reader(toy_split, calls), torch.device("cpu"), ["row", *TARGET_COLUMNS.values()], keep=True)
    orders = []
    for epoch in range(3):
        got = _epoch(held.batches(5, seed=epoch))
        assert torch.equal(got["image"], fresh["image"]) and torch.equal(got["row"], fresh["row"])
        orders.append(got["order"].tolist())
    assert len(calls) == 1, "held split decoded more than once"
    assert orders[0] != orders[1], "held epochs are not reshuffled"


def test_over_budget_the_split_is_decoded_every_epoch(toy_split) -> None:
    n_bytes = len(toy_split[0]) * 32 * 32 * 3
    assert keep_split(TrainConfig(host_data_max_mb=n_bytes / 2**20), n_bytes, cuda=False)
    over = TrainConfig(host_data_max_mb=n_bytes / 2**20 / 2)
    assert not keep_split(over, n_bytes, cuda=False)
    assert keep_split(over.model_copy(update={"device_data": "on"}), n_bytes, cuda=False)
    calls: list[int] = []
    held = HeldSplit(_reader(toy_split, calls), torch.device("cpu"), ["row"], keep=keep_split(over, n_bytes, False))
    fresh = _epoch(_reader(toy_split, [])(5, None))
    for epoch in range(3):
        assert torch.equal(_epoch(held.batches(5, seed=epoch))["image"], fresh["image"])
    assert len(calls) == 3
