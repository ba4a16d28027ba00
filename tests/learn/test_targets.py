"""The targets table is the one source of target names, label columns, heads and prediction columns."""

from __future__ import annotations

import numpy as np
import torch

from crystalvision.core import config, targets
from crystalvision.core.config import TrainConfig
from crystalvision.data.dataset import LABEL_COLUMNS, RAY_COLUMNS, decode_batch
from crystalvision.learn.loop import Engine
from crystalvision.learn.model import CrystalNet, ModelSpec
from crystalvision.serve.predict import OUTPUT_COLUMNS


def _spec() -> ModelSpec:
    return ModelSpec(class_names={"crystal_system": ["cubic", "hexagonal", "trigonal"], "spacegroup": ["Fm-3m", "P1"]},
                     image_size=32)  # fmt: skip


def test_class_lists_are_keyed_by_target_and_older_files_still_load(bundled_snapshot) -> None:
    """Class lists live in one dict per object (snapshot encoders, model spec), keyed by the table's targets; a
    model.json written with the older one-field-per-head layout still loads, a spec missing a head is refused."""
    import json

    import pytest

    from crystalvision.data.snapshot import ENCODERS_FILE, LabelEncoders, derive_encoders

    enc = bundled_snapshot.encoders
    assert set(enc.root) == set(targets.TARGETS_CLASSIFICATION)
    on_disk = json.loads((bundled_snapshot.path / ENCODERS_FILE).read_text())
    assert json.loads(enc.model_dump_json()) == on_disk  # the stored format did not change
    assert derive_encoders(bundled_snapshot.records).root["spacegroup"] == enc.classes("spacegroup")
    with pytest.raises(KeyError, match="ingest"):
        LabelEncoders({"crystal_system": ["cubic"]}).classes("spacegroup")
    legacy = {"crystal_system_classes": ["cubic"], "spacegroup_classes": ["P1"], "image_size": 32}
    spec = ModelSpec.model_validate(legacy)
    assert spec.class_lists() == {"crystal_system": ["cubic"], "spacegroup": ["P1"]}
    assert ModelSpec.model_validate_json(spec.model_dump_json()) == spec
    with pytest.raises(ValueError, match="spacegroup"):
        ModelSpec.model_validate({"crystal_system_classes": ["cubic"]})


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
