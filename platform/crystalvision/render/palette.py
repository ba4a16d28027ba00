"""Element colours and radii for the space-filling style.

Colours: VESTA's default element colours, as shipped by pymatgen (``pymatgen/vis/ElementColorSchemes.yaml``,
scheme ``VESTA``). Radii: Shannon (1976) six-coordinate radii for the Li-Mn-Ni-O elements (Li+ 0.76, Mn3+ high
spin 0.645, Ni2+ 0.69, O2- 1.26 Å), which give VESTA's space-filling look; other elements fall back to
pymatgen's ``Element.average_ionic_radius`` (Shannon crystal radii), then to ``Element.atomic_radius``.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import numpy as np
import yaml

from crystalvision.errors import RenderError

COLOUR_SOURCE = "VESTA element colours (pymatgen/vis/ElementColorSchemes.yaml, scheme VESTA)"
RADIUS_SOURCE = "Shannon (1976) radii: Li 0.76, Mn 0.645, Ni 0.69, O 1.26 Å; else pymatgen average ionic radius"

IONIC_RADII = {"Li": 0.76, "Mn": 0.645, "Ni": 0.69, "O": 1.26}


@cache
def vesta_colours() -> dict[str, tuple[int, int, int]]:
    """Element symbol -> RGB (0-255) from pymatgen's copy of VESTA's colour table."""
    text = resources.files("pymatgen.vis").joinpath("ElementColorSchemes.yaml").read_text()
    table = yaml.safe_load(text)["VESTA"]
    return {el: (int(r), int(g), int(b)) for el, (r, g, b) in table.items()}


def element_colour(symbol: str) -> tuple[int, int, int]:
    """VESTA colour of ``symbol``; RenderError naming it if there is none."""
    try:
        return vesta_colours()[symbol]
    except KeyError:
        raise RenderError(
            f"element '{symbol}' has no colour in the VESTA table; only real elements H-Lr can be rendered"
        ) from None


@cache
def element_radius(symbol: str) -> float:
    """Space-filling radius of ``symbol`` in Å; RenderError naming it if none is known."""
    if symbol in IONIC_RADII:
        return IONIC_RADII[symbol]
    from pymatgen.core import Element

    try:
        el = Element(symbol)
    except ValueError:
        raise RenderError(f"'{symbol}' is not a chemical element; fix the structure's species") from None
    for value in (el.average_ionic_radius, el.atomic_radius):
        if value is not None and float(value) > 0:
            return float(value)
    raise RenderError(f"element '{symbol}' has no known radius; it cannot be drawn as a space-filling sphere")


def species_symbols(structure) -> list[str]:
    """Element symbol of every site; RenderError for disordered sites or species that are not elements."""
    symbols = []
    for i, site in enumerate(structure):
        if not site.is_ordered:
            raise RenderError(f"site {i} ({site.species_string}) is partially occupied; order the structure first")
        specie = site.specie
        symbol = getattr(specie, "symbol", str(specie))
        element = getattr(specie, "element", specie)
        if not hasattr(element, "Z") or symbol not in vesta_colours():
            raise RenderError(f"site {i} has species '{specie}', not a chemical element with a VESTA colour")
        symbols.append(getattr(element, "symbol", symbol))
    return symbols


def site_style(symbols: list[str], radius_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(radii float32 (N,), colours uint8 (N, 3)) for element symbols."""
    radii = np.array([element_radius(s) * radius_scale for s in symbols], dtype=np.float32)
    colours = np.array([element_colour(s) for s in symbols], dtype=np.uint8).reshape(-1, 3)
    return radii, colours
