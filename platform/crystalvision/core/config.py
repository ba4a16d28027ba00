"""Pipeline configuration: YAML files in ``pipelines/`` validated by pydantic (unknown keys are errors).

:class:`PipelineConfig` is a whole file; its sections live beside it, the data stages' in
:mod:`~crystalvision.core.config_data` and the learning stages' in :mod:`~crystalvision.core.config_learning`, and
every name is importable from here.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import Field

from crystalvision.core.config_data import (
    HoldoutConfig,
    IngestConfig,
    RenderConfig,
    Section,
    SnapshotConfig,
    SplitConfig,
    StructureFilter,
)
from crystalvision.core.config_learning import (
    AugmentConfig,
    EvaluateConfig,
    LearningCurveConfig,
    RegistryConfig,
    TrainConfig,
    TuneConfig,
)
from crystalvision.core.settings import from_checkout
from crystalvision.core.targets import TARGETS, TARGETS_CLASSIFICATION, TARGETS_REGRESSION

__all__ = [
    "TARGETS",
    "TARGETS_CLASSIFICATION",
    "TARGETS_REGRESSION",
    "AugmentConfig",
    "EvaluateConfig",
    "HoldoutConfig",
    "IngestConfig",
    "LearningCurveConfig",
    "PipelineConfig",
    "RegistryConfig",
    "RenderConfig",
    "Section",
    "SnapshotConfig",
    "SplitConfig",
    "StructureFilter",
    "TrainConfig",
    "TuneConfig",
]


class PipelineConfig(Section):
    """A whole pipeline: snapshot -> render -> train -> evaluate -> register."""

    name: str = Field(description="Pipeline name: MLflow run names, registered model tags and the summary use it.")
    description: str = Field(default="", description="One line about the pipeline, shown on its MLflow run page.")
    stages: list[Literal["snapshot", "render", "train", "evaluate", "register"]] = Field(
        default_factory=lambda: ["snapshot", "render", "train", "evaluate", "register"],
        description="Stages `crystalvision pipeline run` runs, in order.",
    )
    snapshot: SnapshotConfig = Field(default_factory=SnapshotConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    render: RenderConfig = Field(default_factory=RenderConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    learning_curve: LearningCurveConfig = Field(default_factory=LearningCurveConfig)

    def config_hash(self) -> str:
        """Stable hash of the resolved config; a hold-out file inside the checkout counts by its path from there, so
        one config hashes alike in every checkout (its content enters run identities through the split's ids)."""
        data = self.model_dump(mode="json")
        if self.split.holdout is not None:
            data["split"]["holdout"]["ids"] = from_checkout(self.split.holdout.ids)
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()
