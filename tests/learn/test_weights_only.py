"""Loading from storage never executes code: every loader of the product (a model folder, backbone weights, a Ray
Train checkpoint on a worker and on the driver) refuses a file whose pickle would run a payload, and the payload
never runs."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch


class Payload:
    """Unpickled, it creates ``marker``: what a tampered checkpoint would do with a shell command instead."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


class FolderCheckpoint:
    """What the loaders use of ``ray.train.Checkpoint``: a local directory."""

    def __init__(self, path: Path):
        self.path = path

    @contextmanager
    def as_directory(self):
        yield str(self.path)


def _tampered(path: Path, marker: Path) -> None:
    """A checkpoint file of plain tensors plus one pickled payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"loop": {"epoch": 1}, "weight": torch.zeros(2), "payload": Payload(marker)}, path)


def _model_folder(folder: Path, marker: Path) -> Callable[[], object]:
    from crystalvision.learn.model import SPEC_FILE, WEIGHTS_FILE, ModelSpec, load_model

    spec = ModelSpec(backbone="test_efficientnet", class_names={"crystal_system": ["cubic"], "spacegroup": ["P1"]})
    folder.mkdir(parents=True)
    (folder / SPEC_FILE).write_text(spec.model_dump_json())
    _tampered(folder / WEIGHTS_FILE, marker)
    return lambda: load_model(folder)


def _backbone_weights(folder: Path, marker: Path) -> Callable[[], object]:
    from crystalvision.learn.backbone import load_backbone_weights

    _tampered(folder / "backbone.pth", marker)
    return lambda: load_backbone_weights(torch.nn.Linear(2, 2), str(folder / "backbone.pth"))


def _worker_checkpoint(folder: Path, marker: Path) -> Callable[[], object]:
    from crystalvision.learn.train_worker import STATE_FILE, _load_checkpoint

    _tampered(folder / STATE_FILE, marker)
    return lambda: _load_checkpoint(FolderCheckpoint(folder), engine=None)


def _worker_best_model(folder: Path, marker: Path) -> Callable[[], object]:
    from crystalvision.learn.train_worker import BEST_FILE, STATE_FILE, _load_checkpoint

    folder.mkdir(parents=True)
    torch.save({"loop": {"epoch": 1}}, folder / STATE_FILE)  # a clean state: the best model's file is the bad one
    _tampered(folder / BEST_FILE, marker)
    return lambda: _load_checkpoint(FolderCheckpoint(folder), engine=None)


def _driver_final_state(folder: Path, marker: Path) -> Callable[[], object]:
    from crystalvision.learn.train import _read_final_checkpoint
    from crystalvision.learn.train_worker import BEST_FILE, STATE_FILE

    _tampered(folder / STATE_FILE, marker)
    torch.save({"weight": torch.zeros(2)}, folder / BEST_FILE)
    return lambda: _read_final_checkpoint(FolderCheckpoint(folder))


def _driver_final_best_model(folder: Path, marker: Path) -> Callable[[], object]:
    from crystalvision.learn.train import _read_final_checkpoint
    from crystalvision.learn.train_worker import BEST_FILE, STATE_FILE

    _tampered(folder / BEST_FILE, marker)
    torch.save({"loop": {"epoch": 1}}, folder / STATE_FILE)
    return lambda: _read_final_checkpoint(FolderCheckpoint(folder))


# One tampered file per case, read by exactly one torch.load call of the product: each call is checked on its own.
LOADERS = {
    "model.load_model": _model_folder,
    "backbone.load_backbone_weights": _backbone_weights,
    "train_worker checkpoint state": _worker_checkpoint,
    "train_worker checkpoint best model": _worker_best_model,
    "train final checkpoint state": _driver_final_state,
    "train final checkpoint best model": _driver_final_best_model,
}


@pytest.mark.parametrize("loader", LOADERS, ids=list(LOADERS))
def test_a_checkpoint_carrying_a_pickle_payload_is_refused_and_never_runs(loader: str, tmp_path: Path):
    marker = tmp_path / "payload-ran"
    load = LOADERS[loader](tmp_path / "stored", marker)
    error = None
    try:
        load()
    except Exception as exc:  # whatever happens, the marker is checked first
        error = exc
    assert not marker.exists(), f"{loader} ran the checkpoint's pickled code"
    assert isinstance(error, pickle.UnpicklingError) and "Weights only load failed" in str(error), repr(error)
