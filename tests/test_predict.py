"""The pyfunc model: round trip through MLflow, CIF averaging, one clear error per bad item."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from crystalvision import predict
from crystalvision.cli import app
from crystalvision.dataset import load_images
from crystalvision.model import load_model, predict_arrays
from crystalvision.storage import ObjectStore

from .support.tiny import SIZE, tiny_model_dir, toy_splits, use_test_tracking

GOOD_CIF = (Path(__file__).parents[1] / "platform/crystalvision/data/snapshots/lmno/cif/mp-25284.cif").read_text()


def _png(size: int, colour: int = 120) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), colour, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def logged(cv_home, tmp_path):
    """A tiny model logged as a pyfunc into a run: (model_uri, run_id, model_dir, splits, store)."""
    store = ObjectStore(str(tmp_path / "store"))
    splits = toy_splits(store)
    model_dir = tiny_model_dir(tmp_path / "model")
    use_test_tracking()
    with mlflow.start_run() as run:
        uri = predict.log_model(model_dir, splits, store)
    return uri, run.info.run_id, model_dir, splits, store


def test_pyfunc_round_trip_matches_the_model_and_reports_bad_items(logged) -> None:
    uri, run_id, model_dir, splits, store = logged
    keys = list(splits.test["image_key"][:2])
    images = load_images(store, keys)
    frame = pd.DataFrame(
        {
            "image": [
                _b64(store.get_bytes(keys[0])),
                _b64(b"not a png at all"),
                _b64(_png(SIZE * 2)),
                "***",
                None,
                _b64(store.get_bytes(keys[1])),
            ],
            "cif": [None, None, None, None, "data_broken\n_cell_length_a x\n", None],
        }
    )
    out = mlflow.pyfunc.load_model(uri).predict(frame)
    assert list(out.columns) == list(predict.OUTPUT_COLUMNS)
    expected = predict_arrays(load_model(model_dir), images)
    assert out.loc[[0, 5], "band_gap"].to_numpy() == pytest.approx(expected["band_gap"], rel=1e-4)
    assert out["error"][[0, 5]].isna().all()
    errors = list(out["error"][1:5])
    assert "not a readable image" in errors[0]
    assert f"model expects {SIZE}x{SIZE}" in errors[1]
    assert "not valid base64" in errors[2]
    assert "row 4" in errors[3] and "CIF" in errors[3]
    proba = json.loads(out.loc[0, "crystal_system_proba"])
    assert max(proba, key=proba.get) == out.loc[0, "crystal_system"]
    assert sum(proba.values()) == pytest.approx(1.0, abs=1e-4)
    names = [f.path for f in mlflow.MlflowClient().list_artifacts(run_id, "model_dir")]
    assert sorted(names) == ["model_dir/model.json", "model_dir/weights.pt"]


def test_cif_rows_render_views_and_average(tmp_path) -> None:
    model = load_model(tiny_model_dir(tmp_path / "m"))
    rng = np.random.default_rng(0)
    rendered = {}

    def fake_renderer(structure, render_config, views):
        assert render_config["image_size"] == SIZE and len(structure) > 0
        rendered["images"] = rng.integers(0, 255, (views, SIZE, SIZE, 3), dtype=np.uint8)
        return rendered["images"]

    frame = pd.DataFrame({"cif": [GOOD_CIF, ""], "views": [3.0, np.nan], "name": ["good.cif", "empty.cif"]})
    out = predict.predict_frame(model, frame, renderer=fake_renderer)
    per_view = predict_arrays(model, rendered["images"])
    assert len(rendered["images"]) == 3
    assert out.loc[0, "band_gap"] == pytest.approx(float(per_view["band_gap"].mean()), rel=1e-5)
    assert pd.isna(out.loc[0, "error"])
    assert out.loc[1, "error"].startswith("empty.cif: the CIF is empty")


def test_predict_files_and_cli(logged, tmp_path) -> None:
    uri, *_ = logged
    good = tmp_path / "good.png"
    good.write_bytes(_png(SIZE))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG broken")
    bad_cif = tmp_path / "bad.cif"
    bad_cif.write_text("this is not a CIF")
    other = tmp_path / "notes.txt"
    other.write_text("hi")
    files = [good, corrupt, bad_cif, other, tmp_path / "missing.png"]
    out = predict.predict_files(files, model_uri=uri, views=2)
    assert list(out["file"]) == [str(f) for f in files]
    assert pd.isna(out.loc[0, "error"]) and np.isfinite(out.loc[0, "band_gap"])
    assert out["error"][1:].notna().all()
    assert str(corrupt) in out.loc[1, "error"] and str(bad_cif) in out.loc[2, "error"]
    assert "unknown file type" in out.loc[3, "error"] and "cannot read" in out.loc[4, "error"]

    result = CliRunner().invoke(app, ["predict", str(good), str(corrupt), "--model", uri, "--output", "json"])
    assert result.exit_code == 1, result.output
    rows = json.loads(result.stdout)
    assert rows[0]["error"] is None and rows[1]["error"]


def test_cif_through_the_pyfunc_with_the_real_renderer(logged) -> None:
    uri, *_ = logged
    frame = pd.DataFrame({"cif": [GOOD_CIF, "garbage"], "views": [2.0, 2.0], "name": ["mp-25284.cif", "bad.cif"]})
    out = mlflow.pyfunc.load_model(uri).predict(frame)
    assert pd.isna(out.loc[0, "error"]), out.loc[0, "error"]
    assert np.isfinite(out.loc[0, "band_gap"]) and out.loc[0, "crystal_system"]
    assert out.loc[1, "error"].startswith("bad.cif: not a readable CIF")
