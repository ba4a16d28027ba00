"""``folds_report.html`` (report.write_folds_report) says what the run tested: k folds, or the one hold-out test set
(``split.holdout.use: test``), and names each child run by its fold and seed. No training, no MLflow."""

from __future__ import annotations

from pathlib import Path

from crystalvision.evaluate.report import run_labels, write_folds_report

SOURCES = {"band_gap": "mp:{db}:summary.band_gap"}
HOLDOUT = {"file": "docs/study/records/holdout.json", "sha256": "ab" * 32, "use": "test", "n_ids": 127, "n_tested": 125}


def _runs(n_folds: int, seeds: tuple[int, ...]) -> tuple[list[dict], list[dict]]:
    """Per-run metrics and descriptions as the pipeline's k-fold loop makes them (seed outer, fold inner)."""
    folds = [{"fold": i, "seed": s, "n_structures_test": 10 + i} for s in seeds for i in range(n_folds)]
    per_run = [{"test_score": 0.5 + 0.01 * k, "test_acc_crystal_system": 0.6} for k in range(len(folds))]
    return per_run, folds


def _report(tmp_path: Path, n_folds: int, seeds: tuple[int, ...], holdout: dict | None = None) -> str:
    per_run, folds = _runs(n_folds, seeds)
    aggregated = {"test_score_mean": 0.52, "test_score_std": 0.01, "test_acc_crystal_system_mean": 0.6}
    pooled = {"pooled_n_structures": 125.0, "pooled_model_acc_crystal_system": 0.6}
    path = write_folds_report(tmp_path / "folds_report.html", per_fold=per_run, aggregated=aggregated, folds=folds,
                              label_source=SOURCES, pooled=pooled, holdout=holdout)  # fmt: skip
    return path.read_text()


def test_a_kfold_report_counts_folds_not_fold_seed_runs(tmp_path: Path) -> None:
    text = _report(tmp_path, 3, (0, 1))
    assert "k-fold evaluation (3 folds, 2 seeds)</h1>" in text  # not "6 folds"
    assert "exactly one test fold" in text and "std is the sample std over the fold x seed runs" in text
    assert "<td>fold 0, seed 1</td>" in text and "<td>fold 2, seed 0</td>" in text
    assert "Pooled out of fold" in text and "hold-out" not in text


def test_a_one_seed_kfold_report_names_runs_by_fold(tmp_path: Path) -> None:
    text = _report(tmp_path, 3, (0,))
    assert "k-fold evaluation (3 folds)</h1>" in text and "std is the sample std over folds" in text
    assert "<td>fold 2</td>" in text and "seed 0</td>" not in text


def test_a_holdout_report_names_the_holdout_as_the_one_test_set(tmp_path: Path) -> None:
    text = _report(tmp_path, 1, (0, 1, 2), HOLDOUT)
    head = "crystalvision hold-out test: docs/study/records/holdout.json (125 of its 127 ids tested, 3 training seeds)"
    assert head in text
    assert "One fixed test set: the hold-out docs/study/records/holdout.json" in text and "sha256 abababababab" in text
    assert "training + validation carved from the other structures" in text
    for kfold in ("k-fold evaluation", "1 folds", "exactly one test fold", "Pooled out of fold", "test folds"):
        assert kfold not in text
    assert "Pooled on the hold-out" in text and "mean ± std over seeds" in text
    assert [f"<td>hold-out, seed {s}</td>" in text for s in (0, 1, 2)] == [True] * 3


def test_a_holdout_report_without_a_tested_count_gives_the_files_count(tmp_path: Path) -> None:
    text = _report(tmp_path, 1, (0,), HOLDOUT | {"n_tested": None})
    assert "holdout.json (127 ids, 1 training seed)</h1>" in text
    assert "k-fold evaluation (3 folds)</h1>" in _report(tmp_path, 3, (0,), HOLDOUT | {"use": "exclude"})


def test_run_labels() -> None:
    folds = [{"fold": 0, "seed": 0}, {"fold": 1, "seed": 0}, {"fold": 0, "seed": 4}, {"fold": 1, "seed": 4}]
    assert run_labels(folds) == ["fold 0, seed 0", "fold 1, seed 0", "fold 0, seed 4", "fold 1, seed 4"]
    assert run_labels(folds[:2]) == ["fold 0", "fold 1"]
    assert run_labels([{"fold": 0, "seed": 2}], on_holdout=True) == ["hold-out, seed 2"]
