"""The Python face of a registered model, run as README and docs/predict.md show it.

The Python blocks run in a fresh interpreter from a folder laid out like the checkout after ``make run``
(``.crystalvision/mlflow.db`` with the quickstart's champion, the bundled CIFs), README's saved as a script without a
``__main__`` guard, docs/predict.md's through ``python -``: each predicts once, with numbers. A render that fails
raises one clear error from the Python face; the REST face answers it as that row's error.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from crystalvision.core.errors import RenderError
from crystalvision.data.storage import ObjectStore
from crystalvision.serve.mlflow_model import MODEL_ARTIFACT, log_model
from tests.support.tiny import tiny_model_dir, toy_splits, use_test_tracking

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART_MODEL = "lmno-efficientnet-b0-quickstart"
CIF = ROOT / "platform/crystalvision/data/snapshots/lmno/cif/mp-863332.cif"


def python_block(doc: Path, marker: str = "mlflow.pyfunc.load_model") -> str:
    """The first ```python block of ``doc`` that holds ``marker``."""
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    found = [b for b in blocks if marker in b]
    assert found, f"{doc.name} has no Python block with {marker}"
    return found[0]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A folder laid out as the docs expect: the quickstart's champion (a tiny model) in .crystalvision/mlflow.db
    and the bundled snapshot's CIFs under platform/ (one for this file's tests)."""
    from crystalvision.core.settings import get_settings

    tmp = tmp_path_factory.mktemp("python-face")
    folder = tmp / "checkout"
    (folder / "platform/crystalvision/data/snapshots").mkdir(parents=True)
    (folder / "platform/crystalvision/data/snapshots/lmno").symlink_to(CIF.parents[1])
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("CRYSTALVISION_HOME", str(folder / ".crystalvision"))
        for var in ("MLFLOW_TRACKING_URI", "CRYSTALVISION_MLFLOW_TRACKING_URI", "CRYSTALVISION_OBJECT_STORE_URI"):
            monkeypatch.delenv(var, raising=False)
        get_settings.cache_clear()
        use_test_tracking()
        store = ObjectStore(str(tmp / "store"))
        with mlflow.start_run() as run:
            log_model(tiny_model_dir(tmp / "model"), toy_splits(store), store)
        version = mlflow.register_model(f"runs:/{run.info.run_id}/{MODEL_ARTIFACT}", QUICKSTART_MODEL).version
        MlflowClient().set_registered_model_alias(QUICKSTART_MODEL, "champion", version)
        assert (folder / ".crystalvision/mlflow.db").is_file()
        yield folder
    get_settings.cache_clear()


def _run(folder: Path, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CRYSTALVISION_"))}
    done = subprocess.run(
        [sys.executable, *args], cwd=folder, env=env, input=stdin, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _one_prediction(stdout: str) -> None:
    """The script printed one predictions frame (not a second one from a re-imported copy), with a band gap."""
    headers = [line for line in stdout.splitlines() if "band_gap" in line]
    assert len(headers) == 1, f"expected one printed frame:\n{stdout}"
    rows = [line for line in stdout.splitlines() if re.match(r"^0\s+-?\d+\.\d+", line)]
    assert len(rows) == 1, f"expected one row with a band gap:\n{stdout}"


def test_the_docs_python_examples_predict_once_as_a_script_and_through_stdin(checkout) -> None:
    """README's Python block (no ``__main__`` guard) saved as a script, and docs/predict.md's through ``python -``:
    one printed frame with a band gap each (the render helper never re-runs the caller's code). Both blocks render
    their CIF in the same helper, so each way of running is tried once, each block once (a fresh interpreter per run
    is most of this test's time)."""
    readme = python_block(ROOT / "README.md", "crystalvision.predict(")
    guide = python_block(ROOT / "docs/predict.md", "mlflow.pyfunc.load_model")
    assert readme != guide and "__main__" not in readme + guide
    (checkout / "example.py").write_text(readme)
    _one_prediction(_run(checkout, ["example.py"]).stdout)
    _one_prediction(_run(checkout, ["-"], stdin=guide).stdout)


def test_a_failed_render_raises_from_python_and_is_the_rows_error_over_rest(checkout, monkeypatch) -> None:
    from crystalvision.serve import renderproc

    model = mlflow.pyfunc.load_model(f"models:/{QUICKSTART_MODEL}@champion")
    frame = pd.DataFrame([{"cif": CIF.read_text(), "views": 2.0, "name": "mp-863332.cif"}])
    monkeypatch.setattr(renderproc, "RENDER_TIMEOUT_S", 0.001)  # no helper renders that fast: the render fails
    try:
        with pytest.raises(
            RenderError, match=r"^mp-863332\.cif: the render helper process failed \(rendering took more than 0 s"
        ):
            model.predict(frame)
        monkeypatch.setenv("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "true")  # what `mlflow models serve` sets
        out = model.predict(frame)
        assert out.loc[0, "band_gap"] is None and out.loc[0, "error"].startswith("mp-863332.cif: ")
    finally:
        renderproc.shutdown()
