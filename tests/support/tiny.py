"""Tiny models and toy splits for registry / predict / serve tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from crystalvision.core.config import SplitConfig
from crystalvision.data.dataset import Splits, load_labels, split_frame
from crystalvision.data.storage import ObjectStore
from crystalvision.learn.model import CrystalNet, ModelSpec, save_model

from .toy import SPACEGROUPS, SYSTEMS, TEST_BACKBONE, write_toy_dataset

SIZE = 32


def toy_splits(store: ObjectStore, n_structures: int = 10, views: int = 2, size: int = SIZE) -> Splits:
    """The toy dataset written into ``store`` and split by structure."""
    labels_key = write_toy_dataset(store, n_structures=n_structures, views=views, size=size)
    return split_frame(load_labels(store, labels_key), SplitConfig(test_fraction=0.3, val_fraction=0.3))


def tiny_model_dir(folder: Path, seed: int = 0, size: int = SIZE) -> Path:
    """An untrained CrystalNet saved as a model folder (weights.pt + model.json)."""
    torch.manual_seed(seed)
    spec = ModelSpec(
        backbone=TEST_BACKBONE,
        crystal_system_classes=SYSTEMS,
        spacegroup_classes=SPACEGROUPS,
        target_mean={"band_gap": 1.5, "energy_above_hull": 0.03},
        target_std={"band_gap": 1.0, "energy_above_hull": 0.02},
        image_size=size,
        snapshot_sha256="toy",
        render_config={"image_size": size, "views_per_structure": 2},
    )
    return save_model(CrystalNet(spec), folder)


def use_test_tracking() -> str:
    """Point MLflow at the test's CRYSTALVISION_HOME (sqlite db, artifacts folder); returns the tracking URI. A new
    sqlite db starts as a copy of a migrated one (:mod:`tests.support.mlflow_db`)."""

    from crystalvision.core.settings import get_settings
    from crystalvision.track.tracking import configure_mlflow

    from .mlflow_db import place_fresh_db_for

    uri = get_settings().tracking.mlflow_tracking_uri
    place_fresh_db_for(uri)
    configure_mlflow()
    return uri


# what the conftest's cv_home fixture clears, so that settings come from CRYSTALVISION_HOME alone
HOME_OVERRIDES = (
    "MLFLOW_TRACKING_URI",
    "CRYSTALVISION_MLFLOW_TRACKING_URI",
    "CRYSTALVISION_OBJECT_STORE_URI",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_EXPERIMENT_NAME",
)


def use_home(monkeypatch: pytest.MonkeyPatch, home: Path) -> str:
    """CRYSTALVISION_HOME set to ``home`` (as ``cv_home`` sets a fresh one) and MLflow pointed at it, until
    ``monkeypatch`` is undone; returns the tracking URI. For a home made once per module and shared by its tests."""
    from crystalvision.core.settings import get_settings

    monkeypatch.setenv("CRYSTALVISION_HOME", str(home))
    for var in HOME_OVERRIDES:
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    return use_test_tracking()


@dataclass(frozen=True)
class LoggedModel:
    """A tiny model logged as a pyfunc into a run of ``home``'s tracking store."""

    home: Path
    uri: str
    run_id: str
    model_dir: Path
    splits: Splits
    store: ObjectStore


def log_tiny_model(folder: Path) -> LoggedModel:
    """The toy dataset (10 structures, 2 views) and an untrained tiny model in ``folder``, the model logged as a
    pyfunc into a run of its own home there (``folder/cvhome``). Made once per module by the tests that only read
    it; they point at its home with :func:`use_home`."""
    import mlflow

    from crystalvision.core.settings import get_settings
    from crystalvision.serve.mlflow_model import log_model

    store = ObjectStore(str(folder / "store"))
    splits = toy_splits(store)
    model_dir = tiny_model_dir(folder / "model")
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_home(monkeypatch, folder / "cvhome")
        with mlflow.start_run() as run:
            uri = log_model(model_dir, splits, store)
    get_settings.cache_clear()
    return LoggedModel(folder / "cvhome", uri, run.info.run_id, model_dir, splits, store)
