"""A model card's numbers come from a k-fold record only when the record describes the model: the same snapshot,
render, label sources and recipe (``stages.model_card``, ``track.recipe``); else the card says it was
withheld and why."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from crystalvision.core.pipeline_file import load_pipeline, parse_overrides
from crystalvision.data.snapshot import bundled_snapshots, load_snapshot
from crystalvision.render.job import render_config_hash
from crystalvision.stages import model_card
from crystalvision.track.card import card_markdown, trust_text
from crystalvision.track.recipe import recipe

ROOT = Path(__file__).resolve().parents[2]
RECORD = ROOT / "docs/study/records/space-grouped.json"


@pytest.fixture(scope="module")
def space_manifest():
    return load_snapshot(bundled_snapshots()["lmno-space"]).manifest


def _record(tmp_path: Path, **changes) -> Path:
    """The space k-fold record as `pipelines/space-grouped.yaml` run with this package writes it (its render config
    hash and recipe), with ``changes`` to its top-level keys."""
    grouped = load_pipeline(ROOT / "pipelines/space-grouped.yaml")
    record = json.loads(RECORD.read_text())
    record["render"]["render_config_hash"] = render_config_hash(grouped.render)
    record |= {"recipe": recipe(grouped)} | changes
    path = tmp_path / "space-grouped.json"
    path.write_text(json.dumps({k: v for k, v in record.items() if v is not None}))
    return path


def _space(record: Path, *overrides: str):
    return load_pipeline(
        ROOT / "pipelines/space.yaml", parse_overrides([f"registry.generalisation_record={record}", *overrides])
    )


def test_the_same_recipe_keeps_the_card(tmp_path: Path, space_manifest) -> None:
    card = model_card(_space(_record(tmp_path)), space_manifest)
    assert "withheld" not in card and card["heads"]["crystal_system"]["metric"] == "accuracy"
    assert trust_text(card, "crystal_system").startswith("this model: 0.")


def test_an_override_that_changes_the_model_withholds_the_card(tmp_path: Path, space_manifest, caplog) -> None:
    record = _record(tmp_path)
    with caplog.at_level(logging.WARNING, logger="crystalvision.track.card"):
        card = model_card(_space(record, "train.epochs=1", "render.image_size=32"), space_manifest)
    assert set(card) == {"withheld"} and card["withheld"].startswith("card withheld: space-grouped.json measured")
    assert "train.epochs: 12 in the record, 1 here" in card["withheld"]
    assert "render config hash" in card["withheld"] and "(other images)" in card["withheld"]
    assert "registry.generalisation_record" in caplog.text and "train.epochs" in caplog.text
    unmeasured = f"no measured out-of-fold metrics on unseen structures ({card['withheld']})"
    assert trust_text(card, "crystal_system") == f"this model: {unmeasured}"
    assert "card withheld" in "\n".join(card_markdown(card))
    for override in ("train.lr=0.01", "train.augment.enabled=false", "snapshot.include_flagged=true"):
        assert set(model_card(_space(record, override), space_manifest)) == {"withheld"}, override
    # settings that decide only where and how fast it trains, or its seed, keep the card
    for override in ("train.use_gpu=true", "train.cpus_per_worker=1", "train.seed=3", "render.num_workers=1"):
        assert "heads" in model_card(_space(record, override), space_manifest), override


def test_a_record_of_other_labels_or_without_a_recipe_withholds_the_card(tmp_path: Path, space_manifest) -> None:
    labels = model_card(_space(_record(tmp_path, label_source="band_gap: DFT")), space_manifest)
    assert "other label sources" in labels["withheld"]
    old = model_card(_space(_record(tmp_path, recipe=None)), space_manifest)
    assert "the record keeps no training recipe" in old["withheld"]
