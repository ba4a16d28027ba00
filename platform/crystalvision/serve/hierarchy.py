"""Space group -> crystal system: one consistent symmetry answer from the crystal-system and space-group heads.

Each space group belongs to exactly one crystal system. The two heads are combined as a product of experts over
space groups, ``p(sg) ∝ p_sg(sg) · p_cs(system(sg))``; the reported space group is the most probable one of that joint
distribution and the reported crystal system the one it implies, with the system's marginal probability (the sum
over its space groups), so the two never contradict each other. When the heads' own answers disagree, a warning
says so.

A CIF's symmetry needs no model: :func:`structure_symmetry` finds it exactly (spglib via pymatgen's
``SpacegroupAnalyzer``, at the symmetry labels' tolerance), and prediction reports it beside the heads' answers. The
symmetry heads are for input that has no structure: an image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

LABEL_SYMPREC = 0.1  # Å: the snapshots' symmetry labels are SpacegroupAnalyzer(symprec=0.1) (labels.md)


def structure_symmetry(structure: Any, symprec: float = LABEL_SYMPREC) -> tuple[str, str] | None:
    """(crystal system, space-group symbol) of a structure, found exactly at ``symprec``; None if spglib fails."""
    try:
        import warnings

        from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sga = SpacegroupAnalyzer(structure, symprec=symprec)
            return sga.get_crystal_system(), sga.get_space_group_symbol()
    except Exception:  # spglib raises several types on degenerate cells; the heads' answers still stand
        return None


@dataclass(frozen=True)
class Symmetry:
    """The joint symmetry answer for one input."""

    crystal_system: str
    crystal_system_probability: float
    spacegroup: str
    spacegroup_probability: float
    top3: list[tuple[str, float]]
    disagreement: str | None


@lru_cache(maxsize=512)
def _system_from_symbol(symbol: str) -> str | None:
    try:
        from pymatgen.symmetry.groups import SpaceGroup

        return SpaceGroup(symbol).crystal_system
    except Exception:  # an unknown symbol: pymatgen raises ValueError, KeyError...
        return None


def system_of(spacegroup: str, known: dict[str, str]) -> str | None:
    """The crystal system of a space-group symbol: from the training labels, else from pymatgen's tables."""
    return known.get(spacegroup) or _system_from_symbol(spacegroup)


def joint_symmetry(
    systems: Sequence[str],
    spacegroups: Sequence[str],
    known: dict[str, str],
    cs_proba: np.ndarray,
    sg_proba: np.ndarray,
) -> Symmetry:
    """Combine both heads' probabilities (classes ``systems`` / ``spacegroups``) into one consistent answer."""
    sys_index = {s: i for i, s in enumerate(systems)}
    owner = np.array([sys_index.get(system_of(sg, known) or "", -1) for sg in spacegroups])
    # a space group whose system the crystal-system head does not know keeps its own probability (uniform prior)
    prior = np.where(owner >= 0, cs_proba[np.clip(owner, 0, None)], 1.0 / max(len(systems), 1))
    joint = sg_proba * prior
    joint = joint / joint.sum() if joint.sum() > 0 else sg_proba
    best_sg = int(joint.argmax())
    if owner[best_sg] >= 0:  # the system the joint answer implies, with its marginal probability
        system = systems[owner[best_sg]]
        system_p = float(joint[owner == owner[best_sg]].sum())
    else:  # a space group of unknown system: fall back to the crystal-system head
        system, system_p = systems[int(cs_proba.argmax())], float(cs_proba.max())
    order = np.argsort(-joint)[:3]
    return Symmetry(
        crystal_system=system,
        crystal_system_probability=system_p,
        spacegroup=spacegroups[best_sg],
        spacegroup_probability=float(joint[best_sg]),
        top3=[(spacegroups[int(i)], float(joint[i])) for i in order],
        disagreement=_disagreement(systems, spacegroups, known, cs_proba, sg_proba),
    )


def _disagreement(
    systems: Sequence[str], spacegroups: Sequence[str], known: dict[str, str], cs: np.ndarray, sg: np.ndarray
) -> str | None:
    head_sys, head_sg = systems[int(cs.argmax())], spacegroups[int(sg.argmax())]
    implied = system_of(head_sg, known)
    if implied is None or implied == head_sys:
        return None
    return (
        f"the heads disagree: crystal-system head says {head_sys} ({cs.max():.2f}), space-group head says "
        f"{head_sg} ({sg.max():.2f}), which is {implied}; the reported symmetry combines both"
    )
