import json
import shutil
from pathlib import Path

import pytest

from crystalvision.core.config import SnapshotConfig
from crystalvision.core.errors import SnapshotError, StructureError
from crystalvision.data.snapshot import content_hash, load_snapshot, select, write_snapshot
from crystalvision.data.structures import geometry_flags, parse_cif, structure_from_dict, symmetry_labels
from tests.conftest import BUNDLED


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


SPACE = BUNDLED.parent / "lmno-space"


def test_lmno_space_is_bundled_compressed_chosen_by_name_and_verifies(bundled_snapshot) -> None:
    """907 records shipped gzip-compressed (no plain copy), 883 usable; its 68 quaternaries are the lmno ones."""
    from crystalvision.data.snapshot import configured_snapshot

    assert (SPACE / "structures.json.gz").is_file() and not (SPACE / "structures.json").exists()
    assert (SPACE / "structures.json.gz").stat().st_size < 2_000_000
    space = configured_snapshot(SnapshotConfig(name="lmno-space"))
    m = space.manifest
    assert m.n_records == len(space.records) == 907 and m.db_version == "2025.02.12.post"
    assert m.query == {"chemsys": "Li-Mn-Ni-O", "subsystems": True} and m.content_sha256 == content_hash(space.records)
    assert len(select(space, SnapshotConfig(name="lmno-space")).records) == 883
    assert "CC BY 4.0" in (SPACE / "PROVENANCE.md").read_text()
    assert space.encoders.classes("crystal_system") == bundled_snapshot.encoders.classes("crystal_system")
    lmno = {r.material_id: r for r in bundled_snapshot.records}
    quaternaries = [r for r in space.records if r.material_id in lmno]
    assert len(quaternaries) == 68
    for r in quaternaries:
        same = lmno[r.material_id]
        assert (r.band_gap, r.energy_above_hull, r.spacegroup_number, r.flags) == (
            same.band_gap, same.energy_above_hull, same.spacegroup_number, same.flags)  # fmt: skip
    assert configured_snapshot(SnapshotConfig(name="lmno")).manifest == bundled_snapshot.manifest


def test_snapshot_name_or_uri_and_unknown_names_list_the_bundled_ones(tmp_path: Path) -> None:
    from crystalvision.core.errors import ConfigError
    from crystalvision.core.pipeline_file import load_pipeline

    cfg = tmp_path / "p.yaml"
    cfg.write_text("name: x\nsnapshot:\n  name: lmno-spce\n")
    with pytest.raises(ConfigError, match=r"no bundled snapshot 'lmno-spce'.*\['lmno', 'lmno-space'\]"):
        load_pipeline(cfg)
    with pytest.raises(ConfigError, match="not both"):
        load_pipeline(cfg, {"snapshot": {"name": "lmno", "uri": str(BUNDLED)}})
    assert load_pipeline(cfg, {"snapshot": {"name": None, "uri": str(SPACE)}}).snapshot.uri == str(SPACE)


def test_compressed_and_plain_snapshots_have_one_hash_and_a_gzip_is_only_json(bundled_snapshot, tmp_path) -> None:
    import gzip
    import pickle

    import crystalvision.data.snapshot as snapshot_mod

    recs = bundled_snapshot.records[:4]
    kw = {"source": "t", "db_version": "v1", "query": {"chemsys": "Li-O"}}
    plain = write_snapshot(recs, tmp_path / "plain", **kw)
    packed = write_snapshot(recs, tmp_path / "packed", compress=True, **kw)
    assert plain.name == packed.name and (packed / "structures.json.gz").is_file()
    assert load_snapshot(plain).manifest.content_sha256 == load_snapshot(packed).manifest.content_sha256
    again = write_snapshot(recs, tmp_path / "again", compress=True, **kw)
    assert (packed / "structures.json.gz").read_bytes() == (again / "structures.json.gz").read_bytes()
    rows = json.loads(gzip.decompress((packed / "structures.json.gz").read_bytes()))
    rows[0]["band_gap"] = 42.0
    (packed / "structures.json.gz").write_bytes(gzip.compress(json.dumps(rows).encode()))
    with pytest.raises(SnapshotError, match="corrupted"):
        load_snapshot(packed)
    (packed / "structures.json.gz").write_bytes(gzip.compress(pickle.dumps(recs)))  # a pickle is never loaded
    with pytest.raises(SnapshotError, match=r"structures.json.gz is unreadable"):
        load_snapshot(packed)
    (packed / "structures.json.gz").write_bytes(b"\x1f\x8b\x08\x00truncated")
    with pytest.raises(SnapshotError, match=r"structures.json.gz is unreadable"):
        load_snapshot(packed)
    (packed / "structures.json.gz").write_bytes(gzip.compress(b"[" + b" " * 4096 + b"]"))
    snapshot_mod.MAX_STRUCTURES_BYTES, limit = 1024, snapshot_mod.MAX_STRUCTURES_BYTES
    try:
        with pytest.raises(SnapshotError, match="decompresses to more than 1024 bytes"):
            load_snapshot(packed)
    finally:
        snapshot_mod.MAX_STRUCTURES_BYTES = limit


def test_a_second_writer_of_the_same_snapshot_reuses_it(bundled_snapshot, tmp_path: Path, monkeypatch) -> None:
    """Two processes write the same snapshot: the one that loses the rename race (the other published between its
    check and its rename) reuses the winner's folder instead of raising."""
    import crystalvision.data.snapshot as snapshot_mod

    recs = bundled_snapshot.records[:3]
    kw = {"source": "t", "db_version": "v1", "query": {"chemsys": "Li-O"}}
    real_encoders, winner = snapshot_mod.derive_encoders, []

    def other_process_publishes_first(records):
        if not winner:
            winner.append(None)
            winner[0] = write_snapshot(records, tmp_path, **kw)
        return real_encoders(records)

    monkeypatch.setattr(snapshot_mod, "derive_encoders", other_process_publishes_first)
    assert write_snapshot(recs, tmp_path, **kw) == winner[0]
    assert load_snapshot(winner[0]).manifest.content_sha256 == content_hash(recs)
    assert [p.name for p in tmp_path.iterdir()] == [winner[0].name], "no temporary folder left behind"
    monkeypatch.setattr(snapshot_mod, "derive_encoders", real_encoders)
    other = write_snapshot(recs[:2], tmp_path / "b", **kw)
    shutil.rmtree(other)
    other.mkdir()
    (other / "stray.txt").write_text("not a snapshot")  # a different folder in the way is an error, not reused
    with pytest.raises(SnapshotError, match="in the way"):
        write_snapshot(recs[:2], tmp_path / "b", **kw)
