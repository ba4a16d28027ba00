"""Predicting from a CIF renders in helper processes (serve/renderproc.py): the process that runs torch never loads
VTK/OpenGL, and a helper that hangs fails that one call and is replaced. No Ray Train run: the suite's light lane
(the job driver through a whole pipeline: test_driver_imports.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.probe import PROBE, gl_libs, run_probe

ROOT = Path(__file__).resolve().parents[2]

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


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc (Linux)")
def test_predicting_a_cif_renders_in_a_helper_process_never_beside_torch(tmp_path: Path) -> None:
    probe, stdout = run_probe(PREDICT, [str(tmp_path / "model")], tmp_path)
    assert "PREDICTED" in stdout
    assert "torch" in probe["order"]
    assert probe["gl_modules"] == [] and gl_libs(probe["libs"]) == []


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
