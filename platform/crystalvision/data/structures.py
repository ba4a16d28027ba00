"""Crystal structures: CIF parsing, validation on ingest, symmetry labels."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pymatgen.core import Element, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from crystalvision.core.errors import StructureError

CRYSTAL_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")
SHORT_DISTANCE_FLAG = "short_interatomic_distance"
SYMMETRY_LABEL_SOURCE = "pymatgen SpacegroupAnalyzer(symprec=0.1) on the structure (spglib)"
# Shortest distance accepted between two atoms, in Å: below this no real oxide bond exists. The six flagged
# structures of the bundled snapshot have metal-O 1.26-1.68 Å; the regular 62 have >= 1.78 Å (labels.md).
MIN_DISTANCE = {"metal-anion": 1.72, "metal-metal": 2.3, "anion-anion": 2.0}
MAX_CIF_BYTES = 20_000_000
# Most atoms a structure may have (in the cell as given); render.max_atoms may refuse fewer drawn atoms.
MAX_ATOMS = 2_000
# Symmetry expansion bounds, checked before pymatgen expands the CIF: no space group has more than 192 operations
# (a conventional cell), and pymatgen's expansion + merge of (atom rows x operations) sites grows quadratically.
MAX_SYMMETRY_OPS = 192
MAX_EXPANDED_SITES = 10_000
_SYMOP_TAGS = ("_symmetry_equiv_pos_as_xyz", "_space_group_symop_operation_xyz", "_space_group_symop.operation_xyz")
MISSING_LABEL_FLAG = "missing_{}"  # e.g. missing_band_gap: the label is absent upstream, never read as 0.0
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
    precheck_cif(text, name)
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


def precheck_cif(text: str, name: str = "<cif>") -> None:
    """Cheap checks before any parsing: not empty, atom rows and symmetry expansion within bounds."""
    if not text or not text.strip():
        raise StructureError(f"{name}: the CIF is empty; pass a CIF file with one crystal structure")
    rows = _count_atom_rows(text)
    _raise_if_too_many_atoms(rows, name)
    _raise_if_symmetry_bomb(_count_loop_rows(text, _SYMOP_TAGS), rows, name)


def _count_atom_rows(text: str) -> int:
    """Rows of the CIF's ``_atom_site_`` loop, counted before pymatgen parses (and expands) anything."""
    return _count_loop_rows(text, ("_atom_site_",), exclude=("_atom_site_aniso",))


def _count_loop_rows(text: str, tags: tuple[str, ...], exclude: tuple[str, ...] = ()) -> int:
    """Lines of data in the CIF loops whose header has a tag starting with one of ``tags`` (one row per line)."""
    rows, in_header, in_loop = 0, False, False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("loop_"):
            in_header, in_loop = True, False
        elif line.startswith("_"):
            if in_header and line.startswith(tags) and not line.startswith(exclude):
                in_loop = True
            elif not in_header:
                in_loop = False
        elif line.startswith("data_"):
            in_header = in_loop = False
        else:
            in_header = False
            rows += in_loop
    return rows


def _raise_if_symmetry_bomb(n_ops: int, n_rows: int, name: str) -> None:
    """Refuse symmetry operations that pymatgen would expand into far too many sites (minutes of parsing)."""
    if n_ops > MAX_SYMMETRY_OPS or n_ops * n_rows > MAX_EXPANDED_SITES:
        raise StructureError(
            f"{name}: {n_ops} symmetry operations on {n_rows} atom rows (limits: {MAX_SYMMETRY_OPS} operations, "
            f"{MAX_EXPANDED_SITES} expanded sites); pass the structure in P1 (every atom listed, one operation)"
        )


def _raise_if_too_many_atoms(n_atoms: int, name: str) -> None:
    if n_atoms > MAX_ATOMS:
        raise StructureError(
            f"{name}: {n_atoms} atoms, more than the limit of {MAX_ATOMS}; pass a primitive or smaller cell"
        )


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


def structure_from_dict(data: dict, name: str = "<structure>", max_atoms: int | None = MAX_ATOMS) -> Structure:
    """Rebuild a Structure from ``Structure.as_dict()`` output, with a clear error on failure. ``max_atoms``:
    the site limit (None: the caller applies its own, as the render stage does with ``render.max_atoms``)."""
    try:
        structure = Structure.from_dict(data)
    except Exception as exc:
        raise StructureError(f"{name}: stored structure is unreadable ({type(exc).__name__}: {exc})") from exc
    validate_structure(structure, name, max_atoms)
    return structure


def validate_structure(structure: Structure, name: str = "<structure>", max_atoms: int | None = MAX_ATOMS) -> None:
    """Reject structures nothing downstream can handle: no sites, unknown species, partial occupancy, no volume."""
    if len(structure) == 0:
        raise StructureError(f"{name}: the structure has no atoms")
    if max_atoms is not None:
        _raise_if_too_many_atoms(len(structure), name)
    lattice = structure.lattice
    if not np.all(np.isfinite(lattice.matrix)):  # NaN/inf cell lengths or angles (a flat cell is caught below)
        raise StructureError(
            f"{name}: the cell has non-finite parameters (a, b, c = {lattice.abc}, angles = {lattice.angles}); "
            "fix the cell lengths and angles"
        )
    if not np.all(np.isfinite(structure.frac_coords)):
        raise StructureError(f"{name}: some atom coordinates are not finite (NaN or inf); fix the atom positions")
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


def geometry_flags(structure: Structure) -> list[str]:
    """Soft checks whose failure flags a structure instead of rejecting it.

    Pairs closer than the widest limit come from a periodic neighbour list (pymatgen's cell-list search), so the
    check scales with the number of atoms, not its square, and sees periodic images too.
    """
    cutoff = max(MIN_DISTANCE.values())
    centers, neighbors, _, distances = structure.get_neighbor_list(r=cutoff)
    if len(distances) == 0:
        return []
    anion = np.array([site.specie.symbol in ANIONS for site in structure])
    a, b = anion[centers], anion[neighbors]
    limits = np.where(
        a & b, MIN_DISTANCE["anion-anion"], np.where(a | b, MIN_DISTANCE["metal-anion"], MIN_DISTANCE["metal-metal"])
    )
    return [SHORT_DISTANCE_FLAG] if bool(np.any(distances < limits)) else []


def symmetry_labels(structure: Structure, symprec: float = 0.1) -> SymmetryLabels:
    """Crystal system and space group from pymatgen's SpacegroupAnalyzer (symprec 0.1 as in the snapshot)."""
    sga = SpacegroupAnalyzer(structure, symprec=symprec)
    return SymmetryLabels(sga.get_crystal_system(), sga.get_space_group_symbol(), sga.get_space_group_number())
