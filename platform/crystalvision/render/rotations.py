"""Seeded random orientations: uniform on SO(3), one independent stream per (seed, material_id, view).

Each view's generator is seeded from a hash of (seed, material_id, view), so adding or removing structures or
views never changes the orientation of any other image.
"""

from __future__ import annotations

import hashlib

import numpy as np
from scipy.spatial.transform import Rotation


def view_seed(seed: int, material_id: str, view: int) -> int:
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
