"""The road from a pipeline config to the prepared inputs of every later stage: :func:`prepare`, one call.

``prepare(cfg)``: :func:`select_records` (the snapshot and the records it selects) -> what the selection must meet
before anything is rendered (a k-fold count it can fill; with ``card=True`` the model card's record, refused when it
measured another snapshot) -> the render (Ray Data, finished images reused) -> :func:`assemble` (one read of the
labels table: the split, or a k-fold config's folds; the model spec) -> a :class:`~crystalvision.learn.Prepared`.
Train, tune, evaluate and the registry take a ``Prepared``; nobody else loads a snapshot or renders to find its
inputs. Commands that need less stop on the way: :func:`select_records` (a fold plan, a pipeline of the snapshot
stage alone), :func:`render_records` (the render command, a pipeline that does not train). :func:`from_labels`
rebuilds the inputs of a logged run from its labels table.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from crystalvision.core import PipelineConfig, SplitConfig, progress
from crystalvision.data import (
    ObjectStore,
    Selection,
    Snapshot,
    Splits,
    apply_holdout,
    fold_splits,
    holdout_split,
    load_labels,
    load_selection,
    n_folds_for,
    open_store,
    split_frame,
    subset_folds,
    tests_on_holdout,
    without_holdout,
)
from crystalvision.learn import Prepared
from crystalvision.track import label_sources, recipe

if TYPE_CHECKING:
    from crystalvision.learn import ModelSpec
    from crystalvision.render import RenderResult

log = logging.getLogger(__name__)


def select_records(cfg: PipelineConfig) -> tuple[Snapshot, Selection]:
    """The snapshot the config names (or the default) and the records it selects, less a ``split.holdout`` that
    the run excludes (:func:`~crystalvision.data.apply_holdout`), logged and told to progress listeners (stage
    ``snapshot``)."""
    snap, selection = load_selection(cfg.snapshot)
    selection = apply_holdout(selection, cfg.split)
    n = len(selection.records)
    log.info(
        "snapshot %s: %d of %d structures selected, %d flagged dropped; labels: %s",
        snap.manifest.snapshot_id,
        n,
        len(snap.records),
        len(selection.dropped_flagged),
        snap.manifest.label_source,
    )
    progress.emit("snapshot", n, n, unit="structures")
    return snap, selection


def render_records(cfg: PipelineConfig, store: ObjectStore | None = None) -> tuple[Snapshot, Selection, RenderResult]:
    """The road up to the images: the selection and its render (the render command, a pipeline that does not
    train)."""
    snap, selection = select_records(cfg)
    return snap, selection, _render(cfg, snap, selection, store or open_store())


def prepare(cfg: PipelineConfig, store: ObjectStore | None = None, *, card: bool = False) -> Prepared:
    """Snapshot -> selection -> (its checks) -> render -> split or folds -> model spec, as every stage after rendering
    needs them. ``card``: also read the model card that ``registry.generalisation_record`` gives (``Prepared.card``),
    before rendering."""
    snap, selection = select_records(cfg)
    measured = _before_rendering(cfg, snap, selection, card)
    store = store or open_store()
    return assemble(cfg, snap, selection, _render(cfg, snap, selection, store), store, measured)


def _before_rendering(cfg: PipelineConfig, snap: Snapshot, selection: Selection, card: bool) -> dict[str, Any]:
    """What the selection must meet before anything is rendered (a ConfigError otherwise): a k-fold count it can
    fill, and with ``card`` a model card's record of this snapshot; that card."""
    if is_kfold(cfg.split) and not tests_on_holdout(cfg.split):
        n = len(selection.records)
        n_folds_for(cfg.split, n, n * cfg.render.views_per_structure)
    return model_card(cfg, snap.manifest) if card else {}


def model_card(cfg: PipelineConfig, manifest: Any) -> dict[str, Any]:
    """The card a model of ``cfg`` gets from ``registry.generalisation_record`` ({} without one, or for a k-fold
    config, which registers nothing): a ConfigError for a record of another snapshot; ``{"withheld": why}`` (and a
    warning) for one of another render, labels or recipe."""
    if not cfg.registry.generalisation_record or is_kfold(cfg.split):
        return {}
    from crystalvision.render import render_config_hash
    from crystalvision.track import generalisation_from_record

    run = {"render_config_hash": render_config_hash(cfg.render), "label_source": label_sources(manifest),
           "recipe": recipe.recipe(cfg)}  # fmt: skip
    return generalisation_from_record(cfg.registry.generalisation_record, manifest.content_sha256, run)


def _render(cfg: PipelineConfig, snap: Snapshot, selection: Selection, store: ObjectStore) -> RenderResult:
    """Render the selection (finished images are reused; stage ``render`` told to progress listeners, with its
    seconds) and report quarantined structures."""
    from crystalvision.render import render_dataset

    progress.beat("render", step="start")
    result = render_dataset(selection.records, snap.encoders, snap.manifest.content_sha256, cfg.render, store)
    if result.quarantined:
        log.warning("%d structures quarantined by the renderer: %s", len(result.quarantined), result.quarantined)
    progress.finish("render", seconds=round(result.timings["total_s"], 3))
    return result


def assemble(
    cfg: PipelineConfig,
    snap: Snapshot,
    selection: Selection,
    rendered: RenderResult,
    store: ObjectStore,
    card: dict[str, Any] | None = None,
) -> Prepared:
    """One read of the labels table -> the split (or a k-fold config's folds), plus the model spec of the snapshot:
    the prepared inputs."""
    from crystalvision.learn import spec_for

    clusters = split_clusters(cfg.split, selection.records)
    splits, folds = split_labels(load_labels(store, rendered.labels_key), cfg.split, clusters)
    spec = spec_for(cfg, snap)
    return Prepared(cfg, store, splits, spec, snap, selection, rendered, rendered.labels_key, folds, card or {})


def is_kfold(split: SplitConfig) -> bool:
    """True when the config asks for k folds (``split.folds``), leave-one-structure-out, or the one fold that tests
    on the hold-out (``split.holdout.use: test``): the runs evaluated as folds."""
    return bool(split.folds) or split.leave_one_out or tests_on_holdout(split)


def split_clusters(split: SplitConfig, records: Sequence[Any] | None) -> dict[str, str] | None:
    """Material id -> structure cluster when ``split.group_by`` is ``structure_cluster`` (cached per set of
    structures, :func:`crystalvision.data.structure_clusters`), else None."""
    if split.group_by != "structure_cluster" or split.protocol != "grouped" or records is None:
        return None
    from crystalvision.data import structure_clusters

    return structure_clusters(list(records))


def split_labels(labels: pd.DataFrame, split: SplitConfig, clusters: Any = None) -> tuple[Splits, list[Splits]]:
    """The labels table split as ``split`` says (the one place a split is made): a k-fold config's folds (each
    structure tested once; each fold's training part cut to ``split.train_structures`` when set, a learning-curve
    point) with the first as its split; ``split.holdout.use: test``: the one fold that tests on the hold-out; else
    the one split and no folds. Rows an excluded hold-out leaves out never reach a split. ``clusters``:
    :func:`split_clusters`."""
    labels = without_holdout(labels, split)
    if not is_kfold(split):
        return split_frame(labels, split, clusters), []
    made = [holdout_split(labels, split, clusters)] if tests_on_holdout(split) else fold_splits(labels, split, clusters)
    folds: list[Splits] = list(subset_folds(made, split))
    return folds[0], folds


def plan_folds(cfg: PipelineConfig) -> dict[str, Any] | None:
    """The k folds ``cfg`` would make (or its one fold that tests on the hold-out), from the snapshot's records (no
    rendering; a structure the renderer later quarantines would drop out), with ``holdout``: the hold-out file, its
    sha256 and use, and the structures it left out of the selection; None for a config without folds."""
    from crystalvision.data import describe_holdout, split_plan

    if not is_kfold(cfg.split):
        return None
    _, selection = select_records(cfg)
    cols = ("material_id", "formula", "crystal_system", "spacegroup_symbol")
    frame = pd.DataFrame([{c: getattr(r, c) for c in cols} for r in selection.records])
    frame = frame.sort_values("material_id").reset_index(drop=True)
    clusters = split_clusters(cfg.split, selection.records)
    folds = [holdout_split(frame, cfg.split, clusters)] if tests_on_holdout(cfg.split) else None
    plan = split_plan(frame, cfg.split, clusters, folds)
    if cfg.split.holdout is not None:
        plan["holdout"] = describe_holdout(cfg.split) | {"n_left_out_of_selection": len(selection.held_out)}
    return plan


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
    splits, folds = split_labels(load_labels(store, labels_key), split, clusters)
    if fold is not None:
        splits, folds = folds[fold], []
    return Prepared(cfg, store, splits, spec, labels_key=labels_key, folds=folds)
