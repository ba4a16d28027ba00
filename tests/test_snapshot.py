import json
import shutil
from pathlib import Path

import pytest

from crystalvision.config import SnapshotConfig
from crystalvision.errors import SnapshotError, StructureError
from crystalvision.snapshot import content_hash, load_snapshot, select, write_snapshot
from crystalvision.structures import geometry_flags, parse_cif, structure_from_dict, symmetry_labels

from .conftest import BUNDLED


def test_bundled_snapshot_verifies_and_carries_provenance(bundled_snapshot) -> None:
    m = bundled_snapshot.manifest
    assert m.n_records == len(bundled_snapshot.records) == 68
    assert m.db_version == "2025.02.12.post"
    assert "CC BY 4.0" in (BUNDLED / "PROVENANCE.md").read_text()
    assert all(r.label_source.keys() == {"band_gap", "energy_above_hull"} for r in bundled_snapshot.records)
    assert "CHGNet" in m.label_source["energy_above_hull"] and "CGCNN" in m.label_source["band_gap"]
    assert len(bundled_snapshot.encoders.classes("crystal_system")) == 7
    assert len(bundled_snapshot.encoders.classes("spacegroup")) == 20


def test_flagged_structures_dropped_by_default_and_configurable(bundled_snapshot) -> None:
    sel = select(bundled_snapshot, SnapshotConfig())
    assert len(sel.dropped_flagged) == 6 and len(sel.records) == 62
    assert "mp-1400982" in sel.dropped_flagged
    assert len(select(bundled_snapshot, SnapshotConfig(include_flagged=True)).records) == 68
    small = select(bundled_snapshot, SnapshotConfig(max_structures=7))
    assert len(small.records) == 7 and len({r.crystal_system for r in small.records}) == 7
    with pytest.raises(SnapshotError, match="not in snapshot"):
        select(bundled_snapshot, SnapshotConfig(material_ids=["mp-nope"]))


def test_geometry_check_reproduces_the_six_flags(bundled_snapshot) -> None:
    for r in bundled_snapshot.records:
        assert geometry_flags(structure_from_dict(r.structure, r.material_id)) == r.flags, r.material_id


def test_symmetry_labels_match_snapshot(bundled_snapshot) -> None:
    for r in bundled_snapshot.records[:5]:
        lab = symmetry_labels(structure_from_dict(r.structure))
        assert (lab.crystal_system, lab.spacegroup_number) == (r.crystal_system, r.spacegroup_number)


def test_write_round_trip_hash_and_reuse(bundled_snapshot, tmp_path: Path) -> None:
    recs = bundled_snapshot.records[:5]
    p = write_snapshot(recs, tmp_path, source="test", db_version="v1", query={"chemsys": "Li-O"})
    again = load_snapshot(p)
    assert again.manifest.content_sha256 == content_hash(recs) == content_hash(list(reversed(recs)))
    assert [r.material_id for r in again.records] == sorted(r.material_id for r in recs)
    assert write_snapshot(recs, tmp_path, source="test", db_version="v1", query={"chemsys": "Li-O"}) == p
    assert not [x for x in tmp_path.iterdir() if x.name.startswith(".")], "no temporary folder left behind"
    changed = [recs[0].model_copy(update={"band_gap": 9.9}), *recs[1:]]
    assert content_hash(changed) != content_hash(recs)


def test_empty_missing_and_corrupt_snapshots(bundled_snapshot, tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="empty snapshot"):
        write_snapshot([], tmp_path, source="t", db_version="v", query={"chemsys": "X"})
    with pytest.raises(SnapshotError, match="crystalvision ingest"):
        load_snapshot(tmp_path / "missing")
    bad = tmp_path / "bad"
    shutil.copytree(BUNDLED, bad)
    data = json.loads((bad / "structures.json").read_text())
    data[0]["band_gap"] = 42.0
    (bad / "structures.json").write_text(json.dumps(data))
    with pytest.raises(SnapshotError, match="corrupted"):
        load_snapshot(bad)
    (bad / "structures.json").write_text("{not json")
    with pytest.raises(SnapshotError, match="unreadable"):
        load_snapshot(bad)


def test_cif_parsing_errors_name_the_item() -> None:
    good = (BUNDLED / "cif" / "mp-25284.cif").read_text()
    assert len(parse_cif(good, "mp-25284.cif")) > 0
    with pytest.raises(StructureError, match="empty.cif: the CIF is empty"):
        parse_cif("", "empty.cif")
    with pytest.raises(StructureError, match="truncated.cif"):
        parse_cif(good[: len(good) // 3], "truncated.cif")
    with pytest.raises(StructureError, match="unknown element 'Xx'|truncated|not a readable"):
        parse_cif(good.replace(" Li ", " Xx ").replace("Li0", "Xx0"), "unknown.cif")
