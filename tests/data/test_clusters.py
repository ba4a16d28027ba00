"""Near-copies among structures (data/clusters.py): transitive structure clusters, cached; cross-fold near-identical
pairs with their labels."""

from __future__ import annotations

from pathlib import Path

from pymatgen.core import Lattice, Structure

from crystalvision.data import clusters as C
from crystalvision.data.snapshot import MaterialRecord


def record(mid: str, structure: Structure, system: str, sg: str) -> MaterialRecord:
    return MaterialRecord(
        material_id=mid,
        formula=structure.composition.reduced_formula,
        nsites=len(structure),
        structure=structure.as_dict(),
        crystal_system=system,
        spacegroup_symbol=sg,
        spacegroup_number=1,
        band_gap=1.0,
        energy_above_hull=0.0,
    )


def rock_salt(a: float, c: float | None = None) -> Structure:
    """Conventional NiO rock salt (8 sites), tetragonally strained to ``c`` when given."""
    cubic = Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Ni", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    return Structure(Lattice.tetragonal(a, c or a), cubic.species, cubic.frac_coords)


def test_components_are_transitive_and_named_by_their_first_id():
    got = C.components(["d", "a", "c", "b", "e"], [("c", "d"), ("a", "c")])
    assert got == {"a": "a", "c": "a", "d": "a", "b": "b", "e": "e"}


def test_clusters_match_cells_of_one_structure_and_cache_them(cv_home: Path, monkeypatch):
    cubic = rock_salt(4.18)
    zinc_blende = Structure.from_spacegroup("F-43m", Lattice.cubic(4.5), ["Ni", "O"], [[0, 0, 0], [0.25] * 3])
    records = [
        record("mp-1", cubic, "cubic", "Fm-3m"),
        record("mp-2", cubic.get_primitive_structure(), "cubic", "Fm-3m"),  # the same crystal, another cell
        record("mp-3", rock_salt(4.18, 4.19), "tetragonal", "I4/mmm"),  # 0.2 % strain: a near-copy
        record("mp-4", zinc_blende, "cubic", "F-43m"),  # a different structure of one formula
        record("mp-5", Structure(Lattice.cubic(3.0), ["Li", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]), "cubic", "Pm-3m"),
    ]
    got = C.structure_clusters(records)
    assert got == {"mp-1": "mp-1", "mp-2": "mp-1", "mp-3": "mp-1", "mp-4": "mp-4", "mp-5": "mp-5"}
    cached = list((cv_home / "cache").glob("structure-clusters-*.json"))
    assert len(cached) == 1
    monkeypatch.setattr(C, "matching_pairs", lambda *a: (_ for _ in ()).throw(AssertionError("not cached")))
    assert C.structure_clusters(records) == got  # read back, no matching
    monkeypatch.undo()

    pairs = C.near_identical_pairs(records, {"mp-1": 0, "mp-2": 0, "mp-3": 1, "mp-4": 1, "mp-5": 0})
    assert [(p["a"], p["b"]) for p in pairs] == [("mp-1", "mp-3"), ("mp-2", "mp-3")]  # across folds only
    assert pairs[0]["crystal_system"] == ["cubic", "tetragonal"] and not pairs[0]["same_crystal_system"]
