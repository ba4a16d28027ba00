"""Crystal structures: CIF parsing, validation on ingest, symmetry labels."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pymatgen.core import Element, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from crystalvision.errors import StructureError

CRYSTAL_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")
SHORT_DISTANCE_FLAG = "short_interatomic_distance"
SYMMETRY_LABEL_SOURCE = "pymatgen SpacegroupAnalyzer(symprec=0.1) on the structure (spglib)"
# Shortest distance accepted between two atoms, in Å: below this no real oxide bond exists. The six flagged
# structures of the bundled snapshot have metal-O 1.26-1.68 Å; the regular 62 have >= 1.78 Å (labels.md).
MIN_DISTANCE = {"metal-anion": 1.72, "metal-metal": 2.3, "anion-anion": 2.0}
MAX_CIF_BYTES = 20_000_000
_CELL_LENGTH = re.compile(r"^_cell_length_([abc])\s+([-+0-9.eE]+)", re.MULTILINE)
ANIONS = {"O", "F", "S", "Cl", "N", "Se", "Br", "I", "Te", "P"}


@dataclass(frozen=True)
class SymmetryLabels:
    """Crystal system and space group of a structure."""

    crystal_system: str
    spacegroup_symbol: str
    spacegroup_number: int


def parse_cif(text: str, name: str = "<cif>") -> Structure:
    """Parse CIF text into one ordered Structure, with one clear error naming ``name`` on failure."""
    if not text or not text.strip():
        raise StructureError(f"{name}: the CIF is empty; pass a CIF file with one crystal structure")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = Structure.from_str(text, fmt="cif")
    except Exception as exc:  # pymatgen raises ValueError, KeyError, IndexError... on bad CIFs
        _raise_if_degenerate_cell(text, name)
        raise StructureError(
            f"{name}: not a readable CIF ({type(exc).__name__}: {str(exc)[:200]}); "
            "export it again from the Materials Project, VESTA or pymatgen"
        ) from exc
    validate_structure(structure, name)
    return structure


def _raise_if_degenerate_cell(text: str, name: str) -> None:
    for axis, value in _CELL_LENGTH.findall(text):
        try:
            length = float(value)
        except ValueError:
            continue
        if length <= 1e-6:
            raise StructureError(f"{name}: cell length {axis} is {value} (zero-volume lattice); fix the cell")


def read_cif_file(path: str | Path) -> Structure:
    """Read and parse a CIF file; binary, oversized or unreadable files get one clear error naming the file."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_CIF_BYTES:
            raise StructureError(f"{p}: {size} bytes is too large for a CIF (limit {MAX_CIF_BYTES})")
        text = p.read_bytes().decode("utf-8")
    except FileNotFoundError as exc:
        raise StructureError(f"{p}: file not found; check the path") from exc
    except UnicodeDecodeError as exc:
        raise StructureError(f"{p}: binary data, not a CIF text file; pass a .cif from pymatgen or VESTA") from exc
    return parse_cif(text, str(p))


def structure_from_dict(data: dict, name: str = "<structure>") -> Structure:
    """Rebuild a Structure from ``Structure.as_dict()`` output, with a clear error on failure."""
    try:
        structure = Structure.from_dict(data)
    except Exception as exc:
        raise StructureError(f"{name}: stored structure is unreadable ({type(exc).__name__}: {exc})") from exc
    validate_structure(structure, name)
    return structure


def validate_structure(structure: Structure, name: str = "<structure>") -> None:
    """Reject structures nothing downstream can handle: no sites, unknown species, partial occupancy, no volume."""
    if len(structure) == 0:
        raise StructureError(f"{name}: the structure has no atoms")
    for site in structure:
        for species in site.species:
            symbol = getattr(species, "symbol", str(species))
            if not Element.is_valid_symbol(symbol) or symbol in {"X", "D", "T"}:
                raise StructureError(f"{name}: unknown element '{symbol}'; only real chemical elements can be rendered")
    if not structure.is_ordered:
        raise StructureError(
            f"{name}: partial occupancy (disordered sites); order it first, e.g. with pymatgen's "
            "OrderDisorderedStructureTransformation"
        )
    volume = structure.lattice.volume
    if not np.isfinite(volume) or volume < 1e-3:
        raise StructureError(f"{name}: the lattice has zero volume ({volume:.3g} Å^3); check the cell parameters")


def _pair_kind(a: str, b: str) -> str:
    na, nb = a in ANIONS, b in ANIONS
    if na and nb:
        return "anion-anion"
    if na or nb:
        return "metal-anion"
    return "metal-metal"


def geometry_flags(structure: Structure) -> list[str]:
    """Soft checks whose failure flags a structure instead of rejecting it."""
    dm = structure.distance_matrix
    np.fill_diagonal(dm, np.inf)
    symbols = [site.specie.symbol for site in structure]
    for i in range(len(structure)):
        for j in range(i + 1, len(structure)):
            if dm[i, j] < MIN_DISTANCE[_pair_kind(symbols[i], symbols[j])]:
                return [SHORT_DISTANCE_FLAG]
    return []


def symmetry_labels(structure: Structure, symprec: float = 0.1) -> SymmetryLabels:
    """Crystal system and space group from pymatgen's SpacegroupAnalyzer (symprec 0.1 as in the snapshot)."""
    sga = SpacegroupAnalyzer(structure, symprec=symprec)
    return SymmetryLabels(sga.get_crystal_system(), sga.get_space_group_symbol(), sga.get_space_group_number())
