"""Predictions for people: the Python face (``crystalvision.load_model`` and ``crystalvision.predict``) and the command
line's ``crystalvision predict`` (:func:`predict_files`), one road for files and objects.

    import crystalvision

    model = crystalvision.load_model("lmno-efficientnet-b0-quickstart")  # a registered name: its champion
    frame = crystalvision.predict(["mp-25284.cif", structure, image], model)

:func:`predict` takes CIF or image paths, CIF text, pymatgen ``Structure``\\ s and images (an RGB array, a PIL image,
PNG or JPEG bytes): one, a list, or a dict name -> input. It returns the frame the command line prints: ``file`` (the
path, or a name for an object) and the model's output columns (``crystalvision.serve.predict.OUTPUT_COLUMNS``), with
``warnings`` (a JSON list per row: out-of-domain input, heads that disagree) and ``error`` (one message per bad input;
the others are still predicted); ``frame.attrs["generalisation"]`` holds the model card's measured out-of-fold
metrics ({} when it has none). ``crystalvision.serve.print_predictions(frame)`` prints it as the command line does.
:func:`predict_files` is the command line's side: the same frame for files, ``file`` being each path. Nothing heavy is
imported until a function runs.
"""

from __future__ import annotations

import base64
import io
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.pyfunc import PyFuncModel

DEFAULT_VIEWS = 8  # = crystalvision.serve.predict.DEFAULT_VIEWS (not imported here: it loads torch)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
CIF_SUFFIXES = {".cif"}
INPUTS = "a CIF or image path, CIF text, a pymatgen Structure or an image (RGB array, PIL image, PNG or JPEG bytes)"


def model_uri(uri_or_name: str | Path | None = None) -> str:
    """The MLflow URI of ``uri_or_name``: a registered model's name means its champion; a URI (``models:/...``,
    ``runs:/...``) or a model folder stays as it is; None is the command line's default (``CRYSTALVISION_MODEL``)."""
    from crystalvision.track import CHAMPION

    if uri_or_name is None:
        return default_model_uri()
    text = str(uri_or_name)
    return text if ":" in text or Path(text).exists() else f"models:/{text}@{CHAMPION}"


def load_model(uri_or_name: str | Path | None = None) -> PyFuncModel:
    """A registered or logged crystalvision model for :func:`predict`, from the configured MLflow tracking server
    (``CRYSTALVISION_HOME``'s ``mlflow.db`` by default): a registered name (its champion), a model URI or a model
    folder; None loads the model ``crystalvision predict`` uses without ``--model``."""
    import mlflow

    from crystalvision.core import ModelError
    from crystalvision.track import configure_mlflow

    uri = model_uri(uri_or_name)
    configure_mlflow()
    try:
        return mlflow.pyfunc.load_model(uri)
    except Exception as exc:  # MLflow raises MlflowException, OSError... for unknown models
        raise ModelError(f"cannot load model {uri} ({exc}); train and register one first") from exc


def predict(inputs: Any, model: PyFuncModel | str | Path | None = None, views: int = DEFAULT_VIEWS) -> pd.DataFrame:
    """Predict every input with ``model`` (a model from :func:`load_model`, or what :func:`load_model` takes); one
    row per input, in order, with ``views`` rendered views per CIF or structure (1 to 64, predictions averaged)."""
    from crystalvision.serve import predict_input

    views = predict_input.check_views(views, DEFAULT_VIEWS, "views")
    named = _named(inputs)
    requests = [_request(name, value) for name, value in named]
    return predict_requests(model, [name for name, _ in named], requests, views)


def predict_requests(
    model: PyFuncModel | str | Path | None, names: Sequence[str], requests: Sequence[dict[str, Any]], views: int
) -> pd.DataFrame:
    """Predict request rows (``{"cif": text}``, ``{"image": base64}`` or ``{"error": message}``) within the
    model's request bounds; the model is loaded only when some row can be predicted."""
    import pandas as pd

    from crystalvision.serve.predict import OUTPUT_COLUMNS
    from crystalvision.serve.predict_input import request_chunks

    out = pd.DataFrame([dict.fromkeys(OUTPUT_COLUMNS) for _ in names], columns=list(OUTPUT_COLUMNS), dtype=object)
    out["error"] = [r.get("error") for r in requests]
    readable = [(i, r) for i, r in enumerate(requests) if "error" not in r]
    if readable:
        model = model if hasattr(model, "predict") else load_model(model)
        out.attrs["generalisation"] = model_generalisation(model)
        for chunk in request_chunks(readable, views):
            rows = [{"image": None, "cif": None, **r, "views": float(views), "name": names[i]} for i, r in chunk]
            pred = model.predict(pd.DataFrame(rows))
            for (i, _), (_, row) in zip(chunk, pred.iterrows(), strict=True):
                out.loc[i, list(OUTPUT_COLUMNS)] = [row.get(c) for c in OUTPUT_COLUMNS]  # older models: fewer
    out.insert(0, "file", list(names))
    return out


def predict_files(paths: Sequence[str | Path], model_uri: str, views: int = DEFAULT_VIEWS) -> pd.DataFrame:
    """The command line's predictions: CIF and image files with a logged or registered model; one row per file,
    ``file`` its path, a bad file gets ``error``."""
    from crystalvision.serve import predict_input

    views = predict_input.check_views(views, DEFAULT_VIEWS, "--views")
    paths = [Path(p) for p in paths]
    return predict_requests(model_uri, [str(p) for p in paths], [file_request(p) for p in paths], views)


def file_request(path: Path) -> dict[str, Any]:
    """A request row for one file, or {'error': ...} when it cannot be read or has an unknown type."""
    from crystalvision.serve import predict_input

    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES | CIF_SUFFIXES:
        return {"error": f"{path}: unknown file type '{suffix}'; pass .cif, .png or .jpg files"}
    limit = predict_input.MAX_CIF_BYTES if suffix in CIF_SUFFIXES else predict_input.MAX_IMAGE_BYTES
    try:
        size = path.stat().st_size
        if size > limit:
            return {"error": f"{path}: {size} bytes, more than the {limit} byte limit for a {suffix} file"}
        data = path.read_bytes()
    except OSError as exc:
        return {"error": f"{path}: cannot read the file ({exc.strerror or exc})"}
    if suffix in CIF_SUFFIXES:
        return {"cif": data.decode("utf-8", errors="replace")}
    return {"image": base64.b64encode(data).decode()}


def model_generalisation(model: Any) -> dict[str, Any]:
    """The card's measured out-of-fold metrics of a loaded pyfunc ({} when it has none or is not ours)."""
    try:
        spec = model.unwrap_python_model().model.spec
    except Exception:  # another flavour, or a model saved before model cards: nothing measured to show
        return {}
    return dict(getattr(spec, "generalisation", None) or {})


def default_model_uri(config: str | Path | None = None) -> str:
    """The champion of the pipeline ``config`` registers; without one, ``CRYSTALVISION_MODEL`` (default: the
    champion of the quickstart's model name, which ``make run`` registers; no pipeline file needed)."""
    from crystalvision.core import get_settings, load_pipeline
    from crystalvision.track import CHAMPION

    if config is None:
        return get_settings().tracking.model
    return f"models:/{load_pipeline(Path(config)).registry.model_name}@{CHAMPION}"


def _loaded(module: str, name: str) -> type | None:
    """A class of a module that is already imported (an object of it exists only then), else None."""
    return getattr(sys.modules[module], name, None) if module in sys.modules else None


def _is_structure(value: Any) -> bool:
    structure = _loaded("pymatgen.core.structure", "IStructure")
    return structure is not None and isinstance(value, structure)


def _is_image(value: Any) -> bool:
    image, array = _loaded("PIL.Image", "Image"), _loaded("numpy", "ndarray")
    return any(cls is not None and isinstance(value, cls) for cls in (image, array))


def _named(inputs: Any) -> list[tuple[str, Any]]:
    """(name, input) pairs: a dict's keys, else each input's path or kind and position."""
    if isinstance(inputs, Mapping):
        return [(str(name), value) for name, value in inputs.items()]
    single = isinstance(inputs, str | bytes | Path) or _is_structure(inputs) or _is_image(inputs)
    items = [inputs] if single or not hasattr(inputs, "__iter__") else list(inputs)
    return [(_name(value, i), value) for i, value in enumerate(items)]


def _name(value: Any, i: int) -> str:
    if isinstance(value, Path) or (isinstance(value, str) and "\n" not in value):
        return str(value)
    if isinstance(value, str):
        return f"cif {i}"
    if _is_structure(value):
        return f"structure {i} ({value.composition.reduced_formula})"
    return f"image {i}" if isinstance(value, bytes) or _is_image(value) else f"input {i}"


def _request(name: str, value: Any) -> dict[str, Any]:
    """The request row of one input, or ``{"error": ...}`` naming it and the fix."""
    if isinstance(value, Path) or (isinstance(value, str) and "\n" not in value):
        return file_request(Path(value))  # the command line's own reading: type by suffix, size limits
    if isinstance(value, str):
        return {"cif": value}
    if isinstance(value, bytes):
        return {"image": base64.b64encode(value).decode()}
    if _is_structure(value):
        from pymatgen.io.cif import CifWriter

        return {"cif": str(CifWriter(value))}
    if _is_image(value):
        try:
            return {"image": base64.b64encode(_png(value)).decode()}
        except (TypeError, ValueError) as exc:
            return {"error": f"{name}: cannot encode it as an image ({exc}); pass uint8 RGB pixels (H, W, 3)"}
    return {"error": f"{name}: a {type(value).__name__} is not a prediction input; pass {INPUTS}"}


def _png(image: Any) -> bytes:
    """PNG bytes of a PIL image or an array of pixels."""
    from PIL import Image

    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
