"""The Python face: ``crystalvision.load_model`` + ``crystalvision.predict`` on CIF paths, CIF text, pymatgen
Structures and images give the command line's frame (columns, warnings, model card), one error per bad input."""

from __future__ import annotations

import inspect
import io
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from PIL import Image

import crystalvision
from crystalvision.core import ModelError
from crystalvision.serve import face, mlflow_model, predict
from tests.support.tiny import SIZE, log_tiny_model, use_home, use_test_tracking

CIF = Path(__file__).parents[2] / "platform/crystalvision/data/snapshots/lmno/cif/mp-25284.cif"
NAME = "face-test"


@pytest.fixture(scope="module")
def registered_once(tmp_path_factory) -> Path:
    """A tiny model registered as NAME with a champion alias, once per module (its tests only read it): its home."""
    from crystalvision.core.settings import get_settings

    logged = log_tiny_model(tmp_path_factory.mktemp("registered"))
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_home(monkeypatch, logged.home)
        version = mlflow.register_model(f"runs:/{logged.run_id}/{mlflow_model.MODEL_ARTIFACT}", NAME).version
        MlflowClient().set_registered_model_alias(NAME, "champion", version)
    get_settings.cache_clear()
    return logged.home


@pytest.fixture
def registered(registered_once, monkeypatch):
    """MLflow pointed at the home where NAME's champion is registered: its URI; the render helpers stopped
    afterwards."""
    from crystalvision.core.settings import get_settings
    from crystalvision.serve import renderproc

    use_home(monkeypatch, registered_once)
    yield f"models:/{NAME}@champion"
    renderproc.shutdown()
    get_settings.cache_clear()


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_registered_name_predicts_a_cif_as_the_command_line_does(registered) -> None:
    model = crystalvision.load_model(NAME)  # the name means its champion
    frame = crystalvision.predict(str(CIF), model, views=2)
    cli = face.predict_files([CIF], registered, views=2)
    assert list(frame.columns) == ["file", *predict.OUTPUT_COLUMNS]
    pd.testing.assert_frame_equal(frame, cli)
    assert frame.attrs == cli.attrs and "generalisation" in frame.attrs
    assert frame.loc[0, "error"] is None and np.isfinite(frame.loc[0, "band_gap"])
    assert json.loads(frame.loc[0, "warnings"]) == json.loads(cli.loc[0, "warnings"])
    assert callable(crystalvision.predict) and "inputs" in inspect.signature(crystalvision.predict).parameters
    assert face.DEFAULT_VIEWS == predict.DEFAULT_VIEWS


def test_structures_cif_text_and_images_in_one_call_with_one_error_per_bad_input(registered, tmp_path) -> None:
    from pymatgen.core import Structure

    pixels = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    (tmp_path / "view.png").write_bytes(_png(pixels))
    inputs = [
        Structure.from_file(CIF),
        CIF.read_text(),
        pixels,
        Image.fromarray(pixels),
        _png(pixels),
        tmp_path / "view.png",
        np.zeros((48, 48, 3), dtype=np.uint8),  # another size: resized, with a warning
        42,
        np.zeros((SIZE, SIZE, 3)),  # float pixels
        tmp_path / "missing.cif",
    ]
    model = crystalvision.load_model(registered)  # a model URI
    frame = crystalvision.predict(inputs, model, views=1)
    names = list(frame["file"])
    assert names[:3] == ["structure 0 (LiMn2NiO6)", "cif 1", "image 2"] and names[5] == str(tmp_path / "view.png")
    errors = dict(zip(names, frame["error"], strict=True))
    assert errors["input 7"] == (
        "input 7: a int is not a prediction input; pass a CIF or image path, CIF text, a pymatgen Structure or an "
        "image (RGB array, PIL image, PNG or JPEG bytes)"
    )
    assert errors["image 8"].startswith("image 8: cannot encode it as an image")
    assert errors[str(tmp_path / "missing.cif")].startswith(f"{tmp_path / 'missing.cif'}: cannot read the file")
    good = frame[frame["error"].isna()]
    assert len(good) == 7 and all(np.isfinite(good["band_gap"].astype(float)))
    assert len(set(frame.loc[2:5, "band_gap"])) == 1, "the same pixels as array, PIL image, bytes and file"
    assert frame.loc[0, "structure_spacegroup"] == frame.loc[1, "structure_spacegroup"] is not None
    assert "resized" in json.loads(frame.loc[6, "warnings"])[0]
    named = crystalvision.predict({"mine": pixels}, model)
    assert named.loc[0, "file"] == "mine" and named.loc[0, "band_gap"] == frame.loc[2, "band_gap"]


def test_an_unknown_model_is_one_error_naming_it_and_the_fix(cv_home) -> None:
    use_test_tracking()
    with pytest.raises(ModelError, match=r"^cannot load model models:/no-such-model@champion \(.*train and register"):
        crystalvision.load_model("no-such-model")
    assert face.model_uri("runs:/abc/model") == "runs:/abc/model"
    assert face.model_uri(None) == face.default_model_uri()
    frame = crystalvision.predict([42], "no-such-model")  # nothing to predict: the model is not even loaded
    assert frame.loc[0, "error"].startswith("input 0: a int is not a prediction input") and not frame.attrs
