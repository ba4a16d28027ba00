"""A fixed structure hold-out: material ids that no selection run sees, and the test set of the final run.

A hold-out file is JSON, read with :mod:`json` and never executed: the material ids, their reduced formulas, how
they were made, and a sha256 of the ids and formulas (:func:`digest`) that :func:`load_holdout` checks.
:func:`make_holdout` (``crystalvision holdout``) makes one from a pipeline's selection with the grouped fold code of
:mod:`crystalvision.data.folds`: ``m`` of the ``k`` test folds of a stratified group k-fold (scikit-learn's
``StratifiedGroupKFold``), grouped by reduced formula (no formula on both sides) and stratified by crystal system,
where ``m / k`` is the fraction's nearest ratio with ``k`` at most 20 (3 of 20 for 15 %) and the ``m`` folds are those
whose structures add up nearest the fraction (by size alone: one formula can hold many structures, so folds differ in
size); seeded, so the same selection, fraction and seed give the same file.

``split.holdout`` uses it in one of two ways:

- ``exclude`` (:func:`apply_holdout`): its ids leave the selection before anything is rendered, and with them any
  other selected structure of a hold-out formula, so every fold, validation carve-out and baseline of the run never
  sees them. Ids the snapshot lacks are ignored (one INFO line).
- ``test`` (:func:`holdout_split`): one fold whose test part is exactly the hold-out; its training and validation
  parts are carved from the other structures as a fold's are (grouped by ``split.group_by``, stratified by crystal
  system). A structure outside the hold-out that shares a hold-out formula is left out of both (a WARNING); hold-out
  ids not among the structures split (not selected, or rejected by the renderer) are named in one WARNING.

Records and MLflow params name the file relative to the checkout when it is inside it (:func:`holdout_file_text`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from crystalvision.core import CHECKOUT, ConfigError, SplitConfig, from_checkout
from crystalvision.data.clusters import group_series
from crystalvision.data.folds import FoldSplits, _carve_val, _test_indices, unseen_classes
from crystalvision.data.snapshot import MaterialRecord, Selection

log = logging.getLogger(__name__)

MAX_FOLDS = 20  # the hold-out is m of k stratified group folds, k <= MAX_FOLDS
MAKE = "crystalvision holdout -c PIPELINE --out FILE"


class Holdout(BaseModel):
    """A hold-out file: the ids, their reduced formulas, their digest and how they were made."""

    model_config = ConfigDict(extra="allow")

    ids: list[str]
    formulas: list[str]
    sha256: str
    how_made: dict[str, Any] = {}


def digest(ids: Sequence[str], formulas: Sequence[str]) -> str:
    """sha256 over the canonical JSON of the sorted ids and sorted reduced formulas."""
    blob = json.dumps({"formulas": sorted(formulas), "ids": sorted(ids)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def tests_on_holdout(split: SplitConfig) -> bool:
    """True when ``split.holdout.use`` is ``test``: the run's one test set is the hold-out."""
    return split.holdout is not None and split.holdout.use == "test"


def load_holdout(path: str | Path) -> Holdout:
    """The hold-out file at ``path``, its digest checked; a ConfigError names the file and the fix."""
    p = Path(path).expanduser()
    where = "relative paths in a pipeline file resolve against its folder, in --set against the working dir"
    if not p.is_file():
        raise ConfigError(
            f"split.holdout.ids: no hold-out file at {p}; give the path of one ({where}; the study's is "
            f"docs/study/records/holdout.json) or make one: {MAKE}"
        )
    try:
        holdout = Holdout.model_validate(json.loads(p.read_text()))
    except (ValueError, ValidationError) as exc:  # json.JSONDecodeError is a ValueError
        first = str(exc).splitlines()[0]
        raise ConfigError(f"split.holdout.ids: {p} is not a hold-out file ({first}); make it again: {MAKE}") from exc
    if not holdout.ids:
        raise ConfigError(f"split.holdout.ids: {p} lists no material ids; make it again: {MAKE}")
    if digest(holdout.ids, holdout.formulas) != holdout.sha256:
        raise ConfigError(
            f"split.holdout.ids: the ids and formulas of {p} do not match its sha256 (edited by hand?); restore it "
            f"from git or make it again: {MAKE}"
        )
    return holdout


def holdout_file_text(path: str | Path) -> str:
    """How records and MLflow params name a hold-out file: relative to the checkout (``CHECKOUT``, e.g.
    ``docs/study/records/holdout.json``) when the file is inside it, so a committed record carries no machine's path;
    absolute otherwise. :func:`holdout_file_path` reads it back."""
    return from_checkout(path)


def holdout_file_path(text: str | Path) -> Path:
    """The hold-out file a record or a run's params name (:func:`holdout_file_text`): a relative name against the
    checkout, whatever the working dir; an absolute one as it is."""
    p = Path(text).expanduser()
    return p if p.is_absolute() else CHECKOUT / p


def describe_holdout(split: SplitConfig) -> dict[str, Any]:
    """What a run's record and MLflow params say of its hold-out: file (:func:`holdout_file_text`), sha256, use,
    number of ids ({} without)."""
    if split.holdout is None:
        return {}
    holdout = load_holdout(split.holdout.ids)
    return {"file": holdout_file_text(split.holdout.ids), "sha256": holdout.sha256, "use": split.holdout.use,
            "n_ids": len(holdout.ids)}  # fmt: skip


def reduced_formulas(frame: pd.DataFrame) -> pd.Series:
    """Each row's reduced formula (the ``formula`` grouping of :func:`~crystalvision.data.clusters.group_series`)."""
    return group_series(frame, "formula")


def _record_frame(records: Sequence[MaterialRecord]) -> pd.DataFrame:
    rows = [{"material_id": r.material_id, "formula": r.formula, "crystal_system": r.crystal_system} for r in records]
    return pd.DataFrame(rows, columns=["material_id", "formula", "crystal_system"])


def apply_holdout(selection: Selection, split: SplitConfig) -> Selection:
    """The selection as ``split.holdout`` leaves it: ``exclude`` drops the hold-out's ids and every other structure
    of a hold-out formula (listed in ``Selection.held_out``); ``test`` keeps every structure, after checking that
    the hold-out is there (a ConfigError when none of its ids is). Unchanged without ``split.holdout``."""
    if split.holdout is None:
        return selection
    holdout, path = load_holdout(split.holdout.ids), split.holdout.ids
    frame = _record_frame(selection.records)
    listed = frame["material_id"].isin(set(holdout.ids))
    n_in, n_ids = int(listed.sum()), len(holdout.ids)
    if tests_on_holdout(split):
        if not n_in:
            made = holdout.how_made.get("snapshot_id", "the snapshot it was made from")
            raise ConfigError(
                f"split.holdout.use: test, but none of the {n_ids} ids of {path} is among the {len(frame)} selected "
                f"structures; select the snapshot the hold-out was made from ({made}) or make a hold-out of this one"
            )
        if n_in < n_ids:
            log.warning("hold-out %s: %d of its %d ids are selected; the test set is those %d", path, n_in, n_ids, n_in)
        return selection
    sibling = ~listed & reduced_formulas(frame).isin(set(holdout.formulas)).to_numpy()
    log.info(
        "hold-out %s (sha256 %s, use: exclude): %d of its %d ids selected and left out; %d not in the selection, "
        "ignored", path, holdout.sha256[:12], n_in, n_ids, n_ids - n_in,
    )  # fmt: skip
    if sibling.any():
        log.warning(
            "%d more structures share a reduced formula with the hold-out and are left out too: %s",
            int(sibling.sum()), frame.loc[sibling, "material_id"].tolist(),
        )  # fmt: skip
    drop = (listed | sibling).to_numpy()
    if drop.all():
        raise ConfigError(f"split.holdout ({path}, use: exclude) leaves no structure of the selection")
    kept = [r for r, d in zip(selection.records, drop, strict=True) if not d]
    return dataclasses.replace(selection, records=kept, held_out=sorted(frame.loc[drop, "material_id"]))


def without_holdout(labels: pd.DataFrame, split: SplitConfig) -> pd.DataFrame:
    """The labels table without the rows ``split.holdout`` (``exclude``) leaves out: its ids and their formulas'
    other structures (a table rendered before the hold-out was set); unchanged otherwise."""
    if split.holdout is None or tests_on_holdout(split):
        return labels
    holdout = load_holdout(split.holdout.ids)
    drop = labels["material_id"].isin(set(holdout.ids)) | reduced_formulas(labels).isin(set(holdout.formulas))
    return labels[~drop.to_numpy()].reset_index(drop=True) if drop.any() else labels


def holdout_split(labels: pd.DataFrame, split: SplitConfig, clusters: Mapping[str, str] | None = None) -> FoldSplits:
    """One fold whose test part is exactly the hold-out's rows of ``labels`` (``split.holdout.use: test``); training
    and validation are carved from the other rows like a fold's (``split.val_fraction``, grouped by
    ``split.group_by``, stratified by crystal system where class sizes allow; seed ``split.seed``)."""
    assert split.holdout is not None
    holdout = load_holdout(split.holdout.ids)
    in_test = labels["material_id"].isin(set(holdout.ids)).to_numpy()
    if not in_test.any():
        raise ConfigError(f"split.holdout.use: test, but the labels table holds none of the ids of {split.holdout.ids}")
    _warn_untested(holdout, set(labels.loc[in_test, "material_id"]), split.holdout.ids)
    sibling = ~in_test & reduced_formulas(labels).isin(set(holdout.formulas)).to_numpy()
    if sibling.any():
        names = sorted(set(labels.loc[sibling, "material_id"]))
        log.warning("%d structures share a reduced formula with the hold-out: left out of training and validation: %s",
                    len(names), names)  # fmt: skip
    rest = labels[~in_test & ~sibling]
    rest = rest.assign(group=group_series(rest, split.group_by, clusters).to_numpy())
    train, val, val_stratified = _carve_val(rest, split, split.seed, True)
    parts = [
        x.drop(columns="group", errors="ignore").sample(frac=1.0, random_state=split.seed).reset_index(drop=True)
        for x in (train, val, labels[in_test])
    ]
    stratified = bool(holdout.how_made.get("stratified", False))
    fold = FoldSplits(*parts, protocol="grouped", seed=split.seed, fold=0, n_folds=1, stratified=stratified)
    fold.unseen_classes, fold.val_stratified = unseen_classes(parts[0], parts[2]), val_stratified
    for col, classes in fold.unseen_classes.items():
        if classes:
            log.warning("hold-out test %s classes with no training example: %s", col, classes)
    log.info("the hold-out as the test set: %s", {k: v for k, v in fold.describe().items() if k.startswith("n_")})
    return fold


def _warn_untested(holdout: Holdout, tested: set[str], path: str) -> None:
    """One WARNING when fewer hold-out ids are tested than the file lists: not selected, or the renderer rejected
    them (the record's ``pooled_n_structures`` and ``holdout.n_ids`` hold both counts)."""
    missing = sorted(set(holdout.ids) - tested)
    if missing:
        shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
        log.warning(
            "hold-out %s: %d of its %d ids are tested; %d are not among the structures split (not selected, or "
            "rejected by the renderer): %s", holdout_file_text(path), len(holdout.ids) - len(missing),
            len(holdout.ids), len(missing), shown,
        )  # fmt: skip


def holdout_ratio(fraction: float) -> Fraction:
    """``m / k``: the ratio nearest ``fraction`` with ``k`` at most :data:`MAX_FOLDS` (3/20 for 0.15)."""
    ratio = Fraction(fraction).limit_denominator(MAX_FOLDS)
    if not 0 < ratio < 1 or ratio > Fraction(1, 2):
        raise ConfigError(f"a hold-out fraction of {fraction} is outside 1/{MAX_FOLDS}..1/2; use e.g. 0.15")
    return ratio


def make_holdout(
    records: Sequence[MaterialRecord], fraction: float, seed: int, made: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The hold-out file's content for ``records``: ``m`` of ``k`` stratified group folds (:func:`holdout_ratio`),
    grouped by reduced formula, stratified by crystal system, seeded; the ``m`` folds whose sizes add up nearest
    ``fraction`` of the structures (the first such in fold order). ``made``: provenance (snapshot, command) added to
    ``how_made``. Deterministic: no dates or versions in it."""
    frame = _record_frame(records).sort_values("material_id").reset_index(drop=True)
    frame["group"] = reduced_formulas(frame).to_numpy()
    ratio = holdout_ratio(fraction)
    if frame["group"].nunique() < ratio.denominator:
        raise ConfigError(f"a hold-out of {ratio} needs at least {ratio.denominator} formulas; select more structures")
    tests, stratified = _test_indices(frame, ratio.denominator, seed, True)
    sizes, target = [len(t) for t in tests], fraction * len(frame)
    picked = min(itertools.combinations(range(len(tests)), ratio.numerator),
                 key=lambda c: abs(sum(sizes[i] for i in c) - target))  # fmt: skip
    held = frame.iloc[np.sort(np.concatenate([tests[i] for i in picked]))]
    ids, formulas = sorted(held["material_id"]), sorted(set(held["group"]))
    share = {k: int(v) for k, v in held["crystal_system"].value_counts().sort_index().items()}
    every = {k: int(v) for k, v in frame["crystal_system"].value_counts().sort_index().items()}
    return {
        "what": "A structure hold-out: no selection run may see these structures (split.holdout.use: exclude); the "
        "final run tests on exactly them (split.holdout.use: test). Read as JSON, never executed.",
        "how_made": {
            **dict(made or {}),
            "n_structures": len(frame),
            "fraction": fraction,
            "folds": f"test folds {list(picked)} of {ratio.denominator} stratified group folds (scikit-learn "
            f"StratifiedGroupKFold; crystalvision.data.holdout.make_holdout): the {ratio.numerator} whose structures "
            f"add up nearest {fraction:.0%} of the {len(frame)}, by size alone",
            "fold_sizes": sizes,
            "largest_formula_held_out": int(held["group"].value_counts().max()),
            "largest_formulas_all": {k: int(v) for k, v in frame["group"].value_counts().head(3).items()},
            "group_by": "formula (reduced; no formula on both sides)",
            "stratified_by": "crystal_system",
            "stratified": stratified,
            "seed": seed,
            "crystal_system_held_out": share,
            "crystal_system_all": every,
        },
        "n_ids": len(ids),
        "n_formulas": len(formulas),
        "sha256": digest(ids, formulas),
        "ids": ids,
        "formulas": formulas,
    }


def write_holdout(cfg: Any, out: Path, fraction: float, seed: int, command: str) -> dict[str, Any]:
    """Make the hold-out of ``cfg``'s selection (its snapshot section; any ``split.holdout`` of it ignored) and
    write it to ``out`` as JSON; its content."""
    from crystalvision.data.snapshot import load_selection

    snap, selection = load_selection(cfg.snapshot)
    made = {"command": command, "pipeline": cfg.name, "snapshot_id": snap.manifest.snapshot_id,
            "snapshot_sha256": snap.manifest.content_sha256}  # fmt: skip
    content = make_holdout(selection.records, fraction, seed, made)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(content, indent=1) + "\n")
    log.info("hold-out %s: %d of %d structures, sha256 %s", out, content["n_ids"], len(selection.records),
             content["sha256"])  # fmt: skip
    return content
