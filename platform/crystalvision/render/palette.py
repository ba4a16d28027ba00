"""Element colours (and, through ``radii.py``, radii) for the space-filling style.

Colours: VESTA's default element colours, as shipped by pymatgen (``pymatgen/vis/ElementColorSchemes.yaml``,
scheme ``VESTA``). Radii: one of the named sets of ``radii.py`` (``render.radii``: vesta or shannon).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import numpy as np
import yaml

from crystalvision.core import RenderError
from crystalvision.render.radii import RadiiSet, element_radius

COLOUR_SOURCE = "VESTA element colours (pymatgen/vis/ElementColorSchemes.yaml, scheme VESTA)"


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


def site_style(
    symbols: list[str], radius_scale: float = 1.0, radii_set: RadiiSet = "shannon"
) -> tuple[np.ndarray, np.ndarray]:
    """(radii float32 (N,), colours uint8 (N, 3)) for element symbols, radii from the named set."""
    radii = np.array([element_radius(s, radii_set) * radius_scale for s in symbols], dtype=np.float32)
    colours = np.array([element_colour(s) for s in symbols], dtype=np.uint8).reshape(-1, 3)
    return radii, colours
