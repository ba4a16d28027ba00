"""The road from a pipeline config to the prepared inputs of every later stage.

``prepare(cfg)`` = :func:`select_records` (snapshot + selection) -> :func:`render` (Ray Data, cached) ->
:func:`assemble` (labels table, splits, model spec, store), returned as one :class:`Prepared`. Train, tune,
evaluate and the registry take a ``Prepared``; nobody else loads a snapshot or renders to find its inputs.
The split is made in :func:`make_splits` only; with ``split.folds`` (or ``split.leave_one_out``) :func:`fold_inputs`
yields one ``Prepared`` per fold (``prepared.with_splits(fold)``, a :class:`~crystalvision.data.folds.FoldSplits`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crystalvision.core import PipelineConfig, SplitConfig
from crystalvision.data import (
    ObjectStore,
    Selection,
    Snapshot,
    Splits,
    load_labels,
    load_selection,
    open_store,
    split_frame,
)
from crystalvision.learn.model import ModelSpec, spec_for

if TYPE_CHECKING:
    from crystalvision.render import RenderResult

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """Everything a training, evaluation or registration step needs, prepared once from a config.

    ``snapshot``, ``selection`` and ``render`` are None when the inputs were not made by :func:`prepare`
    (e.g. a logged run rebuilt from its labels table, or a test's toy dataset). ``spec`` is the model spec
    before training (classes, image size, provenance); training sets the target scaling on its own copy.
    """

    cfg: PipelineConfig
    store: ObjectStore
    splits: Splits
    spec: ModelSpec
    snapshot: Snapshot | None = None
    selection: Selection | None = None
    render: RenderResult | None = None
    labels_key: str | None = None

    def with_config(self, cfg: PipelineConfig) -> Prepared:
        """The same data under another config (a Tune trial's sampled hyper-parameters)."""
        return dataclasses.replace(self, cfg=cfg)

    def with_splits(self, splits: Splits) -> Prepared:
        """The same data with another split (one fold of a k-fold run)."""
        return dataclasses.replace(self, splits=splits)

    def with_spec_copy(self) -> Prepared:
        """The same inputs with a copy of the spec (training sets its target scaling; trials must not share it)."""
        return dataclasses.replace(self, spec=self.spec.model_copy(deep=True))

    def for_workers(self) -> Prepared:
        """What a remote trial needs (config, store, splits, spec), without the snapshot's structures."""
        return dataclasses.replace(self, snapshot=None, selection=None)

    @property
    def records(self) -> dict[str, Any] | None:
        """Snapshot records by material_id (for the structure baselines), when the snapshot is known."""
        return {r.material_id: r for r in self.snapshot.records} if self.snapshot is not None else None


def select_records(cfg: PipelineConfig) -> tuple[Snapshot, Selection]:
    """The snapshot the config names (or the default) and the records it selects, logged."""
    snap, selection = load_selection(cfg.snapshot)
    log.info(
        "snapshot %s: %d of %d structures selected, %d flagged dropped; labels: %s",
        snap.manifest.snapshot_id,
        len(selection.records),
        len(snap.records),
        len(selection.dropped_flagged),
        snap.manifest.label_source,
    )
    return snap, selection


def render(cfg: PipelineConfig, snap: Snapshot, selection: Selection, store: ObjectStore) -> RenderResult:
    """Render the selection (finished images are reused) and report quarantined structures."""
    from crystalvision.render import render_dataset

    result = render_dataset(selection.records, snap.encoders, snap.manifest.content_sha256, cfg.render, store)
    if result.quarantined:
        log.warning("%d structures quarantined by the renderer: %s", len(result.quarantined), result.quarantined)
    return result


def is_kfold(split: SplitConfig) -> bool:
    """True when the config asks for k folds (``split.folds``) or leave-one-structure-out."""
    return bool(split.folds) or split.leave_one_out


def split_clusters(split: SplitConfig, records: Sequence[Any] | None) -> dict[str, str] | None:
    """Material id -> structure cluster when ``split.group_by`` is ``structure_cluster`` (cached per set of
    structures, :func:`crystalvision.data.clusters.structure_clusters`), else None."""
    if split.group_by != "structure_cluster" or split.protocol != "grouped" or records is None:
        return None
    from crystalvision.data import structure_clusters

    return structure_clusters(list(records))


def make_splits(
    store: ObjectStore, labels_key: str, split: SplitConfig, fold: int | None = None, clusters: Any = None
) -> Splits:
    """The labels table split as ``split`` says (the one place a split is made); ``fold`` picks one k-fold fold;
    ``clusters`` (:func:`split_clusters`) for ``split.group_by: structure_cluster``."""
    if fold is None:
        return split_frame(load_labels(store, labels_key), split, clusters)
    return make_folds(store, labels_key, split, clusters)[fold]


def make_folds(store: ObjectStore, labels_key: str, split: SplitConfig, clusters: Any = None) -> list[Splits]:
    """The labels table's k folds (``split.folds`` / ``split.leave_one_out``; each structure tested once), each
    fold's training part cut to ``split.train_structures`` when set (a learning-curve point)."""
    from crystalvision.data import fold_splits, subset_folds

    return subset_folds(fold_splits(load_labels(store, labels_key), split, clusters), split)


def plan_folds(cfg: PipelineConfig) -> dict[str, Any] | None:
    """The k folds ``cfg`` would make, from the snapshot's records (no rendering; a structure the renderer later
    quarantines would drop out); None without ``split.folds`` / ``split.leave_one_out``."""
    import pandas as pd

    from crystalvision.data import split_plan

    if not is_kfold(cfg.split):
        return None
    _, selection = select_records(cfg)
    cols = ("material_id", "formula", "crystal_system", "spacegroup_symbol")
    frame = pd.DataFrame([{c: getattr(r, c) for c in cols} for r in selection.records])
    clusters = split_clusters(cfg.split, selection.records)
    return split_plan(frame.sort_values("material_id").reset_index(drop=True), cfg.split, clusters)


def fold_inputs(prepared: Prepared) -> list[Prepared]:
    """One prepared input per fold of ``prepared.cfg.split`` (each with its own copy of the model spec)."""
    if prepared.labels_key is None:
        raise ValueError("k-fold inputs need the labels table's key (prepare the config first)")
    clusters = split_clusters(prepared.cfg.split, prepared.selection.records if prepared.selection else None)
    splits = make_folds(prepared.store, prepared.labels_key, prepared.cfg.split, clusters)
    return [prepared.with_splits(s).with_spec_copy() for s in splits]


def assemble(
    cfg: PipelineConfig, snap: Snapshot, selection: Selection, rendered: RenderResult, store: ObjectStore
) -> Prepared:
    """Labels table -> splits, plus the model spec of the snapshot: the prepared inputs."""
    clusters = split_clusters(cfg.split, selection.records)
    splits = make_splits(store, rendered.labels_key, cfg.split, clusters=clusters)  # k-fold: see fold_inputs()
    return Prepared(cfg, store, splits, spec_for(cfg, snap), snap, selection, rendered, rendered.labels_key)


def prepare(cfg: PipelineConfig, store: ObjectStore | None = None) -> Prepared:
    """Snapshot -> selection -> render -> splits -> model spec, as every stage after rendering needs them."""
    store = store or open_store()
    snap, selection = select_records(cfg)
    return assemble(cfg, snap, selection, render(cfg, snap, selection, store), store)


def from_labels(
    cfg: PipelineConfig,
    store: ObjectStore,
    labels_key: str,
    spec: ModelSpec,
    split: SplitConfig | None = None,
    fold: int | None = None,
) -> Prepared:
    """Prepared inputs from an existing labels table (a logged run's), split by ``split`` (default ``cfg.split``);
    ``fold`` picks one fold of a k-fold split (a fold's child run logs it as ``fold``)."""
    split = split or cfg.split
    clusters = split_clusters(split, select_records(cfg)[1].records) if split.group_by == "structure_cluster" else None
    splits = make_splits(store, labels_key, split, fold, clusters)
    return Prepared(cfg, store, splits, spec, labels_key=labels_key)
