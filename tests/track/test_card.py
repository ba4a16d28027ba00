"""The model card's measured generalisation (card.py): read from a grouped k-fold record, refused when it cannot
describe the model, shown beside answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crystalvision.core.errors import ConfigError
from crystalvision.track.card import card_markdown, generalisation_from_record, trust_text

RECORD = Path(__file__).parents[2] / "docs/study/records/space-grouped.json"


def test_the_space_record_gives_every_head_with_interval_and_baselines() -> None:
    sha = json.loads(RECORD.read_text())["snapshot_sha256"]
    g = generalisation_from_record(RECORD, sha)
    assert g["n_structures"] == 883 and g["record"] == "space-grouped.json" and g["measured_on"].startswith("2026")
    cs = g["heads"]["crystal_system"]
    assert cs["metric"] == "accuracy" and cs["lo"] < cs["value"] < cs["hi"]
    assert {"majority", "1-NN", "CGCNN"} <= set(cs) and g["heads"]["band_gap"]["metric"] == "R²"
    text = trust_text(g, "crystal_system")
    assert text.startswith(f"this model: {cs['value']:.2f} [{cs['lo']:.2f}, {cs['hi']:.2f}] accuracy on unseen")
    assert f"majority {cs['majority']:.2f}" in text
    table = "\n".join(card_markdown(g))
    assert "| crystal_system | accuracy |" in table and "space-grouped.json" in table


def test_a_model_without_a_card_says_so() -> None:
    assert "no measured out-of-fold metrics" in trust_text({}, "band_gap")
    assert "no measured out-of-fold metrics" in "\n".join(card_markdown(None))


def test_records_that_cannot_describe_the_model_are_refused_by_name(tmp_path) -> None:
    with pytest.raises(ConfigError, match="missing.json does not exist"):
        generalisation_from_record(tmp_path / "missing.json", None)
    single = tmp_path / "single.json"
    single.write_text(json.dumps({"pipeline": "quickstart", "metrics": {"test_score": 0.5}}))
    with pytest.raises(ConfigError, match="single.json holds no pooled out-of-fold metrics.*split.folds"):
        generalisation_from_record(single, None)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json is not JSON"):
        generalisation_from_record(broken, None)
    with pytest.raises(ConfigError, match="measured snapshot 5acaf39473a8, but this model trains on 000000000000"):
        generalisation_from_record(RECORD, "0" * 64)


def test_the_card_shows_imbalance_metrics_and_the_strongest_baseline(tmp_path) -> None:
    """Class heads carry balanced accuracy and macro-F1 beside accuracy; the answer line names the strongest
    baseline (not only the majority), and the card names the label surrogates."""
    record = json.loads(RECORD.read_text())
    pooled = record["pooled"]["metrics"]
    pooled |= {"pooled_model_balanced_acc_crystal_system": 0.31, "pooled_tabular_balanced_acc_crystal_system": 0.55,
               "pooled_tabular_acc_crystal_system": 0.66, "pooled_model_balanced_acc_crystal_system_lo": 0.28,
               "pooled_model_balanced_acc_crystal_system_hi": 0.34}  # fmt: skip
    path = tmp_path / "with-trees.json"
    path.write_text(json.dumps(record))
    g = generalisation_from_record(path, None)
    cs = g["heads"]["crystal_system"]
    assert cs["trees"] == 0.66 and cs["imbalance"]["balanced accuracy"]["trees"] == 0.55
    assert cs["imbalance"]["macro-F1"]["value"] == pooled["pooled_model_macro_f1_crystal_system"]
    text = trust_text(g, "crystal_system")
    assert "(balanced accuracy 0.31)" in text and text.endswith("; strongest baseline trees 0.66")
    table = "\n".join(card_markdown(g))
    assert "| model [95 %] | majority | 1-NN | trees | CGCNN |" in table
    assert "| crystal_system | balanced accuracy | 0.31 [0.28, 0.34] |" in table and "surrogates" in table


def test_the_registered_runs_test_rows_compare_per_structure_with_the_per_structure_baselines() -> None:
    """The version's "this run's test split" rows: the baselines score each structure once, so the model's cell is
    its per-structure number (views averaged), never the per-image one beside them; a run with no per-structure
    numbers shows its per-image ones under a header that says so."""
    from crystalvision.track.rundocs import headline_table

    m = json.loads((RECORD.parent / "space.json").read_text())["metrics"]
    table = headline_table(m)
    assert table[0] == "| head | metric | model, per structure | majority, per structure | 1-NN, per structure |"
    row = next(r for r in table if r.startswith("| crystal system |"))
    cells = [m[f"{p}_acc_crystal_system"] for p in ("test_struct", "baseline_dummy", "baseline_1nn")]
    assert row == "| crystal system | accuracy | " + " | ".join(f"{v:.3f}" for v in cells) + " |"
    assert f"{m['test_acc_crystal_system']:.3f}" not in row  # the per-image 0.338 of the 2026-12-02 run
    images = {k: v for k, v in m.items() if not k.startswith("test_struct_")}
    assert "model, per image" in headline_table(images)[0]
    assert f"| {images['test_acc_crystal_system']:.3f} |" in "\n".join(headline_table(images))
    assert headline_table({}) == []
