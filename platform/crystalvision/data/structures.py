"""Crystal structures: CIF parsing, validation on ingest, symmetry labels."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from pymatgen.core import Element, Structure
from pymatgen.io.cif import CifBlock, CifParser
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from crystalvision.core import StructureError

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
MAX_SECTIONS = 1_000  # loops, and data blocks, per CIF: a crystal structure has a handful
# What pymatgen's CIF reader reads is a stream of tokens: line breaks mean nothing inside a loop, so the bounds count
# loop values, not lines. These patterns follow pymatgen's (comments, blocks, quoted values) in linear time; where they
# differ they count fewer values (a '#' inside a value starts a comment here), and parse_cif counts exactly.
_COMMENT = re.compile(r"#.*$", re.MULTILINE)
_BLOCK = re.compile(r"^[^\S\n]*data_", re.MULTILINE)  # pymatgen's ^\s*data_ is quadratic on blank lines
_LOOP_HEADER = re.compile(r"loop_\s+((?:_\S*\s+)+)")
_LOOP_END = re.compile(r"(?:^|(?<=\s))(?:loop_|_)", re.MULTILINE)
_SCAN_CHARS = 1_000_000
_SPACE = re.compile(r"\s")
_TOKEN = re.compile(r"""'[^'\n]*'(?!\S)|"[^"\n]*"(?!\S)|\S+""")
_SYMOP_MARKS = ("symop", "equiv_pos")  # tags of symmetry-operation loops (all spellings, magnetic ones too)
_CENTERING_MARK = "magn_centering"  # magnetic centring operations: pymatgen combines each with every operation
MISSING_LABEL_FLAG = "missing_{}"  # e.g. missing_band_gap: the label is absent upstream, never read as 0.0
_CELL_LENGTH = re.compile(r"^_cell_length_([abc])\s+([-+0-9.eE]+)", re.MULTILINE)
ANIONS = {"O", "F", "S", "Cl", "N", "Se", "Br", "I", "Te", "P"}


class Expansion(NamedTuple):
    """What pymatgen will expand in one data block: atom rows and the symmetry operations applied to each; ``partial``
    when counting stopped once a bound was certainly broken (the counts are then lower bounds)."""

    rows: int
    ops: int
    partial: bool = False


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
            parser = CifParser.from_str(text)  # pymatgen's block parse: tokens into tags and loops, nothing expanded
            _raise_if_expansion_too_large(parsed_counts(parser), name)
            structure = parser.parse_structures(primitive=False)[0]
    except StructureError:
        raise
    except Exception as exc:  # pymatgen raises ValueError, KeyError, IndexError... on bad CIFs
        _raise_if_degenerate_cell(text, name)
        raise StructureError(
            f"{name}: not a readable CIF ({type(exc).__name__}: {str(exc)[:200]}); "
            "export it again from the Materials Project, VESTA or pymatgen"
        ) from exc
    validate_structure(structure, name)
    return structure


def precheck_cif(text: str, name: str = "<cif>") -> None:
    """Cheap checks before any parsing: not empty, atom rows and symmetry expansion within bounds (counted from
    tokens in linear time, whatever the line layout; :func:`parse_cif` counts again from pymatgen's own parse)."""
    if not text or not text.strip():
        raise StructureError(f"{name}: the CIF is empty; pass a CIF file with one crystal structure")
    sections = max(text.count("loop_"), text.count("data_"))
    if sections > MAX_SECTIONS:
        raise StructureError(
            f"{name}: {sections} loops or data blocks, more than the {MAX_SECTIONS} a crystal structure needs; "
            "pass one structure per CIF"
        )
    _raise_if_expansion_too_large(token_counts(text), name)


def token_counts(text: str) -> list[Expansion]:
    """Atom rows and symmetry operations per data block, counted from tokens before pymatgen reads anything.

    Loop values are counted from the end of a loop's header to the next tag or loop, so a loop laid out on one line
    counts as what it is. Operations given only by a space-group name count 1 here (parse_cif counts them exactly).
    """
    counts = []
    for block in _BLOCK.split(_COMMENT.sub(" ", text)):
        rows, ops, centering, partial = 0, 1, 1, False
        for header in _LOOP_HEADER.finditer(block):
            if header.start() and not block[header.start() - 1].isspace():
                continue  # 'xloop_' is a value, not a loop
            tags = header.group(1).split()
            atoms = any(t.startswith("_atom_site_") and not t.startswith("_atom_site_aniso") for t in tags)
            centrings = any(_CENTERING_MARK in t for t in tags)
            if not (atoms or centrings or any(mark in t for t in tags for mark in _SYMOP_MARKS)):
                continue  # bonds, citations...: nothing pymatgen expands
            limit = (MAX_ATOMS if atoms else MAX_SYMMETRY_OPS) + 1
            values, whole = _count_values(block, header.end(), limit * len(tags))
            partial |= not whole
            n = -(-values // len(tags))
            if atoms:
                rows += n
            elif centrings:
                centering = max(centering, n)
            else:
                ops = max(ops, n)
        counts.append(Expansion(rows, ops * centering, partial))
    return counts


def _count_values(block: str, start: int, enough: int) -> tuple[int, bool]:
    """The values of the loop whose header ends at ``start`` (tokens up to the next tag or loop), counted a megabyte
    at a time until more than ``enough``: (count, whether the whole loop was counted). A bomb is known by its first
    megabyte; a quoted value cut at a megabyte's edge counts one more."""
    count, end = 0, len(block)
    while start < end and count <= enough:
        space = _SPACE.search(block, min(start + _SCAN_CHARS, end), end)
        stop = space.start() if space else end
        if found := _LOOP_END.search(block, start, stop):
            stop = end = found.start()
        count += _TOKEN.subn("", block[start:stop])[1]
        start = stop
    return count, start >= end


def parsed_counts(parser: CifParser) -> list[Expansion]:
    """Atom rows and symmetry operations per data block of pymatgen's block parse, before it expands anything: the
    operations it will apply (listed, or generated from the space group; magnetic ones with their centrings)."""
    counts = []
    for header, data in parser.as_dict().items():
        sizes = {tag: len(v) if isinstance(v, list) else 1 for tag, v in data.items()}
        rows = max(
            (n for t, n in sizes.items() if t.startswith("_atom_site_") and not t.startswith("_atom_site_aniso")),
            default=0,
        )
        listed = max(
            (n for t, n in sizes.items() if _CENTERING_MARK not in t and any(m in t for m in _SYMOP_MARKS)), default=0
        )
        if parser.feature_flags.get("magcif"):
            ops = max(listed, 1) * max((n for t, n in sizes.items() if _CENTERING_MARK in t), default=1)
        elif listed > MAX_SYMMETRY_OPS:
            ops = listed  # refused below without converting them
        else:
            ops = len(parser.get_symops(CifBlock(data, [], header)))  # at most 192 (a space group's) to convert
        counts.append(Expansion(rows, ops))
    return counts


def _raise_if_expansion_too_large(counts: list[Expansion], name: str) -> None:
    """Refuse more atom rows than MAX_ATOMS, or symmetry operations pymatgen would expand into far too many sites
    (its expansion and merge grow quadratically: minutes of parsing)."""
    rows = sum(c.rows for c in counts)
    at_least = "at least " if any(c.partial for c in counts) else ""
    _raise_if_too_many_atoms(rows, name, at_least)
    n_ops = max((c.ops for c in counts), default=1)
    if n_ops > MAX_SYMMETRY_OPS or sum(c.rows * c.ops for c in counts) > MAX_EXPANDED_SITES:
        raise StructureError(
            f"{name}: {at_least}{n_ops} symmetry operations on {rows} atom rows (limits: {MAX_SYMMETRY_OPS} "
            f"operations, {MAX_EXPANDED_SITES} expanded sites); pass the structure in P1 (every atom listed, one "
            "operation)"
        )


def _raise_if_too_many_atoms(n_atoms: int, name: str, at_least: str = "") -> None:
    if n_atoms > MAX_ATOMS:
        raise StructureError(
            f"{name}: {at_least}{n_atoms} atoms, more than the limit of {MAX_ATOMS}; pass a primitive or smaller cell"
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
