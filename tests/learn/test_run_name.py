"""A training run's name follows its content: a relaunch of the same work finds the same Ray Train run (and resumes
it), anything that changes the work (split, recipe, labels table) gets another."""

from __future__ import annotations

from pathlib import Path

from crystalvision.core.pipeline_file import load_pipeline
from crystalvision.data.dataset import load_labels, split_frame
from crystalvision.data.storage import ObjectStore
from crystalvision.learn import Prepared
from crystalvision.learn.model import ModelSpec
from crystalvision.learn.train import run_name
from tests.support.toy import SPACEGROUPS, SYSTEMS, write_toy_dataset

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "snapshot": {"max_structures": 5},
    "render": {"views_per_structure": 2, "image_size": 32, "num_workers": 1},
    "split": {"test_fraction": 0.3},
    "train": {"backbone": "test_efficientnet", "epochs": 3, "max_steps_per_epoch": 1, "num_workers": 1},
}


def test_run_name_follows_content(cv_home, tmp_path) -> None:
    store = ObjectStore(str(tmp_path / "store"))
    key = write_toy_dataset(store, n_structures=8, views=2, size=32)
    cfg = load_pipeline(ROOT / "pipelines/quickstart.yaml", TINY)
    spec = ModelSpec(crystal_system_classes=SYSTEMS, spacegroup_classes=SPACEGROUPS, image_size=32)
    splits = split_frame(load_labels(store, key), cfg.split)
    base = run_name(Prepared(cfg, store, splits, spec, labels_key=key))
    assert base == run_name(Prepared(cfg, store, splits, spec.model_copy(), labels_key=key))  # relaunch: same
    other_seed = split_frame(load_labels(store, key), cfg.split.model_copy(update={"seed": 5}))
    more_epochs = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 9})})
    assert len({base, run_name(Prepared(cfg, store, other_seed, spec, labels_key=key)),
                run_name(Prepared(more_epochs, store, splits, spec, labels_key=key)),
                run_name(Prepared(cfg, store, splits, spec, labels_key="other.parquet"))}) == 4  # fmt: skip
