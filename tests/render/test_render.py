"""Renderer unit tests: determinism, views, shapes, colours, odd species, periodic images, no leaks."""

from __future__ import annotations

import os
import resource

import numpy as np
import pytest
from pymatgen.core import DummySpecies, Lattice, Structure

from crystalvision.core.config import RenderConfig
from crystalvision.core.errors import RenderError
from crystalvision.data import encode_png
from crystalvision.data.structures import structure_from_dict
from crystalvision.render import (
    Renderer,
    backend,
    element_colour,
    element_radius,
    prepare_scene,
    view_quaternion,
    view_rotation,
)
from crystalvision.render.rotations import view_quaternions

MID = "mp-1177919"  # Li2Mn3NiO8, 56 atoms


@pytest.fixture(scope="module")
def spinel(bundled_snapshot) -> Structure:
    rec = next(r for r in bundled_snapshot.records if r.material_id == MID)
    return structure_from_dict(rec.structure, MID)


@pytest.fixture(scope="module")
def renderer():
    with Renderer(RenderConfig(image_size=48)) as r:
        yield r


def test_same_seed_same_pixels_and_png(spinel, renderer) -> None:
    rot = view_rotation(0, MID, 3)
    a = renderer.render(spinel, rot)
    with Renderer(RenderConfig(image_size=48)) as other:
        b = other.render(spinel, view_quaternion(0, MID, 3))
    assert np.array_equal(a, b)
    assert encode_png(a) == encode_png(b)


def test_views_differ_and_shape(spinel, renderer) -> None:
    a, b = (renderer.render(spinel, view_rotation(0, MID, v)) for v in (0, 1))
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5
    with Renderer(RenderConfig(image_size=32)) as small:
        assert small.render(spinel).shape == (32, 32, 3)


def test_view_seeds_are_independent_and_uniform() -> None:
    q = view_quaternions(7, "mp-a", 3)
    assert np.allclose(q, view_quaternions(7, "mp-a", 5)[:3])  # more views leave earlier ones alone
    assert not np.allclose(q, view_quaternions(7, "mp-b", 3))
    assert not np.allclose(q, view_quaternions(8, "mp-a", 3))
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0) and (q[:, 3] >= 0).all()
    mats = np.stack([view_rotation(0, "mp-u", v).as_matrix() for v in range(1500)])
    assert np.abs(mats.mean(axis=0)).max() < 0.06  # Haar measure: E[R] = 0


def _one_atom(symbol) -> Structure:
    return Structure(Lattice.cubic(3.0), [symbol], [[0.5, 0.5, 0.5]])


def test_colours_distinguish_elements() -> None:
    centres = {}
    with Renderer(RenderConfig(image_size=32)) as r:
        for el in ("Li", "Mn", "Ni", "O"):
            centres[el] = r.render(_one_atom(el))[14:18, 14:18].reshape(-1, 3).mean(axis=0)
    els = list(centres)
    for i, a in enumerate(els):
        for b in els[i + 1 :]:
            assert np.abs(centres[a] - centres[b]).sum() > 60, (a, b, centres[a], centres[b])
    assert centres["O"][0] > 2 * centres["O"][1]  # VESTA oxygen is red
    assert element_colour("O") == (254, 3, 0)


def test_odd_species_fail_with_clear_error(renderer) -> None:
    dummy = Structure(Lattice.cubic(4.0), [DummySpecies("X"), "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(RenderError, match="site 0 has species 'X"):
        renderer.render(dummy)
    disordered = Structure(Lattice.cubic(4.0), [{"Mn": 0.5, "Ni": 0.5}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(RenderError, match="partially occupied"):
        renderer.render(disordered)
    with pytest.raises(RenderError, match="species 'Og', not a chemical element with a VESTA colour"):
        renderer.render(_one_atom("Og"))
    assert renderer.render(_one_atom("Li")).shape == (48, 48, 3)  # still usable afterwards


def test_periodic_images_on_faces_edges_corners() -> None:
    s = Structure(Lattice.cubic(4.0), ["Li", "O", "Ni", "Mn"], [[0, 0, 0], [0.5, 0, 0], [0.5, 0.5, 0], [0.5] * 3])
    scene = prepare_scene(s, RenderConfig())
    assert len(scene.positions) == 8 + 4 + 2 + 1
    assert scene.symbols.count("Li") == 8
    s2 = Structure(Lattice.cubic(4.0), ["Li"], [[0.9999999, 1.0, -1e-9]])  # rounding noise wraps to the corner
    assert len(prepare_scene(s2, RenderConfig()).positions) == 8


def test_options_change_pixels(spinel) -> None:
    rot = view_rotation(0, MID, 0)
    base = RenderConfig(image_size=48)
    images = {}
    for name, cfg in {
        "base": base,
        "mesh": base.model_copy(update={"method": "mesh"}),
        "perspective": base.model_copy(update={"projection": "perspective"}),
        "cell": base.model_copy(update={"show_cell": True}),
        "vesta": base.model_copy(update={"radii": "vesta"}),
        "black": base.model_copy(update={"background": (0.0, 0.0, 0.0)}),
    }.items():
        with Renderer(cfg) as r:
            images[name] = r.render(spinel, rot).astype(int)
    diff = {k: np.abs(v - images["base"]).mean() for k, v in images.items()}
    assert base.method == "impostor"
    assert diff["mesh"] < 4, "impostor spheres (the default) should look like mesh spheres"
    assert diff["perspective"] > 1 and diff["cell"] > 0.2 and diff["vesta"] > 5
    assert (images["black"][0, 0] == 0).all() and (images["base"][0, 0] == 255).all()


def test_radii_sets_match_their_sources_and_name_missing_elements() -> None:
    # VESTA's .vesta files: O 0.74, Mn 1.37, Ti 1.47, Ba 2.24, Dy 1.77 Å; its elements.ini: Li 1.57, Ni 1.25 Å
    expected = {"O": 0.74, "Mn": 1.37, "Ti": 1.47, "Ba": 2.24, "Dy": 1.77, "Li": 1.57, "Ni": 1.25, "H": 0.46}
    assert {el: element_radius(el, "vesta") for el in expected} == expected
    assert (element_radius("O", "shannon"), element_radius("Mn", "shannon")) == (1.26, 0.645)
    with pytest.raises(RenderError, match="element 'Cm' has no radius in the VESTA table.*render.radii: shannon"):
        element_radius("Cm", "vesta")
    with pytest.raises(RenderError, match="'Xx' is not a chemical element"):
        element_radius("Xx", "vesta")
    assert element_radius("Cm", "shannon") > 0  # the ionic set falls back to pymatgen's radii


def _cation_pixels(image: np.ndarray) -> float:
    """Fraction of non-background pixels that are not oxygen red."""
    rgb = image.astype(int)
    drawn = rgb.sum(axis=2) < 3 * 250
    red = (rgb[..., 0] > 2 * rgb[..., 1] + 20) & (rgb[..., 0] > 2 * rgb[..., 2] + 20)
    return float((drawn & ~red).sum() / max(drawn.sum(), 1))


def test_vesta_radii_show_the_cations_that_shannon_oxygen_hides(spinel) -> None:
    rot = view_rotation(0, MID, 0)
    shown = {}
    for radii in ("vesta", "shannon"):
        with Renderer(RenderConfig(image_size=64, radii=radii)) as r:
            shown[radii] = _cation_pixels(r.render(spinel, rot))
    assert shown["vesta"] > shown["shannon"] + 0.2, shown


def test_closed_renderer_and_no_leak(spinel) -> None:
    r = Renderer(RenderConfig(image_size=32))
    for v in range(50):
        r.render(spinel, view_rotation(0, MID, v))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for v in range(400):
        r.render(spinel, view_rotation(0, MID, v))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    r.close()
    r.close()
    assert grown_mb < 20, f"peak RSS grew {grown_mb:.1f} MB over 400 renders"
    with pytest.raises(RenderError, match="closed"):
        r.render(spinel)


def test_backend_probe_reports_instead_of_crashing(monkeypatch) -> None:
    ok, detail = backend.probe("vtkNoSuchRenderWindow")
    assert not ok and detail
    monkeypatch.setattr(backend, "_checked", None)
    monkeypatch.setattr(backend, "CANDIDATES", ("vtkNoSuchRenderWindow",))
    monkeypatch.delenv(backend.ENV_VAR, raising=False)
    with pytest.raises(RenderError, match="no offscreen OpenGL backend works here.*libegl1"):
        backend.ensure_backend()


@pytest.mark.parametrize("method", ["impostor", "mesh"])
def test_each_view_is_drawn_fresh(spinel, method) -> None:
    """A renderer reused across views and structures gives the pixels of a fresh one (no stale buffers)."""
    cfg = RenderConfig(image_size=40, method=method)
    other = _one_atom("Ni")
    with Renderer(cfg) as r:
        seq = [r.render(spinel, view_quaternion(0, MID, v)) for v in range(3)] + [r.render(other)]
        seq.append(r.render(spinel, view_quaternion(0, MID, 1)))
    fresh = []
    for structure, view in ((spinel, 0), (spinel, 1), (spinel, 2), (other, None), (spinel, 1)):
        with Renderer(cfg) as r:
            fresh.append(r.render(structure, None if view is None else view_quaternion(0, MID, view)))
    for i, (a, b) in enumerate(zip(seq, fresh, strict=True)):
        assert np.array_equal(a, b), f"render {i} differs from a fresh renderer's"


def test_png_round_trip_and_size(spinel, renderer) -> None:
    import io

    from PIL import Image

    image = renderer.render(spinel, view_rotation(0, MID, 2))
    noise = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    for img in (image, noise):
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(img))).convert("RGB")), img)
    assert len(encode_png(image)) < image.nbytes / 2
    with pytest.raises(ValueError, match="uint8"):
        encode_png(image.astype(np.float32))


def test_trajectory_frames_are_one_continuous_rotation() -> None:
    from crystalvision.render.rotations import frame_angles_deg, trajectory_quaternions

    q = trajectory_quaternions(0, "mp-a", 40, 6.0)
    angles = frame_angles_deg(q)
    assert np.allclose(angles, 6.0, atol=1e-6)
    assert np.allclose(q, trajectory_quaternions(0, "mp-a", 60, 6.0)[:40])  # more frames leave earlier ones alone
    assert not np.allclose(q[0], trajectory_quaternions(0, "mp-b", 1, 6.0)[0])  # seeded start per structure
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0) and (q[:, 3] >= 0).all()
    from scipy.spatial.transform import Rotation

    rots = Rotation.from_quat(q)
    axes = (rots[1:] * rots[:-1].inv()).as_rotvec()
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    turn = np.degrees(np.arccos(np.clip((axes[1:] * axes[:-1]).sum(axis=1), -1, 1)))
    assert np.allclose(turn, turn[0], atol=1e-4) and 0 < turn[0] <= 1.5 + 1e-6, "smooth drift, <= 1/4 step a frame"
    assert np.degrees(np.arccos(np.clip(axes[0] @ axes[-1], -1, 1))) > 20, "the axis does drift"
    starts = np.stack(
        [Rotation.from_quat(trajectory_quaternions(0, f"mp-{i}", 1, 6.0)[0]).as_matrix() for i in range(800)]
    )
    assert np.abs(starts.mean(axis=0)).max() < 0.08  # uniform start orientations


def test_view_protocol_config_errors_name_the_key(tmp_path) -> None:
    from crystalvision.core.errors import ConfigError
    from crystalvision.core.pipeline_file import load_pipeline

    path = tmp_path / "p.yaml"
    path.write_text("name: x\n")
    for bad in (0, -3, 180, 270):
        with pytest.raises(ConfigError, match=r"render.trajectory_step_deg.*open range \(0, 180\) degrees"):
            load_pipeline(path, {"render": {"trajectory_step_deg": bad}})
    with pytest.raises(ConfigError, match=r"render.views.*'uniform' or 'trajectory'"):
        load_pipeline(path, {"render": {"views": "video"}})
    assert load_pipeline(path, {"render": {"views": "trajectory", "trajectory_step_deg": 179.5}}).render.views


def test_config_hash_covers_the_view_protocol() -> None:
    from crystalvision.render.job import render_config_hash

    uniform = RenderConfig()
    trajectory = RenderConfig(views="trajectory")
    assert render_config_hash(uniform) != render_config_hash(trajectory)
    assert render_config_hash(trajectory) != render_config_hash(RenderConfig(views="trajectory", trajectory_step_deg=3))
    assert render_config_hash(uniform) == render_config_hash(RenderConfig(trajectory_step_deg=3)), "unused by uniform"


def _hash_with_edit(tmp_path, label: str, module: str, old: str, new: str) -> str:
    """render_config_hash(RenderConfig()) computed by a copy of the package whose ``render/<module>`` has ``old``
    replaced by ``new`` (a fresh interpreter, as a new checkout would compute it)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    package = Path(__file__).parents[2] / "platform/crystalvision"
    copy = tmp_path / label
    shutil.copytree(package, copy / "crystalvision", ignore=shutil.ignore_patterns("__pycache__", "snapshots"))
    path = copy / "crystalvision/render" / module
    text = path.read_text()
    assert old in text, f"{module} no longer holds {old!r}: pick another edit"
    path.write_text(text.replace(old, new, 1))
    code = "from crystalvision.core.config import RenderConfig; from crystalvision.render.job import render_config_hash"
    code += "; print(render_config_hash(RenderConfig()))"
    done = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(copy)}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_config_hash_changes_when_the_code_that_draws_pixels_changes(tmp_path) -> None:
    """Renders are reused by config hash: an edit of the lighting (or palette, radii, scene...) must give new renders,
    a comment or formatting edit must not."""
    from crystalvision.render.job import render_config_hash

    today = render_config_hash(RenderConfig())
    lit = _hash_with_edit(tmp_path, "lit", "shading.py", "(-1.0, 1.0, 1.5)", "(-1.0, 1.0, 2.5)")
    assert lit != today, "a lighting change kept the old render hash: old renders would be reused"
    comment = _hash_with_edit(
        tmp_path, "comment", "shading.py", "SPECULAR_EXPONENT = 32", "SPECULAR_EXPONENT  =  32  # x"
    )
    assert comment == today, "a comment and spacing edit changed the render hash"
