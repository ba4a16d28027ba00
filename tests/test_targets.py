"""The targets table is the one source of target names, label columns, heads and prediction columns."""

from __future__ import annotations

import numpy as np
import torch

from crystalvision import config, targets
from crystalvision.config import TrainConfig
from crystalvision.dataset import LABEL_COLUMNS, RAY_COLUMNS, decode_batch
from crystalvision.loop import Engine
from crystalvision.model import CrystalNet, ModelSpec
from crystalvision.predict import OUTPUT_COLUMNS


def _spec() -> ModelSpec:
    return ModelSpec(crystal_system_classes=["cubic", "hexagonal", "trigonal"], spacegroup_classes=["Fm-3m", "P1"],
                     image_size=32)  # fmt: skip


def test_table_derives_target_tuples_and_columns() -> None:
    assert config.TARGETS == targets.TARGETS == ("band_gap", "energy_above_hull", "crystal_system", "spacegroup")
    assert targets.TARGET_COLUMNS == {
        "band_gap": "band_gap",
        "energy_above_hull": "energy_above_hull",
        "crystal_system": "crystal_system_id",
        "spacegroup": "spacegroup_id",
    }
    assert {"crystal_system", "spacegroup_symbol", "crystal_system_id", "spacegroup_id"} <= set(LABEL_COLUMNS)
    assert RAY_COLUMNS == ("image", "band_gap", "energy_above_hull", "crystal_system_id", "spacegroup_id")
    assert OUTPUT_COLUMNS[-1] == "error" and set(targets.TARGETS) <= set(OUTPUT_COLUMNS)
    assert set(config.TrainConfig().loss_weights) == set(targets.TARGETS)


def test_model_heads_follow_the_table() -> None:
    spec = _spec()
    model = CrystalNet(spec).eval()
    assert list(model.heads) == list(targets.TARGETS)
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 32, 32))
    for t in targets.TABLE:
        expected = (2,) if t.is_regression else (2, len(spec.classes(t.name)))
        assert tuple(out[t.name].shape) == expected, t.name


def test_training_batch_reads_every_head_from_its_column() -> None:
    batch = {col: np.arange(3) for col in targets.TARGET_COLUMNS.values()}
    decoded = decode_batch({**batch, "image_key": np.array([], dtype=object)}, store=None, size=8)
    for t in targets.TABLE:
        col = t.train_column
        assert decoded[col].dtype == (np.float32 if t.is_regression else np.int64)
    batch = {k: torch.as_tensor(v) for k, v in decoded.items()} | {"image": torch.zeros(3, 8, 8, 3, dtype=torch.uint8)}
    engine = Engine(CrystalNet(_spec()), TrainConfig(), torch.device("cpu"))
    _, got = engine.inputs(batch)
    assert set(got) == set(targets.TARGETS)
