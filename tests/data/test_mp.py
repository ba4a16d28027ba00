"""mp.py against the real mp-api client and a local replay of the Materials Project API."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from crystalvision.core.config import IngestConfig
from crystalvision.core.errors import MPError
from crystalvision.core.settings import get_settings
from crystalvision.data.mp import database_version, fetch_records
from tests.conftest import MP_TEST_KEY as API_KEY

BAD = Path(__file__).parents[1] / "data" / "bad"
QUERY = IngestConfig(chemsys="Li-Mn-Ni-O")


def test_fetch_records_and_version(mp_api):
    records, db = fetch_records(QUERY)
    assert db == "2025.01.01" == database_version()
    assert [r.material_id for r in records] == [d["material_id"] for d in mp_api.docs]
    assert all("db 2025.01.01" in r.label_source["band_gap"] for r in records)
    mp_api.publish("2025.02.02", mp_api.docs)
    assert database_version() == "2025.02.02"  # mp-api's per-process heartbeat cache does not hide a new version


def test_retries_with_backoff_on_429_and_503(mp_api, caplog: pytest.LogCaptureFixture):
    mp_api.fail_next(429, 503, path="/heartbeat")
    mp_api.fail_next(503, 503, path="/materials/summary")
    with caplog.at_level(logging.WARNING, logger="crystalvision.data.mp"):
        records, _ = fetch_records(QUERY)
    assert len(records) == 4
    statuses = [r.status for r in mp_api.requests]
    assert statuses.count(429) == 1 and statuses.count(503) == 3
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 4 and "HTTP 503" in retries[-1]


def test_gives_up_after_max_retries(mp_api):
    mp_api.fail_next(*[503] * 10, path="/heartbeat")
    with pytest.raises(MPError, match="after 6 attempts"):
        database_version()


def test_empty_result_is_a_clear_error(mp_api):
    mp_api.publish("2025.01.01", [])
    with pytest.raises(MPError, match="no materials for .*Li-Mn-Ni-O"):
        fetch_records(QUERY)


@pytest.mark.parametrize("key", [None, "short"])
def test_missing_or_bad_key_names_mp_api_key(mp_api, monkeypatch: pytest.MonkeyPatch, key):
    for var in ("MP_API_KEY", "CRYSTALVISION_MP_API_KEY", "PMG_MAPI_KEY"):
        monkeypatch.delenv(var, raising=False)
    if key:
        monkeypatch.setenv("MP_API_KEY", key)
    get_settings.cache_clear()
    with pytest.raises(MPError, match="MP_API_KEY"):
        fetch_records(QUERY)
    assert not mp_api.requests


def test_key_is_sent_as_header_and_never_logged(mp_api, caplog: pytest.LogCaptureFixture):
    mp_api.fail_next(503, path="/materials/summary")
    with caplog.at_level(logging.DEBUG):
        fetch_records(QUERY)
    summary = [r for r in mp_api.requests if r.path.startswith("/materials/summary")]
    assert summary and all(r.headers.get("x-api-key") == API_KEY for r in summary)
    assert all(API_KEY not in str(r.params) for r in mp_api.requests)
    assert caplog.records and not [r for r in caplog.records if API_KEY in r.getMessage()]


def test_odd_records_are_quarantined_with_a_reason_and_the_fetch_goes_on(mp_api, tmp_path: Path):
    import copy
    import json

    from crystalvision.data.ingest import QUARANTINE_FILE, ingest_from_mp
    from crystalvision.data.snapshot import load_snapshot

    good = mp_api.docs
    dot = json.loads((BAD / "dot_material_id.json").read_text())  # material id '.'
    garbage = copy.deepcopy(good[0]) | {"material_id": "mp-990001", "structure": {"sites": "garbage"}}
    unknown = copy.deepcopy(good[1]) | {"material_id": "mp-990002"}
    unknown["structure"]["sites"][0]["species"][0]["element"] = "Xq"
    mp_api.publish("2025.01.01", [dot, garbage, *good, unknown])
    quarantine: list[dict] = []
    records, _ = fetch_records(QUERY, quarantine=quarantine)
    assert [r.material_id for r in records] == [d["material_id"] for d in good]
    reasons = {q["material_id"]: q["reason"] for q in quarantine}
    assert sorted(reasons) == [".", "mp-990001", "mp-990002"]
    assert "not a safe identifier" in reasons["."] and "unreadable" in reasons["mp-990001"]
    assert "mp-990002" in reasons["mp-990002"] and "Xq" in reasons["mp-990002"]
    snap = ingest_from_mp(QUERY, tmp_path / "snaps")
    assert len(load_snapshot(snap).records) == 4
    assert {q["material_id"] for q in json.loads((snap / QUARANTINE_FILE).read_text())} == set(reasons)


def test_missing_labels_stay_missing_flagged_and_left_out(mp_api, tmp_path: Path):
    """No band gap / no energy above hull is never 0.0 (which would read as 'metal' / 'stable')."""
    import copy

    from crystalvision.core.config import SnapshotConfig
    from crystalvision.data.ingest import ingest_from_mp
    from crystalvision.data.snapshot import load_snapshot, select

    docs = copy.deepcopy(mp_api.docs)
    docs[0]["band_gap"] = None
    docs[1]["energy_above_hull"] = None
    mp_api.publish("2025.01.01", docs)
    records = {r.material_id: r for r in fetch_records(QUERY)[0]}
    first, second = records[docs[0]["material_id"]], records[docs[1]["material_id"]]
    assert first.band_gap is None and "missing_band_gap" in first.flags
    assert second.energy_above_hull is None and "missing_energy_above_hull" in second.flags
    assert first.energy_above_hull == docs[0]["energy_above_hull"]
    snap = load_snapshot(ingest_from_mp(QUERY, tmp_path / "snaps"))
    kept = select(snap, SnapshotConfig(include_flagged=True)).records
    assert {r.material_id for r in kept} == {d["material_id"] for d in docs[2:]}


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("CRYSTALVISION_MAX_RETRIES", "1000"),
        ("CRYSTALVISION_MAX_RETRIES", "-1"),
        ("CRYSTALVISION_RETRY_BACKOFF_S", "1e9"),
    ],
)
def test_retry_settings_are_validated(monkeypatch: pytest.MonkeyPatch, var: str, value: str):
    from pydantic import ValidationError

    from crystalvision.core.settings import MPSettings

    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError, match=var.removeprefix("CRYSTALVISION_").lower()):
        MPSettings()


def test_backoff_is_capped_and_jittered():
    from crystalvision.core.settings import MPSettings
    from crystalvision.data.mp import backoff_delay

    settings = MPSettings(max_retries=20, retry_backoff_s=1.0, retry_max_backoff_s=8.0)
    delays = [backoff_delay(settings, 19) for _ in range(50)]
    assert all(4.0 <= d <= 8.0 for d in delays) and len(set(delays)) > 40
    assert all(0.5 <= backoff_delay(settings, 0) <= 1.0 for _ in range(20))


def test_geometry_check_scales_to_thousands_of_atoms(bundled_snapshot, monkeypatch: pytest.MonkeyPatch):
    """A neighbour list, not an N x N distance matrix and Python loop (minutes for 12,096 atoms): checked on a
    6x6x6 supercell, and the short-distance flags of the bundled snapshot are unchanged."""
    from pymatgen.core import Structure

    from crystalvision.data.structures import SHORT_DISTANCE_FLAG, geometry_flags, structure_from_dict

    for rec in bundled_snapshot.records:
        assert (SHORT_DISTANCE_FLAG in geometry_flags(structure_from_dict(rec.structure))) == bool(rec.flags)
    regular = next(r for r in bundled_snapshot.records if not r.flags)
    big = structure_from_dict(regular.structure) * (6, 6, 6)

    def no_matrix(self):
        raise AssertionError(f"an N x N distance matrix of {len(self)} atoms")

    monkeypatch.setattr(Structure, "distance_matrix", property(no_matrix))
    assert len(big) > 10_000 and geometry_flags(big) == []


def test_subsystems_fetch_the_whole_space_in_one_query(mp_api, tmp_path: Path):
    """subsystems: every sub-system of Li-Mn-Ni-O (Li, ..., Li-Mn, ..., Li-Mn-Ni-O) through the real mp-api client;
    the snapshot's query is the bundled lmno-space's."""
    import copy

    from crystalvision.data.ingest import ingest_from_mp
    from crystalvision.data.mp import subsystems
    from crystalvision.data.snapshot import load_snapshot
    from tests.conftest import BUNDLED
    from tests.support.mp_replay import space_docs

    docs = space_docs(2)  # two materials each of 1, 2, 3 and 4 elements
    outside = copy.deepcopy(docs[2]) | {"material_id": "mp-990003", "elements": ["Co", "O"], "chemsys": "Co-O"}
    mp_api.publish("2025.01.01", [*docs, outside])
    assert len(subsystems("O-Li-Ni-Mn")) == 15 and subsystems("Li-O") == ["Li", "O", "Li-O"]
    space = IngestConfig(chemsys="Li-Mn-Ni-O", subsystems=True)
    records, _ = fetch_records(space)
    assert sorted(r.material_id for r in records) == sorted(d["material_id"] for d in docs)
    assert [r.material_id for r in fetch_records(QUERY)[0]] == [d["material_id"] for d in docs[6:]]  # 4 elements
    sent = [r.params["chemsys"] for r in mp_api.requests if r.path.startswith("/materials/summary")]
    assert sent[0].split(",") == subsystems("Li-Mn-Ni-O")
    snap = load_snapshot(ingest_from_mp(space, tmp_path / "snaps"))
    bundled_space = load_snapshot(BUNDLED.parent / "lmno-space")
    assert snap.manifest.query == bundled_space.manifest.query == {"chemsys": "Li-Mn-Ni-O", "subsystems": True}
    assert snap.manifest.snapshot_id.startswith("Li-Mn-Ni-O-subsystems-2025.01.01-")


def test_a_query_over_max_records_is_refused_before_loading_it(mp_api):
    """ingest.max_records bounds what is loaded: at most cap + 1 documents are fetched, and the error names the
    count, the cap and the fix."""
    with pytest.raises(MPError, match=r"has 4 materials .* ingest.max_records=2; .*--set ingest.max_records=4"):
        fetch_records(IngestConfig(chemsys="Li-Mn-Ni-O", max_records=2))
    pages = [r for r in mp_api.requests if r.path.startswith("/materials/summary") and r.params.get("_fields")]
    assert pages and sum(int(r.params["_limit"]) for r in pages) <= 3
    assert len(fetch_records(IngestConfig(chemsys="Li-Mn-Ni-O", max_records=4))[0]) == 4


def test_quarantine_is_in_the_snapshot_before_it_appears(bundled_snapshot, tmp_path: Path, monkeypatch):
    """A reader never sees an ingested snapshot without its quarantine.json: it is written into the folder before
    the one rename that publishes it (so it is atomic too)."""
    import json
    import os

    from crystalvision.data.ingest import QUARANTINE_FILE, write_mp_snapshot

    published: dict[Path, list[str]] = {}
    real_replace = os.replace

    def spy(src, dst):
        if Path(src).is_dir():
            published[Path(dst)] = sorted(p.name for p in Path(src).iterdir())
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    quarantine = [{"material_id": "mp-990001", "reason": "mp-990001: the record has no structure"}]
    path = write_mp_snapshot(bundled_snapshot.records[:3], "2025.01.01", QUERY, tmp_path, quarantine)
    assert QUARANTINE_FILE in published[path], f"published without {QUARANTINE_FILE}: {published[path]}"
    assert json.loads((path / QUARANTINE_FILE).read_text()) == quarantine
