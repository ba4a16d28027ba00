"""Training: loss and shapes on a batch, a 2-worker CPU Ray Train run on the toy set, GPU and NaN faults. (A worker
killed mid-epoch, then a relaunch: tests/learn/test_s3_checkpoints.py; a crashed pipeline relaunched:
test_resume.py.)"""

from __future__ import annotations

import dataclasses

import mlflow
import pytest
import torch

from crystalvision.core.config import PipelineConfig
from crystalvision.core.targets import TARGET_COLUMNS
from crystalvision.data.dataset import load_labels, split_frame
from crystalvision.data.storage import ObjectStore
from crystalvision.learn import Prepared
from crystalvision.learn.loop import Engine, fit
from crystalvision.learn.model import ModelSpec, load_model, predict_arrays
from crystalvision.learn.selection import LoopState, NonFiniteLossError
from crystalvision.learn.train import EvalAccumulator, multitask_loss, train_model
from tests.support.toy import SPACEGROUPS, SYSTEMS, TEST_BACKBONE, write_toy_dataset

SIZE = 32


def _cfg(**train) -> PipelineConfig:
    base = {"epochs": 3, "batch_size": 16, "lr": 2e-3, "num_workers": 2, "cpus_per_worker": 1.0, "patience": 10}
    base["backbone"] = TEST_BACKBONE
    return PipelineConfig.model_validate(
        {"name": "toy", "render": {"image_size": SIZE}, "split": {"protocol": "image"}, "train": base | train}
    )


def _spec() -> ModelSpec:
    return ModelSpec(
        backbone=TEST_BACKBONE, crystal_system_classes=SYSTEMS, spacegroup_classes=SPACEGROUPS, image_size=SIZE
    )


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from crystalvision.ops.raycluster import ensure_ray

    ensure_ray()
    yield
    ray.shutdown()


@pytest.fixture
def toy(cv_home, tmp_path):
    store = ObjectStore(str(tmp_path / "store"))
    key = write_toy_dataset(store, n_structures=14, views=24, size=SIZE)
    return store, split_frame(load_labels(store, key), _cfg().split)


def test_loss_and_shapes_on_a_batch() -> None:
    from crystalvision.learn.model import CrystalNet

    torch.manual_seed(0)
    model = CrystalNet(_spec())
    x = torch.randn(4, 3, SIZE, SIZE)
    out = model(x)
    assert out["band_gap"].shape == (4,) and out["energy_above_hull"].shape == (4,)
    assert out["crystal_system"].shape == (4, len(SYSTEMS)) and out["spacegroup"].shape == (4, len(SPACEGROUPS))
    targets = {
        "band_gap": torch.randn(4),
        "energy_above_hull": torch.randn(4),
        "crystal_system": torch.tensor([0, 1, 2, 3]),
        "spacegroup": torch.tensor([0, 1, 2, 3]),
    }
    weights = {"band_gap": 1.0, "energy_above_hull": 0.5, "crystal_system": 2.0, "spacegroup": 0.0}
    total, parts = multitask_loss(out, targets, weights)
    expected = parts["band_gap"] + 0.5 * parts["energy_above_hull"] + 2.0 * parts["crystal_system"]
    assert torch.allclose(total, expected)
    total.backward()
    assert all(p.grad is not None for p in model.heads["crystal_system"].parameters())
    assert model.heads["spacegroup"].weight.grad.abs().sum() == 0  # weight 0 -> no gradient
    acc = EvalAccumulator(weights)
    acc.add({k: v.detach() for k, v in out.items()}, targets)
    m = acc.metrics()
    assert m["val_n"] == 4 and 0 <= m["val_acc_crystal_system"] <= 1
    assert m["val_loss"] == pytest.approx(float(total.detach()), rel=1e-4)


@pytest.mark.slow
def test_two_worker_cpu_run_learns_the_toy_set_and_logs_to_mlflow(ray_local, toy, tmp_path) -> None:
    from crystalvision.track import tracking

    store, splits = toy
    cfg, spec = _cfg(epochs=3), _spec()  # the toy set is learnt in 3 epochs (val acc ~0.9, train loss ~0.4x)
    tracking.configure_mlflow()
    with tracking.start_run("toy-train", tags={"test": "1"}) as run:
        result = train_model(Prepared(cfg, store, splits, spec), run_id=run.info.run_id, model_dir=tmp_path / "model")
    hist = result.history
    assert [int(h["epoch"]) for h in hist] == list(range(3)) and hist[0]["world_size"] == 2
    summary = [
        (round(h["train_loss"], 2), round(h["val_loss"], 2), round(h["val_acc_crystal_system"], 2)) for h in hist
    ]
    assert hist[-1]["train_loss"] < 0.7 * hist[0]["train_loss"], summary
    assert max(h["val_acc_crystal_system"] for h in hist) > 2.0 / len(SYSTEMS), summary  # twice chance (1/7)
    assert spec.target_std["band_gap"] > 0 and result.best_epoch == int(result.metrics["best_epoch"])
    model = load_model(result.model_dir)
    assert model.spec.target_mean == spec.target_mean
    pred = predict_arrays(model, torch.zeros(2, SIZE, SIZE, 3, dtype=torch.uint8).numpy())
    assert pred["crystal_system_proba"].shape == (2, len(SYSTEMS))
    client = mlflow.MlflowClient()
    val_loss = client.get_metric_history(run.info.run_id, "val_loss")
    assert sorted(m.step for m in val_loss) == list(range(3))  # rank 0 only: one value per epoch
    assert "target_mean.band_gap" in client.get_run(run.info.run_id).data.params


def test_gpu_run_without_gpus_fails_in_seconds_naming_the_fix(ray_local, toy, tmp_path) -> None:
    import time

    from crystalvision.core.errors import ConfigError

    store, splits = toy
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"use_gpu=true asks for 2 GPU worker\(s\) but the Ray cluster has 0"):
        train_model(Prepared(_cfg(use_gpu=True), store, splits, _spec()), name="no-gpu", model_dir=tmp_path / "m")
    assert time.perf_counter() - start < 60  # the datasets are not even built: no hang waiting for GPUs


def test_gpu_worker_without_cuda_names_cause_and_fix() -> None:
    from crystalvision.core.config import TrainConfig
    from crystalvision.learn.train_worker import _check_device

    with pytest.raises(RuntimeError, match=r"use_gpu=true but this Ray Train worker sees no CUDA.*use_gpu=false"):
        _check_device(TrainConfig(use_gpu=True), torch.device("cpu"))
    _check_device(TrainConfig(use_gpu=False), torch.device("cpu"))  # CPU runs pass


def _batch(n: int, band_gap: float) -> dict[str, torch.Tensor]:
    batch = {"image": torch.randint(0, 255, (n, SIZE, SIZE, 3), dtype=torch.uint8)}
    for target, column in TARGET_COLUMNS.items():
        batch[column] = torch.full((n,), band_gap) if target == "band_gap" else torch.zeros(n, dtype=torch.long)
    return batch


def test_nan_validation_loss_ends_training_naming_the_epoch() -> None:
    """A diverged run fails at the epoch where the validation loss is NaN, not later on a missing best model."""
    torch.manual_seed(0)
    tcfg = _cfg(epochs=3).train
    engine = Engine(_tiny_net(), tcfg, torch.device("cpu"), label_columns=TARGET_COLUMNS)
    epochs = []

    def val_batches():  # finite in epoch 0, NaN from epoch 1 on (a label poisoned, or weights blown up)
        return [_batch(4, 0.5 if len(epochs) < 1 else float("nan"))]

    def report(metrics, state, best):
        epochs.append(int(metrics["epoch"]))

    with pytest.raises(NonFiniteLossError, match="validation loss is nan at epoch 1"):
        fit(engine, LoopState(), None, lambda epoch: [_batch(4, 0.5)], val_batches, report)
    assert epochs == [0]  # epoch 0 was reported (and checkpointed); epoch 1 never reached report


@pytest.mark.slow
def test_nan_validation_loss_fails_the_ray_train_run_with_the_epoch(ray_local, toy, tmp_path) -> None:
    store, splits = toy
    val = splits.val.copy()
    val["band_gap"] = float("nan")
    bad = dataclasses.replace(splits, val=val)
    cfg = _cfg(epochs=2, max_steps_per_epoch=1, max_failures=0, num_workers=1)  # one worker raises it as well
    with pytest.raises(NonFiniteLossError, match="at epoch 0"):
        train_model(Prepared(cfg, store, bad, _spec()), name="nan-run", model_dir=tmp_path / "m")


def _tiny_net():
    from crystalvision.learn.model import CrystalNet

    return CrystalNet(_spec())
