"""Tiny models and toy splits for registry / predict / serve tests."""

from __future__ import annotations

from pathlib import Path

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
    """Point MLflow at the test's CRYSTALVISION_HOME (sqlite db, artifacts folder); returns the tracking URI."""

    from crystalvision.core.settings import get_settings
    from crystalvision.track.tracking import configure_mlflow

    configure_mlflow()
    return get_settings().tracking.mlflow_tracking_uri
