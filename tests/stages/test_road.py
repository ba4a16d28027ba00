"""The road from a config to prepared inputs: one read of the labels table, the split or the folds (never both), and
what the selection must meet refused before anything is rendered."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from crystalvision.core.config import PipelineConfig
from crystalvision.core.errors import ConfigError
from crystalvision.data.folds import FoldSplits
from crystalvision.data.storage import ObjectStore
from crystalvision.render.job import RenderResult
from crystalvision.stages import road
from tests.support.toy import write_toy_dataset

ROOT = Path(__file__).resolve().parents[2]


def _rendered(labels_key: str) -> RenderResult:
    return RenderResult("renders/toy", labels_key, 0, 0, 0, [], {}, {"total_s": 0.0})


@pytest.fixture
def parquet_reads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every parquet table read from now on (the labels table is the only one the road reads)."""
    reads: list[object] = []
    real = pd.read_parquet

    def counted(*args, **kwargs):
        reads.append(args[0] if args else kwargs.get("path"))
        return real(*args, **kwargs)

    monkeypatch.setattr(pd, "read_parquet", counted)
    return reads


def test_a_kfold_road_reads_the_labels_table_once_and_makes_no_plain_split(tmp_path, parquet_reads, monkeypatch):
    """k folds from one read of the labels table, and each fold's inputs from them without reading it again (the road
    used to make a plain split that a k-fold run threw away, then read the table again for the folds)."""
    store = ObjectStore(str(tmp_path / "store"))
    key = write_toy_dataset(store, n_structures=8, views=1)
    cfg = PipelineConfig(name="k", split={"protocol": "grouped", "folds": 2})
    snap, selection = road.select_records(cfg)

    def no_plain_split(*_args, **_kwargs):
        raise AssertionError("a k-fold config must not be split the plain way")

    monkeypatch.setattr(road, "split_frame", no_plain_split)
    prepared = road.assemble(cfg, snap, selection, _rendered(key), store)
    folds = prepared.fold_inputs()
    assert len(parquet_reads) == 1
    assert [f.splits.fold for f in folds] == [0, 1] and prepared.splits is prepared.folds[0]
    assert all(isinstance(f.splits, FoldSplits) and not f.folds for f in folds)
    assert len({id(f.spec) for f in folds} | {id(prepared.spec)}) == 3  # training scales its own copy
    tested = pd.concat([f.splits.test for f in folds])
    assert sorted(tested["material_id"]) == sorted(prepared.splits.train["material_id"].unique().tolist()
                                                   + prepared.splits.val["material_id"].unique().tolist()
                                                   + prepared.splits.test["material_id"].unique().tolist())  # fmt: skip
    assert not prepared.for_workers().folds  # a trial ships one split, not k copies of the table


def test_a_plain_road_reads_the_labels_table_once_and_has_no_folds(tmp_path, parquet_reads):
    store = ObjectStore(str(tmp_path / "store"))
    key = write_toy_dataset(store, n_structures=8, views=1)
    cfg = PipelineConfig(name="p", split={"test_fraction": 0.25, "val_fraction": 0.25})
    snap, selection = road.select_records(cfg)
    prepared = road.assemble(cfg, snap, selection, _rendered(key), store)
    assert len(parquet_reads) == 1 and not prepared.folds and prepared.fold_inputs() == []
    assert len(prepared.splits.test) and prepared.labels_key == key


@pytest.fixture
def no_render(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendering is an error: what the road refuses, it refuses before it."""
    import crystalvision.render.job as job

    def refuse(*_args, **_kwargs):
        raise AssertionError("rendered before the selection's checks")

    monkeypatch.setattr(job, "render_dataset", refuse)


def test_a_fold_count_the_selection_cannot_fill_is_refused_before_rendering(cv_home, no_render) -> None:
    cfg = PipelineConfig(name="k", snapshot={"max_structures": 6}, split={"protocol": "grouped", "folds": 7})
    with pytest.raises(ConfigError, match="split.folds = 7"):
        road.prepare(cfg)
    assert not (cv_home / "store").exists()


def test_a_card_record_of_another_snapshot_is_refused_before_rendering(cv_home, no_render, tmp_path) -> None:
    record = tmp_path / "other.json"
    record.write_text(json.dumps({"snapshot_sha256": "f" * 64, "pooled": {"metrics": {"pooled_n_structures": 6.0}}}))
    cfg = PipelineConfig(name="c", registry={"generalisation_record": str(record)})
    with pytest.raises(ConfigError, match="measured snapshot ffffffffffff"):
        road.prepare(cfg, card=True)
    kfold = PipelineConfig(name="k", registry={"generalisation_record": str(record)}, split={"folds": 2})
    assert road.model_card(kfold, None) == {}  # a k-fold run registers no model: no card to read
