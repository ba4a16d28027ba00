"""evaluate_model on the toy set with a tiny CrystalNet; baselines on real bundled-snapshot records."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from crystalvision.core.config import PipelineConfig, SplitConfig
from crystalvision.data.dataset import load_images, load_labels, split_frame
from crystalvision.data.storage import ObjectStore
from crystalvision.learn.model import CrystalNet, ModelSpec, preprocess, save_model
from tests.support.toy import SPACEGROUPS, SYSTEMS, write_toy_dataset

SPLIT = SplitConfig(protocol="grouped", test_fraction=0.3, val_fraction=0.2, seed=0)


def _cfg(**evaluate) -> PipelineConfig:
    return PipelineConfig(name="test-eval", split=SPLIT.model_dump(), evaluate={"saliency_samples": 3, **evaluate})


def _train_tiny(store: ObjectStore, train: pd.DataFrame, steps: int = 10) -> CrystalNet:
    """timm's 0.1M-parameter test EfficientNet, a few plain-PyTorch steps so outputs are not random."""
    torch.manual_seed(0)
    spec = ModelSpec(
        backbone="test_efficientnet",
        crystal_system_classes=SYSTEMS,
        spacegroup_classes=SPACEGROUPS,
        image_size=32,
        target_mean={
            "band_gap": float(train.band_gap.mean()),
            "energy_above_hull": float(train.energy_above_hull.mean()),
        },
        target_std={"band_gap": float(train.band_gap.std()), "energy_above_hull": float(train.energy_above_hull.std())},
        label_source={"band_gap": "toy", "energy_above_hull": "toy"},
    )
    model = CrystalNet(spec, drop_rate=0.0)
    x = preprocess(load_images(store, train.image_key.tolist(), size=32))
    ys = {
        "crystal_system": torch.tensor(train.crystal_system_id.to_numpy()),
        "spacegroup": torch.tensor(train.spacegroup_id.to_numpy()),
    }
    zs = {
        t: torch.tensor(((train[t] - spec.target_mean[t]) / spec.target_std[t]).to_numpy()).float()
        for t in ("band_gap", "energy_above_hull")
    }
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        out = model(x)
        loss = sum(torch.nn.functional.cross_entropy(out[t], y) for t, y in ys.items())
        loss = loss + sum(torch.nn.functional.mse_loss(out[t], z) for t, z in zs.items())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaltoy")
    store = ObjectStore(str(root / "store"))
    key = write_toy_dataset(store, n_structures=14, views=3, size=32)
    splits = split_frame(load_labels(store, key), SPLIT)
    return store, key, splits, _train_tiny(store, splits.train)


@pytest.fixture(scope="module")
def evaluated(toy_run, tmp_path_factory):
    from crystalvision.evaluate.evaluate import evaluate_model

    store, _, splits, model = toy_run
    out = tmp_path_factory.mktemp("evalout")
    return evaluate_model(model, splits, store, _cfg(), out), splits


def test_evaluate_model_writes_every_artifact(evaluated) -> None:
    result, splits = evaluated
    out = result.artifacts_dir
    expected = [
        "metrics.json",
        "predictions.csv",
        "predictions_by_structure.csv",
        "report.html",
        "baseline_predictions.csv",
        "saliency.png",
        "saliency_ssim.png",
        "saliency_ssim.csv",
        "saliency_maps.npy",
        "parity_band_gap.png",
        "parity_energy_above_hull.png",
    ]
    for t in ("crystal_system", "spacegroup"):
        expected += [
            f"roc_{t}.png",
            f"pr_{t}.png",
            f"confusion_{t}_image.png",
            f"confusion_{t}_structure.png",
            f"classification_report_{t}.json",
            f"classification_report_{t}.txt",
        ]
    for name in expected:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name

    # the test structures' predictions (model per structure, baselines) in oof.py's table format, once each
    oof = pd.read_csv(out / "oof_predictions.csv")
    assert len(oof) == splits.test["material_id"].nunique() == len(result.oof)
    assert {"model__band_gap", "model__crystal_system", "dummy__spacegroup", "unseen_crystal_system"} <= set(oof)

    m = result.metrics
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(m)
    for name in (
        "test_r2_band_gap",
        "test_mae_energy_above_hull",
        "test_acc_crystal_system",
        "test_macro_f1_spacegroup",
        "test_auc_macro_crystal_system",
        "test_struct_r2_band_gap",
        "test_stability_acc",
        "val_acc_spacegroup",
        "baseline_dummy_r2_band_gap",
        "baseline_dummy_acc_crystal_system",
    ):
        assert name in m, name
    parts = [
        m["test_r2_band_gap"],
        m["test_r2_energy_above_hull"],
        m["test_acc_crystal_system"],
        m["test_acc_spacegroup"],
    ]
    assert m["test_score"] == pytest.approx(np.mean(parts))
    assert all(np.isfinite(v) for v in m.values())

    per_image = pd.read_csv(out / "predictions.csv")
    by_struct = pd.read_csv(out / "predictions_by_structure.csv")
    assert len(per_image) == len(splits.test) + len(splits.val)
    assert len(by_struct) == splits.test.material_id.nunique() + splits.val.material_id.nunique()
    assert (by_struct.n_views == 3).all()
    report = json.loads((out / "classification_report_spacegroup.json").read_text())
    assert report["absent_classes"]  # a grouped split of 14 toy structures cannot hold all 8 space groups


def test_report_mentions_every_metric_and_the_protocol(evaluated) -> None:
    result, _ = evaluated
    html = (result.artifacts_dir / "report.html").read_text()
    for name in result.metrics:
        assert name in html, name
    assert "grouped" in html and "Surrogate labels" in html and "toy" in html
    assert html.count("data:image/png;base64,") >= 12  # self-contained


def test_saliency_and_ssim_matrix(evaluated) -> None:
    result, splits = evaluated
    out = result.artifacts_dir
    maps = np.load(out / "saliency_maps.npy")
    ssim = pd.read_csv(out / "saliency_ssim.csv", index_col=0)
    n_systems = pd.concat([splits.train, splits.val, splits.test]).crystal_system.nunique()
    assert maps.shape == (n_systems, 32, 32) and maps.min() >= 0 and maps.max() == pytest.approx(1.0)
    assert ssim.shape == (n_systems, n_systems) and list(ssim.index) == list(ssim.columns)
    np.testing.assert_allclose(np.diag(ssim.to_numpy()), 1.0)
    np.testing.assert_allclose(ssim.to_numpy(), ssim.to_numpy().T)


def test_smoothgrad_noise_is_configurable(toy_run) -> None:
    from crystalvision.evaluate.explain import smoothgrad_maps

    store, _, splits, model = toy_run
    img = load_images(store, splits.test.image_key.tolist()[:1], size=32)
    torch.manual_seed(0)
    a = smoothgrad_maps(model, img, [0], noise=0.05, samples=2)
    torch.manual_seed(0)
    b = smoothgrad_maps(model, img, [0], noise=0.0, samples=2)
    assert a.shape == b.shape == (1, 32, 32) and not np.allclose(a, b)


def _records_frame(records, views: int = 2) -> pd.DataFrame:
    """A labels table (as the renderer writes it, minus images) for real snapshot records."""
    rows = []
    for r in records:
        for v in range(views):
            rows.append(
                {
                    "material_id": r.material_id,
                    "view": v,
                    "band_gap": r.band_gap,
                    "energy_above_hull": r.energy_above_hull,
                    "crystal_system": r.crystal_system,
                    "spacegroup_symbol": r.spacegroup_symbol,
                    "crystal_system_id": 0,
                    "spacegroup_id": 0,
                }
            )
    return pd.DataFrame(rows)


def test_baselines_on_bundled_records(bundled_snapshot) -> None:
    from crystalvision.evaluate.baselines import run_baselines

    regular = [r for r in bundled_snapshot.records if not r.flags][:16]
    records = {r.material_id: r for r in regular}
    train, test = _records_frame(regular[:11]), _records_frame(regular[11:])
    metrics, table = run_baselines(train, test, records, stability_threshold=0.025, symprec=0.1)
    # The labels came from SpacegroupAnalyzer(symprec=0.1): the symmetry ceiling is exact.
    assert metrics["baseline_symmetry_acc_crystal_system"] == 1.0
    assert metrics["baseline_symmetry_acc_spacegroup"] == 1.0
    for name in (
        "baseline_1nn_r2_band_gap",
        "baseline_1nn_mae_energy_above_hull",
        "baseline_1nn_acc_spacegroup",
        "baseline_dummy_r2_band_gap",
        "baseline_dummy_acc_crystal_system",
        "baseline_1nn_stability_f1",
    ):
        assert name in metrics, name
    majority = train.drop_duplicates("material_id").crystal_system.value_counts().idxmax()
    assert (table.dummy_crystal_system == majority).all()
    assert table.dummy_band_gap.iloc[0] == pytest.approx(train.drop_duplicates("material_id").band_gap.mean())
    assert len(table) == 5 and set(table["1nn_neighbour"]) <= set(train.material_id)

    # Image protocol leak: a test structure also in train is its own nearest neighbour.
    leaky, _ = run_baselines(train, train, records, stability_threshold=0.025)
    assert leaky["baseline_1nn_r2_band_gap"] == 1.0 and leaky["baseline_1nn_acc_spacegroup"] == 1.0

    # No records (toy data): structure baselines are skipped, the dummy still runs.
    skipped, _ = run_baselines(train, test, None, stability_threshold=0.025)
    assert "baseline_dummy_mae_band_gap" in skipped and not any(k.startswith("baseline_1nn") for k in skipped)


def test_surrogate_detection() -> None:
    from crystalvision.data.mp import MP_LABEL_SOURCE
    from crystalvision.evaluate.report import is_surrogate

    live = {k: v.format(db="2025.02.12") for k, v in MP_LABEL_SOURCE.items()}
    assert not is_surrogate(live)
    assert is_surrogate({"band_gap": "CGCNN pretrained band-gap regressor", "energy_above_hull": live["band_gap"]})
    assert is_surrogate({})


def test_evaluate_logged_run(cv_home, toy_run) -> None:
    import mlflow

    from crystalvision.core.settings import get_settings
    from crystalvision.data.storage import open_store
    from crystalvision.stages import evaluate_logged_run

    src_store, key, splits, model = toy_run
    store = open_store()
    for k in src_store.list("renders/toy"):
        store.put_bytes(k, src_store.get_bytes(k))
    model_dir = save_model(model, cv_home / "model")
    mlflow.set_tracking_uri(get_settings().tracking.mlflow_tracking_uri)
    with mlflow.start_run() as run:
        mlflow.log_params(
            {"labels_key": key, **{f"split.{k}": v for k, v in SPLIT.model_dump().items()}, **splits.describe()}
        )
        mlflow.log_artifacts(str(model_dir), artifact_path="model_dir")
    out = evaluate_logged_run(_cfg(saliency=False, include_val=False), run.info.run_id)
    assert out["split"]["n_images_test"] == len(splits.test)
    logged = mlflow.get_run(run.info.run_id).data.metrics
    assert logged["test_score"] == pytest.approx(out["metrics"]["test_score"])
    names = {f.path for f in mlflow.MlflowClient().list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/report.html", "evaluation/metrics.json", "evaluation/predictions.csv"} <= names
