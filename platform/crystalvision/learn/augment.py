"""Training augmentation that keeps colour, test-time averaging over in-plane views, and a smoothed class loss.

Colour encodes the element in these renders, so only geometric transforms are used: in-plane rotation (multiples
of 90 degrees, exact, or any angle), horizontal/vertical flips and zoom. Everything works on batches (NCHW tensors
on any device), uint8 in [0, 255] or already normalised with the model's statistics; the area uncovered by a
rotation or a zoom-out is filled with the render background (white by default).

Wiring (train.py owns the loop): after ``preprocess`` in the training step,
``x = augment_batch(x, cfg.train.augment, normalised=True)`` when ``cfg.train.augment.enabled``; the class-head
loss becomes ``classification_loss(logits, y, cfg.train.label_smoothing)``. At test time ``predict_dihedral``
averages the model over the 8 exact in-plane views (evaluate already averages a structure's rendered views:
``test_struct_*``).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from crystalvision.core import AugmentConfig
from crystalvision.learn.model import MEAN, STD, plain_outputs


def background_value(x: torch.Tensor, normalised: bool, background=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """The background colour in the batch's own units, shaped (1, C, 1, 1)."""
    bg = torch.tensor(background, dtype=torch.float32, device=x.device)
    mean, std = torch.tensor(MEAN, device=x.device), torch.tensor(STD, device=x.device)
    bg = (bg - mean) / std if normalised else bg * 255.0
    return bg.view(1, -1, 1, 1)


def _sample(n: int, cfg: AugmentConfig, generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
    """Per image: rotation angle (radians), scale, horizontal and vertical flip signs."""
    u = torch.rand(n, 4, generator=generator)
    if cfg.rotate == "any":
        angle = u[:, 0] * 2 * math.pi
    elif cfg.rotate == "right_angles":
        angle = torch.floor(u[:, 0] * 4) * (math.pi / 2)
    else:
        angle = torch.zeros(n)
    lo, hi = cfg.scale
    scale = lo + (hi - lo) * u[:, 1]
    flip_x = torch.where((u[:, 2] < 0.5) & cfg.flip, -1.0, 1.0)
    flip_y = torch.where((u[:, 3] < 0.5) & cfg.flip, -1.0, 1.0)
    return angle, scale, flip_x, flip_y


def augment_batch(
    x: torch.Tensor,
    cfg: AugmentConfig,
    *,
    normalised: bool | None = None,
    background=(1.0, 1.0, 1.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random rotation, flips and zoom of every image of an NCHW batch; same dtype and device out.

    ``normalised`` defaults to "not uint8". Pixels are resampled bilinearly; the uncovered area gets the background.
    """
    if not cfg.enabled or len(x) == 0:
        return x
    normalised = x.dtype != torch.uint8 if normalised is None else normalised
    xf = x.float()
    angle, scale, fx, fy = (t.to(x.device) for t in _sample(len(x), cfg, generator))
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # output pixel -> input location: inverse rotation and zoom, then flips
    theta = torch.stack(
        [
            torch.stack([cos * fx, -sin * fx, torch.zeros_like(cos)], 1),
            torch.stack([sin * fy, cos * fy, torch.zeros_like(cos)], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(xf.shape), align_corners=False)
    bg = background_value(xf, normalised, background)
    out = F.grid_sample(xf - bg, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + bg
    if x.dtype == torch.uint8:
        return out.round().clamp(0, 255).to(torch.uint8)
    return out.to(x.dtype)


def dihedral_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 exact in-plane views of an NCHW batch: 4 right-angle rotations, each also mirrored."""
    rots = [torch.rot90(x, k, dims=(2, 3)) for k in range(4)]
    return rots + [torch.flip(r, dims=(3,)) for r in rots]


@torch.no_grad()
def predict_dihedral(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Model outputs averaged over the 8 dihedral views: regression outputs averaged, class heads as probabilities.

    Returns ``band_gap`` / ``energy_above_hull`` (the model's units) and ``<head>_proba``.
    """
    sums: dict[str, torch.Tensor] = {}
    views = dihedral_views(x)
    for v in views:
        for name, value in plain_outputs(model, v).items():
            sums[name] = sums.get(name, 0) + value
    return {k: v / len(views) for k, v in sums.items()}


def classification_loss(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy with optional label smoothing (``train.label_smoothing``)."""
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing)
