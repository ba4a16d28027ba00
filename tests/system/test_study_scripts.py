"""Smoke tests of the study scripts under docs/study: each regenerates its README table from the committed records."""

from __future__ import annotations

import json
import shutil
from itertools import takewhile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.support.study import STUDY
from tests.support.study import study_script as script

RECORDS = STUDY / "records"


def test_results_table_reads_every_record_and_quotes_nothing_unrecorded(tmp_path: Path) -> None:
    rt = script("results_table")
    text = rt.table(RECORDS)
    assert "H200" not in text and "quote" not in text  # every row but the study's citation comes from a record
    for _, label in rt.PROTOCOLS:
        assert f"**{label}**" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{rt.START}\nold\n{rt.END}\nafter\n")
    rt.write_readme(readme, text)
    assert readme.read_text() == f"before\n{rt.START}\n{text}\n{rt.END}\nafter\n"


def test_first_numbers_tables_from_the_record(tmp_path: Path) -> None:
    fn = script("first_numbers")
    record = json.loads((RECORDS / "first-numbers.json").read_text())
    leak, graph = fn.tables(record)
    assert len(leak.splitlines()) == 2 + len(fn.PROTOCOLS) and "search: prefilter 64" in leak
    assert "| majority / train mean |" in graph and "CGCNN" in graph
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- leakage-table:start -->\nx\n<!-- leakage-table:end -->\nb\n")
    fn.write_readme(readme, "leakage-table", leak)
    assert leak in readme.read_text() and "\nx\n" not in readme.read_text()
    with pytest.raises(ValueError, match="graph-table:start"):
        fn.write_readme(readme, "graph-table", graph)


def test_first_numbers_measure_searches_all_structures() -> None:
    """``measure`` on a toy frame: a test image's twin of another structure is its nearest; the prefilter check
    compares it with the exhaustive search."""
    import torch

    fn = script("first_numbers")
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((6, 1, 16, 16), dtype=np.float32))
    x[5] = x[0] * 0.99  # test row 5 (structure b) is a near-copy of training row 0 (structure a)
    df = pd.DataFrame({"row": range(6), "material_id": list("aabbcb"), "crystal_system": list("ccttmt"),
                       "spacegroup_symbol": list("PPQQRQ")})  # fmt: skip
    ssim, correct, same, agree = fn.measure(x, df.iloc[:5], df.iloc[5:], candidates=2, check=1)
    assert ssim[0] > 0.99 and not same[0] and agree.tolist() == [True]
    assert correct["crystal_system"].tolist() == [False]


def test_select_picks_by_validation_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sel = script("select_recipe")
    runs = sorted((STUDY / "select").glob("*.json"))
    assert runs
    for path in runs:
        shutil.copy(path, tmp_path / path.name)
        shutil.copy(path.with_suffix(".cmd"), tmp_path / path.with_suffix(".cmd").name)
    copies = [str(tmp_path / p.name) for p in runs]
    sel.main(copies)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    assert sum(line.endswith("| yes |") for line in rows) == 1
    assert "val acc system (per image)" in rows[0] and "test acc system (per structure)" in rows[0]
    # a much better test score does not change the pick: the rule reads validation metrics only
    loser = next(p for p in copies if p not in {c for c, r in zip(copies, rows[1:], strict=True) if "yes" in r})
    data = json.loads(Path(loser).read_text())
    data["metrics"] = {k: (0.99 if k.startswith("test") else v) for k, v in data["metrics"].items()}
    Path(loser).write_text(json.dumps(data))
    sel.main(copies)
    again = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.endswith("| yes |") for r in again] == [r.endswith("| yes |") for r in rows]


@pytest.mark.parametrize(
    ("marker", "records"),
    [
        ("select-table", ["records-64px/paper-grouped.json", "select/augment-tta.json", "select/augment-tta-ls.json"]),
        (
            "holdout-select-table",
            [f"records/holdout/recipe-{n}.json" for n in ("defaults", "augment-tta", "augment-tta-ls")],
        ),
    ],
)
def test_study_page_selection_tables_are_regenerated_from_their_records(tmp_path: Path, marker, records) -> None:
    sel = script("select_recipe")
    page = tmp_path / "study.md"
    shutil.copy(STUDY.parent / "study.md", page)
    sel.main([*(str(STUDY / r) for r in records), "--readme", str(page), "--marker", marker])
    assert page.read_text() == (STUDY.parent / "study.md").read_text(), f"run select_recipe.py ... --marker {marker}"


@pytest.mark.parametrize(
    ("folder", "marker"), [("space-formula", "space-formula-table"), ("space-holdout", "space-holdout-table")]
)
def test_study_page_seed_tables_are_regenerated_from_their_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: str, marker: str
) -> None:
    """The merged tables of a multi-seed headline on study.md are what `seed_record.py merge ... --readme docs/study.md
    --marker MARKER` writes from its committed parts (run on copies laid out like the checkout), and merged.json is
    current."""
    sr = script("seed_record")
    shutil.copytree(RECORDS / folder, tmp_path / "docs/study/records" / folder)  # merge writes merged.json there
    shutil.copy(STUDY.parent / "study.md", tmp_path / "docs/study.md")
    monkeypatch.chdir(tmp_path)
    args = ["merge", f"docs/study/records/{folder}", "--seeds", "0", "1", "2", "--readme", "docs/study.md"]
    sr.main([*args, "--marker", marker])
    merged = (tmp_path / "docs/study/records" / folder / sr.MERGED).read_text()
    assert merged == (RECORDS / folder / sr.MERGED).read_text(), f"{folder}: stale merge"
    page = (tmp_path / "docs/study.md").read_text()
    command = f"run: python docs/study/seed_record.py {' '.join(args)} --marker {marker}"
    assert page == (STUDY.parent / "study.md").read_text(), command


def test_compare_table_rows_from_kfold_records(tmp_path: Path) -> None:
    ct = script("compare_table")
    record = json.loads((RECORDS / "space-grouped.json").read_text())
    text = ct.table({"a": record, "b": record})
    m = record["metrics"]
    assert f"{m['val_acc_crystal_system_mean']:.3f} ± {m['val_acc_crystal_system_std']:.3f}" in text
    assert f"{m['best_epoch_mean'] + 1:.1f} / {m['epochs_trained_mean']:.1f}" in text  # best epoch counted from 1
    assert text.count("\n| a |") == 1 and text.count("\n| b |") == 1
    assert text.startswith("Validation columns: per image") and "Out-of-fold columns: per structure" in text
    assert ct.unit("val_struct_acc_spacegroup") == "per structure" and ct.unit("test_r2_band_gap") == "per image"
    page = tmp_path / "page.md"
    page.write_text("x\n<!-- radii-table:start -->\nold\n<!-- radii-table:end -->\ny\n")
    ct.write_between(page, "radii-table", text)
    assert page.read_text() == f"x\n<!-- radii-table:start -->\n{text}\n<!-- radii-table:end -->\ny\n"
    with pytest.raises(SystemExit, match="no <!-- other:start -->"):
        ct.write_between(page, "other", text)


def test_space_table_shows_every_baseline_and_the_imbalance_metrics_a_record_has() -> None:
    st = script("space_table")
    record = json.loads((RECORDS / "space-grouped.json").read_text())
    m = record["metrics"]
    m |= {"pooled_tabular_acc_crystal_system": 0.61, "pooled_model_balanced_acc_crystal_system": 0.3,
          "pooled_diff_model_vs_tabular_acc_crystal_system": -0.14,
          "pooled_diff_model_vs_tabular_acc_crystal_system_lo": -0.18,
          "pooled_diff_model_vs_tabular_acc_crystal_system_hi": -0.1}  # fmt: skip
    text = st.scope_table(m)
    assert "| trees | 0.61 |" in text and "bal. acc system" in text and "macro-F1 space group" in text
    assert "| image model − trees | -0.14 [-0.18, -0.10] |" in text
    assert "| CGCNN 3 x 64 |" in text  # the record names the graph network's size: the published one
    older = {k: v for k, v in m.items() if not k.startswith("cgcnn_")}
    assert "| CGCNN 2 x 32 |" in st.scope_table(older)  # a record without it trained the small one
    heading, table = st.subset_sections(m)  # the 62 quaternaries: scored
    assert heading == "Subset `quaternary` (62 structures):" and table == st.scope_table(m, "quaternary")
    few = st.subset_sections(m | {"pooled_quaternary_n_structures": 2.0})  # a hold-out holding two of them
    assert few == ["Subset `quaternary`: 2 structures, too few to score (fewer than 20); not shown."]


def test_readme_headline_is_regenerated_from_the_records() -> None:
    """README's honest-number bullet and headline table are the generator's output: a record changed without
    regenerating them fails here. The bullet reports the strictest record: formula-grouped, its seeds counted."""
    hl = script("readme_headline")
    readme = (STUDY.parents[1] / "README.md").read_text()
    assert hl.update(readme, RECORDS) == readme, "run: python docs/study/readme_headline.py --readme README.md"
    merged = json.loads((RECORDS / hl.FORMULA).read_text())
    bullet = " ".join(readme.split("readme-headline:start -->")[1].split("<!-- readme-headline:end")[0].split())
    assert f"`docs/study/records/{hl.FORMULA}`" in bullet and "folds grouped by reduced formula" in bullet
    assert f"{len(merged['seeds'])} training seeds" in bullet
    # and the hold-out no selection saw: its tested structures, seeds and seed-averaged image model
    hold = json.loads((RECORDS / hl.HOLDOUT).read_text())
    hm = hold["metrics"]
    model = f"{hm['pooled_model_acc_crystal_system']:.2f} [{hm['pooled_model_acc_crystal_system_lo']:.2f}, "
    assert f"On {hold['holdout']['n_ids']} structures held out from every selection" in bullet
    assert f"`docs/study/records/{hl.HOLDOUT}`, {len(hold['seeds'])} training seeds" in bullet and model in bullet
    # the table leads with the formula-grouped record: its seed count and its seed-averaged image model
    block = readme.split("readme-results:start -->")[1].split("<!-- readme-results:end")[0]
    first = block.split("|---|---|---|---|---|\n")[1].splitlines()[0]
    m = merged["metrics"]
    model = f"{m['pooled_model_acc_crystal_system']:.2f} [{m['pooled_model_acc_crystal_system_lo']:.2f}, "
    assert f"grouped by reduced formula, {len(merged['seeds'])} seeds (`{hl.FORMULA}`" in first and model in first
    assert "grouped by material id, one seed (`space-grouped.json`" in block
    assert f"grouped by reduced formula, {len(merged['seeds'])} training seeds" in " ".join(block.split())


def test_readme_headline_says_what_the_records_say(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The script on copies of the records: the claims follow the numbers (which model beats the majority class and
    the strongest baseline, which baseline that is and where it leads, whether material-id grouping gave about the
    same), the seeds not run yet are named until merged, both blocks are rewritten, a record without a dated run is
    refused."""
    hl = script("readme_headline")
    for name in (hl.SPACE, hl.QUATERNARIES, "space-formula.cmd", hl.FORMULA, "space-holdout.cmd", hl.HOLDOUT):
        for path in {RECORDS / name, (RECORDS / name).with_suffix(".cmd")} - {
            RECORDS / "space-formula/merged.cmd",
            RECORDS / "space-holdout/merged.cmd",
        }:
            (tmp_path / name).parent.mkdir(exist_ok=True)
            shutil.copy(path, tmp_path / path.relative_to(RECORDS))
    flat = " ".join(hl.headline(tmp_path).split()).replace(f"{tmp_path.as_posix()}/", "docs/study/records/")
    assert flat == " ".join(hl.headline(RECORDS).split())  # the copies say what the records say
    assert hl.results(tmp_path) == hl.results(RECORDS)
    merged = json.loads((tmp_path / hl.FORMULA).read_text())
    m = merged["metrics"]
    m["pooled_cgcnn_acc_crystal_system"] = 0.9  # CGCNN now the strongest on crystal system
    m |= {"pooled_model_acc_crystal_system": 0.41, "pooled_model_acc_crystal_system_lo": 0.38,
          "pooled_model_acc_crystal_system_hi": 0.44, "pooled_model_acc_crystal_system_seed_std": 0.031,
          "pooled_diff_model_vs_dummy_acc_crystal_system_lo": -0.01,
          "pooled_diff_model_vs_1nn_acc_crystal_system_hi": 0.02,  # the image model now level with the 1-NN
          "pooled_tabular_acc_spacegroup_seed_std": 0.02}  # fmt: skip
    merged["seeds"], m["pooled_n_seeds"] = [0, 1, 2], 3.0  # every planned seed merged
    (tmp_path / hl.FORMULA).write_text(json.dumps(merged))
    space = json.loads((tmp_path / hl.SPACE).read_text())
    space["metrics"]["pooled_cgcnn_acc_crystal_system"] = 0.9  # the table's CGCNN row follows its record
    (tmp_path / hl.SPACE).write_text(json.dumps(space))
    quat = json.loads((tmp_path / hl.QUATERNARIES).read_text())
    quat["metrics"]["test_struct_acc_crystal_system_mean"] = 0.5  # the image model now above the majority's 0.45
    (tmp_path / hl.QUATERNARIES).write_text(json.dumps(quat))
    text = hl.main([str(tmp_path)])
    assert text == capsys.readouterr().out
    flat = " ".join(text.split())
    assert "alone the image model beats the majority class on crystal system" in flat
    assert "folds grouped by reduced formula, 3 training seeds;" in flat and "not run yet" not in flat
    assert "crystal-system accuracy **0.41 [0.38, 0.44] ± 0.03**" in flat
    assert (
        "**CGCNN 0.90** (a graph network), the strongest baseline, which trails the trees on space group (0.27 "
        "against 0.56; image model 0.28) and the 1-NN lookup on band gap (R² -6.01 against 0.20;" in flat
    )

    def diff(head: str, baseline: str) -> str:  # a paired difference as the script writes it, from the record
        key = f"pooled_diff_model_vs_{baseline}_acc_{head}"
        return f"{m[key]:+.2f} [{m[key + '_lo']:+.2f}, {m[key + '_hi']:+.2f}]"

    system = "crystal_system"
    assert (
        f"is level with the majority ({diff(system, 'dummy')}) and is level with CGCNN ({diff(system, 'cgcnn')})"
        in flat
    )
    assert "gave it higher on crystal system (0.46), space group (0.32) and band gap (R² 0.07)." in flat
    assert "| | CGCNN graph network (3 x 64, early stopping) | 0.90 | 0.28 | 0.54 |" in text
    assert (
        "| | CGCNN graph network (2 x 32) | 0.44 ± 0.07 |" in text
        and f"(95 % interval): trees {m['pooled_diff_model_vs_tabular_acc_crystal_system']:+.2f}" in flat
    )
    # the table's formula block and what follows it: the changed merged record
    first = "| 883, Li-Mn-Ni-O space, grouped by reduced formula, 3 seeds (`space-formula/merged.json`, 2026-12-07, "
    assert first + "64 px, 8 views) | image model | 0.41 [0.38, 0.44] ± 0.03 | 0.28 [0.25, 0.31] ± 0.02 |" in text
    assert "| | CGCNN graph network (3 x 64, early stopping) | 0.90 | 0.27 | -6.01 |" in text
    assert "| | trees: random forest on composition + primitive cell | 0.82 | 0.56 ± 0.02 | 0.17 |" in text
    assert "grouped by reduced formula, 3 training seeds (the image model" in flat
    assert "a baseline: ± where its seeds differ" in flat and "score the same with every seed" not in flat
    assert (
        "mean over 3 seeds, paired over the 883 structures" in flat
        and f"majority class {diff(system, 'dummy')}." in flat
    )
    assert f"is level with the majority class on crystal system ({diff(system, 'dummy')})" in flat
    group = "beats" if m["pooled_diff_model_vs_dummy_acc_spacegroup_lo"] > 0 else "is level with"
    assert f"{group} the majority class on space group ({diff('spacegroup', 'dummy')})" in flat
    assert f"is level with the 1-NN lookup on crystal system ({diff(system, '1nn')});" in flat
    assert "**The image model is not yet a model worth shipping**" in flat  # it still trails the trees
    ahead = m | {k: 0.01 for k in m if k.startswith("pooled_diff_model_vs_") and k.endswith("_lo")}
    ahead |= {"pooled_model_r2_band_gap_lo": 0.6, "pooled_model_r2_band_gap_hi": 0.7}  # beats all, clear of 0.5
    ready = " ".join(hl.verdict(merged | {"metrics": ahead}).split())
    assert "**The image model holds its own against these baselines**" in ready and "trails" not in ready
    assert "is above the 0.5 a useful model needs, no reference model ships with the package yet" in ready
    merged["seeds"] = [0, 1]  # seed 2 not merged: the .cmd's merge line plans it
    (tmp_path / hl.FORMULA).write_text(json.dumps(merged))
    said = " ".join(hl.headline(tmp_path).split())  # flat: where lines wrap depends on tmp_path's length
    assert "grouped by reduced formula, 3 training seeds" not in said
    assert "grouped by reduced formula, 2 training seeds, seed 2 not run yet;" in said
    assert "2 training seeds, seed 2 not run yet (the image model" in " ".join(hl.results(tmp_path).split())
    page = tmp_path / "README.md"
    page.write_text("a\n<!-- readme-headline:start -->\nx\n<!-- readme-headline:end -->\nb\n"
                    "<!-- readme-results:start -->\ny\n<!-- readme-results:end -->\n")  # fmt: skip
    hl.main([str(tmp_path), "--readme", str(page)])
    assert page.read_text() == hl.update(page.read_text(), tmp_path) and "\nx\n" not in page.read_text()
    assert f"`{tmp_path.as_posix()}/{hl.FORMULA}`" in page.read_text()  # outside the repository: the path as given
    cmd = tmp_path / "paper-grouped.cmd"
    cmd.write_text("\n".join(line for line in cmd.read_text().splitlines() if not line.startswith("# 2026-11")))
    with pytest.raises(SystemExit, match="no dated comment above its command"):
        hl.headline(tmp_path)


SMALL = ["snapshot.name=lmno", "snapshot.max_structures=14", "split.folds=2", "evaluate.graph_size=small",
         "evaluate.graph_epochs=2", "evaluate.bootstrap_resamples=20", "evaluate.subsets={}"]  # fmt: skip


def test_baseline_record_runs_every_baseline_on_the_studys_folds_and_checks_them(tmp_path: Path, monkeypatch) -> None:
    """``run`` on a small selection: every baseline per grouping, pooled with balanced accuracy and macro-F1, the
    CGCNN budget per fold; ``--verify`` accepts the record whose folds these are and refuses another; ``table``
    renders it; ``annotate`` adds the trees to a record after reproducing its majority numbers."""
    from crystalvision.evaluate import tabular

    family, params = tabular.RECIPES[tabular.RECIPE]
    monkeypatch.setitem(tabular.RECIPES, tabular.RECIPE, (family, params | {"n_estimators": 10}))  # a smoke test
    br = script("baseline_record")
    sets = [a for s in SMALL for a in ("--set", s)]
    out = tmp_path / "baselines.json"
    record = br.main(["run", "pipelines/space-grouped.yaml", *sets, "--group-by", "material", "formula",
                      "--out", str(out)])  # fmt: skip
    assert json.loads(out.read_text()) == record and set(record["groupings"]) == {"material", "formula"}
    g = record["groupings"]["material"]
    m = g["metrics"]
    for p in ("tabular", "cgcnn", "1nn", "dummy"):
        assert f"pooled_{p}_balanced_acc_crystal_system" in m and f"pooled_{p}_macro_f1_spacegroup" in m, p
    assert "pooled_diff_tabular_vs_1nn_balanced_acc_crystal_system_lo" in m and m["pooled_n_structures"] == 14
    assert all(f["cgcnn_epochs_trained"] <= 2 and f["cgcnn_train_seconds"] > 0 for f in g["folds"])
    assert (tmp_path / "baselines-oof-formula.csv").is_file() and record["tabular"]["recipe"]
    # the folds check: the same pooled majority / 1-NN numbers pass, another record's are refused
    fake = tmp_path / "fake.json"
    fake.write_text(json.dumps({"pooled": {"metrics": m}}))
    assert br.verify(g, fake)["same"]
    fake.write_text(json.dumps({"pooled": {"metrics": m | {"pooled_1nn_acc_crystal_system": 0.123}}}))
    with pytest.raises(SystemExit, match="the folds differ"):
        br.verify(g, fake)
    text = br.tables(record, "baselines.json")
    assert "| trees (tabular) |" in text and "bal. acc" in text and "CGCNN budget:" in text

    # annotate: a k-fold record with only its majority accuracy gets the trees, after that number is reproduced
    from crystalvision.core.pipeline_file import load_pipeline, parse_overrides
    from crystalvision.evaluate.baselines import dummy_predict, seen

    cfg = load_pipeline("pipelines/space-grouped.yaml", parse_overrides(SMALL))
    _, records, frame = br.structures_frame(cfg)
    accs = []
    for f in br.folds_for(cfg, frame, records, "material"):
        truth = f.test.drop_duplicates("material_id").sort_values("material_id")
        accs.append((dummy_predict(seen(f), f.test)["crystal_system"].to_numpy()
                     == truth["crystal_system"].to_numpy()).mean())  # fmt: skip
    kfold = tmp_path / "kfold.json"
    kfold.write_text(json.dumps({"metrics": {"baseline_dummy_acc_crystal_system_mean": float(np.mean(accs))}}))
    kfold.with_suffix(".cmd").write_text(
        "crystalvision pipeline run pipelines/space-grouped.yaml " + " ".join(f"--set {s}" for s in SMALL) + "\n"
    )
    note = br.main(["annotate", str(kfold)])
    annotated = json.loads(kfold.read_text())
    assert "baseline_tabular_balanced_acc_crystal_system_mean" in annotated["metrics"] and note["added"] > 10
    assert "annotate" in kfold.with_suffix(".cmd").read_text()
    kfold.write_text(json.dumps({"metrics": {"baseline_dummy_acc_crystal_system_mean": 0.0}}))
    with pytest.raises(SystemExit, match="folds differ"):
        br.main(["annotate", str(kfold)])


def test_baseline_record_tables_from_the_committed_records() -> None:
    br = script("baseline_record")
    record = json.loads((RECORDS / "baselines.json").read_text())
    text = br.tables(record, "docs/study/records/baselines.json")
    assert "Grouped by **material**" in text and "verified" in text and "Grouped by **formula**" in text
    pairs = json.loads((RECORDS / "near-identical-pairs.json").read_text())
    assert pairs["n_pairs"] == len(pairs["pairs"]) >= pairs["n_pairs_different_crystal_system"]


def test_sample_std_converts_a_population_std_record_once(tmp_path: Path) -> None:
    """``sample_std.py``: every ``<name>_std`` of a record that held the population std becomes the sample std of
    the same per-fold values (a one-fold metric loses its std, as runs write it); a second conversion is refused."""
    ss = script("sample_std")
    folds = [0.2, 0.35, 0.5, 0.3, 0.41]
    record = {"metrics": {"a_mean": float(np.mean(folds)), "a_std": float(np.std(folds)), "a_n": 5.0,
                          "b_mean": 0.3, "b_std": 0.0, "b_n": 1.0}}  # fmt: skip
    path = tmp_path / "run.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    path.with_suffix(".cmd").write_text("crystalvision pipeline run pipelines/paper-grouped.yaml\n")
    ss.main([str(path)])
    converted = json.loads(path.read_text())
    assert converted["metrics"]["a_std"] == pytest.approx(np.std(folds, ddof=1), rel=1e-12)
    assert "b_std" not in converted["metrics"] and converted["metrics"]["b_mean"] == 0.3
    assert ss.CONVENTION in converted["annotations"][-1]["what"]
    assert "sample_std.py" in path.with_suffix(".cmd").read_text()
    with pytest.raises(SystemExit, match="already holds the sample std"):
        ss.main([str(path)])


def test_committed_kfold_records_hold_the_sample_std() -> None:
    """The 62-structure records made before runs wrote the sample std now hold it: the majority crystal system, on
    the same test folds in both, has the same spread in paper-grouped.json as in first-numbers.json (made with the
    sample std)."""
    grouped = json.loads((RECORDS / "paper-grouped.json").read_text())["metrics"]
    first = json.loads((RECORDS / "first-numbers.json").read_text())["grouped_5fold_baselines"]
    key = "baseline_dummy_acc_crystal_system"
    assert grouped[f"{key}_mean"] == pytest.approx(first[f"{key}_mean"])
    assert grouped[f"{key}_std"] == pytest.approx(first[f"{key}_std"], rel=1e-9)


def test_study_page_curve_tables_are_regenerated_from_its_point_records(tmp_path: Path) -> None:
    """study.md's learning-curve tables are what curve_record.py makes from the committed point records (the points
    not run yet named from space-curve.cmd's sizes), each size's differences labelled with it, and the committed
    learning_curve.json is their merge; space_table.py refuses a learning curve's record, naming the script."""
    import shlex

    from crystalvision.app import curve_record as cr

    cv = script("curve_record")
    folder = shutil.copytree(RECORDS / "space-curve", tmp_path / "space-curve")
    record = cr.merge(cr.read_points(folder))
    cr.write_curve(record, folder)
    assert (folder / cr.CURVE_FILE).read_text() == (RECORDS / "space-curve" / cr.CURVE_FILE).read_text()
    line = next(x for x in (RECORDS / "space-curve.cmd").read_text().splitlines() if x.startswith("python "))
    words = shlex.split(line)
    sizes = list(takewhile(lambda w: not w.startswith("--"), words[words.index("--sizes") + 1 :]))
    have = {cr.point_key(n) for n in record["sizes"]}
    text = cv.render(record, "docs/study/records/space-curve", [s for s in sizes if s not in have])
    page = (STUDY.parent / "study.md").read_text()
    assert cv.st.replace_between(page, "space-table", text) == page, f"run: {line}"
    for point in record["points"]:
        if any(k.startswith("pooled_diff_") for k in point["metrics"]):
            assert f"| image model minus, at {cv.size_label(point)} structures per fold |" in text
    with pytest.raises(SystemExit, match="learning curve's record: python docs/study/curve_record.py"):
        script("space_table").main([str(folder / cr.CURVE_FILE)])


def _seed_part(seed: int, n: int = 40) -> tuple[pd.DataFrame, dict]:
    """A toy part of a formula-grouped headline: its out-of-fold table (3 folds, every predictor) and config."""
    rng = np.random.default_rng(100 + seed)
    base = np.random.default_rng(0)  # truth and folds: the same in every part
    systems, groups = np.array(["cubic", "tetragonal", "orthorhombic"]), np.array(["Pm-3m", "P4/mmm", "Pbca"])
    cls = base.integers(0, 3, n)
    gap = base.normal(1.0, 0.5, n)
    table = pd.DataFrame({"fold": np.arange(n) % 3, "seed": seed, "material_id": [f"mp-{i}" for i in range(n)],
                          "nelements": 3 + (np.arange(n) % 2), "band_gap": gap, "energy_above_hull": gap / 10,
                          "crystal_system": systems[cls], "spacegroup": groups[cls],
                          "unseen_crystal_system": False, "unseen_spacegroup": False})  # fmt: skip
    for p, noise in (("model", 0.5), ("dummy", 0.9), ("1nn", 0.4), ("tabular", 0.2), ("cgcnn", 0.5)):
        r = rng if p == "model" else np.random.default_rng(len(p))  # only the image model changes with the seed
        flip = r.random(n) < noise
        k = np.where(flip, r.integers(0, 3, n), cls)
        table[f"{p}__crystal_system"], table[f"{p}__spacegroup"] = systems[k], groups[k]
        table[f"{p}__band_gap"] = gap + r.normal(0, noise, n)
        table[f"{p}__energy_above_hull"] = gap / 10 + r.normal(0, noise / 10, n)
    config = {"name": f"toy-seed{seed}", "split": {"group_by": "formula", "folds": 3, "seed": 0},
              "train": {"seed": 0, "seeds": [seed], "epochs": 2},
              "evaluate": {"subsets": {"quaternary": {"nelements": 4}}, "bootstrap_resamples": 50,
                           "bootstrap_seed": 0}}  # fmt: skip
    if seed:
        config["split"]["holdout"] = None  # a key newer than the first part's code, at its default: the same config
    return table, config


def _log_part(seed: int, out: Path) -> Path:
    """A finished parent run holding the part's table and config, as the pipeline logs them, and the part's
    record (what ``pipeline run --json`` prints) at ``out``; the record's path."""
    import mlflow

    from crystalvision.evaluate import oof
    from crystalvision.track import tracking

    table, config = _seed_part(seed)
    tracking.configure_mlflow()
    with mlflow.start_run() as run:
        folder = out.parent / f"artifacts-{seed}"
        folder.mkdir()
        oof.write(table, folder)
        mlflow.log_artifacts(str(folder), artifact_path="evaluation")
        mlflow.log_dict(config, f"{tracking.CONFIG_ARTIFACT_DIR}/{tracking.CONFIG_ARTIFACT_NAME}")
        mlflow.set_tags({"env.cpu": "x86_64", "env.cpu_count": "2", "env.gpu": "none", "git_commit": "0123456789"})
    metrics = {"n_folds": 3.0} | oof.summarise(table, {"quaternary": 4}, n_resamples=50)
    record = {"pipeline": f"toy-seed{seed}", "snapshot_id": "toy", "snapshot_sha256": "abc", "n_structures": 40,
              "render": {"render_config_hash": "r1"}, "run_id": run.info.run_id, "metrics": metrics,
              "label_source": "surrogate", "recipe": {"train": {"epochs": 2}},
              "pooled": {"seeds": [seed], "group_by": "formula", "baselines": {"dummy": "majority"}}}  # fmt: skip
    out.write_text(json.dumps(record))
    return out


def test_seed_record_keeps_each_parts_table_and_merges_the_seeds(tmp_path: Path, cv_home: Path) -> None:
    """``export`` fetches a finished part's table and config from MLflow (CRYSTALVISION_HOME) and keeps them beside
    its record; ``merge`` pools two parts: seed-averaged scores, each seed's own and their sample std, paired
    differences from every baseline; the table names the seed not run yet; a part of other folds or config, or one
    whose table is missing, is refused by name."""
    from crystalvision.evaluate import oof

    sr = script("seed_record")
    parts = tmp_path / "space-formula"
    stdout = _log_part(0, tmp_path / "part0-stdout.json")  # the record as the part's stdout saved it
    files = sr.main(["export", str(stdout), "--out", str(parts)])
    assert files["record"] == parts / "seed-0.json" and json.loads(files["record"].read_text())["run_id"]
    run = json.loads((parts / "seed-0.run.json").read_text())
    assert run["config"]["split"]["group_by"] == "formula" and run["hardware"] == "x86_64, 2 CPU cores, no GPU"
    sr.export(_log_part(1, parts / "seed-1.json"))  # beside its record by default

    page = tmp_path / "study.md"
    page.write_text(f"a\n<!-- {sr.MARKER}:start -->\nnot run yet\n<!-- {sr.MARKER}:end -->\nb\n")
    merged = sr.main(["merge", str(parts), "--seeds", "0", "1", "2", "--readme", str(page)])
    assert merged == json.loads((parts / "merged.json").read_text()) and merged["seeds"] == [0, 1]
    m, tables = merged["metrics"], [_seed_part(s)[0] for s in (0, 1)]
    per_seed = [oof.pooled_metrics(t, {"quaternary": 4})["pooled_model_acc_crystal_system"] for t in tables]
    assert merged["per_seed"]["1"]["pooled_model_acc_crystal_system"] == pytest.approx(per_seed[1])
    assert m["pooled_model_acc_crystal_system"] == pytest.approx(np.mean(per_seed))
    assert m["pooled_model_acc_crystal_system_seed_std"] == pytest.approx(np.std(per_seed, ddof=1))
    for p in ("tabular", "cgcnn", "1nn", "dummy"):
        assert f"pooled_diff_model_vs_{p}_macro_f1_spacegroup_lo" in m
        assert f"pooled_quaternary_diff_model_vs_{p}_r2_band_gap" in m
    text = page.read_text()
    assert text.startswith("a\n") and "not run yet\n" not in text and "Seeds not run yet: 2." in text
    assert "Per structure" in text and "Subset `quaternary`" in text and "| sample std over seeds |" in text
    assert "(x86_64, 2 CPU cores, no GPU, commit 0123456)" in text
    row = next(line for line in text.splitlines() if line.startswith("| image model |"))
    assert " ± " in row and "[" in row  # the value, its interval over structures, the seed spread

    def refused(match: str, edit) -> None:
        bad = tmp_path / f"bad-{len(list(tmp_path.glob('bad-*')))}"
        shutil.copytree(parts, bad)
        edit(bad)
        with pytest.raises(SystemExit, match=match):
            sr.merge(bad)

    def other_config(folder: Path) -> None:
        run = json.loads((folder / "seed-1.run.json").read_text())
        run["config"]["split"]["seed"] = 1
        (folder / "seed-1.run.json").write_text(json.dumps(run))

    def other_folds(folder: Path) -> None:
        table = pd.read_parquet(folder / "seed-1.oof.parquet")
        table.loc[0, "fold"] = 2
        table.to_parquet(folder / "seed-1.oof.parquet", index=False)
        run = json.loads((folder / "seed-1.run.json").read_text())
        run["table_sha256"] = sr.sha256(folder / "seed-1.oof.parquet")
        (folder / "seed-1.run.json").write_text(json.dumps(run))

    refused(r"seed-1.json is not a part of seed-0.json's headline: config.split.seed: 1 here, 0", other_config)
    refused("seed-1.json tests other folds or structures than seed-0.json", other_folds)
    refused("seed-1.json has no seed-1.oof.parquet", lambda f: (f / "seed-1.oof.parquet").unlink())
    refused("another run's", lambda f: (f / "seed-1.oof.parquet").write_bytes((f / "seed-0.oof.parquet").read_bytes()))
    record = json.loads((parts / "seed-1.json").read_text())
    record["metrics"]["pooled_model_acc_crystal_system"] += 0.1
    (tmp_path / "wrong.json").write_text(json.dumps(record))
    with pytest.raises(SystemExit, match="does not reproduce the record's pooled scores"):
        sr.export(tmp_path / "wrong.json", tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()  # a refused part leaves nothing among the records


def _holdout_part(folder: Path, seed: int, holdout: dict) -> None:
    """A toy part of a hold-out headline as export leaves it (record, table, run file): one fold, the hold-out."""
    from crystalvision.evaluate import oof

    sr = script("seed_record")
    table, config = _seed_part(seed)
    table = table.assign(fold=0)
    config["split"] |= {"folds": None, "holdout": {"ids": holdout["file"], "use": "test"}}
    files = sr.paths(folder, seed)
    table.to_parquet(files["table"], index=False)
    metrics = {"n_folds": 1.0} | oof.summarise(table, {"quaternary": 4}, n_resamples=50)
    record = {"pipeline": f"toy-holdout-seed{seed}", "snapshot_id": "toy", "snapshot_sha256": "abc",
              "n_structures": 60, "render": {"render_config_hash": "r1"}, "run_id": f"run{seed}", "metrics": metrics,
              "label_source": "s", "recipe": {}, "holdout": holdout,
              "pooled": {"seeds": [seed], "group_by": "material", "baselines": {}}}  # fmt: skip
    run = {"run_id": f"run{seed}", "seed": seed, "table_sha256": sr.sha256(files["table"]), "started": "2026-12-07",
           "finished": "2026-12-07T10:00", "minutes": 20.0, "hardware": "x86_64", "config": config}  # fmt: skip
    files["record"].write_text(json.dumps(record))
    files["run"].write_text(json.dumps(run))


def test_seed_record_merges_holdout_parts_naming_the_holdout(tmp_path: Path) -> None:
    """Parts tested on a hold-out (``split.holdout.use: test``): the merged record and its text name the hold-out
    file and sha256 (not "1 folds"); a part tested on another hold-out is refused."""
    sr = script("seed_record")
    holdout = {"file": str(RECORDS / "holdout.json"), "sha256": "f" * 64, "use": "test", "n_ids": 40,
               "n_left_out_of_selection": 0}  # fmt: skip
    parts = tmp_path / "space-holdout"
    parts.mkdir()
    for seed in (0, 1):
        _holdout_part(parts, seed, holdout)
    merged = sr.merge(parts)
    assert merged["holdout"] == holdout and merged["n_folds"] == 1
    assert "test set: the hold-out docs/study/records/holdout.json (40 ids, sha256 ffffffffffff)" in merged["protocol"]
    text = sr.render(merged, "docs/study/records/space-holdout", [2])
    assert "the hold-out docs/study/records/holdout.json (40 ids" in text and "the same split in every part" in text
    assert "1 folds" not in text and "out-of-fold predictions" not in text
    # a part run from another checkout names the file there (or relative to the checkout): the sha256 decides
    relative = holdout | {"file": "docs/study/records/holdout.json", "n_tested": 38}
    _holdout_part(parts, 1, relative)
    run = json.loads((parts / "seed-1.run.json").read_text())
    run["config"]["split"]["holdout"]["ids"] = "/elsewhere/checkout/docs/study/records/holdout.json"
    (parts / "seed-1.run.json").write_text(json.dumps(run))
    assert sr.merge(parts)["seeds"] == [0, 1]
    assert "holdout.json (38 of its 40 ids tested, sha256" in sr.split_text(1.0, relative)
    record = json.loads((parts / "seed-1.json").read_text())
    (parts / "seed-1.json").write_text(json.dumps(record | {"holdout": holdout | {"sha256": "e" * 64}}))
    with pytest.raises(SystemExit, match="seed-1.json is not a part of seed-0.json's headline: holdout_sha256"):
        sr.merge(parts)
