"""Prediction stays bounded whatever the CIF says or how it is laid out.

What pymatgen will read (tokens, not lines) is counted before anything is expanded; every request has a wall-clock
budget checked before each row and a cap on its bytes; a render helper past its deadline is killed and replaced.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import psutil
import pytest

from crystalvision.data.structures import precheck_cif
from crystalvision.learn.model import load_model
from crystalvision.serve import predict, predict_input, renderproc
from tests.serve.test_predict import GOOD_CIF, SYMMETRY_BOMB, huge_cif
from tests.support.tiny import SIZE, tiny_model_dir

CELL = "".join(f"_cell_length_{a} 30.0\n" for a in "abc") + "".join(
    f"_cell_angle_{a} 90\n" for a in ("alpha", "beta", "gamma")
)
ATOM_LOOP = "loop_\n" + "".join(
    f"_atom_site_{tag}\n" for tag in ("type_symbol", "label", "fract_x", "fract_y", "fract_z")
)


def one_line_ops_bomb() -> str:
    """tests/data/bad/symmetry_ops_7000.cif with its 7,000 operations on one line (the same CIF to pymatgen)."""
    lines = SYMMETRY_BOMB.read_text().splitlines()
    ops = [i for i, line in enumerate(lines) if line.startswith(tuple("0123456789"))]
    return "\n".join([*lines[: ops[0]], " ".join(lines[i] for i in ops), *lines[ops[-1] + 1 :]]) + "\n"


def one_line_atoms(n_atoms: int) -> str:
    """A P1 CIF of ``n_atoms`` atoms whose atom rows are all on one line."""
    head, rows = huge_cif(n_atoms).split("_atom_site_fract_z\n")
    return head + "_atom_site_fract_z\n" + " ".join(rows.splitlines()) + "\n"


def implicit_ops_bomb(rows: int = 300) -> str:
    """Fm-3m named, no operations listed: pymatgen generates the group's 192 and expands every row with them."""
    rng = np.random.default_rng(0)
    atoms = "".join(f"Li Li{i} {x:.4f} {y:.4f} {z:.4f}\n" for i, (x, y, z) in enumerate(rng.random((rows, 3))))
    return "data_fm3m\n_symmetry_space_group_name_H-M 'F m -3 m'\n" + CELL + ATOM_LOOP + atoms


def tokenizer_bomb(quotes: int = 100_000) -> str:
    """A small, valid-looking CIF whose title is a run of quotes: pymatgen's tokenizer rescans the line from every
    quote (quadratic: about a minute here), before it has any loop to count."""
    return GOOD_CIF.replace("data_", "data_title\n_publ_section_title " + "'" * quotes + "x\ndata_", 1)


def test_bombs_laid_out_on_one_line_are_refused_before_anything_is_expanded(tmp_path) -> None:
    ops, atoms = one_line_ops_bomb(), one_line_atoms(20_000)
    with pytest.raises(Exception, match=r"^ops\.cif: 7000 symmetry operations on 100 atom rows"):
        precheck_cif(ops, "ops.cif")
    with pytest.raises(Exception, match=r"^atoms\.cif: 20000 atoms, more than the limit of 2000"):
        precheck_cif(atoms, "atoms.cif")
    precheck_cif(tokenizer_bomb(), "title.cif")  # nothing to count here: the deadline bounds it (below)

    model = load_model(tiny_model_dir(tmp_path / "m"))
    names = ["ops.cif", "atoms.cif", "fm3m.cif"]
    frame = pd.DataFrame({"cif": [ops, atoms, implicit_ops_bomb()], "name": names, "views": [1.0] * 3})
    start = time.monotonic()
    try:
        out = predict.predict_frame(model, frame)  # the real path: caller checks, then the helper's block parse
    finally:
        renderproc.shutdown()
    took = time.monotonic() - start
    assert out.loc[0, "error"].startswith("ops.cif: 7000 symmetry operations on 100 atom rows"), out.loc[0, "error"]
    assert out.loc[1, "error"].startswith("atoms.cif: 20000 atoms, more than the limit of 2000"), out.loc[1, "error"]
    assert out.loc[2, "error"].startswith("fm3m.cif: 192 symmetry operations on 300 atom rows"), out.loc[2, "error"]
    assert took < 30, f"{took:.0f} s: a bomb was expanded before it was refused"


def _helpers() -> list[psutil.Process]:
    """Render helper processes of this test process that are still running."""
    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "renderhelper" in " ".join(child.cmdline()):
                alive.append(child)
        except psutil.NoSuchProcess:
            continue
    return alive


def test_a_request_has_a_deadline_and_a_helper_past_it_is_killed_and_replaced(tmp_path, monkeypatch) -> None:
    model = load_model(tiny_model_dir(tmp_path / "m"))
    monkeypatch.setenv("MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT", "4")  # the server's timeout sets the budget
    budget = predict_input.request_budget_s()
    assert budget < 4
    frame = pd.DataFrame({"cif": [tokenizer_bomb(), GOOD_CIF], "name": ["title.cif", "next.cif"], "views": [1.0] * 2})
    try:
        start = time.monotonic()
        out = predict.predict_frame(model, frame)
        took = time.monotonic() - start
        assert out.loc[0, "error"].startswith(f"title.cif: the request's {budget:.0f} s budget ran out"), out.loc[0]
        assert out.loc[1, "error"].startswith(f"next.cif: not started: the request's {budget:.0f} s budget"), out.loc[1]
        assert took < budget + 4, f"the request took {took:.1f} s, past its {budget:.1f} s budget"
        assert _helpers() == [] and renderproc._pool.busy == 0, "the helper past its deadline still runs"
        monkeypatch.delenv("MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT")
        again = predict.predict_frame(model, frame.iloc[1:])
        assert again.loc[0, "error"] is None, again.loc[0, "error"]  # a new helper answers
    finally:
        renderproc.shutdown()


def test_a_request_is_capped_in_bytes(tmp_path) -> None:
    model = load_model(tiny_model_dir(tmp_path / "m"))
    rendered = []

    def renderer(structure, render_config, views):
        rendered.append(views)
        return np.full((views, SIZE, SIZE, 3), 90, dtype=np.uint8)

    padded = GOOD_CIF + "#" * 19_000_000 + "\n"  # each row within the 20 MB per CIF, four of them far over the cap
    out = predict.predict_frame(model, pd.DataFrame({"cif": [padded] * 4, "views": [1.0] * 4}), renderer=renderer)
    assert rendered == [], "nothing is rendered for a refused request"
    message = f"more than the limit of {predict_input.MAX_REQUEST_BYTES} bytes per request"
    assert all(isinstance(e, str) and message in e for e in out["error"]), out.loc[0, "error"]
    small = predict.predict_frame(model, pd.DataFrame({"cif": [padded], "views": [1.0]}), renderer=renderer)
    assert small.loc[0, "error"] is None and rendered == [1], "one such row alone is within the cap"
