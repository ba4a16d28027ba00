"""Prediction: an MLflow pyfunc over a saved model folder, for images (base64 PNG) or CIF text.

Input: a DataFrame with, per row, either ``image`` (base64 PNG/JPEG of ``image_size``² px) or ``cif`` (CIF text;
rendered into ``views`` views with the model's render config, predictions averaged), an optional ``views`` and an
optional ``name`` used in error messages. Output: one row per input row with ``band_gap`` (eV),
``energy_above_hull`` (eV/atom), ``crystal_system``, ``spacegroup``, ``crystal_system_proba`` and
``spacegroup_proba`` (JSON objects class -> probability) and ``error`` (None, or one clear message for a bad item;
the other rows are still predicted). Columns have object dtype so a bad row's values are None (JSON null).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from crystalvision.dataset import Splits, decode_png, image_png
from crystalvision.errors import CrystalVisionError, ImageError, ModelError
from crystalvision.model import SPEC_FILE, CrystalNet, ModelSpec, load_model, predict_arrays
from crystalvision.targets import PREDICTION_COLUMNS, TARGETS_CLASSIFICATION, TARGETS_REGRESSION

if TYPE_CHECKING:
    from crystalvision.storage import ObjectStore

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"  # pyfunc name/artifact path in a run (registry registers runs:/<id>/model)
MODEL_DIR_ARTIFACT = "model_dir"  # the raw model folder (weights.pt + model.json) in a run
DEFAULT_VIEWS = 8
PREDICT_VIEW_KEY = "predict"
OUTPUT_COLUMNS = (*PREDICTION_COLUMNS, "error")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
CIF_SUFFIXES = {".cif"}

INPUT_SCHEMA = Schema(
    [
        ColSpec("string", "image", required=False),
        ColSpec("string", "cif", required=False),
        ColSpec("double", "views", required=False),  # double: integers with missing values arrive as floats
        ColSpec("string", "name", required=False),
    ]
)
OUTPUT_SCHEMA = Schema(
    [
        ColSpec("double", "band_gap"),
        ColSpec("double", "energy_above_hull"),
        ColSpec("string", "crystal_system"),
        ColSpec("string", "spacegroup"),
        ColSpec("string", "crystal_system_proba"),
        ColSpec("string", "spacegroup_proba"),
        ColSpec("string", "error"),
    ]
)
SIGNATURE = ModelSignature(inputs=INPUT_SCHEMA, outputs=OUTPUT_SCHEMA)

# (structure, render_config dict, number of views) -> uint8 (views, H, W, 3)
ViewRenderer = Callable[[Any, dict, int], np.ndarray]


def render_views(structure: Any, render_config: dict, views: int) -> np.ndarray:
    """Render ``views`` seeded views of a structure with the render stage's renderer (imported lazily).

    The views are the same for every structure (material key ``PREDICT_VIEW_KEY``), so predictions are repeatable.
    """
    from crystalvision.config import RenderConfig
    from crystalvision.render.rotations import view_rotation
    from crystalvision.render.scene import Renderer

    cfg = RenderConfig.model_validate(render_config)
    with Renderer(cfg) as renderer:
        scene = renderer.scene(structure)
        return np.stack(
            [renderer.render_scene(scene, view_rotation(cfg.seed, PREDICT_VIEW_KEY, v)) for v in range(views)]
        )


@dataclass
class _Item:
    """Images prepared for one input row, or the error that row raised."""

    images: np.ndarray | None = None
    error: str | None = None


def _cell(row: pd.Series, column: str) -> Any:
    value = row.get(column)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value


def _decode_b64_image(text: str, name: str, size: int) -> np.ndarray:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(f"{name}: the image is not valid base64 ({exc}); send base64-encoded PNG bytes") from exc
    return decode_png(data, name, size)[None]


def _prepare_row(row: pd.Series, name: str, spec: ModelSpec, renderer: ViewRenderer, default_views: int) -> _Item:
    from crystalvision.structures import parse_cif

    image, cif = _cell(row, "image"), _cell(row, "cif")
    try:
        if image is not None and cif is not None:
            raise ImageError(f"{name}: give either an image or a CIF, not both")
        if image is not None:
            return _Item(images=_decode_b64_image(str(image), name, spec.image_size))
        if cif is not None:
            views = int(_cell(row, "views") or default_views)
            if views < 1:
                raise ImageError(f"{name}: views must be at least 1, got {views}")
            structure = parse_cif(str(cif), name)
            return _Item(images=_check_rendered(renderer(structure, spec.render_config, views), name, spec))
        raise ImageError(f"{name}: the row has neither an 'image' (base64 PNG) nor a 'cif' (CIF text)")
    except CrystalVisionError as exc:
        return _Item(error=str(exc))


def _check_rendered(images: np.ndarray, name: str, spec: ModelSpec) -> np.ndarray:
    if images.ndim != 4 or images.shape[1:] != (spec.image_size, spec.image_size, 3):
        raise ModelError(f"{name}: renderer returned {images.shape}, the model expects {spec.image_size}² RGB views")
    return images.astype(np.uint8, copy=False)


def _proba_json(classes: Sequence[str], proba: np.ndarray) -> str:
    return json.dumps({c: round(float(p), 6) for c, p in zip(classes, proba, strict=True)})


def predict_frame(
    model: CrystalNet, frame: pd.DataFrame, renderer: ViewRenderer | None = None, default_views: int = DEFAULT_VIEWS
) -> pd.DataFrame:
    """Predict every row of ``frame``; a bad row gets an ``error`` message, the others are still predicted."""
    spec = model.spec
    renderer = renderer or render_views
    items = []
    for i, (_, row) in enumerate(frame.iterrows()):
        name = str(_cell(row, "name") or f"row {i}")
        items.append(_prepare_row(row, name, spec, renderer, default_views))
        if items[-1].error:
            log.warning("prediction input rejected: %s", items[-1].error)
    good = [it.images for it in items if it.images is not None]
    preds = predict_arrays(model, np.concatenate(good)) if good else {}
    rows, start = [], 0
    for it in items:
        if it.images is None:
            rows.append(dict.fromkeys(OUTPUT_COLUMNS) | {"error": it.error})
            continue
        stop = start + len(it.images)
        mean = {k: v[start:stop].mean(axis=0) for k, v in preds.items()}
        start = stop
        rows.append(_output_row(spec, mean))
    # object dtype keeps None (not NaN) for missing values, so the REST answer is valid JSON with nulls
    return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS), dtype=object)


def _output_row(spec: ModelSpec, mean: dict[str, np.ndarray]) -> dict[str, Any]:
    row: dict[str, Any] = {t: float(mean[t]) for t in TARGETS_REGRESSION}
    for t in TARGETS_CLASSIFICATION:
        row[t] = spec.classes(t)[int(mean[f"{t}_proba"].argmax())]
    for t in TARGETS_CLASSIFICATION:
        row[f"{t}_proba"] = _proba_json(spec.classes(t), mean[f"{t}_proba"])
    return row | {"error": None}


class CrystalVisionPyfunc(mlflow.pyfunc.PythonModel):
    """The pyfunc wrapper: loads the model folder artifact once, predicts DataFrames with :func:`predict_frame`."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.model = load_model(context.artifacts[MODEL_DIR_ARTIFACT])

    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        return predict_frame(self.model, model_input)


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in ("crystalvision", "torch", "timm", "mlflow", "pandas", "numpy", "pillow", "pymatgen"):
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            reqs.append(pkg)
    return reqs


def _input_example(splits: Splits, store: ObjectStore) -> pd.DataFrame | None:
    """One test image as a base64 PNG request row (None when the test split is empty)."""
    source = splits.test if len(splits.test) else splits.val
    if not len(source):
        return None
    key = str(source["image_key"].iloc[0])
    return pd.DataFrame({"image": [base64.b64encode(image_png(store, key)).decode()]})


def log_model(model_dir: str | Path, splits: Splits, store: ObjectStore) -> str:
    """Log the pyfunc (artifact path ``model``) and the raw folder (``model_dir/``) into the active run."""
    model_dir = Path(model_dir)
    if not (model_dir / SPEC_FILE).is_file():
        raise ModelError(f"{model_dir} is not a crystalvision model folder ({SPEC_FILE} missing)")
    info = mlflow.pyfunc.log_model(
        name=MODEL_ARTIFACT,
        python_model=CrystalVisionPyfunc(),
        artifacts={MODEL_DIR_ARTIFACT: str(model_dir)},
        signature=SIGNATURE,
        input_example=_input_example(splits, store),
        pip_requirements=_pip_requirements(),
    )
    mlflow.log_artifacts(str(model_dir), artifact_path=MODEL_DIR_ARTIFACT)
    log.info("logged pyfunc model %s", info.model_uri)
    return info.model_uri


def _file_row(path: Path) -> dict[str, Any]:
    """A request row for one file, or {'error': ...} when it cannot be read or has an unknown type."""
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES | CIF_SUFFIXES:
        return {"error": f"{path}: unknown file type '{suffix}'; pass .cif, .png or .jpg files"}
    try:
        data = path.read_bytes()
    except OSError as exc:
        return {"error": f"{path}: cannot read the file ({exc.strerror or exc})"}
    if suffix in CIF_SUFFIXES:
        return {"cif": data.decode("utf-8", errors="replace")}
    return {"image": base64.b64encode(data).decode()}


def predict_files(paths: Sequence[str | Path], model_uri: str, views: int = DEFAULT_VIEWS) -> pd.DataFrame:
    """Predict CIF and image files with a logged/registered pyfunc; one row per file, bad files get ``error``."""
    paths = [Path(p) for p in paths]
    requests = [_file_row(p) for p in paths]
    readable = [(i, r) for i, r in enumerate(requests) if "error" not in r]
    out = pd.DataFrame([dict.fromkeys(OUTPUT_COLUMNS) for _ in paths], columns=list(OUTPUT_COLUMNS), dtype=object)
    out["error"] = [r.get("error") for r in requests]
    if readable:
        from crystalvision.tracking import configure_mlflow

        configure_mlflow()
        try:
            model = mlflow.pyfunc.load_model(model_uri)
        except Exception as exc:  # MLflow raises MlflowException, OSError... for unknown models
            raise ModelError(f"cannot load model {model_uri} ({exc}); train and register one first") from exc
        frame = pd.DataFrame(
            [{"image": None, "cif": None, **r, "views": float(views), "name": str(paths[i])} for i, r in readable]
        )
        pred = model.predict(frame)
        for (i, _), (_, row) in zip(readable, pred.iterrows(), strict=True):
            out.loc[i, list(OUTPUT_COLUMNS)] = [row[c] for c in OUTPUT_COLUMNS]
    out.insert(0, "file", [str(p) for p in paths])
    return out
