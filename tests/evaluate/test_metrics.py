"""Metric functions against scikit-learn on known inputs, absent classes, per-structure aggregation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from crystalvision.evaluate import metrics as M


@pytest.fixture
def multiclass() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.tile(np.arange(4), 15)
    logits = rng.normal(size=(60, 4)) + 1.5 * np.eye(4)[y]
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, proba


def test_regression_by_hand_and_sklearn() -> None:
    t, p = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.0, 2.0, 4.5])
    m = M.regression_metrics(t, p)
    assert m["mae"] == pytest.approx(0.5)
    assert m["mse"] == pytest.approx(0.375)
    assert m["rmse"] == pytest.approx(math.sqrt(0.375))
    assert m["r2"] == pytest.approx(1 - 1.5 / 5.0)
    assert m["r2"] == pytest.approx(skm.r2_score(t, p))
    assert math.isnan(M.regression_metrics([1.0], [2.0])["r2"])


def test_label_metrics_match_sklearn(multiclass) -> None:
    y, proba = multiclass
    pred = proba.argmax(1)
    m = M.classification_metrics(y, proba)
    assert m["acc"] == pytest.approx(skm.accuracy_score(y, pred))
    for avg in ("macro", "weighted"):
        assert m[f"{avg}_f1"] == pytest.approx(skm.f1_score(y, pred, average=avg))
        assert m[f"{avg}_precision"] == pytest.approx(skm.precision_score(y, pred, average=avg))
        assert m[f"{avg}_recall"] == pytest.approx(skm.recall_score(y, pred, average=avg))


def test_auc_ap_match_sklearn_when_all_classes_present(multiclass) -> None:
    y, proba = multiclass
    m = M.probability_metrics(y, proba)
    assert m["auc_macro"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    assert m["auc_micro"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr", average="micro"))
    assert m["ap_macro"] == pytest.approx(skm.average_precision_score(y, proba, average="macro"))
    assert m["ap_micro"] == pytest.approx(skm.average_precision_score(y, proba, average="micro"))
    per = M.roc_auc_per_class(y, proba)
    expected = skm.roc_auc_score(np.eye(4)[y], proba, average=None)
    assert [per[k] for k in range(4)] == pytest.approx(list(expected))


def test_absent_classes_are_skipped_not_zero(multiclass) -> None:
    y, proba = multiclass
    # Head with 6 classes; classes 4 and 5 never occur in y_true (a grouped split's rare space groups).
    wide = np.hstack([proba * 0.9, np.full((len(y), 2), 0.05)])
    m = M.probability_metrics(y, wide)
    assert set(M.roc_auc_per_class(y, wide)) == {0, 1, 2, 3}
    assert m["auc_macro"] == pytest.approx(np.mean([skm.roc_auc_score(y == k, wide[:, k]) for k in range(4)]))
    assert m["ap_macro"] == pytest.approx(np.mean([skm.average_precision_score(y == k, wide[:, k]) for k in range(4)]))
    onehot = np.eye(6)[y]
    assert m["auc_micro"] == pytest.approx(skm.roc_auc_score(onehot.ravel(), wide.ravel()))
    assert m["ap_micro"] == pytest.approx(skm.average_precision_score(onehot, wide, average="micro"))
    # A single class present: no ROC curve exists for it, so macro is NaN rather than a crash.
    single = M.probability_metrics(np.zeros(5, dtype=int), np.full((5, 3), 1 / 3))
    assert math.isnan(single["auc_macro"]) and math.isfinite(single["auc_micro"])


def test_report_and_confusion_use_present_classes() -> None:
    classes = ["a", "b", "c", "d"]
    y, pred = np.array([0, 0, 2, 2, 2]), np.array([0, 2, 2, 2, 0])
    rep = M.classification_report_dict(y, pred, classes)
    assert set(rep) >= {"a", "c", "macro avg", "weighted avg"} and "b" not in rep and "d" not in rep
    assert rep["macro avg"]["f1-score"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert rep["c"]["recall"] == pytest.approx(2 / 3)
    labels = M.present_labels(y, pred)
    np.testing.assert_array_equal(M.confusion(y, pred, labels), skm.confusion_matrix(y, pred))


def test_stability_classification() -> None:
    e_true = np.array([0.0, 0.01, 0.03, 0.05, 0.02, 0.1])
    e_pred = np.array([0.005, 0.04, 0.02, 0.06, 0.01, 0.09])
    m = M.stability_metrics(e_true, e_pred, threshold=0.025)
    t, p = e_true <= 0.025, e_pred <= 0.025
    assert m["acc"] == pytest.approx(skm.accuracy_score(t, p))
    assert m["f1"] == pytest.approx(skm.f1_score(t, p))
    assert m["precision"] == pytest.approx(skm.precision_score(t, p))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(t, -e_pred))
    assert m["frac_stable"] == pytest.approx(0.5)
    # The threshold is configurable.
    assert M.stability_metrics(e_true, e_pred, threshold=0.2)["acc"] == 1.0


def test_per_structure_aggregation() -> None:
    ids = np.array(["mp-2", "mp-1", "mp-2", "mp-1", "mp-1"])
    values = np.array([1.0, 2.0, 3.0, 4.0, 6.0])
    keys, means = M.group_mean(ids, values)
    assert keys.tolist() == ["mp-1", "mp-2"] and means.tolist() == [4.0, 2.0]
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.4, 0.6], [0.0, 1.0]])
    _, mean_proba = M.group_mean(ids, proba)
    np.testing.assert_allclose(mean_proba, [[0.2, 0.8], [0.7, 0.3]])
    np.testing.assert_allclose(mean_proba.sum(1), 1.0)
    assert M.group_first(ids, ["x", "y", "x", "y", "y"])[1].tolist() == ["y", "x"]


def test_names_and_finite() -> None:
    named = M.prefixed("test", "band_gap", {"r2": 0.5, "mae": math.nan})
    assert named == {"test_r2_band_gap": 0.5, "test_mae_band_gap": named["test_mae_band_gap"]}
    assert M.finite(named) == {"test_r2_band_gap": 0.5}


def test_balanced_accuracy_is_mean_recall_over_true_classes(multiclass) -> None:
    y, proba = multiclass
    pred = proba.argmax(1)
    assert M.label_metrics(y, pred)["balanced_acc"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    # majority answer on 3:1 data: accuracy 0.75 hides that one class is never found
    t, p = np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0])
    m = M.label_metrics(t, p)
    assert m["acc"] == 0.75 and m["balanced_acc"] == 0.5
    assert M.balanced_accuracy(np.array(["a", "b"]), np.array(["c", "b"])) == 0.5  # predicted-only class ignored
