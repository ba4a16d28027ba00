"""Leakage, measured: how similar is each test image to its nearest training image?

Under the study's split by image, frames of one structure land on both sides; when the views are frames of a
continuous rotation, almost every test image has a near-copy in training. This module measures that with SSIM
(the structural similarity of scikit-image's ``structural_similarity``: 7x7 uniform window, sample covariance,
K1 = 0.01, K2 = 0.03, border of 3 px cropped) on downsampled renders, vectorised in torch so thousands of images
take seconds on a CPU; ``tests/evaluate/test_leakage.py`` checks it against scikit-image itself.

Scope, the same rule for every protocol (split by image or by structure): each test image is compared with *every*
training image, whatever its structure; :attr:`Nearest.same_structure` then says whether the nearest one shows the
test image's own structure. ``candidates=None`` (the default) is exhaustive SSIM; ``candidates=k`` is a stated
prefilter: SSIM on the ``k`` training images nearest in pixel distance (16 px thumbnails), again over all of them.
Arrays in, arrays / frames / figures out; :func:`leakage_html` gives a report section.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from crystalvision.core import progress

log = logging.getLogger(__name__)

WIN = 7
K1, K2 = 0.01, 0.03
GREY = (0.2125, 0.7154, 0.0721)  # scikit-image's rgb2gray weights
DEFAULT_BINS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
# the evaluation report's search: SSIM on the 64 training images nearest in pixel distance (any structure), the same
# rule for every split; exhaustive SSIM costs len(test) x len(train) pairs (about 20,000 pairs/s per core at 32 px)
DEFAULT_CANDIDATES = 64


@dataclass
class Nearest:
    """Per test image: SSIM to the nearest training image, its index in the training array, and whether that
    image shows the same structure."""

    ssim: np.ndarray
    index: np.ndarray
    same_structure: np.ndarray


def prepare(images: np.ndarray, size: int = 64, grey: bool = True) -> torch.Tensor:
    """uint8 NHWC -> float32 (N, C, size, size) in [0, 1] (area downsampling; C = 1 grey or 3)."""
    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    if grey:
        t = (t * torch.tensor(GREY).view(1, 3, 1, 1)).sum(1, keepdim=True)
    if t.shape[-1] != size:
        t = F.interpolate(t, size=(size, size), mode="area")
    return t


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Local (valid 7x7 window) means of x and x² for (N, C, H, W)."""
    return F.avg_pool2d(x, WIN, stride=1), F.avg_pool2d(x * x, WIN, stride=1)


def ssim_pairs(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM of aligned pairs ``x[i]``, ``y[i]`` of (N, C, H, W) images (mean over channels), shape (N,)."""
    ux, uxx = _stats(x)
    uy, uyy = _stats(y)
    uxy = F.avg_pool2d(x * y, WIN, stride=1)
    norm = WIN * WIN / (WIN * WIN - 1)
    vx, vy, vxy = norm * (uxx - ux * ux), norm * (uyy - uy * uy), norm * (uxy - ux * uy)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))


def pairwise_ssim(x: torch.Tensor, y: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """SSIM of every pair (x[i], y[j]), shape (len(x), len(y)): local statistics of each image once, only the
    cross term per pair, ``chunk`` pairs at a time."""
    ux, uxx = _stats(x)
    uy, uyy = _stats(y)
    norm = WIN * WIN / (WIN * WIN - 1)
    vx, vy = norm * (uxx - ux * ux), norm * (uyy - uy * uy)
    c1, c2 = K1**2, K2**2
    out = torch.empty(len(x), len(y))
    cols = max(1, min(len(y), chunk))
    rows = max(1, chunk // cols)
    for i in range(0, len(x), rows):
        xi, uxi, vxi = x[i : i + rows, None], ux[i : i + rows, None], vx[i : i + rows, None]
        for j in range(0, len(y), cols):
            yj, uyj, vyj = y[None, j : j + cols], uy[None, j : j + cols], vy[None, j : j + cols]
            prod = (xi * yj).flatten(0, 1)
            uxy = F.avg_pool2d(prod, WIN, stride=1).view(len(xi), yj.shape[1], *ux.shape[1:])
            vxy = norm * (uxy - uxi * uyj)
            s = (2 * uxi * uyj + c1) * (2 * vxy + c2) / ((uxi * uxi + uyj * uyj + c1) * (vxi + vyj + c2))
            out[i : i + rows, j : j + cols] = s.mean(dim=(2, 3, 4))
    return out


def _candidates(x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` training images nearest in pixel distance (16 px thumbnails), shape (len(x), k)."""
    small = 16 if x.shape[-1] >= 16 else x.shape[-1]
    fx = F.interpolate(x, size=(small, small), mode="area").flatten(1)
    fy = F.interpolate(y, size=(small, small), mode="area").flatten(1)
    return torch.cdist(fx, fy).topk(min(k, len(y)), largest=False).indices


@torch.no_grad()
def nearest_train_ssim(
    test: torch.Tensor,
    test_groups: Sequence[str],
    train: torch.Tensor,
    train_groups: Sequence[str],
    *,
    candidates: int | None = None,
    block: int = 64,
) -> Nearest:
    """For each prepared test image, the most similar of *all* training images (any structure).

    ``candidates=None`` searches exhaustively; ``candidates=k`` takes SSIM on the ``k`` training images nearest in
    pixel distance only (the same rule for every protocol; say so beside the numbers). The nearest image is also
    the nearest neighbour of an SSIM 1-NN classifier. ``block`` test images are compared at a time.
    """
    test_groups, train_groups = np.asarray(test_groups), np.asarray(train_groups)
    if len(test_groups) != len(test) or len(train_groups) != len(train):
        raise ValueError(
            f"{len(test)} test / {len(train)} training images but {len(test_groups)} / {len(train_groups)} "
            "material ids: pass one id per image"
        )
    ssim = np.full(len(test), np.nan)
    index = np.full(len(test), -1)
    same = np.zeros(len(test), dtype=bool)
    if len(train) == 0:
        return Nearest(ssim=ssim, index=index, same_structure=same)
    for start in range(0, len(test), block):
        progress.beat("evaluate", step="leakage search", done=start, total=len(test))
        rows = np.arange(start, min(start + block, len(test)))
        if candidates is None:
            s = pairwise_ssim(test[rows], train)
            best = s.argmax(1)
            found = best
        else:
            cand = _candidates(test[rows], train, candidates)
            s = ssim_pairs(test[rows].repeat_interleave(cand.shape[1], 0), train[cand.reshape(-1)]).view(cand.shape)
            best = s.argmax(1)
            found = cand[torch.arange(len(rows)), best]
        ssim[rows] = s.max(1).values.numpy()
        index[rows] = found.numpy()
    same[:] = train_groups[index] == test_groups
    return Nearest(ssim=ssim, index=index, same_structure=same)


def accuracy_by_similarity(ssim: np.ndarray, correct: np.ndarray, bins: Sequence[float] = DEFAULT_BINS) -> pd.DataFrame:
    """Accuracy of the test images in each SSIM bin: columns lo, hi, n, acc (NaN for empty bins)."""
    ssim, correct = np.asarray(ssim, float), np.asarray(correct, bool)
    edges = np.asarray(bins, float)
    which = np.clip(np.digitize(ssim, edges[1:-1]), 0, len(edges) - 2)
    rows = []
    for b in range(len(edges) - 1):
        m = (which == b) & np.isfinite(ssim)
        rows.append(
            {"lo": edges[b], "hi": edges[b + 1], "n": int(m.sum()), "acc": correct[m].mean() if m.any() else np.nan}
        )
    return pd.DataFrame(rows)


def summary(ssim: np.ndarray, correct: Mapping[str, np.ndarray] | None = None, near: float = 0.9) -> dict[str, float]:
    """Distribution of nearest-SSIM (median, quartiles, fraction above ``near``) and accuracy per head."""
    s = np.asarray(ssim, float)
    s = s[np.isfinite(s)]
    out = {
        "leakage_n": float(len(s)),
        "leakage_ssim_median": float(np.median(s)) if len(s) else np.nan,
        "leakage_ssim_q25": float(np.quantile(s, 0.25)) if len(s) else np.nan,
        "leakage_ssim_q75": float(np.quantile(s, 0.75)) if len(s) else np.nan,
        f"leakage_frac_ssim_ge_{near:g}": float((s >= near).mean()) if len(s) else np.nan,
    }
    for head, c in (correct or {}).items():
        out[f"leakage_acc_{head}"] = float(np.mean(c)) if len(c) else np.nan
    return out


def leakage_figure(
    protocols: Mapping[str, tuple[np.ndarray, Mapping[str, np.ndarray]]],
    path: str | Path,
    bins: Sequence[float] = DEFAULT_BINS,
    min_count: int = 10,
) -> Path:
    """One figure: nearest-SSIM histogram per protocol (left), accuracy vs that SSIM per protocol/head (right).

    ``protocols``: name -> (nearest SSIM per test image, {head: per-image correct flags}); bins holding fewer than
    ``min_count`` images are not drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    hist_bins = np.linspace(0, 1, 41)
    styles = ["-", "--", ":", "-."]
    for name, (ssim, correct) in protocols.items():
        s = np.asarray(ssim, float)
        s = s[np.isfinite(s)]
        line = ax1.hist(
            s, bins=hist_bins, density=True, histtype="step", lw=2, label=f"{name} (median {np.median(s):.2f})"
        )
        colour = line[2][0].get_edgecolor()
        for j, (head, c) in enumerate(correct.items()):
            table = accuracy_by_similarity(ssim, c, bins)
            table = table[table["n"] >= min_count]  # a bin of two images says nothing
            mid = (table["lo"] + table["hi"]) / 2
            ax2.plot(mid, table["acc"], styles[j % 4], marker="o", color=colour, label=f"{name}: {head}")
    ax1.set_xlabel("SSIM of each test image to its nearest training image")
    ax1.set_ylabel("density")
    ax1.set_title("How close is the nearest training image?")
    ax1.legend(fontsize=7)
    ax2.set_xlabel("nearest-training-image SSIM (binned)")
    ax2.set_ylabel("test accuracy")
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_title("Test accuracy by nearest-image similarity")
    ax2.legend(fontsize=7)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def leakage_html(summaries: Mapping[str, Mapping[str, float]], figure: str | Path | None = None) -> str:
    """A report section (for ``report.write_report(sections=...)``): the figure and a per-protocol table."""
    from crystalvision.evaluate.report import _figure, _table

    keys = sorted({k for s in summaries.values() for k in s})
    rows = [[name, *[s.get(k, "") for k in keys]] for name, s in summaries.items()]
    fig = _figure(Path(figure)) if figure is not None and Path(figure).is_file() else ""
    return (
        "<h2>Leakage: nearest training image</h2><p>SSIM (scikit-image definition, grey, downsampled) of every test "
        "image to its nearest training image, searched over all training images of every structure (the same rule "
        "for every split: SSIM on the <i>search_candidates</i> training images nearest in pixel distance, 0 = "
        "exhaustive); <i>frac_nearest_same_structure</i> is the share of test images whose nearest training "
        "image shows their own structure. Under a split by image, frames of a rotation video have near-copies in "
        "training: that similarity, not the network, explains most of the accuracy.</p>"
        + fig
        + _table(["protocol", *[html.escape(k.removeprefix("leakage_")) for k in keys]], rows)
    )


def measure_split(
    train_images: np.ndarray,
    train_ids: Sequence[str],
    test_images: np.ndarray,
    test_ids: Sequence[str],
    *,
    size: int = 64,
    grey: bool = True,
) -> Nearest:
    """uint8 NHWC train/test images and their material ids -> :class:`Nearest` per test image."""
    log.info("leakage: SSIM of %d test images against %d training images at %d px", len(test_ids), len(train_ids), size)
    return nearest_train_ssim(prepare(test_images, size, grey), test_ids, prepare(train_images, size, grey), train_ids)


def load_prepared(store, keys: Sequence[str], size: int = 64, grey: bool = True, chunk: int = 256) -> torch.Tensor:
    """Read images from an object store in chunks, downsampled on the way (memory stays small)."""
    from crystalvision.data import load_images

    parts = [prepare(load_images(store, list(keys[s : s + chunk])), size, grey) for s in range(0, len(keys), chunk)]
    return torch.cat(parts) if parts else torch.zeros((0, 1 if grey else 3, size, size))


HEADS = ("crystal_system", "spacegroup")


def report_section(
    store,
    train: pd.DataFrame,
    test_predictions: pd.DataFrame,
    out: Path,
    *,
    size: int = 32,
    name: str = "this split",
    candidates: int | None = DEFAULT_CANDIDATES,
) -> tuple[dict[str, float], str]:
    """The leakage section of an evaluation: metrics, ``leakage.csv``, ``leakage.png`` and the report HTML.

    ``test_predictions`` are the test rows of ``predictions.csv`` (image_key, material_id, true and predicted class
    per head); ``train`` is the split's training frame. Images are read downsampled to ``size`` px (cheap). The
    search rule (``candidates``, None = exhaustive) is recorded as ``leakage_search_candidates`` (0 = exhaustive).
    """
    nearest = nearest_train_ssim(
        load_prepared(store, test_predictions["image_key"].tolist(), size),
        test_predictions["material_id"].to_numpy(),
        load_prepared(store, train["image_key"].tolist(), size),
        train["material_id"].to_numpy(),
        candidates=candidates,
    )
    correct = {
        h: (test_predictions[h].astype(str) == test_predictions[f"{h}_pred"].astype(str)).to_numpy()
        for h in HEADS
        if h in test_predictions
    }
    metrics = summary(nearest.ssim, correct)
    same = float(nearest.same_structure.mean()) if len(nearest.ssim) else np.nan
    metrics["leakage_frac_nearest_same_structure"] = same
    metrics["leakage_search_candidates"] = float(candidates or 0)
    table = test_predictions[["material_id", "image_key"]].copy()
    table["nearest_ssim"], table["nearest_same_structure"] = nearest.ssim, nearest.same_structure
    idx = np.clip(nearest.index, 0, None)
    table["nearest_train_image"] = np.where(nearest.index >= 0, train["image_key"].to_numpy()[idx], "")
    for h, c in correct.items():
        table[f"correct_{h}"] = c
    table.to_csv(out / "leakage.csv", index=False)
    figure = leakage_figure({name: (nearest.ssim, correct)}, out / "leakage.png", min_count=5) if len(table) else None
    log.info("leakage: median nearest SSIM %.3f over %d test images", metrics["leakage_ssim_median"], len(table))
    return metrics, leakage_html({name: metrics}, figure)
