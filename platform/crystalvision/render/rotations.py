"""Seeded orientations per structure, under two view protocols (``render.views``).

- ``uniform``: independent, uniformly random rotations (Haar measure on SO(3)). Each view's generator is seeded
  from a hash of (seed, material_id, view), so adding or removing structures or views never changes the
  orientation of any other image.
- ``trajectory``: the frames of one continuous random rotation, the way the study captured its images from a
  video of a rotating model. A seeded uniform start orientation; each next frame turns the previous one by exactly
  ``trajectory_step_deg`` about an axis that drifts smoothly (it precesses about a second random axis at a quarter
  of the step per frame). Frame v depends only on frames < v, so more views leave earlier ones alone.

Quaternions are scalar-last (x, y, z, w) as scipy writes them, with the canonical sign (w >= 0).
"""

from __future__ import annotations

import hashlib

import numpy as np
from scipy.spatial.transform import Rotation

AXIS_DRIFT = 0.25  # the rotation axis turns by this fraction of the step per frame


def view_seed(seed: int, material_id: str, view: int | str) -> int:
    """A 64-bit seed derived from (seed, material_id, view)."""
    digest = hashlib.sha256(f"{seed}:{material_id}:{view}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def view_rotation(seed: int, material_id: str, view: int) -> Rotation:
    """The uniformly random rotation of one view."""
    return Rotation.random(rng=np.random.default_rng(view_seed(seed, material_id, view)))


def view_quaternion(seed: int, material_id: str, view: int) -> np.ndarray:
    """Quaternion (x, y, z, w; scalar-last as scipy) of one view, canonical sign (w >= 0)."""
    q = view_rotation(seed, material_id, view).as_quat(canonical=True)
    return q.astype(np.float64)


def view_quaternions(seed: int, material_id: str, n_views: int) -> np.ndarray:
    """(n_views, 4) quaternions for views 0..n_views-1 of one material."""
    return np.stack([view_quaternion(seed, material_id, v) for v in range(n_views)])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def trajectory_quaternions(seed: int, material_id: str, n_views: int, step_deg: float) -> np.ndarray:
    """(n_views, 4) frames of one continuous random rotation, ``step_deg`` apart (see the module docstring)."""
    rng = np.random.default_rng(view_seed(seed, material_id, "trajectory"))
    current = Rotation.random(rng=rng)
    axis = _unit(rng.normal(size=3))
    drift = Rotation.from_rotvec(_unit(rng.normal(size=3)) * np.radians(step_deg * AXIS_DRIFT))
    step = np.radians(step_deg)
    frames = []
    for _ in range(n_views):
        frames.append(current.as_quat(canonical=True))
        current = Rotation.from_rotvec(axis * step) * current  # turn in the camera frame, as a video does
        axis = _unit(drift.apply(axis))
    return np.asarray(frames, dtype=np.float64).reshape(n_views, 4)


def structure_quaternions(cfg, material_id: str, n_views: int | None = None) -> np.ndarray:
    """(n, 4) quaternions of every view of one material under ``cfg.views`` (a RenderConfig)."""
    n = cfg.views_per_structure if n_views is None else n_views
    if cfg.views == "trajectory":
        return trajectory_quaternions(cfg.seed, material_id, n, cfg.trajectory_step_deg)
    return view_quaternions(cfg.seed, material_id, n)


def frame_angles_deg(quats: np.ndarray) -> np.ndarray:
    """Angles (degrees) between consecutive rotations of a (n, 4) quaternion sequence."""
    rots = Rotation.from_quat(np.asarray(quats))
    return np.degrees((rots[1:] * rots[:-1].inv()).magnitude())
