"""Prediction: an MLflow pyfunc over a saved model folder, for images (base64 PNG/JPEG) or CIF text.

Input: a DataFrame with, per row, either ``image`` (base64 PNG/JPEG) or ``cif`` (CIF text; rendered into ``views``
views with the model's render config, predictions averaged), an optional ``views`` (1 to 64) and an optional
``name`` used in messages. Every row and the request as a whole are bounded (:mod:`crystalvision.serve.predict_input`:
rows, views and bytes in total, a wall-clock budget, CIF size and symmetry operations), and CIFs are parsed and
rendered in bounded helper processes with deadlines (:mod:`crystalvision.serve.renderproc`). Output: one row per
input row with ``band_gap`` (eV), ``energy_above_hull`` (eV/atom), the joint symmetry answer of both classification
heads (:mod:`crystalvision.serve.hierarchy`: ``crystal_system`` and ``spacegroup`` with their probabilities,
``spacegroup_top3`` as a JSON list of [symbol, probability]), each head's full distribution (``crystal_system_proba``,
``spacegroup_proba``: JSON objects class -> probability), for a CIF its exact symmetry (``structure_crystal_system``,
``structure_spacegroup``: spglib at the labels' tolerance, no model; None for an image), ``warnings`` (JSON list:
out-of-domain input, heads that disagree) and ``error`` (None, or one clear message for a bad row; the other rows
are still predicted). Columns have object dtype so a bad row's values are None (JSON null). A render helper that
fails (dies, hangs, or rendering raises) is that row's error over REST; from Python (``model.predict``, the CLI) it
raises one error naming the row.

This module is the served model (:class:`CrystalVisionPyfunc`, the class ``pyfunc_code.py`` builds, so logged models
import it from here); :mod:`crystalvision.serve.mlflow_model` logs it into a run, and
:mod:`crystalvision.serve.face` predicts files and objects with a logged model for people.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from crystalvision.core import ImageError, ModelError
from crystalvision.learn import CrystalNet, ModelSpec, load_model, predict_arrays
from crystalvision.serve import predict_input
from crystalvision.serve.hierarchy import joint_symmetry, structure_symmetry
from crystalvision.serve.renderproc import Deadline, DeadlineError, HelperError

log = logging.getLogger(__name__)

MODEL_DIR_ARTIFACT = "model_dir"  # the model folder (weights.pt + model.json): the pyfunc's artifact, also in the run
DEFAULT_VIEWS = 8
PREDICT_VIEW_KEY = "predict"
FLOAT_COLUMNS = ("band_gap", "energy_above_hull", "crystal_system_probability", "spacegroup_probability")
OUTPUT_COLUMNS = (
    "band_gap",
    "energy_above_hull",
    "crystal_system",
    "crystal_system_probability",
    "spacegroup",
    "spacegroup_probability",
    "spacegroup_top3",
    "crystal_system_proba",
    "spacegroup_proba",
    "structure_crystal_system",
    "structure_spacegroup",
    "warnings",
    "error",
)
# (structure, render_config dict, number of views) -> uint8 (views, H, W, 3)
ViewRenderer = Callable[[Any, dict, int], np.ndarray]
# (CIF text, row name, atom limit, render_config dict, number of views, request deadline) -> (structure, uint8
# (views, H, W, 3))
CifRenderer = Callable[[str, str, int, dict, int, Deadline | None], tuple[Any, np.ndarray]]
SERVING_ENV = "_MLFLOW_IS_IN_SERVING_ENVIRONMENT"  # "true" inside `mlflow models serve` (its scoring server sets it)


def render_views(structure: Any, render_config: dict, views: int) -> np.ndarray:
    """Render ``views`` seeded views of a structure with the render stage's renderer, in a helper process
    (:mod:`crystalvision.serve.renderproc`: VTK/OpenGL never load beside torch).

    The views are the same for every structure (material key ``PREDICT_VIEW_KEY``), so predictions are repeatable.
    """
    from crystalvision.serve import renderproc

    return renderproc.render_views(structure, render_config, views, PREDICT_VIEW_KEY)


def render_cif(
    text: str, name: str, limit: int, render_config: dict, views: int, deadline: Deadline | None = None
) -> tuple[Any, np.ndarray]:
    """Parse a CIF (at most ``limit`` atoms) and render its views, both in a helper process with deadlines."""
    from crystalvision.serve import renderproc

    return renderproc.render_cif(text, name, limit, render_config, views, PREDICT_VIEW_KEY, deadline)


def in_process(renderer: ViewRenderer) -> CifRenderer:
    """A CifRenderer that parses here and renders with ``renderer`` (tests, or a caller's own renderer)."""

    def render(
        text: str, name: str, limit: int, render_config: dict, views: int, deadline: Deadline | None = None
    ) -> tuple[Any, np.ndarray]:
        structure = predict_input.read_cif(text, name, limit)
        return structure, renderer(structure, render_config, views)

    return render


@dataclass
class _Item:
    """Images prepared for one input row (with its warnings), or the error that row raised."""

    images: np.ndarray | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    symmetry: tuple[str, str] | None = None  # a CIF's own crystal system and space group (spglib)


def _cell(row: pd.Series, column: str) -> Any:
    value = row.get(column)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value


def _prepare_row(
    row: pd.Series,
    name: str,
    spec: ModelSpec,
    renderer: CifRenderer,
    default_views: int,
    deadline: Deadline | None = None,
    raise_failed: bool = False,
) -> _Item:
    """Decode or render one row within the input bounds; any exception becomes the row's error, except a failed
    render helper when ``raise_failed`` (it raises, naming the row)."""
    image, cif = _cell(row, "image"), _cell(row, "cif")
    try:
        if deadline is not None and deadline.left() <= 0:
            return _Item(error=f"{name}: not started: the request's {deadline.budget_s:.0f} s budget ran out; send "
                         "fewer rows per request")  # fmt: skip
        if image is not None and cif is not None:
            raise ImageError(f"{name}: give either an image or a CIF, not both")
        if image is not None:
            decoded = predict_input.decode_image(str(image), name)
            fitted, warnings = predict_input.fit_image(decoded, name, spec.image_size)
            return _Item(images=fitted[None], warnings=warnings)
        if cif is not None:
            views = predict_input.check_views(_cell(row, "views"), default_views, name)
            limit = predict_input.max_atoms(spec)
            predict_input.check_cif(str(cif), name, limit)  # cheap bounds here, before a helper is busy
            structure, images = renderer(str(cif), name, limit, spec.render_config, views, deadline)
            images = _check_rendered(images, name, spec)
            warnings = predict_input.structure_warnings(structure, spec, name)
            return _Item(images=images, warnings=warnings, symmetry=structure_symmetry(structure))
        raise ImageError(f"{name}: the row has neither an 'image' (base64 PNG) nor a 'cif' (CIF text)")
    except HelperError as exc:
        if raise_failed:
            raise HelperError(f"{name}: {exc}") from exc
        return _Item(error=f"{name}: {exc}".splitlines()[0])
    except DeadlineError as exc:
        return _Item(error=f"{name}: {exc}")
    except Exception as exc:  # one bad row never fails the request: its error is its answer
        detail = str(exc) or "no message"
        message = detail if detail.startswith(name) else f"{name}: {type(exc).__name__}: {detail}"
        return _Item(error=message.splitlines()[0])


def _check_rendered(images: np.ndarray, name: str, spec: ModelSpec) -> np.ndarray:
    if images.ndim != 4 or images.shape[1:] != (spec.image_size, spec.image_size, 3):
        raise ModelError(f"{name}: renderer returned {images.shape}, the model expects {spec.image_size}² RGB views")
    return images.astype(np.uint8, copy=False)


def _proba_json(classes: Sequence[str], proba: np.ndarray) -> str:
    return json.dumps({c: round(float(p), 6) for c, p in zip(classes, proba, strict=True)})


def predict_frame(
    model: CrystalNet,
    frame: pd.DataFrame,
    renderer: ViewRenderer | None = None,
    default_views: int = DEFAULT_VIEWS,
    raise_failed: bool = False,
) -> pd.DataFrame:
    """Predict every row of ``frame``; a bad row gets an ``error`` message, the others are still predicted.

    ``renderer`` renders parsed structures in this process (tests); by default CIFs go to the render helpers, and a
    helper that fails is that row's error, or raises when ``raise_failed``. The request's budget
    (:func:`~crystalvision.serve.predict_input.request_budget_s`) is checked before every row.
    """
    spec = model.spec
    deadline = predict_input.request_deadline()
    cif_renderer = in_process(renderer) if renderer else render_cif
    rows = [row for _, row in frame.iterrows()]
    names = [str(_cell(row, "name") or f"row {i}") for i, row in enumerate(rows)]
    rows_error, views_error = predict_input.request_refusal(
        len(rows), _cif_views(rows, default_views), sum(predict_input.text_bytes(row) for row in rows)
    )
    items = []
    for row, name in zip(rows, names, strict=True):
        refusal = rows_error or (views_error if _cell(row, "cif") is not None else None)
        items.append(
            _Item(error=f"{name}: {refusal}")
            if refusal
            else _prepare_row(row, name, spec, cif_renderer, default_views, deadline, raise_failed)
        )
        # the row's error is its answer (the CLI prints it, REST returns it): a log line would say it twice
        if items[-1].error and not rows_error:
            log.debug("prediction input rejected: %s", items[-1].error)
    if rows_error:
        log.debug("prediction request refused: %s", rows_error)
    means = _predict_items(model, [it for it in items if it.images is not None])
    rows = []
    for name, it in zip(names, items, strict=True):
        try:
            if it.images is None:
                raise ModelError(it.error or f"{name}: no images")
            mean = means[id(it)]
            if isinstance(mean, Exception):
                raise mean
            rows.append(_output_row(spec, mean, it.warnings, name) | _symmetry_columns(it.symmetry))
        except Exception as exc:  # a row's failure is that row's error
            rows.append(dict.fromkeys(OUTPUT_COLUMNS) | {"error": it.error or f"{name}: {type(exc).__name__}: {exc}"})
    # object dtype keeps None (not NaN) for missing values, so the REST answer is valid JSON with nulls
    return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS), dtype=object)


def _cif_views(rows: list[pd.Series], default_views: int) -> list[int]:
    """The views each CIF row asks for (a row with invalid views counts none: it fails on its own)."""
    counts = []
    for row in rows:
        if _cell(row, "cif") is not None:
            try:
                counts.append(predict_input.check_views(_cell(row, "views"), default_views, ""))
            except Exception:
                counts.append(0)
    return counts


def _predict_items(model: CrystalNet, items: list[_Item]) -> dict[int, dict[str, np.ndarray] | Exception]:
    """Mean per-head outputs per item: one batch for all rows; when it fails, row by row (errors kept per row)."""
    try:
        preds = predict_arrays(model, np.concatenate([it.images for it in items])) if items else {}
    except Exception:
        log.exception("batched prediction failed; predicting row by row")
        return {id(it): _predict_one(model, it) for it in items}
    means, start = {}, 0
    for it in items:
        stop = start + len(it.images)
        means[id(it)] = {k: v[start:stop].mean(axis=0) for k, v in preds.items()}
        start = stop
    return means


def _predict_one(model: CrystalNet, item: _Item) -> dict[str, np.ndarray] | Exception:
    try:
        return {k: v.mean(axis=0) for k, v in predict_arrays(model, item.images).items()}
    except Exception as exc:
        return exc


def _output_row(spec: ModelSpec, mean: dict[str, np.ndarray], warnings: list[str], name: str) -> dict[str, Any]:
    cs, sg = mean["crystal_system_proba"], mean["spacegroup_proba"]
    systems, groups = spec.classes("crystal_system"), spec.classes("spacegroup")
    sym = joint_symmetry(systems, groups, spec.spacegroup_crystal_system, cs, sg)
    if sym.disagreement:
        warnings = [*warnings, f"{name}: {sym.disagreement}"]
    return {
        "band_gap": float(mean["band_gap"]),
        "energy_above_hull": float(mean["energy_above_hull"]),
        "crystal_system": sym.crystal_system,
        "crystal_system_probability": round(sym.crystal_system_probability, 6),
        "spacegroup": sym.spacegroup,
        "spacegroup_probability": round(sym.spacegroup_probability, 6),
        "spacegroup_top3": json.dumps([[s, round(p, 6)] for s, p in sym.top3]),
        "crystal_system_proba": _proba_json(systems, cs),
        "spacegroup_proba": _proba_json(groups, sg),
        "warnings": json.dumps(warnings),
        "error": None,
    }


def _symmetry_columns(symmetry: tuple[str, str] | None) -> dict[str, Any]:
    return dict(zip(("structure_crystal_system", "structure_spacegroup"), symmetry or (None, None), strict=True))


class CrystalVisionPyfunc(mlflow.pyfunc.PythonModel):
    """The pyfunc wrapper: loads the model folder artifact once, predicts DataFrames with :func:`predict_frame`."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.model = load_model(context.artifacts[MODEL_DIR_ARTIFACT])

    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        serving = os.environ.get(SERVING_ENV, "").lower() == "true"
        return predict_frame(self.model, model_input, raise_failed=not serving)
