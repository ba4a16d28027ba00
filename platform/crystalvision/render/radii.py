"""Space-filling radii: two named sets (``render.radii``).

- ``vesta``: VESTA's default element radii (metallic radii for metals, covalent radii for non-metals; e.g. O 0.74,
  Li 1.57, Mn 1.37, Ni 1.25 Å), the radii of the KAIST study's space-filling VESTA images. Values from the copy of
  VESTA's element table ``elements.ini`` in the public repository QijingZheng/VaspPoscarMayavi (commit b9cedfe), which
  agrees with VESTA's own ``.vesta`` files on H, C, O, Ti, Mn, Br, Ba and Dy. Elements H to Am.
- ``shannon``: Shannon (1976) six-coordinate radii for the Li-Mn-Ni-O elements, one table of two kinds: the
  crystal radius for O (O2- 1.26 Å; its ionic radius is 1.40 Å) and ionic radii for the cations (Li+ 0.76, Mn3+
  high spin 0.645, Ni2+ 0.69 Å); other elements fall back to pymatgen's ``Element.average_ionic_radius``, then to
  ``Element.atomic_radius``. Oxygen is the largest sphere, so it hides most cations.
"""

from __future__ import annotations

from functools import cache
from typing import Literal

from crystalvision.core import RenderError

RadiiSet = Literal["vesta", "shannon"]

# "shannon": the crystal radius for O, ionic radii for the cations (module docstring). This text is code, part of the
# render-code digest (pixel_code.py): rewording it would make every stored render look stale.
RADIUS_SOURCES: dict[str, str] = {
    "vesta": "VESTA default radii (elements.ini, QijingZheng/VaspPoscarMayavi): Li 1.57, Mn 1.37, Ni 1.25, O 0.74 Å",
    "shannon": "Shannon (1976) radii: Li 0.76, Mn 0.645, Ni 0.69, O 1.26 Å; else pymatgen average ionic radius",
}

# fmt: off
VESTA_RADII: dict[str, float] = {
    "H": 0.46, "He": 1.22, "Li": 1.57, "Be": 1.12, "B": 0.81, "C": 0.77, "N": 0.74, "O": 0.74,
    "F": 0.72, "Ne": 1.60, "Na": 1.91, "Mg": 1.60, "Al": 1.43, "Si": 1.18, "P": 1.10, "S": 1.04,
    "Cl": 0.99, "Ar": 1.92, "K": 2.35, "Ca": 1.97, "Sc": 1.64, "Ti": 1.47, "V": 1.35, "Cr": 1.29,
    "Mn": 1.37, "Fe": 1.26, "Co": 1.25, "Ni": 1.25, "Cu": 1.28, "Zn": 1.37, "Ga": 1.53, "Ge": 1.22,
    "As": 1.21, "Se": 1.04, "Br": 1.14, "Kr": 1.98, "Rb": 2.50, "Sr": 2.15, "Y": 1.82, "Zr": 1.60,
    "Nb": 1.47, "Mo": 1.40, "Tc": 1.35, "Ru": 1.34, "Rh": 1.34, "Pd": 1.37, "Ag": 1.44, "Cd": 1.52,
    "In": 1.67, "Sn": 1.58, "Sb": 1.41, "Te": 1.37, "I": 1.33, "Xe": 2.18, "Cs": 2.72, "Ba": 2.24,
    "La": 1.88, "Ce": 1.82, "Pr": 1.82, "Nd": 1.82, "Pm": 1.81, "Sm": 1.81, "Eu": 2.06, "Gd": 1.79,
    "Tb": 1.77, "Dy": 1.77, "Ho": 1.76, "Er": 1.75, "Tm": 1.00, "Yb": 1.94, "Lu": 1.72, "Hf": 1.59,
    "Ta": 1.47, "W": 1.41, "Re": 1.37, "Os": 1.35, "Ir": 1.36, "Pt": 1.39, "Au": 1.44, "Hg": 1.55,
    "Tl": 1.71, "Pb": 1.75, "Bi": 1.82, "Po": 1.77, "At": 0.62, "Rn": 0.80, "Fr": 1.00, "Ra": 2.35,
    "Ac": 2.03, "Th": 1.80, "Pa": 1.63, "U": 1.56, "Np": 1.56, "Pu": 1.64, "Am": 1.73,
}
# fmt: on

SHANNON_RADII: dict[str, float] = {"Li": 0.76, "Mn": 0.645, "Ni": 0.69, "O": 1.26}


def _check_element(symbol: str):
    from pymatgen.core import Element

    try:
        return Element(symbol)
    except ValueError:
        raise RenderError(f"'{symbol}' is not a chemical element; fix the structure's species") from None


@cache
def element_radius(symbol: str, radii: RadiiSet = "shannon") -> float:
    """Space-filling radius of ``symbol`` in Å from the named set; RenderError naming the element if it has none."""
    if radii == "vesta":
        if symbol in VESTA_RADII:
            return VESTA_RADII[symbol]
        _check_element(symbol)
        raise RenderError(
            f"element '{symbol}' has no radius in the VESTA table (H to Am); render it with render.radii: shannon"
        )
    if radii != "shannon":
        raise RenderError(f"unknown radii set '{radii}'; choose one of {sorted(RADIUS_SOURCES)}")
    if symbol in SHANNON_RADII:
        return SHANNON_RADII[symbol]
    el = _check_element(symbol)
    for value in (el.average_ionic_radius, el.atomic_radius):
        if value is not None and float(value) > 0:
            return float(value)
    raise RenderError(
        f"element '{symbol}' has no known ionic or atomic radius; it cannot be drawn with render.radii: shannon"
    )
