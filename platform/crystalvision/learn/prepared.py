"""The prepared inputs of a training, evaluation or registration step: what the road (:mod:`crystalvision.stages`)
makes of a pipeline config, and what :func:`~crystalvision.learn.train.train_model` takes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from crystalvision.core import PipelineConfig
from crystalvision.data import ObjectStore, Selection, Snapshot, Splits

if TYPE_CHECKING:  # the model module loads torch: the road imports this one without it
    from crystalvision.learn.model import ModelSpec
    from crystalvision.render import RenderResult


@dataclass
class Prepared:
    """Everything a training, evaluation or registration step needs, prepared once from a config.

    ``snapshot``, ``selection`` and ``render`` are None when the inputs were not made by the road (e.g. a logged
    run rebuilt from its labels table, or a test's toy dataset). ``spec`` is the model spec before training
    (classes, image size, provenance); training sets the target scaling on its own copy. A k-fold config
    (``split.folds`` / ``split.leave_one_out``) gets its ``folds``, all made from one read of the labels table, and
    ``splits`` is the first of them (:meth:`fold_inputs` gives each fold its own inputs). ``card`` is the measured
    generalisation that ``registry.generalisation_record`` gives a registered model's card ({} without one).
    """

    cfg: PipelineConfig
    store: ObjectStore
    splits: Splits
    spec: ModelSpec
    snapshot: Snapshot | None = None
    selection: Selection | None = None
    render: RenderResult | None = None
    labels_key: str | None = None
    folds: list[Splits] = field(default_factory=list)
    card: dict[str, Any] = field(default_factory=dict)

    def with_config(self, cfg: PipelineConfig) -> Prepared:
        """The same data under another config (a Tune trial's sampled hyper-parameters)."""
        return dataclasses.replace(self, cfg=cfg)

    def with_splits(self, splits: Splits) -> Prepared:
        """The same data with another split (one fold of a k-fold run), which has no folds of its own."""
        return dataclasses.replace(self, splits=splits, folds=[])

    def with_spec_copy(self) -> Prepared:
        """The same inputs with a copy of the spec (training sets its target scaling; trials must not share it)."""
        return dataclasses.replace(self, spec=self.spec.model_copy(deep=True))

    def fold_inputs(self) -> list[Prepared]:
        """One prepared input per fold (each with its own copy of the model spec); [] without folds."""
        return [self.with_splits(s).with_spec_copy() for s in self.folds]

    def for_workers(self) -> Prepared:
        """What a remote trial needs (config, store, splits, spec), without the snapshot's structures or folds."""
        return dataclasses.replace(self, snapshot=None, selection=None, folds=[])

    @property
    def records(self) -> dict[str, Any] | None:
        """Snapshot records by material_id (for the structure baselines), when the snapshot is known."""
        return {r.material_id: r for r in self.snapshot.records} if self.snapshot is not None else None
