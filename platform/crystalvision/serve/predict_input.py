"""Bounded prediction input (pyfunc, REST serving and CLI alike) and out-of-domain warnings.

Every request row is checked before any expensive work: CIF text size, atom rows and symmetry operations (counted
from tokens, as pymatgen reads them), ``views``, base64 payload size and image format (PNG or JPEG, by content, not by
name). A row that breaks a bound raises one clear error naming the row and the limit; the caller turns it into that
row's ``error``. A request is bounded too: rows, rendered views and bytes in total, and a wall-clock budget (a share of
the model server's request timeout) checked before every row. Warnings say when an input lies outside what
the model was trained on: elements it never saw, a structure far larger than any training structure, an image of
another size than the model's.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from crystalvision.core import ImageError, StructureError
from crystalvision.data import MAX_CIF_BYTES, decode_png, parse_cif, precheck_cif
from crystalvision.serve.renderproc import Deadline

if TYPE_CHECKING:
    from pymatgen.core import Structure

    from crystalvision.learn import ModelSpec

MAX_VIEWS = 64
MAX_ROWS = 256  # rows per request (images and CIFs)
MAX_TOTAL_VIEWS = 256  # rendered views per request, summed over its CIF rows
DEFAULT_MAX_ATOMS = 2000  # the render stage's render.max_atoms default; a model's render config overrides it
MAX_IMAGE_BYTES = 20_000_000
MAX_IMAGE_B64_CHARS = 4 * math.ceil(MAX_IMAGE_BYTES / 3)
IMAGE_FORMATS = ("PNG", "JPEG")
FAR_LARGER = 2.0  # a structure with more than this many times the largest training site count is out of domain
MAX_REQUEST_BYTES = 64_000_000  # CIF and base64 image text per request: three rows at their largest
BUDGET_SHARE = 0.75  # of MLflow's scoring-server timeout: the answer leaves before the server gives up with a 504


def check_views(value: Any, default: int, name: str) -> int:
    """``views`` as an int in 1..MAX_VIEWS (None -> default)."""
    if value is None:
        return default
    try:
        views = float(value)
    except (TypeError, ValueError):
        raise ImageError(f"{name}: views must be a whole number from 1 to {MAX_VIEWS}, got {value!r}") from None
    if not views.is_integer() or not 1 <= views <= MAX_VIEWS:
        raise ImageError(f"{name}: views must be a whole number from 1 to {MAX_VIEWS}, got {value!r}")
    return int(views)


def max_atoms(spec: ModelSpec) -> int:
    """The atom limit for CIF inputs: the model's ``render.max_atoms``, else the render default."""
    return int(spec.render_config.get("max_atoms") or DEFAULT_MAX_ATOMS)


def read_cif(text: str, name: str, limit: int) -> Structure:
    """Parse CIF text of at most MAX_CIF_BYTES into a structure of at most ``limit`` atoms."""
    check_cif(text, name, limit)
    structure = parse_cif(text, name)
    if len(structure) > limit:
        raise StructureError(
            f"{name}: {len(structure)} atoms, more than the limit of {limit}; predict a smaller cell "
            "(or a model trained with a larger render.max_atoms)"
        )
    return structure


def check_cif(text: str, name: str, limit: int) -> None:
    """The bounds a CIF must keep before it is parsed: bytes, lines, atom rows, symmetry operations."""
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_CIF_BYTES:
        raise StructureError(f"{name}: the CIF is {size} bytes, more than the {MAX_CIF_BYTES} byte limit")
    # cheap early refusal: a CIF needs at least one line per atom of its asymmetric unit
    lines = text.count("\n")
    if lines > 3 * limit + 2000:
        raise StructureError(
            f"{name}: the CIF has {lines} lines, more than a structure of at most {limit} atoms needs; "
            "predict structures of up to that many atoms"
        )
    precheck_cif(text, name)


def request_budget_s() -> float:
    """Seconds one request may take: BUDGET_SHARE of MLflow's scoring-server timeout
    (``MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT``, default 60 s), so rows past it are refused rather than answered by the
    server's 504 while the work runs on."""
    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT

    return BUDGET_SHARE * float(MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get())


def request_deadline() -> Deadline:
    """The deadline of a request that starts now."""
    return Deadline.after(request_budget_s())


def request_refusal(rows: int, cif_views: list[int], size: int = 0) -> tuple[str | None, str | None]:
    """Why a whole request is refused (too many rows or bytes), and why its CIF rows are (too many views in
    total). ``size``: the bytes of its CIF and image text."""
    rows_error = views_error = None
    if rows > MAX_ROWS:
        rows_error = (
            f"the request has {rows} rows, more than the limit of {MAX_ROWS}; send at most {MAX_ROWS} per request"
        )
    elif size > MAX_REQUEST_BYTES:
        rows_error = (
            f"the request holds {size} bytes of CIF and image text, more than the limit of {MAX_REQUEST_BYTES} "
            "bytes per request; send fewer rows per request"
        )
    if sum(cif_views) > MAX_TOTAL_VIEWS:
        views_error = (
            f"the request asks for {sum(cif_views)} rendered views in total, more than the limit of "
            f"{MAX_TOTAL_VIEWS}; send fewer CIF rows or fewer views per row"
        )
    return rows_error, views_error


def text_bytes(row: Mapping[str, Any]) -> int:
    """Bytes of a row's CIF and image text (the request's byte cap adds them up)."""
    cells = (row.get(column) for column in ("cif", "image"))
    return sum(len(c.encode("utf-8", errors="replace")) for c in cells if isinstance(c, str))


def request_chunks(readable: list[tuple[int, dict]], views: int) -> list[list[tuple[int, dict]]]:
    """(index, row) pairs cut into requests within a server's bounds: at most MAX_ROWS rows, MAX_TOTAL_VIEWS views
    and MAX_REQUEST_BYTES each (a single file is within the byte cap: its own limit is lower)."""
    step = max(1, min(MAX_ROWS, MAX_TOTAL_VIEWS // views))
    chunks: list[list[tuple[int, dict]]] = []
    size = 0
    for item in readable:
        grow = text_bytes(item[1])
        if not chunks or len(chunks[-1]) >= step or size + grow > MAX_REQUEST_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(item)
        size += grow
    return chunks


def decode_image(text: str, name: str) -> np.ndarray:
    """A base64 PNG/JPEG request cell -> RGB uint8 HxWx3 (palette and alpha images converted to RGB)."""
    if len(text) > MAX_IMAGE_B64_CHARS:
        raise ImageError(
            f"{name}: the base64 image is {len(text)} characters, more than the limit of {MAX_IMAGE_B64_CHARS} "
            f"({MAX_IMAGE_BYTES} bytes); send the render at the model's image size"
        )
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(f"{name}: the image is not valid base64 ({exc}); send base64-encoded PNG bytes") from exc
    return decode_image_bytes(data, name)


def decode_image_bytes(data: bytes, name: str) -> np.ndarray:
    """PNG or JPEG bytes (checked by content, not by name) -> RGB uint8 HxWx3."""
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only; a decompression bomb raises here
            fmt = img.format
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{name}: not a readable image ({exc}); render it again or pass a PNG") from exc
    if fmt not in IMAGE_FORMATS:
        raise ImageError(f"{name}: the image is {fmt}, not PNG or JPEG; convert it to PNG")
    return decode_png(data, name)


def fit_image(image: np.ndarray, name: str, size: int) -> tuple[np.ndarray, list[str]]:
    """Resize an image to the model's ``size`` when it differs, with a warning saying so."""
    height, width = image.shape[:2]
    if (height, width) == (size, size):
        return image, []
    resized = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
    return resized, [
        f"{name}: image is {width}x{height} px, the model was trained on {size}x{size} renders; "
        "resized, so atoms appear at another scale than in training"
    ]


def structure_warnings(structure: Structure, spec: ModelSpec, name: str) -> list[str]:
    """Out-of-domain warnings for a structure: unseen elements, far more sites than any training structure."""
    warnings = []
    if spec.training_elements:
        unseen = sorted({el.symbol for el in structure.composition.elements} - set(spec.training_elements))
        if unseen:
            warnings.append(
                f"{name}: element(s) {', '.join(unseen)} never seen in training (training elements: "
                f"{', '.join(spec.training_elements)}); the prediction is an extrapolation"
            )
    if spec.max_training_sites and len(structure) > FAR_LARGER * spec.max_training_sites:
        warnings.append(
            f"{name}: {len(structure)} sites, far more than the largest training structure "
            f"({spec.max_training_sites} sites); the prediction is an extrapolation"
        )
    return warnings
