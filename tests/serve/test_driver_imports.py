"""Processes that run torch never load VTK/OpenGL, and the job driver loads torch before other native libraries.

Issue 14, point 11: a job driver died after the render stage with ``Intel oneMKL FATAL ERROR: Cannot load
libtorch_cpu.so``. Each check runs the real code path in a fresh interpreter and inspects its modules, the order
of its first imports and the shared libraries mapped into it (``/proc/self/maps``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GL_LIBS = ("libvtk", "libEGL", "libGL.", "libGLX", "libOSMesa", "libLLVM")

# At exit, writes the top-level modules in the order they were first imported (sys.modules keeps insertion order; a
# finder would also see mere look-ups such as jobs/__init__.py's find_spec("ray")) and what the process loaded.
PROBE = """
import atexit, json, os, sys
def report():
    order = list(dict.fromkeys(m.split(".")[0] for m in list(sys.modules)))
    libs = sorted({os.path.basename(line.split()[-1]) for line in open("/proc/self/maps") if ".so" in line})
    gl = sorted(m for m in sys.modules if m.split(".")[0] in ("vtkmodules", "vtk", "pyvista"))
    json.dump({"order": order, "libs": libs, "gl_modules": gl}, open(os.environ["PROBE_OUT"], "w"))
atexit.register(report)
"""

DRIVER = (
    PROBE
    + """
import runpy
sys.argv = ["jobs/pipeline.py", *sys.argv[1:]]
runpy.run_module("jobs.pipeline", run_name="__main__")
"""
)

PREDICT = (
    PROBE
    + """
from pathlib import Path
import pandas as pd
from crystalvision.serve import predict
from crystalvision.learn.model import load_model
from tests.support.tiny import tiny_model_dir
model = load_model(tiny_model_dir(Path(sys.argv[1])))
cif = Path("platform/crystalvision/data/snapshots/lmno/cif/mp-25284.cif").read_text()
out = predict.predict_frame(model, pd.DataFrame({"cif": [cif], "views": [2], "name": ["mp-25284.cif"]}))
assert out.loc[0, "error"] is None, out.loc[0, "error"]
print("PREDICTED", out.loc[0, "crystal_system"])
"""
)


def _run(script: str, args: list[str], tmp_path: Path, timeout: float = 300) -> tuple[dict, str]:
    out = tmp_path / "probe.json"
    env = {**os.environ, "PROBE_OUT": str(out), "CRYSTALVISION_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout


def _gl_libs(libs: list[str]) -> list[str]:
    return [lib for lib in libs if lib.startswith(GL_LIBS)]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc (Linux)")
def test_pipeline_job_driver_loads_torch_first_and_no_vtk_through_render_train_and_evaluation(tmp_path: Path) -> None:
    """The job driver through render (Ray actors), training and evaluation, whose report draws a test structure
    with each radii set (in a helper process)."""
    from mlflow import MlflowClient

    tiny = [
        "stages=[snapshot,render,train,evaluate]",
        "snapshot.max_structures=4",
        "render.image_size=32",
        "render.views_per_structure=2",
        "render.num_workers=1",
        "split.test_fraction=0.3",
        "train.backbone=test_efficientnet",
        "train.epochs=1",
        "train.max_steps_per_epoch=1",
        "evaluate.saliency=false",
    ]
    probe, _ = _run(
        DRIVER, ["--config", "pipelines/quickstart.yaml", *(a for s in tiny for a in ("--set", s))], tmp_path
    )
    client = MlflowClient(f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.data.params["render.render_n_images"] == "8"  # the render stage really ran (in Ray actors)
    assert "test_score" in run.data.metrics  # and the evaluation
    assert "evaluation/radii.png" in {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert probe["gl_modules"] == [] and _gl_libs(probe["libs"]) == []
    order = probe["order"]
    later = [m for m in ("ray", "pyarrow", "pandas", "sklearn", "scipy", "PIL") if m in order]
    assert later and all(order.index("torch") < order.index(m) for m in later), order


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc (Linux)")
def test_predicting_a_cif_renders_in_a_helper_process_never_beside_torch(tmp_path: Path) -> None:
    probe, stdout = _run(PREDICT, [str(tmp_path / "model")], tmp_path)
    assert "PREDICTED" in stdout
    assert "torch" in probe["order"]
    assert probe["gl_modules"] == [] and _gl_libs(probe["libs"]) == []


def test_a_hung_render_helper_fails_that_call_and_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    from pymatgen.core import Structure

    from crystalvision.core.errors import RenderError, StructureError
    from crystalvision.serve import renderproc

    structure = Structure.from_file(ROOT / "platform/crystalvision/data/snapshots/lmno/cif/mp-25284.cif")
    try:
        monkeypatch.setattr(renderproc, "RENDER_TIMEOUT_S", 0.001)  # no helper answers that fast: it counts as hung
        with pytest.raises(RenderError, match="render helper process failed"):
            renderproc.render_views(structure, {"image_size": 32}, 2, "key")
        assert renderproc._pool.idle == [] and renderproc._pool.busy == 0, "the hung helper was stopped"
        monkeypatch.setattr(renderproc, "RENDER_TIMEOUT_S", 120.0)
        images = renderproc.render_views(structure, {"image_size": 32}, 2, "key")
        assert images.shape == (2, 32, 32, 3) and images.std() > 0
        assert renderproc.render_views(structure, {"image_size": 32}, 2, "key").tobytes() == images.tobytes()
        # a CIF is parsed in the helper too, under its own timeout: a parse that hangs fails that row only
        text = (ROOT / "platform/crystalvision/data/snapshots/lmno/cif/mp-25284.cif").read_text()
        monkeypatch.setattr(renderproc, "PARSE_TIMEOUT_S", 0.0)
        with pytest.raises(StructureError, match=r"^slow\.cif: parsing the CIF took more than 0 s; pass .* in P1"):
            renderproc.render_cif(text, "slow.cif", 2000, {"image_size": 32}, 1, "key")
        assert renderproc._pool.idle == [] and renderproc._pool.busy == 0, "the hung helper was stopped"
        monkeypatch.setattr(renderproc, "PARSE_TIMEOUT_S", 30.0)
        parsed, views = renderproc.render_cif(text, "mp-25284.cif", 2000, {"image_size": 32}, 2, "key")
        assert len(parsed) == 20 and views.tobytes() == images.tobytes()
    finally:
        renderproc.shutdown()
