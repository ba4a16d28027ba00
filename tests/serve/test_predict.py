"""The pyfunc model: round trip through MLflow, CIF averaging, one clear error per bad item."""

from __future__ import annotations

import base64
import io
import json
import struct
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from crystalvision.app.cli import app
from crystalvision.core.config import PipelineConfig
from crystalvision.core.errors import CrystalVisionError
from crystalvision.data.dataset import load_images
from crystalvision.learn.model import load_model, predict_arrays, spec_for
from crystalvision.serve import face, mlflow_model, predict, predict_input
from crystalvision.serve.hierarchy import joint_symmetry, system_of
from tests.support.tiny import SIZE, LoggedModel, log_tiny_model, tiny_model_dir, use_home, use_test_tracking

QUICKSTART = Path(__file__).parents[2] / "pipelines/quickstart.yaml"
GOOD_CIF = (Path(__file__).parents[2] / "platform/crystalvision/data/snapshots/lmno/cif/mp-25284.cif").read_text()


def _png(size: int, colour: int = 120) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), colour, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def logged_once(tmp_path_factory) -> LoggedModel:
    """A tiny model logged as a pyfunc, once per module: the tests that use it only read it."""
    return log_tiny_model(tmp_path_factory.mktemp("logged"))


@pytest.fixture
def logged(logged_once, monkeypatch):
    """A tiny model logged as a pyfunc into a run, MLflow pointed at its home: (model_uri, run_id, model_dir,
    splits, store)."""
    from crystalvision.core.settings import get_settings

    use_home(monkeypatch, logged_once.home)
    yield logged_once.uri, logged_once.run_id, logged_once.model_dir, logged_once.splits, logged_once.store
    get_settings.cache_clear()


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
    assert out["error"][[1, 3, 4]].notna().all() and pd.isna(out.loc[2, "error"])
    assert "not a readable image" in out.loc[1, "error"]
    assert "not valid base64" in out.loc[3, "error"]
    assert "row 4" in out.loc[4, "error"] and "CIF" in out.loc[4, "error"]
    # an image of another size than the model's is resized, with a warning saying so
    assert f"the model was trained on {SIZE}x{SIZE}" in json.loads(out.loc[2, "warnings"])[0]
    proba = json.loads(out.loc[0, "crystal_system_proba"])
    assert sum(proba.values()) == pytest.approx(1.0, abs=1e-4)
    top3 = json.loads(out.loc[0, "spacegroup_top3"])
    assert len(top3) == 3 and top3[0][1] >= top3[1][1] >= top3[2][1]
    assert 0 < out.loc[0, "crystal_system_probability"] <= 1 and 0 < out.loc[0, "spacegroup_probability"] <= 1
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
    out = face.predict_files(files, model_uri=uri, views=2)
    assert list(out["file"]) == [str(f) for f in files]
    assert pd.isna(out.loc[0, "error"]) and np.isfinite(out.loc[0, "band_gap"])
    assert out["error"][1:].notna().all()
    assert str(corrupt) in out.loc[1, "error"] and str(bad_cif) in out.loc[2, "error"]
    assert "unknown file type" in out.loc[3, "error"] and "cannot read" in out.loc[4, "error"]

    result = CliRunner().invoke(app, ["predict", str(good), str(corrupt), "--model", uri, "--output", "json"])
    assert result.exit_code == 1, result.output
    rows = json.loads(result.stdout)
    assert rows[0]["error"] is None and rows[1]["error"]
    assert sum(rows[0]["spacegroup_proba"].values()) == pytest.approx(1.0, abs=1e-4)  # full distributions kept

    table = CliRunner().invoke(app, ["predict", str(good), "--model", uri])
    assert table.exit_code == 0, table.output
    assert "{" not in table.stdout and "top-3 space groups" in table.stdout
    assert out.loc[0, "spacegroup"] in table.stdout


def test_cif_through_the_pyfunc_with_the_real_renderer(logged) -> None:
    uri, *_ = logged
    frame = pd.DataFrame({"cif": [GOOD_CIF, "garbage"], "views": [2.0, 2.0], "name": ["mp-25284.cif", "bad.cif"]})
    out = mlflow.pyfunc.load_model(uri).predict(frame)
    assert pd.isna(out.loc[0, "error"]), out.loc[0, "error"]
    assert np.isfinite(out.loc[0, "band_gap"]) and out.loc[0, "crystal_system"]
    assert out.loc[1, "error"].startswith("bad.cif: not a readable CIF")


def test_logged_pyfunc_is_code_with_its_requirements(logged) -> None:
    """Models-from-code: no pickled python_model; the package travels as code; requirements name its imports."""
    uri, *_ = logged
    local = Path(mlflow.artifacts.download_artifacts(uri))
    conf = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    assert conf.get("model_code_path") and "python_model" not in conf, conf
    assert not list(local.rglob("*.pkl")) and (local / "code/crystalvision/serve/predict.py").is_file()
    reqs = {line.split("==")[0] for line in (local / "requirements.txt").read_text().split()}
    assert {"vtk", "pyvista", "scipy", "pymatgen", "torch", "timm"} <= reqs and "crystalvision" not in reqs


def test_a_model_logged_before_the_sub_packages_still_loads(cv_home, tmp_path) -> None:
    """A model registered before the move loads with ``from crystalvision.predict import ...`` (its logged code):
    in a process that has imported the package already (``crystalvision predict``), that old name still resolves,
    with a FutureWarning; and ``crystalvision.predict(...)``, the Python face, still works after that import."""
    code = tmp_path / "pyfunc_code.py"
    code.write_text(
        "import mlflow\n\nfrom crystalvision.predict import CrystalVisionPyfunc\n\n"
        "mlflow.models.set_model(CrystalVisionPyfunc())\n"
    )
    use_test_tracking()
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name=mlflow_model.MODEL_ARTIFACT,
            python_model=str(code),
            artifacts={predict.MODEL_DIR_ARTIFACT: str(tiny_model_dir(tmp_path / "model"))},
            pip_requirements=mlflow_model.pip_requirements(),  # not inferred: MLflow would load it in a subprocess
        )
    with pytest.warns(FutureWarning, match=r"^crystalvision\.predict\.CrystalVisionPyfunc is crystalvision\.serve\."):
        model = mlflow.pyfunc.load_model(info.model_uri)
    out = model.predict(pd.DataFrame({"image": [_b64(_png(SIZE))]}))
    assert pd.isna(out.loc[0, "error"]) and np.isfinite(out.loc[0, "band_gap"])
    import crystalvision

    assert crystalvision.predict is sys.modules["crystalvision.predict"]  # the old module name is imported now
    with pytest.warns(FutureWarning, match=r"^crystalvision\.predict\.log_model is crystalvision\.serve\.mlflow_"):
        assert crystalvision.predict.log_model is mlflow_model.log_model  # the old module's names, where they live
    face = crystalvision.predict({"grey": _png(SIZE)}, model)
    assert face.loc[0, "file"] == "grey" and face.loc[0, "band_gap"] == out.loc[0, "band_gap"]


def test_cli_predict_defaults_to_the_model_the_quickstart_registers(cv_home, tmp_path, monkeypatch) -> None:
    """No pipeline file needed: outside the checkout the default is the quickstart's champion by name."""
    from crystalvision.core.settings import get_settings

    name = yaml.safe_load(QUICKSTART.read_text())["registry"]["model_name"]
    assert face.default_model_uri(QUICKSTART) == f"models:/{name}@champion"
    monkeypatch.chdir(tmp_path)  # no pipelines/ here
    assert face.default_model_uri() == f"models:/{name}@champion"
    monkeypatch.setenv("CRYSTALVISION_MODEL", "models:/lmno-space-efficientnet-b0@champion")
    get_settings.cache_clear()
    assert face.default_model_uri() == "models:/lmno-space-efficientnet-b0@champion"


def test_joint_symmetry_is_consistent_and_flags_heads_that_disagree() -> None:
    systems, groups = ["triclinic", "trigonal", "cubic"], ["P-1", "R-3m", "Fm-3m"]
    # crystal-system head: triclinic; space-group head: R-3m (trigonal) -> disagreement
    sym = joint_symmetry(systems, groups, {}, np.array([0.5, 0.4, 0.1]), np.array([0.2, 0.7, 0.1]))
    assert system_of(sym.spacegroup, {}) == sym.crystal_system == "trigonal"
    assert sym.crystal_system_probability == pytest.approx(0.28 / (0.1 + 0.28 + 0.01))
    assert [s for s, _ in sym.top3] == ["R-3m", "P-1", "Fm-3m"]
    assert "triclinic" in sym.disagreement and "R-3m" in sym.disagreement
    agree = joint_symmetry(systems, groups, {}, np.array([0.1, 0.8, 0.1]), np.array([0.2, 0.7, 0.1]))
    assert agree.disagreement is None and agree.spacegroup == "R-3m"


def test_out_of_domain_inputs_are_warned_about(tmp_path) -> None:
    model = load_model(tiny_model_dir(tmp_path / "m"))
    model.spec = model.spec.model_copy(update={"training_elements": ["Li", "O"], "max_training_sites": 5})

    def renderer(structure, render_config, views):
        return np.full((views, SIZE, SIZE, 3), 90, dtype=np.uint8)

    frame = pd.DataFrame({"cif": [GOOD_CIF], "views": [1.0], "name": ["mp-25284.cif"]})
    warnings = json.loads(predict.predict_frame(model, frame, renderer=renderer).loc[0, "warnings"])
    assert any("element(s) Mn, Ni never seen in training" in w for w in warnings), warnings
    assert any("20 sites, far more than the largest training structure (5 sites)" in w for w in warnings), warnings


def test_model_metadata_carries_the_training_domain(bundled_snapshot) -> None:
    spec = spec_for(PipelineConfig(name="domain"), bundled_snapshot)
    assert spec.training_elements == ["Li", "Mn", "Ni", "O"]
    assert spec.max_training_sites == max(r.nsites for r in bundled_snapshot.records)
    assert spec.spacegroup_crystal_system["R-3m"] == "trigonal"


def _image_bytes(fmt: str, mode: str = "RGB", size: int = SIZE) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(np.full((size, size, 3), 120, dtype=np.uint8))
    (img.convert(mode) if mode != "RGB" else img).save(buf, format=fmt)
    return buf.getvalue()


def decompression_bomb_png(side: int = 40_000) -> bytes:
    """A valid PNG header announcing side x side pixels (over Pillow's limit) with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def huge_cif(n_atoms: int) -> str:
    """A P1 CIF with ``n_atoms`` Li atoms (issue 14: a CIF of 20,000 atoms)."""
    head = "data_huge\n_symmetry_space_group_name_H-M 'P 1'\n"
    head += "".join(f"_cell_length_{a} 100.0\n" for a in "abc") + "".join(
        f"_cell_angle_{a} 90\n" for a in ("alpha", "beta", "gamma")
    )
    head += (
        "loop_\n_atom_site_type_symbol\n_atom_site_label\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n"
    )
    rng = np.random.default_rng(0)
    return head + "".join(f"Li Li{i} {x:.5f} {y:.5f} {z:.5f}\n" for i, (x, y, z) in enumerate(rng.random((n_atoms, 3))))


def test_prediction_input_is_bounded_and_each_bad_row_gets_its_own_error(tmp_path) -> None:
    model = load_model(tiny_model_dir(tmp_path / "m"))
    model.spec = model.spec.model_copy(update={"render_config": {**model.spec.render_config, "max_atoms": 10}})

    def renderer(structure, render_config, views):
        if len(structure) == 6:
            raise RuntimeError("GL context lost")  # any exception, not only CrystalVisionError
        return np.full((views, SIZE, SIZE, 3), 90, dtype=np.uint8)

    small = huge_cif(6)
    p_png = _image_bytes("PNG", "P")
    cases = {
        "good": ({"image": _b64(_png(SIZE))}, None),
        "views0": ({"cif": small, "views": 0.0}, "views must be a whole number from 1 to 64"),
        "views65": ({"cif": small, "views": 65.0}, "views must be a whole number from 1 to 64"),
        "views2.5": ({"cif": small, "views": 2.5}, "views must be a whole number from 1 to 64"),
        "big-text": ({"cif": "#" * 20_000_001}, "more than the 20000000 byte limit"),
        "20k-atoms": ({"cif": huge_cif(20_000)}, "more than a structure of at most 10 atoms needs"),
        "over-limit": ({"cif": GOOD_CIF}, "20 atoms, more than the limit of 10"),
        "crash": ({"cif": small, "views": 1.0}, "RuntimeError: GL context lost"),
        "big-b64": ({"image": "A" * (predict_input.MAX_IMAGE_B64_CHARS + 4)}, "more than the limit"),
        "tiff": ({"image": _b64(_image_bytes("TIFF"))}, "the image is TIFF, not PNG or JPEG"),
        "bomb": ({"image": _b64(decompression_bomb_png())}, "decompression bomb"),
        "palette": ({"image": _b64(p_png)}, None),
        "jpeg": ({"image": _b64(_image_bytes("JPEG"))}, None),
    }
    frame = pd.DataFrame(
        [{"image": None, "cif": None, "views": None, **row, "name": n} for n, (row, _) in cases.items()]
    )
    out = predict.predict_frame(model, frame, renderer=renderer)
    for (name, (_, message)), error in zip(cases.items(), out["error"], strict=True):
        if message is None:
            assert pd.isna(error), (name, error)
        else:
            assert isinstance(error, str) and error.startswith(name) and message in error, (name, error)
    # a palette PNG is read through its palette: the same prediction as the RGB image it shows
    rgb = np.asarray(Image.open(io.BytesIO(p_png)).convert("RGB"))
    expected = predict_arrays(model, rgb[None])["band_gap"][0]
    assert out.loc[list(cases).index("palette"), "band_gap"] == pytest.approx(float(expected), rel=1e-5)


def test_predict_files_refuses_oversized_and_mislabelled_files(logged, tmp_path) -> None:
    uri, *_ = logged
    tiff = tmp_path / "photo.png"
    tiff.write_bytes(_image_bytes("TIFF"))
    big = tmp_path / "big.cif"
    with big.open("wb") as f:
        f.truncate(20_000_001)  # sparse: never read into memory
    out = face.predict_files([tiff, big], model_uri=uri, views=1)
    assert "the image is TIFF, not PNG or JPEG" in out.loc[0, "error"]
    assert "20000001 bytes, more than the 20000000 byte limit" in out.loc[1, "error"]
    with pytest.raises(CrystalVisionError, match="views must be a whole number from 1 to 64"):
        face.predict_files([tiff], model_uri=uri, views=65)


def test_a_row_that_breaks_the_model_fails_alone(tmp_path, monkeypatch) -> None:
    model = load_model(tiny_model_dir(tmp_path / "m"))
    real = predict.predict_arrays

    def poisoned(m, images, **kw):
        if (images == 7).all(axis=(1, 2, 3)).any():
            raise RuntimeError("CUDA error: an illegal memory access")
        return real(m, images, **kw)

    monkeypatch.setattr(predict, "predict_arrays", poisoned)
    frame = pd.DataFrame({"image": [_b64(_png(SIZE)), _b64(_png(SIZE, colour=7)), _b64(_png(SIZE, colour=200))]})
    out = predict.predict_frame(model, frame)
    assert out.loc[1, "error"] == "row 1: RuntimeError: CUDA error: an illegal memory access"
    assert out["error"][[0, 2]].isna().all() and np.isfinite(out.loc[[0, 2], "band_gap"].astype(float)).all()


SYMMETRY_BOMB = Path(__file__).parents[1] / "data/bad/symmetry_ops_7000.cif"  # 100 Ni rows, 7,000 operations, 162 KB


def test_a_symmetry_bomb_cif_is_refused_quickly_with_one_clear_error(tmp_path) -> None:
    """pymatgen would expand it to 700,000 sites (minutes) before any atom limit applies."""
    model = load_model(tiny_model_dir(tmp_path / "m"))
    frame = pd.DataFrame({"cif": [SYMMETRY_BOMB.read_text()], "name": ["bomb.cif"]})
    start = time.monotonic()
    out = predict.predict_frame(model, frame)  # the real path: no renderer injected
    assert time.monotonic() - start < 10
    error = out.loc[0, "error"]
    assert error.startswith("bomb.cif: 7000 symmetry operations on 100 atom rows") and "in P1" in error, error
    assert "\n" not in error


def test_a_request_is_bounded_in_rows_and_in_views_in_total(tmp_path) -> None:
    model = load_model(tiny_model_dir(tmp_path / "m"))
    rendered = []

    def renderer(structure, render_config, views):
        rendered.append(views)
        return np.full((views, SIZE, SIZE, 3), 90, dtype=np.uint8)

    image = _b64(_png(SIZE))
    too_many = pd.DataFrame({"image": [image] * 257})
    out = predict.predict_frame(model, too_many, renderer=renderer)
    assert all(isinstance(e, str) and "rows, more than the limit of 256" in e for e in out["error"]), out["error"][0]
    assert out.loc[0, "error"].startswith("row 0: the request has 257 rows")
    views = pd.DataFrame({"cif": [GOOD_CIF] * 5 + [None], "image": [None] * 5 + [image], "views": [64.0] * 6})
    out = predict.predict_frame(model, views, renderer=renderer)
    assert rendered == [], "nothing is rendered for a refused request"
    message = "asks for 320 rendered views in total, more than the limit of 256"
    assert all(isinstance(e, str) and message in e for e in out["error"][:5]), out["error"][0]
    assert pd.isna(out.loc[5, "error"]) and np.isfinite(float(out.loc[5, "band_gap"])), "image rows still answer"


class _SlowHelper:
    """A stand-in render helper that takes 1 s per job (no process), for both the old and the pooled interface."""

    def __init__(self) -> None:
        self.proc = type("P", (), {"is_alive": lambda self: True})()
        self.pending = False

    def call(self, job, timeout):
        time.sleep(1.0)
        return np.zeros((1, SIZE, SIZE, 3), np.uint8)

    def send(self, job) -> None:
        self.pending = True

    def answer(self, expected, timeout):
        self.pending = False
        return self.call(None, timeout)

    def close(self) -> None:
        pass


def test_concurrent_renders_run_in_a_bounded_pool_of_helpers(monkeypatch) -> None:
    from crystalvision.serve import renderproc

    renderproc.shutdown()
    monkeypatch.setattr(renderproc, "_Helper", _SlowHelper)
    monkeypatch.setattr(renderproc, "RENDER_HELPERS", 2, raising=False)
    try:
        with ThreadPoolExecutor(3) as pool:
            start = time.monotonic()
            list(pool.map(lambda _: renderproc.render_views(None, {}, 1, "k"), range(2)))
            two = time.monotonic() - start
            start = time.monotonic()
            list(pool.map(lambda _: renderproc.render_views(None, {}, 1, "k"), range(3)))
            three = time.monotonic() - start
    finally:
        renderproc.shutdown()
    assert two < 1.8, f"two renders took {two:.1f} s: they were serialised"
    assert three >= 1.9, f"three renders took {three:.1f} s with two helpers: the pool is not bounded"


def test_predict_prints_the_model_cards_measured_metrics_beside_each_answer(logged, tmp_path) -> None:
    """A model whose card holds out-of-fold metrics shows them beside every answer (table and JSON); one without
    (the module's logged tiny model) says it has none instead of printing nothing."""
    from crystalvision.track.card import generalisation_from_record

    record = Path(__file__).parents[2] / "docs/study/records/space-grouped.json"
    bare_uri, _, bare_dir, splits, store = logged
    assert not json.loads((bare_dir / "model.json").read_text()).get("generalisation"), "the bare model has a card"
    model_dir = tiny_model_dir(tmp_path / "carded")
    spec = json.loads((model_dir / "model.json").read_text())
    spec["generalisation"] = generalisation_from_record(record, None)
    (model_dir / "model.json").write_text(json.dumps(spec))
    with mlflow.start_run():
        uris = {"bare": bare_uri, "carded": mlflow_model.log_model(model_dir, splits, store)}
    good = tmp_path / "good.png"
    good.write_bytes(_png(SIZE))

    carded = CliRunner().invoke(app, ["predict", str(good), "--model", uris["carded"]])
    assert carded.exit_code == 0, carded.output
    cs = generalisation_from_record(record, None)["heads"]["crystal_system"]
    line = next(x for x in carded.stdout.splitlines() if x.startswith(f"{good}: crystal system "))
    assert f"; this model: {cs['value']:.2f} [{cs['lo']:.2f}, {cs['hi']:.2f}] accuracy on unseen structures" in line
    assert "(p 0." in line or "(p 1.00" in line
    assert sum(x.startswith(f"{good}: ") for x in carded.stdout.splitlines()) == 4  # every head's answer
    as_json = json.loads(
        CliRunner().invoke(app, ["predict", str(good), "--model", uris["carded"], "--output", "json"]).stdout
    )
    assert as_json[0]["model_generalisation"]["heads"]["crystal_system"]["value"] == cs["value"]

    bare = CliRunner().invoke(app, ["predict", str(good), "--model", uris["bare"]])
    assert bare.exit_code == 0, bare.output
    assert "this model has no measured out-of-fold metrics on unseen structures" in bare.stdout
    assert "this model: 0." not in bare.stdout


def test_each_bad_input_is_reported_once_on_the_command_line(logged, tmp_path) -> None:
    """A bad file's message appears once in what the user sees (not as a WARNING log line and again as error:)."""
    uri, *_ = logged
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG broken")
    result = CliRunner().invoke(app, ["predict", str(bad), "--model", uri])
    assert result.exit_code == 1
    assert result.output.count("not a readable image") == 1, result.output
    assert f"error: {bad}: not a readable image" in result.output


def test_a_cif_gets_its_exact_symmetry_beside_the_heads_answers(tmp_path, bundled_snapshot) -> None:
    """The structure's own symmetry (spglib at the labels' symprec) is reported for a CIF, none for an image; the
    printed line marks each head as agreeing or not."""
    from crystalvision.serve.present import symmetry_lines

    model = load_model(tiny_model_dir(tmp_path / "m"))
    views = lambda structure, render_config, n: np.zeros((n, SIZE, SIZE, 3), dtype=np.uint8)  # noqa: E731
    frame = pd.DataFrame({"cif": [GOOD_CIF, None], "image": [None, _b64(_png(SIZE))], "name": ["a.cif", "b.png"]})
    out = predict.predict_frame(model, frame, renderer=views)
    label = next(r for r in bundled_snapshot.records if r.material_id == "mp-25284")
    assert (out.loc[0, "structure_crystal_system"], out.loc[0, "structure_spacegroup"]) == (
        label.crystal_system,
        label.spacegroup_symbol,
    )
    assert out.loc[1, "structure_crystal_system"] is None and out.loc[1, "structure_spacegroup"] is None
    out.loc[0, ["crystal_system", "spacegroup"]] = [label.crystal_system, "P1"]
    out.insert(0, "file", ["a.cif", "b.png"])  # as predict_files names its rows
    (line,) = symmetry_lines(out)
    assert line.startswith(f"a.cif: exact symmetry from the structure (spglib, symprec 0.1): {label.crystal_system} ")
    assert f"crystal system head {label.crystal_system} agrees" in line and "space group head P1 DISAGREES" in line
