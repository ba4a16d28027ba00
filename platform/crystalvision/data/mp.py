"""Materials Project access through mp-api's ``MPRester``: database version and summary queries."""

from __future__ import annotations

import logging
import math
import random
import re
import time
from collections.abc import Callable
from itertools import combinations
from typing import Any, TypeVar

from crystalvision.core import IngestConfig, MPError, MPSettings, StructureError, get_settings, mask
from crystalvision.data.snapshot import MaterialRecord
from crystalvision.data.structures import (
    MISSING_LABEL_FLAG,
    geometry_flags,
    structure_from_dict,
    symmetry_labels,
    validate_structure,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
HTTP_TIMEOUT_S = 20
# mp-api reports HTTP failures only in exception messages: "error status code 503", "too many 429 error responses".
_TRANSIENT_MESSAGE = re.compile(r"(?:status code|too many) (429|5\d\d)\b")

SUMMARY_FIELDS = [
    "material_id",
    "formula_pretty",
    "nsites",
    "structure",
    "band_gap",
    "energy_above_hull",
    "formation_energy_per_atom",
    "symmetry",
]
MP_LABEL_SOURCE = {
    "band_gap": "Materials Project summary band_gap (DFT GGA/GGA+U), db {db}",
    "energy_above_hull": "Materials Project summary energy_above_hull (DFT, MP2020 corrections), db {db}",
}


class _TransientHTTP(Exception):
    """The API answered a status worth retrying (429 or 5xx)."""

    def __init__(self, status: int):
        super().__init__(f"HTTP {status}")
        self.status = status


def _endpoint(settings: MPSettings) -> str:
    from mp_api.client.core.utils import validate_endpoint

    return validate_endpoint(settings.endpoint)


def _api_key(settings: MPSettings) -> str:
    if settings.api_key is None or not settings.api_key.get_secret_value():
        raise MPError(
            "no Materials Project API key: set MP_API_KEY (get one at https://materialsproject.org/api), "
            "or use the bundled snapshot offline"
        )
    key = settings.api_key.get_secret_value()
    if len(key) != 32:
        raise MPError("MP_API_KEY is not a valid Materials Project API key (they are 32 characters); check it")
    return key


def _rester(settings: MPSettings):
    from mp_api.client import MPRester

    # Plain dicts, not emmet document models: one malformed record (a bad id) would otherwise fail the whole page
    # inside mp-api; _to_record validates each record itself and quarantines the bad ones.
    kwargs: dict[str, Any] = {"api_key": _api_key(settings), "mute_progress_bars": True, "use_document_model": False}
    if settings.endpoint:
        kwargs["endpoint"] = settings.endpoint
    return MPRester(**kwargs)


def _probe_heartbeat(endpoint: str) -> None:
    """GET the public heartbeat; raise :class:`_TransientHTTP` on 429/5xx (mp-api does not retry it)."""
    import requests

    resp = requests.get(endpoint + "heartbeat", timeout=HTTP_TIMEOUT_S)
    if resp.status_code == 429 or resp.status_code >= 500:
        raise _TransientHTTP(resp.status_code)


def _transient_reason(exc: BaseException) -> str | None:
    """Why ``exc`` is worth a retry (a 429/5xx status or a connection problem), or None."""
    import requests

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _TransientHTTP):
            return f"HTTP {seen.status}"
        if isinstance(seen, requests.ConnectionError | requests.Timeout):
            return type(seen).__name__
        match = _TRANSIENT_MESSAGE.search(str(seen))
        if match:
            return f"HTTP {match.group(1)}"
        seen = seen.__cause__ or seen.__context__
    return None


def _redacted(exc: BaseException, settings: MPSettings) -> str:
    from crystalvision.core import mask

    key = settings.api_key.get_secret_value() if settings.api_key else ""
    return mask(mask(f"{type(exc).__name__}: {str(exc)[:300]}"), [key] if key else [])


def _call(settings: MPSettings, what: str, fn: Callable[[Any], T]) -> T:
    """Run ``fn(mpr)`` with a fresh MPRester, retrying with exponential back-off on 429/5xx."""
    from mp_api.client.core.client import _Rester

    _api_key(settings)  # fail fast, before any request, on a missing or malformed key
    for attempt in range(settings.max_retries + 1):
        try:
            # mp-api caches the heartbeat (db_version) per endpoint for the life of the process: a long-lived
            # scheduler must see new database versions, so clear it before every attempt.
            _Rester._get_heartbeat_info.cache_clear()
            _probe_heartbeat(_endpoint(settings))
            with _rester(settings) as mpr:
                return fn(mpr)
        except MPError:
            raise
        except Exception as exc:
            reason = _transient_reason(exc)
            if reason is None:
                raise MPError(f"{what} failed ({_redacted(exc, settings)})") from exc
            if attempt == settings.max_retries:
                raise MPError(
                    f"{what} failed after {attempt + 1} attempts (last: {reason}); the Materials Project is "
                    "rate-limiting or unavailable, try again later or raise CRYSTALVISION_MAX_RETRIES"
                ) from exc
            delay = backoff_delay(settings, attempt)
            log.warning(
                "%s: Materials Project answered %s; retry %d/%d in %.1fs",
                what,
                reason,
                attempt + 1,
                settings.max_retries,
                delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def backoff_delay(settings: MPSettings, attempt: int) -> float:
    """Exponential back-off capped at ``retry_max_backoff_s``, with full jitter in its upper half (so that many
    schedulers retrying together spread out)."""
    capped = min(settings.retry_max_backoff_s, settings.retry_backoff_s * 2 ** min(attempt, 30))
    return capped * random.uniform(0.5, 1.0)


def database_version(settings: MPSettings | None = None) -> str:
    """The Materials Project database version the API serves now (mp-api's heartbeat ``db_version``)."""
    settings = settings or get_settings().mp
    version = _call(settings, "reading the Materials Project database version", lambda mpr: mpr.db_version)
    if not version:
        raise MPError("the Materials Project returned no database version (HTTP 403?); check MP_API_KEY")
    return str(version)


def query_dict(cfg: IngestConfig) -> dict[str, Any]:
    """The query as stored in a snapshot manifest."""
    q: dict[str, Any] = {}
    if cfg.chemsys:
        q["chemsys"] = cfg.chemsys
    if cfg.elements:
        q["elements"] = sorted(cfg.elements)
    if cfg.nelements:
        q["nelements"] = cfg.nelements
    if cfg.subsystems:
        q["subsystems"] = True
    return q


def subsystems(chemsys: str) -> list[str]:
    """Every chemical system made of a non-empty subset of ``chemsys``'s elements (Li-O: Li, O, Li-O), elements
    sorted within each as the Materials Project writes them."""
    elements = sorted({e.strip() for e in chemsys.split("-") if e.strip()})
    return ["-".join(c) for n in range(1, len(elements) + 1) for c in combinations(elements, n)]


def search_kwargs(cfg: IngestConfig) -> dict[str, Any]:
    """The query as keyword arguments of ``MPRester().materials.summary.search`` (mp-api says ``num_elements``;
    ``subsystems`` becomes the list of every sub-system, which mp-api sends as one request)."""
    kwargs = query_dict(cfg)
    if "nelements" in kwargs:
        kwargs["num_elements"] = kwargs.pop("nelements")
    if kwargs.pop("subsystems", False):
        kwargs["chemsys"] = subsystems(kwargs["chemsys"])
    return kwargs


def count_criteria(cfg: IngestConfig) -> dict[str, Any]:
    """The query as the summary endpoint's own parameters (what ``search`` sends), for ``count``."""
    kwargs = search_kwargs(cfg)
    criteria: dict[str, Any] = {k: ",".join(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    if "num_elements" in criteria:
        n = criteria.pop("num_elements")
        criteria |= {"nelements_min": n, "nelements_max": n}
    return criteria


def _label(get: Callable[..., Any], name: str, mid: str) -> float | None:
    """A regression label as a float, or None when the record has none (never 0.0: 0 eV above hull is 'stable')."""
    value = get(name)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise StructureError(f"{mid}: {name} is {value!r}, not a number") from exc
    if not math.isfinite(number):
        return None
    return number


def _to_record(doc: Any, db_version: str) -> MaterialRecord:
    get = doc.get if isinstance(doc, dict) else lambda k, d=None: getattr(doc, k, d)
    mid = str(get("material_id"))
    structure = get("structure")
    if structure is None:
        raise StructureError(f"{mid}: the record has no structure")
    if isinstance(structure, dict):
        structure = structure_from_dict(structure, mid)
    validate_structure(structure, mid)
    labels = symmetry_labels(structure)
    source = {k: v.format(db=db_version) for k, v in MP_LABEL_SOURCE.items()}
    values = {name: _label(get, name, mid) for name in ("band_gap", "energy_above_hull")}
    missing = [MISSING_LABEL_FLAG.format(name) for name, v in values.items() if v is None]
    return MaterialRecord(
        material_id=mid,
        formula=str(get("formula_pretty") or structure.composition.reduced_formula),
        nsites=int(get("nsites") or len(structure)),
        crystal_system=labels.crystal_system,
        spacegroup_symbol=labels.spacegroup_symbol,
        spacegroup_number=labels.spacegroup_number,
        **values,
        formation_energy_per_atom=get("formation_energy_per_atom"),
        flags=geometry_flags(structure) + missing,
        label_source=source,
        structure=structure.as_dict(),
    )


def _doc_id(doc: Any) -> str:
    value = doc.get("material_id") if isinstance(doc, dict) else getattr(doc, "material_id", None)
    return str(value) if value is not None else "<no material_id>"


def fetch_records(
    cfg: IngestConfig, settings: MPSettings | None = None, quarantine: list[dict[str, str]] | None = None
) -> tuple[list[MaterialRecord], str]:
    """Query the summary endpoint; returns (records, db_version). A query that matches more than
    ``cfg.max_records`` materials is refused before they are loaded (an :class:`MPError` naming the count).

    A record that fails for any reason of its own (bad id, unreadable structure, symmetry failure, bad label) is
    quarantined, ``{"material_id", "reason"}`` appended to ``quarantine``, and the fetch goes on.
    """
    settings = settings or get_settings().mp
    query = query_dict(cfg)

    def search(mpr: Any) -> tuple[str, list[Any], int | None]:
        # at most max_records + 1 documents are ever loaded; one more than the cap means the query is too big
        chunk = min(1000, cfg.max_records + 1)
        docs = mpr.materials.summary.search(
            **search_kwargs(cfg), fields=SUMMARY_FIELDS, chunk_size=chunk, num_chunks=-(-(cfg.max_records + 1) // chunk)
        )
        total = mpr.materials.summary.count(count_criteria(cfg)) if len(docs) > cfg.max_records else None
        return str(mpr.db_version), docs, total

    db_version, docs, total = _call(settings, f"Materials Project query {query}", search)
    if total is not None or len(docs) > cfg.max_records:
        raise MPError(
            f"the Materials Project has {total or f'more than {cfg.max_records}'} materials for {query}, more than "
            f"ingest.max_records={cfg.max_records}; narrow the query, or raise the cap "
            f"(--set ingest.max_records={max(total or 0, cfg.max_records + 1)}) if there is memory for them"
        )
    if not docs:
        raise MPError(f"the Materials Project returned no materials for {query}; check the chemical system")
    records, bad = [], []
    for doc in docs:
        mid = _doc_id(doc)
        try:
            records.append(_to_record(doc, db_version))
        except Exception as exc:  # one odd record must not stop the fetch
            reason = str(exc) if isinstance(exc, StructureError) else f"{mid}: {type(exc).__name__}: {exc}"
            reason = " ".join(reason.split()).split(" For further information")[0]  # pydantic's doc link
            bad.append({"material_id": mid, "reason": mask(reason[:500])})
    for item in bad:
        log.warning("quarantined %s: %s", item["material_id"], item["reason"])
    if quarantine is not None:
        quarantine.extend(bad)
    if not records:
        raise MPError(f"all {len(bad)} materials for {query} were quarantined (first: {bad[0]['reason']})")
    n_missing = sum(1 for r in records if any(f.startswith("missing_") for f in r.flags))
    log.info(
        "fetched %d materials for %s from db %s (%d quarantined, %d without a label: flagged, left out of it)",
        len(records),
        query,
        db_version,
        len(bad),
        n_missing,
    )
    return records, db_version
