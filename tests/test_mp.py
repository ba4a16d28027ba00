"""mp.py against the real mp-api client and a local replay of the Materials Project API."""

from __future__ import annotations

import logging

import pytest

from crystalvision.config import IngestConfig
from crystalvision.errors import MPError
from crystalvision.mp import database_version, fetch_records
from crystalvision.settings import get_settings
from tests.conftest import MP_TEST_KEY as API_KEY

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
    with caplog.at_level(logging.WARNING, logger="crystalvision.mp"):
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
