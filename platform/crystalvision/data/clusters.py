"""Near-copies among structures: pymatgen ``StructureMatcher`` on every pair of one reduced formula.

- :func:`structure_clusters`: the connected components of "matches" (pymatgen's default tolerances: ltol 0.2,
  stol 0.3, angle_tol 5 degrees) within each reduced formula, named by their first material id. Transitive, so a
  structure never sits in another cluster than a structure it matches (``group_structures`` is greedy and can do
  that). Deterministic; cached per set of structures under ``<home>/cache/`` (a few minutes on 900 structures).
  ``split.group_by: structure_cluster`` groups folds by it.
- :func:`near_identical_pairs`: pairs of one formula in different folds that match within tight tolerances
  (ltol 0.05, stol 0.1, 1 degree), with both structures' symmetry labels: where they differ, no model can be right
  on both, and a split cannot keep them apart without grouping by formula.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Composition, Structure

from crystalvision.core import ConfigError, progress
from crystalvision.data.snapshot import MaterialRecord

log = logging.getLogger(__name__)

DEFAULT_TOLERANCES = {"ltol": 0.2, "stol": 0.3, "angle_tol": 5.0}  # pymatgen's defaults
TIGHT_TOLERANCES = {"ltol": 0.05, "stol": 0.1, "angle_tol": 1.0}


def _structures(records: Sequence[MaterialRecord]) -> dict[str, Structure]:
    return {r.material_id: Structure.from_dict(r.structure) for r in sorted(records, key=lambda r: r.material_id)}


def same_formula_pairs(structures: Mapping[str, Structure]) -> list[tuple[str, str]]:
    """Every pair (sorted ids) of structures with the same reduced formula."""
    by_formula: dict[str, list[str]] = {}
    for m, s in structures.items():
        by_formula.setdefault(s.composition.reduced_formula, []).append(m)
    return [p for ids in by_formula.values() for p in itertools.combinations(sorted(ids), 2)]


def matching_pairs(
    structures: Mapping[str, Structure], pairs: Sequence[tuple[str, str]], tolerances: Mapping[str, float]
) -> list[tuple[str, str]]:
    """The ``pairs`` that ``StructureMatcher(**tolerances)`` finds equivalent (progress as ``match`` events)."""
    matcher = StructureMatcher(**tolerances)
    found = []
    for i, (a, b) in enumerate(pairs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if matcher.fit(structures[a], structures[b]):
                found.append((a, b))
        if i % 200 == 0:
            progress.emit("match", i, len(pairs), "pairs")
    progress.emit("match", len(pairs), len(pairs), "pairs")
    return found


def components(ids: Sequence[str], edges: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Material id -> the smallest id of its connected component (union-find over ``edges``)."""
    parent = {m: m for m in ids}

    def root(m: str) -> str:
        while parent[m] != m:
            parent[m] = parent[parent[m]]
            m = parent[m]
        return m

    for a, b in edges:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {m: root(m) for m in ids}


def _cache_path(records: Sequence[MaterialRecord], tolerances: Mapping[str, float]) -> Path:
    from crystalvision.core import get_settings

    h = hashlib.sha256(json.dumps(dict(tolerances), sort_keys=True).encode())
    for r in sorted(records, key=lambda r: r.material_id):
        h.update(r.material_id.encode() + json.dumps(r.structure, sort_keys=True).encode())
    return get_settings().paths.home / "cache" / f"structure-clusters-{h.hexdigest()[:16]}.json"


def structure_clusters(
    records: Sequence[MaterialRecord], tolerances: Mapping[str, float] = DEFAULT_TOLERANCES
) -> dict[str, str]:
    """Material id -> structure cluster (the smallest material id of its connected component of matches)."""
    path = _cache_path(records, tolerances)
    if path.is_file():
        try:
            cached = json.loads(path.read_text())
            if set(cached) == {r.material_id for r in records}:
                return cached
        except (OSError, json.JSONDecodeError):
            log.warning("structure clusters: unreadable cache %s; computing again", path)
    structures = _structures(records)
    pairs = same_formula_pairs(structures)
    log.info("structure clusters: matching %d same-formula pairs of %d structures", len(pairs), len(structures))
    clusters = components(list(structures), matching_pairs(structures, pairs, tolerances))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(clusters, sort_keys=True))
    os.replace(tmp, path)
    log.info("structure clusters: %d clusters of %d structures (cached in %s)", len(set(clusters.values())),
             len(clusters), path)  # fmt: skip
    return clusters


def near_identical_pairs(
    records: Sequence[MaterialRecord],
    fold_of: Mapping[str, int],
    tolerances: Mapping[str, float] = TIGHT_TOLERANCES,
) -> list[dict[str, Any]]:
    """Same-formula pairs in different folds that match within ``tolerances``, with their folds and labels."""
    by_id = {r.material_id: r for r in records}
    structures = _structures(records)
    pairs = [(a, b) for a, b in same_formula_pairs(structures) if fold_of[a] != fold_of[b]]
    out = []
    for a, b in matching_pairs(structures, pairs, tolerances):
        ra, rb = by_id[a], by_id[b]
        out.append(
            {
                "a": a,
                "b": b,
                "formula": structures[a].composition.reduced_formula,
                "folds": [int(fold_of[a]), int(fold_of[b])],
                "crystal_system": [ra.crystal_system, rb.crystal_system],
                "spacegroup": [ra.spacegroup_symbol, rb.spacegroup_symbol],
                "same_crystal_system": ra.crystal_system == rb.crystal_system,
                "same_spacegroup": ra.spacegroup_symbol == rb.spacegroup_symbol,
            }
        )
    return out


def group_series(df: pd.DataFrame, group_by: str, clusters: Mapping[str, str] | None = None) -> pd.Series:
    """The group of each row for ``split.group_by``: its material id, its reduced formula, or its structure
    cluster (``clusters``: material id -> cluster, from :func:`structure_clusters`)."""
    if group_by == "material":
        return df["material_id"].astype(str)
    if group_by == "formula":
        if "formula" not in df:
            raise ConfigError("split.group_by: formula needs the labels table's formula column; render again")
        reduced = {f: Composition(f).reduced_formula for f in df["formula"].unique()}
        return df["formula"].map(reduced)
    if clusters is None:
        raise ConfigError(
            "split.group_by: structure_cluster needs the snapshot's structures; run it through the pipeline "
            "(crystalvision pipeline run), which matches them"
        )
    missing = sorted(set(df["material_id"]) - set(clusters))
    if missing:
        raise ConfigError(f"split.group_by: structure_cluster has no cluster for {missing[:5]}; use the run's snapshot")
    return df["material_id"].map(clusters)
