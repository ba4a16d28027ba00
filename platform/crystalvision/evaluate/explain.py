"""Explainability: captum SmoothGrad saliency on the crystal-system head and SSIM between class maps.

Noise is added in pixel space scaled to [0, 1] (the ImageNet normalisation sits inside the attributed
function), so ``saliency_noise = 0.05`` means a standard deviation of 5 % of the pixel range, as in the study.
Each map is the absolute gradient, max over colour channels, averaged over the noisy samples, scaled to [0, 1].
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from captum.attr import NoiseTunnel, Saliency
from skimage.metrics import structural_similarity
from torch import nn

from crystalvision.learn import MEAN, STD, CrystalNet, unwrap

log = logging.getLogger(__name__)


@dataclass
class SaliencyResult:
    """One example per crystal system: inputs, grey maps in [0, 1], and their pairwise SSIM."""

    classes: list[str]
    material_ids: list[str]
    splits: list[str]
    predicted: list[str]
    images: np.ndarray  # (n, H, W, 3) uint8
    maps: np.ndarray  # (n, H, W) float in [0, 1]
    ssim: np.ndarray  # (n, n)


class _PixelHead(nn.Module):
    """[0, 1] NCHW pixels -> crystal-system logits (normalisation inside, so noise is in pixel units)."""

    def __init__(self, model: CrystalNet, head: str = "crystal_system"):
        super().__init__()
        self.model, self.head = model, head
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)[self.head]


def pick_examples(frames: Sequence[tuple[str, pd.DataFrame]], column: str = "crystal_system") -> pd.DataFrame:
    """First image (lowest material_id, view) of each class, taken from the first frame that has it."""
    picked = []
    seen: set[str] = set()
    for name, df in frames:
        for value, group in df.sort_values(["material_id", "view"]).groupby(column, sort=False):
            if value not in seen:
                seen.add(value)
                picked.append(group.iloc[[0]].assign(split=name))
    if not picked:
        return pd.DataFrame()
    return pd.concat(picked).sort_values(f"{column}_id").reset_index(drop=True)


def smoothgrad_maps(
    model: CrystalNet, images: np.ndarray, targets: Sequence[int], noise: float, samples: int
) -> np.ndarray:
    """SmoothGrad (captum NoiseTunnel over Saliency) maps for uint8 NHWC images -> (N, H, W) in [0, 1]."""
    base = unwrap(model).eval()
    device = next(base.parameters()).device
    head = _PixelHead(base).to(device).eval()
    tunnel = NoiseTunnel(Saliency(head))
    maps = []
    for img, target in zip(images, targets, strict=True):
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float().div(255.0).to(device)
        x.requires_grad_(True)
        attr = tunnel.attribute(
            x,
            nt_type="smoothgrad",
            nt_samples=samples,
            nt_samples_batch_size=min(samples, 8),
            stdevs=noise,
            target=int(target),
        )
        m = attr.detach().abs().amax(dim=1)[0].cpu().numpy()
        maps.append(m / m.max() if m.max() > 0 else m)
    if not maps:
        return np.zeros((0, *images.shape[1:3]))
    return np.stack(maps)


def ssim_matrix(maps: np.ndarray) -> np.ndarray:
    """Pairwise SSIM (scikit-image, data range 1) between (N, H, W) maps in [0, 1]."""
    n = len(maps)
    out = np.ones((n, n))
    win = min(7, *maps.shape[1:3]) if n else 7
    win = win if win % 2 else win - 1
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = structural_similarity(maps[i], maps[j], data_range=1.0, win_size=win)
    return out


def explain_examples(
    model: CrystalNet, examples: pd.DataFrame, images: np.ndarray, noise: float, samples: int
) -> SaliencyResult:
    """Saliency for ``examples`` (rows from :func:`pick_examples`, images aligned) on their true class."""
    classes = unwrap(model).spec.classes("crystal_system")
    targets = examples["crystal_system_id"].astype(int).tolist()
    log.info("SmoothGrad saliency: %d examples, %d samples each, noise %.3f", len(targets), samples, noise)
    maps = smoothgrad_maps(model, images, targets, noise, samples)
    device = next(unwrap(model).parameters()).device
    with torch.no_grad():
        pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255.0)
        logits = _PixelHead(unwrap(model)).to(device).eval()(pixels.to(device))
    predicted = [classes[k] for k in logits.argmax(-1).cpu().tolist()] if len(images) else []
    return SaliencyResult(
        classes=[classes[k] for k in targets],
        material_ids=examples["material_id"].tolist(),
        splits=examples["split"].tolist(),
        predicted=predicted,
        images=images,
        maps=maps,
        ssim=ssim_matrix(maps),
    )
