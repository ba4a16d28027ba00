"""The served model as an MLflow model: logged from code into a run, with its signature, the ``crystalvision``
package as code, the model folder as artifact, an input example and pinned requirements.

Loading it runs ``pyfunc_code.py`` (MLflow models-from-code), which builds
:class:`~crystalvision.serve.predict.CrystalVisionPyfunc`; nothing is unpickled from storage.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from crystalvision.core import ModelError
from crystalvision.data import Splits, image_png
from crystalvision.learn import SPEC_FILE
from crystalvision.serve.predict import FLOAT_COLUMNS, MODEL_DIR_ARTIFACT, OUTPUT_COLUMNS

if TYPE_CHECKING:
    from crystalvision.data import ObjectStore

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"  # pyfunc name/artifact path in a run (registry registers runs:/<id>/model)
MODEL_CODE = Path(__file__).with_name("pyfunc_code.py")  # the pyfunc, logged as code (models-from-code)
# what the logged model imports (crystalvision itself travels as code_paths): `mlflow models serve` installs these
SERVING_PACKAGES = (
    "mlflow", "torch", "torchvision", "timm", "numpy", "pandas", "pillow", "pymatgen", "spglib", "scipy",
    "scikit-learn", "vtk", "pyvista", "pyarrow", "pydantic", "pydantic-settings", "pyyaml",
)  # fmt: skip

INPUT_SCHEMA = Schema(
    [
        ColSpec("string", "image", required=False),
        ColSpec("string", "cif", required=False),
        ColSpec("double", "views", required=False),  # double: integers with missing values arrive as floats
        ColSpec("string", "name", required=False),
    ]
)
OUTPUT_SCHEMA = Schema(
    [ColSpec("double" if c in FLOAT_COLUMNS else "string", c, required=False) for c in OUTPUT_COLUMNS]
)
SIGNATURE = ModelSignature(inputs=INPUT_SCHEMA, outputs=OUTPUT_SCHEMA)


def pip_requirements() -> list[str]:
    """Pinned requirements of everything the logged model imports (the package itself travels as code)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in SERVING_PACKAGES:
        try:
            reqs.append(f"{pkg}=={version(pkg).split('+')[0]}")  # no local label (+cu130, +cpu): PyPI has none
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
    """Log the pyfunc (artifact path ``model``) and the raw folder (``model_dir/``) into the active run.

    The pyfunc is logged from code (``pyfunc_code.py``, MLflow models-from-code) with the ``crystalvision`` package
    as ``code_paths``: loading it runs that code, it never unpickles an object from storage.
    """
    model_dir = Path(model_dir)
    if not (model_dir / SPEC_FILE).is_file():
        raise ModelError(f"{model_dir} is not a crystalvision model folder ({SPEC_FILE} missing)")
    info = mlflow.pyfunc.log_model(
        name=MODEL_ARTIFACT,
        python_model=str(MODEL_CODE),
        code_paths=[str(MODEL_CODE.parents[1])],  # the whole crystalvision package (MODEL_CODE is in serve/)
        artifacts={MODEL_DIR_ARTIFACT: str(model_dir)},
        signature=SIGNATURE,
        input_example=_input_example(splits, store),
        pip_requirements=pip_requirements(),
    )
    mlflow.log_artifacts(str(model_dir), artifact_path=MODEL_DIR_ARTIFACT)
    log.info("logged pyfunc model %s", info.model_uri)
    return info.model_uri
