"""Materials Project access through mp-api's ``MPRester``: database version and summary queries."""

from __future__ import annotations

import logging
from typing import Any

from crystalvision.config import IngestConfig
from crystalvision.errors import MPError
from crystalvision.settings import MPSettings, get_settings
from crystalvision.snapshot import MaterialRecord
from crystalvision.structures import geometry_flags, symmetry_labels, validate_structure

log = logging.getLogger(__name__)

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


def _rester(settings: MPSettings):
    from mp_api.client import MPRester

    if settings.api_key is None or not settings.api_key.get_secret_value():
        raise MPError(
            "no Materials Project API key: set MP_API_KEY (get one at https://materialsproject.org/api), "
            "or use the bundled snapshot offline"
        )
    kwargs: dict[str, Any] = {"api_key": settings.api_key.get_secret_value(), "mute_progress_bars": True}
    if settings.endpoint:
        kwargs["endpoint"] = settings.endpoint
    return MPRester(**kwargs)


def database_version(settings: MPSettings | None = None) -> str:
    """The Materials Project database version the API serves now."""
    settings = settings or get_settings().mp
    with _rester(settings) as mpr:
        try:
            version = mpr.get_database_version()
        except Exception as exc:
            raise MPError(f"cannot read the Materials Project database version ({type(exc).__name__})") from exc
    if not version:
        raise MPError("the Materials Project returned no database version; try again later")
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
    return q


def _to_record(doc: Any, db_version: str) -> MaterialRecord:
    get = doc.get if isinstance(doc, dict) else lambda k, d=None: getattr(doc, k, d)
    structure = get("structure")
    if isinstance(structure, dict):
        from pymatgen.core import Structure

        structure = Structure.from_dict(structure)
    mid = str(get("material_id"))
    validate_structure(structure, mid)
    labels = symmetry_labels(structure)
    source = {k: v.format(db=db_version) for k, v in MP_LABEL_SOURCE.items()}
    return MaterialRecord(
        material_id=mid,
        formula=str(get("formula_pretty") or structure.composition.reduced_formula),
        nsites=int(get("nsites") or len(structure)),
        crystal_system=labels.crystal_system,
        spacegroup_symbol=labels.spacegroup_symbol,
        spacegroup_number=labels.spacegroup_number,
        band_gap=float(get("band_gap") or 0.0),
        energy_above_hull=float(get("energy_above_hull") or 0.0),
        formation_energy_per_atom=get("formation_energy_per_atom"),
        flags=geometry_flags(structure),
        label_source=source,
        structure=structure.as_dict(),
    )


def fetch_records(cfg: IngestConfig, settings: MPSettings | None = None) -> tuple[list[MaterialRecord], str]:
    """Query the summary endpoint; returns (records, db_version). Bad entries are skipped and logged."""
    from crystalvision.errors import StructureError

    settings = settings or get_settings().mp
    query = query_dict(cfg)
    with _rester(settings) as mpr:
        db_version = str(mpr.get_database_version())
        try:
            docs = mpr.materials.summary.search(**query, fields=SUMMARY_FIELDS)
        except Exception as exc:
            raise MPError(f"Materials Project query {query} failed ({type(exc).__name__}: {str(exc)[:200]})") from exc
    if not docs:
        raise MPError(f"the Materials Project returned no materials for {query}; check the chemical system")
    records, bad = [], []
    for doc in docs:
        try:
            records.append(_to_record(doc, db_version))
        except StructureError as exc:
            bad.append(str(exc))
    for msg in bad:
        log.warning("skipped: %s", msg)
    log.info("fetched %d materials for %s from db %s (%d skipped)", len(records), query, db_version, len(bad))
    return records, db_version
