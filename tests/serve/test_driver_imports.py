"""The job driver loads torch before other native libraries and never VTK/OpenGL, through render, training and
evaluation (a Ray Train run; predicting, which renders in helper processes: test_render_helper.py).

Issue 14, point 11: a job driver died after the render stage with ``Intel oneMKL FATAL ERROR: Cannot load
libtorch_cpu.so``. Each check runs the real code path in a fresh interpreter and inspects its modules, the order
of its first imports and the shared libraries mapped into it (``/proc/self/maps``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.probe import PROBE, gl_libs, run_probe

ROOT = Path(__file__).resolve().parents[2]
DRIVER = (
    PROBE
    + """
import runpy
sys.argv = ["jobs/pipeline.py", *sys.argv[1:]]
runpy.run_module("jobs.pipeline", run_name="__main__")
"""
)


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
    probe, _ = run_probe(
        DRIVER, ["--config", "pipelines/quickstart.yaml", *(a for s in tiny for a in ("--set", s))], tmp_path
    )
    client = MlflowClient(f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.data.params["render.render_n_images"] == "8"  # the render stage really ran (in Ray actors)
    assert "test_score" in run.data.metrics  # and the evaluation
    assert "evaluation/radii.png" in {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert probe["gl_modules"] == [] and gl_libs(probe["libs"]) == []
    order = probe["order"]
    later = [m for m in ("ray", "pyarrow", "pandas", "sklearn", "scipy", "PIL") if m in order]
    assert later and all(order.index("torch") < order.index(m) for m in later), order
