"""Leakage measurement (leakage.py): SSIM equals scikit-image's, near-copies are found, figure and report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from skimage.metrics import structural_similarity

from crystalvision.evaluate.leakage import (
    accuracy_by_similarity,
    leakage_figure,
    leakage_html,
    measure_split,
    pairwise_ssim,
    prepare,
    ssim_pairs,
    summary,
)


def blobs(angle_deg: float, seed: int, size: int = 48) -> np.ndarray:
    """A synthetic 'render': coloured discs of one structure (seed) seen at an in-plane angle."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-0.6, 0.6, (6, 2))
    colours = rng.integers(0, 255, (6, 3))
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    yy, xx = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    img = np.full((size, size, 3), 255, np.uint8)
    for c, col in zip(centres @ rot.T, colours, strict=True):
        img[(xx - c[0]) ** 2 + (yy - c[1]) ** 2 < 0.06] = col
    return img


def test_ssim_equals_scikit_image():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    b = np.stack([blobs(10 * i, i, 32) for i in range(3)])
    x, y = prepare(a, 32), prepare(b, 32)
    ours = pairwise_ssim(x, y).numpy()
    for i in range(3):
        for j in range(3):
            ref = structural_similarity(x[i, 0].double().numpy(), y[j, 0].double().numpy(), data_range=1.0)
            assert ours[i, j] == pytest.approx(ref, abs=1e-4)
    rgb = pairwise_ssim(prepare(a, 32, grey=False), prepare(b, 32, grey=False)).numpy()
    ref = structural_similarity(a[0] / 255.0, b[1] / 255.0, data_range=1.0, channel_axis=2)
    assert rgb[0, 1] == pytest.approx(ref, abs=1e-4)


def test_video_frames_have_near_copies_uniform_views_do_not():
    structures = [f"mp-{i}" for i in range(4)]
    # 'trajectory': 12 frames 6 degrees apart, even frames train, odd frames test (a split by image)
    video = {m: [blobs(6 * v, i) for v in range(12)] for i, m in enumerate(structures)}
    # 'uniform': independent random angles
    rng = np.random.default_rng(1)
    uniform = {m: [blobs(rng.uniform(0, 360), i) for _ in range(12)] for i, m in enumerate(structures)}

    def split(views):
        tr = [(m, im) for m, ims in views.items() for im in ims[0::2]]
        te = [(m, im) for m, ims in views.items() for im in ims[1::2]]
        return (np.stack([i for _, i in tr]), [m for m, _ in tr], np.stack([i for _, i in te]), [m for m, _ in te])

    near_video = measure_split(*split(video), size=48)
    near_uniform = measure_split(*split(uniform), size=48)
    assert near_video.same_structure.all()
    assert np.median(near_video.ssim) > 0.7
    assert np.median(near_video.ssim) > np.median(near_uniform.ssim) + 0.1
    # the nearest training frame of a video frame is its neighbour (same structure, adjacent index)
    tr_ids = split(video)[1]
    assert all(tr_ids[j] == m for j, m in zip(near_video.index, split(video)[3], strict=True))


def test_grouped_split_finds_another_structure():
    train = np.stack([blobs(a, 0) for a in (0, 90, 180)])
    test = np.stack([blobs(a, 1) for a in (0, 45)])
    near = measure_split(train, ["mp-0"] * 3, test, ["mp-1"] * 2, size=48)
    assert not near.same_structure.any()
    assert np.isfinite(near.ssim).all() and (near.index >= 0).all()


def test_search_covers_every_training_image_not_only_the_same_structure():
    """Split by image: the test image's own structure is in training, but another structure's training image is a
    near-copy of it. The nearest image is that other structure's (a same-structure-only search would miss it), the
    exhaustive search and the pixel prefilter agree, and the prefilter's candidate count bounds its search."""
    from crystalvision.evaluate.leakage import nearest_train_ssim

    test = prepare(np.stack([blobs(0, 1)]), 48)
    twin = prepare(np.stack([blobs(0, 1)]), 48) * 0.98 + 0.01  # structure 0's image, almost identical
    own = prepare(np.stack([blobs(90, 1), blobs(180, 1)]), 48)  # the same structure, other views
    train = torch.cat([own, twin])
    ids = ["mp-1", "mp-1", "mp-0"]
    for rule in (None, 2):
        near = nearest_train_ssim(test, ["mp-1"], train, ids, candidates=rule)
        assert near.index.tolist() == [2] and near.same_structure.tolist() == [False], rule
        assert near.ssim[0] > 0.95
    exhaustive = pairwise_ssim(test, train)[0]
    assert near.ssim[0] == pytest.approx(exhaustive.max().item(), abs=1e-6)
    with pytest.raises(ValueError, match="one id per image"):
        nearest_train_ssim(test, ["mp-1"], train, ids[:2])


def test_pairwise_ssim_is_the_same_in_any_chunking():
    rng = np.random.default_rng(3)
    x = prepare(rng.integers(0, 256, (5, 24, 24, 3), dtype=np.uint8), 24, grey=False)
    y = prepare(rng.integers(0, 256, (7, 24, 24, 3), dtype=np.uint8), 24, grey=False)
    whole = pairwise_ssim(x, y)
    assert torch.allclose(pairwise_ssim(x, y, chunk=3), whole, atol=1e-6)
    pairs = ssim_pairs(x.repeat_interleave(7, 0), y.repeat(5, 1, 1, 1)).view(5, 7)
    assert torch.allclose(pairs, whole, atol=1e-5)


def test_accuracy_by_similarity_bins():
    ssim = np.array([0.1, 0.35, 0.92, 0.97, 0.99])
    correct = np.array([0, 1, 1, 1, 0], bool)
    table = accuracy_by_similarity(ssim, correct, bins=(0.0, 0.5, 0.95, 1.0))
    assert table["n"].tolist() == [2, 1, 2]
    assert table["acc"].tolist() == [0.5, 1.0, 0.5]
    s = summary(ssim, {"crystal_system": correct})
    assert s["leakage_frac_ssim_ge_0.9"] == pytest.approx(0.6)
    assert s["leakage_acc_crystal_system"] == pytest.approx(0.6)


def test_figure_and_report_section(tmp_path):
    rng = np.random.default_rng(0)
    protocols = {
        "trajectory, split by image": (rng.uniform(0.85, 1.0, 200), {"crystal_system": rng.random(200) < 0.98}),
        "uniform, grouped": (rng.uniform(0.2, 0.6, 200), {"crystal_system": rng.random(200) < 0.4}),
    }
    fig = leakage_figure(protocols, tmp_path / "leakage.png")
    assert fig.stat().st_size > 10_000
    html = leakage_html({k: summary(v[0], v[1]) for k, v in protocols.items()}, fig)
    assert "data:image/png;base64" in html and "trajectory, split by image" in html

    from crystalvision.core.config import EvaluateConfig
    from crystalvision.evaluate.report import write_report
    from crystalvision.learn.model import ModelSpec

    spec = ModelSpec(crystal_system_classes=["a"], spacegroup_classes=["b"])
    page = write_report(
        tmp_path / "report.html",
        metrics={},
        splits={},
        label_source={},
        spec=spec,
        cfg=EvaluateConfig(),
        reports={},
        absent={},
        figures=[],
        sections=[html],
    )
    assert "Leakage: nearest training image" in page.read_text()


def test_prepare_downsamples_by_area():
    img = np.zeros((1, 64, 64, 3), np.uint8)
    img[:, :32] = 255
    t = prepare(img, 16)
    assert t.shape == (1, 1, 16, 16) and t.dtype == torch.float32
    assert t[0, 0, :8].mean().item() == pytest.approx(1.0, abs=1e-3) and t[0, 0, 8:].max().item() == 0


def test_any_structure_search_is_a_pixel_nearest_neighbour():
    train = np.stack([blobs(0, 0), blobs(90, 0), blobs(0, 1), blobs(90, 1)])
    test = np.stack([blobs(6, 1)])  # a near-copy of structure 1's first view
    x_tr, x_te = prepare(train, 48), prepare(test, 48)
    from crystalvision.evaluate.leakage import nearest_train_ssim

    near = nearest_train_ssim(x_te, ["mp-1"], x_tr, ["mp-0", "mp-0", "mp-1", "mp-1"])
    assert near.index.tolist() == [2] and near.same_structure.tolist() == [True]


def test_report_section_states_its_search_rule(tmp_path):
    """The evaluation's leakage section searches every training image with one stated rule (prefilter or
    exhaustive), writes leakage.csv with the nearest image of each test image, and the two rules agree here."""
    from crystalvision.data.storage import ObjectStore
    from crystalvision.evaluate.leakage import report_section
    from tests.support.tiny import toy_splits

    store = ObjectStore(str(tmp_path / "store"))
    splits = toy_splits(store, n_structures=6, views=2)
    test = splits.test.assign(crystal_system_pred=splits.test["crystal_system"])
    results = {}
    for rule in (4, None):
        out = tmp_path / f"rule-{rule}"
        out.mkdir()
        metrics, html = report_section(store, splits.train, test, out, size=16, candidates=rule)
        table = pd.read_csv(out / "leakage.csv")
        assert len(table) == len(test) and set(table["nearest_train_image"]) <= set(splits.train["image_key"])
        assert metrics["leakage_search_candidates"] == float(rule or 0) and "search_candidates" in html
        results[rule] = table["nearest_ssim"].to_numpy()
    assert (results[4] <= results[None] + 1e-6).all()
