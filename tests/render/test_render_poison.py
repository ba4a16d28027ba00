"""Poison structures (issue 14.5): refused when too big, quarantined after two crashes or timeouts, the batch goes
on; memory/GL/storage errors are retried, never quarantined; --retry-quarantined tries them again."""

from __future__ import annotations

import numpy as np
import pytest

from crystalvision.core.config import RenderConfig
from crystalvision.core.errors import StorageError
from crystalvision.data.dataset import load_labels
from crystalvision.data.storage import ObjectStore
from crystalvision.render.job import FAULT_ENV
from crystalvision.render.udf import RenderBatch
from tests.support.render import good_records, ray_session, render  # noqa: F401  (ray_session: fixture)

CFG = RenderConfig(image_size=32, views_per_structure=2, num_workers=1, cpus_per_worker=0.5)


@pytest.fixture(scope="module")
def good(bundled_snapshot):
    return good_records(bundled_snapshot, 3)


@pytest.mark.usefixtures("ray_session")
def test_too_many_atoms_are_refused_before_rendering(tmp_path, bundled_snapshot, good) -> None:
    from crystalvision.data.structures import structure_from_dict
    from crystalvision.render.scene import prepare_scene

    sizes = {
        r.material_id: len(prepare_scene(structure_from_dict(r.structure, r.material_id), CFG).positions) for r in good
    }
    limit = sorted(sizes.values())[1] - 1  # the two largest are over it
    store = ObjectStore(str(tmp_path / "store"))
    result = render(good, bundled_snapshot, CFG.model_copy(update={"max_atoms": limit}), store)
    over = sorted(m for m, n in sizes.items() if n > limit)
    assert [q["material_id"] for q in result.quarantined] == over
    for q in result.quarantined:
        assert q["error"].startswith(q["material_id"]) and f"more than render.max_atoms = {limit}" in q["error"]
    assert result.n_new == 2 * (len(good) - len(over))
    assert not set(over) & set(load_labels(store, result.labels_key)["material_id"]), "no image of a refused one"
    raised = render(good, bundled_snapshot, CFG, store)  # same prefix: max_atoms is not hashed
    assert raised.prefix == result.prefix and not raised.quarantined and raised.n_new == 2 * len(over)


@pytest.mark.usefixtures("ray_session")
def test_crashing_and_hanging_structures_are_quarantined_and_the_batch_goes_on(
    tmp_path, bundled_snapshot, good, monkeypatch, cv_home
) -> None:
    crash, hang = good[0].material_id, good[1].material_id
    cfg = CFG.model_copy(update={"structure_timeout_s": 3.0})
    store = ObjectStore(str(tmp_path / "store"))
    monkeypatch.setenv(FAULT_ENV, f"crash={crash},hang={hang}")
    result = render(good, bundled_snapshot, cfg, store)
    errors = {q["material_id"]: q["error"] for q in result.quarantined}
    assert sorted(errors) == sorted([crash, hang])
    assert all("crashed or exceeded the 3 s time budget" in e and "2 times" in e for e in errors.values()), errors
    assert result.n_images == result.n_new == 2, "the third structure is rendered"

    monkeypatch.delenv(FAULT_ENV)
    again = render(good, bundled_snapshot, cfg, store)
    assert again.n_new == 0 and len(again.quarantined) == 2, "quarantined structures stay out on a plain rerun"
    retried = render(good, bundled_snapshot, cfg, store, retry_quarantined=True)
    assert not retried.quarantined and retried.n_images == 6 and retried.n_new == 4
    assert not store.list(f"{result.prefix}/attempts")


def _udf(tmp_path, good) -> RenderBatch:
    store = ObjectStore(str(tmp_path / "store"))
    return RenderBatch({good[0].material_id: good[0].structure}, CFG.model_dump(mode="json"), store.root, None)


def _batch(mid: str) -> dict:
    mids = np.array([mid, mid], dtype=object)
    keys = np.array([f"p/{mid}/0.png", f"p/{mid}/1.png"], dtype=object)
    return {"material_id": mids, "view": np.array([0, 1]), "quaternion": np.eye(4)[:2], "image_key": keys}


def test_memory_errors_are_retried_not_quarantined(tmp_path, good) -> None:
    udf = _udf(tmp_path, good)
    real, calls = udf.renderer.render, []

    def flaky(*args):
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("out of memory")
        return real(*args)

    udf.renderer.render = flaky
    out = udf(_batch(good[0].material_id))
    assert list(out["error"]) == ["", ""] and len(calls) == 3
    udf.renderer.render = lambda *a: (_ for _ in ()).throw(MemoryError("still out of memory"))
    with pytest.raises(MemoryError):
        udf(_batch(good[0].material_id))


def test_storage_errors_fail_the_task_not_the_structure(tmp_path, good, monkeypatch) -> None:
    udf = _udf(tmp_path, good)
    monkeypatch.setattr("crystalvision.render.udf.time.sleep", lambda s: None)

    def broken(key, data):
        raise StorageError(f"cannot write {key}; check the store")

    udf.store.put_bytes = broken
    with pytest.raises(StorageError, match="cannot write"):
        udf(_batch(good[0].material_id))


def test_drawn_atoms_count_periodic_images() -> None:
    from types import SimpleNamespace

    from pymatgen.core import Lattice, Structure

    from crystalvision.render.job import _precheck

    corner = Structure(Lattice.cubic(4.0), ["Li", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])  # draws 8 + 1 atoms
    rec = SimpleNamespace(material_id="mp-corner", structure=corner.as_dict())
    assert _precheck([rec], RenderConfig(max_atoms=9))[0] == [rec]
    _, bad = _precheck([rec], RenderConfig(max_atoms=8))
    assert "mp-corner draws 9 atoms (with periodic images), more than render.max_atoms = 8" in bad[0]["error"]


def test_a_huge_structure_is_refused_from_its_site_count() -> None:
    from types import SimpleNamespace

    from pymatgen.core import Lattice, Structure

    from crystalvision.render.job import _precheck

    n = 12  # 12^3 * 2 = 3,456 sites, over the default limit of 2,000
    frac = (np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.25) / n
    big = Structure(Lattice.cubic(4.0 * n), ["Li"] * len(frac) + ["O"] * len(frac), np.vstack([frac, frac + 0.5 / n]))
    rec = SimpleNamespace(material_id="mp-huge", structure=big.as_dict())
    good, bad = _precheck([rec], RenderConfig())
    assert not good and bad[0]["material_id"] == "mp-huge"
    assert "3456 sites, more than render.max_atoms = 2000" in bad[0]["error"]


_DRAWER = """
import json, sys
from crystalvision.core.config import RenderConfig
from crystalvision.render.udf import RenderBatch
from tests.support.render import good_records, ray_session, render  # noqa: F401  (ray_session: fixture)
mid, structure, root = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
udf = RenderBatch({mid: structure}, RenderConfig(image_size=32, views_per_structure=2).model_dump(mode="json"), root,
                  None, fault={"hang": mid}, prefix="p")
rows = {"material_id": [mid, mid], "view": [0, 1], "quaternion": [[1.0, 0, 0, 0]] * 2}
udf(rows | {"image_key": ["p/a.png", "p/b.png"]})
"""


def test_actors_killed_from_outside_never_quarantine_a_structure(tmp_path, good) -> None:
    """Two OOM kills (SIGKILL from outside while the structure is being drawn): infrastructure, not counted; the
    third attempt renders it."""
    import json
    import signal
    import subprocess
    import sys
    import time

    from crystalvision.render.udf import attempt_key

    store = ObjectStore(str(tmp_path / "store"))
    mid, key = good[0].material_id, attempt_key("p", good[0].material_id, 0)
    for _ in range(2):
        marked = store.get_text(key) if store.exists(key) else ""
        proc = subprocess.Popen([sys.executable, "-c", _DRAWER, mid, json.dumps(good[0].structure), store.root])
        deadline = time.monotonic() + 120
        while not store.exists(key) or store.get_text(key) == marked:  # its attempt is marked: it is drawing
            assert proc.poll() is None and time.monotonic() < deadline, "the drawer never started drawing"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)  # the OOM killer
        assert proc.wait(timeout=30) == -signal.SIGKILL
    udf = RenderBatch({mid: good[0].structure}, CFG.model_dump(mode="json"), store.root, None, prefix="p")
    out = udf(_batch(mid))
    assert list(out["error"]) == ["", ""], "a structure was quarantined for its actor's OOM kills"
    assert not store.exists(key), "a finished structure leaves no attempt marker"
