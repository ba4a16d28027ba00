"""The structure hold-out (``split.holdout``): made grouped by formula and stratified, left out of every selection
(exclude), or the one test set of the final run (test); named with its digest in params and records. No training."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from pydantic import ValidationError
from pymatgen.core import Composition
from typer.testing import CliRunner

from crystalvision.core import ConfigError, load_pipeline
from crystalvision.core.config import PipelineConfig
from crystalvision.data.holdout import apply_holdout, load_holdout, make_holdout
from crystalvision.data.snapshot import MaterialRecord, Selection
from crystalvision.stages import road

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = ("triclinic", "monoclinic", "cubic")


def _record(mid: str, formula: str, system: str) -> MaterialRecord:
    return MaterialRecord(material_id=mid, formula=formula, nsites=4, crystal_system=system, spacegroup_symbol="P1",
                          spacegroup_number=1, band_gap=1.0, energy_above_hull=0.0, structure={})  # fmt: skip


def _records(n_formulas: int = 40) -> list[MaterialRecord]:
    """1-3 structures per formula; a formula's second structure writes it unreduced (Li4Ni2O4 is Li2NiO2)."""
    out = []
    for i in range(n_formulas):
        for j in range(1 + i % 3):
            formula = f"Li{2 * (i + 1)}Ni2O4" if j == 1 else f"Li{i + 1}NiO2"
            out.append(_record(f"mp-{i:03d}{j}", formula, SYSTEMS[(i + j) % 3]))
    return out


def _reduced(formula: str) -> str:
    return Composition(formula).reduced_formula


def _labels(records: list[MaterialRecord], views: int = 2) -> pd.DataFrame:
    rows = [{"material_id": r.material_id, "view": v, "formula": r.formula, "crystal_system": r.crystal_system,
             "spacegroup_symbol": r.spacegroup_symbol} for r in records for v in range(views)]  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture
def records() -> list[MaterialRecord]:
    return _records()


@pytest.fixture
def holdout_file(tmp_path: Path, records) -> Path:
    path = tmp_path / "holdout.json"
    path.write_text(json.dumps(make_holdout(records, 0.15, 0, {"command": "test"})))
    return path


@pytest.fixture
def selected(monkeypatch: pytest.MonkeyPatch, records):
    """The road's snapshot selects ``records`` (a list the test may change)."""
    chosen = list(records)
    manifest = SimpleNamespace(snapshot_id="toy", label_source={}, content_sha256="0" * 64, db_version="t", source="t")
    snap = SimpleNamespace(manifest=manifest, records=chosen)
    monkeypatch.setattr(road, "load_selection", lambda _cfg: (snap, Selection(records=list(chosen))))
    return chosen


def _cfg(path: Path, use: str = "exclude", **split) -> PipelineConfig:
    return PipelineConfig(name="h", split={"protocol": "grouped", **split, "holdout": {"ids": str(path), "use": use}})


def test_made_grouped_by_formula_stratified_and_deterministic(records, holdout_file) -> None:
    made = load_holdout(holdout_file)
    ids = set(made.ids)
    assert 0.10 * len(records) <= len(ids) <= 0.20 * len(records)
    inside = {_reduced(r.formula) for r in records if r.material_id in ids}
    outside = {_reduced(r.formula) for r in records if r.material_id not in ids}
    assert not inside & outside and inside == set(made.formulas)  # no formula on both sides
    assert made.how_made["stratified"] and made.how_made["command"] == "test"
    assert {r.crystal_system for r in records if r.material_id in ids} == set(SYSTEMS)
    assert make_holdout(records, 0.15, 0, {"command": "test"}) == json.loads(holdout_file.read_text())
    assert make_holdout(records, 0.15, 1)["ids"] != made.ids


def test_exclude_removes_exactly_the_ids_before_folds_are_made(holdout_file, selected) -> None:
    cfg = _cfg(holdout_file, folds=3)
    held = set(load_holdout(holdout_file).ids)
    _, selection = road.select_records(cfg)
    assert {r.material_id for r in selection.records} == {r.material_id for r in selected} - held
    assert selection.held_out == sorted(held)
    plan = road.plan_folds(cfg)
    assert plan["n_structures"] == len(selected) - len(held)
    assert sum(f["n_structures_test"] for f in plan["folds"]) == len(selected) - len(held)
    assert plan["holdout"]["n_left_out_of_selection"] == len(held)
    # a labels table rendered before the hold-out was set: its rows never reach a fold either
    _, folds = road.split_labels(_labels(selected), cfg.split)
    seen = set().union(*(set(part["material_id"]) for f in folds for _, part in f.items()))
    assert seen == {r.material_id for r in selected} - held
    assert set().union(*(set(f.test["material_id"]) for f in folds)) == seen


def test_exclude_ignores_ids_the_snapshot_lacks_with_one_info_line(holdout_file, records, caplog) -> None:
    held = load_holdout(holdout_file).ids
    present = [r for r in records if r.material_id not in held[: len(held) // 2]]  # half the hold-out is missing
    with caplog.at_level(logging.INFO, logger="crystalvision.data.holdout"):
        kept = apply_holdout(Selection(records=present), _cfg(holdout_file).split)
    assert {r.material_id for r in kept.records} == {r.material_id for r in present} - set(held)
    lines = [r for r in caplog.records if r.name == "crystalvision.data.holdout"]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert f"{len(held) - len(held) // 2} of its {len(held)} ids selected" in lines[0].getMessage()


def test_exclude_leaves_out_a_structure_of_a_holdout_formula_too(holdout_file, records, caplog) -> None:
    formula = load_holdout(holdout_file).formulas[0]
    sibling = _record("mp-sibling", formula, "cubic")
    with caplog.at_level(logging.INFO, logger="crystalvision.data.holdout"):
        kept = apply_holdout(Selection(records=[*records, sibling]), _cfg(holdout_file).split)
    assert "mp-sibling" in kept.held_out and "mp-sibling" not in {r.material_id for r in kept.records}
    assert any(r.levelno == logging.WARNING and "mp-sibling" in r.getMessage() for r in caplog.records)


def test_test_mode_tests_exactly_the_holdout_and_no_formula_crosses(holdout_file, records) -> None:
    held = set(load_holdout(holdout_file).ids)
    formula = load_holdout(holdout_file).formulas[0]
    labels = _labels([*records, _record("mp-sibling", formula, "cubic")])
    cfg = _cfg(holdout_file, "test")
    assert road.is_kfold(cfg.split)  # evaluated as one fold: pooled metrics, intervals, seeds
    split, folds = road.split_labels(labels, cfg.split)
    assert len(folds) == 1 and split is folds[0] and split.n_folds == 1
    assert set(split.test["material_id"]) == held and len(split.test) == 2 * len(held)  # every view
    trained = set(split.train["material_id"]) | set(split.val["material_id"])
    assert trained == {r.material_id for r in records} - held  # the rest, less the sibling of a hold-out formula
    assert len(split.val) and split.val_stratified
    crossing = set(split.test["formula"].map(_reduced)) & set(
        pd.concat([split.train, split.val])["formula"].map(_reduced)
    )
    assert not crossing


def test_fold_planning_shows_the_holdout_as_the_one_test_set(holdout_file, selected) -> None:
    held = load_holdout(holdout_file)
    plan = road.plan_folds(_cfg(holdout_file, "test"))
    assert [f["n_structures_test"] for f in plan["folds"]] == [len(held.ids)]
    fold = plan["folds"][0]
    assert fold["n_structures_train"] + fold["n_structures_val"] == len(selected) - len(held.ids)
    assert plan["holdout"] | {"file": ""} == {"file": "", "sha256": held.sha256, "use": "test", "n_ids": len(held.ids),
                                             "n_left_out_of_selection": 0}  # fmt: skip


def test_test_mode_refuses_a_selection_without_the_holdout(holdout_file, records) -> None:
    held = set(load_holdout(holdout_file).ids)
    others = [r for r in records if r.material_id not in held]
    with pytest.raises(ConfigError, match=f"none of the {len(held)} ids of {holdout_file}"):
        apply_holdout(Selection(records=others), _cfg(holdout_file, "test").split)


def test_test_mode_is_the_one_test_set(holdout_file) -> None:
    with pytest.raises(ValidationError, match=r"unset split.folds \(--set split.folds=null\)"):
        _cfg(holdout_file, "test", folds=5)
    with pytest.raises(ValidationError, match="split.protocol: grouped"):
        PipelineConfig(name="h", split={"protocol": "image", "holdout": {"ids": "h.json", "use": "test"}})
    assert PipelineConfig(name="h", split={"holdout": "None"}).split.holdout is None  # as MLflow logs None


def test_params_and_record_name_the_file_and_its_digest(holdout_file, selected, monkeypatch) -> None:
    import mlflow

    from crystalvision.app import pipeline
    from crystalvision.stages.runs import split_config_from_params
    from crystalvision.track import tracking

    logged: dict = {}
    monkeypatch.setattr(tracking, "log_params_safe", logged.update)
    for name in ("log_dict", "set_tags"):
        monkeypatch.setattr(mlflow, name, lambda *_a, **_k: None)
    cfg = _cfg(holdout_file, folds=3)
    snap, selection = road.select_records(cfg)
    tracking.log_pipeline_context(cfg, snap, selection)
    digest = load_holdout(holdout_file).sha256
    assert logged["holdout.file"] == str(holdout_file) and logged["holdout.sha256"] == digest
    assert logged["holdout.use"] == "exclude" and logged["n_held_out"] == len(selection.held_out)
    assert logged["cfg.split.holdout.ids"] == str(holdout_file)
    params = {k: str(v) for k, v in logged.items()}  # as MLflow keeps them: an evaluation rebuilds the split
    assert split_config_from_params(params, PipelineConfig(name="d").split) == cfg.split
    record = pipeline._made(cfg, snap, selection).summary()["holdout"]
    assert record["file"] == str(holdout_file) and record["sha256"] == digest
    # the file made again (another seed) at the same path: the run's split cannot be rebuilt from it
    holdout_file.write_text(json.dumps(make_holdout(selected, 0.15, 1, {"command": "test"})))
    with pytest.raises(ConfigError, match=f"now has sha256 .* the run logged {digest[:12]}: its split cannot be"):
        split_config_from_params(params, PipelineConfig(name="d").split)


def test_a_bad_path_is_one_clear_error_naming_the_file_and_the_fix(tmp_path, cv_home) -> None:
    from crystalvision.app.cli import app

    missing = tmp_path / "no-such-holdout.json"
    args = ["pipeline", "validate", "pipelines/paper-grouped.yaml", "--set", f"split.holdout.ids={missing}"]
    result = CliRunner().invoke(app, args)
    text = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2, result.output
    assert text.count("no hold-out file at") == 1 and f"no hold-out file at {missing}" in text
    assert "crystalvision holdout -c PIPELINE --out FILE" in text and "Traceback" not in result.output


def test_a_hold_out_file_is_json_whose_digest_is_checked(tmp_path, holdout_file) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("__import__('os').system('echo no')")
    with pytest.raises(ConfigError, match=f"{bad} is not a hold-out file"):
        load_holdout(bad)
    edited = json.loads(holdout_file.read_text())
    edited["ids"] = edited["ids"][1:]
    bad.write_text(json.dumps(edited))
    with pytest.raises(ConfigError, match="do not match its sha256"):
        load_holdout(bad)


def test_holdout_paths_resolve_like_the_other_paths(tmp_path, monkeypatch) -> None:
    (tmp_path / "p.yaml").write_text("name: p\nsplit:\n  holdout: {ids: h.json, use: exclude}\n")
    assert load_pipeline(tmp_path / "p.yaml").split.holdout.ids == str(tmp_path / "h.json")  # the file's folder
    monkeypatch.chdir(ROOT)
    cfg = load_pipeline(tmp_path / "p.yaml", {"split": {"holdout": {"ids": "docs/study/records/holdout.json"}}})
    assert cfg.split.holdout.ids == str(ROOT / "docs/study/records/holdout.json")  # --set: the working dir


def test_one_config_hashes_alike_in_two_checkouts(tmp_path, monkeypatch) -> None:
    """The hold-out path enters the config hash from the checkout, not from the machine's root."""
    import crystalvision.core.settings as settings

    hashes = []
    for checkout in (tmp_path / "a", tmp_path / "b"):
        (checkout / "docs").mkdir(parents=True)
        (checkout / "docs" / "holdout.json").write_text("{}")
        monkeypatch.setattr(settings, "CHECKOUT", checkout)
        ids = str(checkout / "docs" / "holdout.json")
        cfg = PipelineConfig(name="p", split={"holdout": {"ids": ids, "use": "test"}})
        hashes.append(cfg.config_hash())
    assert hashes[0] == hashes[1]
    outside = PipelineConfig(name="p", split={"holdout": {"ids": str(tmp_path / "holdout.json"), "use": "test"}})
    assert outside.config_hash() != hashes[0], "a file outside the checkout keeps its whole path"


def test_the_committed_holdout_is_what_its_command_makes(tmp_path, cv_home, monkeypatch) -> None:
    """docs/study/records/holdout.json: 15 % of lmno-space's 883 usable structures; its command makes it again."""
    from crystalvision.app.cli import app

    committed = json.loads((ROOT / "docs/study/records/holdout.json").read_text())
    out = tmp_path / "holdout.json"
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(app, ["holdout", "-c", "pipelines/space-grouped.yaml", "--out", str(out)])
    assert result.exit_code == 0, result.output
    made = json.loads(out.read_text())
    assert made["ids"] == committed["ids"] and made["sha256"] == committed["sha256"]
    assert committed["how_made"]["n_structures"] == 883 and load_holdout(ROOT / "docs/study/records/holdout.json")


def test_a_holdout_inside_the_checkout_is_named_relative_and_read_back_from_anywhere(
    tmp_path, selected, monkeypatch
) -> None:
    """Records and params name a hold-out inside the checkout relative to it (no machine's path in a committed
    record); a run's split is rebuilt from them, its sha256 checked, whatever the working dir."""
    import mlflow

    from crystalvision.app import pipeline
    from crystalvision.data.holdout import describe_holdout, holdout_file_path, holdout_file_text
    from crystalvision.stages.runs import split_config_from_params
    from crystalvision.track import tracking

    committed, name = ROOT / "docs/study/records/holdout.json", "docs/study/records/holdout.json"
    assert holdout_file_text(committed) == name and holdout_file_path(name) == committed
    outside = tmp_path / "h.json"
    assert holdout_file_text(outside) == str(outside) == str(holdout_file_path(outside))  # outside: absolute
    monkeypatch.chdir(tmp_path)  # the pipeline's path resolved; the names below never depend on the working dir
    logged, dumped = {}, {}
    monkeypatch.setattr(tracking, "log_params_safe", logged.update)
    monkeypatch.setattr(mlflow, "log_dict", lambda d, _name: dumped.update(d))
    monkeypatch.setattr(mlflow, "set_tags", lambda *_a, **_k: None)
    cfg = _cfg(committed, folds=3)
    snap, selection = road.select_records(cfg)
    tracking.log_pipeline_context(cfg, snap, selection)
    assert logged["holdout.file"] == logged["cfg.split.holdout.ids"] == name == dumped["split"]["holdout"]["ids"]
    assert describe_holdout(cfg.split)["file"] == name and pipeline._made(cfg, snap, selection).holdout["file"] == name
    assert str(ROOT) not in str(sorted(logged.items()))
    params = {k: str(v) for k, v in logged.items()}
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert split_config_from_params(params, PipelineConfig(name="d").split) == cfg.split  # read from the checkout
    wrong = params | {"holdout.sha256": "0" * 64}
    with pytest.raises(ConfigError, match="the run logged 000000000000"):
        split_config_from_params(wrong, PipelineConfig(name="d").split)


def test_holdout_ids_the_labels_table_lacks_give_one_warning_with_both_counts(holdout_file, records, caplog) -> None:
    """A hold-out structure the renderer rejected drops out of the test set: one WARNING says how many of the file's
    ids are tested."""
    held = load_holdout(holdout_file).ids
    rejected = set(held[:2])
    labels = _labels([r for r in records if r.material_id not in rejected])
    with caplog.at_level(logging.WARNING, logger="crystalvision.data.holdout"):
        split, _ = road.split_labels(labels, _cfg(holdout_file, "test").split)
    assert set(split.test["material_id"]) == set(held) - rejected
    found = [r for r in caplog.records if "ids are tested" in r.getMessage()]
    lines = [r.getMessage() for r in found]
    assert len(lines) == 1 and found[0].levelno == logging.WARNING
    assert f"{len(held) - 2} of its {len(held)} ids are tested; 2 are not among the structures split" in lines[0]
    assert all(mid in lines[0] for mid in rejected)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="crystalvision.data.holdout"):
        road.split_labels(_labels(records), _cfg(holdout_file, "test").split)
    assert not [r for r in caplog.records if "ids are tested" in r.getMessage()]  # every id tested: no warning


def test_a_holdout_runs_record_counts_its_tested_ids_and_its_report_names_it(holdout_file, monkeypatch) -> None:
    """The hold-out run's record holds the file's id count and the count tested (``holdout.n_ids``,
    ``holdout.n_tested``), and its folds report gets the hold-out (no training: the child run is faked)."""
    from contextlib import nullcontext

    from crystalvision.app import pipeline
    from crystalvision.track import tracking

    cfg = _cfg(holdout_file, "test")
    n_ids = len(load_holdout(holdout_file).ids)
    run = SimpleNamespace(info=SimpleNamespace(run_id="parent"))
    monkeypatch.setattr(tracking, "start_run", lambda **_k: nullcontext(run))
    monkeypatch.setattr(tracking, "pipeline_tags", lambda *_a: {})
    monkeypatch.setattr(tracking, "log_pipeline_context", lambda *_a: None)
    monkeypatch.setattr(pipeline, "_seeded", lambda fold, seed: fold)
    info = {"fold": 0, "seed": 0, "n_structures_test": n_ids - 1}
    monkeypatch.setattr(pipeline, "_run_one_fold", lambda *_a: ({"test_score": 0.5}, info, None))
    reported: dict = {}
    monkeypatch.setattr(pipeline, "_log_folds_summary", lambda *a: reported.update(holdout=a[-1]))
    prepared = SimpleNamespace(cfg=cfg, snapshot=None, selection=None, render=None, fold_inputs=lambda: [object()])
    result = pipeline.PipelineResult(name="h", snapshot_id="s", snapshot_sha256="0", n_structures=1,
                                     dropped_flagged=[], holdout={"use": "test", "n_ids": n_ids})  # fmt: skip
    pipeline._run_folds(prepared, ["train"], result)
    assert result.summary()["holdout"] == {"use": "test", "n_ids": n_ids, "n_tested": n_ids - 1}
    assert reported["holdout"] is result.holdout
